//! The counters a stream transport keeps in its reactor: a transport
//! that never opened counts no close.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard};
use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration};
use torsion_transport::driver::{Opening, Pipe, StreamTransport};
use torsion_transport::{Address, Transport};

/// A registered Unix stream that refuses interest changes once told
/// to.
struct Plain(Registration<UnixStream>, Rc<Cell<bool>>);

impl Pipe for Plain {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.0.get_ref().write(data)
    }
    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.get_ref().write_vectored(data)
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.get_ref().read(buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.get_ref().shutdown(std::net::Shutdown::Write)
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.0.get_ref().take_error()
    }
    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        if self.1.get() {
            return Err(io::Error::other("refused"));
        }
        self.0.set_interest(interest)
    }
    fn wake(&self) {
        self.0.wake();
    }
}

/// Processes the transport on each event; panics on data if `.1`.
#[derive(Default)]
struct Drive(RefCell<Option<Rc<StreamTransport<Plain>>>>, bool);

impl Handler for Drive {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let transport = self.0.borrow().clone();
        if let Some(transport) = transport {
            let panics = self.1;
            transport.process(readiness, &mut |_| assert!(!panics, "deliberate"));
        }
    }
}

/// A transport opened on one end of a Unix stream pair, processed by
/// `drive`; the other end.
fn open(reactor: &Reactor, drive: &Rc<Drive>) -> (Rc<StreamTransport<Plain>>, UnixStream) {
    let (ours, peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport =
        StreamTransport::new(reactor, Address::Unknown, Opening::Open, |_, interest| {
            let registration = reactor.register(ours, interest, drive.clone())?;
            Ok(Plain(registration, Rc::default()))
        })
        .unwrap();
    *drive.0.borrow_mut() = Some(transport.clone());
    (transport, peer)
}

#[test]
fn bytes_handed_to_a_handler_that_panics_are_counted() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let drive = Rc::new(Drive(RefCell::default(), true));
    let (transport, mut peer) = open(&reactor, &drive);
    peer.write_all(b"hello").unwrap();
    while reactor.stats().callbacks_panicked == 0 {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(reactor.stats().bytes_read, 5);
    drive.0.borrow_mut().take();
    drop(transport);
}

#[test]
fn a_transport_that_fails_while_connecting_counts_no_close() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (ours, _peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let drive = Rc::new(Drive::default());
    let refuse = Rc::new(Cell::new(false));
    let transport = StreamTransport::new(
        &reactor,
        Address::Unknown,
        Opening::Connecting,
        |_, interest| {
            let registration = reactor.register(ours, interest, drive.clone())?;
            Ok(Plain(registration, refuse.clone()))
        },
    )
    .unwrap();
    *drive.0.borrow_mut() = Some(transport.clone());
    // Fails before the connect finished (the interest change that pausing
    // reading asks for fails): it never opened.
    refuse.set(true);
    transport.pause_reading();
    while !transport.is_closed() {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    let stats = reactor.stats();
    assert_eq!(stats.connections_opened, 0);
    assert_eq!(stats.closed.total(), 0);
    drive.0.borrow_mut().take();
}
