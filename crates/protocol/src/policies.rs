//! Policies that wrap protocols and factories (Twisted's
//! `twisted.protocols.policies`): idle timeouts.

use std::time::Duration;

use torsion_transport::{Address, CloseReason, DelayedCall, TransportRef};

use crate::factory::Factory;
use crate::protocol::Protocol;

/// An idle timer for a connection (Twisted's `TimeoutMixin`): when it
/// fires, the connection is closed with a
/// [`CloseReason::ProtocolError`] that says how long it was idle.
///
/// A protocol keeps one, starts it in `connection_made`, calls
/// [`IdleTimeout::reset`] on traffic and [`IdleTimeout::cancel`] in
/// `connection_lost`. Timers come from the transport's reactor, so on a
/// [`ManualClock`](crate::ManualClock) they are tested without sleeping.
#[doc(alias = "TimeoutMixin")]
#[derive(Debug, Default)]
pub struct IdleTimeout {
    timeout: Option<Duration>,
    call: Option<DelayedCall>,
}

impl IdleTimeout {
    /// No timeout yet.
    pub fn new() -> IdleTimeout {
        IdleTimeout::default()
    }

    /// Sets (or with `None`, removes) the timeout, counting from now
    /// (Twisted's `setTimeout`). Needs a transport with a reactor.
    #[doc(alias = "setTimeout")]
    pub fn set(&mut self, transport: &TransportRef, timeout: Option<Duration>) {
        self.cancel();
        self.timeout = timeout;
        let (Some(timeout), Some(reactor)) = (timeout, transport.reactor()) else {
            return;
        };
        let transport = transport.clone();
        self.call = Some(reactor.call_later(timeout, move |_| {
            tracing::debug!(?timeout, "idle timeout");
            transport.lose_connection_with_error(format!("no traffic for {timeout:?}"));
        }));
    }

    /// Restarts the countdown (Twisted's `resetTimeout`): call it on
    /// traffic.
    #[doc(alias = "resetTimeout")]
    pub fn reset(&mut self) {
        if let (Some(timeout), Some(call)) = (self.timeout, &self.call) {
            let _ = call.reset(timeout);
        }
    }

    /// Stops the timer.
    pub fn cancel(&mut self) {
        if let Some(call) = self.call.take() {
            let _ = call.cancel();
        }
    }
}

/// Wraps a protocol with an idle timeout that any received byte resets
/// (Twisted's `TimeoutProtocol`).
pub struct TimeoutProtocol<P> {
    inner: P,
    timeout: Duration,
    idle: IdleTimeout,
}

impl<P: Protocol> TimeoutProtocol<P> {
    /// `inner`, closed after `timeout` without incoming data.
    pub fn new(inner: P, timeout: Duration) -> TimeoutProtocol<P> {
        TimeoutProtocol {
            inner,
            timeout,
            idle: IdleTimeout::new(),
        }
    }

    /// The wrapped protocol.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Protocol> Protocol for TimeoutProtocol<P> {
    fn make_connection(&mut self, transport: &TransportRef) {
        self.idle.set(transport, Some(self.timeout));
        self.inner.make_connection(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.idle.reset();
        self.inner.data_received(transport, data);
    }

    fn half_closeable(&self) -> bool {
        self.inner.half_closeable()
    }

    fn read_connection_lost(&mut self, transport: &TransportRef) {
        self.inner.read_connection_lost(transport);
    }

    fn write_connection_lost(&mut self, transport: &TransportRef) {
        self.inner.write_connection_lost(transport);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.idle.cancel();
        self.inner.connection_lost(reason);
    }
}

/// Wraps a factory so that each of its protocols gets an idle timeout
/// (Twisted's `TimeoutFactory`).
pub struct TimeoutFactory<F> {
    inner: F,
    timeout: Duration,
}

impl<F: Factory> TimeoutFactory<F> {
    /// `inner`'s protocols, each closed after `timeout` without incoming
    /// data.
    pub fn new(inner: F, timeout: Duration) -> TimeoutFactory<F> {
        TimeoutFactory { inner, timeout }
    }
}

impl<F: Factory> Factory for TimeoutFactory<F> {
    type Protocol = TimeoutProtocol<F::Protocol>;

    fn build_protocol(&self, peer: &Address) -> Option<Self::Protocol> {
        let inner = self.inner.build_protocol(peer)?;
        Some(TimeoutProtocol::new(inner, self.timeout))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}
