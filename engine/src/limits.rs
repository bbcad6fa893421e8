//! Limits: how much memory a Store may use, how long a run may take, and how
//! a run is stopped from outside.
//!
//! Three pieces, each with one job:
//!
//! * [`Limiter`] is a Store's [`ResourceLimiter`]. wasmtime asks it once per
//!   memory and per table (a component holds several core instances, each
//!   with its own memories, and multi-memory is on), so it sums every grow
//!   itself: `max_bytes` bounds the Store's *total*. Past the limit a grow
//!   fails (`memory.grow` returns -1, `malloc` sees NULL) instead of
//!   trapping, so code in the sandbox can report the failure (CPython raises
//!   `MemoryError`; a cap can answer `limit-exceeded`).
//! * [`RunBudget`] is shared by every provider of one guest run: how many
//!   live instances it may hold and how much memory they may use together.
//! * [`RunControl`] carries one run's deadline and its "stop" flag (set by
//!   Ctrl-C or an embedding host). Epoch callbacks of the guest and of every
//!   provider check it, so a stop lands within one epoch tick of wasm
//!   execution.
//!
//! What this does *not* limit: time spent blocked inside a host call (a WASI
//! sleep or read never reaches an epoch check; the Python side abandons such
//! a run after a grace period), and host memory outside the Stores (payload
//! copies are bounded per call by the provider's payload limit).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Result};

/// What a table element is charged, in bytes (a funcref is one pointer).
const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances a Store may hold. A CPython guest has a few dozen (libc,
/// libpython, adapters, native extensions); caps have a handful.
const MAX_CORE_INSTANCES: usize = 1_000;
/// Memories and tables a Store may create.
const MAX_MEMORIES: usize = 100;
const MAX_TABLES: usize = 1_000;

/// Which limit stopped a grow, so a later trap can be reported for what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// The Store's own `max_bytes`.
    Store,
    /// The run's shared [`RunBudget`].
    Run,
}

/// A Store's memory ceiling across all its memories and tables.
pub struct Limiter {
    max_bytes: usize,
    used: usize,
    /// The first limit that refused a grow since [`Limiter::reset_hit`].
    pub hit: Option<LimitHit>,
    budget: Option<Arc<RunBudget>>,
}

impl Limiter {
    /// A limiter of `max_bytes`, also charging `budget` when given.
    pub fn new(max_bytes: u64, budget: Option<Arc<RunBudget>>) -> Self {
        Limiter {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            used: 0,
            hit: None,
            budget,
        }
    }

    /// Forgets an earlier refusal (a new call starts clean).
    pub fn reset_hit(&mut self) {
        self.hit = None;
    }

    /// Bytes of memory and table currently charged to this Store.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used
    }

    fn grow(&mut self, delta: usize) -> bool {
        if self.used.saturating_add(delta) > self.max_bytes {
            self.hit.get_or_insert(LimitHit::Store);
            return false;
        }
        if let Some(budget) = &self.budget {
            if !budget.charge(delta as u64) {
                self.hit.get_or_insert(LimitHit::Run);
                return false;
            }
        }
        self.used += delta;
        true
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        // The Store (and with it every memory charged here) is going away.
        if let Some(budget) = &self.budget {
            budget.release(self.used as u64);
        }
    }
}

/// Whether a grow to `desired` stays within the declared `maximum`. Past it
/// the grow fails anyway: refusing it here means nothing is charged for it.
fn within(desired: usize, maximum: Option<usize>) -> bool {
    maximum.is_none_or(|max| desired <= max)
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(within(desired, maximum) && self.grow(desired.saturating_sub(current)))
    }

    // A failed grow is never refunded. wasmtime also reports failures it
    // never asked us about (an overflowing `table.grow`, a memory's own
    // limits), so "undo the last charge" would refund an earlier grow that
    // did happen, and a guest could repeat that to grow without bound. An
    // allocation that fails after we allowed it is rare (the host is out of
    // memory) and over-counting it is safe.

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        let elements = desired.saturating_sub(current);
        Ok(within(desired, maximum) && self.grow(elements.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What all providers of one run may hold together.
pub struct RunBudget {
    max_instances: usize,
    max_bytes: u64,
    live: AtomicUsize,
    used: AtomicU64,
}

impl RunBudget {
    /// A budget of `max_instances` live providers using `max_bytes` in all.
    pub fn new(max_instances: usize, max_bytes: u64) -> Arc<Self> {
        Arc::new(RunBudget {
            max_instances,
            max_bytes,
            live: AtomicUsize::new(0),
            used: AtomicU64::new(0),
        })
    }

    /// A budget that never refuses (host-side providers outside any run).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX, u64::MAX)
    }

    /// The instance ceiling.
    pub fn max_instances(&self) -> usize {
        self.max_instances
    }

    /// Takes one instance slot; `None` when the run holds its maximum. The
    /// slot is given back when the returned guard drops.
    pub fn take_instance(self: &Arc<Self>) -> Option<InstanceSlot> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_instances).then_some(n + 1)
            })
            .ok()
            .map(|_| InstanceSlot(self.clone()))
    }

    fn charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.max_bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One live provider's claim on its run's [`RunBudget`].
pub struct InstanceSlot(Arc<RunBudget>);

impl InstanceSlot {
    /// The budget this slot belongs to.
    pub fn budget(&self) -> &Arc<RunBudget> {
        &self.0
    }
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a run was stopped from outside the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Its time limit ran out.
    TimedOut,
    /// Someone asked it to stop (Ctrl-C, an embedding host).
    Interrupted,
    /// It used up its fuel (the deterministic CPU budget).
    OutOfFuel,
}

/// A stop, as the error that unwinds the guest (found again with `downcast`).
#[derive(Debug)]
pub struct Stopped {
    /// Why.
    pub why: Stop,
    /// How long the run had been going.
    pub after: Duration,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.after.as_secs_f64();
        match self.why {
            Stop::TimedOut => write!(f, "timed out after {secs:.2} s"),
            Stop::Interrupted => write!(f, "was interrupted after {secs:.2} s"),
            Stop::OutOfFuel => write!(f, "ran out of fuel after {secs:.2} s"),
        }
    }
}

impl std::error::Error for Stopped {}

/// The part of a run its owner holds: the stop flag, and when the guest
/// started running (after its code was loaded, which a time limit does not
/// count).
#[derive(Debug, Default)]
pub struct RunSignal {
    stop: AtomicBool,
    started: Mutex<Option<Instant>>,
}

impl RunSignal {
    /// Asks the run to stop at its next epoch check.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// How long the guest has been running; `None` before it starts.
    pub fn running_for(&self) -> Option<Duration> {
        self.started.lock().unwrap().map(|t| t.elapsed())
    }
}

/// One run's deadline and stop flag, shared with whoever may stop it.
///
/// A session runs several calls in one Store: each call [`restart`]s the
/// control with its own time limit and stop flag, and everything holding the
/// control (the guest's epoch callback, its providers) sees the new one.
///
/// [`restart`]: RunControl::restart
#[derive(Debug)]
pub struct RunControl {
    phase: Mutex<Phase>,
    /// Also stop on a pending Python signal (Ctrl-C): set when the run is on
    /// Python's main thread, the only one signal handlers run on, and which
    /// cannot see them while it is inside the engine.
    python_signals: AtomicBool,
}

/// The current call's stop flag, start and deadline.
#[derive(Debug)]
struct Phase {
    signal: Arc<RunSignal>,
    started: Instant,
    deadline: Option<Instant>,
}

impl Phase {
    fn begin(timeout: Option<Duration>, signal: Option<Arc<RunSignal>>) -> Self {
        let signal = signal.unwrap_or_default();
        let started = Instant::now();
        *signal.started.lock().unwrap() = Some(started);
        Phase {
            signal,
            started,
            deadline: timeout.map(|t| started + t),
        }
    }
}

impl RunControl {
    /// Control for a run whose guest starts running now, with an optional
    /// time limit; `signal` is what its owner holds (`None`: a private one).
    pub fn start(timeout: Option<Duration>, signal: Option<Arc<RunSignal>>) -> Arc<Self> {
        Arc::new(RunControl {
            phase: Mutex::new(Phase::begin(timeout, signal)),
            python_signals: AtomicBool::new(false),
        })
    }

    /// Whether [`check`](Self::check) also runs Python's signal handlers.
    pub fn watch_python_signals(&self, on: bool) {
        self.python_signals.store(on, Ordering::Relaxed);
    }

    /// Starts the next call of a session: a fresh time limit and stop flag.
    pub fn restart(&self, timeout: Option<Duration>, signal: Option<Arc<RunSignal>>) {
        *self.phase.lock().unwrap() = Phase::begin(timeout, signal);
    }

    /// A [`Stopped`] for `why`, timed from the start of the current call.
    pub fn stopped(&self, why: Stop) -> Stopped {
        Stopped {
            why,
            after: self.phase.lock().unwrap().started.elapsed(),
        }
    }

    /// `Err(Stopped)` when the run must end now.
    ///
    /// # Errors
    /// When a stop was requested or the deadline has passed.
    pub fn check(&self) -> Result<()> {
        let phase = self.phase.lock().unwrap();
        let why = if phase.signal.stop_requested() {
            Stop::Interrupted
        } else if phase.deadline.is_some_and(|d| Instant::now() >= d) {
            Stop::TimedOut
        } else if self.python_signals.load(Ordering::Relaxed) && python_signal_pending() {
            Stop::Interrupted
        } else {
            return Ok(());
        };
        let after = phase.started.elapsed();
        Err(wasmtime::Error::new(Stopped { why, after }))
    }
}

/// A `KeyboardInterrupt` or `SystemExit` raised by the host's Python code
/// during a run (a resolver, a host cap): it is put back for whoever called
/// the engine, and the run stops. It is never turned into a cap error.
pub fn stop_for(py: pyo3::Python<'_>, err: pyo3::PyErr) -> wasmtime::Error {
    err.restore(py);
    wasmtime::Error::new(Stopped {
        why: Stop::Interrupted,
        after: Duration::ZERO,
    })
}

/// Runs Python's signal handlers; a handler's exception (`KeyboardInterrupt`)
/// stays pending for whoever called the engine, and the run stops.
fn python_signal_pending() -> bool {
    pyo3::Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(err) => {
            err.restore(py);
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_control_has_a_fresh_deadline_and_flag() {
        let first = Arc::new(RunSignal::default());
        let control = RunControl::start(Some(Duration::from_millis(1)), Some(first.clone()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(control.check().is_err(), "the first call's deadline passed");
        control.restart(None, None);
        assert!(control.check().is_ok(), "the next call has no deadline");
        first.request_stop();
        assert!(
            control.check().is_ok(),
            "the old call's flag no longer stops anything"
        );
    }

    #[test]
    fn limiter_sums_every_memory_and_refuses_instead_of_trapping() {
        let mut l = Limiter::new(100, None);
        assert!(l.memory_growing(0, 60, None).unwrap());
        // A second memory of the same Store counts against the same total.
        assert!(!l.memory_growing(0, 50, None).unwrap());
        assert_eq!(l.hit, Some(LimitHit::Store));
        assert!(l.memory_growing(60, 100, None).unwrap());
        assert_eq!(l.used(), 100);
    }

    #[test]
    fn tables_count_against_memory() {
        let mut l = Limiter::new(80, None);
        assert!(l.table_growing(0, 10, None).unwrap());
        assert!(!l.table_growing(10, 11, None).unwrap());
    }

    #[test]
    fn a_grow_past_the_declared_maximum_is_not_charged() {
        let mut l = Limiter::new(1000, None);
        assert!(!l.memory_growing(0, 40, Some(30)).unwrap());
        assert!(!l.table_growing(0, 4, Some(3)).unwrap());
        assert_eq!(l.used(), 0);
        assert_eq!(l.hit, None);
    }

    #[test]
    fn failures_wasmtime_reports_on_its_own_refund_nothing() {
        // A module that grows memory, then makes a table.grow overflow (which
        // wasmtime reports as a failed grow without asking the limiter): the
        // memory it got must stay charged, or it could grow without bound.
        let engine = wasmtime::Engine::default();
        let wasm = wat::parse_str(
            r#"(module (memory 1) (table 1 funcref)
                 (func (export "step") (result i32)
                   (drop (memory.grow (i32.const 1)))
                   (drop (table.grow (ref.null func) (i32.const -1)))
                   (memory.size)))"#,
        )
        .unwrap();
        let module = wasmtime::Module::new(&engine, &wasm).unwrap();
        let mut store = wasmtime::Store::new(&engine, Limiter::new(4 << 16, None));
        store.limiter(|l| l);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let step = instance
            .get_typed_func::<(), i32>(&mut store, "step")
            .unwrap();
        let mut pages = 0;
        for _ in 0..10 {
            pages = step.call(&mut store, ()).unwrap();
        }
        assert!(pages <= 4, "grew to {pages} pages under a 4-page limit");
    }

    #[test]
    fn run_budget_is_shared_and_released_on_drop() {
        let budget = RunBudget::new(2, 100);
        let mut a = Limiter::new(1000, Some(budget.clone()));
        let mut b = Limiter::new(1000, Some(budget.clone()));
        assert!(a.memory_growing(0, 70, None).unwrap());
        assert!(!b.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.hit, Some(LimitHit::Run));
        drop(a);
        assert!(b.memory_growing(0, 40, None).unwrap());
    }

    #[test]
    fn instance_slots_are_bounded_and_returned() {
        let budget = RunBudget::new(2, 100);
        let one = budget.take_instance().unwrap();
        let _two = budget.take_instance().unwrap();
        assert!(budget.take_instance().is_none());
        drop(one);
        assert!(budget.take_instance().is_some());
    }

    #[test]
    fn control_reports_stop_and_deadline() {
        let signal = Arc::new(RunSignal::default());
        assert!(signal.running_for().is_none());
        let c = RunControl::start(None, Some(signal.clone()));
        assert!(signal.running_for().is_some());
        assert!(c.check().is_ok());
        signal.request_stop();
        let err = c.check().unwrap_err();
        assert_eq!(
            err.downcast_ref::<Stopped>().unwrap().why,
            Stop::Interrupted
        );
        let c = RunControl::start(Some(Duration::ZERO), None);
        let err = c.check().unwrap_err();
        assert_eq!(err.downcast_ref::<Stopped>().unwrap().why, Stop::TimedOut);
    }
}
