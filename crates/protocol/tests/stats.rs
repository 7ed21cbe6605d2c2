//! The counters the layers above the reactor keep in it (see
//! `docs/observability.md`): accepts, refusals, opens, closes by reason,
//! bytes, write-buffer peaks and pauses. Real sockets on 127.0.0.1 port
//! 0; the peer is a plain std socket driven from the test thread between
//! reactor turns, so every step is deterministic.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Echo};
use torsion_protocol::{
    Address, Factory, ListenOptions, Producer, Protocol, Reactor, ReactorStats, ReactorTcp,
    TransportRef,
};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What a `Commands` connection does with each message.
struct Commands;

impl Protocol for Commands {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        match data {
            b"close" => transport.lose_connection(),
            b"abort" => transport.abort_connection(),
            b"bad" => transport.lose_connection_with_error("bad".into()),
            b"panic" => panic!("deliberate"),
            b"flood" | b"flood with producer" => {
                transport.enable_read_throttle();
                if data == b"flood with producer" {
                    // Reading and a streaming producer both pause at the
                    // crossing: still one pause.
                    transport.register_producer(Rc::new(Idle), true).unwrap();
                }
                // 256 writes of 64 KiB to a peer that is not reading: the
                // buffer crosses its 64 KiB high watermark once.
                let chunk = vec![7u8; 64 * 1024];
                for _ in 0..256 {
                    transport.write(&chunk);
                }
            }
            other => transport.write(other),
        }
    }
}

/// A streaming producer that does nothing when told.
struct Idle;

impl Producer for Idle {
    fn resume_producing(&self) {}
}

struct Serve<P>(fn() -> Option<P>);

impl<P: Protocol> Factory for Serve<P> {
    type Protocol = P;
    fn build_protocol(&self, _peer: &Address) -> Option<P> {
        (self.0)()
    }
}

fn listen<P: Protocol>(reactor: &Reactor, build: fn() -> Option<P>) -> SocketAddr {
    let port = reactor
        .listen_tcp_with(0, Serve(build), ListenOptions::interface(LOCALHOST))
        .unwrap();
    port.get_host().socket_addr().unwrap()
}

/// Turns the loop until `done` holds of the stats.
fn turn_until(reactor: &Reactor, done: impl Fn(&ReactorStats) -> bool) -> ReactorStats {
    loop {
        let stats = reactor.stats();
        if done(&stats) {
            return stats;
        }
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
}

#[test]
fn an_echoed_exchange_counts_one_accept_its_bytes_and_a_close_by_the_peer() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let addr = listen(&reactor, || Some(Echo));
    assert_eq!(reactor.stats().sources, 1);
    let mut client = connect(addr);
    client.write_all(b"hello").unwrap();
    let stats = turn_until(&reactor, |s| s.bytes_written == 5);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.connections_open, 1);
    assert_eq!(stats.connections_refused, 0);
    assert_eq!(stats.bytes_read, 5);
    // The reply was gathered and sent at the end of the step: it was the
    // whole write buffer for a moment.
    assert_eq!(stats.write_buffer_peak, 5);
    assert_eq!(stats.write_buffer_pauses, 0);
    assert_eq!(stats.closed.total(), 0);
    let mut reply = [0; 5];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");

    client.shutdown(std::net::Shutdown::Write).unwrap();
    let stats = turn_until(&reactor, |s| s.closed.total() == 1);
    assert_eq!(stats.closed.by_peer, 1);
    assert_eq!(stats.connections_open, 0);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!((stats.bytes_read, stats.bytes_written), (5, 5));
    assert_eq!(stats.accept_errors.total(), 0);
    assert_eq!(stats.callbacks_panicked, 0);
}

#[test]
fn a_connection_the_factory_declines_is_refused_not_opened() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let addr = listen(&reactor, || None::<Echo>);
    let mut client = connect(addr);
    let stats = turn_until(&reactor, |s| s.connections_refused == 1);
    assert_eq!(stats.connections_accepted, 0);
    assert_eq!(stats.connections_opened, 0);
    assert_eq!(stats.closed.total(), 0);
    // The peer sees the close.
    assert_eq!(client.read(&mut [0; 1]).unwrap_or(0), 0);
}

#[test]
fn closes_are_counted_once_each_by_reason() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let addr = listen(&reactor, || Some(Commands));
    let mut expected = 0;
    for (command, reason) in [
        (&b"close"[..], "clean"),
        (b"abort", "aborted"),
        (b"bad", "protocol_error"),
        (b"panic", "aborted"),
    ] {
        let mut client = connect(addr);
        client.write_all(command).unwrap();
        expected += 1;
        let stats = turn_until(&reactor, |s| s.closed.total() == expected);
        assert_eq!(stats.connections_opened, expected);
        assert_eq!(stats.connections_open, 0, "after {reason}");
        // Drained: the close has reached the peer.
        let _ = client.read(&mut [0; 16]);
    }
    let stats = reactor.stats();
    // Every command's bytes, the one whose handler panicked included.
    assert_eq!(stats.bytes_read, 5 + 5 + 3 + 5);
    assert_eq!(stats.closed.clean, 1);
    assert_eq!(stats.closed.aborted, 2);
    assert_eq!(stats.closed.protocol_error, 1);
    assert_eq!(
        stats.closed.lost + stats.closed.by_peer + stats.closed.shutdown,
        0
    );
    // A protocol's panic is contained by its connection, not by the
    // reactor's policy.
    assert_eq!(stats.callbacks_panicked, 0);

    // A reset from the peer: lost.
    let client = connect(addr);
    torsion_protocol::socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    turn_until(&reactor, |s| s.connections_open == 1);
    drop(client);
    let stats = turn_until(&reactor, |s| s.closed.total() == 5);
    assert_eq!(stats.closed.lost, 1);

    // Still open when the reactor shuts down.
    let _client = connect(addr);
    turn_until(&reactor, |s| s.connections_open == 1);
    reactor.shut_down().unwrap();
    let stats = reactor.handle().stats();
    assert_eq!(stats.closed.shutdown, 1);
    assert_eq!(stats.closed.total(), 6);
    assert_eq!(stats.connections_open, 0);
    assert_eq!(stats.connections_accepted, 6);
    assert_eq!(stats.sources, 0);
}

#[test]
fn a_peer_that_does_not_read_raises_the_peak_and_pauses_once_per_episode() {
    flood(b"flood");
}

#[test]
fn pausing_reading_and_a_streaming_producer_together_is_one_pause() {
    flood(b"flood with producer");
}

/// Sends `command` (a flood of 16 MiB to a peer that does not read),
/// then drains it: one pause episode.
fn flood(command: &[u8]) {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let addr = listen(&reactor, || Some(Commands));
    let mut client = connect(addr);
    client.write_all(command).unwrap();
    let total = 256 * 64 * 1024;
    let stats = turn_until(&reactor, |s| s.write_buffer_pauses >= 1);
    assert_eq!(stats.write_buffer_pauses, 1);
    // Most of the 16 MiB waits in the buffer: the kernel's buffers take
    // a few MiB at most.
    assert!(
        stats.write_buffer_peak >= 8 * 1024 * 1024,
        "peak {}",
        stats.write_buffer_peak
    );
    assert!(stats.write_buffer_peak <= total as u64);
    // Drain it, turning the loop between reads.
    client.set_nonblocking(true).unwrap();
    let mut received = 0;
    let mut buf = vec![0; 256 * 1024];
    while received < total {
        reactor.iterate(Duration::ZERO).unwrap();
        match client.read(&mut buf) {
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let stats = reactor.stats();
    assert_eq!(stats.bytes_written, total as u64);
    // One episode: the buffer went above its high watermark once, however
    // many writes arrived while it was above.
    assert_eq!(stats.write_buffer_pauses, 1);
    assert_eq!(stats.connections_open, 1);
}

#[test]
fn both_ends_of_a_connection_made_by_the_reactor_are_counted() {
    use torsion_protocol::ClientFactory;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let addr = listen(&reactor, || Some(Echo));

    struct Hello;
    impl Protocol for Hello {
        fn connection_made(&mut self, transport: &TransportRef) {
            transport.write(b"hi");
        }
        fn data_received(&mut self, transport: &TransportRef, _data: &[u8]) {
            transport.lose_connection();
        }
    }
    struct Once;
    impl Factory for Once {
        type Protocol = Hello;
        fn build_protocol(&self, _peer: &Address) -> Option<Hello> {
            Some(Hello)
        }
    }
    impl ClientFactory for Once {}
    let _connector = reactor.connect_tcp("127.0.0.1", addr.port(), Once, Duration::from_secs(5));
    let stats = turn_until(&reactor, |s| s.closed.total() == 2);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.closed.clean, 1);
    assert_eq!(stats.closed.by_peer, 1);
    // Both ends' bytes: "hi" out and back.
    assert_eq!((stats.bytes_read, stats.bytes_written), (4, 4));
}

/// A client that records a failed connect.
struct Failing(Rc<std::cell::Cell<bool>>);

impl Factory for Failing {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
}

impl torsion_protocol::ClientFactory for Failing {
    fn client_connection_failed(
        &self,
        _connector: &torsion_protocol::Connector,
        _reason: &torsion_protocol::ConnectError,
    ) {
        self.0.set(true);
    }
}

#[test]
fn a_refused_connect_counts_neither_an_open_nor_a_close() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    // Take a free port, then close it: nothing listens there.
    let port = std::net::TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let failed = Rc::new(std::cell::Cell::new(false));
    let _connector = reactor.connect_tcp(
        "127.0.0.1",
        port,
        Failing(failed.clone()),
        Duration::from_secs(5),
    );
    while !failed.get() {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    let stats = reactor.stats();
    assert_eq!(stats.connections_opened, 0);
    assert_eq!(stats.closed.total(), 0);
    assert_eq!(stats.connections_open, 0);
}

#[test]
fn a_connect_still_in_flight_at_shutdown_counts_nothing() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let failed = Rc::new(std::cell::Cell::new(false));
    // No turn runs between the connect and the shutdown: the transport
    // has not seen the connect finish.
    let _connector = reactor.connect_tcp(
        "127.0.0.1",
        port,
        Failing(failed.clone()),
        Duration::from_secs(5),
    );
    reactor.shut_down().unwrap();
    let stats = reactor.stats();
    assert_eq!(stats.connections_opened, 0);
    assert_eq!(stats.closed.total(), 0);
    assert_eq!(stats.connections_open, 0);
}

#[test]
fn a_unix_socket_accept_is_counted_like_a_tcp_one() {
    use std::os::unix::net::UnixStream;
    use torsion_protocol::{ReactorUnix, UnixListenOptions};
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let path = torsion_protocol::testing::socket_path("stats");
    let _port = reactor
        .listen_unix(&path, Serve(|| Some(Echo)), UnixListenOptions::default())
        .unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"hey").unwrap();
    let stats = turn_until(&reactor, |s| s.bytes_written == 3);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.connections_open, 1);
    assert_eq!(stats.bytes_read, 3);
    // Read before closing: a Unix socket closed with unread data resets
    // its peer (a loss, not a close by the peer).
    let mut reply = [0; 3];
    client.read_exact(&mut reply).unwrap();
    drop(client);
    let stats = turn_until(&reactor, |s| s.closed.total() == 1);
    assert_eq!(stats.closed.by_peer, 1);
    assert_eq!(stats.connections_open, 0);
}
