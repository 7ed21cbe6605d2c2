//! The reactor's own counters (`Reactor::stats`, `ReactorHandle::stats`):
//! each moves when, and only when, what it counts happens; other threads
//! read whole snapshots as of the end of a turn. Every test takes the
//! descriptor guard: each makes a reactor (its poller's descriptors).

use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard};
use torsion_reactor::{Handler, Interest, Reactor, ReactorStats, Readiness};

#[test]
fn timers_pending_and_fired_follow_the_manual_clock() {
    let _fds = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let before = reactor.stats();
    assert_eq!(before, ReactorStats::default());
    let a = reactor.call_later(Duration::from_secs(1), |_| {});
    let _b = reactor.call_later(Duration::from_secs(2), |_| {});
    let _c = reactor.call_later(Duration::from_secs(3), |_| {});
    assert_eq!(reactor.stats().timers_pending, 3);
    a.cancel().unwrap();
    let stats = reactor.stats();
    assert_eq!((stats.timers_pending, stats.timers_fired), (2, 0));
    clock.advance(Duration::from_secs(2));
    let stats = reactor.stats();
    assert_eq!((stats.timers_pending, stats.timers_fired), (1, 1));
    // Advancing publishes too: a handle sees it without a turn.
    assert_eq!(reactor.handle().stats().timers_fired, 1);
    clock.advance(Duration::from_secs(5));
    let stats = reactor.stats();
    assert_eq!((stats.timers_pending, stats.timers_fired), (0, 2));
    // Nothing else moved: no turn was taken.
    assert_eq!(stats.turns, 0);
    assert_eq!(stats.soon_calls, 0);
}

#[test]
fn turns_soon_calls_and_panics_count_once_each() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    reactor.call_soon(|_| {});
    reactor.call_soon(|_| panic!("deliberate"));
    reactor.iterate(Duration::ZERO).unwrap();
    let stats = reactor.stats();
    assert_eq!(stats.turns, 1);
    assert_eq!(stats.soon_calls, 2);
    assert_eq!(stats.callbacks_panicked, 1);
    assert_eq!(stats.callbacks_panicked, reactor.caught_panic_count());
    reactor.iterate(Duration::ZERO).unwrap();
    let stats = reactor.stats();
    assert_eq!(
        (stats.turns, stats.soon_calls, stats.callbacks_panicked),
        (2, 2, 1)
    );
}

#[test]
fn tasks_spawned_polled_and_alive() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (tx, rx) = futures_channel();
    let waiting = reactor.spawn(async move {
        rx.await;
    });
    assert_eq!(reactor.run_until_complete(async { 1 }).unwrap(), 1);
    let stats = reactor.stats();
    // The waiting task and run_until_complete's own.
    assert_eq!(stats.tasks_spawned, 2);
    assert_eq!(stats.tasks_alive, 1);
    let polls = stats.task_polls;
    assert!(polls >= 2, "{stats:?}");
    tx.send();
    assert_eq!(reactor.run_until_complete(waiting).unwrap(), Ok(()));
    let stats = reactor.stats();
    assert_eq!(stats.tasks_alive, 0);
    assert!(stats.task_polls > polls);
}

/// Counts the events it is handed.
struct Noting(std::cell::Cell<usize>);

impl Handler for Noting {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn io_events_and_wakes_are_told_apart() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let handler = Rc::new(Noting(std::cell::Cell::new(0)));
    let registration = reactor
        .register(ours, Interest::NONE, handler.clone())
        .unwrap();
    assert_eq!(reactor.stats().sources, 1);
    registration.wake();
    reactor.iterate(Duration::ZERO).unwrap();
    let stats = reactor.stats();
    assert_eq!((stats.io_events, stats.wakes), (0, 1));
    assert_eq!(handler.0.get(), 1);
    // Readable: one event per turn while the byte is unread.
    std::io::Write::write_all(&mut &theirs, b"x").unwrap();
    registration.set_interest(Interest::READABLE).unwrap();
    reactor.iterate(Duration::from_secs(5)).unwrap();
    let stats = reactor.stats();
    assert_eq!((stats.io_events, stats.wakes), (1, 1));
    drop(registration);
    assert_eq!(reactor.stats().sources, 0);
}

#[test]
fn other_threads_read_the_snapshot_of_the_last_turn_whole() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let handle = reactor.handle();
    let (to_reader, from_reactor) = mpsc::channel::<ReactorStats>();
    let (to_reactor, from_reader) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        // Each message is what the reactor published just before sending
        // it; the handle must show exactly that (nothing else moves while
        // the reactor waits for the reply).
        while let Ok(published) = from_reactor.recv() {
            seen.push(handle.stats() == published);
            if to_reactor.send(()).is_err() {
                break;
            }
        }
        seen
    });
    let from_reader = Rc::new(from_reader);
    for round in 0..20 {
        let (to_reader, from_reader) = (to_reader.clone(), from_reader.clone());
        reactor.call_soon(move |reactor| {
            let published = reactor.stats();
            assert_eq!(published.soon_calls, round + 1);
            to_reader.send(published).unwrap();
            from_reader.recv().unwrap();
        });
        reactor.iterate(Duration::ZERO).unwrap();
        // At the end of the turn, the turn's counts are published.
        let after = reactor.handle().stats();
        assert_eq!(after.turns, round + 1);
        assert_eq!(after.soon_calls, round + 1);
    }
    drop(to_reader);
    let seen = reader.join().unwrap();
    assert_eq!(seen, vec![true; 20]);
}

#[test]
fn calls_from_other_threads_are_counted_as_they_run() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let handle = reactor.handle();
    std::thread::spawn(move || {
        for _ in 0..3 {
            handle.call_from_thread(|_| {}).unwrap();
        }
        handle.stop().unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(reactor.stats().thread_calls, 0, "queued, not yet run");
    reactor.run().unwrap();
    // The handle outlives nothing here, but a dropped reactor's handle
    // keeps the last published counts.
    let handle = reactor.handle();
    let stats = reactor.stats();
    assert_eq!(stats.thread_calls, 4);
    drop(reactor);
    assert_eq!(handle.stats(), stats);
}

/// A one-shot channel whose receiver is a future, made of the reactor's
/// own parts: a `Deferred`-free minimal pair.
fn futures_channel() -> (Sender, Receiver) {
    let shared = Rc::new(std::cell::RefCell::new((false, None::<std::task::Waker>)));
    (Sender(shared.clone()), Receiver(shared))
}

struct Sender(Rc<std::cell::RefCell<(bool, Option<std::task::Waker>)>>);

impl Sender {
    fn send(self) {
        let mut state = self.0.borrow_mut();
        state.0 = true;
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }
}

struct Receiver(Rc<std::cell::RefCell<(bool, Option<std::task::Waker>)>>);

impl std::future::Future for Receiver {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut state = self.0.borrow_mut();
        if state.0 {
            std::task::Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }
}
