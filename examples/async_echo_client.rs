//! The echo client of the Twisted book's example 2-2, written as `async`
//! code on the reactor instead of a protocol and a factory.
//!
//! ```text
//! cargo run --example async_echo_client [HOST] [PORT]   # default localhost 8000
//! ```
//!
//! Prints `Server said: Hello, world!` and `Connection lost.` against a
//! running echo server, or `Connection failed.` when there is none: the
//! same lines as `echo_client`. The whole exchange runs under a timeout.

use std::error::Error;
use std::time::Duration;

use torsion_protocol::{Reactor, ReactorAsync, DEFAULT_CONNECT_TIMEOUT};

const MESSAGE: &[u8] = b"Hello, world!";

/// Connect, write, read until the echo is complete, close.
async fn echo(reactor: Reactor, host: String, port: u16) -> Result<(), Box<dyn Error>> {
    let connected = reactor
        .connect_tcp_stream(&host, port, DEFAULT_CONNECT_TIMEOUT)
        .await;
    let stream = match connected {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(error = %e, "connect failed");
            println!("Connection failed.");
            return Ok(());
        }
    };
    stream.write_all(MESSAGE).await?;
    let mut echoed = Vec::new();
    let mut buffer = [0; 1024];
    while echoed.len() < MESSAGE.len() {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        echoed.extend_from_slice(&buffer[..n]);
    }
    println!("Server said: {}", String::from_utf8_lossy(&echoed));
    stream.close().await?;
    println!("Connection lost.");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".to_owned());
    let port = match args.next() {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 8000,
    };
    let reactor = Reactor::new()?;
    let exchange = echo(reactor.clone(), host, port);
    let outcome = reactor.run_until_complete(reactor.timeout(Duration::from_secs(60), exchange))?;
    // run_until_complete does not shut down: close what is left (tasks
    // holding a reactor clone would keep it alive).
    reactor.shut_down()?;
    match outcome {
        Ok(result) => result,
        Err(timed_out) => Err(timed_out.into()),
    }
}
