//! Timer behaviour, driven on the manual clock: no sleeping.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use torsion_reactor::testing::DescriptorGuard;

use torsion_reactor::{DelayedCall, Reactor, TimerError};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A log that callbacks append to.
fn log() -> Rc<RefCell<Vec<&'static str>>> {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Rc<RefCell<Vec<&'static str>>>, name: &'static str) -> impl FnOnce(&Reactor) {
    let log = log.clone();
    move |_| log.borrow_mut().push(name)
}

#[test]
fn calls_fire_in_time_order_and_fifo_at_the_same_instant() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    reactor.call_later(secs(2), push(&log, "c"));
    reactor.call_later(secs(1), push(&log, "a"));
    reactor.call_later(secs(1), push(&log, "b"));
    reactor.call_later(secs(2), push(&log, "d"));

    clock.advance(Duration::from_millis(999));
    assert!(log.borrow().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(*log.borrow(), ["a", "b"]);
    clock.advance(secs(1));
    assert_eq!(*log.borrow(), ["a", "b", "c", "d"]);
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn delayed_call_reports_its_time_and_state() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    clock.advance(secs(10));
    let call = reactor.call_later(secs(5), |_| {});
    assert_eq!(call.time(), secs(15));
    assert!(call.active());
    clock.advance(secs(5));
    assert!(!call.active());
    assert!(call.called());
    assert!(!call.cancelled());
}

#[test]
fn cancel_prevents_the_call_and_twice_is_an_error() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let call = reactor.call_later(secs(1), push(&log, "x"));
    assert_eq!(call.cancel(), Ok(()));
    assert!(call.cancelled());
    assert_eq!(call.cancel(), Err(TimerError::AlreadyCancelled));
    assert_eq!(call.reset(secs(1)), Err(TimerError::AlreadyCancelled));
    assert_eq!(call.delay(secs(1)), Err(TimerError::AlreadyCancelled));
    clock.advance(secs(5));
    assert!(log.borrow().is_empty());
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn cancel_after_firing_is_an_error() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let call = reactor.call_later(secs(1), |_| {});
    clock.advance(secs(1));
    assert_eq!(call.cancel(), Err(TimerError::AlreadyCalled));
    assert_eq!(call.reset(secs(1)), Err(TimerError::AlreadyCalled));
    assert_eq!(call.delay(secs(1)), Err(TimerError::AlreadyCalled));
}

#[test]
fn reset_moves_the_call_later_and_earlier() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let a = reactor.call_later(secs(2), push(&log, "a"));
    reactor.call_later(secs(3), push(&log, "b"));

    // Later: a now fires at 4, after b.
    a.reset(secs(4)).unwrap();
    assert_eq!(a.time(), secs(4));
    clock.advance(secs(3));
    assert_eq!(*log.borrow(), ["b"]);

    // Earlier again: from t=3, fire one second later (t=4 is unchanged),
    // then bring it forward to t=3.5.
    a.reset(Duration::from_millis(500)).unwrap();
    clock.advance(Duration::from_millis(499));
    assert_eq!(*log.borrow(), ["b"]);
    clock.advance(Duration::from_millis(1));
    assert_eq!(*log.borrow(), ["b", "a"]);
    // Its old heap entries are gone with it.
    clock.advance(secs(10));
    assert_eq!(*log.borrow(), ["b", "a"]);
}

#[test]
fn delay_pushes_back_from_the_due_time() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let a = reactor.call_later(secs(1), push(&log, "a"));
    a.delay(secs(2)).unwrap();
    assert_eq!(a.time(), secs(3));
    clock.advance(secs(2));
    assert!(log.borrow().is_empty());
    clock.advance(secs(1));
    assert_eq!(*log.borrow(), ["a"]);
}

#[test]
fn a_rescheduled_call_goes_after_calls_already_due_at_that_instant() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let a = reactor.call_later(secs(1), push(&log, "a"));
    reactor.call_later(secs(2), push(&log, "b"));
    a.delay(secs(1)).unwrap();
    clock.advance(secs(2));
    assert_eq!(*log.borrow(), ["b", "a"]);
}

#[test]
fn a_callback_can_cancel_a_call_due_at_the_same_instant() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let victim = Rc::new(RefCell::new(None));
    let v = victim.clone();
    let l = log.clone();
    reactor.call_later(secs(1), move |_| {
        l.borrow_mut().push("killer");
        let call: torsion_reactor::DelayedCall = v.borrow_mut().take().unwrap();
        assert_eq!(call.cancel(), Ok(()));
    });
    *victim.borrow_mut() = Some(reactor.call_later(secs(1), push(&log, "victim")));
    clock.advance(secs(1));
    assert_eq!(*log.borrow(), ["killer"]);
}

#[test]
fn a_callback_can_cancel_itself_and_schedule_more() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    let me = Rc::new(RefCell::new(None));
    let me2 = me.clone();
    let l = log.clone();
    let call = reactor.call_later(secs(1), move |reactor| {
        let call: &torsion_reactor::DelayedCall = &me2.borrow().clone().unwrap();
        assert_eq!(call.cancel(), Err(TimerError::AlreadyCalled));
        l.borrow_mut().push("first");
        let l = l.clone();
        reactor.call_later(Duration::ZERO, move |_| l.borrow_mut().push("zero-delay"));
    });
    *me.borrow_mut() = Some(call);
    clock.advance(secs(1));
    assert_eq!(*log.borrow(), ["first", "zero-delay"]);
}

#[test]
fn pump_advances_step_by_step() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    reactor.call_later(secs(1), push(&log, "1"));
    reactor.call_later(secs(3), push(&log, "3"));
    clock.pump(&[secs(1), secs(1)]);
    assert_eq!(*log.borrow(), ["1"]);
    clock.pump(&[secs(1)]);
    assert_eq!(*log.borrow(), ["1", "3"]);
    assert_eq!(clock.now(), secs(3));
    assert_eq!(reactor.seconds(), secs(3));
}

#[test]
fn many_cancelled_calls_do_not_accumulate() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    for _ in 0..100_000 {
        let call = reactor.call_later(secs(60), |_| unreachable!());
        call.cancel().unwrap();
    }
    assert_eq!(reactor.pending_call_count(), 0);
    let log = log();
    reactor.call_later(secs(1), push(&log, "survivor"));
    clock.advance(secs(120));
    assert_eq!(*log.borrow(), ["survivor"]);
}

#[test]
fn dropping_the_reactor_drops_pending_callbacks() {
    let _fds = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let token = Rc::new(());
    let held = token.clone();
    let call = reactor.call_later(secs(1), move |_| drop(held));
    assert_eq!(Rc::strong_count(&token), 2);
    drop(reactor);
    assert_eq!(Rc::strong_count(&token), 1);
    assert!(call.cancelled());
    assert_eq!(call.reset(secs(1)), Err(TimerError::ReactorGone));
}

#[test]
fn timers_on_the_manual_clock_fire_inside_a_running_loop_only_when_advanced() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = log();
    reactor.call_later(secs(3600), push(&log, "late"));
    // One turn with a zero wait: virtual time has not moved, nothing fires,
    // and the loop does not sleep for an hour.
    reactor.iterate(Duration::ZERO).unwrap();
    assert!(log.borrow().is_empty());
    let c = clock.clone();
    reactor.call_soon(move |_| c.advance(secs(3600)));
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(*log.borrow(), ["late"]);
}

// ----- looping calls ---------------------------------------------------------

use torsion_reactor::{LoopingCall, LoopingCallError};

/// (time in ms, elapsed intervals) of each run of a looping call.
type Runs = Rc<RefCell<Vec<(u128, u64)>>>;

/// A looping call that logs its runs.
fn looping(reactor: &Reactor) -> (LoopingCall, Runs) {
    let runs = Rc::new(RefCell::new(Vec::new()));
    let log = runs.clone();
    let call = LoopingCall::new(reactor, move |call| {
        let now = call.reactor().unwrap().seconds().as_millis();
        log.borrow_mut().push((now, call.elapsed_intervals()));
    });
    (call, runs)
}

#[test]
fn looping_call_runs_now_then_every_interval() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (call, runs) = looping(&reactor);
    call.start(secs(1), true).unwrap();
    assert!(call.running());
    assert_eq!(call.interval(), Some(secs(1)));
    clock.pump(&[secs(1), secs(1), secs(1)]);
    assert_eq!(*runs.borrow(), [(0, 1), (1000, 1), (2000, 1), (3000, 1)]);
    assert_eq!(
        call.start(secs(1), true),
        Err(LoopingCallError::AlreadyRunning)
    );
    call.stop().unwrap();
    assert_eq!(call.stop(), Err(LoopingCallError::NotRunning));
    clock.advance(secs(10));
    assert_eq!(runs.borrow().len(), 4);
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn looping_call_without_now_waits_one_interval() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (call, runs) = looping(&reactor);
    call.start(Duration::from_millis(500), false).unwrap();
    assert!(runs.borrow().is_empty());
    clock.advance(Duration::from_millis(500));
    assert_eq!(*runs.borrow(), [(500, 1)]);
}

#[test]
fn a_looping_call_that_falls_behind_skips_and_counts_missed_intervals() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (call, runs) = looping(&reactor);
    call.start(secs(1), true).unwrap();
    // Three and a half intervals pass at once: one run, not three, and it
    // learns that three intervals elapsed.
    clock.advance(Duration::from_millis(3500));
    assert_eq!(*runs.borrow(), [(0, 1), (3500, 3)]);
    // Back on the original grid: the next run is at 4 s, not at 4.5 s.
    clock.advance(Duration::from_millis(500));
    assert_eq!(runs.borrow().last(), Some(&(4000, 1)));
}

#[test]
fn a_looping_call_can_stop_itself() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let count = Rc::new(RefCell::new(0));
    let c = count.clone();
    let call = LoopingCall::new(&reactor, move |call| {
        *c.borrow_mut() += 1;
        if *c.borrow() == 3 {
            call.stop().unwrap();
        }
    });
    call.start(secs(1), false).unwrap();
    drop(call); // the reactor keeps it running
    clock.pump(&[secs(1); 10]);
    assert_eq!(*count.borrow(), 3);
    assert_eq!(reactor.pending_call_count(), 0);
}

#[test]
fn pending_calls_lists_what_is_scheduled_earliest_first() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let late = reactor.call_later(secs(3), |_| {});
    let early = reactor.call_later(secs(1), |_| {});
    let cancelled = reactor.call_later(secs(2), |_| {});
    cancelled.cancel().unwrap();
    let pending = reactor.pending_calls();
    let times: Vec<Duration> = pending.iter().map(|call| call.time()).collect();
    assert_eq!(times, [secs(1), secs(3)]);
    // The listed handles act on the calls.
    pending[1].cancel().unwrap();
    assert!(late.cancelled());
    clock.advance(secs(5));
    assert!(early.called());
    assert!(reactor.pending_calls().is_empty());
}

#[test]
fn a_call_keeps_its_outcome_past_65535_handles() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let call = reactor.call_later(Duration::from_secs(1), |_| {});
    clock.advance(Duration::from_secs(1));
    let clones: Vec<DelayedCall> = (0..70_000).map(|_| call.clone()).collect();
    drop(clones);
    // Before: the count saturated at 65,535, reached zero early, and the
    // slot was freed while this handle still pointed at it.
    assert!(call.called());
    assert_eq!(call.cancel(), Err(TimerError::AlreadyCalled));
}

#[test]
fn a_call_whose_reactor_is_gone_says_so() {
    let _fds = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let call = reactor.call_later(Duration::from_secs(1), |_| {});
    drop(reactor);
    assert_eq!(call.cancel(), Err(TimerError::ReactorGone));
    assert_eq!(call.reset(Duration::ZERO), Err(TimerError::ReactorGone));
    assert_eq!(call.delay(Duration::ZERO), Err(TimerError::ReactorGone));
    assert!(call.cancelled());
}

#[test]
fn a_looping_call_can_stop_and_restart_itself_from_inside() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let times = Rc::new(RefCell::new(Vec::new()));
    let log = times.clone();
    let call = LoopingCall::new(&reactor, move |call| {
        let reactor = call.reactor().unwrap();
        log.borrow_mut().push(reactor.seconds().as_secs());
        if log.borrow().len() == 2 {
            // Before: start(_, true) re-entered the function and panicked
            // on its RefCell.
            call.stop().unwrap();
            call.start(Duration::from_secs(10), true).unwrap();
        }
    });
    call.start(Duration::from_secs(1), true).unwrap();
    clock.advance(Duration::from_secs(1));
    // The restarted loop's first call runs at once, after this one.
    assert_eq!(*times.borrow(), [0, 1, 1]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(*times.borrow(), [0, 1, 1, 11]);
    assert_eq!(call.interval(), Some(Duration::from_secs(10)));
    assert_eq!(reactor.caught_panic_count(), 0);
}
