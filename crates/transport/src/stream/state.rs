//! A stream transport's state, stored compactly (every byte of an idle
//! connection counts), and the states that are legal.
//!
//! # Legal states
//!
//! A [`StreamTransport`](super::StreamTransport) is in one [`Phase`]; its
//! write side is in one [`WriteShutdown`] state; yes/no facts are
//! [`Flag`]s. Not every combination can happen. Per phase:
//!
//! ```text
//!              | reads | takes  | write    | also true
//! phase        |       | writes | shutdown |
//! -------------+-------+--------+----------+-------------------------------
//! Connecting   | no    | no     | No       | no flag but Processing; queue
//!              |       |        |          | empty; no producer, no reason
//! Open         | (1)   | (2)    | (3)      | no LoseAfterProducer
//! Draining     | no    | (2)    | any      | LoseAfterProducer only with a
//!              |       |        |          | producer and no WritesClosed
//! Closing      | no    | no     | any      | WritesClosed; queue empty;
//!              |       |        |          | reason recorded; no
//!              |       |        |          | LoseAfterProducer
//! Closed       | no    | no     | any      | WritesClosed; queue empty; no
//!              |       |        |          | pipe, no producer, no
//!              |       |        |          | ProducerPaused or PullPending
//! ```
//!
//! 1. Unless `ReadingPaused`, `Throttled` or `ReadClosed`.
//! 2. Unless `WritesClosed`. In `Draining`, writes are still taken after
//!    the peer's end of stream (until the queue is flushed) and, after
//!    `lose_connection`, from a registered producer (`LoseAfterProducer`).
//! 3. Not `No` exactly when `WritesClosed`; never `Done` together with
//!    `ReadClosed` (both halves shut means `Closing`).
//!
//! The transitions:
//!
//! - `Connecting` → `Open` when the connect completes; → `Closed` when it
//!   fails or is cancelled, or at shutdown.
//! - `Open` → `Draining` on `lose_connection` or the peer's end of stream
//!   (without half-close); → `Closing` on an abort, an error, a
//!   producer's panic, or both halves shut; → `Closed` at shutdown.
//! - `Draining` → `Closed` once the queue is empty and no producer holds
//!   the connection open (a pull producer, or a paused streaming one,
//!   while writes are taken: Twisted's `doWrite` rule), or at shutdown;
//!   → `Closing` on an abort, an error or a producer's panic.
//! - `Closing` → `Closed` at the next step (or at shutdown).
//!
//! Whatever the phase: `Throttled` only with `ReadThrottle`; `ReadClosed`
//! only with `HalfCloseable`; `ProducerPaused` only with a streaming
//! producer registered; `PullPending` only with a pull producer
//! registered; `Processing` and `InterestStale` only while `process`
//! runs; `ReadPending` only on an edge-triggered pipe and not once
//! `Closed`, and `ReadToEnd` only with `ReadPending`. Outside a step, interest follows
//! from the state (`update_interest`): readable exactly when the table
//! says the transport reads, writable exactly when it is `Open` or
//! `Draining` with something queued that is not `Gathered` (gathered
//! writes are sent at the end of the step or turn, not on writability).
//! `Gathered` only with something queued, in `Open` or `Draining`. In `Open` and `Draining`, write
//! shutdown `Requested` means bytes are still queued: the shutdown happens
//! when the flush empties the queue.
//!
//! `StreamTransport::check_state` asserts most of this after every step
//! in debug builds.

use std::cell::Cell;
use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::rc::Rc;

use crate::address::Address;
use crate::reason::CloseReason;
use crate::transport::Producer;

/// Where a connection is in its life; see the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// A connect is in flight.
    Connecting,
    /// Reading and writing.
    Open,
    /// No more reading; close once the queue is flushed (and, after
    /// `lose_connection` with a producer registered, once that producer
    /// is unregistered).
    Draining,
    /// Close at the next step, queue discarded.
    Closing,
    /// The pipe is closed; nothing more happens.
    Closed,
}

/// The write side's half-close ([`Transport::lose_write_connection`]).
///
/// [`Transport::lose_write_connection`]: crate::Transport::lose_write_connection
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum WriteShutdown {
    /// Not asked for.
    No,
    /// Shut the write side down once the queue is flushed.
    Requested,
    /// Shut down: the peer has been sent end of stream.
    Done,
}

/// The yes/no state of a stream transport, one bit each in [`Flags`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Flag {
    /// Set once writes are no longer accepted (lose, abort, failure,
    /// half-close of the write side).
    WritesClosed,
    /// `lose_connection` was called while a producer was registered: the
    /// connection stays open, taking writes, until the producer is
    /// unregistered, then drains and closes (Twisted's contract).
    LoseAfterProducer,
    /// True while `process` runs: state changes made then are finished by
    /// `process` itself, not by a wake-up.
    Processing,
    /// Reading paused by `pause_reading` (or a producer throttling it).
    ReadingPaused,
    /// The built-in read throttle is on
    /// ([`Transport::enable_read_throttle`](crate::Transport::enable_read_throttle)).
    ReadThrottle,
    /// The read throttle has paused reading: the write buffer went above
    /// its high watermark and has not yet fallen to the low one.
    Throttled,
    /// The protocol handles half-closes itself.
    HalfCloseable,
    /// The peer ended its stream (half-closeable protocols only).
    ReadClosed,
    /// The registered producer is a push (streaming) producer.
    Streaming,
    /// The streaming producer has been paused.
    ProducerPaused,
    /// A pull producer's output has gone out: ask it for more at the end
    /// of the current step (see `ask_pull_producer`).
    PullPending,
    /// Writes made during the reactor's turn are queued, not yet tried:
    /// they go out together, in one send, at the end of the current step
    /// or (for writes from elsewhere) of the turn, through a wake. Write
    /// interest is not registered for them.
    Gathered,
    /// Inside `process`, the interest no longer matches the state; it is
    /// brought up to date once, at the end of the step.
    InterestStale,
    /// An edge-triggered pipe may hold bytes nobody will report again:
    /// the last read stopped before the pipe said it was drained (at the
    /// per-event bound, or reading was paused or throttled meanwhile).
    /// While it is set and the transport reads, it wakes itself and reads
    /// on the wake.
    ReadPending,
    /// With `ReadPending`: the readiness that started the read reported
    /// more than data (the peer's end of stream, an error, urgent data).
    /// A stream read stops short before those, so only a read that finds
    /// nothing, the end, or the error shows the pipe drained.
    ReadToEnd,
}

/// The [`Flag`]s, packed into one `u16`.
#[derive(Default)]
pub(super) struct Flags(Cell<u16>);

impl Flag {
    const ALL: [Flag; 15] = [
        Flag::WritesClosed,
        Flag::LoseAfterProducer,
        Flag::Processing,
        Flag::ReadingPaused,
        Flag::ReadThrottle,
        Flag::Throttled,
        Flag::HalfCloseable,
        Flag::ReadClosed,
        Flag::Streaming,
        Flag::ProducerPaused,
        Flag::PullPending,
        Flag::Gathered,
        Flag::InterestStale,
        Flag::ReadPending,
        Flag::ReadToEnd,
    ];
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for flag in Flag::ALL {
            if self.has(flag) {
                set.entry(&flag);
            }
        }
        set.finish()
    }
}

impl Flags {
    fn bit(flag: Flag) -> u16 {
        1 << flag as u16
    }

    /// True if `flag` is set.
    pub(super) fn has(&self, flag: Flag) -> bool {
        self.0.get() & Self::bit(flag) != 0
    }

    /// Sets or clears `flag`.
    pub(super) fn set(&self, flag: Flag, on: bool) {
        let flags = self.0.get();
        let bit = Self::bit(flag);
        self.0.set(if on { flags | bit } else { flags & !bit });
    }

    /// Sets or clears `flag` and returns what it was.
    pub(super) fn replace(&self, flag: Flag, on: bool) -> bool {
        let was = self.has(flag);
        self.set(flag, on);
        was
    }
}

/// The peer's address, kept small: an IPv4 address (the common case)
/// inline in 8 bytes, any other boxed.
pub(super) enum PeerAddress {
    V4(SocketAddrV4),
    Other(Box<Address>),
}

impl PeerAddress {
    pub(super) fn new(address: Address) -> PeerAddress {
        match address {
            Address::Tcp(SocketAddr::V4(v4)) => PeerAddress::V4(v4),
            other => PeerAddress::Other(Box::new(other)),
        }
    }

    pub(super) fn get(&self) -> Address {
        match self {
            PeerAddress::V4(v4) => Address::Tcp(SocketAddr::V4(*v4)),
            PeerAddress::Other(address) => (**address).clone(),
        }
    }
}

/// The registered producer, if any: one word, since most connections have
/// none.
#[derive(Default)]
pub(super) struct ProducerSlot(Cell<Option<Box<Rc<dyn Producer>>>>);

impl ProducerSlot {
    pub(super) fn get(&self) -> Option<Rc<dyn Producer>> {
        let producer = self.0.take();
        let copy = producer.as_deref().cloned();
        self.0.set(producer);
        copy
    }

    pub(super) fn is_set(&self) -> bool {
        let producer = self.0.take();
        let set = producer.is_some();
        self.0.set(producer);
        set
    }

    pub(super) fn set(&self, producer: Rc<dyn Producer>) {
        self.0.set(Some(Box::new(producer)));
    }

    pub(super) fn take(&self) -> Option<Rc<dyn Producer>> {
        self.0.take().map(|producer| *producer)
    }
}

/// Why a connection is ending: `None` until known. Boxed: most
/// connections carry none for most of their life, and a box is one word.
#[derive(Default)]
pub(super) struct ReasonSlot(Cell<Option<Box<CloseReason>>>);

impl ReasonSlot {
    /// Records `reason` unless one is recorded already.
    pub(super) fn note(&self, reason: CloseReason) {
        let current = self.0.take();
        self.0
            .set(Some(current.unwrap_or_else(|| Box::new(reason))));
    }

    /// Records `reason`, replacing any earlier one.
    pub(super) fn set(&self, reason: CloseReason) {
        self.0.set(Some(Box::new(reason)));
    }

    pub(super) fn take(&self) -> Option<CloseReason> {
        self.0.take().map(|reason| *reason)
    }

    pub(super) fn is_set(&self) -> bool {
        let reason = self.0.take();
        let set = reason.is_some();
        self.0.set(reason);
        set
    }
}
