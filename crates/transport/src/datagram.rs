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

use socket2::{MaybeUninitSlice, SockAddr, Socket};
use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration, WeakReactor};

use crate::address::Address;
use crate::sys::SEND_FLAGS;
use crate::unix::SocketFile;

/// Default largest datagram received whole: larger ones are reported as
/// truncated. 65,536 bytes hold any UDP datagram.
pub const DEFAULT_MAX_DATAGRAM: usize = 64 * 1024;

/// Datagrams read per readiness event before other sources get a turn.
const MAX_DATAGRAMS_PER_EVENT: usize = 64;

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
    /// Receive buffer, `max_datagram` long, kept between reads.
    buffer: RefCell<Vec<MaybeUninit<u8>>>,
    host: Address,
    reactor: WeakReactor,
    /// A Unix socket file to remove when the socket closes.
    file: RefCell<Option<SocketFile>>,
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
            buffer: RefCell::new(Vec::new()),
            host,
            reactor: reactor.downgrade(),
            file: RefCell::new(None),
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

    /// Sends one datagram to `to` (Twisted's `write(data, addr)`).
    ///
    /// # Errors
    /// A datagram larger than the socket can send, a full send buffer, or
    /// another error from the kernel: the datagram was not sent.
    pub fn write_to(&self, data: &[u8], to: &Address) -> io::Result<()> {
        let addr = sockaddr(to)?;
        let sent = self.with_socket(|s| s.send_to_with_flags(data, &addr, SEND_FLAGS));
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
    /// as truncated (Twisted's `maxPacketSize`).
    pub fn set_max_datagram_size(&self, size: usize) {
        self.max_datagram.set(size.max(1));
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

    fn receive(&self, on_event: &mut dyn FnMut(DatagramEvent<'_>)) {
        let mut buf = std::mem::take(&mut *self.buffer.borrow_mut());
        buf.resize(self.max_datagram.get(), MaybeUninit::uninit());
        self.receive_into(&mut buf, on_event);
        *self.buffer.borrow_mut() = buf;
    }

    fn receive_into(
        &self,
        buf: &mut [MaybeUninit<u8>],
        on_event: &mut dyn FnMut(DatagramEvent<'_>),
    ) {
        for _ in 0..MAX_DATAGRAMS_PER_EVENT {
            if self.closing.get() {
                return;
            }
            let received = self.with_socket(|socket| {
                let mut slices = [MaybeUninitSlice::new(buf)];
                socket.recv_from_vectored(&mut slices)
            });
            match received {
                Ok((n, flags, from)) => {
                    let from = datagram_address(&from);
                    if flags.is_truncated() {
                        on_event(DatagramEvent::Truncated { from, received: n });
                        continue;
                    }
                    // SAFETY: recvmsg initialised the first `n` bytes of
                    // `buf`; MaybeUninit<u8> has the layout of u8.
                    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    on_event(DatagramEvent::Datagram { data, from });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    on_event(DatagramEvent::Refused)
                }
                Err(e) => {
                    on_event(DatagramEvent::Error(e));
                    return;
                }
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
