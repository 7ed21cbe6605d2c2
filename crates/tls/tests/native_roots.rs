//! The `native-roots` feature: the platform's trust store, pointed at a
//! test CA through `SSL_CERT_FILE` (which rustls-native-certs honours), so
//! that the test does not depend on the machine's store. One test in its
//! own binary: it sets the process environment.
#![cfg(feature = "native-roots")]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use support::pki;
use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Echo};
use torsion_protocol::{Address, Factory, ListenOptions};
use torsion_tls::endpoints::tls_client_from_string;
use torsion_tls::{ClientSettings, ReactorTls, TlsTransport};

struct EchoFactory;

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
}

#[test]
fn platform_roots_verify_servers_and_serve_endpoints_without_trust_roots() {
    let _fds = DescriptorGuard::new();
    let dir = std::env::temp_dir().join(format!("torsion-tls-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // A store with nothing usable in it: a clear error.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &empty);
    let error = ClientSettings::native_roots().err().expect("no roots");
    assert!(
        error.to_string().contains("platform's trust store"),
        "{error}"
    );

    // The test CA as the platform's store.
    let store = dir.join("store.pem");
    std::fs::write(&store, &pki().ca.cert_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &store);
    ClientSettings::native_roots().unwrap().build().unwrap();

    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
    let port = reactor
        .listen_tls_with(
            0,
            pki().server_config(),
            EchoFactory,
            ListenOptions::interface(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        )
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    // No trustRoots=: the platform's roots verify the server.
    let endpoint = tls_client_from_string(&format!("tls:127.0.0.1:{at}:timeout=10")).unwrap();
    let stream = reactor
        .run_until_complete(endpoint.connect_stream(&reactor).unwrap())
        .unwrap()
        .expect("verified with the platform's roots");
    let transport = stream.transport().unwrap();
    assert!(TlsTransport::of(&transport)
        .unwrap()
        .is_handshake_complete());
    drop(transport);
    drop(stream);
    drop(port);
    std::env::remove_var("SSL_CERT_FILE");
    std::fs::remove_dir_all(&dir).unwrap();
}
