//! Reaching a reactor from other threads.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::reactor::Reactor;
use crate::shared::Shared;
use crate::stats::ReactorStats;
use crate::sys::Poller;

/// The reactor has been dropped, so the call was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorClosed;

impl fmt::Display for ReactorClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reactor has been dropped")
    }
}

impl std::error::Error for ReactorClosed {}

/// A `Send + Sync` handle to a [`Reactor`], for other threads (Twisted's
/// `IReactorThreads`).
///
/// Calls queued from one thread run on the reactor's thread in the order
/// they were queued; calls from different threads interleave. A burst of
/// calls wakes the reactor once.
///
/// ```
/// use torsion_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let handle = reactor.handle();
/// let worker = std::thread::spawn(move || {
///     handle.call_from_thread(|reactor| {
///         reactor.stop().unwrap();
///     })
/// });
/// reactor.run()?;
/// worker.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "IReactorThreads")]
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

impl ReactorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ReactorHandle {
        ReactorHandle { shared }
    }

    /// Queues `call` to run on the reactor's thread during its next turn,
    /// and wakes the reactor if it is waiting (Twisted's
    /// `callFromThread`).
    ///
    /// # Errors
    /// [`ReactorClosed`] if the reactor has been dropped.
    #[doc(alias = "callFromThread")]
    pub fn call_from_thread<F>(&self, call: F) -> Result<(), ReactorClosed>
    where
        F: FnOnce(&Reactor) + Send + 'static,
    {
        {
            let mut calls = self.shared.calls();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(ReactorClosed);
            }
            calls.push(Box::new(call));
        }
        // SeqCst: see `Shared::take_calls` for the argument.
        if !self.shared.pending.swap(true, Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    /// Asks the reactor to stop, from any thread. Does nothing if it is not
    /// running when the request arrives.
    ///
    /// # Errors
    /// [`ReactorClosed`] if the reactor has been dropped.
    pub fn stop(&self) -> Result<(), ReactorClosed> {
        self.call_from_thread(|reactor| {
            let _ = reactor.stop();
        })
    }

    /// The reactor's counters as of the end of its latest turn (or its
    /// latest [`Reactor::stats`] call), read without a lock and without
    /// disturbing the reactor; every field of the snapshot is from the same
    /// moment. After the reactor is dropped, its last published counts.
    ///
    /// ```
    /// use torsion_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let handle = reactor.handle();
    /// let watcher = std::thread::spawn(move || {
    ///     handle.call_from_thread(|reactor| reactor.stop().unwrap()).unwrap();
    ///     handle
    /// });
    /// reactor.run()?;
    /// let stats = watcher.join().unwrap().stats();
    /// assert_eq!(stats.thread_calls, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ReactorStats {
        self.shared.stats.load()
    }

    /// Wakes the reactor from its wait without queueing anything.
    pub fn wake(&self) {
        #[cfg(test)]
        self.shared.notifies.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.shared.with_poller(Poller::notify) {
            tracing::warn!(error = %e, "could not wake the reactor");
        }
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::Reactor;

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn a_burst_of_calls_wakes_the_reactor_once() {
        let reactor = Reactor::new().unwrap();
        let handle = reactor.handle();
        let burst = |handle: crate::ReactorHandle| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    handle.call_from_thread(|_| {}).unwrap();
                }
            })
            .join()
            .unwrap();
        };
        burst(handle.clone());
        burst(handle.clone());
        assert_eq!(handle.shared.notifies.load(Ordering::Relaxed), 1);
        reactor.iterate(Duration::ZERO).unwrap();
        burst(handle.clone());
        assert_eq!(handle.shared.notifies.load(Ordering::Relaxed), 2);
    }
}
