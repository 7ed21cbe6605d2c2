//! The reactor's one panic policy: a panic in any callback it runs is
//! caught, logged and counted, and the reactor carries on (as Twisted logs
//! a failure and carries on).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard, Watchdog};
use torsion_reactor::{Handler, LoopingCall, Phase, Reactor, Readiness, SystemEvent};

/// A reactor, with the guards every test here takes: the descriptor check
/// (which also keeps tests that open descriptors from running at once) and
/// a watchdog. Bind the guards first, so the reactor is dropped before
/// they check.
fn reactor() -> ((DescriptorGuard, Watchdog), Reactor) {
    let fds = DescriptorGuard::new();
    let (watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    ((fds, watchdog), reactor)
}

#[test]
fn a_panicking_delayed_call_does_not_stop_the_others() {
    let (_guards, reactor) = reactor();
    let ran = Rc::new(Cell::new(false));
    reactor.call_later(Duration::ZERO, |_| panic!("a broken timer"));
    let flag = ran.clone();
    reactor.call_later(Duration::from_millis(1), move |reactor| {
        flag.set(true);
        reactor.stop().unwrap();
    });
    reactor.run().unwrap();
    assert!(ran.get());
    assert_eq!(reactor.caught_panic_count(), 1);
}

#[test]
fn a_panicking_delayed_call_on_the_manual_clock_is_contained() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let ran = Rc::new(Cell::new(0));
    reactor.call_later(Duration::from_secs(1), |_| panic!("a broken timer"));
    let counter = ran.clone();
    reactor.call_later(Duration::from_secs(1), move |_| {
        counter.set(counter.get() + 1)
    });
    clock.advance(Duration::from_secs(1));
    assert_eq!(ran.get(), 1);
    assert_eq!(reactor.caught_panic_count(), 1);
}

#[test]
fn panics_in_call_soon_thread_calls_and_continuations_are_contained() {
    let (_guards, reactor) = reactor();
    reactor.call_soon(|_| panic!("a broken call_soon"));
    reactor
        .handle()
        .call_from_thread(|_| panic!("a broken thread call"))
        .unwrap();
    reactor.defer_to_thread(|| 7, |_, _| panic!("a broken continuation"));
    // Stop once all three have had their chance.
    let check = LoopingCall::new(&reactor, |call| {
        let reactor = call.reactor().unwrap();
        if reactor.caught_panic_count() == 3 {
            reactor.stop().unwrap();
        }
    });
    check.start(Duration::from_millis(1), false).unwrap();
    reactor.run().unwrap();
    assert_eq!(reactor.caught_panic_count(), 3);
}

/// A handler that notes its shutdown.
struct Listener(Rc<RefCell<Vec<String>>>);

impl Handler for Listener {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {}
    fn shutdown(&self, _reactor: &Reactor) {
        self.0.borrow_mut().push("source shut down".into());
    }
}

#[test]
fn a_panicking_trigger_lets_the_others_and_the_shutdown_run() {
    let (_guards, reactor) = reactor();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let _registration = reactor
        .register(
            Rc::new(ours),
            torsion_reactor::Interest::NONE,
            Rc::new(Listener(log.clone())),
        )
        .unwrap();
    for phase in [Phase::Before, Phase::During, Phase::After] {
        for n in 0..2 {
            let log = log.clone();
            reactor.add_system_event_trigger(phase, SystemEvent::Shutdown, move |_| {
                if n == 0 && phase != Phase::After {
                    panic!("a broken {phase:?} trigger");
                }
                log.borrow_mut().push(format!("{phase:?} {n}"));
            });
        }
    }
    let log2 = log.clone();
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Startup, move |_| {
        log2.borrow_mut().push("startup".into());
        panic!("a broken startup trigger");
    });
    reactor.call_soon(|reactor| reactor.stop().unwrap());
    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "startup",
            "Before 1",
            "source shut down",
            "During 1",
            "After 0",
            "After 1"
        ]
    );
    assert_eq!(reactor.caught_panic_count(), 3);
}

#[test]
fn a_looping_call_whose_function_panics_stops_and_can_start_again() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let runs = Rc::new(Cell::new(0));
    let counter = runs.clone();
    let call = LoopingCall::new(&reactor, move |_| {
        counter.set(counter.get() + 1);
        if counter.get() == 2 {
            panic!("the second run fails");
        }
    });
    call.start(Duration::from_secs(1), true).unwrap();
    clock.advance(Duration::from_secs(1));
    // Twisted stops the loop and reports the failure.
    assert!(!call.running());
    assert_eq!(call.failure().as_deref(), Some("the second run fails"));
    assert_eq!(reactor.pending_call_count(), 0);
    assert_eq!(reactor.caught_panic_count(), 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(runs.get(), 2);
    // It can be started again, and the failure is forgotten.
    call.start(Duration::from_secs(1), false).unwrap();
    assert_eq!(call.failure(), None);
    clock.advance(Duration::from_secs(1));
    assert_eq!(runs.get(), 3);
    assert!(call.running());
}

/// Drops its own registration when it hears anything; panics when dropped.
struct DropsItself {
    registration: RefCell<Option<torsion_reactor::Registration<std::os::unix::net::UnixStream>>>,
}

impl Handler for DropsItself {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        drop(self.registration.borrow_mut().take());
    }
}

impl Drop for DropsItself {
    fn drop(&mut self) {
        panic!("a handler whose drop panics");
    }
}

#[test]
fn a_panic_while_dropping_a_handler_after_its_call_is_contained() {
    use std::io::Write;
    let (_guards, reactor) = reactor();
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let handler = Rc::new(DropsItself {
        registration: RefCell::new(None),
    });
    let registration = reactor
        .register(ours, torsion_reactor::Interest::READABLE, handler.clone())
        .unwrap();
    *handler.registration.borrow_mut() = Some(registration);
    drop(handler);
    theirs.write_all(b"x").unwrap();
    // The data is waiting before the loop starts: the first turn
    // dispatches it, then runs this.
    reactor.call_soon(|r| r.stop().unwrap());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reactor.run()));
    assert!(outcome.is_ok(), "a panic escaped run()");
}
