//! Where the reactor's time comes from: the system's monotonic clock, or a
//! manual clock that tests move by hand.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::reactor::WeakReactor;
use crate::timer_queue::duration_nanos;

/// The reactor's source of time.
pub(crate) enum Clock {
    /// Monotonic time measured from the moment the reactor was created.
    System(Instant),
    /// Time that moves only when a [`ManualClock`] is advanced.
    Manual(Rc<Cell<u64>>),
}

impl Clock {
    /// Nanoseconds since the clock's epoch.
    pub(crate) fn now_nanos(&self) -> u64 {
        match self {
            Clock::System(epoch) => duration_nanos(epoch.elapsed()),
            Clock::Manual(now) => now.get(),
        }
    }
}

/// A clock that only moves when told to, for testing timed logic without
/// sleeping (Twisted's `task.Clock`).
///
/// Create one together with its reactor through
/// [`Reactor::with_manual_clock`](crate::Reactor::with_manual_clock). Time
/// starts at zero. [`ManualClock::advance`] moves it forward and runs every
/// delayed call that has become due, in order, before returning; nothing
/// else moves it. A reactor on a manual clock still waits for I/O normally,
/// but never sleeps on behalf of its timers.
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use torsion_reactor::Reactor;
///
/// let (reactor, clock) = Reactor::with_manual_clock()?;
/// let fired = Rc::new(Cell::new(false));
/// let flag = fired.clone();
/// reactor.call_later(Duration::from_secs(5), move |_| flag.set(true));
///
/// clock.advance(Duration::from_secs(4));
/// assert!(!fired.get());
/// clock.advance(Duration::from_secs(1));
/// assert!(fired.get());
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "Clock")]
#[derive(Clone)]
pub struct ManualClock {
    pub(crate) now: Rc<Cell<u64>>,
    pub(crate) reactor: WeakReactor,
}

impl ManualClock {
    /// The current time of this clock (Twisted's `seconds`).
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now.get())
    }

    /// Moves time forward by `by`, then runs every delayed call due at or
    /// before the new time, earliest first (Twisted's `Clock.advance`).
    ///
    /// Calls scheduled by those callbacks that are themselves already due
    /// run too, before this returns.
    pub fn advance(&self, by: Duration) {
        self.now
            .set(self.now.get().saturating_add(duration_nanos(by)));
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.run_until_current_all();
        }
    }

    /// Advances the clock by each step in turn, running due calls after
    /// every step (Twisted's `Clock.pump`).
    pub fn pump(&self, steps: &[Duration]) {
        for step in steps {
            self.advance(*step);
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}
