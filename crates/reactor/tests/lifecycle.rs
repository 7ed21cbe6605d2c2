//! Startup and shutdown triggers, call_when_running, several reactors on
//! several threads, and fairness between timers and I/O.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;
use torsion_reactor::testing::{guarded_reactor, DescriptorGuard, Watchdog};

use torsion_reactor::{Handler, Interest, Phase, Reactor, Readiness, Registration, SystemEvent};

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn note(log: &Log, what: impl Into<String>) {
    log.borrow_mut().push(what.into());
}

/// Signals are left alone: these tests run in parallel threads of one
/// process (tests/signals.rs covers them, alone in its own process).
fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(30))
}

/// A source that notes its shutdown call.
struct Noter {
    log: Log,
    registration: RefCell<Option<Registration<UnixStream>>>,
}

impl Handler for Noter {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {}
    fn shutdown(&self, _reactor: &Reactor) {
        note(&self.log, "source shutdown");
        self.registration.borrow_mut().take();
    }
}

#[test]
fn startup_then_shutdown_in_phase_order() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = log();
    for (phase, event, name) in [
        (Phase::After, SystemEvent::Startup, "after startup"),
        (Phase::Before, SystemEvent::Startup, "before startup"),
        (Phase::During, SystemEvent::Startup, "during startup"),
        (Phase::After, SystemEvent::Shutdown, "after shutdown"),
        (Phase::During, SystemEvent::Shutdown, "during shutdown"),
        (Phase::Before, SystemEvent::Shutdown, "before shutdown"),
    ] {
        let log = log.clone();
        reactor.add_system_event_trigger(phase, event, move |reactor| {
            let count = reactor.source_count();
            note(&log, format!("{name} ({count} sources)"));
        });
    }
    let l = log.clone();
    reactor.call_when_running(move |reactor| {
        note(&l, "running");
        let l = l.clone();
        // While running, call_when_running calls at once.
        reactor.call_when_running(move |_| note(&l, "at once"));
        reactor.stop().unwrap();
    });
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let noter = Rc::new(Noter {
        log: log.clone(),
        registration: RefCell::new(None),
    });
    let registration = reactor
        .register(ours, Interest::READABLE, noter.clone())
        .unwrap();
    *noter.registration.borrow_mut() = Some(registration);

    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "before startup (1 sources)",
            "during startup (1 sources)",
            "after startup (1 sources)",
            "running",
            "at once",
            "before shutdown (1 sources)",
            "source shutdown",
            "during shutdown (0 sources)",
            "after shutdown (0 sources)",
        ]
    );
}

#[test]
fn triggers_fire_on_every_run_until_removed() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = log();
    let l = log.clone();
    let id = reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
        note(&l, "trigger")
    });
    for _ in 0..2 {
        reactor.call_soon(|r| r.stop().unwrap());
        reactor.run().unwrap();
    }
    assert!(reactor.remove_system_event_trigger(id));
    assert!(!reactor.remove_system_event_trigger(id));
    reactor.call_soon(|r| r.stop().unwrap());
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["trigger", "trigger"]);
}

#[test]
fn a_trigger_removed_by_an_earlier_one_does_not_run() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = log();
    let victim = Rc::new(RefCell::new(None));
    let v = victim.clone();
    let l = log.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, move |r| {
        note(&l, "first");
        assert!(r.remove_system_event_trigger(v.borrow().unwrap()));
    });
    let l = log.clone();
    *victim.borrow_mut() = Some(reactor.add_system_event_trigger(
        Phase::Before,
        SystemEvent::Startup,
        move |_| note(&l, "victim"),
    ));
    reactor.call_soon(|r| r.stop().unwrap());
    reactor.run().unwrap();
    assert_eq!(*log.borrow(), ["first"]);
}

#[test]
fn several_reactors_run_independently_on_their_own_threads() {
    let _fds = DescriptorGuard::new();
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let (_watchdog, reactor) = reactor();
                let fired = Rc::new(RefCell::new(0u64));
                for n in 0..100 {
                    let fired = fired.clone();
                    reactor.call_later(Duration::from_micros(n * 10 + i), move |_| {
                        *fired.borrow_mut() += 1
                    });
                }
                reactor.call_later(Duration::from_millis(5), |r| r.stop().unwrap());
                reactor.run().unwrap();
                let fired = *fired.borrow();
                fired
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 100);
    }
}

/// Records each readiness; never drains its socket, so it stays readable.
struct Flooder {
    log: Log,
    _registration: RefCell<Option<Registration<UnixStream>>>,
}

impl Handler for Flooder {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        note(&self.log, "io");
    }
}

fn flooder(reactor: &Reactor, log: &Log, readable: bool) -> UnixStream {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    if readable {
        theirs.write_all(b"x").unwrap();
    }
    let handler = Rc::new(Flooder {
        log: log.clone(),
        _registration: RefCell::new(None),
    });
    let registration = reactor
        .register(ours, Interest::READABLE, handler.clone())
        .unwrap();
    *handler._registration.borrow_mut() = Some(registration);
    theirs
}

#[test]
fn a_flood_of_due_timers_does_not_starve_io() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = log();
    let peer = flooder(&reactor, &log, false);
    // The first of ten thousand calls due now makes the socket readable;
    // I/O must get a turn before the last of them runs.
    let peer = RefCell::new(Some(peer));
    reactor.call_later(Duration::ZERO, move |_| {
        peer.borrow_mut().as_mut().unwrap().write_all(b"x").unwrap();
    });
    for _ in 0..10_000 {
        let log = log.clone();
        reactor.call_later(Duration::ZERO, move |_| note(&log, "timer"));
    }
    let l = log.clone();
    let check = torsion_reactor::LoopingCall::new(&reactor, move |call| {
        if l.borrow().iter().filter(|e| *e == "timer").count() == 10_000 {
            let _ = call.reactor().unwrap().stop();
        }
    });
    check.start(Duration::ZERO, false).unwrap();
    reactor.run().unwrap();
    let log = log.borrow();
    let first_io = log.iter().position(|e| e == "io").unwrap();
    let timers_before_io = log[..first_io].iter().filter(|e| *e == "timer").count();
    assert!(
        timers_before_io < 10_000,
        "I/O waited for every due timer ({timers_before_io} ran first)"
    );
}

#[test]
fn a_flood_of_ready_sockets_does_not_delay_due_timers() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log = log();
    let _peers: Vec<UnixStream> = (0..100).map(|_| flooder(&reactor, &log, true)).collect();
    let l = log.clone();
    reactor.call_soon(move |r| {
        // Every turn now reports 100 ready sockets. A timer due now must
        // still run within a turn or two.
        let at = l.borrow().len();
        let l2 = l.clone();
        r.call_later(Duration::ZERO, move |r| {
            let waited = l2.borrow().len() - at;
            note(&l2, format!("timer after {waited} events"));
            r.stop().unwrap();
        });
    });
    reactor.run().unwrap();
    let log = log.borrow();
    let last = log.last().unwrap();
    let waited: usize = last
        .trim_start_matches("timer after ")
        .trim_end_matches(" events")
        .parse()
        .unwrap();
    assert!(waited <= 200, "the timer waited for {waited} I/O events");
}
