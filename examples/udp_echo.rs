//! A UDP echo server, and a client that sends one datagram and prints the
//! echo.
//!
//! ```text
//! cargo run --example udp_echo server [PORT]          # default 8000
//! cargo run --example udp_echo client [HOST] [PORT] [MESSAGE]
//! ```
//!
//! The client gives up after two seconds without an answer (datagrams can
//! be lost), printing `No answer.`.

use std::net::ToSocketAddrs;
use std::time::Duration;

use torsion_protocol::{
    Address, DatagramProtocol, DatagramTransportRef, Reactor, ReactorUdp, UdpOptions,
};

/// Writes every datagram back to its sender.
struct Echo;

impl DatagramProtocol for Echo {
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address) {
        if let Err(e) = transport.write_to(data, from) {
            tracing::warn!(%from, error = %e, "could not echo");
        }
    }
}

/// Prints the answer of its connected server.
struct Client;

impl DatagramProtocol for Client {
    fn datagram_received(
        &mut self,
        transport: &DatagramTransportRef,
        data: &[u8],
        _from: &Address,
    ) {
        println!("Server said: {}", String::from_utf8_lossy(data));
        stop(transport);
    }

    fn connection_refused(&mut self, transport: &DatagramTransportRef) {
        println!("Connection refused.");
        stop(transport);
    }
}

fn stop(transport: &DatagramTransportRef) {
    if let Some(reactor) = transport.reactor() {
        let _ = reactor.stop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reactor = Reactor::new()?;
    match args.first().map(String::as_str) {
        Some("server") => {
            let port = args.get(1).map_or(Ok(8000), |p| p.parse())?;
            reactor.listen_udp(port, Echo)?;
        }
        Some("client") => {
            let host = args.get(1).map_or("localhost", String::as_str);
            let port: u16 = args.get(2).map_or(Ok(8000), |p| p.parse())?;
            let message = args.get(3).map_or("Hello, world!", String::as_str);
            let server = (host, port)
                .to_socket_addrs()?
                .find(|addr| addr.is_ipv4())
                .ok_or("no IPv4 address for the host")?;
            let transport = reactor.listen_udp_with(0, Client, UdpOptions::default())?;
            transport.connect(&Address::Udp(server))?;
            transport.write(message.as_bytes())?;
            reactor.call_later(Duration::from_secs(2), |reactor| {
                println!("No answer.");
                let _ = reactor.stop();
            });
        }
        _ => return Err("usage: udp_echo server [PORT] | client [HOST] [PORT] [MESSAGE]".into()),
    }
    reactor.run()?;
    Ok(())
}
