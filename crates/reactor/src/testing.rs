//! Test support: checking that code gives back every file descriptor it
//! opens ([`DescriptorGuard`]), and a [`Watchdog`] that ends a test that
//! hangs.
//!
//! Descriptors belong to the whole process, and the test harness runs
//! tests on several threads at once, so a count taken by one test would
//! see the sockets of another. A [`DescriptorGuard`] therefore holds a
//! process-wide lock for as long as it lives: the tests of one binary that
//! take a guard run one at a time, and each is checked exactly.
//!
//! ```
//! use torsion_reactor::{testing::DescriptorGuard, Reactor};
//!
//! let guard = DescriptorGuard::new();
//! {
//!     let reactor = Reactor::new()?;
//!     reactor.call_soon(|reactor| reactor.stop().unwrap());
//!     reactor.run()?;
//! } // The reactor and everything it owned are dropped here...
//! guard.check(); // ...so the process holds what it held before.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Ends the process if a test has not finished within a limit, so a broken
/// test fails loudly instead of hanging the suite.
///
/// A watchdog is a guard, not a way to wait for events: tests wait for
/// what they expect (a peer's reply, a callback) and the watchdog only
/// fires when that never comes. It runs on a thread of its own, so it
/// works however the test drives its reactor, and a reactor's panic
/// policy (which catches panics in timers) cannot swallow it. When it
/// fires it names the test and aborts the process.
///
/// ```
/// use std::time::Duration;
/// use torsion_reactor::{testing::Watchdog, Reactor};
///
/// let _watchdog = Watchdog::new(Duration::from_secs(30));
/// let reactor = Reactor::new()?;
/// reactor.call_soon(|reactor| reactor.stop().unwrap());
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Watchdog {
    /// Dropping it (with the watchdog) tells the thread the test is done.
    _done: mpsc::Sender<()>,
}

impl Watchdog {
    /// Starts a watchdog that aborts the process unless it is dropped
    /// within `limit`.
    pub fn new(limit: Duration) -> Watchdog {
        let (done, finished) = mpsc::channel::<()>();
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                eprintln!("{test} did not finish within {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog { _done: done }
    }
}

/// Serialises the guarded tests of one process.
static LOCK: Mutex<()> = Mutex::new(());

/// The directory listing the process's open descriptors, where there is
/// one.
fn descriptor_dir() -> Option<&'static Path> {
    ["/proc/self/fd", "/dev/fd"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.is_dir())
}

/// The process's open descriptors, each with what it refers to where the
/// platform says (`socket:[1234]`, a path, ...). `None` where the platform
/// has no way to list them.
pub fn open_descriptors() -> Option<BTreeMap<i32, String>> {
    let dir = descriptor_dir()?;
    let listing = std::fs::read_dir(dir).ok()?;
    let mut open = BTreeMap::new();
    for entry in listing.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let target = std::fs::read_link(entry.path())
            .map(|target| target.display().to_string())
            .unwrap_or_default();
        open.insert(fd, target);
    }
    // The listing held a descriptor of its own while it was read; it is
    // closed now, so leave it out.
    open.retain(|fd, _| {
        // SAFETY: F_GETFD only queries the descriptor table; it touches no
        // memory and is harmless on a number that is not open.
        unsafe { libc::fcntl(*fd, libc::F_GETFD) != -1 }
    });
    Some(open)
}

/// Asserts, when checked or dropped, that the process holds exactly the
/// descriptors it held when the guard was made.
///
/// Guards taken anywhere in the process wait for each other, so tests that
/// open sockets and take a guard never overlap. Tests that open
/// descriptors without a guard can still run meanwhile: give every test of
/// a binary that opens sockets a guard. Where descriptors cannot be listed
/// (no `/proc/self/fd` or `/dev/fd`) the guard checks nothing.
///
/// A guard dropped while its thread panics checks nothing, so the first
/// failure stays the one reported.
#[must_use = "the guard checks when it is dropped"]
pub struct DescriptorGuard {
    baseline: Option<BTreeMap<i32, String>>,
    checked: bool,
    _lock: MutexGuard<'static, ()>,
}

impl DescriptorGuard {
    /// Waits for any other guard to be dropped, then records the open
    /// descriptors.
    pub fn new() -> DescriptorGuard {
        let lock = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        DescriptorGuard {
            baseline: open_descriptors(),
            checked: false,
            _lock: lock,
        }
    }

    /// How many descriptors were open when the guard was made, if known.
    pub fn baseline(&self) -> Option<usize> {
        self.baseline.as_ref().map(BTreeMap::len)
    }

    /// Asserts now that every descriptor opened since the guard was made
    /// has been closed, and none of the earlier ones.
    ///
    /// # Panics
    /// If the set of open descriptors differs, naming each one gained or
    /// lost with what it refers to.
    pub fn check(mut self) {
        self.checked = true;
        self.compare();
    }

    fn compare(&self) {
        let (Some(before), Some(after)) = (&self.baseline, open_descriptors()) else {
            return;
        };
        let gained: Vec<_> = after
            .iter()
            .filter(|(fd, _)| !before.contains_key(fd))
            .collect();
        let lost: Vec<_> = before
            .iter()
            .filter(|(fd, _)| !after.contains_key(fd))
            .collect();
        assert!(
            gained.is_empty() && lost.is_empty(),
            "descriptors leaked: {gained:?}; descriptors closed that were open before: {lost:?}"
        );
    }
}

impl Default for DescriptorGuard {
    fn default() -> DescriptorGuard {
        DescriptorGuard::new()
    }
}

impl Drop for DescriptorGuard {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            self.compare();
        }
    }
}

impl std::fmt::Debug for DescriptorGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DescriptorGuard")
            .field("baseline", &self.baseline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
    #[should_panic(expected = "descriptors leaked")]
    fn a_descriptor_left_open_is_named() {
        if descriptor_dir().is_none() {
            panic!("descriptors leaked (nothing to list here)");
        }
        let guard = DescriptorGuard::new();
        let _socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        guard.check();
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
    fn closed_descriptors_pass() {
        let guard = DescriptorGuard::new();
        drop(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        guard.check();
    }
}
