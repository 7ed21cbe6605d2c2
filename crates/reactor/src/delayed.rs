//! The handle to a scheduled call ([`DelayedCall`]) and what its
//! operations can fail with ([`TimerError`]).

use std::fmt;
use std::time::Duration;

use crate::reactor::WeakReactor;
use crate::timer_queue::{duration_nanos, TimerId, TimerQueue};

/// Why an operation on a [`DelayedCall`] could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerError {
    /// The call has already run (Twisted's `AlreadyCalled`).
    AlreadyCalled,
    /// The call was already cancelled (Twisted's `AlreadyCancelled`).
    AlreadyCancelled,
    /// The reactor the call was scheduled on has been dropped, so the call
    /// can never run again.
    ReactorGone,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimerError::AlreadyCalled => "the delayed call has already run",
            TimerError::AlreadyCancelled => "the delayed call was already cancelled",
            TimerError::ReactorGone => "the reactor of the delayed call has been dropped",
        })
    }
}

impl std::error::Error for TimerError {}

/// A handle to a call scheduled with [`Reactor::call_later`](crate::Reactor::call_later) (Twisted's
/// `IDelayedCall`).
///
/// The handle can cancel the call, move it, and tell whether it is still
/// pending. Dropping the handle does **not** cancel the call. Clones refer
/// to the same call.
///
/// Operations on a call that already ran or was cancelled return a
/// [`TimerError`]; they never panic.
#[doc(alias = "IDelayedCall")]
pub struct DelayedCall {
    pub(crate) id: TimerId,
    pub(crate) reactor: WeakReactor,
}

impl DelayedCall {
    fn with_queue<R>(&self, f: impl FnOnce(&mut TimerQueue) -> R) -> Option<R> {
        let reactor = self.reactor.upgrade()?;
        let result = f(&mut reactor.timers_mut());
        Some(result)
    }

    /// Cancels the call so that it never runs, and drops its callback.
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] if it already ran,
    /// [`TimerError::AlreadyCancelled`] if it was cancelled before,
    /// [`TimerError::ReactorGone`] if its reactor was dropped (which
    /// cancelled every call).
    pub fn cancel(&self) -> Result<(), TimerError> {
        let callback = self
            .with_queue(|queue| queue.cancel(self.id))
            .unwrap_or(Err(TimerError::ReactorGone))?;
        // Dropped here, outside the queue's borrow.
        drop(callback);
        Ok(())
    }

    /// Reschedules the call to run `delay` from now (Twisted's `reset`).
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] or [`TimerError::AlreadyCancelled`] if
    /// the call is no longer pending; [`TimerError::ReactorGone`] if its
    /// reactor was dropped.
    pub fn reset(&self, delay: Duration) -> Result<(), TimerError> {
        let reactor = self.reactor.upgrade().ok_or(TimerError::ReactorGone)?;
        let when = reactor.now_nanos().saturating_add(duration_nanos(delay));
        let result = reactor.timers_mut().reschedule(self.id, |_| when);
        result
    }

    /// Postpones the call by `by` from the time it is currently due
    /// (Twisted's `delay`).
    ///
    /// # Errors
    /// As for [`DelayedCall::reset`].
    pub fn delay(&self, by: Duration) -> Result<(), TimerError> {
        let by = duration_nanos(by);
        self.with_queue(|queue| queue.reschedule(self.id, |when| when.saturating_add(by)))
            .unwrap_or(Err(TimerError::ReactorGone))
    }

    fn state(&self) -> (bool, bool, u64) {
        self.with_queue(|queue| queue.state_of(self.id))
            .unwrap_or((false, false, 0))
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.state().0
    }

    /// True once the call has run.
    pub fn called(&self) -> bool {
        self.state().1
    }

    /// True once the call has been cancelled (or its reactor dropped).
    pub fn cancelled(&self) -> bool {
        let (pending, called, _) = self.state();
        !pending && !called
    }

    /// The reactor time (see [`Reactor::seconds`](crate::Reactor::seconds)) at which the call is, or
    /// was, due (Twisted's `getTime`). Zero once the reactor is dropped.
    #[doc(alias = "getTime")]
    pub fn time(&self) -> Duration {
        Duration::from_nanos(self.state().2)
    }
}

impl Clone for DelayedCall {
    fn clone(&self) -> Self {
        self.with_queue(|queue| queue.add_handle(self.id));
        DelayedCall {
            id: self.id,
            reactor: self.reactor.clone(),
        }
    }
}

impl Drop for DelayedCall {
    fn drop(&mut self) {
        if let Some(reactor) = self.reactor.upgrade() {
            // A handle dropped while the queue is borrowed (by code running
            // inside a queue operation) keeps its slot: a few bytes, never
            // a wrong answer.
            if let Ok(mut queue) = reactor.try_timers_mut() {
                queue.drop_handle(self.id);
            }
        }
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pending, called, _) = self.state();
        let state = if pending {
            "pending"
        } else if called {
            "called"
        } else {
            "cancelled"
        };
        f.debug_struct("DelayedCall")
            .field("time", &self.time())
            .field("state", &state)
            .finish()
    }
}
