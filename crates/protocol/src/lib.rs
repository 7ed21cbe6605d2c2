//! # torsion-protocol
//!
//! The third layer of Torsion: protocols and factories, in the shape of
//! Twisted's `twisted.internet.protocol`.
//!
//! - A [`Protocol`] handles one connection's events: `connection_made`,
//!   `data_received`, `connection_lost`. It writes through the
//!   [`Transport`] it is handed.
//! - A [`Factory`] builds a protocol per connection and keeps what outlives
//!   connections; a [`ClientFactory`] also hears how outgoing attempts end.
//! - [`ReactorTcp`] adds Twisted's calls to the reactor:
//!   `reactor.listen_tcp(8000, factory)` returns a [`ListeningPort`],
//!   `reactor.connect_tcp(host, port, factory, timeout)` a [`Connector`].
//!
//! This layer owns the *meaning* of events: it turns the readiness the
//! transport layer reports into protocol callbacks, and isolates panics so
//! that one failing protocol costs one connection. It re-exports what
//! protocols need from the layers below ([`Reactor`], [`Transport`],
//! [`CloseReason`], ...), so an application depends on this crate alone.
//!
//! ```no_run
//! use torsion_protocol::{Address, Factory, Protocol, Reactor, ReactorTcp, TransportRef};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! struct EchoFactory;
//! impl Factory for EchoFactory {
//!     type Protocol = Echo;
//!     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
//!         Some(Echo)
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! reactor.listen_tcp(8000, EchoFactory)?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/protocol.md` in the repository for the design.
#![deny(missing_docs)]
#![cfg(unix)]

pub mod basic;
mod connection;
mod connector;
mod datagram;
pub mod endpoints;
mod factory;
pub mod policies;
mod port;
mod protocol;
mod reconnecting;
pub mod testing;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use torsion_transport as transport;
pub use torsion_transport::reactor;
pub use torsion_transport::{
    Address, Bytes, CloseReason, ConnectError, DatagramTransport, DatagramTransportRef,
    DelayedCall, Keepalive, ManualClock, PeerCredentials, Producer, Reactor, ReactorError,
    ReactorHandle, ReadThrottle, Transport, TransportRef,
};

pub use crate::connector::{Connector, ConnectorState, Destination};
pub use crate::datagram::DatagramProtocol;
pub use crate::factory::{ClientFactory, Factory, SharedFactory};
pub use crate::port::ListeningPort;
pub use crate::protocol::Protocol;
pub use crate::reconnecting::ReconnectingClientFactory;

use crate::connector::ConnectorInner;
use crate::datagram::DatagramHandler;
use crate::port::Port;

/// The connect timeout Twisted uses by default: 30 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to listen: which interface, and how many connections the kernel may
/// hold waiting to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The local address to listen on. Default: every IPv4 interface
    /// (`0.0.0.0`), as Twisted's `interface=''`.
    pub interface: IpAddr,
    /// The listen backlog (the kernel caps it at `somaxconn`). Default:
    /// 1024.
    pub backlog: i32,
    /// Sets `SO_REUSEPORT`, so that several listeners — typically one
    /// reactor per core, each on its own thread — share the port and the
    /// kernel spreads connections among them. Default: off.
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backlog: torsion_transport::tcp::DEFAULT_BACKLOG,
            reuse_port: false,
        }
    }
}

impl ListenOptions {
    /// Options that listen on `interface`.
    pub fn interface(interface: IpAddr) -> ListenOptions {
        ListenOptions {
            interface,
            ..ListenOptions::default()
        }
    }
}

/// TCP listening and connecting on a [`Reactor`] (Twisted's
/// `IReactorTCP`).
#[doc(alias = "IReactorTCP")]
pub trait ReactorTcp {
    /// Listens on `port` of every IPv4 interface and serves each accepted
    /// connection with a protocol from `factory` (Twisted's `listenTCP`).
    /// Port 0 picks a free port: read it from
    /// [`ListeningPort::get_host`].
    ///
    /// # Errors
    /// If the port cannot be bound (in use, no permission) or registered.
    #[doc(alias = "listenTCP")]
    fn listen_tcp<F: Factory>(&self, port: u16, factory: F) -> io::Result<ListeningPort> {
        self.listen_tcp_with(port, factory, ListenOptions::default())
    }

    /// Like [`ReactorTcp::listen_tcp`], with a chosen interface and
    /// backlog.
    ///
    /// # Errors
    /// As for [`ReactorTcp::listen_tcp`].
    fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: F,
        options: ListenOptions,
    ) -> io::Result<ListeningPort>;

    /// Connects to `host` (a name or an IP address) on `port`, and runs a
    /// protocol from `factory` on the connection (Twisted's `connectTCP`).
    ///
    /// Returns at once. Names are resolved on a worker thread, never on
    /// the reactor's; each resolved address is tried in turn until one
    /// accepts. If none does within `timeout`, the factory hears
    /// [`ClientFactory::client_connection_failed`] with a reason that tells
    /// a failed lookup, a refusal, a timeout and other failures apart.
    #[doc(alias = "connectTCP")]
    fn connect_tcp<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
        timeout: Duration,
    ) -> Connector;
}

impl ReactorTcp for Reactor {
    fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: F,
        options: ListenOptions,
    ) -> io::Result<ListeningPort> {
        let addr = SocketAddr::new(options.interface, port);
        Port::listen_tcp(self, addr, &options, factory)
    }

    fn connect_tcp<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
        timeout: Duration,
    ) -> Connector {
        let destination = Destination::Tcp {
            host: host.to_owned(),
            port,
        };
        ConnectorInner::start(self, destination, factory, timeout)
    }
}

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
    /// [`ReactorHandle::call_from_thread`](torsion_transport::ReactorHandle::call_from_thread)
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
        socket: impl Into<torsion_transport::socket2::Socket>,
        factory: &F,
    ) -> io::Result<bool>;
}

impl ReactorSocket for Reactor {
    fn adopt_stream_connection<F: Factory>(
        &self,
        socket: impl Into<torsion_transport::socket2::Socket>,
        factory: &F,
    ) -> io::Result<bool> {
        let socket = socket.into();
        socket.set_nonblocking(true)?;
        let peer = Address::from_sockaddr(&socket.peer_addr()?);
        port::serve(self, factory, socket, peer)
    }
}

/// How to listen on a Unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixListenOptions {
    /// Permission bits for the socket file (for example `0o660`); `None`
    /// leaves them to the process's umask.
    pub mode: Option<u32>,
    /// The listen backlog. Default: 1024.
    pub backlog: i32,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        UnixListenOptions {
            mode: None,
            backlog: torsion_transport::tcp::DEFAULT_BACKLOG,
        }
    }
}

/// Unix-domain stream sockets on a [`Reactor`] (Twisted's
/// `IReactorUNIX`). The same protocols and factories work over TCP and
/// Unix sockets.
#[doc(alias = "IReactorUNIX")]
pub trait ReactorUnix {
    /// Listens on the socket file `path` (Twisted's `listenUNIX`). A stale
    /// file left by a dead process is replaced; a file where a live server
    /// listens is an `AddrInUse` error, never taken over. The file is
    /// removed when the port stops listening.
    ///
    /// # Errors
    /// As above, or if the socket cannot be created or bound.
    #[doc(alias = "listenUNIX")]
    fn listen_unix<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: F,
        options: UnixListenOptions,
    ) -> io::Result<ListeningPort>;

    /// Connects to the socket file `path` and runs a protocol from
    /// `factory` on the connection (Twisted's `connectUNIX`). Returns at
    /// once; failures reach the factory on a later turn.
    #[doc(alias = "connectUNIX")]
    fn connect_unix<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: F,
        timeout: Duration,
    ) -> Connector;

    /// Receives datagrams on the socket file `path` (Twisted's
    /// `listenUNIXDatagram`), with the file handled as for
    /// [`ReactorUnix::listen_unix`]. The file is removed when the port
    /// stops listening.
    ///
    /// # Errors
    /// As for [`ReactorUnix::listen_unix`].
    #[doc(alias = "listenUNIXDatagram")]
    fn listen_unix_datagram<P: DatagramProtocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        mode: Option<u32>,
    ) -> io::Result<DatagramTransportRef>;

    /// A datagram port connected to the socket file `path` (Twisted's
    /// `connectUNIXDatagram`). To receive answers it binds `bind` (a path
    /// of its own); without one it can only send.
    ///
    /// # Errors
    /// If the socket cannot be created, bound or connected (no such file,
    /// nobody listening).
    #[doc(alias = "connectUNIXDatagram")]
    fn connect_unix_datagram<P: DatagramProtocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        bind: Option<&Path>,
    ) -> io::Result<DatagramTransportRef>;
}

impl ReactorUnix for Reactor {
    fn listen_unix<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: F,
        options: UnixListenOptions,
    ) -> io::Result<ListeningPort> {
        Port::listen_unix(self, path.as_ref(), &options, factory)
    }

    fn connect_unix<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: F,
        timeout: Duration,
    ) -> Connector {
        let destination = Destination::Unix(path.as_ref().to_owned());
        ConnectorInner::start(self, destination, factory, timeout)
    }

    fn listen_unix_datagram<P: DatagramProtocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        mode: Option<u32>,
    ) -> io::Result<DatagramTransportRef> {
        let path = path.as_ref();
        let (socket, file) = torsion_transport::unix::bind_datagram(path, mode).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })?;
        let transport = DatagramHandler::start(self, socket, protocol, None, None)?;
        // The file goes when the port stops: on stop_listening or shutdown.
        transport.remove_on_close(file);
        Ok(transport)
    }

    fn connect_unix_datagram<P: DatagramProtocol>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        bind: Option<&Path>,
    ) -> io::Result<DatagramTransportRef> {
        let (socket, file) = match bind {
            Some(bind) => {
                let (socket, file) = torsion_transport::unix::bind_datagram(bind, None)?;
                (socket, Some(file))
            }
            None => (torsion_transport::unix::unbound_datagram()?, None),
        };
        let peer = Address::Unix(Some(path.as_ref().to_owned()));
        // Connect before the protocol starts, so it can write at once.
        socket.connect(&torsion_transport::socket2::SockAddr::unix(path.as_ref())?)?;
        let transport = DatagramHandler::start(self, socket, protocol, None, Some(peer))?;
        if let Some(file) = file {
            transport.remove_on_close(file);
        }
        Ok(transport)
    }
}

/// How to listen for UDP datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// The local address. Default: every IPv4 interface.
    pub interface: IpAddr,
    /// The largest datagram received whole; larger ones reach the
    /// protocol's `datagram_truncated` instead (Twisted's
    /// `maxPacketSize`). Default: 65,536 bytes, enough for any UDP
    /// datagram.
    pub max_datagram_size: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            max_datagram_size: torsion_transport::DEFAULT_MAX_DATAGRAM,
        }
    }
}

/// UDP on a [`Reactor`] (Twisted's `IReactorUDP`).
#[doc(alias = "IReactorUDP")]
pub trait ReactorUdp {
    /// Receives datagrams on `port` of every IPv4 interface and hands them
    /// to `protocol` (Twisted's `listenUDP`). Port 0 picks a free port. The
    /// returned transport sends datagrams, connects, reports its address
    /// and stops listening.
    ///
    /// # Errors
    /// If the port cannot be bound.
    #[doc(alias = "listenUDP")]
    fn listen_udp<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
    ) -> io::Result<DatagramTransportRef> {
        self.listen_udp_with(port, protocol, UdpOptions::default())
    }

    /// Like [`ReactorUdp::listen_udp`], with a chosen interface and maximum
    /// datagram size.
    ///
    /// # Errors
    /// As for [`ReactorUdp::listen_udp`].
    fn listen_udp_with<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
        options: UdpOptions,
    ) -> io::Result<DatagramTransportRef>;
}

impl ReactorUdp for Reactor {
    fn listen_udp_with<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
        options: UdpOptions,
    ) -> io::Result<DatagramTransportRef> {
        let addr = SocketAddr::new(options.interface, port);
        let socket = torsion_transport::net::bind_datagram(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp:{addr}: {e}")))?;
        DatagramHandler::start(
            self,
            socket,
            protocol,
            Some(options.max_datagram_size),
            None,
        )
    }
}
