//! Deferred: firing once, cancelling, awaiting; and the combinators.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::DescriptorGuard;
use torsion_reactor::{
    deferred_list, first_success, gather_results, AlreadyCalledError, CancelledError, Deferred,
    FirstError, Reactor,
};

/// An error type for the tests: a message, or a cancellation.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Bad(&'static str),
    Cancelled,
}

impl From<CancelledError> for Failure {
    fn from(_: CancelledError) -> Self {
        Failure::Cancelled
    }
}

fn turn(reactor: &Reactor) {
    reactor.iterate(Duration::ZERO).unwrap();
}

#[test]
fn firing_twice_is_an_error_and_keeps_the_first_result() {
    let d: Deferred<u32, Failure> = Deferred::new();
    assert!(!d.is_called());
    d.callback(1).unwrap();
    assert!(d.is_called());
    assert_eq!(d.callback(2), Err(AlreadyCalledError));
    assert_eq!(d.errback(Failure::Bad("late")), Err(AlreadyCalledError));
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(1));
}

#[test]
fn an_awaiting_task_is_woken_by_callback_and_errback() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let (good, bad) = (
        Deferred::<u32, Failure>::new(),
        Deferred::<u32, Failure>::new(),
    );
    let (g, b) = (good.clone(), bad.clone());
    let task = reactor.spawn(async move { (g.await, b.await) });
    turn(&reactor);
    assert!(!task.is_finished());
    good.callback(5).unwrap();
    turn(&reactor);
    assert!(!task.is_finished());
    bad.errback(Failure::Bad("no")).unwrap();
    turn(&reactor);
    assert!(task.is_finished());
    let results = reactor.run_until_complete(task).unwrap().unwrap();
    assert_eq!(results, (Ok(5), Err(Failure::Bad("no"))));
}

#[test]
fn cancel_runs_the_canceller_then_fails_with_cancelled() {
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let d: Deferred<u32, Failure> = Deferred::with_canceller(move |_| flag.set(true));
    d.cancel();
    assert!(ran.get());
    assert!(d.is_called());
    // The work it abandoned may still report: ignored, as in Twisted.
    assert_eq!(d.callback(3), Ok(()));
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(Failure::Cancelled)
    );
}

#[test]
fn a_canceller_may_fire_the_deferred_itself() {
    let d: Deferred<u32, Failure> =
        Deferred::with_canceller(|d| d.errback(Failure::Bad("aborted")).unwrap());
    d.cancel();
    assert_eq!(d.callback(3), Err(AlreadyCalledError));
    d.cancel(); // Nothing more to do.
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(Failure::Bad("aborted"))
    );
}

#[test]
fn cancelling_a_fired_deferred_does_nothing() {
    let d: Deferred<u32, Failure> = Deferred::with_canceller(|_| panic!("not called"));
    d.callback(9).unwrap();
    d.cancel();
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.run_until_complete(d).unwrap(), Ok(9));
}

#[test]
fn gather_results_yields_values_in_list_order() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let ds: Vec<Deferred<u32, Failure>> = (0..3).map(|_| Deferred::new()).collect();
    let task = reactor.spawn(gather_results(ds.clone()));
    turn(&reactor);
    ds[2].callback(2).unwrap();
    ds[0].callback(0).unwrap();
    turn(&reactor);
    assert!(!task.is_finished());
    ds[1].callback(1).unwrap();
    turn(&reactor);
    let values = reactor.run_until_complete(task).unwrap().unwrap();
    assert_eq!(values, Ok(vec![0, 1, 2]));
}

#[test]
fn gather_results_fails_with_the_first_error_and_cancels_the_rest() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let r = reactor.clone();
    let failing: Deferred<(), Failure> = Deferred::new();
    let f = failing.clone();
    let sleeps = (0..2).map(move |i| {
        let r = r.clone();
        let f = f.clone();
        Box::pin(async move {
            if i == 0 {
                r.sleep(Duration::from_secs(100)).await;
                Ok(())
            } else {
                f.await
            }
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>>>>
    });
    let task = reactor.spawn(gather_results(sleeps));
    turn(&reactor);
    assert_eq!(reactor.pending_call_count(), 1);
    failing.errback(Failure::Bad("second")).unwrap();
    turn(&reactor);
    assert!(task.is_finished());
    assert_eq!(
        reactor.pending_call_count(),
        0,
        "the other sleep was cancelled"
    );
    let result = reactor.run_until_complete(task).unwrap().unwrap();
    assert_eq!(
        result,
        Err(FirstError {
            index: 1,
            error: Failure::Bad("second")
        })
    );
}

#[test]
fn deferred_list_yields_every_result() {
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let ds = vec![
        Deferred::<u32, Failure>::succeed(1),
        Deferred::fail(Failure::Bad("two")),
        Deferred::succeed(3),
    ];
    let results = reactor.run_until_complete(deferred_list(ds)).unwrap();
    assert_eq!(results, vec![Ok(1), Err(Failure::Bad("two")), Ok(3)]);
    let empty: Vec<Deferred<u32, Failure>> = Vec::new();
    assert!(reactor
        .run_until_complete(deferred_list(empty))
        .unwrap()
        .is_empty());
}

#[test]
fn first_success_takes_the_first_value_or_every_error() {
    let _descriptors = DescriptorGuard::new();
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let ds: Vec<Deferred<u32, Failure>> = (0..3).map(|_| Deferred::new()).collect();
    let task = reactor.spawn(first_success(ds.clone()));
    turn(&reactor);
    ds[0].errback(Failure::Bad("zero")).unwrap();
    turn(&reactor);
    assert!(!task.is_finished());
    ds[2].callback(22).unwrap();
    turn(&reactor);
    assert!(task.is_finished());
    assert_eq!(
        reactor.run_until_complete(task).unwrap().unwrap(),
        Ok((2, 22))
    );

    let all_fail = vec![
        Deferred::<u32, Failure>::fail(Failure::Bad("a")),
        Deferred::fail(Failure::Bad("b")),
    ];
    let result = reactor.run_until_complete(first_success(all_fail)).unwrap();
    assert_eq!(result, Err(vec![Failure::Bad("a"), Failure::Bad("b")]));
}

/// A pending Deferred whose canceller sets `flag`.
fn cancellable(flag: &Rc<Cell<bool>>) -> Deferred<u32, Failure> {
    let flag = flag.clone();
    Deferred::with_canceller(move |_| flag.set(true))
}

#[test]
fn the_combinators_cancel_the_deferreds_they_give_up() {
    let _descriptors = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();

    let cancelled = Rc::new(Cell::new(false));
    let loser = cancellable(&cancelled);
    let winner = reactor
        .run_until_complete(first_success(vec![Deferred::succeed(1), loser.clone()]))
        .unwrap();
    assert_eq!(winner, Ok((0, 1)));
    assert!(cancelled.get(), "first_success ran the loser's canceller");
    assert_eq!(loser.callback(2), Ok(()), "a late result is ignored");

    let cancelled = Rc::new(Cell::new(false));
    let failed = reactor
        .run_until_complete(gather_results(vec![
            Deferred::fail(Failure::Bad("first")),
            cancellable(&cancelled),
        ]))
        .unwrap();
    assert_eq!(failed.unwrap_err().index, 0);
    assert!(cancelled.get(), "gather_results ran the other's canceller");

    // A combinator given up itself (dropped, as by a timeout) cancels
    // the Deferreds still pending in it.
    let cancelled = Rc::new(Cell::new(false));
    let list = deferred_list(vec![Deferred::succeed(1), cancellable(&cancelled)]);
    drop(list);
    assert!(
        cancelled.get(),
        "dropping deferred_list cancelled its member"
    );
}
