//! Delayed calls: an indexed binary heap over a slab of call slots.
//!
//! The heap holds `(due time, sequence, slot)` entries ordered by due time,
//! then by sequence number (the order calls were scheduled or last
//! rescheduled). Each slot knows where its entry sits in the heap, so
//! cancelling removes the entry at once in O(log n) — no stale entries, no
//! scans, no compaction — and rescheduling moves it in place.
//!
//! A pending call costs 64 bytes: a 24-byte heap entry and a 40-byte slot
//! (plus whatever its closure captures). A slot is kept, with the call's
//! outcome, while any [`DelayedCall`] handle to it exists, so a handle can
//! always tell "already called" from "already cancelled".

use std::fmt;
use std::time::Duration;

use crate::reactor::{Reactor, WeakReactor};

/// A timer callback. It receives the reactor it runs on.
pub(crate) type Callback = Box<dyn FnOnce(&Reactor)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pending,
    Called,
    Cancelled,
    /// On the free list; `pos` links to the next free slot.
    Free,
}

struct Slot {
    callback: Option<Callback>,
    /// When the call is (or was) due, for calls no longer in the heap.
    when: u64,
    /// The entry's index in the heap while pending; the next free slot
    /// while free.
    pos: u32,
    /// Counts the lives of this slot, so a handle never touches a later
    /// call that reuses it.
    generation: u32,
    /// Live `DelayedCall` handles.
    handles: u16,
    state: State,
}

#[derive(Clone, Copy)]
struct Entry {
    when: u64,
    seq: u64,
    key: u32,
}

impl Entry {
    fn before(&self, other: &Entry) -> bool {
        (self.when, self.seq) < (other.when, other.seq)
    }
}

/// Identifies one call: a slot and the life of that slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TimerId {
    key: u32,
    generation: u32,
}

const NO_SLOT: u32 = u32::MAX;

/// The reactor's queue of delayed calls.
pub(crate) struct TimerQueue {
    heap: Vec<Entry>,
    slots: Vec<Slot>,
    free: u32,
    next_seq: u64,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: Vec::new(),
            slots: Vec::new(),
            free: NO_SLOT,
            next_seq: 0,
        }
    }

    /// Number of pending calls.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
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

    /// Schedules `callback` at `when`; the returned id starts with one
    /// handle counted.
    pub(crate) fn schedule(&mut self, when: u64, callback: Callback) -> TimerId {
        let key = if self.free != NO_SLOT {
            let key = self.free;
            let slot = &mut self.slots[key as usize];
            self.free = slot.pos;
            slot.callback = Some(callback);
            slot.when = when;
            slot.handles = 1;
            slot.state = State::Pending;
            key
        } else {
            let key = u32::try_from(self.slots.len())
                .ok()
                .filter(|&key| key != NO_SLOT)
                .expect("fewer than 4 billion timers");
            self.slots.push(Slot {
                callback: Some(callback),
                when,
                pos: 0,
                generation: 0,
                handles: 1,
                state: State::Pending,
            });
            key
        };
        let seq = self.take_seq();
        let pos = self.heap.len();
        self.heap.push(Entry { when, seq, key });
        self.slots[key as usize].pos = pos as u32;
        self.sift_up(pos);
        TimerId {
            key,
            generation: self.slots[key as usize].generation,
        }
    }

    /// The slot of `id`, if it still belongs to that call.
    fn slot(&self, id: TimerId) -> Option<&Slot> {
        self.slots
            .get(id.key as usize)
            .filter(|slot| slot.generation == id.generation && slot.state != State::Free)
    }

    fn check_pending(&self, id: TimerId) -> Result<u32, TimerError> {
        match self.slot(id).map(|slot| (slot.state, slot.pos)) {
            Some((State::Pending, pos)) => Ok(pos),
            Some((State::Called, _)) => Err(TimerError::AlreadyCalled),
            // A slot can only be missing for a handle that outlived its
            // reactor's queue being cleared, which cancels everything.
            _ => Err(TimerError::AlreadyCancelled),
        }
    }

    pub(crate) fn state_of(&self, id: TimerId) -> (bool, bool, u64) {
        match self.slot(id) {
            Some(slot) => {
                let when = match slot.state {
                    State::Pending => self.heap[slot.pos as usize].when,
                    _ => slot.when,
                };
                (
                    slot.state == State::Pending,
                    slot.state == State::Called,
                    when,
                )
            }
            None => (false, false, 0),
        }
    }

    pub(crate) fn when(&self, id: TimerId) -> Option<u64> {
        self.check_pending(id)
            .ok()
            .map(|pos| self.heap[pos as usize].when)
    }

    /// Cancels a pending call and returns its callback, which the caller
    /// must drop after releasing its borrow of the queue (dropping it may run
    /// arbitrary code).
    pub(crate) fn cancel(&mut self, id: TimerId) -> Result<Option<Callback>, TimerError> {
        let pos = self.check_pending(id)?;
        let entry = self.remove_at(pos as usize);
        let slot = &mut self.slots[id.key as usize];
        slot.state = State::Cancelled;
        slot.when = entry.when;
        Ok(slot.callback.take())
    }

    /// Moves a pending call to `when`. It then runs after calls already
    /// due at that instant.
    pub(crate) fn reschedule(&mut self, id: TimerId, when: u64) -> Result<(), TimerError> {
        let pos = self.check_pending(id)? as usize;
        let seq = self.take_seq();
        let old = self.heap[pos];
        self.heap[pos] = Entry {
            when,
            seq,
            key: old.key,
        };
        if self.heap[pos].before(&old) {
            self.sift_up(pos);
        } else {
            self.sift_down(pos);
        }
        Ok(())
    }

    /// When the earliest pending call is due.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.first().map(|entry| entry.when)
    }

    /// Pops the earliest call if it is due at or before `now` and was
    /// scheduled before sequence `limit`; marks it called and returns its
    /// callback. A due call scheduled at or after `limit` stops the pass:
    /// it and those after it run in a later pass.
    pub(crate) fn pop_due(&mut self, now: u64, limit: u64) -> Option<Callback> {
        let top = *self.heap.first()?;
        if top.when > now || top.seq >= limit {
            return None;
        }
        self.remove_at(0);
        let slot = &mut self.slots[top.key as usize];
        slot.state = State::Called;
        slot.when = top.when;
        let callback = slot.callback.take();
        if slot.handles == 0 {
            self.release(top.key);
        }
        callback
    }

    /// Counts one more handle to `id`.
    pub(crate) fn add_handle(&mut self, id: TimerId) {
        if self.slot(id).is_some() {
            let slot = &mut self.slots[id.key as usize];
            slot.handles = slot.handles.saturating_add(1);
        }
    }

    /// Counts one handle fewer; frees the slot once its call is over and
    /// no handle remains.
    pub(crate) fn drop_handle(&mut self, id: TimerId) {
        if self.slot(id).is_none() {
            return;
        }
        let slot = &mut self.slots[id.key as usize];
        slot.handles = slot.handles.saturating_sub(1);
        if slot.handles == 0 && slot.state != State::Pending {
            self.release(id.key);
        }
    }

    fn release(&mut self, key: u32) {
        let slot = &mut self.slots[key as usize];
        slot.state = State::Free;
        slot.callback = None;
        slot.generation = slot.generation.wrapping_add(1);
        slot.pos = self.free;
        self.free = key;
    }

    /// Handles for every pending call, earliest first.
    pub(crate) fn pending_ids(&mut self) -> Vec<TimerId> {
        let mut entries = self.heap.clone();
        entries.sort_by_key(|entry| (entry.when, entry.seq));
        entries
            .into_iter()
            .map(|entry| {
                let id = TimerId {
                    key: entry.key,
                    generation: self.slots[entry.key as usize].generation,
                };
                self.add_handle(id);
                id
            })
            .collect()
    }

    /// Cancels every call, returning the callbacks so the caller can drop
    /// them outside its borrow.
    pub(crate) fn clear(&mut self) -> Vec<Callback> {
        let mut callbacks = Vec::new();
        for entry in std::mem::take(&mut self.heap) {
            let slot = &mut self.slots[entry.key as usize];
            slot.state = State::Cancelled;
            slot.when = entry.when;
            callbacks.extend(slot.callback.take());
        }
        callbacks
    }

    // ----- heap mechanics ------------------------------------------------

    fn place(&mut self, pos: usize, entry: Entry) {
        self.heap[pos] = entry;
        self.slots[entry.key as usize].pos = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !entry.before(&self.heap[parent]) {
                break;
            }
            let moved = self.heap[parent];
            self.place(pos, moved);
            pos = parent;
        }
        self.place(pos, entry);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&entry) {
                break;
            }
            let moved = self.heap[child];
            self.place(pos, moved);
            pos = child;
        }
        self.place(pos, entry);
    }

    /// Removes the entry at `pos`, keeping the heap ordered.
    fn remove_at(&mut self, pos: usize) -> Entry {
        let removed = self.heap[pos];
        let last = self.heap.pop().expect("non-empty heap");
        if pos < self.heap.len() {
            self.place(pos, last);
            if pos > 0 && last.before(&self.heap[(pos - 1) / 2]) {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        }
        removed
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
pub struct DelayedCall {
    pub(crate) id: TimerId,
    pub(crate) reactor: WeakReactor,
}

impl DelayedCall {
    fn with_queue<R>(&self, f: impl FnOnce(&mut TimerQueue) -> R) -> Option<R> {
        let reactor = self.reactor.upgrade()?;
        let result = f(&mut reactor.timers_mut());
        Some(result)
    }

    /// Cancels the call so that it never runs, and drops its callback.
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] if it already ran,
    /// [`TimerError::AlreadyCancelled`] if it was cancelled before (or its
    /// reactor was dropped, which cancels every call).
    pub fn cancel(&self) -> Result<(), TimerError> {
        let callback = self
            .with_queue(|queue| queue.cancel(self.id))
            .unwrap_or(Err(TimerError::AlreadyCancelled))?;
        // Dropped here, outside the queue's borrow.
        drop(callback);
        Ok(())
    }

    /// Reschedules the call to run `delay` from now (Twisted's `reset`).
    ///
    /// # Errors
    /// [`TimerError::AlreadyCalled`] or [`TimerError::AlreadyCancelled`] if
    /// the call is no longer pending.
    pub fn reset(&self, delay: Duration) -> Result<(), TimerError> {
        let reactor = self.reactor.upgrade().ok_or(TimerError::AlreadyCancelled)?;
        let when = reactor.now_nanos().saturating_add(duration_nanos(delay));
        let result = reactor.timers_mut().reschedule(self.id, when);
        result
    }

    /// Postpones the call by `by` from the time it is currently due
    /// (Twisted's `delay`).
    ///
    /// # Errors
    /// As for [`DelayedCall::reset`].
    pub fn delay(&self, by: Duration) -> Result<(), TimerError> {
        self.with_queue(|queue| {
            let when = queue
                .when(self.id)
                .ok_or_else(|| queue.check_pending(self.id).unwrap_err())?;
            queue.reschedule(self.id, when.saturating_add(duration_nanos(by)))
        })
        .unwrap_or(Err(TimerError::AlreadyCancelled))
    }

    fn state(&self) -> (bool, bool, u64) {
        self.with_queue(|queue| queue.state_of(self.id))
            .unwrap_or((false, false, 0))
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.state().0
    }

    /// True once the call has run.
    pub fn called(&self) -> bool {
        self.state().1
    }

    /// True once the call has been cancelled (or its reactor dropped).
    pub fn cancelled(&self) -> bool {
        let (pending, called, _) = self.state();
        !pending && !called
    }

    /// The reactor time (see [`Reactor::seconds`]) at which the call is, or
    /// was, due (Twisted's `getTime`). Zero once the reactor is dropped.
    #[doc(alias = "getTime")]
    pub fn time(&self) -> Duration {
        Duration::from_nanos(self.state().2)
    }
}

impl Clone for DelayedCall {
    fn clone(&self) -> Self {
        self.with_queue(|queue| queue.add_handle(self.id));
        DelayedCall {
            id: self.id,
            reactor: self.reactor.clone(),
        }
    }
}

impl Drop for DelayedCall {
    fn drop(&mut self) {
        if let Some(reactor) = self.reactor.upgrade() {
            // A handle dropped while the queue is borrowed (by code running
            // inside a queue operation) keeps its slot: a few bytes, never
            // a wrong answer.
            if let Ok(mut queue) = reactor.try_timers_mut() {
                queue.drop_handle(self.id);
            }
        }
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pending, called, _) = self.state();
        let state = if pending {
            "pending"
        } else if called {
            "called"
        } else {
            "cancelled"
        };
        f.debug_struct("DelayedCall")
            .field("time", &self.time())
            .field("state", &state)
            .finish()
    }
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX` (about 584
/// years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> Callback {
        Box::new(|_| {})
    }

    /// Checks the heap order and the slots' back-pointers.
    fn check(queue: &TimerQueue) {
        for (pos, entry) in queue.heap.iter().enumerate() {
            assert_eq!(queue.slots[entry.key as usize].pos as usize, pos);
            if pos > 0 {
                assert!(!entry.before(&queue.heap[(pos - 1) / 2]));
            }
        }
    }

    #[test]
    fn a_pending_call_costs_64_bytes() {
        assert_eq!(
            std::mem::size_of::<Entry>() + std::mem::size_of::<Slot>(),
            64
        );
    }

    #[test]
    fn random_operations_keep_the_heap_consistent() {
        let mut queue = TimerQueue::new();
        let mut ids = Vec::new();
        let mut x: u64 = 12345;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            match rand() % 4 {
                0 | 1 => ids.push(queue.schedule(rand() % 1000, noop())),
                2 if !ids.is_empty() => {
                    let id = ids.swap_remove(rand() as usize % ids.len());
                    let _ = queue.cancel(id);
                    queue.drop_handle(id);
                }
                _ if !ids.is_empty() => {
                    let id = ids[rand() as usize % ids.len()];
                    let _ = queue.reschedule(id, rand() % 1000);
                }
                _ => {}
            }
            check(&queue);
        }
        let mut last = 0;
        while let Some(entry) = queue.heap.first().copied() {
            assert!(entry.when >= last);
            last = entry.when;
            assert!(queue.pop_due(u64::MAX, u64::MAX).is_some());
            check(&queue);
        }
    }

    #[test]
    fn slots_are_reused_only_after_every_handle_is_gone() {
        let mut queue = TimerQueue::new();
        let a = queue.schedule(1, noop());
        assert!(queue.pop_due(1, u64::MAX).is_some());
        // The handle still sees "called".
        assert_eq!(queue.check_pending(a), Err(TimerError::AlreadyCalled));
        let b = queue.schedule(2, noop());
        assert_ne!(a.key, b.key);
        queue.drop_handle(a);
        let c = queue.schedule(3, noop());
        assert_eq!(c.key, a.key);
        assert_ne!(c.generation, a.generation);
        assert_eq!(queue.check_pending(a), Err(TimerError::AlreadyCancelled));
        assert!(queue.check_pending(c).is_ok());
    }
}
