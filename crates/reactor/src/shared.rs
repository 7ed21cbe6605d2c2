//! The part of a reactor that other threads may touch: the poller (which
//! owns the reactor's descriptors) and the queue of calls sent from other
//! threads.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::reactor::Reactor;
use crate::stats::Published;
use crate::sys::Poller;

/// Work sent to the reactor's thread.
pub(crate) type ThreadCall = Box<dyn FnOnce(&Reactor) + Send>;

/// The part of a reactor that other threads may touch.
pub(crate) struct Shared {
    /// The poller, until the reactor is dropped. Handles and registrations
    /// can outlive the reactor; the poller's descriptors must not, so the
    /// reactor takes it out when it is dropped. Only that takes the write
    /// lock; waits and wake-ups share the read lock.
    poller: RwLock<Option<Poller>>,
    needs_rearm: bool,
    calls: Mutex<Vec<ThreadCall>>,
    /// Set when calls are queued and the poller has been notified; cleared
    /// by the reactor when it takes the queue. Coalesces wake-ups: one
    /// notification per burst, not per call.
    pub(crate) pending: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// The reactor's counters as of the end of its latest turn.
    pub(crate) stats: Published,
    /// Notifications sent, for the tests of coalescing.
    #[cfg(test)]
    pub(crate) notifies: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub(crate) fn new(poller: Poller) -> Shared {
        Shared {
            needs_rearm: poller.needs_rearm(),
            poller: RwLock::new(Some(poller)),
            calls: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stats: Published::default(),
            #[cfg(test)]
            notifies: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn calls(&self) -> MutexGuard<'_, Vec<ThreadCall>> {
        // Nothing runs under this lock, so a poisoned lock is still sound.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the poller, or fails if the reactor is gone.
    pub(crate) fn with_poller<R>(&self, f: impl FnOnce(&Poller) -> io::Result<R>) -> io::Result<R> {
        // Nothing panics under this lock, so a poisoned lock is still sound.
        let poller = self.poller.read().unwrap_or_else(|e| e.into_inner());
        match &*poller {
            Some(poller) => f(poller),
            None => Err(io::Error::other("the reactor has been dropped")),
        }
    }

    /// Whether oneshot registrations must be re-armed after each event.
    pub(crate) fn needs_rearm(&self) -> bool {
        self.needs_rearm
    }

    /// Closes the poller's descriptors, once every source has left it.
    pub(crate) fn release_poller(&self) {
        let poller = self
            .poller
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(poller);
    }

    /// Marks the reactor as gone: later calls are refused.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.calls().clear();
    }

    /// Takes every queued call, in the order they were queued.
    pub(crate) fn take_calls(&self) -> Vec<ThreadCall> {
        // A load first: the usual turn has no calls, and a swap is a locked
        // instruction (a sequentially consistent load is a plain one on
        // x86). The load is SeqCst, like the writer's swap in
        // `call_from_thread`, because the `polling` backend coalesces
        // notifications: after its wait it clears its "notified" flag
        // (SeqCst), and a writer that finds that flag still raised sends no
        // notification. In the single order of SeqCst operations either
        // this load comes after the writer's swap, and sees the flag, or
        // the poller's clearing came before the writer's attempt to raise
        // "notified", which then succeeds and wakes the next wait. With a
        // weaker load both sides could read stale values (store buffering)
        // and the wake-up would be lost. The direct epoll backend writes
        // its eventfd on every notification and does not rely on this.
        if !self.pending.load(Ordering::SeqCst) || !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.calls())
    }
}
