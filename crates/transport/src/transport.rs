//! The `Transport` contract.

use std::rc::Rc;

use bytes::Bytes;

use crate::address::Address;

/// One end of a connection, as a protocol sees it (Twisted's `ITransport`).
///
/// A transport moves bytes; it does not interpret them. Its methods take
/// `&self` and may be called from any callback on the reactor's thread: a
/// protocol's own events, a timer, or another connection's events (a chat
/// server writing to every user). They never block and never call back
/// into the protocol: whatever they cause (the connection closing, an
/// error) is reported later through the protocol's events.
///
/// # Contract
/// - **Writes are ordered and never lost while the connection is open.**
///   What the kernel does not take at once is queued and sent when the
///   socket is writable. Writes after [`Transport::lose_connection`] or
///   [`Transport::abort_connection`] are ignored.
/// - **[`Transport::lose_connection`] is graceful:** reading stops, every
///   queued byte is sent, then the connection closes and the protocol hears
///   `connection_lost` with a clean reason.
/// - **[`Transport::abort_connection`] is immediate:** queued bytes are
///   discarded and the peer gets a reset.
#[doc(alias = "ITransport")]
pub trait Transport {
    /// Sends `data`, in order after everything written before. Copies only
    /// the part the kernel does not accept at once.
    fn write(&self, data: &[u8]);

    /// Sends `data` without copying it: if it must be queued, the queue
    /// holds this `Bytes` itself.
    fn write_bytes(&self, data: Bytes) {
        self.write(&data);
    }

    /// Sends several buffers as one write, in order (Twisted's
    /// `writeSequence`); a socket transport hands them to the kernel in a
    /// single vectored system call.
    #[doc(alias = "writeSequence")]
    fn write_sequence(&self, data: &[&[u8]]);

    /// Closes the connection once every queued byte has been sent (Twisted's
    /// `loseConnection`). Reading stops at once. Calling it again, or after
    /// an abort, does nothing.
    #[doc(alias = "loseConnection")]
    fn lose_connection(&self);

    /// Closes the connection now, discarding queued data and resetting the
    /// connection (Twisted's `abortConnection`).
    #[doc(alias = "abortConnection")]
    fn abort_connection(&self);

    /// The address of the other end (Twisted's `getPeer`).
    #[doc(alias = "getPeer")]
    fn get_peer(&self) -> Address;

    /// The address of this end (Twisted's `getHost`).
    #[doc(alias = "getHost")]
    fn get_host(&self) -> Address;

    /// Bytes written but not yet handed to the kernel.
    fn get_write_buffer_size(&self) -> usize;

    /// True once the connection is closing or closed: after
    /// `lose_connection`, `abort_connection`, the peer's end of stream or a
    /// failure.
    fn is_closing(&self) -> bool;
}

/// A shared handle to a transport, as protocols hold it.
///
/// Clone it to let other code (a timer, another connection) write to or
/// close this connection.
pub type TransportRef = Rc<dyn Transport>;
