//! Tasks: `async` code running on the reactor's own thread.
//!
//! [`Reactor::spawn`] takes a future (it need not be `Send`) and polls it
//! on the reactor's thread whenever it is woken. How a wake travels:
//!
//! - **From the reactor's thread** (a timer callback, an I/O handler,
//!   another task): the task's key is pushed onto the reactor's local run
//!   queue, found through a thread-local table. No system call, no lock.
//! - **From another thread**: the wake goes through
//!   [`ReactorHandle::call_from_thread`](crate::ReactorHandle::call_from_thread),
//!   which queues the push and wakes the poller. A task's wakes are
//!   coalesced: one thread call per task until it has run.
//!
//! Each turn of the loop polls at most [`MAX_TASK_POLLS_PER_TURN`] tasks,
//! and only those woken before the task phase began: a task that keeps
//! waking itself runs once per turn, and I/O and timers get theirs between.
//! A task that is never woken is never polled.
//!
//! A task that panics is caught by the reactor's panic policy (logged and
//! counted in [`Reactor::caught_panic_count`]); only that task ends, and
//! its [`JoinHandle`] yields [`TaskError::Panicked`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::handle::ReactorHandle;
use crate::panics;
use crate::reactor::{Reactor, ReactorError};
use crate::slab::Slab;

/// How many task polls one turn of the loop runs at most; tasks woken
/// beyond this wait for the next turn, which does not block.
pub const MAX_TASK_POLLS_PER_TURN: usize = 256;

/// Why a task ended without its output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled ([`JoinHandle::cancel`], or its reactor was
    /// dropped) before it finished (Twisted's `CancelledError`).
    #[doc(alias = "CancelledError")]
    Cancelled,
    /// The task panicked; the panic's message. The panic was logged and
    /// counted by the reactor.
    Panicked(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("the task was cancelled"),
            TaskError::Panicked(message) => write!(f, "the task panicked: {message}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Why [`Reactor::run_until_complete`] returned without the future's
/// output.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// Running the reactor failed (already running, or polling failed).
    Reactor(ReactorError),
    /// The reactor was stopped ([`Reactor::stop`], a signal) before the
    /// future finished; the future was dropped and the reactor shut down
    /// as [`Reactor::run`] does.
    Stopped,
    /// The future panicked (the panic was logged and counted).
    Panicked(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Reactor(e) => e.fmt(f),
            RunError::Stopped => f.write_str("the reactor stopped before the future finished"),
            RunError::Panicked(message) => write!(f, "the future panicked: {message}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Reactor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ReactorError> for RunError {
    fn from(e: ReactorError) -> Self {
        RunError::Reactor(e)
    }
}

// ----- the run queue and its thread-local directory -------------------------

/// Tasks woken and waiting for their poll: `(slab key, task id)`.
type RunQueue = RefCell<VecDeque<(usize, u64)>>;

static NEXT_EXECUTOR: AtomicU64 = AtomicU64::new(1);
static NEXT_TASK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The run queues of the reactors of this thread, by executor id.
    /// Usually one entry, so a scan is the fastest lookup.
    static QUEUES: RefCell<Vec<(u64, Weak<RunQueue>)>> = const { RefCell::new(Vec::new()) };
}

/// The task part of a reactor.
pub(crate) struct Executor {
    id: u64,
    queue: Rc<RunQueue>,
    tasks: RefCell<Slab<(u64, Rc<dyn Runnable>)>>,
    /// The task being polled, so that its own cancellation waits until
    /// the poll returns.
    polls: Cell<u64>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        let id = NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed);
        let queue = Rc::new(RefCell::new(VecDeque::new()));
        QUEUES.with(|queues| {
            let mut queues = queues.borrow_mut();
            queues.retain(|(_, queue)| queue.strong_count() > 0);
            queues.push((id, Rc::downgrade(&queue)));
        });
        Executor {
            id,
            queue,
            tasks: RefCell::new(Slab::new()),
            polls: Cell::new(0),
        }
    }

    /// True if a task waits for its poll.
    pub(crate) fn has_work(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Number of tasks alive (spawned, not finished, not cancelled).
    pub(crate) fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Total task polls so far.
    pub(crate) fn polls(&self) -> u64 {
        self.polls.get()
    }

    fn push(&self, key: usize, id: u64) {
        self.queue.borrow_mut().push_back((key, id));
    }

    /// Polls the tasks woken before this call, at most the budget.
    pub(crate) fn run(&self, reactor: &Reactor) {
        let count = self.queue.borrow().len().min(MAX_TASK_POLLS_PER_TURN);
        for _ in 0..count {
            let next = self.queue.borrow_mut().pop_front();
            let Some((key, id)) = next else { break };
            let task = match self.tasks.borrow().get(key) {
                Some((task_id, task)) if *task_id == id => task.clone(),
                _ => continue,
            };
            self.polls.set(self.polls.get() + 1);
            if task.run(reactor) {
                let removed = self.remove(key, id);
                // The last reference may drop the output: user code.
                panics::isolate(reactor, "dropping a task", move || drop(removed));
            }
            panics::isolate(reactor, "dropping a task", move || drop(task));
        }
    }

    fn remove(&self, key: usize, id: u64) -> Option<Rc<dyn Runnable>> {
        let mut tasks = self.tasks.borrow_mut();
        match tasks.get(key) {
            Some((task_id, _)) if *task_id == id => tasks.remove(key).map(|(_, task)| task),
            _ => None,
        }
    }

    /// Drops every task without running user-code isolation (the
    /// reactor itself is being dropped).
    pub(crate) fn drain(&mut self) {
        for (_, task) in self.tasks.get_mut().drain() {
            task.abandon();
        }
        self.queue.borrow_mut().clear();
    }

    /// Cancels every task (the reactor is shutting down), including the
    /// tasks spawned by the drops of those cancelled: until none is left.
    /// (A task spawned later, by a shutdown trigger, is polled by the
    /// next run.)
    pub(crate) fn clear(&self, reactor: &Reactor) {
        loop {
            let tasks = self.tasks.borrow_mut().drain();
            if tasks.is_empty() {
                break;
            }
            for (_, task) in tasks {
                task.cancel(reactor);
            }
        }
        // Only entries of the tasks just cancelled are left.
        self.queue.borrow_mut().clear();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let id = self.id;
        // The thread may be exiting; then the table is gone already.
        let _ = QUEUES.try_with(|queues| {
            if let Ok(mut queues) = queues.try_borrow_mut() {
                queues.retain(|(other, _)| *other != id);
            }
        });
    }
}

/// What a task's waker holds: `Send + Sync`, whatever the future is.
struct WakeCell {
    executor: u64,
    key: usize,
    id: u64,
    /// Set while the task is in a run queue (or a thread call is on its
    /// way to put it there); cleared just before it is polled.
    scheduled: AtomicBool,
    handle: ReactorHandle,
}

impl WakeCell {
    fn schedule(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (executor, key, id) = (self.executor, self.key, self.id);
        let local = QUEUES
            .try_with(|queues| {
                let queues = queues.borrow();
                queues
                    .iter()
                    .find(|(other, _)| *other == executor)
                    .map(|(_, queue)| queue.upgrade())
            })
            .ok()
            .flatten();
        match local {
            // The reactor's own thread.
            Some(Some(queue)) => queue.borrow_mut().push_back((key, id)),
            // The reactor's thread, but the reactor is gone.
            Some(None) => {}
            // Another thread.
            None => {
                let _ = self.handle.call_from_thread(move |reactor| {
                    reactor.inner().tasks.push(key, id);
                });
            }
        }
    }
}

impl Wake for WakeCell {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

// ----- one task --------------------------------------------------------------

trait Runnable {
    /// Polls the task once; true if it is finished (output stored, or
    /// panicked).
    fn run(&self, reactor: &Reactor) -> bool;
    /// Drops the future; the join handle will see `Cancelled`.
    fn cancel(&self, reactor: &Reactor);
    /// As `cancel`, while the reactor itself is being dropped (there is
    /// no reactor to report a panic to).
    fn abandon(&self);
}

enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, TaskError>),
    Taken,
}

struct Task<F: Future> {
    stage: RefCell<Stage<F>>,
    wake: Arc<WakeCell>,
    waker: Waker,
    /// Who awaits the output.
    joiner: RefCell<Option<Waker>>,
    /// The handle asked to cancel while the future was being polled.
    cancel_requested: Cell<bool>,
}

impl<F: Future + 'static> Task<F> {
    fn finish(&self, result: Result<F::Output, TaskError>) {
        *self.stage.borrow_mut() = Stage::Done(result);
        let joiner = self.joiner.borrow_mut().take();
        if let Some(joiner) = joiner {
            joiner.wake();
        }
    }

    /// Takes the future out and drops it (running user code: it may
    /// cancel other tasks or panic).
    fn drop_future(&self, reactor: &Reactor) {
        if !matches!(*self.stage.borrow(), Stage::Running(_)) {
            return;
        }
        // Dropped in place: a pinned future is never moved.
        panics::isolate(reactor, "dropping a cancelled task", || {
            *self.stage.borrow_mut() = Stage::Taken;
        });
        self.finish(Err(TaskError::Cancelled));
    }
}

impl<F: Future + 'static> Runnable for Task<F> {
    fn run(&self, reactor: &Reactor) -> bool {
        self.wake.scheduled.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&self.waker);
        let polled = {
            let Ok(mut stage) = self.stage.try_borrow_mut() else {
                return false;
            };
            if !matches!(*stage, Stage::Running(_)) {
                return true;
            }
            panic::catch_unwind(AssertUnwindSafe(|| {
                let Stage::Running(future) = &mut *stage else {
                    unreachable!("checked above");
                };
                // SAFETY: the future lives inside this task's `Rc`
                // allocation and is never moved out while running: it
                // leaves the `stage` only by being dropped in place of a
                // `Done`/`Taken` value after polling has ended for good.
                let future = unsafe { Pin::new_unchecked(future) };
                let polled = future.poll(&mut cx);
                if polled.is_ready() {
                    // The spent future is dropped in place here, inside
                    // this catch: a panic in its drop is the task's panic
                    // (it does not unwind out of the loop), and the
                    // assignment leaves `Taken` behind even then.
                    *stage = Stage::Taken;
                }
                polled
            }))
        };
        match polled {
            Ok(Poll::Pending) => {
                if self.cancel_requested.get() {
                    self.drop_future(reactor);
                    return true;
                }
                false
            }
            Ok(Poll::Ready(output)) => {
                self.finish(Ok(output));
                true
            }
            Err(payload) => {
                panics::report(reactor, "a task", &*payload);
                let message = panics::panic_message(&*payload).to_owned();
                // (Taken already if the panic came from dropping a
                // finished future.)
                panics::isolate(reactor, "dropping a panicked task", || {
                    *self.stage.borrow_mut() = Stage::Taken;
                });
                panics::isolate(reactor, "dropping a panic payload", move || drop(payload));
                self.finish(Err(TaskError::Panicked(message)));
                true
            }
        }
    }

    fn abandon(&self) {
        let running = matches!(self.stage.try_borrow().as_deref(), Ok(Stage::Running(_)));
        if running {
            // Dropped in place, as in `drop_future`.
            *self.stage.borrow_mut() = Stage::Taken;
            self.finish(Err(TaskError::Cancelled));
        }
    }

    fn cancel(&self, reactor: &Reactor) {
        if self.stage.try_borrow_mut().is_err() {
            // Being polled: cancelled when the poll returns.
            self.cancel_requested.set(true);
            return;
        }
        self.drop_future(reactor);
    }
}

/// The part of a task its [`JoinHandle`] sees.
trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, TaskError>>;
    fn is_finished(&self) -> bool;
    fn key(&self) -> (usize, u64);
    fn take(&self) -> Option<Result<T, TaskError>>;
}

impl<F: Future + 'static> Join<F::Output> for Task<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, TaskError>> {
        let mut stage = self.stage.borrow_mut();
        match &*stage {
            Stage::Done(_) => match std::mem::replace(&mut *stage, Stage::Taken) {
                Stage::Done(result) => Poll::Ready(result),
                _ => unreachable!(),
            },
            Stage::Taken => panic!("a JoinHandle polled after it yielded its output"),
            Stage::Running(_) => {
                let mut joiner = self.joiner.borrow_mut();
                match &*joiner {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *joiner = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn is_finished(&self) -> bool {
        !matches!(
            self.stage.try_borrow().as_deref(),
            Ok(Stage::Running(_)) | Err(_)
        )
    }

    fn key(&self) -> (usize, u64) {
        (self.wake.key, self.wake.id)
    }

    fn take(&self) -> Option<Result<F::Output, TaskError>> {
        let mut stage = self.stage.borrow_mut();
        // Only a finished stage is moved: a running future is pinned.
        if !matches!(*stage, Stage::Done(_)) {
            return None;
        }
        match std::mem::replace(&mut *stage, Stage::Taken) {
            Stage::Done(result) => Some(result),
            _ => unreachable!("checked above"),
        }
    }
}

/// A handle to a task started with [`Reactor::spawn`]: a future of the
/// task's output.
///
/// Awaiting it yields `Ok(output)`, or [`TaskError`] if the task was
/// cancelled or panicked. Dropping the handle **cancels** the task (its
/// future is dropped, and with it whatever it was waiting on: timers,
/// connect attempts); call [`JoinHandle::detach`] to let it run on alone.
#[doc(alias = "ensureDeferred")]
#[must_use = "dropping a JoinHandle cancels its task; call detach() to keep it running"]
pub struct JoinHandle<T> {
    task: Option<Rc<dyn Join<T>>>,
    reactor: crate::reactor::WeakReactor,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now (or, if the task is
    /// being polled, as soon as that poll returns). Awaiting the handle
    /// then yields [`TaskError::Cancelled`], unless the task had already
    /// finished. Does nothing to a finished task.
    pub fn cancel(&self) {
        let (Some(task), Some(reactor)) = (&self.task, self.reactor.upgrade()) else {
            return;
        };
        let (key, id) = task.key();
        let executor = &reactor.inner().tasks;
        let runnable = executor
            .tasks
            .borrow()
            .get(key)
            .and_then(|(task_id, task)| (*task_id == id).then(|| task.clone()));
        if let Some(runnable) = runnable {
            runnable.cancel(&reactor);
            if task.is_finished() {
                executor.remove(key, id);
            }
        }
    }

    /// Lets the task run to its end without anyone awaiting it; its output
    /// is dropped.
    pub fn detach(mut self) {
        self.task = None;
    }

    /// True once the task has finished, been cancelled, or panicked.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &self.task {
            Some(task) => task.poll_join(cx),
            None => Poll::Ready(Err(TaskError::Cancelled)),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Reactor {
    /// Starts `future` as a task on this reactor's thread and returns a
    /// handle to await its output (Twisted's `ensureDeferred`; asyncio's
    /// `create_task`).
    ///
    /// The task is first polled during the next turn of the loop, then
    /// each time it is woken. The future need not be `Send`: it never
    /// leaves this thread. Dropping the returned [`JoinHandle`] cancels
    /// the task; [`JoinHandle::detach`] keeps it running.
    ///
    /// A future that captures a `Reactor` clone keeps the reactor alive
    /// while the task lives (the reactor owns the task, the task the
    /// clone): dropping every other `Reactor` then frees nothing, neither
    /// its sockets nor its worker threads. The shutdown sequence ends that
    /// cycle by cancelling the tasks still alive: it runs at the end of
    /// [`Reactor::run`], but not when [`Reactor::run_until_complete`] or
    /// [`Reactor::iterate`] return; after those, call
    /// [`Reactor::shut_down`] before dropping the reactor (or have the
    /// futures hold a [`WeakReactor`](crate::WeakReactor)).
    ///
    /// ```
    /// use torsion_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let task = reactor.spawn(async { 6 * 7 });
    /// let answer = reactor.run_until_complete(task)?;
    /// assert_eq!(answer, Ok(42));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "ensureDeferred")]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
    {
        let executor = &self.inner().tasks;
        crate::stats::bump(&self.inner().counters.tasks_spawned);
        let id = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
        let mut tasks = executor.tasks.borrow_mut();
        let key = tasks.vacant_key();
        let wake = Arc::new(WakeCell {
            executor: executor.id,
            key,
            id,
            scheduled: AtomicBool::new(true),
            handle: self.handle(),
        });
        let task = Rc::new(Task {
            stage: RefCell::new(Stage::Running(future)),
            waker: Waker::from(wake.clone()),
            wake,
            joiner: RefCell::new(None),
            cancel_requested: Cell::new(false),
        });
        let inserted = tasks.insert((id, task.clone() as Rc<dyn Runnable>));
        debug_assert_eq!(inserted, key);
        drop(tasks);
        executor.push(key, id);
        JoinHandle {
            task: Some(task),
            reactor: self.downgrade(),
        }
    }

    /// Runs the reactor until `future` finishes, and returns its output
    /// (Twisted's `task.react`; asyncio's `run_until_complete`).
    ///
    /// The reactor starts as with [`Reactor::run`] (startup triggers,
    /// signal handling). When the future finishes, the loop returns at
    /// once **without** the shutdown sequence: sources stay registered and
    /// the reactor can be run again. If the reactor is stopped first
    /// ([`Reactor::stop`], SIGINT), the shutdown sequence runs as for
    /// `run` (it cancels the tasks still alive), and the result is
    /// [`RunError::Stopped`], unless the future finished in that same turn:
    /// then its output is returned.
    ///
    /// Because it returns without shutting down, tasks still alive stay
    /// alive; one that holds a clone of this reactor keeps the reactor (its
    /// sockets, its worker threads) alive after you drop yours. When done
    /// with the reactor, call [`Reactor::shut_down`]: it cancels them and
    /// closes the sources, as the end of `run` does.
    ///
    /// # Errors
    /// [`RunError::Stopped`] as above; [`RunError::Panicked`] if the
    /// future panicked; [`RunError::Reactor`] if the reactor was already
    /// running or polling failed.
    #[doc(alias = "react")]
    pub fn run_until_complete<F>(&self, future: F) -> Result<F::Output, RunError>
    where
        F: Future + 'static,
    {
        let task = self.spawn(future);
        let finished = || task.is_finished();
        self.run_loop(&finished)?;
        // A future that finished in the turn that stopped the reactor (it
        // may have called `stop` itself) still has its output.
        if !task.is_finished() {
            task.cancel();
            return Err(RunError::Stopped);
        }
        match task.task.as_ref().and_then(|task| task.take()) {
            Some(Ok(output)) => Ok(output),
            Some(Err(TaskError::Panicked(message))) => Err(RunError::Panicked(message)),
            Some(Err(TaskError::Cancelled)) | None => Err(RunError::Stopped),
        }
    }

    /// Number of tasks alive on this reactor: spawned and neither
    /// finished nor cancelled. A diagnostic.
    pub fn task_count(&self) -> usize {
        self.inner().tasks.len()
    }

    /// Task polls this reactor has run since it was created. A
    /// diagnostic: an idle task costs none.
    pub fn task_poll_count(&self) -> u64 {
        self.inner().tasks.polls()
    }
}
