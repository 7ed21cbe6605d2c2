//! Factories: what builds protocols and outlives their connections.

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use torsion_transport::{Address, CloseReason, ConnectError};

use crate::connector::Connector;
use crate::protocol::Protocol;

/// Builds a protocol for each connection and holds what outlives
/// connections: configuration and shared state (Twisted's `Factory`).
///
/// Listening ([`listen_tcp`](crate::ReactorTcp::listen_tcp)) and
/// connecting take a factory and own it. Each port calls
/// [`Factory::start_factory`] once when it starts listening and
/// [`Factory::stop_factory`] once when it stops; each connector calls
/// them around its attempts and connections. To use one factory on several
/// ports or connectors, wrap it in a [`SharedFactory`] and hand each a
/// clone: the shared instance keeps the count, so the factory hears
/// `start_factory` when the first starts using it and `stop_factory` when
/// the last stops (Twisted's `doStart`/`doStop`).
///
/// ```
/// use torsion_protocol::{Address, Factory, Protocol, TransportRef};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
///
/// struct EchoFactory;
/// impl Factory for EchoFactory {
///     type Protocol = Echo;
///     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
///         Some(Echo)
///     }
/// }
/// ```
#[doc(alias = "IProtocolFactory")]
pub trait Factory: 'static {
    /// The protocol this factory builds.
    type Protocol: Protocol;

    /// Builds the protocol for a new connection with `peer` (Twisted's
    /// `buildProtocol`). Returning `None` refuses the connection: it is
    /// closed at once.
    #[doc(alias = "buildProtocol")]
    fn build_protocol(&self, peer: &Address) -> Option<Self::Protocol>;

    /// Called when a port or connector starts using this factory, before
    /// it builds any protocol (Twisted's `startFactory`). Behind a
    /// [`SharedFactory`], only for the first of them.
    ///
    /// A factory that wraps another forwards this call to it.
    #[doc(alias = "startFactory")]
    fn start_factory(&self) {}

    /// Called when the port or connector that started this factory stops
    /// using it (Twisted's `stopFactory`). Behind a [`SharedFactory`],
    /// only after the last of them.
    ///
    /// A factory that wraps another forwards this call to it.
    #[doc(alias = "stopFactory")]
    fn stop_factory(&self) {}
}

/// One factory used by several ports or connectors (what Twisted's
/// `doStart`/`doStop` count).
///
/// A port or connector owns the factory it is given, and starts and stops
/// it once. To share one factory — one set of state, one
/// `start_factory`/`stop_factory` pair — wrap it once in a
/// `SharedFactory` and pass clones: the clones are the same shared
/// instance, which counts its users and calls the factory's
/// [`Factory::start_factory`] for the first and
/// [`Factory::stop_factory`] after the last. It works the same through
/// wrappers such as [`TimeoutFactory`](crate::policies::TimeoutFactory),
/// which forward both calls.
///
/// A `SharedFactory` dereferences to the factory, so a clone kept aside
/// reads its state or calls its methods (for example
/// [`ReconnectingClientFactory::stop_trying`](crate::ReconnectingClientFactory::stop_trying)).
///
/// ```
/// use torsion_protocol::{Address, Factory, Protocol, SharedFactory, TransportRef};
/// # struct Echo;
/// # impl Protocol for Echo {
/// #     fn data_received(&mut self, _: &TransportRef, _: &[u8]) {}
/// # }
/// struct EchoFactory;
/// impl Factory for EchoFactory {
///     type Protocol = Echo;
///     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
///         Some(Echo)
///     }
/// }
///
/// let shared = SharedFactory::new(EchoFactory);
/// // reactor.listen_tcp(8000, shared.clone())?;
/// // reactor.listen_unix("/run/echo.sock", shared.clone(), options)?;
/// assert_eq!(shared.users(), 0);
/// ```
#[doc(alias = "doStart", alias = "doStop")]
pub struct SharedFactory<F> {
    inner: Rc<Shared<F>>,
}

struct Shared<F> {
    factory: F,
    /// Ports and connectors using the factory now.
    users: Cell<usize>,
}

impl<F> SharedFactory<F> {
    /// Wraps `factory` for sharing; it is not started until a port or
    /// connector starts using it.
    pub fn new(factory: F) -> SharedFactory<F> {
        SharedFactory {
            inner: Rc::new(Shared {
                factory,
                users: Cell::new(0),
            }),
        }
    }

    /// How many ports and connectors use the factory now.
    pub fn users(&self) -> usize {
        self.inner.users.get()
    }
}

impl<F> Clone for SharedFactory<F> {
    /// Another handle to the same shared factory.
    fn clone(&self) -> Self {
        SharedFactory {
            inner: self.inner.clone(),
        }
    }
}

impl<F> Deref for SharedFactory<F> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.inner.factory
    }
}

impl<F: fmt::Debug> fmt::Debug for SharedFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFactory")
            .field("factory", &self.inner.factory)
            .field("users", &self.users())
            .finish()
    }
}

impl<F: Factory> Factory for SharedFactory<F> {
    type Protocol = F::Protocol;

    fn build_protocol(&self, peer: &Address) -> Option<F::Protocol> {
        self.inner.factory.build_protocol(peer)
    }

    /// Counts one more user; the first starts the factory.
    fn start_factory(&self) {
        let users = self.inner.users.get() + 1;
        self.inner.users.set(users);
        if users == 1 {
            self.inner.factory.start_factory();
        }
    }

    /// Counts one user fewer; after the last the factory stops. A call
    /// with no user counted does nothing.
    fn stop_factory(&self) {
        match self.inner.users.get() {
            0 => {}
            1 => {
                self.inner.users.set(0);
                self.inner.factory.stop_factory();
            }
            users => self.inner.users.set(users - 1),
        }
    }
}

/// The extra events of a factory for outgoing connections (Twisted's
/// `ClientFactory`).
///
/// Each is handed the [`Connector`] of the attempt, through which the
/// factory can retry (`connector.connect()`) or reach the reactor.
#[doc(alias = "IClientFactory")]
pub trait ClientFactory: Factory {
    /// A connection attempt has started (Twisted's `startedConnecting`).
    #[doc(alias = "startedConnecting")]
    fn started_connecting(&self, connector: &Connector) {
        let _ = connector;
    }

    /// The attempt failed before a connection was made (Twisted's
    /// `clientConnectionFailed`).
    #[doc(alias = "clientConnectionFailed")]
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        let _ = (connector, reason);
    }

    /// A connection made through this factory has closed, after its
    /// protocol's `connection_lost` (Twisted's `clientConnectionLost`).
    #[doc(alias = "clientConnectionLost")]
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        let _ = (connector, reason);
    }
}

impl<F: ClientFactory> ClientFactory for SharedFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        (**self).started_connecting(connector);
    }
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        (**self).client_connection_failed(connector, reason);
    }
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        (**self).client_connection_lost(connector, reason);
    }
}
