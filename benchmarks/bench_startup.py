"""Start-up: a warm ``composectl run hello.py`` vs ``python -c pass``, split into
CLI imports and engine time, and the first resolve of a cached and an uncached cap.

Warm run: the guest is compiled already (disk cache), nothing is fetched.
Subprocesses run the venv's own python and composectl, stdout to /dev/null.
The in-process split calls :func:`pylon.runtime.run` with a fresh engine each
time (``get_engine.cache_clear()``), so the guest comes from the disk cache
exactly as in a new ``composectl`` process; it is timed with and without the
Engine construction.

First resolve: ``dynlink.load("crc32c")`` timed inside the stock guest, each
run on a fresh engine: "cached" with the cap's compiled artifact on disk,
"uncached" with a copy of the cap made unique by a custom section (so its
digest was never compiled; its artifact is deleted before each run, and the
copy lives in a temporary blob store and an in-memory trust policy, so
nothing of the user's install changes).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
from pylon.bench.measure import drop_compiled as _drop_compiled  # composectl bench measures first resolves too
from pylon.bench.measure import nonced_cap as _nonced_cap

HELLO = c.REPO / "examples" / "hello.py"
RUNS = 10
RESOLVES = 5


@contextlib.contextmanager
def stdout_to_devnull():
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _subprocess_median(cmd: list[str], n: int) -> tuple[float, float, float]:
    # In-process runs, even with a `composectl server` running (bench_embedding.py times that).
    env = {**os.environ, "PYLON_SERVER": "0"}

    def once() -> None:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=env)
    once()  # warm the page cache and the compile cache
    return c.median_s(once, n)


def warm_run() -> dict:
    from pylon import runtime  # noqa: PLC0415

    py = sys.executable
    composectl = str(Path(py).parent / "composectl")
    c.log(f"warm run: composectl run hello.py x{RUNS} vs python -c pass x{RUNS}")
    out = {
        "python_pass": _subprocess_median([py, "-c", "pass"], RUNS),
        "composectl_run": _subprocess_median([composectl, "run", str(HELLO)], RUNS),
        "cli_imports": _subprocess_median(
            [py, "-c", "import pylon.cli.main, pylon.cli.run_cmd, pylon.runtime, pylon.engine"], RUNS),
    }

    c.log("warm run: in-process split (fresh engine per run)")
    engine_new, run_total, run_guest_only = [], [], []
    for _ in range(RUNS):
        c.get_engine.cache_clear()
        t0 = time.perf_counter()
        c.get_engine()
        t1 = time.perf_counter()
        with stdout_to_devnull():
            status = runtime.run(script=str(HELLO))
        t2 = time.perf_counter()
        assert status == 0
        engine_new.append(t1 - t0)
        run_total.append(t2 - t0)
    # The guest call alone on a memory-cached engine: instantiate + run.
    st_digest = c.stock.stock_guest_digest()
    guest_path = str(c.BlobStore().blob_path(st_digest))
    engine = c.get_engine()
    for _ in range(RUNS):
        t0 = time.perf_counter()
        with stdout_to_devnull():
            engine.run_guest(guest_path, st_digest, argv=[str(HELLO)], env=[], cwd=str(HELLO.parent),
                             preopens=[(str(HELLO.parent), str(HELLO.parent), False)], resolver=None)
        run_guest_only.append(time.perf_counter() - t0)
    out["engine_new"] = statistics.median(engine_new)
    out["inprocess_run"] = statistics.median(run_total)
    out["memory_cached_run_guest"] = statistics.median(run_guest_only)
    return out


def first_resolve(st: c.Stock) -> dict:
    from pylon.runtime import Resolver  # noqa: PLC0415

    c.log(f"first resolve: cached / uncached cap, {RESOLVES} runs each, fresh engine per run")
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        tmp = Path(tmp)
        cold = _nonced_cap(st.cap, tmp / "crc32c-cold.wasm")
        store = c.BlobStore(tmp / "blobs")
        cold_digest = store.put_file(cold)
        warm_digest = store.put_file(st.cap)
        plan_doc = {"pylon-plan": 1, "caps": {
            "crc32c": {"digest": warm_digest, "sources": []},
            "crc32c-cold": {"digest": cold_digest, "sources": []},
        }}
        plan_file = tmp / "plan.json"
        plan_file.write_text(json.dumps(plan_doc))
        trust = c.TrustPolicy(path=tmp / "trust.json", allow={"crc32c": {warm_digest}, "crc32c-cold": {cold_digest}})
        c.get_engine().precompile(str(st.cap), st.cap_digest)  # the cached case is cached

        def resolve(name: str, engine) -> dict:
            the_plan, label = c.load_plan(plan_file)
            resolver = Resolver(the_plan, label, store=store, trust=trust)
            return c.run_guest_script(st.guest, st.guest_digest, "resolve.py", [name], engine=engine,
                                      resolver=resolver)

        try:
            for case, name in (("cached", "crc32c"), ("uncached", "crc32c-cold")):
                samples = []
                for _ in range(RESOLVES):
                    if case == "uncached":
                        _drop_compiled(cold_digest)
                    samples.append(resolve(name, c.Engine(str(c.paths.compiled_root())))["resolve_ns"])
                out[case] = statistics.median(samples)
                out[case + "_range"] = (min(samples), max(samples))
            engine = c.get_engine()
            resolve("crc32c", engine)
            out["memory"] = statistics.median(resolve("crc32c", engine)["resolve_ns"] for _ in range(RESOLVES))
        finally:
            _drop_compiled(cold_digest)
    return out
