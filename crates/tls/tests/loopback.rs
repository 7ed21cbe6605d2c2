//! TLS between two Torsion endpoints over real sockets (TCP and Unix) on
//! loopback.

mod support;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use support::pki;
use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Echo, Watchdog};
use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, ListenOptions, Protocol,
    Reactor, ReactorTcp, TransportRef, UnixListenOptions,
};
use torsion_tls::rustls::{ClientConfig, ProtocolVersion};
use torsion_tls::{server_name, ReactorTls, TlsClientFactory, TlsTransport};

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(60))
}

type Log = Rc<RefCell<Vec<String>>>;

/// The server: echoes, and notes what TLS negotiated.
struct Server {
    log: Log,
}

thread_local! {
    /// Every server-side TLS transport, weakly: all must be freed once
    /// their connections are over.
    static SEEN: RefCell<Vec<std::rc::Weak<dyn torsion_protocol::Transport>>> =
        const { RefCell::new(Vec::new()) };
}

impl Protocol for Server {
    fn handshake_completed(&mut self, transport: &TransportRef) {
        SEEN.with(|seen| seen.borrow_mut().push(Rc::downgrade(transport)));
        let tls = TlsTransport::of(transport).unwrap();
        let alpn = tls.alpn_protocol().map(|p| String::from_utf8(p).unwrap());
        self.log.borrow_mut().push(format!(
            "server handshake alpn={alpn:?} sni={:?} client certs={}",
            tls.server_name(),
            tls.peer_certificates().len()
        ));
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

struct ServerFactory {
    log: Log,
}

impl Factory for ServerFactory {
    type Protocol = Server;
    fn build_protocol(&self, _peer: &Address) -> Option<Server> {
        Some(Server {
            log: self.log.clone(),
        })
    }
}

/// The client: sends `total` bytes in 1 KiB writes, closes when all came
/// back.
struct Client {
    log: Log,
    total: usize,
    received: usize,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &TransportRef) {
        let block = [0x5a_u8; 1024];
        for _ in 0..self.total / 1024 {
            transport.write(&block);
        }
    }
    fn handshake_completed(&mut self, transport: &TransportRef) {
        let tls = TlsTransport::of(transport).unwrap();
        assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(tls.peer_certificates()[0], pki().server.cert);
        self.log.borrow_mut().push("client handshake".into());
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        assert!(data.iter().all(|&b| b == 0x5a));
        self.received += data.len();
        if self.received == self.total {
            self.log
                .borrow_mut()
                .push(format!("client got {}", self.received));
            transport.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("client lost: {reason}"));
    }
}

struct ClientFactoryImpl {
    log: Log,
    total: usize,
}

impl Factory for ClientFactoryImpl {
    type Protocol = Client;
    fn build_protocol(&self, _peer: &Address) -> Option<Client> {
        Some(Client {
            log: self.log.clone(),
            total: self.total,
            received: 0,
        })
    }
}

impl ClientFactory for ClientFactoryImpl {
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.log.borrow_mut().push(format!("failed: {reason}"));
        connector.reactor().unwrap().stop().unwrap();
    }
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        self.log.borrow_mut().push(format!(
            "factory lost clean={}: {reason}",
            reason.is_clean()
        ));
        connector.reactor().unwrap().stop().unwrap();
    }
}

fn mutual_configs() -> (Arc<torsion_tls::rustls::ServerConfig>, Arc<ClientConfig>) {
    let pki = pki();
    let server = pki
        .server_settings()
        .require_client_certificate(pki.roots())
        .alpn(["echo/1"])
        .build()
        .unwrap();
    let client = pki
        .client_settings()
        .client_certificate(vec![pki.client.cert.clone()], pki.client.key())
        .alpn(["echo/1"])
        .build()
        .unwrap();
    (server, client)
}

#[test]
fn echo_over_tcp_with_mutual_tls_and_alpn() {
    let fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let (server_config, client_config) = mutual_configs();
    let port = reactor
        .listen_tls(0, server_config, ServerFactory { log: log.clone() })
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    reactor
        .connect_tls(
            "127.0.0.1",
            at,
            client_config,
            ClientFactoryImpl {
                log: log.clone(),
                total: 4 * 1024 * 1024,
            },
            Duration::from_secs(5),
        )
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow();
    assert!(
        log.contains(&"server handshake alpn=Some(\"echo/1\") sni=None client certs=1".into()),
        "{log:?}"
    );
    assert!(log.contains(&"client handshake".into()), "{log:?}");
    assert!(
        log.contains(&format!("client got {}", 4 * 1024 * 1024)),
        "{log:?}"
    );
    assert!(
        log.last().unwrap().starts_with("factory lost clean=true"),
        "{log:?}"
    );
    drop(port);
    drop(reactor);
    fds.check();
    SEEN.with(|seen| {
        let seen = seen.borrow();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|weak| weak.upgrade().is_none()),
            "a TLS transport leaked"
        );
    });
}

#[test]
fn echo_over_a_unix_socket_with_sni() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let path = torsion_protocol::testing::socket_path("tls");
    reactor
        .listen_tls_unix(
            &path,
            pki().server_config(),
            ServerFactory { log: log.clone() },
            UnixListenOptions::default(),
        )
        .unwrap();
    reactor.connect_tls_unix(
        &path,
        server_name("localhost").unwrap(),
        pki().client_config(),
        ClientFactoryImpl {
            log: log.clone(),
            total: 64 * 1024,
        },
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    let log = log.borrow();
    assert!(
        log.contains(&"server handshake alpn=None sni=Some(\"localhost\") client certs=0".into()),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("client got {}", 64 * 1024)),
        "{log:?}"
    );
    assert!(
        log.last().unwrap().starts_with("factory lost clean=true"),
        "{log:?}"
    );
}

#[test]
fn a_failed_handshake_reaches_the_client_factory_with_its_cause() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let stranger = support::Pki::new();
    let port = reactor
        .listen_tls(0, pki().server_config(), ServerFactory { log: log.clone() })
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    reactor
        .connect_tls(
            "127.0.0.1",
            at,
            stranger.client_config(),
            ClientFactoryImpl {
                log: log.clone(),
                total: 1024,
            },
            Duration::from_secs(5),
        )
        .unwrap();
    reactor.run().unwrap();
    let log = log.borrow();
    let lost = log.iter().find(|l| l.starts_with("client lost")).unwrap();
    assert!(lost.contains("UnknownIssuer"), "{lost}");
    let factory = log.last().unwrap();
    assert!(factory.starts_with("factory lost clean=false"), "{factory}");
    assert!(factory.contains("UnknownIssuer"), "{factory}");
}

#[test]
fn a_handshake_timeout_reaches_the_client_factory_as_the_protocol_heard_it() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();

    // A TCP server that accepts and never says a word of TLS.
    struct Silent;
    impl Protocol for Silent {
        fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    }
    struct SilentFactory;
    impl Factory for SilentFactory {
        type Protocol = Silent;
        fn build_protocol(&self, _peer: &Address) -> Option<Silent> {
            Some(Silent)
        }
    }
    let port = reactor
        .listen_tcp_with(
            0,
            SilentFactory,
            ListenOptions::interface(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        )
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    let factory = TlsClientFactory::new(
        pki().client_config(),
        server_name("localhost").unwrap(),
        ClientFactoryImpl {
            log: log.clone(),
            total: 1024,
        },
    )
    .handshake_timeout(Duration::from_millis(50));
    reactor.connect_tcp("127.0.0.1", at, factory, Duration::from_secs(5));
    reactor.run().unwrap();
    let log = log.borrow();
    let expected =
        "connection was closed for a protocol error: TLS handshake not completed within 50ms";
    let lost = log.iter().find(|l| l.starts_with("client lost")).unwrap();
    assert_eq!(lost, &format!("client lost: {expected}"));
    // The factory hears the same, not the aborted TCP connection's reason.
    let factory = log.last().unwrap();
    assert_eq!(factory, &format!("factory lost clean=false: {expected}"));
}

#[test]
fn plaintext_client_on_a_tls_port_is_refused_with_a_reason() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let port = reactor
        .listen_tls(0, pki().server_config(), ServerFactory { log: log.clone() })
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();

    struct Plain;
    impl Protocol for Plain {
        fn connection_made(&mut self, transport: &TransportRef) {
            transport.write(b"GET / HTTP/1.0\r\n\r\n");
        }
        fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    }
    struct PlainFactory(Log);
    impl Factory for PlainFactory {
        type Protocol = Plain;
        fn build_protocol(&self, _peer: &Address) -> Option<Plain> {
            Some(Plain)
        }
    }
    impl ClientFactory for PlainFactory {
        fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
            self.0.borrow_mut().push(format!("plain lost: {reason}"));
            connector.reactor().unwrap().stop().unwrap();
        }
    }
    reactor.connect_tcp(
        "127.0.0.1",
        at,
        PlainFactory(log.clone()),
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    // The server closed the connection (the client sees the end), and no
    // server protocol saw a handshake.
    assert!(log.borrow().iter().any(|l| l.starts_with("plain lost")));
    assert!(!log.borrow().iter().any(|l| l.contains("server handshake")));
    let _ = Echo;
}

#[test]
fn endpoint_strings_listen_and_connect() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("torsion-tls-lb-ep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.server.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca.cert_pem).unwrap();
    let d = dir.display().to_string().replace(':', "\\:");
    let server = torsion_tls::endpoints::tls_server_from_string(&format!(
        "ssl:0:interface=127.0.0.1:privateKey={d}/key.pem:certKey={d}/cert.pem"
    ))
    .unwrap();
    let log: Log = Rc::default();
    let port = server
        .listen(&reactor, ServerFactory { log: log.clone() })
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    let client = torsion_tls::endpoints::tls_client_from_string(&format!(
        "tls:localhost:{at}:trustRoots={d}/ca.pem"
    ))
    .unwrap();
    client
        .connect(
            &reactor,
            ClientFactoryImpl {
                log: log.clone(),
                total: 1024,
            },
        )
        .unwrap();
    reactor.run().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let log = log.borrow();
    assert!(log.contains(&"client got 1024".into()), "{log:?}");
    assert!(
        log.last().unwrap().starts_with("factory lost clean=true"),
        "{log:?}"
    );
}
