//! The host side of `compose:dynlink/linker`, as the guest sees it.
//!
//! `resolve-by-id` asks the Python resolver for a [`ProviderSpec`]: that is
//! where the plan lookup, the trust gate and the first-use fetch happen, and
//! a refusal there means the provider is never instantiated. The engine then
//! instantiates the provider in its own Store and hands the guest an
//! `instance` resource that owns it. An embedding host's own caps come back
//! as a [`HostCapSpec`] instead and are served by its Python code.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::Result;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::host::compose::dynlink::linker::{Host, HostInstance};
use crate::bindings::host::compose::dynlink::types;
use crate::bindings::DynError;
use crate::engine::Shared;
use crate::handles::RunLog;
use crate::hostcap::{CapInstance, HostCap, HostCapSpec};
use crate::limits::{stop_for, Limiter, RunBudget, RunControl};
use crate::provider::{LiveProvider, ProviderLinkers, ProviderSpec};

/// Store data of the guest.
pub struct GuestState {
    /// The guest's WASI context (stdio, args, env, preopens).
    pub wasi: WasiCtx,
    /// Resources: WASI's and our `instance` handles.
    pub table: ResourceTable,
    /// The guest's own memory ceiling.
    pub limiter: Limiter,
    shared: Arc<Shared>,
    linkers: Arc<ProviderLinkers>,
    resolver: Option<Py<PyAny>>,
    /// Host-side reports and handle counts, shared with the run's providers.
    log: Arc<RunLog>,
    /// `rep`s of the live wasm cap instances in `table`: the run's end
    /// releases their handles before the Store goes to be torn down.
    wasm_caps: HashSet<u32>,
    budget: Arc<RunBudget>,
    control: Arc<RunControl>,
    /// False for an instance made ahead until [`Self::arm`] gives it its run.
    armed: bool,
    /// Whether the host was called (WASI, a resolve) while unarmed.
    touched_unarmed: bool,
}

/// What a guest run shares with the providers it resolves.
pub struct RunContext {
    /// `resolver(name) -> ProviderSpec`, raising to refuse.
    pub resolver: Option<Py<PyAny>>,
    /// `report(message)`: where details the guest must not see go.
    pub report: Option<Py<PyAny>>,
    /// The run's provider budget.
    pub budget: Arc<RunBudget>,
    /// The run's deadline and stop flag (set when the guest starts running).
    pub control: Option<Arc<RunControl>>,
}

/// What the resolver answered for a name.
enum Resolved {
    Wasm(ProviderSpec),
    Host(HostCapSpec),
}

impl GuestState {
    /// State for one guest run.
    pub fn new(
        wasi: WasiCtx,
        limiter: Limiter,
        shared: Arc<Shared>,
        linkers: Arc<ProviderLinkers>,
        run: RunContext,
    ) -> Self {
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            shared,
            linkers,
            resolver: run.resolver,
            log: Arc::new(RunLog::new(run.report)),
            wasm_caps: HashSet::new(),
            budget: run.budget,
            control: run.control.expect("the run has started"),
            armed: true,
            touched_unarmed: false,
        }
    }

    /// State for an instance made ahead of its run ([`crate::guest::Instantiated::spare`]):
    /// an empty WASI context, no resolver, a budget of no caps and a
    /// deadline that never passes, until [`Self::arm`] gives it a run's.
    pub fn unarmed(limiter: Limiter, shared: Arc<Shared>, linkers: Arc<ProviderLinkers>) -> Self {
        let run = RunContext {
            resolver: None,
            report: None,
            budget: RunBudget::new(0, 0),
            control: Some(RunControl::start(None, None)),
        };
        let mut state = GuestState::new(WasiCtx::builder().build(), limiter, shared, linkers, run);
        state.armed = false;
        state
    }

    /// Whether the guest called the host while unarmed (during its
    /// instantiation): it then holds what that empty context gave it (no
    /// preopens, say), so it cannot be armed for a run.
    pub fn touched_unarmed(&self) -> bool {
        self.touched_unarmed
    }

    /// Gives an instance made ahead its run: WASI context (stdio, preopens),
    /// resolver, report, provider budget and stop control. Only before any of
    /// its code ran, and only if instantiation called nothing of the host
    /// ([`Self::touched_unarmed`]).
    pub fn arm(&mut self, wasi: WasiCtx, run: RunContext) {
        debug_assert!(!self.armed && !self.touched_unarmed && self.wasm_caps.is_empty());
        self.armed = true;
        self.wasi = wasi;
        self.resolver = run.resolver;
        self.log = Arc::new(RunLog::new(run.report));
        self.budget = run.budget;
        self.control = run.control.expect("the run has started");
    }

    /// The run's deadline and stop flag.
    pub fn control(&self) -> Arc<RunControl> {
        self.control.clone()
    }

    /// The run's log: what the host heard, handles released so far.
    pub fn log(&self) -> &Arc<RunLog> {
        &self.log
    }

    /// Tells the host (never the guest) something went wrong in detail.
    fn report(&self, message: String) {
        self.log.report(message);
    }

    /// Releases the handles of every wasm cap the guest still holds
    /// (`$pylon/release-all`), now rather than when the Store is dropped, so
    /// the counts are in [`Self::log`] before the run's result is returned
    /// (the Store itself is torn down later, off the caller's path). Only
    /// once the guest will not run again: its caps stay resolved but their
    /// handles are gone.
    pub fn release_caps(&mut self) {
        for &rep in &self.wasm_caps {
            let this = Resource::<CapInstance>::new_own(rep);
            if let Ok(CapInstance::Wasm(live)) = self.table.get_mut(&this) {
                live.release_handles();
            }
        }
    }

    /// The resolver's answer: a spec, a refusal for the guest, or a trap when
    /// the host itself is being interrupted (a `KeyboardInterrupt` or
    /// `SystemExit` there is never turned into a cap error).
    fn ask_resolver(&self, name: &str) -> Result<Result<Resolved, DynError>> {
        let Some(resolver) = &self.resolver else {
            return Ok(Err(DynError::NotFound(format!(
                "cap '{name}': this run has no plan to resolve caps from"
            ))));
        };
        Python::attach(|py| match resolver.call1(py, (name,)) {
            Ok(obj) => {
                if let Ok(spec) = obj.extract::<ProviderSpec>(py) {
                    return Ok(Ok(Resolved::Wasm(spec)));
                }
                Ok(obj
                    .extract::<HostCapSpec>(py)
                    .map(Resolved::Host)
                    .map_err(|_| {
                        DynError::NotFound(format!(
                            "cap '{name}': the resolver returned neither a ProviderSpec nor a HostCapSpec"
                        ))
                    }))
            }
            Err(err) if !err.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                Err(stop_for(py, err))
            }
            Err(err) => Ok(Err(refusal_from_python(py, name, err))),
        })
    }
}

/// A Python exception from the resolver becomes the WIT error the guest
/// sees. A refusal names its case in a `dynlink_kind` attribute (`"denied"`
/// for the trust gate) and its text is written for the guest. Any other
/// exception is a failure of the host: the guest gets a fixed text (its
/// message may hold host paths) and the host gets the exception.
fn refusal_from_python(py: Python<'_>, name: &str, err: PyErr) -> DynError {
    let value = err.value(py);
    let shown: String = name.chars().take(64).collect();
    let Ok(kind) = value
        .getattr("dynlink_kind")
        .and_then(|k| k.extract::<String>())
    else {
        err.print(py);
        return DynError::NotFound(format!(
            "cap {shown:?} could not be resolved (the host reported why)"
        ));
    };
    let message = value
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("cap {shown:?} could not be resolved"));
    DynError::from_kind(&kind, message)
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Every WASI call comes through here.
        self.touched_unarmed |= !self.armed;
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for GuestState {}

impl Host for GuestState {
    fn resolve_by_id(&mut self, name: String) -> Result<Result<Resource<CapInstance>, DynError>> {
        self.touched_unarmed |= !self.armed;
        self.control.check()?;
        let resolved = match self.ask_resolver(&name)? {
            Ok(resolved) => resolved,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Some(slot) = self.budget.take_instance() else {
            return Ok(Err(DynError::LimitExceeded(format!(
                "cap '{name}': this run already holds {} live cap instances (the plan's \
                 limits.max-instances); drop ones it no longer needs",
                self.budget.max_instances()
            ))));
        };
        let spec = match resolved {
            Resolved::Wasm(spec) => spec,
            Resolved::Host(spec) => {
                return Ok(self
                    .table
                    .push(CapInstance::Host(HostCap::new(spec, slot)))
                    .map_err(|e| {
                        DynError::LimitExceeded(format!("too many live cap instances: {e}"))
                    }));
            }
        };
        let digest = spec.digest.clone();
        match LiveProvider::instantiate(
            &self.shared,
            &self.linkers,
            spec,
            slot,
            Some(self.control.clone()),
            Some(self.log.clone()),
        ) {
            Ok(live) => match self.table.push(CapInstance::Wasm(live)) {
                Ok(this) => {
                    self.wasm_caps.insert(this.rep());
                    Ok(Ok(this))
                }
                Err(e) => Ok(Err(DynError::LimitExceeded(format!(
                    "too many live cap instances: {e}"
                )))),
            },
            Err(e) => {
                // The guest learns what failed; paths and causes go to the host.
                self.report(format!(
                    "cap '{name}' ({digest}) could not be loaded: {e:#}"
                ));
                Ok(Err(DynError::Trapped(format!(
                    "cap '{name}' ({digest}) could not be loaded: {e}"
                ))))
            }
        }
    }
}

impl GuestState {
    /// `instance.invoke`: calls the cap behind `this` with `payload`, which
    /// the guest linker passes as a view of the guest's own memory
    /// (src/guest.rs), so the request is copied once, into the cap.
    pub fn invoke_cap(
        &mut self,
        this: &Resource<CapInstance>,
        method: &str,
        payload: &[u8],
    ) -> Result<Result<Vec<u8>, DynError>> {
        let control = self.control.clone();
        match self.table.get_mut(this) {
            Ok(cap) => cap.invoke(method, payload, &control),
            Err(e) => Ok(Err(DynError::NotFound(format!(
                "stale instance handle: {e}"
            )))),
        }
    }
}

impl HostInstance for GuestState {
    // Shadowed in the guest linker by a version that does not lift the
    // payload into a Vec (src/guest.rs); kept for the trait and as the
    // reference behaviour.
    fn invoke(
        &mut self,
        this: Resource<CapInstance>,
        method: String,
        payload: Vec<u8>,
    ) -> Result<Result<Vec<u8>, DynError>> {
        self.invoke_cap(&this, &method, &payload)
    }

    fn shim(&mut self, this: Resource<CapInstance>) -> Result<Option<String>> {
        Ok(self
            .table
            .get(&this)
            .ok()
            .and_then(|cap| cap.shim().map(str::to_string)))
    }

    fn drop(&mut self, this: Resource<CapInstance>) -> Result<()> {
        self.wasm_caps.remove(&this.rep());
        // Dropping the provider releases its handles (LiveProvider's Drop).
        self.table.delete(this)?;
        Ok(())
    }
}
