//! # torsion-protocol
//!
//! The third layer of Torsion: protocols and factories, in the shape of
//! Twisted's `twisted.internet.protocol`.
//!
//! - A [`Protocol`] handles one connection's events: `connection_made`,
//!   `data_received`, `connection_lost`. It writes through the
//!   [`Transport`] it is handed.
//! - A [`Factory`] builds a protocol per connection and keeps what outlives
//!   connections; a [`ClientFactory`] also hears how outgoing attempts end.
//! - [`ReactorTcp`] adds Twisted's calls to the reactor:
//!   `reactor.listen_tcp(8000, factory)` returns a [`ListeningPort`],
//!   `reactor.connect_tcp(host, port, factory, timeout)` a [`Connector`].
//! - [`ReactorProcess`] runs child processes:
//!   `reactor.spawn_process(protocol, program, args, options)` drives a
//!   [`ProcessProtocol`] (Twisted's `spawnProcess`).
//! - [`SerialPort::open`] runs a protocol over a serial device (Twisted's
//!   `SerialPort`).
//!
//! This layer owns the *meaning* of events: it turns the readiness the
//! transport layer reports into protocol callbacks, and isolates panics so
//! that one failing protocol costs one connection. It re-exports what
//! protocols need from the layers below ([`Reactor`], [`Transport`],
//! [`CloseReason`], ...), so an application depends on this crate alone.
//!
//! ```no_run
//! use torsion_protocol::{Address, Factory, Protocol, Reactor, ReactorTcp, TransportRef};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! struct EchoFactory;
//! impl Factory for EchoFactory {
//!     type Protocol = Echo;
//!     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
//!         Some(Echo)
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! reactor.listen_tcp(8000, EchoFactory)?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/protocol.md` in the repository for the design.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![cfg(unix)]

mod adopt;
pub mod basic;
mod connecting;
mod connection;
mod connector;
mod datagram;
pub mod endpoints;
mod factory;
pub mod policies;
mod port;
mod process;
mod protocol;
mod reconnecting;
mod serial;
mod stdio;
pub mod stream;
mod tcp;
pub mod testing;
mod udp;
mod unix;

// What applications use from the layers below, each at one path: the
// crate root. Code that implements a new transport or I/O handler depends
// on `torsion-transport` (and its `reactor` module) directly.
pub use torsion_transport::inotify::{FsEvent, FsMask, INotify, WatchOptions};
#[doc(hidden)]
pub use torsion_transport::process::force_sigchld_fallback;
pub use torsion_transport::process::{
    ChildFd, IntoSignal, ProcessOptions, ProcessReason, ProcessTransport, Signal, SignalError,
};
pub use torsion_transport::reactor::{
    DelayedCall, LoopingCall, LoopingCallError, ManualClock, Phase, Reactor, ReactorClosed,
    ReactorError, ReactorHandle, SystemEvent, TimerError, TriggerId, WeakReactor,
};
// Counters (see `docs/observability.md`).
pub use torsion_transport::reactor::{AcceptErrorCounts, CloseCounts, ReactorStats};
// Tasks, futures and Deferreds (see `docs/async.md`).
pub use torsion_transport::reactor::{
    deferred_list, first_success, gather_results, AlreadyCalledError, CancelledError, Deferred,
    DeferredList, FirstError, FirstSuccess, GatherResults, JoinHandle, RunError, Sleep, TaskError,
    ThreadWork, TimedOut, Timeout, MAX_TASK_POLLS_PER_TURN,
};
pub use torsion_transport::serial::{
    DataBits, HungUp, ModemLines, Parity, RefusedSetting, SerialControl, SerialSettings, StopBits,
    UnsupportedSettings,
};
pub use torsion_transport::{
    socket2, Address, Bytes, CloseReason, ConnectError, DatagramTransport, DatagramTransportRef,
    Keepalive, PeerCredentials, Producer, ReadThrottle, Transport, TransportRef,
    DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_DATAGRAM,
};

pub use crate::adopt::ReactorSocket;
pub use crate::connector::{Connector, ConnectorState, Destination, DEFAULT_CONNECT_TIMEOUT};
pub use crate::datagram::DatagramProtocol;
pub use crate::factory::{ClientFactory, Factory, SharedFactory};
pub use crate::port::ListeningPort;
pub use crate::process::{ProcessProtocol, ProcessTransportRef, ReactorProcess};
pub use crate::protocol::Protocol;
pub use crate::reconnecting::ReconnectingClientFactory;
pub use crate::serial::SerialPort;
pub use crate::stdio::StandardIo;
pub use crate::stream::{
    AsyncStream, Connect, Connected, ProtocolClient, ReactorAsync, StreamClient, StreamListener,
};
pub use crate::tcp::{ListenOptions, ReactorTcp};
pub use crate::udp::{ReactorUdp, UdpOptions};
pub use crate::unix::{ReactorUnix, UnixListenOptions};

/// The crate's `README.md` (what crates.io shows), compiled as a doctest
/// so its example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
