//! Read faults in a pool slot's memory image, for
//! engine/patches/wasmtime-*-uffd-no-fault-around.patch.
//!
//! When wasm first reads a page of its copy-on-write image, Linux maps the
//! up to 16 neighbouring pages already in the page cache as well (its
//! fault-around, 64 KiB by default). With
//! `PoolingAllocationConfig::memory_image_fault_around(false)` each read maps
//! only its own page. The case reads one byte in each of `BLOCKS` 64 KiB
//! blocks of a 2 MiB image and counts the image's pages now mapped in the
//! instance, from `/proc/self/pagemap`: exactly `BLOCKS` with the option,
//! more with fault-around (unless the kernel's `fault_around_bytes` was set
//! to one page).

use std::io::{Read, Seek, SeekFrom};
use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, Module, PoolingAllocationConfig, Store,
};

const PAGE: usize = 4096;
const IMAGE_PAGES: usize = 512;
/// One read per 16 pages: every 64 KiB block of the image.
const STRIDE_PAGES: usize = 16;
const BLOCKS: usize = IMAGE_PAGES / STRIDE_PAGES;

fn module_text() -> String {
    let image = "\\5a".repeat(IMAGE_PAGES * PAGE);
    format!(
        r#"(module
          (memory (export "memory") 64)
          (data (i32.const 0) "{image}")
          ;; The sum of the first byte of `count` pages, `stride` pages apart.
          (func (export "read") (param $stride i32) (param $count i32) (result i32)
            (local $i i32) (local $sum i32)
            (loop $next
              (local.set $sum (i32.add (local.get $sum)
                (i32.load8_u (i32.mul (i32.mul (local.get $i) (local.get $stride)) (i32.const {PAGE})))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $next (i32.lt_u (local.get $i) (local.get $count))))
            (local.get $sum)))"#
    )
}

/// Whether this process may create a userfaultfd (what the option needs).
fn userfaultfd_available() -> bool {
    const UFFD_USER_MODE_ONLY: libc::c_long = 1;
    // SAFETY: a plain syscall; the descriptor is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            libc::c_long::from(libc::O_CLOEXEC) | UFFD_USER_MODE_ONLY,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is the descriptor just created.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

/// Pages of `[start, start + pages * PAGE)` mapped in this process.
fn present_pages(start: usize, pages: usize) -> usize {
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    pagemap
        .seek(SeekFrom::Start((start / PAGE * 8) as u64))
        .unwrap();
    let mut entries = vec![0u8; pages * 8];
    pagemap.read_exact(&mut entries).unwrap();
    entries
        .chunks_exact(8)
        .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) & (1 << 63) != 0)
        .count()
}

/// The image's pages mapped after one read per 64 KiB block.
fn mapped_after_sparse_reads(fault_around: bool) -> usize {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_memories(1)
        .total_core_instances(1)
        .total_tables(1)
        .memory_image_fault_around(fault_around);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, wat::parse_str(module_text()).unwrap()).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let read = instance
        .get_typed_func::<(u32, u32), u32>(&mut store, "read")
        .unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let base = memory.data_ptr(&store) as usize;
    assert_eq!(present_pages(base, IMAGE_PAGES), 0, "nothing read yet");
    let sum = read
        .call(&mut store, (STRIDE_PAGES as u32, BLOCKS as u32))
        .unwrap();
    assert_eq!(sum, 0x5a * BLOCKS as u32, "the image's bytes");
    present_pages(base, IMAGE_PAGES)
}

#[test]
fn without_fault_around_a_read_maps_only_its_page() {
    if !userfaultfd_available() {
        eprintln!("skipped: userfaultfd is unavailable here (kernel or seccomp)");
        return;
    }
    let without = mapped_after_sparse_reads(false);
    let with = mapped_after_sparse_reads(true);
    eprintln!(
        "image pages mapped after {BLOCKS} reads: {without} without fault-around, {with} with it"
    );
    assert_eq!(without, BLOCKS);
    assert!(with >= without);
}
