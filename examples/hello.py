"""The smallest Pylon script: runs inside pylon.wasm."""
import sys

print(f"hello from Python {sys.version.split()[0]} on {sys.platform}")
print("argv:", sys.argv[1:])
