//! Child processes with real children: events and their order, how a
//! child ended, spawn failures, signals, descriptors, back-pressure.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, Watchdog};
use torsion_protocol::{
    ChildFd, CloseReason, ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef,
    Reactor, ReactorProcess, SignalError, Transport, WeakReactor,
};

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(30))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Made,
    Data(RawFd, Vec<u8>),
    Lost(RawFd),
    Exited(ProcessReason),
    Ended(ProcessReason),
}

type Log = Rc<RefCell<Vec<Event>>>;
/// (child fd, reason as text, its errno) for each lost pipe.
type Reasons = Rc<RefCell<Vec<(RawFd, String, Option<i32>)>>>;
type OnMade = Option<Box<dyn FnOnce(&ProcessTransportRef)>>;

/// Records every event (data merged per descriptor); stops the reactor
/// when the process ends. `on_made` runs in `connection_made`.
struct Recorder {
    log: Log,
    reasons: Reasons,
    on_made: OnMade,
    reactor: WeakReactor,
}

impl Recorder {
    fn new(log: &Log, reactor: &Reactor) -> Recorder {
        Recorder {
            log: log.clone(),
            reasons: Rc::default(),
            on_made: None,
            reactor: reactor.downgrade(),
        }
    }

    fn on_made(mut self, f: impl FnOnce(&ProcessTransportRef) + 'static) -> Recorder {
        self.on_made = Some(Box::new(f));
        self
    }
}

impl ProcessProtocol for Recorder {
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        self.log.borrow_mut().push(Event::Made);
        if let Some(f) = self.on_made.take() {
            f(transport);
        }
    }

    fn child_data_received(&mut self, _t: &ProcessTransportRef, fd: RawFd, data: &[u8]) {
        let mut log = self.log.borrow_mut();
        let merged = log.iter_mut().rev().find_map(|e| match e {
            Event::Data(f, bytes) if *f == fd => Some(bytes),
            _ => None,
        });
        match merged {
            Some(bytes) => bytes.extend_from_slice(data),
            None => log.push(Event::Data(fd, data.to_vec())),
        }
    }

    fn child_connection_lost(&mut self, _t: &ProcessTransportRef, fd: RawFd, reason: &CloseReason) {
        let errno = match reason {
            CloseReason::Lost(e) => e.raw_os_error(),
            _ => None,
        };
        self.reasons
            .borrow_mut()
            .push((fd, reason.to_string(), errno));
        self.log.borrow_mut().push(Event::Lost(fd));
    }

    fn process_exited(&mut self, transport: &ProcessTransportRef, reason: ProcessReason) {
        assert_eq!(transport.pid(), None, "no pid once reaped");
        self.log.borrow_mut().push(Event::Exited(reason));
    }

    fn process_ended(&mut self, reason: ProcessReason) {
        self.log.borrow_mut().push(Event::Ended(reason));
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.stop().unwrap();
        }
    }
}

/// Runs `program args` with a recorder to its end; returns the log.
fn run(program: &str, args: &[&str], options: ProcessOptions) -> Vec<Event> {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    reactor
        .spawn_process(Recorder::new(&log, &reactor), program, args, options)
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow().clone();
    log
}

fn data(log: &[Event], fd: RawFd) -> Vec<u8> {
    log.iter()
        .filter_map(|e| match e {
            Event::Data(f, d) if *f == fd => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn terminated(exit_code: Option<i32>, signal: Option<i32>) -> ProcessReason {
    ProcessReason::Terminated { exit_code, signal }
}

/// The order every run must respect: made first, ended last, exited
/// once, each default pipe lost once.
fn check_order(log: &[Event], reason: ProcessReason) {
    assert_eq!(log.first(), Some(&Event::Made), "{log:?}");
    assert_eq!(log.last(), Some(&Event::Ended(reason)), "{log:?}");
    let exited = log.iter().filter(|e| **e == Event::Exited(reason)).count();
    assert_eq!(exited, 1, "{log:?}");
    for fd in 0..3 {
        let lost = log.iter().filter(|e| **e == Event::Lost(fd)).count();
        assert_eq!(lost, 1, "fd {fd}: {log:?}");
    }
}

#[test]
fn cat_echoes_stdin_and_events_come_in_order() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let protocol = Recorder::new(&log, &reactor).on_made(|transport| {
        assert!(transport.pid().is_some());
        transport.write(b"hello ");
        transport.write_sequence(&[b"wor", b"ld\n"]);
        transport.close_stdin();
    });
    let transport = reactor
        .spawn_process(protocol, "cat", [] as [&str; 0], ProcessOptions::new())
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow().clone();
    check_order(&log, ProcessReason::Done);
    assert_eq!(data(&log, 1), b"hello world\n");
    assert_eq!(data(&log, 2), b"");
    assert_eq!(transport.pid(), None);
    assert_eq!(transport.exit_reason(), Some(ProcessReason::Done));
    // Stdin was closed by us before the child exited.
    let lost_in = log.iter().position(|e| *e == Event::Lost(0)).unwrap();
    let exited = log
        .iter()
        .position(|e| matches!(e, Event::Exited(_)))
        .unwrap();
    assert!(lost_in < exited, "{log:?}");
}

#[test]
fn exit_status_zero_non_zero_and_stderr() {
    let log = run("true", &[], ProcessOptions::new());
    check_order(&log, ProcessReason::Done);
    let log = run("false", &[], ProcessOptions::new());
    check_order(&log, terminated(Some(1), None));
    let log = run(
        "/bin/sh",
        &["-c", "echo out; echo err >&2; exit 3"],
        ProcessOptions::new(),
    );
    check_order(&log, terminated(Some(3), None));
    assert_eq!(data(&log, 1), b"out\n");
    assert_eq!(data(&log, 2), b"err\n");
    assert_eq!(
        terminated(Some(3), None).to_string(),
        "process exited with status 3"
    );
}

#[test]
fn killed_by_a_signal_then_signalling_is_an_error() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let protocol = Recorder::new(&log, &reactor).on_made(|transport| {
        assert!(matches!(
            transport.signal_process("NOSUCH"),
            Err(SignalError::UnknownSignal(_))
        ));
        transport.signal_process("KILL").unwrap();
    });
    let transport = reactor
        .spawn_process(protocol, "sleep", ["1000"], ProcessOptions::new())
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow().clone();
    let reason = terminated(None, Some(libc::SIGKILL));
    check_order(&log, reason);
    assert_eq!(reason.to_string(), "process killed by signal 9 (SIGKILL)");
    assert!(matches!(
        transport.signal_process("TERM"),
        Err(SignalError::ProcessExitedAlready)
    ));
    assert!(matches!(
        transport.signal_process(libc::SIGTERM),
        Err(SignalError::ProcessExitedAlready)
    ));
}

#[test]
fn term_by_name_with_sig_prefix() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let protocol = Recorder::new(&log, &reactor).on_made(|transport| {
        transport.signal_process("SIGTERM").unwrap();
    });
    reactor
        .spawn_process(protocol, "sleep", ["1000"], ProcessOptions::new())
        .unwrap();
    reactor.run().unwrap();
    check_order(&log.borrow(), terminated(None, Some(libc::SIGTERM)));
}

#[test]
fn spawn_failures_are_clear_errors() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let spawn = |program: &str, options: ProcessOptions| {
        reactor
            .spawn_process(Recorder::new(&log, &reactor), program, ["x"], options)
            .unwrap_err()
    };
    let e = spawn("no-such-program-here", ProcessOptions::new());
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no-such-program-here"), "{e}");

    let plain = std::env::temp_dir().join(format!("torsion-not-exec-{}", std::process::id()));
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let e = spawn(plain.to_str().unwrap(), ProcessOptions::new());
    std::fs::remove_file(&plain).unwrap();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");

    let e = spawn("true", ProcessOptions::new().cwd("/no/such/dir"));
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("/no/such/dir"), "{e}");

    let e = spawn("true", ProcessOptions::new().cwd("/etc/passwd"));
    assert!(e.to_string().contains("Not a directory"), "{e}");

    let e = spawn(
        "true",
        ProcessOptions::new().child_fd(5, ChildFd::Inherit(9999)),
    );
    assert!(e.to_string().contains("9999"), "{e}");

    // The protocol heard nothing, and nothing is left registered.
    assert!(log.borrow().is_empty());
    assert_eq!(reactor.source_count(), 0);
}

#[test]
fn writing_to_a_child_that_exited_is_epipe() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let protocol = Recorder::new(&log, &reactor).on_made(|transport| {
        // More than the pipe holds: the rest is queued, and written after
        // the child (which never reads) has exited.
        transport.write(&vec![b'x'; 1 << 20]);
    });
    let reasons = protocol.reasons.clone();
    reactor
        .spawn_process(protocol, "true", [] as [&str; 0], ProcessOptions::new())
        .unwrap();
    reactor.run().unwrap();
    check_order(&log.borrow(), ProcessReason::Done);
    let reasons = reasons.borrow();
    let stdin = reasons.iter().find(|(fd, ..)| *fd == 0).unwrap();
    assert_eq!(stdin.2, Some(libc::EPIPE), "{stdin:?}");
}

/// The child's descriptors, as `ls -l /proc/self/fd` lists them (ls's
/// own directory descriptor included), while we hold a descriptor without
/// close-on-exec on a marked file.
fn child_descriptors(options: ProcessOptions) -> (Vec<i32>, String) {
    let marker = std::env::temp_dir().join(format!(
        "torsion-fd-marker-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::File::create(&marker).unwrap();
    // SAFETY: dup of an open descriptor; the copy is closed below.
    let leaky = unsafe { libc::dup(file.as_raw_fd()) };
    assert!(leaky > 2);
    let log = run("/bin/sh", &["-c", "exec ls -l /proc/self/fd"], options);
    // SAFETY: closes the copy made above.
    unsafe { libc::close(leaky) };
    drop(file);
    std::fs::remove_file(&marker).unwrap();
    assert_eq!(log.last(), Some(&Event::Ended(ProcessReason::Done)));
    let listing = String::from_utf8(data(&log, 1)).unwrap();
    assert!(!listing.contains("torsion-fd-marker"), "{listing}");
    let fds = listing
        .lines()
        .filter(|line| line.starts_with('l'))
        .filter_map(|line| {
            line.split(" -> ")
                .next()?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .collect();
    (fds, listing)
}

#[test]
fn no_descriptor_of_ours_reaches_the_child() {
    // The default map (started with posix_spawn where glibc allows).
    let (fds, listing) = child_descriptors(ProcessOptions::new());
    assert_eq!(fds, [0, 1, 2, 3], "{listing}");
    // A map with a descriptor above 2 (started through fork and pre_exec).
    let (fds, listing) = child_descriptors(ProcessOptions::new().child_fd(3, ChildFd::Null));
    assert_eq!(fds, [0, 1, 2, 3, 4], "{listing}");
    // Another user (fork as well).
    let (fds, listing) = child_descriptors(ProcessOptions::new().env("X", "1"));
    assert_eq!(fds, [0, 1, 2, 3], "{listing}");
}

#[test]
fn reading_pauses_and_a_busy_child_blocks() {
    const TOTAL: usize = 16 << 20;
    let (_watchdog, reactor) = reactor();
    let log = Log::default();

    /// Pauses at the first chunk; counts what it gets.
    struct Slow {
        inner: Recorder,
        received: Rc<RefCell<usize>>,
        paused_once: bool,
    }
    impl ProcessProtocol for Slow {
        fn connection_made(&mut self, t: &ProcessTransportRef) {
            self.inner.connection_made(t);
        }
        fn out_received(&mut self, transport: &ProcessTransportRef, data: &[u8]) {
            *self.received.borrow_mut() += data.len();
            if !self.paused_once {
                self.paused_once = true;
                transport.pause_reading();
                let transport = transport.clone();
                let received = self.received.clone();
                let reactor = transport.reactor().unwrap();
                reactor.call_later(Duration::from_millis(200), move |_| {
                    // Nothing more was read meanwhile, and the child is
                    // blocked on its full pipe, not exited.
                    assert!(*received.borrow() <= 64 * 1024);
                    assert!(transport.pid().is_some());
                    transport.resume_reading();
                });
            }
        }
        fn child_connection_lost(&mut self, t: &ProcessTransportRef, fd: RawFd, r: &CloseReason) {
            self.inner.child_connection_lost(t, fd, r);
        }
        fn process_exited(&mut self, t: &ProcessTransportRef, reason: ProcessReason) {
            self.inner.process_exited(t, reason);
        }
        fn process_ended(&mut self, reason: ProcessReason) {
            self.inner.process_ended(reason);
        }
    }
    let received = Rc::new(RefCell::new(0));
    let protocol = Slow {
        inner: Recorder::new(&log, &reactor),
        received: received.clone(),
        paused_once: false,
    };
    reactor
        .spawn_process(
            protocol,
            "head",
            ["-c", &TOTAL.to_string(), "/dev/zero"],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    check_order(&log.borrow(), ProcessReason::Done);
    assert_eq!(*received.borrow(), TOTAL);
}

#[test]
fn a_panicking_protocol_loses_its_pipes_and_still_hears_the_end() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();

    struct Panicky(Recorder);
    impl ProcessProtocol for Panicky {
        fn out_received(&mut self, _t: &ProcessTransportRef, _data: &[u8]) {
            panic!("out_received fails");
        }
        fn child_connection_lost(&mut self, t: &ProcessTransportRef, fd: RawFd, r: &CloseReason) {
            self.0.child_connection_lost(t, fd, r);
        }
        fn process_exited(&mut self, t: &ProcessTransportRef, reason: ProcessReason) {
            self.0.process_exited(t, reason);
        }
        fn process_ended(&mut self, reason: ProcessReason) {
            self.0.process_ended(reason);
        }
    }
    // The child writes, then waits for its stdin to close (which the
    // panic causes) and exits 0.
    reactor
        .spawn_process(
            Panicky(Recorder::new(&log, &reactor)),
            "/bin/sh",
            ["-c", "echo hi; read line; exit 0"],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow();
    assert_eq!(
        log.last(),
        Some(&Event::Ended(ProcessReason::Done)),
        "{log:?}"
    );
    assert_eq!(reactor.caught_panic_count(), 0);
}

#[test]
fn descriptor_map_extra_pipes_and_inherited_descriptors() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (ours_read, ours_write) = (fds[0], fds[1]);
    let options = ProcessOptions::new()
        .child_fd(3, ChildFd::FromChild)
        .child_fd(4, ChildFd::ToChild)
        .child_fd(5, ChildFd::Inherit(ours_write))
        .child_fd(6, ChildFd::Null);
    let protocol = Recorder::new(&log, &reactor).on_made(|transport| {
        transport.write_to_child(4, b"four\n");
        transport.close_child_fd(4);
    });
    reactor
        .spawn_process(
            protocol,
            "/bin/sh",
            [
                "-c",
                "echo three >&3; read x <&4; echo \"got $x\"; echo five >&5; cat <&6; echo null >&6",
            ],
            options,
        )
        .unwrap();
    // SAFETY: our copy of the write end; the child has its own.
    unsafe { libc::close(ours_write) };
    reactor.run().unwrap();
    let log = log.borrow().clone();
    check_order(&log, ProcessReason::Done);
    assert_eq!(data(&log, 3), b"three\n");
    assert_eq!(data(&log, 1), b"got four\n");
    for fd in [3, 4] {
        assert_eq!(log.iter().filter(|e| **e == Event::Lost(fd)).count(), 1);
    }
    let mut inherited = Vec::new();
    // SAFETY: the read end is ours; File takes it and closes it.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(ours_read) };
    io::Read::read_to_end(&mut file, &mut inherited).unwrap();
    assert_eq!(inherited, b"five\n");
}

#[test]
fn unmapped_standard_descriptors_are_closed() {
    let log = run(
        "/bin/sh",
        &["-c", "exec ls /proc/self/fd"],
        ProcessOptions::new().child_fds([(1, ChildFd::FromChild)]),
    );
    // 1, and the directory ls reads (which takes the lowest free number).
    assert_eq!(data(&log, 1), b"0\n1\n");
}

#[test]
fn environment_is_inherited_unless_cleared() {
    let path = std::env::var("PATH").unwrap();
    let log = run("/bin/sh", &["-c", "echo \"$PATH\""], ProcessOptions::new());
    assert_eq!(data(&log, 1), format!("{path}\n").as_bytes());

    let log = run(
        "/usr/bin/env",
        &[],
        ProcessOptions::new().env_clear().env("ONLY", "this"),
    );
    assert_eq!(data(&log, 1), b"ONLY=this\n");

    let log = run(
        "/usr/bin/env",
        &[],
        ProcessOptions::new()
            .env("TORSION_X", "1")
            .env_remove("PATH"),
    );
    let env = String::from_utf8(data(&log, 1)).unwrap();
    assert!(env.lines().any(|l| l == "TORSION_X=1"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[test]
fn working_directory() {
    let log = run("pwd", &[], ProcessOptions::new().cwd("/tmp"));
    assert_eq!(data(&log, 1), b"/tmp\n");
}

#[test]
fn a_grandchild_holding_stdout_does_not_delay_process_exited() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();

    /// Kills the grandchild (whose pid the child prints) once the child
    /// has exited, so that the pipes close.
    struct KillGrandchild {
        inner: Recorder,
        grandchild: Option<i32>,
        exited: bool,
    }
    impl KillGrandchild {
        fn kill_if_ready(&mut self) {
            if !self.exited {
                return;
            }
            if let Some(pid) = self.grandchild.take() {
                // SAFETY: kill takes two integers; the grandchild is alive
                // (it holds our pipe open).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    impl ProcessProtocol for KillGrandchild {
        fn connection_made(&mut self, t: &ProcessTransportRef) {
            self.inner.connection_made(t);
        }
        fn out_received(&mut self, t: &ProcessTransportRef, data: &[u8]) {
            self.inner.child_data_received(t, 1, data);
            let text = String::from_utf8_lossy(data);
            self.grandchild = text.trim().parse().ok();
            self.kill_if_ready();
        }
        fn child_connection_lost(&mut self, t: &ProcessTransportRef, fd: RawFd, r: &CloseReason) {
            self.inner.child_connection_lost(t, fd, r);
        }
        fn process_exited(&mut self, t: &ProcessTransportRef, reason: ProcessReason) {
            // The grandchild still holds stdout and stderr.
            let open = t.open_child_fds();
            assert!(open.contains(&1) && open.contains(&2), "{open:?}");
            // The pidfd (readable for ever once reaped) is out of the
            // reactor: only the pipes are left.
            assert_eq!(t.reactor().unwrap().source_count(), open.len());
            self.inner.process_exited(t, reason);
            self.exited = true;
            self.kill_if_ready();
        }
        fn process_ended(&mut self, reason: ProcessReason) {
            self.inner.process_ended(reason);
        }
    }
    reactor
        .spawn_process(
            KillGrandchild {
                inner: Recorder::new(&log, &reactor),
                grandchild: None,
                exited: false,
            },
            "/bin/sh",
            ["-c", "sleep 1000 & echo $!; exec 0<&-; exit 0"],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow().clone();
    check_order(&log, ProcessReason::Done);
    let exited = log
        .iter()
        .position(|e| matches!(e, Event::Exited(_)))
        .unwrap();
    for fd in [1, 2] {
        let lost = log.iter().position(|e| *e == Event::Lost(fd)).unwrap();
        assert!(exited < lost, "{log:?}");
    }
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
fn a_child_that_exits_before_the_reactor_runs_is_reported() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let transport = reactor
        .spawn_process(
            Recorder::new(&log, &reactor),
            "/bin/sh",
            ["-c", "exit 7"],
            ProcessOptions::new(),
        )
        .unwrap();
    let pid = transport.pid().unwrap();
    // Wait until it has exited, without reaping it.
    // SAFETY: siginfo_t is plain data that waitid fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // (id_t is u32 on Linux and macOS, i64 on FreeBSD: a pid fits either.)
    let id = pid as libc::id_t;
    // SAFETY: waitid writes into `info`.
    let r = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(r, 0);
    reactor.run().unwrap();
    check_order(&log.borrow(), terminated(Some(7), None));
}

#[test]
fn two_reactors_each_see_only_their_own_children() {
    let threads: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let (_watchdog, reactor) = reactor();
                let ended = Rc::new(RefCell::new(Vec::new()));
                for _ in 0..20 {
                    let count = Count {
                        ended: ended.clone(),
                        target: 20,
                        reactor: reactor.downgrade(),
                    };
                    reactor
                        .spawn_process(
                            count,
                            "/bin/sh",
                            ["-c", &format!("exit {}", 10 + t)],
                            ProcessOptions::new(),
                        )
                        .unwrap();
                }
                reactor.run().unwrap();
                let ended = ended.borrow().clone();
                ended
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        let ended = thread.join().unwrap();
        assert_eq!(ended.len(), 20);
        assert!(ended
            .iter()
            .all(|r| *r == terminated(Some(10 + t as i32), None)));
    }
}

#[test]
fn uid_and_gid_drop_to_nobody_when_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot switch users; skipped");
        return;
    }
    let log = run(
        "/bin/sh",
        &["-c", "id -u; id -g; id -G"],
        ProcessOptions::new().uid(65534).gid(65534).cwd("/"),
    );
    check_order(&log, ProcessReason::Done);
    // Supplementary groups are dropped too.
    assert_eq!(data(&log, 1), b"65534\n65534\n65534\n");
}

#[test]
fn a_pull_producer_feeds_cat_and_everything_comes_back() {
    use std::cell::Cell;
    use torsion_protocol::Producer;
    const TOTAL: usize = 4 << 20;

    /// Writes 64 KiB each time it is asked, then closes stdin.
    struct Feeder {
        transport: RefCell<Option<ProcessTransportRef>>,
        left: Cell<usize>,
        max_queued: Cell<usize>,
    }
    impl Producer for Feeder {
        fn resume_producing(&self) {
            let Some(transport) = self.transport.borrow().clone() else {
                return;
            };
            let n = self.left.get().min(64 * 1024);
            if n == 0 {
                transport.unregister_producer();
                transport.close_stdin();
                self.transport.borrow_mut().take();
                return;
            }
            transport.write(&vec![b'y'; n]);
            self.left.set(self.left.get() - n);
            let queued = transport.get_write_buffer_size();
            self.max_queued.set(self.max_queued.get().max(queued));
        }
    }
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    let feeder = Rc::new(Feeder {
        transport: RefCell::new(None),
        left: Cell::new(TOTAL),
        max_queued: Cell::new(0),
    });
    let registered = feeder.clone();
    let protocol = Recorder::new(&log, &reactor).on_made(move |transport| {
        *registered.transport.borrow_mut() = Some(transport.clone());
        transport.register_producer(registered, false).unwrap();
    });
    reactor
        .spawn_process(protocol, "cat", [] as [&str; 0], ProcessOptions::new())
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow().clone();
    check_order(&log, ProcessReason::Done);
    assert_eq!(data(&log, 1).len(), TOTAL);
    // A pull producer is asked only once what it wrote has gone out: the
    // queue never holds much more than one chunk.
    assert!(
        feeder.max_queued.get() <= 128 * 1024,
        "{}",
        feeder.max_queued.get()
    );
}

#[test]
fn a_script_without_an_interpreter_line_runs_with_the_shell_when_forked() {
    let script = std::env::temp_dir().join(format!("torsion-script-{}", std::process::id()));
    std::fs::write(&script, "echo from-sh \"$1\"\n").unwrap();
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    // A map entry above 2: the forked path, whose exec is ours.
    let log = run(
        script.to_str().unwrap(),
        &["arg"],
        ProcessOptions::new().child_fd(3, ChildFd::Null),
    );
    std::fs::remove_file(&script).unwrap();
    assert_eq!(data(&log, 1), b"from-sh arg\n");
}

/// Records which of the child's pipes were lost, and nothing else.
struct LostPipes(Rc<RefCell<Vec<RawFd>>>);

impl ProcessProtocol for LostPipes {
    fn child_connection_lost(&mut self, _t: &ProcessTransportRef, fd: RawFd, _r: &CloseReason) {
        self.0.borrow_mut().push(fd);
    }
}

struct Idle;

impl torsion_transport::reactor::Handler for Idle {
    fn ready(&self, _reactor: &Reactor, _readiness: torsion_transport::reactor::Readiness) {}
}

#[test]
fn at_shutdown_every_pipe_is_lost_once_whatever_the_order_of_the_reaper() {
    let (_watchdog, reactor) = reactor();
    // Four slots taken then freed, so that the first child's pipes get
    // keys 3, 2, 1 and its pidfd key 0: the reaper shuts down first.
    let dummies: Vec<_> = (0..4)
        .map(|_| {
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            reactor
                .register(
                    a,
                    torsion_transport::reactor::Interest::READABLE,
                    Rc::new(Idle),
                )
                .unwrap()
        })
        .collect();
    drop(dummies);
    let lost: Vec<Rc<RefCell<Vec<RawFd>>>> = (0..2).map(|_| Rc::default()).collect();
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
}

#[test]
fn each_pipe_of_a_child_counts_as_one_connection() {
    let (_watchdog, reactor) = reactor();
    let log = Log::default();
    reactor
        .spawn_process(
            Recorder::new(&log, &reactor),
            "true",
            [] as [&str; 0],
            ProcessOptions::new(),
        )
        .unwrap();
    reactor.run().unwrap();
    let stats = reactor.stats();
    // Standard input, output and error: one open and one close each.
    assert_eq!(stats.connections_opened, 3, "{stats:?}");
    assert_eq!(stats.closed.total(), 3, "{stats:?}");
    assert_eq!(stats.connections_open, 0);
}
