//! The host side of `compose:dynlink/linker`, as the guest sees it.
//!
//! `resolve-by-id` asks the Python resolver for a [`ProviderSpec`]: that is
//! where the plan lookup, the trust gate and the first-use fetch happen, and
//! a refusal there means the provider is never instantiated. The engine then
//! instantiates the provider in its own Store and hands the guest an
//! `instance` resource that owns it.

use std::sync::Arc;

use pyo3::prelude::*;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::host::compose::dynlink::linker::{Host, HostInstance};
use crate::bindings::host::compose::dynlink::types;
use crate::bindings::DynError;
use crate::engine::Shared;
use crate::provider::{LiveProvider, ProviderLinkers, ProviderSpec};

/// Store data of the guest.
pub struct GuestState {
    /// The guest's WASI context (stdio, args, env, preopens).
    pub wasi: WasiCtx,
    /// Resources: WASI's and our `instance` handles.
    pub table: ResourceTable,
    shared: Arc<Shared>,
    linkers: Arc<ProviderLinkers>,
    resolver: Option<Py<PyAny>>,
}

impl GuestState {
    /// State for one guest run; `resolver` is the Python callable
    /// `resolver(name) -> ProviderSpec` (raising to refuse).
    pub fn new(
        wasi: WasiCtx,
        shared: Arc<Shared>,
        linkers: Arc<ProviderLinkers>,
        resolver: Option<Py<PyAny>>,
    ) -> Self {
        GuestState {
            wasi,
            table: ResourceTable::new(),
            shared,
            linkers,
            resolver,
        }
    }

    fn ask_resolver(&self, name: &str) -> Result<ProviderSpec, DynError> {
        let Some(resolver) = &self.resolver else {
            return Err(DynError::NotFound(format!(
                "cap '{name}': this run has no plan to resolve caps from"
            )));
        };
        Python::attach(|py| match resolver.call1(py, (name,)) {
            Ok(obj) => obj.extract::<ProviderSpec>(py).map_err(|e| {
                DynError::NotFound(format!(
                    "cap '{name}': resolver returned no ProviderSpec: {e}"
                ))
            }),
            Err(err) => Err(refusal_from_python(py, name, err)),
        })
    }
}

/// A Python exception from the resolver becomes the WIT error the guest
/// sees. The exception may name its case in a `dynlink_kind` attribute
/// (`"denied"` for the trust gate); otherwise it is `not-found`.
fn refusal_from_python(py: Python<'_>, name: &str, err: PyErr) -> DynError {
    let value = err.value(py);
    let kind: String = value
        .getattr("dynlink_kind")
        .and_then(|k| k.extract())
        .unwrap_or_else(|_| "not-found".to_string());
    let message = value
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("cap '{name}' could not be resolved"));
    DynError::from_kind(&kind, message)
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for GuestState {}

impl Host for GuestState {
    fn resolve_by_id(&mut self, name: String) -> Result<Resource<LiveProvider>, DynError> {
        let spec = self.ask_resolver(&name)?;
        let live = LiveProvider::instantiate(&self.shared, &self.linkers, spec)
            .map_err(|e| DynError::Trapped(format!("{e:#}")))?;
        self.table
            .push(live)
            .map_err(|e| DynError::LimitExceeded(format!("too many live cap instances: {e}")))
    }
}

impl HostInstance for GuestState {
    fn invoke(
        &mut self,
        this: Resource<LiveProvider>,
        method: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, DynError> {
        match self.table.get_mut(&this) {
            Ok(live) => live.invoke(&method, &payload),
            Err(e) => Err(DynError::NotFound(format!("stale instance handle: {e}"))),
        }
    }

    fn shim(&mut self, this: Resource<LiveProvider>) -> Option<String> {
        self.table
            .get(&this)
            .ok()
            .and_then(|live| live.spec().shim.clone())
    }

    fn drop(&mut self, this: Resource<LiveProvider>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
