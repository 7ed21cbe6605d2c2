//! UDP and Unix datagram ports.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::{guarded_reactor, socket_path, Watchdog};

use torsion_protocol::{
    Address, DatagramProtocol, DatagramTransportRef, Reactor, ReactorUdp, ReactorUnix, UdpOptions,
};

type Log = Rc<RefCell<Vec<String>>>;

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(30))
}

fn local() -> UdpOptions {
    UdpOptions {
        interface: Ipv4Addr::LOCALHOST.into(),
        ..UdpOptions::default()
    }
}

/// Echoes datagrams; logs what happens; stops the reactor on "stop".
struct Echo {
    log: Log,
}

impl DatagramProtocol for Echo {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        self.log.borrow_mut().push(format!(
            "start {}",
            matches!(transport.get_host(), Address::Udp(_) | Address::Unix(_))
        ));
    }
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address) {
        self.log
            .borrow_mut()
            .push(format!("got {}", String::from_utf8_lossy(data)));
        transport.write_to(data, from).unwrap();
        if data == b"stop" {
            transport.reactor().unwrap().stop().unwrap();
        }
    }
    fn datagram_truncated(
        &mut self,
        _transport: &DatagramTransportRef,
        _from: &Address,
        received: usize,
    ) {
        self.log
            .borrow_mut()
            .push(format!("truncated at {received}"));
    }
    fn stop_protocol(&mut self) {
        self.log.borrow_mut().push("stop".into());
    }
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

#[test]
fn udp_echo_and_truncation() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let options = UdpOptions {
        max_datagram_size: 16,
        ..local()
    };
    let port = reactor
        .listen_udp_with(0, Echo { log: log.clone() }, options)
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let socket = client();
        let mut buf = [0u8; 64];
        socket.send_to(b"hello", addr).unwrap();
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], addr));
        // Too large for the port's 16-byte maximum: reported, not echoed.
        socket.send_to(&[b'x'; 100], addr).unwrap();
        socket.send_to(b"stop", addr).unwrap();
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"stop");
    });
    reactor.run().unwrap();
    peer.join().unwrap();
    // Counted: two whole datagrams in (9 bytes), one truncated, two echoes
    // out; none of it as stream traffic.
    let stats = reactor.stats();
    assert_eq!(
        (
            stats.datagrams_received,
            stats.datagram_bytes_read,
            stats.datagrams_truncated
        ),
        (2, 9, 1)
    );
    assert_eq!((stats.datagrams_sent, stats.datagram_bytes_written), (2, 9));
    assert_eq!((stats.bytes_read, stats.bytes_written), (0, 0));
    assert_eq!(
        *log.borrow(),
        [
            "start true",
            "got hello",
            "truncated at 16",
            "got stop",
            "stop"
        ]
    );
    assert!(port.is_closed(), "shutdown closes datagram ports");
}

/// Connects to a port nobody listens on and writes to it.
struct Lonely {
    target: SocketAddr,
    log: Log,
}

impl DatagramProtocol for Lonely {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        // Without a connection there is nobody to write to.
        let unconnected = transport.write(b"x").unwrap_err();
        self.log
            .borrow_mut()
            .push(format!("{:?}", unconnected.kind()));
        // Larger than any datagram: a clear error, not a silent drop.
        let oversized = transport
            .write_to(&vec![0u8; 70_000], &Address::Udp(self.target))
            .unwrap_err();
        assert!(
            oversized
                .to_string()
                .contains("larger than the socket can send"),
            "{oversized}"
        );
        self.log
            .borrow_mut()
            .push(format!("{:?}", oversized.kind()));
        transport.connect(&Address::Udp(self.target)).unwrap();
        assert_eq!(transport.get_peer(), Some(Address::Udp(self.target)));
        transport.write(b"anyone there?").unwrap();
    }
    fn datagram_received(&mut self, _t: &DatagramTransportRef, _data: &[u8], _from: &Address) {
        unreachable!("nobody answers");
    }
    fn connection_refused(&mut self, transport: &DatagramTransportRef) {
        self.log.borrow_mut().push("refused".into());
        transport.stop_listening();
        transport.reactor().unwrap().stop().unwrap();
    }
}

#[test]
fn connected_udp_hears_refusals_and_bad_writes_are_errors() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let target = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let log: Log = Rc::default();
    reactor
        .listen_udp_with(
            0,
            Lonely {
                target,
                log: log.clone(),
            },
            local(),
        )
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["NotConnected", "InvalidInput", "refused"]);
}

/// Sends one datagram to its connected server and logs the answer.
struct Asker {
    log: Log,
}

impl DatagramProtocol for Asker {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        transport.write(b"hi").unwrap();
    }
    fn datagram_received(
        &mut self,
        transport: &DatagramTransportRef,
        data: &[u8],
        _from: &Address,
    ) {
        self.log
            .borrow_mut()
            .push(format!("answer {}", String::from_utf8_lossy(data)));
        transport.reactor().unwrap().stop().unwrap();
    }
}

#[test]
fn unix_datagrams_both_ways() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let server_path = socket_path("dgram-server");
    let client_path = socket_path("dgram-client");
    let log: Log = Rc::default();
    let server = reactor
        .listen_unix_datagram(&server_path, Echo { log: log.clone() }, Some(0o600))
        .unwrap();
    assert_eq!(server.get_host(), Address::Unix(Some(server_path.clone())));
    // A second server on the same live path is refused.
    let error = reactor
        .listen_unix_datagram(&server_path, Echo { log: Rc::default() }, None)
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    reactor
        .connect_unix_datagram(&server_path, Asker { log: log.clone() }, Some(&client_path))
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["start true", "got hi", "answer hi", "stop"]);
    assert!(
        !server_path.exists() && !client_path.exists(),
        "socket files removed"
    );
}

/// Logs each datagram with its sender; stops the reactor after `until`
/// events.
struct Collect {
    log: Rc<RefCell<Vec<(String, SocketAddr)>>>,
    until: usize,
}

impl Collect {
    fn record(&mut self, transport: &DatagramTransportRef, what: String, from: &Address) {
        let mut log = self.log.borrow_mut();
        log.push((what, from.socket_addr().unwrap()));
        if log.len() == self.until {
            transport.reactor().unwrap().stop().unwrap();
        }
    }
}

impl DatagramProtocol for Collect {
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address) {
        self.record(transport, String::from_utf8_lossy(data).into_owned(), from);
    }
    fn datagram_truncated(
        &mut self,
        transport: &DatagramTransportRef,
        from: &Address,
        received: usize,
    ) {
        self.record(transport, format!("truncated at {received}"), from);
    }
}

#[test]
fn queued_datagrams_arrive_in_order_with_senders_in_few_receive_calls() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = Rc::default();
    const COUNT: usize = 64;
    let options = UdpOptions {
        max_datagram_size: 16,
        ..local()
    };
    let port = reactor
        .listen_udp_with(
            0,
            Collect {
                log: Rc::clone(&log),
                until: COUNT,
            },
            options,
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let senders = [client(), client()];
    let mut expected = Vec::new();
    // Everything is queued on the port's socket before the reactor turns;
    // one datagram in the middle is too large and must be reported alone.
    for i in 0..COUNT {
        let sender = &senders[i % 2];
        let from = sender.local_addr().unwrap();
        if i == 33 {
            sender.send_to(&[b'x'; 40], addr).unwrap();
            expected.push(("truncated at 16".to_string(), from));
        } else {
            let text = format!("datagram {i}");
            sender.send_to(text.as_bytes(), addr).unwrap();
            expected.push((text, from));
        }
    }
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), expected);
    // Linux receives in batches of up to 32 (`recvmmsg`); elsewhere each
    // datagram is its own call.
    let calls = port.receive_calls();
    if cfg!(target_os = "linux") {
        assert!(calls <= 3, "{COUNT} datagrams took {calls} receive calls");
    } else {
        assert!(calls >= COUNT as u64, "{calls} receive calls");
    }
}
