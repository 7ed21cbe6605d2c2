//! The memory reactor: factories tested without sockets.

use std::cell::Cell;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::Echo;

use torsion_protocol::testing::MemoryReactor;
use torsion_protocol::{
    Address, ClientFactory, ConnectError, Factory, ReactorTcp, ReconnectingClientFactory,
    SharedFactory,
};

#[derive(Default)]
struct EchoFactory {
    started: Cell<u32>,
    stopped: Cell<u32>,
}

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
    fn start_factory(&self) {
        self.started.set(self.started.get() + 1);
    }
    fn stop_factory(&self) {
        self.stopped.set(self.stopped.get() + 1);
    }
}

impl ClientFactory for EchoFactory {}

#[test]
fn listening_is_recorded_and_connections_are_served_in_memory() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let factory = SharedFactory::new(EchoFactory::default());
    let port = memory.listen_tcp(8000, factory.clone()).unwrap();
    assert_eq!(factory.started.get(), 1);
    let listens = memory.listens();
    assert_eq!(listens.len(), 1);
    assert_eq!(listens[0].port, 8000);
    let mut connection = listens[0].accept(&Address::Unknown).unwrap();
    connection.receive(b"ping");
    assert_eq!(connection.transport.take_written(), b"ping");
    port.stop_listening();
    assert!(!listens[0].is_listening());
    assert_eq!(factory.stopped.get(), 1);
}

#[test]
fn a_reconnecting_factory_retries_on_the_manual_clock() {
    let _fds = DescriptorGuard::new();
    let memory = MemoryReactor::new().unwrap();
    let factory = ReconnectingClientFactory::new(EchoFactory::default())
        .initial_delay(Duration::from_secs(1))
        .factor(2.0)
        .jitter(0.0);
    memory.connect_tcp("example.org", 80, factory, Duration::from_secs(5));
    let attempt = &memory.connects()[0];
    assert_eq!(
        attempt.destination,
        torsion_protocol::Destination::Tcp {
            host: "example.org".into(),
            port: 80
        }
    );
    attempt.fail(ConnectError::TimedOut(Duration::from_secs(5)));
    memory.clock().advance(Duration::from_millis(1999));
    assert_eq!(attempt.reconnects.get(), 0);
    memory.clock().advance(Duration::from_millis(1));
    assert_eq!(attempt.reconnects.get(), 1);
    // Success, then a loss: the back-off starts over.
    let mut connection = attempt.succeed().unwrap();
    attempt.lose(&mut connection, torsion_protocol::CloseReason::ClosedByPeer);
    memory.clock().advance(Duration::from_secs(2));
    assert_eq!(attempt.reconnects.get(), 2);
}

#[test]
fn a_string_transport_takes_a_producers_writes_after_lose_connection() {
    use torsion_protocol::testing::{Closing, StringTransport};
    use torsion_protocol::{Producer, Transport};
    struct Quiet;
    impl Producer for Quiet {
        fn pause_producing(&self) {}
        fn resume_producing(&self) {}
        fn stop_producing(&self) {}
    }
    let transport = StringTransport::new();
    transport
        .register_producer(std::rc::Rc::new(Quiet), false)
        .unwrap();
    transport.lose_connection();
    transport.write(b"the producer's last words");
    transport.unregister_producer();
    transport.write(b"; nothing after it unregistered");
    assert_eq!(transport.take_written(), b"the producer's last words");
    assert_eq!(transport.closing(), Closing::Lost);
}
