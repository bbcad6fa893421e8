"""The pointer-spill pass (pylon.build.wasm_spill) on small modules written in WAT.

Every module is parsed with the venv's wasm-tools, rewritten by the pass,
validated by wasm-tools and run on real wasmtime (wasmtime-py). The central
test is tests/wasm_spill/tiny_gc.wat: a conservative mark-and-sweep GC that,
like MicroPython's, sees only the shadow stack, so a list held in wasm locals
across a collection is freed without the pass and survives with it.

The other tests pin the pass's two duties on every instruction it must step
over: its walker must find each instruction where wasm-tools does (a walker
that misreads one immediate desynchronises and misses or invents
``local.set``s), and at every call to ``gc_collect`` each i32 local's value
must be in the shadow stack.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.build import toolchain, wasm_spill
from pylon.errors import BuildError

HERE = Path(__file__).resolve().parent / "wasm_spill"
WASM_TOOLS = toolchain.wasm_tools()

#: Stack top of the snippet and hypothesis modules (their __stack_pointer's initial value).
STACK_TOP = 4096


def wat(text: str) -> bytes:
    """Binary of a WAT module (with its name section, which the pass needs)."""
    result = subprocess.run([WASM_TOOLS, "parse", "-"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise AssertionError(f"wasm-tools parse failed:\n{result.stderr.decode()}\n{text}")
    return result.stdout


def validate(module: bytes) -> None:
    # The default set (every phase-4 proposal: exnref, tail calls, function
    # references, SIMD, threads, multi-memory...) plus the legacy EH encoding
    # that the MicroPython build's `--eh legacy` flavour uses.
    result = subprocess.run([WASM_TOOLS, "validate", "--features", "legacy-exceptions", "-"],
                            input=module, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def spill(module: bytes, **kwargs) -> bytes:
    out = wasm_spill.spill_pointers(module, **kwargs)
    validate(out)
    return out


_ENGINE: wasmtime.Engine | None = None


def engine() -> wasmtime.Engine:
    global _ENGINE
    if _ENGINE is None:
        config = wasmtime.Config()
        for feature in ("tail_call", "exceptions", "function_references", "simd", "relaxed_simd",
                        "threads", "multi_memory", "reference_types", "multi_value", "bulk_memory"):
            setattr(config, f"wasm_{feature}", True)
        config.cranelift_opt_level = "none"  # hundreds of tiny modules: compile fast
        _ENGINE = wasmtime.Engine(config)
    return _ENGINE


@dataclass
class Run:
    """One call of an export, with what the host saw at each gc_collect."""

    result: object = None
    trap: str | None = None
    notes: list[int] = field(default_factory=list)  # values passed to env.note, in order
    # At each gc_collect: (values noted since the previous one, words of [sp, STACK_TOP)).
    collections: list[tuple[list[int], set[int]]] = field(default_factory=list)
    sp_before: int = 0
    sp_after: int = 0


def run(module: bytes, export: str, *args) -> Run:
    """Calls ``export``; imports env.gc_collect (snapshots the shadow stack) and env.note."""
    out = Run()
    store = wasmtime.Store(engine())
    pending: list[int] = []

    def gc_collect(caller: wasmtime.Caller) -> None:
        sp = caller["sp"].value(caller)
        raw = caller["memory"].read(caller, sp, STACK_TOP)
        out.collections.append((list(pending), set(struct.unpack(f"<{len(raw) // 4}I", raw))))
        pending.clear()

    def note(value: int) -> None:
        out.notes.append(value & 0xFFFFFFFF)
        pending.append(value & 0xFFFFFFFF)

    compiled = wasmtime.Module(engine(), module)
    imports = []
    for imp in compiled.imports:
        if imp.name == "gc_collect":
            imports.append(wasmtime.Func(store, wasmtime.FuncType([], []), gc_collect, access_caller=True))
        elif imp.name == "note":
            imports.append(wasmtime.Func(store, wasmtime.FuncType([wasmtime.ValType.i32()], []), note))
        else:
            raise AssertionError(f"unexpected import {imp.name}")
    instance = wasmtime.Instance(store, compiled, imports)
    exports = instance.exports(store)
    out.sp_before = exports["sp"].value(store)
    try:
        out.result = exports[export](store, *args)
    except wasmtime.Trap as exc:
        out.trap = exc.message
    out.sp_after = exports["sp"].value(store)
    return out


def dump_offsets(module: bytes) -> list[list[int]]:
    """Each function's instruction offsets, as ``wasm-tools dump`` decodes them."""
    text = subprocess.run([WASM_TOOLS, "dump", "-"], input=module, capture_output=True, check=True).stdout.decode()
    funcs: list[list[int]] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("============== func"):
            funcs.append([])
            in_code = True
            continue
        m = re.match(r"\s*0x([0-9a-f]+) \|[0-9a-f ]*\| (.*)$", line)
        if not m or not in_code:
            continue
        what = m.group(2)
        if what.endswith(" section") or what.startswith("name:"):
            in_code = False  # the code section is over
        elif not re.match(r"size of function|\d+ local blocks|\d+ locals of type", what):
            funcs[-1].append(int(m.group(1), 16))
    return funcs


def walk_offsets(module: bytes) -> list[list[int]]:
    """Each function's instruction offsets, as the pass's walker finds them."""
    mod = wasm_spill._parse(module)
    out = []
    for func in mod.funcs:
        _, code = wasm_spill._locals(module, func)
        out.append([start for _op, start, _end, _imm in wasm_spill._walk(module, code, func.body_end)])
    return out


# --- The key test: a conservative GC whose roots are only in wasm locals -----

GC_EXPORTS = ["list_in_local", "list_in_param", "list_through_return_call",
              "list_through_return_call_indirect", "list_across_ref_as_non_null",
              "list_across_br_on_null"]

#: Exports that take a list made beforehand (by the exported make_list), not a length.
TAKES_A_LIST = {"list_across_ref_as_non_null", "list_across_br_on_null"}


@dataclass
class GcRun:
    result: int | None
    trap: str | None
    collections: int
    freed: int
    sp: int


def run_gc(module: bytes, export: str, n: int = 10) -> GcRun:
    store = wasmtime.Store(engine())
    exports = wasmtime.Instance(store, wasmtime.Module(engine(), module), []).exports(store)
    arg = exports["make_list"](store, n) if export in TAKES_A_LIST else n
    result = trap = None
    try:
        result = exports[export](store, arg)
    except wasmtime.Trap as exc:
        trap = exc.message
    return GcRun(result, trap, exports["collections"].value(store), exports["freed"].value(store),
                 exports["sp"].value(store))


@pytest.fixture(scope="module")
def tiny_gc() -> bytes:
    return wat((HERE / "tiny_gc.wat").read_text())


@pytest.mark.parametrize("export", GC_EXPORTS)
def test_gc_frees_a_list_held_only_in_locals_without_the_pass(tiny_gc: bytes, export: str) -> None:
    # The control: proves the GC test below can fail. Without spilling, the
    # list has no root, the collection frees it, and the walk reads poison
    # (a trap) or cells handed out again (a wrong sum).
    out = run_gc(tiny_gc, export)
    assert out.collections >= 1
    assert out.trap is not None or out.result != sum(range(10)), out


@pytest.mark.parametrize("export", GC_EXPORTS)
def test_gc_keeps_a_list_held_only_in_locals_with_the_pass(tiny_gc: bytes, export: str) -> None:
    out = run_gc(spill(tiny_gc), export)
    assert out.trap is None, out.trap
    assert out.result == sum(range(10))
    assert out.collections >= 2  # the heap filled up and was collected...
    assert out.freed > 100  # ...freeing the garbage, not keeping everything
    assert out.sp == 16384  # every frame gave its slots back, tail calls included


def test_tail_recursion_runs_in_constant_shadow_stack() -> None:
    # A tail call leaves the frame without coming back to the restore at the
    # function's end: unless the pass restores __stack_pointer before it, each
    # step leaks a frame and 10,000 steps run the 4 KiB stack out of memory.
    module = wat(f"""(module
      (import "env" "gc_collect" (func $gc_collect))
      (global $__stack_pointer (export "sp") (mut i32) (i32.const {STACK_TOP}))
      (memory (export "memory") 1)
      (type $step (func (param i32 i32) (result i32)))
      (table 1 funcref)
      (elem (i32.const 0) $by_ref)
      (elem declare func $by_ref)
      (func $direct (export "direct") (type $step) (local $keep i32)
        (local.set $keep (local.get 1))
        (if (i32.eqz (local.get 0)) (then (call $gc_collect) (return (local.get $keep))))
        (return_call $direct (i32.sub (local.get 0) (i32.const 1)) (local.get $keep)))
      (func $indirect (export "indirect") (type $step) (local $keep i32)
        (local.set $keep (local.get 1))
        (if (i32.eqz (local.get 0)) (then (call $gc_collect) (return (local.get $keep))))
        (return_call_indirect (type $step) (i32.sub (local.get 0) (i32.const 1)) (local.get $keep)
                              (i32.const 0)))
      (func $by_ref (export "by_ref") (type $step) (local $keep i32)
        (local.set $keep (local.get 1))
        (if (i32.eqz (local.get 0)) (then (call $gc_collect) (return (local.get $keep))))
        (return_call_ref $step (i32.sub (local.get 0) (i32.const 1)) (local.get $keep) (ref.func $by_ref))))
    """)
    spilled = spill(module)
    for export in ("direct", "indirect", "by_ref"):
        out = run(spilled, export, 10_000, 0x12345)
        assert out.trap is None, (export, out.trap)
        assert out.result == 0x12345
        assert out.sp_after == out.sp_before == STACK_TOP, export
        # The last frame, the one that collects, still has its locals spilled.
        assert 0x12345 in out.collections[0][1]


# --- Every instruction class the walker must step over ----------------------

SUBJECT = """(module
  (import "env" "gc_collect" (func $gc_collect))
  (import "env" "note" (func $note (param i32)))
  (type $ft (func (result i32)))
  (type $i32_to_i32 (func (param i32) (result i32)))
  (global $__stack_pointer (export "sp") (mut i32) (i32.const 4096))
  (global $g64 (mut i64) (i64.const 0))
  (memory (export "memory") 1)
  (memory $m2 1)
  (table $tab 2 funcref)
  (table $tab2 2 funcref)
  (elem (table $tab) (i32.const 0) func $leaf $leaf)
  (elem $passive func $leaf)
  (elem declare func $leaf)
  (data $d "abcdefgh")
  (tag $t (param i32))
  (func $leaf (type $ft) (i32.const 7))
  (func (export "subject") (param $a i32) (result i32)
    (local $x i32) (local $l i64) (local $f f32) (local $d f64) (local $r funcref)
    (local $v v128) (local $e exnref) (local $y i32)
    (local.set $x (i32.const 0x11111))
    SNIPPET
    (local.set $y (i32.const 0x22222))
    (call $gc_collect)
    (i32.add (local.get $x) (local.get $y))))
"""

#: (name, WAT spliced into SUBJECT, runs on wasmtime). Each snippet leaves the
#: operand stack as it found it and writes memory only above the shadow stack.
SNIPPETS = [
    ("control", """
      (block $b1 (block $b2 (block $b3 (br_table $b1 $b2 $b3 (i32.const 1))) unreachable) nop)
      (loop $lp (br_if $lp (i32.const 0)))
      (if (i32.const 0) (then unreachable) (else nop))
      (drop (block (result i32) (br 0 (i32.const 1))))
      (i32.const 1) (block (type $i32_to_i32) (param i32) (result i32) (i32.add (i32.const 2))) (drop)
      (if (i32.const 0) (then (return (i32.const 0))))""", True),
    ("calls", """
      (drop (call $leaf))
      (drop (call_indirect $tab (type $ft) (i32.const 1)))
      (drop (call_ref $ft (ref.func $leaf)))""", True),
    ("tail calls (not taken)", """
      (if (i32.const 0) (then (return_call $leaf)))
      (if (i32.const 0) (then (return_call_indirect $tab (type $ft) (i32.const 0))))
      (if (i32.const 0) (then (return_call_ref $ft (ref.func $leaf))))""", True),
    ("parametric", """
      (drop (select (i32.const 1) (i32.const 2) (local.get $a)))
      (drop (select (result i64) (i64.const 1) (i64.const 2) (i32.const 0)))
      (drop (select (result funcref) (ref.null func) (ref.func $leaf) (i32.const 1)))""", True),
    ("variables", """
      (local.set $l (i64.const -1))
      (local.set $f (f32.const 1.5))
      (local.set $d (f64.add (local.tee $d (f64.const 2.5)) (f64.const 1)))
      (global.set $g64 (i64.add (global.get $g64) (local.get $l)))""", True),
    ("memory", """
      (i32.store8 offset=8192 (i32.const 0) (i32.const 0x21))
      (i64.store offset=8200 (i32.const 0) (i64.load32_u offset=8192 (i32.const 0)))
      (f64.store offset=8208 (i32.const 0) (f64.load offset=8200 (i32.const 0)))
      (i32.store16 offset=8216 (i32.const 0) (i32.load16_s offset=8192 (i32.const 0)))
      (drop (memory.size))
      (drop (memory.grow (i32.const 0)))
      (memory.fill (i32.const 9000) (i32.const 0x21) (i32.const 8))
      (memory.copy (i32.const 9100) (i32.const 9000) (i32.const 8))
      (memory.init $d (i32.const 9200) (i32.const 0) (i32.const 4))
      (data.drop $d)
      (i32.store $m2 offset=8 (i32.const 0) (i32.load $m2 offset=4 (i32.const 0)))
      (memory.copy $m2 0 (i32.const 0) (i32.const 8192) (i32.const 4))""", True),
    ("numeric", """
      (drop (i32.const -123456789))
      (drop (i32.const 33))
      (drop (i64.const 0x7fffffffffffffff))
      (drop (f32.const -0x1.42p+3))
      (drop (f64.const 1e300))
      (drop (i32.popcnt (i32.clz (i32.ctz (local.get $a)))))
      (drop (i64.rotr (i64.extend_i32_s (local.get $a)) (i64.const 3)))
      (drop (f64.promote_f32 (f32.demote_f64 (f64.const 1))))
      (drop (i32.reinterpret_f32 (f32.const 1)))
      (drop (i64.extend32_s (i64.extend16_s (i64.extend8_s (i64.const 300)))))
      (drop (i32.extend8_s (i32.extend16_s (local.get $a))))
      (drop (i32.trunc_sat_f32_s (f32.const 1e10)))
      (drop (i64.trunc_sat_f64_u (f64.const -1)))""", True),
    # ref.as_non_null has no immediate; br_on_null and br_on_non_null have a
    # label (the walker once had the first two the other way round). After
    # `ref.as_non_null; ref.is_null` a walker reading an immediate runs on
    # through 0xd1 (an LEB continuation byte) and swallows the `local.set`
    # that follows; tiny_gc.wat shows the same slip losing a whole list.
    ("references", """
      (local.set $r (ref.as_non_null (ref.func $leaf)))
      (local.set 1 (ref.is_null (ref.as_non_null (local.get $r))))
      (local.set 1 (i32.const 0x11111))
      (drop (block $nn (result (ref $ft)) (br_on_non_null $nn (ref.func $leaf)) unreachable))
      (block $null (br_on_null $null (ref.null $ft)) drop)
      (block $deep (block (block (block (br_on_null $deep (local.get $r)) drop))))
      (drop (ref.is_null (ref.null extern)))
      (drop (ref.is_null (ref.null $ft)))""", True),
    ("tables", """
      (drop (table.get $tab (i32.const 0)))
      (table.set $tab (i32.const 1) (ref.func $leaf))
      (drop (table.size $tab))
      (drop (table.grow $tab2 (ref.null func) (i32.const 1)))
      (table.fill $tab2 (i32.const 0) (ref.null func) (i32.const 1))
      (table.copy $tab2 $tab (i32.const 0) (i32.const 0) (i32.const 1))
      (table.init $tab2 $passive (i32.const 0) (i32.const 0) (i32.const 1))
      (elem.drop $passive)""", True),
    ("exceptions (exnref)", """
      (block $h (result i32 exnref)
        (try_table (catch_ref $t $h) (throw $t (i32.const 5)))
        unreachable)
      (local.set $e)
      (drop)
      (drop (block $h2 (result exnref)
        (try_table (catch_all_ref $h2) (throw_ref (local.get $e)))
        unreachable))
      (drop (block $h3 (result i32) (try_table (catch $t $h3) (throw $t (i32.const 6))) unreachable))
      (block $h4 (try_table (catch_all $h4) (throw $t (i32.const 7))))
      (drop (try_table (result i32) (i32.const 1)))""", True),
    # wasmtime has no legacy exceptions: walked and validated, not run.
    ("exceptions (legacy)", """
      try (throw $t (i32.const 1)) catch $t drop catch_all end
      try $outer try (throw $t (i32.const 2)) delegate $outer catch_all end
      try try $r (throw $t (i32.const 3)) catch $t drop rethrow $r end catch_all end
      try (result i32) (i32.const 1) catch_all (i32.const 2) end drop""", False),
    ("simd", """
      (local.set $v (v128.const i32x4 1 2 3 0x21))
      (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 31 (local.get $v) (local.get $v)))
      (local.set $v (i32x4.replace_lane 1 (local.get $v) (i32x4.extract_lane 2 (local.get $v))))
      (drop (i8x16.extract_lane_u 15 (local.get $v)))
      (v128.store offset=8192 (i32.const 0) (v128.load offset=8208 (i32.const 0)))
      (local.set $v (v128.load32_lane offset=8192 1 (i32.const 0) (local.get $v)))
      (v128.store8_lane offset=8300 3 (i32.const 0) (local.get $v))
      (local.set $v (v128.load64_zero offset=8192 (i32.const 0)))
      (local.set $v (v128.load8_splat offset=8192 (i32.const 0)))
      (local.set $v (i32x4.add (local.get $v) (i8x16.splat (i32.const 1))))
      (local.set $v (v128.bitselect (local.get $v) (local.get $v) (local.get $v)))
      (local.set $v (i16x8.q15mulr_sat_s (local.get $v) (local.get $v)))
      (local.set $v (i32x4.relaxed_trunc_f32x4_s (local.get $v)))
      (drop (v128.any_true (local.get $v)))""", True),
    ("atomics", """
      (drop (i32.atomic.rmw.add offset=8192 (i32.const 0) (i32.const 1)))
      (drop (i64.atomic.rmw32.cmpxchg_u offset=8200 (i32.const 0) (i64.const 0) (i64.const 1)))
      (i32.atomic.store8 offset=8300 (i32.const 0) (i32.const 0x21))
      (drop (i64.atomic.load offset=8200 (i32.const 0)))
      (drop (memory.atomic.notify offset=8192 (i32.const 0) (i32.const 1)))
      (if (i32.const 0) (then (drop (memory.atomic.wait32 (i32.const 8192) (i32.const 0) (i64.const 0)))))
      (atomic.fence)""", True),
]


@pytest.mark.parametrize("name,snippet,runs", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_instruction_class_round_trips(name: str, snippet: str, runs: bool) -> None:
    module = wat(SUBJECT.replace("SNIPPET", snippet))
    assert walk_offsets(module) == dump_offsets(module)
    spilled = spill(module)
    assert walk_offsets(spilled) == dump_offsets(spilled)
    if not runs:
        return
    before, after = run(module, "subject", 0x33333), run(spilled, "subject", 0x33333)
    assert before.trap is None and after.trap is None, (before.trap, after.trap)
    assert after.result == before.result == 0x33333
    assert after.sp_after == after.sp_before == STACK_TOP
    # At the collection, the param and both i32 locals are in the shadow stack.
    (_, words), = after.collections
    assert {0x33333, 0x11111, 0x22222} <= words


def test_functions_that_cannot_collect_are_left_alone() -> None:
    module = wat(f"""(module
      (import "env" "gc_collect" (func $gc_collect))
      (global $__stack_pointer (export "sp") (mut i32) (i32.const {STACK_TOP}))
      (memory (export "memory") 1)
      (func $hot (param i32) (result i32) (local i32)
        (local.set 1 (i32.mul (local.get 0) (local.get 0))) (local.get 1))
      (func $__wasm_call_ctors (local i32) (local.set 0 (i32.const 1)) (call $gc_collect))
      (func $floats (local f64) (local.set 0 (f64.const 1)) (call $gc_collect))
      (func $caller (local i32) (local.set 0 (call $hot (i32.const 3))) (call $gc_collect)))
    """)
    spilled = spill(module)
    before, after = wasm_spill._parse(module), wasm_spill._parse(spilled)

    def body(mod, i):
        f = mod.funcs[i]
        return mod.data[f.body_start:f.body_end]

    assert body(after, 0) == body(before, 0)  # $hot never reaches gc_collect
    assert body(after, 1) == body(before, 1)  # linker-made functions are skipped
    assert body(after, 2) == body(before, 2)  # no i32 locals: nothing to spill
    assert body(after, 3) != body(before, 3)


@pytest.mark.parametrize("eh", ["exnref", "legacy"])
def test_walker_agrees_with_wasm_tools_on_a_micropython_build(eh: str) -> None:
    # The real input: ~120,000 instructions of LLVM output per flavour. The
    # module before the pass stays in the build's cache folder; whichever
    # build is newest will do (the link does not depend on the pass), and
    # tests/test_micropython_static.py makes one when there is none.
    from pylon import paths

    builds = sorted(paths.build_root().glob(f"micropython-{eh}-*/linked.wasm"), key=lambda p: p.stat().st_mtime)
    if not builds:
        pytest.skip(f"no MicroPython {eh} build in the cache (tests/test_micropython_static.py makes one)")
    module = builds[-1].read_bytes()
    assert walk_offsets(module) == dump_offsets(module)
    spill(module)


# --- Functions whose results a block type must spell out --------------------

#: (results, WAT producing them, WAT folding them into one i32, that i32, block types added)
RESULT_CASES = [
    ("(ref $ft)", "(ref.func $leaf)", "(call_ref $ft)", 7, 0),
    ("(ref null $ft)", "(ref.func $leaf)", "(call_ref $ft)", 7, 0),
    ("(ref func)", "(ref.func $leaf)", "(ref.is_null)", 0, 0),
    ("i32 i64", "(local.get $x) (i64.const 5)", "(i32.wrap_i64) (i32.add)", 0x11111 + 5, 1),
    ("(ref $ft) i32", "(ref.func $leaf) (local.get $x)",
     "(local.set $tmp) (call_ref $ft) (local.get $tmp) (i32.add)", 7 + 0x11111, 1),
    ("f32 f64", "(f32.const 1) (f64.const 2)", "(drop) (i32.trunc_f32_s)", 1, 0),  # reuses $pair
]


@pytest.mark.parametrize("results,produce,consume,expected,added", RESULT_CASES,
                         ids=[c[0] for c in RESULT_CASES])
def test_results_a_block_type_must_spell_out(results: str, produce: str, consume: str,
                                             expected: int, added: int) -> None:
    # The wrapper block around a rewritten body is typed like the function's
    # results. `(ref $ft)`, `(ref null $ft)` and `(ref func)` take two bytes
    # (the pass before this test copied only the first, and the module did
    # not validate); several results need a type index: an existing
    # [] -> results type, or one appended to the type section.
    module = wat(f"""(module
      (import "env" "gc_collect" (func $gc_collect))
      (type $ft (func (result i32)))
      (type $pair (func (result f32 f64)))
      (global $__stack_pointer (export "sp") (mut i32) (i32.const {STACK_TOP}))
      (memory (export "memory") 1)
      (elem declare func $leaf)
      (func $leaf (type $ft) (i32.const 7))
      (func $f (param $p i32) (result {results}) (local $x i32)
        (local.set $x (i32.const 0x11111))
        (call $gc_collect)
        (if (i32.eqz (local.get $x)) (then (return {produce})))
        {produce})
      (func (export "main") (result i32) (local $tmp i32)
        (call $f (i32.const 0x33333)) {consume}))
    """)
    spilled = spill(module)
    assert len(wasm_spill._parse(spilled).types) == len(wasm_spill._parse(module).types) + added
    before, after = run(module, "main"), run(spilled, "main")
    assert after.result == before.result == expected
    assert after.sp_after == STACK_TOP
    (_, words), = after.collections
    assert {0x11111, 0x33333} <= words


# --- What the pass refuses rather than guesses -------------------------------

def test_refuses_modules_it_cannot_read() -> None:
    with pytest.raises(BuildError, match="no function named 'gc_collect'"):
        wasm_spill.spill_pointers(wat('(module (global $__stack_pointer (mut i32) (i32.const 0)) (func $f))'))
    with pytest.raises(BuildError, match="__stack_pointer"):
        wasm_spill.spill_pointers(wat("(module (func $gc_collect))"))
    with pytest.raises(BuildError, match="GC proposal types"):
        wasm_spill.spill_pointers(wat("(module (type (struct)) (global $__stack_pointer (mut i32) "
                                      "(i32.const 0)) (func $gc_collect))"))
    # A GC instruction in an ordinary-looking module: refused, never skipped blindly.
    gc_op = wat("(module (global $__stack_pointer (mut i32) (i32.const 0)) (func $gc_collect)"
                " (func (local i32) (drop (ref.i31 (i32.const 1))) (call $gc_collect)))")
    with pytest.raises(BuildError, match="unsupported opcode 0xfb"):
        wasm_spill.spill_pointers(gc_op)


# --- A property: random local traffic never escapes the shadow stack --------

@dataclass
class _Gen:
    """State while generating one random function body."""

    i32_locals: list[int]
    other_locals: list[tuple[int, str]]
    labels: int = 0


def _stmt(draw, gen: _Gen, depth: int, blocks: list[str]) -> str:
    # Weighted towards writes and collections; an early exit ends the story.
    kinds = ["set", "set", "tee", "copy", "other", "gc", "gc", "gc", "call"]
    if depth < 3:
        kinds += ["block", "loop", "if"]
    if blocks:
        kinds.append("br")
    kinds += ["return", "tail"]
    kind = draw(st.sampled_from(kinds))
    i = draw(st.sampled_from(gen.i32_locals))
    value = draw(st.integers(1, 2**32 - 1))
    if kind == "set":
        return f"(local.set {i} (i32.const {value}))"
    if kind == "tee":
        return f"(drop (local.tee {i} (i32.const {value})))"
    if kind == "copy":
        return f"(local.set {i} (local.get {draw(st.sampled_from(gen.i32_locals))}))"
    if kind == "other":
        if not gen.other_locals:
            return "(nop)"
        j, t = draw(st.sampled_from(gen.other_locals))
        init = {"i64": "(i64.const -1)", "f32": "(f32.const 2)", "funcref": "(ref.func $callee)"}[t]
        return f"(local.set {j} {init})"
    if kind == "gc":
        notes = "".join(f"(call $note (local.get {k}))" for k in gen.i32_locals)
        return f"{notes}(call $gc_collect)"
    if kind == "call":
        return f"(local.set {i} (call $callee (local.get {i})))"
    if kind == "return":
        return f"(return (local.get {i}))"
    if kind == "tail":
        return f"(return_call $callee (local.get {i}))"
    if kind == "br":
        return f"(br_if {draw(st.sampled_from(blocks))} (i32.const {draw(st.integers(0, 1))}))"
    gen.labels += 1
    label = f"$l{gen.labels}"
    inner = blocks + [label] if kind == "block" else blocks
    body = " ".join(_stmt(draw, gen, depth + 1, inner) for _ in range(draw(st.integers(0, 4))))
    if kind == "block":
        return f"(block {label} {body})"
    if kind == "loop":
        return f"(loop {label} {body})"  # no branch back: runs once
    other = " ".join(_stmt(draw, gen, depth + 1, blocks) for _ in range(draw(st.integers(0, 3))))
    return f"(if (i32.const {draw(st.integers(0, 1))}) (then {body}) (else {other}))"


@st.composite
def programs(draw) -> tuple[str, list[int]]:
    n_params = draw(st.integers(0, 3))
    local_types = draw(st.lists(st.sampled_from(["i32", "i32", "i64", "f32", "funcref"]), min_size=1, max_size=6))
    if "i32" not in local_types:
        local_types.append("i32")
    types = ["i32"] * n_params + local_types
    gen = _Gen([k for k, t in enumerate(types) if t == "i32"],
               [(k, t) for k, t in enumerate(types) if t != "i32"])
    body = " ".join(_stmt(draw, gen, 0, []) for _ in range(draw(st.integers(1, 10))))
    params = " ".join(["(param i32)"] * n_params)
    locals_ = " ".join(f"(local {t})" for t in local_types)
    text = f"""(module
      (import "env" "gc_collect" (func $gc_collect))
      (import "env" "note" (func $note (param i32)))
      (global $__stack_pointer (export "sp") (mut i32) (i32.const {STACK_TOP}))
      (memory (export "memory") 1)
      (elem declare func $callee)
      (func $callee (param i32) (result i32)
        (call $note (local.get 0)) (call $gc_collect) (i32.add (local.get 0) (i32.const 1)))
      (func (export "main") {params} (result i32) {locals_}
        {body}
        (local.get {gen.i32_locals[-1]})))"""
    args = draw(st.lists(st.integers(1, 2**31 - 1), min_size=n_params, max_size=n_params))
    return text, args


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_every_live_i32_local_is_in_the_shadow_stack_at_each_collection(program) -> None:
    text, args = program
    module = wat(text)
    spilled = spill(module)
    before, after = run(module, "main", *args), run(spilled, "main", *args)
    # The pass changes nothing the program computes...
    assert (after.result, after.notes, after.trap) == (before.result, before.notes, before.trap)
    # ...gives back every byte of shadow stack it takes (returns, tail calls, branches out)...
    assert after.sp_after == STACK_TOP
    # ...and each i32 a function held when it collected was in the shadow stack.
    for held, words in after.collections:
        assert set(held) - {0} <= words, (held, sorted(words))
