//! The echo client of the Twisted book's example 2-2, over TLS.
//!
//! ```text
//! cargo run --example tls_echo_client [HOST] [PORT] --ca CA.pem [--alpn PROTO] \
//!     [--cert CHAIN.pem --key KEY.pem]
//! ```
//!
//! With `--cert` and `--key` it presents a client certificate (mutual
//! TLS).
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
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca" => ca = Some(args.next().ok_or("--ca needs a file")?),
            "--alpn" => alpn.push(args.next().ok_or("--alpn needs a protocol")?),
            "--cert" => cert = Some(args.next().ok_or("--cert needs a file")?),
            "--key" => key = Some(args.next().ok_or("--key needs a file")?),
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
    let mut settings = ClientSettings::new().trust_pem_file(ca)?.alpn(&alpn);
    match (cert, key) {
        (Some(cert), Some(key)) => settings = settings.client_certificate_pem_files(cert, key)?,
        (None, None) => {}
        _ => return Err("--cert and --key go together".into()),
    }
    let config = settings.build()?;
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
