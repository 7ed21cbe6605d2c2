//! Delayed calls: a 4-ary heap of `(due time, sequence, slot)` entries
//! over a slab of call slots, with lazy deletion.
//!
//! Entries are ordered by due time, then by sequence number (the order calls
//! were scheduled or last rescheduled). A slot remembers the due time and
//! sequence of the one entry that stands for its call, so every other entry
//! for that slot is recognisably stale. Cancelling is O(1): the slot is
//! marked and the entry left behind.
//! Rescheduling pushes a fresh entry. Stale entries are dropped when they
//! reach the top, and the heap is compacted when they outnumber the live
//! ones, so memory stays within twice the live entries.
//!
//! Why this structure: most network timers are timeouts cancelled before
//! they fire, so cancel must be cheap; a lazily-cancelled heap makes it a
//! flag, and the 4-ary layout halves the depth (and the cache misses) of
//! each pop compared with a binary heap. `just bench` measures it against
//! tokio's timers.
//!
//! A pending call costs 56 bytes: a 16-byte heap entry and a 40-byte slot
//! (plus whatever its closure captures). A slot is kept, with the call's
//! outcome, while any `DelayedCall` handle to it exists, so a handle can
//! always tell "already called" from "already cancelled".

use std::time::Duration;

use crate::delayed::TimerError;
use crate::reactor::Reactor;

/// A timer callback. It receives the reactor it runs on.
pub(crate) type Callback = Box<dyn FnOnce(&Reactor)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pending,
    Called,
    Cancelled,
    /// On the free list; `seq` links to the next free slot.
    Free,
}

struct Slot {
    callback: Option<Callback>,
    /// When the call is (or was) due.
    when: u64,
    /// The sequence of the heap entry that stands for the call while it
    /// is pending; the next free slot while the slot is free.
    seq: u32,
    /// Counts the lives of this slot, so a handle never touches a later
    /// call that reuses it.
    generation: u32,
    /// Live `DelayedCall` handles. As wide as a slot allows without
    /// growing it; counting past it is refused, never wrapped or saturated,
    /// so a slot is never freed while a handle can still reach it.
    handles: u32,
    state: State,
}

/// 16 bytes: four siblings fill one cache line. The sequence number wraps
/// at 2^32; it only breaks ties between calls due at the same nanosecond,
/// and liveness also checks the due time (see `TimerQueue::is_live`).
#[derive(Clone, Copy)]
struct Entry {
    when: u64,
    seq: u32,
    key: u32,
}

impl Entry {
    /// True if `self` is due before `other`: earlier, or at the same time
    /// and scheduled first (sequence numbers compared modulo 2^32).
    fn before(&self, other: &Entry) -> bool {
        self.when < other.when
            || (self.when == other.when && (self.seq.wrapping_sub(other.seq) as i32) < 0)
    }
}

/// A 4-ary min-heap of entries: half the depth of a binary heap, and the
/// four children of a node sit side by side in memory, so a pop from a
/// large heap touches about half as many cache lines.
#[derive(Default)]
struct Heap {
    entries: Vec<Entry>,
}

impl Heap {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn peek(&self) -> Option<&Entry> {
        self.entries.first()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn push(&mut self, entry: Entry) {
        let mut pos = self.entries.len();
        self.entries.push(entry);
        while pos > 0 {
            let parent = (pos - 1) / 4;
            if !entry.before(&self.entries[parent]) {
                break;
            }
            self.entries[pos] = self.entries[parent];
            pos = parent;
        }
        self.entries[pos] = entry;
    }

    fn pop(&mut self) -> Option<Entry> {
        let last = self.entries.pop()?;
        if self.entries.is_empty() {
            return Some(last);
        }
        let top = self.entries[0];
        self.sift_down(0, last);
        Some(top)
    }

    /// Places `entry` at `pos` or below, moving smaller children up.
    fn sift_down(&mut self, mut pos: usize, entry: Entry) {
        let len = self.entries.len();
        loop {
            let first = 4 * pos + 1;
            if first >= len {
                break;
            }
            let mut child = first;
            for candidate in first + 1..(first + 4).min(len) {
                if self.entries[candidate].before(&self.entries[child]) {
                    child = candidate;
                }
            }
            if !self.entries[child].before(&entry) {
                break;
            }
            self.entries[pos] = self.entries[child];
            pos = child;
        }
        self.entries[pos] = entry;
    }

    /// Keeps only the entries `keep` accepts, then restores heap order.
    fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        self.entries.retain(keep);
        for pos in (0..self.entries.len() / 4 + 1).rev() {
            if pos < self.entries.len() {
                let entry = self.entries[pos];
                self.sift_down(pos, entry);
            }
        }
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
    heap: Heap,
    slots: Vec<Slot>,
    free: u32,
    next_seq: u32,
    pending: usize,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: Heap::default(),
            slots: Vec::new(),
            free: NO_SLOT,
            next_seq: 0,
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
    pub(crate) fn next_seq(&self) -> u32 {
        self.next_seq
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }

    /// True if `entry` stands for a pending call. Checking the due time
    /// too makes a wrapped sequence number harmless: a stale entry that
    /// matched both could only fire the call at its right time, once.
    fn is_live(slots: &[Slot], entry: &Entry) -> bool {
        let slot = &slots[entry.key as usize];
        slot.state == State::Pending && slot.seq == entry.seq && slot.when == entry.when
    }

    /// Schedules `callback` at `when`; the returned id starts with one
    /// handle counted.
    pub(crate) fn schedule(&mut self, when: u64, callback: Callback) -> TimerId {
        let seq = self.take_seq();
        let key = if self.free != NO_SLOT {
            let key = self.free;
            let slot = &mut self.slots[key as usize];
            self.free = slot.seq;
            *slot = Slot {
                callback: Some(callback),
                when,
                seq,
                generation: slot.generation,
                handles: 1,
                state: State::Pending,
            };
            key
        } else {
            let key = u32::try_from(self.slots.len())
                .ok()
                .filter(|&key| key != NO_SLOT)
                .expect("fewer than 4 billion timers");
            self.slots.push(Slot {
                callback: Some(callback),
                when,
                seq,
                generation: 0,
                handles: 1,
                state: State::Pending,
            });
            key
        };
        self.heap.push(Entry { when, seq, key });
        self.pending += 1;
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

    fn check_pending(&self, id: TimerId) -> Result<(), TimerError> {
        match self.slot(id).map(|slot| slot.state) {
            Some(State::Pending) => Ok(()),
            Some(State::Called) => Err(TimerError::AlreadyCalled),
            // A slot can only be missing for a handle that outlived its
            // reactor's queue being cleared, which cancels everything.
            _ => Err(TimerError::AlreadyCancelled),
        }
    }

    pub(crate) fn state_of(&self, id: TimerId) -> (bool, bool, u64) {
        match self.slot(id) {
            Some(slot) => (
                slot.state == State::Pending,
                slot.state == State::Called,
                slot.when,
            ),
            None => (false, false, 0),
        }
    }

    /// Cancels a pending call and returns its callback, which the caller
    /// must drop after releasing its borrow of the queue (dropping it may run
    /// arbitrary code).
    pub(crate) fn cancel(&mut self, id: TimerId) -> Result<Option<Callback>, TimerError> {
        self.check_pending(id)?;
        let slot = &mut self.slots[id.key as usize];
        slot.state = State::Cancelled;
        let callback = slot.callback.take();
        self.pending -= 1;
        self.maybe_compact();
        Ok(callback)
    }

    /// Moves a pending call to `when`, or `by` later than it is due. It
    /// then runs after calls already due at that instant.
    pub(crate) fn reschedule(
        &mut self,
        id: TimerId,
        when: impl FnOnce(u64) -> u64,
    ) -> Result<(), TimerError> {
        self.check_pending(id)?;
        let seq = self.take_seq();
        let slot = &mut self.slots[id.key as usize];
        slot.when = when(slot.when);
        slot.seq = seq;
        let when = slot.when;
        self.heap.push(Entry {
            when,
            seq,
            key: id.key,
        });
        self.maybe_compact();
        Ok(())
    }

    /// Drops stale entries from the top of the heap.
    fn settle_top(&mut self) {
        while let Some(top) = self.heap.peek() {
            if Self::is_live(&self.slots, top) {
                return;
            }
            self.heap.pop();
        }
    }

    /// When the earliest pending call is due.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        self.settle_top();
        self.heap.peek().map(|entry| entry.when)
    }

    /// Pops the earliest call if it is due at or before `now` and (given a
    /// `limit`) was scheduled before that sequence number; marks it called
    /// and returns its callback. A due call scheduled at or after `limit`
    /// stops the pass: it and those after it run in a later pass.
    pub(crate) fn pop_due(&mut self, now: u64, limit: Option<u32>) -> Option<Callback> {
        self.settle_top();
        let top = *self.heap.peek()?;
        let too_new = limit.is_some_and(|limit| (top.seq.wrapping_sub(limit) as i32) >= 0);
        if top.when > now || too_new {
            return None;
        }
        self.heap.pop();
        self.pending -= 1;
        let slot = &mut self.slots[top.key as usize];
        slot.state = State::Called;
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
            slot.handles = slot
                .handles
                .checked_add(1)
                .expect("fewer than 2^32 handles to one delayed call");
        }
    }

    /// Counts one handle fewer; frees the slot once its call is over and
    /// no handle remains.
    pub(crate) fn drop_handle(&mut self, id: TimerId) {
        if self.slot(id).is_none() {
            return;
        }
        let slot = &mut self.slots[id.key as usize];
        slot.handles -= 1;
        if slot.handles == 0 && slot.state != State::Pending {
            self.release(id.key);
        }
    }

    fn release(&mut self, key: u32) {
        let slot = &mut self.slots[key as usize];
        slot.state = State::Free;
        slot.callback = None;
        slot.generation = slot.generation.wrapping_add(1);
        slot.seq = self.free;
        self.free = key;
    }

    /// Compacts the heap once stale entries outnumber live ones.
    fn maybe_compact(&mut self) {
        let stale = self.heap.len() - self.pending;
        if stale > 1024 && stale > self.pending {
            let slots = &self.slots;
            self.heap.retain(|entry| Self::is_live(slots, entry));
        }
    }

    /// Handles for every pending call, earliest first.
    pub(crate) fn pending_ids(&mut self) -> Vec<TimerId> {
        let mut entries: Vec<Entry> = self
            .heap
            .iter()
            .filter(|entry| Self::is_live(&self.slots, entry))
            .copied()
            .collect();
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
        self.heap.clear();
        self.pending = 0;
        let mut callbacks = Vec::new();
        for slot in &mut self.slots {
            if slot.state == State::Pending {
                slot.state = State::Cancelled;
                callbacks.extend(slot.callback.take());
            }
        }
        callbacks
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

    /// Checks that the pending count matches the live entries.
    fn check(queue: &TimerQueue) {
        let live = queue
            .heap
            .iter()
            .filter(|entry| TimerQueue::is_live(&queue.slots, entry))
            .count();
        assert_eq!(live, queue.pending);
        assert!(queue.heap.len() <= 2 * queue.pending + 1025);
    }

    #[test]
    fn a_pending_call_costs_56_bytes() {
        assert_eq!(
            std::mem::size_of::<Entry>() + std::mem::size_of::<Slot>(),
            56
        );
    }

    #[test]
    fn random_operations_keep_the_heap_consistent() {
        let mut queue = TimerQueue::new();
        let mut ids = Vec::new();
        let mut rng = crate::testing::XorShift::new(12345);
        let mut rand = move || rng.next_u64();
        // Each step checks the whole heap: quadratic, so short under Miri.
        let steps = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..steps {
            match rand() % 4 {
                0 | 1 => ids.push(queue.schedule(rand() % 1000, noop())),
                2 if !ids.is_empty() => {
                    let id = ids.swap_remove(rand() as usize % ids.len());
                    let _ = queue.cancel(id);
                    queue.drop_handle(id);
                }
                _ if !ids.is_empty() => {
                    let id = ids[rand() as usize % ids.len()];
                    let when = rand() % 1000;
                    let _ = queue.reschedule(id, |_| when);
                }
                _ => {}
            }
            check(&queue);
        }
        let mut last = 0;
        while let Some(when) = queue.next_deadline() {
            assert!(when >= last);
            last = when;
            assert!(queue.pop_due(u64::MAX, None).is_some());
            check(&queue);
        }
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn slots_are_reused_only_after_every_handle_is_gone() {
        let mut queue = TimerQueue::new();
        let a = queue.schedule(1, noop());
        assert!(queue.pop_due(1, None).is_some());
        // The handle still sees "called".
        assert_eq!(queue.check_pending(a), Err(TimerError::AlreadyCalled));
        let b = queue.schedule(2, noop());
        assert_ne!(a.key, b.key);
        assert_eq!(queue.check_pending(a), Err(TimerError::AlreadyCalled));
        queue.drop_handle(a);
        let c = queue.schedule(3, noop());
        assert_eq!(c.key, a.key);
        assert_ne!(c.generation, a.generation);
        assert_eq!(queue.check_pending(a), Err(TimerError::AlreadyCancelled));
        assert!(queue.check_pending(c).is_ok());
    }
}
