//! A small bounded pool of worker threads for blocking work (name lookups,
//! file I/O) that must not run on the reactor's thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

pub(crate) struct ThreadPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

fn lock(shared: &PoolShared) -> MutexGuard<'_, PoolState> {
    // Jobs run outside the lock, so a poisoned lock still holds
    // consistent state.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ThreadPool {
    pub(crate) fn new(max_threads: usize) -> Self {
        ThreadPool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// Queues `job`; starts a worker if none is idle and the pool is below
    /// its bound. Jobs beyond the bound wait in the queue.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = lock(&self.shared);
        state.jobs.push_back(job);
        if state.idle > 0 {
            self.shared.work.notify_one();
        } else if state.threads < self.shared.max_threads {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("torsion-worker".into())
                .spawn(move || worker(shared));
            match spawned {
                Ok(_) => state.threads += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a worker thread; the job waits for a running one");
                }
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // Workers finish the jobs already queued, then exit. They are not
        // joined: one may be blocked in a slow name lookup.
        lock(&self.shared).shutdown = true;
        self.shared.work.notify_all();
    }
}

fn worker(shared: Arc<PoolShared>) {
    let mut state = lock(&shared);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = lock(&shared);
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .work
            .wait_timeout(state, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            break;
        }
    }
    state.threads -= 1;
}
