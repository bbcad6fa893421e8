"""crc32c: CRC-32C (Castagnoli) checksums, computed by the crc32c cap.

This shim travels inside the cap's component (custom section ``pylon:shim``).
The guest runs it as a module in which ``cap`` is bound to the resolved cap
(``cap.invoke(method, payload) -> bytes``, ``cap.call(method, *args)``).

    import pylon_guest.caps.crc32c as crc
    crc.crc32c(b"123456789") == 0xE3069283
    crc.crc32c(b"6789", crc.crc32c(b"12345")) == 0xE3069283
"""

import cbor2

cap = globals()["cap"]  # bound by the loader before this runs

__all__ = ["crc32c"]


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (any bytes-like), continuing from ``crc`` (0 to start)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if crc:
        if not 0 <= crc <= 0xFFFFFFFF:
            raise ValueError(f"crc must be an unsigned 32-bit value, got {crc!r}")
        reply = cap.invoke("crc32c-update", cbor2.dumps([crc, data]))
    else:
        reply = cap.invoke("crc32c", data)
    return int.from_bytes(reply, "little")
