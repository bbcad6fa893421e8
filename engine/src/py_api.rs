//! The Python classes: `Engine`, `Provider` and `Interrupt`. Thin: they
//! convert arguments, release the GIL around wasm, and map errors via
//! [`crate::errors`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wasmtime::component::Linker;

use crate::cache::Origin;
use crate::engine::Shared;
use crate::errors::{cap_error, engine_error};
use crate::guest::{guest_linker, run_guest, GuestLimits, GuestRun, Preopen};
use crate::limits::{RunBudget, RunSignal};
use crate::linker::{GuestState, RunContext};
use crate::provider::{LiveProvider, ProviderLinkers, ProviderSpec};

/// The stop flag of a run: set it from any thread (a signal handler, an
/// embedding host) and the run stops at its next epoch tick.
#[pyclass(module = "pylon._engine", frozen)]
#[derive(Default)]
pub struct Interrupt {
    signal: Arc<RunSignal>,
}

#[pymethods]
impl Interrupt {
    #[new]
    fn py_new() -> Self {
        Interrupt::default()
    }

    /// Asks the run using this flag to stop.
    fn set(&self) {
        self.signal.request_stop();
    }

    /// Whether `set` was called.
    fn is_set(&self) -> bool {
        self.signal.stop_requested()
    }

    /// Seconds the guest has been running (after its code was loaded), or
    /// `None` before it starts.
    fn running_for(&self) -> Option<f64> {
        self.signal.running_for().map(|d| d.as_secs_f64())
    }
}

/// A guest's memory limit when the caller gives none: all of wasm32.
const NO_MEMORY_LIMIT: u64 = 4 << 30;

/// The wasmtime version compiled in (part of the compile-cache key).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// A wasmtime engine with Pylon's linker, limits and compile cache.
///
/// One per process is plenty; it is safe to share between threads.
#[pyclass(module = "pylon._engine", frozen)]
pub struct Engine {
    shared: Arc<Shared>,
    guest_linker: Linker<GuestState>,
    provider_linkers: Arc<ProviderLinkers>,
}

fn preopens(list: Vec<(PathBuf, String, bool)>) -> Vec<Preopen> {
    list.into_iter()
        .map(|(host_path, guest_path, read_only)| Preopen {
            host_path,
            guest_path,
            read_only,
        })
        .collect()
}

#[pymethods]
impl Engine {
    /// `cache_dir`: where compiled artifacts persist (None: memory only).
    #[new]
    #[pyo3(signature = (cache_dir=None))]
    fn py_new(cache_dir: Option<PathBuf>) -> PyResult<Self> {
        let shared = Shared::new(cache_dir).map_err(engine_error)?;
        let guest_linker = guest_linker(&shared).map_err(engine_error)?;
        let provider_linkers = Arc::new(ProviderLinkers::new(&shared).map_err(engine_error)?);
        Ok(Engine {
            shared,
            guest_linker,
            provider_linkers,
        })
    }

    /// Runs the guest component once; returns its exit status.
    ///
    /// `timeout_ms` and `memory_bytes` bound the guest; `max_instances` and
    /// `max_cap_memory_bytes` bound the caps it resolves, together;
    /// `interrupt` stops it from another thread; `report(message)` receives
    /// what the guest must not see (host paths, causes of a failed load).
    #[pyo3(signature = (path, digest, *, argv, env, cwd, preopens=Vec::new(), resolver=None,
                        report=None, timeout_ms=None, memory_bytes=None, max_instances=32,
                        max_cap_memory_bytes=1 << 30, interrupt=None))]
    #[allow(clippy::too_many_arguments)]
    fn run_guest(
        &self,
        py: Python<'_>,
        path: PathBuf,
        digest: String,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
        preopens: Vec<(PathBuf, String, bool)>,
        resolver: Option<Py<PyAny>>,
        report: Option<Py<PyAny>>,
        timeout_ms: Option<u64>,
        memory_bytes: Option<u64>,
        max_instances: usize,
        max_cap_memory_bytes: u64,
        interrupt: Option<PyRef<'_, Interrupt>>,
    ) -> PyResult<i32> {
        let run = GuestRun {
            path,
            digest,
            argv,
            env,
            cwd,
            preopens: self::preopens(preopens),
            limits: GuestLimits {
                memory_bytes: memory_bytes.unwrap_or(NO_MEMORY_LIMIT),
            },
            timeout: timeout_ms.map(Duration::from_millis),
            signal: interrupt.map(|i| i.signal.clone()),
            run: RunContext {
                resolver,
                report,
                budget: RunBudget::new(max_instances, max_cap_memory_bytes),
                control: None,
            },
        };
        py.detach(|| {
            run_guest(
                &self.shared,
                &self.guest_linker,
                &self.provider_linkers,
                run,
            )
        })
        .map_err(engine_error)
    }

    /// Runs a wasi-preview1 core module's `_start`; returns its exit status.
    #[pyo3(signature = (path, *, argv, env=Vec::new(), preopens=Vec::new(), digest=String::new(),
                        timeout_ms=None, memory_bytes=None, interrupt=None))]
    #[allow(clippy::too_many_arguments)]
    fn run_core_p1(
        &self,
        py: Python<'_>,
        path: PathBuf,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        preopens: Vec<(PathBuf, String, bool)>,
        digest: String,
        timeout_ms: Option<u64>,
        memory_bytes: Option<u64>,
        interrupt: Option<PyRef<'_, Interrupt>>,
    ) -> PyResult<i32> {
        let preopens = self::preopens(preopens);
        let limits = GuestLimits {
            memory_bytes: memory_bytes.unwrap_or(NO_MEMORY_LIMIT),
        };
        let timeout = timeout_ms.map(Duration::from_millis);
        let signal = interrupt.map(|i| i.signal.clone());
        py.detach(|| {
            crate::core_p1::run_core_p1(
                &self.shared,
                &path,
                &digest,
                &argv,
                &env,
                &preopens,
                limits,
                timeout,
                signal,
            )
        })
        .map_err(engine_error)
    }

    /// Instantiates a provider directly, for host-side calls (tests,
    /// benchmarks, `composectl cap call`). It belongs to no run: no run
    /// budget applies, only its own limits.
    fn load_provider(&self, py: Python<'_>, spec: ProviderSpec) -> PyResult<Provider> {
        let slot = RunBudget::unlimited()
            .take_instance()
            .expect("an unlimited budget has room");
        let live = py
            .detach(|| {
                LiveProvider::instantiate(&self.shared, &self.provider_linkers, spec, slot, None)
            })
            .map_err(engine_error)?;
        Ok(Provider {
            live: Mutex::new(live),
        })
    }

    /// Whether `digest` is already compiled (memory or disk cache).
    #[pyo3(signature = (digest, *, core=false))]
    fn is_cached(&self, digest: &str, core: bool) -> bool {
        self.shared.cache.is_cached(digest, core)
    }

    /// Compiles (or loads from the cache) a component or core module;
    /// returns where it came from: "memory", "disk" or "compiled".
    #[pyo3(signature = (path, digest=String::new(), *, core=false))]
    fn precompile(
        &self,
        py: Python<'_>,
        path: PathBuf,
        digest: String,
        core: bool,
    ) -> PyResult<&'static str> {
        let origin: wasmtime::Result<Origin> = py.detach(|| {
            let engine = &self.shared.engine;
            Ok(if core {
                self.shared.cache.module(engine, &path, &digest)?.1
            } else {
                self.shared.cache.component(engine, &path, &digest)?.1
            })
        });
        origin.map(Origin::as_str).map_err(engine_error)
    }
}

/// A provider instantiated for host-side calls.
#[pyclass(module = "pylon._engine", frozen)]
pub struct Provider {
    live: Mutex<LiveProvider>,
}

#[pymethods]
impl Provider {
    /// Calls `method` with `payload`; raises `pylon.errors.CapError` (with
    /// `.kind`) when the cap refuses, traps or hits a limit.
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        payload: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let reply = py.detach(|| self.live.lock().unwrap().invoke(method, payload));
        match reply {
            Ok(Ok(bytes)) => Ok(PyBytes::new(py, &bytes)),
            Ok(Err(e)) => Err(cap_error(e)),
            Err(stop) => Err(engine_error(stop)),
        }
    }

    /// The cap's name.
    #[getter]
    fn name(&self) -> String {
        self.live.lock().unwrap().spec().name.clone()
    }

    /// The cap's typed Python shim (its `pylon:shim` section), if any.
    #[getter]
    fn shim(&self) -> Option<String> {
        self.live.lock().unwrap().shim().map(str::to_string)
    }
}
