//! Idle timeouts, on the manual clock and the in-memory transport.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::Echo;

use torsion_protocol::policies::{IdleTimeout, TimeoutProtocol};
use torsion_protocol::testing::{Closing, ProtocolHarness, StringTransport};
use torsion_protocol::{CloseReason, Protocol, Reactor, TransportRef};

#[test]
fn an_idle_connection_is_closed_and_traffic_postpones_it() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let mut harness = ProtocolHarness::with_transport(
        TimeoutProtocol::new(Echo, Duration::from_secs(30)),
        transport,
    );

    clock.advance(Duration::from_secs(20));
    harness.receive(b"still here");
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        harness.transport.closing(),
        Closing::Open,
        "traffic reset the timer"
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("no traffic for 30s".into())
    );
    assert_eq!(harness.transport.take_written(), b"still here");
}

#[test]
fn a_closed_connection_leaves_no_timer_behind() {
    let _fds = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let mut harness = ProtocolHarness::with_transport(
        TimeoutProtocol::new(Echo, Duration::from_secs(30)),
        transport,
    );
    assert_eq!(reactor.pending_call_count(), 1);
    harness.lose(&CloseReason::ClosedByPeer);
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn connection_limits_refuse_and_count() {
    let _fds = DescriptorGuard::new();
    use std::net::{Ipv4Addr, TcpStream};
    use torsion_protocol::policies::LimitedFactory;
    use torsion_protocol::{Address, Factory, ListenOptions, ReactorTcp};

    struct EchoFactory;
    impl Factory for EchoFactory {
        type Protocol = Echo;
        fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
            Some(Echo)
        }
    }
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let factory = torsion_protocol::SharedFactory::new(
        LimitedFactory::new(EchoFactory)
            .max_total(3)
            .max_per_peer(2),
    );
    let port = reactor
        .listen_tcp_with(
            0,
            factory.clone(),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    // Three connections from 127.0.0.1: the third is over the per-peer
    // limit.
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    while factory.open() + (factory.refused() as usize) < 3 {
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    assert_eq!((factory.open(), factory.refused()), (2, 1));
    // Closing one frees its place.
    drop(clients);
    while factory.open() > 0 {
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    let _again = TcpStream::connect(addr).unwrap();
    while factory.open() < 1 {
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    assert_eq!((factory.open(), factory.refused()), (1, 1));
}

#[test]
fn a_custom_timeout_action() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let handle: TransportRef = transport.clone();
    let mut idle = IdleTimeout::new();
    idle.on_timeout(|transport| {
        transport.write(b"bye\r\n");
        transport.lose_connection();
    });
    idle.set(&handle, Some(Duration::from_secs(5)));
    clock.advance(Duration::from_secs(5));
    assert_eq!(transport.take_written(), b"bye\r\n");
    assert_eq!(transport.closing(), Closing::Lost);
}

#[test]
fn the_timeout_action_is_the_one_installed_when_the_timer_fires() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let handle: TransportRef = transport.clone();
    let mut idle = IdleTimeout::new();
    idle.set(&handle, Some(Duration::from_secs(10)));
    // Installed after `set`, as Twisted's `timeoutConnection` may be
    // replaced at any time: the timer runs whatever is there when it fires.
    let fired = Rc::new(Cell::new(0));
    let count = fired.clone();
    idle.on_timeout(move |transport| {
        count.set(count.get() + 1);
        transport.write(b"bye\r\n");
    });
    clock.advance(Duration::from_secs(5));
    idle.reset();
    clock.advance(Duration::from_secs(10));
    assert_eq!(fired.get(), 1);
    assert_eq!(transport.take_written(), b"bye\r\n");
    assert_eq!(transport.closing(), Closing::Open, "not the default close");
}

/// Sets an idle timeout when connected and never cancels it.
struct Forgetful(IdleTimeout);
impl Protocol for Forgetful {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.0.set(transport, Some(Duration::from_secs(30)));
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

#[test]
fn an_idle_timer_does_not_keep_a_closed_connections_transport() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let weak = Rc::downgrade(&transport);
    let mut harness = ProtocolHarness::with_transport(Forgetful(IdleTimeout::new()), transport);
    harness.lose(&CloseReason::ClosedByPeer);
    // The connection is over: its protocol and transport go.
    drop(harness);
    assert!(
        weak.upgrade().is_none(),
        "the idle timer kept the transport of a closed connection"
    );
    assert_eq!(reactor.pending_call_count(), 0, "the timer went with it");
    clock.advance(Duration::from_secs(30));
}

#[test]
fn an_idle_timer_holds_its_transport_weakly() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let mut idle = IdleTimeout::new();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let weak = Rc::downgrade(&transport);
    let handle: TransportRef = transport;
    idle.set(&handle, Some(Duration::from_secs(30)));
    drop(handle);
    // The timer is still pending, but does not keep the transport.
    assert_eq!(reactor.pending_call_count(), 1);
    assert!(weak.upgrade().is_none());
    // Firing with the transport gone does nothing.
    clock.advance(Duration::from_secs(30));
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn a_panicking_timeout_action_costs_nothing_else() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let connections: Vec<(Rc<StringTransport>, IdleTimeout)> = (0..2)
        .map(|n| {
            let transport = StringTransport::new();
            transport.set_reactor(&reactor);
            let handle: TransportRef = transport.clone();
            let mut idle = IdleTimeout::new();
            if n == 0 {
                idle.on_timeout(|_| panic!("a broken timeout action"));
            }
            idle.set(&handle, Some(Duration::from_secs(5)));
            (transport, idle)
        })
        .collect();
    // Before the reactor's panic policy, the panic escaped `advance` (in a
    // server: `run`), and the second connection was never timed out.
    clock.advance(Duration::from_secs(5));
    assert_eq!(reactor.caught_panic_count(), 1);
    assert_eq!(connections[0].0.closing(), Closing::Open);
    assert_eq!(
        connections[1].0.closing(),
        Closing::LostWithError("no traffic for 5s".into())
    );
}
