//! The one wasmtime engine a Python `Engine` object owns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Result;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CompileCache;

/// How often the epoch advances: deadlines and stops are checked this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide state shared by the guest and every provider.
pub struct Shared {
    /// The wasmtime engine: compiled code is only valid with this config.
    pub engine: Engine,
    /// Compiled components and modules, in memory and on disk.
    pub cache: CompileCache,
    /// Whether wasm code meters fuel (a deterministic CPU budget). Compiled
    /// code differs, so such an engine has artifacts of its own.
    pub fuel: bool,
    stop_ticker: Arc<AtomicBool>,
}

impl Shared {
    /// Builds the engine and starts its epoch ticker.
    ///
    /// The config is fixed, because the on-disk compile cache is keyed by it:
    /// epoch interruption (provider deadlines without fuel's per-instruction
    /// cost), wasm exceptions (setjmp/longjmp in the MicroPython profile) and
    /// a 2 MiB wasm stack.
    ///
    /// # Errors
    /// When wasmtime rejects the config or the cache folder cannot be made.
    pub fn new(cache_dir: Option<std::path::PathBuf>, fuel: bool) -> Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_exceptions(true);
        // Every guest and cap is wasm32: 64-bit memories and tables are a
        // surface nothing here needs.
        config.wasm_memory64(false);
        // 2 MiB of native stack for wasm (default 512 KiB): MicroPython's
        // interpreter recurses deeply in C, and CPython's guest likewise.
        config.max_wasm_stack(2 << 20);
        config.consume_fuel(fuel);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool()));
        let engine = Engine::new(&config)?;
        let cache = CompileCache::new(&engine, cache_dir)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("pylon-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        Ok(Arc::new(Shared {
            engine,
            cache,
            fuel,
            stop_ticker,
        }))
    }
}

/// The instance pool every Store of this engine draws from.
///
/// A fresh guest run is instantiation plus teardown of a 40 MB heap image:
/// with the on-demand allocator that is an `mmap`, a page fault per page the
/// guest touches and an `munmap` per run. A pool reuses reserved slots; pages
/// of a warm slot (up to `linear_memory_keep_resident`) stay mapped and only
/// the ones the last run dirtied are reset (`pagemap_scan` where the kernel
/// has it), about a fifth off a fresh run (docs/benchmarks.md). The counts
/// are generous ceilings (they reserve address space, not memory): a run may
/// hold 1024 cap instances, and many runs go on at once in one process.
fn pool() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1024)
        .total_core_instances(8192)
        .total_memories(2048)
        .total_tables(8192)
        // componentize-py's libpython has a funcref table of tens of thousands.
        .table_elements(200_000)
        .max_component_instance_size(16 << 20)
        .max_core_instance_size(16 << 20)
        .max_core_instances_per_component(256)
        .max_memories_per_component(32)
        .max_tables_per_component(256)
        // Multi-memory and multi-table modules are valid caps (the limiter
        // sums them); the pool's default of one each would refuse them.
        .max_memories_per_module(16)
        .max_tables_per_module(16)
        .linear_memory_keep_resident(16 << 20)
        .table_keep_resident(1 << 20)
        // What idle warm slots may keep resident: at most 16 x 16 MiB.
        .max_unused_warm_slots(16)
        .pagemap_scan(Enabled::Auto)
        // A run reads its 30 MiB heap image sparsely; Linux's fault-around
        // mapped 64 KiB per first read, ~6 MiB of each instance's resident
        // set. Off, each read maps its own page (engine/patches/, the
        // uffd-no-fault-around patch; docs/benchmarks.md).
        .memory_image_fault_around(false);
    pool
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}
