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
//! waiting thread from another one.
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
