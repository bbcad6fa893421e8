"""Benchmarks the MicroPython static profile (one run; prints a table and ratios).

    python benchmarks/bench_micropython.py [--mib 256]

* size of the module (both EH flavours), raw and gzipped, beside the CPython pylon;
* startup: cold compile on wasmtime, then a whole run of an empty script from
  wasmtime's cache (our engine when pylon._engine has run_core_p1), and the
  legacy flavour's whole run on Node.js;
* crc32c throughput: the C core inside the static build on wasmtime, the same
  C compiled natively (zig cc -O3, host), and a pure-Python crc32c in the
  same static build. Throughput is (time for N MiB - time for 0 MiB) / N, so
  instantiation and start-up are not counted.

Figures go to docs/benchmarks.md by hand (one run, same machine).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

from pylon import paths  # noqa: E402
from pylon.build import toolchain  # noqa: E402
from pylon.build.micropython import build_micropython  # noqa: E402
from pylon.static_runner import backend, node, run_script  # noqa: E402

os.environ.pop("RUST_BACKTRACE", None)  # wasmtime would capture a backtrace per trap

C_SCRIPT = """
import sys, crc32c
n = int(sys.argv[1])
buf = bytes(range(256)) * 4096  # 1 MiB
c = 0
for i in range(n):
    c = crc32c.crc32c(buf, c)
print(c)
"""

PY_SCRIPT = """
import sys
POLY = 0x82F63B78
TABLE = []
for n in range(256):
    c = n
    for k in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

kib = int(sys.argv[1])
buf = bytes(range(256)) * 4  # 1 KiB
c = 0
for i in range(kib):
    c = crc32c(buf, c)
print(c)
"""

NATIVE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "crc32c.h"
int main(int argc, char **argv) {
    int mib = atoi(argv[1]);
    static unsigned char buf[1 << 20];
    for (int i = 0; i < (1 << 20); i++) buf[i] = (unsigned char)i;
    uint32_t c = crc32c_update(0, buf, 1);  /* tables built before timing */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    c = 0;
    for (int i = 0; i < mib; i++) c = crc32c_update(c, buf, sizeof buf);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%u %.6f\n", c, s);
    return 0;
}
"""


@contextlib.contextmanager
def stdout_to(path: Path):
    """Redirects fd 1 (the module writes to the real fd) into a file."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w") as fh:
        os.dup2(fh.fileno(), 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def timed_run(module: Path, script: Path, *args: str, runtime: str = "engine", env=()) -> tuple[float, str]:
    out = script.with_suffix(".out")
    start = time.perf_counter()
    if runtime == "node":
        result = subprocess.run([node(), "--no-warnings", "-e", "0"], capture_output=True)  # warm the page cache
        start = time.perf_counter()
        from pylon.static_runner import run_static_node, script_invocation
        argv, pre = script_invocation(script, args)
        result = run_static_node(module, argv, env, pre, capture=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{script.name} failed on node: {result.stderr}")
        return elapsed, result.stdout.strip()
    with stdout_to(out):
        code = run_script(module, script, args, env)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{script.name} exited {code}")
    return elapsed, out.read_text().strip()


def best(n: int, fn):
    results = [fn() for _ in range(n)]
    return min(results, key=lambda r: r[0])


def cold_compile_seconds(path: Path, component: bool = False) -> float:
    import wasmtime

    config = wasmtime.Config()
    config.wasm_exceptions = True
    engine = wasmtime.Engine(config)
    start = time.perf_counter()
    if component:
        from wasmtime.component import Component
        Component.from_file(engine, str(path))
    else:
        wasmtime.Module.from_file(engine, str(path))
    return time.perf_counter() - start


def cpython_pylon() -> Path | None:
    found = sorted(paths.build_root().glob("guest-*/pylon.wasm"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256, help="MiB hashed per crc32c measurement")
    args = parser.parse_args()
    import crc32c as crc_ref

    rows: list[tuple[str, str]] = []
    exnref = build_micropython(["crc32c"], "exnref")
    legacy = build_micropython(["crc32c"], "legacy")
    for name, path in (("static module, exnref", exnref), ("static module, legacy", legacy)):
        raw = path.stat().st_size
        gzipped = len(gzip.compress(path.read_bytes()))
        rows.append((f"size: {name}", f"{raw / 1024:.0f} KiB ({gzipped / 1024:.0f} KiB gzipped)"))
    cpy = cpython_pylon()
    if cpy:
        rows.append(("size: CPython pylon (componentize-py guest)", f"{cpy.stat().st_size / 1024 / 1024:.1f} MiB"))

    tmp = Path(tempfile.mkdtemp(prefix="pylon-bench-mp-"))
    empty = tmp / "empty.py"
    empty.write_text("pass\n")
    c_script = tmp / "crc_c.py"
    c_script.write_text(C_SCRIPT)
    py_script = tmp / "crc_py.py"
    py_script.write_text(PY_SCRIPT)

    rows.append(("startup: cold compile, static (wasmtime)", f"{cold_compile_seconds(exnref) * 1000:.0f} ms"))
    timed_run(exnref, empty)  # fills wasmtime's cache
    warm = best(5, lambda: timed_run(exnref, empty))[0]
    rows.append((f"startup: whole run of `pass`, cached ({backend()})", f"{warm * 1000:.1f} ms"))
    child_env = {**os.environ, "PYTHONPATH": str(Path(paths.__file__).resolve().parents[1])}

    def process(cmd: list[str]) -> tuple[float, int]:
        start = time.perf_counter()
        code = subprocess.run(cmd, capture_output=True, env=child_env).returncode
        return time.perf_counter() - start, code

    proc = best(3, lambda: process([sys.executable, "-m", "pylon.static_runner", str(exnref), str(empty)]))
    rows.append(("startup: process `python -m pylon.static_runner M empty.py`", f"{proc[0] * 1000:.0f} ms"))
    process([sys.executable, "-m", "pylon.cli", "run", "-c", "pass"])  # compile once
    cproc = best(3, lambda: process([sys.executable, "-m", "pylon.cli", "run", "-c", "pass"]))
    rows.append(("startup: process `composectl run -c pass` (CPython pylon)",
                 f"{cproc[0] * 1000:.0f} ms" if cproc[1] == 0 else
                 f"n/a (composectl run exited {cproc[1]}; run `composectl setup`)"))
    if cpy:
        rows.append(("startup: cold compile, CPython pylon (wasmtime)",
                     f"{cold_compile_seconds(cpy, component=True):.2f} s"))
    if node():
        nrun = best(3, lambda: timed_run(legacy, empty, runtime="node"))[0]
        rows.append(("startup: whole run of `pass`, legacy on Node (process incl.)", f"{nrun * 1000:.0f} ms"))

    # crc32c: the static build and the native build, interleaved and best of
    # five each, so a neighbour's burst of load hits both alike.
    mib = args.mib
    env = [("PYLON_MP_HEAP", "8m")]
    exe = tmp / "crc_native"
    (tmp / "bench.c").write_text(NATIVE_C)
    toolchain.run(toolchain.zig() + ["cc", "-O3", "-I", str(REPO / "caps/crc32c/src"), str(tmp / "bench.c"),
                                     str(REPO / "caps/crc32c/src/crc32c.c"), "-o", str(exe)], what="native bench")
    t0s, tns, natives = [], [], []
    value = None
    for _ in range(5):
        t0s.append(timed_run(exnref, c_script, "0", env=env)[0])
        elapsed, value = timed_run(exnref, c_script, str(mib), env=env)
        tns.append(elapsed)
        natives.append(float(subprocess.run([str(exe), str(mib)], capture_output=True, text=True, check=True)
                             .stdout.split()[1]))
    buf = bytes(range(256)) * 4096
    c = 0
    for _ in range(mib):
        c = crc_ref.crc32c(buf, c)
    assert int(value) == c, "static crc32c disagrees with the reference"
    static_mbs = mib * 1.048576 / (min(tns) - min(t0s))
    native_mbs = mib * 1.048576 / min(natives)

    # Pure Python in the same static build.
    kib = 512
    p0, _ = best(3, lambda: timed_run(exnref, py_script, "0", env=env))
    pn, pvalue = best(3, lambda: timed_run(exnref, py_script, str(kib), env=env))
    kbuf = bytes(range(256)) * 4
    c = 0
    for _ in range(kib):
        c = crc_ref.crc32c(kbuf, c)
    assert int(pvalue) == c, "pure-Python crc32c disagrees with the reference"
    py_mbs = kib * 1024 / 1e6 / (pn - p0)

    rows.append(("crc32c: C in static build, wasmtime", f"{static_mbs:.0f} MB/s"))
    rows.append(("crc32c: same C native (zig cc -O3)", f"{native_mbs:.0f} MB/s"))
    rows.append(("crc32c: pure Python in static build, wasmtime", f"{py_mbs:.2f} MB/s"))
    rows.append(("ratio: static C / native", f"{static_mbs / native_mbs:.2f} (target >= 0.85)"))
    rows.append(("ratio: static C / pure Python", f"{static_mbs / py_mbs:.0f}x"))

    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
