"""crc32c throughput at 1 KiB .. 256 MiB: dynlink vs composed in one guest run,
plus the host -> provider leg from Python (our engine) and native CPython.

256 MiB needs the cap's plan limits raised (memory-mb 1024, max-payload-mb 300),
so the guest runs with a copy of the default plan that raises them.

Each size gets a guest run of its own (both routes side by side in it): after
many calls at one size, calls at a larger size in the same run abort inside
componentize-py's runtime (``PyGILState_Release`` fatal error under
``wit_dylib_pop_list``, componentize-py 0.25.1; reproduced with a fixed call
sequence: 2000 64 KiB calls, then 40 + 80 16 MiB calls, both routes
interleaved), or run 2-3x slower when they do not abort. A size measured alone
gives the figure a probe gives (docs/benchmarks.md, "Bulk copies across the cap
boundary").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import _common as c

SIZES = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]
HOST_SIZES = [1 << 20, 16 << 20]


def run(st: c.Stock, composed: c.Composed, sizes: list[int] = SIZES) -> dict:
    out: dict = {"guest": {}, "host_engine": {}, "native": {}}
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        plan = c.plan_with_limits(st, Path(tmp) / "plan.json", memory_mb=1024, max_payload_mb=300)
        for size in sizes:
            c.log(f"throughput in the composed guest: {label(size)}")
            guest = c.run_guest_script(composed.path, composed.digest, "throughput.py", [str(size)], plan=plan)
            out["guest"].update({int(k): v for k, v in guest.items()})

    c.log("throughput: host -> provider (our engine) and native")
    import crc32c  # noqa: PLC0415

    provider = c.get_engine().load_provider(c.provider_spec(st, memory_mb=256, max_payload_mb=64))
    for size in HOST_SIZES:
        buf = bytes(range(256)) * (size // 256)
        assert provider.invoke("crc32c", buf) == crc32c.crc32c(buf).to_bytes(4, "little")
        out["host_engine"][size] = c.per_call_ns(lambda buf=buf: provider.invoke("crc32c", buf),
                                                 target_s=0.2, repeats=5)
        out["native"][size] = c.per_call_ns(lambda buf=buf: crc32c.crc32c(buf), target_s=0.2, repeats=5)
    return out


def label(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def mb_s(size: int, ns: float) -> float:
    return size / 1e6 / (ns / 1e9)
