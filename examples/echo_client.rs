//! The echo client of the Twisted book's example 2-2, on Torsion.
//!
//! ```text
//! cargo run --example echo_client [HOST] [PORT]     # default localhost 8000
//! ```
//!
//! Prints `Server said: Hello, world!` and `Connection lost.` against a
//! running echo server, or `Connection failed.` when there is none.

use torsion_echo::EchoClientFactory;
use torsion_protocol::{Reactor, ReactorTcp, DEFAULT_CONNECT_TIMEOUT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".to_owned());
    let port = match args.next() {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 8000,
    };
    let reactor = Reactor::new()?;
    reactor.connect_tcp(&host, port, EchoClientFactory, DEFAULT_CONNECT_TIMEOUT);
    reactor.run()?;
    Ok(())
}
