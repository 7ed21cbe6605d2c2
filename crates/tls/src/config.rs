//! rustls configurations for servers and clients, built from PEM files,
//! always with an explicit crypto provider (ring, or aws-lc-rs with the
//! `aws-lc-rs` feature).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The crypto provider every configuration here uses, passed explicitly
/// (never rustls's process-wide default, which panics when two providers
/// are compiled in): ring, or aws-lc-rs when the `aws-lc-rs` feature is
/// on. ring is always compiled in, so with that feature aws-lc-rs wins.
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc-rs"))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// A session-ticket encrypter from the same provider as [`provider`].
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(not(feature = "aws-lc-rs"))]
    rustls::crypto::ring::Ticketer::new()
}

/// A configuration could not be built: names the file, if one is at fault,
/// and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    /// The file at fault.
    pub path: Option<PathBuf>,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn file(path: &Path, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            path: Some(path.to_owned()),
            problem: problem.into(),
        }
    }

    fn other(problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            path: None,
            problem: problem.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for std::io::Error {
    fn from(error: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
    }
}

fn pem_problem(error: rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => format!("no {what} in it (is it PEM?)"),
        other => format!("not valid PEM: {other}"),
    }
}

/// Reads every certificate of a PEM file (a chain: the end-entity
/// certificate first, or a CA bundle).
///
/// # Errors
/// If the file cannot be read, is not PEM, or holds no certificate.
pub fn load_certificates(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::file(path, pem_problem(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::file(path, pem_problem(e, "certificate")))?;
    if certs.is_empty() {
        return Err(ConfigError::file(
            path,
            "no certificate in it (expected a \"BEGIN CERTIFICATE\" section)",
        ));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// If the file cannot be read, is not PEM, or holds no private key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| ConfigError::file(path, pem_problem(e, "private key")))
}

/// Reads a CA bundle into a store of trust roots.
///
/// # Errors
/// If the file cannot be read or holds no usable certificate.
pub fn load_roots(path: impl AsRef<Path>) -> Result<RootCertStore, ConfigError> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| ConfigError::file(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    files: Option<(&Path, &Path)>,
) -> Result<CertifiedKey, ConfigError> {
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match files {
        // The key file at fault, and the certificate's file named too.
        Some((chain, key)) => ConfigError::file(
            key,
            format!(
                "the key does not fit the certificate in {}, or cannot be used: {e}",
                chain.display()
            ),
        ),
        None => ConfigError::other(format!(
            "the key does not fit the certificate, or cannot be used: {e}"
        )),
    })
}

/// Builds a server's [`ServerConfig`] (what `listenSSL`'s context factory
/// is to Twisted): a certificate chain and key, optionally client
/// certificates (mutual TLS), ALPN protocols, and other certificates
/// chosen by SNI. TLS 1.2 and 1.3; session tickets on.
///
/// ```no_run
/// use torsion_tls::ServerSettings;
/// let config = ServerSettings::from_pem_files("chain.pem", "key.pem")?
///     .alpn(["h2", "http/1.1"])
///     .build()?;
/// # Ok::<(), torsion_tls::ConfigError>(())
/// ```
#[doc(alias = "CertificateOptions")]
pub struct ServerSettings {
    default: CertifiedKey,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    client_roots: Option<(RootCertStore, bool)>,
    alpn: Vec<Vec<u8>>,
    tickets: bool,
}

impl ServerSettings {
    /// A certificate chain (end-entity first) and its private key, in DER.
    ///
    /// # Errors
    /// If the key does not match the certificate or is of an unsupported
    /// kind.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerSettings, ConfigError> {
        Ok(ServerSettings {
            default: certified_key(chain, key, &provider(), None)?,
            by_name: HashMap::new(),
            client_roots: None,
            alpn: Vec::new(),
            tickets: true,
        })
    }

    /// A certificate chain and a private key read from PEM files.
    ///
    /// # Errors
    /// Naming the file: unreadable, not PEM, no certificate or key in it,
    /// or a key that does not match the certificate.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerSettings, ConfigError> {
        let certs = load_certificates(chain.as_ref())?;
        let private = load_private_key(key.as_ref())?;
        Ok(ServerSettings {
            default: certified_key(
                certs,
                private,
                &provider(),
                Some((chain.as_ref(), key.as_ref())),
            )?,
            by_name: HashMap::new(),
            client_roots: None,
            alpn: Vec::new(),
            tickets: true,
        })
    }

    /// Serves this chain and key instead to clients that ask for `name`
    /// by SNI (the first one given is served otherwise).
    ///
    /// # Errors
    /// If the key does not match the certificate.
    pub fn sni_certificate(
        mut self,
        name: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerSettings, ConfigError> {
        let certified = certified_key(chain, key, &provider(), None)?;
        self.by_name
            .insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(self)
    }

    /// Requires a client certificate issued by one of `roots` (mutual
    /// TLS); a client without one fails the handshake.
    #[must_use]
    pub fn require_client_certificate(mut self, roots: RootCertStore) -> ServerSettings {
        self.client_roots = Some((roots, false));
        self
    }

    /// Verifies a client certificate against `roots` if the client sends
    /// one, and accepts clients without one.
    #[must_use]
    pub fn optional_client_certificate(mut self, roots: RootCertStore) -> ServerSettings {
        self.client_roots = Some((roots, true));
        self
    }

    /// The application protocols offered by ALPN, preferred first. A
    /// client that offers only others fails the handshake.
    #[must_use]
    pub fn alpn<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(
        mut self,
        protocols: I,
    ) -> ServerSettings {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Turns stateless session tickets off (they are on by default;
    /// TLS 1.3 resumption also works from the server's session cache).
    #[must_use]
    pub fn without_tickets(mut self) -> ServerSettings {
        self.tickets = false;
        self
    }

    /// The configuration, ready for [`listen_tls`](crate::ReactorTls::listen_tls).
    ///
    /// # Errors
    /// If rustls refuses a setting (an empty CA store, ...).
    pub fn build(self) -> Result<Arc<ServerConfig>, ConfigError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::other)?;
        let builder = match self.client_roots {
            None => builder.with_no_client_auth(),
            Some((roots, optional)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = if optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build().map_err(ConfigError::other)?)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            default: Arc::new(self.default),
            by_name: self.by_name,
        }));
        config.alpn_protocols = self.alpn;
        if self.tickets {
            config.ticketer = ticketer().map_err(ConfigError::other)?;
        }
        Ok(Arc::new(config))
    }
}

/// Chooses the server's certificate by the SNI name the client sent.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = client_hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// Builds a client's [`ClientConfig`]: which CAs to trust, a client
/// certificate for mutual TLS, ALPN protocols. The server's name is
/// verified (webpki) unless [`ClientSettings::dangerous_accept_any_server_certificate`]
/// says otherwise. Session resumption (a cache of 256 sessions) is on.
///
/// ```no_run
/// use torsion_tls::ClientSettings;
/// let config = ClientSettings::new().trust_pem_file("ca.pem")?.alpn(["h2"]).build()?;
/// # Ok::<(), torsion_tls::ConfigError>(())
/// ```
pub struct ClientSettings {
    roots: RootCertStore,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
    no_verification: bool,
}

impl Default for ClientSettings {
    fn default() -> ClientSettings {
        ClientSettings::new()
    }
}

impl ClientSettings {
    /// No trusted CA yet, no client certificate, no ALPN.
    pub fn new() -> ClientSettings {
        ClientSettings {
            roots: RootCertStore::empty(),
            client_cert: None,
            alpn: Vec::new(),
            no_verification: false,
        }
    }

    /// Trusts these CA certificates.
    ///
    /// # Errors
    /// If one is not a usable CA certificate.
    pub fn trust(
        mut self,
        roots: &[CertificateDer<'static>],
    ) -> Result<ClientSettings, ConfigError> {
        for root in roots {
            self.roots
                .add(root.clone())
                .map_err(|e| ConfigError::other(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(self)
    }

    /// Settings that trust the platform's trust roots (the system's CA
    /// store: `/etc/ssl/certs` and the like on Linux and BSD, the keychain
    /// on macOS; `SSL_CERT_FILE` and `SSL_CERT_DIR` override it), as
    /// Twisted's `platformTrust()`. Needs the `native-roots` feature.
    ///
    /// Certificates of the store that cannot be used are skipped.
    ///
    /// # Errors
    /// If the store cannot be read and yields no certificate, or holds no
    /// usable one.
    #[cfg(feature = "native-roots")]
    #[cfg_attr(docsrs, doc(cfg(feature = "native-roots")))]
    #[doc(alias = "platformTrust")]
    pub fn native_roots() -> Result<ClientSettings, ConfigError> {
        ClientSettings::new().trust_native_roots()
    }

    /// Also trusts the platform's trust roots; see
    /// [`ClientSettings::native_roots`]. Needs the `native-roots` feature.
    ///
    /// # Errors
    /// As for [`ClientSettings::native_roots`].
    #[cfg(feature = "native-roots")]
    #[cfg_attr(docsrs, doc(cfg(feature = "native-roots")))]
    pub fn trust_native_roots(mut self) -> Result<ClientSettings, ConfigError> {
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = self.roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = match found.errors.first() {
                Some(error) => format!(": {error}"),
                None => String::new(),
            };
            return Err(ConfigError::other(format!(
                "no usable certificate in the platform's trust store{why}"
            )));
        }
        for error in &found.errors {
            tracing::debug!(%error, "part of the platform's trust store was skipped");
        }
        Ok(self)
    }

    /// Trusts the CA certificates of a PEM bundle (Twisted's `trustRoots`).
    ///
    /// # Errors
    /// Naming the file, if it cannot be read or holds no usable
    /// certificate.
    pub fn trust_pem_file(mut self, path: impl AsRef<Path>) -> Result<ClientSettings, ConfigError> {
        let roots = load_roots(path)?;
        self.roots.roots.extend(roots.roots);
        Ok(self)
    }

    /// Presents this certificate chain and key when the server asks
    /// (mutual TLS).
    #[must_use]
    pub fn client_certificate(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> ClientSettings {
        self.client_cert = Some((chain, key));
        self
    }

    /// Presents the certificate chain and key of these PEM files when the
    /// server asks (mutual TLS).
    ///
    /// # Errors
    /// Naming the file that cannot be read or holds no certificate or key,
    /// or (both files) a key that does not match the certificate.
    pub fn client_certificate_pem_files(
        self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientSettings, ConfigError> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        let certs = load_certificates(chain)?;
        let private = load_private_key(key)?;
        // Checked here, where the files are known, rather than in build().
        certified_key(
            certs.clone(),
            private.clone_key(),
            &provider(),
            Some((chain, key)),
        )?;
        Ok(self.client_certificate(certs, private))
    }

    /// The application protocols to offer by ALPN, preferred first.
    #[must_use]
    pub fn alpn<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(
        mut self,
        protocols: I,
    ) -> ClientSettings {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// DANGER: accepts any certificate from the server, for any name:
    /// the connection is encrypted but anyone on the path can read and
    /// change it. For tests against throwaway certificates only; trusting
    /// the test CA ([`ClientSettings::trust`]) is nearly always possible
    /// instead.
    #[must_use]
    pub fn dangerous_accept_any_server_certificate(mut self) -> ClientSettings {
        self.no_verification = true;
        self
    }

    /// The configuration, ready for [`connect_tls`](crate::ReactorTls::connect_tls).
    ///
    /// # Errors
    /// If no CA is trusted (and verification is on), or rustls refuses the
    /// client certificate.
    pub fn build(self) -> Result<Arc<ClientConfig>, ConfigError> {
        let provider = provider();
        if self.roots.is_empty() && !self.no_verification {
            return Err(ConfigError::other(
                "no trusted CA: add one with trust() or trust_pem_file()",
            ));
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::other)?;
        let builder = if self.no_verification {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        } else {
            builder.with_root_certificates(self.roots)
        };
        let mut config = match self.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::other(format!("client certificate: {e}")))?,
        };
        config.alpn_protocols = self.alpn;
        Ok(Arc::new(config))
    }
}

/// Accepts every server certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
