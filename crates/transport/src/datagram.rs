//! Datagram transports: UDP and Unix datagram sockets.
//!
//! A datagram transport is a port and a transport in one (Twisted's UDP
//! `Port`): it receives datagrams from anyone, sends to any address, or is
//! connected to one peer. Datagrams are never queued: a datagram the
//! kernel does not take — too large, or a full send buffer — is an error
//! returned to the caller, never a silent drop.

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
    /// Another error from the socket; the transport stays open.
    Error(io::Error),
}

/// A UDP or Unix datagram socket registered with a reactor.
pub struct DatagramTransport {
    io: RefCell<Option<Registration<Socket>>>,
    /// Close at the next step (after `stop_listening`).
    closing: Cell<bool>,
    processing: Cell<bool>,
    connected: RefCell<Option<Address>>,
    max_datagram: Cell<usize>,
    /// System calls made to receive.
    receive_calls: Cell<u64>,
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
            host,
            reactor: reactor.downgrade(),
            file: RefCell::new(None),
            counters: reactor.shared_counters(),
        });
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

    /// Counts on the reactor's counters (see `docs/observability.md`).
    fn count(&self, f: impl FnOnce(&torsion_reactor::Counters)) {
        f(&self.counters);
    }

    /// Counts a datagram the kernel took.
    fn count_sent(&self, sent: &io::Result<usize>) {
        if let Ok(bytes) = *sent {
            self.count(|counters| counters.datagram_sent(bytes));
        }
    }

    /// Sends one datagram to `to` (Twisted's `write(data, addr)`).
    ///
    /// # Errors
    /// A datagram larger than the socket can send, a full send buffer, or
    /// another error from the kernel: the datagram was not sent.
    pub fn write_to(&self, data: &[u8], to: &Address) -> io::Result<()> {
        let addr = sockaddr(to)?;
        let sent = self.with_socket(|s| s.send_to_with_flags(data, &addr, SEND_FLAGS));
        self.count_sent(&sent);
        check_sent(sent, data.len())
    }

    /// Sends one datagram to the connected peer (Twisted's `write(data)`
    /// on a connected port).
    ///
    /// # Errors
    /// `NotConnected` without [`DatagramTransport::connect`]; otherwise as
    /// for [`DatagramTransport::write_to`], plus `ConnectionRefused` when
    /// the peer refused an earlier datagram.
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        if self.connected.borrow().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "write without an address needs a connected datagram port",
            ));
        }
        let sent = self.with_socket(|s| s.send_with_flags(data, SEND_FLAGS));
        self.count_sent(&sent);
        check_sent(sent, data.len())
    }

    /// Connects to one peer: only its datagrams are received, `write` sends
    /// to it, and refusals are reported (Twisted's `connect`).
    ///
    /// # Errors
    /// If the address is of the wrong kind or the kernel refuses.
    pub fn connect(&self, to: &Address) -> io::Result<()> {
        let addr = sockaddr(to)?;
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
    /// `on_event`, and closes the socket if `stop_listening` was called.
    /// Returns true when the socket has just been closed.
    pub fn process(
        &self,
        readiness: Readiness,
        on_event: &mut dyn FnMut(DatagramEvent<'_>),
    ) -> bool {
        self.processing.set(true);
        if readiness.is_readable() {
            self.receive(on_event);
        }
        self.processing.set(false);
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
                    self.count(|counters| {
                        let (whole, bytes) = if truncated { (0, 0) } else { (1, n) };
                        counters.datagrams_received(whole, bytes, usize::from(truncated));
                    });
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
        self.count(|counters| counters.datagrams_received(whole, bytes, truncated));
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
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a datagram of {len} bytes is larger than the socket can send: {e}"),
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the socket's send buffer is full; the datagram was not sent",
        )),
        Err(e) => Err(e),
    }
}
