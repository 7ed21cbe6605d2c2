//! TLS endpoint strings, with Twisted's parameter names: servers
//! `ssl:PORT:privateKey=KEY.pem[:certKey=CHAIN.pem][:extraCertChain=MORE.pem][:interface=...][:backlog=...]`,
//! clients `tls:HOST:PORT[:trustRoots=CA.pem][:certificate=CHAIN.pem][:privateKey=KEY.pem][:timeout=...]`.
//!
//! The TLS fields are taken out here; the rest is parsed as a `tcp:`
//! endpoint by [`torsion_protocol::endpoints`], whose errors point into
//! the original string.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use torsion_protocol::endpoints::{
    client_from_string, server_from_string, ClientEndpoint, EndpointError, ServerEndpoint,
};
use torsion_protocol::{
    ClientFactory, Connect, Connector, Factory, ListeningPort, Reactor, ReactorTcp,
};

use crate::config::{
    load_certificates, load_private_key, ClientSettings, ConfigError, ServerSettings,
};
use crate::reactor::{server_name, TlsClientFactory, TlsServerFactory};

/// A TLS endpoint string that cannot be used: bad syntax (pointing at the
/// bad part), or a file named in it that cannot be used.
#[derive(Debug)]
pub enum TlsEndpointError {
    /// The string itself is wrong.
    Syntax(EndpointError),
    /// A certificate or key file named in it is wrong.
    Config(ConfigError),
}

impl fmt::Display for TlsEndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsEndpointError::Syntax(e) => e.fmt(f),
            TlsEndpointError::Config(e) => write!(f, "invalid TLS endpoint: {e}"),
        }
    }
}

impl std::error::Error for TlsEndpointError {}

impl From<ConfigError> for TlsEndpointError {
    fn from(error: ConfigError) -> Self {
        TlsEndpointError::Config(error)
    }
}

/// A TLS server endpoint (Twisted's `ssl:` server string).
#[derive(Clone)]
pub struct TlsServerEndpoint {
    /// Where to listen.
    pub endpoint: ServerEndpoint,
    /// The TLS configuration made from the files.
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerEndpoint")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl TlsServerEndpoint {
    /// Listens here, each connection behind TLS.
    ///
    /// # Errors
    /// As for [`ReactorTcp::listen_tcp`].
    pub fn listen<F: Factory>(&self, reactor: &Reactor, factory: F) -> io::Result<ListeningPort> {
        match &self.endpoint {
            ServerEndpoint::Tcp { port, options } => reactor.listen_tcp_with(
                *port,
                TlsServerFactory::new(self.config.clone(), factory),
                *options,
            ),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS endpoints listen on TCP",
            )),
        }
    }
}

/// A TLS client endpoint (Twisted's `tls:` client string).
#[derive(Clone)]
pub struct TlsClientEndpoint {
    /// The host and port (and timeout) to connect to; the host is also
    /// the name verified.
    pub endpoint: ClientEndpoint,
    /// The TLS configuration made from the files.
    pub config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientEndpoint")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl TlsClientEndpoint {
    /// Connects, verifying the host's name.
    ///
    /// # Errors
    /// `InvalidInput` if the host is neither a DNS name nor an IP address.
    pub fn connect<F: ClientFactory>(
        &self,
        reactor: &Reactor,
        factory: F,
    ) -> io::Result<Connector> {
        match &self.endpoint {
            ClientEndpoint::Tcp {
                host,
                port,
                timeout,
            } => {
                let name = server_name(host)?;
                Ok(reactor.connect_tcp(
                    host,
                    *port,
                    TlsClientFactory::new(self.config.clone(), name, factory),
                    *timeout,
                ))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS endpoints connect over TCP",
            )),
        }
    }
}

impl TlsClientEndpoint {
    /// Connects as a future yielding an
    /// [`AsyncStream`](torsion_protocol::AsyncStream) once the handshake
    /// has completed; see [`ReactorTls::connect_tls_stream`](crate::ReactorTls::connect_tls_stream)
    /// for failures and cancellation. The endpoint's timeout (if any)
    /// bounds the connect; the handshake has its default timeout.
    ///
    /// # Errors
    /// As for [`TlsClientEndpoint::connect`].
    pub fn connect_stream(&self, reactor: &Reactor) -> io::Result<Connect> {
        let (host, port, timeout) = self.tcp_target()?;
        let name = server_name(host)?;
        Ok(Connect::wrapped(true, |factory| {
            reactor.connect_tcp(
                host,
                port,
                TlsClientFactory::new(self.config.clone(), name, factory),
                timeout,
            )
        }))
    }

    fn tcp_target(&self) -> io::Result<(&str, u16, Duration)> {
        match &self.endpoint {
            ClientEndpoint::Tcp {
                host,
                port,
                timeout,
            } => Ok((host, *port, *timeout)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS endpoints connect over TCP",
            )),
        }
    }
}

/// One `:`-separated field as written (escapes kept), and where it starts.
struct RawField<'a> {
    raw: &'a str,
    start: usize,
}

impl RawField<'_> {
    /// The key before an unescaped `=`, if it is a plain word, and the
    /// unescaped value.
    fn key_value(&self) -> Option<(&str, String)> {
        let equals = self.raw.find('=')?;
        let key = &self.raw[..equals];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        Some((key, unescape(&self.raw[equals + 1..])))
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn split(input: &str) -> Vec<RawField<'_>> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (at, c) in input.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ':' => {
                fields.push(RawField {
                    raw: &input[start..at],
                    start,
                });
                start = at + 1;
            }
            _ => {}
        }
    }
    fields.push(RawField {
        raw: &input[start..],
        start,
    });
    fields
}

/// The TLS fields of a string, and the rest rewritten as a `tcp:` string
/// with a map from its offsets back to the original's.
struct Split {
    tls: Vec<(String, String, usize)>,
    tcp: String,
    /// (offset in `tcp`, offset in the original) for each kept field.
    offsets: Vec<(usize, usize)>,
}

fn take_tls_fields(
    input: &str,
    kind: &str,
    tls_keys: &[&str],
    refused: &[(&str, &str)],
) -> Result<Split, EndpointError> {
    let fields = split(input);
    let error = |position: usize, message: String| EndpointError {
        input: input.to_owned(),
        position,
        message,
    };
    if fields[0].raw != kind {
        return Err(error(0, format!("not a {kind}: endpoint")));
    }
    let mut split = Split {
        tls: Vec::new(),
        tcp: String::from("tcp"),
        offsets: vec![(0, 0)],
    };
    for field in &fields[1..] {
        if let Some((key, value)) = field.key_value() {
            if let Some((_, why)) = refused.iter().find(|(name, _)| *name == key) {
                return Err(error(
                    field.start,
                    format!("{key}= is not supported: {why}"),
                ));
            }
            if tls_keys.contains(&key) {
                if split.tls.iter().any(|(k, _, _)| k == key) {
                    return Err(error(field.start, format!("{key} given twice")));
                }
                split.tls.push((key.to_owned(), value, field.start));
                continue;
            }
        }
        split.tcp.push(':');
        split.offsets.push((split.tcp.len(), field.start));
        split.tcp.push_str(field.raw);
    }
    Ok(split)
}

impl Split {
    fn get(&self, key: &str) -> Option<&str> {
        self.tls
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    /// An error of the `tcp:` parser, pointed into the original string.
    fn map_error(&self, input: &str, error: EndpointError) -> TlsEndpointError {
        let (tcp_at, original_at) = self
            .offsets
            .iter()
            .rev()
            .find(|(tcp_at, _)| *tcp_at <= error.position)
            .copied()
            .unwrap_or((0, 0));
        let position = if error.position >= self.tcp.len() {
            input.len()
        } else {
            original_at + (error.position - tcp_at)
        };
        TlsEndpointError::Syntax(EndpointError {
            input: input.to_owned(),
            position: position.min(input.len()),
            message: error.message,
        })
    }
}

/// Twisted parameters that rustls cannot honour, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "sslmethod",
        "rustls chooses the protocol version itself (TLS 1.2 and 1.3; older versions are never offered)",
    ),
    (
        "method",
        "rustls chooses the protocol version itself (TLS 1.2 and 1.3; older versions are never offered)",
    ),
    (
        "dhParameters",
        "rustls does not do finite-field Diffie-Hellman; it uses elliptic-curve key exchange",
    ),
];

/// Parses a TLS server endpoint string (Twisted's `ssl:` strings for
/// `serverFromString`) and loads its files: `ssl:443:privateKey=key.pem:certKey=chain.pem`.
/// As in Twisted, without `certKey` the certificate is read from the
/// `privateKey` file; `extraCertChain` adds intermediate certificates.
/// `interface` and `backlog` are as for `tcp:`.
///
/// # Errors
/// A syntax error pointing at the bad part (`sslmethod=` and
/// `dhParameters=` are refused, saying why), or a file that cannot be
/// used, named.
#[doc(alias = "serverFromString")]
pub fn tls_server_from_string(input: &str) -> Result<TlsServerEndpoint, TlsEndpointError> {
    let split = take_tls_fields(
        input,
        "ssl",
        &["privateKey", "certKey", "extraCertChain"],
        REFUSED,
    )
    .map_err(TlsEndpointError::Syntax)?;
    let endpoint = server_from_string(&split.tcp).map_err(|e| split.map_error(input, e))?;
    let key = split.get("privateKey").ok_or_else(|| {
        TlsEndpointError::Syntax(EndpointError {
            input: input.to_owned(),
            position: input.len(),
            message: "missing privateKey= (the server's key, PEM)".to_owned(),
        })
    })?;
    let cert = split.get("certKey").unwrap_or(key);
    let mut chain = load_certificates(Path::new(cert))?;
    if let Some(extra) = split.get("extraCertChain") {
        chain.extend(load_certificates(Path::new(extra))?);
    }
    let private = load_private_key(Path::new(key))?;
    let config = ServerSettings::new(chain, private)
        .map_err(|e| ConfigError {
            path: Some(PathBuf::from(key)),
            ..e
        })?
        .build()?;
    Ok(TlsServerEndpoint { endpoint, config })
}

/// Parses a TLS client endpoint string (Twisted's `tls:` strings for
/// `clientFromString`) and loads its files:
/// `tls:example.org:443:trustRoots=ca.pem[:certificate=chain.pem:privateKey=key.pem][:timeout=10]`.
/// `trustRoots` is a PEM file of CA certificates, or a directory of them
/// (as in Twisted); without it, the platform's trust roots are used if
/// the `native-roots` feature is on, and the string is refused if not.
/// The host name is sent as SNI and verified.
///
/// # Errors
/// As for [`tls_server_from_string`].
#[doc(alias = "clientFromString")]
pub fn tls_client_from_string(input: &str) -> Result<TlsClientEndpoint, TlsEndpointError> {
    let split = take_tls_fields(
        input,
        "tls",
        &["trustRoots", "certificate", "privateKey"],
        REFUSED,
    )
    .map_err(TlsEndpointError::Syntax)?;
    let endpoint = client_from_string(&split.tcp).map_err(|e| split.map_error(input, e))?;
    let mut settings = ClientSettings::new();
    match split.get("trustRoots") {
        Some(roots) => settings = trust_roots(settings, Path::new(roots))?,
        None => settings = platform_roots(settings, input)?,
    }
    match (split.get("certificate"), split.get("privateKey")) {
        (Some(cert), key) => {
            settings = settings.client_certificate_pem_files(cert, key.unwrap_or(cert))?;
        }
        (None, Some(_)) => {
            let at = split
                .tls
                .iter()
                .find(|(k, _, _)| k == "privateKey")
                .map_or(0, |(_, _, at)| *at);
            return Err(TlsEndpointError::Syntax(EndpointError {
                input: input.to_owned(),
                position: at,
                message: "privateKey= without certificate=".to_owned(),
            }));
        }
        (None, None) => {}
    }
    let config = settings.build()?;
    Ok(TlsClientEndpoint { endpoint, config })
}

/// Trusts `roots`: a PEM file, or a directory of `.pem` / `.crt` files.
fn trust_roots(mut settings: ClientSettings, roots: &Path) -> Result<ClientSettings, ConfigError> {
    if roots.is_dir() {
        let entries = std::fs::read_dir(roots).map_err(|e| ConfigError {
            path: Some(roots.to_owned()),
            problem: format!("cannot read the directory: {e}"),
        })?;
        let mut found = false;
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|ext| ext == "pem" || ext == "crt")
            {
                settings = settings.trust_pem_file(&path)?;
                found = true;
            }
        }
        if !found {
            return Err(ConfigError {
                path: Some(roots.to_owned()),
                problem: "no .pem or .crt file in the directory".to_owned(),
            });
        }
    } else {
        settings = settings.trust_pem_file(roots)?;
    }
    Ok(settings)
}

/// No `trustRoots=`: the platform's roots with the `native-roots`
/// feature, an error without it.
#[cfg(feature = "native-roots")]
fn platform_roots(
    settings: ClientSettings,
    _input: &str,
) -> Result<ClientSettings, TlsEndpointError> {
    Ok(settings.trust_native_roots()?)
}

/// No `trustRoots=`: the platform's roots with the `native-roots`
/// feature, an error without it.
#[cfg(not(feature = "native-roots"))]
fn platform_roots(
    _settings: ClientSettings,
    input: &str,
) -> Result<ClientSettings, TlsEndpointError> {
    Err(TlsEndpointError::Syntax(EndpointError {
        input: input.to_owned(),
        position: input.len(),
        message: "missing trustRoots= (a PEM file or directory of CA certificates; \
                  the platform's trust roots need torsion-tls's `native-roots` feature)"
            .to_owned(),
    }))
}
