"""What a signed cap costs: verifying its signature per resolve, cold and cached, and a whole run.

Usage: ``scripts/in-venv python benchmarks/bench_signing.py [--json OUT]``

Against the stock crc32c cap, with a fresh Ed25519 key trusted for ``crc32c``
and the cap's digest *not* pinned (a private config folder; the blob store is
the usual one: blobs are content-addressed):

* first verification in a new process: ``python -c`` that imports
  ``pylon.signing`` and verifies once (securesystemslib and cryptography's
  imports included), minus the same process doing nothing;
* verification per resolve, **cold** (:func:`pylon.signing.vouch` with its
  cache cleared: read the signature blob, hash it, parse the envelope,
  Ed25519-verify, check the Statement) and **cached** (the same call again);
* :class:`pylon.runtime.Resolver` for the cap, pinned vs signed (cached):
  what the trust gate adds to a resolve;
* a whole ``pylon.Sandbox.run`` that loads the cap and calls it once, pinned
  vs signed.

Figures are medians of many calls (min-max beside them); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A private config folder: the benchmark trusts a key of its own and nothing it leaves behind.
_HOME = Path(tempfile.mkdtemp(prefix="pylon-bench-signing-"))
os.environ["PYLON_CONFIG_DIR"] = str(_HOME / "config")

import _common as c  # noqa: E402
from pylon import Sandbox, signing  # noqa: E402
from pylon.blobstore import BlobStore  # noqa: E402
from pylon.plan import BlobRef, Plan  # noqa: E402
from pylon.runtime import Resolver  # noqa: E402
from pylon.trust import TrustPolicy  # noqa: E402

RUN_CRC = ("from pylon_guest import dynlink\n"
           "import _crc32c_dynlink_cap as crc\n"
           "assert crc.crc32c(b'123456789') == 0xE3069283\n")


def _fresh_process_ms(code: str, n: int = 7) -> float:
    """Median wall time of ``python -c code`` in ms."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return samples[len(samples) // 2]


def run() -> dict[str, float]:
    st = c.ensure_stock()
    store = BlobStore()
    key = signing.new_key("bench", out=_HOME / "bench.key")
    signer = signing.load_signer(key.private)
    sig = signing.sign_bytes(c.CAP, st.cap_digest, signer)
    sig_ref = BlobRef(digest=store.put_bytes(sig), size=len(sig))

    guest_trust = TrustPolicy.load()  # what ensure_stock trusted: the guest, and crc32c pinned
    pinned = TrustPolicy(path=guest_trust.path, allow={c.CAP: {st.cap_digest}}, guests=set(guest_trust.guests()))
    signed = TrustPolicy(path=guest_trust.path, guests=set(guest_trust.guests()))
    signed.add_key(c.CAP, signing.read_public_key(key.public))

    out: dict[str, float] = {"signature_bytes": len(sig)}

    c.log("first verification in a new process (imports included)")
    setup = (f"import sys; sys.path.insert(0, {str(c.REPO / 'python')!r})\n"
             "from pylon.trust import TrustPolicy\n"
             f"t = TrustPolicy.load({str(guest_trust.path)!r})\n")
    verify = ("from pylon import signing\n"
              f"p = TrustPolicy(); p.add_key({c.CAP!r}, signing.read_public_key(__import__('pathlib').Path("
              f"{str(key.public)!r})))\n"
              f"signing.verify_envelope({c.CAP!r}, {st.cap_digest!r}, {sig!r}, p)\n")
    out["new_process_first_verify_ms"] = _fresh_process_ms(setup + verify) - _fresh_process_ms(setup)

    c.log("verify_envelope on bytes in memory")
    med, lo, hi = c.median_s(lambda: signing.verify_envelope(c.CAP, st.cap_digest, sig, signed), 2000)
    out.update(envelope_us=med * 1e6, envelope_min_us=lo * 1e6, envelope_max_us=hi * 1e6)

    def cold() -> None:
        signing.clear_cache()
        signing.vouch(c.CAP, st.cap_digest, sig_ref, store=store, trust=signed)

    c.log("vouch per resolve, cold (cache cleared each time)")
    med, lo, hi = c.median_s(cold, 2000)
    out.update(cold_us=med * 1e6, cold_min_us=lo * 1e6, cold_max_us=hi * 1e6)

    c.log("vouch per resolve, cached")
    signing.vouch(c.CAP, st.cap_digest, sig_ref, store=store, trust=signed)
    out["cached_us"] = c.per_call_ns(
        lambda: signing.vouch(c.CAP, st.cap_digest, sig_ref, store=store, trust=signed)) / 1000

    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        cap_sources = [st.cap.as_uri()]
        plain = Plan().with_cap(c.CAP, digest=st.cap_digest, sources=cap_sources)
        with_sig = Plan().with_cap(c.CAP, digest=st.cap_digest, sources=cap_sources, signature=sig_ref)
        plain_path, sig_path = Path(tmp) / "pinned.json", Path(tmp) / "signed.json"
        plain.save(plain_path)
        with_sig.save(sig_path)

        c.log("Resolver: pinned vs signed (cached verdict)")
        r_pinned = Resolver(plain, "pinned", store=store, trust=pinned)
        r_signed = Resolver(with_sig, "signed", store=store, trust=signed)
        out["resolve_pinned_us"] = c.per_call_ns(lambda: r_pinned(c.CAP)) / 1000
        out["resolve_signed_us"] = c.per_call_ns(lambda: r_signed(c.CAP)) / 1000

        c.log("Sandbox.run that loads and calls the cap: pinned vs signed")
        # The trust file a Sandbox loads decides: write each policy before its sandbox.
        for label, policy, plan_path in (("pinned", pinned, plain_path), ("signed", signed, sig_path)):
            policy.save()
            signing.clear_cache()
            sandbox = Sandbox(plan=plan_path)
            t0 = time.perf_counter()
            first = sandbox.run(RUN_CRC)
            out[f"sandbox_{label}_first_ms"] = (time.perf_counter() - t0) * 1000
            assert first.exit_code == 0, first.stderr

            def once(sb: Sandbox = sandbox) -> None:
                r = sb.run(RUN_CRC)
                assert r.exit_code == 0, r.stderr

            med, lo, hi = c.median_s(once, 40)
            out.update({f"sandbox_{label}_ms": med * 1000, f"sandbox_{label}_min_ms": lo * 1000,
                        f"sandbox_{label}_max_ms": hi * 1000})
    return out


def table(r: dict[str, float]) -> str:
    rows = [
        ("signature size", f"{r['signature_bytes']:.0f} B", ""),
        ("first verify in a new process (imports)", f"{r['new_process_first_verify_ms']:.0f} ms", "once per process"),
        ("verify_envelope (bytes in memory)", f"{r['envelope_us']:.0f} µs",
         f"{r['envelope_min_us']:.0f}-{r['envelope_max_us']:.0f}"),
        ("vouch per resolve, cold", f"{r['cold_us']:.0f} µs", f"{r['cold_min_us']:.0f}-{r['cold_max_us']:.0f}"),
        ("vouch per resolve, cached", f"{r['cached_us']:.2f} µs", ""),
        ("Resolver, pinned digest", f"{r['resolve_pinned_us']:.1f} µs", ""),
        ("Resolver, signed (cached verdict)", f"{r['resolve_signed_us']:.1f} µs", ""),
    ]
    for label in ("pinned", "signed"):
        spread = f"{r[f'sandbox_{label}_min_ms']:.2f}-{r[f'sandbox_{label}_max_ms']:.2f}"
        rows.append((f"Sandbox.run + crc32c, {label}", f"{r[f'sandbox_{label}_ms']:.2f} ms",
                     f"{spread}; first {r[f'sandbox_{label}_first_ms']:.0f}"))
    width = max(len(a) for a, _, _ in rows)
    lines = [f"{'what':<{width}}  {'median':>10}  min-max / note", "-" * (width + 40)]
    lines += [f"{a:<{width}}  {b:>10}  {n}" for a, b, n in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        results = run()
    finally:
        shutil.rmtree(_HOME, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
