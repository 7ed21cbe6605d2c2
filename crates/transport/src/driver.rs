//! The extension surface: how the layer above drives a transport from the
//! reactor, and what a new stream transport is built from.
//!
//! Applications do not need this module: protocols see a transport as a
//! [`TransportRef`](crate::TransportRef) and never call anything here.
//! It is for code that connects transports to the reactor (the protocol
//! layer's connection handlers) and for new kinds of stream transport (a
//! pipe, a serial port, TLS).
//!
//! # Driving a transport
//!
//! [`StreamTransport`] keeps what every stream transport shares (Twisted's
//! `abstract.py`): the write queue, flow control and producers, the
//! connection's phases and why it closed. Its [`Pipe`] moves the bytes and
//! owns the reactor registration, whose [`Handler`](torsion_reactor::Handler)
//! the driver supplies. The driver's part:
//!
//! 1. make the transport with its pipe ([`SocketTransport::accepted`] or
//!    [`SocketTransport::connecting`] for a socket, [`StreamTransport::new`]
//!    for any pipe), building the handler from the new transport;
//! 2. in [`Handler::ready`](torsion_reactor::Handler::ready), call
//!    [`StreamTransport::process`] with the readiness, passing on the
//!    bytes it reads, and act on the [`Progress`] it returns: a connect
//!    that finished or failed, or a close to report to the protocol
//!    (the transport has already stopped its producer);
//! 3. after each `process`, hand the protocol the
//!    [`HalfCloseEvents`] from [`StreamTransport::take_half_close_events`];
//! 4. in [`Handler::shutdown`](torsion_reactor::Handler::shutdown), call
//!    [`StreamTransport::close_for_shutdown`] and report the reason it
//!    returns.
//!
//! Everything a transport is asked from elsewhere (a close from another
//! connection's callback, a producer to ask for more) it finishes inside
//! `process`, waking its own handler through the pipe when needed; so
//! the protocol hears each event from its own handler, once.
//!
//! # A new stream transport
//!
//! Implement [`Pipe`] for the medium and build a
//! `StreamTransport<YourPipe>`: it implements
//! [`Transport`](crate::Transport) with the same write path, back-pressure,
//! producers, half-close and close reasons as the socket transport. Here,
//! a transport over a standard library Unix stream:
//!
//! ```
//! use std::cell::RefCell;
//! use std::io::{self, IoSlice, Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::rc::Rc;
//!
//! use torsion_reactor::{Handler, Interest, Reactor, Readiness, Registration};
//! use torsion_transport::driver::{Opening, Pipe, Progress, StreamTransport};
//! use torsion_transport::{Address, Transport};
//!
//! /// The pipe: a registered, non-blocking Unix stream.
//! struct Stream(Registration<UnixStream>);
//!
//! impl Pipe for Stream {
//!     fn send(&self, data: &[u8]) -> io::Result<usize> {
//!         self.0.get_ref().write(data)
//!     }
//!     fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
//!         self.0.get_ref().write_vectored(data)
//!     }
//!     fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
//!         self.0.get_ref().read(buf)
//!     }
//!     fn shutdown_write(&self) -> io::Result<()> {
//!         self.0.get_ref().shutdown(std::net::Shutdown::Write)
//!     }
//!     fn take_error(&self) -> io::Result<Option<io::Error>> {
//!         self.0.get_ref().take_error()
//!     }
//!     fn set_interest(&self, interest: Interest) -> io::Result<()> {
//!         self.0.set_interest(interest)
//!     }
//!     fn wake(&self) {
//!         self.0.wake();
//!     }
//! }
//!
//! /// The driver: keeps what the transport reads; stops the reactor when
//! /// the connection closes.
//! struct Drive {
//!     transport: Rc<StreamTransport<Stream>>,
//!     read: Rc<RefCell<Vec<u8>>>,
//! }
//!
//! impl Handler for Drive {
//!     fn ready(&self, reactor: &Reactor, readiness: Readiness) {
//!         let progress = self.transport.process(readiness, &mut |data| {
//!             self.read.borrow_mut().extend_from_slice(data);
//!         });
//!         if let Progress::Closed(reason) = progress {
//!             assert!(reason.is_clean(), "{reason}");
//!             reactor.stop().unwrap();
//!         }
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let (ours, theirs) = UnixStream::pair()?;
//! ours.set_nonblocking(true)?;
//! let read = Rc::new(RefCell::new(Vec::new()));
//! let transport = StreamTransport::new(&reactor, Address::Unknown, Opening::Open, |transport, interest| {
//!     let drive = Rc::new(Drive { transport: transport.clone(), read: read.clone() });
//!     Ok(Stream(reactor.register(ours, interest, drive)?))
//! })?;
//!
//! transport.write(b"hello");
//! // The peer answers and ends its stream: the transport reads the answer,
//! // then closes (ClosedByPeer).
//! let mut peer = theirs;
//! let mut greeting = [0; 5];
//! peer.read_exact(&mut greeting)?;
//! peer.write_all(b"hi there")?;
//! drop(peer);
//! reactor.run()?;
//! assert_eq!(&greeting, b"hello");
//! assert_eq!(*read.borrow(), b"hi there");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use crate::socket::SocketTransport;
pub use crate::stream::{HalfCloseEvents, Opening, Pipe, Progress, StreamTransport};
/// The reactor's counters, for a transport or listener of its own to
/// count what it does (see `docs/observability.md`).
pub use torsion_reactor::{AcceptErrorKind, CloseKind, Counters};
