//! Serving sockets connected elsewhere (Twisted's `IReactorSocket`): the
//! [`ReactorSocket`] extension trait.

use std::io;

use torsion_transport::reactor::Reactor;
use torsion_transport::socket2::Socket;
use torsion_transport::Address;

use crate::factory::Factory;
use crate::port;

/// Taking over sockets connected elsewhere (Twisted's `IReactorSocket`).
#[doc(alias = "IReactorSocket")]
pub trait ReactorSocket {
    /// Serves an already-connected stream socket (TCP or Unix) on this
    /// reactor with a protocol from `factory`, as if its own listener had
    /// accepted it (Twisted's `adoptStreamConnection`). The socket is made
    /// non-blocking; the reactor owns it from here on.
    ///
    /// This is how one thread that accepts can hand connections to worker
    /// reactors on other threads: send the socket (it is `Send`) through
    /// [`ReactorHandle::call_from_thread`](crate::ReactorHandle::call_from_thread)
    /// and adopt it there (`examples/acceptor.rs`). The factory's
    /// `start_factory`/`stop_factory` are not called: there is no port
    /// whose life they would bracket.
    ///
    /// Returns false if the factory refused the connection (it is then
    /// closed).
    ///
    /// # Errors
    /// If the socket is not connected; `InvalidInput` if it is connected
    /// but not a stream socket (on Linux, an IP socket must be TCP or
    /// Multipath TCP: connections with an IP peer are watched
    /// edge-triggered, which is right for their reads only); if it cannot
    /// be registered. The socket is closed.
    #[doc(alias = "adoptStreamConnection")]
    fn adopt_stream_connection<F: Factory>(
        &self,
        socket: impl Into<Socket>,
        factory: &F,
    ) -> io::Result<bool>;
}

impl ReactorSocket for Reactor {
    fn adopt_stream_connection<F: Factory>(
        &self,
        socket: impl Into<Socket>,
        factory: &F,
    ) -> io::Result<bool> {
        let socket = socket.into();
        let peer = Address::from_sockaddr(&socket.peer_addr()?);
        check_stream(&socket, &peer)?;
        socket.set_nonblocking(true)?;
        port::serve(self, factory, socket, peer)
    }
}

/// Refuses a socket that is not a stream socket: its reads would stop at
/// each message, which a stream transport is not built for. On Linux an
/// IP socket must be TCP or Multipath TCP (one `getsockopt`,
/// `SO_PROTOCOL`): the transport watches connections with an IP peer
/// edge-triggered, and takes a short read as "drained", which holds for
/// those (not for SCTP's streams). Elsewhere only the type is checked:
/// the portable backend watches every socket level-triggered.
fn check_stream(socket: &Socket, peer: &Address) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let stream = if matches!(peer, Address::Tcp(_)) {
        use torsion_transport::socket2::Protocol;
        // Linux's IPPROTO_MPTCP.
        let mptcp = Protocol::from(262);
        socket
            .protocol()?
            .is_some_and(|protocol| protocol == Protocol::TCP || protocol == mptcp)
    } else {
        socket.r#type()? == torsion_transport::socket2::Type::STREAM
    };
    #[cfg(not(target_os = "linux"))]
    let stream = {
        let _ = peer;
        socket.r#type()? == torsion_transport::socket2::Type::STREAM
    };
    if stream {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "adopt_stream_connection: not a TCP or Unix stream socket",
        ))
    }
}
