//! STARTTLS: a line protocol that switches to TLS on request, as SMTP,
//! IMAP and LDAP do; server and client run in this one program.
//!
//! ```text
//! cargo run --example starttls
//! ```
//!
//! The client greets in plaintext, sends `STARTTLS`, and once the server
//! answers `READY` both sides start TLS on the same connection
//! ([`TlsTransport::start_tls`]); then the client sends a secret line,
//! which the server answers over TLS. Each side prints what it sees.
//! A client that pipelines plaintext after its `STARTTLS` line is
//! refused (the command-injection class of bug): `--pipeline` makes this
//! client do that, to see it.
//!
//! ```text
//! cargo run --example starttls -- --pipeline
//! ```

use std::sync::Arc;

use torsion_protocol::{
    Address, ClientFactory, CloseReason, Connector, Factory, Protocol, Reactor, ReactorTcp,
    TransportRef, DEFAULT_CONNECT_TIMEOUT,
};
use torsion_tls::rustls::{ClientConfig, ServerConfig};
use torsion_tls::{
    server_name, ClientSettings, ServerSettings, TlsProtocol, TlsRole, TlsTransport,
};

#[path = "tls/certs.rs"]
mod certs;

/// Splits the next complete line off `buffer`. One at a time: after a
/// `STARTTLS` line, what follows in the buffer is not a line but the
/// first bytes of the TLS session (or refused plaintext), handed to
/// `start_tls` whole.
fn next_line(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer.windows(2).position(|w| w == b"\r\n")?;
    let line: Vec<u8> = buffer.drain(..end + 2).take(end).collect();
    Some(String::from_utf8_lossy(&line).into_owned())
}

struct Server {
    config: Arc<ServerConfig>,
    buffer: Vec<u8>,
}

impl Protocol for Server {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.write(b"HELLO plaintext; say STARTTLS\r\n");
    }

    fn handshake_completed(&mut self, _transport: &TransportRef) {
        println!("server: TLS is on");
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let tls = TlsTransport::of(transport).expect("wrapped in TlsProtocol");
        self.buffer.extend_from_slice(data);
        while let Some(line) = next_line(&mut self.buffer) {
            let encrypted = tls.is_tls();
            println!("server got {line:?} (encrypted: {encrypted})");
            if line == "STARTTLS" && !encrypted {
                transport.write(b"READY\r\n");
                // What followed the command in the buffer goes to TLS;
                // plaintext there is refused.
                let unread = std::mem::take(&mut self.buffer);
                if let Err(error) = tls.start_tls(TlsRole::Server(self.config.clone()), &unread) {
                    println!("server refused: {error}");
                }
                return;
            }
            if encrypted {
                transport.write(format!("you said {line:?} privately\r\n").as_bytes());
            }
        }
    }
}

struct ServerFactory(Arc<ServerConfig>);

impl Factory for ServerFactory {
    type Protocol = TlsProtocol<Server>;
    fn build_protocol(&self, _peer: &Address) -> Option<Self::Protocol> {
        Some(TlsProtocol::plain(Server {
            config: self.0.clone(),
            buffer: Vec::new(),
        }))
    }
}

struct Client {
    config: Arc<ClientConfig>,
    buffer: Vec<u8>,
    /// Misbehave: pipeline a plaintext command after `STARTTLS`.
    pipeline: bool,
}

impl Protocol for Client {
    fn handshake_completed(&mut self, transport: &TransportRef) {
        println!("client: TLS is on");
        transport.write(b"the secret is 42\r\n");
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let tls = TlsTransport::of(transport).expect("wrapped in TlsProtocol");
        self.buffer.extend_from_slice(data);
        while let Some(line) = next_line(&mut self.buffer) {
            println!("client got {line:?}");
            if line.starts_with("HELLO") && self.pipeline {
                // In one write: the server must refuse the second line.
                transport.write(b"STARTTLS\r\nMAIL FROM:<x>\r\n");
            } else if line.starts_with("HELLO") {
                transport.write(b"STARTTLS\r\n");
            } else if line == "READY" {
                let name = server_name("localhost").expect("a valid name");
                tls.start_tls(TlsRole::Client(self.config.clone(), name), &self.buffer)
                    .expect("TLS starts");
                self.buffer.clear();
                return;
            } else if tls.is_tls() {
                transport.lose_connection();
            }
        }
    }
}

struct ClientFactoryImpl(Arc<ClientConfig>, bool);

impl Factory for ClientFactoryImpl {
    type Protocol = TlsProtocol<Client>;
    fn build_protocol(&self, _peer: &Address) -> Option<Self::Protocol> {
        Some(TlsProtocol::plain(Client {
            config: self.0.clone(),
            buffer: Vec::new(),
            pipeline: self.1,
        }))
    }
}

impl ClientFactory for ClientFactoryImpl {
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        println!("client: connection closed ({reason})");
        if let Some(reactor) = connector.reactor() {
            let _ = reactor.stop();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let pipeline = std::env::args().skip(1).any(|arg| arg == "--pipeline");
    let dir = std::env::temp_dir().join(format!("torsion-starttls-{}", std::process::id()));
    let files = certs::make(&dir)?;
    let server_config = ServerSettings::from_pem_files(&files.chain, &files.key)?.build()?;
    let client_config = ClientSettings::new().trust_pem_file(&files.ca)?.build()?;
    let _ = std::fs::remove_dir_all(&dir);

    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp(0, ServerFactory(server_config))?;
    let at = port.get_host().port().ok_or("no port")?;
    reactor.connect_tcp(
        "127.0.0.1",
        at,
        ClientFactoryImpl(client_config, pipeline),
        DEFAULT_CONNECT_TIMEOUT,
    );
    reactor.run()?;
    Ok(())
}
