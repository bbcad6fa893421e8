//! Running the CPython guest (`pylon.wasm`) once.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use wasmtime::component::Linker;
use wasmtime::error::Context;
use wasmtime::{format_err, Result};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::bindings::host::DynlinkHost;
use crate::engine::Shared;
use crate::linker::GuestState;
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
    /// The guest component and its digest (compile-cache key).
    pub path: PathBuf,
    /// `sha256:<hex>`, or empty to hash the file.
    pub digest: String,
    /// `argv` as Python will see it in `sys.argv` (after the `-c` handling).
    pub argv: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The guest's working directory.
    pub cwd: String,
    /// Folders the guest may see.
    pub preopens: Vec<Preopen>,
    /// `resolver(name) -> ProviderSpec`, or `None` for a plan with no caps.
    pub resolver: Option<Py<PyAny>>,
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

/// Instantiates the guest and calls its entry; returns the exit status.
///
/// Must be called without the GIL held: the resolver re-acquires it.
///
/// # Errors
/// When the guest cannot be compiled or instantiated, or traps. A Python
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
        .with_context(|| format!("cannot load the guest {}", run.path.display()))?;

    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio()
        .args(&run.argv)
        .envs(&run.env)
        .initial_cwd(&run.cwd);
    add_preopens(&mut wasi, &run.preopens)?;
    let state = GuestState::new(wasi.build(), shared.clone(), linkers.clone(), run.resolver);
    let mut store = Store::new(&shared.engine, state);
    store.set_hostcall_fuel(usize::MAX);
    // The guest has no deadline of its own; the callback keeps the epoch
    // ticker (which exists for providers) from interrupting it.
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1_000)));
    store.set_epoch_deadline(1_000);

    let instance = linker
        .instantiate(&mut store, &component)
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
    match func.call(&mut store, (run.argv, run.env, run.cwd)) {
        Ok((code,)) => Ok(code),
        Err(err) => match err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(err.context("the guest trapped")),
        },
    }
}
