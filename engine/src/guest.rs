//! Running the CPython guest (`pylon.wasm`) once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::{
    ComponentExportIndex, InstancePre, Linker, Resource, TypedFunc, WasmList,
};
use wasmtime::error::Context;
use wasmtime::StoreContextMut;
use wasmtime::{format_err, Result};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as PollHost, HostPollable};

use crate::bindings::host::DynlinkHost;
use crate::bindings::DynError;
use crate::engine::Shared;
use crate::hostcap::CapInstance;
use crate::limits::{Limiter, RunControl, RunSignal, Stop, Stopped};
use crate::linker::{GuestState, RunContext};
use crate::output::{InputMode, Output, OutputMode};
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
    /// `argv` as Python will see it in `sys.argv` (after the `-c` handling).
    pub argv: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The guest's working directory.
    pub cwd: String,
    /// Everything else: folders, limits, stdio, stop control, caps.
    pub setup: GuestSetup,
}

/// How a guest instance is set up (the same for every call of a session).
pub struct GuestSetup {
    /// Folders the guest may see.
    pub preopens: Vec<Preopen>,
    /// The guest's limits.
    pub limits: GuestLimits,
    /// The first call's wall-clock limit (counted from when the guest starts,
    /// not while its code is loaded).
    pub timeout: Option<std::time::Duration>,
    /// The first call's stop flag, held by whoever may stop it.
    pub signal: Option<Arc<RunSignal>>,
    /// What the guest reads on stdin.
    pub stdin: InputMode,
    /// Where the guest's stdout goes.
    pub stdout: OutputMode,
    /// Where the guest's stderr goes.
    pub stderr: OutputMode,
    /// Resolver, reporter, provider budget and stop control of the run.
    pub run: RunContext,
    /// Stop on Ctrl-C: the run is on Python's main thread.
    pub python_signals: bool,
}

/// How much a guest may use (its time limit lives in its [`RunControl`]).
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Total linear memory and tables of the guest, bytes.
    pub memory_bytes: u64,
    /// Fuel for each call (an engine built with fuel only; `None` there
    /// means unlimited).
    pub fuel: Option<u64>,
}

/// The guest linker: WASI plus `compose:dynlink/linker`.
///
/// # Errors
/// When wasmtime rejects a definition (a bug).
pub fn guest_linker(shared: &Shared) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(&shared.engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    DynlinkHost::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    // A guest waiting in the host (`time.sleep`, `select`) never reaches an
    // epoch check, so its time limit and stop flag would not hold there:
    // the two calls that block wait in slices and check between them.
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, GuestState>,
         (list,): (Vec<Resource<DynPollable>>,)|
         -> Result<(Vec<u32>,)> {
            let control = store.data().control();
            let table = &mut store.data_mut().table;
            bounded_wait(&control, PollHost::poll(table, list)).map(|ready| (ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, GuestState>,
         (pollable,): (Resource<DynPollable>,)|
         -> Result<()> {
            let control = store.data().control();
            let table = &mut store.data_mut().table;
            bounded_wait(&control, HostPollable::block(table, pollable))
        },
    )?;
    // `instance.invoke` as bindgen generates it lifts the payload into a Vec
    // and the cap's call copies that Vec again into the cap's memory. This
    // version takes the payload as a view of the guest's memory (bounds and
    // alignment checked on lift, nothing copied) and hands the cap that
    // view: one copy per request instead of two. The reply still crosses as
    // a Vec (lifted from the cap, lowered into the guest): a host function
    // must return owned values, and the guest's realloc runs only after it
    // returns, so there is nowhere to write the reply to earlier.
    let mut dynlink = linker.instance(DYNLINK_LINKER)?;
    dynlink.func_wrap(
        "[method]instance.invoke",
        |mut store: StoreContextMut<'_, GuestState>,
         (this, method, payload): (Resource<CapInstance>, String, WasmList<u8>)|
         -> Result<(Result<Vec<u8>, DynError>,)> {
            let view = payload.as_le_slice(&store);
            let (ptr, len) = (view.as_ptr(), view.len());
            // SAFETY: `view` borrows the guest's store, yet the call below
            // needs `&mut GuestState` (the cap lives in its resource table).
            // The bytes stay valid and unchanged for the whole call: they are
            // in the guest's linear memory, not in `GuestState`; the guest is
            // suspended in this host call, so no guest code runs (it cannot
            // write, grow or free that memory); components have no shared
            // memories, so no other thread can; and nothing on the path
            // touches the guest's store: a wasm cap runs in its own Store
            // with its own memory and only WASI imports, and a host cap
            // copies the payload into a Python `bytes` before any Python
            // code runs (src/hostcap.rs). The slice is not used after
            // `invoke_cap` returns, before anything (the reply's lowering,
            // which runs the guest's realloc) may touch the memory again.
            let payload = unsafe { std::slice::from_raw_parts(ptr, len) };
            store
                .data_mut()
                .invoke_cap(&this, &method, payload)
                .map(|reply| (reply,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The `compose:dynlink/linker` instance (wit/dynlink).
const DYNLINK_LINKER: &str = "compose:dynlink/linker@0.1.0";

/// The `wasi:io/poll` instance wasmtime-wasi defines.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// How often a guest waiting in the host checks its deadline and stop flag.
const WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// Awaits `wait` (wasmtime-wasi's own poll), checking `control` every
/// [`WAIT_SLICE`]: a stop unwinds the guest from inside its wait.
fn bounded_wait<T>(
    control: &RunControl,
    wait: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    wasmtime_wasi::runtime::in_tokio(async {
        let mut wait = std::pin::pin!(wait);
        loop {
            match tokio::time::timeout(WAIT_SLICE, wait.as_mut()).await {
                Ok(done) => return done,
                Err(_) => control.check()?,
            }
        }
    })
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

/// The guest component ready to instantiate: linked once, reused by
/// every run (wasmtime's `InstancePre`; instantiation then maps the
/// pre-initialised heap copy-on-write instead of building it).
pub struct PreparedGuest {
    pre: InstancePre<GuestState>,
    run: ComponentExportIndex,
    run_more: Option<ComponentExportIndex>,
    /// One instance made ahead of the next run ([`Retirer::prewarm`]).
    spare: Mutex<Option<Instantiated>>,
    /// Whether a spare is being made now (at most one at a time).
    prewarming: AtomicBool,
    /// Set once a spare could not be made because the guest calls the host
    /// while it is instantiated ([`Instantiated::spare`]).
    no_spares: AtomicBool,
    /// Runs and sessions that started from a spare.
    spare_starts: AtomicU64,
}

impl PreparedGuest {
    /// Loads (verifying or authenticating, see [`crate::cache`]) and links
    /// the guest at `path`.
    ///
    /// # Errors
    /// When it cannot be loaded, needs imports the host does not offer, or
    /// is not a Pylon guest.
    pub fn load(
        shared: &Shared,
        linker: &Linker<GuestState>,
        path: &std::path::Path,
        digest: &str,
    ) -> Result<Self> {
        let (component, _) = shared
            .cache
            .component(&shared.engine, path, digest)
            .context("cannot load the guest")?;
        let entry = component
            .get_export_index(None, ENTRY_INTERFACE)
            .ok_or_else(|| {
                format_err!("the guest does not export {ENTRY_INTERFACE}: is it a Pylon guest?")
            })?;
        let run = component
            .get_export_index(Some(&entry), "run")
            .ok_or_else(|| format_err!("{ENTRY_INTERFACE} has no `run`"))?;
        // Older guests have no `run-more`: they run, but cannot hold a session.
        let run_more = component.get_export_index(Some(&entry), "run-more");
        let pre = linker
            .instantiate_pre(&component)
            .context("cannot link the guest")?;
        Ok(PreparedGuest {
            pre,
            run,
            run_more,
            spare: Mutex::new(None),
            prewarming: AtomicBool::new(false),
            no_spares: AtomicBool::new(false),
            spare_starts: AtomicU64::new(0),
        })
    }

    /// The instance made ahead for a run with `memory_bytes`, if one is ready.
    pub fn take_spare(&self, memory_bytes: u64) -> Option<Instantiated> {
        let mut spare = self.spare.lock().unwrap();
        match &*spare {
            Some(ready) if ready.memory_bytes == memory_bytes => {
                self.spare_starts.fetch_add(1, Ordering::Relaxed);
                spare.take()
            }
            _ => None,
        }
    }

    /// Runs and sessions that started from an instance made ahead.
    pub fn spare_starts(&self) -> u64 {
        self.spare_starts.load(Ordering::Relaxed)
    }

    /// Whether instances of this guest can be made ahead (false once one
    /// turned out to call the host while it was instantiated).
    pub fn makes_spares(&self) -> bool {
        !self.no_spares.load(Ordering::Relaxed)
    }
}

/// A guest instantiated whose entry has not been called yet: for a run, with
/// the run's own state, or as a spare made ahead ([`Instantiated::spare`]),
/// unarmed: an empty WASI context, no caps, no deadline (see
/// [`GuestState::unarmed`]) until the run arms it. Nothing of the guest has
/// run in a spare, so it is as fresh as an instance made at the run's start.
///
/// Instantiating `pylon.wasm` links a few thousand functions across
/// componentize-py's core modules and maps the heap image: most of a fresh
/// run's engine time. Made ahead on the housekeeping thread, it is off the
/// caller's path.
pub struct Instantiated {
    store: Store<GuestState>,
    run: RunFunc,
    run_more: Option<RunMoreFunc>,
    /// The memory limit its limiter enforces: a spare serves only runs with
    /// the same one.
    memory_bytes: u64,
}

impl Instantiated {
    /// Makes a spare: instantiates `prepared` unarmed under a memory limit of
    /// `memory_bytes`. `None` when the guest called the host meanwhile (a
    /// component whose start-up reads its preopens, say): what it got from an
    /// empty context would stay with it, so no instance of it can be made
    /// ahead of its run.
    ///
    /// # Errors
    /// When instantiation fails (a memory limit too small for the guest).
    pub fn spare(
        shared: &Arc<Shared>,
        linkers: &Arc<ProviderLinkers>,
        prepared: &PreparedGuest,
        memory_bytes: u64,
    ) -> Result<Option<Self>> {
        let limiter = Limiter::new(memory_bytes, None);
        let state = GuestState::unarmed(limiter, shared.clone(), linkers.clone());
        let spare = Self::instantiate(shared, prepared, state, memory_bytes)?;
        Ok((!spare.store.data().touched_unarmed()).then_some(spare))
    }

    /// Instantiates `prepared` in a Store holding `state` (whose limiter
    /// enforces `memory_bytes`).
    ///
    /// # Errors
    /// When instantiation fails (a memory limit too small for the guest to
    /// start, a guest that does not match the entry's signature).
    fn instantiate(
        shared: &Arc<Shared>,
        prepared: &PreparedGuest,
        state: GuestState,
        memory_bytes: u64,
    ) -> Result<Self> {
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(usize::MAX);
        if shared.fuel {
            // Each call sets its own budget; instantiation runs no script.
            store.set_fuel(u64::MAX)?;
        }
        let control = store.data().control();
        stop_on(&mut store, control);
        let instance = prepared
            .pre
            .instantiate(&mut store)
            .map_err(|e| explain_start_failure(e, &store.data().limiter, memory_bytes))
            .context("cannot instantiate the guest")?;
        let run = instance
            .get_typed_func(&mut store, prepared.run)
            .context("the guest's entry has the wrong signature")?;
        let run_more = match prepared.run_more {
            Some(index) => Some(
                instance
                    .get_typed_func(&mut store, index)
                    .context("the guest's run-more has the wrong signature")?,
            ),
            None => None,
        };
        Ok(Instantiated {
            store,
            run,
            run_more,
            memory_bytes,
        })
    }
}

/// What a call of a guest returns besides its status.
#[derive(Default)]
pub struct Captured {
    /// Captured stdout (empty unless captured).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Bytes dropped over the capture limit, stdout and stderr together.
    pub dropped: u64,
    /// Fuel the call consumed (engines with fuel only).
    pub fuel_consumed: Option<u64>,
    /// Handles each cap released when it was dropped (`$pylon/release-all`)
    /// during the call, or at its end after [`LiveGuest::release_caps`].
    pub handles_released: BTreeMap<String, u64>,
}

type RunFunc = TypedFunc<(Vec<String>, Vec<(String, String)>, String), (i32,)>;
type RunMoreFunc = TypedFunc<(String,), (i32,)>;

/// A live guest instance: one run, or a session of several calls.
pub struct LiveGuest {
    store: Store<GuestState>,
    run: RunFunc,
    run_more: Option<RunMoreFunc>,
    control: Arc<RunControl>,
    stdout: Option<Output>,
    stderr: Option<Output>,
    /// Fuel each call gets, when the engine meters fuel.
    fuel: Option<u64>,
    /// Set once a call was stopped or trapped: the instance's state is
    /// unknown, so it takes no more calls.
    dead: Option<String>,
}

/// Which of the guest's output streams [`attach_output`] sets.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Gives the guest its `which` stream as `mode` says: a file or the host's
/// own stream are handed to WASI as they are; a capture or a callback is an
/// [`Output`], returned for the run to read back. The flag: inherited.
fn attach_output(
    wasi: &mut WasiCtxBuilder,
    which: Stream,
    mode: OutputMode,
) -> (Option<Output>, bool) {
    fn set(
        wasi: &mut WasiCtxBuilder,
        which: Stream,
        out: impl wasmtime_wasi::cli::StdoutStream + 'static,
    ) {
        match which {
            Stream::Stdout => wasi.stdout(out),
            Stream::Stderr => wasi.stderr(out),
        };
    }
    match mode {
        OutputMode::Inherit => {
            match which {
                Stream::Stdout => wasi.inherit_stdout(),
                Stream::Stderr => wasi.inherit_stderr(),
            };
            (None, true)
        }
        OutputMode::File(file) => {
            set(wasi, which, wasmtime_wasi::cli::OutputFile::new(file));
            (None, false)
        }
        OutputMode::Capture(limit) => {
            let out = Output::capture(limit);
            set(wasi, which, out.clone());
            (Some(out), false)
        }
        OutputMode::Stream(cb) => {
            let out = Output::stream(cb);
            set(wasi, which, out.clone());
            (Some(out), false)
        }
    }
}

impl LiveGuest {
    /// Instantiates `prepared` with `setup`'s folders, limits, stdio and caps.
    ///
    /// Must be called without the GIL held: the resolver re-acquires it.
    ///
    /// # Errors
    /// When a folder cannot be opened or instantiation fails (a memory
    /// limit too small for the guest to start, a trap in its start-up).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        shared: &Arc<Shared>,
        linkers: &Arc<ProviderLinkers>,
        prepared: &PreparedGuest,
        spare: Option<Instantiated>,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        setup: GuestSetup,
    ) -> Result<Self> {
        let memory_bytes = setup.limits.memory_bytes;
        let fuel = setup.limits.fuel;
        let mut wasi = WasiCtx::builder();
        wasi.args(argv).envs(env).initial_cwd(cwd);
        let (stdout, inherit_out) = attach_output(&mut wasi, Stream::Stdout, setup.stdout);
        let (stderr, inherit_err) = attach_output(&mut wasi, Stream::Stderr, setup.stderr);
        match setup.stdin {
            InputMode::Bytes(bytes) => wasi.stdin(MemoryInputPipe::new(bytes)),
            InputMode::File(file) => wasi.stdin(wasmtime_wasi::cli::InputFile::new(file)),
            // The CLI's guest reads the terminal like `python` does; an
            // embedded guest reads nothing unless given bytes.
            InputMode::Default if inherit_out && inherit_err => wasi.inherit_stdin(),
            InputMode::Default => &mut wasi,
        };
        add_preopens(&mut wasi, &setup.preopens)?;
        let control = RunControl::start(setup.timeout, setup.signal);
        control.watch_python_signals(setup.python_signals);
        let mut context = setup.run;
        context.control = Some(control.clone());
        let instance = match spare {
            Some(mut spare) => {
                spare.store.data_mut().arm(wasi.build(), context);
                stop_on(&mut spare.store, control.clone());
                spare
            }
            None => {
                let limiter = Limiter::new(memory_bytes, None);
                let state = GuestState::new(
                    wasi.build(),
                    limiter,
                    shared.clone(),
                    linkers.clone(),
                    context,
                );
                Instantiated::instantiate(shared, prepared, state, memory_bytes)?
            }
        };
        let Instantiated {
            store,
            run,
            run_more,
            ..
        } = instance;
        Ok(LiveGuest {
            store,
            run,
            run_more,
            control,
            stdout,
            stderr,
            fuel: shared.fuel.then(|| fuel.unwrap_or(u64::MAX)),
            dead: None,
        })
    }

    /// Starts an instance for `run` and runs its argv once (every run and
    /// every session begins so); the outer error is a failed start, the
    /// inner one the run's (a stop or a trap).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn launch(
        shared: &Arc<Shared>,
        linkers: &Arc<ProviderLinkers>,
        prepared: &PreparedGuest,
        spare: Option<Instantiated>,
        run: GuestRun,
    ) -> Result<(Self, Result<i32>)> {
        let mut guest = LiveGuest::start(
            shared, linkers, prepared, spare, &run.argv, &run.env, &run.cwd, run.setup,
        )?;
        let status = guest.run(run.argv, run.env, run.cwd);
        Ok((guest, status))
    }

    /// Runs the script or `-c` code of `argv`; returns its exit status.
    ///
    /// # Errors
    /// A stop ([`Stopped`]: timeout, interrupt, fuel) or a trap.
    pub fn run(
        &mut self,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
    ) -> Result<i32> {
        let run = self.run;
        self.call(move |store| run.call(store, (argv, env, cwd)).map(|(code,)| code))
    }

    /// Runs more code in the `__main__` of the last run, under a fresh
    /// time limit and stop flag.
    ///
    /// # Errors
    /// As [`Self::run`], or when the guest cannot hold a session.
    pub fn run_more(
        &mut self,
        code: String,
        timeout: Option<std::time::Duration>,
        signal: Option<Arc<RunSignal>>,
        python_signals: bool,
    ) -> Result<i32> {
        let Some(run_more) = self.run_more else {
            return Err(format_err!(
                "this guest cannot hold a session (it has no run-more): rebuild it with `composectl setup`"
            ));
        };
        self.control.restart(timeout, signal);
        self.control.watch_python_signals(python_signals);
        self.store.data_mut().limiter.reset_hit();
        self.call(move |store| run_more.call(store, (code,)).map(|(code,)| code))
    }

    fn call(&mut self, f: impl FnOnce(&mut Store<GuestState>) -> Result<i32>) -> Result<i32> {
        if let Some(why) = &self.dead {
            return Err(format_err!("the session ended: {why}"));
        }
        if let Some(fuel) = self.fuel {
            self.store.set_fuel(fuel)?;
        }
        let result = finish(f(&mut self.store), &self.control);
        if let Err(e) = &result {
            self.dead = Some(format!("{e}"));
        }
        result
    }

    /// What the last call wrote (captured streams only) and the fuel used so
    /// far; the captures are emptied.
    pub fn take_captured(&mut self) -> Captured {
        let (stdout, d1) = self.stdout.as_ref().map(Output::take).unwrap_or_default();
        let (stderr, d2) = self.stderr.as_ref().map(Output::take).unwrap_or_default();
        let fuel_consumed = self
            .fuel
            .and_then(|budget| Some(budget.saturating_sub(self.store.get_fuel().ok()?)));
        Captured {
            stdout,
            stderr,
            dropped: d1 + d2,
            fuel_consumed,
            handles_released: self.store.data().log().take_released(),
        }
    }

    /// Releases the handles of every cap the guest still holds, so their
    /// counts are in the next [`Self::take_captured`]. For an instance that
    /// runs no more (a finished run, a session that stopped): dropping it
    /// would do the same, but later and on another thread.
    pub fn release_caps(&mut self) {
        self.store.data_mut().release_caps();
    }
}

/// What the housekeeping thread does between runs.
enum Chore {
    /// Drop a finished instance.
    Retire(LiveGuest),
    /// Make the next run's instance ahead ([`Instantiated`]).
    Prewarm {
        shared: Arc<Shared>,
        linkers: Arc<ProviderLinkers>,
        prepared: Arc<PreparedGuest>,
        memory_bytes: u64,
    },
}

/// Tears finished guest instances down and makes the next one ahead, on a
/// thread of its own.
///
/// Tearing an instance down (resetting its pool slot, unmapping, dropping
/// its caps' Stores) and instantiating the next are most of a fresh run's
/// engine time and nothing the caller has to wait for. A bounded queue keeps
/// finished instances from piling up faster than they are dropped; a
/// prewarm that finds the queue full is skipped (the run then instantiates
/// its own, as without a spare).
pub struct Retirer {
    queue: Mutex<std::sync::mpsc::SyncSender<Chore>>,
}

impl Retirer {
    /// Starts the housekeeping thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn new() -> Result<Self> {
        let (queue, chores) = std::sync::mpsc::sync_channel::<Chore>(2);
        std::thread::Builder::new()
            .name("pylon-retire".into())
            .spawn(move || chores.into_iter().for_each(Chore::run))?;
        Ok(Retirer {
            queue: Mutex::new(queue),
        })
    }

    /// Hands `guest` over to be dropped (dropped here if the thread is gone).
    pub fn retire(&self, guest: LiveGuest) {
        let sent = self.queue.lock().unwrap().send(Chore::Retire(guest));
        if let Err(unsent) = sent {
            drop(unsent.0);
        }
    }

    /// Makes a spare instance of `prepared` for the next run with
    /// `memory_bytes`, unless one is being made already.
    pub fn prewarm(
        &self,
        shared: &Arc<Shared>,
        linkers: &Arc<ProviderLinkers>,
        prepared: &Arc<PreparedGuest>,
        memory_bytes: u64,
    ) {
        if prepared.no_spares.load(Ordering::Relaxed)
            || prepared.prewarming.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let chore = Chore::Prewarm {
            shared: shared.clone(),
            linkers: linkers.clone(),
            prepared: prepared.clone(),
            memory_bytes,
        };
        if self.queue.lock().unwrap().try_send(chore).is_err() {
            prepared.prewarming.store(false, Ordering::Release);
        }
    }
}

impl Chore {
    fn run(self) {
        match self {
            Chore::Retire(guest) => drop(guest),
            Chore::Prewarm {
                shared,
                linkers,
                prepared,
                memory_bytes,
            } => {
                // A spare that cannot be made is no error: the run makes its
                // own and reports why it failed.
                match Instantiated::spare(&shared, &linkers, &prepared, memory_bytes) {
                    // Replaces (drops) a spare made for another memory limit.
                    Ok(Some(spare)) => *prepared.spare.lock().unwrap() = Some(spare),
                    // This guest calls the host while it is instantiated:
                    // every run instantiates its own.
                    Ok(None) => prepared.no_spares.store(true, Ordering::Relaxed),
                    // A memory limit too small, say: the run that makes its
                    // own instance reports it.
                    Err(_) => {}
                }
                prepared.prewarming.store(false, Ordering::Release);
            }
        }
    }
}

/// Instantiates the guest and calls its entry once; returns the exit status
/// and what it wrote to captured streams.
///
/// Must be called without the GIL held: the resolver re-acquires it.
///
/// # Errors
/// When the guest cannot be instantiated, traps, or is stopped
/// (a [`crate::limits::Stopped`] error: timeout, interrupt or fuel). A Python
/// exception in the script is not an error here: the guest prints the
/// traceback and returns a non-zero status.
pub fn run_guest(
    shared: &Arc<Shared>,
    linkers: &Arc<ProviderLinkers>,
    prepared: &PreparedGuest,
    run: GuestRun,
) -> Result<(i32, Captured)> {
    let (mut guest, status) = LiveGuest::launch(shared, linkers, prepared, None, run)?;
    guest.release_caps();
    Ok((status?, guest.take_captured()))
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
            if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
                return Err(wasmtime::Error::new(control.stopped(Stop::OutOfFuel)));
            }
            Err(err.context("the guest trapped"))
        }
    }
}
