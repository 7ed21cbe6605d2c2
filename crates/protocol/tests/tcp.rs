//! Loopback integration tests: real sockets on 127.0.0.1, port 0.
//!
//! Peers that need to block (a client reading 16 MiB) run on a plain
//! thread with blocking std sockets; the reactor runs on the test thread.
//! Every test arms a guard timer that fails it instead of hanging; no test
//! sleeps to wait for an event.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::Echo;
use torsion_protocol::testing::{Watchdog, XorShift};

use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, ConnectorState, Factory,
    ListenOptions, Protocol, Reactor, ReactorTcp, SharedFactory, TransportRef,
};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ----- echo ----------------------------------------------------------------

#[derive(Default)]
struct EchoFactory {
    built: Cell<usize>,
    started: Cell<usize>,
    stopped: Cell<usize>,
}

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, peer: &Address) -> Option<Echo> {
        assert_eq!(peer.socket_addr().unwrap().ip(), LOCALHOST);
        self.built.set(self.built.get() + 1);
        Some(Echo)
    }
    fn start_factory(&self) {
        self.started.set(self.started.get() + 1);
    }
    fn stop_factory(&self) {
        self.stopped.set(self.stopped.get() + 1);
    }
}

fn listen_local<F: Factory>(
    reactor: &Reactor,
    factory: F,
) -> (torsion_protocol::ListeningPort, SocketAddr) {
    let port = reactor
        .listen_tcp_with(0, factory, ListenOptions::interface(LOCALHOST))
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    assert_ne!(addr.port(), 0, "the real port is reported");
    (port, addr)
}

/// Client side of a round trip: sends a message, records the answer.
struct Greeter {
    log: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.log.borrow_mut().push("made".into());
        transport.write(b"Hello, world!");
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(format!("got {}", String::from_utf8_lossy(data)));
        transport.lose_connection();
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log
            .borrow_mut()
            .push(format!("lost clean={}", reason.is_clean()));
    }
}

struct GreeterFactory {
    log: Rc<RefCell<Vec<String>>>,
}

impl Factory for GreeterFactory {
    type Protocol = Greeter;
    fn build_protocol(&self, _peer: &Address) -> Option<Greeter> {
        Some(Greeter {
            log: self.log.clone(),
        })
    }
}

impl ClientFactory for GreeterFactory {
    fn started_connecting(&self, connector: &Connector) {
        assert_eq!(connector.state(), ConnectorState::Connecting);
        self.log.borrow_mut().push("connecting".into());
    }
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.log.borrow_mut().push(format!("failed: {reason:?}"));
        connector.reactor().unwrap().stop().unwrap();
    }
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        assert_eq!(connector.state(), ConnectorState::Disconnected);
        self.log
            .borrow_mut()
            .push(format!("client lost clean={}", reason.is_clean()));
        connector.reactor().unwrap().stop().unwrap();
    }
}

#[test]
fn echo_round_trip_between_our_client_and_server() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let factory = SharedFactory::new(EchoFactory::default());
    let (port, addr) = listen_local(&reactor, factory.clone());
    assert_eq!(factory.started.get(), 1);
    let log = Rc::new(RefCell::new(Vec::new()));
    let connector = reactor.connect_tcp(
        "127.0.0.1",
        addr.port(),
        GreeterFactory { log: log.clone() },
        Duration::from_secs(5),
    );
    assert_eq!(
        connector.get_destination(),
        torsion_protocol::Destination::Tcp {
            host: "127.0.0.1".to_owned(),
            port: addr.port()
        }
    );
    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "connecting",
            "made",
            "got Hello, world!",
            "lost clean=true",
            "client lost clean=true"
        ]
    );
    assert_eq!(factory.built.get(), 1);
    port.stop_listening();
    assert!(!port.is_listening());
    assert_eq!(factory.stopped.get(), 1);
}

#[test]
fn connecting_by_name_resolves_off_the_loop() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let (_port, addr) = listen_local(&reactor, EchoFactory::default());
    let log = Rc::new(RefCell::new(Vec::new()));
    reactor.connect_tcp(
        "localhost",
        addr.port(),
        GreeterFactory { log: log.clone() },
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    assert!(
        log.borrow().contains(&"got Hello, world!".to_owned()),
        "{log:?}"
    );
}

#[test]
fn sixteen_mib_in_random_chunks_comes_back_identical() {
    let _fds = DescriptorGuard::new();
    const TOTAL: usize = 16 << 20;
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let (_port, addr) = listen_local(&reactor, EchoFactory::default());
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut rng = XorShift::new(0x5eed_1234_abcd_0001);
        let data = rng.bytes(TOTAL);
        let stream = TcpStream::connect(addr).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            let mut rng = XorShift::new(0x0ddba11);
            let mut at = 0;
            while at < sent.len() {
                let n = (1 + rng.next_u64() as usize % 100_000).min(sent.len() - at);
                writer.write_all(&sent[at..at + n]).unwrap();
                at += n;
            }
        });
        let mut received = vec![0u8; TOTAL];
        (&stream).read_exact(&mut received).unwrap();
        writer.join().unwrap();
        handle.stop().unwrap();
        received == data
    });
    reactor.run().unwrap();
    assert!(
        client.join().unwrap(),
        "echoed bytes differ from those sent"
    );
}

// ----- closing -------------------------------------------------------------

/// Writes `size` bytes at once on connect, then closes: gracefully or by
/// abort.
struct Blaster {
    size: usize,
    abort: bool,
    reasons: Rc<RefCell<Vec<String>>>,
    queued: Rc<Cell<usize>>,
}

impl Protocol for Blaster {
    fn connection_made(&mut self, transport: &TransportRef) {
        let data = XorShift::new(7).bytes(self.size);
        transport.write(&data);
        self.queued.set(transport.get_write_buffer_size());
        if self.abort {
            transport.abort_connection();
        } else {
            transport.lose_connection();
        }
        assert!(transport.is_closing());
        // Writes after closing are ignored.
        transport.write(b"ignored");
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.reasons.borrow_mut().push(format!("{reason:?}"));
    }
}

struct BlasterFactory {
    size: usize,
    abort: bool,
    reasons: Rc<RefCell<Vec<String>>>,
    queued: Rc<Cell<usize>>,
}

impl Factory for BlasterFactory {
    type Protocol = Blaster;
    fn build_protocol(&self, _peer: &Address) -> Option<Blaster> {
        Some(Blaster {
            size: self.size,
            abort: self.abort,
            reasons: self.reasons.clone(),
            queued: self.queued.clone(),
        })
    }
}

/// More than loopback socket buffers hold, so some of it must queue.
const BLAST: usize = 32 << 20;

fn blast(abort: bool) -> (Result<Vec<u8>, std::io::Error>, Vec<String>, usize) {
    const SIZE: usize = BLAST;
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reasons = Rc::new(RefCell::new(Vec::new()));
    let queued = Rc::new(Cell::new(0));
    let (_port, addr) = listen_local(
        &reactor,
        BlasterFactory {
            size: SIZE,
            abort,
            reasons: reasons.clone(),
            queued: queued.clone(),
        },
    );
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // Do not read until the server has queued and closed.
        let mut first = [0u8; 1];
        let _ = stream.peek(&mut first);
        let mut received = Vec::new();
        let result = stream.read_to_end(&mut received).map(|_| received);
        handle.stop().unwrap();
        result
    });
    reactor.run().unwrap();
    let result = client.join().unwrap();
    let reasons = reasons.borrow().clone();
    (result, reasons, queued.get())
}

#[test]
fn lose_connection_delivers_everything_queued_before_closing() {
    let _fds = DescriptorGuard::new();
    let (result, reasons, queued) = blast(false);
    assert!(queued > 0, "the test needs data left in the queue");
    let received = result.unwrap();
    assert_eq!(received.len(), BLAST);
    assert!(received == XorShift::new(7).bytes(BLAST));
    assert_eq!(reasons, ["Closed"]);
}

#[test]
fn abort_connection_drops_the_queue_and_resets() {
    let _fds = DescriptorGuard::new();
    let (result, reasons, queued) = blast(true);
    assert!(queued > 0, "the test needs data left in the queue");
    match result {
        Ok(received) => assert!(received.len() < BLAST, "abort delivered everything"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert_eq!(reasons, ["Aborted"]);
}

#[test]
fn peer_end_of_stream_still_flushes_what_is_queued() {
    let _fds = DescriptorGuard::new();
    const SIZE: usize = 1 << 20;
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let (_port, addr) = listen_local(&reactor, EchoFactory::default());
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let data = XorShift::new(99).bytes(SIZE);
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let reading = std::thread::spawn(move || {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).unwrap();
            received
        });
        stream.write_all(&data).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let received = reading.join().unwrap();
        handle.stop().unwrap();
        received == data
    });
    reactor.run().unwrap();
    assert!(
        client.join().unwrap(),
        "echo lost data after the peer's end of stream"
    );
}

// ----- connecting ----------------------------------------------------------

#[test]
fn connection_refused_reaches_client_connection_failed() {
    let _fds = DescriptorGuard::new();
    // Take a free port, then close it: nothing listens there.
    let port = std::net::TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let log = Rc::new(RefCell::new(Vec::new()));
    reactor.connect_tcp(
        "127.0.0.1",
        port,
        GreeterFactory { log: log.clone() },
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    let log = log.borrow();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].starts_with("failed: Refused"), "{log:?}");
}

#[test]
fn connect_timeout_is_reported_as_such() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (_port, addr) = listen_local(&reactor, EchoFactory::default());
    reactor.connect_tcp(
        "127.0.0.1",
        addr.port(),
        GreeterFactory { log: log.clone() },
        Duration::from_secs(5),
    );
    // The timeout passes before the loop ever turns.
    clock.advance(Duration::from_secs(5));
    let log = log.borrow();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1], "failed: TimedOut(5s)");
}

#[test]
fn stop_connecting_cancels_the_attempt() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (_port, addr) = listen_local(&reactor, EchoFactory::default());
    let connector = reactor.connect_tcp(
        "127.0.0.1",
        addr.port(),
        GreeterFactory { log: log.clone() },
        Duration::from_secs(5),
    );
    // Cancel before the loop ever turns: the factory hears of it at once.
    connector.stop_connecting();
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    assert!(log.borrow()[1].starts_with("failed: Cancelled"), "{log:?}");
}

#[test]
fn a_failed_lookup_names_the_host() {
    let _fds = DescriptorGuard::new();
    /// The host a failed lookup names, or the other failure.
    struct Lookup(Rc<RefCell<Option<Result<String, String>>>>);
    impl Factory for Lookup {
        type Protocol = Echo;
        fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
            Some(Echo)
        }
    }
    impl ClientFactory for Lookup {
        fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
            *self.0.borrow_mut() = Some(match reason {
                ConnectError::Resolve { host, .. } => Ok(host.clone()),
                other => Err(format!("{other:?}")),
            });
            connector.reactor().unwrap().stop().unwrap();
        }
    }
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let failure = Rc::new(RefCell::new(None));
    // A name with a NUL byte fails to resolve at once, without asking the
    // network.
    reactor.connect_tcp(
        "bad\0name",
        80,
        Lookup(failure.clone()),
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    let failure = failure.borrow_mut().take();
    assert_eq!(failure, Some(Ok("bad\0name".to_owned())));
}

// ----- factories and ports ------------------------------------------------

#[test]
fn a_stopped_port_refuses_connections() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let (port, addr) = listen_local(&reactor, EchoFactory::default());
    assert_eq!(reactor.source_count(), 1);
    port.stop_listening();
    assert_eq!(reactor.source_count(), 0);
    let error = TcpStream::connect(addr).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_refusing_factory_closes_the_connection() {
    let _fds = DescriptorGuard::new();
    struct Refuser;
    impl Factory for Refuser {
        type Protocol = Echo;
        fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
            None
        }
    }
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let (_port, addr) = listen_local(&reactor, Refuser);
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        let n = stream.read(&mut buf);
        handle.stop().unwrap();
        n.map_err(|e| e.kind())
    });
    reactor.run().unwrap();
    let read = client.join().unwrap();
    assert!(
        matches!(read, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "{read:?}"
    );
    // Shutting down stopped the listener too: nothing is left.
    assert_eq!(reactor.source_count(), 0);
}

// ----- failure isolation -----------------------------------------------

/// Panics when it receives "boom"; echoes otherwise.
struct Fragile {
    lost: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Fragile {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        assert!(data != b"boom", "asked to panic");
        transport.write(data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.lost.borrow_mut().push(format!("{reason:?}"));
    }
}

struct FragileFactory {
    lost: Rc<RefCell<Vec<String>>>,
}

impl Factory for FragileFactory {
    type Protocol = Fragile;
    fn build_protocol(&self, _peer: &Address) -> Option<Fragile> {
        Some(Fragile {
            lost: self.lost.clone(),
        })
    }
}

#[test]
fn a_panicking_protocol_loses_its_connection_only() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let lost = Rc::new(RefCell::new(Vec::new()));
    let (_port, addr) = listen_local(&reactor, FragileFactory { lost: lost.clone() });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut healthy = TcpStream::connect(addr).unwrap();
        let mut doomed = TcpStream::connect(addr).unwrap();
        doomed.write_all(b"boom").unwrap();
        let mut buf = [0u8; 16];
        let doomed_read = doomed.read(&mut buf).map_err(|e| e.kind());
        healthy.write_all(b"still here").unwrap();
        let mut answer = [0u8; 10];
        healthy.read_exact(&mut answer).unwrap();
        handle.stop().unwrap();
        // Hand the healthy stream back, still open: closing it here would
        // race with the stop.
        (doomed_read, answer, healthy)
    });
    reactor.run().unwrap();
    let (doomed_read, answer, _healthy) = client.join().unwrap();
    assert!(
        matches!(
            doomed_read,
            Ok(0) | Err(std::io::ErrorKind::ConnectionReset)
        ),
        "{doomed_read:?}"
    );
    assert_eq!(&answer, b"still here");
    // The panicking connection was aborted; the healthy one lived until
    // the reactor shut down.
    assert_eq!(*lost.borrow(), ["Aborted", "Shutdown"]);
}

#[test]
fn connections_and_ports_leave_no_registration_behind() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let (port, addr) = listen_local(&reactor, EchoFactory::default());
    let count = Rc::new(Cell::new(0));
    struct Counter;
    impl Protocol for Counter {
        fn connection_made(&mut self, transport: &TransportRef) {
            transport.write(b"x");
        }
        fn data_received(&mut self, transport: &TransportRef, _data: &[u8]) {
            transport.lose_connection();
        }
    }
    struct CounterFactory {
        count: Rc<Cell<usize>>,
    }
    impl Factory for CounterFactory {
        type Protocol = Counter;
        fn build_protocol(&self, _peer: &Address) -> Option<Counter> {
            Some(Counter)
        }
    }
    impl ClientFactory for CounterFactory {
        fn client_connection_lost(&self, connector: &Connector, _reason: &CloseReason) {
            self.count.set(self.count.get() + 1);
            if self.count.get() == 50 {
                connector.reactor().unwrap().stop().unwrap();
            }
        }
    }
    let factory = SharedFactory::new(CounterFactory {
        count: count.clone(),
    });
    for _ in 0..50 {
        reactor.connect_tcp(
            "127.0.0.1",
            addr.port(),
            factory.clone(),
            Duration::from_secs(5),
        );
    }
    reactor.run().unwrap();
    assert_eq!(count.get(), 50);
    // Server sides close when they see our end of stream; let the loop
    // finish them.
    while reactor.source_count() > 1 {
        reactor.iterate(Duration::from_secs(1)).unwrap();
    }
    port.stop_listening();
    assert_eq!(reactor.source_count(), 0);
}

// ----- shutdown --------------------------------------------------------------

#[test]
fn stopping_the_reactor_closes_ports_and_connections_in_order() {
    let _fds = DescriptorGuard::new();
    use torsion_protocol::{Phase, SystemEvent};

    struct Holder {
        log: Rc<RefCell<Vec<String>>>,
    }
    impl Protocol for Holder {
        fn connection_made(&mut self, transport: &TransportRef) {
            self.log.borrow_mut().push("made".into());
            // Sent at once; shutdown must not lose it.
            transport.write(b"bye");
        }
        fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
        fn connection_lost(&mut self, reason: &CloseReason) {
            self.log.borrow_mut().push(format!("lost: {reason:?}"));
        }
    }
    struct HolderFactory {
        log: Rc<RefCell<Vec<String>>>,
    }
    impl Factory for HolderFactory {
        type Protocol = Holder;
        fn build_protocol(&self, _peer: &Address) -> Option<Holder> {
            Some(Holder {
                log: self.log.clone(),
            })
        }
        fn stop_factory(&self) {
            self.log.borrow_mut().push("factory stopped".into());
        }
    }

    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (port, addr) = listen_local(&reactor, HolderFactory { log: log.clone() });
    for phase in [Phase::Before, Phase::After] {
        let log = log.clone();
        let port = port.clone();
        reactor.add_system_event_trigger(phase, SystemEvent::Shutdown, move |reactor| {
            log.borrow_mut().push(format!(
                "{phase:?} shutdown: listening={} sources={}",
                port.is_listening(),
                reactor.source_count()
            ));
        });
    }
    // A client connects and waits; once the server has the connection,
    // the reactor is stopped.
    let client = TcpStream::connect(addr).unwrap();
    let l = log.clone();
    let poll = torsion_protocol::LoopingCall::new(&reactor, move |call| {
        if l.borrow().iter().any(|e| e == "made") {
            call.stop().unwrap();
            call.reactor().unwrap().stop().unwrap();
        }
    });
    poll.start(Duration::ZERO, true).unwrap();
    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "made",
            "Before shutdown: listening=true sources=2",
            "factory stopped",
            "lost: Shutdown",
            "After shutdown: listening=false sources=0",
        ]
    );
    // What was written reached the peer before the close.
    let mut received = Vec::new();
    (&client).read_to_end(&mut received).unwrap();
    assert_eq!(received, b"bye");
}

#[test]
fn an_adopted_socket_is_served_like_an_accepted_one() {
    use torsion_protocol::ReactorSocket;

    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // The one to be refused: closed without a byte.
        let mut refused = TcpStream::connect(addr).unwrap();
        stream.write_all(b"adopted").unwrap();
        let mut echo = [0u8; 7];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"adopted");
        let mut rest = Vec::new();
        assert_eq!(refused.read_to_end(&mut rest).unwrap(), 0);
    });
    let factory = EchoFactory::default();
    let (stream, _) = listener.accept().unwrap();
    assert!(reactor.adopt_stream_connection(stream, &factory).unwrap());
    assert_eq!(factory.built.get(), 1);
    // No port: the factory is not started or stopped.
    assert_eq!((factory.started.get(), factory.stopped.get()), (0, 0));

    struct Refuser;
    impl Factory for Refuser {
        type Protocol = Echo;
        fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
            None
        }
    }
    let (refused, _) = listener.accept().unwrap();
    assert!(!reactor.adopt_stream_connection(refused, &Refuser).unwrap());

    let handle = reactor.handle();
    let waiter = std::thread::spawn(move || {
        client.join().unwrap();
        handle.stop().unwrap();
    });
    reactor.run().unwrap();
    waiter.join().unwrap();
}
