//! The echo server of the Twisted book's example 2-1, on Torsion.
//!
//! ```text
//! cargo run --example echo_server [PORT]     # default 8000
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use torsion_echo::torsion_protocol::{Reactor, ReactorTcp};
use torsion_echo::EchoFactory;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let port = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 8000,
    };
    let reactor = Reactor::new()?;
    reactor.listen_tcp(port, EchoFactory)?;
    reactor.run()?;
    Ok(())
}
