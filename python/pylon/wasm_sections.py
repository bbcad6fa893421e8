"""LEB128 and top-level custom sections of wasm modules and components.

Why by hand: all Pylon needs is "find custom section NAME" and "encode one",
a dozen lines of the binary format's section framing (id byte, LEB128 size);
a wasm parser for it would add a dependency to every host run, and
wasm-tools 1.262 has no command that adds an arbitrary custom section
(``metadata add`` writes only the name and producers sections). The
MicroPython build's pointer-spill pass reuses the LEB128 helpers.
"""

from __future__ import annotations

_MAGIC = b"\0asm"


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    """Decodes an unsigned LEB128 at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def custom_section(data: bytes, name: str) -> bytes | None:
    """The payload of the first top-level custom section called ``name``."""
    if data[:4] != _MAGIC:
        raise ValueError("not a wasm binary (bad magic)")
    pos = 8
    wanted = name.encode()
    while pos < len(data):
        section_id = data[pos]
        size, body = read_uleb(data, pos + 1)
        end = body + size
        if section_id == 0:
            name_len, name_start = read_uleb(data, body)
            if data[name_start:name_start + name_len] == wanted:
                return data[name_start + name_len:end]
        pos = end
    return None


def encode_uleb(value: int) -> bytes:
    """Encodes ``value`` as unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_custom_section(name: str, payload: bytes) -> bytes:
    """A custom section (id 0, size, name, payload), ready to append to a module or component."""
    name_bytes = name.encode("utf-8")
    body = encode_uleb(len(name_bytes)) + name_bytes + payload
    return b"\x00" + encode_uleb(len(body)) + body
