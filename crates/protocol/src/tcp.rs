//! TCP on a reactor (Twisted's `IReactorTCP`): the [`ReactorTcp`]
//! extension trait and how to listen ([`ListenOptions`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use torsion_transport::net;
use torsion_transport::reactor::Reactor;
use torsion_transport::tcp::{bind_listener, DEFAULT_BACKLOG};

use crate::connecting::ConnectorInner;
use crate::connector::{Connector, Destination};
use crate::factory::{ClientFactory, Factory};
use crate::port::{ListeningPort, Port};

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
    /// Turns Nagle's algorithm off (`TCP_NODELAY`) for the accepted
    /// connections. Default: on — writes are gathered per loop turn
    /// already, so Nagle's algorithm would only hold back a reply until
    /// the peer acknowledges the last one (tens of milliseconds with
    /// delayed acknowledgements). Set on the listening socket, which
    /// passes it on to every connection it accepts on Linux and the BSDs,
    /// so it costs no system call per connection.
    pub nodelay: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backlog: DEFAULT_BACKLOG,
            reuse_port: false,
            nodelay: true,
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
        let socket = bind_listener(addr, options.backlog, options.reuse_port)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        if options.nodelay {
            socket.set_tcp_nodelay(true).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: TCP_NODELAY: {e}"),
                )
            })?;
        }
        let host = net::local_address(&socket)?;
        Port::listen(self, socket, host, None, factory)
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
