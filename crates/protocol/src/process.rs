//! Child processes on a reactor (Twisted's `IReactorProcess` and
//! `ProcessProtocol`): the [`ProcessProtocol`] contract, and
//! [`ReactorProcess::spawn_process`].

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use torsion_transport::process::{ProcessEvents, ProcessOptions, ProcessReason, ProcessTransport};
use torsion_transport::reactor::{panic_message, Reactor};
use torsion_transport::{CloseReason, Transport};

/// A child process as its protocol sees it: write to its standard input,
/// signal it, close its pipes (Twisted's `IProcessTransport`).
pub type ProcessTransportRef = Rc<ProcessTransport>;

/// The handler of one child process's events (Twisted's
/// `ProcessProtocol`).
///
/// Called on the reactor's thread, never re-entrantly, in this order:
///
/// 1. [`make_connection`](ProcessProtocol::make_connection) once, from
///    inside `spawn_process` (the child is started);
/// 2. [`child_data_received`](ProcessProtocol::child_data_received) for
///    what the child writes on each descriptor we read (by default passed
///    on to [`out_received`](ProcessProtocol::out_received) and
///    [`err_received`](ProcessProtocol::err_received)), and
///    [`child_connection_lost`](ProcessProtocol::child_connection_lost)
///    once for each pipe as it closes (by default passed on to
///    `in_`/`out_`/`err_connection_lost`);
/// 3. [`process_exited`](ProcessProtocol::process_exited) when the child
///    is reaped — whether its pipes are closed or not (a grandchild may
///    keep them open);
/// 4. [`process_ended`](ProcessProtocol::process_ended) last, once the
///    child is reaped **and** every pipe is closed; then the protocol is
///    dropped.
///
/// Steps 2 and 3 interleave as the events come. A panic in any of these
/// methods is caught and logged: every pipe to that child is closed at
/// once (the child is not signalled), and the protocol still hears
/// `process_exited` and `process_ended`.
///
/// If the reactor shuts down first, every pipe closes and the protocol
/// hears `child_connection_lost` once for each, whatever order the
/// reactor shuts its sources down in. A child that has exited is still
/// reported (`process_exited`, then `process_ended`); one that runs on
/// is left running (not signalled, not waited for): its protocol hears
/// neither and is dropped after its last `child_connection_lost`.
#[doc(alias = "IProcessProtocol")]
pub trait ProcessProtocol: 'static {
    /// Binds the protocol to its process (Twisted's `makeConnection`);
    /// the default calls [`ProcessProtocol::connection_made`].
    #[doc(alias = "makeConnection")]
    fn make_connection(&mut self, transport: &ProcessTransportRef) {
        self.connection_made(transport);
    }

    /// The child is started (Twisted's `connectionMade`). Writing to its
    /// standard input here is fine.
    #[doc(alias = "connectionMade")]
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        let _ = transport;
    }

    /// The child wrote `data` on its descriptor `fd` (Twisted's
    /// `childDataReceived`). The default passes descriptor 1 to
    /// [`ProcessProtocol::out_received`] and 2 to
    /// [`ProcessProtocol::err_received`].
    #[doc(alias = "childDataReceived")]
    fn child_data_received(&mut self, transport: &ProcessTransportRef, fd: RawFd, data: &[u8]) {
        match fd {
            1 => self.out_received(transport, data),
            2 => self.err_received(transport, data),
            _ => {}
        }
    }

    /// The child wrote on its standard output (Twisted's `outReceived`).
    #[doc(alias = "outReceived")]
    fn out_received(&mut self, transport: &ProcessTransportRef, data: &[u8]) {
        let _ = (transport, data);
    }

    /// The child wrote on its standard error (Twisted's `errReceived`).
    #[doc(alias = "errReceived")]
    fn err_received(&mut self, transport: &ProcessTransportRef, data: &[u8]) {
        let _ = (transport, data);
    }

    /// Our pipe to or from the child's descriptor `fd` is closed
    /// (Twisted's `childConnectionLost`): the child closed its end (or
    /// exited), or we closed ours. `reason` says which: a child that
    /// closed its standard input shows as `EPIPE`. The default passes 0,
    /// 1 and 2 to [`in_connection_lost`](ProcessProtocol::in_connection_lost),
    /// [`out_connection_lost`](ProcessProtocol::out_connection_lost) and
    /// [`err_connection_lost`](ProcessProtocol::err_connection_lost).
    #[doc(alias = "childConnectionLost")]
    fn child_connection_lost(
        &mut self,
        transport: &ProcessTransportRef,
        fd: RawFd,
        reason: &CloseReason,
    ) {
        let _ = reason;
        match fd {
            0 => self.in_connection_lost(transport),
            1 => self.out_connection_lost(transport),
            2 => self.err_connection_lost(transport),
            _ => {}
        }
    }

    /// The child's standard input is closed (Twisted's
    /// `inConnectionLost`).
    #[doc(alias = "inConnectionLost")]
    fn in_connection_lost(&mut self, transport: &ProcessTransportRef) {
        let _ = transport;
    }

    /// The child's standard output is closed (Twisted's
    /// `outConnectionLost`).
    #[doc(alias = "outConnectionLost")]
    fn out_connection_lost(&mut self, transport: &ProcessTransportRef) {
        let _ = transport;
    }

    /// The child's standard error is closed (Twisted's
    /// `errConnectionLost`).
    #[doc(alias = "errConnectionLost")]
    fn err_connection_lost(&mut self, transport: &ProcessTransportRef) {
        let _ = transport;
    }

    /// The child was reaped (Twisted's `processExited`); its pipes may
    /// still be open. [`ProcessTransport::pid`] is `None` from now on.
    #[doc(alias = "processExited")]
    fn process_exited(&mut self, transport: &ProcessTransportRef, reason: ProcessReason) {
        let _ = (transport, reason);
    }

    /// The child was reaped and every pipe is closed (Twisted's
    /// `processEnded`): the last event.
    #[doc(alias = "processEnded")]
    fn process_ended(&mut self, reason: ProcessReason) {
        let _ = reason;
    }
}

impl<P: ProcessProtocol + ?Sized> ProcessProtocol for Box<P> {
    fn make_connection(&mut self, transport: &ProcessTransportRef) {
        (**self).make_connection(transport);
    }
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        (**self).connection_made(transport);
    }
    fn child_data_received(&mut self, transport: &ProcessTransportRef, fd: RawFd, data: &[u8]) {
        (**self).child_data_received(transport, fd, data);
    }
    fn out_received(&mut self, transport: &ProcessTransportRef, data: &[u8]) {
        (**self).out_received(transport, data);
    }
    fn err_received(&mut self, transport: &ProcessTransportRef, data: &[u8]) {
        (**self).err_received(transport, data);
    }
    fn child_connection_lost(
        &mut self,
        transport: &ProcessTransportRef,
        fd: RawFd,
        reason: &CloseReason,
    ) {
        (**self).child_connection_lost(transport, fd, reason);
    }
    fn in_connection_lost(&mut self, transport: &ProcessTransportRef) {
        (**self).in_connection_lost(transport);
    }
    fn out_connection_lost(&mut self, transport: &ProcessTransportRef) {
        (**self).out_connection_lost(transport);
    }
    fn err_connection_lost(&mut self, transport: &ProcessTransportRef) {
        (**self).err_connection_lost(transport);
    }
    fn process_exited(&mut self, transport: &ProcessTransportRef, reason: ProcessReason) {
        (**self).process_exited(transport, reason);
    }
    fn process_ended(&mut self, reason: ProcessReason) {
        (**self).process_ended(reason);
    }
}

/// Running child processes on a [`Reactor`] (Twisted's
/// `IReactorProcess`).
#[doc(alias = "IReactorProcess")]
pub trait ReactorProcess {
    /// Starts `program` with `args` and runs `protocol` over it
    /// (Twisted's `spawnProcess`). `args` does not include the program
    /// name (the child gets `program` as `argv[0]`, unlike Twisted's
    /// `args`); `program` is looked up in `PATH` if it has no slash.
    /// By default the child inherits our environment and working
    /// directory and has pipes on 0, 1 and 2: see [`ProcessOptions`].
    ///
    /// Returns the process transport, which the protocol has already
    /// seen in `make_connection`.
    ///
    /// # Errors
    /// If the child cannot be started (program not found or not
    /// executable, no such working directory, a descriptor to inherit
    /// that is not open, out of descriptors or processes): the
    /// `io::Error` keeps the system's kind and names the program. The
    /// protocol is then dropped without hearing anything.
    #[doc(alias = "spawnProcess")]
    fn spawn_process<P, I, S>(
        &self,
        protocol: P,
        program: impl AsRef<OsStr>,
        args: I,
        options: ProcessOptions,
    ) -> io::Result<ProcessTransportRef>
    where
        P: ProcessProtocol,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>;
}

impl ReactorProcess for Reactor {
    fn spawn_process<P, I, S>(
        &self,
        protocol: P,
        program: impl AsRef<OsStr>,
        args: I,
        options: ProcessOptions,
    ) -> io::Result<ProcessTransportRef>
    where
        P: ProcessProtocol,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let driver = Rc::new(ProcessDriver {
            protocol: Cell::new(None),
        });
        let events = driver.clone();
        let transport = ProcessTransport::spawn(self, program, args, &options, move |_| events)?;
        driver.protocol.set(Some(protocol));
        tracing::debug!(pid = ?transport.pid(), "process started");
        driver.call(&transport, "make_connection", |protocol| {
            protocol.make_connection(&transport);
        });
        Ok(transport)
    }
}

/// Turns a process's events into protocol calls, isolating panics.
struct ProcessDriver<P> {
    protocol: Cell<Option<P>>,
}

impl<P: ProcessProtocol> ProcessDriver<P> {
    fn call(&self, transport: &ProcessTransportRef, what: &str, f: impl FnOnce(&mut P)) {
        let Some(mut protocol) = self.protocol.take() else {
            return;
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(&mut protocol)));
        self.protocol.set(Some(protocol));
        if let Err(payload) = result {
            tracing::error!(
                pid = ?transport.pid(),
                panic = panic_message(&*payload),
                "process protocol panicked in {what}; closing its pipes"
            );
            transport.abort_connection();
        }
    }
}

impl<P: ProcessProtocol> ProcessEvents for ProcessDriver<P> {
    fn child_data(&self, process: &Rc<ProcessTransport>, fd: RawFd, data: &[u8]) {
        self.call(process, "child_data_received", |protocol| {
            protocol.child_data_received(process, fd, data);
        });
    }

    fn child_closed(&self, process: &Rc<ProcessTransport>, fd: RawFd, reason: &CloseReason) {
        self.call(process, "child_connection_lost", |protocol| {
            protocol.child_connection_lost(process, fd, reason);
        });
    }

    fn exited(&self, process: &Rc<ProcessTransport>, reason: ProcessReason) {
        tracing::debug!(%reason, "process exited");
        self.call(process, "process_exited", |protocol| {
            protocol.process_exited(process, reason);
        });
    }

    fn ended(&self, reason: ProcessReason) {
        let Some(mut protocol) = self.protocol.take() else {
            return;
        };
        if let Err(payload) =
            panic::catch_unwind(AssertUnwindSafe(|| protocol.process_ended(reason)))
        {
            tracing::error!(
                panic = panic_message(&*payload),
                "process protocol panicked in process_ended"
            );
        }
    }
}
