//! What every stream transport shares, whatever carries its bytes
//! (Twisted's `abstract.py`): the write queue and its flushing, the read
//! path, flow control (watermarks, producers, the read throttle), the
//! connection's phases and why it closed.
//!
//! `StreamTransport` holds all of that and is generic over the `Pipe`
//! that moves the bytes; what a socket adds (Twisted's `tcp.py`) is the
//! socket pipe in `crate::socket`. A pipe, serial-port or TLS transport is
//! a `StreamTransport` over a pipe of its own.
//!
//! - `state`: compact storage, and the table of legal states;
//! - `phase`: the phase machine (opening, closing, half-closing,
//!   failing);
//! - `flow`: flow control (watermarks, producers, the read throttle, the
//!   pull pump, the producer panic guard);
//! - `transfer`: the write and read paths;
//! - `pipe`: what a medium must provide.

mod flow;
mod phase;
mod pipe;
mod state;
mod transfer;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use torsion_reactor::{Counters, Interest, Reactor, Readiness, WeakReactor};

pub use self::pipe::Pipe;
use self::state::{Flag, Flags, PeerAddress, Phase, ProducerSlot, ReasonSlot, WriteShutdown};
use crate::address::Address;
use crate::queue::WriteQueue;
use crate::reason::CloseReason;
use crate::transport::{Keepalive, PeerCredentials, Producer, Transport};

/// Size of the read buffer. One buffer serves every connection of a
/// thread: connections hold no read memory between reads.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Default high watermark of the write buffer: above it a streaming
/// producer is paused.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// Default low watermark: at or below it a paused producer resumes.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What [`StreamTransport::process`] found.
#[derive(Debug)]
pub enum Progress {
    /// Nothing that changes the connection's state.
    Pending,
    /// A connect (a transport started with [`Opening::Connecting`])
    /// succeeded; the transport is now open.
    Connected,
    /// A connect failed; the pipe is closed.
    ConnectFailed(io::Error),
    /// The connection is closed (pipe closed and removed from the
    /// reactor, producer stopped); tell the protocol.
    Closed(CloseReason),
}

/// Half-close events for the protocol, from
/// [`StreamTransport::take_half_close_events`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HalfCloseEvents {
    /// The peer ended its stream; the connection stays open for writing.
    pub read_closed: bool,
    /// Our write side was shut down after everything queued was sent.
    pub write_closed: bool,
}

/// How a [`StreamTransport`]'s pipe begins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Opening {
    /// Connected already (an accepted socket, an inherited pipe): the
    /// transport starts open and reading.
    Open,
    /// Still connecting: the transport waits, watching for writability,
    /// until [`Pipe::finish_connect`] answers.
    Connecting,
}

/// A [`Transport`] over a [`Pipe`]: everything a stream transport does
/// that does not depend on what carries the bytes (Twisted's
/// `abstract.FileDescriptor`).
///
/// The transport owns its pipe, and the pipe owns its reactor
/// registration, whose handler (in the layer above) calls
/// [`StreamTransport::process`] with each readiness event; `process`
/// reports the connection's [`Progress`]. The `Transport` methods may be
/// called from anywhere on the reactor's thread; what they cause beyond
/// the call itself (a close) is finished in `process`, which the
/// transport asks the reactor for through [`Pipe::wake`].
///
/// # Write path
/// A write made while the reactor is dispatching (from any callback it
/// runs: a protocol's `data_received`, a timer, a `call_soon`) is
/// *gathered*: queued, and sent together with the other writes to this
/// connection at the end of the current [`process`](Self::process) step,
/// or, for a write from elsewhere, at the end of the reactor's turn (the
/// transport wakes its own handler through [`Pipe::wake`]). So a turn
/// makes at most one send per connection in the common case, however
/// many replies a protocol writes, and no reply waits past the turn it
/// was written in. A write made outside a turn (before the reactor runs)
/// tries the pipe at once, and so does one larger than 4 KiB, after what
/// was gathered before it is sent (past that size the copy into the queue
/// costs more than the system call it would save).
///
/// What is queued is kept as [`Bytes`] as given (never copied) or, from a
/// `&[u8]`, copied once into a buffer from a per-thread pool. The queue is
/// flushed with vectored writes, and write interest is registered only
/// while the pipe has refused bytes.
///
/// # Read path
/// Reads go into one buffer per thread, and the bytes are lent to the
/// protocol for the duration of its callback; an idle connection holds no
/// read memory.
///
/// # States
/// The legal combinations of phase, write shutdown and flags are tabled
/// in the `stream::state` module's documentation (in the source).
pub struct StreamTransport<P> {
    id: u64,
    pipe: RefCell<Option<P>>,
    queue: RefCell<WriteQueue>,
    phase: Cell<Phase>,
    /// Why the connection is ending, once known.
    reason: ReasonSlot,
    peer: PeerAddress,
    reactor: WeakReactor,
    write_shutdown: Cell<WriteShutdown>,
    /// Half-close events not yet handed to the protocol.
    half_close_events: Cell<HalfCloseEvents>,
    producer: ProducerSlot,
    /// Watermarks, in bytes (u32: 4 GiB is beyond any sane buffer).
    high_water: Cell<u32>,
    low_water: Cell<u32>,
    flags: Flags,
    /// The open was counted: the close is to be counted too.
    counted_open: Cell<bool>,
    /// The reactor's counters, kept so counting is a plain add.
    counters: Rc<Counters>,
}

impl<P: Pipe> StreamTransport<P> {
    /// Makes a transport and its pipe. `attach` receives the new
    /// transport (to build the handler that will drive it) and the
    /// interest to register with, and returns the pipe, registered with
    /// `reactor`.
    ///
    /// # Errors
    /// Whatever `attach` returns; the transport is then dropped.
    pub fn new(
        reactor: &Reactor,
        peer: Address,
        opening: Opening,
        attach: impl FnOnce(&Rc<Self>, Interest) -> io::Result<P>,
    ) -> io::Result<Rc<Self>> {
        let (phase, interest) = match opening {
            Opening::Open => (Phase::Open, Interest::READABLE),
            Opening::Connecting => (Phase::Connecting, Interest::WRITABLE),
        };
        let transport = Rc::new(StreamTransport {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pipe: RefCell::new(None),
            queue: RefCell::new(WriteQueue::default()),
            phase: Cell::new(phase),
            reason: ReasonSlot::default(),
            peer: PeerAddress::new(peer),
            reactor: reactor.downgrade(),
            write_shutdown: Cell::new(WriteShutdown::No),
            half_close_events: Cell::new(HalfCloseEvents::default()),
            producer: ProducerSlot::default(),
            high_water: Cell::new(DEFAULT_HIGH_WATER as u32),
            low_water: Cell::new(DEFAULT_LOW_WATER as u32),
            flags: Flags::default(),
            counted_open: Cell::new(false),
            counters: reactor.shared_counters(),
        });
        let pipe = attach(&transport, interest)?;
        *transport.pipe.borrow_mut() = Some(pipe);
        if opening == Opening::Open {
            transport.count_opened();
        }
        Ok(transport)
    }

    /// Counts the connection as opened; its close will be counted.
    fn count_opened(&self) {
        self.counted_open.set(true);
        self.counters.connection_opened();
    }

    /// Counts the connection's close for `reason`, if its open was
    /// counted (a connect that failed opened nothing).
    fn count_closed(&self, reason: &CloseReason) {
        if self.counted_open.replace(false) {
            self.counters.connection_closed(reason.kind());
        }
    }

    /// A number that identifies this connection in logs, unique within the
    /// process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer's address.
    pub fn peer(&self) -> Address {
        self.peer.get()
    }

    /// True if the pipe is watched edge-triggered
    /// ([`Pipe::edge_triggered`]): the transport then comes back itself
    /// for what a read leaves. A diagnostic.
    pub fn is_edge_triggered(&self) -> bool {
        self.pipe
            .borrow()
            .as_ref()
            .is_some_and(|pipe| pipe.edge_triggered())
    }

    /// True once the pipe is closed.
    pub fn is_closed(&self) -> bool {
        self.phase.get() == Phase::Closed
    }

    /// True while a connect is in flight.
    pub fn is_connecting(&self) -> bool {
        self.phase.get() == Phase::Connecting
    }

    /// Handles one readiness event: finishes a connect, flushes the write
    /// queue, reads (handing each chunk to `on_data`), fails the
    /// connection with an error the pipe reports if no read will surface
    /// it (reading paused or over), asks a pull producer for more, and
    /// closes the pipe if the connection is done. Call it from the handler's
    /// [`Handler::ready`](torsion_reactor::Handler::ready); `on_data` must
    /// not call `process` again.
    pub fn process(&self, readiness: Readiness, on_data: &mut dyn FnMut(&[u8])) -> Progress {
        self.flags.set(Flag::Processing, true);
        let _processing = ResetOnDrop(self);
        let progress = match self.phase.get() {
            Phase::Closed => Progress::Pending,
            Phase::Connecting => self.finish_connect(readiness),
            _ => {
                if readiness.is_writable() {
                    self.flush();
                }
                // An edge-triggered pipe's read that stopped before the pipe
                // was drained goes on whatever woke us (see `ReadPending`).
                if readiness.is_readable() || self.flags.has(Flag::ReadPending) {
                    self.read(readiness, on_data);
                }
                // An error that no read will surface now (reading paused,
                // stopped, or never wanted): take it, after the data that
                // arrived before it was delivered.
                if readiness.is_error()
                    && !self.reads()
                    && matches!(self.phase.get(), Phase::Open | Phase::Draining)
                {
                    self.take_error();
                }
                // Sends what this step and the turn so far gathered (one
                // send), then asks a pull producer for more.
                self.ask_pull_producer();
                self.finish()
            }
        };
        // The interest changes this step noted, made once, unless the
        // connection closed meanwhile (which removed it from the poller).
        if self.flags.replace(Flag::InterestStale, false) && !self.is_closed() {
            self.apply_interest();
            if self.phase.get() == Phase::Closing {
                // The poller refused: the connection failed, and the step
                // that closes it must still run.
                self.wake();
            }
        }
        self.come_back_for_pending_read();
        self.check_state();
        progress
    }

    /// Tells the transport whether its protocol handles half-closes
    /// (Twisted's `IHalfCloseableProtocol`). If it does, the peer's end of
    /// stream only closes the read side (reported through
    /// [`StreamTransport::take_half_close_events`]); if not, everything
    /// queued is sent and the connection closes.
    pub fn set_half_closeable(&self, half_closeable: bool) {
        self.flags.set(Flag::HalfCloseable, half_closeable);
    }

    /// Takes the half-close events that happened since the last call.
    pub fn take_half_close_events(&self) -> HalfCloseEvents {
        self.half_close_events.take()
    }

    /// Closes the connection because its reactor is shutting down: hands
    /// the pipe what it takes of the queue now, then closes. Returns the
    /// reason to report, or `None` if the connection was already closed or
    /// still connecting (the connect is then simply abandoned).
    pub fn close_for_shutdown(&self) -> Option<CloseReason> {
        match self.phase.get() {
            Phase::Closed => None,
            Phase::Connecting => {
                self.cancel_connect();
                None
            }
            _ => {
                if !self.queue.borrow().is_empty() {
                    self.flush();
                }
                // A connection that was already closing cleanly and has
                // now sent everything keeps its clean reason, and one that
                // failed keeps its failure.
                let flushed = self.queue.borrow().is_empty();
                let reason = self.reason.take();
                let keep = match &reason {
                    Some(CloseReason::Lost(_) | CloseReason::ProducerPanicked { .. }) => true,
                    Some(CloseReason::Closed | CloseReason::ClosedByPeer) => {
                        flushed
                            && self.phase.get() == Phase::Draining
                            && !self.producer_holds_close()
                    }
                    _ => false,
                };
                self.reason.set(match reason {
                    Some(reason) if keep => reason,
                    _ => CloseReason::Shutdown,
                });
                Some(self.close())
            }
        }
    }

    /// Gives up a connect in flight (for a timeout or a cancel): closes the
    /// pipe without reporting anything.
    pub fn cancel_connect(&self) {
        if self.phase.get() == Phase::Connecting {
            self.close_unopened();
        }
    }

    /// Asserts, in debug builds, that the state is one the table in
    /// `state` allows.
    fn check_state(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let phase = self.phase.get();
        let has = |flag| self.flags.has(flag);
        let queued = !self.queue.borrow().is_empty();
        let producer = self.producer.is_set();
        let state = || format!("{self:?}");
        match phase {
            Phase::Connecting => assert!(!queued && !producer, "{}", state()),
            Phase::Open => assert_eq!(
                has(Flag::WritesClosed),
                self.write_shutdown.get() != WriteShutdown::No,
                "{}",
                state()
            ),
            Phase::Draining => {}
            Phase::Closing => assert!(
                !queued && has(Flag::WritesClosed) && self.reason.is_set(),
                "{}",
                state()
            ),
            Phase::Closed => assert!(
                !queued
                    && has(Flag::WritesClosed)
                    && !has(Flag::ReadPending)
                    && self.pipe.borrow().is_none()
                    && !producer,
                "{}",
                state()
            ),
        }
        if has(Flag::LoseAfterProducer) {
            assert!(
                phase == Phase::Draining && producer && !has(Flag::WritesClosed),
                "{}",
                state()
            );
        }
        assert!(
            !has(Flag::Throttled) || has(Flag::ReadThrottle),
            "{}",
            state()
        );
        assert!(
            !has(Flag::ProducerPaused) || (producer && has(Flag::Streaming)),
            "{}",
            state()
        );
        assert!(
            !has(Flag::PullPending) || (producer && !has(Flag::Streaming)),
            "{}",
            state()
        );
        assert!(
            !has(Flag::ReadToEnd) || has(Flag::ReadPending),
            "{}",
            state()
        );
        // Every step ends having sent what was gathered.
        assert!(!has(Flag::Gathered), "{}", state());
    }
}

impl<P: Pipe> Transport for StreamTransport<P> {
    fn write(&self, data: &[u8]) {
        self.write_with(data, |queue, sent| queue.push_copy(&data[sent..]));
    }

    fn write_bytes(&self, data: Bytes) {
        self.write_with(&data, |queue, sent| queue.push(data.slice(sent..)));
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        self.write_gathered(data);
    }

    fn lose_connection(&self) {
        self.lose();
    }

    fn lose_connection_with_error(&self, fault: String) {
        if matches!(self.phase.get(), Phase::Open | Phase::Draining) {
            tracing::debug!(conn = self.id, peer = %self.peer.get(), %fault, "closing for a protocol error");
            self.reason.set(CloseReason::ProtocolError(fault));
            self.lose();
        }
    }

    fn abort_connection(&self) {
        self.abort();
    }

    fn get_peer(&self) -> Address {
        self.peer.get()
    }

    fn get_host(&self) -> Address {
        // Asked rarely: asked of the pipe each time rather than a cached
        // copy in every connection.
        self.with_pipe(Pipe::local_address)
            .unwrap_or(Address::Unknown)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.queue.borrow().len()
    }

    fn is_closing(&self) -> bool {
        !matches!(self.phase.get(), Phase::Open | Phase::Connecting)
            || self.flags.has(Flag::WritesClosed)
    }

    fn lose_write_connection(&self) {
        self.lose_write();
    }

    fn pause_reading(&self) {
        if !self.flags.replace(Flag::ReadingPaused, true) {
            self.update_interest();
        }
    }

    fn resume_reading(&self) {
        if self.flags.replace(Flag::ReadingPaused, false) {
            // The poller reports data that arrived meanwhile (the change
            // of interest has it look again); what a read left on an
            // edge-triggered pipe, the transport comes back for.
            self.update_interest();
        }
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()> {
        self.add_producer(producer, streaming)
    }

    fn unregister_producer(&self) {
        self.remove_producer();
    }

    fn enable_read_throttle(&self) -> bool {
        self.enable_throttle();
        true
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.set_limits(high, low);
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }

    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        self.with_pipe(Pipe::peer_credentials)
    }

    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.with_pipe(|pipe| pipe.set_tcp_nodelay(nodelay))
    }

    fn tcp_nodelay(&self) -> io::Result<bool> {
        self.with_pipe(Pipe::tcp_nodelay)
    }

    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.with_pipe(|pipe| pipe.set_tcp_keepalive(keepalive))
    }
}

impl<P> fmt::Debug for StreamTransport<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTransport")
            .field("id", &self.id)
            .field("peer", &self.peer.get())
            .field("phase", &self.phase.get())
            .field("write_shutdown", &self.write_shutdown.get())
            .field("flags", &self.flags)
            .field("queued", &self.queue.borrow().len())
            .field("producer", &self.producer.is_set())
            .finish()
    }
}

/// Clears [`Flag::Processing`] when `process` returns, however it does;
/// if it unwound (a driver's `on_data` panicked) before the step's
/// interest change was made, makes it.
struct ResetOnDrop<'a, P: Pipe>(&'a StreamTransport<P>);

impl<P: Pipe> Drop for ResetOnDrop<'_, P> {
    fn drop(&mut self) {
        self.0.flags.set(Flag::Processing, false);
        if self.0.flags.replace(Flag::InterestStale, false) && !self.0.is_closed() {
            self.0.apply_interest();
        }
    }
}
