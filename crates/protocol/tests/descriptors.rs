//! No descriptor leaks: the process holds as many descriptors after 1,000
//! connections that end in every way as it did before.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use torsion_protocol::testing::Watchdog;

use torsion_protocol::socket2::SockRef;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, ListenOptions, Protocol,
    Reactor, ReactorTcp, TransportRef,
};

/// Ends its connection the way the first byte says.
struct Ender;

impl Protocol for Ender {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        match data[0] {
            b'c' => {
                transport.write(b"closing");
                transport.lose_connection();
            }
            b'a' => {
                transport.write(b"aborting");
                transport.abort_connection();
            }
            b'p' => panic!("asked to panic"),
            _ => transport.write(data),
        }
    }
}

struct EnderFactory;

impl Factory for EnderFactory {
    type Protocol = Ender;
    fn build_protocol(&self, _peer: &Address) -> Option<Ender> {
        Some(Ender)
    }
}

impl ClientFactory for EnderFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: &ConnectError) {
        assert!(matches!(reason, ConnectError::Refused(_)), "{reason}");
    }
    fn client_connection_lost(&self, _connector: &Connector, _reason: &CloseReason) {}
}

#[test]
fn a_thousand_connections_ending_every_way_leave_no_descriptor_behind() {
    let guard = DescriptorGuard::new();
    {
        let reactor = Reactor::new().unwrap();
        let _watchdog = Watchdog::new(Duration::from_secs(60));
        let port = reactor
            .listen_tcp_with(
                0,
                EnderFactory,
                ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
            )
            .unwrap();
        let addr = port.get_host().socket_addr().unwrap();
        // Outgoing attempts that are refused, and outgoing connections
        // that the server side ends.
        let closed_port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for _ in 0..50 {
            reactor.connect_tcp(
                "127.0.0.1",
                closed_port,
                EnderFactory,
                Duration::from_secs(5),
            );
            reactor.connect_tcp(
                "127.0.0.1",
                addr.port(),
                EnderFactory,
                Duration::from_secs(5),
            );
        }
        let handle = reactor.handle();
        let clients = std::thread::spawn(move || {
            for i in 0..900 {
                let mut stream = TcpStream::connect(addr).unwrap();
                let mut sink = Vec::new();
                match i % 5 {
                    // The server closes cleanly, aborts, or panics.
                    0 => stream.write_all(b"c").unwrap(),
                    1 => stream.write_all(b"a").unwrap(),
                    2 => stream.write_all(b"p").unwrap(),
                    // We close cleanly after an echo.
                    3 => {
                        stream.write_all(b"echo").unwrap();
                        let mut echo = [0u8; 4];
                        stream.read_exact(&mut echo).unwrap();
                        continue;
                    }
                    // We reset the connection.
                    _ => {
                        stream.write_all(b"echo").unwrap();
                        SockRef::from(&stream)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        continue;
                    }
                }
                let _ = stream.read_to_end(&mut sink);
            }
            handle.stop().unwrap();
        });
        reactor.run().unwrap();
        clients.join().unwrap();
    }
    guard.check();
}
