//! ReconnectingClientFactory on the manual clock: the exact delays.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::{DescriptorGuard, MemoryReactor};

use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, ConnectorState, Factory,
    ListenOptions, Protocol, Reactor, ReactorTcp, ReconnectingClientFactory, SharedFactory,
    TransportRef,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Hangs up as soon as it is connected.
struct HangUp;
impl Protocol for HangUp {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.lose_connection();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

#[derive(Default)]
struct Counts {
    failed: Cell<u32>,
    lost: Cell<u32>,
}

/// Counts a factory's events.
struct Watch(Rc<Counts>);

impl Factory for Watch {
    type Protocol = HangUp;
    fn build_protocol(&self, _peer: &Address) -> Option<HangUp> {
        Some(HangUp)
    }
}

impl ClientFactory for Watch {
    fn client_connection_failed(&self, _connector: &Connector, _reason: &ConnectError) {
        self.0.failed.set(self.0.failed.get() + 1);
    }
    fn client_connection_lost(&self, _connector: &Connector, _reason: &CloseReason) {
        self.0.lost.set(self.0.lost.get() + 1);
    }
}

fn listener(reactor: &Reactor) -> u16 {
    struct Idle;
    impl Protocol for Idle {
        fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    }
    struct IdleFactory;
    impl Factory for IdleFactory {
        type Protocol = Idle;
        fn build_protocol(&self, _peer: &Address) -> Option<Idle> {
            Some(Idle)
        }
    }
    reactor
        .listen_tcp_with(
            0,
            IdleFactory,
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap()
        .get_host()
        .port()
        .unwrap()
}

/// The delay of the one pending call (the scheduled retry), if any.
fn scheduled_retry(reactor: &Reactor) -> Option<Duration> {
    let pending = reactor.pending_calls();
    assert!(pending.len() <= 1, "{pending:?}");
    pending.first().map(|call| call.time() - reactor.seconds())
}

#[test]
fn failed_attempts_back_off_exponentially_up_to_the_cap_and_the_retry_limit() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let port = listener(&reactor);
    let counts = Rc::new(Counts::default());
    let factory = SharedFactory::new(
        ReconnectingClientFactory::new(Watch(counts.clone()))
            .initial_delay(secs(1))
            .factor(2.0)
            .jitter(0.0)
            .max_delay(secs(10))
            .max_retries(Some(5)),
    );
    // The loop never turns: every attempt times out on the manual clock.
    reactor.connect_tcp("127.0.0.1", port, factory.clone(), secs(5));
    let mut delays = Vec::new();
    loop {
        clock.advance(secs(5));
        match scheduled_retry(&reactor) {
            Some(delay) => {
                delays.push(delay);
                clock.advance(delay);
            }
            None => break,
        }
    }
    assert_eq!(delays, [secs(2), secs(4), secs(8), secs(10), secs(10)]);
    assert_eq!(counts.failed.get(), 6);
    assert_eq!(factory.retries(), 6);
}

#[test]
fn a_successful_connection_resets_the_delay_and_stop_trying_ends_it() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    reactor.set_signal_handling(false);
    let port = listener(&reactor);
    let counts = Rc::new(Counts::default());
    let factory = SharedFactory::new(
        ReconnectingClientFactory::new(Watch(counts.clone()))
            .initial_delay(secs(1))
            .factor(3.0)
            .jitter(0.0),
    );
    let connector = reactor.connect_tcp("127.0.0.1", port, factory.clone(), secs(5));
    for round in 1..=3 {
        // Real I/O: turn the loop until the connection is made and lost.
        for _ in 0..1000 {
            if counts.lost.get() == round {
                break;
            }
            reactor.iterate(Duration::from_millis(10)).unwrap();
        }
        assert_eq!(counts.lost.get(), round);
        // Each loss follows a success, so the delay starts over each time.
        assert_eq!(scheduled_retry(&reactor), Some(secs(3)));
        assert_eq!(factory.retries(), 1);
        clock.advance(secs(3));
    }
    factory.stop_trying();
    for _ in 0..1000 {
        if counts.lost.get() + counts.failed.get() == 4 {
            break;
        }
        reactor.iterate(Duration::from_millis(10)).unwrap();
    }
    assert_eq!(scheduled_retry(&reactor), None);
    assert_eq!(
        counts.failed.get(),
        1,
        "the attempt in progress was cancelled"
    );
    let _ = connector;
}

#[test]
fn jitter_is_bounded_and_reproducible_with_a_seed() {
    let _fds = DescriptorGuard::new();
    let delays = |seed| {
        let (reactor, clock) = Reactor::with_manual_clock().unwrap();
        let port = listener(&reactor);
        let factory = ReconnectingClientFactory::new(Watch(Rc::default()))
            .initial_delay(secs(10))
            .factor(1.0)
            .jitter(0.5)
            .max_retries(Some(20))
            .jitter_seed(seed);
        reactor.connect_tcp("127.0.0.1", port, factory, secs(1));
        let mut delays = Vec::new();
        loop {
            clock.advance(secs(1));
            let Some(delay) = scheduled_retry(&reactor) else {
                break;
            };
            delays.push(delay);
            clock.advance(delay);
        }
        delays
    };
    let first = delays(42);
    assert_eq!(first.len(), 20);
    assert_eq!(first, delays(42));
    assert_ne!(first, delays(7));
    // With factor 1 each delay is 10 s moved by at most half, but the
    // jitter compounds on the previous delay: check the first one.
    assert!(first[0] >= secs(5) && first[0] <= secs(15), "{first:?}");
}

#[test]
fn stop_trying_during_the_first_attempt_abandons_it() {
    let _fds = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    reactor.set_signal_handling(false);
    let port = listener(&reactor);
    let counts = Rc::new(Counts::default());
    let factory = SharedFactory::new(ReconnectingClientFactory::new(Watch(counts.clone())));
    let connector = reactor.connect_tcp("127.0.0.1", port, factory.clone(), secs(5));
    assert_eq!(connector.state(), ConnectorState::Connecting);
    // No attempt has failed yet: the factory knows its connector from
    // `started_connecting`.
    factory.stop_trying();
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    assert_eq!(counts.failed.get(), 1, "the attempt was cancelled");
    assert_eq!(scheduled_retry(&reactor), None, "and not retried");
    for _ in 0..10 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    assert_eq!(counts.lost.get(), 0, "no connection was made");
}

#[test]
fn a_success_after_stop_trying_does_not_turn_trying_back_on() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let factory = SharedFactory::new(ReconnectingClientFactory::new(Watch(counts.clone())));
    memory.connect_tcp("example.org", 80, factory.clone(), secs(5));
    let attempt = &memory.connects()[0];
    let mut connection = attempt.succeed().unwrap();
    // Connected: nothing to abandon, but the loss is not retried.
    factory.stop_trying();
    attempt.lose(&mut connection, CloseReason::ClosedByPeer);
    assert_eq!(memory.reactor().pending_call_count(), 0);
    // The application connects once more by hand; that connection
    // succeeding must not resume the retries.
    attempt.connector().connect();
    let mut connection = attempt.succeed().unwrap();
    attempt.lose(&mut connection, CloseReason::ClosedByPeer);
    assert_eq!(counts.lost.get(), 2);
    assert_eq!(
        memory.reactor().pending_call_count(),
        0,
        "no retry scheduled"
    );
    memory.clock().advance(secs(7200));
    assert_eq!(attempt.reconnects.get(), 1, "only the connect by hand");
}

/// Refuses every connection it is offered (builds no protocol).
struct Refuse(Rc<Counts>);

impl Factory for Refuse {
    type Protocol = HangUp;
    fn build_protocol(&self, _peer: &Address) -> Option<HangUp> {
        None
    }
}

impl ClientFactory for Refuse {
    fn client_connection_lost(&self, _connector: &Connector, _reason: &CloseReason) {
        self.0.lost.set(self.0.lost.get() + 1);
    }
}

#[test]
fn a_refused_connection_is_no_success_and_keeps_backing_off() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    reactor.set_signal_handling(false);
    let port = listener(&reactor);
    let counts = Rc::new(Counts::default());
    let factory = SharedFactory::new(
        ReconnectingClientFactory::new(Refuse(counts.clone()))
            .initial_delay(secs(1))
            .factor(2.0)
            .jitter(0.0)
            .max_retries(Some(3)),
    );
    let _connector = reactor.connect_tcp("127.0.0.1", port, factory.clone(), secs(5));
    let mut delays = Vec::new();
    for round in 1..=6u32 {
        let mut turns = 0;
        while counts.lost.get() < round && turns < 1000 {
            reactor.iterate(Duration::from_millis(10)).unwrap();
            turns += 1;
        }
        if counts.lost.get() < round {
            break;
        }
        match scheduled_retry(&reactor) {
            Some(delay) => {
                delays.push(delay);
                clock.advance(delay);
            }
            None => break,
        }
    }
    // The factory built nothing: no connection succeeded, so the back-off
    // grows and the retry limit ends it (Twisted resets only when the
    // protocol calls resetDelay from connectionMade).
    assert_eq!(delays, [secs(2), secs(4), secs(8)]);
}
