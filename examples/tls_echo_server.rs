//! The echo server of the Twisted book's example 2-1, over TLS.
//!
//! ```text
//! cargo run --example tls_echo_server [PORT] --cert CHAIN.pem --key KEY.pem \
//!     [--client-ca CA.pem] [--alpn PROTO]...      # default port 8443
//! ```
//!
//! Without `--cert`, it makes a throwaway CA and a certificate for
//! `localhost`, and prints where it wrote the CA (give it to
//! `tls_echo_client --ca`). With `--client-ca`, clients must present a
//! certificate issued by that CA (mutual TLS). Each `--alpn` adds an
//! application protocol to offer. It prints `listening on port N`.

use std::io::Write;

use torsion_echo::EchoFactory;
use torsion_protocol::{Reactor, ReactorTcp};
use torsion_tls::{load_roots, ServerSettings, TlsServerFactory};

#[path = "tls/certs.rs"]
mod certs;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut port: u16 = 8443;
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let mut alpn = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--cert" => cert = Some(value("--cert")?),
            "--key" => key = Some(value("--key")?),
            "--client-ca" => client_ca = Some(value("--client-ca")?),
            "--alpn" => alpn.push(value("--alpn")?),
            _ => port = arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        }
    }
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.into(), key.into()),
        (None, None) => {
            let dir = std::env::temp_dir().join(format!("torsion-tls-echo-{}", std::process::id()));
            let files = certs::make(&dir)?;
            println!("throwaway CA written to {}", files.ca.display());
            (files.chain, files.key)
        }
        _ => return Err("--cert and --key go together".into()),
    };
    let mut settings = ServerSettings::from_pem_files(&cert, &key)?.alpn(&alpn);
    if let Some(ca) = client_ca {
        settings = settings.require_client_certificate(load_roots(ca)?);
    }
    let config = settings.build()?;
    let reactor = Reactor::new()?;
    let listening = reactor.listen_tcp(port, TlsServerFactory::new(config, EchoFactory))?;
    println!(
        "listening on port {}",
        listening.get_host().port().ok_or("no port")?
    );
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(())
}
