//! A protocol over our own standard input and output (Twisted's
//! `StandardIO`).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use torsion_transport::driver::Progress;
use torsion_transport::reactor::{panic_message, Handler, Reactor, Readiness};
use torsion_transport::stdio::StdioTransport;
use torsion_transport::{CloseReason, Transport, TransportRef};

use crate::protocol::Protocol;

/// Runs a [`Protocol`] over this program's standard input (what it
/// receives) and standard output (what it writes): Twisted's
/// `StandardIO`.
///
/// The protocol sees an ordinary [`TransportRef`]: writes are queued and
/// flow-controlled as on a socket; `lose_write_connection` closes our
/// standard output (the reader sees its end) while reading goes on; the
/// end of standard input is the peer's end of stream (a half-closeable
/// protocol hears `read_connection_lost`, any other is closed once its
/// writes are out, then hears `connection_lost`).
///
/// Standard input may be a pipe, a terminal, a socket, a regular file or
/// `/dev/null`; the descriptors shared with the shell are never made
/// non-blocking (on Linux pipes and terminals are re-opened through
/// `/proc/self/fd`; files are read as they are, in order, to their end).
/// See `docs/process.md`.
///
/// ```no_run
/// use torsion_protocol::{Protocol, Reactor, StandardIo, TransportRef};
///
/// /// Writes back what it reads.
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let _stdio = StandardIo::new(&reactor, Echo)?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "StandardIO")]
pub struct StandardIo {
    transport: Rc<StdioTransport>,
}

impl StandardIo {
    /// Runs `protocol` over descriptors 0 and 1; it hears
    /// `make_connection` before this returns.
    ///
    /// # Errors
    /// If a descriptor is closed or cannot be watched.
    pub fn new<P: Protocol>(reactor: &Reactor, protocol: P) -> io::Result<StandardIo> {
        StandardIo::with_fds(reactor, protocol, 0, Some(1))
    }

    /// As [`StandardIo::new`], reading `input` and writing `output`
    /// (Twisted's `stdin` and `stdout` arguments). Without an output,
    /// what the protocol writes is discarded (to read standard input
    /// only, leaving standard output to the rest of the program).
    ///
    /// # Errors
    /// As for [`StandardIo::new`].
    pub fn with_fds<P: Protocol>(
        reactor: &Reactor,
        protocol: P,
        input: RawFd,
        output: Option<RawFd>,
    ) -> io::Result<StandardIo> {
        let mut driver = None;
        let transport = StdioTransport::stdio(reactor, input, output, |transport| {
            let made = Rc::new(StdioDriver {
                transport,
                protocol: Cell::new(None),
            });
            driver = Some(made.clone());
            made
        })?;
        let driver = driver.expect("the handler was made");
        transport.set_half_closeable(protocol.half_closeable());
        driver.protocol.set(Some(protocol));
        driver.call("make_connection", |protocol, transport| {
            protocol.make_connection(transport);
        });
        Ok(StandardIo { transport })
    }

    /// The transport the protocol writes to.
    pub fn transport(&self) -> TransportRef {
        self.transport.clone()
    }
}

/// Drives the protocol (as the socket connections' driver does).
struct StdioDriver<P> {
    transport: Rc<StdioTransport>,
    protocol: Cell<Option<P>>,
}

impl<P: Protocol> StdioDriver<P> {
    fn call(&self, what: &str, f: impl FnOnce(&mut P, &TransportRef)) {
        let Some(mut protocol) = self.protocol.take() else {
            return;
        };
        let handle: TransportRef = self.transport.clone();
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(&mut protocol, &handle)));
        self.protocol.set(Some(protocol));
        if let Err(payload) = result {
            tracing::error!(
                panic = panic_message(&*payload),
                "standard I/O protocol panicked in {what}; closing"
            );
            self.transport.abort_connection();
        }
    }

    fn lost(&self, reason: &CloseReason) {
        self.call("connection_lost", |protocol, _| {
            protocol.connection_lost(reason)
        });
        drop(self.protocol.take());
    }
}

impl<P: Protocol> Handler for StdioDriver<P> {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let mut progress = self.transport.process(readiness, &mut |data| {
            self.call("data_received", |protocol, transport| {
                protocol.data_received(transport, data);
            });
        });
        loop {
            let events = self.transport.take_half_close_events();
            if !events.read_closed && !events.write_closed {
                break;
            }
            if events.read_closed {
                self.call("read_connection_lost", |protocol, transport| {
                    protocol.read_connection_lost(transport);
                });
            }
            if events.write_closed {
                self.call("write_connection_lost", |protocol, transport| {
                    protocol.write_connection_lost(transport);
                });
            }
            if let Progress::Pending = progress {
                progress = self.transport.process(Readiness::WOKEN, &mut |_| {});
            }
        }
        if let Progress::Closed(reason) = progress {
            self.lost(&reason);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(reason) = self.transport.close_for_shutdown() {
            self.lost(&reason);
        }
    }
}
