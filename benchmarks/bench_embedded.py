"""Embedded caps: crc32c embedded vs dynlink, SQLite vs CPython's sqlite3,
zstd vs the zstandard package, and pylon.wasm lean vs fat.

    python benchmarks/bench_embedded.py [--repeats N] [--json OUT.json]

(also the last section of ``benchmarks/run_all.py``). Everything runs side by
side in one invocation: the native side (the host's CPython, sqlite3,
zstandard, crc32c) right before and right after one run of the stock (fat)
guest, whose script (guest_scripts/embedded.py) times its own loops with
``time.perf_counter`` inside the guest. The guest and the host run the same
workload code (guest_scripts/_embedded_work.py). Medians throughout; the
native median pools the before and after samples.

Lean vs fat: the stock guest (crc32c, sqlite, zstd plugged in with
``wac plug``) against the same guest built with no embedded cap
(``build_guest(embed=())``, cached; ~1 minute the first time, plus one
compile of the lean guest into the engine's cache). Warm start is
``composectl run -c pass`` with each as the plan's guest, runs interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
import _embedded_work as work  # noqa: E402  (on sys.path via _common: guest_scripts/)
from pylon.bench.data import make_data  # noqa: E402  (also composectl bench's payload)

DATA_SIZE = 16 << 20
REPEATS = 5
STARTUP_RUNS = 10
#: pylon_guest.sqlite against the guest's own built-in sqlite3 (issue 11).
TARGET_SQLITE = 1.3
TARGET_ZSTD = 2.0


def run_guest(guest: Path, digest: str, script: str, args: list[str], *, data_dir: Path,
              engine=None, plan: Path | None = None) -> dict:
    """``_common.run_guest_script`` plus a read-only preopen of ``data_dir``."""
    engine = engine or c.get_engine()
    the_plan, label = c.load_plan(plan)
    resolver = c.Resolver(the_plan, label, store=c.BlobStore(), trust=c.TrustPolicy.load())
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        out = Path(tmp) / "result.json"
        preopens = [(str(c.SCRIPTS), str(c.SCRIPTS), True), (str(data_dir), str(data_dir), True), (tmp, tmp, False)]
        status = engine.run_guest(str(guest), digest, argv=[str(c.SCRIPTS / script), str(out), *args], env=[],
                                  cwd=str(c.SCRIPTS), preopens=preopens, resolver=resolver)
        if status != 0:
            raise RuntimeError(f"guest script {script} exited with {status}")
        return json.loads(out.read_text())


def native_side(data: bytes, repeats: int) -> dict:
    """The host's figures for the same workloads."""
    import sqlite3  # noqa: PLC0415

    import crc32c  # noqa: PLC0415
    import zstandard  # noqa: PLC0415

    out: dict = {}
    out["sqlite"], out["sqlite_check"] = work.sqlite_suite(sqlite3, repeats)
    out["zstd"], out["zstd_check"] = work.zstd_suite(lambda d, lv: zstandard.compress(d, lv), zstandard.decompress,
                                                     data, repeats)
    zframe = zstandard.compress(bytes(len(data)), work.ZSTD_LEVEL)
    out["zeros_decompress_16mib"] = work.samples(lambda: zstandard.decompress(zframe), repeats)
    out["memcpy_16mib"] = work.samples(lambda: bytearray(data), repeats)
    out["crc32c_tiny_ns"] = c.per_call_ns(lambda: crc32c.crc32c(b"123456789"))
    out["crc32c_16mib_ns"] = c.per_call_ns(lambda: crc32c.crc32c(data), target_s=0.2, repeats=5)
    out["crc32c_hardware"] = bool(getattr(crc32c, "hardware_based", False))
    out["py_call_ns"] = c.per_call_ns(lambda: None)
    out["py_loop_s"] = work.samples(lambda: sum(i * 2 for i in range(1_000_000)), repeats)
    out["sqlite_version"] = sqlite3.sqlite_version
    out["zstandard"] = f"{zstandard.__version__} ({zstandard.backend}, zstd {zstandard.ZSTD_VERSION})"
    return out


def _pool(before: object, after: object) -> object:
    """Before and after samples, merged (dicts of lists recursively)."""
    if isinstance(before, dict):
        return {k: _pool(v, after[k]) for k, v in before.items()}  # type: ignore[index]
    if isinstance(before, list) and before and isinstance(before[0], float):
        return before + after  # type: ignore[operator]
    if isinstance(before, float):
        return [before, after]
    return before


def lean_guest(st: c.Stock) -> tuple[Path, str]:
    """The guest with no embedded cap, built (cached), stored and trusted.

    Trusted as `composectl setup` trusts the stock guest it built: this one
    is built here from the same sources, and `composectl run` (timed below)
    refuses a guest the trust policy does not list.
    """
    built = c.build_guest(embed=())
    digest = c.BlobStore().put_file(built.path)
    policy = c.TrustPolicy.load()
    if policy.allow_guest(digest):
        policy.save()
        c.log(f"trusted the lean guest it built ({digest}); `composectl trust revoke --guest {digest}` undoes it")
    return c.BlobStore().blob_path(digest), digest


def startup(st: c.Stock, lean: Path, lean_digest: str, runs: int = STARTUP_RUNS) -> dict:
    composectl = str(Path(sys.executable).parent / "composectl")
    guests = {"fat": (st.guest, st.guest_digest), "lean": (lean, lean_digest)}
    out: dict = {k: {"bytes": p.stat().st_size} for k, (p, _) in guests.items()}
    for name, (path, digest) in guests.items():
        t0 = time.perf_counter()
        origin = c.get_engine().precompile(str(path), digest)
        out[name]["precompile"] = (origin, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        tmp = Path(tmp)
        doc = json.loads(st.plan.read_text())
        doc["guest"] = {"digest": lean_digest, "sources": [lean.as_uri()]}
        (tmp / "lean-plan.json").write_text(json.dumps(doc))
        (tmp / "pass.py").write_text("pass\n")
        cmds = {"fat": [composectl, "run", "-c", "pass"],
                "lean": [composectl, "run", "--plan", str(tmp / "lean-plan.json"), "-c", "pass"]}
        c.log(f"lean vs fat: composectl run -c pass x{runs} each, interleaved")
        for cmd in cmds.values():  # warm the page cache
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        cli: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(runs):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
                cli[name].append(time.perf_counter() - t0)

        c.log("lean vs fat: in-process run_guest, fresh engine (disk cache) and memory-cached engine")
        script = str(tmp / "pass.py")
        pre = [(str(tmp), str(tmp), True)]

        def run_once(engine, path: Path, digest: str) -> float:
            t0 = time.perf_counter()
            status = engine.run_guest(str(path), digest, argv=[script], env=[], cwd=str(tmp), preopens=pre,
                                      resolver=None)
            assert status == 0
            return time.perf_counter() - t0

        fresh: dict[str, list[float]] = {k: [] for k in guests}
        cached: dict[str, list[float]] = {k: [] for k in guests}
        shared = c.get_engine()
        for _ in range(runs):
            for name, (path, digest) in guests.items():
                fresh[name].append(run_once(c.Engine(str(c.paths.compiled_root())), path, digest))
                cached[name].append(run_once(shared, path, digest))
    for name in guests:
        out[name]["cli"] = cli[name]
        out[name]["fresh_engine"] = fresh[name]
        out[name]["cached_engine"] = cached[name]
    return out


def run(st: c.Stock, repeats: int = REPEATS) -> dict:
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="pylon-bench-data-") as tmp:
        data_dir = Path(tmp)
        data = make_data(data_dir / "data.bin")
        c.log(f"embedded caps: native side (before), {repeats} repeats")
        before = native_side(data, repeats)
        c.log("embedded caps: one run of the stock guest (guest_scripts/embedded.py)")
        c.get_engine().precompile(str(st.guest), st.guest_digest)
        t0 = time.perf_counter()
        res["guest"] = run_guest(st.guest, st.guest_digest, "embedded.py",
                                 [str(data_dir / "data.bin"), str(repeats)], data_dir=data_dir)
        res["guest_run_s"] = time.perf_counter() - t0
        c.log("embedded caps: native side (after)")
        after = native_side(data, repeats)
    res["native"] = _pool(before, after)
    res["native"]["crc32c_tiny_ns"] = statistics.median(res["native"]["crc32c_tiny_ns"])
    res["native"]["crc32c_16mib_ns"] = statistics.median(res["native"]["crc32c_16mib_ns"])
    res["native"]["py_call_ns"] = statistics.median(res["native"]["py_call_ns"])
    g, n = res["guest"], res["native"]
    if g["sqlite_check"] != n["sqlite_check"]:
        raise AssertionError(f"pylon_guest.sqlite and sqlite3 disagree: {g['sqlite_check']} != {n['sqlite_check']}")
    if g["sqlite_builtin_check"] != n["sqlite_check"]:
        raise AssertionError(f"the guest's sqlite3 and the host's disagree: {g['sqlite_builtin_check']}")
    c.log("embedded caps: lean vs fat guest")
    lean, lean_digest = lean_guest(st)
    res["startup"] = startup(st, lean, lean_digest)
    return res


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(res: dict) -> dict:
    """Prints the tables; returns the headline ratios."""
    g, n, s = res["guest"], res["native"], res["startup"]
    gs, ns = g["sqlite"], n["sqlite"]
    gz, nz = g["zstd"], n["zstd"]
    ratios = {}
    print(f"\nEmbedded caps (stock guest: {', '.join(f'{k} {v}' for k, v in g['backends'].items())}; "
          f"native: CPython sqlite3 {n['sqlite_version']} vs the cap's 3.50.4, zstandard {n['zstandard']})")

    print("\n  crc32c, one guest run (embedded = wac-plugged typed import called from C, dynlink = host round trip)")
    tiny, big = g["crc32c_tiny_ns"], g["crc32c_16mib_ns"]
    print(f"   {'':<34}{'embedded':>12}{'dynlink':>12}{'dynlink/embedded':>18}{'native':>12}")
    print(f"   {'tiny call (9 bytes), us':<34}{tiny['embedded'] / 1e3:12.2f}{tiny['dynlink'] / 1e3:12.2f}"
          f"{tiny['dynlink'] / tiny['embedded']:17.2f}x{n['crc32c_tiny_ns'] / 1e3:12.2f}")
    mbs = lambda ns_: DATA_SIZE / 1e6 / (ns_ / 1e9)  # noqa: E731
    print(f"   {'16 MiB, MB/s':<34}{mbs(big['embedded']):12.0f}{mbs(big['dynlink']):12.0f}"
          f"{big['dynlink'] / big['embedded']:17.2f}x{mbs(n['crc32c_16mib_ns']):12.0f}")
    print(f"   the typed import through componentize-py's generic path {tiny['embedded_raw'] / 1e3:.2f} us "
          f"(embedded goes through the cap's C binding); a Python call in the guest "
          f"{tiny['py_call'] / 1e3:.2f} us (host {n['py_call_ns'] / 1e3:.2f} us); native crc32c "
          f"hardware={n['crc32c_hardware']}")
    ratios["crc32c_tiny_dynlink_over_embedded"] = tiny["dynlink"] / tiny["embedded"]
    ratios["crc32c_16mib_dynlink_over_embedded"] = big["dynlink"] / big["embedded"]

    gb = g["sqlite_builtin"]
    print(f"\n  SQLite, ':memory:', {work.ROWS // 1000}k rows (medians; pylon_guest.sqlite = the embedded cap, "
          f"SQLite 3.50.4; guest sqlite3 = CPython's _sqlite3 inside pylon.wasm, SQLite "
          f"{g.get('sqlite_builtin_version', '?')}; host = CPython {n['sqlite_version']})")
    print(f"   {'':<44}{'pylon':>9}{'guest sqlite3':>15}{'host':>9}{'/guest':>8}{'/host':>8}"
          f"   target <= {TARGET_SQLITE:g}x the guest's sqlite3")
    rows = [
        ("insert", f"executemany {work.ROWS // 1000}k rows + commit, ms", 1e3),
        ("fetchall", "fetchall of 100k rows, ms", 1e3),
        ("iterate", "for row in cursor, 100k rows, ms", 1e3),
        ("fetchmany", "fetchmany(100) over 100k rows, ms", 1e3),
        ("select", "point select (execute + fetchone), us", 1e6),
        ("aggregate", "aggregate over 100k rows, ms", 1e3),
    ]
    for key, what, scale in rows:
        r = med(gs[key]) / med(gb[key])
        rh = med(gs[key]) / med(ns[key])
        ratios[f"sqlite_{key}"] = r
        ratios[f"sqlite_{key}_vs_host"] = rh
        ratios[f"sqlite_{key}_builtin_vs_host"] = med(gb[key]) / med(ns[key])
        print(f"   {what:<44}{med(gs[key]) * scale:9.1f}{med(gb[key]) * scale:15.1f}{med(ns[key]) * scale:9.1f}"
              f"{r:7.2f}x{rh:7.2f}x   "
              f"{'MET' if r <= TARGET_SQLITE else f'MISSED by {(r / TARGET_SQLITE - 1) * 100:.0f}%'}")

    d = g["sqlite_diag"]
    if d:
        sel = d["select_ns"]
        print("   where the guest's time goes:")
        print(f"     executemany 100k ({med(gs['insert']) * 1e3:.0f} ms): the rows packed by the binding's codec "
              f"{med(d['pack_100k_binding']) * 1e3:.0f} ms (marshal.dumps + Latin-1 decode, the route without it: "
              f"{med(d['pack_100k']) * 1e3:.0f} ms)")
        print(f"     point select: DB-API path {sel['full'] / 1e3:.2f} us = the binding's run() "
              f"{sel['run'] / 1e3:.2f} us (packing, the run-packed call, unpacking, in C) + the cursor "
              f"(its execute and fetchone in C too);"
              f"\n       the run-packed call alone {sel['raw'] / 1e3:.2f} us from C, "
              f"{sel['raw_generic'] / 1e3:.2f} us through componentize-py's generic path (a no-op typed call there "
              f"{sel['noop_typed'] / 1e3:.2f} us); in Python, packing the parameters {sel['pack'] / 1e3:.2f} us, "
              f"unpacking the reply {sel['unpack'] / 1e3:.2f} us; a Python call {sel['py_call'] / 1e3:.2f} us")
        print(f"     fetchall 100k: one step-packed call {med(d['scan_raw_100k']) * 1e3:.0f} ms "
              f"({d['scan_bytes'] / 1e6:.1f} MB packed) + marshal.loads {med(d['scan_loads_100k']) * 1e3:.0f} ms; "
              f"with the cyclic GC paused: pylon {med(d['fetchall_gc_off']) * 1e3:.0f} ms, "
              f"guest sqlite3 {med(d['fetchall_builtin_gc_off']) * 1e3:.0f} ms")
    print(f"     the interpreter: the same pure-Python loop (sum of 1M) guest {med(g['py_loop_s']) * 1e3:.0f} ms, "
          f"host {med(n['py_loop_s']) * 1e3:.0f} ms ({med(g['py_loop_s']) / med(n['py_loop_s']):.2f}x)")

    print(f"\n  zstd level {work.ZSTD_LEVEL}, 16 MiB of JSON-lines text (frame {g['zstd_check']['frame_len']} bytes "
          f"guest, {n['zstd_check']['frame_len']} native)")
    print(f"   {'':<41}{'pylon_guest.zstd':>16}{'zstandard':>11}{'ratio':>8}   target <= {TARGET_ZSTD:g}x")
    for key in ("compress", "decompress"):
        r = med(gz[key]) / med(nz[key])
        ratios[f"zstd_{key}"] = r
        print(f"   {key + ', MB/s (ms)':<44}{mbs(med(gz[key]) * 1e9):7.0f} ({med(gz[key]) * 1e3:3.0f})"
              f"{mbs(med(nz[key]) * 1e9):5.0f} ({med(nz[key]) * 1e3:3.0f}){r:7.2f}x   "
              f"{'MET' if r <= TARGET_ZSTD else f'MISSED by {(r / TARGET_ZSTD - 1) * 100:.0f}%'}")
    z = g["zstd_diag"]
    if z:
        print("   where the guest's time goes:")
        print(f"     16 MiB into the cap (a non-frame, refused after lowering): "
              f"{med(z['copy_in_16mib']) * 1e3:.1f} ms; "
              f"decompress 16 MiB of zeros (memset + lift out): {med(z['zeros_decompress_16mib']) * 1e3:.1f} ms "
              f"through componentize-py's generic path, "
              + (f"{med(z['zeros_decompress_binding_16mib']) * 1e3:.1f} ms through the guest binding "
                 if "zeros_decompress_binding_16mib" in z else "")
              + f"(native {med(n['zeros_decompress_16mib']) * 1e3:.1f} ms); bytearray(16 MiB) "
              f"{med(z['guest_memcpy_16mib']) * 1e3:.1f} ms (native {med(n['memcpy_16mib']) * 1e3:.1f} ms)")
        print(f"     raw typed compress {med(z['compress_raw']) * 1e3:.0f} ms vs pylon_guest.zstd.compress "
              f"{med(gz['compress']) * 1e3:.0f} ms; the same cap by dynlink: compress "
              f"{med(z['dynlink_compress']) * 1e3:.0f} ms, decompress {med(z['dynlink_decompress']) * 1e3:.0f} ms")

    fat, lean = s["fat"], s["lean"]
    print("\n  pylon.wasm, lean (no embedded caps) vs fat (stock: crc32c, sqlite, zstd)")
    print(f"   {'':<52}{'lean':>10}{'fat':>10}{'fat/lean':>10}")
    print(f"   {'size, MiB':<52}{lean['bytes'] / 2**20:10.2f}{fat['bytes'] / 2**20:10.2f}"
          f"{fat['bytes'] / lean['bytes']:9.3f}x   (+{(fat['bytes'] - lean['bytes']) / 2**10:.0f} KiB)")
    for key, what in (("cli", f"warm composectl run -c pass, ms (median of {len(fat['cli'])})"),
                      ("fresh_engine", "in-process run, fresh engine (disk cache), ms"),
                      ("cached_engine", "in-process run, memory-cached engine, ms")):
        a, b_ = med(lean[key]), med(fat[key])
        ratios[f"start_{key}_fat_over_lean"] = b_ / a
        print(f"   {what:<52}{a * 1e3:10.1f}{b_ * 1e3:10.1f}{b_ / a:9.2f}x")
    print(f"   (compile: lean {lean['precompile'][0]} {lean['precompile'][1]:.1f} s, "
          f"fat {fat['precompile'][0]} {fat['precompile'][1]:.1f} s)")
    return ratios


def run_and_report(st: c.Stock, repeats: int = REPEATS) -> dict:
    """What run_all.py calls: measures, prints, returns the raw figures."""
    res = run(st, repeats)
    res["ratios"] = report(res)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="samples per measurement and side")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    opts = parser.parse_args()
    started = time.perf_counter()
    c.log("setup: stock guest and caps (cached)")
    st = c.ensure_stock()
    res = run_and_report(st, opts.repeats)
    print(f"\n   ({time.perf_counter() - started:.0f} s in all; guest run {res['guest_run_s']:.0f} s)")
    if opts.json:
        opts.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
