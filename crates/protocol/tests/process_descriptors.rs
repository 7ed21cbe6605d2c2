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
