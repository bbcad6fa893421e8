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
use wasmtime_wasi::WasiCtx;

use crate::engine::Shared;
use crate::guest::{add_preopens, explain_start_failure, finish, stop_on, GuestLimits, Preopen};
use crate::limits::{Limiter, RunControl, RunSignal};

/// Store data of a core module run: WASI p1 and the memory limiter.
struct P1State {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// Runs `_start` of the module at `path`; returns the exit status.
///
/// The module gets the same limits and stop control as a component guest.
///
/// # Errors
/// When the module cannot be compiled or linked, traps, or is stopped.
#[allow(clippy::too_many_arguments)]
pub fn run_core_p1(
    shared: &Arc<Shared>,
    path: &std::path::Path,
    digest: &str,
    argv: &[String],
    env: &[(String, String)],
    preopens: &[Preopen],
    limits: GuestLimits,
    timeout: Option<std::time::Duration>,
    signal: Option<Arc<RunSignal>>,
) -> Result<i32> {
    let (module, _) = shared.cache.module(&shared.engine, path, digest)?;
    let control = RunControl::start(timeout, signal);
    let mut linker: Linker<P1State> = Linker::new(&shared.engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi)?;
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().args(argv).envs(env);
    add_preopens(&mut wasi, preopens)?;
    let state = P1State {
        wasi: wasi.build_p1(),
        limiter: Limiter::new(limits.memory_bytes, None),
    };
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    stop_on(&mut store, control.clone());
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(|e| explain_start_failure(e, &store.data().limiter, limits.memory_bytes))
        .context("cannot instantiate the module")?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .context("the module has no `_start` (is it a wasi-p1 command?)")?;
    finish(start.call(&mut store, ()).map(|()| 0), &control)
}
