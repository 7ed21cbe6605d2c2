//! The glue between a stream transport (a socket's, standard I/O's, a
//! serial port's) and a protocol: turns readiness into protocol events,
//! and keeps a panicking protocol from taking the reactor down.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use torsion_transport::driver::{Pipe, Progress, StreamTransport};
use torsion_transport::reactor::Reactor;
use torsion_transport::reactor::{panic_message, Handler, Readiness};
use torsion_transport::{CloseReason, Transport, TransportRef};

use crate::protocol::Protocol;

/// The pipe under a socket's transport: what `Driver` drives unless told
/// otherwise.
type SocketPipe = torsion_transport::reactor::Registration<torsion_transport::socket2::Socket>;

/// Drives one protocol over one stream transport (a socket's by default).
pub(crate) struct Driver<P, T: Pipe + 'static = SocketPipe> {
    pub(crate) transport: Rc<StreamTransport<T>>,
    /// The protocol, moved out for the length of each callback and back
    /// in after: a `Cell` costs no borrow flag, and a callback that
    /// reached the driver again (none does: closes are finished later by
    /// the transport) would find it empty rather than panic.
    protocol: Cell<Option<P>>,
    /// The connection's span: everything logged while its events run
    /// carries its id and peer. Kept only when a subscriber wants it, so a
    /// connection costs no span memory otherwise.
    span: Option<Box<tracing::Span>>,
}

impl<P: Protocol, T: Pipe + 'static> Driver<P, T> {
    pub(crate) fn new(transport: Rc<StreamTransport<T>>) -> Driver<P, T> {
        let span =
            tracing::debug_span!("connection", id = transport.id(), peer = %transport.peer());
        let span = (!span.is_disabled()).then(|| Box::new(span));
        Driver {
            transport,
            protocol: Cell::new(None),
            span,
        }
    }

    /// Installs the protocol and tells it the connection is made.
    pub(crate) fn attach(&self, protocol: P) {
        let _span = self.span.as_deref().map(tracing::Span::enter);
        self.transport.set_half_closeable(protocol.half_closeable());
        self.protocol.set(Some(protocol));
        tracing::debug!(
            conn = self.transport.id(),
            peer = %self.transport.peer(),
            "connection made"
        );
        self.call("make_connection", |protocol, transport| {
            protocol.make_connection(transport);
        });
    }

    pub(crate) fn has_protocol(&self) -> bool {
        let protocol = self.protocol.take();
        let has = protocol.is_some();
        self.protocol.set(protocol);
        has
    }

    /// Runs one protocol callback; a panic aborts the connection.
    fn call(&self, what: &str, f: impl FnOnce(&mut P, &TransportRef)) {
        let Some(mut protocol) = self.protocol.take() else {
            return;
        };
        // The protocol sees the transport as a `TransportRef`; made here
        // (a reference-count bump) rather than kept, to keep idle
        // connections small.
        let handle: TransportRef = self.transport.clone();
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(&mut protocol, &handle)));
        // Back in place even after a panic: `connection_lost` is still
        // owed to it.
        self.protocol.set(Some(protocol));
        if let Err(payload) = result {
            tracing::error!(
                conn = self.transport.id(),
                peer = %self.transport.peer(),
                panic = panic_message(&*payload),
                "protocol panicked in {what}; aborting its connection"
            );
            self.transport.abort_connection();
        }
    }

    /// Handles readiness; returns what the transport reported.
    pub(crate) fn ready(&self, readiness: Readiness) -> Progress {
        let _span = self.span.as_deref().map(tracing::Span::enter);
        let mut on_data = |data: &[u8]| {
            self.call("data_received", |protocol, transport| {
                protocol.data_received(transport, data);
            });
        };
        let mut progress = self.transport.process(readiness, &mut on_data);
        loop {
            let events = self.transport.take_half_close_events();
            if !events.read_closed && !events.write_closed {
                return progress;
            }
            if events.read_closed {
                self.call("read_connection_lost", |protocol, transport| {
                    protocol.read_connection_lost(transport);
                });
            }
            if events.write_closed {
                self.call("write_connection_lost", |protocol, transport| {
                    protocol.write_connection_lost(transport);
                });
            }
            // A half-close callback may have half-closed or closed in turn.
            if let Progress::Pending = progress {
                // A step may read (an edge-triggered pipe's pending read):
                // its data goes to the protocol as any other.
                progress = self.transport.process(Readiness::WOKEN, &mut on_data);
            }
        }
    }

    /// Delivers `connection_lost` and drops the protocol.
    pub(crate) fn lost(&self, reason: &CloseReason) {
        let _span = self.span.as_deref().map(tracing::Span::enter);
        tracing::debug!(%reason, "connection lost");
        self.call("connection_lost", |protocol, _| {
            protocol.connection_lost(reason)
        });
        drop(self.protocol.take());
    }
}

/// A connection whose transport's readiness drives its protocol: one
/// accepted by a listening port (over a socket, the default), standard
/// I/O, a serial port. Both registrations of a two-descriptor transport
/// (standard input and output) go to this one handler, so `shutdown` may
/// run twice: the second finds the transport closed.
pub(crate) struct StreamConnection<P, T: Pipe + 'static = SocketPipe> {
    pub(crate) driver: Driver<P, T>,
}

impl<P: Protocol, T: Pipe + 'static> Handler for StreamConnection<P, T> {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        if let Progress::Closed(reason) = self.driver.ready(readiness) {
            self.driver.lost(&reason);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(reason) = self.driver.transport.close_for_shutdown() {
            self.driver.lost(&reason);
        }
    }
}

/// Runs a factory callback; a panic is logged and swallowed, and `None`
/// returned.
pub(crate) fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => Some(result),
        Err(payload) => {
            tracing::error!(
                panic = panic_message(&*payload),
                "factory panicked in {what}"
            );
            None
        }
    }
}
