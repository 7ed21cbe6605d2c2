//! The SIGCHLD fallback (used where pidfds are missing), forced on for
//! this whole test binary: children are still reaped one by one, each
//! reactor sees only its own, and nothing is left behind. Every test
//! takes a `DescriptorGuard` (they run one at a time).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard};
use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef, ReactorProcess, Transport,
    WeakReactor,
};

/// Collects stdout and how each child ended; stops at `target` ends.
struct Count {
    out: Rc<RefCell<Vec<u8>>>,
    ended: Rc<RefCell<Vec<ProcessReason>>>,
    target: usize,
    reactor: WeakReactor,
}

impl ProcessProtocol for Count {
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        transport.write(b"in\n");
        transport.close_stdin();
    }
    fn out_received(&mut self, _t: &ProcessTransportRef, data: &[u8]) {
        self.out.borrow_mut().extend_from_slice(data);
    }
    fn process_ended(&mut self, reason: ProcessReason) {
        let mut ended = self.ended.borrow_mut();
        ended.push(reason);
        if ended.len() == self.target {
            self.reactor.upgrade().unwrap().stop().unwrap();
        }
    }
}

fn run_children(count: usize, script: impl Fn(usize) -> String) -> (Vec<u8>, Vec<ProcessReason>) {
    torsion_protocol::force_sigchld_fallback(true);
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
    let out = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(RefCell::new(Vec::new()));
    let mut pids = Vec::new();
    for i in 0..count {
        let protocol = Count {
            out: out.clone(),
            ended: ended.clone(),
            target: count,
            reactor: reactor.downgrade(),
        };
        let transport = reactor
            .spawn_process(
                protocol,
                "/bin/sh",
                ["-c", &script(i)],
                ProcessOptions::new(),
            )
            .unwrap();
        pids.push(transport.pid().unwrap());
    }
    reactor.run().unwrap();
    for pid in pids {
        // SAFETY: waitpid with WNOHANG; ECHILD means already reaped.
        let r = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "pid {pid} not reaped");
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
    let out = out.borrow().clone();
    let ended = ended.borrow().clone();
    (out, ended)
}

#[test]
fn children_are_reaped_on_sigchld_without_leaks() {
    let guard = DescriptorGuard::new();
    let (out, ended) = run_children(100, |i| format!("cat; exit {}", i % 2));
    assert_eq!(out.len(), 300);
    assert_eq!(ended.iter().filter(|r| r.is_clean()).count(), 50);
    assert_eq!(
        ended.iter().filter(|r| r.exit_code() == Some(1)).count(),
        50
    );
    guard.check();
}

#[test]
fn two_reactors_each_reap_their_own_on_sigchld() {
    let guard = DescriptorGuard::new();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || run_children(30, move |_| format!("cat; exit {}", 20 + t)))
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        let (_, ended) = thread.join().unwrap();
        assert_eq!(ended.len(), 30);
        assert!(ended.iter().all(|r| r.exit_code() == Some(20 + t as i32)));
    }
    guard.check();
}
