//! Running a flat wasi-preview1 core module (the MicroPython static profile).
//!
//! No component model here: one module, WASI p1 imports, wasm exceptions
//! enabled (MicroPython's setjmp/longjmp). Exit status comes from
//! `proc_exit` or 0 when `_start` returns.

use std::sync::Arc;

use wasmtime::error::Context;
use wasmtime::Result;
use wasmtime::{Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::engine::Shared;
use crate::guest::{add_preopens, Preopen};

/// Runs `_start` of the module at `path`; returns the exit status.
///
/// # Errors
/// When the module cannot be compiled or linked, or traps.
pub fn run_core_p1(
    shared: &Arc<Shared>,
    path: &std::path::Path,
    digest: &str,
    argv: &[String],
    env: &[(String, String)],
    preopens: &[Preopen],
) -> Result<i32> {
    let (module, _) = shared.cache.module(&shared.engine, path, digest)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&shared.engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s)?;
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().args(argv).envs(env);
    add_preopens(&mut wasi, preopens)?;
    let mut store = Store::new(&shared.engine, wasi.build_p1());
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Continue(1_000)));
    store.set_epoch_deadline(1_000);
    let instance = linker
        .instantiate(&mut store, &module)
        .context("cannot instantiate the module")?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .context("the module has no `_start` (is it a wasi-p1 command?)")?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(err.context("the module trapped")),
        },
    }
}
