"""The first resolve of a cap in a run: ``dynlink.load(name)`` (plan lookup,
trust gate, blob, compile or cache load, instantiate) then its first call.

argv: OUT.json NAME. Works in the stock guest.
"""

import json
import sys
import time

from pylon_guest import dynlink

t0 = time.perf_counter_ns()
cap = dynlink.load(sys.argv[2])
t1 = time.perf_counter_ns()
reply = cap.invoke("crc32c", b"123456789")
t2 = time.perf_counter_ns()
assert reply == (0xE3069283).to_bytes(4, "little")
with open(sys.argv[1], "w") as f:
    json.dump({"resolve_ns": t1 - t0, "first_call_ns": t2 - t1}, f)
