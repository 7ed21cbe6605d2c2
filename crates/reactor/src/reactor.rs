//! The event loop itself: registration of I/O sources, the loop turn, and
//! the scheduling entry points.

use std::any::Any;
use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::delayed::DelayedCall;
use crate::handle::ReactorHandle;
use crate::interest::Readiness;
use crate::panics;
use crate::pool::ThreadPool;
use crate::shared::Shared;
use crate::signals::SignalGuard;
use crate::slab::Slab;
use crate::source::{Handler, Sources};
use crate::stats::{Counters, Gauges, ReactorStats};
use crate::sys::{Events, Poller};
use crate::task::Executor;
use crate::timer_queue::{duration_nanos, Callback, TimerQueue};
use crate::triggers::{Phase, SystemEvent, TriggerId, Triggers};

/// How many events one wait may return.
const EVENT_CAPACITY: usize = 1024;

/// Due timers run per turn before I/O gets its turn again; the rest run on
/// the next turn, which does not wait.
const MAX_TIMERS_PER_TURN: usize = 4096;

/// How many worker threads [`Reactor::defer_to_thread`] may run at once.
const DEFAULT_POOL_THREADS: usize = 8;

/// Errors from running or stopping a reactor.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReactorError {
    /// [`Reactor::stop`] was called on a reactor that is not running, or
    /// that is already stopping (Twisted's `ReactorNotRunning`).
    #[doc(alias = "ReactorNotRunning")]
    NotRunning,
    /// [`Reactor::run`] or [`Reactor::iterate`] was called while the
    /// reactor was already running (Twisted's `ReactorAlreadyRunning`).
    #[doc(alias = "ReactorAlreadyRunning")]
    AlreadyRunning,
    /// Waiting on the operating system's poller failed.
    Io(io::Error),
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReactorError::NotRunning => f.write_str("the reactor is not running"),
            ReactorError::AlreadyRunning => f.write_str("the reactor is already running"),
            ReactorError::Io(e) => write!(f, "polling for events failed: {e}"),
        }
    }
}

impl std::error::Error for ReactorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReactorError::Io(e) => Some(e),
            _ => None,
        }
    }
}

type Continuation = Box<dyn FnOnce(&Reactor, Box<dyn Any + Send>)>;

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    events: RefCell<Events>,
    ready: RefCell<Vec<(usize, Readiness)>>,
    pub(crate) sources: RefCell<Sources>,
    timers: RefCell<TimerQueue>,
    soon: RefCell<VecDeque<Callback>>,
    /// Sources to dispatch with `Readiness::WOKEN` at the end of the turn:
    /// `(key, registration id)`, each registration at most once.
    pub(crate) woken: RefCell<Vec<(usize, u64)>>,
    continuations: RefCell<Slab<Continuation>>,
    pub(crate) tasks: Executor,
    pool: ThreadPool,
    clock: Clock,
    triggers: Triggers,
    handle_signals: Cell<bool>,
    running: Cell<bool>,
    stopping: Cell<bool>,
    in_turn: Cell<bool>,
    pub(crate) counters: Rc<Counters>,
    /// The timers and sources gauges last measured: what a snapshot
    /// taken while their tables are borrowed reports.
    last_gauges: Cell<(u64, u64)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
        // Drop handlers and callbacks here, while the poller still exists:
        // each handler's registrations remove themselves from it.
        drop(self.sources.get_mut().drain());
        drop(self.timers.get_mut().clear());
        self.soon.get_mut().clear();
        drop(self.continuations.get_mut().drain());
        self.tasks.drain();
        self.triggers.clear();
        // Handles on other threads may live on; the descriptors do not.
        self.shared.release_poller();
    }
}

/// A single-threaded event loop (Twisted's reactor).
///
/// A reactor waits for readiness on registered sockets, for due
/// [timers](Reactor::call_later) and for work sent from other threads
/// through a [`ReactorHandle`], and runs the matching callbacks, one at a
/// time, on the thread that calls [`Reactor::run`].
///
/// `Reactor` is a cheap, cloneable handle (`Rc` inside); clones refer to
/// the same loop. It is neither `Send` nor `Sync`: one reactor belongs to
/// one thread, and a process may run one per thread. Unlike Twisted's, a
/// reactor is an ordinary value: it can be created, run, stopped and run
/// again, and it is torn down — closing every registered source — when the
/// last clone is dropped.
///
/// Objects the reactor owns (handlers, timer callbacks) should hold a
/// [`WeakReactor`] or use the `&Reactor` they are given, not a `Reactor`
/// clone, or the reactor and they keep each other alive.
///
/// ```
/// use std::time::Duration;
/// use torsion_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// reactor.call_later(Duration::from_millis(1), |reactor| {
///     reactor.stop().expect("the reactor is running");
/// });
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "IReactorCore")]
#[doc(alias = "IReactorTime")]
#[derive(Clone)]
pub struct Reactor {
    inner: Rc<Inner>,
}

/// A non-owning reference to a [`Reactor`], for objects the reactor itself
/// owns (see [`Reactor::downgrade`]).
#[derive(Clone, Default)]
pub struct WeakReactor {
    inner: Weak<Inner>,
}

impl WeakReactor {
    /// A reference that never upgrades.
    pub fn new() -> WeakReactor {
        WeakReactor { inner: Weak::new() }
    }

    /// The reactor, if it still exists.
    pub fn upgrade(&self) -> Option<Reactor> {
        self.inner.upgrade().map(|inner| Reactor { inner })
    }
}

impl fmt::Debug for WeakReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakReactor")
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("running", &self.is_running())
            .field("sources", &self.source_count())
            .field("pending_calls", &self.pending_call_count())
            .finish()
    }
}

impl Reactor {
    /// Creates a reactor on the system's monotonic clock.
    ///
    /// # Errors
    /// If the operating system's poller cannot be created (for example
    /// when the process is out of file descriptors).
    pub fn new() -> io::Result<Reactor> {
        Reactor::with_clock(Clock::System(std::time::Instant::now()))
    }

    /// Creates a reactor whose time moves only when the returned
    /// [`ManualClock`] is advanced, for deterministic tests of timed logic.
    ///
    /// # Errors
    /// As for [`Reactor::new`].
    pub fn with_manual_clock() -> io::Result<(Reactor, ManualClock)> {
        let now = Rc::new(Cell::new(0));
        let reactor = Reactor::with_clock(Clock::Manual(now.clone()))?;
        let clock = ManualClock {
            now,
            reactor: reactor.downgrade(),
        };
        Ok((reactor, clock))
    }

    fn with_clock(clock: Clock) -> io::Result<Reactor> {
        let poller = Poller::new()?;
        Ok(Reactor {
            inner: Rc::new(Inner {
                shared: Arc::new(Shared::new(poller)),
                events: RefCell::new(Events::with_capacity(EVENT_CAPACITY)),
                ready: RefCell::new(Vec::with_capacity(EVENT_CAPACITY)),
                sources: RefCell::new(Sources::new()),
                timers: RefCell::new(TimerQueue::new()),
                soon: RefCell::new(VecDeque::new()),
                woken: RefCell::new(Vec::new()),
                continuations: RefCell::new(Slab::new()),
                tasks: Executor::new(),
                pool: ThreadPool::new(DEFAULT_POOL_THREADS),
                clock,
                triggers: Triggers::default(),
                handle_signals: Cell::new(true),
                running: Cell::new(false),
                stopping: Cell::new(false),
                in_turn: Cell::new(false),
                counters: Rc::default(),
                last_gauges: Cell::new((0, 0)),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// A non-owning reference to this reactor.
    pub fn downgrade(&self) -> WeakReactor {
        WeakReactor {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// A `Send + Sync` handle through which other threads can run code on
    /// this reactor and wake it.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle::new(self.inner.shared.clone())
    }

    /// True if both handles refer to the same reactor.
    pub fn ptr_eq(&self, other: &Reactor) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    // ----- running -------------------------------------------------------

    /// Runs the loop until [`Reactor::stop`] is called (Twisted's
    /// `reactor.run()`).
    ///
    /// In order: the [`Startup`](SystemEvent::Startup) triggers run
    /// (`Before`, `During`, `After`), then the calls queued with
    /// [`Reactor::call_when_running`]; then the loop turns until `stop()`.
    /// With nothing to do the thread sleeps in the poller until the next
    /// timer is due or a source becomes ready; it does not spin. After
    /// `stop()` the shutdown sequence runs: `Before` shutdown triggers;
    /// every registered source's [`Handler::shutdown`] (ports stop
    /// listening, connections close and their protocols hear
    /// `connection_lost`); the tasks still alive are cancelled (and so are
    /// tasks spawned while their futures are dropped); the `During`
    /// triggers; the `After` triggers.
    /// Then `run` returns. Timers still pending stay scheduled for the next
    /// run.
    ///
    /// Unless turned off with [`Reactor::set_signal_handling`], SIGINT and
    /// SIGTERM stop the reactor this way while it runs.
    ///
    /// # Errors
    /// [`ReactorError::AlreadyRunning`] if called while the loop runs (for
    /// example from one of its callbacks); [`ReactorError::Io`] if waiting
    /// on the poller fails.
    pub fn run(&self) -> Result<(), ReactorError> {
        self.run_loop(&|| false).map(drop)
    }

    /// [`Reactor::run`], returning early (true), without the shutdown
    /// sequence, once `done` says so after a turn; false if stopped.
    pub(crate) fn run_loop(&self, done: &dyn Fn() -> bool) -> Result<bool, ReactorError> {
        if self.inner.running.get() || self.inner.in_turn.get() {
            return Err(ReactorError::AlreadyRunning);
        }
        self.inner.running.set(true);
        self.inner.stopping.set(false);
        let _running = RunGuard(&self.inner);
        let _signals = if self.inner.handle_signals.get() {
            match SignalGuard::install(self) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    tracing::warn!(error = %e, "could not install SIGINT/SIGTERM handling");
                    None
                }
            }
        } else {
            None
        };
        for phase in [Phase::Before, Phase::During, Phase::After] {
            self.inner.triggers.fire(self, SystemEvent::Startup, phase);
        }
        while !self.inner.stopping.get() {
            if done() {
                return Ok(true);
            }
            self.turn(None).map_err(ReactorError::Io)?;
        }
        self.shutdown_sequence();
        Ok(false)
    }

    /// Runs the shutdown sequence now, as the end of [`Reactor::run`]
    /// does: `Before` shutdown triggers; every registered source's
    /// [`Handler::shutdown`] (ports stop listening, connections close); the
    /// tasks still alive are cancelled; the `During` and `After` triggers.
    ///
    /// For a reactor driven by [`Reactor::run_until_complete`] or
    /// [`Reactor::iterate`], which return without that sequence: call it
    /// when done with the reactor. A task that holds a clone of its
    /// reactor (a detached server loop, say) keeps the reactor, its
    /// sockets and its worker threads alive until the task ends; dropping
    /// the last `Reactor` you hold then frees nothing. This cancels such
    /// tasks and closes the sources, so that dropping the reactor frees
    /// everything. The reactor can still be run again afterwards.
    ///
    /// ```
    /// use torsion_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let r = reactor.clone();
    /// // Holds a clone: alive until cancelled.
    /// reactor.spawn(async move { r.sleep(std::time::Duration::from_secs(3600)).await }).detach();
    /// assert_eq!(reactor.run_until_complete(async { 7 })?, 7);
    /// reactor.shut_down()?;
    /// assert_eq!(reactor.task_count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ReactorError::AlreadyRunning`] if the reactor is running or in a
    /// turn (call [`Reactor::stop`] there instead).
    pub fn shut_down(&self) -> Result<(), ReactorError> {
        if self.inner.running.get() || self.inner.in_turn.get() {
            return Err(ReactorError::AlreadyRunning);
        }
        self.shutdown_sequence();
        Ok(())
    }

    fn shutdown_sequence(&self) {
        let triggers = &self.inner.triggers;
        triggers.fire(self, SystemEvent::Shutdown, Phase::Before);
        let handlers: Vec<Rc<dyn Handler>> = self.inner.sources.borrow().handlers();
        for handler in handlers {
            panics::isolate(self, "a source's shutdown", || handler.shutdown(self));
            panics::isolate(self, "dropping an I/O handler", move || drop(handler));
        }
        // Tasks still alive are cancelled: their futures hold what they
        // wait on (and often a clone of this reactor).
        self.inner.tasks.clear(self);
        triggers.fire(self, SystemEvent::Shutdown, Phase::During);
        triggers.fire(self, SystemEvent::Shutdown, Phase::After);
        self.inner.publish_stats();
    }

    /// Turns the handling of SIGINT and SIGTERM by [`Reactor::run`] on
    /// (the default) or off (Twisted's `installSignalHandlers=False`), for
    /// programs that handle signals themselves.
    pub fn set_signal_handling(&self, on: bool) {
        self.inner.handle_signals.set(on);
    }

    /// Runs `call` once the reactor is running: at once if it is, or when
    /// [`Reactor::run`] starts, after the startup triggers (Twisted's
    /// `callWhenRunning`).
    #[doc(alias = "callWhenRunning")]
    pub fn call_when_running<F>(&self, call: F)
    where
        F: FnOnce(&Reactor) + 'static,
    {
        if self.inner.running.get() {
            call(self);
        } else {
            self.inner.triggers.add_when_running(Box::new(call));
        }
    }

    /// Adds a trigger that runs `function` in `phase` of `event`, every
    /// time the event happens, until removed (Twisted's
    /// `addSystemEventTrigger`). Triggers of one phase run in the order
    /// they were added.
    #[doc(alias = "addSystemEventTrigger")]
    pub fn add_system_event_trigger<F>(
        &self,
        phase: Phase,
        event: SystemEvent,
        function: F,
    ) -> TriggerId
    where
        F: FnMut(&Reactor) + 'static,
    {
        self.inner.triggers.add(phase, event, function)
    }

    /// Removes a trigger; returns false if it was already gone (Twisted's
    /// `removeSystemEventTrigger`).
    #[doc(alias = "removeSystemEventTrigger")]
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> bool {
        self.inner.triggers.remove(id)
    }

    /// Asks a running loop to return from [`Reactor::run`] once the
    /// current callback and the rest of this turn finish (Twisted's
    /// `reactor.stop()`). Call it from any callback; from another thread use
    /// [`ReactorHandle::stop`].
    ///
    /// # Errors
    /// [`ReactorError::NotRunning`] if the reactor is not running or is
    /// already stopping.
    pub fn stop(&self) -> Result<(), ReactorError> {
        if !self.inner.running.get() || self.inner.stopping.get() {
            return Err(ReactorError::NotRunning);
        }
        self.inner.stopping.set(true);
        Ok(())
    }

    /// True between [`Reactor::run`] being called and it returning.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// True while the loop is in a turn, that is, while the reactor is
    /// running one of the callbacks it dispatches (I/O handlers, timers,
    /// calls from other threads, [`Reactor::call_soon`] work, woken
    /// sources). Every source woken with
    /// [`Registration::wake`](crate::Registration::wake) meanwhile is
    /// dispatched before the loop next waits, so work deferred to a wake
    /// from inside a turn is not delayed past it.
    ///
    /// Stream transports use this to gather writes: a write made while
    /// dispatching is queued and sent, together with the turn's other
    /// writes to that connection, in one system call at the end of the
    /// turn; a write made outside a turn (before [`Reactor::run`], from a
    /// startup or shutdown trigger) goes to the socket at once.
    pub fn is_dispatching(&self) -> bool {
        self.inner.in_turn.get()
    }

    /// Runs one turn of the loop: waits for events at most `max_wait`
    /// (less if a timer is due sooner), then dispatches I/O, calls from
    /// other threads, due timers and [`Reactor::call_soon`] work (Twisted's
    /// `reactor.iterate`). Useful to drive a reactor step by step in tests.
    ///
    /// # Errors
    /// [`ReactorError::AlreadyRunning`] if called from inside a callback of
    /// this reactor; [`ReactorError::Io`] if waiting fails.
    pub fn iterate(&self, max_wait: Duration) -> Result<(), ReactorError> {
        if self.inner.in_turn.get() {
            return Err(ReactorError::AlreadyRunning);
        }
        self.turn(Some(max_wait)).map_err(ReactorError::Io)
    }

    fn turn(&self, max_wait: Option<Duration>) -> io::Result<()> {
        let inner = &*self.inner;
        inner.in_turn.set(true);
        bump(&inner.counters.turns);
        let _turn = TurnGuard(inner);

        let timeout = self.wait_timeout(max_wait);
        let mut ready = inner.ready.take();
        {
            let mut events = inner.events.borrow_mut();
            inner
                .shared
                .with_poller(|poller| poller.wait(&mut events, timeout))?;
            ready.extend(events.iter());
        }
        for (key, readiness) in ready.drain(..) {
            self.dispatch(key, readiness);
        }
        inner.ready.replace(ready);

        self.run_thread_calls();
        self.run_timers(false);
        self.run_soon();
        Ok(())
    }

    /// How long the next wait may block.
    fn wait_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let inner = &*self.inner;
        if inner.stopping.get()
            || !inner.soon.borrow().is_empty()
            || !inner.woken.borrow().is_empty()
            || inner.tasks.has_work()
        {
            return Some(Duration::ZERO);
        }
        // The clock is read only when a timer is pending: a loop that
        // waits only for I/O reads it not at all.
        let timer = self.timers_mut().next_deadline().and_then(|due| {
            let wait = due.saturating_sub(self.now_nanos());
            match inner.clock {
                Clock::System(_) => Some(Duration::from_nanos(wait)),
                // Virtual time does not pass while we sleep: only a call
                // that is already due shortens the wait.
                Clock::Manual(_) => (wait == 0).then_some(Duration::ZERO),
            }
        });
        match (timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dispatch(&self, key: usize, readiness: Readiness) {
        let inner = &*self.inner;
        let (handler, id, interest) = {
            let sources = inner.sources.borrow();
            let Some(source) = sources.get(key) else {
                return;
            };
            if inner.shared.needs_rearm() && !readiness.is_woken() {
                if let Err(e) = source.rearm(&inner.shared, key) {
                    tracing::warn!(error = %e, key, "could not re-arm a oneshot registration");
                }
            }
            (source.handler.clone(), source.id(), source.interest)
        };
        let readiness = readiness.masked(interest);
        if readiness.is_woken() {
            bump(&inner.counters.wakes);
        } else {
            bump(&inner.counters.io_events);
        }
        let handled = panics::isolate(self, "an I/O handler", || handler.ready(self, readiness));
        // This may be the last reference (the handler dropped its own
        // registration), and a drop runs user code too.
        panics::isolate(self, "dropping an I/O handler", move || drop(handler));
        // A level-triggered source's error or hang-up is reported again on
        // every wait until the source is closed (an edge-triggered one's
        // once). If its handler panicked, or heard one and still wants
        // nothing, nobody will consume it: take the source out of the
        // poller until its interest changes (adding it back looks again).
        let unconsumed = (readiness.is_error() || readiness.is_hangup())
            && inner
                .sources
                .borrow()
                .get(key)
                .is_some_and(|source| source.interest.is_none());
        if handled.is_none() || unconsumed {
            inner.sources.borrow_mut().park(&inner.shared, key, id);
        }
    }

    fn run_thread_calls(&self) {
        for job in self.inner.shared.take_calls() {
            bump(&self.inner.counters.thread_calls);
            panics::isolate(self, "a call from another thread", || job(self));
        }
    }

    /// Runs the delayed calls that are due. In a loop turn only calls
    /// scheduled before the turn started run, so a callback that schedules
    /// a zero-delay call cannot starve I/O; `all` lifts that limit (the
    /// manual clock's `advance`).
    fn run_timers(&self, all: bool) {
        if self.inner.timers.borrow().len() == 0 {
            // Nothing pending: no clock to read.
            return;
        }
        let now = self.now_nanos();
        let (limit, budget) = if all {
            (None, usize::MAX)
        } else {
            (Some(self.timers_mut().next_seq()), MAX_TIMERS_PER_TURN)
        };
        for _ in 0..budget {
            let callback = self.timers_mut().pop_due(now, limit);
            match callback {
                Some(callback) => {
                    bump(&self.inner.counters.timers_fired);
                    panics::isolate(self, "a delayed call", || callback(self));
                }
                None => break,
            }
        }
    }

    /// The end of a turn: the `call_soon` work queued before it, then the
    /// sources woken so far ([`Registration::wake`]). Woken sources come
    /// last so that everything the turn's callbacks asked of them
    /// (a transport's writes, gathered into one send) is finished before
    /// the loop waits again; a source woken during this phase is
    /// dispatched on the next turn, which does not wait.
    ///
    /// [`Registration::wake`]: crate::Registration::wake
    fn run_soon(&self) {
        let inner = &*self.inner;
        let count = inner.soon.borrow().len();
        for _ in 0..count {
            let job = inner.soon.borrow_mut().pop_front();
            match job {
                Some(job) => {
                    bump(&inner.counters.soon_calls);
                    panics::isolate(self, "a call_soon call", || job(self));
                }
                None => break,
            }
        }
        // Tasks run before the woken sources, so their writes join the
        // turn's gathered send.
        inner.tasks.run(self);
        if inner.woken.borrow().is_empty() {
            return;
        }
        let mut woken = std::mem::take(&mut *inner.woken.borrow_mut());
        for &(key, id) in &woken {
            // From here a wake queues the source again, for the next turn.
            if inner.sources.borrow_mut().take_woken(key, id) {
                self.dispatch(key, Readiness::WOKEN);
            }
        }
        // The list's allocation is kept for the next turn's wakes, unless
        // sources woke during this phase (their list is kept instead).
        woken.clear();
        let mut current = inner.woken.borrow_mut();
        if current.is_empty() {
            *current = woken;
        }
    }

    /// Runs every delayed call that is due now, including calls that those
    /// callbacks schedule and that are already due (Twisted's
    /// `runUntilCurrent`). The loop does this by itself every turn; tests
    /// on a [`ManualClock`] get it from [`ManualClock::advance`].
    pub fn run_until_current(&self) {
        self.run_until_current_all();
    }

    pub(crate) fn run_until_current_all(&self) {
        self.run_timers(true);
        self.inner.publish_stats();
    }

    // ----- time ----------------------------------------------------------

    /// The reactor's current time, measured from its clock's epoch (the
    /// reactor's creation, or zero on a [`ManualClock`]); Twisted's
    /// `reactor.seconds()`.
    pub fn seconds(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        self.inner.clock.now_nanos()
    }

    pub(crate) fn timers_mut(&self) -> RefMut<'_, TimerQueue> {
        self.inner.timers.borrow_mut()
    }

    pub(crate) fn try_timers_mut(
        &self,
    ) -> Result<RefMut<'_, TimerQueue>, std::cell::BorrowMutError> {
        self.inner.timers.try_borrow_mut()
    }

    /// Schedules `callback` to run once, `delay` from now (Twisted's
    /// `reactor.callLater`). Calls due at the same instant run in the order
    /// they were scheduled (or last rescheduled).
    ///
    /// The returned [`DelayedCall`] cancels or moves the call; dropping it
    /// does not cancel.
    #[doc(alias = "callLater")]
    pub fn call_later<F>(&self, delay: Duration, callback: F) -> DelayedCall
    where
        F: FnOnce(&Reactor) + 'static,
    {
        let when = self.now_nanos().saturating_add(duration_nanos(delay));
        let id = self.timers_mut().schedule(when, Box::new(callback));
        DelayedCall {
            id,
            reactor: self.downgrade(),
        }
    }

    /// Schedules `callback` to run on the next turn of the loop, after the
    /// current callback returns; such calls run in the order they were
    /// made.
    pub fn call_soon<F>(&self, callback: F)
    where
        F: FnOnce(&Reactor) + 'static,
    {
        self.inner.soon.borrow_mut().push_back(Box::new(callback));
    }

    /// Number of delayed calls that are pending.
    pub fn pending_call_count(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// Handles to every pending delayed call, earliest first (Twisted's
    /// `getDelayedCalls`), so tests can see what a protocol has scheduled.
    #[doc(alias = "getDelayedCalls")]
    pub fn pending_calls(&self) -> Vec<DelayedCall> {
        let ids = self.timers_mut().pending_ids();
        ids.into_iter()
            .map(|id| DelayedCall {
                id,
                reactor: self.downgrade(),
            })
            .collect()
    }

    // ----- threads -------------------------------------------------------

    /// Runs `work` on a worker thread of the reactor's bounded pool, then
    /// hands its result (or its panic) to `then` on the reactor's thread
    /// (Twisted's `deferToThread`). At most eight jobs run at once; the
    /// rest wait in a queue.
    ///
    /// `then` runs during a later turn of the loop; if the reactor is
    /// dropped first, it never runs.
    #[doc(alias = "deferToThread")]
    pub fn defer_to_thread<T, W, C>(&self, work: W, then: C)
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
        C: FnOnce(&Reactor, std::thread::Result<T>) + 'static,
    {
        let continuation: Continuation = Box::new(move |reactor, result| {
            let result = *result
                .downcast::<std::thread::Result<T>>()
                .expect("continuation receives the type its job produced");
            then(reactor, result);
        });
        let id = self.inner.continuations.borrow_mut().insert(continuation);
        let handle = self.handle();
        self.inner.pool.submit(Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(work));
            // If the reactor is gone there is nobody to tell.
            let _ = handle.call_from_thread(move |reactor| {
                let continuation = reactor.inner.continuations.borrow_mut().remove(id);
                if let Some(continuation) = continuation {
                    panics::isolate(reactor, "a defer_to_thread continuation", || {
                        continuation(reactor, Box::new(result));
                    });
                }
            });
        }));
    }

    // ----- I/O sources ---------------------------------------------------

    /// Turns of the loop since the reactor was created: one wait for
    /// events each. A diagnostic: an idle or backing-off reactor should
    /// not be turning.
    pub fn turn_count(&self) -> u64 {
        self.inner.counters.turns.get()
    }

    /// Panics this reactor's panic policy caught in callbacks it ran
    /// (handlers, timers, `call_soon` work, thread calls, continuations,
    /// triggers, looping calls); each was logged at `error` level. A
    /// diagnostic for tests and operators. Panics a layer above contains
    /// itself before they reach the reactor (a protocol's, which cost its
    /// connection) are logged by that layer and not counted here.
    pub fn caught_panic_count(&self) -> u64 {
        self.inner.counters.panics.get()
    }

    pub(crate) fn count_panic(&self) {
        bump(&self.inner.counters.panics);
    }

    // ----- statistics ----------------------------------------------------

    /// A snapshot of this reactor's counters, exact as of now (see
    /// [`ReactorStats`] and `docs/observability.md`). Also publishes it to
    /// [`ReactorHandle::stats`], which other threads read.
    ///
    /// ```
    /// use torsion_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// reactor.call_soon(|reactor| reactor.stop().unwrap());
    /// reactor.run()?;
    /// let stats = reactor.stats();
    /// assert_eq!(stats.soon_calls, 1);
    /// assert!(stats.turns >= 1);
    /// assert_eq!(reactor.handle().stats(), stats);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ReactorStats {
        self.inner.publish_stats()
    }

    /// The reactor's counters, for the layers above to count what only
    /// they see (connections, bytes, accepts); see [`Counters`].
    /// Applications read [`Reactor::stats`].
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The reactor's counters, to keep: a transport holds them from its
    /// creation and counts without going through the reactor each time.
    /// Counting into them after the reactor is gone is harmless.
    pub fn shared_counters(&self) -> Rc<Counters> {
        self.inner.counters.clone()
    }

    /// Number of sources currently registered.
    pub fn source_count(&self) -> usize {
        self.inner.sources.borrow().len()
    }
}

struct RunGuard<'a>(&'a Inner);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.running.set(false);
        self.0.stopping.set(false);
    }
}

struct TurnGuard<'a>(&'a Inner);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.in_turn.set(false);
        self.0.publish_stats();
    }
}

impl Inner {
    /// Takes a snapshot and publishes it for other threads: a few dozen
    /// plain stores, once per turn.
    fn publish_stats(&self) -> ReactorStats {
        // A table borrowed now (a snapshot taken from inside a call that
        // holds it) keeps its last measured size rather than reading 0.
        let (last_timers, last_sources) = self.last_gauges.get();
        let timers_pending = self
            .timers
            .try_borrow()
            .map_or(last_timers, |t| t.len() as u64);
        let sources = self
            .sources
            .try_borrow()
            .map_or(last_sources, |s| s.len() as u64);
        self.last_gauges.set((timers_pending, sources));
        let gauges = Gauges {
            timers_pending,
            tasks_alive: self.tasks.len() as u64,
            task_polls: self.tasks.polls(),
            sources,
        };
        let stats = self.counters.snapshot(gauges);
        self.shared.stats.store(stats);
        stats
    }
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end-of-turn pass over woken sources keeps its list's
    /// allocation: a turn that gathers writes does not allocate for it.
    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn woken_list_keeps_its_allocation_across_turns() {
        let reactor = Reactor::new().unwrap();
        // Keys with no source behind them are skipped by the dispatch.
        reactor
            .inner()
            .woken
            .borrow_mut()
            .extend([(7, 0), (7, 0), (9, 1)]);
        let capacity = reactor.inner().woken.borrow().capacity();
        assert!(capacity >= 3);
        reactor.iterate(Duration::ZERO).unwrap();
        let woken = reactor.inner().woken.borrow();
        assert!(woken.is_empty());
        assert_eq!(woken.capacity(), capacity);
    }
}
