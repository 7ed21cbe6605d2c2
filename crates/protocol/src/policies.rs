//! Policies that wrap protocols and factories (Twisted's
//! `twisted.protocols.policies`): idle timeouts and connection limits.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use torsion_transport::reactor::DelayedCall;
use torsion_transport::{Address, CloseReason, TransportRef};

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
///
/// The timer holds the transport weakly, and dropping the `IdleTimeout`
/// (with its protocol, once the connection is over) cancels it: a closed
/// connection's transport is freed at once, not when the timeout would
/// have run out.
#[doc(alias = "TimeoutMixin")]
#[derive(Default)]
pub struct IdleTimeout {
    timeout: Option<Duration>,
    call: Option<DelayedCall>,
    /// Shared with the pending timer, which reads it when it fires.
    action: Rc<RefCell<Option<TimeoutAction>>>,
}

/// What an [`IdleTimeout`] does when it fires.
type TimeoutAction = Rc<dyn Fn(&TransportRef)>;

impl std::fmt::Debug for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("timeout", &self.timeout)
            .field(
                "pending",
                &self.call.as_ref().is_some_and(DelayedCall::active),
            )
            .finish()
    }
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
        let transport = Rc::downgrade(transport);
        let action = self.action.clone();
        self.call = Some(reactor.call_later(timeout, move |_| {
            // A transport that is gone has nothing left to time out.
            let Some(transport) = transport.upgrade() else {
                return;
            };
            tracing::debug!(?timeout, "idle timeout");
            // Whatever action is installed now, not when the timer was set.
            let action = action.borrow().clone();
            match action {
                Some(action) => action(&transport),
                None => transport.lose_connection_with_error(format!("no traffic for {timeout:?}")),
            }
        }));
    }

    /// Replaces what happens when the timer fires (Twisted's
    /// `timeoutConnection`): for example, send a goodbye before closing.
    /// It takes effect at once, for a timer already set too.
    #[doc(alias = "timeoutConnection")]
    pub fn on_timeout(&mut self, action: impl Fn(&TransportRef) + 'static) {
        *self.action.borrow_mut() = Some(Rc::new(action));
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

impl Drop for IdleTimeout {
    /// The timer goes with its owner: nothing is left to time out.
    fn drop(&mut self) {
        self.cancel();
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

    fn handshake_completed(&mut self, transport: &TransportRef) {
        self.inner.handshake_completed(transport);
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

/// Wraps a factory with connection limits: in total, and per peer (per IP
/// address, or per socket path). A connection over a limit is refused —
/// closed at once, its protocol never built — and counted (Twisted's
/// `LimitTotalConnectionsFactory` and `LimitConnectionsByPeer`).
pub struct LimitedFactory<F> {
    inner: F,
    max_total: Option<usize>,
    max_per_peer: Option<usize>,
    counts: Rc<Counts>,
}

#[derive(Default)]
struct Counts {
    open: Cell<usize>,
    per_peer: RefCell<HashMap<PeerKey, usize>>,
    refused: Cell<u64>,
}

/// What "the same peer" means: the IP address, or the whole address.
#[derive(Clone, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Other(Address),
}

impl PeerKey {
    fn of(peer: &Address) -> PeerKey {
        match peer.socket_addr() {
            Some(addr) => PeerKey::Ip(addr.ip()),
            None => PeerKey::Other(peer.clone()),
        }
    }
}

impl<F: Factory> LimitedFactory<F> {
    /// `inner` without limits yet.
    pub fn new(inner: F) -> LimitedFactory<F> {
        LimitedFactory {
            inner,
            max_total: None,
            max_per_peer: None,
            counts: Rc::default(),
        }
    }

    /// At most `max` connections open at once.
    #[must_use]
    pub fn max_total(mut self, max: usize) -> Self {
        self.max_total = Some(max);
        self
    }

    /// At most `max` connections open at once from one peer address.
    #[must_use]
    pub fn max_per_peer(mut self, max: usize) -> Self {
        self.max_per_peer = Some(max);
        self
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.open.get()
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.counts.refused.get()
    }
}

impl<F: Factory> Factory for LimitedFactory<F> {
    type Protocol = Limited<F::Protocol>;

    fn build_protocol(&self, peer: &Address) -> Option<Limited<F::Protocol>> {
        let counts = &self.counts;
        let key = PeerKey::of(peer);
        let from_peer = counts.per_peer.borrow().get(&key).copied().unwrap_or(0);
        let over_total = self.max_total.is_some_and(|max| counts.open.get() >= max);
        let over_peer = self.max_per_peer.is_some_and(|max| from_peer >= max);
        if over_total || over_peer {
            counts.refused.set(counts.refused.get() + 1);
            tracing::info!(%peer, over_total, over_peer, "connection refused by limit");
            return None;
        }
        let inner = self.inner.build_protocol(peer)?;
        counts.open.set(counts.open.get() + 1);
        *counts.per_peer.borrow_mut().entry(key.clone()).or_insert(0) += 1;
        Some(Limited {
            inner,
            counts: self.counts.clone(),
            key,
        })
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// A protocol counted by a [`LimitedFactory`]; it gives its place back
/// when its connection ends.
pub struct Limited<P> {
    inner: P,
    counts: Rc<Counts>,
    key: PeerKey,
}

impl<P> Limited<P> {
    /// The wrapped protocol.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Protocol> Protocol for Limited<P> {
    fn make_connection(&mut self, transport: &TransportRef) {
        self.inner.make_connection(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
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

    fn handshake_completed(&mut self, transport: &TransportRef) {
        self.inner.handshake_completed(transport);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.inner.connection_lost(reason);
    }
}

impl<P> Drop for Limited<P> {
    /// The place is given back when the protocol goes, which follows
    /// `connection_lost` (or a failed start).
    fn drop(&mut self) {
        self.counts.open.set(self.counts.open.get() - 1);
        let mut per_peer = self.counts.per_peer.borrow_mut();
        if let Some(count) = per_peer.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                per_peer.remove(&self.key);
            }
        }
    }
}
