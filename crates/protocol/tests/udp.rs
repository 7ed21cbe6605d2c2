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

/// Datagrams queued on the port before the reactor turns, from `senders`:
/// what each sender sent, in order.
fn send_all(senders: &[UdpSocket], to: SocketAddr, texts: &[&str]) {
    for (i, text) in texts.iter().enumerate() {
        senders[i % senders.len()]
            .send_to(text.as_bytes(), to)
            .unwrap();
    }
}

/// Reads `count` datagrams from `socket` as text.
fn receive_texts(socket: &UdpSocket, count: usize) -> Vec<String> {
    let mut buf = [0u8; 64];
    (0..count)
        .map(|_| {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .collect()
}

#[test]
fn echoes_written_in_one_turn_leave_in_one_batched_send_in_order() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let port = reactor
        .listen_udp_with(0, Echo { log: log.clone() }, local())
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let senders = [client(), client()];
    let texts: Vec<String> = (0..64).map(|i| format!("datagram {i}")).collect();
    let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
    all.push("stop");
    // 64 datagrams (one readiness event's worth), then "stop" on its own.
    send_all(&senders, addr, &all);
    reactor.run().unwrap();
    for (i, sender) in senders.iter().enumerate() {
        let mine: Vec<&str> = all.iter().skip(i).step_by(2).copied().collect();
        assert_eq!(receive_texts(sender, mine.len()), mine, "sender {i}");
    }
    // Linux: the 64 echoes of one event go out in one `sendmmsg`, "stop"'s
    // echo in a second; elsewhere one call per datagram.
    let calls = port.send_calls();
    if cfg!(target_os = "linux") {
        assert_eq!(calls, 2, "65 echoes took {calls} send calls");
    } else {
        assert_eq!(calls, 65);
    }
    assert_eq!(port.send_queue_len(), 0);
}

/// Echoes, and on "bad" also writes to an address the socket cannot send
/// to (IPv6 from an IPv4 socket): refused by the kernel only when sent.
struct EchoAndFail {
    log: Log,
    bad: Address,
    reply_to: Address,
}

impl DatagramProtocol for EchoAndFail {
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address) {
        let text = String::from_utf8_lossy(data).into_owned();
        if text == "bad" {
            // Queued: the error is not known yet.
            transport.write_to(b"lost", &self.bad).unwrap();
        }
        transport.write_to(data, from).unwrap();
        self.log.borrow_mut().push(format!("got {text}"));
        if text == "stop" {
            transport.reactor().unwrap().stop().unwrap();
        }
    }
    fn send_failed(
        &mut self,
        transport: &DatagramTransportRef,
        to: Option<&Address>,
        error: &std::io::Error,
    ) {
        assert_eq!(to, Some(&self.bad), "{error}");
        self.log.borrow_mut().push("failed".into());
        // A write while hearing of a failure still goes out.
        transport
            .write_to(b"after failure", &self.reply_to)
            .unwrap();
    }
}

#[test]
fn a_queued_datagram_the_kernel_refuses_is_reported_later_and_the_rest_still_go_out() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let bad = Address::Udp("[::1]:9".parse().unwrap());
    let sender = client();
    let port = reactor
        .listen_udp_with(
            0,
            EchoAndFail {
                log: log.clone(),
                bad,
                reply_to: Address::Udp(sender.local_addr().unwrap()),
            },
            local(),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    send_all(
        std::slice::from_ref(&sender),
        addr,
        &["a", "bad", "c", "stop"],
    );
    reactor.run().unwrap();
    // The failure is heard after the turn's datagrams were handled, and
    // every datagram queued around the failed one was sent, in order.
    assert_eq!(
        *log.borrow(),
        ["got a", "got bad", "got c", "got stop", "failed"]
    );
    assert_eq!(
        receive_texts(&sender, 5),
        ["a", "bad", "c", "stop", "after failure"]
    );
    assert_eq!(port.send_queue_len(), 0);
}

/// Writes `total` numbered datagrams to its connected peer in one turn;
/// the next turn, reports what was accepted and what waits, through
/// `accepted`, and stops the reactor on "done".
struct Flood {
    total: usize,
    accepted: std::sync::mpsc::Sender<(Vec<usize>, usize)>,
}

impl DatagramProtocol for Flood {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        let (total, accepted) = (self.total, self.accepted.clone());
        let transport = transport.clone();
        let reactor = transport.reactor().unwrap();
        reactor.call_soon(move |reactor| {
            let mut ok = Vec::new();
            for i in 0..total {
                match transport.write(format!("{i}").as_bytes()) {
                    Ok(()) => ok.push(i),
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
                }
            }
            // The next turn: the end of this one sent what the peer's
            // queue takes; the rest waits for room, in order.
            reactor.call_soon(move |_| {
                let waiting = transport.send_queue_len();
                accepted.send((ok, waiting)).unwrap();
            });
        });
    }
    fn datagram_received(
        &mut self,
        transport: &DatagramTransportRef,
        data: &[u8],
        _from: &Address,
    ) {
        assert_eq!(data, b"done");
        transport.reactor().unwrap().stop().unwrap();
    }
}

#[test]
fn a_full_peer_pauses_sending_and_queued_datagrams_follow_in_order_when_it_reads() {
    use std::os::unix::net::UnixDatagram;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let server_path = socket_path("dgram-full-server");
    let client_path = socket_path("dgram-full-client");
    let server = UnixDatagram::bind(&server_path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // More than the peer's queue and the port's queue (1,024) hold.
    const TOTAL: usize = 2_000;
    let port = reactor
        .connect_unix_datagram(
            &server_path,
            Flood {
                total: TOTAL,
                accepted: tx,
            },
            Some(&client_path),
        )
        .unwrap();
    let reader = std::thread::spawn(move || {
        // Nothing is read until the port has hit the full peer.
        let (accepted, waiting): (Vec<usize>, usize) = rx.recv().unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..accepted.len() {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            got.push(
                std::str::from_utf8(&buf[..n])
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
            );
            if got.len() == accepted.len() {
                server
                    .send_to(b"done", from.as_pathname().unwrap())
                    .unwrap();
            }
        }
        (accepted, waiting, got)
    });
    reactor.run().unwrap();
    let (accepted, waiting, got) = reader.join().unwrap();
    assert!(waiting > 0, "the peer's queue was never full");
    assert!(
        accepted.len() < TOTAL,
        "a write finding both queues full is refused at once"
    );
    assert_eq!(got, accepted, "every accepted datagram arrives, in order");
    assert_eq!(port.send_queue_len(), 0);
    port.stop_listening();
    drop(reactor);
    let _ = std::fs::remove_file(&server_path);
}

/// Writes `total` datagrams to `to` in one turn; counts failures heard and
/// stops the reactor once each datagram failed.
struct Unanswered {
    to: Address,
    total: usize,
    failures: Rc<RefCell<Vec<std::io::ErrorKind>>>,
}

impl DatagramProtocol for Unanswered {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        let (to, total, transport) = (self.to.clone(), self.total, transport.clone());
        transport.reactor().unwrap().call_soon(move |_| {
            for i in 0..total {
                transport.write_to(format!("{i}").as_bytes(), &to).unwrap();
            }
        });
    }
    fn datagram_received(&mut self, _t: &DatagramTransportRef, _data: &[u8], _from: &Address) {
        unreachable!("nobody answers");
    }
    fn send_failed(
        &mut self,
        transport: &DatagramTransportRef,
        to: Option<&Address>,
        error: &std::io::Error,
    ) {
        assert_eq!(to, Some(&self.to));
        self.failures.borrow_mut().push(error.kind());
        if self.failures.borrow().len() == self.total {
            assert_eq!(transport.send_queue_len(), 0);
            transport.reactor().unwrap().stop().unwrap();
        }
    }
}

#[test]
fn a_socket_that_reports_room_but_refuses_datagrams_does_not_make_the_port_spin() {
    use std::os::unix::net::UnixDatagram;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let receiver_path = socket_path("dgram-stuck-receiver");
    let port_path = socket_path("dgram-stuck-port");
    // Never read, and full before the port writes (whatever the host's
    // queue length). Linux reports an unconnected sender writable all
    // along yet refuses it with EAGAIN.
    let receiver = UnixDatagram::bind(&receiver_path).unwrap();
    let fillers = fill_receiver(&receiver_path);
    let failures = Rc::default();
    const TOTAL: usize = 100;
    let port = reactor
        .listen_unix_datagram(
            &port_path,
            Unanswered {
                to: Address::Unix(Some(receiver_path.clone())),
                total: TOTAL,
                failures: Rc::clone(&failures),
            },
            None,
        )
        .unwrap();
    reactor.run().unwrap();
    let failures = failures.borrow();
    // Each datagram was given up on the writable event that sent nothing
    // while the socket still reported room.
    assert_eq!(failures.len(), TOTAL);
    assert!(failures
        .iter()
        .all(|kind| *kind == std::io::ErrorKind::WouldBlock));
    assert_eq!(port.send_queue_len(), 0);
    drop(fillers);
    drop(receiver);
    let _ = std::fs::remove_file(&receiver_path);
}

/// Runs `script` in the first turn; logs what it hears; stops the reactor
/// on a datagram "stop" or when `stop_after` events were heard.
struct Scripted {
    script: Option<Box<dyn FnOnce(DatagramTransportRef)>>,
    log: Log,
    stop_after: usize,
}

impl Scripted {
    fn new(
        log: &Log,
        stop_after: usize,
        script: impl FnOnce(DatagramTransportRef) + 'static,
    ) -> Self {
        Scripted {
            script: Some(Box::new(script)),
            log: log.clone(),
            stop_after,
        }
    }

    fn heard(&mut self, transport: &DatagramTransportRef, what: String) {
        self.log.borrow_mut().push(what);
        if self.log.borrow().len() == self.stop_after {
            transport.reactor().unwrap().stop().unwrap();
        }
    }
}

impl DatagramProtocol for Scripted {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        let script = self.script.take().unwrap();
        let transport = transport.clone();
        transport
            .reactor()
            .unwrap()
            .call_soon(move |_| script(transport));
    }
    fn datagram_received(
        &mut self,
        transport: &DatagramTransportRef,
        data: &[u8],
        _from: &Address,
    ) {
        assert_eq!(data, b"stop");
        transport.reactor().unwrap().stop().unwrap();
    }
    fn connection_refused(&mut self, transport: &DatagramTransportRef) {
        self.heard(transport, "refused".into());
    }
    fn send_failed(
        &mut self,
        transport: &DatagramTransportRef,
        to: Option<&Address>,
        error: &std::io::Error,
    ) {
        self.heard(transport, format!("failed {to:?} {:?}", error.kind()));
    }
}

#[test]
fn a_datagram_written_before_connecting_elsewhere_goes_to_the_peer_it_was_written_for() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let (a, b) = (client(), client());
    let (to_a, to_b) = (
        Address::Udp(a.local_addr().unwrap()),
        Address::Udp(b.local_addr().unwrap()),
    );
    let port = reactor
        .listen_udp_with(
            0,
            Scripted::new(&log, 0, move |transport| {
                transport.connect(&to_a).unwrap();
                transport.write(b"for a").unwrap();
                transport.connect(&to_b).unwrap();
                transport.write(b"for b").unwrap();
            }),
            local(),
        )
        .unwrap();
    // Ends the run once the script has written (the port, connected to b
    // by then, still hears it: it was queued before the connect).
    b.send_to(b"stop", port.get_host().socket_addr().unwrap())
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(receive_texts(&a, 1), ["for a"]);
    assert_eq!(receive_texts(&b, 1), ["for b"]);
    assert!(log.borrow().is_empty(), "{:?}", log.borrow());
}

#[test]
fn a_queued_datagram_to_a_unix_path_without_a_listener_is_a_send_failure_naming_it() {
    use std::os::unix::net::UnixDatagram;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let dead_path = socket_path("dgram-dead-receiver");
    let port_path = socket_path("dgram-dead-port");
    // The socket file stays after its socket closes: sending to it is
    // refused (ECONNREFUSED), as a port with no listener.
    drop(UnixDatagram::bind(&dead_path).unwrap());
    let dead = Address::Unix(Some(dead_path.clone()));
    let to = dead.clone();
    let _port = reactor
        .listen_unix_datagram(
            &port_path,
            Scripted::new(&log, 1, move |transport| {
                transport.write_to(b"anyone?", &to).unwrap();
            }),
            None,
        )
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [format!("failed {:?} ConnectionRefused", Some(&dead))]
    );
    let _ = std::fs::remove_file(&dead_path);
}

/// Fills the queue of the Unix datagram socket at `path` with datagrams
/// "fill" from fresh sockets (each sends at most 100, far below its own
/// send buffer, so a refusal means the receiver is full), whatever the
/// host's queue length. Returns the senders (their datagrams stay queued).
fn fill_receiver(path: &std::path::Path) -> Vec<std::os::unix::net::UnixDatagram> {
    use std::os::unix::net::UnixDatagram;
    let mut fillers = Vec::new();
    loop {
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        for _ in 0..100 {
            match filler.send_to(b"fill", path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    fillers.push(filler);
                    return fillers;
                }
                Err(e) => panic!("{e}"),
            }
        }
        fillers.push(filler);
    }
}

#[test]
fn two_ports_waiting_on_one_full_receiver_lose_nothing_when_one_takes_the_room() {
    use std::os::unix::net::UnixDatagram;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let receiver_path = socket_path("dgram-shared-receiver");
    let receiver = Rc::new(UnixDatagram::bind(&receiver_path).unwrap());
    receiver.set_nonblocking(true).unwrap();
    let fillers = fill_receiver(&receiver_path);
    let log: Log = Rc::default();
    let got: Log = Rc::default();
    let mut ports = Vec::new();
    for name in ["x", "y"] {
        let port = reactor
            .connect_unix_datagram(
                &receiver_path,
                Scripted::new(&log, 1, move |transport| {
                    // Queued; the full receiver blocks it.
                    transport.write(name.as_bytes()).unwrap();
                }),
                None,
            )
            .unwrap();
        ports.push(port);
    }
    // Once both wait: read one datagram, so both ports hear they may
    // write and one takes the room; then read everything, each turn,
    // until both datagrams arrived.
    fn drain(reactor: &Reactor, receiver: Rc<UnixDatagram>, got: Log, first: bool) {
        let mut buf = [0u8; 16];
        while let Ok(n) = receiver.recv(&mut buf) {
            if &buf[..n] != b"fill" {
                got.borrow_mut()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if first {
                break;
            }
        }
        if got.borrow().len() == 2 {
            reactor.stop().unwrap();
        } else {
            reactor.call_soon(move |reactor| drain(reactor, receiver, got, false));
        }
    }
    let (receiver2, got2) = (receiver.clone(), got.clone());
    reactor.call_soon(move |reactor| {
        reactor.call_soon(move |reactor| drain(reactor, receiver2, got2, true));
    });
    reactor.run().unwrap();
    assert!(log.borrow().is_empty(), "{:?}", log.borrow());
    let mut got = got.borrow().clone();
    got.sort();
    assert_eq!(got, ["x", "y"]);
    drop(fillers);
    drop(receiver);
    let _ = std::fs::remove_file(&receiver_path);
}

/// Writes two datagrams to `to` in one turn; stops listening on the first
/// failure it hears; stops the reactor when the port stops.
struct StopOnFailure {
    to: Address,
    log: Log,
    reactor: Reactor,
}

impl DatagramProtocol for StopOnFailure {
    fn start_protocol(&mut self, transport: &DatagramTransportRef) {
        let (to, transport) = (self.to.clone(), transport.clone());
        self.reactor.call_soon(move |_| {
            transport.write_to(b"one", &to).unwrap();
            transport.write_to(b"two", &to).unwrap();
        });
    }
    fn datagram_received(&mut self, _t: &DatagramTransportRef, _data: &[u8], _from: &Address) {
        unreachable!("nobody answers");
    }
    fn send_failed(
        &mut self,
        transport: &DatagramTransportRef,
        _to: Option<&Address>,
        error: &std::io::Error,
    ) {
        self.log
            .borrow_mut()
            .push(format!("failed {:?}", error.kind()));
        transport.stop_listening();
    }
    fn stop_protocol(&mut self) {
        self.log.borrow_mut().push("stop".into());
        self.reactor.stop().unwrap();
    }
}

#[test]
fn a_port_stopped_from_send_failed_hears_no_more_failures() {
    use std::os::unix::net::UnixDatagram;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let dead_path = socket_path("dgram-stop-dead");
    let port_path = socket_path("dgram-stop-port");
    drop(UnixDatagram::bind(&dead_path).unwrap());
    let port = reactor
        .listen_unix_datagram(
            &port_path,
            StopOnFailure {
                to: Address::Unix(Some(dead_path.clone())),
                log: log.clone(),
                reactor: reactor.clone(),
            },
            None,
        )
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["failed ConnectionRefused", "stop"]);
    assert!(port.is_closed());
    let _ = std::fs::remove_file(&dead_path);
}

/// The datagrams `Plan` writes to receiver `r` of `receivers`: sizes that
/// form runs (equal sizes, then a shorter one), break them (a larger one,
/// an empty one, one over the GSO segment limit), interleaved across the
/// receivers; each starts with its receiver and sequence number.
fn planned(r: usize) -> Vec<Vec<u8>> {
    const SIZES: [usize; 16] = [
        64, 64, 64, 20, 64, 64, 100, 100, 0, 100, 1500, 64, 64, 30, 30, 30,
    ];
    (0..48)
        .map(|i| {
            let size = SIZES[(i + r) % SIZES.len()] + r % 2;
            let mut data = format!("{r}:{i}:").into_bytes();
            data.resize(size.max(data.len()), b'a' + (i % 26) as u8);
            if SIZES[(i + r) % SIZES.len()] == 0 {
                data.clear();
            }
            data
        })
        .collect()
}

/// On "go", writes every receiver's planned datagrams, interleaved, in one
/// turn, then stops the reactor. A send failure would fail the test.
struct Plan {
    receivers: Vec<Address>,
}

impl DatagramProtocol for Plan {
    fn datagram_received(
        &mut self,
        transport: &DatagramTransportRef,
        _data: &[u8],
        _from: &Address,
    ) {
        let plans: Vec<Vec<Vec<u8>>> = (0..self.receivers.len()).map(planned).collect();
        let count = plans[0].len();
        for i in 0..count {
            for (plan, to) in plans.iter().zip(&self.receivers) {
                transport.write_to(&plan[i], to).unwrap();
            }
        }
        transport.reactor().unwrap().stop().unwrap();
    }
    fn send_failed(
        &mut self,
        _transport: &DatagramTransportRef,
        to: Option<&Address>,
        error: &std::io::Error,
    ) {
        panic!("send to {to:?} failed: {error}");
    }
}

/// Runs `Plan` on a port (set up by `prepare`) towards three receivers and
/// checks that each got exactly its datagrams, whole and in order, and
/// nothing more. Returns the port.
fn run_plan(prepare: impl FnOnce(&DatagramTransportRef)) -> DatagramTransportRef {
    let (_watchdog, reactor) = reactor();
    let receivers = [client(), client(), client()];
    let addresses = receivers
        .iter()
        .map(|r| Address::Udp(r.local_addr().unwrap()))
        .collect();
    let port = reactor
        .listen_udp_with(
            0,
            Plan {
                receivers: addresses,
            },
            local(),
        )
        .unwrap();
    prepare(&port);
    let addr = port.get_host().socket_addr().unwrap();
    client().send_to(b"go", addr).unwrap();
    reactor.run().unwrap();
    let mut buf = [0u8; 2048];
    for (r, receiver) in receivers.iter().enumerate() {
        for (i, expected) in planned(r).iter().enumerate() {
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &expected[..], "receiver {r}, datagram {i}");
        }
        // Everything was sent before `run` returned, and loopback delivers
        // at once: anything more would be a duplicate.
        receiver.set_nonblocking(true).unwrap();
        let more = receiver.recv(&mut buf);
        assert_eq!(
            more.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "receiver {r} got more"
        );
    }
    assert_eq!(port.send_queue_len(), 0);
    port
}

#[test]
fn datagrams_of_mixed_sizes_and_destinations_arrive_whole_and_in_order_per_destination() {
    let _fds = DescriptorGuard::new();
    let port = run_plan(|_| {});
    // 144 datagrams in one turn: three `sendmmsg` of up to 64 messages.
    assert!(port.send_calls() <= 3, "{} send calls", port.send_calls());
    if cfg!(target_os = "linux") {
        // Linux 4.18 and later: runs to one receiver went as GSO buffers.
        assert!(port.segmentation_offload());
        assert!(port.segmented_datagrams() > 0);
    } else {
        assert!(!port.segmentation_offload());
        assert_eq!(port.segmented_datagrams(), 0);
    }
}

#[test]
fn datagrams_go_one_per_message_when_segmentation_is_turned_off() {
    let _fds = DescriptorGuard::new();
    let port = run_plan(|port| port.set_segmentation_offload(false));
    assert!(!port.segmentation_offload());
    assert_eq!(port.segmented_datagrams(), 0);
    assert!(port.send_calls() <= 3, "{} send calls", port.send_calls());
}

/// A kernel that refuses GSO buffers: Linux refuses them (`EINVAL`) on a
/// socket that sends without UDP checksums (`SO_NO_CHECK`), and takes the
/// same datagrams one by one.
#[cfg(target_os = "linux")]
#[test]
fn a_kernel_that_refuses_gso_turns_it_off_and_loses_or_repeats_nothing() {
    let _fds = DescriptorGuard::new();
    let port = run_plan(|port| {
        assert!(port.segmentation_offload());
        send_without_checksums(port);
    });
    assert!(!port.segmentation_offload(), "still on after a refusal");
    assert_eq!(port.segmented_datagrams(), 0);
    // The refused buffer's call, its datagrams one per message, then the
    // batches one datagram per message.
    let calls = port.send_calls();
    assert!((3..=5).contains(&calls), "{calls} send calls");
}

/// Makes the port's socket send without UDP checksums (`SO_NO_CHECK`),
/// on which Linux refuses every GSO buffer with `EINVAL`.
#[cfg(target_os = "linux")]
fn send_without_checksums(port: &DatagramTransportRef) {
    let fd = port.fileno().unwrap();
    let on: libc::c_int = 1;
    // SAFETY: a c_int option on the port's open socket.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
}

/// Writes datagrams of `sizes` to one receiver from a port whose GSO
/// buffers are all refused (`EINVAL`); returns the port, the send failures
/// it heard, the datagrams the reactor counted sent and the sizes received.
#[cfg(target_os = "linux")]
fn refused_run(sizes: &[usize]) -> (DatagramTransportRef, Vec<String>, u64, Vec<usize>) {
    let (_watchdog, reactor) = reactor();
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let to = Address::Udp(receiver.local_addr().unwrap());
    let plan: Vec<_> = sizes.iter().map(|&size| (to.clone(), size, b'x')).collect();
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let port = reactor
        .listen_udp_with(
            0,
            Review {
                plan,
                failures: failures.clone(),
            },
            local(),
        )
        .unwrap();
    send_without_checksums(&port);
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .send_to(b"go", port.get_host().socket_addr().unwrap())
        .unwrap();
    reactor.run().unwrap();
    let sent = reactor.stats().datagrams_sent;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65_536];
    receiver.set_nonblocking(true).unwrap();
    while let Ok(n) = receiver.recv(&mut buf) {
        received.push(n);
    }
    let failures = failures.borrow().clone();
    (port, failures, sent, received)
}

/// A refused run of large segments (`EINVAL`) that then goes through one
/// by one: the refusal was about segmentation, possibly about the size, so
/// segments that large stop being grouped; GSO stays on for smaller ones.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_run_of_large_segments_lowers_the_limit_and_keeps_gso() {
    let _fds = DescriptorGuard::new();
    let (port, failures, sent, received) = refused_run(&[1300; 8]);
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(sent, 8);
    assert_eq!(received, vec![1300; 8]);
    assert!(port.segmentation_offload());
    // The refused buffer, then its datagrams one per message.
    assert_eq!(port.send_calls(), 2);
}

/// Then a refused run of small segments: the kernel refuses segmentation
/// itself, and GSO turns off; everything arrives once, in order.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_run_of_small_segments_turns_gso_off() {
    let _fds = DescriptorGuard::new();
    let mut sizes = vec![1300; 4];
    sizes.push(1400);
    sizes.extend([200; 6]);
    let (port, failures, sent, received) = refused_run(&sizes);
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(sent, sizes.len() as u64);
    assert_eq!(received, sizes);
    assert!(!port.segmentation_offload());
    assert_eq!(port.segmented_datagrams(), 0);
}

/// On "go", writes `plan` (destination, size, fill byte) in one turn, then
/// stops the reactor; keeps the send failures it hears.
#[cfg(target_os = "linux")]
struct Review {
    plan: Vec<(Address, usize, u8)>,
    failures: Rc<RefCell<Vec<String>>>,
}

#[cfg(target_os = "linux")]
impl DatagramProtocol for Review {
    fn datagram_received(&mut self, t: &DatagramTransportRef, _: &[u8], _: &Address) {
        for (to, size, fill) in &self.plan {
            t.write_to(&vec![*fill; *size], to).unwrap();
        }
        t.reactor().unwrap().stop().unwrap();
    }
    fn send_failed(&mut self, _: &DatagramTransportRef, to: Option<&Address>, e: &std::io::Error) {
        self.failures
            .borrow_mut()
            .push(format!("{to:?}: {}", e.raw_os_error().unwrap_or(0)));
    }
}

/// Runs `Review` on a port bound on `host`: the port, the failures heard,
/// and the datagrams the reactor counted as sent.
#[cfg(target_os = "linux")]
fn review_run(
    host: std::net::IpAddr,
    plan: Vec<(Address, usize, u8)>,
) -> (DatagramTransportRef, Vec<String>, u64) {
    let (_w, reactor) = reactor();
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let port = reactor
        .listen_udp_with(
            0,
            Review {
                plan,
                failures: failures.clone(),
            },
            UdpOptions {
                interface: host,
                ..UdpOptions::default()
            },
        )
        .unwrap();
    assert!(port.segmentation_offload());
    UdpSocket::bind((host, 0))
        .unwrap()
        .send_to(b"go", port.get_host().socket_addr().unwrap())
        .unwrap();
    reactor.run().unwrap();
    let sent = reactor.stats().datagrams_sent;
    let f = failures.borrow().clone();
    (port, f, sent)
}

/// Linux refuses a datagram to port 0 with `EINVAL`, as it refuses some GSO
/// buffers: a run to port 0 must not turn GSO off for the other
/// destinations.
#[cfg(target_os = "linux")]
#[test]
fn einval_for_one_destination_leaves_gso_on_for_the_port() {
    let _fds = DescriptorGuard::new();
    let zero = Address::Udp("127.0.0.1:0".parse().unwrap());
    let (port, failures, _) = review_run(
        Ipv4Addr::LOCALHOST.into(),
        vec![(zero.clone(), 64, b'z'), (zero, 64, b'z')],
    );
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        port.segmentation_offload(),
        "one refused destination turned GSO off for the whole port"
    );
}

/// A run to a destination the kernel refuses costs one refused call and
/// then one call per datagram, as without GSO (not a refused buffer again
/// for each of them).
#[cfg(target_os = "linux")]
#[test]
fn a_refused_run_goes_one_per_message_until_settled() {
    let _fds = DescriptorGuard::new();
    let zero = Address::Udp("127.0.0.1:0".parse().unwrap());
    let (port, failures, _) = review_run(Ipv4Addr::LOCALHOST.into(), vec![(zero, 64, b'z'); 4]);
    assert_eq!(failures.len(), 4, "{failures:?}");
    assert_eq!(port.send_calls(), 5);
    assert!(port.segmentation_offload());
}

/// A datagram the kernel refuses in the middle of a batch: it alone fails,
/// the runs before and after it go whole, once.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_datagram_in_a_batch_fails_alone_and_nothing_is_sent_twice() {
    let _fds = DescriptorGuard::new();
    let (a, b) = (client(), client());
    let (ta, tb) = (
        Address::Udp(a.local_addr().unwrap()),
        Address::Udp(b.local_addr().unwrap()),
    );
    let zero = Address::Udp("127.0.0.1:0".parse().unwrap());
    let plan = vec![
        (ta.clone(), 100, b'a'),
        (zero, 100, b'z'),
        (tb.clone(), 100, b'b'),
        (ta.clone(), 100, b'a'),
        (tb.clone(), 100, b'b'),
        (ta, 100, b'a'),
        (tb, 100, b'b'),
    ];
    let (port, failures, sent) = review_run(Ipv4Addr::LOCALHOST.into(), plan);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains(":0"));
    let mut buf = [0u8; 2048];
    for (s, fill) in [(&a, b'a'), (&b, b'b')] {
        for _ in 0..3 {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[fill; 100][..]);
        }
        s.set_nonblocking(true).unwrap();
        assert!(s.recv(&mut buf).is_err(), "a duplicate");
    }
    assert_eq!(sent, 6);
    assert_eq!(port.segmented_datagrams(), 6);
    assert!(port.segmentation_offload());
}

/// Sends runs of four datagrams of each of `sizes` bytes from a port on
/// `host` to a socket on `host`: none fails, each arrives whole and once,
/// GSO stays on; returns the port's send calls.
#[cfg(target_os = "linux")]
fn mtu_run(host: std::net::IpAddr, sizes: &[usize]) -> u64 {
    let _fds = DescriptorGuard::new();
    let receiver = UdpSocket::bind((host, 0)).unwrap();
    let to = Address::Udp(receiver.local_addr().unwrap());
    let plan: Vec<_> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &size)| std::iter::repeat_n((to.clone(), size, b'a' + i as u8), 4))
        .collect();
    let (port, failures, sent) = review_run(host, plan.clone());
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(sent, plan.len() as u64);
    let mut buf = vec![0u8; 65_536];
    for (_, size, fill) in &plan {
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &vec![*fill; *size][..]);
    }
    receiver.set_nonblocking(true).unwrap();
    assert!(receiver.recv(&mut buf).is_err(), "a duplicate");
    assert!(port.segmentation_offload());
    port.send_calls()
}

/// Full IPv6 segments over a 1,500-byte MTU: 1,452 bytes go as GSO
/// buffers, 1,472 (too large for IPv6 headers) alone, nothing refused.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs lo with MTU 1500: ip netns exec <ns> (ip link set lo up mtu 1500), then --ignored"]
fn ipv6_segments_fit_a_1500_byte_mtu() {
    let calls = mtu_run(std::net::Ipv6Addr::LOCALHOST.into(), &[1452, 1472, 1452]);
    assert_eq!(calls, 1, "a buffer was refused");
}

/// A route with a smaller MTU than the segment limit: the kernel refuses
/// the buffer (`EMSGSIZE`), its datagrams go alone (fragmented), GSO stays
/// on, and the port stops sending such segments as GSO buffers rather than
/// being refused again: the second run of 1,472-byte segments, after the
/// 1,000-byte ones, is not refused (without the lowered limit: 5 calls).
#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs lo with MTU 1400: ip netns exec <ns> (ip link set lo up mtu 1400), then --ignored"]
fn segments_above_the_route_mtu_are_refused_once_and_sent_alone() {
    let calls = mtu_run(Ipv4Addr::LOCALHOST.into(), &[1472, 1000, 1472]);
    assert_eq!(calls, 3);
}
