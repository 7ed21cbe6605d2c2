//! The SIGCHLD fallback's handler, installed over an `SA_SIGINFO`
//! handler that was there first (as signal-hook or tokio install): that
//! handler still runs, with the signal's information. The whole binary
//! is this one test (the first handler to be replaced is this one).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessReason, ReactorProcess, WeakReactor,
};

static CALLS: AtomicUsize = AtomicUsize::new(0);
static LAST_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn previous(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    assert_eq!(signal, libc::SIGCHLD);
    CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    LAST_PID.store(unsafe { (*info).si_pid() }, Ordering::SeqCst);
}

struct Ended(Rc<RefCell<Option<ProcessReason>>>, WeakReactor);

impl ProcessProtocol for Ended {
    fn process_ended(&mut self, reason: ProcessReason) {
        *self.0.borrow_mut() = Some(reason);
        self.1.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn a_previous_siginfo_handler_is_still_called_with_its_information() {
    // SAFETY: installs a handler that only touches atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = previous
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()),
            0
        );
    }
    torsion_protocol::force_sigchld_fallback(true);
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let ended = Rc::new(RefCell::new(None));
    let child = reactor
        .spawn_process(
            Ended(ended.clone(), reactor.downgrade()),
            "true",
            [] as [&str; 0],
            ProcessOptions::new(),
        )
        .unwrap();
    let pid = child.pid().unwrap() as i32;
    reactor.run().unwrap();
    assert_eq!(*ended.borrow(), Some(ProcessReason::Done));
    assert!(
        CALLS.load(Ordering::SeqCst) >= 1,
        "the previous handler was not called"
    );
    assert_eq!(LAST_PID.load(Ordering::SeqCst), pid);
}
