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
    /// If the socket is not connected or cannot be registered; it is
    /// closed.
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
        socket.set_nonblocking(true)?;
        let peer = Address::from_sockaddr(&socket.peer_addr()?);
        port::serve(self, factory, socket, peer)
    }
}
