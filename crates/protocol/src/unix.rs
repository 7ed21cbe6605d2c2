//! Unix-domain sockets on a reactor (Twisted's `IReactorUNIX`): the
//! [`ReactorUnix`] extension trait and how to listen
//! ([`UnixListenOptions`]).

use std::io;
use std::path::Path;
use std::time::Duration;

use torsion_transport::reactor::Reactor;
use torsion_transport::socket2::SockAddr;
use torsion_transport::tcp::DEFAULT_BACKLOG;
use torsion_transport::{unix, Address, DatagramTransportRef};

use crate::connecting::ConnectorInner;
use crate::connector::{Connector, Destination};
use crate::datagram::{DatagramHandler, DatagramProtocol};
use crate::factory::{ClientFactory, Factory};
use crate::port::{ListeningPort, Port};

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
            backlog: DEFAULT_BACKLOG,
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
        let path = path.as_ref();
        let (socket, file) =
            unix::bind_listener(path, options.backlog, options.mode).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {}: {e}", path.display()),
                )
            })?;
        let host = Address::Unix(Some(path.to_owned()));
        Port::listen(self, socket, host, Some(file), factory)
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
        let (socket, file) = unix::bind_datagram(path, mode).map_err(|e| {
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
                let (socket, file) = unix::bind_datagram(bind, None)?;
                (socket, Some(file))
            }
            None => (unix::unbound_datagram()?, None),
        };
        let peer = Address::Unix(Some(path.as_ref().to_owned()));
        // Connect before the protocol starts, so it can write at once.
        socket.connect(&SockAddr::unix(path.as_ref())?)?;
        let transport = DatagramHandler::start(self, socket, protocol, None, Some(peer))?;
        if let Some(file) = file {
            transport.remove_on_close(file);
        }
        Ok(transport)
    }
}
