"""Makes pointers held in wasm locals visible to a conservative GC.

MicroPython's GC scans the C shadow stack (linear memory below
``__stack_pointer``) for anything that looks like a heap pointer. LLVM keeps
most C locals in wasm *locals*, which live outside linear memory, so an object
referenced only from a local of a function further up the call stack would be
freed by a collection deeper down. This module rewrites the linked binary so
those locals are mirrored into shadow-stack slots the GC does scan.

Why by hand, not a library: binaryen's ``--spill-pointers`` is the only
existing pass for this, and no binaryen we can install both has it and reads
our modules. Debian's wasm-opt (108) is built without the pass (it is not in
``wasm-opt --help``); PyPI's ``icpp-binaryen`` bundles libbinaryen 116 (and
the ``wasm-opt`` crate builds that same 116), which predates
``try_table``/``exnref`` and cannot read the exnref flavour; ``pybinaryen``
only binds a system libbinaryen, i.e. that same Debian 108. The other Rust
crates (wasmparser, wasm-encoder, walrus) parse and encode but carry no such
pass: the logic below would have to be written there all the same,
plus a native build step, for a pass that takes ~0.2 s on MicroPython's code
section. What the pass needs from the binary format is small: the function
types, the code section and an instruction walker that knows every opcode's
immediates (``_walk``; checked against ``wasm-tools dump`` by the tests).

The transformation ("spill on write"), applied to every function that can
reach ``gc_collect`` (directly, or through any indirect call):

* the prologue reserves ``4 * n`` bytes of shadow stack, ``n`` being the number
  of i32 params and locals, and stores every i32 param into its slot;
* every ``local.set`` / ``local.tee`` of an i32 local also stores the new value
  into the local's slot, so the slots always mirror the locals;
* the body is wrapped in a block (typed like the function's results: a
  reference type keeps its heap type, several results get a block type index)
  so that every exit (fall-through, a branch to the function's label,
  ``return``) restores ``__stack_pointer``;
* tail calls (``return_call``, ``return_call_indirect``, ``return_call_ref``)
  leave the frame without coming back, so ``__stack_pointer`` is restored just
  before them. Nothing is lost by freeing the slots that early: the frame's
  values that live on are the call's arguments, which the callee (rewritten
  too if it can collect) spills as params in its own prologue.

A frame unwound by an exception (MicroPython's NLR is setjmp/longjmp, i.e. a
wasm throw) skips its restore; that is fine because LLVM's landing pad in the
function that called setjmp resets ``__stack_pointer`` to its own frame.

Stale slots (a local since overwritten by an integer) can only keep garbage
alive, never free live data: the GC is conservative anyway.

Known limits: a value that LLVM leaves on the wasm *operand stack* across a
call (e.g. the first argument of ``f(g(), h())`` while ``h`` runs) is not
spilled (binaryen's pass shares this limit); calls into imports are assumed
not to re-enter the module and collect (MicroPython's imports are WASI).
Functions that never reach ``gc_collect`` (the crc32c core, for one) are left
untouched, so hot C loops keep their speed. GC-proposal types and
instructions are refused with a BuildError, never passed through unread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pylon.errors import BuildError
from pylon.wasm_sections import encode_uleb, read_uleb

I32 = b"\x7f"

# Opcodes whose immediates the walker must skip, by shape. Everything not
# listed here (nor a prefix handled in _walk) is refused: skipping an unknown
# opcode wrongly would desynchronise the walk and corrupt the function.
_NO_IMM = frozenset(
    [0x00, 0x01, 0x05, 0x0A, 0x0B, 0x0F,  # unreachable, nop, else, throw_ref, end, return
     0x19, 0x1A, 0x1B,                    # catch_all (legacy), drop, select
     0xD1, 0xD3, 0xD4]                    # ref.is_null, ref.eq, ref.as_non_null
    + list(range(0x45, 0xC5)))            # numeric instructions
_ONE_LEB = frozenset([
    0x07, 0x08, 0x09, 0x0C, 0x0D, 0x18,  # catch tag, throw tag, rethrow/br/br_if/delegate label
    0x10, 0x12, 0x14, 0x15,              # call, return_call (func); call_ref, return_call_ref (type)
    0x20, 0x21, 0x22, 0x23, 0x24,        # local.get/set/tee, global.get/set
    0x25, 0x26, 0x3F, 0x40,              # table.get/set, memory.size/grow
    0xD0, 0xD2,                          # ref.null heap type (s33), ref.func
    0xD5, 0xD6,                          # br_on_null, br_on_non_null: a label
])
_BLOCKS = frozenset([0x02, 0x03, 0x04, 0x06])  # block loop if try(legacy)
_TAIL_CALLS = frozenset([0x12, 0x13, 0x15])
_INDIRECT_CALLS = frozenset([0x11, 0x13, 0x14, 0x15])


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
    """End of one value type: ``(ref null? ht)`` carries a heap type (s33)."""
    if data[pos] in (0x63, 0x64):
        return _skip_leb(data, pos + 1)
    return pos + 1


def _blocktype_end(data: bytes, pos: int) -> int:
    # 0x40, a one-byte value type and a type index (s33) all end where an
    # LEB does; only (ref null? ht) has a heap type after its first byte.
    if data[pos] in (0x63, 0x64):
        return _skip_leb(data, pos + 1)
    return _skip_leb(data, pos)


def _memarg_end(data: bytes, pos: int) -> int:
    align, pos = read_uleb(data, pos)
    if align & 0x40:  # multi-memory: a memory index follows
        pos = _skip_leb(data, pos)
    return _skip_leb(data, pos)  # offset


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
    types: list[tuple[list[bytes], list[bytes]]]  # (params, results), each value type's full bytes
    n_imported_funcs: int
    funcs: list[_Func]
    func_names: dict[int, str]
    global_names: dict[int, str]


def _parse_types(data: bytes, pos: int) -> list[tuple[list[bytes], list[bytes]]]:
    count, pos = read_uleb(data, pos)
    types = []
    for _ in range(count):
        form = data[pos]
        pos += 1
        if form in (0x4E, 0x50, 0x4F, 0x5E, 0x5F):  # rec / sub / array / struct (GC)
            raise BuildError("spill pass: GC proposal types are not supported")
        if form != 0x60:
            raise BuildError(f"spill pass: unexpected type form 0x{form:02x}")
        sig = []
        for _side in range(2):
            n, pos = read_uleb(data, pos)
            vals = []
            for _ in range(n):
                end = _valtype_end(data, pos)
                vals.append(bytes(data[pos:end]))
                pos = end
            sig.append(vals)
        types.append((sig[0], sig[1]))
    return types


def _skip_limits(data: bytes, pos: int) -> int:
    flags, pos = read_uleb(data, pos)
    pos = _skip_leb(data, pos)  # min
    if flags & 0x01:
        pos = _skip_leb(data, pos)  # max
    if flags & 0x08:
        pos = _skip_leb(data, pos)  # custom page size (log2)
    return pos


def _count_func_imports(data: bytes, pos: int) -> int:
    count, pos = read_uleb(data, pos)
    n_funcs = 0
    for _ in range(count):
        for _name in range(2):
            length, pos = read_uleb(data, pos)
            pos += length
        kind = data[pos]
        pos += 1
        if kind == 0x00:
            pos = _skip_leb(data, pos)
            n_funcs += 1
        elif kind == 0x01:  # table: reftype + limits
            pos = _skip_limits(data, _valtype_end(data, pos))
        elif kind == 0x02:  # memory: limits
            pos = _skip_limits(data, pos)
        elif kind == 0x03:  # global: valtype + mutability
            pos = _valtype_end(data, pos) + 1
        elif kind == 0x04:  # tag: attribute + type index
            pos = _skip_leb(data, pos + 1)
        else:
            raise BuildError(f"spill pass: unknown import kind {kind}")
    return n_funcs


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
    if data[4:8] != b"\x01\0\0\0":
        raise BuildError("spill pass: not a core wasm module (a component?)")
    pos = 8
    sections = []
    types: list[tuple[list[bytes], list[bytes]]] = []
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
            n_imported = _count_func_imports(data, start)
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


def _locals(data: bytes, func: _Func) -> tuple[list[tuple[int, bytes]], int]:
    """The declared locals as (count, value type bytes) runs, and where the body's code starts."""
    count, pos = read_uleb(data, func.body_start)
    runs = []
    for _ in range(count):
        n, pos = read_uleb(data, pos)
        end = _valtype_end(data, pos)
        runs.append((n, bytes(data[pos:end])))
        pos = end
    return runs, pos


def _walk(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int | None]]:
    """Yields (opcode, start, end, immediate) for each instruction in [pos, end).

    ``immediate`` is the first LEB immediate of the one-LEB instructions
    (local.set/tee, call, return_call...), else None. Prefixed instructions
    (0xfc, 0xfd, 0xfe) yield their prefix byte as the opcode.
    """
    while pos < end:
        start = pos
        op = data[pos]
        pos += 1
        imm = None
        if op in _NO_IMM:
            pass
        elif op in _ONE_LEB:
            imm, pos = read_uleb(data, pos)
        elif 0x28 <= op <= 0x3E:  # loads and stores
            pos = _memarg_end(data, pos)
        elif op in _BLOCKS:
            pos = _blocktype_end(data, pos)
        elif op in (0x41, 0x42):  # i32.const, i64.const: one (s)LEB
            pos = _skip_leb(data, pos)
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op in (0x11, 0x13):  # call_indirect, return_call_indirect: type, table
            imm, pos = read_uleb(data, pos)
            pos = _skip_leb(data, pos)
        elif op == 0x0E:  # br_table: n labels and a default
            n, pos = read_uleb(data, pos)
            for _ in range(n + 1):
                pos = _skip_leb(data, pos)
        elif op == 0x1C:  # select with types
            n, pos = read_uleb(data, pos)
            for _ in range(n):
                pos = _valtype_end(data, pos)
        elif op == 0x1F:  # try_table: block type, then catch clauses
            pos = _blocktype_end(data, pos)
            n, pos = read_uleb(data, pos)
            for _ in range(n):
                kind = data[pos]
                pos += 1
                if kind in (0, 1):  # catch / catch_ref carry a tag
                    pos = _skip_leb(data, pos)
                elif kind not in (2, 3):  # catch_all / catch_all_ref
                    raise BuildError(f"spill pass: unknown try_table catch kind {kind} at byte {start}")
                pos = _skip_leb(data, pos)  # label
        elif op == 0xFC:
            pos = _fc_end(data, pos, start)
        elif op == 0xFD:
            pos = _simd_end(data, pos, start)
        elif op == 0xFE:
            pos = _atomic_end(data, pos, start)
        else:
            raise BuildError(f"spill pass: unsupported opcode 0x{op:02x} at byte {start} "
                             "(GC instructions are not handled)")
        yield op, start, pos, imm


def _fc_end(data: bytes, pos: int, start: int) -> int:
    sub, pos = read_uleb(data, pos)
    if sub <= 7:  # saturating truncations
        return pos
    if sub in (8, 10, 12, 14):  # memory.init, memory.copy, table.init, table.copy
        return _skip_leb(data, _skip_leb(data, pos))
    if sub in (9, 11, 13, 15, 16, 17):  # data.drop, memory.fill, elem.drop, table.grow/size/fill
        return _skip_leb(data, pos)
    raise BuildError(f"spill pass: unknown 0xfc opcode {sub} at byte {start}")


def _simd_end(data: bytes, pos: int, start: int) -> int:
    sub, pos = read_uleb(data, pos)
    if sub <= 0x0B or sub in (0x5C, 0x5D):  # v128 loads and store, load32/64_zero
        return _memarg_end(data, pos)
    if sub in (0x0C, 0x0D):  # v128.const, i8x16.shuffle: 16 bytes
        return pos + 16
    if 0x15 <= sub <= 0x22:  # extract_lane / replace_lane: a lane index byte
        return pos + 1
    if 0x54 <= sub <= 0x5B:  # load/store_lane: memarg and lane index
        return _memarg_end(data, pos) + 1
    if sub <= 0x113:  # every other SIMD and relaxed-SIMD opcode has no immediate
        return pos
    raise BuildError(f"spill pass: unknown 0xfd opcode {sub} at byte {start}")


def _atomic_end(data: bytes, pos: int, start: int) -> int:
    sub, pos = read_uleb(data, pos)
    if sub <= 0x02 or 0x10 <= sub <= 0x4E:  # notify, wait, atomic loads/stores/rmw
        return _memarg_end(data, pos)
    if sub == 0x03:  # atomic.fence: one reserved byte
        return pos + 1
    raise BuildError(f"spill pass: unsupported 0xfe opcode {sub} at byte {start} "
                     "(shared-everything threads are not handled)")


def _section_bytes(sid: int, content: bytes) -> bytes:
    return bytes([sid]) + encode_uleb(len(content)) + content


def spill_pointers(wasm: bytes, *, root: str = "gc_collect", strip: bool = True) -> bytes:
    """Returns ``wasm`` with i32 locals mirrored to the shadow stack (see module doc).

    ``root`` names the function whose callers need spilling (an import works
    too). With ``strip``, custom sections (names, producers, target features)
    are dropped from the output; the input must still have its name section.
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
            if op in (0x10, 0x12) and imm is not None:  # call, return_call (always have one)
                func.calls.add(imm)
            elif op in _INDIRECT_CALLS:
                func.indirect = True

    # Functions that can reach the collector: a fixed point over the call graph.
    reaches = {by_name[root]}
    changed = True
    while changed:
        changed = False
        for func in mod.funcs:
            if func.index not in reaches and (func.indirect or func.calls & reaches):
                reaches.add(func.index)
                changed = True

    new_types: list[list[bytes]] = []  # result lists that need a block type index
    bodies = []
    for func in mod.funcs:
        body = data[func.body_start:func.body_end]
        # Linker-synthesised functions (__wasm_call_ctors, __wasm_init_memory...)
        # hold no heap pointers, and V8 (Node 20) crashes on a rewritten
        # __wasm_call_ctors in legacy-EH modules: leave them alone.
        if func.index in reaches and not mod.func_names.get(func.index, "").startswith("__wasm_"):
            body = _rewrite(data, func, mod, sp_index, new_types)
        bodies.append(encode_uleb(len(body)) + body)
    code_section = encode_uleb(len(bodies)) + b"".join(bodies)

    out = bytearray(data[:8])
    for sid, start, end in mod.sections:
        if sid == 10:
            out += _section_bytes(10, code_section)
        elif sid == 1 and new_types:
            count, first = read_uleb(data, start)
            extra = b"".join(b"\x60\x00" + encode_uleb(len(r)) + b"".join(r) for r in new_types)
            out += _section_bytes(1, encode_uleb(count + len(new_types)) + data[first:end] + extra)
        elif sid == 0 and strip:
            continue
        else:
            out += _section_bytes(sid, data[start:end])
    return bytes(out)


def _blocktype(results: list[bytes], mod: _Module, new_types: list[list[bytes]]) -> bytes:
    """The wrapper block's type: the function's results, as a block may declare them."""
    if not results:
        return b"\x40"
    if len(results) == 1:
        return results[0]  # all of it: (ref null? ht) is more than one byte
    # Several results need a type index [] -> results: an existing one, or one
    # appended to the type section (appending renumbers nothing).
    for index, (params, res) in enumerate(mod.types):
        if not params and res == results:
            return _enc_sleb(index)
    if results not in new_types:
        new_types.append(results)
    return _enc_sleb(len(mod.types) + new_types.index(results))


def _rewrite(data: bytes, func: _Func, mod: _Module, sp: int, new_types: list[list[bytes]]) -> bytes:
    params, results = mod.types[func.type_index]
    runs, code = _locals(data, func)
    local_types = list(params)
    for n, t in runs:
        local_types.extend([t] * n)
    slots: dict[int, int] = {}  # local index -> byte offset of its slot in the frame
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

    # local.get base; i32.const frame; i32.add; global.set sp. Stack-neutral,
    # so it can sit in front of return / return_call with their operands pushed.
    restore = b"\x20" + encode_uleb(base) + b"\x41" + _enc_sleb(frame) + b"\x6a\x24" + encode_uleb(sp)

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
    out += b"\x02" + _blocktype(results, mod, new_types)
    last = code
    end = func.body_end - 1  # the function's final `end`
    if data[end] != 0x0B:
        raise BuildError(f"spill pass: function {func.index} does not end with `end`")
    for op, start, stop, imm in _walk(data, code, end):
        if op in (0x21, 0x22) and imm in slots:
            out += data[last:stop]
            out += store(imm)
            last = stop
        elif op == 0x0F or op in _TAIL_CALLS:
            out += data[last:start]
            out += restore
            last = start
    out += data[last:end]
    out += b"\x0b" + restore + b"\x0b"
    return bytes(out)
