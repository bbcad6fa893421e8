"""Frees componentize-py's copy of a ``bytes`` argument lowered to ``list<u8>``.

The leak (componentize-py 0.25.1, wit-dylib 0.245): the runtime's
``MyCall::maybe_pop_list`` (runtime/src/lib.rs) lowers a ``bytes`` for a
``list<u8>`` by copying it into a block from ``alloc::alloc`` and returning
that block; wit-dylib's generated lowering (src/bindgen.rs, the
``TypeDefKind::List`` arm of ``lower``) defers the free of a lowered list only
on its element-by-element path (``defer_deallocate_lowered_list``), which that
fast path skips. Nothing else frees the block: every import call with a
``bytes`` argument (and every export returning one) leaks its payload.

The fix, on the linked component: in the runtime's core module
(``libcomponentize_py_runtime.so``) the export ``wit_dylib_pop_list`` is
pointed at a new function that calls the original and, when it handed back a
block (``*retptr != 0``: the fast path, the only one that returns one), hands
that block to the runtime's own ``wit_dylib_dealloc_bytes(cx, ptr, len, 1,
defer=1)``. That is the call wit-dylib makes for its slow path: the block goes
on the call's ``deferred_deallocations`` and is freed when the call context
drops, i.e. after a sync import returned and its results were lifted, after an
async import completed, or at an export's post-return. The original function
is untouched (still reachable by index), so the runtime code is not modified.

What the binary must look like for this to be right is checked, never
assumed: exactly one core module exporting both functions, with the
signatures wit-dylib 0.245 gives them; anything else is a BuildError.
"""

from __future__ import annotations

from pylon.errors import BuildError
from pylon.wasm_sections import encode_uleb, read_uleb

#: The componentize-py (``--version``) whose runtime this pass is checked against.
FOR_COMPONENTIZE_PY = "componentize-py 0.25.1"
POP_LIST = b"wit_dylib_pop_list"
DEALLOC = b"wit_dylib_dealloc_bytes"
_I32 = 0x7F


def _sections(data: bytes, pos: int = 8) -> list[tuple[int, int, int]]:
    """(id, payload start, payload end) of each section from ``pos``."""
    out = []
    while pos < len(data):
        size, body = read_uleb(data, pos + 1)
        out.append((data[pos], body, body + size))
        pos = body + size
    if pos != len(data):
        raise BuildError("malformed wasm section framing")
    return out


def _name(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_uleb(data, pos)
    return data[pos:pos + n], pos + n


def _vec(items: list[bytes]) -> bytes:
    return encode_uleb(len(items)) + b"".join(items)


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + encode_uleb(len(payload)) + payload


def _func_types(module: bytes, secs: list[tuple[int, int, int]]) -> list[tuple[bytes, bytes]]:
    """Params and results of each type of the type section (func types only)."""
    types: list[tuple[bytes, bytes]] = []
    for sid, start, _end in secs:
        if sid != 1:
            continue
        count, pos = read_uleb(module, start)
        for _ in range(count):
            if module[pos] != 0x60:  # rec groups / GC types: not in a wasm32 Rust .so
                raise BuildError("runtime module has non-function types; refusing to patch")
            n, pos = read_uleb(module, pos + 1)
            params = module[pos:pos + n]
            pos += n
            n, pos = read_uleb(module, pos)
            results = module[pos:pos + n]
            pos += n
            types.append((params, results))
    return types


def _patch_module(module: bytes) -> bytes | None:
    """The patched runtime module, or None if ``module`` is not the runtime."""
    secs = _sections(module)
    exports: dict[bytes, tuple[int, int, int]] = {}  # name -> (kind, index, offset of index)
    export_sec = None
    for sid, start, end in secs:
        if sid == 7:
            export_sec = (start, end)
            count, pos = read_uleb(module, start)
            for _ in range(count):
                name, pos = _name(module, pos)
                kind = module[pos]
                idx, nxt = read_uleb(module, pos + 1)
                exports[name] = (kind, idx, pos + 1)
                pos = nxt
    if POP_LIST not in exports or DEALLOC not in exports:
        return None
    if exports[POP_LIST][0] != 0 or exports[DEALLOC][0] != 0:
        raise BuildError("runtime module exports wit-dylib intrinsics that are not functions")

    # Function index space: imported functions first, then the function section.
    n_imported = 0
    for sid, start, _end in secs:
        if sid == 2:
            count, pos = read_uleb(module, start)
            for _ in range(count):
                _m, pos = _name(module, pos)
                _n, pos = _name(module, pos)
                kind = module[pos]
                pos += 1
                if kind == 0:
                    n_imported += 1
                    _t, pos = read_uleb(module, pos)
                elif kind == 1:  # table: reftype, limits
                    pos += 1
                    flags, pos = read_uleb(module, pos)
                    _mn, pos = read_uleb(module, pos)
                    if flags & 1:
                        _mx, pos = read_uleb(module, pos)
                elif kind == 2:  # memory: limits
                    flags, pos = read_uleb(module, pos)
                    _mn, pos = read_uleb(module, pos)
                    if flags & 1:
                        _mx, pos = read_uleb(module, pos)
                elif kind == 3:  # global: valtype, mut
                    pos += 2
                else:
                    raise BuildError(f"runtime module has an import of kind {kind}; refusing to patch")
    func_sec = next(((s, e) for sid, s, e in secs if sid == 3), None)
    code_sec = next(((s, e) for sid, s, e in secs if sid == 10), None)
    if func_sec is None or code_sec is None or export_sec is None:
        raise BuildError("runtime module lacks a function, code or export section")
    n_defined, fpos = read_uleb(module, func_sec[0])
    func_type_idx = []
    for _ in range(n_defined):
        t, fpos = read_uleb(module, fpos)
        func_type_idx.append(t)
    types = _func_types(module, secs)

    def sig(func: int) -> tuple[bytes, bytes]:
        if func < n_imported:
            raise BuildError("a wit-dylib intrinsic of the runtime is an import; refusing to patch")
        return types[func_type_idx[func - n_imported]]

    pop_list, dealloc = exports[POP_LIST][1], exports[DEALLOC][1]
    if sig(pop_list) != (bytes([_I32] * 3), bytes([_I32])):
        raise BuildError("wit_dylib_pop_list is not (i32 cx, i32 ty, i32 retptr) -> i32 len")
    if sig(dealloc) != (bytes([_I32] * 5), b""):
        raise BuildError("wit_dylib_dealloc_bytes is not (i32 cx, ptr, size, align, defer)")

    def i(v: int) -> bytes:
        return encode_uleb(v)

    # locals 0..2: cx, ty, retptr; 3: len; 4: ptr
    body = (
        b"\x01\x02\x7f"                                            # 2 locals of i32
        + b"\x20\x00\x20\x01\x20\x02\x10" + i(pop_list) + b"\x21\x03"  # len = orig(cx, ty, retptr)
        + b"\x20\x02\x28\x02\x00\x22\x04"                          # ptr = *(u32*)retptr
        + b"\x04\x40"                                              # if ptr != 0
        + b"\x20\x00\x20\x04\x20\x03\x41\x01\x41\x01\x10" + i(dealloc)  # dealloc_bytes(cx, ptr, len, 1, defer=1)
        + b"\x0b"
        + b"\x20\x03\x0b"                                          # len
    )
    new_index = n_imported + n_defined
    # Our wrapper is the last function and starts with these bytes: wrapping it
    # again would free each block twice.
    if pop_list == new_index - 1 and body[:10] in module[code_sec[1] - len(body) - 8:code_sec[1]]:
        raise BuildError("wit_dylib_pop_list is already wrapped: the pass ran twice")

    out = bytearray(module[:8])
    for sid, start, end in secs:
        payload = module[start:end]
        if sid == 3:
            entries = module[read_uleb(module, start)[1]:end]
            payload = i(n_defined + 1) + entries + i(func_type_idx[pop_list - n_imported])
        elif sid == 10:
            n_bodies, bpos = read_uleb(module, start)
            if n_bodies != n_defined:
                raise BuildError("runtime module: code and function sections disagree")
            payload = i(n_bodies + 1) + module[bpos:end] + i(len(body)) + body
        elif sid == 7:
            at = exports[POP_LIST][2]
            _old, after = read_uleb(module, at)
            payload = module[start:at] + i(new_index) + module[after:end]
        out += _section(sid, payload)
    return bytes(out)


def _walk(data: bytes, found: list[int]) -> bytes:
    """``data`` (a component) with the runtime module patched, at any depth."""
    out = bytearray(data[:8])
    for sid, start, end in _sections(data):
        payload = data[start:end]
        if sid == 1:  # core module
            patched = _patch_module(payload)
            if patched is not None:
                found.append(1)
                payload = patched
        elif sid == 4:  # nested component
            payload = _walk(payload, found)
        out += _section(sid, payload)
    return bytes(out)


def free_lowered_bytes(component: bytes) -> bytes:
    """The componentize-py component with its ``list<u8>`` copies freed.

    Raises:
        BuildError: not exactly one module looks like the runtime, or its
            intrinsics do not have wit-dylib 0.245's shapes.
    """
    if component[:4] != b"\0asm" or component[4:8] != b"\x0d\x00\x01\x00":
        raise BuildError("not a wasm component")
    found: list[int] = []
    out = _walk(component, found)
    if len(found) != 1:
        raise BuildError(f"expected one componentize-py runtime module, found {len(found)}")
    return out


if __name__ == "__main__":
    import sys
    from pathlib import Path

    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.write_bytes(free_lowered_bytes(src.read_bytes()))
