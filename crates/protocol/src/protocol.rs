//! The `Protocol` contract.

use torsion_transport::{CloseReason, TransportRef};

/// The handler of one connection's events (Twisted's `IProtocol`).
///
/// A factory builds one protocol object per connection; the connection
/// owns it and calls it, always on the reactor's thread and never
/// re-entrantly, in this order:
///
/// 1. [`make_connection`](Protocol::make_connection) once, which by default
///    calls [`connection_made`](Protocol::connection_made);
/// 2. [`data_received`](Protocol::data_received) any number of times, with
///    bytes in the order they arrived, split at arbitrary points;
/// 3. [`connection_lost`](Protocol::connection_lost) exactly once, after
///    the socket is closed; then the protocol is dropped.
///
/// Each event that can act on the connection gets its transport. Clone the
/// [`TransportRef`] to keep it, for example to write from a timer or from
/// another connection's events.
///
/// A panic inside any of these methods is caught at the connection: that
/// connection is aborted and logged, the reactor and every other
/// connection carry on.
///
/// ```
/// use torsion_protocol::{Protocol, TransportRef};
///
/// /// Writes back whatever it receives.
/// struct Echo;
///
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
/// ```
#[doc(alias = "IProtocol")]
pub trait Protocol: 'static {
    /// Binds the protocol to its transport (Twisted's `makeConnection`).
    /// The default calls [`Protocol::connection_made`]; wrappers override
    /// it to interpose on the transport.
    #[doc(alias = "makeConnection")]
    fn make_connection(&mut self, transport: &TransportRef) {
        self.connection_made(transport);
    }

    /// The connection is established (Twisted's `connectionMade`). Writing
    /// here is fine: it is sent as soon as the kernel takes it.
    #[doc(alias = "connectionMade")]
    fn connection_made(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

    /// Bytes arrived (Twisted's `dataReceived`). `data` is lent for the
    /// call only; copy what must outlive it.
    #[doc(alias = "dataReceived")]
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]);

    /// The connection is closed (Twisted's `connectionLost`).
    /// [`CloseReason::is_clean`] tells an orderly close from a failure.
    #[doc(alias = "connectionLost")]
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

impl<P: Protocol + ?Sized> Protocol for Box<P> {
    fn make_connection(&mut self, transport: &TransportRef) {
        (**self).make_connection(transport);
    }
    fn connection_made(&mut self, transport: &TransportRef) {
        (**self).connection_made(transport);
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        (**self).data_received(transport, data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        (**self).connection_lost(reason);
    }
}
