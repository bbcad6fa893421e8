"""Timing loops that run unchanged on the host and inside the CPython guest.

Only the standard library's ``time``: the guest driver (:mod:`guest_driver`)
is copied beside this file into the guest, which has no ``pylon`` package.
The method, as ``composectl bench`` reports it: calibrate a batch of calls
that takes about ``target_s``, time ``repeats`` such batches with
``time.perf_counter_ns``, and take ns per call of each batch; the median
batch is the figure, the best batch the floor. Batches include the loop and
one Python call per call: the floor a script pays for a call too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["batch_size", "per_call_ns", "summary"]


def batch_size(fn: Callable[[], object], target_s: float, limit: int = 1 << 22) -> int:
    """Calls per batch so that one batch of ``fn`` takes about ``target_s``
    (at most ``limit``)."""
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = time.perf_counter_ns() - t0
        # A tenth of the target is enough to extrapolate.
        if dt > target_s * 1e8 or n * 4 > limit:
            return max(1, min(limit, int(n * target_s * 1e9 / max(dt, 1))))
        n *= 4


def per_call_ns(fn: Callable[[], object], *, target_s: float = 0.2, repeats: int = 7,
                max_calls: int | None = None) -> list[float]:
    """ns per call of ``fn``, one figure per batch (``repeats`` batches).

    ``max_calls`` bounds the calls of the whole measurement (batches are
    made shorter to fit): in the CPython guest every call through a cap
    leaves memory behind (componentize-py 0.25.1), and a run that makes
    too many reaches its memory limit and traps.
    """
    limit = 1 << 22 if max_calls is None else max(1, max_calls // (repeats + 2))
    n = batch_size(fn, target_s, limit)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        out.append((time.perf_counter_ns() - t0) / n)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    """Median and best (smallest) of ``samples`` (no ``statistics``: the
    static guest and small hosts may lack it)."""
    s = sorted(samples)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"median": median, "best": s[0]}
