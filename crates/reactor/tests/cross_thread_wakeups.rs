//! Calls from other threads wake a reactor that has nothing else to do:
//! no wake-up is lost when they race with the loop's own turn, with
//! unrelated wake-ups, or with a timer-free wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard};

/// Round trips per sending thread: each waits for its call to run before
/// queueing the next, so every call must wake the reactor by itself.
const ROUND_TRIPS: usize = 100_000;

/// Two threads queue calls one at a time while a third keeps waking the
/// reactor (its notifications coalesce with theirs): each call runs
/// without any further event to carry it. A lost wake-up leaves the
/// reactor waiting forever, and the watchdog ends the test.
#[test]
#[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
fn every_call_from_thread_runs_without_another_event() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
    let stop_waker = Arc::new(AtomicBool::new(false));
    let waker = {
        let handle = reactor.handle();
        let stop = stop_waker.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                handle.wake();
                std::thread::yield_now();
            }
        })
    };
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let handle = reactor.handle();
            std::thread::spawn(move || {
                let (ack, acked) = mpsc::channel::<()>();
                for _ in 0..ROUND_TRIPS {
                    let ack = ack.clone();
                    handle
                        .call_from_thread(move |_| ack.send(()).unwrap())
                        .unwrap();
                    acked.recv().unwrap();
                }
            })
        })
        .collect();
    let handle = reactor.handle();
    let joiner = std::thread::spawn(move || {
        for sender in senders {
            sender.join().unwrap();
        }
        handle.stop().unwrap();
    });
    reactor.run().unwrap();
    joiner.join().unwrap();
    stop_waker.store(true, Ordering::Relaxed);
    waker.join().unwrap();
}

/// A timer scheduled by a call from another thread, while the reactor
/// waited with no timer pending, bounds the next wait: it fires on time,
/// not after some unrelated event.
#[test]
#[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
fn a_timer_added_when_none_was_pending_bounds_the_next_wait() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(20));
    let handle = reactor.handle();
    // The reactor isolates a callback's panic, so the measure comes out to
    // the test's thread to be checked there.
    let (report, waited) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        handle
            .call_from_thread(move |reactor| {
                let start = reactor.seconds();
                reactor.call_later(Duration::from_millis(20), move |reactor| {
                    report.send(reactor.seconds() - start).unwrap();
                    reactor.stop().unwrap();
                });
            })
            .unwrap();
    });
    reactor.run().unwrap();
    caller.join().unwrap();
    assert!(waited.try_recv().unwrap() >= Duration::from_millis(20));
}
