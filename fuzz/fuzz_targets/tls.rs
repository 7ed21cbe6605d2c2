//! The TLS wrapper, as a server and as a client, fed arbitrary bytes by
//! the peer in arbitrary chunks. Input: one byte of mode (bit 0: client
//! side), one byte of chunk size, then the peer's bytes.
//!
//! Checks that nothing panics; that the wrapper never delivers plaintext
//! (no handshake can complete with bytes that are not a real peer's); and
//! that whole and chunked delivery end the same way (open, or closed with
//! a reason that is not empty).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use torsion_protocol::testing::{Closing, ProtocolHarness};
use torsion_protocol::{Protocol, TransportRef};
use torsion_tls::pki_types::pem::PemObject;
use torsion_tls::pki_types::{CertificateDer, PrivateKeyDer};
use torsion_tls::rustls::{ClientConfig, ServerConfig};
use torsion_tls::{server_name, ClientSettings, ServerSettings, TlsProtocol};

/// Counts what the wrapper delivers.
#[derive(Default)]
struct Sink(usize);

impl Protocol for Sink {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0 += data.len();
    }
}

fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = CertificateDer::from_pem_slice(include_bytes!("tls/cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("tls/key.pem")).unwrap();
        let server = ServerSettings::new(vec![cert], key)
            .unwrap()
            .build()
            .unwrap();
        let client = ClientSettings::new()
            .dangerous_accept_any_server_certificate()
            .build()
            .unwrap();
        (server, client)
    })
}

fn wrapper(client: bool) -> TlsProtocol<Sink> {
    let (server_config, client_config) = configs();
    if client {
        let name = server_name("fuzz.invalid").unwrap();
        TlsProtocol::client(client_config.clone(), name, Sink::default()).unwrap()
    } else {
        TlsProtocol::server(server_config.clone(), Sink::default()).unwrap()
    }
}

fn ended(closing: &Closing) -> bool {
    match closing {
        Closing::Open => false,
        Closing::LostWithError(reason) => {
            assert!(!reason.is_empty());
            true
        }
        _ => true,
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, chunk, stream @ ..] = input else {
        return;
    };
    let client = mode & 1 == 1;
    let chunk = usize::from(*chunk).max(1);

    let mut whole = ProtocolHarness::new(wrapper(client));
    whole.receive(stream);

    let mut cut = ProtocolHarness::new(wrapper(client));
    for piece in stream.chunks(chunk) {
        cut.receive(piece);
    }

    assert_eq!(
        ended(&whole.transport.closing()),
        ended(&cut.transport.closing())
    );
    assert_eq!(whole.protocol().inner().0, 0);
    assert_eq!(cut.protocol().inner().0, 0);
    // The end of the stream, clean or not, is handled without a panic.
    whole.peer_closes();
    cut.lose(&torsion_protocol::CloseReason::ClosedByPeer);
});
