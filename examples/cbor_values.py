"""A cap that has never been built into the guest, used by name at run time."""
from pylon_guest import dynlink

calc = dynlink.load("cborcalc")
print(calc.call("sum", [1, 2, 3.5]))
print(calc.call("stats", [3, 1, 4, 1, 5, 9, 2, 6]))
print(calc.call("echo", {"text": "héllo", "n": -2**40, "items": [True, None, b"\x00\x01"]}))
