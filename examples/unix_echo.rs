//! The book's echo server and client, unchanged, over a Unix socket: one
//! program runs both on one reactor.
//!
//! ```text
//! cargo run --example unix_echo [PATH]    # default: a socket in the temp dir
//! ```

use torsion_echo::{EchoClientFactory, EchoFactory};
use torsion_protocol::{Reactor, ReactorUnix, UnixListenOptions, DEFAULT_CONNECT_TIMEOUT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("torsion-echo.sock"));
    let reactor = Reactor::new()?;
    let options = UnixListenOptions {
        mode: Some(0o600),
        ..UnixListenOptions::default()
    };
    reactor.listen_unix(&path, EchoFactory, options)?;
    reactor.connect_unix(&path, EchoClientFactory, DEFAULT_CONNECT_TIMEOUT);
    // The client factory stops the reactor; shutting down removes the
    // socket file.
    reactor.run()?;
    Ok(())
}
