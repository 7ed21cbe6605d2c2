//! Calls repeated at a fixed interval (Twisted's `task.LoopingCall`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::delayed::DelayedCall;
use crate::panics;
use crate::reactor::{Reactor, WeakReactor};
use crate::timer_queue::duration_nanos;

type LoopFn = Box<dyn FnMut(&LoopingCall)>;

struct Inner {
    reactor: WeakReactor,
    function: RefCell<LoopFn>,
    /// The interval while running.
    interval: Cell<Option<u64>>,
    /// Reactor time (ns) when `start` was called: calls are due at
    /// `started + k * interval`.
    started: Cell<u64>,
    /// Index of the interval of the last call.
    last_interval: Cell<u64>,
    /// Intervals since the previous call, as of the current call.
    elapsed: Cell<u64>,
    call: RefCell<Option<DelayedCall>>,
    /// True while the function runs.
    in_call: Cell<bool>,
    /// The message of the panic that stopped the loop, until the next
    /// start.
    failure: RefCell<Option<String>>,
}

/// Why [`LoopingCall::start`] or [`LoopingCall::stop`] could not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopingCallError {
    /// `start` was called on a looping call that is running.
    AlreadyRunning,
    /// `stop` was called on a looping call that is not running.
    NotRunning,
    /// The reactor has been dropped.
    ReactorGone,
}

impl fmt::Display for LoopingCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoopingCallError::AlreadyRunning => "the looping call is already running",
            LoopingCallError::NotRunning => "the looping call is not running",
            LoopingCallError::ReactorGone => "the reactor has been dropped",
        })
    }
}

impl std::error::Error for LoopingCallError {}

/// Runs a function every `interval` on a reactor (Twisted's
/// `task.LoopingCall`).
///
/// Calls are due at fixed points, `start + k × interval`, so they do not
/// drift when a call takes time. When the loop falls behind (a slow
/// callback, a busy reactor, a manual clock advanced by several intervals),
/// the missed calls are **not** replayed in a burst: the function runs
/// once, and [`LoopingCall::elapsed_intervals`] tells it how many intervals
/// passed since its previous run (1 when on time).
///
/// The function receives the looping call itself, to read
/// `elapsed_intervals`, reach the reactor, or [`stop`](LoopingCall::stop)
/// (and [`start`](LoopingCall::start) again) from inside. The reactor
/// keeps a running looping call alive; dropping the handle does not stop
/// it.
///
/// If the function panics, the loop stops (as Twisted's stops when its
/// function raises): the panic is logged and counted like any callback's
/// (see [`Reactor::caught_panic_count`]), [`LoopingCall::running`] turns
/// false, [`LoopingCall::failure`] holds the panic's message, and `start`
/// may be called again.
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use torsion_reactor::{LoopingCall, Reactor};
///
/// let (reactor, clock) = Reactor::with_manual_clock()?;
/// let runs = Rc::new(Cell::new(0));
/// let counter = runs.clone();
/// let heartbeat = LoopingCall::new(&reactor, move |call| {
///     counter.set(counter.get() + call.elapsed_intervals());
/// });
/// heartbeat.start(Duration::from_secs(1), true)?; // runs once right away
/// clock.advance(Duration::from_secs(3));          // one late run, 3 intervals
/// assert_eq!(runs.get(), 4);
/// heartbeat.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "task.LoopingCall")]
#[derive(Clone)]
pub struct LoopingCall {
    inner: Rc<Inner>,
}

impl LoopingCall {
    /// A looping call of `function` on `reactor`, not yet started.
    pub fn new<F>(reactor: &Reactor, function: F) -> LoopingCall
    where
        F: FnMut(&LoopingCall) + 'static,
    {
        LoopingCall {
            inner: Rc::new(Inner {
                reactor: reactor.downgrade(),
                function: RefCell::new(Box::new(function)),
                interval: Cell::new(None),
                started: Cell::new(0),
                last_interval: Cell::new(0),
                elapsed: Cell::new(0),
                call: RefCell::new(None),
                in_call: Cell::new(false),
                failure: RefCell::new(None),
            }),
        }
    }

    /// Starts calling the function every `interval`; with `now`, the
    /// first call happens at once, inside `start` — or, when `start` is
    /// called from inside the function itself, as soon as the function
    /// returns, on the reactor's next pass over due calls. A zero interval
    /// runs the function once per turn of the loop; on a
    /// [`ManualClock`](crate::ManualClock), whose `advance` runs every call
    /// that is due including those scheduled meanwhile, it would run
    /// forever, so stop it from inside or use a non-zero interval there.
    ///
    /// # Errors
    /// [`LoopingCallError::AlreadyRunning`] if it is running;
    /// [`LoopingCallError::ReactorGone`] if the reactor was dropped.
    pub fn start(&self, interval: Duration, now: bool) -> Result<(), LoopingCallError> {
        if self.running() {
            return Err(LoopingCallError::AlreadyRunning);
        }
        let reactor = self
            .inner
            .reactor
            .upgrade()
            .ok_or(LoopingCallError::ReactorGone)?;
        self.inner.interval.set(Some(duration_nanos(interval)));
        self.inner.started.set(reactor.now_nanos());
        self.inner.last_interval.set(0);
        self.inner.failure.replace(None);
        if now && self.inner.in_call.get() {
            // The function cannot run inside itself: its first call of
            // this run is due at once instead.
            self.schedule_at(&reactor, 0);
        } else if now {
            self.inner.elapsed.set(1);
            self.run_function();
            if self.running() && self.inner.call.borrow().is_none() {
                self.schedule(&reactor);
            }
        } else {
            self.schedule(&reactor);
        }
        Ok(())
    }

    /// Stops the calls; the function is not called again until the next
    /// `start`.
    ///
    /// # Errors
    /// [`LoopingCallError::NotRunning`] if it is not running.
    pub fn stop(&self) -> Result<(), LoopingCallError> {
        if self.inner.interval.take().is_none() {
            return Err(LoopingCallError::NotRunning);
        }
        let call = self.inner.call.borrow_mut().take();
        if let Some(call) = call {
            let _ = call.cancel();
        }
        Ok(())
    }

    /// True between `start` and `stop`.
    pub fn running(&self) -> bool {
        self.inner.interval.get().is_some()
    }

    /// The interval, while running.
    pub fn interval(&self) -> Option<Duration> {
        self.inner.interval.get().map(Duration::from_nanos)
    }

    /// During a call: how many intervals passed since the previous call
    /// (or since `start`). 1 when the loop keeps up; `n` means `n − 1`
    /// intervals were skipped (Twisted's `withCount`).
    #[doc(alias = "withCount")]
    pub fn elapsed_intervals(&self) -> u64 {
        self.inner.elapsed.get()
    }

    /// The message of the panic that stopped the loop, if its function
    /// panicked; cleared by the next [`start`](LoopingCall::start).
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.borrow().clone()
    }

    /// The reactor this looping call runs on, unless it was dropped.
    pub fn reactor(&self) -> Option<Reactor> {
        self.inner.reactor.upgrade()
    }

    /// Runs the function once; a panic stops the loop.
    fn run_function(&self) {
        let Some(reactor) = self.inner.reactor.upgrade() else {
            return;
        };
        // `start` never runs the function from inside itself, so the
        // borrow is free.
        let mut function = self.inner.function.borrow_mut();
        self.inner.in_call.set(true);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| function(self)));
        self.inner.in_call.set(false);
        drop(function);
        if let Err(payload) = outcome {
            panics::report(&reactor, "a looping call", &*payload);
            self.inner
                .failure
                .replace(Some(panics::panic_message(&*payload).to_owned()));
            let _ = self.stop();
        }
    }

    /// Schedules the next call at the next interval boundary after now.
    fn schedule(&self, reactor: &Reactor) {
        let Some(interval) = self.inner.interval.get() else {
            return;
        };
        let now = reactor.now_nanos();
        let delay = if interval == 0 {
            0
        } else {
            let running_for = now - self.inner.started.get();
            interval - running_for % interval
        };
        self.schedule_at(reactor, delay);
    }

    /// Schedules the next call `delay` nanoseconds from now.
    fn schedule_at(&self, reactor: &Reactor, delay: u64) {
        let me = self.clone();
        let call = reactor.call_later(Duration::from_nanos(delay), move |reactor| {
            me.fire(reactor);
        });
        *self.inner.call.borrow_mut() = Some(call);
    }

    fn fire(&self, reactor: &Reactor) {
        self.inner.call.borrow_mut().take();
        let Some(interval) = self.inner.interval.get() else {
            return;
        };
        let current = (reactor.now_nanos() - self.inner.started.get())
            .checked_div(interval)
            // A zero interval runs once per turn: count turns.
            .unwrap_or(self.inner.last_interval.get() + 1);
        self.inner.elapsed.set(
            current
                .saturating_sub(self.inner.last_interval.get())
                .max(1),
        );
        self.inner.last_interval.set(current);
        self.run_function();
        // Unless the function stopped (or stopped and restarted) the loop.
        if self.running() && self.inner.call.borrow().is_none() {
            self.schedule(reactor);
        }
    }
}

impl fmt::Debug for LoopingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopingCall")
            .field("interval", &self.interval())
            .finish()
    }
}
