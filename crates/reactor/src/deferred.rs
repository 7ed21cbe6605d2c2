//! [`Deferred`]: a result that arrives later, fired once from callback
//! code and awaited from `async` code (Twisted's `Deferred`); and the
//! combinators over lists of results ([`gather_results`],
//! [`deferred_list`], [`first_success`]).
//!
//! Twisted chains callbacks on a Deferred (`addCallback`, `addErrback`,
//! `addBoth`); here the chain is the `async` code that awaits it:
//!
//! | Twisted | Torsion |
//! |---|---|
//! | `d.addCallback(f)` | `f(d.await?)` |
//! | `d.addErrback(g)` | `d.await.or_else(g)` |
//! | `d.addBoth(h)` | `h(d.await)` |
//! | a callback returning a Deferred | `.await` inside the chain |
//! | `d.addTimeout(t, reactor)` | `reactor.timeout(t, d)` (at the timeout `d` is dropped, not cancelled: call `d.cancel()` on a clone to run its canceller) |
//! | `gatherResults(ds)` | `gather_results(ds)` |
//! | `DeferredList(ds, consumeErrors=True)` | `deferred_list(ds)` |
//! | `DeferredList(ds, fireOnOneCallback=True)` | `first_success(ds)` |
//! | `DeferredList(ds, fireOnOneErrback=True)` | `gather_results(ds)` (its error is the first failure, with its index) |

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A [`Deferred`] was fired a second time (Twisted's
/// `AlreadyCalledError`); the second result was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyCalledError;

impl fmt::Display for AlreadyCalledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deferred has already been fired")
    }
}

impl std::error::Error for AlreadyCalledError {}

/// A [`Deferred`] was cancelled and its canceller did not fire it
/// (Twisted's `CancelledError`). A Deferred's error type converts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelledError;

impl fmt::Display for CancelledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deferred was cancelled")
    }
}

impl std::error::Error for CancelledError {}

type Canceller<T, E> = Box<dyn FnOnce(&Deferred<T, E>)>;

enum State<T, E> {
    Waiting,
    Fired(Result<T, E>),
    Taken,
}

struct Inner<T, E> {
    state: RefCell<State<T, E>>,
    /// Cancelled before it was fired: a later fire is ignored, as
    /// Twisted's does.
    cancelled: Cell<bool>,
    canceller: RefCell<Option<Canceller<T, E>>>,
    waker: RefCell<Option<Waker>>,
}

/// A result that will arrive later (Twisted's `Deferred`): fired exactly
/// once with [`Deferred::callback`] (success) or [`Deferred::errback`]
/// (failure), and awaited as a future of `Result<T, E>`.
///
/// `Deferred` is a cheap handle (`Rc` inside): the code that will fire it
/// keeps one clone, the code that awaits it another. One place awaits it;
/// the result is handed over once. Dropping the awaiting clone does not
/// cancel; [`Deferred::cancel`] does, and so do the combinators
/// ([`gather_results`], [`deferred_list`], [`first_success`]) for the
/// Deferreds they were given and no longer wait for.
///
/// ```
/// use torsion_reactor::{Deferred, CancelledError, Reactor};
///
/// let reactor = Reactor::new()?;
/// let d: Deferred<u32, CancelledError> = Deferred::new();
/// let firing = d.clone();
/// reactor.call_soon(move |_| firing.callback(7).unwrap());
/// assert_eq!(reactor.run_until_complete(d)?, Ok(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a Deferred does nothing unless awaited or fired"]
pub struct Deferred<T, E> {
    inner: Rc<Inner<T, E>>,
}

impl<T, E> Clone for Deferred<T, E> {
    fn clone(&self) -> Self {
        Deferred {
            inner: self.inner.clone(),
        }
    }
}

impl<T, E> Default for Deferred<T, E> {
    fn default() -> Self {
        Deferred::new()
    }
}

impl<T, E> Deferred<T, E> {
    /// A Deferred not fired yet, without a canceller.
    pub fn new() -> Deferred<T, E> {
        Deferred {
            inner: Rc::new(Inner {
                state: RefCell::new(State::Waiting),
                cancelled: Cell::new(false),
                canceller: RefCell::new(None),
                waker: RefCell::new(None),
            }),
        }
    }

    /// A Deferred whose [`Deferred::cancel`] runs `canceller` first (to
    /// abandon the work that would fire it; it may fire the Deferred with
    /// a result of its own).
    pub fn with_canceller<C>(canceller: C) -> Deferred<T, E>
    where
        C: FnOnce(&Deferred<T, E>) + 'static,
    {
        let deferred = Deferred::new();
        *deferred.inner.canceller.borrow_mut() = Some(Box::new(canceller));
        deferred
    }

    /// A Deferred already fired with `value` (Twisted's `succeed`).
    pub fn succeed(value: T) -> Deferred<T, E> {
        let deferred = Deferred::new();
        *deferred.inner.state.borrow_mut() = State::Fired(Ok(value));
        deferred
    }

    /// A Deferred already failed with `error` (Twisted's `fail`).
    pub fn fail(error: E) -> Deferred<T, E> {
        let deferred = Deferred::new();
        *deferred.inner.state.borrow_mut() = State::Fired(Err(error));
        deferred
    }

    /// Fires with `value`, waking whoever awaits (Twisted's `callback`).
    ///
    /// # Errors
    /// [`AlreadyCalledError`] if it was fired before. A Deferred cancelled
    /// before being fired ignores the late result and returns `Ok`.
    pub fn callback(&self, value: T) -> Result<(), AlreadyCalledError> {
        self.fire(Ok(value))
    }

    /// Fires with the failure `error` (Twisted's `errback`).
    ///
    /// # Errors
    /// As for [`Deferred::callback`].
    pub fn errback(&self, error: E) -> Result<(), AlreadyCalledError> {
        self.fire(Err(error))
    }

    fn fire(&self, result: Result<T, E>) -> Result<(), AlreadyCalledError> {
        {
            let mut state = self.inner.state.borrow_mut();
            // Cancelled: a late result is ignored (given up by a
            // combinator, it may not have been fired at all).
            if self.inner.cancelled.get() {
                return Ok(());
            }
            if !matches!(*state, State::Waiting) {
                return Err(AlreadyCalledError);
            }
            *state = State::Fired(result);
        }
        // The canceller is no longer needed (and may hold resources).
        let canceller = self.inner.canceller.borrow_mut().take();
        drop(canceller);
        let waker = self.inner.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// True once fired (Twisted's `called`).
    pub fn is_called(&self) -> bool {
        !matches!(*self.inner.state.borrow(), State::Waiting)
    }

    /// Cancels a Deferred not fired yet (Twisted's `cancel`): runs the
    /// canceller if there is one; if that did not fire the Deferred, fails
    /// it with [`CancelledError`]. A result fired later is ignored. Does
    /// nothing to a Deferred already fired.
    pub fn cancel(&self)
    where
        E: From<CancelledError>,
    {
        if self.is_called() {
            return;
        }
        let canceller = self.inner.canceller.borrow_mut().take();
        if let Some(canceller) = canceller {
            canceller(self);
        }
        if !self.is_called() {
            let _ = self.fire(Err(E::from(CancelledError)));
            self.inner.cancelled.set(true);
        }
    }
}

impl<T, E> Deferred<T, E> {
    /// What a combinator does to a member it gives up: as
    /// [`Deferred::cancel`] (the canceller runs, a later result is
    /// ignored), but nobody awaits it any more, so it is not failed with
    /// `CancelledError` (which `E` may not convert from).
    fn abandon(&self) {
        if self.is_called() {
            return;
        }
        let canceller = self.inner.canceller.borrow_mut().take();
        if let Some(canceller) = canceller {
            canceller(self);
        }
        if !self.is_called() {
            self.inner.cancelled.set(true);
        }
    }
}

impl<T, E> Future for Deferred<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let mut state = self.inner.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Fired(result) => Poll::Ready(result),
            State::Waiting => {
                *state = State::Waiting;
                let mut waker = self.inner.waker.borrow_mut();
                match &*waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Taken => panic!("a Deferred's result was already taken by another await"),
        }
    }
}

impl<T, E> fmt::Debug for Deferred<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match *self.inner.state.borrow() {
            State::Waiting => "waiting",
            State::Fired(Ok(_)) => "succeeded",
            State::Fired(Err(_)) => "failed",
            State::Taken => "consumed",
        };
        f.debug_struct("Deferred").field("state", &state).finish()
    }
}

// ----- combinators -------------------------------------------------------------

/// The first failure among several results, and the index of the future
/// that produced it (Twisted's `FirstError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstError<E> {
    /// Position of the failed future in the list given.
    pub index: usize,
    /// Its error.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for FirstError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "result {} failed: {}", self.index, self.error)
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for FirstError<E> {}

/// Polls every unfinished child; each poll of the combinator polls each
/// pending child once (a list's cost is its length per wake).
struct Children<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
    pending: usize,
    /// Cancels a child given up, when the children are Deferreds (any
    /// other future is cancelled by being dropped).
    abandon: Option<fn(&F)>,
}

/// How to give up a child of type `F`: cancel it if it is a Deferred.
fn abandoner<F, T, E>() -> Option<fn(&F)>
where
    F: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
{
    if TypeId::of::<F>() != TypeId::of::<Deferred<T, E>>() {
        return None;
    }
    Some(|child: &F| {
        if let Some(deferred) = (child as &dyn Any).downcast_ref::<Deferred<T, E>>() {
            deferred.abandon();
        }
    })
}

/// A combinator given up (dropped before it finished, as by a timeout)
/// gives up its children.
impl<F: Future> Drop for Children<F> {
    fn drop(&mut self) {
        self.cancel_rest();
    }
}

impl<F: Future> Children<F> {
    fn new(futures: impl IntoIterator<Item = F>, abandon: Option<fn(&F)>) -> Children<F> {
        let futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
        let count = futures.len();
        Children {
            futures,
            outputs: (0..count).map(|_| None).collect(),
            pending: count,
            abandon,
        }
    }

    /// Polls the pending children; `stop` says whether an output ends the
    /// whole combinator early (then its index is returned).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut stop: impl FnMut(&F::Output) -> bool,
    ) -> Option<usize> {
        for (index, slot) in self.futures.iter_mut().enumerate() {
            let Some(future) = slot else { continue };
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                *slot = None;
                self.pending -= 1;
                let early = stop(&output);
                self.outputs[index] = Some(output);
                if early {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Cancels every child still pending: a Deferred with its cancel, any
    /// other future by dropping it.
    fn cancel_rest(&mut self) {
        for slot in &mut self.futures {
            if let (Some(child), Some(abandon)) = (slot.as_ref(), self.abandon) {
                abandon(child);
            }
            *slot = None;
        }
    }

    fn take_all(&mut self) -> impl Iterator<Item = F::Output> + '_ {
        self.outputs
            .iter_mut()
            .map(|output| output.take().expect("every child finished"))
    }
}

/// Waits for every future of a list to succeed (Twisted's
/// `gatherResults`, and `DeferredList(fireOnOneErrback=True)`): yields
/// their values in list order, or at the first failure, that failure and
/// its index, cancelling the futures still pending (see
/// [Giving up](#giving-up)).
///
/// # Giving up
/// When the result is decided early, and when the combinator itself is
/// dropped before it finishes (as by a timeout), the members still
/// pending are given up. A member that is a [`Deferred`] is cancelled:
/// its canceller runs and a result fired later is ignored (it is not
/// failed with `CancelledError`: nobody awaits it any more). Any other
/// future is dropped, which cancels what drop cancels: a task
/// ([`JoinHandle`](crate::JoinHandle)), a connect, a sleep or timeout and
/// its timer. A Deferred awaited *inside* another future (an `async`
/// block) is only dropped with it, not cancelled; to have it cancelled,
/// give the Deferreds to the combinator directly.
///
/// The members are `'static` (they are told apart from Deferreds by
/// type).
///
/// ```
/// use torsion_reactor::{gather_results, Deferred, CancelledError, Reactor};
///
/// let reactor = Reactor::new()?;
/// let all = gather_results(vec![
///     Deferred::<_, CancelledError>::succeed(1),
///     Deferred::succeed(2),
/// ]);
/// assert_eq!(reactor.run_until_complete(all)?, Ok(vec![1, 2]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "gatherResults")]
#[doc(alias = "fireOnOneErrback")]
pub fn gather_results<I, F, T, E>(futures: I) -> GatherResults<F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
{
    GatherResults {
        children: Children::new(futures, abandoner::<F, T, E>()),
    }
}

/// The future of [`gather_results`].
#[must_use = "futures do nothing unless awaited"]
pub struct GatherResults<F: Future> {
    children: Children<F>,
}

impl<F, T, E> Future for GatherResults<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<Vec<T>, FirstError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let children = &mut self.children;
        if let Some(index) = children.poll(cx, Result::is_err) {
            children.cancel_rest();
            let Some(Err(error)) = children.outputs[index].take() else {
                unreachable!("stopped on an error")
            };
            return Poll::Ready(Err(FirstError { index, error }));
        }
        if children.pending > 0 {
            return Poll::Pending;
        }
        let values = children
            .take_all()
            .map(|output| output.unwrap_or_else(|_| unreachable!("no error was seen")))
            .collect();
        Poll::Ready(Ok(values))
    }
}

/// Waits for every future of a list and yields each one's result, success
/// or failure, in list order (Twisted's `DeferredList` with
/// `consumeErrors=True`). Dropped before it finishes, it cancels the
/// members still pending as [`gather_results`] does (see its
/// [Giving up](gather_results#giving-up)).
#[doc(alias = "DeferredList")]
pub fn deferred_list<I, F, T, E>(futures: I) -> DeferredList<F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
{
    DeferredList {
        children: Children::new(futures, abandoner::<F, T, E>()),
    }
}

/// The future of [`deferred_list`].
#[must_use = "futures do nothing unless awaited"]
pub struct DeferredList<F: Future> {
    children: Children<F>,
}

impl<F, T, E> Future for DeferredList<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Vec<Result<T, E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let children = &mut self.children;
        children.poll(cx, |_| false);
        if children.pending > 0 {
            return Poll::Pending;
        }
        Poll::Ready(children.take_all().collect())
    }
}

/// Waits for the first future of a list to succeed (Twisted's
/// `DeferredList(fireOnOneCallback=True)`): yields its index and value,
/// cancelling the others as [`gather_results`] does (see its
/// [Giving up](gather_results#giving-up)); or, if every one fails, all
/// their errors in list order. An empty list yields `Err(vec![])`.
#[doc(alias = "fireOnOneCallback")]
pub fn first_success<I, F, T, E>(futures: I) -> FirstSuccess<F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
{
    FirstSuccess {
        children: Children::new(futures, abandoner::<F, T, E>()),
    }
}

/// The future of [`first_success`].
#[must_use = "futures do nothing unless awaited"]
pub struct FirstSuccess<F: Future> {
    children: Children<F>,
}

impl<F, T, E> Future for FirstSuccess<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<(usize, T), Vec<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let children = &mut self.children;
        if let Some(index) = children.poll(cx, Result::is_ok) {
            children.cancel_rest();
            let Some(Ok(value)) = children.outputs[index].take() else {
                unreachable!("stopped on a success")
            };
            return Poll::Ready(Ok((index, value)));
        }
        if children.pending > 0 {
            return Poll::Pending;
        }
        let errors = children
            .take_all()
            .map(|output| match output {
                Err(error) => error,
                Ok(_) => unreachable!("no success was seen"),
            })
            .collect();
        Poll::Ready(Err(errors))
    }
}

macro_rules! debug_combinator {
    ($name:ident) => {
        // The children are boxed and pinned there; outputs are never
        // pinned.
        impl<F: Future> Unpin for $name<F> {}

        impl<F: Future> fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.children.futures.len())
                    .field("pending", &self.children.pending)
                    .finish()
            }
        }
    };
}

debug_combinator!(GatherResults);
debug_combinator!(DeferredList);
debug_combinator!(FirstSuccess);
