//! A reactor never spins: an error or hang-up that nobody consumes is
//! reported once, and the source leaves the poller until its interest
//! changes.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

mod support;

use torsion_reactor::testing::{DescriptorGuard, Watchdog};
use torsion_reactor::{Handler, Interest, Reactor, Readiness};

use support::Recorder;

/// Runs the reactor for `window` of real time (a timer stops it) and
/// returns how many turns it made meanwhile.
fn turns_during(reactor: &Reactor, window: Duration) -> u64 {
    let before = reactor.turn_count();
    reactor.call_later(window, |reactor| reactor.stop().unwrap());
    reactor.run().unwrap();
    reactor.turn_count() - before
}

/// Closes `stream` with a reset instead of an orderly close.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid option value of the right size for SO_LINGER, on an
    // open socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(stream);
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server, client)
}

#[test]
fn a_reset_on_a_source_that_wants_nothing_is_reported_once() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let (server, mut client) = tcp_pair();
    let recorder = Rc::new(Recorder::default());
    let registration = reactor
        .register(Rc::new(server), Interest::NONE, recorder.clone())
        .unwrap();
    client.write_all(b"unread").unwrap();
    reset(client);

    // Before the fix the loop turned on every wait (thousands of turns in
    // 100 ms at 100 % of a core).
    let turns = turns_during(&reactor, Duration::from_millis(100));
    assert!(turns <= 3, "the loop turned {turns} times");
    let heard = recorder.heard.borrow().clone();
    assert_eq!(heard.len(), 1, "heard {heard:?}");
    assert!(heard[0].is_error() && heard[0].is_hangup());
    assert!(!heard[0].is_readable() && !heard[0].is_writable());
    let error = registration.get_ref().take_error().unwrap().unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);

    // Wanting to read again puts the source back: the handler hears it.
    registration.set_interest(Interest::READABLE).unwrap();
    reactor.iterate(Duration::from_secs(5)).unwrap();
    let last = *recorder.heard.borrow().last().unwrap();
    assert!(last.is_readable() && last.is_hangup(), "heard {last:?}");
}

#[test]
fn a_hangup_on_a_paused_source_keeps_its_data_for_later() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let recorder = Rc::new(Recorder::default());
    let registration = reactor
        .register(Rc::new(ours), Interest::NONE, recorder.clone())
        .unwrap();
    theirs.write_all(b"kept").unwrap();
    drop(theirs);

    let turns = turns_during(&reactor, Duration::from_millis(100));
    assert!(turns <= 3, "the loop turned {turns} times");
    assert_eq!(recorder.heard.borrow().len(), 1);
    assert!(recorder.heard.borrow()[0].is_hangup());

    let mut data = Vec::new();
    (&**registration.get_ref()).read_to_end(&mut data).unwrap();
    assert_eq!(data, b"kept");
}

#[test]
fn the_peers_end_of_stream_is_reported_with_reading() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let (server, client) = tcp_pair();
    let recorder = Rc::new(Recorder::default());
    let _registration = reactor
        .register(Rc::new(server), Interest::READABLE, recorder.clone())
        .unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    reactor.iterate(Duration::from_secs(5)).unwrap();
    let heard = recorder.heard.borrow()[0];
    assert!(heard.is_readable());
    // Only the direct epoll backend learns of it before the read.
    let direct = cfg!(target_os = "linux") && !cfg!(feature = "polling-backend");
    assert_eq!(heard.is_read_closed(), direct, "heard {heard:?}");
    assert!(!heard.is_hangup());
}

/// Panics on every readiness it hears.
struct Panicker {
    calls: Cell<u32>,
}

impl Handler for Panicker {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        self.calls.set(self.calls.get() + 1);
        panic!("a broken handler");
    }
}

#[test]
fn a_handler_that_panics_is_logged_and_stops_being_watched() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let handler = Rc::new(Panicker {
        calls: Cell::new(0),
    });
    let registration = reactor
        .register(Rc::new(ours), Interest::READABLE, handler.clone())
        .unwrap();
    // Readable, level-triggered, never read: without parking, a panic per
    // turn.
    theirs.write_all(b"x").unwrap();
    let turns = turns_during(&reactor, Duration::from_millis(100));
    assert!(turns <= 3, "the loop turned {turns} times");
    assert_eq!(handler.calls.get(), 1);
    assert_eq!(reactor.caught_panic_count(), 1);
    drop(registration);
}
