"""Makes pointers held in wasm locals visible to a conservative GC.

MicroPython's GC scans the C shadow stack (linear memory below
``__stack_pointer``) for anything that looks like a heap pointer. LLVM keeps
most C locals in wasm *locals*, which live outside linear memory, so an object
referenced only from a local of a function further up the call stack would be
freed by a collection deeper down. binaryen's ``--spill-pointers`` fixes that,
but no binaryen in the registries we use both has the pass and reads modules
with exnref exception handling (Debian's 108 lacks the pass; PyPI's bundled
116 cannot parse ``try_table``), so this module does the same job itself on
the linked binary, for both exception-handling encodings.

The transformation ("spill on write"), applied to every function that can
reach ``gc_collect`` (directly, or through any ``call_indirect``):

* the prologue reserves ``4 * n`` bytes of shadow stack, ``n`` being the number
  of i32 params and locals, and stores every i32 param into its slot;
* every ``local.set`` / ``local.tee`` of an i32 local also stores the new value
  into the local's slot, so the slots always mirror the locals;
* the body is wrapped in a block so that every exit (fall-through, a branch to
  the function's label, ``return``) restores ``__stack_pointer``.

A frame unwound by an exception (MicroPython's NLR is setjmp/longjmp, i.e. a
wasm throw) skips its restore; that is fine because LLVM's landing pad in the
function that called setjmp resets ``__stack_pointer`` to its own frame.

Stale slots (a local since overwritten by an integer) can only keep garbage
alive, never free live data: the GC is conservative anyway.

Known limit, shared with binaryen's pass: a value that LLVM leaves on the wasm
*operand stack* across a call (e.g. the first argument of ``f(g(), h())``
while ``h`` runs) is not spilled. Functions that never reach ``gc_collect``
(the crc32c core, for one) are left untouched, so hot C loops keep their speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylon.errors import BuildError
from pylon.wasm_sections import encode_uleb, read_uleb

I32 = 0x7F
_VALTYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F, 0x69, 0x74, 0x68, 0x6E, 0x6D, 0x6B, 0x6A, 0x73, 0x72, 0x71}


def _skip_leb(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _enc_sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _valtype_end(data: bytes, pos: int) -> int:
    """End of one value type (reference types with a heap type take more bytes)."""
    if data[pos] in (0x63, 0x64):
        return _skip_leb(data, pos + 1)
    return pos + 1


def _blocktype_end(data: bytes, pos: int) -> int:
    byte = data[pos]
    if byte == 0x40 or byte in _VALTYPES:
        return pos + 1
    if byte in (0x63, 0x64):
        return _skip_leb(data, pos + 1)
    return _skip_leb(data, pos)  # s33 type index


@dataclass
class _Func:
    index: int
    type_index: int
    body_start: int  # first byte of the locals vector
    body_end: int
    calls: set[int] = field(default_factory=set)
    indirect: bool = False


@dataclass
class _Module:
    data: bytes
    sections: list[tuple[int, int, int]]  # (id, content start, content end)
    types: list[tuple[list[int], list[int]]]
    n_imported_funcs: int
    funcs: list[_Func]
    func_names: dict[int, str]
    global_names: dict[int, str]


def _parse_types(data: bytes, pos: int) -> list[tuple[list[int], list[int]]]:
    count, pos = read_uleb(data, pos)
    types = []
    for _ in range(count):
        form = data[pos]
        pos += 1
        if form == 0x4E or form == 0x50 or form == 0x4F:  # rec / sub groups (GC)
            raise BuildError("spill pass: GC proposal types are not supported")
        if form != 0x60:
            raise BuildError(f"spill pass: unexpected type form 0x{form:02x}")
        sig = []
        for _side in range(2):
            n, pos = read_uleb(data, pos)
            vals = []
            for _ in range(n):
                vals.append(data[pos])
                pos = _valtype_end(data, pos)
            sig.append(vals)
        types.append((sig[0], sig[1]))
    return types


def _count_func_imports(data: bytes, pos: int) -> tuple[int, list[int]]:
    count, pos = read_uleb(data, pos)
    n_funcs = 0
    func_types = []
    for _ in range(count):
        for _name in range(2):
            length, pos = read_uleb(data, pos)
            pos += length
        kind = data[pos]
        pos += 1
        if kind == 0x00:
            type_index, pos = read_uleb(data, pos)
            func_types.append(type_index)
            n_funcs += 1
        elif kind == 0x01:  # table: reftype + limits
            pos = _valtype_end(data, pos)
            flags, pos = read_uleb(data, pos)
            pos = _skip_leb(data, pos)
            if flags & 1:
                pos = _skip_leb(data, pos)
        elif kind == 0x02:  # memory: limits
            flags, pos = read_uleb(data, pos)
            pos = _skip_leb(data, pos)
            if flags & 1:
                pos = _skip_leb(data, pos)
        elif kind == 0x03:  # global
            pos = _valtype_end(data, pos) + 1
        elif kind == 0x04:  # tag
            pos += 1
            pos = _skip_leb(data, pos)
        else:
            raise BuildError(f"spill pass: unknown import kind {kind}")
    return n_funcs, func_types


def _parse_names(data: bytes, pos: int, end: int) -> tuple[dict[int, str], dict[int, str]]:
    length, pos = read_uleb(data, pos)
    pos += length  # the custom section's own name, "name"
    funcs: dict[int, str] = {}
    globs: dict[int, str] = {}
    while pos < end:
        sub = data[pos]
        size, pos = read_uleb(data, pos + 1)
        sub_end = pos + size
        if sub in (1, 7):
            target = funcs if sub == 1 else globs
            count, p = read_uleb(data, pos)
            for _ in range(count):
                index, p = read_uleb(data, p)
                length, p = read_uleb(data, p)
                target[index] = data[p:p + length].decode("utf-8", "replace")
                p += length
        pos = sub_end
    return funcs, globs


def _parse(data: bytes) -> _Module:
    if data[:4] != b"\0asm":
        raise BuildError("spill pass: not a wasm module")
    pos = 8
    sections = []
    types: list = []
    n_imported = 0
    func_type_indices: list[int] = []
    func_names: dict[int, str] = {}
    global_names: dict[int, str] = {}
    code_range = None
    while pos < len(data):
        sid = data[pos]
        size, start = read_uleb(data, pos + 1)
        end = start + size
        sections.append((sid, start, end))
        if sid == 1:
            types = _parse_types(data, start)
        elif sid == 2:
            n_imported, _ = _count_func_imports(data, start)
        elif sid == 3:
            count, p = read_uleb(data, start)
            for _ in range(count):
                t, p = read_uleb(data, p)
                func_type_indices.append(t)
        elif sid == 10:
            code_range = (start, end)
        elif sid == 0:
            nlen, p = read_uleb(data, start)
            if data[p:p + nlen] == b"name":
                func_names, global_names = _parse_names(data, start, end)
        pos = end
    if code_range is None:
        raise BuildError("spill pass: module has no code section")
    funcs = []
    count, p = read_uleb(data, code_range[0])
    for i in range(count):
        size, p = read_uleb(data, p)
        funcs.append(_Func(n_imported + i, func_type_indices[i], p, p + size))
        p += size
    return _Module(data, sections, types, n_imported, funcs, func_names, global_names)


def _locals(data: bytes, func: _Func) -> tuple[list[tuple[int, int]], int]:
    """The declared locals as (count, type) runs, and where the body's code starts."""
    count, pos = read_uleb(data, func.body_start)
    runs = []
    for _ in range(count):
        n, pos = read_uleb(data, pos)
        t = data[pos]
        pos = _valtype_end(data, pos)
        runs.append((n, t))
    return runs, pos


def _walk(data: bytes, pos: int, end: int):
    """Yields (opcode, start, immediate end, immediate) for each instruction.

    ``immediate`` is the first LEB immediate for the instructions the pass
    cares about (local.set/tee, call), else None.
    """
    while pos < end:
        start = pos
        op = data[pos]
        pos += 1
        imm = None
        if op in (0x00, 0x01, 0x05, 0x0B, 0x0F, 0x0A, 0x19, 0x1A, 0x1B, 0xD1, 0xD3, 0xD5) or 0x45 <= op <= 0xC4:
            pass
        elif op in (0x02, 0x03, 0x04, 0x06):
            pos = _blocktype_end(data, pos)
        elif op == 0x1F:  # try_table
            pos = _blocktype_end(data, pos)
            n, pos = read_uleb(data, pos)
            for _ in range(n):
                kind = data[pos]
                pos += 1
                if kind in (0, 1):
                    pos = _skip_leb(data, pos)
                pos = _skip_leb(data, pos)
        elif op in (0x07, 0x08, 0x09, 0x18, 0x0C, 0x0D, 0x12, 0x14, 0x15, 0xD2, 0xD4, 0xD6,
                    0x20, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40):
            imm, pos = read_uleb(data, pos)
        elif op in (0x21, 0x22, 0x10):
            imm, pos = read_uleb(data, pos)
        elif op in (0x11, 0x13):
            imm, pos = read_uleb(data, pos)
            pos = _skip_leb(data, pos)
        elif op == 0x0E:
            n, pos = read_uleb(data, pos)
            for _ in range(n + 1):
                pos = _skip_leb(data, pos)
        elif op == 0x1C:
            n, pos = read_uleb(data, pos)
            for _ in range(n):
                pos = _valtype_end(data, pos)
        elif 0x28 <= op <= 0x3E:
            align, pos = read_uleb(data, pos)
            if align & 0x40:
                pos = _skip_leb(data, pos)
            pos = _skip_leb(data, pos)
        elif op in (0x41, 0x42):
            pos = _skip_leb(data, pos)
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op == 0xD0:
            pos = _blocktype_end(data, pos)
        elif op == 0xFC:
            sub, pos = read_uleb(data, pos)
            if sub <= 7:
                pass
            elif sub in (8, 10, 12, 14):
                pos = _skip_leb(data, pos)
                pos = _skip_leb(data, pos)
            elif sub in (9, 11, 13, 15, 16, 17):
                pos = _skip_leb(data, pos)
            else:
                raise BuildError(f"spill pass: unknown 0xfc opcode {sub} at byte {start}")
        else:
            raise BuildError(f"spill pass: unsupported opcode 0x{op:02x} at byte {start} "
                             "(SIMD, atomics and GC instructions are not handled)")
        yield op, start, pos, imm


def _section_bytes(sid: int, content: bytes) -> bytes:
    return bytes([sid]) + encode_uleb(len(content)) + content


def spill_pointers(wasm: bytes, *, root: str = "gc_collect", strip: bool = True) -> bytes:
    """Returns ``wasm`` with i32 locals mirrored to the shadow stack (see module doc).

    ``root`` names the function whose callers need spilling. With ``strip``,
    custom sections (names, producers, target features) are dropped from the
    output; the input must still have its name section.
    """
    mod = _parse(wasm)
    data = mod.data
    by_name = {name: index for index, name in mod.func_names.items()}
    if root not in by_name:
        raise BuildError(f"spill pass: no function named {root!r} (link without --strip so the name section stays)")
    sp_index = next((i for i, n in mod.global_names.items() if n == "__stack_pointer"), None)
    if sp_index is None:
        raise BuildError("spill pass: no __stack_pointer global in the name section")

    for func in mod.funcs:
        _, code = _locals(data, func)
        for op, _s, _e, imm in _walk(data, code, func.body_end):
            if op == 0x10:
                func.calls.add(imm)
            elif op in (0x11, 0x13, 0x14, 0x15):
                func.indirect = True
            elif op == 0x12:
                func.calls.add(imm)

    # Functions that can reach the collector: a fixed point over the call graph.
    reaches = {by_name[root]}
    changed = True
    while changed:
        changed = False
        for func in mod.funcs:
            if func.index not in reaches and (func.indirect or func.calls & reaches):
                reaches.add(func.index)
                changed = True

    bodies = []
    for func in mod.funcs:
        body = data[func.body_start:func.body_end]
        # Linker-synthesised functions (__wasm_call_ctors, __wasm_init_memory...)
        # hold no heap pointers, and V8 (Node 20) crashes on a rewritten
        # __wasm_call_ctors in legacy-EH modules: leave them alone.
        if func.index in reaches and not mod.func_names.get(func.index, "").startswith("__wasm_"):
            body = _rewrite(data, func, mod, sp_index)
        bodies.append(encode_uleb(len(body)) + body)
    code_section = encode_uleb(len(bodies)) + b"".join(bodies)

    out = bytearray(data[:8])
    for sid, start, end in mod.sections:
        if sid == 10:
            out += _section_bytes(10, code_section)
        elif sid == 0 and strip:
            continue
        else:
            out += _section_bytes(sid, data[start:end])
    return bytes(out)


def _rewrite(data: bytes, func: _Func, mod: _Module, sp: int) -> bytes:
    params, results = mod.types[func.type_index]
    runs, code = _locals(data, func)
    local_types = list(params)
    for n, t in runs:
        local_types.extend([t] * n)
    slots = {}
    for index, t in enumerate(local_types):
        if t == I32:
            slots[index] = 4 * len(slots)
    if not slots:
        return data[func.body_start:func.body_end]
    frame = (4 * len(slots) + 15) & ~15
    base = len(local_types)

    def store(index: int) -> bytes:
        # local.get base; local.get index; i32.store align=4 offset=slot
        return (b"\x20" + encode_uleb(base) + b"\x20" + encode_uleb(index) +
                b"\x36\x02" + encode_uleb(slots[index]))

    restore = b"\x20" + encode_uleb(base) + b"\x41" + _enc_sleb(frame) + b"\x6a\x24" + encode_uleb(sp)

    if len(results) > 1:
        raise BuildError("spill pass: multi-value function results are not supported")
    blocktype = bytes([results[0]]) if results else b"\x40"

    out = bytearray()
    out += encode_uleb(len(runs) + 1)
    out += data[_skip_leb(data, func.body_start):code]
    out += b"\x01\x7f"  # one more i32: the frame base
    # Prologue: reserve the frame, mirror the i32 params.
    out += b"\x23" + encode_uleb(sp) + b"\x41" + _enc_sleb(frame) + b"\x6b\x22" + encode_uleb(base)
    out += b"\x24" + encode_uleb(sp)
    for index in range(len(params)):
        if index in slots:
            out += store(index)
    out += b"\x02" + blocktype
    last = code
    end = func.body_end - 1  # the function's final `end`
    if data[end] != 0x0B:
        raise BuildError(f"spill pass: function {func.index} does not end with `end`")
    for op, start, stop, imm in _walk(data, code, end):
        if op in (0x21, 0x22) and imm in slots:
            out += data[last:stop]
            out += store(imm)
            last = stop
        elif op == 0x0F:
            out += data[last:start]
            out += restore
            last = start
    out += data[last:end]
    out += b"\x0b" + restore + b"\x0b"
    return bytes(out)
