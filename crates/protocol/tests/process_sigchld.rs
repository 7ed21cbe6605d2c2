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

/// Records which of the child's pipes were lost, and nothing else.
struct LostPipes(Rc<RefCell<Vec<i32>>>);

impl ProcessProtocol for LostPipes {
    fn child_connection_lost(
        &mut self,
        _t: &ProcessTransportRef,
        fd: i32,
        _r: &torsion_protocol::CloseReason,
    ) {
        self.0.borrow_mut().push(fd);
    }
}

#[test]
fn at_shutdown_every_pipe_is_lost_once_even_when_the_watcher_goes_first() {
    let guard = DescriptorGuard::new();
    torsion_protocol::force_sigchld_fallback(true);
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
    // A first child makes the watcher (registered after its pipes); once
    // it is gone, the next children's pipes take slots on both sides of
    // the watcher's, so it shuts down before some of them.
    let ended = Rc::new(RefCell::new(Vec::new()));
    reactor
        .spawn_process(
            Count {
                out: Rc::default(),
                ended: ended.clone(),
                target: 1,
                reactor: reactor.downgrade(),
            },
            "true",
            [] as [&str; 0],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    let lost: Vec<Rc<RefCell<Vec<i32>>>> = (0..2).map(|_| Rc::default()).collect();
    let pids: Vec<u32> = lost
        .iter()
        .map(|lost| {
            reactor
                .spawn_process(
                    LostPipes(lost.clone()),
                    "sleep",
                    ["5"],
                    ProcessOptions::new(),
                )
                .unwrap()
                .pid()
                .unwrap()
        })
        .collect();
    reactor.call_when_running(|r| r.stop().unwrap());
    reactor.run().unwrap();
    for pid in pids {
        // SAFETY: our own children, left running by the shutdown.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
    for (i, lost) in lost.iter().enumerate() {
        let mut lost = lost.borrow().clone();
        lost.sort();
        assert_eq!(lost, [0, 1, 2], "child {i}");
    }
    drop(reactor);
    guard.check();
}
