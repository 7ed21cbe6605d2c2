//! Child processes and descriptors: many short-lived children leave no
//! zombie and no descriptor behind. Every test here takes a
//! `DescriptorGuard`, so they run one at a time and each count is exact.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Watchdog};
use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessReason, Reactor, ReactorProcess, WeakReactor,
};

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(60))
}

/// Counts ended children; stops the reactor at `target`.
struct Count {
    ended: Rc<RefCell<Vec<ProcessReason>>>,
    target: usize,
    reactor: WeakReactor,
}

impl ProcessProtocol for Count {
    fn process_ended(&mut self, reason: ProcessReason) {
        let mut ended = self.ended.borrow_mut();
        ended.push(reason);
        if ended.len() == self.target {
            self.reactor.upgrade().unwrap().stop().unwrap();
        }
    }
}

#[test]
fn two_hundred_short_children_leave_no_zombie_and_no_descriptor() {
    let guard = DescriptorGuard::new();
    let pids = {
        let (_watchdog, reactor) = reactor();
        let ended = Rc::new(RefCell::new(Vec::new()));
        let mut pids = Vec::new();
        for i in 0..200 {
            let count = Count {
                ended: ended.clone(),
                target: 200,
                reactor: reactor.downgrade(),
            };
            let code = (i % 3).to_string();
            let transport = reactor
                .spawn_process(
                    count,
                    "/bin/sh",
                    ["-c", "echo x; exit \"$0\"", &code],
                    ProcessOptions::new(),
                )
                .unwrap();
            pids.push(transport.pid().unwrap());
        }
        reactor.run().unwrap();
        let ended = ended.borrow();
        assert_eq!(ended.len(), 200);
        assert_eq!(ended.iter().filter(|r| r.is_clean()).count(), 67);
        assert_eq!(reactor.source_count(), 0);
        pids
    };
    for pid in pids {
        // SAFETY: waitpid with WNOHANG on a pid; ECHILD means it is not a
        // child of ours any more (reaped).
        let r = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "pid {pid} not reaped");
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
    guard.check();
}

/// A map target may be any number, including the one the spawn machinery
/// uses in the child to report a failed exec (std's error pipe takes the
/// lowest free numbers just before the fork): a program that cannot run
/// is still an error from `spawn_process`, never a child that "ran".
#[test]
fn a_map_target_on_the_spawn_error_channel_still_reports_a_failed_exec() {
    let guard = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    // SAFETY: dup of an open descriptor, closed at once: the lowest free
    // number.
    let lowest = unsafe {
        let fd = libc::dup(2);
        libc::close(fd);
        fd
    };
    for target in lowest..lowest + 4 {
        let ended = Rc::new(RefCell::new(Vec::new()));
        let result = reactor.spawn_process(
            Count {
                ended: ended.clone(),
                target: 1,
                reactor: reactor.downgrade(),
            },
            "/nonexistent/program",
            [] as [&str; 0],
            ProcessOptions::new().child_fds([(target, torsion_protocol::ChildFd::Inherit(2))]),
        );
        match result {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "target {target}: {e}"),
            Ok(t) => panic!("target {target}: spawned {:?}", t.pid()),
        }
    }
    assert_eq!(reactor.source_count(), 0);
    drop(reactor);
    guard.check();
}
