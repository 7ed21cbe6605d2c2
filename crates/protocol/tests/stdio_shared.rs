//! StandardIo on the shared-description fallback (the one used where
//! `/proc/self/fd/N` cannot be re-opened: other systems, or Linux after
//! a change of user makes `/proc/self` unreadable): the flags it changed
//! are put back on the description itself, even when closing the output
//! puts `/dev/null` on the descriptor. Runs in a child process of its
//! own (it gives up root), so it is alone in this test binary.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{CloseReason, Protocol, StandardIo, TransportRef, WeakReactor};

const CHILD: &str = "TORSION_STDIO_SHARED_CHILD";

/// Closes its output at once; stops the reactor at the end.
struct CloseOutput {
    events: Rc<RefCell<Vec<String>>>,
    reactor: WeakReactor,
}

impl Protocol for CloseOutput {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.lose_write_connection();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn half_closeable(&self) -> bool {
        true
    }
    fn write_connection_lost(&mut self, _transport: &TransportRef) {
        self.events.borrow_mut().push("write closed".into());
    }
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        self.events.borrow_mut().push("read closed".into());
        transport.lose_connection();
    }
    fn connection_lost(&mut self, _reason: &CloseReason) {
        self.events.borrow_mut().push("lost".into());
        self.reactor.upgrade().unwrap().stop().unwrap();
    }
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL reads the description's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

/// The child's part: pipes made as root, then user 65534, so the
/// re-open through /proc/self/fd is refused and the shared description
/// is used (set non-blocking while the transport has it).
fn child() {
    let (in_r, in_w) = pipe();
    let (_out_r, out_w) = pipe();
    // SAFETY: a copy of the write end: the same description, which stays
    // ours after the output is closed (/dev/null on out_w).
    let probe = unsafe { libc::dup(out_w) };
    // SAFETY: setuid has no memory preconditions.
    assert_eq!(unsafe { libc::setuid(65534) }, 0);
    assert!(
        std::fs::File::open(format!("/proc/self/fd/{in_r}")).is_err(),
        "the re-open must be refused for this test to mean anything"
    );
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(20));
    let events = Rc::new(RefCell::new(Vec::new()));
    let stdio = StandardIo::with_fds(
        &reactor,
        CloseOutput {
            events: events.clone(),
            reactor: reactor.downgrade(),
        },
        in_r,
        Some(out_w),
    )
    .unwrap();
    // The end of input ends the run.
    // SAFETY: closes our write end of the input pipe.
    unsafe { libc::close(in_w) };
    reactor.run().unwrap();
    let mut events = events.borrow().clone();
    assert_eq!(events.pop().as_deref(), Some("lost"));
    events.sort();
    assert_eq!(events, ["read closed", "write closed"]);
    assert!(
        !nonblocking(probe),
        "the output's description left non-blocking"
    );
    assert!(
        !nonblocking(in_r),
        "the input's description left non-blocking"
    );
    drop(stdio);
    assert!(
        !nonblocking(probe),
        "the output's description left non-blocking"
    );
}

#[test]
fn shared_descriptions_get_their_flags_back_after_the_output_is_closed() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot make /proc/self unreadable; skipped");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_descriptions_get_their_flags_back_after_the_output_is_closed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
