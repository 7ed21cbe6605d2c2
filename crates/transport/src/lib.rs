//! # torsion-transport
//!
//! The second layer of Torsion: transports, the byte pipes under every
//! protocol (Twisted's `ITransport` and its TCP implementation).
//!
//! - [`Transport`] is the contract protocols write to: ordered writes that
//!   are queued when the kernel is full, graceful
//!   [`lose_connection`](Transport::lose_connection), immediate
//!   [`abort_connection`](Transport::abort_connection), and the addresses
//!   of both ends.
//! - [`driver::StreamTransport`] implements it for every stream
//!   transport (Twisted's `abstract.py`): the write queue, flow control
//!   and producers, the connection's phases; it knows nothing about what
//!   the bytes mean. It is generic over the [`driver::Pipe`] that carries
//!   the bytes; [`driver::SocketTransport`] is one over a non-blocking
//!   stream socket registered with a [`Reactor`](reactor::Reactor)
//!   (Twisted's `tcp.py`). The [`driver`] module is the extension surface
//!   for the layer above, which drives a transport by calling
//!   [`process`](driver::StreamTransport::process) with each readiness
//!   event, and for new kinds of transport.
//! - [`net`] holds the socket mechanics shared by TCP and Unix sockets
//!   (accepting, connecting without blocking), [`tcp`] and [`unix`] what
//!   is specific to each (listening, resolving names, socket files); all
//!   built on `socket2`.
//! - [`process`] runs child processes as transports (Twisted's
//!   `IProcessTransport`): a stream transport per pipe, reaped through a
//!   pidfd on Linux; [`stdio`] is our own standard input and output as
//!   one (Twisted's `StandardIO`), never making the shared descriptions
//!   non-blocking.
//! - [`serial`] opens serial ports (terminal devices) as stream
//!   transports (Twisted's `SerialPort`), configured through termios.
//! - [`inotify`] reports filesystem events on the reactor (Twisted's
//!   `INotify`); not a byte pipe, but a descriptor of the same kind.
//! - [`CloseReason`] and [`ConnectError`] say why a connection ended or
//!   never began.
//!
//! This crate re-exports the reactor layer as [`reactor`] (one path per
//! item: `torsion_transport::reactor::Reactor`), so the layer above needs
//! only depend on this one.
//! See `docs/transport.md` in the repository for the design.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg(unix)]

mod address;
mod datagram;
pub mod driver;
pub mod inotify;
pub mod net;
pub mod process;
mod queue;
mod reason;
pub mod serial;
mod socket;
pub mod stdio;
mod stream;
mod sys;
pub mod tcp;
mod transport;
pub mod unix;

pub use bytes::Bytes;
pub use socket2;
pub use torsion_reactor as reactor;

pub use crate::address::Address;
pub use crate::datagram::{
    DatagramEvent, DatagramTransport, DatagramTransportRef, DEFAULT_MAX_DATAGRAM,
};
pub use crate::reason::{CloseReason, ConnectError};
pub use crate::stream::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, READ_BUFFER_SIZE};
pub use crate::transport::{
    Keepalive, PeerCredentials, Producer, ReadThrottle, Transport, TransportRef,
};

/// The crate's `README.md` (what crates.io shows), compiled as a doctest
/// so its example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
