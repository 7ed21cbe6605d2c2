//! The one policy for panics in callbacks the reactor runs.
//!
//! Every callback the reactor calls — I/O handlers, delayed calls,
//! [`call_soon`](crate::Reactor::call_soon) work, calls from other
//! threads, [`defer_to_thread`](crate::Reactor::defer_to_thread)
//! continuations, system event triggers, [`LoopingCall`] functions — runs
//! under [`isolate`]. A panic is caught, logged at `error` level with what
//! was running and the panic's message, and counted
//! ([`Reactor::caught_panic_count`]); then the reactor carries on with the
//! next callback, as Twisted logs a failure and carries on. What else
//! happens depends on what panicked, and is documented where that callback
//! is: a handler's source stops being watched, a looping call stops.
//!
//! [`LoopingCall`]: crate::LoopingCall

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::reactor::Reactor;

/// Runs `f`; if it panics, logs and counts the panic and returns `None`.
///
/// Unwind safety: the reactor's own state is never borrowed while a
/// callback runs, so nothing of the reactor is left half-updated by an
/// unwind; what the callback itself left half-updated is its own, as with
/// any caught panic.
pub(crate) fn isolate<R>(
    reactor: &Reactor,
    what: &'static str,
    f: impl FnOnce() -> R,
) -> Option<R> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            report(reactor, what, &*payload);
            None
        }
    }
}

/// Logs and counts a panic caught while running `what`.
pub(crate) fn report(reactor: &Reactor, what: &'static str, payload: &(dyn Any + Send)) {
    reactor.count_panic();
    tracing::error!(
        callback = what,
        panic = panic_message(payload),
        "a callback panicked; the reactor carries on"
    );
}

/// The message a panic was raised with, when it has one: the text of
/// `panic!("...")`, or a placeholder for a payload that is not text. For
/// the layers above, which contain panics of their own (a protocol's, a
/// producer's) under the same policy.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "(a panic without a message)"
    }
}
