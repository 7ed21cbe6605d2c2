//! The `polling` crate, for every platform without a direct backend.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use polling::{Event, PollMode};

use crate::interest::{Interest, Readiness};

fn event(key: usize, interest: Interest) -> Event {
    match (interest.is_readable(), interest.is_writable()) {
        (true, true) => Event::all(key),
        (true, false) => Event::readable(key),
        (false, true) => Event::writable(key),
        (false, false) => Event::none(key),
    }
}

pub(crate) struct Poller {
    poller: polling::Poller,
    mode: PollMode,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        let poller = polling::Poller::new()?;
        // Level-triggered readiness needs no re-arming system call per
        // event; fall back to oneshot (re-armed before each dispatch) where
        // the platform offers nothing else.
        let mode = if poller.supports_level() {
            PollMode::Level
        } else {
            PollMode::Oneshot
        };
        Ok(Poller { poller, mode })
    }

    /// Edge-triggered registrations are watched in the poller's one mode
    /// (level or oneshot), which reports at least as often: a handler
    /// written for edges is correct under it.
    pub(crate) const EDGE_TRIGGERED: bool = false;

    pub(crate) fn needs_rearm(&self) -> bool {
        self.mode == PollMode::Oneshot
    }

    /// Registers `fd` under `key`.
    ///
    /// # Safety
    /// `fd` must stay open until it is removed with [`Poller::delete`].
    pub(crate) unsafe fn add(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        _edge: bool,
    ) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.poller
                .add_with_mode(fd, event(key, interest), self.mode)
        }
    }

    pub(crate) fn modify(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        interest: Interest,
        _edge: bool,
    ) -> io::Result<()> {
        self.poller
            .modify_with_mode(fd, event(key, interest), self.mode)
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.poller.delete(fd)
    }

    /// Watches child `pid`'s exit with a kqueue process filter under
    /// `key` (oneshot: a child exits once).
    ///
    /// # Safety
    /// `pid` must be an unreaped child of ours until the filter is deleted
    /// or has fired.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    pub(crate) unsafe fn add_process(
        &self,
        pid: std::num::NonZeroI32,
        key: usize,
    ) -> io::Result<()> {
        use polling::os::kqueue::{PollerKqueueExt, Process, ProcessOps};
        // SAFETY: forwarded from this function's contract.
        let filter = unsafe { Process::from_pid(pid, ProcessOps::Exit) };
        self.poller.add_filter(filter, key, PollMode::Oneshot)
    }

    /// Removes the process filter for `pid`.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    pub(crate) fn delete_process(&self, pid: std::num::NonZeroI32) -> io::Result<()> {
        use polling::os::kqueue::{PollerKqueueExt, Process, ProcessOps};
        // SAFETY: only names the filter to delete; nothing is watched.
        let filter = unsafe { Process::from_pid(pid, ProcessOps::Exit) };
        self.poller.delete_filter(filter)
    }

    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.events.clear();
        self.poller.wait(&mut events.events, timeout)?;
        Ok(())
    }

    pub(crate) fn notify(&self) -> io::Result<()> {
        self.poller.notify()
    }
}

pub(crate) struct Events {
    events: polling::Events,
}

impl Events {
    pub(crate) fn with_capacity(capacity: usize) -> Events {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Events {
            events: polling::Events::with_capacity(capacity),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, Readiness)> + '_ {
        self.events.iter().map(|event| {
            let error = event.is_err().unwrap_or(false);
            let hangup = event.is_interrupt();
            let readiness = Readiness::from_poller(
                event.readable || error || hangup,
                event.writable || error || hangup,
                error,
                hangup,
                false,
                false,
            );
            (event.key, readiness)
        })
    }
}
