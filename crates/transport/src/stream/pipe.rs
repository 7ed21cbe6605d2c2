//! The byte pipe under a stream transport: what a medium must provide.

use std::io::{self, IoSlice};

use torsion_reactor::Interest;

use crate::address::Address;
use crate::transport::{Keepalive, PeerCredentials};

/// The medium under a [`StreamTransport`](super::StreamTransport): a
/// connected socket, a pair of OS pipes, a serial port — any descriptor
/// whose readiness says when it can move bytes. (A medium with buffers
/// of its own that readiness does not reflect, such as a TLS session,
/// needs more than this trait says today: a way to report output or input
/// it holds.) The transport keeps the write queue, flow control, producers
/// and the connection's phases (Twisted's `abstract.FileDescriptor`); the
/// pipe moves bytes and watches for readiness (what `tcp.Connection` adds:
/// `writeSomeData`, the read in `doRead`, `_closeWriteConnection`).
///
/// A pipe owns its descriptors and their reactor registrations; dropping
/// it removes them from the reactor and closes them. Its methods are
/// called on the reactor's thread, must not block, and must not call back
/// into the transport. Results are passed on raw: the transport treats
/// `WouldBlock` as "nothing now" and retries `Interrupted`.
///
/// The socket pipe is [`Registration<Socket>`](torsion_reactor::Registration)
/// ([`SocketTransport`](crate::driver::SocketTransport)). The methods
/// with defaults describe what only some media have.
pub trait Pipe {
    /// Hands the medium as much of `data` as it takes now, and returns how
    /// much that was (Twisted's `writeSomeData`).
    ///
    /// # Errors
    /// `WouldBlock` if it takes nothing now; any other error fails the
    /// connection.
    fn send(&self, data: &[u8]) -> io::Result<usize>;

    /// As [`Pipe::send`], for several slices in order, in one call where
    /// the medium allows it (the write queue is flushed this way).
    ///
    /// # Errors
    /// As for [`Pipe::send`].
    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Reads what is available into `buf`; `Ok(0)` is the peer's end of
    /// stream.
    ///
    /// # Errors
    /// `WouldBlock` if nothing is available; any other error fails the
    /// connection.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Ends the writing direction: the peer reads end of stream, and
    /// reading goes on (a socket's `shutdown(SHUT_WR)`).
    ///
    /// # Errors
    /// If the medium refuses; the connection then fails.
    fn shutdown_write(&self) -> io::Result<()>;

    /// The error the medium holds, after the reactor reported
    /// [`Readiness::is_error`](torsion_reactor::Readiness::is_error) (a
    /// socket's `SO_ERROR`), cleared as it is taken; `None` if there is
    /// none (a read or write consumed it).
    ///
    /// # Errors
    /// If the error cannot be read; the connection then fails with that.
    fn take_error(&self) -> io::Result<Option<io::Error>>;

    /// Sets what the reactor watches for. The transport calls this
    /// whenever its state changes; it should cost nothing when the
    /// interest is unchanged.
    ///
    /// # Errors
    /// If the reactor refuses; the connection then fails.
    fn set_interest(&self, interest: Interest) -> io::Result<()>;

    /// Asks the reactor to call the pipe's handler with
    /// [`Readiness::WOKEN`](torsion_reactor::Readiness::WOKEN) soon, so the
    /// handler calls [`StreamTransport::process`](super::StreamTransport::process)
    /// to finish what was asked from elsewhere (a close, a producer
    /// request).
    fn wake(&self);

    /// Finishes opening a pipe that was attached while still opening (a
    /// non-blocking connect); called on each readiness until it answers.
    /// The default says the pipe is open.
    ///
    /// # Errors
    /// `WouldBlock` while it is still opening; any other error means it
    /// failed (the transport then reports
    /// [`Progress::ConnectFailed`](super::Progress::ConnectFailed)).
    fn finish_connect(&self) -> io::Result<()> {
        Ok(())
    }

    /// Makes closing the pipe a reset rather than an orderly end, where
    /// the medium has one (a socket's `SO_LINGER` of zero); called before
    /// an aborted connection's pipe is dropped. The default does nothing.
    fn reset_on_close(&self) {}

    /// True if the reactor reports this pipe's readiness only when it
    /// arises, not again while it lasts (an edge-triggered registration:
    /// [`Reactor::register_edge`](torsion_reactor::Reactor::register_edge)).
    /// The transport then remembers a read it stopped before the pipe
    /// said it was drained (at its per-event bound, or because reading was
    /// paused meanwhile) and wakes itself to finish it once it reads
    /// again. It takes a read shorter than its buffer as "drained" unless
    /// the readiness also reported the end of stream, an error or urgent
    /// data: say true only for a medium whose short reads mean that (a TCP
    /// socket does; a Unix stream socket does not, since its read also
    /// stops after a message that carried descriptors). The default: false
    /// (what is left is reported again).
    fn edge_triggered(&self) -> bool {
        false
    }

    /// The address of this end
    /// ([`Transport::get_host`](crate::Transport::get_host)).
    ///
    /// # Errors
    /// `Unsupported` by default; otherwise the medium's error.
    fn local_address(&self) -> io::Result<Address> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// [`Transport::set_tcp_nodelay`](crate::Transport::set_tcp_nodelay).
    ///
    /// # Errors
    /// `Unsupported` by default; otherwise the medium's error.
    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let _ = nodelay;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// [`Transport::tcp_nodelay`](crate::Transport::tcp_nodelay).
    ///
    /// # Errors
    /// `Unsupported` by default; otherwise the medium's error.
    fn tcp_nodelay(&self) -> io::Result<bool> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// [`Transport::set_tcp_keepalive`](crate::Transport::set_tcp_keepalive).
    ///
    /// # Errors
    /// `Unsupported` by default; otherwise the medium's error.
    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        let _ = keepalive;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// [`Transport::peer_credentials`](crate::Transport::peer_credentials).
    ///
    /// # Errors
    /// `Unsupported` by default; otherwise the medium's error.
    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
