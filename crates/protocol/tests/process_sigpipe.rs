//! Writing to a child that has exited is an `EPIPE` error even in a
//! process that does not ignore `SIGPIPE` (Rust programs ignore it; a
//! library embedded in a C program may not). A test binary of its own:
//! the signal's disposition belongs to the whole process.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{
    CloseReason, ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef,
    ReactorProcess, Transport, WeakReactor,
};

struct Writer {
    stdin_errno: Rc<RefCell<Option<Option<i32>>>>,
    reactor: WeakReactor,
}

impl ProcessProtocol for Writer {
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        // More than the pipe holds; `true` never reads and exits.
        transport.write(&vec![b'x'; 1 << 20]);
    }

    fn child_connection_lost(&mut self, _t: &ProcessTransportRef, fd: RawFd, reason: &CloseReason) {
        if fd == 0 {
            let errno = match reason {
                CloseReason::Lost(e) => e.raw_os_error(),
                _ => None,
            };
            *self.stdin_errno.borrow_mut() = Some(errno);
        }
    }

    fn process_ended(&mut self, reason: ProcessReason) {
        assert_eq!(reason, ProcessReason::Done);
        self.reactor.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn writing_to_an_exited_child_is_epipe_not_sigpipe() {
    // SAFETY: restores the default disposition (death on SIGPIPE) for
    // this test binary, which has this one test.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let stdin_errno = Rc::new(RefCell::new(None));
    reactor
        .spawn_process(
            Writer {
                stdin_errno: stdin_errno.clone(),
                reactor: reactor.downgrade(),
            },
            "true",
            [] as [&str; 0],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*stdin_errno.borrow(), Some(Some(libc::EPIPE)));
}
