//! Factories: what builds protocols and outlives their connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use torsion_transport::{Address, CloseReason, ConnectError};

use crate::connector::Connector;
use crate::protocol::Protocol;

/// Builds a protocol for each connection and holds what outlives
/// connections: configuration and shared state (Twisted's `Factory`).
///
/// Listening ([`listen_tcp`](crate::ReactorTcp::listen_tcp)) and
/// connecting take a factory. [`Factory::start_factory`] runs when the
/// factory's first port starts listening (or its first connector starts
/// connecting), and [`Factory::stop_factory`] when the last one stops. To
/// share one factory among several ports, pass clones of an `Rc` of it:
/// `Rc<F>` is a factory too, and the start/stop count is kept per shared
/// instance.
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

    /// Called before the first port or connector using this factory starts
    /// (Twisted's `startFactory`).
    #[doc(alias = "startFactory")]
    fn start_factory(&self) {}

    /// Called after the last port or connector using this factory stops
    /// (Twisted's `stopFactory`).
    #[doc(alias = "stopFactory")]
    fn stop_factory(&self) {}

    /// Counts one more user of this factory and calls
    /// [`Factory::start_factory`] for the first (Twisted's `doStart`).
    /// Ports and connectors call it; implementations rarely override it.
    #[doc(alias = "doStart")]
    fn do_start(&self) {
        if usage_change(identity(self), true) {
            self.start_factory();
        }
    }

    /// Counts one user fewer and calls [`Factory::stop_factory`] after the
    /// last (Twisted's `doStop`).
    #[doc(alias = "doStop")]
    fn do_stop(&self) {
        if usage_change(identity(self), false) {
            self.stop_factory();
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

impl<F: Factory> Factory for Rc<F> {
    type Protocol = F::Protocol;
    fn build_protocol(&self, peer: &Address) -> Option<F::Protocol> {
        (**self).build_protocol(peer)
    }
    fn start_factory(&self) {
        (**self).start_factory();
    }
    fn stop_factory(&self) {
        (**self).stop_factory();
    }
    // Count per shared instance, not per `Rc` handle.
    fn do_start(&self) {
        (**self).do_start();
    }
    fn do_stop(&self) {
        (**self).do_stop();
    }
}

impl<F: ClientFactory> ClientFactory for Rc<F> {
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

/// The identity of a factory instance: its address, which is stable while
/// a port or connector (which own it, behind an `Rc`) uses it.
fn identity<F: ?Sized>(factory: &F) -> usize {
    (factory as *const F).cast::<()>() as usize
}

thread_local! {
    /// Users (ports and connectors) per factory instance on this thread.
    static USERS: RefCell<HashMap<usize, usize>> = RefCell::new(HashMap::new());
}

/// Adds or removes one user; true if this was the first added or the last
/// removed.
fn usage_change(id: usize, start: bool) -> bool {
    USERS.with(|users| {
        let mut users = users.borrow_mut();
        if start {
            let count = users.entry(id).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match users.get_mut(&id) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    users.remove(&id);
                    true
                }
                None => false,
            }
        }
    })
}
