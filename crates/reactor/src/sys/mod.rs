//! The operating system's readiness poller, behind one small interface.
//!
//! On Linux the reactor talks to epoll directly ([`epoll`]): a wait is one
//! `epoll_wait` call, with no timer descriptor to program and no
//! notification descriptor to re-arm. Everywhere else, and on Linux with the
//! `polling-backend` feature (which CI also tests), it uses the `polling`
//! crate ([`portable`]).
//!
//! The interface: register a descriptor under a key with an [`Interest`];
//! change or remove it; wait for readiness with an optional timeout; wake a
//! waiting thread from another one. Other platform code (the location
//! of `errno`) lives here too.
//!
//! [`Interest`]: crate::Interest

#[cfg(all(target_os = "linux", not(feature = "polling-backend")))]
mod epoll;
#[cfg(all(target_os = "linux", not(feature = "polling-backend")))]
pub(crate) use epoll::{Events, Poller};

#[cfg(not(all(target_os = "linux", not(feature = "polling-backend"))))]
mod portable;
#[cfg(not(all(target_os = "linux", not(feature = "polling-backend"))))]
pub(crate) use portable::{Events, Poller};

/// Where the calling thread's `errno` lives, so a signal handler can save
/// and restore it.
///
/// # Safety
/// The pointer is valid only on the calling thread.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "emscripten"))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    libc::__errno_location()
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    libc::__error()
}

#[cfg(any(target_os = "openbsd", target_os = "netbsd"))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    libc::__errno()
}

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    libc::___errno()
}
