//! Half-closes, pausing reads, producers, and socket options, on loopback.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;

use torsion_protocol::{
    Address, CloseReason, Factory, Keepalive, ListenOptions, Producer, Protocol, Reactor,
    ReactorTcp, TransportRef,
};

mod support;
use support::{listen, reactor, Build};

type Log = Rc<RefCell<Vec<String>>>;

/// Counts what it receives; once the peer half-closes, answers with the
/// count and shuts its own write side.
struct Counter {
    log: Log,
    count: usize,
}

impl Protocol for Counter {
    fn half_closeable(&self) -> bool {
        true
    }
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.count += data.len();
    }
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        self.log.borrow_mut().push("read lost".into());
        transport.write(format!("got {}", self.count).as_bytes());
        transport.lose_write_connection();
        transport.write(b"ignored after the write side is shut");
    }
    fn write_connection_lost(&mut self, _transport: &TransportRef) {
        self.log.borrow_mut().push("write lost".into());
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
    }
}

#[test]
fn a_half_closeable_protocol_answers_after_the_peer_half_closes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || Counter {
        log: l.clone(),
        count: 0,
    });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&vec![7u8; 100_000]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        handle.stop().unwrap();
        answer
    });
    reactor.run().unwrap();
    assert_eq!(client.join().unwrap(), "got 100000");
    assert_eq!(*log.borrow(), ["read lost", "write lost", "lost: Closed"]);
}

/// Greets, shuts its write side, and keeps reading; stops the reactor
/// when the connection ends.
struct Greeter {
    log: Log,
    reactor: Option<Reactor>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.reactor = transport.reactor();
        transport.write(b"hello");
        transport.lose_write_connection();
    }
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(String::from_utf8_lossy(data).into_owned());
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn lose_write_connection_keeps_reading() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || Greeter {
        log: l.clone(),
        reactor: None,
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut greeting = String::new();
        // End of stream after the greeting: the server shut its side.
        stream.read_to_string(&mut greeting).unwrap();
        stream.write_all(b"bye").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        greeting
    });
    reactor.run().unwrap();
    assert_eq!(client.join().unwrap(), "hello");
    assert_eq!(*log.borrow(), ["bye", "lost: ClosedByPeer"]);
}

/// Pauses reading on connect; resumes after a timer.
struct Sleeper {
    log: Log,
}

impl Protocol for Sleeper {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.pause_reading();
        let t = transport.clone();
        let log = self.log.clone();
        let reactor = transport.reactor().unwrap();
        reactor.call_later(Duration::from_millis(50), move |_| {
            log.borrow_mut().push("resume".into());
            t.resume_reading();
        });
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data)));
        transport.write(data);
    }
}

#[test]
fn paused_reading_delivers_nothing_until_resumed() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || Sleeper { log: l.clone() });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).unwrap();
        handle.stop().unwrap();
        answer
    });
    reactor.run().unwrap();
    assert_eq!(&client.join().unwrap(), b"ping");
    assert_eq!(*log.borrow(), ["resume", "data ping"]);
}

/// A pull producer that writes `chunks` pieces of 1 MiB, one per request,
/// then closes the connection.
struct Pages {
    transport: TransportRef,
    left: Cell<usize>,
    asked: Cell<usize>,
}

impl Producer for Pages {
    fn resume_producing(&self) {
        self.asked.set(self.asked.get() + 1);
        match self.left.get() {
            0 => {
                self.transport.unregister_producer();
                self.transport.lose_connection();
            }
            n => {
                self.left.set(n - 1);
                self.transport.write(&vec![b'p'; 1 << 20]);
            }
        }
    }
}

struct Pager {
    asked: Rc<Cell<usize>>,
    producer: Option<Rc<Pages>>,
}

impl Protocol for Pager {
    fn connection_made(&mut self, transport: &TransportRef) {
        let pages = Rc::new(Pages {
            transport: transport.clone(),
            left: Cell::new(8),
            asked: Cell::new(0),
        });
        transport.register_producer(pages.clone(), false).unwrap();
        self.producer = Some(pages);
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, _reason: &CloseReason) {
        let pages = self.producer.take().unwrap();
        self.asked.set(pages.asked.get());
    }
}

#[test]
fn a_pull_producer_is_asked_for_each_piece_as_the_buffer_drains() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let asked = Rc::new(Cell::new(0));
    let a = asked.clone();
    let addr = listen(&reactor, move || Pager {
        asked: a.clone(),
        producer: None,
    });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        handle.stop().unwrap();
        all.len()
    });
    reactor.run().unwrap();
    assert_eq!(client.join().unwrap(), 8 << 20);
    // Eight pieces, then one more request that found nothing left.
    assert_eq!(asked.get(), 9);
}

struct Options {
    results: Rc<RefCell<Vec<bool>>>,
}

impl Protocol for Options {
    fn connection_made(&mut self, transport: &TransportRef) {
        let mut results = self.results.borrow_mut();
        results.push(transport.set_tcp_nodelay(true).is_ok());
        results.push(
            transport
                .set_tcp_keepalive(Some(Keepalive {
                    idle: Duration::from_secs(60),
                    interval: Some(Duration::from_secs(10)),
                    retries: Some(5),
                }))
                .is_ok(),
        );
        results.push(transport.set_tcp_keepalive(None).is_ok());
        transport.lose_connection();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

#[test]
fn socket_options_and_reuse_port() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let results: Rc<RefCell<Vec<bool>>> = Rc::default();
    let r = results.clone();
    let options = ListenOptions {
        reuse_port: true,
        ..ListenOptions::interface(Ipv4Addr::LOCALHOST.into())
    };
    let first = reactor
        .listen_tcp_with(0, Build(move || Options { results: r.clone() }), options)
        .unwrap();
    let port = first.get_host().port().unwrap();
    // A second listener on the same port: allowed by SO_REUSEPORT.
    let second = reactor
        .listen_tcp_with(
            port,
            Build(|| Options {
                results: Rc::default(),
            }),
            options,
        )
        .unwrap();
    second.stop_listening();
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        handle.stop().unwrap();
    });
    reactor.run().unwrap();
    client.join().unwrap();
    assert_eq!(*results.borrow(), [true, true, true]);
}

#[test]
fn ipv6_listen_and_connect() {
    let _fds = DescriptorGuard::new();
    use torsion_protocol::{ClientFactory, Connector};
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    struct Hello;
    impl Protocol for Hello {
        fn connection_made(&mut self, transport: &TransportRef) {
            transport.write(b"hi");
        }
        fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
            assert_eq!(data, b"hi");
            transport.lose_connection();
        }
    }
    struct Stop;
    impl Factory for Stop {
        type Protocol = Hello;
        fn build_protocol(&self, peer: &Address) -> Option<Hello> {
            assert!(peer.socket_addr().unwrap().is_ipv6());
            Some(Hello)
        }
    }
    impl ClientFactory for Stop {
        fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
            assert!(reason.is_clean(), "{reason}");
            connector.reactor().unwrap().stop().unwrap();
        }
    }
    let (_watchdog, reactor) = reactor();
    let port = reactor
        .listen_tcp_with(
            0,
            Build(|| Hello),
            ListenOptions::interface(std::net::Ipv6Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    assert!(addr.is_ipv6());
    reactor.connect_tcp("::1", addr.port(), Stop, Duration::from_secs(5));
    reactor.run().unwrap();
}

/// Notes whether Nagle's algorithm is off on its connection, then closes.
struct NoDelay {
    seen: Rc<RefCell<Vec<bool>>>,
}

impl Protocol for NoDelay {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.seen
            .borrow_mut()
            .push(transport.tcp_nodelay().unwrap());
        transport.lose_connection();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

struct NoDelayClient {
    seen: Rc<RefCell<Vec<bool>>>,
}

impl Factory for NoDelayClient {
    type Protocol = NoDelay;
    fn build_protocol(&self, _peer: &Address) -> Option<NoDelay> {
        Some(NoDelay {
            seen: self.seen.clone(),
        })
    }
}

impl torsion_protocol::ClientFactory for NoDelayClient {}

#[test]
fn nagle_is_off_by_default_on_accepted_and_connected_sockets() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let seen: Rc<RefCell<Vec<bool>>> = Rc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let port = reactor
        .listen_tcp_with(
            0,
            Build(move || NoDelay { seen: s1.clone() }),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let off = reactor
        .listen_tcp_with(
            0,
            Build(move || NoDelay { seen: s2.clone() }),
            ListenOptions {
                nodelay: false,
                ..ListenOptions::interface(Ipv4Addr::LOCALHOST.into())
            },
        )
        .unwrap();
    // A plain client on the port that keeps Nagle's algorithm on.
    let plain = off.get_host().socket_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(plain).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
    });
    // Torsion's own client on the default port: both of its ends.
    reactor.connect_tcp(
        "127.0.0.1",
        port.get_host().port().unwrap(),
        NoDelayClient { seen: seen.clone() },
        Duration::from_secs(10),
    );
    let all = seen.clone();
    let check = torsion_protocol::LoopingCall::new(&reactor, move |call| {
        if all.borrow().len() == 3 {
            call.reactor().unwrap().stop().unwrap();
        }
    });
    check.start(Duration::from_millis(1), false).unwrap();
    reactor.run().unwrap();
    client.join().unwrap();
    let mut seen = seen.borrow().clone();
    seen.sort();
    // Accepted and connected on the default port: off; on the port that
    // asked for Nagle's algorithm: on.
    assert_eq!(seen, [false, true, true]);
}
