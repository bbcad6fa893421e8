"""crc32c over runtime dynlink: resolves the ``crc32c`` cap when imported.

Every call routes through ``instance.invoke``: ``crc32c`` takes the raw bytes
and ``crc32c-update`` a CBOR ``[crc, bytes]``; both reply with the CRC as 4
little-endian bytes.
"""

import cbor2

from pylon_guest import dynlink

_cap = dynlink.load("crc32c")
_invoke = _cap.invoke


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C of ``data`` (bytes-like), continuing from ``crc``."""
    if crc:
        reply = _invoke("crc32c-update", cbor2.dumps([crc, bytes(data)]))
    else:
        reply = _invoke("crc32c", data if isinstance(data, bytes) else bytes(data))
    return int.from_bytes(reply, "little")
