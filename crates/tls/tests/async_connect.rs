//! Connecting over TLS as a future (`connect_tls_stream`,
//! `connect_tls_protocol`, the `tls:` endpoint's `connect_stream`) against
//! Torsion TLS servers on loopback.

mod support;

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use support::pki;
use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Echo, Watchdog};
use torsion_protocol::{
    Address, CloseReason, ConnectError, ConnectorState, Factory, ListenOptions, ListeningPort,
    Protocol, Reactor, ReactorAsync, TransportRef,
};
use torsion_tls::{server_name, ReactorTls, TlsTransport};

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(60))
}

const TIMEOUT: Duration = Duration::from_secs(10);

struct EchoFactory;

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
}

fn loopback() -> ListenOptions {
    ListenOptions::interface(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn tls_echo_server(reactor: &Reactor) -> (ListeningPort, u16) {
    let port = reactor
        .listen_tls_with(0, pki().server_config(), EchoFactory, loopback())
        .unwrap();
    let at = port.get_host().socket_addr().unwrap().port();
    (port, at)
}

#[test]
fn a_stream_is_yielded_after_the_handshake_and_echoes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (_port, at) = tls_echo_server(&reactor);
    let connect = reactor
        .connect_tls_stream("127.0.0.1", at, pki().client_config(), TIMEOUT)
        .unwrap();
    let echoed = reactor
        .run_until_complete(async {
            let stream = connect.await.expect("connected");
            // Yielded after the handshake: its details are there already.
            let transport = stream.transport().unwrap();
            let tls = TlsTransport::of(&transport).expect("a TLS transport");
            assert!(tls.is_handshake_complete());
            assert!(tls.protocol_version().is_some());
            assert_eq!(tls.peer_certificates().len(), 1);
            drop(transport);
            stream.write_all(b"hello over TLS").await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 14 {
                let n = stream.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "end of stream before the echo");
                got.extend_from_slice(&buf[..n]);
            }
            stream.close().await.unwrap();
            got
        })
        .unwrap();
    assert_eq!(echoed, b"hello over TLS");
}

#[test]
fn a_failed_handshake_is_the_connect_error() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (_port, at) = tls_echo_server(&reactor);
    // Trusts another CA: the server's certificate does not verify.
    let stranger = support::Pki::new();
    let connect = reactor
        .connect_tls_stream("127.0.0.1", at, stranger.client_config(), TIMEOUT)
        .unwrap();
    let connector = connect.connector().clone();
    let result = reactor.run_until_complete(connect).unwrap();
    match result {
        Err(ConnectError::Failed(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }
    assert_eq!(connector.state(), ConnectorState::Disconnected);
}

#[test]
fn a_refused_tcp_connect_is_the_connect_error() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    // A port that was free a moment ago: nothing listens there now.
    let (port, at) = tls_echo_server(&reactor);
    port.stop_listening();
    let connect = reactor
        .connect_tls_stream("127.0.0.1", at, pki().client_config(), TIMEOUT)
        .unwrap();
    let result = reactor.run_until_complete(connect).unwrap();
    assert!(
        matches!(result, Err(ConnectError::Refused(_))),
        "{result:?}"
    );
}

#[test]
fn a_bad_host_name_is_refused_at_once() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let error = reactor
        .connect_tls_stream("not a name", 443, pki().client_config(), TIMEOUT)
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn the_handshake_timeout_fails_the_connect() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    // A plain TCP server that never answers the ClientHello.
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let at = listener.get_host().socket_addr().unwrap().port();
    let connect = reactor
        .connect_tls_stream(
            "127.0.0.1",
            at,
            pki().client_config(),
            Duration::from_millis(50),
        )
        .unwrap();
    let result = reactor
        .run_until_complete(async move {
            let _silent = listener.accept().await;
            connect.await
        })
        .unwrap();
    match result {
        Err(ConnectError::Failed(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains("not completed within"), "{e}");
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
}

#[test]
fn dropping_the_future_during_the_handshake_aborts_the_connection() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let at = listener.get_host().socket_addr().unwrap().port();
    let connect = reactor
        .connect_tls_stream("127.0.0.1", at, pki().client_config(), TIMEOUT)
        .unwrap();
    let connector = connect.connector().clone();
    // The server takes the connection and reads the ClientHello's first
    // bytes: the client waits for the server's answer.
    let (listener, server_side) = reactor
        .run_until_complete(async move {
            let stream = listener.accept().await;
            let mut buf = [0u8; 1];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
            (listener, stream)
        })
        .unwrap();
    assert_eq!(connector.state(), ConnectorState::Connected);
    drop(connect);
    // The client's side is aborted: the server reads to the reset.
    let ended = reactor
        .run_until_complete(async move {
            let mut buf = [0u8; 4096];
            loop {
                match server_side.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e.kind()),
                }
            }
        })
        .unwrap();
    assert_eq!(ended, Err(io::ErrorKind::ConnectionReset));
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    drop(listener);
}

/// Notes `connection_made` and the reason of `connection_lost`, then
/// stops the reactor.
struct Cancelled {
    log: Rc<RefCell<Vec<String>>>,
    reactor: Reactor,
}

impl Protocol for Cancelled {
    fn connection_made(&mut self, _transport: &TransportRef) {
        self.log.borrow_mut().push("made".into());
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.stop().unwrap();
    }
}

#[test]
fn dropping_a_protocol_future_during_the_handshake_aborts_the_connection() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let at = listener.get_host().socket_addr().unwrap().port();
    let log = Rc::new(RefCell::new(Vec::new()));
    let connect = reactor
        .connect_tls_protocol(
            "127.0.0.1",
            at,
            pki().client_config(),
            Cancelled {
                log: log.clone(),
                reactor: reactor.clone(),
            },
            TIMEOUT,
        )
        .unwrap();
    let connector = connect.connector().clone();
    // The server reads the ClientHello's first byte and never answers.
    let server_side = reactor
        .run_until_complete(async move {
            let stream = listener.accept().await;
            let mut buf = [0u8; 1];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
            stream
        })
        .unwrap();
    assert_eq!(*log.borrow(), ["made"]);
    drop(connect);
    reactor.run().unwrap();
    // A cancel: the protocol hears an abort, not a clean close (nor a
    // truncation, which is what TLS makes of a clean TCP close).
    assert_eq!(*log.borrow(), ["made", "lost: Aborted"]);
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    // The peer was reset, not sent an end of stream.
    let ended = reactor
        .run_until_complete(async move {
            let mut buf = [0u8; 4096];
            loop {
                match server_side.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e.kind()),
                }
            }
        })
        .unwrap();
    assert_eq!(ended, Err(io::ErrorKind::ConnectionReset));
}

#[test]
fn dropping_the_future_before_the_tcp_connect_abandons_it() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (_port, at) = tls_echo_server(&reactor);
    let connect = reactor
        .connect_tls_stream("127.0.0.1", at, pki().client_config(), TIMEOUT)
        .unwrap();
    let connector = connect.connector().clone();
    assert_eq!(connector.state(), ConnectorState::Connecting);
    drop(connect);
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    // Nothing connects later: the reactor runs out of work.
    reactor
        .run_until_complete(reactor.sleep(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(connector.state(), ConnectorState::Disconnected);
}

type Log = Rc<RefCell<Vec<&'static str>>>;

struct Recorder {
    log: Log,
}

impl Protocol for Recorder {
    fn connection_made(&mut self, _transport: &TransportRef) {
        self.log.borrow_mut().push("made");
    }
    fn handshake_completed(&mut self, _transport: &TransportRef) {
        self.log.borrow_mut().push("handshake");
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {
        self.log.borrow_mut().push("data");
    }
}

#[test]
fn a_protocol_is_yielded_after_its_handshake() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (_port, at) = tls_echo_server(&reactor);
    let log: Log = Rc::default();
    let connect = reactor
        .connect_tls_protocol(
            "127.0.0.1",
            at,
            pki().client_config(),
            Recorder { log: log.clone() },
            TIMEOUT,
        )
        .unwrap();
    let connected = reactor.run_until_complete(connect).unwrap().unwrap();
    assert_eq!(*log.borrow(), ["made", "handshake"]);
    let tls = TlsTransport::of(&connected.transport).expect("the TLS transport");
    assert!(tls.is_handshake_complete());
    connected.transport.lose_connection();

    // And a failed handshake fails it.
    let stranger = support::Pki::new();
    let connect = reactor
        .connect_tls_protocol(
            "127.0.0.1",
            at,
            stranger.client_config(),
            Recorder { log: Rc::default() },
            TIMEOUT,
        )
        .unwrap();
    let result = reactor.run_until_complete(connect).unwrap();
    assert!(
        matches!(&result, Err(ConnectError::Failed(e)) if e.kind() == io::ErrorKind::InvalidData),
        "{result:?}"
    );
}

#[test]
fn unix_socket_and_endpoint_string_streams() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let dir = std::env::temp_dir().join(format!("torsion-tls-async-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tls.sock");
    let _ = std::fs::remove_file(&path);
    let _unix = reactor
        .listen_tls_unix(
            &path,
            pki().server_config(),
            EchoFactory,
            Default::default(),
        )
        .unwrap();
    let connect = reactor.connect_tls_unix_stream(
        &path,
        server_name("localhost").unwrap(),
        pki().client_config(),
        TIMEOUT,
    );
    let stream = reactor.run_until_complete(connect).unwrap().unwrap();
    reactor
        .run_until_complete(async move {
            stream.write_all(b"unix").await.unwrap();
            let mut buf = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                got += stream.read(&mut buf[got..]).await.unwrap();
            }
            assert_eq!(&buf, b"unix");
            stream.close().await.unwrap();
        })
        .unwrap();

    let (_port, at) = tls_echo_server(&reactor);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki().ca.cert_pem).unwrap();
    let endpoint = torsion_tls::endpoints::tls_client_from_string(&format!(
        "tls:127.0.0.1:{at}:trustRoots={}:timeout=10",
        ca.display()
    ))
    .unwrap();
    let stream = reactor
        .run_until_complete(endpoint.connect_stream(&reactor).unwrap())
        .unwrap()
        .unwrap();
    assert!(TlsTransport::of(&stream.transport().unwrap()).is_some());
    drop(stream);
    std::fs::remove_dir_all(&dir).unwrap();
}
