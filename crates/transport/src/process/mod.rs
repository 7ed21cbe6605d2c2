//! Child processes as transports (Twisted's `Process` and
//! `IProcessTransport`): spawning with a descriptor map, a stream
//! transport per pipe, and reaping.
//!
//! Applications use this through the protocol layer
//! (`reactor.spawn_process(protocol, program, args, options)` with a
//! `ProcessProtocol`); this module is the mechanism, and reports a
//! child's events to a [`ProcessEvents`] that the layer above supplies.
//!
//! # Reaping
//! On Linux each child gets a pidfd (`pidfd_open`), registered with the
//! reactor like a socket: it becomes readable when the child exits, and
//! `waitid(P_PIDFD, ...)` reaps that child and no other. The pidfd is then
//! removed from the reactor (it stays readable for ever). No signal
//! handler is involved, nothing is taken from other code that runs
//! children, and a reactor hears only its own children. Where pidfds are
//! missing (`ENOSYS`, `EPERM` under some seccomp filters, other systems)
//! a `SIGCHLD` handler wakes each reactor that has children, which asks
//! `waitpid(pid, WNOHANG)` for each of its own children (never
//! `waitpid(-1)`).
//!
//! # Descriptors
//! With the default map the child starts with `posix_spawnp` where glibc
//! has what it needs. Otherwise std's `Command` forks, and a `pre_exec`
//! step applies the descriptor map with `fcntl` and `dup2` only (no
//! allocation between fork and exec), after marking every other
//! descriptor close-on-exec, then sets ids and directory and executes
//! the program itself, reporting a failure on an error pipe of its own
//! that no map target can overwrite: no descriptor of ours reaches the
//! child unless the map names it, and a failed exec is always an error.

mod options;
mod pipe;
mod sigchld;

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::rc::Rc;

use bytes::Bytes;
use torsion_reactor::{Handler, Reactor, Readiness, WeakReactor};
#[cfg(target_os = "linux")]
use torsion_reactor::{Interest, Registration};

pub use self::options::{ChildFd, IntoSignal, ProcessOptions, ProcessReason, Signal, SignalError};
pub use self::pipe::{ChildPipe, ChildPipeTransport, Direction};
#[doc(hidden)]
pub use self::sigchld::force_sigchld_fallback;
use crate::address::Address;
use crate::reason::CloseReason;
use crate::stream::{Opening, Progress, StreamTransport};
use crate::sys::process as sys;
use crate::transport::{Producer, Transport};

/// What a child process reports, to the layer above (which turns these
/// into `ProcessProtocol` events and keeps a panicking protocol from
/// taking the reactor down). Called on the reactor's thread, never
/// re-entrantly: every event comes from a handler the reactor dispatches
/// (a pipe's, the pidfd's, the `SIGCHLD` watcher's) or from its shutdown,
/// never from inside a call the protocol makes. That rests on the stream
/// transport deferring every close it is asked for (`lose_connection`,
/// `abort_connection`, `close_child_fd` only note it and wake the pipe,
/// which reports on its next dispatch), on writes never reporting a
/// failure at once (it is reported the same way), and on reaping only
/// from those handlers.
pub trait ProcessEvents {
    /// The child wrote `data` on its descriptor `fd`.
    fn child_data(&self, process: &Rc<ProcessTransport>, fd: RawFd, data: &[u8]);
    /// Our pipe to or from the child's descriptor `fd` is closed.
    fn child_closed(&self, process: &Rc<ProcessTransport>, fd: RawFd, reason: &CloseReason);
    /// The child was reaped.
    fn exited(&self, process: &Rc<ProcessTransport>, reason: ProcessReason);
    /// The child was reaped and every pipe is closed; the last event.
    fn ended(&self, reason: ProcessReason);
}

/// How this child is reaped.
enum Reaper {
    /// Not watched: reaped already, or left at the reactor's shutdown.
    None,
    /// A pidfd registered with the reactor.
    #[cfg(target_os = "linux")]
    Pidfd(Registration<OwnedFd>),
    /// A kqueue process filter registered with the reactor (macOS, the
    /// BSDs); the child is reaped with `waitpid` when it fires.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    Kqueue {
        /// Held for its `Drop`, which removes the filter.
        _filter: torsion_reactor::ProcessRegistration,
    },
    /// The `SIGCHLD` fallback: the reactor's watcher asks for this pid.
    Sigchld,
}

struct Entry {
    fd: RawFd,
    direction: Direction,
    transport: Rc<ChildPipeTransport>,
}

/// A running child process and the pipes to it (Twisted's
/// `IProcessTransport`).
///
/// It is a [`Transport`] too: [`Transport::write`] writes to the child's
/// standard input (with the ordinary write queue, watermarks and
/// producers), [`Transport::lose_connection`] closes every pipe,
/// [`Transport::pause_reading`] stops reading everything the child writes
/// (Twisted's `pauseProducing`), so a child that writes faster than we
/// handle blocks instead of growing our memory.
#[doc(alias = "IProcessTransport")]
pub struct ProcessTransport {
    pid: Cell<Option<u32>>,
    entries: RefCell<Vec<Entry>>,
    reaper: RefCell<Reaper>,
    exit: Cell<Option<ProcessReason>>,
    /// Left running at the reactor's shutdown: no exit will be reported;
    /// the events go once the last pipe is reported closed.
    abandoned: Cell<bool>,
    events: RefCell<Option<Rc<dyn ProcessEvents>>>,
    reactor: WeakReactor,
}

impl fmt::Debug for ProcessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTransport")
            .field("pid", &self.pid.get())
            .field(
                "pipes",
                &self
                    .entries
                    .borrow()
                    .iter()
                    .map(|e| e.fd)
                    .collect::<Vec<_>>(),
            )
            .field("exit", &self.exit.get())
            .finish()
    }
}

/// Drives one pipe of a child.
struct PipeHandler {
    process: Rc<ProcessTransport>,
    fd: RawFd,
    transport: Rc<ChildPipeTransport>,
}

impl Handler for PipeHandler {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let progress = self.transport.process(readiness, &mut |data| {
            if let Some(events) = self.process.events() {
                events.child_data(&self.process, self.fd, data);
            }
        });
        if let Progress::Closed(reason) = progress {
            self.process.pipe_closed(&self.transport, &reason);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(reason) = self.transport.close_for_shutdown() {
            self.process.pipe_closed(&self.transport, &reason);
        }
    }
}

/// Reaps through the pidfd.
#[cfg(target_os = "linux")]
struct PidfdHandler(Rc<ProcessTransport>);

#[cfg(target_os = "linux")]
impl Handler for PidfdHandler {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        self.0.poll_pidfd();
    }

    fn shutdown(&self, _reactor: &Reactor) {
        // A child that has exited is still reported; one that runs on is
        // left running (not killed, not waited for).
        if !self.0.poll_pidfd() {
            self.0.abandon();
        }
    }
}

/// Reaps when the kqueue process filter reports the exit.
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
struct KqueueHandler(Rc<ProcessTransport>);

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
impl Handler for KqueueHandler {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        if !self.0.poll_kqueue() && readiness.is_readable() {
            // The filter fired (once) but the child is not waitable yet:
            // FreeBSD posts NOTE_EXIT before the process becomes a zombie.
            // SIGCHLD comes after that; let its watcher finish the job.
            self.0.reap_on_sigchld(reactor);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        // As for a pidfd: an exited child is reported, a running one left.
        if !self.0.poll_kqueue() {
            self.0.abandon();
        }
    }
}

impl ProcessTransport {
    /// Starts `program` with `args` (not counting the program name, which
    /// the child gets as `argv[0]`; `program` is looked up in `PATH` if it
    /// has no slash) as `options` say, registers its pipes and its reaping
    /// with `reactor`, and reports its events to what `make_events`
    /// returns.
    ///
    /// # Errors
    /// If the child cannot be started: the program is not found or not
    /// executable, the working directory does not exist, a descriptor to
    /// inherit is not open, the system is out of descriptors or
    /// processes. The error keeps the system's kind and says what failed.
    pub fn spawn<I, S>(
        reactor: &Reactor,
        program: impl AsRef<OsStr>,
        args: I,
        options: &ProcessOptions,
        make_events: impl FnOnce(&Rc<ProcessTransport>) -> Rc<dyn ProcessEvents>,
    ) -> io::Result<Rc<ProcessTransport>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let context = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot run {}: {what}{e}", program.to_string_lossy()),
            )
        };
        if let Some(dir) = &options.cwd {
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(context(
                        &format!("working directory {}: ", dir.display()),
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ))
                }
                Err(e) => {
                    return Err(context(
                        &format!("working directory {}: ", dir.display()),
                        e,
                    ))
                }
            }
        }
        let plan = Plan::new(options).map_err(|e| context("", e))?;

        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let pid = match Self::spawn_fast(program, &args, options, &plan) {
            Some(result) => result,
            None => Self::spawn_forked(program, &args, options, &plan),
        }
        .map_err(|e| context("", e))?;
        // The child's ends are the child's now.
        let Plan { ours, theirs, .. } = plan;
        drop(theirs);

        let guard_sigpipe = !sys::sigpipe_ignored();
        let process = Rc::new(ProcessTransport {
            pid: Cell::new(Some(pid)),
            entries: RefCell::new(Vec::new()),
            reaper: RefCell::new(Reaper::None),
            exit: Cell::new(None),
            abandoned: Cell::new(false),
            events: RefCell::new(None),
            reactor: reactor.downgrade(),
        });
        *process.events.borrow_mut() = Some(make_events(&process));
        let attached = process.attach(reactor, ours, guard_sigpipe);
        if let Err(e) = attached {
            // Half made: stop the child and take it back.
            process.abandon();
            drop(process.events.take());
            for entry in process.entries.take() {
                entry.transport.abort_connection();
            }
            // Killed only while it is provably still our child.
            sys::reclaim(pid as libc::pid_t);
            return Err(context("", e));
        }
        Ok(process)
    }

    /// `posix_spawnp` where it can do what `options` ask (see
    /// `sys::process::spawn`); `None` otherwise.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn spawn_fast(
        program: &OsStr,
        args: &[std::ffi::OsString],
        options: &ProcessOptions,
        plan: &Plan,
    ) -> Option<io::Result<u32>> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        if options.use_pty
            || options.uid.is_some()
            || options.gid.is_some()
            || options.env_clear
            || !options.env.is_empty()
        {
            return None;
        }
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument")
            })
        };
        let strings = (|| {
            let program = c(program)?;
            let mut argv = vec![program.clone()];
            for arg in args {
                argv.push(c(arg)?);
            }
            let cwd = match &options.cwd {
                Some(dir) => Some(c(dir.as_os_str())?),
                None => None,
            };
            Ok::<_, io::Error>((program, argv, cwd))
        })();
        let (program, argv, cwd) = match strings {
            Ok(strings) => strings,
            Err(e) => return Some(Err(e)),
        };
        sys::spawn::try_spawn(&program, &argv, cwd.as_deref(), &plan.moves)
            .map(|result| result.map(|pid| pid as u32))
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn spawn_fast(
        _program: &OsStr,
        _args: &[std::ffi::OsString],
        _options: &ProcessOptions,
        _plan: &Plan,
    ) -> Option<io::Result<u32>> {
        None
    }

    /// std's `Command` for the fork (and the reset of the signal mask and
    /// of `SIGPIPE`), with everything after it done by our own `pre_exec`
    /// step, exec included (see `sys::process::ChildExec`): a failure in
    /// the child comes back on an error pipe of ours that no map target
    /// can overwrite.
    fn spawn_forked(
        program: &OsStr,
        args: &[std::ffi::OsString],
        options: &ProcessOptions,
        plan: &Plan,
    ) -> io::Result<u32> {
        let (report_read, report_write) = sys::pipe()?;
        let mut exec = child_exec(program, args, options, plan, report_write.as_raw_fd())?;
        let mut command = Command::new(program);
        // Standard descriptors are left alone by std and set by the map.
        command
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only async-signal-safe system calls (fcntl, dup2, close,
        // close_range, setsid, ioctl, getrlimit, setgroups, setgid,
        // setuid, chdir, execve, write, _exit) on memory allocated before
        // the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || exec.run());
        }
        let child = command.spawn()?;
        // The child has its copy; ours must go for the read to end.
        drop(report_write);
        let pid = child.id();
        if let Some((step, e)) = sys::read_child_report(&report_read) {
            // The child has exited (or is about to): take it back.
            // SAFETY: waitpid on our own child, which has not been reaped
            // (ECHILD if the system reaped it, with SIGCHLD ignored).
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
        }
        // std's handle does nothing when dropped: we reap the child.
        Ok(pid)
    }

    fn attach(
        self: &Rc<Self>,
        reactor: &Reactor,
        ours: Vec<(RawFd, Direction, OwnedFd)>,
        guard_sigpipe: bool,
    ) -> io::Result<()> {
        for (fd, direction, end) in ours {
            sys::set_nonblocking_fresh(end.as_fd())?;
            let file = File::from(end);
            let transport = StreamTransport::new(
                reactor,
                Address::Unknown,
                Opening::Open,
                |transport, interest| {
                    let handler = Rc::new(PipeHandler {
                        process: self.clone(),
                        fd: if direction == Direction::Both { 1 } else { fd },
                        transport: transport.clone(),
                    });
                    let registration = reactor.register(file, interest, handler)?;
                    Ok(ChildPipe::new(registration, direction, guard_sigpipe))
                },
            )?;
            let mut entries = self.entries.borrow_mut();
            if direction == Direction::Both {
                // A terminal: one stream, the child's 0 and 1 (and 2).
                entries.push(Entry {
                    fd: 0,
                    direction,
                    transport: transport.clone(),
                });
                entries.push(Entry {
                    fd: 1,
                    direction,
                    transport,
                });
            } else {
                entries.push(Entry {
                    fd,
                    direction,
                    transport,
                });
            }
        }
        self.watch(reactor)
    }

    /// Starts watching for the child's exit.
    fn watch(self: &Rc<Self>, reactor: &Reactor) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if !sigchld::forced() {
            let pid = self.pid.get().unwrap_or_default() as libc::pid_t;
            // Any failure (ENOSYS on old kernels, EPERM under seccomp, out
            // of descriptors, a registration refused) falls back to the
            // SIGCHLD watcher for this child: it did start, and is ours to
            // reap.
            match sys::pidfd_open(pid).and_then(|pidfd| {
                reactor.register(
                    pidfd,
                    Interest::READABLE,
                    Rc::new(PidfdHandler(self.clone())),
                )
            }) {
                Ok(registration) => {
                    *self.reaper.borrow_mut() = Reaper::Pidfd(registration);
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, "no pidfd; reaping on SIGCHLD"),
            }
        }
        #[cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        ))]
        if !sigchld::forced() {
            if let Some(pid) = self
                .pid
                .get()
                .and_then(|pid| std::num::NonZeroI32::new(pid as libc::pid_t))
            {
                let handler = Rc::new(KqueueHandler(self.clone()));
                // SAFETY: `pid` is our child, just started and not reaped:
                // only this transport reaps it, and only after the filter
                // fired or was dropped with the reaper.
                let registered = unsafe { reactor.register_process_exit(pid, handler) };
                match registered {
                    Ok(registration) => {
                        // A first look in this turn (not now: the protocol
                        // has not been told of the process yet), for a
                        // child that exited before the filter was added,
                        // which not every system reports.
                        registration.wake();
                        *self.reaper.borrow_mut() = Reaper::Kqueue {
                            _filter: registration,
                        };
                        return Ok(());
                    }
                    // ESRCH for a child already exited (a zombie), or any
                    // other refusal: the SIGCHLD watcher asks waitpid.
                    Err(e) => tracing::debug!(error = %e, "no process filter; reaping on SIGCHLD"),
                }
            }
        }
        let watcher = sigchld::Watcher::for_reactor(reactor)?;
        *self.reaper.borrow_mut() = Reaper::Sigchld;
        watcher.add(self);
        Ok(())
    }

    /// Reaps through the pidfd if the child has exited; true if it is
    /// reaped (now or before).
    #[cfg(target_os = "linux")]
    fn poll_pidfd(self: &Rc<Self>) -> bool {
        let result = match &*self.reaper.borrow() {
            Reaper::Pidfd(registration) => {
                match sys::pidfd_wait(registration.get_ref().as_fd()) {
                    // Linux 5.3 has pidfd_open but not waitid(P_PIDFD):
                    // the pidfd still says when, waitpid reaps this child.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match self.pid.get() {
                        Some(pid) => sys::wait_nohang(pid as libc::pid_t),
                        None => Ok(Some(sys::WaitStatus::Unknown)),
                    },
                    result => result,
                }
            }
            _ => return self.exit.get().is_some(),
        };
        self.settle_wait(result)
    }

    /// Ends a wait for the child: `Ok(None)` is "not yet"; a status, or
    /// an error (nothing sensible is left to wait for, and waiting again
    /// would spin), reaps it: the reaper leaves the reactor (a reaped
    /// pidfd stays readable), outside any borrow, and the exit is
    /// reported. True if reaped.
    fn settle_wait(self: &Rc<Self>, result: io::Result<Option<sys::WaitStatus>>) -> bool {
        let status = match result {
            Ok(None) => return false,
            Ok(Some(status)) => status,
            Err(e) => {
                tracing::warn!(error = %e, pid = ?self.pid.get(), "cannot reap a child");
                sys::WaitStatus::Unknown
            }
        };
        let reaper = self.reaper.replace(Reaper::None);
        drop(reaper);
        self.reaped(status);
        true
    }

    /// Reaps the child if it has exited (the process filter fired, or the
    /// reactor shuts down); true if it is reaped (now or before).
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    fn poll_kqueue(self: &Rc<Self>) -> bool {
        if !matches!(&*self.reaper.borrow(), Reaper::Kqueue { .. }) {
            return self.exit.get().is_some();
        }
        let Some(pid) = self.pid.get() else {
            return true;
        };
        self.settle_wait(sys::wait_nohang(pid as libc::pid_t))
    }

    /// Moves a child whose process filter has fired to the `SIGCHLD`
    /// watcher.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    fn reap_on_sigchld(self: &Rc<Self>, reactor: &Reactor) {
        let reaper = self.reaper.replace(Reaper::None);
        drop(reaper);
        match sigchld::Watcher::for_reactor(reactor) {
            Ok(watcher) => {
                *self.reaper.borrow_mut() = Reaper::Sigchld;
                watcher.add(self);
            }
            Err(e) => {
                tracing::warn!(error = %e, pid = ?self.pid.get(), "cannot watch a child any more");
                self.abandon();
            }
        }
    }

    /// The `SIGCHLD` fallback's question: reaps the child if it has
    /// exited; true if it is reaped.
    fn poll_sigchld(self: &Rc<Self>) -> bool {
        if !matches!(&*self.reaper.borrow(), Reaper::Sigchld) {
            return true;
        }
        let Some(pid) = self.pid.get() else {
            return true;
        };
        let status = match sys::wait_nohang(pid as libc::pid_t) {
            Ok(None) => return false,
            Ok(Some(status)) => status,
            Err(e) => {
                tracing::warn!(error = %e, pid, "cannot reap a child");
                sys::WaitStatus::Unknown
            }
        };
        *self.reaper.borrow_mut() = Reaper::None;
        self.reaped(status);
        true
    }

    fn reaped(self: &Rc<Self>, status: sys::WaitStatus) {
        let reason = ProcessReason::from_status(status);
        self.pid.set(None);
        self.exit.set(Some(reason));
        tracing::debug!(%reason, "child reaped");
        if let Some(events) = self.events() {
            events.exited(self, reason);
        }
        self.maybe_end();
    }

    /// Stops watching a child that is left running (at the reactor's
    /// shutdown). Its pipes may not have been shut down yet (handlers shut
    /// down in the reactor's order, not ours): each is still reported as it
    /// closes, and the protocol is forgotten after the last (no exit will
    /// come, so no end either).
    fn abandon(&self) {
        let reaper = self.reaper.replace(Reaper::None);
        // Dropped outside the borrow: a pidfd's registration or a process
        // filter ends here.
        drop(reaper);
        self.abandoned.set(true);
        self.maybe_end();
    }

    fn events(&self) -> Option<Rc<dyn ProcessEvents>> {
        self.events.borrow().clone()
    }

    fn pipe_closed(self: &Rc<Self>, transport: &Rc<ChildPipeTransport>, reason: &CloseReason) {
        let fds: Vec<RawFd> = {
            let mut entries = self.entries.borrow_mut();
            let fds = entries
                .iter()
                .filter(|e| Rc::ptr_eq(&e.transport, transport))
                .map(|e| e.fd)
                .collect();
            entries.retain(|e| !Rc::ptr_eq(&e.transport, transport));
            fds
        };
        if let Some(events) = self.events() {
            for fd in fds {
                events.child_closed(self, fd, reason);
            }
        }
        self.maybe_end();
    }

    fn maybe_end(&self) {
        if !self.entries.borrow().is_empty() {
            return;
        }
        match self.exit.get() {
            Some(reason) => {
                let events = self.events.take();
                if let Some(events) = events {
                    events.ended(reason);
                }
            }
            // Nothing more to report: the protocol goes.
            None if self.abandoned.get() => drop(self.events.take()),
            None => {}
        }
    }

    fn entry(&self, fd: RawFd) -> Option<Rc<ChildPipeTransport>> {
        self.entries
            .borrow()
            .iter()
            .find(|e| e.fd == fd)
            .map(|e| e.transport.clone())
    }

    fn each(&self, mut f: impl FnMut(&Entry)) {
        let entries: Vec<Entry> = self
            .entries
            .borrow()
            .iter()
            .map(|e| Entry {
                fd: e.fd,
                direction: e.direction,
                transport: e.transport.clone(),
            })
            .collect();
        for entry in &entries {
            f(entry);
        }
    }

    /// Pauses or resumes reading every pipe the child writes. A stream
    /// transport's pause and resume only note the change (they never
    /// call back here), so the entries stay borrowed: no allocation.
    fn reading(&self, on: bool) {
        for entry in self.entries.borrow().iter() {
            if entry.direction != Direction::ToChild {
                if on {
                    entry.transport.resume_reading();
                } else {
                    entry.transport.pause_reading();
                }
            }
        }
    }

    /// The child's process id, until it is reaped (Twisted's `pid`, which
    /// becomes `None`); after that the number may belong to another
    /// process.
    pub fn pid(&self) -> Option<u32> {
        self.pid.get()
    }

    /// How the child ended, once it is reaped.
    pub fn exit_reason(&self) -> Option<ProcessReason> {
        self.exit.get()
    }

    /// The child's descriptors we still have a pipe to, in map order.
    pub fn open_child_fds(&self) -> Vec<RawFd> {
        self.entries.borrow().iter().map(|e| e.fd).collect()
    }

    /// Writes `data` to the child's descriptor `fd` (Twisted's
    /// `writeToChild`); ignored if we have no open pipe to it.
    #[doc(alias = "writeToChild")]
    pub fn write_to_child(&self, fd: RawFd, data: &[u8]) {
        if let Some(transport) = self.entry(fd) {
            transport.write(data);
        }
    }

    /// Closes our pipe to or from the child's descriptor `fd` (Twisted's
    /// `closeChildFD`), after sending what is queued for it; the protocol
    /// hears `child_connection_lost(fd)`.
    #[doc(alias = "closeChildFD")]
    pub fn close_child_fd(&self, fd: RawFd) {
        if let Some(transport) = self.entry(fd) {
            transport.lose_connection();
        }
    }

    /// Closes the child's standard input once what is queued for it is
    /// written (Twisted's `closeStdin`): the child reads end of file.
    #[doc(alias = "closeStdin")]
    pub fn close_stdin(&self) {
        self.close_child_fd(0);
    }

    /// Closes our end of the child's standard output (Twisted's
    /// `closeStdout`).
    #[doc(alias = "closeStdout")]
    pub fn close_stdout(&self) {
        self.close_child_fd(1);
    }

    /// Closes our end of the child's standard error (Twisted's
    /// `closeStderr`).
    #[doc(alias = "closeStderr")]
    pub fn close_stderr(&self) {
        self.close_child_fd(2);
    }

    /// Sends a signal to the child (Twisted's `signalProcess`): a
    /// [`Signal`], a number, or a name such as `"TERM"`, `"KILL"`, `"INT"`
    /// (with or without `SIG`).
    ///
    /// # Errors
    /// [`SignalError::ProcessExitedAlready`] once the child has been
    /// reaped; [`SignalError::UnknownSignal`] for a name that is not a
    /// signal; [`SignalError::Os`] if the system refuses.
    #[doc(alias = "signalProcess")]
    pub fn signal_process(&self, signal: impl IntoSignal) -> Result<(), SignalError> {
        let signal = signal.into_signal()?;
        let Some(pid) = self.pid.get() else {
            return Err(SignalError::ProcessExitedAlready);
        };
        #[cfg(target_os = "linux")]
        if let Reaper::Pidfd(registration) = &*self.reaper.borrow() {
            return sys::pidfd_send_signal(registration.get_ref().as_fd(), signal.0)
                .map_err(SignalError::Os);
        }
        // Not reaped yet, so the pid is still this child's.
        sys::kill(pid as libc::pid_t, signal.0).map_err(SignalError::Os)
    }
}

impl Transport for ProcessTransport {
    fn write(&self, data: &[u8]) {
        self.write_to_child(0, data);
    }

    fn write_bytes(&self, data: Bytes) {
        if let Some(transport) = self.entry(0) {
            transport.write_bytes(data);
        }
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        if let Some(transport) = self.entry(0) {
            transport.write_sequence(data);
        }
    }

    /// Closes every pipe, each after sending what is queued for it
    /// (Twisted's `loseConnection`). The child is not signalled.
    fn lose_connection(&self) {
        self.each(|e| e.transport.lose_connection());
    }

    /// Closes every pipe now, discarding what is queued.
    fn abort_connection(&self) {
        self.each(|e| e.transport.abort_connection());
    }

    fn get_peer(&self) -> Address {
        Address::Unknown
    }

    fn get_host(&self) -> Address {
        Address::Unknown
    }

    fn get_write_buffer_size(&self) -> usize {
        self.entry(0).map_or(0, |t| t.get_write_buffer_size())
    }

    fn is_closing(&self) -> bool {
        self.entry(0).is_none_or(|t| t.is_closing())
    }

    /// Closes the child's standard input ([`ProcessTransport::close_stdin`]).
    fn lose_write_connection(&self) {
        self.close_stdin();
    }

    fn pause_reading(&self) {
        self.reading(false);
    }

    fn resume_reading(&self) {
        self.reading(true);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()> {
        match self.entry(0) {
            Some(transport) => transport.register_producer(producer, streaming),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the child's standard input is closed",
            )),
        }
    }

    fn unregister_producer(&self) {
        if let Some(transport) = self.entry(0) {
            transport.unregister_producer();
        }
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.each(|e| e.transport.set_write_buffer_limits(high, low));
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }
}

/// The descriptor map, made in the parent before the fork.
struct Plan {
    moves: Vec<sys::FdMove>,
    /// Our ends of the pipes: (child fd, direction, descriptor).
    ours: Vec<(RawFd, Direction, OwnedFd)>,
    /// What the child gets, held open across the spawn, closed after.
    theirs: Vec<OwnedFd>,
}

impl Plan {
    fn new(options: &ProcessOptions) -> io::Result<Plan> {
        let mut plan = Plan {
            moves: Vec::new(),
            ours: Vec::new(),
            theirs: Vec::new(),
        };
        if options.use_pty {
            let (master, slave) = sys::openpty()?;
            for target in 0..3 {
                plan.moves.push(sys::FdMove {
                    target,
                    source: slave.as_raw_fd(),
                });
            }
            plan.theirs.push(slave);
            plan.ours.push((0, Direction::Both, master));
        }
        for (&target, &what) in &options.child_fds {
            if target < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no child descriptor {target}"),
                ));
            }
            if options.use_pty && target < 3 {
                continue;
            }
            let source = match what {
                ChildFd::FromChild => {
                    let (read, write) = sys::pipe()?;
                    let source = write.as_raw_fd();
                    plan.ours.push((target, Direction::FromChild, read));
                    plan.theirs.push(write);
                    source
                }
                ChildFd::ToChild => {
                    let (read, write) = sys::pipe()?;
                    let source = read.as_raw_fd();
                    plan.ours.push((target, Direction::ToChild, write));
                    plan.theirs.push(read);
                    source
                }
                ChildFd::Inherit(fd) => {
                    sys::check_open(fd).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("descriptor {fd} to give the child as {target}: {e}"),
                        )
                    })?;
                    fd
                }
                ChildFd::Null => {
                    let null = sys::dev_null()?;
                    let source = null.as_raw_fd();
                    plan.theirs.push(null);
                    source
                }
            };
            plan.moves.push(sys::FdMove { target, source });
        }
        // Standard descriptors not in the map are closed in the child.
        if !options.use_pty {
            for target in 0..3 {
                if !options.child_fds.contains_key(&target) {
                    plan.moves.push(sys::FdMove { target, source: -1 });
                }
            }
        }
        Ok(plan)
    }
}

/// What the child does between fork and exec, prepared here (see
/// `sys::process::ChildExec`): the environment built as `options` say,
/// the program looked up in the child's `PATH` (as `execvp` would, with
/// its default path when `PATH` is unset), the ids and directory.
fn child_exec(
    program: &OsStr,
    args: &[std::ffi::OsString],
    options: &ProcessOptions,
    plan: &Plan,
    report: RawFd,
) -> io::Result<sys::ChildExec> {
    use std::ffi::{CString, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let c = |s: &[u8]| {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
    };
    // The environment, in the order std would give it.
    let mut env: Vec<(OsString, OsString)> = if options.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in &options.env {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    let mut candidates = Vec::new();
    if program.as_bytes().contains(&b'/') {
        candidates.push(c(program.as_bytes())?);
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(b"/bin:/usr/bin".to_vec(), |(_, v)| v.as_bytes().to_vec());
        for dir in path.split(|&b| b == b':') {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            candidates.push(c(&full)?);
        }
    }
    let mut strings = vec![c(program.as_bytes())?, c(b"/bin/sh")?];
    for arg in args {
        strings.push(c(arg.as_bytes())?);
    }
    let args_end = strings.len();
    for (k, v) in env {
        let mut pair = k.into_vec();
        pair.push(b'=');
        pair.extend_from_slice(v.as_bytes());
        strings.push(c(&pair)?);
    }
    let null = std::ptr::null::<libc::c_char>();
    let mut argv = vec![strings[0].as_ptr()];
    argv.extend(strings[2..args_end].iter().map(|s| s.as_ptr()));
    argv.push(null);
    let mut sh_argv = vec![strings[1].as_ptr(), null];
    sh_argv.extend(strings[2..args_end].iter().map(|s| s.as_ptr()));
    sh_argv.push(null);
    let mut envp: Vec<_> = strings[args_end..].iter().map(|s| s.as_ptr()).collect();
    envp.push(null);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let groups = if root {
        supplementary_groups(options.uid, options.gid)?
    } else {
        None
    };
    Ok(sys::ChildExec {
        moves: plan.moves.clone(),
        scratch: vec![-1; plan.moves.len()],
        pty: options.use_pty,
        groups,
        gid: options.gid,
        uid: options.uid,
        cwd: match &options.cwd {
            Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
            None => None,
        },
        candidates,
        _strings: strings,
        argv,
        sh_argv,
        envp,
        report,
    })
}

/// The element type of `getgrouplist`'s list: Apple's libc declares it
/// (and the base group) as `int`, everyone else as `gid_t`. The same
/// 32 bits either way: a group id above `i32::MAX` goes through Apple's
/// `int` bit for bit, as Apple's own callers do.
#[cfg(target_vendor = "apple")]
type GroupListEntry = libc::c_int;
#[cfg(not(target_vendor = "apple"))]
type GroupListEntry = libc::gid_t;

/// The child's supplementary groups when we run as root and it changes
/// identity (`None`: left as ours):
/// - a user: that user's groups, as `initgroups` gives them (the groups
///   that list it in the group database, and the child's group: `gid`,
///   or the user's own primary group), as Twisted does; a user missing
///   from the database gets only `gid`, if given;
/// - a group alone: just that group (our own supplementary groups, root's,
///   are not passed on).
///
/// Looked up here, in the parent: the group database cannot be read
/// between fork and exec.
fn supplementary_groups(
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<Option<Vec<libc::gid_t>>> {
    let Some(uid) = uid else {
        return Ok(gid.map(|gid| vec![gid]));
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: passwd is plain data that getpwuid_r fills in, with its
        // strings in `buf`, which outlives their use below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as above; `found` is set to `&mut pwd` or null.
        let r = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if r != 0 || found.is_null() {
            return Ok(Some(gid.into_iter().collect()));
        }
        let base = gid.unwrap_or(pwd.pw_gid);
        let mut groups: Vec<GroupListEntry> = vec![0; 64];
        loop {
            let mut count = groups.len() as libc::c_int;
            // SAFETY: getgrouplist writes at most `count` groups and
            // sets `count` to how many there are.
            let r = unsafe {
                libc::getgrouplist(
                    pwd.pw_name,
                    base as GroupListEntry,
                    groups.as_mut_ptr(),
                    &mut count,
                )
            };
            if r >= 0 {
                groups.truncate(count.max(0) as usize);
                return Ok(Some(groups.into_iter().map(|g| g as libc::gid_t).collect()));
            }
            if count as usize <= groups.len() || groups.len() >= 1 << 16 {
                return Ok(Some(vec![base]));
            }
            groups.resize(count as usize, 0);
        }
    }
}
