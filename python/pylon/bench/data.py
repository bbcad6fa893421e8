"""The benchmark's payload: deterministic JSON-lines log text.

Compressible like real data (zstd level 3 gets ~4-5x), not trivially so, so
a compressor's throughput means something; for a checksum any bytes do. The
same bytes on every machine and run (a fixed seed).
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["make_data"]

_SEED = 20261125


def make_data(path: Path, size: int = 16 << 20) -> bytes:
    """Writes ``size`` bytes of JSON-lines logs to ``path``; returns them."""
    rng = random.Random(_SEED)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(400)]
    levels = ["debug", "info", "info", "info", "warn", "error"]
    parts, n, ts = [], 0, 1_700_000_000_000
    while n < size:
        ts += rng.randint(1, 900)
        line = (f'{{"ts": {ts}, "level": "{rng.choice(levels)}", "user": {rng.randint(1, 50_000)}, '
                f'"msg": "{" ".join(rng.choices(words, k=rng.randint(2, 8)))}", '
                f'"latency_ms": {rng.expovariate(0.05):.3f}}}\n')
        parts.append(line)
        n += len(line)
    data = "".join(parts).encode()[:size]
    path.write_bytes(data)
    return data

