//! A panic in any protocol or factory callback costs one connection; the
//! reactor, its timers and every other connection carry on.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::Watchdog;

use torsion_protocol::LoopingCall;
use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, ListenOptions, Protocol,
    Reactor, ReactorTcp, TransportRef,
};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Where {
    Nowhere,
    BuildProtocol,
    ConnectionMade,
    DataReceived,
    ConnectionLost,
}

struct Touchy {
    panic_in: Where,
}

impl Protocol for Touchy {
    fn connection_made(&mut self, _transport: &TransportRef) {
        assert!(
            self.panic_in != Where::ConnectionMade,
            "panic in connection_made"
        );
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        assert!(
            self.panic_in != Where::DataReceived,
            "panic in data_received"
        );
        transport.write(data);
        if self.panic_in == Where::ConnectionLost {
            transport.lose_connection();
        }
    }
    fn connection_lost(&mut self, _reason: &CloseReason) {
        assert!(
            self.panic_in != Where::ConnectionLost,
            "panic in connection_lost"
        );
    }
}

/// Builds connections that panic where its script says, in order.
struct TouchyFactory {
    script: RefCell<VecDeque<Where>>,
}

impl Factory for TouchyFactory {
    type Protocol = Touchy;
    fn build_protocol(&self, _peer: &Address) -> Option<Touchy> {
        let panic_in = self
            .script
            .borrow_mut()
            .pop_front()
            .unwrap_or(Where::Nowhere);
        assert!(panic_in != Where::BuildProtocol, "panic in build_protocol");
        Some(Touchy { panic_in })
    }
}

const PLACES: [Where; 4] = [
    Where::BuildProtocol,
    Where::ConnectionMade,
    Where::DataReceived,
    Where::ConnectionLost,
];

#[test]
fn a_panic_in_any_callback_costs_one_connection() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    // Each victim is followed by a healthy connection.
    let script = PLACES
        .iter()
        .flat_map(|&place| [place, Where::Nowhere])
        .collect();
    let port = reactor
        .listen_tcp_with(
            0,
            TouchyFactory {
                script: RefCell::new(script),
            },
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    // A timer keeps ticking through it all.
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = LoopingCall::new(&reactor, move |_| t.set(t.get() + 1));
    ticker.start(Duration::from_millis(1), true).unwrap();

    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let mut healthy = Vec::new();
        for _ in PLACES {
            let mut victim = TcpStream::connect(addr).unwrap();
            let _ = victim.write_all(b"x");
            let mut sink = Vec::new();
            let _ = victim.read_to_end(&mut sink);
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(b"ok").unwrap();
            let mut answer = [0u8; 2];
            stream.read_exact(&mut answer).unwrap();
            answers.push(answer);
            healthy.push(stream);
        }
        handle.stop().unwrap();
        (answers, healthy)
    });
    reactor.run().unwrap();
    let (answers, _healthy) = client.join().unwrap();
    assert_eq!(answers, [*b"ok"; 4], "every healthy connection was served");
    assert!(ticks.get() > 0, "timers kept running");
}
#[test]
fn a_panic_in_a_client_factory_callback_is_contained() {
    let _fds = DescriptorGuard::new();
    /// What the factory heard.
    #[derive(Default)]
    struct Heard {
        failed: Cell<u32>,
        stopped: Cell<u32>,
    }
    struct Grumpy(Rc<Heard>);
    impl Factory for Grumpy {
        type Protocol = Touchy;
        fn build_protocol(&self, _peer: &Address) -> Option<Touchy> {
            None
        }
        fn stop_factory(&self) {
            self.0.stopped.set(self.0.stopped.get() + 1);
        }
    }
    impl ClientFactory for Grumpy {
        fn client_connection_failed(&self, _connector: &Connector, _reason: &ConnectError) {
            self.0.failed.set(self.0.failed.get() + 1);
            panic!("panic in client_connection_failed");
        }
    }
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let heard = Rc::new(Heard::default());
    let connector = reactor.connect_tcp(
        "127.0.0.1",
        closed,
        Grumpy(heard.clone()),
        Duration::from_secs(5),
    );
    // Once the attempt is over (its failure handler panicked), a later
    // turn stops the loop: the reactor carried on after the panic.
    let watched = connector.clone();
    let watch = LoopingCall::new(&reactor, move |call| {
        if watched.state() == torsion_protocol::ConnectorState::Disconnected {
            call.stop().unwrap();
            call.reactor().unwrap().stop().unwrap();
        }
    });
    watch.start(Duration::from_millis(1), false).unwrap();
    reactor.run().unwrap();
    assert_eq!(heard.failed.get(), 1, "the callback ran, and panicked");
    assert_eq!(
        heard.stopped.get(),
        1,
        "the connector finished the attempt after the panic"
    );
    // The connector still works: another attempt fails the same way.
    connector.connect();
    while heard.failed.get() < 2 {
        reactor.iterate(Duration::from_secs(1)).unwrap();
    }
    assert_eq!(heard.stopped.get(), 2);
}
