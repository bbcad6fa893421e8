"""One crc32c API, wherever the cap lives: embedded in pylon.wasm or linked at run time."""
import crc32c

print(f"crc32c backend: {crc32c.backend()}")
print(hex(crc32c.crc32c(b"123456789")))
