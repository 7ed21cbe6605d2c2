//! Running out of descriptors: the listener backs off instead of spinning,
//! and accepting resumes once descriptors are available again. Alone in
//! its own test binary, since it lowers the process's descriptor limit.
//!
//! The clients run in a child process (this same test binary, in the
//! role of `client_role`), so they do not count against our limit.

mod support;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};
use torsion_protocol::testing::Watchdog;

use torsion_protocol::LoopingCall;
use torsion_protocol::{ListenOptions, Reactor, ReactorTcp};

const CLIENTS: usize = 60;
const CLIENT_ENV: &str = "TORSION_EMFILE_CLIENT";

/// The child's role: open every connection, send a byte on each, then wait
/// for each echo. Does nothing when run as an ordinary test.
#[test]
fn client_role() {
    let Ok(addr) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for stream in &mut streams {
        stream.write_all(b"x").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
    }
    for stream in &mut streams {
        let mut echo = [0u8; 1];
        stream.read_exact(&mut echo).unwrap();
    }
}

fn limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(status, 0);
    limit
}

fn set_soft_limit(soft: libc::rlim_t) {
    let mut limit = limit();
    limit.rlim_cur = soft;
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

#[test]
fn out_of_descriptors_backs_off_without_spinning_and_recovers() {
    if std::env::var(CLIENT_ENV).is_ok() || !std::path::Path::new("/proc/self/fd").exists() {
        return;
    }
    let original = limit().rlim_cur;
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(60));
    let accepted = Rc::new(Cell::new(0));
    let port = reactor
        .listen_tcp_with(
            0,
            support::Counting(accepted.clone()),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["client_role", "--exact", "--quiet"])
        .env(CLIENT_ENV, addr.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Room for about half the clients.
    // (rlim_t is unsigned on Linux and macOS, signed on FreeBSD.)
    let in_use = std::fs::read_dir("/proc/self/fd").unwrap().count() as libc::rlim_t;
    set_soft_limit(in_use + (CLIENTS as libc::rlim_t) / 2);

    // Watch from the loop itself: once accepting has stalled short of
    // every client, count the loop's turns over the next half second, then
    // lift the limit.
    let stalled_at = Rc::new(Cell::new(None::<(u64, u32)>));
    let turns_while_stalled = Rc::new(Cell::new(None::<u64>));
    // The reactor thread's CPU time and the wall clock when the stall
    // began, then the share of one core it used while stalled.
    let stall_began = Rc::new(Cell::new((Duration::ZERO, Instant::now())));
    let cpu_share = Rc::new(Cell::new(0.0f64));
    let (began, share) = (stall_began.clone(), cpu_share.clone());
    let last = Rc::new(Cell::new((0usize, 0u32)));
    let (a, s, t, l) = (
        accepted.clone(),
        stalled_at.clone(),
        turns_while_stalled.clone(),
        last.clone(),
    );
    let watcher = LoopingCall::new(&reactor, move |call| {
        let reactor = call.reactor().unwrap();
        let (count, same_for) = l.get();
        let same_for = if a.get() == count { same_for + 1 } else { 0 };
        l.set((a.get(), same_for));
        match s.get() {
            None if same_for >= 3 && a.get() > 0 && a.get() < CLIENTS => {
                s.set(Some((reactor.turn_count(), 0)));
                began.set((support::thread_cpu(), Instant::now()));
            }
            Some((turns, ticks)) if t.get().is_none() => {
                if ticks == 10 {
                    t.set(Some(reactor.turn_count() - turns));
                    let (cpu, wall) = began.get();
                    share.set(
                        (support::thread_cpu() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64(),
                    );
                    set_soft_limit(original);
                } else {
                    s.set(Some((turns, ticks + 1)));
                }
            }
            _ if a.get() == CLIENTS => {
                call.stop().unwrap();
            }
            _ => {}
        }
    });
    watcher.start(Duration::from_millis(50), false).unwrap();
    // Run until the child has its echoes and exits.
    let handle = reactor.handle();
    let waiter = std::thread::spawn(move || {
        let status = child.wait().unwrap();
        handle.stop().unwrap();
        status
    });
    reactor.run().unwrap();
    set_soft_limit(original);
    assert!(
        waiter.join().unwrap().success(),
        "every client got its echo"
    );
    assert_eq!(accepted.get(), CLIENTS);
    let turns = turns_while_stalled
        .get()
        .expect("accepting stalled for lack of descriptors");
    let share = cpu_share.get();
    eprintln!(
        "loop turns during 0.5 s out of descriptors: {turns}; CPU {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.30,
        "the loop used {:.0}% of a core while out of descriptors",
        share * 100.0
    );
    // The counters: every client accepted once; each failed accept is
    // counted once, and while out of descriptors the port tries once per
    // 100 ms pause, not once per turn or per pending client.
    let stats = reactor.stats();
    assert_eq!(stats.connections_accepted, CLIENTS as u64);
    let failed = stats.accept_errors.out_of_descriptors;
    assert!(failed >= 1, "{stats:?}");
    // The shortage lasts under a second (the stall is noticed after three
    // 50 ms ticks, then watched for ten): about ten tries. Counting per
    // turn or per pending client would give hundreds.
    assert!(failed <= 20, "{failed} failed accepts counted");
    assert_eq!(stats.accept_errors.total(), failed);
    // Ten 50 ms ticks plus a retry every 100 ms: a few dozen turns at most.
    // A listener that spun on EMFILE would turn tens of thousands of times.
    assert!(
        turns < 100,
        "the loop turned {turns} times while out of descriptors"
    );
}
