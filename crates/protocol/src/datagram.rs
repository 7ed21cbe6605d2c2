//! Datagram protocols (Twisted's `DatagramProtocol`) and the glue that
//! feeds them from a datagram transport.

use std::cell::RefCell;
use std::rc::Rc;

use torsion_transport::reactor::Reactor;
use torsion_transport::reactor::{Handler, Readiness};
use torsion_transport::{Address, DatagramEvent, DatagramTransport, DatagramTransportRef};

use crate::connection::guarded;

/// The handler of a datagram port's events (Twisted's
/// `DatagramProtocol`). One protocol object serves the whole port.
///
/// Called on the reactor's thread, never re-entrantly:
/// [`start_protocol`](DatagramProtocol::start_protocol) once, then
/// [`datagram_received`](DatagramProtocol::datagram_received) per
/// datagram, then [`stop_protocol`](DatagramProtocol::stop_protocol) when
/// the port stops. A panic in any of them is caught and logged; the port
/// keeps serving.
pub trait DatagramProtocol: 'static {
    /// The port is open (Twisted's `startProtocol`). Keep the transport to
    /// send from elsewhere.
    #[doc(alias = "startProtocol")]
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        let _ = transport;
    }

    /// A whole datagram arrived from `from` (Twisted's `datagramReceived`).
    #[doc(alias = "datagramReceived")]
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address);

    /// A datagram from `from` was larger than the port's maximum size and
    /// was cut short; it is not passed on as if whole. The default logs a
    /// warning.
    fn datagram_truncated(
        &mut self,
        transport: &DatagramTransportRef,
        from: &Address,
        received: usize,
    ) {
        let _ = transport;
        tracing::warn!(%from, received, "datagram truncated and dropped");
    }

    /// The connected peer refused a datagram (ICMP port unreachable;
    /// connected ports only; Twisted's `connectionRefused`).
    #[doc(alias = "connectionRefused")]
    fn connection_refused(&mut self, transport: &DatagramTransportRef) {
        let _ = transport;
    }

    /// A datagram written during a turn was queued and then refused by the
    /// kernel when the queue was sent: `to` is where it was going (`None`:
    /// the connected peer), `error` why (a datagram too large for the path
    /// is `InvalidInput`; an unreachable network, a firewall's refusal).
    /// The datagrams written after it were still sent. Errors of datagrams
    /// sent at once are returned by `write_to` instead; a refusal by the
    /// connected peer goes to
    /// [`connection_refused`](DatagramProtocol::connection_refused). The
    /// default logs it at debug level (a remote peer can make every
    /// datagram fail; override to count or react).
    fn send_failed(
        &mut self,
        transport: &DatagramTransportRef,
        to: Option<&Address>,
        error: &std::io::Error,
    ) {
        let _ = transport;
        tracing::debug!(?to, %error, "datagram not sent");
    }

    /// The port stopped listening (Twisted's `stopProtocol`).
    #[doc(alias = "stopProtocol")]
    fn stop_protocol(&mut self) {}
}

/// The reactor-facing side of a datagram port.
pub(crate) struct DatagramHandler<P> {
    transport: DatagramTransportRef,
    protocol: RefCell<Option<P>>,
}

impl<P: DatagramProtocol> DatagramHandler<P> {
    /// Registers `socket` and starts `protocol` on it.
    pub(crate) fn start(
        reactor: &Reactor,
        socket: torsion_transport::socket2::Socket,
        protocol: P,
        max_datagram: Option<usize>,
        connected: Option<Address>,
    ) -> std::io::Result<DatagramTransportRef> {
        let mut created = None;
        let transport = DatagramTransport::bind(reactor, socket, |transport| {
            let handler = Rc::new(DatagramHandler {
                transport,
                protocol: RefCell::new(Some(protocol)),
            });
            created = Some(handler.clone());
            handler
        })?;
        if let Some(size) = max_datagram {
            transport.set_max_datagram_size(size);
        }
        if let Some(peer) = connected {
            transport.set_connected(peer);
        }
        tracing::info!(host = %transport.get_host(), "datagram port listening");
        if let Some(handler) = created {
            handler.call("start_protocol", |protocol, transport| {
                protocol.start_protocol(transport);
            });
        }
        Ok(transport)
    }

    fn call(&self, what: &str, f: impl FnOnce(&mut P, &DatagramTransportRef)) {
        let mut slot = self.protocol.borrow_mut();
        if let Some(protocol) = slot.as_mut() {
            guarded(what, || f(protocol, &self.transport));
        }
    }

    fn stopped(&self) {
        self.call("stop_protocol", |protocol, _| protocol.stop_protocol());
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
        tracing::info!(host = %self.transport.get_host(), "datagram port stopped");
    }
}

impl<P: DatagramProtocol> Handler for DatagramHandler<P> {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let closed = self.transport.process(readiness, &mut |event| match event {
            DatagramEvent::Datagram { data, from } => {
                self.call("datagram_received", |protocol, transport| {
                    protocol.datagram_received(transport, data, &from);
                });
            }
            DatagramEvent::Truncated { from, received } => {
                self.call("datagram_truncated", |protocol, transport| {
                    protocol.datagram_truncated(transport, &from, received);
                });
            }
            DatagramEvent::Refused => {
                self.call("connection_refused", |protocol, transport| {
                    protocol.connection_refused(transport);
                });
            }
            DatagramEvent::SendFailed { to, error } => {
                self.call("send_failed", |protocol, transport| {
                    protocol.send_failed(transport, to.as_ref(), &error);
                });
            }
            DatagramEvent::Error(error) => {
                tracing::warn!(host = %self.transport.get_host(), %error, "datagram socket error");
            }
        });
        if closed {
            self.stopped();
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if self.transport.close() {
            self.stopped();
        }
    }
}
