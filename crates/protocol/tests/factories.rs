//! Factory start/stop accounting (Twisted's `doStart`/`doStop`): a factory
//! hears `start_factory` when its first port or connector starts using it
//! and `stop_factory` when its last stops, however it is shared or
//! wrapped.

use std::cell::Cell;
use std::net::{Ipv4Addr, TcpListener};
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::Echo;
use torsion_protocol::testing::Watchdog;

use torsion_protocol::policies::{LimitedFactory, TimeoutFactory};
use torsion_protocol::testing::{DescriptorGuard, MemoryReactor};
use torsion_protocol::{
    Address, ClientFactory, ConnectError, Connector, Factory, ListenOptions, ListeningPort,
    Reactor, ReactorTcp, ReconnectingClientFactory, SharedFactory,
};

/// How often a factory was started and stopped, and attempts that ended.
#[derive(Default)]
struct Counts {
    started: Cell<u32>,
    stopped: Cell<u32>,
    failed: Cell<u32>,
}

impl Counts {
    fn get(&self) -> (u32, u32) {
        (self.started.get(), self.stopped.get())
    }
}

/// A factory that reports its start/stop calls to a shared `Counts`, so
/// it can be handed over by value.
struct Counting(Rc<Counts>);

impl Factory for Counting {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
    fn start_factory(&self) {
        self.0.started.set(self.0.started.get() + 1);
    }
    fn stop_factory(&self) {
        self.0.stopped.set(self.0.stopped.get() + 1);
    }
}

impl ClientFactory for Counting {
    fn client_connection_failed(&self, _connector: &Connector, _reason: &ConnectError) {
        self.0.failed.set(self.0.failed.get() + 1);
    }
}

fn listen_local<F: Factory>(reactor: &Reactor, factory: F) -> ListeningPort {
    reactor
        .listen_tcp_with(
            0,
            factory,
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap()
}

#[test]
fn the_memory_reactor_stops_a_factory_it_started() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    // Handed over by value: the memory reactor owns the only instance.
    let port = memory.listen_tcp(8000, Counting(counts.clone())).unwrap();
    assert_eq!(counts.get(), (1, 0));
    port.stop_listening();
    assert_eq!(counts.get(), (1, 1));
    port.stop_listening();
    assert_eq!(counts.get(), (1, 1));
}

#[test]
fn a_factory_handed_over_by_value_is_started_and_stopped_once_per_port() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    // Two separate instances: each is its own factory.
    let a = listen_local(&reactor, Counting(counts.clone()));
    let b = listen_local(&reactor, Counting(counts.clone()));
    assert_eq!(counts.get(), (2, 0));
    a.stop_listening();
    b.stop_listening();
    assert_eq!(counts.get(), (2, 2));
}

#[test]
fn two_ports_sharing_one_factory_start_it_once_and_stop_it_after_the_last() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let shared = SharedFactory::new(Counting(counts.clone()));
    let a = listen_local(&reactor, shared.clone());
    let b = listen_local(&reactor, shared.clone());
    assert_eq!(counts.get(), (1, 0));
    assert_eq!(shared.users(), 2);
    a.stop_listening();
    a.stop_listening();
    assert_eq!(counts.get(), (1, 0), "one port still uses it");
    b.stop_listening();
    assert_eq!(counts.get(), (1, 1));
    assert_eq!(shared.users(), 0);
    // Used again, it starts again.
    let c = listen_local(&reactor, shared.clone());
    assert_eq!(counts.get(), (2, 1));
    drop(c);
    assert_eq!(counts.get(), (2, 1), "a port outlives its handle");
    drop(reactor);
    assert_eq!(counts.get(), (2, 2), "the reactor's end stops its ports");
}

#[test]
fn two_wrappers_around_one_shared_factory_start_it_once() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let shared = SharedFactory::new(Counting(counts.clone()));
    let a = listen_local(
        &reactor,
        TimeoutFactory::new(shared.clone(), Duration::from_secs(30)),
    );
    let b = listen_local(&reactor, LimitedFactory::new(shared.clone()).max_total(10));
    assert_eq!(counts.get(), (1, 0));
    b.stop_listening();
    assert_eq!(counts.get(), (1, 0));
    a.stop_listening();
    assert_eq!(counts.get(), (1, 1));
}

#[test]
fn a_shared_factory_on_a_port_and_in_a_memory_reactor_counts_both() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let shared = SharedFactory::new(Counting(counts.clone()));
    let real = listen_local(&reactor, shared.clone());
    let recorded = memory.listen_tcp(8000, shared.clone()).unwrap();
    assert_eq!(counts.get(), (1, 0));
    real.stop_listening();
    assert_eq!(counts.get(), (1, 0));
    recorded.stop_listening();
    assert_eq!(counts.get(), (1, 1));
}

#[test]
fn connectors_sharing_a_factory_start_it_once_and_stop_it_after_the_last_attempt() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    // A port nobody listens on: both attempts are refused.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let counts = Rc::new(Counts::default());
    let shared = SharedFactory::new(Counting(counts.clone()));
    let timeout = Duration::from_secs(5);
    reactor.connect_tcp("127.0.0.1", closed, shared.clone(), timeout);
    reactor.connect_tcp("127.0.0.1", closed, shared.clone(), timeout);
    assert_eq!(counts.get(), (1, 0));
    while counts.failed.get() < 2 {
        reactor.iterate(Duration::from_secs(1)).unwrap();
    }
    assert_eq!(counts.get(), (1, 1));
    assert_eq!(shared.users(), 0);
}

#[test]
fn a_reconnecting_factory_is_stopped_between_attempts_and_started_for_each() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let factory = ReconnectingClientFactory::new(Counting(counts.clone()))
        .initial_delay(Duration::from_secs(1))
        .factor(2.0)
        .jitter(0.0);
    memory.connect_tcp("example.org", 80, factory, Duration::from_secs(5));
    assert_eq!(counts.get(), (1, 0));
    let attempt = &memory.connects()[0];
    attempt.fail(ConnectError::TimedOut(Duration::from_secs(5)));
    // As in Twisted: no connector uses it while it waits to retry.
    assert_eq!(counts.get(), (1, 1));
    memory.clock().advance(Duration::from_secs(2));
    assert_eq!(attempt.reconnects.get(), 1);
    assert_eq!(counts.get(), (2, 1));
}

#[test]
fn memory_connector_disconnect_while_connecting_behaves_as_a_real_one() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let connector = memory.connect_tcp(
        "example.org",
        80,
        Counting(counts.clone()),
        Duration::from_secs(5),
    );
    assert_eq!(counts.get(), (1, 0));
    // A real connector: disconnect while connecting = stop_connecting:
    // client_connection_failed(Cancelled), then stop_factory.
    connector.disconnect();
    assert_eq!(counts.failed.get(), 1, "the factory heard the cancel");
    assert_eq!(counts.get(), (1, 1), "the factory was stopped");
}

#[test]
fn real_connector_disconnect_while_connecting() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let counts = Rc::new(Counts::default());
    let connector = reactor.connect_tcp(
        "127.0.0.1",
        9,
        Counting(counts.clone()),
        Duration::from_secs(5),
    );
    assert_eq!(counts.get(), (1, 0));
    connector.disconnect();
    assert_eq!(counts.failed.get(), 1);
    assert_eq!(counts.get(), (1, 1));
}

struct RefuseAll(Rc<Counts>);
impl Factory for RefuseAll {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        None
    }
    fn start_factory(&self) {
        self.0.started.set(self.0.started.get() + 1);
    }
    fn stop_factory(&self) {
        self.0.stopped.set(self.0.stopped.get() + 1);
    }
}
impl ClientFactory for RefuseAll {}

#[test]
fn memory_connector_refused_build_ends_the_connection_as_a_real_one() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let counts = Rc::new(Counts::default());
    let connector = memory.connect_tcp(
        "example.org",
        80,
        RefuseAll(counts.clone()),
        Duration::from_secs(5),
    );
    assert!(memory.connects()[0].succeed().is_none());
    // A real connector closes a refused connection: client_connection_lost,
    // then stop_factory, and the connector is Disconnected.
    assert_eq!(
        connector.state(),
        torsion_protocol::ConnectorState::Disconnected
    );
    assert_eq!(counts.get(), (1, 1));
}
