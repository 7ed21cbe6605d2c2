//! Endpoint strings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::testing::Watchdog;

use torsion_protocol::endpoints::{
    client_from_string, server_from_string, ClientEndpoint, ServerEndpoint,
};
use torsion_protocol::{ListenOptions, UnixListenOptions, DEFAULT_CONNECT_TIMEOUT};

#[test]
fn server_strings() {
    let _fds = DescriptorGuard::new();
    assert_eq!(
        server_from_string("tcp:8000").unwrap(),
        ServerEndpoint::Tcp {
            port: 8000,
            options: ListenOptions::default()
        }
    );
    assert_eq!(
        server_from_string("tcp:8000:interface=127.0.0.1:backlog=50").unwrap(),
        ServerEndpoint::Tcp {
            port: 8000,
            options: ListenOptions {
                backlog: 50,
                ..ListenOptions::interface(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
        }
    );
    assert_eq!(
        server_from_string(r"tcp:port=80:interface=\:\:1").unwrap(),
        ServerEndpoint::Tcp {
            port: 80,
            options: ListenOptions::interface(IpAddr::V6(Ipv6Addr::LOCALHOST))
        }
    );
    assert_eq!(
        server_from_string("unix:/run/x.sock").unwrap(),
        ServerEndpoint::Unix {
            path: PathBuf::from("/run/x.sock"),
            options: UnixListenOptions::default()
        }
    );
    assert_eq!(
        server_from_string("unix:path=/run/x.sock:mode=660").unwrap(),
        ServerEndpoint::Unix {
            path: PathBuf::from("/run/x.sock"),
            options: UnixListenOptions {
                mode: Some(0o660),
                ..UnixListenOptions::default()
            }
        }
    );
    assert_eq!(
        server_from_string("udp:9000").unwrap(),
        ServerEndpoint::Udp {
            port: 9000,
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    );
}

#[test]
fn client_strings() {
    let _fds = DescriptorGuard::new();
    assert_eq!(
        client_from_string("tcp:host=example.org:port=80").unwrap(),
        ClientEndpoint::Tcp {
            host: "example.org".into(),
            port: 80,
            timeout: DEFAULT_CONNECT_TIMEOUT
        }
    );
    assert_eq!(
        client_from_string("tcp:example.org:80:timeout=2.5").unwrap(),
        ClientEndpoint::Tcp {
            host: "example.org".into(),
            port: 80,
            timeout: Duration::from_millis(2500)
        }
    );
    assert_eq!(
        client_from_string("unix:path=/run/x.sock").unwrap(),
        ClientEndpoint::Unix {
            path: PathBuf::from("/run/x.sock"),
            timeout: DEFAULT_CONNECT_TIMEOUT
        }
    );
}

#[test]
fn only_an_unescaped_equals_sign_makes_a_key() {
    let _fds = DescriptorGuard::new();
    let unix = |path: &str| ServerEndpoint::Unix {
        path: PathBuf::from(path),
        options: UnixListenOptions::default(),
    };
    // An escaped '=' is part of the value, even after a word.
    assert_eq!(server_from_string(r"unix:a\=b").unwrap(), unix("a=b"));
    assert_eq!(server_from_string(r"unix:path=a\=b").unwrap(), unix("a=b"));
    assert_eq!(server_from_string(r"unix:a\=b=c").unwrap(), unix("a=b=c"));
    // A key is a plain word: an escaped character never forms one.
    assert_eq!(server_from_string(r"unix:p\ath=x").unwrap(), unix("path=x"));
    assert_eq!(
        client_from_string(r"unix:a\=b:timeout=5").unwrap(),
        ClientEndpoint::Unix {
            path: PathBuf::from("a=b"),
            timeout: Duration::from_secs(5)
        }
    );
    // The caret still points at a key's value.
    assert_eq!(
        error(server_from_string(r"unix:\=:mode=9")),
        ("mode \"9\" is not an octal file mode".into(), 13)
    );
}

/// The error's message and the column its caret points at.
fn error(
    result: Result<impl std::fmt::Debug, torsion_protocol::endpoints::EndpointError>,
) -> (String, usize) {
    let error = result.unwrap_err();
    let text = error.to_string();
    let caret = text.lines().last().unwrap().find('^').unwrap() - 2;
    (error.message, caret)
}

#[test]
fn bad_strings_point_at_the_bad_part() {
    let _fds = DescriptorGuard::new();
    assert_eq!(
        error(server_from_string("tcp:80x")),
        ("port \"80x\" is not a number from 0 to 65535".into(), 4)
    );
    assert_eq!(
        error(server_from_string("tcp:80:interface=localhost")),
        ("interface \"localhost\" is not an IP address".into(), 17)
    );
    assert_eq!(
        error(server_from_string("tcp:80:colour=blue")),
        (
            "unknown option \"colour\" (expected one of port, interface, backlog)".into(),
            7
        )
    );
    assert_eq!(
        error(server_from_string("sctp:80")),
        (
            "unknown endpoint type \"sctp\" (expected tcp, unix or udp)".into(),
            0
        )
    );
    assert_eq!(
        error(server_from_string("unix:/x:mode=999")),
        ("mode \"999\" is not an octal file mode".into(), 13)
    );
    assert_eq!(error(server_from_string("tcp")).0, "tcp: missing arguments");
    assert_eq!(
        error(server_from_string("tcp:80:81")).0,
        "interface \"81\" is not an IP address"
    );
    assert_eq!(
        error(client_from_string("tcp:port=80")).0,
        "missing the host"
    );
    assert_eq!(
        error(client_from_string("tcp:h:80:timeout=-1")).0,
        "timeout must be positive"
    );
    assert_eq!(
        error(server_from_string("tcp:80:port=81")).0,
        "port given twice"
    );
}

#[test]
fn an_endpoint_listens_and_connects() {
    let _fds = DescriptorGuard::new();
    use torsion_protocol::{
        Address, ClientFactory, CloseReason, Connector, Factory, Protocol, Reactor, TransportRef,
    };
    struct Bye;
    impl Protocol for Bye {
        fn connection_made(&mut self, transport: &TransportRef) {
            transport.lose_connection();
        }
        fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    }
    struct Both;
    impl Factory for Both {
        type Protocol = Bye;
        fn build_protocol(&self, _peer: &Address) -> Option<Bye> {
            Some(Bye)
        }
    }
    impl ClientFactory for Both {
        fn client_connection_lost(&self, connector: &Connector, _reason: &CloseReason) {
            connector.reactor().unwrap().stop().unwrap();
        }
    }
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(30));
    let port = server_from_string("tcp:0:interface=127.0.0.1")
        .unwrap()
        .listen(&reactor, Both)
        .unwrap();
    let port = port.get_host().port().unwrap();
    client_from_string(&format!("tcp:127.0.0.1:{port}"))
        .unwrap()
        .connect(&reactor, Both);
    reactor.run().unwrap();
}
