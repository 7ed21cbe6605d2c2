//! Throwaway certificates for the TLS examples: a CA and a certificate it
//! signed for `localhost` (a CA certificate cannot serve directly: the
//! verifier refuses it).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where the files went.
pub struct Throwaway {
    /// The CA certificate, for clients to trust.
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub chain: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// A client certificate from the same CA (for mutual TLS).
    #[allow(dead_code)] // not every program presents one
    pub client_chain: PathBuf,
    /// Its private key.
    #[allow(dead_code)]
    pub client_key: PathBuf,
}

/// Makes a CA and a `localhost` certificate, and writes them (PEM) into
/// `dir`.
pub fn make(dir: &Path) -> Result<Throwaway, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Torsion example CA (throwaway)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "Torsion example server (throwaway)");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;

    let client_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut client = CertificateParams::new(vec!["client.example".to_owned()])?;
    client
        .distinguished_name
        .push(DnType::CommonName, "Torsion example client (throwaway)");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer)?;

    let files = Throwaway {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("key.pem"),
        client_chain: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    std::fs::write(&files.ca, ca_cert.pem())?;
    std::fs::write(&files.chain, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    std::fs::write(&files.client_chain, client_cert.pem())?;
    std::fs::write(&files.client_key, client_key.serialize_pem())?;
    Ok(files)
}
