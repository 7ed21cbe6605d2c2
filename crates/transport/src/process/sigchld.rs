//! Reaping without pidfds: a `SIGCHLD` handler writes a byte to a
//! self-pipe per reactor that has children to watch, and each reactor
//! then polls `waitpid(pid, WNOHANG)` for its own children only (never
//! `waitpid(-1)`, which would take other code's children). Used where
//! neither a pidfd (Linux) nor a kqueue process filter (macOS, the BSDs)
//! can be had for a child (`ENOSYS`, `EPERM` under some seccomp filters,
//! `ESRCH` for a child already exited on macOS, other systems), and for a
//! child whose filter fired before it could be reaped.
//!
//! Each wake-up asks every running child of that reactor (one
//! `waitpid` each): without pidfds nothing else says which of our own
//! children exited without taking other code's. The reactor's signal
//! machinery is not used: it is private, for SIGINT and SIGTERM, and only
//! installed while `run()` runs (docs/process.md says more).
//!
//! The handler is installed the first time it is needed and stays; a
//! handler that was there before is still called (see `install` for
//! `SA_SIGINFO` handlers and a previous `SIG_IGN`).

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;

use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration, WeakReactor};

use super::ProcessTransport;
use crate::sys::process::errno_location;

/// Write ends of the self-pipes of reactors watching children.
static PIPES: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
/// How many runs of the handler are between loading a descriptor from
/// `PIPES` and being done with it. A watcher withdraws its descriptor,
/// then waits for this to reach zero before closing it: a handler on
/// another thread never writes to a number that was closed (and perhaps
/// reused for an unrelated file) under it. The handler itself never
/// waits, so one that interrupts the dropping thread finishes first.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The handler that was installed before ours (a `sighandler_t` or an
/// `sa_sigaction`), called after ours; 0 if none.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
/// Whether `PREVIOUS` takes the signal's information (`SA_SIGINFO`).
static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);
/// The outcome of installing the handler, once: a failure stays (every
/// later attempt reports it) instead of passing for success.
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
static FORCED: AtomicBool = AtomicBool::new(false);

/// Makes new children of this process use the `SIGCHLD` fallback even
/// where pidfds (Linux) or kqueue process filters (macOS, the BSDs) work
/// (for tests of the fallback).
#[doc(hidden)]
pub fn force_sigchld_fallback(on: bool) {
    FORCED.store(on, Ordering::Relaxed);
}

/// Whether [`force_sigchld_fallback`] is on (only other reapers check it).
#[cfg(any(
    target_os = "linux",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub(crate) fn forced() -> bool {
    FORCED.load(Ordering::Relaxed)
}

extern "C" fn on_sigchld(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is saved and restored; write is async-signal-safe and
    // a descriptor loaded here stays open until IN_HANDLER drops (see
    // Watcher's Drop). The previous handler is called as it was
    // installed: with the signal's information and context if it asked
    // for them (SA_SIGINFO), with the number only otherwise.
    unsafe {
        let errno = *errno_location();
        let byte = 0u8;
        IN_HANDLER.fetch_add(1, Ordering::SeqCst);
        for slot in &PIPES {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 {
                libc::write(fd, (&byte as *const u8).cast(), 1);
            }
        }
        IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
        *errno_location() = errno;
        let previous = PREVIOUS.load(Ordering::SeqCst);
        if previous != 0 && previous != libc::SIG_IGN && previous != libc::SIG_DFL {
            if PREVIOUS_SIGINFO.load(Ordering::SeqCst) {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(previous);
                handler(signal, info, context);
            } else {
                let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
                handler(signal);
            }
        }
    }
}

/// Installs the handler, once per process, chaining to what was there:
///
/// - a previous handler is called after ours, as it was installed (with
///   `SA_SIGINFO`'s information and context if it asked for them); if it
///   wanted to hear about stopped children (no `SA_NOCLDSTOP`), it still
///   does;
/// - a previous `SIG_IGN` meant "the system reaps my children, no
///   zombies": our action keeps that with `SA_NOCLDWAIT`, so the
///   program's other children are still reaped by the system; so are
///   ours, whose exit status is then unknown (`ProcessReason::Terminated`
///   with neither code nor signal), as it is with pidfds under `SIG_IGN`.
///
/// A failure is kept: every later call reports it.
fn install() -> io::Result<()> {
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: the actions are plain data, fully initialised; sigaction
        // reads the current one into `old`, then installs ours.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
            // Published before ours is in place, so the first run of ours
            // already chains.
            PREVIOUS_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::SeqCst);
            PREVIOUS.store(old.sa_sigaction, Ordering::SeqCst);
            let ignored = old.sa_flags & libc::SA_SIGINFO == 0 && old.sa_sigaction == libc::SIG_IGN;
            let handled = old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != libc::SIG_DFL;
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigchld
                as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            if !handled || old.sa_flags & libc::SA_NOCLDSTOP != 0 {
                action.sa_flags |= libc::SA_NOCLDSTOP;
            }
            if ignored || old.sa_flags & libc::SA_NOCLDWAIT != 0 {
                action.sa_flags |= libc::SA_NOCLDWAIT;
            }
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
            Ok(())
        }
    });
    result.map_err(|errno| {
        let e = io::Error::from_raw_os_error(errno);
        io::Error::new(e.kind(), format!("cannot install the SIGCHLD handler: {e}"))
    })
}

/// One reactor's watch over its children.
pub(crate) struct Watcher {
    /// Held strongly until reaped: nothing else may keep a child's
    /// transport alive once its pipes are closed.
    children: RefCell<Vec<Rc<ProcessTransport>>>,
    read: Rc<UnixStream>,
    slot: usize,
    _write: UnixStream,
    registration: RefCell<Option<Registration<Rc<UnixStream>>>>,
}

thread_local! {
    static WATCHERS: RefCell<Vec<(WeakReactor, Rc<Watcher>)>> = const { RefCell::new(Vec::new()) };
}

impl Watcher {
    /// This reactor's watcher, made (and the handler installed) if needed.
    pub(crate) fn for_reactor(reactor: &Reactor) -> io::Result<Rc<Watcher>> {
        if let Some(watcher) = WATCHERS.with(|watchers| {
            let mut watchers = watchers.borrow_mut();
            watchers.retain(|(r, _)| r.upgrade().is_some());
            watchers
                .iter()
                .find(|(r, _)| r.upgrade().is_some_and(|r| r.ptr_eq(reactor)))
                .map(|(_, w)| w.clone())
        }) {
            return Ok(watcher);
        }
        install()?;
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let slot = PIPES
            .iter()
            .position(|slot| {
                slot.compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many reactors watching children"))?;
        let read = Rc::new(read);
        let watcher = Rc::new(Watcher {
            children: RefCell::new(Vec::new()),
            read: read.clone(),
            slot,
            _write: write,
            registration: RefCell::new(None),
        });
        let registration = reactor.register(
            read,
            Interest::READABLE,
            Rc::new(WatcherHandler(Rc::downgrade(&watcher))),
        )?;
        *watcher.registration.borrow_mut() = Some(registration);
        WATCHERS.with(|watchers| {
            watchers
                .borrow_mut()
                .push((reactor.downgrade(), watcher.clone()))
        });
        Ok(watcher)
    }

    /// Watches `process`; checks it on this turn (it may have exited
    /// before the handler was installed).
    pub(crate) fn add(&self, process: &Rc<ProcessTransport>) {
        self.children.borrow_mut().push(process.clone());
        if let Some(registration) = &*self.registration.borrow() {
            registration.wake();
        }
    }

    fn check(&self) {
        let mut buf = [0u8; 64];
        while matches!((&*self.read).read(&mut buf), Ok(n) if n > 0) {}
        // Each child is asked once; a reaped one leaves the list.
        let children: Vec<Rc<ProcessTransport>> = self.children.borrow().clone();
        for child in children {
            if child.poll_sigchld() {
                self.children
                    .borrow_mut()
                    .retain(|c| !Rc::ptr_eq(c, &child));
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        PIPES[self.slot].store(-1, Ordering::SeqCst);
        // A handler that loaded the descriptor before it was withdrawn
        // finishes its write before the descriptor closes (just after
        // this, with the `_write` field). A handler that starts later
        // sees -1.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

struct WatcherHandler(Weak<Watcher>);

impl Handler for WatcherHandler {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        if let Some(watcher) = self.0.upgrade() {
            watcher.check();
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(watcher) = self.0.upgrade() {
            watcher.check();
            // Children still running are left: forget them, and the
            // registration (which would keep the reactor's table busy).
            for child in watcher.children.take() {
                child.abandon();
            }
            drop(watcher.registration.borrow_mut().take());
            WATCHERS.with(|watchers| {
                watchers
                    .borrow_mut()
                    .retain(|(_, w)| !Rc::ptr_eq(w, &watcher))
            });
        }
    }
}
