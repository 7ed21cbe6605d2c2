//! Connections as `async` byte streams: [`AsyncStream`] implements
//! `futures-io`'s `AsyncRead` and `AsyncWrite` over a Torsion connection,
//! and connecting ([`Connect`]) and accepting ([`StreamListener`]) are
//! futures.
//!
//! An `AsyncStream` is a protocol underneath: the transport hands it
//! bytes, which wait in its read buffer until a task reads them. Nothing is
//! polled while nothing happens; each direction keeps one waker.
//!
//! Back-pressure crosses it both ways:
//! - **Reading**: once [`READ_BUFFER_LIMIT`] bytes wait unread, the
//!   transport stops reading (the kernel's buffers fill, TCP slows the
//!   peer); it reads again once the task has taken them.
//! - **Writing**: `poll_write` hands bytes to the transport (gathered with
//!   the turn's other writes into one send) up to its write buffer's high
//!   watermark, taking part of a larger `buf`; above it, it waits until
//!   the buffer has drained to the kernel. One huge write is held to the
//!   watermark as a stream of small ones is. `poll_flush` waits for that drain; `poll_close` is
//!   [`Transport::lose_connection`].
//!
//! Crates that wrap a connection's protocol (TLS) reuse these futures
//! through [`Connect::wrapped`] and [`Connect::wrapped_protocol`]; nothing
//! here depends on them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use torsion_transport::reactor::Reactor;
use torsion_transport::{
    Address, CloseReason, ConnectError, Producer, Transport, TransportRef, DEFAULT_HIGH_WATER,
};

use crate::connector::Connector;
use crate::endpoints::{ClientEndpoint, ServerEndpoint};
use crate::factory::{ClientFactory, Factory};
use crate::port::ListeningPort;
use crate::protocol::Protocol;
use crate::tcp::{ListenOptions, ReactorTcp};
use crate::unix::{ReactorUnix, UnixListenOptions};

/// Bytes an [`AsyncStream`] buffers unread before it pauses reading.
pub const READ_BUFFER_LIMIT: usize = 64 * 1024;

/// What one `poll_write` may buffer when the high watermark is set lower
/// than this (down to zero: every write waits for the drain).
const MIN_WRITE_ROOM: usize = 16 * 1024;

/// Connections a [`StreamListener`] holds accepted but not yet taken by
/// [`StreamListener::accept`]; beyond this, new connections are closed at
/// once, so a program that stops accepting does not hoard them.
pub const ACCEPT_QUEUE_LIMIT: usize = 1024;

/// Keeps one waker, replaced only when it would wake another task.
fn register(slot: &RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    match &*slot {
        Some(old) if old.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(slot: &RefCell<Option<Waker>>) {
    let waker = slot.borrow_mut().take();
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The state one connection's protocol and its stream handles share.
struct Shared {
    /// Weak: the connection's handler owns the transport, and the
    /// transport owns this state through the protocol; a strong reference
    /// would keep a connection alive past its reactor.
    transport: RefCell<Option<Weak<dyn Transport>>>,
    peer: RefCell<Address>,
    host: RefCell<Address>,
    input: RefCell<VecDeque<u8>>,
    reading_paused: Cell<bool>,
    /// The peer ended its side (or the connection closed cleanly).
    eof: Cell<bool>,
    /// The connection is closed; `error` says why if not cleanly.
    closed: Cell<bool>,
    error: RefCell<Option<(io::ErrorKind, String)>>,
    /// The transport paused us as a producer: its buffer is above the high
    /// watermark (or being flushed).
    write_paused: Cell<bool>,
    /// The high watermark the user asked for; a flush lowers it to zero
    /// until the buffer has drained.
    high_water: Cell<usize>,
    flushing: Cell<bool>,
    /// `poll_close` was called: later writes fail.
    close_requested: Cell<bool>,
    read_waker: RefCell<Option<Waker>>,
    write_waker: RefCell<Option<Waker>>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            transport: RefCell::new(None),
            peer: RefCell::new(Address::Unknown),
            host: RefCell::new(Address::Unknown),
            input: RefCell::new(VecDeque::new()),
            reading_paused: Cell::new(false),
            eof: Cell::new(false),
            closed: Cell::new(false),
            error: RefCell::new(None),
            write_paused: Cell::new(false),
            high_water: Cell::new(DEFAULT_HIGH_WATER),
            flushing: Cell::new(false),
            close_requested: Cell::new(false),
            read_waker: RefCell::new(None),
            write_waker: RefCell::new(None),
        })
    }

    fn transport(&self) -> Option<TransportRef> {
        self.transport.borrow().as_ref().and_then(Weak::upgrade)
    }

    fn error(&self) -> Option<io::Error> {
        self.error
            .borrow()
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }
}

/// The transport's producer hook: the write side's back-pressure.
struct WriteFlow(Rc<Shared>);

impl Producer for WriteFlow {
    fn pause_producing(&self) {
        self.0.write_paused.set(true);
    }

    fn resume_producing(&self) {
        self.0.write_paused.set(false);
        wake(&self.0.write_waker);
    }

    fn stop_producing(&self) {
        self.0.write_paused.set(false);
        wake(&self.0.write_waker);
    }
}

/// The protocol beneath an [`AsyncStream`] (the protocol of a
/// [`StreamClient`]).
pub struct StreamProtocol {
    shared: Rc<Shared>,
    on_made: Option<Box<dyn FnOnce(AsyncStream)>>,
    /// Hand the stream over at `handshake_completed`, not at
    /// `connection_made`.
    after_handshake: bool,
    /// Told why, if the connection closes before it was handed over.
    on_lost_early: Option<OnLostEarly>,
}

/// What a [`StreamProtocol`] calls if its connection closes before the
/// stream was handed over.
type OnLostEarly = Box<dyn FnOnce(&CloseReason)>;

impl Protocol for StreamProtocol {
    fn connection_made(&mut self, transport: &TransportRef) {
        let shared = &self.shared;
        *shared.transport.borrow_mut() = Some(Rc::downgrade(transport));
        *shared.peer.borrow_mut() = transport.get_peer();
        *shared.host.borrow_mut() = transport.get_host();
        // Resumed only once the buffer has drained to the kernel: that is
        // when `poll_write` and `poll_flush` go on.
        transport.set_write_buffer_limits(shared.high_water.get(), 0);
        if let Err(e) = transport.register_producer(Rc::new(WriteFlow(shared.clone())), true) {
            tracing::warn!(error = %e, "AsyncStream: a producer is registered already; writes are not flow-controlled");
        }
        if !self.after_handshake {
            if let Some(on_made) = self.on_made.take() {
                on_made(AsyncStream::new(shared.clone()));
            }
        }
    }

    fn handshake_completed(&mut self, _transport: &TransportRef) {
        if let Some(on_made) = self.on_made.take() {
            on_made(AsyncStream::new(self.shared.clone()));
        }
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let shared = &self.shared;
        let mut input = shared.input.borrow_mut();
        input.extend(data);
        if input.len() >= READ_BUFFER_LIMIT && !shared.reading_paused.replace(true) {
            transport.pause_reading();
        }
        drop(input);
        wake(&shared.read_waker);
    }

    fn half_closeable(&self) -> bool {
        true
    }

    fn read_connection_lost(&mut self, _transport: &TransportRef) {
        self.shared.eof.set(true);
        wake(&self.shared.read_waker);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        if self.on_made.take().is_some() {
            if let Some(on_lost_early) = self.on_lost_early.take() {
                on_lost_early(reason);
            }
        }
        let shared = &self.shared;
        shared.closed.set(true);
        shared.eof.set(true);
        if !reason.is_clean() {
            let kind = match reason {
                CloseReason::Lost(e) => e.kind(),
                CloseReason::Aborted => io::ErrorKind::ConnectionAborted,
                _ => io::ErrorKind::ConnectionReset,
            };
            *shared.error.borrow_mut() = Some((kind, reason.to_string()));
        }
        shared.transport.borrow_mut().take();
        wake(&shared.read_waker);
        wake(&shared.write_waker);
    }
}

/// A connection as an `async` byte stream: `futures-io`'s [`AsyncRead`]
/// and [`AsyncWrite`] over a Torsion transport. Made by [`Connect`] (an
/// outgoing connection) or [`StreamListener::accept`].
///
/// - `poll_read` yields buffered bytes, `Ok(0)` at the peer's end of
///   stream (or a clean close), or the error that closed the connection.
///   Dropping a read future in the middle loses nothing: bytes stay in the
///   buffer until a read copies them out.
/// - `poll_write` takes as much of `buf` as fits below the transport's
///   write buffer high watermark (default 64 KiB; below 16 KiB if the
///   watermark is set lower; at least one byte while the writer is not
///   paused), and waits while the buffer is above it,
///   until it has drained: one large write is buffered a watermark at a
///   time, never whole. Writes to a closed connection fail with
///   `BrokenPipe` (or the error that closed it).
/// - `poll_flush` waits until everything written has been handed to the
///   kernel. `poll_close` calls [`Transport::lose_connection`] and waits
///   until the connection is closed.
///
/// Clones share the connection: one task may read while another writes
/// (each direction keeps one waker, so two tasks reading one stream would
/// wake each other out). Dropping the last clone closes the connection
/// gracefully.
pub struct AsyncStream {
    shared: Rc<Shared>,
    _owner: Rc<Owner>,
}

/// Closes the connection when the last stream handle goes.
struct Owner(Rc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(transport) = self.0.transport() {
            // Nobody writes any more: the flow hook must not hold the
            // close open.
            transport.unregister_producer();
            transport.lose_connection();
        }
    }
}

impl Clone for AsyncStream {
    fn clone(&self) -> Self {
        AsyncStream {
            shared: self.shared.clone(),
            _owner: self._owner.clone(),
        }
    }
}

impl AsyncStream {
    fn new(shared: Rc<Shared>) -> AsyncStream {
        AsyncStream {
            _owner: Rc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The transport beneath, while the connection is open: for what the
    /// traits do not cover (half-close, options, abort).
    pub fn transport(&self) -> Option<TransportRef> {
        self.shared.transport()
    }

    /// The peer's address (Twisted's `getPeer`).
    #[doc(alias = "getPeer")]
    pub fn peer(&self) -> Address {
        self.shared.peer.borrow().clone()
    }

    /// The local address (Twisted's `getHost`).
    #[doc(alias = "getHost")]
    pub fn host(&self) -> Address {
        self.shared.host.borrow().clone()
    }

    /// Bytes received and not read yet.
    pub fn buffered(&self) -> usize {
        self.shared.input.borrow().len()
    }

    /// True while reading is paused because [`READ_BUFFER_LIMIT`] bytes
    /// wait unread.
    pub fn is_reading_paused(&self) -> bool {
        self.shared.reading_paused.get()
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get()
    }

    /// Sets the write buffer size above which `poll_write` waits (the
    /// transport's high watermark; default 64 KiB).
    pub fn set_write_high_water(&self, high: usize) {
        self.shared.high_water.set(high);
        if let Some(transport) = self.shared.transport() {
            if !self.shared.flushing.get() {
                transport.set_write_buffer_limits(high, 0);
            }
        }
    }

    /// Reads into `buf` (what `AsyncReadExt::read` does, without needing
    /// an extension crate): the number of bytes read, 0 at end of stream.
    ///
    /// # Errors
    /// The error that closed the connection, if it did not close cleanly.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut this = self.clone();
        std::future::poll_fn(|cx| Pin::new(&mut this).poll_read(cx, buf)).await
    }

    /// Writes all of `data`, waiting while the write buffer is above its
    /// high watermark.
    ///
    /// # Errors
    /// `BrokenPipe` (or the error that closed it) if the connection is
    /// closed.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut this = self.clone();
        let mut rest = data;
        while !rest.is_empty() {
            let n = std::future::poll_fn(|cx| Pin::new(&mut this).poll_write(cx, rest)).await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Waits until everything written has been handed to the kernel.
    ///
    /// # Errors
    /// The error that closed the connection, if it closed uncleanly.
    pub async fn flush(&self) -> io::Result<()> {
        let mut this = self.clone();
        std::future::poll_fn(|cx| Pin::new(&mut this).poll_flush(cx)).await
    }

    /// Closes gracefully (what is written is sent first) and waits until
    /// the connection is closed.
    ///
    /// # Errors
    /// The error that closed the connection, if it closed uncleanly.
    pub async fn close(&self) -> io::Result<()> {
        let mut this = self.clone();
        std::future::poll_fn(|cx| Pin::new(&mut this).poll_close(cx)).await
    }

    fn closed_error(&self) -> io::Error {
        self.shared.error().unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed")
        })
    }

    /// How many bytes a write may hand to the transport now: what fits up
    /// to the high watermark (or [`MIN_WRITE_ROOM`] if that is lower, so
    /// that a tiny watermark does not cut a large write into a send per
    /// byte), so that one large write is held to it as a stream of small
    /// ones is. At least one byte: a buffer exactly at the watermark does
    /// not pause the writer, and the byte that takes it above does (a
    /// `Pending` without that pause would never be woken).
    fn room(&self, transport: &TransportRef) -> usize {
        let limit = self.shared.high_water.get().max(MIN_WRITE_ROOM);
        limit
            .saturating_sub(transport.get_write_buffer_size())
            .max(1)
    }

    /// Ends a flush: the user's watermark again.
    fn end_flush(&self, transport: &TransportRef) {
        if self.shared.flushing.replace(false) {
            transport.set_write_buffer_limits(self.shared.high_water.get(), 0);
        }
    }
}

impl AsyncRead for AsyncStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut input = shared.input.borrow_mut();
        if !input.is_empty() {
            let (front, back) = input.as_slices();
            let mut copied = front.len().min(buf.len());
            buf[..copied].copy_from_slice(&front[..copied]);
            if copied < buf.len() {
                let more = back.len().min(buf.len() - copied);
                buf[copied..copied + more].copy_from_slice(&back[..more]);
                copied += more;
            }
            input.drain(..copied);
            let resume = shared.reading_paused.get() && input.len() < READ_BUFFER_LIMIT / 2;
            drop(input);
            if resume {
                shared.reading_paused.set(false);
                if let Some(transport) = shared.transport() {
                    transport.resume_reading();
                }
            }
            return Poll::Ready(Ok(copied));
        }
        drop(input);
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(error) = shared.error() {
            return Poll::Ready(Err(error));
        }
        if shared.eof.get() {
            return Poll::Ready(Ok(0));
        }
        register(&shared.read_waker, cx);
        Poll::Pending
    }
}

impl AsyncStream {
    /// What a write may do now: the transport and how many bytes it takes
    /// (below the high watermark); `Pending` (the writer's waker kept)
    /// while writing is paused; an error once the stream is closed or
    /// closing.
    fn write_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TransportRef, usize)>> {
        let shared = &self.shared;
        let Some(transport) = shared.transport() else {
            return Poll::Ready(Err(self.closed_error()));
        };
        if shared.close_requested.get() {
            return Poll::Ready(Err(self.closed_error()));
        }
        if shared.write_paused.get() {
            register(&shared.write_waker, cx);
            return Poll::Pending;
        }
        self.end_flush(&transport);
        let room = self.room(&transport);
        Poll::Ready(Ok((transport, room)))
    }
}

impl AsyncWrite for AsyncStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (transport, room) = ready!(self.write_room(cx))?;
        let n = buf.len().min(room);
        transport.write(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let (transport, mut room) = ready!(self.write_room(cx))?;
        let mut parts: Vec<&[u8]> = Vec::with_capacity(bufs.len());
        for buf in bufs {
            if room == 0 {
                break;
            }
            let n = buf.len().min(room);
            parts.push(&buf[..n]);
            room -= n;
        }
        transport.write_sequence(&parts);
        Poll::Ready(Ok(parts.iter().map(|p| p.len()).sum()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let Some(transport) = shared.transport() else {
            return Poll::Ready(match shared.error() {
                Some(error) => Err(error),
                None => Ok(()),
            });
        };
        if transport.get_write_buffer_size() == 0 {
            self.end_flush(&transport);
            return Poll::Ready(Ok(()));
        }
        // A high watermark of zero pauses us now and resumes us (waking
        // this task) once the buffer is empty.
        if !shared.flushing.replace(true) {
            transport.set_write_buffer_limits(0, 0);
        }
        register(&shared.write_waker, cx);
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let Some(transport) = shared.transport() else {
            return Poll::Ready(match shared.error() {
                Some(error) => Err(error),
                None => Ok(()),
            });
        };
        if !shared.close_requested.replace(true) {
            // The producer would hold the close open while paused.
            transport.unregister_producer();
            shared.write_paused.set(false);
            transport.lose_connection();
        }
        register(&shared.write_waker, cx);
        Poll::Pending
    }
}

impl fmt::Debug for AsyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStream")
            .field("peer", &*self.shared.peer.borrow())
            .field("buffered", &self.buffered())
            .field("closed", &self.is_closed())
            .finish()
    }
}

// ----- connecting -----------------------------------------------------------------

type ConnectSlot<T> = Rc<RefCell<ConnectState<T>>>;

enum ConnectState<T> {
    Waiting(Option<Waker>),
    Done(Result<T, ConnectError>),
    Taken,
}

/// Settles the attempt. A result that arrives when it is settled already
/// (a late event), or when its future is gone (dropped), is handed back:
/// the caller closes a connection nobody will take.
#[must_use]
fn finish<T>(slot: &ConnectSlot<T>, result: Result<T, ConnectError>) -> Option<T> {
    let mut state = slot.borrow_mut();
    match &mut *state {
        ConnectState::Waiting(waker) => {
            let waker = waker.take();
            *state = ConnectState::Done(result);
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            None
        }
        ConnectState::Done(_) | ConnectState::Taken => result.ok(),
    }
}

/// The client factory behind a [`Connect`] that yields an
/// [`AsyncStream`]; handed to the `open` closure of [`Connect::wrapped`],
/// which wraps it (as TLS wraps each protocol) and connects with it.
pub struct StreamClient {
    slot: ConnectSlot<AsyncStream>,
    after_handshake: bool,
}

impl Factory for StreamClient {
    type Protocol = StreamProtocol;

    fn build_protocol(&self, _peer: &Address) -> Option<StreamProtocol> {
        let slot = self.slot.clone();
        Some(StreamProtocol {
            shared: Shared::new(),
            // A stream handed back is dropped here: that closes it.
            on_made: Some(Box::new(move |stream| drop(finish(&slot, Ok(stream))))),
            after_handshake: self.after_handshake,
            on_lost_early: self.after_handshake.then(|| {
                let slot = self.slot.clone();
                Box::new(move |reason: &CloseReason| {
                    drop(finish(&slot, Err(lost_before_handshake(reason))));
                }) as OnLostEarly
            }),
        })
    }
}

impl ClientFactory for StreamClient {
    fn client_connection_failed(&self, _connector: &Connector, reason: &ConnectError) {
        let _ = finish(&self.slot, Err(copy_connect_error(reason)));
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: &CloseReason) {
        // The protocol has settled the slot (with the reason it heard,
        // which a wrapping layer may make more precise than the
        // socket's); this only covers a connection that never had one.
        drop(finish(&self.slot, Err(lost_before_handshake(reason))));
    }
}

impl fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamClient")
            .field("after_handshake", &self.after_handshake)
            .finish_non_exhaustive()
    }
}

/// The connect error of a connection that closed before its handshake
/// completed: [`ConnectError::Failed`] with the close reason's text, of
/// kind `InvalidData` for a protocol error (a TLS alert, a bad
/// certificate, a handshake timeout), `UnexpectedEof` if the peer closed
/// cleanly, the I/O error's kind if the connection was lost.
fn lost_before_handshake(reason: &CloseReason) -> ConnectError {
    let kind = match reason {
        CloseReason::Lost(e) => e.kind(),
        CloseReason::ProtocolError(_) => io::ErrorKind::InvalidData,
        CloseReason::Aborted => io::ErrorKind::ConnectionAborted,
        clean if clean.is_clean() => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::ConnectionReset,
    };
    ConnectError::Failed(io::Error::new(
        kind,
        format!("the connection closed before its handshake completed: {reason}"),
    ))
}

/// `ConnectError` holds an `io::Error`, which is not `Clone`.
fn copy_connect_error(reason: &ConnectError) -> ConnectError {
    let copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
    match reason {
        ConnectError::Resolve { host, error } => ConnectError::Resolve {
            host: host.clone(),
            error: copy(error),
        },
        ConnectError::TimedOut(limit) => ConnectError::TimedOut(*limit),
        ConnectError::Refused(e) => ConnectError::Refused(copy(e)),
        ConnectError::Unreachable(e) => ConnectError::Unreachable(copy(e)),
        ConnectError::Failed(e) => ConnectError::Failed(copy(e)),
        ConnectError::Cancelled => ConnectError::Cancelled,
        other => ConnectError::Failed(io::Error::other(other.to_string())),
    }
}

/// An outgoing connection as a future: yields the connected
/// [`AsyncStream`] (or, made by the `..._protocol` calls, a
/// [`Connected`] handle on your protocol), or the [`ConnectError`] the
/// attempt failed with. Made by [`ReactorAsync::connect_tcp_stream`],
/// [`ReactorAsync::connect_unix_stream`], [`connect_endpoint`] and their
/// `_protocol` counterparts.
///
/// The attempt starts at once (not at the first poll). Dropping the future
/// before it finishes cancels the attempt: the name lookup's answer is
/// ignored, the connecting socket closed, the timeout timer cancelled.
/// Dropping it while a wrapping layer's handshake runs (TLS) aborts the
/// connection (`abort_connection`: the peer is reset, and a protocol that
/// saw `connection_made` hears [`CloseReason::Aborted`]). Dropping it
/// after the connection was made and ready but before it yielded the
/// connection closes that connection gracefully (`lose_connection`).
#[doc(alias = "connectProtocol")]
#[must_use = "dropping a Connect cancels the attempt"]
pub struct Connect<T = AsyncStream> {
    slot: ConnectSlot<T>,
    connector: Connector,
    /// Ends a connection made for a future dropped before it yielded it.
    abandon: fn(T),
}

impl Connect<AsyncStream> {
    fn start(open: impl FnOnce(StreamClient) -> Connector) -> Connect {
        Connect::wrapped(false, open)
    }

    /// A stream connect through a factory wrapper, for crates that add a
    /// layer above the transport (TLS): `open` wraps the [`StreamClient`]
    /// it is given (its protocols inside theirs) and starts connecting
    /// with it. With `after_handshake`, the stream is yielded when the
    /// wrapping layer calls [`Protocol::handshake_completed`], not at
    /// `connection_made`; a connection that closes before that fails the
    /// future with [`ConnectError::Failed`], whose error names the close
    /// reason (`InvalidData` for a protocol error such as a TLS alert).
    /// Dropping the future while the handshake runs aborts the connection.
    pub fn wrapped(after_handshake: bool, open: impl FnOnce(StreamClient) -> Connector) -> Connect {
        let slot = Rc::new(RefCell::new(ConnectState::Waiting(None)));
        let connector = open(StreamClient {
            slot: slot.clone(),
            after_handshake,
        });
        Connect {
            slot,
            connector,
            // The last handle: dropping it closes the connection.
            abandon: drop,
        }
    }
}

impl<P: Protocol> Connect<Connected<P>> {
    fn start_protocol(
        protocol: P,
        open: impl FnOnce(ProtocolClient<P>) -> Connector,
    ) -> Connect<Connected<P>> {
        Connect::wrapped_protocol(protocol, false, open)
    }

    /// The `..._protocol` counterpart of [`Connect::wrapped`]: `open` wraps
    /// the [`ProtocolClient`] it is given and connects with it; with
    /// `after_handshake`, [`Connected`] is yielded at
    /// `handshake_completed` (the protocol has seen `connection_made`
    /// already), and a connection closed before then fails the future as
    /// for [`Connect::wrapped`].
    pub fn wrapped_protocol(
        protocol: P,
        after_handshake: bool,
        open: impl FnOnce(ProtocolClient<P>) -> Connector,
    ) -> Connect<Connected<P>> {
        let slot = Rc::new(RefCell::new(ConnectState::Waiting(None)));
        let connector = open(ProtocolClient {
            protocol: RefCell::new(Some(protocol)),
            slot: slot.clone(),
            after_handshake,
        });
        Connect {
            slot,
            connector,
            abandon: |connected| connected.transport.lose_connection(),
        }
    }
}

impl<T> Connect<T> {
    /// The connector of the attempt (for its destination and state).
    pub fn connector(&self) -> &Connector {
        &self.connector
    }
}

impl<T> Future for Connect<T> {
    type Output = Result<T, ConnectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        match std::mem::replace(&mut *slot, ConnectState::Taken) {
            ConnectState::Done(result) => Poll::Ready(result),
            ConnectState::Waiting(waker) => {
                let waker = match waker {
                    Some(old) if old.will_wake(cx.waker()) => old,
                    _ => cx.waker().clone(),
                };
                *slot = ConnectState::Waiting(Some(waker));
                Poll::Pending
            }
            ConnectState::Taken => panic!("a Connect polled after it finished"),
        }
    }
}

impl<T> Drop for Connect<T> {
    fn drop(&mut self) {
        // The slot is shared with the factory the connector keeps: what
        // stays there would outlive this future, unreachable.
        let state = std::mem::replace(&mut *self.slot.borrow_mut(), ConnectState::Taken);
        match state {
            // Abandons the attempt, or aborts a connection whose
            // handshake is still running: a cancel, not a clean close
            // (which TLS would report to the protocol as a truncation).
            ConnectState::Waiting(_) => self.connector.abort(),
            // Connected, but nobody will see it: close it.
            ConnectState::Done(Ok(connection)) => (self.abandon)(connection),
            ConnectState::Done(Err(_)) | ConnectState::Taken => {}
        }
    }
}

impl<T> fmt::Debug for Connect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("connector", &self.connector)
            .finish()
    }
}

/// A connected protocol, the output of the `..._protocol` connects
/// (Twisted's `connectProtocol`, whose Deferred fires with the protocol):
/// the protocol, shared with the connection that drives it, and its
/// transport.
///
/// The connection borrows the protocol mutably for each of its events;
/// borrow it from `async` code only between awaits, never across one.
pub struct Connected<P> {
    /// The protocol, once its `connection_made` has run.
    pub protocol: Rc<RefCell<P>>,
    /// Its transport.
    pub transport: TransportRef,
}

impl<P> fmt::Debug for Connected<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("peer", &self.transport.get_peer())
            .finish()
    }
}

/// The protocol of a [`ProtocolClient`]: drives the shared protocol and
/// reports its connection.
pub struct Handed<P> {
    protocol: Rc<RefCell<P>>,
    slot: Option<ConnectSlot<Connected<P>>>,
    after_handshake: bool,
}

impl<P> Handed<P> {
    fn hand_over(&mut self, transport: &TransportRef) {
        if let Some(slot) = self.slot.take() {
            let connected = Connected {
                protocol: self.protocol.clone(),
                transport: transport.clone(),
            };
            if let Some(unwanted) = finish(&slot, Ok(connected)) {
                unwanted.transport.lose_connection();
            }
        }
    }
}

impl<P: Protocol> Protocol for Handed<P> {
    fn make_connection(&mut self, transport: &TransportRef) {
        self.protocol.borrow_mut().make_connection(transport);
        if !self.after_handshake {
            self.hand_over(transport);
        }
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.protocol.borrow_mut().data_received(transport, data);
    }

    fn half_closeable(&self) -> bool {
        self.protocol.borrow().half_closeable()
    }

    fn read_connection_lost(&mut self, transport: &TransportRef) {
        self.protocol.borrow_mut().read_connection_lost(transport);
    }

    fn write_connection_lost(&mut self, transport: &TransportRef) {
        self.protocol.borrow_mut().write_connection_lost(transport);
    }

    fn handshake_completed(&mut self, transport: &TransportRef) {
        self.protocol.borrow_mut().handshake_completed(transport);
        self.hand_over(transport);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.protocol.borrow_mut().connection_lost(reason);
        // Never handed over: the handshake did not complete.
        if let Some(slot) = self.slot.take() {
            drop(finish(&slot, Err(lost_before_handshake(reason))));
        }
    }
}

/// The client factory behind the `..._protocol` connects: hands its one
/// protocol to the first connection. Given to the `open` closure of
/// [`Connect::wrapped_protocol`].
pub struct ProtocolClient<P> {
    protocol: RefCell<Option<P>>,
    slot: ConnectSlot<Connected<P>>,
    after_handshake: bool,
}

impl<P> fmt::Debug for ProtocolClient<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolClient")
            .field("after_handshake", &self.after_handshake)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Factory for ProtocolClient<P> {
    type Protocol = Handed<P>;

    fn build_protocol(&self, _peer: &Address) -> Option<Handed<P>> {
        let protocol = self.protocol.borrow_mut().take()?;
        Some(Handed {
            protocol: Rc::new(RefCell::new(protocol)),
            slot: Some(self.slot.clone()),
            after_handshake: self.after_handshake,
        })
    }
}

impl<P: Protocol> ClientFactory for ProtocolClient<P> {
    fn client_connection_failed(&self, _connector: &Connector, reason: &ConnectError) {
        let _ = finish(&self.slot, Err(copy_connect_error(reason)));
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: &CloseReason) {
        drop(finish(&self.slot, Err(lost_before_handshake(reason))));
    }
}

// ----- listening ------------------------------------------------------------------

struct AcceptQueue {
    ready: RefCell<VecDeque<AsyncStream>>,
    /// The tasks waiting in `accept`, one waker each: all are woken by a
    /// new connection (one takes it, the others wait again).
    waiters: RefCell<Vec<Waker>>,
}

impl AcceptQueue {
    fn wait(&self, cx: &Context<'_>) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|waiter| waiter.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
    }

    fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            waiter.wake();
        }
    }
}

/// The server factory behind [`StreamListener`].
struct StreamServer {
    queue: Rc<AcceptQueue>,
}

impl Factory for StreamServer {
    type Protocol = StreamProtocol;

    fn build_protocol(&self, peer: &Address) -> Option<StreamProtocol> {
        if self.queue.ready.borrow().len() >= ACCEPT_QUEUE_LIMIT {
            tracing::warn!(%peer, "StreamListener: {ACCEPT_QUEUE_LIMIT} connections wait to be accepted; closing a new one");
            return None;
        }
        let queue = self.queue.clone();
        Some(StreamProtocol {
            shared: Shared::new(),
            on_made: Some(Box::new(move |stream| {
                queue.ready.borrow_mut().push_back(stream);
                queue.wake_all();
            })),
            after_handshake: false,
            on_lost_early: None,
        })
    }
}

/// A listening port whose connections are accepted as [`AsyncStream`]s,
/// one [`StreamListener::accept`] at a time. Made by
/// [`ReactorAsync::listen_tcp_stream`],
/// [`ReactorAsync::listen_unix_stream`] or [`listen_endpoint`].
///
/// Connections accepted by the port while nobody awaits `accept` wait in
/// a queue, open, up to [`ACCEPT_QUEUE_LIMIT`]. Dropping the listener stops listening and closes the
/// connections still queued.
pub struct StreamListener {
    queue: Rc<AcceptQueue>,
    port: ListeningPort,
}

impl StreamListener {
    fn start(open: impl FnOnce(StreamServer) -> io::Result<ListeningPort>) -> io::Result<Self> {
        let queue = Rc::new(AcceptQueue {
            ready: RefCell::new(VecDeque::new()),
            waiters: RefCell::new(Vec::new()),
        });
        let port = open(StreamServer {
            queue: queue.clone(),
        })?;
        Ok(StreamListener { queue, port })
    }

    /// The next connection (Twisted's `Factory.buildProtocol`, as a
    /// future). Never fails: a port that stops listening simply yields no
    /// more.
    ///
    /// Several tasks may await `accept` on one listener at once (through a
    /// shared reference or an `Rc`): each new connection goes to one of
    /// them, and each keeps its own waker. Every waiting task is polled
    /// once per new connection, so for many acceptors prefer one accepting
    /// task that spawns a task per connection.
    pub fn accept(&self) -> Accept<'_> {
        Accept { listener: self }
    }

    /// The listening port (its address, `stop_listening`).
    pub fn port(&self) -> &ListeningPort {
        &self.port
    }

    /// The address listened on, with the real port number.
    pub fn get_host(&self) -> Address {
        self.port.get_host()
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        self.port.stop_listening();
        let queued = std::mem::take(&mut *self.queue.ready.borrow_mut());
        drop(queued);
    }
}

impl fmt::Debug for StreamListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamListener")
            .field("port", &self.port)
            .field("queued", &self.queue.ready.borrow().len())
            .finish()
    }
}

/// The future of [`StreamListener::accept`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Accept<'a> {
    listener: &'a StreamListener,
}

impl Future for Accept<'_> {
    type Output = AsyncStream;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AsyncStream> {
        let queue = &self.listener.queue;
        let next = queue.ready.borrow_mut().pop_front();
        match next {
            Some(stream) => Poll::Ready(stream),
            None => {
                queue.wait(cx);
                Poll::Pending
            }
        }
    }
}

// ----- entry points ---------------------------------------------------------------

/// Connecting and listening for `async` code (asyncio's `open_connection`
/// and `start_server`): the [`AsyncStream`] counterparts of
/// [`ReactorTcp`] and [`ReactorUnix`].
pub trait ReactorAsync {
    /// Connects to `host` (a name or an IP address) on `port`; see
    /// [`ReactorTcp::connect_tcp`] for how, and [`Connect`] for the future.
    fn connect_tcp_stream(&self, host: &str, port: u16, timeout: Duration) -> Connect;

    /// Connects to the Unix socket at `path`.
    fn connect_unix_stream(&self, path: impl AsRef<Path>, timeout: Duration) -> Connect;

    /// Connects `protocol` to `host` on `port`, and yields it once
    /// connected (Twisted's `connectProtocol`); see [`Connected`].
    #[doc(alias = "connectProtocol")]
    fn connect_tcp_protocol<P: Protocol>(
        &self,
        host: &str,
        port: u16,
        protocol: P,
        timeout: Duration,
    ) -> Connect<Connected<P>>;

    /// Connects `protocol` to the Unix socket at `path`, and yields it once
    /// connected.
    fn connect_unix_protocol<P: Protocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        timeout: Duration,
    ) -> Connect<Connected<P>>;

    /// Listens on TCP `port` (0 picks a free one) with `options`.
    ///
    /// # Errors
    /// As for [`ReactorTcp::listen_tcp_with`].
    fn listen_tcp_stream(&self, port: u16, options: ListenOptions) -> io::Result<StreamListener>;

    /// Listens on a Unix socket at `path`.
    ///
    /// # Errors
    /// As for [`ReactorUnix::listen_unix`].
    fn listen_unix_stream(
        &self,
        path: impl AsRef<Path>,
        options: UnixListenOptions,
    ) -> io::Result<StreamListener>;
}

impl ReactorAsync for Reactor {
    fn connect_tcp_stream(&self, host: &str, port: u16, timeout: Duration) -> Connect {
        Connect::start(|factory| self.connect_tcp(host, port, factory, timeout))
    }

    fn connect_unix_stream(&self, path: impl AsRef<Path>, timeout: Duration) -> Connect {
        Connect::start(|factory| self.connect_unix(path.as_ref(), factory, timeout))
    }

    fn connect_tcp_protocol<P: Protocol>(
        &self,
        host: &str,
        port: u16,
        protocol: P,
        timeout: Duration,
    ) -> Connect<Connected<P>> {
        Connect::start_protocol(protocol, |factory| {
            self.connect_tcp(host, port, factory, timeout)
        })
    }

    fn connect_unix_protocol<P: Protocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        timeout: Duration,
    ) -> Connect<Connected<P>> {
        Connect::start_protocol(protocol, |factory| {
            self.connect_unix(path.as_ref(), factory, timeout)
        })
    }

    fn listen_tcp_stream(&self, port: u16, options: ListenOptions) -> io::Result<StreamListener> {
        StreamListener::start(|factory| self.listen_tcp_with(port, factory, options))
    }

    fn listen_unix_stream(
        &self,
        path: impl AsRef<Path>,
        options: UnixListenOptions,
    ) -> io::Result<StreamListener> {
        StreamListener::start(|factory| self.listen_unix(path.as_ref(), factory, options))
    }
}

/// Connects to a client endpoint (from
/// [`client_from_string`](crate::endpoints::client_from_string), such as
/// `"tcp:host=example.com:port=80:timeout=5"`).
pub fn connect_endpoint(reactor: &Reactor, endpoint: &ClientEndpoint) -> Connect {
    Connect::start(|factory| endpoint.connect(reactor, factory))
}

/// Connects `protocol` to a client endpoint and yields it once connected
/// (Twisted's `connectProtocol(endpoint, protocol)`).
#[doc(alias = "connectProtocol")]
pub fn connect_endpoint_protocol<P: Protocol>(
    reactor: &Reactor,
    endpoint: &ClientEndpoint,
    protocol: P,
) -> Connect<Connected<P>> {
    Connect::start_protocol(protocol, |factory| endpoint.connect(reactor, factory))
}

/// Listens on a server endpoint (from
/// [`server_from_string`](crate::endpoints::server_from_string), such as
/// `"tcp:8080:interface=127.0.0.1"`).
///
/// # Errors
/// As for [`ServerEndpoint::listen`].
pub fn listen_endpoint(reactor: &Reactor, endpoint: &ServerEndpoint) -> io::Result<StreamListener> {
    StreamListener::start(|factory| endpoint.listen(reactor, factory))
}
