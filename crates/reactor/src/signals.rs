//! SIGINT and SIGTERM as an orderly stop.
//!
//! A signal handler may do almost nothing safely, so it only writes the
//! signal number to a pipe per running reactor (`write` is
//! async-signal-safe; a socket pair stands in for the pipe). Each reactor watches the read end of its pipe like
//! any other source and calls [`Reactor::stop`] when a byte arrives.
//! Handlers are installed while at least one reactor runs with signal
//! handling on, and the previous dispositions are restored after the last
//! one returns.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::interest::{Interest, Readiness};
use crate::reactor::Reactor;
use crate::source::{Handler, Registration};
use crate::sys;

/// The signals that stop a reactor.
const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Write ends of the pipes of running reactors; -1 marks a free slot.
/// Read by the signal handler, so plain atomics only.
static PIPES: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

/// How many signal handlers are running now (on any thread): a guard
/// that withdrew its descriptor waits for this to reach zero before the
/// descriptor is closed, so a handler that loaded it just before never
/// writes to a closed (or reused) descriptor number.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// How many reactors have handlers installed, and what was there before.
static INSTALLED: Mutex<(usize, Vec<libc::sigaction>)> = Mutex::new((0, Vec::new()));

extern "C" fn on_signal(signal: libc::c_int) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: errno is thread-local and restored before returning; write
    // is async-signal-safe, and a descriptor loaded here stays open until
    // this handler has finished (a guard withdraws it, then waits for
    // `IN_HANDLER` to drop to zero, before closing it).
    unsafe {
        let errno = *sys::errno_location();
        let byte = signal as u8;
        for slot in &PIPES {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 {
                libc::write(fd, (&byte as *const u8).cast(), 1);
            }
        }
        *sys::errno_location() = errno;
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

/// Signal handling for one run of a reactor; undone when dropped.
pub(crate) struct SignalGuard {
    slot: usize,
    /// Kept open while its descriptor is published in `PIPES`.
    _write: UnixStream,
    _registration: Registration<Rc<UnixStream>>,
}

struct SignalReader {
    stream: Rc<UnixStream>,
}

impl Handler for SignalReader {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        if !readiness.is_readable() {
            return;
        }
        let mut buf = [0u8; 16];
        loop {
            match (&*self.stream).read(&mut buf) {
                Ok(n) if n > 0 => {
                    for &signal in &buf[..n] {
                        tracing::info!(signal, "received a stop signal; shutting down");
                    }
                    let _ = reactor.stop();
                }
                _ => break,
            }
        }
    }
}

impl SignalGuard {
    pub(crate) fn install(reactor: &Reactor) -> io::Result<SignalGuard> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let read = Rc::new(read);
        let reader = Rc::new(SignalReader {
            stream: read.clone(),
        });
        let registration = reactor.register(read, Interest::READABLE, reader)?;
        let slot = PIPES
            .iter()
            .position(|slot| {
                slot.compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many reactors handling signals"))?;
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if installed.0 == 0 {
            let mut previous = Vec::new();
            for signal in SIGNALS {
                // SAFETY: the action is fully initialised (zeroed, then
                // handler and an empty mask set) and outlives the call.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, &action, &mut old) != 0 {
                        let error = io::Error::last_os_error();
                        for (signal, old) in SIGNALS.iter().zip(&previous) {
                            libc::sigaction(*signal, old, std::ptr::null_mut());
                        }
                        PIPES[slot].store(-1, Ordering::Release);
                        return Err(error);
                    }
                    previous.push(old);
                }
            }
            installed.1 = previous;
        }
        installed.0 += 1;
        Ok(SignalGuard {
            slot,
            _write: write,
            _registration: registration,
        })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        installed.0 -= 1;
        if installed.0 == 0 {
            for (signal, old) in SIGNALS.iter().zip(&installed.1) {
                // SAFETY: restores the disposition saved at install time.
                unsafe {
                    libc::sigaction(*signal, old, std::ptr::null_mut());
                }
            }
            installed.1.clear();
        }
        // Withdraw the write end, then let any handler that may have
        // loaded it finish, before `_write` is closed after this. (A handler
        // interrupting this thread finishes before the loop runs, so the
        // wait cannot deadlock; handlers elsewhere take microseconds.)
        PIPES[self.slot].store(-1, Ordering::SeqCst);
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}
