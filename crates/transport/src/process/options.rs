//! What to run and how: [`ProcessOptions`], the child's descriptor map
//! ([`ChildFd`]), and how a process ended ([`ProcessReason`]) or why a
//! signal could not be sent ([`SignalError`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// What one descriptor of the child is (a value of Twisted's `childFDs`
/// map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildFd {
    /// A pipe the child writes and we read (Twisted's `"r"`): its output
    /// arrives as `child_data_received(fd, ...)`.
    #[doc(alias = "r")]
    FromChild,
    /// A pipe we write and the child reads (Twisted's `"w"`): written
    /// with `write_to_child(fd, ...)` (`write` for descriptor 0).
    #[doc(alias = "w")]
    ToChild,
    /// A copy of one of our own descriptors (Twisted's integer value):
    /// the child shares it. The descriptor must be open when the process
    /// is spawned; we keep it.
    Inherit(RawFd),
    /// `/dev/null`, for reading and writing.
    Null,
}

/// How to run a child process: its environment, working directory,
/// identity, descriptors, and whether it runs on a pseudo-terminal
/// (Twisted's `spawnProcess` arguments after the program and its
/// arguments).
///
/// # Environment
/// **By default the child inherits our environment** (as
/// `std::process::Command`, Python's `subprocess` and tokio do), with the
/// changes made through [`ProcessOptions::env`] and
/// [`ProcessOptions::env_remove`]. Twisted's `spawnProcess` instead gives
/// a child without an `env` argument an *empty* environment; ask for that
/// with [`ProcessOptions::env_clear`].
///
/// # Descriptors
/// By default the child's 0, 1 and 2 are pipes (we write its standard
/// input and read its standard output and error). [`ProcessOptions::child_fd`]
/// changes or adds entries; [`ProcessOptions::child_fds`] replaces the
/// map (Twisted's `childFDs`). A descriptor of the child that the map
/// does not name is closed in the child, including 0, 1 and 2 (as in
/// Twisted). No other descriptor of ours reaches the child, whether or
/// not it is marked close-on-exec.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    pub(crate) env_clear: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) use_pty: bool,
    pub(crate) child_fds: BTreeMap<RawFd, ChildFd>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            uid: None,
            gid: None,
            use_pty: false,
            child_fds: BTreeMap::from([
                (0, ChildFd::ToChild),
                (1, ChildFd::FromChild),
                (2, ChildFd::FromChild),
            ]),
        }
    }
}

impl ProcessOptions {
    /// The defaults: our environment, our working directory, our
    /// identity, pipes on 0, 1 and 2.
    pub fn new() -> ProcessOptions {
        ProcessOptions::default()
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes a variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child's environment empty instead of from ours
    /// (Twisted's default); variables set with [`ProcessOptions::env`]
    /// still apply, whenever they were set.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// The child's working directory (Twisted's `path`). It must exist:
    /// `spawn_process` checks before starting the child.
    #[doc(alias = "path")]
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Runs the child as this user (needs the privilege to switch). When
    /// we run as root, the child's supplementary groups become the
    /// user's (as `initgroups` gives them, like Twisted); its group stays
    /// ours unless [`ProcessOptions::gid`] is given too.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Runs the child with this group. When we run as root, a group alone
    /// (no [`ProcessOptions::uid`]) also makes it the child's only
    /// supplementary group: ours are not passed on.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Runs the child on a new pseudo-terminal (Twisted's `usePTY`): its
    /// descriptors 0, 1 and 2 are the terminal, in a new session of which
    /// it is the controlling terminal. We hold the other end: what we
    /// write is the child's input, what it prints arrives as descriptor 1
    /// (a terminal merges standard output and error, and echoes input
    /// unless the child turns echo off). Entries of the descriptor map
    /// for 0, 1 and 2 are ignored; others apply. The terminal is one
    /// stream: closing the child's 0 or 1 closes it whole.
    #[doc(alias = "usePTY")]
    pub fn use_pty(mut self, use_pty: bool) -> Self {
        self.use_pty = use_pty;
        self
    }

    /// Sets what the child's descriptor `fd` is.
    pub fn child_fd(mut self, fd: RawFd, what: ChildFd) -> Self {
        self.child_fds.insert(fd, what);
        self
    }

    /// Replaces the whole descriptor map (Twisted's `childFDs`): the
    /// child's descriptors not named are closed.
    #[doc(alias = "childFDs")]
    pub fn child_fds(mut self, map: impl IntoIterator<Item = (RawFd, ChildFd)>) -> Self {
        self.child_fds = map.into_iter().collect();
        self
    }
}

/// How a child process ended, as `process_exited` and `process_ended`
/// report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessReason {
    /// It exited with status 0 (Twisted's `ProcessDone`).
    #[doc(alias = "ProcessDone")]
    Done,
    /// It exited with a non-zero status, or a signal killed it (Twisted's
    /// `ProcessTerminated`). Both are `None` if the child was reaped by
    /// someone else (code that calls `waitpid(-1)`), so how it ended is
    /// not known.
    #[doc(alias = "ProcessTerminated")]
    Terminated {
        /// The exit status, if it exited.
        exit_code: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },
}

impl ProcessReason {
    /// True for [`ProcessReason::Done`].
    pub fn is_clean(self) -> bool {
        self == ProcessReason::Done
    }

    /// The exit status: `Some(0)` for [`ProcessReason::Done`].
    pub fn exit_code(self) -> Option<i32> {
        match self {
            ProcessReason::Done => Some(0),
            ProcessReason::Terminated { exit_code, .. } => exit_code,
        }
    }

    /// The signal that killed the process, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            ProcessReason::Done => None,
            ProcessReason::Terminated { signal, .. } => signal,
        }
    }

    pub(crate) fn from_status(status: crate::sys::process::WaitStatus) -> ProcessReason {
        use crate::sys::process::WaitStatus;
        match status {
            WaitStatus::Exited(0) => ProcessReason::Done,
            WaitStatus::Exited(code) => ProcessReason::Terminated {
                exit_code: Some(code),
                signal: None,
            },
            WaitStatus::Signaled(signal) => ProcessReason::Terminated {
                exit_code: None,
                signal: Some(signal),
            },
            WaitStatus::Unknown => ProcessReason::Terminated {
                exit_code: None,
                signal: None,
            },
        }
    }
}

impl fmt::Display for ProcessReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProcessReason::Done => f.write_str("process exited with status 0"),
            ProcessReason::Terminated {
                exit_code: Some(code),
                ..
            } => write!(f, "process exited with status {code}"),
            ProcessReason::Terminated {
                signal: Some(signal),
                ..
            } => match Signal(signal).name() {
                Some(name) => write!(f, "process killed by signal {signal} (SIG{name})"),
                None => write!(f, "process killed by signal {signal}"),
            },
            ProcessReason::Terminated { .. } => {
                f.write_str("process ended; reaped elsewhere, status unknown")
            }
        }
    }
}

/// A signal to send with `signal_process`: a number, or a name such as
/// `"TERM"`, `"KILL"` or `"SIGINT"` through [`IntoSignal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

impl Signal {
    /// `SIGTERM`: please stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGKILL`: stop now (cannot be caught).
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGINT`: as Ctrl-C.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGHUP`: the terminal went away.
    pub const HUP: Signal = Signal(libc::SIGHUP);

    /// The signal called `name` (`"TERM"` or `"SIGTERM"`, any case).
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        crate::sys::process::SIGNAL_NAMES
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|&(_, number)| Signal(number))
    }

    /// The signal's name without `SIG`, if it has a common one.
    pub fn name(self) -> Option<&'static str> {
        crate::sys::process::SIGNAL_NAMES
            .iter()
            .find(|(_, number)| *number == self.0)
            .map(|&(name, _)| name)
    }
}

/// What `signal_process` accepts: a [`Signal`], a number, or a name.
pub trait IntoSignal {
    /// The signal.
    ///
    /// # Errors
    /// [`SignalError::UnknownSignal`] for a name that is not a signal.
    fn into_signal(self) -> Result<Signal, SignalError>;
}

impl IntoSignal for Signal {
    fn into_signal(self) -> Result<Signal, SignalError> {
        Ok(self)
    }
}

impl IntoSignal for i32 {
    fn into_signal(self) -> Result<Signal, SignalError> {
        Ok(Signal(self))
    }
}

impl IntoSignal for &str {
    fn into_signal(self) -> Result<Signal, SignalError> {
        Signal::from_name(self).ok_or_else(|| SignalError::UnknownSignal(self.to_owned()))
    }
}

/// Why `signal_process` did not send a signal.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignalError {
    /// The process has been reaped already: there is no process to
    /// signal, and its pid may belong to another one by now (Twisted's
    /// `ProcessExitedAlready`).
    ProcessExitedAlready,
    /// No signal has that name.
    UnknownSignal(String),
    /// The system refused (an invalid number, no permission).
    Os(io::Error),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::ProcessExitedAlready => f.write_str("the process has exited already"),
            SignalError::UnknownSignal(name) => write!(f, "no signal is called {name:?}"),
            SignalError::Os(e) => write!(f, "cannot send the signal: {e}"),
        }
    }
}

impl std::error::Error for SignalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignalError::Os(e) => Some(e),
            _ => None,
        }
    }
}
