//! Connections are watched edge-triggered on Linux: the kernel reports a
//! socket's readiness when it arises, not on every turn while it lasts.
//! A read that stops short usually means the socket is drained, but not
//! when the kernel stopped it before something else: the peer's end of
//! stream, or an urgent byte. These tests queue such input before the
//! server first looks, and check that nothing behind the short read is
//! stranded. (Unix connections stay level-triggered: their reads stop
//! short after a message that carried descriptors, which the readiness
//! does not tell; the last test checks that case.)
#![cfg(target_os = "linux")]

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::socket2::SockRef;
use torsion_protocol::testing::{socket_path, DescriptorGuard};
use torsion_protocol::{
    CloseReason, Protocol, Reactor, ReactorUnix, TransportRef, UnixListenOptions,
};

/// What a server connection heard, in order.
type Log = Rc<RefCell<Vec<String>>>;

struct Record(Log);

impl Protocol for Record {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0
            .borrow_mut()
            .push(String::from_utf8_lossy(data).into_owned());
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.0.borrow_mut().push(format!("lost: {reason}"));
    }
}

/// Turns the loop until `done` says so, each turn waiting at most 100 ms
/// for an event; false if that took more than 50 turns.
fn turn_until(reactor: &Reactor, done: impl Fn() -> bool) -> bool {
    for _ in 0..50 {
        if done() {
            return true;
        }
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    done()
}

/// A server on a loopback port whose connections record what they hear
/// into the returned log, and its address.
fn recording_server(reactor: &Reactor) -> (Log, std::net::SocketAddr) {
    let log: Log = Rc::default();
    let record = log.clone();
    let addr = support::listen(reactor, move || Record(record.clone()));
    (log, addr)
}

/// True once a connection that records into `log` was lost.
fn lost(log: &Log) -> bool {
    log.borrow().iter().any(|entry| entry.starts_with("lost"))
}

fn received(log: &Log) -> String {
    log.borrow()
        .iter()
        .filter(|entry| !entry.starts_with("lost"))
        .map(String::as_str)
        .collect()
}

#[test]
fn a_request_and_the_end_of_stream_behind_it_are_both_read() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    let (log, addr) = recording_server(&reactor);
    // The request and the end of stream are both queued before the server
    // accepts: one readiness event tells of both, and the read of the
    // request stops short before the end.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert!(
        turn_until(&reactor, || lost(&log)),
        "the end of stream behind the request was never read: {:?}",
        log.borrow()
    );
    assert_eq!(received(&log), "GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn bytes_behind_an_urgent_byte_are_not_stranded() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    let (log, addr) = recording_server(&reactor);
    // "abc", an urgent byte, "def", all queued before the server reads. A
    // TCP read stops short at the urgent mark; the urgent byte itself is
    // out of band (not in the stream) and the read after it goes on.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"abc").unwrap();
    SockRef::from(&client).send_out_of_band(b"!").unwrap();
    client.write_all(b"def").unwrap();
    assert!(
        turn_until(&reactor, || received(&log) == "abcdef"),
        "bytes behind the urgent byte were stranded: {:?}",
        log.borrow()
    );
    drop(client);
    assert!(turn_until(&reactor, || lost(&log)));
}

/// Half-closes its writing side at the first data and pauses reading,
/// then resumes reading when told the half-close is done: the step the
/// driver runs after that callback reads what the first step left.
struct HalfCloser {
    log: Log,
    first: bool,
}

impl Protocol for HalfCloser {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(String::from_utf8_lossy(data).into_owned());
        if std::mem::take(&mut self.first) {
            transport.lose_write_connection();
            transport.pause_reading();
        }
    }
    fn half_closeable(&self) -> bool {
        true
    }
    fn write_connection_lost(&mut self, transport: &TransportRef) {
        transport.resume_reading();
    }
}

#[test]
fn bytes_read_by_the_step_after_a_half_close_callback_reach_the_protocol() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    let log: Log = Rc::default();
    let record = log.clone();
    let addr = support::listen(&reactor, move || HalfCloser {
        log: record.clone(),
        first: true,
    });
    // More than one read buffer queued before the server first reads, so
    // its first read is full and leaves bytes behind.
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut total = 0;
    while total < 160 * 1024 {
        match client.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(total > 64 * 1024, "queued only {total}");
    assert!(
        turn_until(&reactor, || received(&log).len() == total),
        "received {} of {total}",
        received(&log).len()
    );
}

/// Sends `data` on `stream` with one descriptor attached (`SCM_RIGHTS`).
fn send_with_descriptor(stream: &UnixStream, data: &[u8], fd: RawFd) {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: the message points at `iov`, `data` and `control`, which
    // outlive the call; `control` is aligned for a control message header
    // and larger than CMSG_SPACE of one descriptor, the header written is
    // the first and only one, and its data holds exactly one descriptor.
    let sent = unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(stream.as_raw_fd(), &msg, 0)
    };
    assert_eq!(
        sent,
        data.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn bytes_behind_a_message_carrying_a_descriptor_are_not_stranded() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    let path = socket_path("edges-descriptor");
    let log: Log = Rc::default();
    let record = log.clone();
    let _port = reactor
        .listen_unix(
            &path,
            support::Build(move || Record(record.clone())),
            UnixListenOptions::default(),
        )
        .unwrap();
    // Both queued before the server first reads: a Unix stream read stops
    // after the first message, because it carried a descriptor (which the
    // server does not take: the kernel closes it).
    let mut client = UnixStream::connect(&path).unwrap();
    send_with_descriptor(&client, b"abc", client.as_raw_fd());
    client.write_all(b"def").unwrap();
    assert!(
        turn_until(&reactor, || received(&log) == "abcdef"),
        "bytes behind the descriptor-carrying message were stranded: {:?}",
        log.borrow()
    );
}

#[test]
fn a_socket_that_is_not_a_stream_is_not_adopted_as_one() {
    use std::net::UdpSocket;
    use torsion_protocol::ReactorSocket;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    // A connected UDP socket reads a datagram at a time: as a stream its
    // short reads would not mean "drained" (and an IP connection is
    // watched edge-triggered), so it is refused rather than half-served.
    let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
    let theirs = UdpSocket::bind("127.0.0.1:0").unwrap();
    ours.connect(theirs.local_addr().unwrap()).unwrap();
    let log: Log = Rc::default();
    let record = log.clone();
    let error = reactor
        .adopt_stream_connection(ours, &support::Build(move || Record(record.clone())))
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
}

#[test]
fn a_multipath_tcp_connection_is_adopted_and_served() {
    use torsion_protocol::socket2::{Domain, Protocol as SocketProtocol, SockAddr, Socket, Type};
    use torsion_protocol::ReactorSocket;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = support::reactor();
    // Linux's IPPROTO_MPTCP (5.6 and later, when net.mptcp.enabled).
    let mptcp = SocketProtocol::from(262);
    let Ok(listener) = Socket::new(Domain::IPV4, Type::STREAM, Some(mptcp)) else {
        println!("\nSKIPPED a_multipath_tcp_connection_is_adopted_and_served: no MPTCP here\n");
        return;
    };
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&SockAddr::from(loopback)).unwrap();
    listener.listen(8).unwrap();
    let client = Socket::new(Domain::IPV4, Type::STREAM, Some(mptcp)).unwrap();
    client.connect(&listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let log: Log = Rc::default();
    let record = log.clone();
    let adopted =
        reactor.adopt_stream_connection(server, &support::Build(move || Record(record.clone())));
    assert!(matches!(adopted, Ok(true)), "{adopted:?}");
    (&client).write_all(b"hello").unwrap();
    assert!(
        turn_until(&reactor, || received(&log) == "hello"),
        "{:?}",
        log.borrow()
    );
}
