//! A protocol over our own standard input and output (Twisted's
//! `StandardIO`).

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use torsion_transport::reactor::Reactor;
use torsion_transport::stdio::StdioTransport;
use torsion_transport::TransportRef;

use crate::connection::{Driver, StreamConnection};
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
        let mut connection = None;
        let transport = StdioTransport::stdio(reactor, input, output, |transport| {
            let made = Rc::new(StreamConnection {
                driver: Driver::new(transport),
            });
            connection = Some(made.clone());
            made
        })?;
        connection
            .expect("the handler was made")
            .driver
            .attach(protocol);
        Ok(StandardIo { transport })
    }

    /// The transport the protocol writes to.
    pub fn transport(&self) -> TransportRef {
        self.transport.clone()
    }
}
