//! Direct epoll: level-triggered registrations (edge-triggered where the
//! caller asks), one system call per wait, and an eventfd for wake-ups that
//! is read only when it fired.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::interest::{Interest, Readiness};

/// The key the wake-up eventfd is registered under.
const NOTIFY_KEY: u64 = u64::MAX;

/// Reported as readable: data, urgent data, the peer's end of stream, or a
/// condition (error, hang-up) that the next read surfaces.
const READ_FLAGS: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
/// Reported as writable: room to write, or a condition the next write
/// surfaces.
const WRITE_FLAGS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn flags(interest: Interest, edge: bool) -> u32 {
    let mut flags = if edge { libc::EPOLLET as u32 } else { 0 };
    if interest.is_readable() {
        // The peer's end of stream is asked for with reading only: level-
        // triggered, it stays set once the peer has closed, so a source
        // that is not reading must not hear it.
        flags |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if edge {
            // Urgent data stops a TCP read short before the rest: an
            // edge-triggered reader must know to read on (see
            // `Readiness::is_priority`). Level-triggered, the next wait
            // reports the rest anyway.
            flags |= libc::EPOLLPRI as u32;
        }
    }
    if interest.is_writable() {
        flags |= libc::EPOLLOUT as u32;
    }
    flags
}

/// An epoll instance and its wake-up eventfd.
pub(crate) struct Poller {
    epoll: OwnedFd,
    notify: OwnedFd,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        // SAFETY: plain system calls; each returned descriptor is checked
        // and then owned exactly once.
        let (epoll, notify) = unsafe {
            let epoll = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let notify = OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?);
            (epoll, notify)
        };
        let poller = Poller { epoll, notify };
        poller.ctl(
            libc::EPOLL_CTL_ADD,
            poller.notify.as_raw_fd(),
            NOTIFY_KEY,
            libc::EPOLLIN as u32,
        )?;
        Ok(poller)
    }

    /// Edge-triggered registrations are honoured (`EPOLLET`).
    pub(crate) const EDGE_TRIGGERED: bool = true;

    /// Level-triggered registrations never need re-arming.
    pub(crate) fn needs_rearm(&self) -> bool {
        false
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, key: u64, flags: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: flags,
            u64: key,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the
        // call; epoll_ctl does not keep the pointer.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// Registers `fd` under `key`, edge-triggered if `edge`.
    ///
    /// # Safety
    /// `fd` must stay open until it is removed with [`Poller::delete`].
    pub(crate) unsafe fn add(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        edge: bool,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key as u64, flags(interest, edge))
    }

    pub(crate) fn modify(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        interest: Interest,
        edge: bool,
    ) -> io::Result<()> {
        // The kernel checks the descriptor's state again on a change, so
        // an edge-triggered source that is ready now is reported once more.
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd.as_raw_fd(),
            key as u64,
            flags(interest, edge),
        )
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Waits for readiness, at most `timeout` (rounded up to the next
    /// millisecond, so a timer never wakes the loop early). A signal that
    /// interrupts the wait returns no events.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        let timeout_ms = match timeout {
            None => -1,
            Some(timeout) => {
                let ms = timeout.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let capacity = libc::c_int::try_from(events.list.capacity()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `capacity` events into the
        // vector's spare capacity, and reports how many it wrote.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.list.as_mut_ptr(),
                capacity,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        // SAFETY: the first `n` events were initialised by epoll_wait.
        unsafe { events.list.set_len(n as usize) };
        if events.list.iter().any(|event| event.u64 == NOTIFY_KEY) {
            // Level-triggered: drain the counter, or it keeps firing.
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into an 8-byte buffer.
            unsafe {
                libc::read(self.notify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
            }
        }
        Ok(())
    }

    /// Wakes the thread waiting in [`Poller::wait`], or the next one.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from an 8-byte buffer.
        let n = unsafe { libc::write(self.notify.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if n < 0 {
            let error = io::Error::last_os_error();
            // A full counter already guarantees a wake-up.
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
        }
        Ok(())
    }
}

/// Room for the events of one wait.
pub(crate) struct Events {
    list: Vec<libc::epoll_event>,
}

impl Events {
    pub(crate) fn with_capacity(capacity: usize) -> Events {
        Events {
            list: Vec::with_capacity(capacity),
        }
    }

    /// The events of the last wait, as (key, readiness); wake-ups are left
    /// out.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, Readiness)> + '_ {
        self.list
            .iter()
            .filter(|event| event.u64 != NOTIFY_KEY)
            .map(|event| {
                let flags = event.events;
                let readiness = Readiness::from_poller(
                    flags & READ_FLAGS != 0,
                    flags & WRITE_FLAGS != 0,
                    flags & libc::EPOLLERR as u32 != 0,
                    flags & libc::EPOLLHUP as u32 != 0,
                    flags & libc::EPOLLRDHUP as u32 != 0,
                    flags & libc::EPOLLPRI as u32 != 0,
                );
                (event.u64 as usize, readiness)
            })
    }
}
