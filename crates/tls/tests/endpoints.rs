//! TLS endpoint strings: Twisted's `ssl:` and `tls:` parameters.

mod support;

use std::path::PathBuf;

use support::pki;
use torsion_protocol::endpoints::{ClientEndpoint, ServerEndpoint};
use torsion_tls::endpoints::{tls_client_from_string, tls_server_from_string, TlsEndpointError};

fn files(name: &str) -> PathBuf {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("torsion-tls-ep-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("roots")).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.server.key_pem).unwrap();
    std::fs::write(
        dir.join("both.pem"),
        format!("{}{}", pki.server.cert_pem, pki.server.key_pem),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca.cert_pem).unwrap();
    std::fs::write(dir.join("roots/ca.pem"), &pki.ca.cert_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &pki.client.cert_pem).unwrap();
    std::fs::write(dir.join("client-key.pem"), &pki.client.key_pem).unwrap();
    dir
}

fn esc(path: PathBuf) -> String {
    path.display().to_string().replace(':', "\\:")
}

#[test]
fn server_strings() {
    let dir = files("server");
    let key = esc(dir.join("key.pem"));
    let cert = esc(dir.join("cert.pem"));
    let parsed = tls_server_from_string(&format!(
        "ssl:8443:privateKey={key}:certKey={cert}:interface=127.0.0.1:backlog=7"
    ))
    .unwrap();
    match parsed.endpoint {
        ServerEndpoint::Tcp { port, options } => {
            assert_eq!(port, 8443);
            assert_eq!(options.interface.to_string(), "127.0.0.1");
            assert_eq!(options.backlog, 7);
        }
        other => panic!("{other:?}"),
    }
    // Without certKey, the certificate is read from the privateKey file;
    // extraCertChain adds certificates.
    let both = esc(dir.join("both.pem"));
    let ca = esc(dir.join("ca.pem"));
    tls_server_from_string(&format!("ssl:port=0:privateKey={both}:extraCertChain={ca}")).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn server_string_errors_point_at_the_problem() {
    let dir = files("server_errors");
    let key = esc(dir.join("key.pem"));
    let input = format!("ssl:443:privateKey={key}:sslmethod=TLSv1_2_METHOD");
    match tls_server_from_string(&input).unwrap_err() {
        TlsEndpointError::Syntax(e) => {
            assert!(e.message.contains("sslmethod= is not supported"), "{e}");
            assert_eq!(&input[e.position..], "sslmethod=TLSv1_2_METHOD");
        }
        other => panic!("{other}"),
    }
    let input = format!("ssl:443:dhParameters=dh.pem:privateKey={key}");
    let error = tls_server_from_string(&input).unwrap_err().to_string();
    assert!(error.contains("finite-field Diffie-Hellman"), "{error}");
    // A bad port is reported by the tcp parser, pointed into this string.
    let input = format!("ssl:privateKey={key}:port=http");
    match tls_server_from_string(&input).unwrap_err() {
        TlsEndpointError::Syntax(e) => {
            assert_eq!(&input[e.position..], "http", "{e}");
        }
        other => panic!("{other}"),
    }
    let error = tls_server_from_string("ssl:443").unwrap_err().to_string();
    assert!(error.contains("missing privateKey"), "{error}");
    let error = tls_server_from_string("ssl:443:privateKey=/nonexistent/key.pem")
        .unwrap_err()
        .to_string();
    assert!(error.contains("/nonexistent/key.pem"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn client_strings() {
    let dir = files("client");
    let ca = esc(dir.join("ca.pem"));
    let parsed =
        tls_client_from_string(&format!("tls:localhost:8443:trustRoots={ca}:timeout=3")).unwrap();
    match parsed.endpoint {
        ClientEndpoint::Tcp {
            host,
            port,
            timeout,
        } => {
            assert_eq!((host.as_str(), port), ("localhost", 8443));
            assert_eq!(timeout.as_secs(), 3);
        }
        other => panic!("{other:?}"),
    }
    // A directory of CA files, and a client certificate.
    let roots = esc(dir.join("roots"));
    let cert = esc(dir.join("client.pem"));
    let key = esc(dir.join("client-key.pem"));
    tls_client_from_string(&format!(
        "tls:host=example.org:port=443:trustRoots={roots}:certificate={cert}:privateKey={key}"
    ))
    .unwrap();
    // Without trustRoots= the platform's roots need the `native-roots`
    // feature (tested with it in native_roots.rs).
    #[cfg(not(feature = "native-roots"))]
    {
        let error = tls_client_from_string("tls:example.org:443")
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing trustRoots"), "{error}");
        assert!(error.contains("native-roots"), "{error}");
    }
    let error = tls_client_from_string(&format!(
        "tls:example.org:443:trustRoots={ca}:privateKey={key}"
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("without certificate"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}
