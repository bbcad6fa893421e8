"""Timing helpers shared by the guest scripts (runs inside the guest)."""

import statistics
import time


def calibrate(fn, target_s):
    """Calls per batch so that one batch of ``fn`` takes about ``target_s``."""
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = time.perf_counter_ns() - t0
        if dt > target_s * 1e8 or n >= 1 << 22:
            return max(1, int(n * target_s * 1e9 / max(dt, 1)))
        n *= 4


def side_by_side(fns, *, target_s=0.2, repeats=5):
    """ns per call for each of ``fns`` (name -> callable): batches alternate
    between the callables (A B C A B C ...) so drift on a noisy machine hits all
    of them alike; the median batch wins."""
    counts = {name: calibrate(fn, target_s) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = counts[name]
            t0 = time.perf_counter_ns()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / n)
    return {name: statistics.median(s) for name, s in samples.items()}
