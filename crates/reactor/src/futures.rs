//! Futures of the reactor's own events: time passing ([`Sleep`],
//! [`Timeout`]) and work finished on a worker thread ([`ThreadWork`]).
//!
//! All of them run on the reactor's clock, so a test on a
//! [`ManualClock`](crate::ManualClock) moves them by advancing it. Dropping
//! one cancels what it waits on: a sleep's timer is cancelled with it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::delayed::DelayedCall;
use crate::reactor::Reactor;
use crate::task::TaskError;

/// What a timer or a worker thread hands to the future waiting on it.
struct Slot<T> {
    value: Cell<Option<T>>,
    done: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Slot<T> {
    fn new() -> Rc<Slot<T>> {
        Rc::new(Slot {
            value: Cell::new(None),
            done: Cell::new(false),
            waker: RefCell::new(None),
        })
    }

    fn fill(&self, value: T) {
        self.value.set(Some(value));
        self.done.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Keeps one waker, replaced only when it would wake another task.
    fn register(&self, cx: &Context<'_>) {
        let mut waker = self.waker.borrow_mut();
        match &*waker {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
    }
}

/// A future that finishes once the reactor's clock reaches a deadline
/// (Twisted's `deferLater` without the call; asyncio's `sleep`). Made by
/// [`Reactor::sleep`] or [`Reactor::sleep_until`].
///
/// The timer is scheduled when the `Sleep` is made, so its deadline counts
/// from then, not from its first poll. Dropping it cancels the timer.
#[doc(alias = "deferLater")]
#[must_use = "a Sleep does nothing unless awaited"]
pub struct Sleep {
    slot: Rc<Slot<()>>,
    call: Option<DelayedCall>,
    deadline: Duration,
}

impl Sleep {
    /// The reactor time (see [`Reactor::seconds`]) at which the sleep ends.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// True once the deadline has been reached (the timer ran).
    pub fn is_elapsed(&self) -> bool {
        self.slot.done.get()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.done.get() {
            return Poll::Ready(());
        }
        self.slot.register(cx);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            if !self.slot.done.get() {
                let _ = call.cancel();
            }
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("elapsed", &self.is_elapsed())
            .finish()
    }
}

/// The future passed to [`Reactor::timeout`] did not finish in time
/// (Twisted's `TimeoutError` from `addTimeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(alias = "TimeoutError")]
pub struct TimedOut(pub Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}

/// A future bounded in time, made by [`Reactor::timeout`]: yields the
/// inner future's output, or [`TimedOut`] if the deadline came first, in
/// which case the inner future is dropped (cancelling what it waited on).
#[doc(alias = "addTimeout")]
#[must_use = "a Timeout does nothing unless awaited"]
pub struct Timeout<F> {
    // Boxed so that `Timeout` is `Unpin` whatever `F` is; one allocation
    // per timeout, beside the timer's own.
    future: Option<Pin<Box<F>>>,
    sleep: Sleep,
    limit: Duration,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(Err(TimedOut(this.limit)));
        };
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            this.future = None;
            return Poll::Ready(Ok(output));
        }
        if Pin::new(&mut this.sleep).poll(cx).is_ready() {
            this.future = None;
            return Poll::Ready(Err(TimedOut(this.limit)));
        }
        Poll::Pending
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("limit", &self.limit)
            .field("sleep", &self.sleep)
            .finish()
    }
}

/// The result of work run on a worker thread, as a future; made by
/// [`Reactor::run_in_thread`].
///
/// Dropping it does not stop the work (a thread cannot be interrupted);
/// its result is dropped when it arrives.
#[must_use = "the work's result is lost unless awaited"]
pub struct ThreadWork<T> {
    slot: Rc<Slot<Result<T, TaskError>>>,
}

impl<T> Future for ThreadWork<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(value) = self.slot.value.take() {
            return Poll::Ready(value);
        }
        if self.slot.done.get() {
            panic!("a ThreadWork polled after it yielded its result");
        }
        self.slot.register(cx);
        Poll::Pending
    }
}

impl<T> fmt::Debug for ThreadWork<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadWork")
            .field("done", &self.slot.done.get())
            .finish()
    }
}

impl Reactor {
    /// A future that finishes `duration` from now on the reactor's clock
    /// (asyncio's `sleep`). `sleep(Duration::ZERO)` finishes on the next
    /// turn's timer phase: a way to let I/O run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use torsion_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let nap = reactor.sleep(Duration::from_millis(1));
    /// reactor.run_until_complete(nap)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.seconds().saturating_add(duration))
    }

    /// A future that finishes when the reactor's clock reaches `deadline`
    /// (a time as [`Reactor::seconds`] reports it).
    pub fn sleep_until(&self, deadline: Duration) -> Sleep {
        let slot = Slot::new();
        let fire = slot.clone();
        let delay = deadline.saturating_sub(self.seconds());
        let call = self.call_later(delay, move |_| fire.fill(()));
        Sleep {
            slot,
            call: Some(call),
            deadline,
        }
    }

    /// Bounds `future` by `limit` on the reactor's clock: yields its output,
    /// or [`TimedOut`] if `limit` passes first, dropping the future then
    /// (Twisted's `Deferred.addTimeout`; asyncio's `wait_for`).
    #[doc(alias = "addTimeout")]
    #[doc(alias = "wait_for")]
    pub fn timeout<F: Future>(&self, limit: Duration, future: F) -> Timeout<F> {
        Timeout {
            future: Some(Box::pin(future)),
            sleep: self.sleep(limit),
            limit,
        }
    }

    /// Runs `work` on a worker thread of the reactor's pool (see
    /// [`Reactor::defer_to_thread`]) and returns a future of its result:
    /// `Ok(value)`, or [`TaskError::Panicked`] if the work panicked
    /// (Twisted's `deferToThread`, awaited).
    #[doc(alias = "deferToThread")]
    pub fn run_in_thread<T, W>(&self, work: W) -> ThreadWork<T>
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        let slot = Slot::new();
        let fill = slot.clone();
        self.defer_to_thread(work, move |_, result| {
            fill.fill(result.map_err(|payload| {
                TaskError::Panicked(crate::panic_message(&*payload).to_owned())
            }));
        });
        ThreadWork { slot }
    }
}
