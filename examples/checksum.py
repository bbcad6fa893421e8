"""crc32c of files or text, through the crc32c cap linked at run time.

    composectl run examples/checksum.py FILE...
    composectl run examples/checksum.py -t TEXT

Importing _crc32c_dynlink_cap makes the guest call resolve-by-id("crc32c"):
the host checks the plan and the trust policy, fetches the cap on first use
and instantiates it in its own Store.
"""
import sys

import _crc32c_dynlink_cap as crc

args = sys.argv[1:]
if args[:1] == ["-t"]:
    for text in args[1:]:
        print(f"{crc.crc32c(text.encode()):08x}  {text!r}")
else:
    for name in args:
        with open(name, "rb") as f:
            print(f"{crc.crc32c(f.read()):08x}  {name}")
