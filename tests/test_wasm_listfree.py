"""The build pass that frees componentize-py's copy of a lowered ``bytes``.

``pylon/build/wasm_listfree.py`` points one export of one core module at a
wrapper; tests/test_guest_call_memory.py proves end to end that the guest no
longer leaks. Here a small stand-in for componentize-py's runtime module (the
two exports with wit-dylib's signatures; each call is recorded in memory) is
rewritten and run in Node's WebAssembly: the wrapper must return what the
original returns, hand a block it produced to ``wit_dylib_dealloc_bytes(cx,
ptr, len, align 1, defer 1)``, leave a null result alone, and the pass must
refuse what it does not recognise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from pylon.build import toolchain, wasm_listfree
from pylon.errors import BuildError

#: Stands in for libcomponentize_py_runtime.so. pop_list writes the pointer
#: the caller asks for (its `ty` argument) at retptr and returns 7; dealloc
#: records its five arguments at 100..120.
RUNTIME = """
(module
  (memory (export "memory") 1)
  (func $pop (export "wit_dylib_pop_list") (param $cx i32) (param $ty i32) (param $ret i32) (result i32)
    (i32.store (local.get $ret) (local.get $ty))
    (i32.const 7))
  (func (export "wit_dylib_dealloc_bytes") (param i32 i32 i32 i32 i32)
    (i32.store (i32.const 100) (local.get 0))
    (i32.store (i32.const 104) (local.get 1))
    (i32.store (i32.const 108) (local.get 2))
    (i32.store (i32.const 112) (local.get 3))
    (i32.store (i32.const 116) (local.get 4))
    (i32.store (i32.const 120) (i32.add (i32.load (i32.const 120)) (i32.const 1)))))
"""

#: Calls pop_list(cx=5, ty=PTR, retptr=16) for a non-null and a null block.
DRIVER = textwrap.dedent("""
    const fs = require("fs");
    const m = new WebAssembly.Module(fs.readFileSync(process.argv[2]));
    const out = [];
    for (const ptr of [4096, 0]) {
      const { exports: e } = new WebAssembly.Instance(m, {});
      const len = e.wit_dylib_pop_list(5, ptr, 16);
      const w = new Uint32Array(e.memory.buffer, 0, 32);
      out.push({ len, written: w[4], calls: w[30], args: [w[25], w[26], w[27], w[28], w[29]] });
    }
    console.log(JSON.stringify(out));
""")


def wat(tmp_path: Path, text: str, name: str) -> bytes:
    source, out = tmp_path / f"{name}.wat", tmp_path / f"{name}.wasm"
    source.write_text(text)
    toolchain.run([toolchain.wasm_tools(), "parse", str(source), "-o", str(out)], what="wasm-tools parse")
    return out.read_bytes()


def component_around(tmp_path: Path, core: str) -> bytes:
    """A component nesting ``core`` in a nested component, as deep as componentize-py's can be."""
    return wat(tmp_path, f"(component (component (core module {core.strip()[len('(module'):-1]})))", "component")


def test_the_wrapper_defers_the_free_of_a_returned_block(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js (scripts/install-system-deps.sh installs it)")
    module = wat(tmp_path, RUNTIME, "runtime")
    patched = wasm_listfree._patch_module(module)
    assert patched is not None
    for name, data in (("before", module), ("after", patched)):
        (tmp_path / f"{name}.wasm").write_bytes(data)
    (tmp_path / "drive.js").write_text(DRIVER)
    toolchain.run([toolchain.wasm_tools(), "validate", str(tmp_path / "after.wasm")], what="wasm-tools validate")

    def drive(name: str) -> list[dict[str, object]]:
        done = subprocess.run([node, str(tmp_path / "drive.js"), str(tmp_path / f"{name}.wasm")],
                              capture_output=True, text=True, check=True)
        result: list[dict[str, object]] = json.loads(done.stdout)
        return result

    before, after = drive("before"), drive("after")
    # Unpatched: the block is returned and nothing frees it.
    assert [r["calls"] for r in before] == [0, 0]
    # Patched: the same results, and a returned block is freed, deferred.
    assert [(r["len"], r["written"]) for r in after] == [(7, 4096), (7, 0)]
    assert after[0]["calls"] == 1 and after[0]["args"] == [5, 4096, 7, 1, 1]
    assert after[1]["calls"] == 0


def test_the_pass_finds_the_runtime_in_a_nested_component(tmp_path: Path) -> None:
    component = component_around(tmp_path, RUNTIME)
    patched = wasm_listfree.free_lowered_bytes(component)
    assert patched != component
    (tmp_path / "patched.wasm").write_bytes(patched)
    toolchain.run([toolchain.wasm_tools(), "validate", str(tmp_path / "patched.wasm")], what="wasm-tools validate")


def test_the_pass_refuses_to_run_twice(tmp_path: Path) -> None:
    once = wasm_listfree.free_lowered_bytes(component_around(tmp_path, RUNTIME))
    with pytest.raises(BuildError, match="ran twice"):
        wasm_listfree.free_lowered_bytes(once)


def test_the_pass_refuses_what_it_does_not_recognise(tmp_path: Path) -> None:
    no_runtime = component_around(tmp_path, '(module (func (export "f")))')
    with pytest.raises(BuildError, match="found 0"):
        wasm_listfree.free_lowered_bytes(no_runtime)
    other_shape = RUNTIME.replace("(param $cx i32) (param $ty i32) (param $ret i32) (result i32)",
                                  "(param $cx i32) (param $ty i32) (param $ret i32) (result i64)") \
                         .replace("(i32.const 7))", "(i64.const 7))")
    with pytest.raises(BuildError, match="wit_dylib_pop_list is not"):
        wasm_listfree.free_lowered_bytes(component_around(tmp_path, other_shape))
    with pytest.raises(BuildError, match="not a wasm component"):
        wasm_listfree.free_lowered_bytes(wat(tmp_path, RUNTIME, "core"))
