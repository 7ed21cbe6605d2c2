//! # torsion-reactor
//!
//! The bottom layer of Torsion: a single-threaded event loop in the style
//! of Twisted's reactor. On Linux it drives epoll directly (one system call
//! per wait); elsewhere it uses the [`polling`] crate.
//!
//! A [`Reactor`] waits for four kinds of events and runs the callbacks
//! that belong to them, one at a time, on its own thread:
//!
//! - **I/O readiness** of registered sockets ([`Reactor::register`],
//!   routed to a [`Handler`]). Sources are watched level-triggered where the
//!   platform allows, so no re-arming system call is spent per event, or
//!   edge-triggered ([`Reactor::register_edge`], used for connections).
//! - **Timers**: [`Reactor::call_later`] returns a [`DelayedCall`] that can
//!   be cancelled, reset or delayed; [`Reactor::call_soon`] runs work on the
//!   next turn; a [`LoopingCall`] repeats work at an interval.
//! - **Calls from other threads** through a [`ReactorHandle`] (`Send +
//!   Sync`), and results of blocking work run with
//!   [`Reactor::defer_to_thread`].
//! - **Its own life**: startup and shutdown triggers
//!   ([`Reactor::add_system_event_trigger`]), an orderly shutdown that
//!   closes every source, and SIGINT/SIGTERM handling.
//!
//! A panic in any callback the reactor runs is caught, logged and counted
//! ([`Reactor::caught_panic_count`]); the reactor carries on with the next
//! callback, as Twisted logs a failure and carries on.
//!
//! It also counts what it does — turns, events, timers, calls, tasks,
//! and, through [`Reactor::counters`], the connections, bytes and accepts
//! of the layers above — in plain cells on its thread, and publishes them
//! once per turn: [`Reactor::stats`] reads them there,
//! [`ReactorHandle::stats`] from any thread (see `docs/observability.md`).
//!
//! Time comes from the system's monotonic clock, or from a [`ManualClock`]
//! that tests advance by hand.
//!
//! The layers above build on this one: `torsion-transport` turns sockets
//! into byte pipes, `torsion-protocol` turns readiness into protocol events.
//! See `docs/reactor.md` in the repository for the design.
//!
//! ```
//! use std::time::Duration;
//! use torsion_reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let call = reactor.call_later(Duration::from_secs(3600), |_| unreachable!());
//! call.cancel()?;
//! reactor.call_soon(|reactor| reactor.stop().unwrap());
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg(unix)]

mod clock;
mod deferred;
mod delayed;
mod futures;
mod handle;
mod interest;
mod looping;
mod panics;
mod pool;
mod reactor;
mod shared;
mod signals;
mod slab;
mod source;
mod stats;
mod sys;
mod task;
pub mod testing;
mod timer_queue;
mod triggers;

pub use crate::clock::ManualClock;
pub use crate::deferred::{
    deferred_list, first_success, gather_results, AlreadyCalledError, CancelledError, Deferred,
    DeferredList, FirstError, FirstSuccess, GatherResults,
};
pub use crate::delayed::{DelayedCall, TimerError};
pub use crate::futures::{Sleep, ThreadWork, TimedOut, Timeout};
pub use crate::handle::{ReactorClosed, ReactorHandle};
pub use crate::interest::{Interest, Readiness};
pub use crate::looping::{LoopingCall, LoopingCallError};
pub use crate::panics::panic_message;
pub use crate::reactor::{Reactor, ReactorError, WeakReactor};
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub use crate::source::ProcessRegistration;
pub use crate::source::{Handler, Registration};
pub use crate::stats::{
    AcceptErrorCounts, AcceptErrorKind, CloseCounts, CloseKind, Counters, ReactorStats,
};
pub use crate::task::{JoinHandle, RunError, TaskError, MAX_TASK_POLLS_PER_TURN};
pub use crate::triggers::{Phase, SystemEvent, TriggerId};

/// The crate's `README.md` (what crates.io shows), compiled as a doctest
/// so its example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
