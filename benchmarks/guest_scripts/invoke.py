"""Tiny-call round trips, dynlink vs composed, in one run of the composed guest.

argv: OUT.json. Also runs in the stock guest (no provider import: the
composed figure is left out). Writes ns per call for:
  dynlink_cap_invoke   pylon_guest.dynlink Cap.invoke (the public API: binding + error mapping)
  dynlink_binding      the resource method binding itself (instance.invoke)
  composed_invoke      the wac-plugged provider's binding (wit_world.imports.provider.invoke)
  py_call              a Python function call in the guest (floor of the loop)
"""

import json
import sys

from pylon_guest import dynlink

try:
    from wit_world.imports import provider
except ImportError:  # the stock guest
    provider = None

from _timing import side_by_side

PAYLOAD = b"123456789"
EXPECTED = (0xE3069283).to_bytes(4, "little")

cap = dynlink.load("crc32c")
binding = cap._invoke
assert cap.invoke("crc32c", PAYLOAD) == EXPECTED


def py_noop(method, payload):
    return payload


routes = {
    "dynlink_cap_invoke": lambda: cap.invoke("crc32c", PAYLOAD),
    "dynlink_binding": lambda: binding("crc32c", PAYLOAD),
    "py_call": lambda: py_noop("crc32c", PAYLOAD),
}
if provider is not None:
    composed = provider.invoke
    assert composed("crc32c", PAYLOAD) == EXPECTED
    routes["composed_invoke"] = lambda: composed("crc32c", PAYLOAD)
# Short batches, many rounds: on a shared machine the interleaving matters more than batch length.
result = side_by_side(routes, target_s=0.05, repeats=21)

with open(sys.argv[1], "w") as f:
    json.dump(result, f)
