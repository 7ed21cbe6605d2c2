//! The stream-socket transport: a non-blocking connected socket, its write
//! queue, and the readiness mechanics the protocol layer drives.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::{SocketAddr, SocketAddrV4};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use socket2::Socket;
use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration, WeakReactor};

use crate::address::Address;
use crate::net;
use crate::queue::WriteQueue;
use crate::reason::CloseReason;
use crate::sys::SEND_FLAGS;
use crate::transport::{Keepalive, PeerCredentials, Producer, Transport};

/// Size of the read buffer. One buffer serves every connection of a
/// thread: connections hold no read memory between reads.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Reads per readiness event before yielding to other sources. Level
/// triggering reports what is left on the next turn.
const MAX_READS_PER_EVENT: usize = 8;

/// Default high watermark of the write buffer: above it a streaming
/// producer is paused.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// Default low watermark: at or below it a paused producer resumes.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

/// Requests to a pull producer per step whose answers all go straight
/// to the kernel; past this the next loop turn goes on asking.
const MAX_PULLS_PER_STEP: usize = 16;

/// Slices per vectored write (well under every platform's `IOV_MAX`).
const MAX_IOVECS: usize = 64;

thread_local! {
    static READ_BUFFER: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Lends the thread's read buffer to `f`. A nested call (which the reactor
/// never makes) gets a fresh buffer instead of panicking.
fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ_BUFFER
        .take()
        .unwrap_or_else(|| vec![0; READ_BUFFER_SIZE].into_boxed_slice());
    let result = f(&mut buf);
    READ_BUFFER.set(Some(buf));
    result
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// A connect is in flight.
    Connecting,
    /// Reading and writing.
    Open,
    /// No more reading; close once the queue is flushed.
    Draining,
    /// Close at the next step, queue discarded.
    Closing,
    Closed,
}

/// What [`SocketTransport::process`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress {
    /// Nothing that changes the connection's state.
    Pending,
    /// A connect started with [`SocketTransport::connecting`] succeeded;
    /// the transport is now open.
    Connected,
    /// A connect failed; the socket is closed.
    ConnectFailed(io::Error),
    /// The connection is closed (socket closed and removed from the
    /// reactor); tell the protocol.
    Closed(CloseReason),
}

/// A [`Transport`] over a connected, non-blocking stream socket.
///
/// The transport owns the socket through its reactor [`Registration`].
/// Its `Transport` methods may be called from anywhere on the reactor's
/// thread; the reactor-facing side is [`SocketTransport::process`], which
/// the owning handler (in the protocol layer) calls with each readiness
/// event and which reports the connection's progress.
///
/// # Write path
/// A write first tries the socket directly; only what the kernel does not
/// take is queued, as [`Bytes`] (copied once from a `&[u8]`, never copied
/// from a `Bytes`). The queue is flushed with vectored writes when the
/// socket becomes writable, and write interest is registered only while
/// the queue is non-empty.
///
/// # Read path
/// Reads go into one buffer per thread, and the bytes are lent to the
/// protocol for the duration of its callback; an idle connection holds no
/// read memory.
pub struct SocketTransport {
    id: u64,
    io: RefCell<Option<Registration<Socket>>>,
    queue: RefCell<WriteQueue>,
    phase: Cell<Phase>,
    /// Why the connection is ending, once known. Boxed: most connections
    /// carry none for most of their life, and a box is one word.
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
    /// Yes/no state, one bit per [`Flag`]: packed, since every byte of
    /// an idle connection counts.
    flags: Cell<u16>,
}

/// The peer's address, kept small: an IPv4 address (the common case)
/// inline in 8 bytes, any other boxed.
enum PeerAddress {
    V4(SocketAddrV4),
    Other(Box<Address>),
}

impl PeerAddress {
    fn new(address: Address) -> PeerAddress {
        match address {
            Address::Tcp(SocketAddr::V4(v4)) => PeerAddress::V4(v4),
            other => PeerAddress::Other(Box::new(other)),
        }
    }

    fn get(&self) -> Address {
        match self {
            PeerAddress::V4(v4) => Address::Tcp(SocketAddr::V4(*v4)),
            PeerAddress::Other(address) => (**address).clone(),
        }
    }
}

/// The registered producer, if any: one word, since most connections have
/// none.
#[derive(Default)]
struct ProducerSlot(Cell<Option<Box<Rc<dyn Producer>>>>);

impl ProducerSlot {
    fn get(&self) -> Option<Rc<dyn Producer>> {
        let producer = self.0.take();
        let copy = producer.as_deref().cloned();
        self.0.set(producer);
        copy
    }

    fn is_set(&self) -> bool {
        let producer = self.0.take();
        let set = producer.is_some();
        self.0.set(producer);
        set
    }

    fn set(&self, producer: Rc<dyn Producer>) {
        self.0.set(Some(Box::new(producer)));
    }

    fn take(&self) -> Option<Rc<dyn Producer>> {
        self.0.take().map(|producer| *producer)
    }
}

/// Why a connection is ending: `None` until known.
#[derive(Default)]
struct ReasonSlot(Cell<Option<Box<CloseReason>>>);

impl ReasonSlot {
    /// Records `reason` unless one is recorded already.
    fn note(&self, reason: CloseReason) {
        let current = self.0.take();
        self.0
            .set(Some(current.unwrap_or_else(|| Box::new(reason))));
    }

    /// Records `reason`, replacing any earlier one.
    fn set(&self, reason: CloseReason) {
        self.0.set(Some(Box::new(reason)));
    }

    fn take(&self) -> Option<CloseReason> {
        self.0.take().map(|reason| *reason)
    }
}

/// The yes/no state of a [`SocketTransport`], one bit each.
#[derive(Clone, Copy)]
enum Flag {
    /// Set once writes are no longer accepted (lose, abort, failure).
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
    /// ([`Transport::enable_read_throttle`]).
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
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteShutdown {
    No,
    /// Shut the write side down once the queue is flushed.
    Requested,
    Done,
}

/// Half-close events for the protocol, from
/// [`SocketTransport::take_half_close_events`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HalfCloseEvents {
    /// The peer ended its stream; the connection stays open for writing.
    pub read_closed: bool,
    /// Our write side was shut down after everything queued was sent.
    pub write_closed: bool,
}

impl SocketTransport {
    fn flag(&self, flag: Flag) -> bool {
        self.flags.get() & (1 << flag as u16) != 0
    }

    fn set_flag(&self, flag: Flag, on: bool) {
        let bit = 1 << flag as u16;
        let flags = self.flags.get();
        self.flags.set(if on { flags | bit } else { flags & !bit });
    }

    /// Sets `flag` and returns what it was.
    fn replace_flag(&self, flag: Flag, on: bool) -> bool {
        let was = self.flag(flag);
        self.set_flag(flag, on);
        was
    }

    /// Registers a freshly accepted, non-blocking socket with `reactor`.
    ///
    /// `make_handler` receives the new transport and returns the handler
    /// that will receive its readiness (typically an object that holds the
    /// transport and a protocol, and calls [`SocketTransport::process`]).
    ///
    /// # Errors
    /// If the reactor cannot register the socket (which is then closed).
    pub fn accepted(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        Self::register(reactor, socket, peer, Phase::Open, make_handler)
    }

    /// Registers a socket whose connect was started with
    /// [`net::start_connect`]. [`SocketTransport::process`] reports
    /// [`Progress::Connected`] or [`Progress::ConnectFailed`] when the
    /// attempt ends.
    ///
    /// # Errors
    /// As for [`SocketTransport::accepted`].
    pub fn connecting(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        Self::register(reactor, socket, peer, Phase::Connecting, make_handler)
    }

    fn register(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        phase: Phase,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        let transport = Rc::new(SocketTransport {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            io: RefCell::new(None),
            queue: RefCell::new(WriteQueue::default()),
            phase: Cell::new(phase),
            flags: Cell::new(0),
            reason: ReasonSlot::default(),
            peer: PeerAddress::new(peer),
            reactor: reactor.downgrade(),
            write_shutdown: Cell::new(WriteShutdown::No),
            half_close_events: Cell::new(HalfCloseEvents::default()),
            producer: ProducerSlot::default(),
            high_water: Cell::new(DEFAULT_HIGH_WATER as u32),
            low_water: Cell::new(DEFAULT_LOW_WATER as u32),
        });
        let interest = match phase {
            Phase::Connecting => Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        let handler = make_handler(transport.clone());
        let registration = reactor.register(socket, interest, handler)?;
        *transport.io.borrow_mut() = Some(registration);
        Ok(transport)
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

    /// True once the socket is closed.
    pub fn is_closed(&self) -> bool {
        self.phase.get() == Phase::Closed
    }

    /// Handles one readiness event: finishes a connect, flushes the write
    /// queue, reads (handing each chunk to `on_data`), and closes the
    /// socket if the connection is done. Call it from the handler's
    /// [`Handler::ready`]; `on_data` must not call `process` again.
    pub fn process(&self, readiness: Readiness, on_data: &mut dyn FnMut(&[u8])) -> Progress {
        self.set_flag(Flag::Processing, true);
        let _processing = ResetOnDrop(self);
        match self.phase.get() {
            Phase::Closed => return Progress::Pending,
            Phase::Connecting => return self.finish_connect(readiness),
            _ => {}
        }
        if readiness.is_error() && self.take_error() {
            return self.finish();
        }
        if readiness.is_writable() {
            self.flush();
        }
        if readiness.is_readable() {
            self.read(on_data);
        }
        self.ask_pull_producer();
        self.finish()
    }

    /// The socket reported an error condition: reads its pending error
    /// (`SO_ERROR`) and fails the connection with it, whether or not
    /// anything would have read or written, so a reset on a connection
    /// that is paused and has nothing queued still ends it at once.
    /// Returns true if it failed the connection. (A read or write may have
    /// consumed the error already; the readiness that goes with it then
    /// surfaces what is left.)
    fn take_error(&self) -> bool {
        let error = match self.with_socket(Socket::take_error) {
            Ok(Some(error)) => error,
            Ok(None) => return false,
            Err(error) => error,
        };
        self.fail(error);
        true
    }

    /// Tells the transport whether its protocol handles half-closes
    /// (Twisted's `IHalfCloseableProtocol`). If it does, the peer's end of
    /// stream only closes the read side (reported through
    /// [`SocketTransport::take_half_close_events`]); if not, everything
    /// queued is sent and the connection closes.
    pub fn set_half_closeable(&self, half_closeable: bool) {
        self.set_flag(Flag::HalfCloseable, half_closeable);
    }

    /// Takes the half-close events that happened since the last call.
    pub fn take_half_close_events(&self) -> HalfCloseEvents {
        self.half_close_events.take()
    }

    /// Closes the connection because its reactor is shutting down: hands
    /// the kernel what it takes of the queue now, then closes. Returns the
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
                // now sent everything keeps its clean reason.
                let flushed = self.queue.borrow().is_empty();
                let reason = self.reason.take();
                let keep = match &reason {
                    Some(CloseReason::Lost(_)) => true,
                    Some(CloseReason::Closed | CloseReason::ClosedByPeer) => {
                        flushed
                            && self.phase.get() == Phase::Draining
                            && !self.flag(Flag::LoseAfterProducer)
                    }
                    _ => false,
                };
                self.reason.set(if keep {
                    reason.unwrap_or(CloseReason::Shutdown)
                } else {
                    CloseReason::Shutdown
                });
                Some(self.close())
            }
        }
    }

    /// True while a connect is in flight.
    pub fn is_connecting(&self) -> bool {
        self.phase.get() == Phase::Connecting
    }

    /// Gives up a connect in flight (for a timeout or a cancel): closes the
    /// socket without reporting anything.
    pub fn cancel_connect(&self) {
        if self.phase.get() == Phase::Connecting {
            self.phase.set(Phase::Closed);
            self.io.borrow_mut().take();
        }
    }

    fn finish_connect(&self, readiness: Readiness) -> Progress {
        if !readiness.is_writable() && !readiness.is_readable() {
            return Progress::Pending;
        }
        match self.with_socket(net::finish_connect) {
            Ok(()) => {
                self.phase.set(Phase::Open);
                self.update_interest();
                Progress::Connected
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Progress::Pending,
            Err(e) => {
                self.phase.set(Phase::Closed);
                self.io.borrow_mut().take();
                Progress::ConnectFailed(e)
            }
        }
    }

    fn with_socket<R>(&self, f: impl FnOnce(&Socket) -> io::Result<R>) -> io::Result<R> {
        match &*self.io.borrow() {
            Some(registration) => f(registration.get_ref()),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Sends what the kernel takes now; `WouldBlock` counts as zero.
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.send_with(|socket| socket.send_with_flags(data, SEND_FLAGS))
    }

    /// Sends the slices in one vectored system call, as [`Self::send`].
    fn send_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_with(|socket| socket.send_vectored_with_flags(slices, SEND_FLAGS))
    }

    fn send_with(&self, send: impl Fn(&Socket) -> io::Result<usize>) -> io::Result<usize> {
        loop {
            match self.with_socket(&send) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn accepts_writes(&self) -> bool {
        !self.flag(Flag::WritesClosed) && matches!(self.phase.get(), Phase::Open | Phase::Draining)
    }

    /// Writes `data` now if nothing is queued, and queues the rest through
    /// `queue_rest` (which copies or slices as the caller can).
    fn write_with(&self, data: &[u8], queue_rest: impl FnOnce(usize) -> Bytes) {
        if data.is_empty() || !self.accepts_writes() {
            return;
        }
        if !self.queue.borrow().is_empty() {
            self.queue.borrow_mut().push(queue_rest(0));
            self.queue_grew();
            return;
        }
        match self.send(data) {
            Ok(sent) if sent == data.len() => self.wrote(),
            Ok(sent) => {
                self.queue.borrow_mut().push(queue_rest(sent));
                self.update_interest();
                self.queue_grew();
            }
            Err(e) => self.fail(e),
        }
    }

    /// Everything written went out at once: a pull producer is to be asked
    /// for more, at the end of this step or at the next one (never from
    /// inside the write, which may be its own answer).
    fn wrote(&self) {
        if self.producer.is_set() && !self.flag(Flag::Streaming) {
            self.set_flag(Flag::PullPending, true);
            self.poke();
        }
    }

    /// The queue grew: pause a streaming producer above the high
    /// watermark.
    fn queue_grew(&self) {
        if self.queue.borrow().len() <= self.high_water.get() as usize {
            return;
        }
        if self.flag(Flag::ReadThrottle) && !self.replace_flag(Flag::Throttled, true) {
            tracing::debug!(
                conn = self.id,
                queued = self.queue.borrow().len(),
                "write buffer above high watermark; reading paused"
            );
            self.update_interest();
        }
        if self.flag(Flag::ProducerPaused) || !self.flag(Flag::Streaming) {
            return;
        }
        let producer = self.producer.get();
        if let Some(producer) = producer {
            tracing::debug!(
                conn = self.id,
                queued = self.queue.borrow().len(),
                "write buffer above high watermark; pausing producer"
            );
            self.set_flag(Flag::ProducerPaused, true);
            self.call_producer(&*producer, ProducerCall::Pause);
        }
    }

    /// The queue shrank: resume a paused streaming producer, or note that
    /// a pull producer is to be asked for more (see
    /// [`Self::ask_pull_producer`]), once at or below the low watermark.
    fn queue_shrank(&self) {
        if self.queue.borrow().len() > self.low_water.get() as usize {
            return;
        }
        if self.replace_flag(Flag::Throttled, false) {
            tracing::debug!(
                conn = self.id,
                "write buffer below low watermark; reading resumed"
            );
            // Level-triggered readiness reports data that arrived meanwhile.
            self.update_interest();
        }
        let producer = self.producer.get();
        let Some(producer) = producer else {
            return;
        };
        if self.flag(Flag::Streaming) {
            if self.replace_flag(Flag::ProducerPaused, false) {
                tracing::debug!(
                    conn = self.id,
                    "write buffer below low watermark; resuming producer"
                );
                self.call_producer(&*producer, ProducerCall::Resume);
            }
        } else {
            self.set_flag(Flag::PullPending, true);
            self.poke();
        }
    }

    /// Asks a pull producer for more if its output has gone out (Twisted
    /// asks again each time the buffer has drained). What it writes in
    /// answer may go out whole and earn another request: those are made
    /// here, in a loop rather than by recursion, and past
    /// [`MAX_PULLS_PER_STEP`] the next turn continues, so neither the
    /// stack nor one connection's loop turn grows without bound. A request
    /// noted while output is still queued above the low watermark is
    /// dropped: the flush that drains the queue notes another.
    fn ask_pull_producer(&self) {
        for _ in 0..MAX_PULLS_PER_STEP {
            if !self.replace_flag(Flag::PullPending, false)
                || !matches!(self.phase.get(), Phase::Open | Phase::Draining)
                || self.queue.borrow().len() > self.low_water.get() as usize
            {
                return;
            }
            let Some(producer) = self.producer.get() else {
                return;
            };
            self.call_producer(&*producer, ProducerCall::Resume);
        }
        if self.flag(Flag::PullPending) {
            if let Some(registration) = &*self.io.borrow() {
                registration.wake();
            }
        }
    }

    fn flush(&self) {
        loop {
            let result = {
                let queue = self.queue.borrow();
                if queue.is_empty() {
                    break;
                }
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let (count, bytes) = queue.fill(&mut slices);
                self.send_vectored(&slices[..count])
                    .map(|sent| (sent, bytes))
            };
            match result {
                Ok((sent, bytes)) => {
                    self.queue.borrow_mut().advance(sent);
                    if sent < bytes {
                        break;
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        if self.queue.borrow().is_empty() && self.write_shutdown.get() == WriteShutdown::Requested {
            self.shutdown_write();
        }
        self.update_interest();
        self.queue_shrank();
    }

    /// Shuts the write side down (a FIN to the peer); the read side stays
    /// open.
    fn shutdown_write(&self) {
        if let Err(e) = self.with_socket(|s| s.shutdown(std::net::Shutdown::Write)) {
            self.fail(e);
            return;
        }
        self.write_shutdown.set(WriteShutdown::Done);
        let mut events = self.half_close_events.get();
        events.write_closed = true;
        self.half_close_events.set(events);
        if self.flag(Flag::ReadClosed) {
            // Both directions are done.
            self.reason.note(CloseReason::Closed);
            self.close_soon();
        }
    }

    fn read(&self, on_data: &mut dyn FnMut(&[u8])) {
        with_read_buffer(|buf| {
            for _ in 0..MAX_READS_PER_EVENT {
                if self.phase.get() != Phase::Open
                    || self.flag(Flag::ReadingPaused)
                    || self.flag(Flag::Throttled)
                    || self.flag(Flag::ReadClosed)
                {
                    return;
                }
                let n = match self.with_socket(|mut s| s.read(buf)) {
                    Ok(0) => {
                        self.peer_closed();
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                };
                on_data(&buf[..n]);
                if n < buf.len() {
                    // Drained for now; level triggering tells us if more
                    // arrives.
                    return;
                }
            }
        });
    }

    /// The peer ended its stream: stop reading, flush what is queued, then
    /// close.
    fn peer_closed(&self) {
        tracing::debug!(conn = self.id, peer = %self.peer.get(), "peer closed its end");
        if self.flag(Flag::HalfCloseable) {
            self.set_flag(Flag::ReadClosed, true);
            let mut events = self.half_close_events.get();
            events.read_closed = true;
            self.half_close_events.set(events);
            if self.write_shutdown.get() == WriteShutdown::Done {
                self.reason.note(CloseReason::ClosedByPeer);
                self.close_soon();
            } else {
                self.update_interest();
            }
            return;
        }
        self.phase.set(Phase::Draining);
        self.reason.note(CloseReason::ClosedByPeer);
        self.update_interest();
    }

    /// The connection failed: drop the queue and close.
    fn fail(&self, error: io::Error) {
        if matches!(self.phase.get(), Phase::Closing | Phase::Closed) {
            return;
        }
        tracing::debug!(conn = self.id, peer = %self.peer.get(), %error, "connection failed");
        self.fail_with(CloseReason::Lost(error));
    }

    /// Drops the queue and closes with `reason`, unless the connection
    /// is closing already.
    fn fail_with(&self, reason: CloseReason) {
        if matches!(self.phase.get(), Phase::Closing | Phase::Closed) {
            return;
        }
        self.reason.set(reason);
        self.close_soon();
    }

    /// Runs one producer callback. Every producer call goes through here,
    /// whatever called the transport (its own flush, a protocol's write,
    /// a timer), so a panic is caught before it can unwind through the
    /// transport or out of the reactor. It is logged once and costs the
    /// producer its connection: the queue is dropped and the connection
    /// closes with [`CloseReason::ProducerPanicked`], as Twisted loses a
    /// connection whose producer raised. A panic in `stop_producing` comes
    /// while the connection is closing anyway: it is logged, and the
    /// connection keeps its reason.
    fn call_producer(&self, producer: &dyn Producer, call: ProducerCall) {
        let result = panic::catch_unwind(AssertUnwindSafe(|| match call {
            ProducerCall::Pause => producer.pause_producing(),
            ProducerCall::Resume => producer.resume_producing(),
            ProducerCall::Stop => producer.stop_producing(),
        }));
        let Err(payload) = result else {
            return;
        };
        let message = panic_message(&*payload);
        tracing::error!(
            conn = self.id,
            peer = %self.peer.get(),
            panic = message,
            "producer panicked in {}; closing its connection",
            call.name()
        );
        if !matches!(call, ProducerCall::Stop) {
            self.fail_with(CloseReason::ProducerPanicked {
                callback: call.name(),
                message: message.to_owned(),
            });
        }
    }

    /// Moves to `Closing` and makes sure a step runs to finish it.
    fn close_soon(&self) {
        self.phase.set(Phase::Closing);
        self.set_flag(Flag::WritesClosed, true);
        self.queue.borrow_mut().clear();
        self.poke();
    }

    /// Makes sure `process` runs again soon, unless it is running now (it
    /// finishes state changes itself before returning).
    fn poke(&self) {
        if !self.flag(Flag::Processing) {
            if let Some(registration) = &*self.io.borrow() {
                registration.wake();
            }
        }
    }

    fn update_interest(&self) {
        let phase = self.phase.get();
        let interest = Interest::NONE
            .with_readable(
                phase == Phase::Open
                    && !self.flag(Flag::ReadingPaused)
                    && !self.flag(Flag::Throttled)
                    && !self.flag(Flag::ReadClosed),
            )
            .with_writable(
                matches!(phase, Phase::Open | Phase::Draining) && !self.queue.borrow().is_empty(),
            );
        let result = match &*self.io.borrow() {
            Some(registration) => registration.set_interest(interest),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// Closes the socket if the connection is done.
    fn finish(&self) -> Progress {
        match self.phase.get() {
            Phase::Closing => Progress::Closed(self.close()),
            Phase::Draining
                if self.queue.borrow().is_empty() && !self.flag(Flag::LoseAfterProducer) =>
            {
                Progress::Closed(self.close())
            }
            _ => Progress::Pending,
        }
    }

    fn close(&self) -> CloseReason {
        let reason = self.reason.take().unwrap_or(CloseReason::Closed);
        if matches!(reason, CloseReason::Aborted) {
            // Linger zero: close sends a reset instead of a FIN.
            let _ = self.with_socket(|s| s.set_linger(Some(std::time::Duration::ZERO)));
        }
        self.phase.set(Phase::Closed);
        self.set_flag(Flag::WritesClosed, true);
        self.set_flag(Flag::LoseAfterProducer, false);
        self.queue.borrow_mut().clear();
        // Dropping the registration removes the socket from the reactor
        // and closes it.
        let registration = self.io.borrow_mut().take();
        drop(registration);
        // A registered producer hears that nothing more will be consumed,
        // before the caller tells the protocol (every close path comes
        // through here and reports the reason only once this returns).
        let producer = self.producer.take();
        if let Some(producer) = producer {
            self.call_producer(&*producer, ProducerCall::Stop);
        }
        tracing::debug!(conn = self.id, peer = %self.peer.get(), %reason, "connection closed");
        reason
    }
}

impl Transport for SocketTransport {
    fn write(&self, data: &[u8]) {
        self.write_with(data, |sent| Bytes::copy_from_slice(&data[sent..]));
    }

    fn write_bytes(&self, data: Bytes) {
        self.write_with(&data, |sent| data.slice(sent..));
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        let total: usize = data.iter().map(|part| part.len()).sum();
        if total == 0 || !self.accepts_writes() {
            return;
        }
        let mut sent = 0;
        if self.queue.borrow().is_empty() {
            let slices: Vec<IoSlice<'_>> = data
                .iter()
                .filter(|part| !part.is_empty())
                .take(MAX_IOVECS)
                .map(|part| IoSlice::new(part))
                .collect();
            match self.send_vectored(&slices) {
                Ok(n) if n == total => return self.wrote(),
                Ok(n) => sent = n,
                Err(e) => return self.fail(e),
            }
        }
        // Queue the rest as one chunk.
        let mut rest = BytesMut::with_capacity(total - sent);
        let mut skip = sent;
        for part in data {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            rest.extend_from_slice(&part[skip..]);
            skip = 0;
        }
        self.queue.borrow_mut().push(rest.freeze());
        self.update_interest();
        self.queue_grew();
    }

    fn lose_connection(&self) {
        match self.phase.get() {
            Phase::Open => {}
            // Already waiting for the producer to be unregistered.
            Phase::Draining if self.flag(Flag::LoseAfterProducer) => return,
            Phase::Draining => {}
            _ => return,
        }
        self.reason.note(CloseReason::Closed);
        self.phase.set(Phase::Draining);
        if self.producer.is_set() && !self.flag(Flag::WritesClosed) {
            // Reading stops now; the producer's writes are still taken
            // and the close waits for `unregister_producer`.
            self.set_flag(Flag::LoseAfterProducer, true);
            self.update_interest();
            return;
        }
        self.set_flag(Flag::WritesClosed, true);
        self.update_interest();
        if self.queue.borrow().is_empty() {
            self.poke();
        }
    }

    fn lose_connection_with_error(&self, fault: String) {
        if matches!(self.phase.get(), Phase::Open | Phase::Draining) {
            tracing::debug!(conn = self.id, peer = %self.peer.get(), %fault, "closing for a protocol error");
            self.reason.set(CloseReason::ProtocolError(fault));
            self.lose_connection();
        }
    }

    fn abort_connection(&self) {
        if matches!(
            self.phase.get(),
            Phase::Connecting | Phase::Closing | Phase::Closed
        ) {
            return;
        }
        self.reason.set(CloseReason::Aborted);
        self.close_soon();
    }

    fn get_peer(&self) -> Address {
        self.peer.get()
    }

    fn get_host(&self) -> Address {
        // Asked rarely: one getsockname each time rather than a cached
        // copy in every connection.
        match self.with_socket(net::local_address) {
            Ok(addr) => addr,
            Err(_) => Address::Unknown,
        }
    }

    fn get_write_buffer_size(&self) -> usize {
        self.queue.borrow().len()
    }

    fn lose_write_connection(&self) {
        if self.flag(Flag::WritesClosed) || self.phase.get() != Phase::Open {
            return;
        }
        self.set_flag(Flag::WritesClosed, true);
        self.write_shutdown.set(WriteShutdown::Requested);
        if self.queue.borrow().is_empty() {
            self.shutdown_write();
            self.poke();
        }
    }

    fn pause_reading(&self) {
        if !self.replace_flag(Flag::ReadingPaused, true) {
            self.update_interest();
        }
    }

    fn resume_reading(&self) {
        if self.replace_flag(Flag::ReadingPaused, false) {
            // Level-triggered readiness reports data that arrived meanwhile.
            self.update_interest();
        }
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()> {
        if self.producer.is_set() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a producer is already registered with this transport",
            ));
        }
        if self.is_closed() {
            self.call_producer(&*producer, ProducerCall::Stop);
            return Ok(());
        }
        self.producer.set(producer.clone());
        self.set_flag(Flag::Streaming, streaming);
        self.set_flag(Flag::ProducerPaused, false);
        if streaming {
            self.queue_grew();
        } else {
            // A pull producer writes when asked; ask now.
            self.set_flag(Flag::PullPending, false);
            self.call_producer(&*producer, ProducerCall::Resume);
        }
        Ok(())
    }

    fn enable_read_throttle(&self) -> bool {
        self.set_flag(Flag::ReadThrottle, true);
        self.queue_grew();
        true
    }

    fn unregister_producer(&self) {
        self.producer.take();
        self.set_flag(Flag::ProducerPaused, false);
        self.set_flag(Flag::PullPending, false);
        if self.replace_flag(Flag::LoseAfterProducer, false) {
            // The close `lose_connection` asked for: drain, then close.
            self.set_flag(Flag::WritesClosed, true);
            if self.queue.borrow().is_empty() {
                self.poke();
            }
        }
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let high = u32::try_from(high).unwrap_or(u32::MAX);
        let low = u32::try_from(low).unwrap_or(u32::MAX);
        self.high_water.set(high);
        self.low_water.set(low.min(high));
        self.queue_grew();
        self.queue_shrank();
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }

    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        if !matches!(&self.peer, PeerAddress::Other(address) if matches!(**address, Address::Unix(_)))
        {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        self.with_socket(peer_credentials)
    }

    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.with_socket(|socket| socket.set_tcp_nodelay(nodelay))
    }

    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.with_socket(|socket| match keepalive {
            None => socket.set_keepalive(false),
            Some(keepalive) => socket.set_tcp_keepalive(&keepalive.to_socket2()),
        })
    }

    fn is_closing(&self) -> bool {
        !matches!(self.phase.get(), Phase::Open | Phase::Connecting)
            || self.flag(Flag::WritesClosed)
    }
}

impl fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketTransport")
            .field("id", &self.id)
            .field("peer", &self.peer.get())
            .field("phase", &self.phase.get())
            .field("queued", &self.queue.borrow().len())
            .finish()
    }
}

/// A producer callback, for [`SocketTransport::call_producer`].
#[derive(Clone, Copy)]
enum ProducerCall {
    Pause,
    Resume,
    Stop,
}

impl ProducerCall {
    fn name(self) -> &'static str {
        match self {
            ProducerCall::Pause => "pause_producing",
            ProducerCall::Resume => "resume_producing",
            ProducerCall::Stop => "stop_producing",
        }
    }
}

/// A panic's payload as text, for the log and the close reason.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic payload that is not text)"
    }
}

/// Clears [`Flag::Processing`] when `process` returns, however it does.
struct ResetOnDrop<'a>(&'a SocketTransport);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_flag(Flag::Processing, false);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_credentials(socket: &Socket) -> io::Result<PeerCredentials> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is
    // exactly that large, and updates `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_credentials(_socket: &Socket) -> io::Result<PeerCredentials> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
