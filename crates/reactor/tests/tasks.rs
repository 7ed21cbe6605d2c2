//! Tasks on the reactor: spawning, waking (same thread and other
//! threads), the per-turn budget, panics, cancellation, and the futures of
//! the reactor's clock, all deterministic on the manual clock.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use torsion_reactor::testing::{guarded_reactor, DescriptorGuard, Watchdog};
use torsion_reactor::{Handler, Interest, Reactor, Readiness, RunError, TaskError, TimedOut};

const LIMIT: Duration = Duration::from_secs(30);

fn turn(reactor: &Reactor) {
    reactor.iterate(Duration::ZERO).unwrap();
}

/// A future that counts its polls and parks its waker where a test (or
/// another thread) can reach it; ready once `done` is set.
#[derive(Clone, Default)]
struct Probe {
    polls: Rc<Cell<u32>>,
    waker: Arc<Mutex<Option<Waker>>>,
    done: Rc<Cell<bool>>,
}

impl Probe {
    fn future(&self) -> impl Future<Output = u32> + 'static {
        let probe = self.clone();
        poll_fn(move |cx| {
            probe.polls.set(probe.polls.get() + 1);
            if probe.done.get() {
                return Poll::Ready(probe.polls.get());
            }
            *probe.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap().clone();
        waker.expect("polled once").wake();
    }
}

/// Sets a flag when dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn run_until_complete_returns_the_output() {
    let _descriptors = DescriptorGuard::new();
    let _watchdog = Watchdog::new(LIMIT);
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let inner = reactor.spawn(async { 21 });
    let answer = reactor
        .run_until_complete(async move { inner.await.unwrap() * 2 })
        .unwrap();
    assert_eq!(answer, 42);
    assert_eq!(reactor.task_count(), 0);
    assert!(!reactor.is_running());
}

#[test]
fn an_idle_task_is_polled_zero_times() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let probe = Probe::default();
    let task = reactor.spawn(probe.future());
    turn(&reactor);
    assert_eq!(probe.polls.get(), 1, "the first poll");
    let before = reactor.task_poll_count();
    for _ in 0..1000 {
        turn(&reactor);
    }
    assert_eq!(probe.polls.get(), 1);
    assert_eq!(reactor.task_poll_count(), before);
    probe.done.set(true);
    probe.wake();
    turn(&reactor);
    assert!(task.is_finished());
    assert_eq!(probe.polls.get(), 2);
}

#[test]
fn a_wake_from_a_worker_thread_reaches_the_right_task_once() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let (a, b) = (Probe::default(), Probe::default());
    let task_a = reactor.spawn(a.future());
    let task_b = reactor.spawn(b.future());
    turn(&reactor);
    assert_eq!((a.polls.get(), b.polls.get()), (1, 1));

    // A burst of wakes from another thread: coalesced into one poll.
    let waker = b.waker.clone();
    std::thread::spawn(move || {
        let waker = waker.lock().unwrap().clone().unwrap();
        for _ in 0..1000 {
            waker.wake_by_ref();
        }
    })
    .join()
    .unwrap();
    // The reactor was woken through its poller: this turn does not need
    // the zero timeout to see the calls.
    reactor.iterate(LIMIT).unwrap();
    assert_eq!((a.polls.get(), b.polls.get()), (1, 2));
    for _ in 0..10 {
        turn(&reactor);
    }
    assert_eq!((a.polls.get(), b.polls.get()), (1, 2));
    drop((task_a, task_b));
    assert_eq!(reactor.task_count(), 0);
}

#[test]
fn wakes_on_the_reactor_thread_are_coalesced() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let probe = Probe::default();
    let _task = reactor.spawn(probe.future());
    turn(&reactor);
    for _ in 0..100 {
        probe.wake();
    }
    turn(&reactor);
    assert_eq!(probe.polls.get(), 2);
}

/// Counts readable events and drains the socket.
struct Reader {
    stream: RefCell<Option<UnixStream>>,
    events: Cell<u32>,
}

impl Handler for Reader {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        if readiness.is_readable() {
            self.events.set(self.events.get() + 1);
            let mut buffer = [0; 64];
            if let Some(stream) = &mut *self.stream.borrow_mut() {
                let _ = stream.read(&mut buffer);
            }
        }
    }
}

#[test]
fn a_self_waking_task_does_not_starve_a_socket_or_a_timer() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let spins = Rc::new(Cell::new(0u64));
    let counter = spins.clone();
    let _spinner = reactor.spawn(poll_fn(move |cx| {
        counter.set(counter.get() + 1);
        cx.waker().wake_by_ref();
        Poll::<()>::Pending
    }));

    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let reader = Rc::new(Reader {
        stream: RefCell::new(Some(ours.try_clone().unwrap())),
        events: Cell::new(0),
    });
    let _registration = reactor
        .register(ours, Interest::READABLE, reader.clone())
        .unwrap();
    let timer_fired = Rc::new(Cell::new(false));
    let fired = timer_fired.clone();
    reactor.call_later(Duration::ZERO, move |_| fired.set(true));

    theirs.write_all(b"x").unwrap();
    for _ in 0..3 {
        turn(&reactor);
    }
    assert_eq!(reader.events.get(), 1, "the socket was heard");
    assert!(timer_fired.get(), "the timer ran");
    assert_eq!(spins.get(), 3, "one poll per turn");
    reader.stream.borrow_mut().take();
}

#[test]
fn the_budget_caps_polls_per_turn() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let polls = Rc::new(Cell::new(0usize));
    let tasks: Vec<_> = (0..torsion_reactor::MAX_TASK_POLLS_PER_TURN + 10)
        .map(|_| {
            let polls = polls.clone();
            reactor.spawn(async move { polls.set(polls.get() + 1) })
        })
        .collect();
    turn(&reactor);
    assert_eq!(polls.get(), torsion_reactor::MAX_TASK_POLLS_PER_TURN);
    turn(&reactor);
    assert_eq!(polls.get(), tasks.len());
    assert!(tasks.iter().all(|task| task.is_finished()));
}

#[test]
fn a_panicking_task_dies_alone() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let doomed = reactor.spawn(async {
        panic!("boom");
    });
    let fine = reactor.spawn(async { 7 });
    let outcome = reactor
        .run_until_complete(async move { (doomed.await, fine.await) })
        .unwrap();
    assert_eq!(outcome.0, Err(TaskError::Panicked("boom".into())));
    assert_eq!(outcome.1, Ok(7));
    assert_eq!(reactor.caught_panic_count(), 1);

    let result = reactor.run_until_complete(async { panic!("again") });
    assert!(matches!(result, Err(RunError::Panicked(m)) if m == "again"));
    assert_eq!(reactor.caught_panic_count(), 2);
}

#[test]
fn dropping_the_handle_cancels_the_task_and_its_timer() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let sleeper = reactor.clone();
    let reached = Rc::new(Cell::new(false));
    let after = reached.clone();
    let task = reactor.spawn(async move {
        let _flag = flag;
        sleeper.sleep(Duration::from_secs(10)).await;
        after.set(true);
    });
    turn(&reactor);
    assert_eq!(reactor.pending_call_count(), 1, "the sleep's timer");
    drop(task);
    assert!(dropped.get(), "the future was dropped");
    assert_eq!(reactor.pending_call_count(), 0, "the timer was cancelled");
    assert_eq!(reactor.task_count(), 0);
    clock.advance(Duration::from_secs(20));
    turn(&reactor);
    assert!(!reached.get());
}

#[test]
fn cancel_then_await_yields_cancelled_and_detach_keeps_running() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let sleeper = reactor.clone();
    let mut task = reactor.spawn(async move {
        sleeper.sleep(Duration::from_secs(1)).await;
    });
    turn(&reactor);
    task.cancel();
    let polled = Pin::new(&mut task).poll(&mut Context::from_waker(&noop_waker()));
    assert_eq!(polled, Poll::Ready(Err(TaskError::Cancelled)));

    let done = Rc::new(Cell::new(false));
    let flag = done.clone();
    let sleeper = reactor.clone();
    reactor
        .spawn(async move {
            sleeper.sleep(Duration::from_secs(1)).await;
            flag.set(true);
        })
        .detach();
    turn(&reactor);
    clock.advance(Duration::from_secs(1));
    turn(&reactor);
    assert!(done.get());
    assert_eq!(reactor.task_count(), 0);
}

#[test]
fn run_until_complete_reports_a_stop_first() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    reactor.call_later(Duration::ZERO, |reactor| reactor.stop().unwrap());
    let sleeper = reactor.clone();
    let result = reactor.run_until_complete(async move {
        sleeper.sleep(Duration::from_secs(3600)).await;
    });
    assert!(matches!(result, Err(RunError::Stopped)));
    assert_eq!(reactor.task_count(), 0);
    assert_eq!(reactor.pending_call_count(), 0, "the sleep was cancelled");
}

#[test]
fn sleeps_end_in_deadline_order_on_the_manual_clock() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = [3u64, 1, 2]
        .into_iter()
        .map(|secs| {
            let (log, reactor2) = (log.clone(), reactor.clone());
            reactor.spawn(async move {
                reactor2.sleep(Duration::from_secs(secs)).await;
                log.borrow_mut().push(secs);
            })
        })
        .collect();
    turn(&reactor);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        turn(&reactor);
    }
    assert_eq!(*log.borrow(), [1, 2, 3]);
    assert!(tasks.iter().all(|task| task.is_finished()));
}

#[test]
fn a_timeout_fires_and_cancels_the_timer_beneath() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let r = reactor.clone();
    let slow = reactor.spawn(async move {
        let inner = r.sleep(Duration::from_secs(10));
        r.timeout(Duration::from_secs(2), inner).await
    });
    let r = reactor.clone();
    let quick = reactor.spawn(async move {
        let inner = r.sleep(Duration::from_secs(1));
        r.timeout(Duration::from_secs(2), inner).await
    });
    turn(&reactor);
    assert_eq!(reactor.pending_call_count(), 4);
    clock.advance(Duration::from_secs(1));
    turn(&reactor);
    assert!(quick.is_finished());
    assert_eq!(
        reactor.pending_call_count(),
        2,
        "quick's timeout timer is gone"
    );
    clock.advance(Duration::from_secs(1));
    turn(&reactor);
    assert!(slow.is_finished());
    assert_eq!(
        reactor.pending_call_count(),
        0,
        "slow's inner sleep is gone"
    );
    let results =
        reactor.run_until_complete(async move { (quick.await.unwrap(), slow.await.unwrap()) });
    let (quick, slow) = results.unwrap();
    assert_eq!(quick, Ok(()));
    assert_eq!(slow, Err(TimedOut(Duration::from_secs(2))));
}

#[test]
fn run_in_thread_yields_the_work_or_its_panic() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let r = reactor.clone();
    let (ok, panicked) = reactor
        .run_until_complete(async move {
            let ok = r.run_in_thread(|| 6 * 7).await;
            let panicked = r.run_in_thread(|| -> u8 { panic!("worker") }).await;
            (ok, panicked)
        })
        .unwrap();
    assert_eq!(ok, Ok(42));
    assert_eq!(panicked, Err(TaskError::Panicked("worker".into())));
}

fn noop_waker() -> Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

#[test]
fn a_future_that_stops_the_reactor_still_returns_its_output() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let r = reactor.clone();
    let output = reactor.run_until_complete(async move {
        r.stop().unwrap();
        "done"
    });
    assert_eq!(output.unwrap(), "done");
    assert!(!reactor.is_running());
}

#[test]
fn dropping_the_reactor_cancels_its_tasks() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let mut task = reactor.spawn(async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    });
    turn(&reactor);
    drop(reactor);
    assert!(dropped.get(), "the future was dropped with the reactor");
    let polled = Pin::new(&mut task).poll(&mut Context::from_waker(&noop_waker()));
    assert_eq!(polled, Poll::Ready(Err(TaskError::Cancelled)));
}

/// Ready at its first poll, and panics when dropped.
struct PanicsOnDrop;

impl Future for PanicsOnDrop {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<u32> {
        Poll::Ready(3)
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("dropping a finished future");
    }
}

#[test]
fn a_finished_future_panicking_in_drop_dies_alone() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    reactor.spawn(PanicsOnDrop).detach();
    let kept = reactor.spawn(PanicsOnDrop);
    let turned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reactor.iterate(Duration::ZERO)
    }));
    assert!(matches!(turned, Ok(Ok(()))), "the panic left the turn");
    assert_eq!(reactor.caught_panic_count(), 2);
    assert_eq!(reactor.task_count(), 0);
    // A panic in the drop is the task's panic.
    let polled = Pin::new(&mut { kept }).poll(&mut Context::from_waker(&noop_waker()));
    assert_eq!(
        polled,
        Poll::Ready(Err(TaskError::Panicked(
            "dropping a finished future".into()
        )))
    );
}

/// Spawns a task when dropped, and keeps its handle.
struct SpawnsOnDrop {
    reactor: Reactor,
    spawned: Rc<RefCell<Option<torsion_reactor::JoinHandle<u32>>>>,
}

impl Drop for SpawnsOnDrop {
    fn drop(&mut self) {
        let handle = self.reactor.spawn(async { 5 });
        *self.spawned.borrow_mut() = Some(handle);
    }
}

#[test]
fn a_task_spawned_while_shutdown_cancels_tasks_is_not_stranded() {
    let _descriptors = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(LIMIT);
    let spawned = Rc::new(RefCell::new(None));
    let guard = SpawnsOnDrop {
        reactor: reactor.clone(),
        spawned: spawned.clone(),
    };
    reactor
        .spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        })
        .detach();
    reactor.call_soon(|reactor| reactor.stop().unwrap());
    reactor.run().unwrap();
    for _ in 0..3 {
        turn(&reactor);
    }
    let handle = spawned
        .borrow_mut()
        .take()
        .expect("spawned during shutdown");
    assert!(
        handle.is_finished(),
        "the task spawned during shutdown hangs"
    );
    assert_eq!(reactor.task_count(), 0);
    let polled = Pin::new(&mut { handle }).poll(&mut Context::from_waker(&noop_waker()));
    assert!(
        matches!(polled, Poll::Ready(Ok(5) | Err(TaskError::Cancelled))),
        "{polled:?}"
    );
}
