//! One cap instance in a Store of its own, under its own limits.
//!
//! Isolation is the point: a provider that traps, loops or eats memory kills
//! only itself. Its Store has its own memory limit and epoch deadline, no
//! WASI unless the plan grants it, and once it has failed it is marked dead
//! and refuses further calls (wasmtime forbids re-entering a trapped
//! instance; a fresh resolve gives a fresh one).
//!
//! What is *not* limited here: the host memory used to copy payloads (bounded
//! by `max_payload_bytes` per call) and wall time spent in host calls (a cap
//! with no imports makes none, unless granted WASI).

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{format_err, Result};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::cap::{Cap, CapPre};
use crate::bindings::DynError;
use crate::engine::{ticks_for_ms, Shared};

/// Longest method name accepted; methods are short ASCII identifiers.
const MAX_METHOD_LEN: usize = 128;

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
    /// The cap's optional Python shim (its `pylon:shim` section).
    pub shim: Option<String>,
}

#[pymethods]
impl ProviderSpec {
    #[new]
    #[pyo3(signature = (*, name, path, digest, memory_bytes, timeout_ms, max_payload_bytes, wasi=false, shim=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        name: String,
        path: PathBuf,
        digest: String,
        memory_bytes: u64,
        timeout_ms: u64,
        max_payload_bytes: u64,
        wasi: bool,
        shim: Option<String>,
    ) -> Self {
        ProviderSpec {
            name,
            path,
            digest,
            memory_bytes,
            timeout_ms,
            max_payload_bytes,
            wasi,
            shim,
        }
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
    limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for ProviderState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces the memory ceiling and remembers that it did, so the resulting
/// trap is reported as `limit-exceeded` rather than a generic trap.
struct MemoryLimiter {
    max_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(format_err!(
                "memory limit of {} MiB exceeded",
                self.max_bytes >> 20
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The two provider linkers: with and without WASI.
pub struct ProviderLinkers {
    bare: Linker<ProviderState>,
    wasi: Linker<ProviderState>,
}

impl ProviderLinkers {
    /// Builds both linkers for `shared`'s engine.
    ///
    /// # Errors
    /// When wasmtime rejects a definition (a bug).
    pub fn new(shared: &Shared) -> Result<Self> {
        let mut bare = Linker::new(&shared.engine);
        // Caps import the type-only `types` interface; it has nothing to define.
        bare.instance("compose:dynlink/types@0.1.0")?;
        let mut wasi = bare.clone();
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi)?;
        Ok(ProviderLinkers { bare, wasi })
    }
}

/// A resolved, instantiated provider: the `instance` resource's host side.
pub struct LiveProvider {
    spec: ProviderSpec,
    store: Store<ProviderState>,
    cap: Cap,
    deadline_ticks: u64,
    dead: Option<String>,
}

impl LiveProvider {
    /// Instantiates `spec` in a fresh Store.
    ///
    /// # Errors
    /// When the component cannot be compiled, does not export
    /// `compose:dynlink/provider`, needs imports it was not granted, or its
    /// start-up traps.
    pub fn instantiate(
        shared: &Arc<Shared>,
        linkers: &ProviderLinkers,
        spec: ProviderSpec,
    ) -> Result<Self> {
        let (component, _) = shared
            .cache
            .component(&shared.engine, &spec.path, &spec.digest)?;
        let state = ProviderState {
            limiter: MemoryLimiter {
                max_bytes: spec.memory_bytes as usize,
                hit: false,
            },
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Payload bytes cross the host as one copy; the default hostcall fuel
        // would refuse large lists, and our own per-call payload limit
        // already bounds what the host allocates.
        store.set_hostcall_fuel(usize::MAX);
        let deadline_ticks = ticks_for_ms(spec.timeout_ms);
        store.set_epoch_deadline(deadline_ticks);
        store.epoch_deadline_trap();
        let linker = if spec.wasi {
            &linkers.wasi
        } else {
            &linkers.bare
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            format_err!(
                "cap '{}' cannot be linked (it needs imports the plan does not grant?): {e:#}",
                spec.name
            )
        })?;
        let cap = CapPre::new(pre)
            .map_err(|e| {
                format_err!(
                    "cap '{}' does not export compose:dynlink/provider@0.1.0: {e:#}",
                    spec.name
                )
            })?
            .instantiate(&mut store)
            .map_err(|e| format_err!("cap '{}' failed to start: {e:#}", spec.name))?;
        Ok(LiveProvider {
            spec,
            store,
            cap,
            deadline_ticks,
            dead: None,
        })
    }

    /// The cap's spec (name, digest, limits, shim).
    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// Calls `method` with `payload` under the provider's limits.
    ///
    /// # Errors
    /// Every failure is a [`DynError`] the guest can see: a bad method name,
    /// a payload over the limit, the provider's own error, or a trap /
    /// timeout / memory exhaustion (after which the provider is dead).
    pub fn invoke(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, DynError> {
        let name = &self.spec.name;
        if let Some(why) = &self.dead {
            return Err(DynError::Trapped(format!(
                "cap '{name}' is dead after an earlier failure: {why}"
            )));
        }
        if method.is_empty()
            || method.len() > MAX_METHOD_LEN
            || !method.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DynError::BadMethod(format!(
                "method names are 1-{MAX_METHOD_LEN} printable ASCII characters, got {method:?}"
            )));
        }
        if payload.len() as u64 > self.spec.max_payload_bytes {
            return Err(DynError::LimitExceeded(format!(
                "payload of {} bytes exceeds cap '{name}''s limit of {} bytes",
                payload.len(),
                self.spec.max_payload_bytes
            )));
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        match self
            .cap
            .compose_dynlink_provider()
            .call_invoke(&mut self.store, method, payload)
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.into()),
            Err(err) => {
                let error = self.classify(err);
                self.dead = Some(error.message().to_string());
                Err(error)
            }
        }
    }

    fn classify(&mut self, err: wasmtime::Error) -> DynError {
        let name = &self.spec.name;
        if self.store.data().limiter.hit {
            return DynError::LimitExceeded(format!(
                "cap '{name}' exceeded its memory limit of {} MiB",
                self.spec.memory_bytes >> 20
            ));
        }
        if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
            return DynError::LimitExceeded(format!(
                "cap '{name}' exceeded its time limit of {} ms per call",
                self.spec.timeout_ms
            ));
        }
        let detail = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{err:#}"),
        };
        DynError::Trapped(format!("cap '{name}' trapped: {detail}"))
    }
}
