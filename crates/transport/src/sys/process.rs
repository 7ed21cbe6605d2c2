//! The platform corners of child processes: pipes, the child's descriptor
//! map (run between fork and exec), pidfds, reaping, signals, and writes
//! that cannot raise `SIGPIPE`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A pipe, both ends close-on-exec: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    #[cfg(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "linux",
        target_os = "netbsd",
        target_os = "openbsd",
    ))]
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    #[cfg(not(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "linux",
        target_os = "netbsd",
        target_os = "openbsd",
    )))]
    // SAFETY: as above; the close-on-exec flag follows.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    // SAFETY: both descriptors were just created and are owned by no one
    // else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "linux",
        target_os = "netbsd",
        target_os = "openbsd",
    )))]
    for fd in [&read, &write] {
        // SAFETY: plain fcntl on a descriptor we own.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    Ok((read, write))
}

/// Sets `O_NONBLOCK` on a pipe end or terminal we just made (whose other
/// status flags are all clear: one `fcntl` instead of two).
pub(crate) fn set_nonblocking_fresh(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl on a borrowed, open descriptor.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }).map(|_| ())
}

/// Sets `O_NONBLOCK` on the open file description of `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a borrowed, open descriptor.
    unsafe {
        let flags = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        if flags & libc::O_NONBLOCK == 0 {
            check(libc::fcntl(
                fd.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            ))?;
        }
    }
    Ok(())
}

/// `Ok` if `fd` is an open descriptor of this process.
pub(crate) fn check_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid
    // number gives EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) }).map(|_| ())
}

/// One entry of the child's descriptor map: `target` in the child becomes
/// a copy of our `source`, or is closed if `source` is negative.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FdMove {
    pub(crate) target: RawFd,
    pub(crate) source: RawFd,
}

/// Everything the child needs between fork and exec, prepared in the
/// parent so that the child allocates nothing: the descriptor map, the
/// identity, the working directory, and the exec itself with its
/// arguments, environment and the paths to try.
///
/// The child reports a failure through a pipe of our own whose write end
/// it first copies above every target of the map, so no target can
/// overwrite it (a map may name any number, including the one std's own
/// error pipe has in the child: that is why the exec is done here and not
/// left to std, whose report would go to whatever the map put there).
pub(crate) struct ChildExec {
    pub(crate) moves: Vec<FdMove>,
    /// One slot per move (the copies above the targets).
    pub(crate) scratch: Vec<RawFd>,
    pub(crate) pty: bool,
    /// `Some(groups)`: `setgroups` with these before the ids change.
    pub(crate) groups: Option<Vec<libc::gid_t>>,
    pub(crate) gid: Option<libc::gid_t>,
    pub(crate) uid: Option<libc::uid_t>,
    pub(crate) cwd: Option<CString>,
    /// The paths to try in order (`PATH` looked up in the parent).
    pub(crate) candidates: Vec<CString>,
    /// The pointer arrays below point into these.
    pub(crate) _strings: Vec<CString>,
    /// `argv`, null-terminated.
    pub(crate) argv: Vec<*const libc::c_char>,
    /// `/bin/sh`, a slot for the path, then the arguments: a file that is
    /// not an executable format (`ENOEXEC`) runs as a shell script, as
    /// `execvp` does.
    pub(crate) sh_argv: Vec<*const libc::c_char>,
    /// `envp`, null-terminated.
    pub(crate) envp: Vec<*const libc::c_char>,
    /// The write end of the error pipe (close-on-exec).
    pub(crate) report: RawFd,
}

// SAFETY: the raw pointers point into `_strings`, owned by the same
// value and never changed after it is built; std's `pre_exec` needs
// Send + Sync, and the value is used by one thread at a time (the child).
unsafe impl Send for ChildExec {}
// SAFETY: as above.
unsafe impl Sync for ChildExec {}

/// The step of the child's start that failed, as the error pipe reports.
pub(crate) const CHILD_STEPS: &[&str] = &[
    "descriptor map",
    "pseudo-terminal",
    "setgroups",
    "setgid",
    "setuid",
    "working directory",
    "exec",
];

impl ChildExec {
    /// Runs in the child (through std's `pre_exec`): async-signal-safe
    /// system calls only, no allocation. Returns only an error from
    /// before the first `dup2` (std reports it); after that it execs or
    /// reports on the error pipe and exits.
    ///
    /// 1. the error pipe's end and every source are copied above every
    ///    target, close-on-exec (so a source that is also another entry's
    ///    target, or a target on a descriptor the spawn uses, loses
    ///    nothing);
    /// 2. every descriptor from 3 up is marked close-on-exec (what this
    ///    process holds without the flag does not leak into the child);
    /// 3. each copy is `dup2`ed onto its target (which clears the flag),
    ///    and targets without a source are closed;
    /// 4. with a pseudo-terminal, a new session whose controlling
    ///    terminal is the one now on descriptor 0;
    /// 5. groups, group, user, working directory;
    /// 6. `execve` on each candidate path, as `execvp` does.
    pub(crate) fn run(&mut self) -> io::Result<()> {
        let floor = self
            .moves
            .iter()
            .map(|m| m.target + 1)
            .max()
            .unwrap_or(3)
            .max(3);
        // SAFETY: fcntl is async-signal-safe; `report` is open (the
        // parent holds it across the spawn).
        let report = check(unsafe { libc::fcntl(self.report, libc::F_DUPFD_CLOEXEC, floor) })?;
        for (slot, m) in self.scratch.iter_mut().zip(&self.moves) {
            *slot = if m.source >= 0 {
                // SAFETY: as above; the source is open (checked by the
                // parent, which holds it open across the spawn).
                check(unsafe { libc::fcntl(m.source, libc::F_DUPFD_CLOEXEC, floor) })?
            } else {
                -1
            };
        }
        mark_cloexec_from(3);
        let fail = |step: usize| -> ! {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let mut message = [0u8; 8];
            message[..4].copy_from_slice(&(step as u32).to_ne_bytes());
            message[4..].copy_from_slice(&errno.to_ne_bytes());
            // SAFETY: write and _exit are async-signal-safe; `report` is
            // the child's copy of the error pipe.
            unsafe {
                libc::write(report, message.as_ptr().cast(), message.len());
                libc::_exit(127)
            }
        };
        for (&copy, m) in self.scratch.iter().zip(&self.moves) {
            if copy >= 0 {
                // SAFETY: dup2 is async-signal-safe; both are descriptors
                // of the child.
                if unsafe { libc::dup2(copy, m.target) } < 0 {
                    fail(0);
                }
            } else {
                // SAFETY: closing a descriptor number in the child, which
                // owns it; an already closed one gives EBADF, ignored.
                unsafe { libc::close(m.target) };
            }
        }
        // SAFETY: setsid, ioctl, setgroups, setgid, setuid, chdir and
        // execve are async-signal-safe; every pointer was made by the
        // parent and stays valid (the child has its own copy of memory).
        unsafe {
            if self.pty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0) {
                fail(1);
            }
            if let Some(groups) = &self.groups {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) < 0 {
                    fail(2);
                }
            }
            if let Some(gid) = self.gid {
                if libc::setgid(gid) < 0 {
                    fail(3);
                }
            }
            if let Some(uid) = self.uid {
                if libc::setuid(uid) < 0 {
                    fail(4);
                }
            }
            if let Some(dir) = &self.cwd {
                if libc::chdir(dir.as_ptr()) < 0 {
                    fail(5);
                }
            }
            let mut denied = false;
            for path in &self.candidates {
                libc::execve(path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                match *errno_location() {
                    libc::ENOEXEC => {
                        self.sh_argv[1] = path.as_ptr();
                        libc::execve(self.sh_argv[0], self.sh_argv.as_ptr(), self.envp.as_ptr());
                        fail(6);
                    }
                    libc::EACCES => denied = true,
                    libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ESTALE
                    | libc::ENODEV
                    | libc::ETIMEDOUT => {}
                    _ => fail(6),
                }
            }
            if denied {
                *errno_location() = libc::EACCES;
            }
            fail(6)
        }
    }
}

/// The C library's thread-local `errno`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: the C library's thread-local errno.
    unsafe { libc::__errno_location() }
}

/// The C library's thread-local `errno`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: the C library's thread-local errno.
    unsafe { libc::__error() }
}

/// Reads the child's report from the error pipe's read end until end of
/// file: `None` if the exec succeeded (the pipe closed with nothing
/// written), or the failed step and its error.
pub(crate) fn read_child_report(read: &OwnedFd) -> Option<(&'static str, io::Error)> {
    let mut message = [0u8; 8];
    let mut got = 0;
    while got < message.len() {
        // SAFETY: read writes at most the rest of `message`.
        let n = unsafe {
            libc::read(
                read.as_raw_fd(),
                message[got..].as_mut_ptr().cast(),
                message.len() - got,
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got < message.len() {
        return None;
    }
    let step = u32::from_ne_bytes(message[..4].try_into().unwrap()) as usize;
    let errno = i32::from_ne_bytes(message[4..].try_into().unwrap());
    Some((
        CHILD_STEPS.get(step).copied().unwrap_or("start"),
        io::Error::from_raw_os_error(errno),
    ))
}

/// Marks every descriptor from `first` up close-on-exec.
fn mark_cloexec_from(first: RawFd) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range only changes descriptor flags.
        let done = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } == 0;
        if done {
            return;
        }
    }
    // Older kernels and other systems: one fcntl per possible descriptor.
    // SAFETY: getrlimit writes into the struct it is given.
    let limit = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(65_536) as RawFd
        } else {
            1024
        }
    };
    for fd in first..limit {
        // SAFETY: fcntl on a number that may not be open (EBADF, ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// How a child ended, as `waitpid`/`waitid` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Reaped by someone else (`ECHILD`): how it ended is not known.
    Unknown,
}

/// Reaps child `pid` if it has exited, without blocking.
pub(crate) fn wait_nohang(pid: libc::pid_t) -> io::Result<Option<WaitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(Some(WaitStatus::Unknown)),
                _ => return Err(e),
            }
        }
        return Ok(Some(if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            // Stopped or continued: not an end (we do not ask for those).
            return Ok(None);
        }));
    }
}

/// `pidfd_open(pid, PIDFD_NONBLOCK)`: a descriptor that becomes readable
/// when the child exits.
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: the system call takes two integers and returns a new
    // descriptor (close-on-exec by definition) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps the child behind `pidfd` if it has exited (`waitid(P_PIDFD, ...,
/// WEXITED | WNOHANG)`).
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_wait(pidfd: BorrowedFd<'_>) -> io::Result<Option<WaitStatus>> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`, which outlives the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(Some(WaitStatus::Unknown)),
                _ => return Err(e),
            }
        }
        // SAFETY: waitid succeeded, so the fields it sets are valid; a
        // zero pid means nothing has exited yet.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => WaitStatus::Exited(status),
            _ => WaitStatus::Signaled(status),
        }));
    }
}

/// Sends `signal` through a pidfd (no pid reuse race).
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: integers and a null siginfo, as the system call allows.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes back a child we started but cannot watch: if it is still our
/// child and running, kills it and waits for it; if it has exited, reaps
/// it; if it is not our child any more (reaped already, as when `SIGCHLD`
/// is ignored), leaves the number alone, since it may be someone else's
/// by now. (`WNOWAIT` looks without reaping: while the child is running
/// or a zombie, its pid cannot be reused, so the kill that follows hits
/// it; only a child reaped by the system in between, with `SIGCHLD`
/// ignored, escapes this.)
pub(crate) fn reclaim(pid: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`, which outlives the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: not ours (any more).
            return;
        }
        // SAFETY: waitid succeeded; a zero pid means still running.
        if unsafe { info.si_pid() } == 0 {
            let _ = kill(pid, libc::SIGKILL);
        }
        break;
    }
    // SAFETY: waitpid on our own child, killed or exited.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

/// `kill(pid, signal)`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    check(unsafe { libc::kill(pid, signal) }).map(|_| ())
}

/// Signal names without the `SIG` prefix, and their numbers here.
pub(crate) const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("SYS", libc::SIGSYS),
];

/// True if this process ignores `SIGPIPE` (Rust programs do by default:
/// the standard library sets it ignored before `main`).
pub(crate) fn sigpipe_ignored() -> bool {
    // SAFETY: with a null new action, sigaction only reads the current
    // one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Runs a write with `SIGPIPE` blocked on this thread, consuming the
/// `SIGPIPE` the write raised, if it raised one: a write to a pipe whose
/// reader is gone is an `EPIPE` error, never a signal. Only for processes
/// that do not ignore `SIGPIPE` (four more system calls per write).
pub(crate) fn without_sigpipe(write: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
    // SAFETY: signal-set manipulation on local sets; pthread_sigmask and
    // sigpending only read and write the sets they are given; sigtimedwait
    // with a zero timeout does not block.
    unsafe {
        let mut pipe_set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe_set);
        libc::sigaddset(&mut pipe_set, libc::SIGPIPE);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pending);
        libc::sigpending(&mut pending);
        let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe_set, &mut old);
        let result = write();
        if !was_pending && matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EPIPE)) {
            consume_sigpipe(&pipe_set);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
unsafe fn consume_sigpipe(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a zero timeout: returns at once, taking SIGPIPE if pending.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) };
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
unsafe fn consume_sigpipe(set: &libc::sigset_t) {
    // SAFETY: sigpending reads the pending set; sigwait returns at once
    // when the signal is pending, which is checked first.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pending);
        libc::sigpending(&mut pending);
        if libc::sigismember(&pending, libc::SIGPIPE) == 1 {
            let mut signal = 0;
            libc::sigwait(set, &mut signal);
        }
    }
}

/// A pseudo-terminal pair, both ends close-on-exec: `(master, slave)`.
///
/// On Linux both ends are opened with `O_CLOEXEC`, so a child forked on
/// another thread meanwhile never inherits them.
#[cfg(target_os = "linux")]
pub(crate) fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = check(unsafe { libc::posix_openpt(flags) })?;
    // SAFETY: a new descriptor owned by no one else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt and unlockpt take the master; ptsname_r writes a
    // NUL-terminated name of at most `name.len()` bytes.
    unsafe {
        check(libc::grantpt(master.as_raw_fd()))?;
        check(libc::unlockpt(master.as_raw_fd()))?;
        let r = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    // SAFETY: `name` is NUL-terminated (ptsname_r succeeded).
    let slave = check(unsafe { libc::open(name.as_ptr(), flags) })?;
    // SAFETY: a new descriptor owned by no one else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// A pseudo-terminal pair, both ends close-on-exec: `(master, slave)`.
///
/// `openpty` has no close-on-exec flag: the flag is set just after, so
/// a child forked on another thread in between could inherit the ends
/// (children started here are not affected: they close everything the
/// map does not name).
#[cfg(not(target_os = "linux"))]
pub(crate) fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes the two descriptors; null name, termios and
    // window size are allowed. (The BSDs and macOS declare the termios
    // and window size `*mut`, others `*const`: a null `*mut` fits both,
    // and nothing is written through a null pointer.)
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })?;
    // SAFETY: two new descriptors, owned by no one else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: plain fcntl on a descriptor we own.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    Ok((master, slave))
}

/// `/dev/null`, for reading and writing, close-on-exec.
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    Ok(File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// The fast way to start a child on glibc: `posix_spawnp`, which uses
/// `clone(CLONE_VM | CLONE_VFORK)` (no copy of our page tables, unlike the
/// `fork` that std's `pre_exec` needs), with file actions that put each
/// source on its target and then close every descriptor from 3 up
/// (`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34). Only for maps
/// whose targets are all below 3 and whose sources are all 3 or above (so
/// no action undoes another, and the close-from spares every target), the
/// inherited environment, and no change of user, group or terminal.
///
/// Returns `None` where the C library lacks the functions (looked up at
/// run time, so older libraries still link); the caller then forks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) mod spawn {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::sync::OnceLock;

    use super::FdMove;

    type CloseFrom =
        unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;
    type Chdir = unsafe extern "C" fn(
        *mut libc::posix_spawn_file_actions_t,
        *const libc::c_char,
    ) -> libc::c_int;

    fn lookup(name: &CStr) -> usize {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
        // looks the symbol up.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    }

    fn functions() -> (Option<CloseFrom>, Option<Chdir>) {
        static FOUND: OnceLock<(usize, usize)> = OnceLock::new();
        let &(close_from, chdir) = FOUND.get_or_init(|| {
            (
                lookup(c"posix_spawn_file_actions_addclosefrom_np"),
                lookup(c"posix_spawn_file_actions_addchdir_np"),
            )
        });
        // SAFETY: non-null addresses of these glibc functions, whose
        // signatures are the types above.
        unsafe {
            (
                (close_from != 0).then(|| std::mem::transmute::<usize, CloseFrom>(close_from)),
                (chdir != 0).then(|| std::mem::transmute::<usize, Chdir>(chdir)),
            )
        }
    }

    extern "C" {
        static environ: *const *mut libc::c_char;
    }

    fn check(r: libc::c_int) -> io::Result<()> {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }

    /// Starts the child, or `None` if this way cannot (see the module).
    pub(crate) fn try_spawn(
        program: &CStr,
        argv: &[CString],
        cwd: Option<&CStr>,
        moves: &[FdMove],
    ) -> Option<io::Result<libc::pid_t>> {
        if !moves
            .iter()
            .all(|m| m.target < 3 && (m.source < 0 || m.source >= 3))
        {
            return None;
        }
        let (Some(close_from), chdir) = functions() else {
            return None;
        };
        if cwd.is_some() && chdir.is_none() {
            return None;
        }
        let mut args: Vec<*mut libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr() as *mut libc::c_char)
            .collect();
        args.push(std::ptr::null_mut());
        // SAFETY: the file actions and attributes are initialised before
        // use and destroyed after; every pointer handed over (program,
        // arguments, directory, environment) outlives posix_spawnp, which
        // copies what it keeps; the environment is the process's own.
        unsafe {
            let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
            // Both return the error number (they do not set errno).
            if let Err(e) = check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr())) {
                return Some(Err(e));
            }
            let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
            if let Err(e) = check(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
                libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
                return Some(Err(e));
            }
            let result = (|| {
                let actions = actions.as_mut_ptr();
                let attr = attr.as_mut_ptr();
                for m in moves {
                    if m.source >= 0 {
                        check(libc::posix_spawn_file_actions_adddup2(
                            actions, m.source, m.target,
                        ))?;
                    } else {
                        check(libc::posix_spawn_file_actions_addclose(actions, m.target))?;
                    }
                }
                check(close_from(actions, 3))?;
                if let (Some(dir), Some(chdir)) = (cwd, chdir) {
                    check(chdir(actions, dir.as_ptr()))?;
                }
                // As std does: an empty signal mask, and SIGPIPE back to
                // its default (Rust programs ignore it).
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut mask);
                check(libc::posix_spawnattr_setsigmask(attr, &mask))?;
                let mut default: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut default);
                libc::sigaddset(&mut default, libc::SIGPIPE);
                check(libc::posix_spawnattr_setsigdefault(attr, &default))?;
                check(libc::posix_spawnattr_setflags(
                    attr,
                    (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
                ))?;
                let mut pid = 0;
                check(libc::posix_spawnp(
                    &mut pid,
                    program.as_ptr(),
                    actions,
                    attr,
                    args.as_ptr(),
                    environ,
                ))?;
                Ok(pid)
            })();
            libc::posix_spawnattr_destroy(attr.as_mut_ptr());
            libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
            Some(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by reclaim, not by std's handle
    fn reclaim_kills_a_running_child_and_leaves_a_reaped_pid_alone() {
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        reclaim(pid);
        // Killed and reaped.
        assert_eq!(wait_nohang(pid).unwrap(), Some(WaitStatus::Unknown));
        // Not our child any more: nothing is signalled, and it returns.
        reclaim(pid);
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        exited.wait().unwrap();
        reclaim(exited.id() as libc::pid_t);
    }
}
