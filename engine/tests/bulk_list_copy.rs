//! Lists crossing a fused adapter (component to component, the "embedded"
//! cap boundary), for engine/patches/wasmtime-environ-*-bulk-list-copy.patch.
//!
//! The patch copies lists of same-typed integers and floats with one
//! `memory.copy` after the adapter's existing bounds, alignment and `realloc`
//! checks. It falls back to the per-element loop when bulk memory is
//! disabled, so every case here runs on two engines and must agree:
//!
//! * `fast`: the default config (bulk memory on: the patched `memory.copy`);
//! * `slow`: bulk memory (and the proposals that need it) off: the same
//!   adapter code as before the patch, element by element.
//!
//! Each case also checks the exact values (or trap) expected, so the file
//! says what the unpatched adapters did, and `bulk_copy_is_in_use` checks
//! that the fast engine really takes the new path.
//!
//! The test component: a callee that echoes a `list<T>` and a caller whose
//! core module calls it with any pointer and length the test picks (valid,
//! misaligned, out of bounds, ending at the last byte of memory).

use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{Config, Engine, Store, Trap};

/// Element types the patch copies in bulk, as (WIT name, size in bytes).
const BULK: &[(&str, usize)] = &[
    ("u8", 1),
    ("s8", 1),
    ("u16", 2),
    ("s16", 2),
    ("u32", 4),
    ("s32", 4),
    ("u64", 8),
    ("s64", 8),
    ("f32", 4),
    ("f64", 8),
];

/// Initial size of the caller's memory, in 64 KiB pages (it grows as needed).
const CALLER_PAGES: u32 = 512;

/// A bump allocator for `realloc`, 8-aligned at least, growing memory when
/// needed. `$mode` (callee only) makes it misbehave: 1 returns a misaligned
/// pointer, 2 one past the end of memory.
const REALLOC: &str = r#"
    (func $realloc (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32) (local $end i32) (local $need i32) (local $align i32)
      (if (i32.eq (global.get $mode) (i32.const 1))
        (then (return (i32.add (global.get $heap) (i32.const 1)))))
      (if (i32.eq (global.get $mode) (i32.const 2))
        (then (return (i32.shl (memory.size) (i32.const 16)))))
      (local.set $align (select (local.get 2) (i32.const 8) (i32.gt_u (local.get 2) (i32.const 8))))
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get 3)))
      (local.set $need
        (i32.sub
          (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
          (memory.size)))
      (if (i32.gt_s (local.get $need) (i32.const 0))
        (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
      (global.set $heap (local.get $end))
      (local.get $ptr))
"#;

/// The callee's core module, with a 32-bit memory.
fn callee32() -> String {
    format!(
        r#"
    (core module $m
      (memory (export "memory") 1)
      (global $heap (mut i32) (i32.const 64))
      (global $mode (mut i32) (i32.const 0))
      {REALLOC}
      ;; The next call may reuse the space: this reply is copied out first.
      (func (export "echo") (param i32 i32) (result i32)
        (global.set $heap (i32.const 64))
        (i32.store (i32.const 0) (local.get 0))
        (i32.store (i32.const 4) (local.get 1))
        (i32.const 0))
      (func (export "set-mode") (param i32) (global.set $mode (local.get 0))))"#
    )
}

/// The callee's core module with a 64-bit memory (pointers and lengths are
/// `i64` on its side of the adapter); `set-mode` is a no-op.
const CALLEE64: &str = r#"
    (core module $m
      (memory (export "memory") i64 1)
      (global $heap (mut i64) (i64.const 64))
      (func $realloc (export "realloc") (param i64 i64 i64 i64) (result i64)
        (local $ptr i64) (local $end i64) (local $need i64) (local $align i64)
        (local.set $align (select (local.get 2) (i64.const 8) (i64.gt_u (local.get 2) (i64.const 8))))
        (local.set $ptr
          (i64.and
            (i64.add (global.get $heap) (i64.sub (local.get $align) (i64.const 1)))
            (i64.sub (i64.const 0) (local.get $align))))
        (local.set $end (i64.add (local.get $ptr) (local.get 3)))
        (local.set $need
          (i64.sub
            (i64.shr_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 16))
            (memory.size)))
        (if (i64.gt_s (local.get $need) (i64.const 0))
          (then (if (i64.eq (memory.grow (local.get $need)) (i64.const -1)) (then unreachable))))
        (global.set $heap (local.get $end))
        (local.get $ptr))
      (func (export "echo") (param i64 i64) (result i64)
        (global.set $heap (i64.const 64))
        (i64.store (i64.const 0) (local.get 0))
        (i64.store (i64.const 8) (local.get 1))
        (i64.const 0))
      (func (export "set-mode") (param i32)))"#;

/// The test component for element type `ty` (component text format).
fn component_wat(ty: &str) -> String {
    component_wat_with(ty, &callee32())
}

/// The test component for element type `ty`, with `callee` as the callee's
/// core module.
fn component_wat_with(ty: &str, callee: &str) -> String {
    format!(
        r#"
(component
  (component $callee
    {callee}
    (core instance $i (instantiate $m))
    (func (export "echo") (param "l" (list {ty})) (result (list {ty}))
      (canon lift (core func $i "echo") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
    (func (export "set-mode") (param "m" u32) (canon lift (core func $i "set-mode"))))
  (instance $callee (instantiate $callee))

  (component $caller
    (import "echo" (func $echo (param "l" (list {ty})) (result (list {ty}))))
    (core module $libc
      (memory (export "memory") {CALLER_PAGES})
      (global $heap (mut i32) (i32.const 64))
      (global $mode i32 (i32.const 0))
      {REALLOC}
      (func (export "set-heap") (param i32) (global.set $heap (local.get 0))))
    (core instance $libc (instantiate $libc))
    (core func $echo_lowered
      (canon lower (func $echo) (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
    (core module $m
      (import "libc" "memory" (memory 1))
      (import "host" "echo" (func $echo (param i32 i32 i32)))
      ;; The list the test points at goes to the callee and comes back; the
      ;; reply's (ptr, len) is at 8.
      (func (export "call") (param i32 i32) (result i32)
        (call $echo (local.get 0) (local.get 1) (i32.const 8))
        (i32.const 8))
      ;; The host's bytes, placed by realloc: their address.
      (func (export "stash") (param i32 i32) (result i32) (local.get 0))
      (func (export "read") (param i32 i32) (result i32)
        (i32.store (i32.const 16) (local.get 0))
        (i32.store (i32.const 20) (local.get 1))
        (i32.const 16))
      ;; A byte loop, not memory.copy: the slow engine has no bulk memory.
      (func (export "copy") (param $dst i32) (param $src i32) (param $n i32)
        (block $done
          (loop $next
            (br_if $done (i32.eqz (local.get $n)))
            (i32.store8 (local.get $dst) (i32.load8_u (local.get $src)))
            (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
            (local.set $src (i32.add (local.get $src) (i32.const 1)))
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br $next))))
      (func (export "mem-size") (result i32) (i32.shl (memory.size) (i32.const 16))))
    (core instance $i (instantiate $m
      (with "libc" (instance $libc))
      (with "host" (instance (export "echo" (func $echo_lowered))))))
    (func (export "call") (param "ptr" u32) (param "len" u32) (result (tuple u32 u32))
      (canon lift (core func $i "call") (memory (core memory $libc "memory"))))
    (func (export "stash") (param "data" (list u8)) (result u32)
      (canon lift (core func $i "stash") (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
    (func (export "read") (param "ptr" u32) (param "len" u32) (result (list u8))
      (canon lift (core func $i "read") (memory (core memory $libc "memory"))))
    (func (export "copy") (param "dst" u32) (param "src" u32) (param "len" u32)
      (canon lift (core func $i "copy")))
    (func (export "mem-size") (result u32) (canon lift (core func $i "mem-size")))
    (func (export "set-heap") (param "heap" u32) (canon lift (core func $libc "set-heap"))))
  (instance $caller (instantiate $caller (with "echo" (func $callee "echo"))))

  (export "call" (func $caller "call"))
  (export "stash" (func $caller "stash"))
  (export "read" (func $caller "read"))
  (export "copy" (func $caller "copy"))
  (export "mem-size" (func $caller "mem-size"))
  (export "set-heap" (func $caller "set-heap"))
  (export "set-mode" (func $callee "set-mode")))
"#
    )
}

/// Pylon's engines interrupt by epoch, which adds a check to every loop
/// (the element loop included); the tests do the same.
fn config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Only the memory64 test's callee uses them; they change no adapter
    // between 32-bit memories.
    config
        .wasm_memory64(true)
        .wasm_component_model_memory64(true);
    config
}

fn fast_engine() -> Engine {
    Engine::new(&config()).unwrap()
}

/// An engine whose adapters copy element by element, as before the patch.
fn slow_engine() -> Engine {
    let mut config = config();
    // Reference types, GC and exceptions build on bulk memory.
    config
        .wasm_gc(false)
        .wasm_function_references(false)
        .wasm_exceptions(false)
        .wasm_reference_types(false)
        .wasm_bulk_memory(false);
    Engine::new(&config).unwrap()
}

/// One instance of the test component, in a store of its own (a trap
/// poisons an instance, so each case gets a fresh one).
struct Echo {
    store: Store<()>,
    call: TypedFunc<(u32, u32), ((u32, u32),)>,
    stash: TypedFunc<(Vec<u8>,), (u32,)>,
    read: TypedFunc<(u32, u32), (Vec<u8>,)>,
    copy: TypedFunc<(u32, u32, u32), ()>,
    mem_size: TypedFunc<(), (u32,)>,
    set_mode: TypedFunc<(u32,), ()>,
    set_heap: TypedFunc<(u32,), ()>,
}

/// What a call gave: the bytes that came back, or the trap.
#[derive(Debug, PartialEq)]
enum Outcome {
    Bytes(Vec<u8>),
    Trap(Trap),
}

impl Echo {
    fn new(engine: &Engine, component: &Component) -> Echo {
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(u64::MAX);
        let instance = Linker::new(engine)
            .instantiate(&mut store, component)
            .unwrap();
        macro_rules! func {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).unwrap()
            };
        }
        Echo {
            call: func!("call"),
            stash: func!("stash"),
            read: func!("read"),
            copy: func!("copy"),
            mem_size: func!("mem-size"),
            set_mode: func!("set-mode"),
            set_heap: func!("set-heap"),
            store,
        }
    }

    fn stash(&mut self, bytes: &[u8]) -> u32 {
        let (ptr,) = self.stash.call(&mut self.store, (bytes.to_vec(),)).unwrap();
        ptr
    }

    fn mem_size(&mut self) -> u32 {
        let (size,) = self.mem_size.call(&mut self.store, ()).unwrap();
        size
    }

    fn copy(&mut self, dst: u32, src: u32, len: u32) {
        self.copy.call(&mut self.store, (dst, src, len)).unwrap();
    }

    fn set_mode(&mut self, mode: u32) {
        self.set_mode.call(&mut self.store, (mode,)).unwrap();
    }

    /// Echoes the `len` elements of `size` bytes at `ptr` through the callee.
    fn echo(&mut self, ptr: u32, len: u32, size: usize) -> Outcome {
        match self.call.call(&mut self.store, (ptr, len)) {
            Ok(((out_ptr, out_len),)) => {
                assert_eq!(out_len, len);
                let (bytes,) = self
                    .read
                    .call(&mut self.store, (out_ptr, out_len * size as u32))
                    .unwrap();
                Outcome::Bytes(bytes)
            }
            Err(err) => Outcome::Trap(
                *err.downcast_ref::<Trap>()
                    .unwrap_or_else(|| panic!("not a trap: {err:?}")),
            ),
        }
    }
}

/// Both engines' compiled test component for element type `ty`.
struct Pair {
    fast: (Engine, Component),
    slow: (Engine, Component),
}

impl Pair {
    fn new(ty: &str) -> Pair {
        Pair::from_wat(&component_wat(ty))
    }

    fn from_wat(text: &str) -> Pair {
        let wasm = wat::parse_str(text).unwrap();
        let fast = fast_engine();
        let slow = slow_engine();
        Pair {
            fast: (fast.clone(), Component::new(&fast, &wasm).unwrap()),
            slow: (slow.clone(), Component::new(&slow, &wasm).unwrap()),
        }
    }

    /// Runs `case` on both engines; they must agree. Returns the outcome.
    fn run(&self, case: impl Fn(&mut Echo) -> Outcome) -> Outcome {
        let fast = case(&mut Echo::new(&self.fast.0, &self.fast.1));
        let slow = case(&mut Echo::new(&self.slow.0, &self.slow.1));
        assert_eq!(fast, slow, "bulk copy and element loop disagree");
        fast
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            out.extend_from_slice(&self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

#[test]
fn random_lists_round_trip() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for &(ty, size) in BULK {
        let pair = Pair::new(ty);
        for len in [1usize, 2, 3, 7, 8, 31, 64, 1000, 65_537] {
            // Random bit patterns: for floats that includes NaNs with
            // payloads, which must come back bit for bit.
            let data = rng.bytes(len * size);
            let got = pair.run(|echo| {
                let ptr = echo.stash(&data);
                echo.echo(ptr, len as u32, size)
            });
            assert_eq!(got, Outcome::Bytes(data.clone()), "{ty} x {len}");
        }
    }
}

#[test]
fn empty_lists() {
    for &(ty, size) in BULK.iter().chain(&[("bool", 1), ("char", 4)]) {
        let pair = Pair::new(ty);
        // Any in-bounds, aligned pointer, the end of memory included.
        let got = pair.run(|echo| echo.echo(64, 0, size));
        assert_eq!(got, Outcome::Bytes(vec![]), "{ty}");
        let got = pair.run(|echo| {
            let end = echo.mem_size();
            echo.echo(end, 0, size)
        });
        assert_eq!(got, Outcome::Bytes(vec![]), "{ty} at the end of memory");
        // Past the end, even empty, is out of bounds.
        let got = pair.run(|echo| {
            let end = echo.mem_size();
            echo.echo(end + 64, 0, size)
        });
        assert_eq!(
            got,
            Outcome::Trap(Trap::ListOutOfBounds),
            "{ty} past the end"
        );
    }
}

/// A list that ends on the last byte of the caller's memory fits; one more
/// element does not (the bounds check is exact, as before).
#[test]
fn maximal_lists() {
    let mut rng = Rng(7);
    for &(ty, size) in BULK {
        let pair = Pair::new(ty);
        // 3/8 of the caller's initial memory, at its very end (the bytes
        // are first stashed at its start, then copied there).
        let bytes = ((CALLER_PAGES as usize) << 16) / 8 * 3;
        let len = bytes / size;
        let data = rng.bytes(bytes);
        let got = pair.run(|echo| {
            let src = echo.stash(&data);
            let end = echo.mem_size();
            let ptr = end - bytes as u32;
            assert!(ptr >= src + bytes as u32, "the stash must not overlap");
            echo.copy(ptr, src, bytes as u32);
            echo.echo(ptr, len as u32, size)
        });
        assert!(got == Outcome::Bytes(data.clone()), "{ty}: maximal list");
        let got = pair.run(|echo| {
            let end = echo.mem_size();
            echo.echo(end - bytes as u32, len as u32 + 1, size)
        });
        assert_eq!(got, Outcome::Trap(Trap::ListOutOfBounds), "{ty}: one past");
    }
}

/// The canonical ABI requires a list's pointer to be aligned to its
/// element type; the adapter checks it and traps on either side.
#[test]
fn misaligned_pointers_trap() {
    for &(ty, size) in BULK.iter().chain(&[("char", 4)]) {
        let pair = Pair::new(ty);
        for offset in 1..size as u32 {
            let got = pair.run(|echo| echo.echo(64 + offset, 1, size));
            assert_eq!(
                got,
                Outcome::Trap(Trap::UnalignedPointer),
                "{ty} + {offset}"
            );
            // Empty lists too: the pointer is still checked.
            let got = pair.run(|echo| echo.echo(64 + offset, 0, size));
            assert_eq!(
                got,
                Outcome::Trap(Trap::UnalignedPointer),
                "{ty} + {offset}, empty"
            );
        }
        // The callee's realloc answering a misaligned pointer.
        if size > 1 {
            let got = pair.run(|echo| {
                echo.set_mode(1);
                echo.echo(64, 4, size)
            });
            assert_eq!(got, Outcome::Trap(Trap::UnalignedPointer), "{ty}: realloc");
        }
    }
}

/// A (pointer, length) from the caller's memory size and the element size.
type PtrLen = fn(u32, usize) -> (u32, u32);

#[test]
fn out_of_bounds_lists_trap() {
    for &(ty, size) in BULK.iter().chain(&[("bool", 1), ("char", 4)]) {
        let pair = Pair::new(ty);
        let cases: &[(&str, PtrLen)] = &[
            // ptr + len * size past the end of memory.
            ("past the end", |end, size| (end - 64, 64 / size as u32 + 1)),
            ("pointer past the end", |end, _| (end, 1)),
            ("pointer far out", |_, _| (0xffff_fff0 & !7, 1)),
            // len * size does not fit in 32 bits.
            ("length overflow", |_, size| {
                (
                    64,
                    ((1u64 << 32) / size as u64 + 1).min(u32::MAX as u64) as u32,
                )
            }),
            ("length u32::MAX", |_, _| (64, u32::MAX)),
        ];
        for (what, case) in cases {
            let got = pair.run(|echo| {
                let (ptr, len) = case(echo.mem_size(), size);
                echo.echo(ptr, len, size)
            });
            assert_eq!(got, Outcome::Trap(Trap::ListOutOfBounds), "{ty}: {what}");
        }
        // The callee's realloc answering a pointer past its memory's end.
        let got = pair.run(|echo| {
            echo.set_mode(2);
            echo.echo(64, 4, size)
        });
        assert_eq!(got, Outcome::Trap(Trap::ListOutOfBounds), "{ty}: realloc");
    }
}

/// A callee with a 64-bit memory: the request goes 32 -> 64-bit and the
/// reply 64 -> 32-bit, where `memory.copy` takes an `i32` length.
#[test]
fn memory64_callee() {
    let mut rng = Rng(64);
    for &(ty, size) in BULK {
        let pair = Pair::from_wat(&component_wat_with(ty, CALLEE64));
        for len in [0usize, 1, 5, 1000] {
            let data = rng.bytes(len * size);
            let got = pair.run(|echo| {
                let ptr = echo.stash(&data);
                echo.echo(ptr, len as u32, size)
            });
            assert_eq!(got, Outcome::Bytes(data.clone()), "{ty} x {len}");
        }
        let got = pair.run(|echo| {
            let end = echo.mem_size();
            echo.echo(end - 64, 64 / size as u32 + 1, size)
        });
        assert_eq!(
            got,
            Outcome::Trap(Trap::ListOutOfBounds),
            "{ty}: past the end"
        );
        if size > 1 {
            let got = pair.run(|echo| echo.echo(65, 1, size));
            assert_eq!(
                got,
                Outcome::Trap(Trap::UnalignedPointer),
                "{ty}: misaligned"
            );
        }
    }
}

/// `bool` and `char` keep their per-element loop: bools are normalized to
/// 0/1 and invalid chars trap.
#[test]
fn bool_and_char_still_validated() {
    let pair = Pair::new("bool");
    let got = pair.run(|echo| {
        let ptr = echo.stash(&[0, 1, 2, 0xff, 0]);
        echo.echo(ptr, 5, 1)
    });
    assert_eq!(got, Outcome::Bytes(vec![0, 1, 1, 1, 0]));

    let pair = Pair::new("char");
    let valid: Vec<u8> = ['a', 'é', '\u{10ffff}', '\u{d7ff}', '\u{e000}']
        .iter()
        .flat_map(|c| u32::from(*c).to_le_bytes())
        .collect();
    let got = pair.run(|echo| {
        let ptr = echo.stash(&valid);
        echo.echo(ptr, 5, 4)
    });
    assert_eq!(got, Outcome::Bytes(valid.clone()));
    for bad in [0xd800u32, 0xdfff, 0x11_0000, u32::MAX] {
        let mut data = valid.clone();
        data[8..12].copy_from_slice(&bad.to_le_bytes());
        let got = pair.run(|echo| {
            let ptr = echo.stash(&data);
            echo.echo(ptr, 5, 4)
        });
        assert_eq!(got, Outcome::Trap(Trap::InvalidChar), "{bad:#x}");
    }
}

/// The default engine takes the bulk path: the wasm its adapter runs for a
/// list does not grow with the list's length, while the element loop's does.
/// Measured in fuel (wasm operators executed), so the test is deterministic;
/// the speed itself is a benchmark's business (docs/benchmarks.md).
#[test]
fn bulk_copy_is_in_use() {
    let wasm = wat::parse_str(component_wat("u8")).unwrap();
    let fuel_for = |bulk_memory: bool, len: usize| -> u64 {
        let mut config = if bulk_memory {
            config()
        } else {
            let mut config = config();
            config
                .wasm_gc(false)
                .wasm_function_references(false)
                .wasm_exceptions(false)
                .wasm_reference_types(false)
                .wasm_bulk_memory(false);
            config
        };
        config.consume_fuel(true);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, &wasm).unwrap();
        let mut echo = Echo::new(&engine, &component);
        echo.store.set_fuel(u64::MAX).unwrap();
        let ptr = echo.stash(&Rng(3).bytes(len));
        echo.set_heap
            .call(&mut echo.store, (ptr + len as u32,))
            .unwrap();
        let before = echo.store.get_fuel().unwrap();
        let ((_, out_len),) = echo.call.call(&mut echo.store, (ptr, len as u32)).unwrap();
        assert_eq!(out_len as usize, len);
        before - echo.store.get_fuel().unwrap()
    };
    let (small, big) = (1 << 10, 1 << 20);
    let (bulk_small, bulk_big) = (fuel_for(true, small), fuel_for(true, big));
    let (loop_small, loop_big) = (fuel_for(false, small), fuel_for(false, big));
    eprintln!("fuel for a list<u8> there and back, 1 KiB / 1 MiB: bulk {bulk_small} / {bulk_big}, element loop {loop_small} / {loop_big}");
    // The test's callee touches every byte itself (~2 operators a byte on
    // either engine); on top of that the element loop runs ~30 operators per
    // byte there and back, the bulk path one `memory.copy` per list.
    let (bulk_growth, loop_growth) = (bulk_big - bulk_small, loop_big - loop_small);
    assert!(
        bulk_growth * 8 < loop_growth,
        "the bulk copy is not in use: fuel grows by {bulk_growth} (bulk) vs {loop_growth} (loop)"
    );
}
