//! # torsion-tls
//!
//! TLS for Torsion, on rustls, in the shape of Twisted's
//! `twisted.protocols.tls` and `IReactorSSL`.
//!
//! - [`TlsProtocol`] wraps any protocol and runs over any transport
//!   (TCP, Unix sockets, in-memory test transports, TLS itself): the inner
//!   protocol writes to a [`TlsTransport`] that encrypts, and never knows
//!   it is encrypted (Twisted's `TLSMemoryBIOProtocol`).
//! - [`ReactorTls`] adds `listen_tls` / `connect_tls` (and the Unix-socket
//!   equivalents) to the reactor (Twisted's `listenSSL` / `connectSSL`).
//! - [`ServerSettings`] and [`ClientSettings`] build rustls configurations
//!   from PEM files, with the ring crypto provider passed explicitly.
//! - [`TlsTransport::start_tls`] switches a plain connection to TLS
//!   (STARTTLS); [`TlsTransport::of`] reaches the negotiated details
//!   (ALPN, SNI, peer certificates, version, cipher suite) from a
//!   protocol's transport; [`Protocol::handshake_completed`](torsion_protocol::Protocol::handshake_completed)
//!   tells a protocol when the handshake is done.
//!
//! - [`endpoints`] parses Twisted's `ssl:` server and `tls:` client
//!   endpoint strings.
//!
//! See `docs/tls.md` in the repository for the design.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![cfg(unix)]

mod config;
mod connection;
pub mod endpoints;
mod reactor;

pub use config::{
    load_certificates, load_private_key, load_roots, provider, ClientSettings, ConfigError,
    ServerSettings,
};
pub use connection::{
    TlsProtocol, TlsRole, TlsTransport, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use reactor::{server_name, ReactorTls, TlsClientFactory, TlsServerFactory};
pub use rustls;
pub use rustls::pki_types;

/// The crate's `README.md` (what crates.io shows), compiled as a doctest
/// so its example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
