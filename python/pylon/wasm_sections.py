"""Reads top-level custom sections of a wasm module or component.

Why by hand: the only thing needed is "find custom section NAME", a dozen
lines of the binary format's section framing (id byte, LEB128 size), and
pulling in a wasm parser for it would add a dependency to every host run.
"""

from __future__ import annotations

from pathlib import Path

_MAGIC = b"\0asm"


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
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
        size, body = _uleb(data, pos + 1)
        end = body + size
        if section_id == 0:
            name_len, name_start = _uleb(data, body)
            if data[name_start:name_start + name_len] == wanted:
                return data[name_start + name_len:end]
        pos = end
    return None


def read_custom_section(path: Path, name: str) -> bytes | None:
    """:func:`custom_section` of a file."""
    return custom_section(path.read_bytes(), name)
