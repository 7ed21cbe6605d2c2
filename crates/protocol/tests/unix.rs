//! Unix-domain stream sockets: the same protocols and factories as over
//! TCP, socket files handled safely, peer credentials.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::{guarded_reactor, Watchdog};

use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, Protocol, Reactor,
    ReactorUnix, TransportRef, UnixListenOptions,
};

fn socket_path() -> PathBuf {
    torsion_protocol::testing::socket_path("test")
}

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(30))
}

type Log = Rc<RefCell<Vec<String>>>;

struct Echo {
    log: Log,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &TransportRef) {
        let creds = transport.peer_credentials().unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(creds.uid, uid);
        assert_eq!(creds.pid, std::process::id() as i32);
        assert!(matches!(transport.get_peer(), Address::Unix(_)));
        self.log.borrow_mut().push("server made".into());
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

struct EchoFactory {
    log: Log,
}

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, peer: &Address) -> Option<Echo> {
        assert!(matches!(peer, Address::Unix(_)), "{peer}");
        Some(Echo {
            log: self.log.clone(),
        })
    }
}

struct Client {
    log: Log,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.write(b"over a unix socket");
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(format!("client got {}", String::from_utf8_lossy(data)));
        transport.lose_connection();
    }
}

struct ClientFactoryImpl {
    log: Log,
}

impl Factory for ClientFactoryImpl {
    type Protocol = Client;
    fn build_protocol(&self, _peer: &Address) -> Option<Client> {
        Some(Client {
            log: self.log.clone(),
        })
    }
}

impl ClientFactory for ClientFactoryImpl {
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.log.borrow_mut().push(format!("failed: {reason}"));
        connector.reactor().unwrap().stop().unwrap();
    }
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        self.log
            .borrow_mut()
            .push(format!("lost clean={}", reason.is_clean()));
        connector.reactor().unwrap().stop().unwrap();
    }
}

#[test]
fn echo_over_a_unix_socket_with_mode_and_credentials() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let path = socket_path();
    let log: Log = Rc::default();
    let port = reactor
        .listen_unix(
            &path,
            EchoFactory { log: log.clone() },
            UnixListenOptions {
                mode: Some(0o600),
                ..UnixListenOptions::default()
            },
        )
        .unwrap();
    assert_eq!(port.get_host(), Address::Unix(Some(path.clone())));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    reactor.connect_unix(
        &path,
        ClientFactoryImpl { log: log.clone() },
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "server made",
            "client got over a unix socket",
            "lost clean=true"
        ]
    );
    // Shutting down stopped the port, which removed its file.
    assert!(!port.is_listening());
    assert!(!path.exists());
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let path = socket_path();
    drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
    assert!(path.exists());
    let port = reactor
        .listen_unix(
            &path,
            EchoFactory { log: Rc::default() },
            UnixListenOptions::default(),
        )
        .unwrap();
    port.stop_listening();
    assert!(!path.exists());
}

#[test]
fn a_live_server_is_never_taken_over() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let path = socket_path();
    let live = UnixListener::bind(&path).unwrap();
    let error = reactor
        .listen_unix(
            &path,
            EchoFactory { log: Rc::default() },
            UnixListenOptions::default(),
        )
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    assert!(
        error.to_string().contains("another server is listening"),
        "{error}"
    );
    // The live server still has its file and its clients.
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    live.accept().unwrap();
    drop(live);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_path_that_is_not_a_socket_is_refused() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let path = socket_path();
    std::fs::write(&path, b"not a socket").unwrap();
    let error = reactor
        .listen_unix(
            &path,
            EchoFactory { log: Rc::default() },
            UnixListenOptions::default(),
        )
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn connecting_to_a_missing_socket_fails_with_a_reason() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    reactor.connect_unix(
        socket_path(),
        ClientFactoryImpl { log: log.clone() },
        Duration::from_secs(5),
    );
    reactor.run().unwrap();
    let log = log.borrow();
    assert_eq!(log.len(), 1);
    assert!(log[0].starts_with("failed: "), "{log:?}");
    assert!(log[0].contains("No such file"), "{log:?}");
}
