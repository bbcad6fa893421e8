"""The benchmark inside the CPython guest (pylon.wasm): one job per run.

``composectl bench`` copies this file and :mod:`timing` into a temporary
folder the guest sees, and runs ``guest_driver.py JOB.json OUT.json``. A job
(JSON) says which face to call (``dynlink``: through the host's linker,
``embedded``: the cap ``wac plug``-ged into pylon.wasm), what to call (a
``[bench]`` entry of the cap's manifest) and what to measure:

* ``tiny``: ns per call with ``tiny_bytes`` of data;
* ``bulk``: ns per call with ``size`` bytes (one size per run: many calls at
  one size then larger ones in the same run abort in componentize-py's
  runtime, see benchmarks/bench_throughput.py);
* ``resolve``: ``dynlink.load(name)`` and the first call after it, once.

Only what the run's guest offers is imported, so the module runs on the
host too (tests, typing), where it is never ``__main__``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

try:
    from pylon.bench import timing  # the host: the package
except ImportError:  # the guest: copied beside this file
    import timing  # type: ignore[import-not-found,no-redef]


#: Per guest run: at most this many timed calls, and this much payload in all.
MAX_CALLS = 60_000
PAYLOAD_BUDGET = 192 << 20


def read_data(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) != size:
        raise SystemExit(f"the data file has {len(data)} bytes, not {size}")
    return data


def callable_for(job: dict[str, Any], data: bytes, cap: Any) -> Callable[[], object]:
    """The timed call: a dynlink method with its payload, or the entry's Python."""
    entry = job["call"]
    if entry.get("method"):
        method, kind = entry["method"], entry.get("payload", "raw")
        invoke = cap.invoke
        if kind == "raw":
            return lambda: invoke(method, data)
        import cbor2  # in the guest: bundled with pylon_guest.dynlink

        # Encoding the request and decoding the reply are part of the call:
        # a script using the cap pays both.
        items = [data, *entry.get("extra", [])] if kind == "cbor-array" else data
        dumps, loads = cbor2.dumps, cbor2.loads
        return lambda: loads(invoke(method, dumps(items)))
    ns: dict[str, Any] = {"data": data, "cap": cap}
    exec(entry.get("imports") or "", ns)  # noqa: S102 - the cap author's own benchmark code
    exec(entry.get("setup") or "", ns)  # noqa: S102
    fn: Callable[[], object] = eval("lambda: " + entry["call"], ns)  # noqa: S307
    return fn


def embedded_missing(job: dict[str, Any]) -> str | None:
    """Why the embedded face cannot be measured in this guest, or None."""
    try:
        importlib.import_module("wit_world.imports." + job["import_name"])
    except ImportError:
        return f"this pylon.wasm does not embed {job['name']}"
    return None


def run(job: dict[str, Any]) -> dict[str, Any]:
    kind = job["job"]
    size = job["size"]
    data = read_data(job["data"], size)
    cap = None
    if job["face"] == "embedded":
        why = embedded_missing(job)
        if why:
            return {"unavailable": why}
    if job["face"] == "dynlink":
        from pylon_guest import dynlink  # type: ignore[import-not-found]

        t0 = time.perf_counter_ns()
        cap = dynlink.load(job["name"])
        t1 = time.perf_counter_ns()
        if kind == "resolve":
            fn = callable_for(job, data, cap)
            t2 = time.perf_counter_ns()
            fn()
            t3 = time.perf_counter_ns()
            return {"resolve_ns": t1 - t0, "first_call_ns": t3 - t2}
    fn = callable_for(job, data, cap)
    fn()  # warm: first-call costs (lazy imports, the cap's own set-up) are not the figure
    # Bounded per run: calls through a cap leave memory behind in the guest
    # (about the payload per call), and a run that reaches its limit traps.
    max_calls = max(job["repeats"] + 2, min(MAX_CALLS, PAYLOAD_BUDGET // max(size, 1)))
    samples = timing.per_call_ns(fn, target_s=job["target_s"], repeats=job["repeats"], max_calls=max_calls)
    return {"samples_ns": samples}


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        job = json.load(f)
    result = run(job)
    with open(argv[2], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
