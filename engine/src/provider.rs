//! One cap instance in a Store of its own, under its own limits.
//!
//! Isolation is the point: a provider that traps, loops or eats memory kills
//! only itself. Its Store has its own memory limit (the total of all its
//! memories and tables, also charged to its run's budget), a deadline per
//! call, no WASI unless the plan grants it (and then none of the calls that
//! block in the host), and once it has failed it is marked dead and refuses
//! further calls (wasmtime forbids re-entering a trapped instance; a fresh
//! resolve gives a fresh one). Requests *and* replies are held to
//! `max_payload_bytes`.
//!
//! A cap that keeps handles hears from the host twice (src/handles.rs):
//! `$pylon/init` right after it starts, `$pylon/release-all` when it is
//! dropped. No guest may call those names.
//!
//! What is *not* limited here: the host memory used to copy one payload
//! (bounded by the payload limit and by the cap's own memory limit).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{format_err, Result};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::cap::{Cap, CapPre};
use crate::bindings::DynError;
use crate::cache::read_verified;
use crate::engine::Shared;
use crate::handles::{
    decode_count, init_request, RunLog, INIT, KEY_BYTES, RELEASE_ALL, RELEASE_ALL_REQUEST,
    RELEASE_TIMEOUT, RESERVED_PREFIX,
};
use crate::limits::{InstanceSlot, LimitHit, Limiter, RunControl, Stopped};

/// Longest method name accepted; methods are short ASCII identifiers.
const MAX_METHOD_LEN: usize = 128;
/// The custom section a cap's typed Python shim travels in.
const SHIM_SECTION: &str = "pylon:shim";
/// Largest shim accepted (it is Python source for the guest to run).
const MAX_SHIM_BYTES: usize = 1 << 20;
/// The largest `max_handles` accepted (the plan schema's bound).
pub const MAX_MAX_HANDLES: u64 = 1_000_000;

/// Everything the engine needs to instantiate one provider: where its
/// verified blob is and what it may use. Built by Python after the trust
/// gate; the engine trusts it.
#[pyclass(module = "pylon._engine", frozen, get_all, from_py_object)]
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// The cap's name in the plan.
    pub name: String,
    /// Path of the verified component file.
    pub path: PathBuf,
    /// `sha256:<hex>` of the file: the compile-cache key.
    pub digest: String,
    /// Linear-memory ceiling, bytes.
    pub memory_bytes: u64,
    /// Wall-clock budget per call, milliseconds.
    pub timeout_ms: u64,
    /// Largest payload accepted per call, bytes.
    pub max_payload_bytes: u64,
    /// Whether the provider gets (empty, deny-by-default) WASI imports.
    pub wasi: bool,
    /// Live handles the cap's handle table may hold (told at `$pylon/init`).
    pub max_handles: u64,
}

#[pymethods]
impl ProviderSpec {
    #[new]
    // max_handles: the plan's default (DEFAULT_LIMITS in python/pylon/plan.py),
    // spelled as a literal so Python's signature (and stubtest) shows it.
    #[pyo3(signature = (*, name, path, digest, memory_bytes, timeout_ms, max_payload_bytes,
                        wasi=false, max_handles=4096))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        name: String,
        path: PathBuf,
        digest: String,
        memory_bytes: u64,
        timeout_ms: u64,
        max_payload_bytes: u64,
        wasi: bool,
        max_handles: u64,
    ) -> PyResult<Self> {
        // The plan bounds it already; a spec built by hand is held to the same.
        if !(1..=MAX_MAX_HANDLES).contains(&max_handles) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "max_handles must be 1 to {MAX_MAX_HANDLES}, got {max_handles}"
            )));
        }
        Ok(ProviderSpec {
            name,
            path,
            digest,
            memory_bytes,
            timeout_ms,
            max_payload_bytes,
            wasi,
            max_handles,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "ProviderSpec(name={:?}, digest={:?})",
            self.name, self.digest
        )
    }
}

/// Store data of a provider.
pub struct ProviderState {
    limiter: Limiter,
    wasi: WasiCtx,
    table: ResourceTable,
    /// When the call in progress must end.
    call_deadline: Option<Instant>,
    /// The guest run this provider belongs to (its stop reaches us too).
    run: Option<Arc<RunControl>>,
}

impl WasiView for ProviderState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A call ran past the provider's `timeout_ms`.
#[derive(Debug)]
struct CallTimedOut;

impl std::fmt::Display for CallTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("call timed out")
    }
}

impl std::error::Error for CallTimedOut {}

/// The two provider linkers: with and without WASI.
pub struct ProviderLinkers {
    bare: Linker<ProviderState>,
    wasi: Linker<ProviderState>,
}

impl ProviderLinkers {
    /// Builds both linkers for `shared`'s engine.
    ///
    /// A WASI-granted cap gets WASI with no preopens, sockets, environment
    /// or stdin, and without the two calls that block in the host
    /// (`wasi:io/poll.poll`, `pollable.block`): a blocking host call never
    /// reaches an epoch check, so it would outlive the call's deadline.
    /// They trap instead, naming why.
    ///
    /// # Errors
    /// When wasmtime rejects a definition (a bug).
    pub fn new(shared: &Shared) -> Result<Self> {
        let mut bare = Linker::new(&shared.engine);
        // Caps import the type-only `types` interface; it has nothing to define.
        bare.instance("compose:dynlink/types@0.1.0")?;
        let mut wasi = bare.clone();
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi)?;
        wasi.allow_shadowing(true);
        let mut poll = wasi.instance(WASI_POLL)?;
        poll.func_wrap(
            "poll",
            |_, (_,): (Vec<Resource<DynPollable>>,)| -> Result<(Vec<u32>,)> { Err(blocking()) },
        )?;
        poll.func_wrap(
            "[method]pollable.block",
            |_, (_,): (Resource<DynPollable>,)| -> Result<()> { Err(blocking()) },
        )?;
        wasi.allow_shadowing(false);
        Ok(ProviderLinkers { bare, wasi })
    }
}

/// The `wasi:io/poll` instance wasmtime-wasi defines (semver-matched to
/// whatever 0.2.x a cap imports).
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

fn blocking() -> wasmtime::Error {
    format_err!(
        "caps may not block in the host (wasi:io/poll): the call's time limit could not hold"
    )
}

/// A resolved, instantiated provider: the `instance` resource's host side.
pub struct LiveProvider {
    spec: ProviderSpec,
    shim: Option<String>,
    store: Store<ProviderState>,
    cap: Cap,
    dead: Option<String>,
    /// The cap answered `$pylon/init`: it keeps a handle table, which is
    /// released (`$pylon/release-all`) before it is dropped. Cleared once
    /// that was done.
    handles: bool,
    /// The run it belongs to (`None`: a host-side [`crate::py_api::Provider`]).
    log: Option<Arc<RunLog>>,
    // Last: the run's instance slot is returned after the Store is gone.
    _slot: InstanceSlot,
}

impl LiveProvider {
    /// Instantiates `spec` in a fresh Store, holding `slot` of its run's
    /// budget for as long as it lives.
    ///
    /// The blob is read once and verified against `spec.digest`; the shim
    /// comes from those same bytes, and they (or an authenticated artifact
    /// of them) are what runs. Every error's top-level message is safe to
    /// show a guest (no host paths); the full chain is for the host.
    ///
    /// # Errors
    /// When the blob does not match its digest, the component cannot be
    /// compiled, does not export `compose:dynlink/provider`, needs imports it
    /// was not granted, or its start-up or `$pylon/init` fails.
    pub fn instantiate(
        shared: &Arc<Shared>,
        linkers: &ProviderLinkers,
        spec: ProviderSpec,
        slot: InstanceSlot,
        run: Option<Arc<RunControl>>,
        log: Option<Arc<RunLog>>,
    ) -> Result<Self> {
        let (bytes, _) = read_verified(&spec.path, &spec.digest)
            .context("its blob could not be read or does not match its digest")?;
        let shim = shim_section(&bytes).context("its pylon:shim section is not valid")?;
        let (component, _) = shared
            .cache
            .component_from_verified(&shared.engine, &bytes, &spec.digest)
            .context("it could not be compiled")?;
        drop(bytes);
        let state = ProviderState {
            limiter: Limiter::new(spec.memory_bytes, Some(slot.budget().clone())),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            call_deadline: None,
            run,
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Payload bytes cross the host as one copy; the default hostcall fuel
        // would refuse large lists, and our own per-call payload limit
        // already bounds what the host allocates.
        store.set_hostcall_fuel(usize::MAX);
        // Checked every tick: the call's own deadline and its run's stop.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if let Some(run) = &state.run {
                run.check()?;
            }
            if state.call_deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(wasmtime::Error::new(CallTimedOut));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        store.data_mut().call_deadline =
            Some(Instant::now() + Duration::from_millis(spec.timeout_ms));
        let linker = if spec.wasi {
            &linkers.wasi
        } else {
            &linkers.bare
        };
        let pre = linker
            .instantiate_pre(&component)
            .context("it needs imports the plan does not grant")?;
        let cap = CapPre::new(pre)
            .context("it does not export compose:dynlink/provider@0.1.0")?
            .instantiate(&mut store)
            .context("it failed to start")?;
        store.data_mut().call_deadline = None;
        let mut live = LiveProvider {
            spec,
            shim,
            store,
            cap,
            dead: None,
            handles: false,
            log,
            _slot: slot,
        };
        live.init().context("it failed to start")?;
        Ok(live)
    }

    /// `$pylon/init`: gives the cap its handle key and `max_handles`, before
    /// any guest call. `bad-method` means it keeps no handles.
    fn init(&mut self) -> Result<()> {
        // Fresh per instance and never kept by the host: a token made under
        // it means nothing to another instance, run or process.
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key)
            .map_err(|e| format_err!("no randomness for its handle key: {e}"))?;
        let request = init_request(&key, self.spec.max_handles);
        let timeout = Duration::from_millis(self.spec.timeout_ms);
        match self.call(INIT, &request, timeout)? {
            Ok(_) => self.handles = true,
            Err(DynError::BadMethod(_)) => {}
            Err(e) => return Err(format_err!("{INIT} failed ({}): {}", e.kind(), e.message())),
        }
        Ok(())
    }

    /// `$pylon/release-all`, once, if the cap keeps handles: runs the
    /// destructor of every handle still live, counts them in the run's log
    /// and tells the host when there were any.
    ///
    /// It runs while the run is torn down, often *because* it was stopped
    /// (a timeout is when handles are most likely left open), so it is
    /// detached from the run's stop flag and has a deadline of its own:
    /// the cap's per-call limit, at most [`RELEASE_TIMEOUT`]. Its memory
    /// limit still holds. A failure is the host's to hear, never the guest's
    /// (there is no guest call to fail). A dead provider is skipped:
    /// wasmtime refuses to re-enter an instance that trapped.
    pub fn release_handles(&mut self) {
        if !std::mem::take(&mut self.handles) || self.dead.is_some() {
            return;
        }
        self.store.data_mut().run = None;
        let timeout = Duration::from_millis(self.spec.timeout_ms).min(RELEASE_TIMEOUT);
        let result = self.call(RELEASE_ALL, RELEASE_ALL_REQUEST, timeout);
        let name = &self.spec.name;
        let failure = match result {
            Ok(Ok(reply)) => match decode_count(&reply) {
                Some(0) => return,
                Some(n) => {
                    // A host-side provider belongs to no run: its handles
                    // are the host's own business.
                    if let Some(log) = &self.log {
                        log.add_released(name, n);
                        let handles = if n == 1 { "handle" } else { "handles" };
                        log.report(format!(
                            "cap '{name}': released {n} {handles} the run left open"
                        ));
                    }
                    return;
                }
                None => "its reply is not a count (one CBOR unsigned integer)".to_string(),
            },
            Ok(Err(e)) => format!("{}: {}", e.kind(), e.message()),
            Err(e) => e.to_string(),
        };
        let message = format!("cap '{name}': {RELEASE_ALL} failed: {failure}");
        match &self.log {
            Some(log) => log.report(message),
            None => eprintln!("pylon: {message}"),
        }
    }

    /// The cap's spec (name, digest, limits).
    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// The cap's typed Python shim (its `pylon:shim` section), if any.
    pub fn shim(&self) -> Option<&str> {
        self.shim.as_deref()
    }

    /// Calls `method` with `payload` under the provider's limits.
    ///
    /// # Errors
    /// The outer error is the run being stopped (timeout, Ctrl-C): the guest
    /// must stop too. The inner [`DynError`] is what the guest sees: a bad
    /// method name, a request or reply over the payload limit, the
    /// provider's own error, or a trap / timeout / memory exhaustion (after
    /// which the provider is dead).
    pub fn invoke(&mut self, method: &str, payload: &[u8]) -> Result<Result<Vec<u8>, DynError>> {
        let name = &self.spec.name;
        if let Some(why) = &self.dead {
            return Ok(Err(DynError::Trapped(format!(
                "cap '{name}' is dead after an earlier failure: {why}"
            ))));
        }
        let limit = self.spec.max_payload_bytes;
        if let Some(bad) = check_request(name, method, payload, limit) {
            return Ok(Err(bad));
        }
        self.call(method, payload, Duration::from_millis(self.spec.timeout_ms))
    }

    /// Calls the cap's `invoke` with a deadline `timeout` from now, checking
    /// the reply's size; no name check, so the host's own `$pylon/` calls
    /// come through here too. Errors as [`Self::invoke`].
    fn call(
        &mut self,
        method: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Result<Vec<u8>, DynError>> {
        let limit = self.spec.max_payload_bytes;
        let data = self.store.data_mut();
        data.limiter.reset_hit();
        data.call_deadline = Some(Instant::now() + timeout);
        let result =
            self.cap
                .compose_dynlink_provider()
                .call_invoke(&mut self.store, method, payload);
        self.store.data_mut().call_deadline = None;
        match result {
            Ok(Ok(reply)) if reply.len() as u64 > limit => {
                Ok(Err(DynError::LimitExceeded(format!(
                    "reply of {} bytes exceeds cap '{}''s limit of {limit} bytes",
                    reply.len(),
                    self.spec.name
                ))))
            }
            Ok(Ok(reply)) => Ok(Ok(reply)),
            Ok(Err(e)) => Ok(Err(e.into())),
            Err(err) if err.is::<Stopped>() => {
                // The whole run is stopping: the guest must not carry on.
                self.dead = Some(format!("the run was stopped: {err}"));
                Err(err)
            }
            Err(err) => {
                let error = self.classify(err);
                self.dead = Some(error.message().to_string());
                Ok(Err(error))
            }
        }
    }

    fn classify(&self, err: wasmtime::Error) -> DynError {
        let name = &self.spec.name;
        match self.store.data().limiter.hit {
            Some(LimitHit::Store) => {
                return DynError::LimitExceeded(format!(
                    "cap '{name}' exceeded its memory limit of {} MiB",
                    self.spec.memory_bytes >> 20
                ))
            }
            Some(LimitHit::Run) => {
                return DynError::LimitExceeded(format!(
                    "cap '{name}' ran out of memory: this run's caps together reached the plan's \\
                     limits.max-memory-mb"
                ))
            }
            None => {}
        }
        if err.is::<CallTimedOut>() {
            return DynError::LimitExceeded(format!(
                "cap '{name}' exceeded its time limit of {} ms per call",
                self.spec.timeout_ms
            ));
        }
        // One line for the guest: the trap or the root cause, without the
        // wasm backtrace wasmtime attaches as context.
        let detail = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => err.root_cause().to_string(),
        };
        DynError::Trapped(format!("cap '{name}' trapped: {detail}"))
    }
}

/// What every cap (wasm or host) refuses before it is called: a method name
/// that is not 1 to [`MAX_METHOD_LEN`] printable ASCII characters or is one
/// of the host's (`$pylon/...`: `bad-method`), a payload over the cap's
/// `limit` (`limit-exceeded`).
pub fn check_request(name: &str, method: &str, payload: &[u8], limit: u64) -> Option<DynError> {
    if let Some(bad) = check_method(method) {
        return Some(bad);
    }
    if payload.len() as u64 > limit {
        return Some(DynError::LimitExceeded(format!(
            "payload of {} bytes exceeds cap '{name}''s limit of {limit} bytes",
            payload.len(),
        )));
    }
    None
}

/// `Some(bad-method)` when `method` is not a valid method name.
fn check_method(method: &str) -> Option<DynError> {
    if method.is_empty()
        || method.len() > MAX_METHOD_LEN
        || !method.bytes().all(|b| b.is_ascii_graphic())
    {
        // Echo at most the start of it: the name is the caller's, its size too.
        let shown: String = method.chars().take(MAX_METHOD_LEN).collect();
        let more = if shown.len() < method.len() {
            "..."
        } else {
            ""
        };
        return Some(DynError::BadMethod(format!(
            "method names are 1-{MAX_METHOD_LEN} printable ASCII characters, got {shown:?}{more}"
        )));
    }
    // Checked here, before any cap sees it: a guest that could call
    // `$pylon/release-all` could close every handle of the run's cap
    // behind a proxy's back, and `$pylon/init` could reset its key.
    if method.starts_with(RESERVED_PREFIX) {
        return Some(DynError::BadMethod(format!(
            "{method:?}: methods starting with {RESERVED_PREFIX} are reserved for the host"
        )));
    }
    None
}

impl Drop for LiveProvider {
    /// The guest dropped its `instance`, or its run's Store is torn down
    /// (after a normal end, a stop or a trap alike): the cap's handles are
    /// released first, while its Store still exists.
    fn drop(&mut self) {
        self.release_handles();
    }
}

/// The `pylon:shim` custom section of a component, at its top level.
fn shim_section(bytes: &[u8]) -> Result<Option<String>> {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::CustomSection(section)
                if depth == 0 && section.name() == SHIM_SECTION =>
            {
                let data = section.data();
                if data.len() > MAX_SHIM_BYTES {
                    return Err(format_err!(
                        "the shim is larger than {MAX_SHIM_BYTES} bytes"
                    ));
                }
                return Ok(Some(String::from_utf8(data.to_vec())?));
            }
            _ => {}
        }
    }
    Ok(None)
}
