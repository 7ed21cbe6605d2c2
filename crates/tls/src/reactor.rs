//! Listening and connecting with TLS (Twisted's `IReactorSSL`): factories
//! that wrap each protocol in a [`TlsProtocol`], and the [`ReactorTls`]
//! extension trait.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use torsion_protocol::{
    Address, ClientFactory, CloseReason, Connect, ConnectError, Connected, Connector, Factory,
    ListenOptions, ListeningPort, Protocol, Reactor, ReactorTcp, ReactorUnix, UnixListenOptions,
};

use crate::connection::{HeardSlot, TlsProtocol, DEFAULT_HANDSHAKE_TIMEOUT};

/// Wraps a factory's protocols as TLS servers (what `listenSSL` does
/// with its context factory).
pub struct TlsServerFactory<F> {
    inner: F,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl<F: Factory> TlsServerFactory<F> {
    /// `inner`'s protocols, each behind TLS with `config`.
    pub fn new(config: Arc<ServerConfig>, inner: F) -> TlsServerFactory<F> {
        TlsServerFactory {
            inner,
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Sets the handshake timeout of each connection (default 30 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &F {
        &self.inner
    }
}

impl<F: Factory> Factory for TlsServerFactory<F> {
    type Protocol = TlsProtocol<F::Protocol>;

    fn build_protocol(&self, peer: &Address) -> Option<Self::Protocol> {
        let inner = self.inner.build_protocol(peer)?;
        match TlsProtocol::server(self.config.clone(), inner) {
            Ok(protocol) => Some(protocol.handshake_timeout(self.handshake_timeout)),
            Err(error) => {
                tracing::error!(%peer, %error, "cannot start a TLS session");
                None
            }
        }
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// Wraps a client factory's protocols as TLS clients of one server name
/// (what `connectSSL` does).
///
/// A failed handshake happens on an established connection: the protocol
/// hears `connection_lost` and the factory
/// [`ClientFactory::client_connection_lost`], each with a
/// [`CloseReason::ProtocolError`] that names the cause (as in Twisted,
/// whose TLS failures arrive through `connectionLost`), never
/// `client_connection_failed`. The factory hears the reason its
/// protocol heard, not the TCP connection's: a handshake timeout, which
/// aborts the TCP connection, is the same `ProtocolError("TLS handshake
/// not completed within …")` for both, not [`CloseReason::Aborted`].
pub struct TlsClientFactory<F> {
    inner: F,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    handshake_timeout: Duration,
    /// The reason the last protocol to close told its inner protocol,
    /// when the TLS layer chose it; the connector calls
    /// `client_connection_lost` right after the protocol's
    /// `connection_lost`.
    heard: HeardSlot,
}

impl<F: ClientFactory> TlsClientFactory<F> {
    /// `inner`'s protocols, each behind TLS with `config`, verifying
    /// `server_name`.
    pub fn new(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        inner: F,
    ) -> TlsClientFactory<F> {
        TlsClientFactory {
            inner,
            config,
            server_name,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            heard: HeardSlot::default(),
        }
    }

    /// Sets the handshake timeout of each connection (default 30 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

impl<F: ClientFactory> Factory for TlsClientFactory<F> {
    type Protocol = TlsProtocol<F::Protocol>;

    fn build_protocol(&self, peer: &Address) -> Option<Self::Protocol> {
        let inner = self.inner.build_protocol(peer)?;
        match TlsProtocol::client(self.config.clone(), self.server_name.clone(), inner) {
            Ok(protocol) => Some(
                protocol
                    .handshake_timeout(self.handshake_timeout)
                    .report_to(self.heard.clone()),
            ),
            Err(error) => {
                tracing::error!(%peer, %error, "cannot start a TLS session");
                None
            }
        }
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

impl<F: ClientFactory> ClientFactory for TlsClientFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        self.inner.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.inner.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        // Taken, so that a connection that never had a protocol (its
        // `build_protocol` refused) is told the transport's reason.
        let heard = self.heard.borrow_mut().take();
        self.inner
            .client_connection_lost(connector, heard.as_ref().unwrap_or(reason));
    }
}

/// A server name from a host string: a DNS name or an IP address.
///
/// # Errors
/// `InvalidInput` if `host` is neither.
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a DNS name or IP address for TLS: {e}"),
        )
    })
}

/// TLS listening and connecting on a [`Reactor`] (Twisted's
/// `IReactorSSL`), over TCP and Unix sockets.
///
/// ```no_run
/// use torsion_protocol::{testing::Echo, Address, Factory, Reactor};
/// use torsion_tls::{ReactorTls, ServerSettings};
///
/// struct EchoFactory;
/// impl Factory for EchoFactory {
///     type Protocol = Echo;
///     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
///         Some(Echo)
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let config = ServerSettings::from_pem_files("chain.pem", "key.pem")?.build()?;
/// reactor.listen_tls(8443, config, EchoFactory)?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "IReactorSSL")]
pub trait ReactorTls: ReactorTcp + ReactorUnix {
    /// Listens on `port` of every IPv4 interface and serves each
    /// connection over TLS with a protocol from `factory` (Twisted's
    /// `listenSSL`).
    ///
    /// # Errors
    /// As for [`ReactorTcp::listen_tcp`].
    #[doc(alias = "listenSSL")]
    fn listen_tls<F: Factory>(
        &self,
        port: u16,
        config: Arc<ServerConfig>,
        factory: F,
    ) -> io::Result<ListeningPort> {
        self.listen_tcp(port, TlsServerFactory::new(config, factory))
    }

    /// Like [`ReactorTls::listen_tls`], with a chosen interface and
    /// backlog.
    ///
    /// # Errors
    /// As for [`ReactorTcp::listen_tcp`].
    fn listen_tls_with<F: Factory>(
        &self,
        port: u16,
        config: Arc<ServerConfig>,
        factory: F,
        options: ListenOptions,
    ) -> io::Result<ListeningPort> {
        self.listen_tcp_with(port, TlsServerFactory::new(config, factory), options)
    }

    /// Connects to `host` on `port` over TLS (Twisted's `connectSSL`).
    /// `host` is sent as SNI and the server's certificate must be valid
    /// for it (unless `config` was built with
    /// [`ClientSettings::dangerous_accept_any_server_certificate`](crate::ClientSettings::dangerous_accept_any_server_certificate)).
    ///
    /// # Errors
    /// `InvalidInput` if `host` is neither a DNS name nor an IP address.
    #[doc(alias = "connectSSL")]
    fn connect_tls<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        config: Arc<ClientConfig>,
        factory: F,
        timeout: Duration,
    ) -> io::Result<Connector> {
        let name = server_name(host)?;
        Ok(self.connect_tcp(
            host,
            port,
            TlsClientFactory::new(config, name, factory),
            timeout,
        ))
    }

    /// Listens on the Unix socket `path` and serves each connection over
    /// TLS.
    ///
    /// # Errors
    /// As for [`ReactorUnix::listen_unix`].
    fn listen_tls_unix<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        config: Arc<ServerConfig>,
        factory: F,
        options: UnixListenOptions,
    ) -> io::Result<ListeningPort> {
        self.listen_unix(path, TlsServerFactory::new(config, factory), options)
    }

    /// Connects to the Unix socket `path` over TLS, verifying
    /// `server_name`.
    fn connect_tls_unix<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        server_name: ServerName<'static>,
        config: Arc<ClientConfig>,
        factory: F,
        timeout: Duration,
    ) -> Connector {
        self.connect_unix(
            path,
            TlsClientFactory::new(config, server_name, factory),
            timeout,
        )
    }

    /// Connects to `host` on `port` over TLS as a future (asyncio's
    /// `open_connection(ssl=...)`): it yields an
    /// [`AsyncStream`](torsion_protocol::AsyncStream) over the TLS
    /// transport once the handshake has **completed** (the stream's
    /// [`transport`](torsion_protocol::AsyncStream::transport) then
    /// reaches the negotiated details through [`TlsTransport::of`](crate::TlsTransport::of)).
    ///
    /// `timeout` bounds the TCP connect and, separately, the handshake.
    /// A refused, unreachable or timed-out connect fails the future as for
    /// [`ReactorAsync::connect_tcp_stream`](torsion_protocol::ReactorAsync::connect_tcp_stream);
    /// a failed handshake (a TLS alert, a certificate that does not
    /// verify, the peer closing, the handshake timeout) fails it with
    /// [`ConnectError::Failed`], whose error is of kind `InvalidData` for
    /// a TLS failure or timeout and names the cause. (Under TLS 1.3 a
    /// server that refuses our client certificate says so only after our
    /// side of the handshake is complete: the future has resolved, and
    /// the refusal is the stream's first read error.) Dropping the future
    /// cancels the attempt: before the TCP connection is made, the attempt
    /// is abandoned; during the handshake, the connection is aborted (the
    /// server is reset, and for [`ReactorTls::connect_tls_protocol`] the
    /// protocol, which has seen `connection_made`, hears
    /// [`CloseReason::Aborted`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use torsion_protocol::Reactor;
    /// use torsion_tls::{ClientSettings, ReactorTls};
    ///
    /// let reactor = Reactor::new()?;
    /// let config = ClientSettings::new().trust_pem_file("ca.pem")?.build()?;
    /// let connect = reactor.connect_tls_stream("localhost", 8443, config, Duration::from_secs(5))?;
    /// let stream = reactor.run_until_complete(connect)??;
    /// # let _ = stream;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if `host` is neither a DNS name nor an IP address.
    fn connect_tls_stream(
        &self,
        host: &str,
        port: u16,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> io::Result<Connect> {
        let name = server_name(host)?;
        Ok(Connect::wrapped(true, |factory| {
            self.connect_tcp(
                host,
                port,
                TlsClientFactory::new(config, name, factory).handshake_timeout(timeout),
                timeout,
            )
        }))
    }

    /// Connects `protocol` to `host` on `port` over TLS, and yields it
    /// once the handshake has completed (Twisted's `connectProtocol` with
    /// a TLS endpoint): the protocol has seen `connection_made` and
    /// `handshake_completed` by then, and [`Connected::transport`] is the
    /// TLS transport. Failures and cancellation as for
    /// [`ReactorTls::connect_tls_stream`].
    ///
    /// # Errors
    /// `InvalidInput` if `host` is neither a DNS name nor an IP address.
    #[doc(alias = "connectProtocol")]
    fn connect_tls_protocol<P: Protocol>(
        &self,
        host: &str,
        port: u16,
        config: Arc<ClientConfig>,
        protocol: P,
        timeout: Duration,
    ) -> io::Result<Connect<Connected<P>>> {
        let name = server_name(host)?;
        Ok(Connect::wrapped_protocol(protocol, true, |factory| {
            self.connect_tcp(
                host,
                port,
                TlsClientFactory::new(config, name, factory).handshake_timeout(timeout),
                timeout,
            )
        }))
    }

    /// Connects to the Unix socket `path` over TLS, verifying
    /// `server_name`, as a future; see [`ReactorTls::connect_tls_stream`].
    fn connect_tls_unix_stream(
        &self,
        path: impl AsRef<Path>,
        server_name: ServerName<'static>,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Connect {
        Connect::wrapped(true, |factory| {
            self.connect_unix(
                path,
                TlsClientFactory::new(config, server_name, factory).handshake_timeout(timeout),
                timeout,
            )
        })
    }
}

impl ReactorTls for Reactor {}
