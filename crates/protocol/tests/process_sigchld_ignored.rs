//! The SIGCHLD fallback in a program that ignores `SIGCHLD` (so the
//! system reaps its children: no zombies): installing our handler keeps
//! that promise for the program's other children (`SA_NOCLDWAIT`). The
//! whole binary is this one test (the disposition is the process's).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessReason, ReactorProcess, WeakReactor,
};

struct Ended(Rc<RefCell<Option<ProcessReason>>>, WeakReactor);

impl ProcessProtocol for Ended {
    fn process_ended(&mut self, reason: ProcessReason) {
        *self.0.borrow_mut() = Some(reason);
        self.1.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn a_program_that_ignores_sigchld_still_gets_no_zombies() {
    // SAFETY: sets the disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    torsion_protocol::force_sigchld_fallback(true);
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let ended = Rc::new(RefCell::new(None));
    reactor
        .spawn_process(
            Ended(ended.clone(), reactor.downgrade()),
            "true",
            [] as [&str; 0],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    // Ours is reported (how it ended is not known: the system reaped it).
    assert!(ended.borrow().is_some());

    // Another child of the program, not ours: once it has exited, it must
    // not be a zombie waiting to be reaped.
    #[allow(clippy::zombie_processes)] // the point: the system reaps it
    let other = std::process::Command::new("true").spawn().unwrap().id() as i32;
    assert_not_left_a_zombie(other);
}

/// On Linux: waits for the child's exit through a pidfd (without reaping
/// it), then checks nothing is left to reap.
#[cfg(target_os = "linux")]
fn assert_not_left_a_zombie(other: libc::pid_t) {
    // SAFETY: pidfd_open takes two integers; poll waits on one pollfd.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, other, 0) as i32;
        if pidfd >= 0 {
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            assert_eq!(libc::poll(&mut p, 1, 10_000), 1);
            libc::close(pidfd);
        } else {
            // Already gone (reaped by the system), which is the point.
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ESRCH)
            );
        }
        let r = libc::waitpid(other, std::ptr::null_mut(), libc::WNOHANG);
        assert_eq!(r, -1, "the other child was left a zombie");
    }
}

/// Elsewhere (no pidfd; compile-checked only): a blocking `waitpid`. With
/// `SIGCHLD` ignored (`SA_NOCLDWAIT`), POSIX has it wait until the child
/// has exited and then fail with `ECHILD`; a zombie would be returned.
#[cfg(not(target_os = "linux"))]
fn assert_not_left_a_zombie(other: libc::pid_t) {
    // SAFETY: waitpid with a null status pointer.
    let r = unsafe { libc::waitpid(other, std::ptr::null_mut(), 0) };
    assert_eq!(r, -1, "the other child was left a zombie");
}
