//! A client factory that reconnects with exponential back-off (Twisted's
//! `ReconnectingClientFactory`).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use torsion_transport::reactor::DelayedCall;
use torsion_transport::{Address, CloseReason, ConnectError};

use crate::connector::{Connector, ConnectorState, WeakConnector};
use crate::factory::{ClientFactory, Factory};

/// Wraps a client factory so that a failed or lost connection is retried
/// after a growing delay (Twisted's `ReconnectingClientFactory`).
///
/// After each failure the delay is multiplied by `factor` (Twisted's
/// default: e), capped at `max_delay`, then spread by `jitter` (a random
/// fraction of itself, up or down), and the connector connects again. So
/// with no jitter the retries wait `initial × factor`, `initial ×
/// factor²`, ... up to `max_delay`. A connection that succeeds (its
/// protocol is built) resets the delay and the retry count, so the next
/// loss starts over. `max_retries` bounds consecutive retries;
/// [`ReconnectingClientFactory::stop_trying`] ends it all: it abandons an
/// attempt in progress, cancels a scheduled retry, and no later success
/// turns retrying back on. The wrapped factory builds the protocols and
/// hears every event first.
///
/// Keep a [`SharedFactory`](crate::SharedFactory) clone of it to call
/// `stop_trying` later:
///
/// ```no_run
/// # use std::time::Duration;
/// # use torsion_protocol::{ReactorTcp, ReconnectingClientFactory, Reactor, SharedFactory, DEFAULT_CONNECT_TIMEOUT};
/// # fn demo(reactor: &Reactor, my_factory: impl torsion_protocol::ClientFactory) {
/// let factory = SharedFactory::new(ReconnectingClientFactory::new(my_factory).max_delay(Duration::from_secs(60)));
/// reactor.connect_tcp("example.org", 80, factory.clone(), DEFAULT_CONNECT_TIMEOUT);
/// // later: factory.stop_trying();
/// # }
/// ```
pub struct ReconnectingClientFactory<F> {
    inner: F,
    initial_delay: Duration,
    factor: f64,
    jitter: f64,
    max_delay: Duration,
    max_retries: Option<u32>,
    delay: Cell<Duration>,
    retries: Cell<u32>,
    continue_trying: Cell<bool>,
    pending: RefCell<Option<DelayedCall>>,
    /// The connector of the current attempt, known from
    /// `started_connecting`; weak, since the connector owns this factory.
    connector: RefCell<Option<WeakConnector>>,
    rng: Cell<u64>,
}

impl<F: ClientFactory> ReconnectingClientFactory<F> {
    /// Twisted's defaults: initial delay 1 s, factor e, jitter 0.1196, max
    /// delay 1 hour, no retry limit.
    pub fn new(inner: F) -> ReconnectingClientFactory<F> {
        let initial_delay = Duration::from_secs(1);
        ReconnectingClientFactory {
            inner,
            initial_delay,
            factor: std::f64::consts::E,
            jitter: 0.119_626_564_72,
            max_delay: Duration::from_secs(3600),
            max_retries: None,
            delay: Cell::new(initial_delay),
            retries: Cell::new(0),
            continue_trying: Cell::new(true),
            pending: RefCell::new(None),
            connector: RefCell::new(None),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()) << 1),
        }
    }

    /// Sets the delay the back-off starts from.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self.delay.set(delay);
        self
    }

    /// Sets the growth factor of the delay (at least 1).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Sets the jitter: each delay moves by up to this fraction of itself,
    /// up or down (0 for exact delays).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Caps the delay.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Gives up after this many consecutive retries (`None`: never).
    #[must_use]
    pub fn max_retries(mut self, retries: Option<u32>) -> Self {
        self.max_retries = retries;
        self
    }

    /// Seeds the jitter's random numbers, for reproducible delays.
    #[must_use]
    pub fn jitter_seed(self, seed: u64) -> Self {
        self.rng.set(seed | 1);
        self
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// Consecutive retries so far.
    pub fn retries(&self) -> u32 {
        self.retries.get()
    }

    /// The delay the last retry waited (or the initial delay).
    pub fn current_delay(&self) -> Duration {
        self.delay.get()
    }

    /// Forgets past failures and resumes retrying after
    /// [`ReconnectingClientFactory::stop_trying`] (Twisted's
    /// `resetDelay`). A successful connection forgets past failures by
    /// itself, but does not resume retrying.
    #[doc(alias = "resetDelay")]
    pub fn reset_delay(&self) {
        self.forget_failures();
        self.continue_trying.set(true);
    }

    /// Starts the back-off afresh: initial delay, no retries counted.
    fn forget_failures(&self) {
        self.delay.set(self.initial_delay);
        self.retries.set(0);
    }

    /// Stops retrying: cancels a scheduled retry and abandons an attempt in
    /// progress (Twisted's `stopTrying`).
    #[doc(alias = "stopTrying")]
    pub fn stop_trying(&self) {
        self.continue_trying.set(false);
        let pending = self.pending.borrow_mut().take();
        if let Some(call) = pending {
            let _ = call.cancel();
        }
        let connector = self.connector.borrow_mut().take();
        if let Some(connector) = connector.and_then(|weak| weak.upgrade()) {
            if connector.state() == ConnectorState::Connecting {
                connector.stop_connecting();
            }
        }
    }

    /// Schedules the next attempt through `connector`, unless told to stop
    /// or out of retries (Twisted's `retry`).
    pub fn retry(&self, connector: &Connector) {
        if !self.continue_trying.get() {
            return;
        }
        let retries = self.retries.get() + 1;
        self.retries.set(retries);
        if self.max_retries.is_some_and(|max| retries > max) {
            tracing::info!(retries = retries - 1, "giving up reconnecting");
            self.connector.borrow_mut().take();
            return;
        }
        let mut delay = self.delay.get().mul_f64(self.factor).min(self.max_delay);
        if self.jitter > 0.0 {
            let spread = self.next_random() * 2.0 - 1.0;
            delay = delay.mul_f64((1.0 + self.jitter * spread).max(0.0));
        }
        self.delay.set(delay);
        let Some(reactor) = connector.reactor() else {
            return;
        };
        tracing::info!(?delay, retry = retries, "reconnecting later");
        *self.connector.borrow_mut() = Some(connector.downgrade());
        let again = connector.clone();
        let call = reactor.call_later(delay, move |_| again.connect());
        *self.pending.borrow_mut() = Some(call);
    }

    /// A number in [0, 1) (xorshift; jitter needs no better).
    fn next_random(&self) -> f64 {
        let mut x = self.rng.get() | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<F: ClientFactory> Factory for ReconnectingClientFactory<F> {
    type Protocol = F::Protocol;

    fn build_protocol(&self, peer: &Address) -> Option<F::Protocol> {
        // Connected, and a protocol took the connection: the next loss
        // starts the back-off afresh. A refusal is no success: the back-off
        // and the retry limit go on. Retrying stays off if `stop_trying`
        // turned it off.
        let protocol = self.inner.build_protocol(peer);
        if protocol.is_some() {
            self.forget_failures();
        }
        protocol
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

impl<F: ClientFactory> ClientFactory for ReconnectingClientFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        // Known from the start, so that `stop_trying` can abandon even the
        // first attempt.
        *self.connector.borrow_mut() = Some(connector.downgrade());
        self.inner.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.inner.client_connection_failed(connector, reason);
        self.retry(connector);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        self.inner.client_connection_lost(connector, reason);
        self.retry(connector);
    }
}
