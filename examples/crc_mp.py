"""crc32c in the MicroPython static profile: the cap's C is folded into the module."""
import sys

import crc32c

print(sys.implementation.name, hex(crc32c.crc32c(b"123456789")))
