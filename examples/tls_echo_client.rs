//! The echo client of the Twisted book's example 2-2, over TLS.
//!
//! ```text
//! cargo run --example tls_echo_client [HOST] [PORT] --ca CA.pem [--alpn PROTO]
//! ```
//!
//! Defaults: `localhost`, port 8443. The server's certificate must be
//! issued by `CA.pem` and valid for HOST. Prints `Server said: Hello,
//! world!` and `Connection lost.`, or `Connection failed.`.

use torsion_echo::EchoClientFactory;
use torsion_protocol::{Reactor, DEFAULT_CONNECT_TIMEOUT};
use torsion_tls::{ClientSettings, ReactorTls};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut positional = Vec::new();
    let mut ca = None;
    let mut alpn = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca" => ca = Some(args.next().ok_or("--ca needs a file")?),
            "--alpn" => alpn.push(args.next().ok_or("--alpn needs a protocol")?),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let host = positional.next().unwrap_or_else(|| "localhost".to_owned());
    let port = match positional.next() {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 8443,
    };
    let ca = ca.ok_or("--ca CA.pem is needed: the CA that issued the server's certificate")?;
    let config = ClientSettings::new()
        .trust_pem_file(ca)?
        .alpn(&alpn)
        .build()?;
    let reactor = Reactor::new()?;
    reactor.connect_tls(
        &host,
        port,
        config,
        EchoClientFactory,
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    reactor.run()?;
    Ok(())
}
