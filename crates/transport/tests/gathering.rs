//! Write gathering: writes made while the reactor dispatches go out
//! together, in one send per connection and turn, before the loop waits
//! again; writes from outside a turn go out at once. The pipe here is a
//! Unix stream pair that counts its send calls.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

mod support;

use bytes::Bytes;
use torsion_reactor::testing::{guarded_reactor, DescriptorGuard};
use torsion_reactor::{Interest, Reactor, Registration};
use torsion_transport::driver::{Opening, Pipe, StreamTransport};
use torsion_transport::{Address, Transport};

use support::Drive;

/// A registered Unix stream that counts the send calls made on it, and
/// the interest changes asked of it.
struct Counted {
    registration: Registration<UnixStream>,
    sends: Rc<Cell<usize>>,
    interest_changes: Rc<Cell<usize>>,
}

impl Pipe for Counted {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.sends.set(self.sends.get() + 1);
        self.registration.get_ref().write(data)
    }
    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sends.set(self.sends.get() + 1);
        self.registration.get_ref().write_vectored(data)
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.registration.get_ref().read(buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.registration
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.registration.get_ref().take_error()
    }
    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        if interest != self.registration.interest() {
            self.interest_changes.set(self.interest_changes.get() + 1);
        }
        self.registration.set_interest(interest)
    }
    fn wake(&self) {
        self.registration.wake();
    }
}

type OnData = support::OnData<Counted>;

struct Connection {
    transport: Rc<StreamTransport<Counted>>,
    sends: Rc<Cell<usize>>,
    interest_changes: Rc<Cell<usize>>,
    peer: UnixStream,
}

fn connect(reactor: &Reactor, on_data: OnData) -> Connection {
    let (ours, peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let sends = Rc::new(Cell::new(0));
    let interest_changes = Rc::new(Cell::new(0));
    let drive = Drive::new(on_data);
    let transport =
        StreamTransport::new(reactor, Address::Unknown, Opening::Open, |_, interest| {
            Ok(Counted {
                registration: reactor.register(ours, interest, drive.clone())?,
                sends: sends.clone(),
                interest_changes: interest_changes.clone(),
            })
        })
        .unwrap();
    *drive.transport.borrow_mut() = Some(transport.clone());
    Connection {
        transport,
        sends,
        interest_changes,
        peer,
    }
}

/// Everything the peer can read now, without waiting.
fn available(peer: &mut UnixStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return all,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs turns until the transport has read what the peer sent.
fn deliver(reactor: &Reactor, conn: &mut Connection, request: &[u8], seen: &Cell<bool>) {
    conn.peer.write_all(request).unwrap();
    while !seen.get() {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
}

#[test]
fn many_writes_in_one_callback_make_one_send() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    let mut conn = connect(
        &reactor,
        Box::new(move |transport, _data| {
            flag.set(true);
            for i in 0..100 {
                transport.write(format!("reply {i}\r\n").as_bytes());
            }
        }),
    );
    deliver(&reactor, &mut conn, b"go", &seen);
    // One turn read the request and sent all hundred replies at its end,
    // in one call; before gathering, it made a hundred.
    assert_eq!(conn.sends.get(), 1);
    let expected: Vec<u8> = (0..100)
        .flat_map(|i| format!("reply {i}\r\n").into_bytes())
        .collect();
    assert_eq!(available(&mut conn.peer), expected);
    // Nothing was left for later: write interest was never needed.
    assert_eq!(conn.transport.get_write_buffer_size(), 0);
}

#[test]
fn a_write_outside_dispatch_goes_out_at_once() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let mut conn = connect(&reactor, Box::new(|_, _| {}));
    assert!(!reactor.is_dispatching());
    conn.transport.write(b"hello");
    assert_eq!(conn.sends.get(), 1);
    assert_eq!(available(&mut conn.peer), b"hello");
    conn.transport.write(b" again");
    assert_eq!(conn.sends.get(), 2);
    assert_eq!(available(&mut conn.peer), b" again");
}

#[test]
fn order_is_kept_across_write_write_sequence_and_write_bytes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let large: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let large_copy = large.clone();
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    let mut conn = connect(
        &reactor,
        Box::new(move |transport, _data| {
            flag.set(true);
            transport.write(b"a");
            transport.write_sequence(&[b"b", b"", b"cd"]);
            transport.write_bytes(Bytes::from_static(b"ef"));
            transport.write(b"g");
            // Too large to gather: what was gathered goes first, then this.
            transport.write(&large_copy);
            transport.write_bytes(Bytes::from_static(b"h"));
            transport.write_sequence(&[b"i", b"j"]);
        }),
    );
    deliver(&reactor, &mut conn, b"go", &seen);
    let mut expected = b"abcdefg".to_vec();
    expected.extend_from_slice(&large);
    expected.extend_from_slice(b"hij");
    let mut got = available(&mut conn.peer);
    // The large write may not fit the socket buffer at once: let the
    // transport finish when the socket is writable.
    while got.len() < expected.len() {
        reactor.iterate(Duration::from_secs(5)).unwrap();
        got.extend(available(&mut conn.peer));
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes out of order");
}

#[test]
fn writes_from_timers_call_soon_and_other_connections_go_out_in_the_same_turn() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let mut other = connect(&reactor, Box::new(|_, _| {}));
    let target = other.transport.clone();
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    // A callback on one connection writes to another (a chat fan-out).
    let mut conn = connect(
        &reactor,
        Box::new(move |_, data| {
            flag.set(true);
            target.write(b"relayed: ");
            target.write(data);
        }),
    );
    deliver(&reactor, &mut conn, b"hi", &seen);
    assert_eq!(other.sends.get(), 1);
    assert_eq!(available(&mut other.peer), b"relayed: hi");

    // A timer and call_soon work, in one turn: one send at its end.
    let transport = other.transport.clone();
    reactor.call_later(Duration::ZERO, move |reactor| {
        transport.write(b"timer ");
        transport.write(b"timer ");
        reactor.call_soon(move |_| {
            transport.write(b"soon");
        });
    });
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(other.sends.get(), 2);
    assert_eq!(available(&mut other.peer), b"timer timer soon");
    drop(conn);
}

#[test]
fn a_close_after_gathered_writes_sends_them_first() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    let mut conn = connect(
        &reactor,
        Box::new(move |transport, _| {
            flag.set(true);
            transport.write(b"last ");
            transport.write(b"words");
            transport.lose_connection();
        }),
    );
    deliver(&reactor, &mut conn, b"bye", &seen);
    assert!(conn.transport.is_closed());
    assert_eq!(conn.sends.get(), 1);
    // Everything, then end of stream.
    assert_eq!(available(&mut conn.peer), b"last words");
}

#[test]
fn a_step_that_ends_in_a_close_changes_no_interest() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let conn = connect(&reactor, Box::new(|transport, data| transport.write(data)));
    let before = conn.interest_changes.get();
    let Connection {
        transport,
        mut peer,
        interest_changes,
        ..
    } = conn;
    // A short-lived client: its request and its end of stream arrive
    // together; the echo goes out and the connection closes in one step.
    peer.write_all(b"ping").unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    while !transport.is_closed() {
        reactor.iterate(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(available(&mut peer), b"ping");
    // Before: reading stopped at the end of stream (an interest change,
    // one epoll_ctl), and then the close removed the registration anyway.
    assert_eq!(interest_changes.get(), before);
}

/// A streaming producer that writes once each time it is resumed.
struct Resumer {
    transport: RefCell<std::rc::Weak<StreamTransport<Counted>>>,
    resumed: Cell<usize>,
}

impl torsion_transport::Producer for Resumer {
    fn pause_producing(&self) {}
    fn resume_producing(&self) {
        self.resumed.set(self.resumed.get() + 1);
        if let Some(transport) = self.transport.borrow().upgrade() {
            transport.write(b"written on resume");
        }
    }
    fn stop_producing(&self) {}
}

#[test]
fn a_producer_resumed_by_the_end_of_step_send_gets_its_write_sent() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    let producer = Rc::new(Resumer {
        transport: RefCell::new(std::rc::Weak::new()),
        resumed: Cell::new(0),
    });
    let mut conn = connect(
        &reactor,
        Box::new(move |transport, _data| {
            flag.set(true);
            // Gathered above the high watermark: the producer is paused;
            // the end-of-step send drains the queue and resumes it, and it
            // writes from inside that resume.
            transport.write(&[b'x'; 2000]);
        }),
    );
    *producer.transport.borrow_mut() = Rc::downgrade(&conn.transport);
    conn.transport.set_write_buffer_limits(1024, 512);
    conn.transport
        .register_producer(producer.clone(), true)
        .unwrap();
    deliver(&reactor, &mut conn, b"go", &seen);
    // Turns that do not wait: whatever is owed goes out in them.
    for _ in 0..3 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(producer.resumed.get(), 1);
    // Before: the resumed producer's write stayed gathered with nothing
    // to send it (no wake, no write interest) until the peer sent more.
    let got = available(&mut conn.peer);
    assert_eq!(got.len(), 2000 + b"written on resume".len());
    assert_eq!(conn.transport.get_write_buffer_size(), 0);
}
