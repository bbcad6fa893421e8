"""The guest's interpreter: what our engine's config costs, and guest vs host CPython.

    python benchmarks/bench_interpreter.py [--rounds N] [--quick]

A small suite (a pystone-like loop, json, re, a dataclass-heavy workload) runs
inside the guest and, for reference, on the host's CPython. The guest runs

* under our engine (``composectl run``: epoch interruption, wasm exceptions,
  a 2 MiB wasm stack, the pooling allocator), and
* under wasmtime-py (PyPI ``wasmtime``) as the portable guest, once per engine
  configuration: wasmtime's defaults, then one setting changed at a time.
  wasmtime-py exposes the same ``Config`` knobs as the Rust crate, so this
  shows what each of our settings costs without rebuilding our engine.

Each configuration compiles the 38 MB guest once (tens of seconds; cached in
the build cache under the config's name). All workloads run in one process
per host and configuration, and the rounds alternate between them, so drift
on a noisy machine hits every column alike. Figures: docs/benchmarks.md,
"The guest's interpreter".
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_portable  # noqa: E402  (the wasmtime-py host and the compiled portable guest)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.pop("RUST_BACKTRACE", None)  # wasmtime captures a backtrace per trap when set

#: The suite, the same text on every side. Each workload is timed best of
#: ROUNDS (the minimum is the figure least disturbed by other processes).
SUITE = r'''
import json, re, sys, time
from dataclasses import dataclass, field

def loop(n=200_000):
    # pystone-like: calls, attribute and global access, integer and list ops
    class Rec:
        __slots__ = ("a", "b", "c")
        def __init__(self, a, b, c):
            self.a, self.b, self.c = a, b, c
    def proc(r, i):
        r.a = (r.a + i) & 0xFFFF
        r.b = r.b ^ i
        return r.a + r.b
    r, total, arr = Rec(1, 2, 3), 0, [0] * 64
    for i in range(n):
        total += proc(r, i)
        arr[i & 63] = total & 0xFF
        if i % 7 == 0:
            total -= arr[(i >> 3) & 63]
    return total

DOC = {"users": [{"id": i, "name": f"user{i}", "tags": ["a", "b", "c"][: i % 4],
                  "score": i * 0.5, "active": i % 3 == 0} for i in range(2000)]}
TEXT = DOC and json.dumps(DOC)

def json_work():
    for _ in range(5):
        json.loads(json.dumps(DOC))

WORDS = re.compile(r"\b(user\d+)\b")
KV = re.compile(r'"(\w+)": ([0-9.]+)')

def re_work():
    for _ in range(5):
        WORDS.findall(TEXT)
        KV.findall(TEXT)

@dataclass(order=True)
class Point:
    x: int
    y: int
    tags: list = field(default_factory=list)

def dataclass_work():
    pts = [Point(i % 97, i // 97, [i]) for i in range(20_000)]
    pts.sort()
    return sum(1 for a, b in zip(pts, pts[1:]) if a == b)

WORK = {"pystone-like loop": loop, "json dumps+loads": json_work, "re findall": re_work,
        "dataclasses": dataclass_work}
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
best = {name: float("inf") for name in WORK}
for _ in range(rounds):
    for name, fn in WORK.items():
        t0 = time.perf_counter()
        fn()
        best[name] = min(best[name], time.perf_counter() - t0)
print(json.dumps(best))
'''

#: wasmtime-py engine configurations: name -> settings applied to a fresh Config.
#: "ours" mirrors engine/src/engine.rs (the pooling allocator aside, which
#: changes instantiation, not the code Cranelift emits).
CONFIGS: dict[str, dict[str, object]] = {
    "wasmtime defaults": {},
    "+ epoch interruption": {"epoch_interruption": True},
    "ours: epoch, exceptions, 2 MiB stack": {"epoch_interruption": True, "wasm_exceptions": True,
                                             "max_wasm_stack": 2 << 20},
    "explicit bounds checks (no 4 GiB reservation)": {"memory_reservation": 0, "memory_guard_size": 0},
    "no signals-based traps": {"signals_based_traps": False},
    "+ NaN canonicalization": {"cranelift_nan_canonicalization": True},
    "opt level: speed_and_size": {"cranelift_opt_level": "speed_and_size"},
}
QUICK = ("wasmtime defaults", "+ epoch interruption", "ours: epoch, exceptions, 2 MiB stack")


def _config(settings: dict[str, object]) -> Any:
    """A ``wasmtime.Config`` with ``settings`` (and wasm exceptions, as every side has)."""
    from wasmtime import Config

    config = Config()
    config.wasm_exceptions = True
    for key, value in settings.items():
        setattr(config, key, value)
    # bench_portable.host_main sets an epoch deadline when the config checks epochs.
    config._pylon_epochs = bool(settings.get("epoch_interruption"))
    return config


def host_main(config_name: str, cwasm: str, folder: str, rounds: str) -> int:
    """One run of the suite in the portable guest under wasmtime-py with ``config_name``."""
    return bench_portable.host_main(cwasm, [f"{folder}/suite.py", rounds], folder, _config(CONFIGS[config_name]))


def _compiled(portable: Path, digest: str, config_name: str) -> Path:
    slug = "".join(ch if ch.isalnum() else "-" for ch in config_name).strip("-")
    return bench_portable._compiled(portable, digest, _config(CONFIGS[config_name]), label=f"interp-{slug}")


def _json_of(cmd: list[str]) -> dict[str, float]:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}... failed:\n{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per workload inside each run (best of)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating (median of their bests)")
    parser.add_argument("--quick", action="store_true", help="only the defaults, epoch and our config")
    parser.add_argument("--host", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        sys.exit(host_main(*args.host))

    print("  .. composectl setup and build --portable (cached after the first time)", file=sys.stderr)
    bench_portable._composectl("setup")
    digest, path = bench_portable._composectl("build", "--portable").split()
    names = [n for n in CONFIGS if not args.quick or n in QUICK]
    cwasms = {n: _compiled(Path(path), digest, n) for n in names}

    with tempfile.TemporaryDirectory(prefix="bench-interp-") as tmp:
        (Path(tmp) / "suite.py").write_text(SUITE)
        sides: dict[str, list[str]] = {
            f"host CPython {platform.python_version()} (native)": [sys.executable, f"{tmp}/suite.py"],
            "our engine (composectl run)": [str(BIN / "composectl"), "run", f"{tmp}/suite.py"],
        }
        for n in names:
            sides[f"wasmtime-py: {n}"] = [sys.executable, __file__, "--host", n, str(cwasms[n]), tmp]
        samples: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, cmd in sides.items():
                samples[side].append(_json_of([*cmd, str(args.rounds)]))

    figures = {side: {w: statistics.median(s[w] for s in runs) for w in runs[0]} for side, runs in samples.items()}
    workloads = list(next(iter(figures.values())))
    host = next(iter(figures))
    base = "wasmtime-py: wasmtime defaults"
    print(f"\nThe guest's interpreter (ms, best of {args.rounds} rounds, median of {args.repeats} runs; "
          f"load {os.getloadavg()[0]:.1f}; wasmtime-py {importlib.metadata.version('wasmtime')})")
    print(f"  {'':<50}" + "".join(f"{w[:18]:>20}" for w in workloads) + f"{'geomean vs host':>18}"
          + f"{'vs defaults':>14}")
    for side, fig in figures.items():
        ratios = [fig[w] / figures[host][w] for w in workloads]
        geo = statistics.geometric_mean(ratios)
        vs_default = ""
        if base in figures and side.startswith("wasmtime-py"):
            vs_default = f"{statistics.geometric_mean([fig[w] / figures[base][w] for w in workloads]):13.3f}x"
        print(f"  {side:<50}" + "".join(f"{fig[w] * 1e3:20.1f}" for w in workloads) + f"{geo:17.2f}x{vs_default:>14}")


if __name__ == "__main__":
    main()
