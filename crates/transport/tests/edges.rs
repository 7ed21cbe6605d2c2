//! An edge-triggered pipe is not told again about bytes a read left: the
//! transport must come back for them itself. The pipe here serves its
//! bytes from memory (so a test decides exactly what a read finds) and
//! takes its readiness and wake-ups from a registered Unix stream.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

mod support;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard};
use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration};
use torsion_transport::driver::{Opening, Pipe, StreamTransport};
use torsion_transport::{Address, Transport};

use support::Drive;

/// Bytes the pipe holds, served in reads as large as the reader's buffer.
type Held = Rc<RefCell<VecDeque<u8>>>;

struct Scripted {
    registration: Registration<UnixStream>,
    held: Held,
    edge: bool,
    wakes: Rc<Cell<usize>>,
}

impl Pipe for Scripted {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        Ok(data.len())
    }
    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(data.iter().map(|part| part.len()).sum())
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(held.len());
        for (slot, byte) in buf.iter_mut().zip(held.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }
    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        self.registration.set_interest(interest)
    }
    fn wake(&self) {
        self.wakes.set(self.wakes.get() + 1);
        self.registration.wake();
    }
    fn edge_triggered(&self) -> bool {
        self.edge
    }
}

type OnData = support::OnData<Scripted>;

struct Connection {
    transport: Rc<StreamTransport<Scripted>>,
    held: Held,
    wakes: Rc<Cell<usize>>,
    drive: Rc<Drive<Scripted>>,
    peer: UnixStream,
}

fn connect(reactor: &Reactor, edge: bool, on_data: OnData) -> Connection {
    let (ours, peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let held: Held = Rc::default();
    let wakes = Rc::new(Cell::new(0));
    let drive = Drive::new(on_data);
    let transport =
        StreamTransport::new(reactor, Address::Unknown, Opening::Open, |_, interest| {
            Ok(Scripted {
                registration: reactor.register(ours, interest, drive.clone())?,
                held: held.clone(),
                edge,
                wakes: wakes.clone(),
            })
        })
        .unwrap();
    *drive.transport.borrow_mut() = Some(transport.clone());
    Connection {
        transport,
        held,
        wakes,
        drive,
        peer,
    }
}

/// The transport's read buffer: each scripted read fills it.
const READ: usize = torsion_transport::READ_BUFFER_SIZE;

fn counter() -> (Rc<Cell<usize>>, OnData) {
    let received = Rc::new(Cell::new(0));
    let count = received.clone();
    (
        received,
        Box::new(move |_, data| count.set(count.get() + data.len())),
    )
}

#[test]
fn a_read_stopped_at_its_bound_comes_back_for_the_rest() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (received, on_data) = counter();
    let connection = connect(&reactor, true, on_data);
    // More than one event's reads take (the transport reads at most
    // eight buffers per event, then lets other sources go first).
    let total = 20 * READ + 100;
    connection.held.borrow_mut().extend(vec![7u8; total]);
    connection.drive.ready(&reactor, Readiness::READABLE);
    let first = received.get();
    assert!(first < total, "one event reads a bounded amount: {first}");
    assert!(
        connection.wakes.get() > 0,
        "an edge-triggered pipe is not told again: the transport wakes itself"
    );
    for _ in 0..10 {
        if received.get() == total {
            break;
        }
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(
        received.get(),
        total,
        "everything is read, a bound at a time"
    );
    assert!(connection.held.borrow().is_empty());
    // Drained (the last read found nothing more): no further wake-ups.
    let wakes = connection.wakes.get();
    reactor.iterate(Duration::ZERO).unwrap();
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(
        connection.wakes.get(),
        wakes,
        "a drained pipe is left alone"
    );
}

#[test]
fn a_level_triggered_pipe_is_left_to_the_poller() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (received, on_data) = counter();
    let connection = connect(&reactor, false, on_data);
    connection.held.borrow_mut().extend(vec![7u8; 20 * READ]);
    connection.drive.ready(&reactor, Readiness::READABLE);
    assert!(received.get() < 20 * READ);
    assert_eq!(
        connection.wakes.get(),
        0,
        "level-triggered, the poller reports what is left: no wake-up"
    );
}

#[test]
fn bytes_left_when_reading_paused_are_read_once_it_resumes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let received = Rc::new(Cell::new(0));
    let count = received.clone();
    let connection = connect(
        &reactor,
        true,
        Box::new(move |transport, data| {
            count.set(count.get() + data.len());
            // Paused after the first read, with more held.
            transport.pause_reading();
        }),
    );
    let total = 3 * READ;
    connection.held.borrow_mut().extend(vec![1u8; total]);
    connection.drive.ready(&reactor, Readiness::READABLE);
    assert_eq!(received.get(), READ, "paused after one read");
    for _ in 0..3 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(received.get(), READ, "nothing is read while paused");
    // Resumed from outside any step: the poller has nothing new to say
    // about these bytes, so the transport must come back for them.
    for _ in 0..10 {
        if received.get() == total {
            break;
        }
        connection.transport.resume_reading();
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(received.get(), total);
}

#[test]
fn busy_connections_read_a_bounded_amount_per_turn() {
    use std::io::Write;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
    let (first_read, on_first) = counter();
    let (second_read, on_second) = counter();
    let mut first = connect(&reactor, true, on_first);
    let mut second = connect(&reactor, true, on_second);
    for connection in [&mut first, &mut second] {
        connection.held.borrow_mut().extend(vec![0u8; 400 * READ]);
        // A byte nobody reads: the registration (level-triggered) reports
        // the pipe readable on every turn, as a fire hose's new data would.
        connection.peer.write_all(b"!").unwrap();
    }
    for _ in 0..6 {
        let before = (first_read.get(), second_read.get());
        reactor.iterate(Duration::ZERO).unwrap();
        let read = (
            (first_read.get() - before.0) / READ,
            (second_read.get() - before.1) / READ,
        );
        // Eight buffers per event, eight more in the turn's wake-up step
        // (before, each connection was queued once more every turn, and
        // the reads of a turn grew 16, 24, 32, ...).
        assert!(
            read.0 <= 16 && read.1 <= 16,
            "buffers read in one turn: {read:?}"
        );
        assert!(read.0 > 0 && read.1 > 0, "both make progress: {read:?}");
    }
}

/// A connected TCP socket pair, the server's end non-blocking, and the
/// client's address.
fn tcp_pair() -> (
    torsion_transport::socket2::Socket,
    std::net::TcpStream,
    std::net::SocketAddr,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server.into(), client, peer)
}

#[test]
fn tcp_connections_are_edge_triggered_where_the_poller_can_and_unix_ones_never() {
    use torsion_transport::driver::SocketTransport;
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    // What the poller can do: a probe registration.
    let (probe, _other) = UnixStream::pair().unwrap();
    let handler: Rc<dyn Handler> = Rc::new(Quiet);
    let poller_can = reactor
        .register_edge(probe, Interest::READABLE, handler.clone())
        .unwrap()
        .is_edge_triggered();
    let (server, _client, peer) = tcp_pair();
    let tcp = SocketTransport::accepted(&reactor, server, Address::Tcp(peer), |_| handler.clone())
        .unwrap();
    assert_eq!(tcp.is_edge_triggered(), poller_can);
    let (ours, _theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let unix = SocketTransport::accepted(&reactor, ours.into(), Address::Unix(None), |_| {
        handler.clone()
    })
    .unwrap();
    assert!(!unix.is_edge_triggered());
}

/// A handler that ignores what it hears.
struct Quiet;

impl Handler for Quiet {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {}
}
