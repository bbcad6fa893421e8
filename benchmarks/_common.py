"""What the benchmark modules share: the environment, builds, guest runs, timing.

Everything here uses the stock install (``composectl setup`` / ``pylon.stock.setup``):
the stock guest and the crc32c cap, stored, trusted and in the default plan.
The benchmarks add only

* the composed guest: the stock guest built for world ``pylon:bench/pylon-bench``
  (``benchmarks/composed/wit``: the stock world plus an import of
  ``compose:dynlink/provider``), with the crc32c cap ``wac plug``-ged into that
  import at build time. One run of it can call the cap both ways: through the
  host (``dynlink.load``) and composed (``wit_world.imports.provider``);
* plans with raised limits (for 256 MiB payloads).

Build outputs go to the build cache (``toolchain.output_dir``), never into the
checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCRIPTS = BENCH / "guest_scripts"
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(SCRIPTS))  # _timing: one timing loop for the guest and the host

# wasmtime captures a backtrace on every trap when this is set; never time with it.
os.environ.pop("RUST_BACKTRACE", None)

from _timing import side_by_side  # noqa: E402
from pylon import _engine, stock  # noqa: E402
from pylon import paths as paths  # noqa: E402  (the benchmarks use c.paths)
from pylon.blobstore import BlobStore  # noqa: E402
from pylon.build import toolchain  # noqa: E402
from pylon.build.guest import GuestVariant, build_guest  # noqa: E402
from pylon.engine import ProviderSpec, get_engine  # noqa: E402
from pylon.runtime import Resolver, load_plan  # noqa: E402
from pylon.trust import TrustPolicy  # noqa: E402

MIB = 1 << 20
CAP = "crc32c"
#: A fresh engine (empty memory cache, the shared disk cache), as a new process has.
Engine = _engine.Engine

BENCH_VARIANT = GuestVariant(
    name="guest-bench",
    world="pylon:bench/pylon-bench@0.1.0",
    wit_package=BENCH / "composed" / "wit",
    app="bench_app",
    python_paths=(BENCH / "composed" / "app",),
)


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Stock:
    """The stock install the benchmarks run against."""

    guest: Path
    guest_digest: str
    cap: Path
    cap_digest: str
    plan: Path


def ensure_stock() -> Stock:
    """Runs the stock setup (cached builds: seconds when nothing changed)."""
    store = BlobStore()
    result = stock.setup(log=lambda m: None, store=store)
    cap_digest = result.caps[CAP]
    return Stock(
        guest=store.blob_path(result.guest_digest), guest_digest=result.guest_digest,
        cap=store.blob_path(cap_digest), cap_digest=cap_digest, plan=result.plan_path,
    )


@dataclass(frozen=True)
class Composed:
    path: Path
    digest: str


def ensure_composed(st: Stock) -> Composed:
    """The bench guest with the crc32c cap plugged in (``wac plug``), cached by input hash."""
    guest = build_guest(variant=BENCH_VARIANT)
    key = toolchain.source_hash([], extra=f"{guest.digest}|{st.cap_digest}|wac-plug")
    out = toolchain.output_dir("bench-composed", key) / "composed.wasm"
    if not out.exists():
        log("wac plug bench-guest.wasm --plug crc32c.wasm")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.wasm")
        toolchain.run([toolchain.cargo_tool("wac"), "plug", str(guest.path), "--plug", str(st.cap),
                       "-o", str(tmp)], what="wac plug (composed bench guest)")
        os.replace(tmp, out)
    return Composed(out, sha256_file(out))


def plan_with_limits(st: Stock, dest: Path, *, memory_mb: int, max_payload_mb: int) -> Path:
    """A copy of the default plan with the crc32c cap's limits raised."""
    doc = json.loads(st.plan.read_text())
    doc["caps"][CAP]["limits"] = {"memory-mb": memory_mb, "max-payload-mb": max_payload_mb}
    dest.write_text(json.dumps(doc))
    return dest


def run_guest_script(guest: Path, digest: str, script: str, args: list[str], *,
                     plan: Path | None = None, engine=None, resolver: Resolver | None = None) -> dict:
    """Runs ``guest_scripts/<script>`` in ``guest`` through the engine, in this
    process, with the resolver ``composectl run`` would build for ``plan``
    (default: the default plan); returns the JSON the script wrote to the file
    named by its first argument."""
    engine = engine or get_engine()
    if resolver is None:
        the_plan, label = load_plan(plan)
        resolver = Resolver(the_plan, label, store=BlobStore(), trust=TrustPolicy.load())
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        out = Path(tmp) / "result.json"
        script_path = SCRIPTS / script
        preopens = [(str(SCRIPTS), str(SCRIPTS), True), (tmp, tmp, False)]
        status = engine.run_guest(str(guest), digest, argv=[str(script_path), str(out), *args], env=[],
                                  cwd=str(SCRIPTS), preopens=preopens, resolver=resolver)
        if status != 0:
            raise RuntimeError(f"guest script {script} exited with {status}")
        return json.loads(out.read_text())


def provider_spec(st: Stock, *, memory_mb: int = 64, max_payload_mb: int = 64,
                  path: Path | None = None, digest: str | None = None) -> ProviderSpec:
    return ProviderSpec(name=CAP, path=str(path or st.cap), digest=digest or st.cap_digest,
                        memory_bytes=memory_mb * MIB, timeout_ms=10_000,
                        max_payload_bytes=max_payload_mb * MIB, wasi=False)


def per_call_ns(fn: Callable[[], object], *, target_s: float = 0.15, repeats: int = 7) -> float:
    """ns per call of ``fn``, timed like the guest scripts time theirs."""
    return side_by_side({"fn": fn}, target_s=target_s, repeats=repeats)["fn"]


def median_s(fn: Callable[[], object], n: int) -> tuple[float, float, float]:
    """(median, min, max) seconds of ``n`` calls of ``fn``."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), min(samples), max(samples)
