//! Test support: checking that code gives back every file descriptor it
//! opens ([`DescriptorGuard`]), a [`Watchdog`] that ends a test that
//! hangs, and [`XorShift`], a small deterministic generator for test data.
//! (`torsion_protocol::testing` re-exports all three beside its in-memory
//! transports.)
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

/// A deterministic pseudo-random generator (Marsaglia's xorshift64), for
/// test data, chunk sizes and jitter: the same seed gives the same
/// sequence on every platform, and it costs a few instructions per value.
/// Not for anything that needs unpredictability.
///
/// ```
/// use torsion_reactor::testing::XorShift;
///
/// let mut first = XorShift::new(7);
/// let mut again = XorShift::new(7);
/// assert_eq!(first.bytes(16), again.bytes(16));
/// assert!(first.below(100) < 100);
/// ```
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (zero, which xorshift cannot leave,
    /// is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (`bound` must not be zero; the slight bias of
    /// a modulo is irrelevant for tests).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// A value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.next_u64() as u8;
        }
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.fill(&mut buf);
        buf
    }
}

/// A reactor for a test that runs on real sockets and time, watched by a
/// [`Watchdog`] of `limit`, with SIGINT/SIGTERM handling off (the tests
/// of one binary share a process and its signal dispositions).
///
/// Bind the watchdog first, so it outlives the reactor:
/// `let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));`
///
/// # Panics
/// If the reactor cannot be created.
pub fn guarded_reactor(limit: Duration) -> (Watchdog, crate::Reactor) {
    let watchdog = Watchdog::new(limit);
    let reactor = crate::Reactor::new().expect("a reactor for the test");
    reactor.set_signal_handling(false);
    (watchdog, reactor)
}

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
