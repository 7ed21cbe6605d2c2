//! The handle to outgoing connections: [`Connector`] (Twisted's
//! `IConnector`), where it connects to, and where it is in its life. The
//! machinery behind it is in `connecting.rs`.

use std::fmt;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_transport::reactor::Reactor;

/// The connect timeout Twisted uses by default: 30 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a connector is in its life (Twisted's connector `state`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnectorState {
    /// Not connected and not trying.
    Disconnected,
    /// Resolving the host or waiting for a connect to finish.
    Connecting,
    /// Connected; a protocol is running.
    Connected,
}

/// The operations a [`Connector`] forwards to its typed connector.
pub(crate) trait ConnectorControl {
    fn connect(&self);
    fn stop_connecting(&self);
    fn disconnect(&self);
    /// Drops the connection at once if connected (`abort_connection`),
    /// or abandons the attempt if connecting: a cancel. By default, as
    /// `disconnect`.
    fn abort(&self) {
        self.disconnect();
    }
    fn destination(&self) -> &Destination;
    fn reactor(&self) -> Option<Reactor>;
    fn state(&self) -> ConnectorState;
}

/// A handle to an outgoing connection and its attempts (Twisted's
/// `IConnector`), returned by
/// [`connect_tcp`](crate::ReactorTcp::connect_tcp) and handed to every
/// [`ClientFactory`](crate::ClientFactory) event.
#[doc(alias = "IConnector")]
#[derive(Clone)]
pub struct Connector {
    pub(crate) inner: Rc<dyn ConnectorControl>,
}

impl Connector {
    /// Starts a new attempt to the same destination, with the same factory
    /// and timeout (Twisted's `connect`); for retrying after a failure or a
    /// lost connection. Ignored while connecting or connected.
    pub fn connect(&self) {
        self.inner.connect();
    }

    /// Abandons the attempt in progress; the factory hears
    /// `client_connection_failed` with [`ConnectError::Cancelled`](crate::ConnectError::Cancelled)
    /// (Twisted's `stopConnecting`). Does nothing unless connecting.
    #[doc(alias = "stopConnecting")]
    pub fn stop_connecting(&self) {
        self.inner.stop_connecting();
    }

    /// Closes the connection gracefully if connected, or abandons the
    /// attempt if connecting (Twisted's `disconnect`).
    pub fn disconnect(&self) {
        self.inner.disconnect();
    }

    /// Aborts the connection if connected (queued data is discarded and
    /// the peer reset; the protocol hears [`CloseReason::Aborted`](crate::CloseReason::Aborted)),
    /// or abandons the attempt if connecting: how a dropped connect
    /// future cancels.
    pub(crate) fn abort(&self) {
        self.inner.abort();
    }

    /// Where this connector connects to (Twisted's `getDestination`).
    #[doc(alias = "getDestination")]
    pub fn get_destination(&self) -> Destination {
        self.inner.destination().clone()
    }

    /// The reactor this connector runs on, unless it has been dropped.
    pub fn reactor(&self) -> Option<Reactor> {
        self.inner.reactor()
    }

    /// Where the connector is in its life.
    pub fn state(&self) -> ConnectorState {
        self.inner.state()
    }

    /// A reference that does not keep the connector alive, for a factory
    /// that the connector owns (a strong one would be a cycle).
    pub(crate) fn downgrade(&self) -> WeakConnector {
        WeakConnector {
            inner: Rc::downgrade(&self.inner),
        }
    }
}

/// A [`Connector`] that does not keep it alive.
#[derive(Clone)]
pub(crate) struct WeakConnector {
    inner: Weak<dyn ConnectorControl>,
}

impl WeakConnector {
    /// The connector, unless it is gone.
    pub(crate) fn upgrade(&self) -> Option<Connector> {
        self.inner.upgrade().map(|inner| Connector { inner })
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", self.inner.destination())
            .field("state", &self.inner.state())
            .finish()
    }
}

/// Where a [`Connector`] connects to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A TCP host (a name or an IP address) and port.
    Tcp {
        /// The host name or IP address, as given.
        host: String,
        /// The port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            Destination::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Destination::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}
