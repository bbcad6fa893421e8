"""Pylon's benchmarks, side by side in one run; prints figures and ratios.

    python benchmarks/run_all.py [--json OUT.json] [--quick]

(``make bench`` runs this after ``composectl setup``.) It builds what it needs
from the stock setup: the composed bench guest (the stock guest built for the
bench world in benchmarks/composed/, with the crc32c cap ``wac plug``-ged in),
compiled once into the engine's cache, and wasmtime-py's compiled copy of the
stock guest. The first run spends ~1-2 minutes on that; later runs reuse it.
``--quick`` skips the 256 MiB size (and shortens the embedding section). Results
and their reading: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
import bench_embedded  # noqa: E402
import bench_embedding  # noqa: E402
import bench_handles  # noqa: E402
import bench_invoke  # noqa: E402
import bench_startup  # noqa: E402
import bench_throughput  # noqa: E402
from bench_throughput import label, mb_s  # noqa: E402

#: Reference figures of the Extism peer, measured on this machine before the
#: project started (../shared/research/feasibility.md; extism 1.1.1, libextism
#: 1.41.0, Python host, a C crc32c plugin). Not re-measured here.
EXTISM = {"tiny_us": 5.4, "tiny_cffi_us": 3.2, "mb_s": 870, "native_mb_s": 2200,
          "plugin_warm_ms": 0.4, "plugin_cold_ms": (9, 11)}
#: The feasibility study's wasmtime-py figures, for the same comparison.
FEASIBILITY = {"wtpy_full_route_us": 72, "wtpy_leg_us": 117, "composed_us": 0.92}


def us(ns: float) -> str:
    return f"{ns / 1e3:8.2f}"


def ms(s: float) -> str:
    return f"{s * 1e3:8.1f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--quick", action="store_true", help="skip the 256 MiB size")
    opts = parser.parse_args()

    started = time.perf_counter()
    c.log("setup: stock guest and caps (cached), composed bench guest")
    st = c.ensure_stock()
    composed = c.ensure_composed(st)
    for what, path, digest in (("stock guest", st.guest, st.guest_digest),
                               ("composed guest", composed.path, composed.digest)):
        t0 = time.perf_counter()
        origin = c.get_engine().precompile(str(path), digest)
        c.log(f"{what}: {origin} in {time.perf_counter() - t0:.1f} s")

    sizes = bench_throughput.SIZES[:-1] if opts.quick else bench_throughput.SIZES
    inv = bench_invoke.run(st, composed)
    thr = bench_throughput.run(st, composed, sizes)
    warm = bench_startup.warm_run()
    res = bench_startup.first_resolve(st)
    elapsed = time.perf_counter() - started

    load = os.getloadavg()
    print()
    print(f"Pylon benchmarks: {time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {os.cpu_count()} cores "
          f"(load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}), CPython {platform.python_version()} host; "
          f"engine wasmtime 48, wasmtime-py {inv.get('wtpy_version', '?')}; RUST_BACKTRACE unset")

    # -- 1. tiny invoke ------------------------------------------------------
    composed_ns = inv["guest_composed_invoke"]
    dyn_ns = inv["guest_dynlink_cap_invoke"]
    print("\n1. Tiny invoke round trip: crc32c of 9 bytes, 4-byte reply (us per call)")
    print(f"   {'route':<68}{'us':>8}   ratio")
    rows = [
        ("in the guest, one run (our engine):", None, None),
        ("  dynlink: Cap.invoke, guest -> host -> provider Store", dyn_ns, dyn_ns / composed_ns),
        ("  dynlink: the resource binding alone (instance.invoke)", inv["guest_dynlink_binding"],
         inv["guest_dynlink_binding"] / composed_ns),
        ("  composed at build time (wac plug), provider.invoke", composed_ns, 1.0),
        ("  a Python function call in the guest (loop floor)", inv["guest_py_call"], None),
    ]
    if "wtpy_full_route" in inv:
        rows += [
            ("same guest -> host -> provider route hosted by wasmtime-py", inv["wtpy_full_route"],
             inv["wtpy_full_route"] / composed_ns),
            ("host -> provider, from Python:", None, None),
            ("  our engine, Provider.invoke", inv["host_engine_provider"], None),
            ("  wasmtime-py, component Func call", inv["wtpy_provider_leg"], None),
        ]
    else:
        rows += [("wasmtime-py route: FAILED " + str(inv.get("wtpy_error")), None, None),
                 ("host -> provider from Python, our engine", inv["host_engine_provider"], None)]
    rows += [
        (f"native CPython, crc32c.crc32c (C, PyPI crc32c, hw={inv['native_hardware']})",
         inv["native_crc32c"], None),
        ("a Python function call on the host (loop floor)", inv["host_py_call"], None),
    ]
    for name, ns, ratio in rows:
        if ns is None:
            print(f"   {name}")
        else:
            r = f"{ratio:6.2f}x composed" if ratio is not None else ""
            print(f"   {name:<68}{us(ns)}   {r}")
    print(f"   dynlink / native crc32c call: {dyn_ns / inv['native_crc32c']:.0f}x")
    if "wtpy_full_route" in inv:
        print(f"   wasmtime-py route / dynlink: {inv['wtpy_full_route'] / dyn_ns:.0f}x;  "
              f"host->provider leg, wasmtime-py / our engine: "
              f"{inv['wtpy_provider_leg'] / inv['host_engine_provider']:.0f}x")
    print(f"   Extism reference (feasibility.md, Python host -> C plugin): {EXTISM['tiny_us']} us per tiny call "
          f"({EXTISM['tiny_cffi_us']} us via cffi); our host -> provider leg: "
          f"{inv['host_engine_provider'] / 1e3:.2f} us")

    # -- 2. throughput -------------------------------------------------------
    print("\n2. crc32c throughput, one guest run (MB/s, 1 MB = 10^6 bytes)")
    print(f"   {'size':>8}{'dynlink':>12}{'composed':>12}{'dynlink/composed':>19}")
    for size in sizes:
        g = thr["guest"][size]
        print(f"   {label(size):>8}{mb_s(size, g['dynlink']):12.0f}{mb_s(size, g['composed']):12.0f}"
              f"{g['composed'] / g['dynlink']:18.2f}x")
    g16 = thr["guest"].get(16 << 20, {})
    if "dynlink_copy" in g16:
        print(f"   copy only, 16 MiB (payload refused after 1 byte): dynlink {mb_s(16 << 20, g16['dynlink_copy']):.0f}"
              f" MB/s, composed {mb_s(16 << 20, g16['composed_copy']):.0f} MB/s")
    for size in bench_throughput.HOST_SIZES:
        print(f"   {label(size):>8} host -> provider from Python (our engine): "
              f"{mb_s(size, thr['host_engine'][size]):6.0f} MB/s;  native CPython crc32c: "
              f"{mb_s(size, thr['native'][size]):6.0f} MB/s")
    if inv.get("wtpy_provider_leg_1mib"):
        print(f"     1 MiB host -> provider through wasmtime-py: "
              f"{mb_s(1 << 20, inv['wtpy_provider_leg_1mib']):.2f} MB/s")
    print(f"   Extism reference: {EXTISM['mb_s']} MB/s at 1-256 MiB (native C there: {EXTISM['native_mb_s']} MB/s)")

    # -- 3. start-up ---------------------------------------------------------
    print("\n3. Start-up (ms, median of "
          f"{bench_startup.RUNS} runs; min-max in brackets)")
    py_pass, run_cli, imports = warm["python_pass"], warm["composectl_run"], warm["cli_imports"]

    def line(name: str, t: tuple[float, float, float]) -> None:
        print(f"   {name:<62}{ms(t[0])}   [{t[1] * 1e3:.1f}-{t[2] * 1e3:.1f}]")

    line("python -c pass", py_pass)
    line("composectl run examples/hello.py (warm: guest compiled)", run_cli)
    line("python -c 'import pylon.cli.main, ..run_cmd, .runtime, .engine'", imports)
    print(f"   {'in-process runtime.run(hello.py), fresh engine (= engine time)':<62}{ms(warm['inprocess_run'])}")
    print(f"   {'  of which Engine() construction':<62}{ms(warm['engine_new'])}")
    print(f"   {'  run_guest on a memory-cached engine (instantiate + run)':<62}"
          f"{ms(warm['memory_cached_run_guest'])}")
    over = run_cli[0] - py_pass[0]
    cli_py = imports[0] - py_pass[0]
    print(f"   composectl run - python -c pass = {over * 1e3:.1f} ms = CLI imports {cli_py * 1e3:.1f} ms + "
          f"engine {warm['inprocess_run'] * 1e3:.1f} ms + rest {(over - cli_py - warm['inprocess_run']) * 1e3:.1f} ms")
    print(f"   first dynlink.load('crc32c') in a run, fresh engine: cached (disk) {res['cached'] / 1e6:.2f} ms, "
          f"uncached (compiles) {res['uncached'] / 1e6:.1f} ms; "
          f"memory-cached engine {res['memory'] / 1e6:.2f} ms")
    print(f"   Extism reference: plugin creation {EXTISM['plugin_warm_ms']} ms warm, "
          f"{EXTISM['plugin_cold_ms'][0]}-{EXTISM['plugin_cold_ms'][1]} ms cold")

    # -- 4. targets ----------------------------------------------------------
    tiny_ratio = dyn_ns / composed_ns
    print("\n4. Targets")
    print(f"   tiny invoke <= 1.5x composed: {tiny_ratio:.2f}x  {verdict(tiny_ratio <= 1.5)}"
          f" (resource binding alone: {inv['guest_dynlink_binding'] / composed_ns:.2f}x)")
    if "wtpy_full_route" in inv:
        speedup = inv["wtpy_full_route"] / dyn_ns
        print(f"   tiny invoke >= 50x faster than the wasmtime-py route: {speedup:.0f}x  {verdict(speedup >= 50)}")
    if 16 << 20 in thr["guest"]:
        share = g16["composed"] / g16["dynlink"]
        print(f"   16 MiB dynlink >= 85% of composed throughput: {share * 100:.0f}%  {verdict(share >= 0.85)}")
    engine_ms = warm["inprocess_run"] * 1e3
    print(f"   warm run <= python -c pass + 20 ms of engine time: engine {engine_ms:.1f} ms  "
          f"{verdict(engine_ms <= 20)}; whole CLI: python -c pass + {over * 1e3:.1f} ms  {verdict(over <= 0.020)}")
    print(f"\n   ({elapsed:.0f} s in all)")

    # -- 5. embedded caps: bench_embedded.py (prints its own tables) ----------
    bench_embedded.run_and_report(st)

    # -- 6. the embedding API and the CLI vs eryx: bench_embedding.py ---------
    embedding = bench_embedding.run_and_report(quick=opts.quick)

    # -- 7. handles over dynlink: bench_handles.py ------------------------------
    print("\n7. Handles over dynlink: SQLite via the generated proxy vs embedded vs built-in sqlite3")
    handles = bench_handles.measure(repeats=5 if opts.quick else bench_handles.REPEATS)
    print("\n".join(bench_handles.report(handles)))

    if opts.json:
        opts.json.write_text(json.dumps({"invoke": inv, "throughput": thr, "warm": warm, "resolve": res,
                                         "embedding": embedding, "handles": handles}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
