//! Configurations from PEM files, and errors that name the file.

mod support;

use std::path::PathBuf;

use support::pki;
use torsion_tls::{ClientSettings, ServerSettings};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torsion-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn pem_files_make_working_configurations() {
    let pki = pki();
    let dir = dir("good");
    std::fs::write(dir.join("chain.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.server.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca.cert_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &pki.client.cert_pem).unwrap();
    std::fs::write(dir.join("client-key.pem"), &pki.client.key_pem).unwrap();
    ServerSettings::from_pem_files(dir.join("chain.pem"), dir.join("key.pem"))
        .unwrap()
        .require_client_certificate(torsion_tls::load_roots(dir.join("ca.pem")).unwrap())
        .build()
        .unwrap();
    ClientSettings::new()
        .trust_pem_file(dir.join("ca.pem"))
        .unwrap()
        .client_certificate_pem_files(dir.join("client.pem"), dir.join("client-key.pem"))
        .unwrap()
        .build()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let pki = pki();
    let dir = dir("bad");
    let chain = dir.join("chain.pem");
    let key = dir.join("key.pem");
    let other_key = dir.join("other-key.pem");
    let junk = dir.join("junk.pem");
    std::fs::write(&chain, &pki.server.cert_pem).unwrap();
    std::fs::write(&key, &pki.server.key_pem).unwrap();
    std::fs::write(&other_key, &pki.client.key_pem).unwrap();
    std::fs::write(&junk, "hello, not PEM\n").unwrap();

    let missing = dir.join("missing.pem");
    let error = ServerSettings::from_pem_files(&missing, &key)
        .err()
        .unwrap();
    assert_eq!(error.path.as_deref(), Some(missing.as_path()));
    assert!(error.to_string().contains("cannot read it"), "{error}");

    let error = ServerSettings::from_pem_files(&junk, &key).err().unwrap();
    assert!(error.to_string().starts_with(&junk.display().to_string()));
    assert!(error.to_string().contains("no certificate"), "{error}");

    // A certificate where the key should be.
    let error = ServerSettings::from_pem_files(&chain, &chain)
        .err()
        .unwrap();
    assert!(error.to_string().contains("no private key"), "{error}");

    // A key that is not the certificate's.
    let error = ServerSettings::from_pem_files(&chain, &other_key)
        .err()
        .unwrap();
    assert_eq!(error.path.as_deref(), Some(other_key.as_path()));
    assert!(error.to_string().contains("does not fit"), "{error}");

    assert!(error.to_string().contains("chain.pem"), "{error}");

    // The same for a client certificate: both files named.
    let error = ClientSettings::new()
        .trust_pem_file(&chain)
        .unwrap()
        .client_certificate_pem_files(&chain, &other_key)
        .err()
        .unwrap();
    assert_eq!(error.path.as_deref(), Some(other_key.as_path()));
    assert!(error.to_string().contains("does not fit"), "{error}");
    assert!(error.to_string().contains("chain.pem"), "{error}");

    let error = ClientSettings::new().trust_pem_file(&junk).err().unwrap();
    assert!(error.to_string().contains("junk.pem"), "{error}");

    let error = ClientSettings::new().build().err().unwrap();
    assert!(error.to_string().contains("no trusted CA"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_provider_is_the_one_the_features_choose() {
    // Each provider's random source is a type named after it.
    let provider = format!("{:?}", torsion_tls::provider().secure_random);
    if cfg!(feature = "aws-lc-rs") {
        assert!(provider.contains("AwsLcRs"), "{provider}");
    } else {
        assert!(provider.contains("Ring"), "{provider}");
    }
}
