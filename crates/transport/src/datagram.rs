//! Datagram transports: UDP and Unix datagram sockets.
//!
//! A datagram transport is a port and a transport in one (Twisted's UDP
//! `Port`): it receives datagrams from anyone, sends to any address, or is
//! connected to one peer.
//!
//! How a port sends, and where its errors go, is described on
//! [`DatagramTransport`] (section "Sending").

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::rc::Rc;

#[cfg(not(target_os = "linux"))]
use socket2::MaybeUninitSlice;
#[cfg(target_os = "linux")]
use socket2::SockAddrStorage;
use socket2::{SockAddr, Socket};
use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration, WeakReactor};

use crate::address::Address;
use crate::sys::SEND_FLAGS;
use crate::unix::SocketFile;

mod send;

use send::{SendFailure, SendQueue, MAX_GATHERED_DATAGRAM};

/// Default largest datagram received whole: larger ones are reported as
/// truncated. 65,536 bytes hold any UDP datagram.
pub const DEFAULT_MAX_DATAGRAM: usize = 64 * 1024;

/// The largest maximum datagram size a transport accepts (64 MiB: more
/// than any socket buffer holds), so the receive buffer's size cannot
/// overflow.
const MAX_DATAGRAM_LIMIT: usize = 64 << 20;

/// Datagrams read per readiness event before other sources get a turn.
const MAX_DATAGRAMS_PER_EVENT: usize = 64;

/// Most datagrams one `recvmmsg` call receives (Linux).
#[cfg(target_os = "linux")]
const BATCH: usize = 32;

/// Largest receive buffer a batch may use: a batch is `BATCH` slots of the
/// socket's maximum datagram size (2 MiB with the default 64 KiB), fewer
/// slots for larger maxima. Only the bytes datagrams fill are touched.
#[cfg(target_os = "linux")]
const BATCH_BYTES: usize = BATCH * DEFAULT_MAX_DATAGRAM;

thread_local! {
    /// The receive buffer all datagram sockets of this thread share (as
    /// stream transports share one read buffer per thread): datagrams are
    /// handed out before the next socket reads, so one buffer serves all.
    /// Always empty: its spare capacity is lent, never written through
    /// the vector, so untouched pages stay unallocated.
    static RECEIVE_BUFFER: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// Lends `len` bytes of the thread's receive buffer to `f`. A nested call
/// (which the reactor never makes) gets a fresh buffer.
fn with_receive_buffer<R>(len: usize, f: impl FnOnce(&mut [MaybeUninit<u8>]) -> R) -> R {
    let mut buf = RECEIVE_BUFFER.take().unwrap_or_default();
    buf.reserve(len);
    let result = f(&mut buf.spare_capacity_mut()[..len]);
    RECEIVE_BUFFER.set(Some(buf));
    result
}

/// What [`DatagramTransport::process`] found.
///
/// Exhaustive on purpose: the layer above handles every event, and a new
/// one should fail its build rather than fall into a silent catch-all.
#[derive(Debug)]
pub enum DatagramEvent<'a> {
    /// A whole datagram.
    Datagram {
        /// Its bytes, lent for the call.
        data: &'a [u8],
        /// Its sender.
        from: Address,
    },
    /// A datagram larger than the transport's maximum size arrived; it was
    /// cut short, so it is not passed on.
    Truncated {
        /// Its sender.
        from: Address,
        /// How much of it was read.
        received: usize,
    },
    /// The connected peer refused a datagram (an ICMP port unreachable,
    /// reported by the kernel on a connected socket).
    Refused,
    /// A queued datagram was not sent: the kernel refused it when the
    /// queue was sent (see [Sending](DatagramTransport#sending)). Datagrams queued after
    /// it are still sent.
    SendFailed {
        /// Where it was going (`None`: the connected peer).
        to: Option<Address>,
        /// Why it was not sent.
        error: io::Error,
    },
    /// Another error from the socket; the transport stays open.
    Error(io::Error),
}

/// A UDP or Unix datagram socket registered with a reactor.
///
/// # Sending
///
/// A datagram written while the reactor is dispatching (from a protocol's
/// callback, a timer, a task) is queued and sent together with the other
/// datagrams the port was given in that turn: one `sendmmsg` per 64
/// datagrams on Linux, one call per datagram elsewhere, before the loop
/// next waits, so no datagram is delayed past the turn. On Linux a UDP
/// port sends a run of queued datagrams to one address, of one size (the
/// last may be shorter, each at most 1,472 bytes to IPv4, 1,452 to
/// IPv6), as one GSO buffer
/// (`UDP_SEGMENT`) the kernel cuts into those datagrams: one message of
/// the `sendmmsg`, one trip through the stack. Per destination datagrams
/// leave in the order written; datagrams to different destinations may
/// leave in another order. A kernel or device that cannot segment turns
/// this off for the port, and nothing is lost or sent twice
/// ([`DatagramTransport::segmentation_offload`]). A datagram written
/// outside a turn (before the reactor runs) and one larger than 4 KiB are
/// sent at once, after what was queued before them — unless the queue
/// waits for a full socket (below): then they are queued too, and their
/// errors reported later.
///
/// Errors follow from that, as in libuv's `uv_udp_send`:
/// - what is known when `write_to` is called is returned by it: a bad
///   address, a closed port, a full queue, and every error of a datagram
///   sent at once;
/// - what only the kernel knows at send time is reported later, to the
///   port's protocol: a refusal by the connected peer as
///   [`DatagramEvent::Refused`], anything else (a datagram too large for
///   the path, a network that cannot be reached, a firewall, a Unix path
///   nobody listens on) as [`DatagramEvent::SendFailed`] naming the
///   destination. The datagrams
///   after a failed one are still sent, in order.
///
/// A full socket buffer (`EAGAIN`) is not a loss: the queue keeps the
/// unsent datagrams and the port waits until the socket is writable, as
/// libuv, Netty and quinn do, so a burst larger than the socket's buffer
/// is paced rather than cut. The queue is bounded (1,024 datagrams,
/// 256 KiB): a write that finds it full while the socket is still full
/// fails at once with `WouldBlock` and the datagram is not sent — the
/// caller decides whether to drop it, as the kernel would. A writable
/// event that sends nothing (another sender took the room) is waited on
/// again; only a socket that still reports room after refusing
/// (an unconnected Unix socket whose receiver is full) has its head
/// datagram dropped, reported as `WouldBlock`, so the loop cannot spin.
/// Closing first sends what the socket takes; the datagrams still queued
/// after that are dropped.
pub struct DatagramTransport {
    io: RefCell<Option<Registration<Socket>>>,
    /// Close at the next step (after `stop_listening`).
    closing: Cell<bool>,
    processing: Cell<bool>,
    connected: RefCell<Option<Address>>,
    max_datagram: Cell<usize>,
    /// System calls made to receive.
    receive_calls: Cell<u64>,
    /// Datagrams written during a turn, sent before the loop waits.
    queue: RefCell<SendQueue>,
    /// System calls made to send.
    send_calls: Cell<u64>,
    /// Datagrams sent as segments of GSO buffers.
    segmented: Cell<u64>,
    host: Address,
    reactor: WeakReactor,
    /// A Unix socket file to remove when the socket closes.
    file: RefCell<Option<SocketFile>>,
    /// The reactor's counters, kept so counting is a plain add.
    counters: Rc<torsion_reactor::Counters>,
}

impl DatagramTransport {
    /// Registers a bound, non-blocking datagram socket with `reactor`;
    /// `make_handler` builds the handler that will call
    /// [`DatagramTransport::process`].
    ///
    /// # Errors
    /// If the socket has no local address or cannot be registered.
    pub fn bind(
        reactor: &Reactor,
        socket: Socket,
        make_handler: impl FnOnce(Rc<DatagramTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<DatagramTransport>> {
        let host = datagram_address(&socket.local_addr()?);
        let transport = Rc::new(DatagramTransport {
            io: RefCell::new(None),
            closing: Cell::new(false),
            processing: Cell::new(false),
            connected: RefCell::new(None),
            max_datagram: Cell::new(DEFAULT_MAX_DATAGRAM),
            receive_calls: Cell::new(0),
            queue: RefCell::default(),
            send_calls: Cell::new(0),
            segmented: Cell::new(0),
            host,
            reactor: reactor.downgrade(),
            file: RefCell::new(None),
            counters: reactor.shared_counters(),
        });
        #[cfg(target_os = "linux")]
        if let Address::Udp(addr) = transport.host {
            let gso = send::gso_supported(&socket);
            transport
                .queue
                .borrow_mut()
                .set_segmentation(gso, addr.is_ipv6());
        }
        let handler = make_handler(transport.clone());
        let registration = reactor.register(socket, Interest::READABLE, handler)?;
        *transport.io.borrow_mut() = Some(registration);
        Ok(transport)
    }

    fn with_socket<R>(&self, f: impl FnOnce(&Socket) -> io::Result<R>) -> io::Result<R> {
        match &*self.io.borrow() {
            Some(registration) if !self.closing.get() => f(registration.get_ref()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the datagram port has stopped listening",
            )),
        }
    }

    /// Counts a datagram the kernel took.
    fn count_sent(&self, sent: &io::Result<usize>) {
        if let Ok(bytes) = *sent {
            self.counters.datagrams_sent(1, bytes);
        }
    }

    /// Sends one datagram to `to` (Twisted's `write(data, addr)`): queued
    /// and sent with the turn's other datagrams when the reactor is
    /// dispatching, at once otherwise (see [Sending](DatagramTransport#sending)).
    ///
    /// # Errors
    /// The datagram was not sent: an address of the wrong kind, a port that
    /// stopped listening, a full queue while the socket's buffer is full
    /// (`WouldBlock`), or, for a datagram sent at once, any error from the
    /// kernel (one larger than the socket can send is `InvalidInput`).
    /// Errors of queued datagrams reach the protocol later
    /// ([`DatagramEvent::SendFailed`]).
    pub fn write_to(&self, data: &[u8], to: &Address) -> io::Result<()> {
        let addr = sockaddr(to)?;
        self.send_or_queue(data, Some(addr))
    }

    /// Sends one datagram to the connected peer (Twisted's `write(data)`
    /// on a connected port).
    ///
    /// # Errors
    /// `NotConnected` without [`DatagramTransport::connect`]; otherwise as
    /// for [`DatagramTransport::write_to`], plus, for a datagram sent at
    /// once, `ConnectionRefused` when the peer refused an earlier datagram
    /// (a queued one hears it as [`DatagramEvent::Refused`]).
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        if self.connected.borrow().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "write without an address needs a connected datagram port",
            ));
        }
        self.send_or_queue(data, None)
    }

    /// Queues `data` for the end of the turn, or sends it now when the
    /// reactor is not dispatching or it is too large to copy.
    fn send_or_queue(&self, data: &[u8], to: Option<SockAddr>) -> io::Result<()> {
        self.with_socket(|_| Ok(()))?;
        let gathers = data.len() <= MAX_GATHERED_DATAGRAM && self.gathers();
        let mut queue = self.queue.borrow_mut();
        if !gathers || queue.is_full_for(data.len()) {
            // Send what is queued first: order is kept, and the queue
            // makes room.
            if !queue.is_empty() && !queue.is_blocked() {
                drop(queue);
                self.flush();
                queue = self.queue.borrow_mut();
            }
            if queue.is_empty() && !gathers {
                drop(queue);
                return self.send_now(data, to.as_ref());
            }
            if queue.is_full_for(data.len()) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the socket's send buffer and the port's send queue are full; \
                     the datagram was not sent",
                ));
            }
        }
        queue.push(data, to);
        let first = queue.len() == 1 && !queue.is_blocked();
        drop(queue);
        if first && !self.processing.get() {
            // Sent when the port is dispatched at the end of the turn (or
            // early in the next, which does not wait).
            self.wake();
        }
        Ok(())
    }

    /// True if a datagram written now is queued for the end of the turn.
    fn gathers(&self) -> bool {
        self.processing.get()
            || self
                .reactor
                .upgrade()
                .is_some_and(|reactor| reactor.is_dispatching())
    }

    fn send_now(&self, data: &[u8], to: Option<&SockAddr>) -> io::Result<()> {
        self.send_calls.set(self.send_calls.get() + 1);
        let sent = self.with_socket(|s| match to {
            Some(to) => s.send_to_with_flags(data, to, SEND_FLAGS),
            None => s.send_with_flags(data, SEND_FLAGS),
        });
        self.count_sent(&sent);
        check_sent(sent, data.len())
    }

    fn wake(&self) {
        if let Some(registration) = &*self.io.borrow() {
            registration.wake();
        }
    }

    /// Sends what is queued (whatever the socket takes) and keeps the
    /// port's interest in writability in step with a blocked queue.
    /// Returns how many datagrams were settled (sent or failed).
    fn flush(&self) -> usize {
        let io = self.io.borrow();
        let Some(registration) = io.as_ref() else {
            self.queue.borrow_mut().discard();
            return 0;
        };
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            return 0;
        }
        let flushed = queue.flush(registration.get_ref());
        self.send_calls.set(self.send_calls.get() + flushed.calls);
        self.segmented
            .set(self.segmented.get() + flushed.segmented as u64);
        if let Some(code) = flushed.segmentation_refused {
            tracing::debug!(
                host = %self.host,
                error = %io::Error::from_raw_os_error(code),
                "the kernel cannot segment UDP (GSO) on this port: turned off (one datagram per message) until set_segmentation_offload(true)"
            );
        }
        if flushed.sent > 0 {
            self.counters
                .datagrams_sent(flushed.sent, flushed.sent_bytes);
        }
        let blocked = queue.is_blocked();
        let failures = queue.has_failures();
        let lost = queue.take_lost_failures();
        drop(queue);
        if lost > 0 {
            tracing::warn!(
                host = %self.host,
                lost,
                "datagram send failures not reported to the protocol: too many pending"
            );
        }
        self.watch_writable(registration, blocked);
        if failures && !self.processing.get() {
            registration.wake();
        }
        flushed.settled
    }

    /// True if the socket reports room to send now (one `poll` with no
    /// timeout; only asked after the kernel said it had none). An error
    /// counts as room, so a port never waits on a socket that fails.
    fn reports_room(&self) -> bool {
        use std::os::fd::AsRawFd;
        self.with_socket(|socket| {
            let mut fd = libc::pollfd {
                fd: socket.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd, alive for the call; no timeout.
            let n = unsafe { libc::poll(&mut fd, 1, 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd.revents & libc::POLLOUT != 0)
            }
        })
        .unwrap_or(true)
    }

    fn watch_writable(&self, registration: &Registration<Socket>, blocked: bool) {
        let interest = if blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registration.interest() != interest {
            if let Err(error) = registration.set_interest(interest) {
                tracing::warn!(host = %self.host, %error, "datagram port: cannot change interest");
            }
        }
    }

    /// Datagrams queued and not yet sent (see [Sending](DatagramTransport#sending)).
    pub fn send_queue_len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// How many system calls this transport has made to send: on Linux one
    /// `sendmmsg` sends up to 64 queued datagrams, elsewhere each datagram
    /// takes one call. For tests and benchmarks.
    pub fn send_calls(&self) -> u64 {
        self.send_calls.get()
    }

    /// True while the port sends runs of queued datagrams to one address
    /// as one GSO buffer (`UDP_SEGMENT`, Linux 4.18 and later, UDP only;
    /// see [Sending](DatagramTransport#sending)). Turned off when the
    /// kernel or the device cannot segment (until
    /// [`set_segmentation_offload(true)`](Self::set_segmentation_offload));
    /// a refusal that concerns one destination or one segment size does
    /// not turn it off, though a segment size above a route's MTU lowers
    /// the largest segment grouped.
    pub fn segmentation_offload(&self) -> bool {
        self.queue.borrow().segmentation()
    }

    /// Turns segmentation offload off (or back on where the kernel has it):
    /// for a path known to mishandle GSO, or to compare. Does nothing on
    /// ports that cannot use it (Unix sockets, systems other than Linux,
    /// kernels without `UDP_SEGMENT`).
    pub fn set_segmentation_offload(&self, on: bool) {
        #[cfg(target_os = "linux")]
        {
            if let Address::Udp(addr) = self.host {
                let supported = matches!(
                    self.with_socket(|socket| Ok(send::gso_supported(socket))),
                    Ok(true)
                );
                self.queue
                    .borrow_mut()
                    .set_segmentation(on && supported, addr.is_ipv6());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = on;
    }

    /// How many datagrams this transport sent as segments of GSO buffers
    /// (two or more datagrams to one address in one message). For tests
    /// and benchmarks.
    pub fn segmented_datagrams(&self) -> u64 {
        self.segmented.get()
    }

    /// The socket's file descriptor (Twisted's `fileno`), to set options
    /// Torsion has no method for; `None` once closed. The socket stays
    /// owned by the transport: do not close it or read from it.
    pub fn fileno(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.io
            .borrow()
            .as_ref()
            .map(|registration| registration.get_ref().as_raw_fd())
    }

    /// Connects to one peer: only its datagrams are received, `write` sends
    /// to it, and refusals are reported (Twisted's `connect`). Datagrams
    /// queued for the old peer are sent first, or, if the socket is full,
    /// stay addressed to the old peer.
    ///
    /// # Errors
    /// If the address is of the wrong kind or the kernel refuses.
    pub fn connect(&self, to: &Address) -> io::Result<()> {
        let addr = sockaddr(to)?;
        self.with_socket(|_| Ok(()))?;
        // Datagrams written to the old peer go to it: sent now if the
        // socket takes them, else addressed to it explicitly.
        if !self.queue.borrow().is_empty() && !self.queue.borrow().is_blocked() {
            self.flush();
        }
        if !self.queue.borrow().is_empty() {
            let old = self
                .connected
                .borrow()
                .as_ref()
                .and_then(|a| sockaddr(a).ok());
            if let Some(old) = old {
                self.queue.borrow_mut().address_to(&old);
            }
        }
        self.with_socket(|s| s.connect(&addr))?;
        *self.connected.borrow_mut() = Some(to.clone());
        Ok(())
    }

    /// The connected peer, if any.
    pub fn get_peer(&self) -> Option<Address> {
        self.connected.borrow().clone()
    }

    /// The local address (Twisted's `getHost`), with the real port when 0
    /// was asked for.
    pub fn get_host(&self) -> Address {
        self.host.clone()
    }

    /// Sets the largest datagram received whole; larger ones are reported
    /// as truncated (Twisted's `maxPacketSize`). At most 64 MiB.
    pub fn set_max_datagram_size(&self, size: usize) {
        self.max_datagram.set(size.clamp(1, MAX_DATAGRAM_LIMIT));
    }

    /// Stops receiving and closes the socket; the protocol hears
    /// `stop_protocol` (Twisted's `stopListening`). Does nothing twice.
    pub fn stop_listening(&self) {
        if self.io.borrow().is_none() || self.closing.replace(true) {
            return;
        }
        if !self.processing.get() {
            if let Some(registration) = &*self.io.borrow() {
                registration.wake();
            }
        }
    }

    /// How many system calls this transport has made to receive: on
    /// Linux one `recvmmsg` moves up to 32 datagrams, elsewhere each
    /// datagram takes one call. For tests and benchmarks.
    pub fn receive_calls(&self) -> u64 {
        self.receive_calls.get()
    }

    /// True once the socket is closed.
    pub fn is_closed(&self) -> bool {
        self.io.borrow().is_none()
    }

    /// The reactor this transport runs on.
    pub fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }

    /// Closes the socket now (removing its socket file, if it has one).
    /// Returns false if it was already closed.
    pub fn close(&self) -> bool {
        self.closing.set(true);
        // What the turn queued still goes out if the socket takes it now.
        self.flush();
        let dropped = self.queue.borrow_mut().discard();
        if dropped > 0 {
            tracing::debug!(host = %self.host, dropped, "datagram port closed with datagrams unsent");
        }
        let registration = self.io.borrow_mut().take();
        let closed = registration.is_some();
        drop(registration);
        if let Some(file) = self.file.borrow_mut().take() {
            file.remove();
        }
        closed
    }

    /// Removes `file` when the socket closes.
    pub fn remove_on_close(&self, file: SocketFile) {
        *self.file.borrow_mut() = Some(file);
    }

    /// Records the peer of a socket connected before registration.
    pub fn set_connected(&self, peer: Address) {
        *self.connected.borrow_mut() = Some(peer);
    }

    /// Handles one readiness event: receives datagrams, handing each to
    /// `on_event`, sends what was queued (reporting datagrams the kernel
    /// refused to `on_event`), and closes the socket if `stop_listening`
    /// was called. Returns true when the socket has just been closed.
    pub fn process(
        &self,
        readiness: Readiness,
        on_event: &mut dyn FnMut(DatagramEvent<'_>),
    ) -> bool {
        let processing = Processing::enter(&self.processing);
        if readiness.is_readable() {
            self.receive(on_event);
        }
        let blocked = self.queue.borrow().is_blocked();
        if !blocked || readiness.is_writable() {
            let mut settled = self.flush();
            if blocked && readiness.is_writable() {
                // Writable, yet nothing went out. Another sender may have
                // taken the room first (a full buffer is not a loss: wait
                // again), unless the socket still reports room: then it
                // would report it forever (an unconnected Unix socket
                // whose receiver is full), so its head is given up — as
                // many as the failures kept for the protocol hold; the
                // rest on the next writable event.
                while settled == 0
                    && self.queue.borrow().is_blocked()
                    && self.queue.borrow().keeps_failures()
                    && self.reports_room()
                {
                    self.queue.borrow_mut().drop_stuck_head();
                    settled = self.flush();
                }
                if let Some(registration) = &*self.io.borrow() {
                    self.watch_writable(registration, self.queue.borrow().is_blocked());
                }
            }
        }
        drop(processing);
        // Datagrams written while hearing of failures are sent at the end
        // of the turn (or the next one, which does not wait). A protocol
        // that stopped listening hears no more.
        while !self.closing.get() {
            let failure = self.queue.borrow_mut().take_failure();
            match failure {
                Some(SendFailure::Refused) => on_event(DatagramEvent::Refused),
                Some(SendFailure::Failed { to, error }) => {
                    on_event(DatagramEvent::SendFailed { to, error });
                }
                None => break,
            }
        }
        self.closing.get() && self.close()
    }

    #[cfg(not(target_os = "linux"))]
    fn receive(&self, on_event: &mut dyn FnMut(DatagramEvent<'_>)) {
        with_receive_buffer(self.max_datagram.get(), |buf| {
            self.receive_one_at_a_time(buf, on_event)
        });
    }

    /// Receives one datagram per system call, up to
    /// `MAX_DATAGRAMS_PER_EVENT`.
    #[cfg(not(target_os = "linux"))]
    fn receive_one_at_a_time(
        &self,
        buf: &mut [MaybeUninit<u8>],
        on_event: &mut dyn FnMut(DatagramEvent<'_>),
    ) {
        for _ in 0..MAX_DATAGRAMS_PER_EVENT {
            if self.closing.get() {
                return;
            }
            self.receive_calls.set(self.receive_calls.get() + 1);
            let received = self.with_socket(|socket| {
                let mut slices = [MaybeUninitSlice::new(buf)];
                socket.recv_from_vectored(&mut slices)
            });
            match received {
                Ok((n, flags, from)) => {
                    let from = datagram_address(&from);
                    let truncated = flags.is_truncated();
                    let (whole, bytes) = if truncated { (0, 0) } else { (1, n) };
                    self.counters
                        .datagrams_received(whole, bytes, usize::from(truncated));
                    if truncated {
                        on_event(DatagramEvent::Truncated { from, received: n });
                        continue;
                    }
                    // SAFETY: recvmsg initialised the first `n` bytes of
                    // `buf`; MaybeUninit<u8> has the layout of u8.
                    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    on_event(DatagramEvent::Datagram { data, from });
                }
                Err(e) => {
                    if !self.receive_error(e, on_event) {
                        return;
                    }
                }
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn receive(&self, on_event: &mut dyn FnMut(DatagramEvent<'_>)) {
        let slot = self.max_datagram.get();
        let slots = (BATCH_BYTES / slot).clamp(1, BATCH);
        with_receive_buffer(slot * slots, |buf| {
            self.receive_batches(buf, slot, on_event)
        });
    }

    /// Receives up to `buf.len() / slot` datagrams per `recvmmsg`, one per
    /// `slot` bytes of `buf`, up to `MAX_DATAGRAMS_PER_EVENT`. A batch that
    /// comes back short ends the event (the socket was emptied, or an error
    /// cut the batch short): level-triggered readiness reports whatever
    /// is left — later datagrams, or a pending error — on the next turn,
    /// so no call is spent to hear `WouldBlock`.
    #[cfg(target_os = "linux")]
    fn receive_batches(
        &self,
        buf: &mut [MaybeUninit<u8>],
        slot: usize,
        on_event: &mut dyn FnMut(DatagramEvent<'_>),
    ) {
        use std::os::fd::AsRawFd;
        let slots = buf.len() / slot;
        let mut received = 0;
        while received < MAX_DATAGRAMS_PER_EVENT {
            if self.closing.get() {
                return;
            }
            let asked = slots.min(MAX_DATAGRAMS_PER_EVENT - received);
            let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; BATCH];
            let mut iovecs = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain data (pointers, lengths, flags); all
            // zeros is a valid, empty header.
            let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, ((header, iovec), name)) in headers
                .iter_mut()
                .zip(&mut iovecs)
                .zip(&mut names)
                .take(asked)
                .enumerate()
            {
                iovec.iov_base = buf[i * slot..].as_mut_ptr().cast();
                iovec.iov_len = slot;
                header.msg_hdr.msg_name = name.as_mut_ptr().cast();
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
            }
            self.receive_calls.set(self.receive_calls.get() + 1);
            let count = self.with_socket(|socket| {
                // SAFETY: the first `asked` headers each point at one iovec
                // of `slot` bytes inside `buf` (no two overlap) and at a
                // whole sockaddr_storage, all alive and unborrowed for the
                // call; no control buffer; no timeout.
                let n = unsafe {
                    libc::recvmmsg(
                        socket.as_raw_fd(),
                        headers.as_mut_ptr(),
                        asked as libc::c_uint,
                        0,
                        std::ptr::null_mut(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let count = match count {
                Ok(count) => count,
                Err(e) => {
                    if self.receive_error(e, on_event) {
                        continue;
                    }
                    return;
                }
            };
            // Counted before any is handed on: a handler that panics
            // loses no count.
            self.count_batch(&headers[..count]);
            for (i, header) in headers.iter().take(count).enumerate() {
                if self.closing.get() {
                    return;
                }
                let namelen = header.msg_hdr.msg_namelen;
                let mut storage = SockAddrStorage::zeroed();
                // SAFETY: the kernel wrote `namelen` bytes (at most a
                // sockaddr_storage) of the sender's address into names[i];
                // they are copied into a storage of the same size, which
                // then holds that address, `namelen` long.
                let from = unsafe {
                    let len = (namelen as usize).min(size_of::<libc::sockaddr_storage>());
                    std::ptr::copy_nonoverlapping(
                        names[i].as_ptr().cast::<u8>(),
                        (&raw mut storage).cast::<u8>(),
                        len,
                    );
                    SockAddr::new(storage, len as libc::socklen_t)
                };
                let from = datagram_address(&from);
                let n = header.msg_len as usize;
                if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    on_event(DatagramEvent::Truncated { from, received: n });
                    continue;
                }
                // SAFETY: recvmmsg initialised the first `n` (at most
                // `slot`) bytes of this message's slot of `buf`;
                // MaybeUninit<u8> has the layout of u8.
                let data =
                    unsafe { std::slice::from_raw_parts(buf[i * slot..].as_ptr().cast::<u8>(), n) };
                on_event(DatagramEvent::Datagram { data, from });
            }
            received += count;
            if count < asked {
                return;
            }
        }
    }

    /// Counts one `recvmmsg` batch: its whole datagrams, their bytes and
    /// the truncated ones.
    #[cfg(target_os = "linux")]
    fn count_batch(&self, headers: &[libc::mmsghdr]) {
        let (mut whole, mut bytes, mut truncated) = (0, 0, 0);
        for header in headers {
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                truncated += 1;
            } else {
                whole += 1;
                bytes += header.msg_len as usize;
            }
        }
        self.counters.datagrams_received(whole, bytes, truncated);
    }

    /// Handles an error from a receive call; true to keep receiving.
    fn receive_error(&self, e: io::Error, on_event: &mut dyn FnMut(DatagramEvent<'_>)) -> bool {
        match e.kind() {
            io::ErrorKind::WouldBlock => false,
            io::ErrorKind::Interrupted => true,
            io::ErrorKind::ConnectionRefused => {
                on_event(DatagramEvent::Refused);
                true
            }
            _ => {
                on_event(DatagramEvent::Error(e));
                false
            }
        }
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("host", &self.host)
            .field("connected", &self.connected.borrow())
            .finish()
    }
}

/// Marks a transport as processing an event until dropped (also when a
/// callback panics through `process`).
struct Processing<'a>(&'a Cell<bool>);

impl<'a> Processing<'a> {
    fn enter(flag: &'a Cell<bool>) -> Self {
        flag.set(true);
        Processing(flag)
    }
}

impl Drop for Processing<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A shared handle to a datagram transport, as datagram protocols hold it.
pub type DatagramTransportRef = Rc<DatagramTransport>;

/// The address of a datagram socket: UDP for IP sockets.
fn datagram_address(addr: &SockAddr) -> Address {
    match addr.as_socket() {
        Some(addr) => Address::Udp(addr),
        None => Address::from_sockaddr(addr),
    }
}

fn sockaddr(addr: &Address) -> io::Result<SockAddr> {
    match addr {
        Address::Udp(addr) | Address::Tcp(addr) => Ok(SockAddr::from(*addr)),
        Address::Unix(Some(path)) => SockAddr::unix(path),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot send a datagram to {addr}"),
        )),
    }
}

fn check_sent(sent: io::Result<usize>, len: usize) -> io::Result<()> {
    match sent {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(io::Error::other(format!(
            "only {n} of the datagram's {len} bytes were sent"
        ))),
        Err(e) => Err(send_error(e, len)),
    }
}

/// The error to report for a datagram of `len` bytes the kernel refused.
fn send_error(e: io::Error, len: usize) -> io::Error {
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a datagram of {len} bytes is larger than the socket can send: {e}"),
        )
    } else if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            "the socket's send buffer is full; the datagram was not sent",
        )
    } else {
        e
    }
}
