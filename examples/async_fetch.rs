//! Asks several servers at once and gathers their replies: each request
//! is a task with its own timeout, and one server's failure does not stop
//! the others (Twisted's `DeferredList`).
//!
//! ```text
//! cargo run --example async_fetch [--timeout-ms MS] HOST:PORT...
//! ```
//!
//! To each server it sends one line, half-closes, and reads the reply
//! until the server closes. Then it prints one line per server, in the
//! order given: `HOST:PORT: replied N bytes: TEXT` or
//! `HOST:PORT: failed: REASON`, and a summary.

use std::error::Error;
use std::time::Duration;

use torsion_protocol::{deferred_list, Reactor, ReactorAsync};

const REQUEST: &[u8] = b"hello from async_fetch\n";

/// One request: connect, send, half-close, read until the server closes.
async fn fetch(reactor: Reactor, server: String, limit: Duration) -> Result<Vec<u8>, String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| "not HOST:PORT".to_owned())?;
    let port: u16 = port.parse().map_err(|e| format!("bad port: {e}"))?;
    let exchange = async {
        let stream = reactor
            .connect_tcp_stream(host, port, limit)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(REQUEST).await.map_err(|e| e.to_string())?;
        if let Some(transport) = stream.transport() {
            transport.lose_write_connection();
        }
        let mut reply = Vec::new();
        let mut buffer = [0; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return Ok(reply),
                Ok(n) => reply.extend_from_slice(&buffer[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    // Dropping the exchange on timeout cancels the connect or closes the
    // connection.
    reactor
        .timeout(limit, exchange)
        .await
        .map_err(|e| e.to_string())?
}

fn main() -> Result<(), Box<dyn Error>> {
    torsion_examples::init_logging();
    let mut limit = Duration::from_secs(5);
    let mut servers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--timeout-ms" {
            let ms = args.next().ok_or("--timeout-ms needs a value")?;
            limit = Duration::from_millis(ms.parse()?);
        } else {
            servers.push(arg);
        }
    }
    if servers.is_empty() {
        return Err("usage: async_fetch [--timeout-ms MS] HOST:PORT...".into());
    }
    let reactor = Reactor::new()?;
    let requests: Vec<_> = servers
        .iter()
        .map(|server| reactor.spawn(fetch(reactor.clone(), server.clone(), limit)))
        .collect();
    // A JoinHandle yields Result<Result<..>, TaskError>: flatten for the list.
    let results = reactor.run_until_complete(deferred_list(
        requests
            .into_iter()
            .map(|task| async move { task.await.map_err(|e| e.to_string())? }),
    ))?;
    // run_until_complete does not shut down; the fetches hold reactor
    // clones, so end them before the reactor goes.
    reactor.shut_down()?;
    let mut failures = 0;
    for (server, result) in servers.iter().zip(results) {
        match result {
            Ok(reply) => println!(
                "{server}: replied {} bytes: {}",
                reply.len(),
                String::from_utf8_lossy(&reply).trim_end()
            ),
            Err(reason) => {
                failures += 1;
                println!("{server}: failed: {reason}");
            }
        }
    }
    println!("{} servers, {failures} failed", servers.len());
    Ok(())
}
