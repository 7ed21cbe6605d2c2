//! SIGTERM stops a running reactor in order. Alone in its own test binary,
//! so the signal reaches no other test's reactor.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::Watchdog;
use torsion_reactor::{Phase, Reactor, SystemEvent};

fn disposition(signal: libc::c_int) -> libc::sighandler_t {
    // SAFETY: querying (null new action) into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[test]
fn sigterm_runs_the_shutdown_sequence_and_handlers_are_restored() {
    assert_eq!(disposition(libc::SIGTERM), libc::SIG_DFL);
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let log = Rc::new(RefCell::new(Vec::new()));
    for phase in [Phase::Before, Phase::After] {
        let log = log.clone();
        reactor.add_system_event_trigger(phase, SystemEvent::Shutdown, move |_| {
            log.borrow_mut().push(format!("{phase:?}"))
        });
    }
    reactor.call_when_running(|_| {
        assert_ne!(disposition(libc::SIGTERM), libc::SIG_DFL);
        // SAFETY: sends a signal to this very process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    });
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["Before", "After"]);
    assert_eq!(disposition(libc::SIGTERM), libc::SIG_DFL);
    assert_eq!(disposition(libc::SIGINT), libc::SIG_DFL);
}
