//! Supplementary groups when a child changes identity (as root): a group
//! alone does not pass our supplementary groups on, and a user gets its
//! own (as `initgroups` gives them). The test sets this process's
//! supplementary groups, so it is alone in its binary.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::guarded_reactor;
use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessTransportRef, ReactorProcess, WeakReactor,
};

struct Output(Rc<RefCell<Vec<u8>>>, WeakReactor);

impl ProcessProtocol for Output {
    fn out_received(&mut self, _t: &ProcessTransportRef, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
    }
    fn process_ended(&mut self, _reason: torsion_protocol::ProcessReason) {
        self.1.upgrade().unwrap().stop().unwrap();
    }
}

fn ids(options: ProcessOptions) -> String {
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let out = Rc::new(RefCell::new(Vec::new()));
    reactor
        .spawn_process(
            Output(out.clone(), reactor.downgrade()),
            "/bin/sh",
            ["-c", "id -u; id -g; id -G"],
            options.cwd("/"),
        )
        .unwrap();
    reactor.run().unwrap();
    let out = String::from_utf8(out.borrow().clone()).unwrap();
    out
}

#[test]
fn supplementary_groups_follow_the_new_identity() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot switch users or groups; skipped");
        return;
    }
    // Root with a supplementary group the children must not inherit.
    let groups: [libc::gid_t; 1] = [4242];
    // SAFETY: setgroups reads the given array.
    assert_eq!(unsafe { libc::setgroups(1, groups.as_ptr()) }, 0);
    assert!(ids(ProcessOptions::new()).ends_with("0\n0 4242\n"));
    // A group alone: root's supplementary groups are not passed on.
    assert_eq!(ids(ProcessOptions::new().gid(65534)), "0\n65534\n65534\n");
    // A user: its own groups (nobody's are its primary group, 65534),
    // whatever our group stays.
    assert_eq!(ids(ProcessOptions::new().uid(65534)), "65534\n0\n0 65534\n");
    assert_eq!(
        ids(ProcessOptions::new().uid(65534).gid(65534)),
        "65534\n65534\n65534\n"
    );
}
