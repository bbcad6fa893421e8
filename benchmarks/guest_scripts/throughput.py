"""crc32c throughput, dynlink vs composed, in one run of the composed guest.

argv: OUT.json SIZE [SIZE...] (bytes). Writes {size: {"dynlink": ns, "composed": ns}}
per call; the buffer is built once per size, outside the timing. At 16 MiB
also "dynlink_copy" / "composed_copy": the same payload sent to
``crc32c-update``, which refuses it after reading one byte (bad-payload), so
the figure is the cost of getting 16 MiB into the cap and an error back.
"""

import json
import sys

from pylon_guest import dynlink
from wit_world.imports import provider

from _timing import side_by_side

COPY_ONLY_SIZE = 16 << 20


def refused(call, buf):
    def run():
        try:
            call("crc32c-update", buf)
        except Exception:  # BadPayload / componentize_py_types.Err: expected
            return
        raise AssertionError("crc32c-update accepted a payload it should refuse")
    return run


cap = dynlink.load("crc32c")
dyn = cap.invoke
composed = provider.invoke
result = {}
for size in map(int, sys.argv[2:]):
    buf = bytes(range(256)) * (size // 256)
    assert dyn("crc32c", buf) == composed("crc32c", buf)
    big = size >= 64 << 20
    result[size] = side_by_side({
        "dynlink": lambda buf=buf: dyn("crc32c", buf),
        "composed": lambda buf=buf: composed("crc32c", buf),
    }, target_s=0.3 if big else 0.15, repeats=3 if big else 5)
    if size == COPY_ONLY_SIZE:
        result[size].update(side_by_side({
            "dynlink_copy": refused(dyn, buf),
            "composed_copy": refused(composed, buf),
        }, target_s=0.15, repeats=5))
    del buf

with open(sys.argv[1], "w") as f:
    json.dump(result, f)
