//! # torsion-echo
//!
//! The reference protocol of Torsion: the echo server and client of the
//! Twisted book's chapter 2, written against `torsion-protocol`.
//!
//! - [`Echo`] writes back whatever it receives; [`EchoFactory`] builds one
//!   per connection.
//! - [`EchoClient`] writes `Hello, world!` as soon as it connects, prints
//!   what the server answers as `Server said: ...`, and closes the
//!   connection. [`EchoClientFactory`] prints `Connection failed.` or
//!   `Connection lost.` when the connection fails or ends, and stops the
//!   reactor.
//!
//! Runnable programs are in the repository's `examples/`
//! (`echo_server.rs`, `echo_client.rs`); `docs/echo.md` walks through
//! them.
//!
//! ```no_run
//! use torsion_echo::EchoFactory;
//! use torsion_protocol::{Reactor, ReactorTcp};
//!
//! let reactor = Reactor::new()?;
//! reactor.listen_tcp(8000, EchoFactory)?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

use std::io::Write;

use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, Protocol, ReadThrottle,
    TransportRef,
};

/// The message the client sends.
pub const GREETING: &[u8] = b"Hello, world!";

/// The echo protocol: every byte received is written back.
///
/// It installs a [`ReadThrottle`] on its transport, so a peer that sends
/// without reading the echo cannot make the server buffer without bound:
/// once the write buffer passes its high watermark the server stops
/// reading from that peer until it drains.
#[derive(Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &TransportRef) {
        // Nothing else has registered a producer: this cannot fail.
        let _ = ReadThrottle::install(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

/// Builds an [`Echo`] for every connection.
#[derive(Debug, Default)]
pub struct EchoFactory;

impl Factory for EchoFactory {
    type Protocol = Echo;

    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
}

/// The echo client: greets the server, prints the first answer, hangs up.
#[derive(Debug, Default)]
pub struct EchoClient;

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.write(GREETING);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        say(&format!("Server said: {}", String::from_utf8_lossy(data)));
        transport.lose_connection();
    }
}

/// Builds the [`EchoClient`] and ends the program's reactor when its
/// connection fails or closes.
#[derive(Debug, Default)]
pub struct EchoClientFactory;

impl Factory for EchoClientFactory {
    type Protocol = EchoClient;

    fn build_protocol(&self, _peer: &Address) -> Option<EchoClient> {
        Some(EchoClient)
    }
}

impl ClientFactory for EchoClientFactory {
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        tracing::debug!(%reason, "connection failed");
        say("Connection failed.");
        stop(connector);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        tracing::debug!(%reason, "connection lost");
        say("Connection lost.");
        stop(connector);
    }
}

/// Prints a line of the book's output and flushes it, so it is seen even
/// when stdout is a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn stop(connector: &Connector) {
    if let Some(reactor) = connector.reactor() {
        // Already stopping is fine: there is nothing more to do.
        let _ = reactor.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use torsion_protocol::testing::ProtocolHarness;

    #[test]
    fn echo_throttles_reading_through_a_producer_where_there_is_no_built_in_throttle() {
        // The in-memory transport has no built-in throttle: `Echo` falls
        // back to a streaming `ReadThrottle` producer, which pauses reading.
        let mut harness = ProtocolHarness::new(Echo);
        let (producer, streaming) = harness.transport.producer().expect("a producer");
        assert!(streaming);
        producer.pause_producing();
        assert!(harness.transport.reading_paused());
        producer.resume_producing();
        assert!(!harness.transport.reading_paused());
        harness.receive(b"echo");
        assert_eq!(harness.transport.take_written(), b"echo");
    }
}

/// The crate's `README.md` (what crates.io shows), compiled as a doctest
/// so its example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
