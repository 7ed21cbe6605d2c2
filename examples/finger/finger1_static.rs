//! Twisted's finger tutorial, step 1: a finger server that answers every
//! query with the same line (the tutorial's "drop connections" and "read
//! username, output error" steps).
//!
//! ```text
//! cargo run -p torsion-examples --example finger1_static [PORT]   # default 1079
//! printf 'moshez\r\n' | nc localhost 1079
//! ```
//!
//! It prints `finger: listening on port N` once it listens (port 0 picks a
//! free port). `docs/from-twisted.md` walks through the four steps.

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{Address, Factory, Reactor, ReactorTcp, TransportRef};

/// One finger query: a user name on a line, an answer, the end.
struct Finger;

impl LineHandler for Finger {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, _user: &[u8]) {
        lines.send_line(transport, b"No such user");
        transport.lose_connection();
    }
}

/// Builds a line receiver around a [`Finger`] per connection.
struct FingerFactory;

impl Factory for FingerFactory {
    type Protocol = LineReceiver<Finger>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Finger>> {
        Some(LineReceiver::new(Finger))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let port = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 1079,
    };
    let reactor = Reactor::new()?;
    let listening = reactor.listen_tcp(port, FingerFactory)?;
    println!(
        "finger: listening on port {}",
        listening.get_host().port().unwrap_or(port)
    );
    reactor.run()?;
    Ok(())
}
