//! A pool slot's linear memory reset between instances, for
//! engine/patches/wasmtime-*-pagemap-scan-resume.patch.
//!
//! With `linear_memory_keep_resident` and `PAGEMAP_SCAN` (Linux 6.7+),
//! wasmtime resets the pages an instance dirtied by copying the image back
//! over them, so they stay mapped and the next instance in the slot writes
//! them without a page fault. Unpatched, one scan reports at most 32 dirty
//! regions and everything after the 32nd is decommitted instead: a heap
//! dirtied in many places (CPython's, after any run) faults back in on
//! every reuse. The patch resumes the scan where the kernel stopped.
//!
//! Each case dirties `REGIONS` disjoint pages of one instance, drops it, and
//! in the next instance of the same slot (a pool of one memory):
//! * reads every page back: the image's bytes, or zeros past the image
//!   (a reset that missed a region would leak the first instance's writes);
//! * counts the page faults of writing them again (0 when all were kept).

use wasmtime::{
    Config, Enabled, Engine, Instance, InstanceAllocationStrategy, Module, PoolingAllocationConfig,
    Store, TypedFunc,
};

const PAGE: u32 = 4096;
/// Disjoint dirty regions per case: far more than the 32 of one scan.
const REGIONS: u32 = 200;
/// The image: 2 MiB of non-zero data at the start of a 4 MiB memory.
const IMAGE_PAGES: u32 = 512;
const IMAGE_BYTE: u8 = 0x5a;

fn module_text() -> String {
    let image = format!("\\{IMAGE_BYTE:02x}").repeat((IMAGE_PAGES * PAGE) as usize);
    format!(
        r#"(module
          (memory (export "memory") 64)
          (data (i32.const 0) "{image}")
          ;; Writes `value` at the first byte of `count` pages, `stride` pages apart.
          (func (export "touch") (param $first i32) (param $stride i32) (param $count i32) (param $value i32)
            (local $i i32)
            (loop $next
              (i32.store8
                (i32.mul (i32.add (local.get $first) (i32.mul (local.get $i) (local.get $stride))) (i32.const {PAGE}))
                (local.get $value))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $next (i32.lt_u (local.get $i) (local.get $count)))))
          ;; The byte at the start of page `page`.
          (func (export "peek") (param $page i32) (result i32)
            (i32.load8_u (i32.mul (local.get $page) (i32.const {PAGE})))))"#
    )
}

fn engine() -> Engine {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_memories(1)
        .total_core_instances(1)
        .total_tables(1)
        .linear_memory_keep_resident(16 << 20)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).unwrap()
}

struct Slot {
    store: Store<()>,
    touch: TypedFunc<(u32, u32, u32, u32), ()>,
    peek: TypedFunc<u32, u32>,
}

fn instantiate(engine: &Engine, module: &Module) -> Slot {
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    let touch = instance.get_typed_func(&mut store, "touch").unwrap();
    let peek = instance.get_typed_func(&mut store, "peek").unwrap();
    Slot { store, touch, peek }
}

/// Minor page faults of this thread so far (`/proc/thread-self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Dirties `regions` pages from `first`, 2 pages apart, resets the slot, and
/// returns the faults of dirtying them again in the next instance (after
/// checking they read as the image or zeros).
fn faults_after_reset(first: u32, regions: u32) -> u64 {
    let engine = engine();
    let module = Module::new(&engine, wat::parse_str(module_text()).unwrap()).unwrap();
    let mut a = instantiate(&engine, &module);
    a.touch
        .call(&mut a.store, (first, 2, regions, 0xee))
        .unwrap();
    drop(a);

    let mut b = instantiate(&engine, &module);
    for i in 0..regions {
        let page = first + 2 * i;
        let expected = if page < IMAGE_PAGES { IMAGE_BYTE } else { 0 };
        let seen = b.peek.call(&mut b.store, page).unwrap();
        assert_eq!(
            seen,
            u32::from(expected),
            "page {page} kept the first instance's write"
        );
    }
    let before = minor_faults();
    b.touch
        .call(&mut b.store, (first, 2, regions, 0x11))
        .unwrap();
    minor_faults() - before
}

/// Whether this kernel and engine keep dirty pages resident at all: with 8
/// regions (well under one scan's 32) even unpatched wasmtime faults none.
fn keeps_pages_resident() -> bool {
    faults_after_reset(0, 8) == 0
}

#[test]
fn many_dirty_image_regions_are_reset_and_kept_resident() {
    if !keeps_pages_resident() {
        eprintln!("skipped: no PAGEMAP_SCAN here (Linux 6.7+), so no page is kept resident");
        return;
    }
    assert_eq!(faults_after_reset(0, REGIONS), 0);
}

#[test]
fn many_dirty_zero_regions_are_reset_and_kept_resident() {
    if !keeps_pages_resident() {
        eprintln!("skipped: no PAGEMAP_SCAN here (Linux 6.7+), so no page is kept resident");
        return;
    }
    // Pages past the image (zero-filled at first): reset to zeros.
    assert_eq!(faults_after_reset(IMAGE_PAGES + 1, REGIONS / 2), 0);
}
