"""crc32c over runtime dynlink: resolves the ``crc32c`` cap when imported.

Every call routes through ``instance.invoke``: ``crc32c`` takes the raw bytes
and ``crc32c-update`` a CBOR ``[crc, bytes]``; both reply with the CRC as 4
little-endian bytes.
"""

import cbor2

from pylon_guest import dynlink

_cap = dynlink.load("crc32c")
_invoke = _cap.invoke  # takes any bytes-like payload
_from_bytes = int.from_bytes


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C of ``data`` (bytes-like), continuing from ``crc``."""
    if crc:
        return _from_bytes(_invoke("crc32c-update", cbor2.dumps([crc, bytes(data)])), "little")
    return _from_bytes(_invoke("crc32c", data), "little")
