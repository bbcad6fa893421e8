"""Two Pylon installs side by side: warm ``run``, guest artifact load, first resolve, tiny invoke.

    python benchmarks/compare_installs.py --a OLD_VENV[:CONFIG_DIR:BLOB_DIR] --b NEW_VENV[:...] [--runs 15]

Each side is a virtualenv with Pylon installed (its ``bin/composectl`` and
``bin/python``), optionally with its own config and blob folders (a home set
up by that install's ``composectl setup``: two versions of Pylon may not read
each other's trust file). Every measurement alternates A and B run by run, so
the machine's noise hits both alike; medians and the B/A ratio are printed.
It is how a change's cost is measured against the main it started from (see
docs/benchmarks.md, "The sandbox's cost").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELLO = HERE.parent / "examples" / "hello.py"

#: Run inside each side's python: the guest artifact from disk (fresh engine),
#: a first resolve of the stock crc32c cap through the runtime's resolver, and
#: a tiny host -> provider invoke. Prints one JSON line of milliseconds / microseconds.
PROBE = r"""
import json, statistics, sys, time
from pathlib import Path
from pylon import _engine, paths, runtime, stock
from pylon.blobstore import BlobStore
from pylon.trust import TrustPolicy
runs = int(sys.argv[1])
digest = stock.stock_guest()[0]
store = BlobStore()
guest = str(store.blob_path(digest))
out = {}
_engine.Engine(str(paths.compiled_root())).precompile(guest, digest)
samples = []
for _ in range(runs):
    engine = _engine.Engine(str(paths.compiled_root()))
    t = time.perf_counter(); engine.precompile(guest, digest); samples.append(time.perf_counter() - t)
out["artifact_load_ms"] = statistics.median(samples) * 1e3
plan, label = runtime.load_plan(None)
resolver = runtime.Resolver(plan, label, store=store, trust=TrustPolicy.load())
samples = []
for _ in range(runs):
    engine = _engine.Engine(str(paths.compiled_root()))
    t = time.perf_counter(); spec = resolver("crc32c"); provider = engine.load_provider(spec)
    samples.append(time.perf_counter() - t)
out["first_resolve_ms"] = statistics.median(samples) * 1e3
n = 20000
best = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        provider.invoke("crc32c", b"123456789")
    best.append((time.perf_counter() - t) / n)
out["tiny_invoke_us"] = min(best) * 1e6
print(json.dumps(out))
"""


def side(spec: str) -> tuple[Path, dict[str, str]]:
    venv, *homes = spec.split(":")
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    if homes:
        env["PYLON_CONFIG_DIR"], env["PYLON_BLOB_DIR"] = homes
    return Path(venv), env


def median_ms(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="VENV[:CONFIG_DIR:BLOB_DIR] of the baseline")
    parser.add_argument("--b", required=True, help="VENV[:CONFIG_DIR:BLOB_DIR] of the change")
    parser.add_argument("--runs", type=int, default=15)
    opts = parser.parse_args()
    sides = {"A": side(opts.a), "B": side(opts.b)}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text(PROBE)
        run_cmd = {k: [str(v / "bin" / "composectl"), "run", str(HELLO)] for k, (v, _) in sides.items()}
        for k, (_, env) in sides.items():  # warm every cache
            subprocess.run(run_cmd[k], env=env, stdout=subprocess.DEVNULL, check=True)
        warm: dict[str, list[float]] = {"A": [], "B": [], "python": []}
        for _ in range(opts.runs):
            for k, (_, env) in sides.items():
                warm[k].append(median_ms(run_cmd[k], env))
            warm["python"].append(median_ms([sys.executable, "-c", "pass"], os.environ.copy()))
        probes: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        for _ in range(3):
            for k, (venv, env) in sides.items():
                line = subprocess.run([str(venv / "bin" / "python"), str(probe), str(opts.runs)], env=env,
                                      capture_output=True, text=True, check=True).stdout
                probes[k].append(json.loads(line))
    print(f"load average {os.getloadavg()[0]:.1f}; {opts.runs} interleaved runs per figure")
    print(f"{'figure':28s} {'A':>10s} {'B':>10s} {'B/A':>7s}")
    rows = [("warm composectl run (ms)", statistics.median(warm["A"]), statistics.median(warm["B"]))]
    for key, label in (("artifact_load_ms", "guest artifact load (ms)"), ("first_resolve_ms", "first resolve (ms)"),
                       ("tiny_invoke_us", "tiny invoke host->cap (us)")):
        rows.append((label, statistics.median(p[key] for p in probes["A"]),
                     statistics.median(p[key] for p in probes["B"])))
    for label, a, b in rows:
        print(f"{label:28s} {a:10.2f} {b:10.2f} {b / a:7.3f}")
    print(f"{'python -c pass (ms)':28s} {statistics.median(warm['python']):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
