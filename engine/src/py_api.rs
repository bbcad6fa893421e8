//! The Python classes: `Engine`, `Provider` and `Interrupt`. Thin: they
//! convert arguments, release the GIL around wasm, and map errors via
//! [`crate::errors`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use wasmtime::component::Linker;

use crate::cache::Origin;
use crate::engine::Shared;
use crate::errors::{cap_error, engine_error};
use crate::guest::{
    guest_linker, run_guest, Captured, GuestLimits, GuestRun, GuestSetup, LiveGuest, Preopen,
    PreparedGuest, Retirer,
};
use crate::limits::{RunBudget, RunSignal, Stop, Stopped};
use crate::linker::{GuestState, RunContext};
use crate::output::{InputMode, OutputMode};
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
    /// Linked guests by digest: loading and linking happen once per process.
    prepared: Mutex<HashMap<String, Arc<PreparedGuest>>>,
    /// Where finished embedded runs are torn down, off the caller's path.
    retirer: Retirer,
}

impl Engine {
    /// Starts an instance of `prepared` for `run`: the spare made ahead when
    /// there is one, and has the next one made ahead meanwhile (for a caller
    /// that runs again: `Guest.run`, `run_guest(ahead=True)`).
    fn launch_ahead(
        &self,
        prepared: &Arc<PreparedGuest>,
        run: GuestRun,
    ) -> wasmtime::Result<(LiveGuest, wasmtime::Result<i32>)> {
        let memory_bytes = run.setup.limits.memory_bytes;
        let spare = prepared.take_spare(memory_bytes);
        self.retirer
            .prewarm(&self.shared, &self.provider_linkers, prepared, memory_bytes);
        LiveGuest::launch(&self.shared, &self.provider_linkers, prepared, spare, run)
    }

    /// The linked guest for `digest` (verified or authenticated on first use).
    fn prepare(
        &self,
        path: &std::path::Path,
        digest: &str,
    ) -> wasmtime::Result<Arc<PreparedGuest>> {
        if !digest.is_empty() {
            if let Some(found) = self.prepared.lock().unwrap().get(digest) {
                return Ok(found.clone());
            }
        }
        let prepared = Arc::new(PreparedGuest::load(
            &self.shared,
            &self.guest_linker,
            path,
            digest,
        )?);
        if !digest.is_empty() {
            self.prepared
                .lock()
                .unwrap()
                .insert(digest.to_string(), prepared.clone());
        }
        Ok(prepared)
    }
}

/// Where one of the guest's output streams goes, from its Python value:
/// `None` captures (up to `limit` bytes), `"inherit"` is the host's own
/// stream, a callable gets each write.
fn output_mode(value: Option<Bound<'_, PyAny>>, limit: usize) -> PyResult<OutputMode> {
    let Some(value) = value else {
        return Ok(OutputMode::Capture(limit));
    };
    if let Ok(s) = value.cast::<PyString>() {
        if s.to_str()? == "inherit" {
            return Ok(OutputMode::Inherit);
        }
    } else if value.is_callable() {
        return Ok(OutputMode::Stream(value.unbind()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(
        "stdout / stderr must be None (capture), \"inherit\" or a callable taking bytes",
    ))
}

/// What a guest call returns to Python.
#[pyclass(module = "pylon._engine", frozen)]
pub struct Outcome {
    /// The exit status (124 after a timeout or running out of fuel, 130
    /// after an interrupt, as a shell reports them).
    #[pyo3(get)]
    status: i32,
    /// Why the call was stopped from outside: "timeout", "interrupt" or
    /// "fuel"; `None` when the guest finished by itself.
    #[pyo3(get)]
    stopped: Option<&'static str>,
    /// Seconds the call ran, when it was stopped.
    #[pyo3(get)]
    stopped_after: Option<f64>,
    captured: Captured,
}

impl Outcome {
    /// The call's result as an outcome; a stop is an outcome too (with what
    /// the guest printed before it), anything else an error. A Python
    /// exception raised in a resolver or host cap (Ctrl-C) is passed on.
    fn from_call(result: wasmtime::Result<i32>, captured: Captured) -> PyResult<Self> {
        match result {
            Ok(status) => Ok(Outcome {
                status,
                stopped: None,
                stopped_after: None,
                captured,
            }),
            Err(err) => {
                let Some(stop) = err.downcast_ref::<Stopped>() else {
                    return Err(engine_error(err));
                };
                if Python::attach(PyErr::occurred) {
                    return Err(engine_error(err));
                }
                let (status, why) = match stop.why {
                    Stop::TimedOut => (124, "timeout"),
                    Stop::OutOfFuel => (124, "fuel"),
                    Stop::Interrupted => (130, "interrupt"),
                };
                Ok(Outcome {
                    status,
                    stopped: Some(why),
                    stopped_after: Some(stop.after.as_secs_f64()),
                    captured,
                })
            }
        }
    }
}

#[pymethods]
impl Outcome {
    /// Captured stdout.
    #[getter]
    fn stdout<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.captured.stdout)
    }

    /// Captured stderr.
    #[getter]
    fn stderr<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.captured.stderr)
    }

    /// Output bytes dropped over the capture limit.
    #[getter]
    fn dropped(&self) -> u64 {
        self.captured.dropped
    }

    /// Fuel the call consumed (fuel engines only).
    #[getter]
    fn fuel_consumed(&self) -> Option<u64> {
        self.captured.fuel_consumed
    }

    /// Handles each cap released when dropped (`$pylon/release-all`): cap
    /// name -> count, only caps that released any.
    #[getter]
    fn handles_released(&self) -> BTreeMap<String, u64> {
        self.captured.handles_released.clone()
    }
}

/// The setup of a guest instance from the Python arguments shared by
/// `Guest.run` and `Guest.session`.
#[allow(clippy::too_many_arguments)]
fn guest_setup(
    preopens: Vec<(PathBuf, String, bool)>,
    resolver: Option<Py<PyAny>>,
    report: Option<Py<PyAny>>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
    fuel: Option<u64>,
    max_instances: usize,
    max_cap_memory_bytes: u64,
    interrupt: Option<&Interrupt>,
    stdin: InputMode,
    stdout: OutputMode,
    stderr: OutputMode,
    python_signals: bool,
) -> GuestSetup {
    GuestSetup {
        preopens: self::preopens(preopens),
        limits: GuestLimits {
            memory_bytes: memory_bytes.unwrap_or(NO_MEMORY_LIMIT),
            fuel,
        },
        timeout: timeout_ms.map(Duration::from_millis),
        signal: interrupt.map(|i| i.signal.clone()),
        stdin,
        stdout,
        stderr,
        python_signals,
        run: RunContext {
            resolver,
            report,
            budget: RunBudget::new(max_instances, max_cap_memory_bytes),
            control: None,
        },
    }
}

/// A file of our own for the caller's open descriptor `fd` (a `dup`: the
/// caller keeps and closes its own).
fn duplicate_fd(fd: i32) -> PyResult<std::fs::File> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "not a file descriptor: {fd}"
        )));
    }
    // SAFETY: the descriptor is only borrowed for the `dup`, during this
    // call, while the caller holds it open; a closed one makes `dup` fail
    // with EBADF, which is returned.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed
        .try_clone_to_owned()
        .map_err(|e| PyOSError::new_err(format!("file descriptor {fd}: {e}")))?;
    Ok(std::fs::File::from(owned))
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
    /// `fuel`: meter wasm instructions (a deterministic CPU budget; code
    /// compiled for such an engine is slower and cached separately).
    #[new]
    #[pyo3(signature = (cache_dir=None, *, fuel=false))]
    fn py_new(cache_dir: Option<PathBuf>, fuel: bool) -> PyResult<Self> {
        let shared = Shared::new(cache_dir, fuel).map_err(engine_error)?;
        let guest_linker = guest_linker(&shared).map_err(engine_error)?;
        let provider_linkers = Arc::new(ProviderLinkers::new(&shared).map_err(engine_error)?);
        Ok(Engine {
            shared,
            guest_linker,
            provider_linkers,
            prepared: Mutex::new(HashMap::new()),
            retirer: Retirer::new().map_err(engine_error)?,
        })
    }

    /// Whether this engine meters fuel.
    #[getter]
    fn fuel(&self) -> bool {
        self.shared.fuel
    }

    /// Loads and links the guest component once; the returned [`Guest`]
    /// instantiates it cheaply for each run.
    #[pyo3(signature = (path, digest))]
    fn prepare_guest(
        slf: Py<Self>,
        py: Python<'_>,
        path: PathBuf,
        digest: String,
    ) -> PyResult<Guest> {
        let engine = slf.get();
        let prepared = py
            .detach(|| engine.prepare(&path, &digest))
            .map_err(engine_error)?;
        Ok(Guest {
            engine: slf.clone_ref(py),
            prepared,
        })
    }

    /// Runs the guest component once; returns its exit status.
    ///
    /// `timeout_ms` and `memory_bytes` bound the guest; `max_instances` and
    /// `max_cap_memory_bytes` bound the caps it resolves, together;
    /// `interrupt` stops it from another thread; `report(message)` receives
    /// what the guest must not see (host paths, causes of a failed load).
    /// `stdio_fds`: the guest's stdin, stdout and stderr are (duplicates
    /// of) these open file descriptors instead of the process's own (the
    /// CLI's server runs a client's script on the client's streams).
    /// `ahead`: start from an instance made ahead and make the next one
    /// after (a process that runs again, like the CLI's server; a one-shot
    /// process would make one for nothing).
    #[pyo3(signature = (path, digest, *, argv, env, cwd, preopens=Vec::new(), resolver=None,
                        report=None, timeout_ms=None, memory_bytes=None, max_instances=32,
                        max_cap_memory_bytes=1 << 30, interrupt=None, stdio_fds=None, ahead=false))]
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
        stdio_fds: Option<(i32, i32, i32)>,
        ahead: bool,
    ) -> PyResult<i32> {
        let (stdin, stdout, stderr) = match stdio_fds {
            None => (InputMode::Default, OutputMode::Inherit, OutputMode::Inherit),
            Some((fd0, fd1, fd2)) => (
                InputMode::File(duplicate_fd(fd0)?),
                OutputMode::File(duplicate_fd(fd1)?),
                OutputMode::File(duplicate_fd(fd2)?),
            ),
        };
        let prepared = py
            .detach(|| self.prepare(&path, &digest))
            .map_err(engine_error)?;
        let run = GuestRun {
            argv,
            env,
            cwd,
            setup: guest_setup(
                preopens,
                resolver,
                report,
                timeout_ms,
                memory_bytes,
                None,
                max_instances,
                max_cap_memory_bytes,
                interrupt.as_deref(),
                stdin,
                stdout,
                stderr,
                false,
            ),
        };
        if !ahead {
            return py
                .detach(|| run_guest(&self.shared, &self.provider_linkers, &prepared, run))
                .map(|(status, _)| status)
                .map_err(engine_error);
        }
        // As `Guest.run`: start from the instance made ahead, make the next
        // one, and leave the teardown to the housekeeping thread.
        py.detach(|| {
            let (mut live, status) = self.launch_ahead(&prepared, run)?;
            live.release_caps();
            self.retirer.retire(live);
            status
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
            fuel: None,
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
                LiveProvider::instantiate(
                    &self.shared,
                    &self.provider_linkers,
                    spec,
                    slot,
                    None,
                    None,
                )
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

/// Whether this is Python's main thread: only there do signal handlers run,
/// so only there must a running guest watch for Ctrl-C itself.
fn is_main_thread(py: Python<'_>) -> PyResult<bool> {
    let threading = py.import("threading")?;
    let current = threading.call_method0("current_thread")?;
    let main = threading.call_method0("main_thread")?;
    Ok(current.is(&main))
}

/// Default capture limit per stream: what a guest prints past it is dropped.
const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;

/// The guest component, linked and ready: each `run` is a fresh instance.
#[pyclass(module = "pylon._engine", frozen)]
pub struct Guest {
    engine: Py<Engine>,
    prepared: Arc<PreparedGuest>,
}

#[pymethods]
impl Guest {
    /// Runs `argv` in a fresh instance; returns an [`Outcome`].
    ///
    /// `stdout` / `stderr`: None captures (at most `max_output_bytes` each),
    /// "inherit" uses the host's, a callable gets each write. `stdin`: the
    /// bytes the guest reads (None: nothing).
    #[pyo3(signature = (argv, env, cwd, *, preopens=Vec::new(), resolver=None, report=None,
                        timeout_ms=None, memory_bytes=None, fuel=None, max_instances=32,
                        max_cap_memory_bytes=1 << 30, interrupt=None, stdin=None, stdout=None,
                        stderr=None, max_output_bytes=DEFAULT_OUTPUT_LIMIT))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
        preopens: Vec<(PathBuf, String, bool)>,
        resolver: Option<Py<PyAny>>,
        report: Option<Py<PyAny>>,
        timeout_ms: Option<u64>,
        memory_bytes: Option<u64>,
        fuel: Option<u64>,
        max_instances: usize,
        max_cap_memory_bytes: u64,
        interrupt: Option<PyRef<'_, Interrupt>>,
        stdin: Option<Vec<u8>>,
        stdout: Option<Bound<'_, PyAny>>,
        stderr: Option<Bound<'_, PyAny>>,
        max_output_bytes: usize,
    ) -> PyResult<Outcome> {
        let engine = self.engine.get();
        let setup = guest_setup(
            preopens,
            resolver,
            report,
            timeout_ms,
            memory_bytes,
            fuel,
            max_instances,
            max_cap_memory_bytes,
            interrupt.as_deref(),
            InputMode::Bytes(stdin.unwrap_or_default()),
            output_mode(stdout, max_output_bytes)?,
            output_mode(stderr, max_output_bytes)?,
            is_main_thread(py)?,
        );
        let run = GuestRun {
            argv,
            env,
            cwd,
            setup,
        };
        let (result, captured) = py
            .detach(|| {
                let (mut live, result) = self.launch(run)?;
                // The run is over: its caps' handles are released here, so
                // their counts are in this outcome (the rest of the teardown
                // is retired).
                live.release_caps();
                let captured = live.take_captured();
                engine.retirer.retire(live);
                wasmtime::Result::Ok((result, captured))
            })
            .map_err(engine_error)?;
        Outcome::from_call(result, captured)
    }

    /// Runs and sessions of this guest that started from an instance made
    /// ahead of them (see docs/api.md).
    #[getter]
    fn spare_starts(&self) -> u64 {
        self.prepared.spare_starts()
    }

    /// Whether instances of this guest can be made ahead: false once one
    /// called the host while it was instantiated (its start-up would keep
    /// what an empty context gave it).
    #[getter]
    fn makes_spares(&self) -> bool {
        self.prepared.makes_spares()
    }

    /// Starts a session: one instance whose `__main__` lives across calls.
    /// Its first call runs nothing but sets up argv, env and cwd.
    #[pyo3(signature = (env, cwd, *, preopens=Vec::new(), resolver=None, report=None,
                        memory_bytes=None, fuel=None, max_instances=32,
                        max_cap_memory_bytes=1 << 30, stdout=None, stderr=None,
                        max_output_bytes=DEFAULT_OUTPUT_LIMIT))]
    #[allow(clippy::too_many_arguments)]
    fn session(
        &self,
        py: Python<'_>,
        env: Vec<(String, String)>,
        cwd: String,
        preopens: Vec<(PathBuf, String, bool)>,
        resolver: Option<Py<PyAny>>,
        report: Option<Py<PyAny>>,
        memory_bytes: Option<u64>,
        fuel: Option<u64>,
        max_instances: usize,
        max_cap_memory_bytes: u64,
        stdout: Option<Bound<'_, PyAny>>,
        stderr: Option<Bound<'_, PyAny>>,
        max_output_bytes: usize,
    ) -> PyResult<Session> {
        let setup = guest_setup(
            preopens,
            resolver,
            report,
            None,
            memory_bytes,
            fuel,
            max_instances,
            max_cap_memory_bytes,
            None,
            InputMode::Bytes(Vec::new()),
            output_mode(stdout, max_output_bytes)?,
            output_mode(stderr, max_output_bytes)?,
            false,
        );
        let run = GuestRun {
            argv: vec!["-c".to_string(), String::new()],
            env,
            cwd,
            setup,
        };
        let live = py
            .detach(|| {
                let (mut live, result) = self.launch(run)?;
                result?;
                live.take_captured();
                wasmtime::Result::Ok(live)
            })
            .map_err(engine_error)?;
        Ok(Session {
            live: Mutex::new(Some(live)),
        })
    }
}

impl Guest {
    /// Starts an instance for `run` (the spare made ahead when there is
    /// one) and has the next one made ahead meanwhile: an embedding host
    /// runs again.
    fn launch(&self, run: GuestRun) -> wasmtime::Result<(LiveGuest, wasmtime::Result<i32>)> {
        self.engine.get().launch_ahead(&self.prepared, run)
    }
}

/// A live guest instance that keeps its state between calls.
#[pyclass(module = "pylon._engine", frozen)]
pub struct Session {
    live: Mutex<Option<LiveGuest>>,
}

#[pymethods]
impl Session {
    /// Runs `code` in the session's `__main__`; returns an [`Outcome`].
    /// After a stop or a trap the session is closed.
    #[pyo3(signature = (code, *, timeout_ms=None, interrupt=None))]
    fn run(
        &self,
        py: Python<'_>,
        code: String,
        timeout_ms: Option<u64>,
        interrupt: Option<PyRef<'_, Interrupt>>,
    ) -> PyResult<Outcome> {
        let signal = interrupt.map(|i| i.signal.clone());
        let main_thread = is_main_thread(py)?;
        let (result, captured) = py
            .detach(|| {
                let mut slot = self.live.lock().unwrap();
                let Some(live) = slot.as_mut() else {
                    return Err(wasmtime::format_err!("the session is closed"));
                };
                let result = live.run_more(
                    code,
                    timeout_ms.map(Duration::from_millis),
                    signal,
                    main_thread,
                );
                if result.is_err() {
                    // The session ends with this call: its caps' handles
                    // count in this outcome.
                    live.release_caps();
                }
                let captured = live.take_captured();
                if result.is_err() {
                    // A stopped or trapped instance is in an unknown state.
                    *slot = None;
                }
                Ok((result, captured))
            })
            .map_err(engine_error)?;
        Outcome::from_call(result, captured)
    }

    /// Drops the instance (its memory, its caps); later calls fail.
    fn close(&self, py: Python<'_>) {
        let live = self.live.lock().unwrap().take();
        py.detach(move || drop(live));
    }

    /// Whether the session can take more calls.
    #[getter]
    fn is_open(&self) -> bool {
        self.live.lock().unwrap().is_some()
    }
}
