//! Every accept refused (`EPERM`, as a seccomp filter or a security
//! module can make it, or an error that usually means the connection
//! already failed, such as `EOPNOTSUPP`): the connection stays queued and
//! the listener readable, so the port backs off as it does when out of
//! descriptors, instead of spinning and logging a warning every turn.
//!
//! The refusal comes from a seccomp filter that makes `accept4` (and
//! `accept`) fail with a given error, installed on the reactor's own
//! thread only: the other threads of the process, and other tests, are
//! not affected.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

mod support;

use std::cell::Cell;
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard};
use torsion_protocol::LoopingCall;
use torsion_protocol::{ListenOptions, ReactorTcp};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// How long the test watches the refused listener.
const WATCH: Duration = Duration::from_millis(500);

/// How long the port pauses accepting after a failure (`ACCEPT_BACKOFF`
/// in `port.rs`).
const BACKOFF: Duration = Duration::from_millis(100);

/// The seccomp architecture code of this build's target
/// (`AUDIT_ARCH_*` in `<linux/audit.h>`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Makes `accept4` and `accept` fail with `errno` on the calling thread
/// (and threads it starts later), for the rest of its life. False if the
/// kernel does not support seccomp filters.
fn refuse_accepts_on_this_thread(errno: i32) -> bool {
    let load = |offset: usize| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset as u32,
    };
    let jump_if_equal = |value: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k: value,
    };
    let ret = |value: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: value,
    };
    let refuse = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    let mut program = [
        // 0: another architecture's system call numbers mean something
        // else: allow them.
        load(std::mem::offset_of!(libc::seccomp_data, arch)),
        jump_if_equal(AUDIT_ARCH, 0, 4),
        // 2: accept4 or accept: refused; anything else: allowed.
        load(std::mem::offset_of!(libc::seccomp_data, nr)),
        jump_if_equal(libc::SYS_accept4 as u32, 1, 0),
        jump_if_equal(libc::SYS_accept as u32, 0, 1),
        // 5, 6:
        ret(refuse),
        ret(libc::SECCOMP_RET_ALLOW),
    ];
    let filter = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integers only; it only
    // changes the calling thread's attributes.
    let status = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(status, 0, "PR_SET_NO_NEW_PRIVS");
    // SAFETY: `filter` points at `program`, both alive for the call; the
    // kernel copies the program. The filter applies to this thread only
    // (no SECCOMP_FILTER_FLAG_TSYNC).
    let status = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &filter as *const libc::sock_fprog,
        )
    };
    if status != 0 {
        let error = std::io::Error::last_os_error();
        assert_eq!(error.raw_os_error(), Some(libc::EINVAL), "PR_SET_SECCOMP");
        return false;
    }
    true
}

/// Counts the warnings logged about accepting (on the thread it is the
/// default subscriber of).
struct AcceptWarnings(Arc<AtomicUsize>);

/// Finds whether an event's message is about accepting.
struct AboutAccepting(bool);

impl Visit for AboutAccepting {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains("accept") {
            self.0 = true;
        }
    }
}

impl Subscriber for AcceptWarnings {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut about = AboutAccepting(false);
            event.record(&mut about);
            if about.0 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

/// What the reactor's thread saw while its accepts were refused.
#[derive(Debug)]
struct Watched {
    /// Connections handed to the factory.
    accepted: usize,
    /// Loop turns during the watch.
    turns: u64,
    /// The share of one core the loop used.
    cpu_share: f64,
    /// Ticks of a 10 ms looping call.
    ticks: u32,
    /// Accepts that failed, of any kind.
    refusals: u64,
    /// Warnings logged about accepting.
    warnings: usize,
}

/// On a thread of its own (the filter stays with it): listen, fail every
/// accept with `errno`, queue a connection, and watch the loop for
/// [`WATCH`].
fn watch_refused_listener(errno: i32) -> Option<Watched> {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = AcceptWarnings(warnings.clone());
    tracing::subscriber::with_default(subscriber, || {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let accepted = Rc::new(Cell::new(0));
        let port = reactor
            .listen_tcp_with(
                0,
                support::Counting(accepted.clone()),
                ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
            )
            .unwrap();
        if !refuse_accepts_on_this_thread(errno) {
            eprintln!("seccomp filters are not supported here; test skipped");
            return None;
        }
        // The handshake completes in the kernel: the connection waits in
        // the backlog, and the listener stays readable.
        let _client = TcpStream::connect(port.get_host().socket_addr().unwrap()).unwrap();

        let ticks = Rc::new(Cell::new(0u32));
        let counted = ticks.clone();
        let ticker = LoopingCall::new(&reactor, move |_| counted.set(counted.get() + 1));
        ticker.start(Duration::from_millis(10), false).unwrap();
        let start = (reactor.turn_count(), support::thread_cpu(), Instant::now());
        let end = Rc::new(Cell::new(None));
        let ended = end.clone();
        reactor.call_later(WATCH, move |reactor| {
            ended.set(Some((
                reactor.turn_count(),
                support::thread_cpu(),
                Instant::now(),
            )));
            reactor.stop().unwrap();
        });
        reactor.run().unwrap();
        let (turns, cpu, wall) = end.get().expect("the watch ended");
        let stats = reactor.stats();
        port.stop_listening();
        Some(Watched {
            accepted: accepted.get(),
            turns: turns - start.0,
            cpu_share: (cpu - start.1).as_secs_f64() / (wall - start.2).as_secs_f64(),
            ticks: ticks.get(),
            refusals: stats.accept_errors.other
                + stats.accept_errors.peer_aborted
                + stats.accept_errors.out_of_memory
                + stats.accept_errors.out_of_descriptors,
            warnings: warnings.load(Ordering::Relaxed),
        })
    })
}

/// Watches a listener whose every accept fails with `errno`, and checks
/// it backed off instead of spinning.
fn backs_off_without_spinning(errno: i32) {
    let Some(watched) = std::thread::spawn(move || watch_refused_listener(errno))
        .join()
        .unwrap()
    else {
        return;
    };
    eprintln!("{watched:?}");
    // The filter works: the connection stayed queued, every accept failed.
    assert_eq!(watched.accepted, 0);
    assert!(watched.refusals >= 1, "{watched:?}");
    // A listener that spun would turn tens of thousands of times in half a
    // second; backing off, the loop turns for the ticks and a retry every
    // 100 ms.
    assert!(watched.turns < 200, "{watched:?}");
    assert!(watched.cpu_share < 0.30, "{watched:?}");
    // One warning per back-off: the first, then one per retry, each at
    // least 100 ms after the last (a timer never fires early).
    let most = (WATCH.as_millis() / BACKOFF.as_millis()) as usize + 1;
    assert!(
        (1..=most).contains(&watched.warnings),
        "{} warnings, at most {most} expected: {watched:?}",
        watched.warnings
    );
    // Refusals are retried within a batch: more accepts tried than pauses.
    assert!(watched.refusals > watched.warnings as u64, "{watched:?}");
    // Timers still run on time meanwhile.
    assert!(watched.ticks >= 10, "{watched:?}");
}

#[test]
fn refused_accepts_back_off_without_spinning() {
    let _fds = DescriptorGuard::new();
    backs_off_without_spinning(libc::EPERM);
}

/// Errors that mean the pending connection already failed and left the
/// backlog (so the port goes straight on) can also come from a policy that
/// leaves it queued: the port must not spin on them either.
#[test]
fn accepts_failing_as_if_the_connection_had_failed_back_off_without_spinning() {
    let _fds = DescriptorGuard::new();
    for errno in [libc::EOPNOTSUPP, libc::ECONNABORTED] {
        backs_off_without_spinning(errno);
    }
}
