//! Running the CPython guest (`pylon.wasm`) once.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::error::Context;
use wasmtime::{format_err, Result};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::bindings::host::DynlinkHost;
use crate::engine::Shared;
use crate::limits::{Limiter, RunControl, RunSignal, Stopped};
use crate::linker::{GuestState, RunContext};
use crate::provider::ProviderLinkers;

/// The guest's entry export (see `wit/guest/guest.wit`).
const ENTRY_INTERFACE: &str = "pylon:guest/entry@0.1.0";

/// A host folder the guest sees at `guest_path`.
pub struct Preopen {
    /// Folder on the host.
    pub host_path: PathBuf,
    /// Where the guest sees it.
    pub guest_path: String,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// Opens each of `preopens` in `wasi` (shared by components and p1 modules).
///
/// # Errors
/// When a host folder cannot be opened.
pub fn add_preopens(wasi: &mut WasiCtxBuilder, preopens: &[Preopen]) -> Result<()> {
    for p in preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&p.host_path, &p.guest_path, perms)
            .with_context(|| {
                format!(
                    "cannot preopen {} as {}",
                    p.host_path.display(),
                    p.guest_path
                )
            })?;
    }
    Ok(())
}

/// What one guest run gets.
pub struct GuestRun {
    /// The guest component's blob (read only when it must be compiled).
    pub path: PathBuf,
    /// `sha256:<hex>` the blob must match, or empty to hash the file.
    pub digest: String,
    /// `argv` as Python will see it in `sys.argv` (after the `-c` handling).
    pub argv: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The guest's working directory.
    pub cwd: String,
    /// Folders the guest may see.
    pub preopens: Vec<Preopen>,
    /// The guest's limits.
    pub limits: GuestLimits,
    /// The run's wall-clock limit (counted from when the guest starts, not
    /// while its code is loaded).
    pub timeout: Option<std::time::Duration>,
    /// The run's stop flag, held by whoever may stop it.
    pub signal: Option<Arc<RunSignal>>,
    /// Resolver, reporter, provider budget and stop control of the run.
    pub run: RunContext,
}

/// How much a guest may use (its time limit lives in its [`RunControl`]).
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Total linear memory and tables of the guest, bytes.
    pub memory_bytes: u64,
}

/// The guest linker: WASI plus `compose:dynlink/linker`.
///
/// # Errors
/// When wasmtime rejects a definition (a bug).
pub fn guest_linker(shared: &Shared) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(&shared.engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    DynlinkHost::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Makes `store` stop at the next epoch tick once `control` says so.
pub fn stop_on<T: 'static>(store: &mut Store<T>, control: Arc<RunControl>) {
    store.epoch_deadline_callback(move |_| {
        control.check()?;
        Ok(UpdateDeadline::Continue(1))
    });
    store.set_epoch_deadline(1);
}

/// An instantiation that failed because the memory limit refused the
/// module's initial memory gets a message that says so.
pub fn explain_start_failure(
    err: wasmtime::Error,
    limiter: &Limiter,
    limit: u64,
) -> wasmtime::Error {
    if limiter.hit.is_some() {
        return err.context(format!(
            "the memory limit of {} MiB is too small for it to start",
            limit >> 20
        ));
    }
    err
}

/// Instantiates the guest and calls its entry; returns the exit status.
///
/// Must be called without the GIL held: the resolver re-acquires it.
///
/// # Errors
/// When the guest cannot be compiled or instantiated, traps, or is stopped
/// (a [`crate::limits::Stopped`] error: timeout or interrupt). A Python
/// exception in the script is not an error here: the guest prints the
/// traceback and returns a non-zero status.
pub fn run_guest(
    shared: &Arc<Shared>,
    linker: &Linker<GuestState>,
    linkers: &Arc<ProviderLinkers>,
    run: GuestRun,
) -> Result<i32> {
    let (component, _) = shared
        .cache
        .component(&shared.engine, &run.path, &run.digest)
        .context("cannot load the guest")?;

    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio()
        .args(&run.argv)
        .envs(&run.env)
        .initial_cwd(&run.cwd);
    add_preopens(&mut wasi, &run.preopens)?;
    let control = RunControl::start(run.timeout, run.signal);
    let mut context = run.run;
    context.control = Some(control.clone());
    let limiter = Limiter::new(run.limits.memory_bytes, None);
    let state = GuestState::new(
        wasi.build(),
        limiter,
        shared.clone(),
        linkers.clone(),
        context,
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_hostcall_fuel(usize::MAX);
    stop_on(&mut store, control.clone());

    let instance = linker
        .instantiate(&mut store, &component)
        .map_err(|e| explain_start_failure(e, &store.data().limiter, run.limits.memory_bytes))
        .context("cannot instantiate the guest")?;
    let entry = instance
        .get_export_index(&mut store, None, ENTRY_INTERFACE)
        .ok_or_else(|| {
            format_err!("the guest does not export {ENTRY_INTERFACE}: is it a Pylon guest?")
        })?;
    let run_index = instance
        .get_export_index(&mut store, Some(&entry), "run")
        .ok_or_else(|| format_err!("{ENTRY_INTERFACE} has no `run`"))?;
    let func = instance
        .get_typed_func::<(Vec<String>, Vec<(String, String)>, String), (i32,)>(
            &mut store, &run_index,
        )
        .context("the guest's entry has the wrong signature")?;
    finish(
        func.call(&mut store, (run.argv, run.env, run.cwd))
            .map(|(code,)| code),
        &control,
    )
}

/// The exit status of a finished run: its own, an `exit(n)`, or the error
/// that ended it. A stop is reported as a [`Stopped`] with the run's true
/// duration, however it reached us (the epoch callback, a provider, or a
/// host call that trapped).
pub fn finish(result: Result<i32>, control: &RunControl) -> Result<i32> {
    match result {
        Ok(code) => Ok(code),
        Err(err) => {
            if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Ok(exit.0);
            }
            if let Some(stopped) = err.downcast_ref::<Stopped>() {
                return Err(wasmtime::Error::new(control.stopped(stopped.why)));
            }
            Err(err.context("the guest trapped"))
        }
    }
}
