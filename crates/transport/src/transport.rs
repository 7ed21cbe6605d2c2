//! The `Transport` contract.

use std::io;
use std::rc::Rc;
use std::time::Duration;

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
///   socket is writable. Writes after [`Transport::lose_connection`] (once
///   no producer is registered) or [`Transport::abort_connection`] are
///   ignored.
/// - **[`Transport::lose_connection`] is graceful:** reading stops, every
///   queued byte is sent, then the connection closes and the protocol hears
///   `connection_lost` with a clean reason. With a producer registered,
///   the connection first stays open, taking writes, until the producer is
///   unregistered (Twisted's contract).
/// - **[`Transport::abort_connection`] is immediate:** queued bytes are
///   discarded and the peer gets a reset.
/// - **A registered producer is stopped before the protocol hears the
///   close:** whatever ends the connection (an abort, the peer, an error,
///   the reactor's shutdown), [`Producer::stop_producing`] runs before the
///   protocol's `connection_lost`.
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
    ///
    /// With a producer registered, writes are still taken after this call
    /// (the producer may finish its work), and the close follows the rule
    /// of Twisted's implementation (`FileDescriptor.doWrite`): once
    /// everything queued has gone out, the connection closes — unless a
    /// *pull* producer is registered, which is asked for more until it
    /// unregisters, or a *streaming* producer is paused, which the drained
    /// queue resumes first. So a streaming producer that is never
    /// unregistered (a proxy whose other side went away) does not keep
    /// the connection open. [`Transport::is_closing`] is true meanwhile.
    #[doc(alias = "loseConnection")]
    fn lose_connection(&self);

    /// Closes the connection because the peer broke the protocol: as
    /// [`Transport::lose_connection`] (queued data, such as an error reply,
    /// is still sent), but the protocol hears
    /// [`CloseReason::ProtocolError`](crate::CloseReason::ProtocolError)
    /// with `fault`. Framing receivers use it
    /// for oversized or malformed frames.
    fn lose_connection_with_error(&self, fault: String) {
        let _ = fault;
        self.lose_connection();
    }

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

    /// Half-closes: sends everything queued, then shuts down the write side
    /// (the peer reads end of stream) while reading goes on (Twisted's
    /// `loseWriteConnection`). Later writes are ignored. A half-closeable
    /// protocol hears `write_connection_lost`.
    #[doc(alias = "loseWriteConnection")]
    fn lose_write_connection(&self);

    /// Stops reading until [`Transport::resume_reading`]: the kernel's
    /// buffers fill and TCP flow control slows the peer down (Twisted's
    /// `pauseProducing` on a transport).
    fn pause_reading(&self);

    /// Resumes reading after [`Transport::pause_reading`].
    fn resume_reading(&self);

    /// Registers the producer of what is written to this transport
    /// (Twisted's `registerProducer`).
    ///
    /// A *streaming* (push) producer writes on its own; it is paused with
    /// [`Producer::pause_producing`] when the write buffer goes above the
    /// high watermark and resumed when it falls back to the low one. A
    /// non-streaming (pull) producer writes only when asked through
    /// [`Producer::resume_producing`]: once at registration, then each time
    /// what it wrote has gone out, that is when a write goes to the kernel
    /// whole or a flush brings the buffer to the low watermark. That
    /// request comes after the write has returned (later in the
    /// transport's step, or on a later loop turn), never from inside it,
    /// so a producer that answers with a write is never re-entered.
    ///
    /// Either kind hears [`Producer::stop_producing`] when the connection
    /// closes, before the protocol hears `connection_lost`; a producer
    /// unregistered first is not stopped. A registered pull producer, or a
    /// paused streaming one, holds a [`Transport::lose_connection`] (and
    /// the close after the peer's end of stream) open until it unregisters
    /// or, for a streaming producer, until it is resumed and its output has
    /// gone out.
    /// Producer callbacks may run inside a call to `write`.
    ///
    /// # Errors
    /// `AlreadyExists` if a producer is registered already.
    #[doc(alias = "registerProducer")]
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()>;

    /// Drops the registered producer, if any (Twisted's
    /// `unregisterProducer`). If [`Transport::lose_connection`] was called
    /// meanwhile, the connection now sends what is queued and closes.
    #[doc(alias = "unregisterProducer")]
    fn unregister_producer(&self);

    /// Turns on the transport's built-in read throttle, if it has one, and
    /// says whether it did. While on, reading pauses whenever the write
    /// buffer is above its high watermark and resumes once it is at or
    /// below the low one: what registering a [`ReadThrottle`] does, with no
    /// producer object and no allocation, and leaving the producer slot
    /// free. Call [`ReadThrottle::install`] rather than this: it falls back
    /// to a `ReadThrottle` producer on transports without one (the
    /// default).
    fn enable_read_throttle(&self) -> bool {
        false
    }

    /// Sets the write buffer's high and low watermarks, in bytes (asyncio's
    /// `set_write_buffer_limits`). Defaults: 64 KiB and 16 KiB.
    fn set_write_buffer_limits(&self, high: usize, low: usize);

    /// The reactor this transport runs on, for scheduling timers from a
    /// protocol (`None` for transports without one, such as in-memory test
    /// transports, or once the reactor is gone).
    fn reactor(&self) -> Option<torsion_reactor::Reactor> {
        None
    }

    /// This transport as [`Any`](std::any::Any), for code that knows a
    /// concrete transport type and wants its extra features from a
    /// [`TransportRef`] (a TLS transport's negotiated details, through
    /// `torsion_tls::TlsTransport::of`). `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The identity of the process at the other end of a Unix socket
    /// (`SO_PEERCRED`), as of when it connected.
    ///
    /// # Errors
    /// `Unsupported` for transports that are not Unix sockets, or on
    /// platforms without the option.
    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Turns Nagle's algorithm off (`true`) or on.
    ///
    /// # Errors
    /// `Unsupported` for transports that are not TCP; the OS's error
    /// otherwise.
    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let _ = nodelay;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// True if Nagle's algorithm is off (`TCP_NODELAY`; Twisted's
    /// `getTcpNoDelay`). Torsion turns it off by default on the TCP
    /// connections it makes and accepts: writes are gathered per loop turn
    /// already, so Nagle's algorithm would only delay replies.
    ///
    /// # Errors
    /// As for [`Transport::set_tcp_nodelay`].
    #[doc(alias = "getTcpNoDelay")]
    fn tcp_nodelay(&self) -> io::Result<bool> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Turns TCP keep-alive probes on with the given timing, or off with
    /// `None`.
    ///
    /// # Errors
    /// As for [`Transport::set_tcp_nodelay`].
    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        let _ = keepalive;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// The producer side of flow control (Twisted's `IPushProducer` and
/// `IPullProducer`): something that writes to a transport and can be told
/// to pause, resume or stop. See [`Transport::register_producer`].
///
/// A panic in `pause_producing` or `resume_producing` costs the producer
/// its connection and nothing else: the transport catches it, logs it,
/// drops what is queued and closes the connection with
/// [`CloseReason::ProducerPanicked`](crate::CloseReason::ProducerPanicked)
/// (the producer still hears `stop_producing`). A panic in
/// `stop_producing` is caught and logged.
#[doc(alias = "IPushProducer")]
#[doc(alias = "IPullProducer")]
pub trait Producer {
    /// Stop writing for now: the consumer's buffer is full (push
    /// producers only).
    #[doc(alias = "pauseProducing")]
    fn pause_producing(&self) {}

    /// Write again (push producers), or write the next piece now (pull
    /// producers).
    #[doc(alias = "resumeProducing")]
    fn resume_producing(&self);

    /// Stop for good: the connection closed.
    #[doc(alias = "stopProducing")]
    fn stop_producing(&self) {}
}

/// A producer that throttles a transport's own reading: registered as the
/// streaming producer of the same transport, it pauses reading while the
/// peer is not taking what is written back (Twisted's idiom of registering
/// a transport as its own producer). An echo server stays bounded this way
/// however much a peer that never reads sends it.
///
/// [`ReadThrottle::install`] is the way to use it: socket transports then
/// throttle themselves without any producer object.
///
/// ```no_run
/// # use torsion_transport::{ReadThrottle, TransportRef};
/// # fn connection_made(transport: &TransportRef) {
/// ReadThrottle::install(transport).expect("no other producer");
/// # }
/// ```
pub struct ReadThrottle {
    transport: std::rc::Weak<dyn Transport>,
}

impl ReadThrottle {
    /// Throttles `transport`'s reading by its write buffer: through its
    /// built-in throttle where it has one
    /// ([`Transport::enable_read_throttle`]), otherwise by registering a
    /// `ReadThrottle` as its streaming producer.
    ///
    /// # Errors
    /// `AlreadyExists` if the fallback is needed and another producer is
    /// registered.
    pub fn install(transport: &TransportRef) -> io::Result<()> {
        if transport.enable_read_throttle() {
            return Ok(());
        }
        transport.register_producer(ReadThrottle::for_transport(transport), true)
    }

    /// A producer that pauses and resumes reading on `transport`. It holds
    /// the transport weakly, so registering it creates no cycle. It is a
    /// streaming producer: a [`Transport::lose_connection`] waits for it
    /// only while it is paused.
    pub fn for_transport(transport: &TransportRef) -> Rc<dyn Producer> {
        Rc::new(ReadThrottle {
            transport: Rc::downgrade(transport),
        })
    }
}

impl Producer for ReadThrottle {
    fn pause_producing(&self) {
        if let Some(transport) = self.transport.upgrade() {
            transport.pause_reading();
        }
    }

    fn resume_producing(&self) {
        if let Some(transport) = self.transport.upgrade() {
            transport.resume_reading();
        }
    }
}

/// TCP keep-alive timing for [`Transport::set_tcp_keepalive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes, where the platform allows setting it.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped, where the
    /// platform allows setting it.
    pub retries: Option<u32>,
}

impl Keepalive {
    pub(crate) fn to_socket2(self) -> socket2::TcpKeepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(self.idle);
        // Interval and retries can be set on these platforms only.
        #[cfg(any(
            target_os = "android",
            target_os = "freebsd",
            target_os = "linux",
            target_os = "macos",
            target_os = "ios",
            target_os = "netbsd",
        ))]
        let keepalive = {
            let keepalive = match self.interval {
                Some(interval) => keepalive.with_interval(interval),
                None => keepalive,
            };
            match self.retries {
                Some(retries) => keepalive.with_retries(retries),
                None => keepalive,
            }
        };
        keepalive
    }
}

/// A shared handle to a transport, as protocols hold it.
///
/// Clone it to let other code (a timer, another connection) write to or
/// close this connection.
pub type TransportRef = Rc<dyn Transport>;

/// The process at the other end of a Unix socket, from
/// [`Transport::peer_credentials`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}
