//! `register_edge` watches a source edge-triggered on the direct epoll
//! backend (readiness reported once, not on every turn while it lasts) and
//! as `register` does on the portable one; either way a change of interest
//! reports again what is ready.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

mod support;

use torsion_reactor::testing::{DescriptorGuard, Watchdog};
use torsion_reactor::{Handler, Interest, Reactor, Readiness};

use support::Recorder;

#[test]
fn an_edge_registration_reports_unread_data_once_and_again_after_a_change_of_interest() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reactor = Reactor::new().unwrap();
    let (ours, mut peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let recorder = Rc::new(Recorder::default());
    let registration = reactor
        .register_edge(ours, Interest::READABLE, recorder.clone())
        .unwrap();
    assert_eq!(
        registration.is_edge_triggered(),
        cfg!(all(target_os = "linux", not(feature = "polling-backend"))),
        "edge-triggered exactly where the poller can"
    );
    peer.write_all(b"x").unwrap();
    // Nobody reads the byte: three turns that do not wait.
    for _ in 0..3 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    let heard = recorder.heard.borrow().len();
    if registration.is_edge_triggered() {
        assert_eq!(heard, 1, "unread data is reported once");
    } else {
        assert_eq!(heard, 3, "level-triggered: reported on every turn");
    }
    // A change of interest has the poller look again.
    registration
        .set_interest(Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    reactor.iterate(Duration::ZERO).unwrap();
    let heard_now = recorder.heard.borrow();
    assert_eq!(heard_now.len(), heard + 1);
    assert!(heard_now.last().unwrap().is_readable());
    assert!(heard_now.last().unwrap().is_writable());
}

/// Counts the wake-ups it hears.
struct CountWakes(Rc<std::cell::Cell<usize>>);

impl Handler for CountWakes {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        if readiness.is_woken() {
            self.0.set(self.0.get() + 1);
        }
    }
}

#[test]
fn a_wake_reaches_only_the_registration_it_was_for_and_once() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let reactor = Reactor::new().unwrap();
    let (a, _a_peer) = UnixStream::pair().unwrap();
    let (b, _b_peer) = UnixStream::pair().unwrap();
    let first_wakes = Rc::new(std::cell::Cell::new(0));
    let first = reactor
        .register(a, Interest::NONE, Rc::new(CountWakes(first_wakes.clone())))
        .unwrap();
    first.wake();
    first.wake();
    // Dropped while queued: its key goes to the next registration, which
    // must not get the first one's wake-up as well as its own.
    drop(first);
    let second_wakes = Rc::new(std::cell::Cell::new(0));
    let second = reactor
        .register(b, Interest::NONE, Rc::new(CountWakes(second_wakes.clone())))
        .unwrap();
    second.wake();
    second.wake();
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(first_wakes.get(), 0);
    assert_eq!(
        second_wakes.get(),
        1,
        "woken twice before its dispatch: dispatched once"
    );
    // Woken again after its dispatch: dispatched again.
    second.wake();
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(second_wakes.get(), 2);
}
