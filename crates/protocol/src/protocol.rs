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

    /// Opts in to half-closes (Twisted's `IHalfCloseableProtocol`).
    ///
    /// By default (`false`), the peer's end of stream ends the connection:
    /// everything already queued is sent, then the connection closes and
    /// `connection_lost` follows. A protocol that returns `true` instead
    /// hears [`Protocol::read_connection_lost`] and keeps the connection
    /// open for writing, until it closes it or also shuts its write side
    /// ([`Transport::lose_write_connection`](torsion_transport::Transport::lose_write_connection)).
    fn half_closeable(&self) -> bool {
        false
    }

    /// The peer ended its stream; writing still works (half-closeable
    /// protocols only; Twisted's `readConnectionLost`).
    #[doc(alias = "readConnectionLost")]
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

    /// Our write side was shut down after everything queued was sent
    /// (half-closeable protocols only; Twisted's `writeConnectionLost`).
    #[doc(alias = "writeConnectionLost")]
    fn write_connection_lost(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

    /// A security handshake on this connection finished (Twisted's
    /// `IHandshakeListener.handshakeCompleted`): a TLS layer such as
    /// `torsion-tls` calls it once, after the handshake and before any
    /// data the peer sent under it is delivered. Plain transports never
    /// call it. What was negotiated (ALPN, certificates, ...) is reached
    /// from `transport`, for TLS through `torsion_tls::TlsTransport::of`.
    #[doc(alias = "handshakeCompleted")]
    #[doc(alias = "IHandshakeListener")]
    fn handshake_completed(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

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
    fn half_closeable(&self) -> bool {
        (**self).half_closeable()
    }
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        (**self).read_connection_lost(transport);
    }
    fn write_connection_lost(&mut self, transport: &TransportRef) {
        (**self).write_connection_lost(transport);
    }
    fn handshake_completed(&mut self, transport: &TransportRef) {
        (**self).handshake_completed(transport);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        (**self).connection_lost(reason);
    }
}
