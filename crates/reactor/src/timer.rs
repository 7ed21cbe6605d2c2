//! Delayed calls: a binary heap ordered by (due time, sequence number) with
//! lazy deletion.
//!
//! Cancelling marks the call and leaves its heap entry behind (O(1)); stale
//! entries are skipped when they reach the top and the heap is compacted
//! when they outnumber the live ones. Moving a call *later* (the common
//! "reset the idle timeout on traffic" case) only updates the call; its old
//! entry is re-pushed with the new time when it surfaces. Moving a call
//! earlier pushes a fresh entry and leaves the old one stale.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::reactor::{Reactor, WeakReactor};

/// A timer callback. It receives the reactor it runs on.
pub(crate) type Callback = Box<dyn FnOnce(&Reactor)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TimerState {
    Pending,
    Called,
    Cancelled,
}

/// The shared state of one delayed call.
pub(crate) struct TimerCell {
    state: Cell<TimerState>,
    /// When the call is due, in nanoseconds of reactor time.
    when: Cell<u64>,
    /// Tie-breaker among calls due at the same instant: the order in which
    /// they were scheduled or last rescheduled.
    seq: Cell<u64>,
    /// The (when, seq) of the one heap entry that stands for this call.
    queued_when: Cell<u64>,
    queued_seq: Cell<u64>,
    callback: Cell<Option<Callback>>,
}

struct HeapEntry {
    when: u64,
    seq: u64,
    cell: Rc<TimerCell>,
}

impl HeapEntry {
    fn key(&self) -> (u64, u64) {
        (self.when, self.seq)
    }

    /// True if this entry still stands for a pending call.
    fn is_live(&self) -> bool {
        self.cell.state.get() == TimerState::Pending && self.cell.queued_seq.get() == self.seq
    }
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // `BinaryHeap` is a max-heap; reverse to pop the earliest first.
        other.key().cmp(&self.key())
    }
}

/// The reactor's queue of delayed calls.
pub(crate) struct TimerQueue {
    heap: BinaryHeap<HeapEntry>,
    next_seq: u64,
    /// Heap entries that no longer stand for a pending call.
    stale: usize,
    /// Calls that are pending (scheduled, neither called nor cancelled).
    pending: usize,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            stale: 0,
            pending: 0,
        }
    }

    /// Number of pending calls.
    pub(crate) fn len(&self) -> usize {
        self.pending
    }

    /// The sequence number the next scheduled call will get. Calls whose
    /// sequence is at or above a value read before running timers were
    /// scheduled (or rescheduled) by those timers.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(crate) fn schedule(&mut self, when: u64, callback: Callback) -> Rc<TimerCell> {
        let seq = self.take_seq();
        let cell = Rc::new(TimerCell {
            state: Cell::new(TimerState::Pending),
            when: Cell::new(when),
            seq: Cell::new(seq),
            queued_when: Cell::new(when),
            queued_seq: Cell::new(seq),
            callback: Cell::new(Some(callback)),
        });
        self.heap.push(HeapEntry {
            when,
            seq,
            cell: cell.clone(),
        });
        self.pending += 1;
        cell
    }

    /// Cancels a pending call and returns its callback, which the caller
    /// must drop after releasing its borrow of the queue (dropping it may run
    /// arbitrary code).
    pub(crate) fn cancel(&mut self, cell: &TimerCell) -> Result<Option<Callback>, TimerError> {
        check_pending(cell)?;
        cell.state.set(TimerState::Cancelled);
        self.pending -= 1;
        self.stale += 1;
        self.maybe_compact();
        Ok(cell.callback.take())
    }

    /// Moves a pending call to `when`.
    pub(crate) fn reschedule(&mut self, cell: &Rc<TimerCell>, when: u64) -> Result<(), TimerError> {
        check_pending(cell)?;
        let seq = self.take_seq();
        cell.when.set(when);
        cell.seq.set(seq);
        if when < cell.queued_when.get() {
            // The old entry would surface too late: push a new one.
            cell.queued_when.set(when);
            cell.queued_seq.set(seq);
            self.heap.push(HeapEntry {
                when,
                seq,
                cell: cell.clone(),
            });
            self.stale += 1;
            self.maybe_compact();
        }
        Ok(())
    }

    /// Drops stale entries from the top and re-queues calls that were moved
    /// later, so the top entry (if any) is live and current.
    fn settle_top(&mut self) {
        while let Some(top) = self.heap.peek() {
            if !top.is_live() {
                self.heap.pop();
                self.stale -= 1;
                continue;
            }
            let cell = &top.cell;
            if (cell.when.get(), cell.seq.get()) == top.key() {
                return;
            }
            // Moved later since it was queued: re-queue at the new time.
            let entry = self.heap.pop().expect("peeked");
            let (when, seq) = (entry.cell.when.get(), entry.cell.seq.get());
            entry.cell.queued_when.set(when);
            entry.cell.queued_seq.set(seq);
            self.heap.push(HeapEntry {
                when,
                seq,
                cell: entry.cell,
            });
        }
    }

    /// When the earliest pending call is due.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        self.settle_top();
        self.heap.peek().map(|top| top.when)
    }

    /// Pops the earliest call due at or before `now` that was scheduled
    /// before sequence `limit`, marks it called and returns its callback.
    /// Calls that are due but scheduled at or after `limit` are moved to
    /// `deferred`; the caller re-queues them with [`TimerQueue::requeue`].
    pub(crate) fn pop_due(
        &mut self,
        now: u64,
        limit: u64,
        deferred: &mut Vec<Rc<TimerCell>>,
    ) -> Option<Callback> {
        loop {
            self.settle_top();
            let top = self.heap.peek()?;
            if top.when > now {
                return None;
            }
            let entry = self.heap.pop().expect("peeked");
            if entry.seq >= limit {
                deferred.push(entry.cell);
                continue;
            }
            entry.cell.state.set(TimerState::Called);
            self.pending -= 1;
            return entry.cell.callback.take();
        }
    }

    /// Puts back calls that [`TimerQueue::pop_due`] set aside.
    pub(crate) fn requeue(&mut self, deferred: &mut Vec<Rc<TimerCell>>) {
        for cell in deferred.drain(..) {
            if cell.state.get() != TimerState::Pending {
                continue;
            }
            let (when, seq) = (cell.when.get(), cell.seq.get());
            cell.queued_when.set(when);
            cell.queued_seq.set(seq);
            self.heap.push(HeapEntry { when, seq, cell });
        }
    }

    fn maybe_compact(&mut self) {
        if self.stale > 64 && self.stale > self.heap.len() / 2 {
            self.heap.retain(HeapEntry::is_live);
            self.stale = 0;
        }
    }

    /// Removes every call, returning the callbacks so the caller can drop
    /// them outside its borrow.
    pub(crate) fn clear(&mut self) -> Vec<Callback> {
        let mut callbacks = Vec::new();
        for entry in self.heap.drain() {
            if entry.cell.state.get() == TimerState::Pending {
                entry.cell.state.set(TimerState::Cancelled);
            }
            callbacks.extend(entry.cell.callback.take());
        }
        self.pending = 0;
        self.stale = 0;
        callbacks
    }
}

fn check_pending(cell: &TimerCell) -> Result<(), TimerError> {
    match cell.state.get() {
        TimerState::Pending => Ok(()),
        TimerState::Called => Err(TimerError::AlreadyCalled),
        TimerState::Cancelled => Err(TimerError::AlreadyCancelled),
    }
}

/// Why an operation on a [`DelayedCall`] could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerError {
    /// The call has already run (Twisted's `AlreadyCalled`).
    AlreadyCalled,
    /// The call was already cancelled (Twisted's `AlreadyCancelled`).
    AlreadyCancelled,
    /// The reactor the call was scheduled on has been dropped, so the call
    /// can never run again.
    ReactorGone,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimerError::AlreadyCalled => "the delayed call has already run",
            TimerError::AlreadyCancelled => "the delayed call was already cancelled",
            TimerError::ReactorGone => "the reactor of the delayed call has been dropped",
        })
    }
}

impl std::error::Error for TimerError {}

/// A handle to a call scheduled with [`Reactor::call_later`] (Twisted's
/// `IDelayedCall`).
///
/// The handle can cancel the call, move it, and tell whether it is still
/// pending. Dropping the handle does **not** cancel the call. Clones refer
/// to the same call.
///
/// Operations on a call that already ran or was cancelled return a
/// [`TimerError`]; they never panic.
#[doc(alias = "IDelayedCall")]
#[derive(Clone)]
pub struct DelayedCall {
    pub(crate) cell: Rc<TimerCell>,
    pub(crate) reactor: WeakReactor,
}

impl DelayedCall {
    /// Cancels the call so that it never runs, and drops its callback.
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] if it already ran,
    /// [`TimerError::AlreadyCancelled`] if it was cancelled before.
    pub fn cancel(&self) -> Result<(), TimerError> {
        let callback = match self.reactor.upgrade() {
            Some(reactor) => reactor.timers_mut().cancel(&self.cell)?,
            None => {
                check_pending(&self.cell)?;
                self.cell.state.set(TimerState::Cancelled);
                self.cell.callback.take()
            }
        };
        drop(callback);
        Ok(())
    }

    /// Reschedules the call to run `delay` from now (Twisted's `reset`).
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] or [`TimerError::AlreadyCancelled`] if
    /// the call is no longer pending; [`TimerError::ReactorGone`] if its
    /// reactor was dropped.
    pub fn reset(&self, delay: Duration) -> Result<(), TimerError> {
        check_pending(&self.cell)?;
        let reactor = self.reactor.upgrade().ok_or(TimerError::ReactorGone)?;
        let when = reactor.now_nanos().saturating_add(duration_nanos(delay));
        let result = reactor.timers_mut().reschedule(&self.cell, when);
        result
    }

    /// Postpones the call by `by` from the time it is currently due
    /// (Twisted's `delay`).
    ///
    /// # Errors
    /// As for [`DelayedCall::reset`].
    pub fn delay(&self, by: Duration) -> Result<(), TimerError> {
        check_pending(&self.cell)?;
        let reactor = self.reactor.upgrade().ok_or(TimerError::ReactorGone)?;
        let when = self.cell.when.get().saturating_add(duration_nanos(by));
        let result = reactor.timers_mut().reschedule(&self.cell, when);
        result
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.cell.state.get() == TimerState::Pending
    }

    /// True once the call has run.
    pub fn called(&self) -> bool {
        self.cell.state.get() == TimerState::Called
    }

    /// True once the call has been cancelled.
    pub fn cancelled(&self) -> bool {
        self.cell.state.get() == TimerState::Cancelled
    }

    /// The reactor time (see [`Reactor::seconds`]) at which the call is, or
    /// was, due (Twisted's `getTime`).
    #[doc(alias = "getTime")]
    pub fn time(&self) -> Duration {
        Duration::from_nanos(self.cell.when.get())
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("time", &self.time())
            .field("state", &self.cell.state.get())
            .finish()
    }
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX` (about 584
/// years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
