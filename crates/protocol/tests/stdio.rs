//! StandardIo in process, over pipes the test makes: half-close (our
//! output ends while reading goes on), the end of input, and a shared
//! description that stays blocking.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{CloseReason, Protocol, StandardIo, TransportRef, WeakReactor};

/// (read end, write end) of a new pipe.
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are new and owned by no one else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

fn nonblocking(file: &File) -> bool {
    // SAFETY: F_GETFL reads the description's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags & libc::O_NONBLOCK != 0
}

/// Echoes; on "half" closes its output; at the end of input closes.
struct HalfEcho {
    events: Rc<RefCell<Vec<String>>>,
    reactor: WeakReactor,
}

impl Protocol for HalfEcho {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.events
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data)));
        if data == b"half" {
            transport.lose_write_connection();
        } else {
            transport.write(data);
        }
    }
    fn half_closeable(&self) -> bool {
        true
    }
    fn write_connection_lost(&mut self, _transport: &TransportRef) {
        self.events.borrow_mut().push("write closed".into());
    }
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        self.events.borrow_mut().push("read closed".into());
        transport.lose_connection();
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.events
            .borrow_mut()
            .push(format!("lost {}", reason.is_clean()));
        self.reactor.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn half_close_then_end_of_input_over_pipes() {
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (input_read, mut input_write) = pipe();
    let (mut output_read, output_write) = pipe();
    let events = Rc::new(RefCell::new(Vec::new()));
    let stdio = StandardIo::with_fds(
        &reactor,
        HalfEcho {
            events: events.clone(),
            reactor: reactor.downgrade(),
        },
        input_read.as_raw_fd(),
        Some(output_write.as_raw_fd()),
    )
    .unwrap();
    // The shared descriptions stay blocking.
    assert!(!nonblocking(&input_read) && !nonblocking(&output_write));
    input_write.write_all(b"ping").unwrap();
    // One turn at a time until the echo is out.
    let mut echoed = [0; 4];
    while !events.borrow().iter().any(|e| e == "data ping") {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    reactor.iterate(Duration::ZERO).unwrap();
    output_read.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    input_write.write_all(b"half").unwrap();
    while !events.borrow().iter().any(|e| e == "write closed") {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    // Descriptor `output_write` now holds /dev/null, and our private
    // description of the pipe is closed: the reader sees the end.
    let mut rest = Vec::new();
    output_read.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // Reading goes on until the end of input.
    drop(input_write);
    reactor.run().unwrap();
    assert!(stdio.transport().is_closing());
    assert_eq!(
        *events.borrow(),
        [
            "data ping",
            "data half",
            "write closed",
            "read closed",
            "lost true"
        ]
    );
    drop((input_read, output_write));
}

/// inetd style: standard input and output are the same socket (two
/// descriptors of it). Closing our output must reach the peer as the end
/// of stream while reading goes on.
#[test]
fn half_close_over_one_socket_for_input_and_output_reaches_the_peer() {
    use std::os::unix::net::UnixStream;
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let output = ours.try_clone().unwrap();
    let events = Rc::new(RefCell::new(Vec::new()));
    let _stdio = StandardIo::with_fds(
        &reactor,
        HalfEcho {
            events: events.clone(),
            reactor: reactor.downgrade(),
        },
        ours.as_raw_fd(),
        Some(output.as_raw_fd()),
    )
    .unwrap();
    peer.write_all(b"half").unwrap();
    while !events.borrow().iter().any(|e| e == "write closed") {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    // The peer sees the end of our output (not a socket that stays open
    // through our input's descriptor).
    peer.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match peer.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "{:?}", &buf[..n]),
        Err(e) => panic!("no end of stream at the peer: {e}"),
    }
    // Reading goes on until the end of input.
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    reactor.run().unwrap();
    assert_eq!(
        *events.borrow(),
        ["data half", "write closed", "read closed", "lost true"]
    );
    drop((ours, output));
}
