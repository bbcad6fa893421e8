//! Funcrefs of a component's modules, for
//! engine/patches/wasmtime-*-funcref-loc-cache.patch.
//!
//! The patch memoizes, per compiled module, where each defined function and
//! its array-to-wasm trampoline are in the text section, the lookups behind
//! every `VMFuncRef` (each `ref.func`, funcref import and export). What it
//! must not do is give one module's location for another's function: two
//! modules of one component share the text section and the lookup table,
//! and their functions have the same defined indices (0, 1). Each case
//! fills tables through `ref.func` (own functions and an imported one) and
//! calls through them, in several instances in a row (the memo empty, then
//! filled), from wasm (`call_indirect`) and from the host (exports called
//! through their array-to-wasm trampolines).

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

const COMPONENT: &str = r#"
(component
  (core module $A
    (func $a0 (export "a0") (result i32) i32.const 100)
    (func $a1 (export "a1") (result i32) i32.const 101)
    (table $t 2 funcref)
    (func (export "call") (param i32) (result i32)
      (table.set $t (i32.const 0) (ref.func $a0))
      (table.set $t (i32.const 1) (ref.func $a1))
      (call_indirect $t (result i32) (local.get 0)))
    (elem declare func $a0 $a1))
  (core module $B
    (import "a" "a1" (func $a1 (result i32)))
    (func $b0 (result i32) i32.const 200)
    (func $b1 (result i32) i32.const 201)
    (table $t 3 funcref)
    (func (export "call") (param i32) (result i32)
      (table.set $t (i32.const 0) (ref.func $b0))
      (table.set $t (i32.const 1) (ref.func $b1))
      (table.set $t (i32.const 2) (ref.func $a1))
      (call_indirect $t (result i32) (local.get 0)))
    (elem declare func $b0 $b1 $a1))
  (core instance $a (instantiate $A))
  (core instance $b (instantiate $B (with "a" (instance $a))))
  (func (export "call-a") (param "i" u32) (result u32) (canon lift (core func $a "call")))
  (func (export "call-b") (param "i" u32) (result u32) (canon lift (core func $b "call")))
  (func (export "a0") (result u32) (canon lift (core func $a "a0")))
  (func (export "a1") (result u32) (canon lift (core func $a "a1")))
)
"#;

#[test]
fn each_module_calls_its_own_functions() {
    let engine = Engine::default();
    let component = Component::new(&engine, wat::parse_str(COMPONENT).unwrap()).unwrap();
    let linker = Linker::<()>::new(&engine);
    for round in 0..3 {
        let mut store = Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let call_a = instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, "call-a")
            .unwrap();
        let call_b = instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, "call-b")
            .unwrap();
        let mut got = Vec::new();
        for i in 0..3 {
            got.push(call_b.call(&mut store, (i,)).unwrap().0);
        }
        for i in 0..2 {
            got.push(call_a.call(&mut store, (i,)).unwrap().0);
        }
        for name in ["a0", "a1"] {
            let f = instance
                .get_typed_func::<(), (u32,)>(&mut store, name)
                .unwrap();
            got.push(f.call(&mut store, ()).unwrap().0);
        }
        assert_eq!(got, [200, 201, 101, 100, 101, 100, 101], "round {round}");
    }
}
