"""Pulls from a loopback OCI registry: cold, and resumed after an interruption at half.

    python benchmarks/bench_registry.py [--runs 5]

docs/benchmarks.md ("OCI registry pulls") has a run. It starts a private
``docker-registry`` on 127.0.0.1 (tests/oci_registry.py, the same process
management the tests use), pushes the stock guest (~36 MiB) and the
cborcalc cap (~25 KiB) with ``pylon.oci`` (what ``composectl push`` runs),
then times ``BlobStore.fetch`` of an ``oci://`` source, the code path
``composectl run`` takes on first use:

* **cold**: into an empty blob store (manifest GET, blob GET, hashing,
  fsync, rename), median of ``--runs``;
* **resumed**: a pull is interrupted once half the bytes are in (the progress
  callback raises, as Ctrl-C would), then a second fetch is timed: it re-hashes
  the partial download, GETs the rest with ``Range`` and verifies the whole;
  median of ``--runs``, each on a fresh store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402  (sets up sys.path and the environment)

sys.path.insert(0, str(c.REPO / "tests"))
from oci_registry import Registry  # noqa: E402
from pylon import oci, stock  # noqa: E402
from pylon.blobstore import BlobStore  # noqa: E402


class _Cut(Exception):
    """Stops a pull part-way, as an interruption would."""


def _cold(digest: str, source: str, size: int, tmp: Path, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        store = BlobStore(tmp / f"cold-{digest[7:15]}-{i}")
        t0 = time.perf_counter()
        store.fetch(digest, [source], size=size)
        samples.append(time.perf_counter() - t0)
    return samples


def _resumed(digest: str, source: str, size: int, tmp: Path, runs: int) -> tuple[list[float], int]:
    samples, kept = [], 0

    def cut(done: int, _total: int | None) -> None:
        if done >= size // 2:
            raise _Cut()

    for i in range(runs):
        store = BlobStore(tmp / f"resume-{digest[7:15]}-{i}")
        try:
            store.fetch(digest, [source], size=size, progress=cut)
        except _Cut:
            pass
        # Reads come in 64 KiB chunks (a small cap arrives in one): keep exactly half.
        partial = store.blob_dir / f".tmp-{digest[7:]}.partial"
        os.truncate(partial, size // 2)
        kept = partial.stat().st_size
        t0 = time.perf_counter()
        store.fetch(digest, [source], size=size)
        samples.append(time.perf_counter() - t0)
    return samples, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    st = c.ensure_stock()
    store = BlobStore()
    cap_digest = stock.setup(log=lambda m: None, store=store).caps["cborcalc"]
    items = [("guest", st.guest, st.guest_digest), ("cap cborcalc", store.blob_path(cap_digest), cap_digest)]

    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp_name:
        tmp = Path(tmp_name)
        with Registry.start(tmp / "registry") as registry, oci.client(registry.host) as client:
            rows = []
            for label, path, digest in items:
                size = path.stat().st_size
                c.log(f"pushing {label} ({size} bytes)")
                t0 = time.perf_counter()
                artifact = client.push_wasm(path, oci.parse_reference(registry.ref(f"bench/{label.split()[-1]}:v1")))
                push_s = time.perf_counter() - t0
                source = str(artifact.reference)
                cold = _cold(digest, source, size, tmp, args.runs)
                resumed, kept = _resumed(digest, source, size, tmp, args.runs)
                rows.append((label, size, push_s, cold, resumed, kept))

    print(f"\nloopback docker-registry, {args.runs} runs each; medians (min-max)\n")
    print(f"{'blob':<14}{'size':>12}{'push':>10}{'cold pull':>26}{'MiB/s':>8}{'resume (kept)':>34}")
    for label, size, push_s, cold, resumed, kept in rows:
        mc, mr = statistics.median(cold), statistics.median(resumed)
        print(f"{label:<14}{size:>12,}{push_s * 1e3:>8.1f}ms"
              f"{mc * 1e3:>10.1f} ms ({min(cold) * 1e3:.1f}-{max(cold) * 1e3:.1f})"
              f"{size / mc / (1 << 20):>8.1f}"
              f"{mr * 1e3:>10.1f} ms ({min(resumed) * 1e3:.1f}-{max(resumed) * 1e3:.1f}) ({kept * 100 // size}%)")


if __name__ == "__main__":
    main()
