//! What a socket adds to a stream transport (Twisted's `tcp.py`): the
//! socket as a [`Pipe`] (sending with the platform's flags, receiving,
//! shutting down the write side, its pending error, finishing a
//! non-blocking connect, socket options, peer credentials), and
//! [`SocketTransport`], made for an accepted socket or for one whose
//! connect is in flight.

use std::io::{self, IoSlice, Read};
use std::rc::Rc;
use std::time::Duration;

use socket2::Socket;
use torsion_reactor::{Handler, Interest, Reactor, Registration};

use crate::address::Address;
use crate::net;
use crate::stream::{Opening, Pipe, StreamTransport};
use crate::sys::{self, SEND_FLAGS};
use crate::transport::{Keepalive, PeerCredentials};

/// A [`Transport`](crate::Transport) over a connected, non-blocking
/// stream socket (TCP or Unix), which it owns through its reactor
/// [`Registration`]: a [`StreamTransport`] whose pipe is the socket.
///
/// Make one with [`SocketTransport::accepted`] or
/// [`SocketTransport::connecting`]; the handler those register calls
/// [`StreamTransport::process`] with each readiness event. A socket whose
/// `peer` is a TCP address must be a TCP (or Multipath TCP) socket: it is
/// registered edge-triggered ([`Reactor::register_edge`]), which relies
/// on TCP's reads stopping short only when drained or before what the
/// readiness reports; every other socket is registered level-triggered.
pub type SocketTransport = StreamTransport<Registration<Socket>>;

impl SocketTransport {
    /// Registers a freshly accepted, non-blocking socket with `reactor`.
    ///
    /// `make_handler` receives the new transport and returns the handler
    /// that will receive its readiness (typically an object that holds the
    /// transport and a protocol, and calls [`StreamTransport::process`]).
    ///
    /// # Errors
    /// If the reactor cannot register the socket (which is then closed).
    pub fn accepted(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        Self::register(reactor, socket, peer, Opening::Open, make_handler)
    }

    /// Registers a socket whose connect was started with
    /// [`net::start_connect`]. [`StreamTransport::process`] reports
    /// [`Progress::Connected`](crate::driver::Progress::Connected) or
    /// [`Progress::ConnectFailed`](crate::driver::Progress::ConnectFailed)
    /// when the attempt ends.
    ///
    /// # Errors
    /// As for [`SocketTransport::accepted`].
    pub fn connecting(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        Self::register(reactor, socket, peer, Opening::Connecting, make_handler)
    }

    fn register(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        opening: Opening,
        make_handler: impl FnOnce(Rc<SocketTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<SocketTransport>> {
        // TCP connections are watched edge-triggered: the loop's wait need
        // not look again at every socket it reported the time before (see
        // `Pipe::edge_triggered` for how the transport keeps up). Unix
        // stream sockets stay level-triggered: their read also stops short
        // after a message that carried descriptors or, with `SO_PASSCRED`,
        // where the sender's credentials change, and nothing in the
        // readiness tells that apart from "drained".
        let edge = matches!(peer, Address::Tcp(_));
        StreamTransport::new(reactor, peer, opening, |transport, interest| {
            let handler = make_handler(transport.clone());
            if edge {
                reactor.register_edge(socket, interest, handler)
            } else {
                reactor.register(socket, interest, handler)
            }
        })
    }
}

/// A registered socket is the pipe of a [`SocketTransport`].
impl Pipe for Registration<Socket> {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.get_ref().send_with_flags(data, SEND_FLAGS)
    }

    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.get_ref().send_vectored_with_flags(data, SEND_FLAGS)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket = self.get_ref();
        socket.read(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(std::net::Shutdown::Write)
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.get_ref().take_error()
    }

    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        Registration::set_interest(self, interest)
    }

    fn wake(&self) {
        Registration::wake(self);
    }

    fn edge_triggered(&self) -> bool {
        self.is_edge_triggered()
    }

    fn finish_connect(&self) -> io::Result<()> {
        net::finish_connect(self.get_ref())
    }

    fn reset_on_close(&self) {
        // Linger zero: closing sends a reset instead of a FIN.
        let _ = self.get_ref().set_linger(Some(Duration::ZERO));
    }

    fn local_address(&self) -> io::Result<Address> {
        net::local_address(self.get_ref())
    }

    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.get_ref().set_tcp_nodelay(nodelay)
    }

    fn tcp_nodelay(&self) -> io::Result<bool> {
        self.get_ref().tcp_nodelay()
    }

    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        let socket = self.get_ref();
        match keepalive {
            None => socket.set_keepalive(false),
            Some(keepalive) => socket.set_tcp_keepalive(&keepalive.to_socket2()),
        }
    }

    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        let socket = self.get_ref();
        if !socket.local_addr()?.is_unix() {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        sys::peer_credentials(socket)
    }
}
