//! A client that survives the server restarting: a
//! `ReconnectingClientFactory` retries with growing delays until the server
//! is back.
//!
//! ```text
//! cargo run --example echo_server &
//! cargo run --example reconnecting_client [HOST] [PORT] [CONNECTIONS]
//! ```
//!
//! Each time it connects it says hello and prints the echo; it stops once
//! the `CONNECTIONS`-th connection has its echo (default: never; Ctrl-C
//! ends it).

use std::cell::Cell;
use std::time::Duration;

use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, Protocol, Reactor,
    ReactorTcp, ReconnectingClientFactory, SharedFactory, TransportRef,
};

struct Hello {
    number: u32,
    last: bool,
}

impl Protocol for Hello {
    fn connection_made(&mut self, transport: &TransportRef) {
        println!("connected ({})", self.number);
        transport.write(b"hello again");
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        println!("server said: {}", String::from_utf8_lossy(data));
        if self.last {
            if let Some(reactor) = transport.reactor() {
                let _ = reactor.stop();
            }
        }
    }
}

struct Client {
    connections: Cell<u32>,
    stop_after: Option<u32>,
}

impl Factory for Client {
    type Protocol = Hello;

    fn build_protocol(&self, _peer: &Address) -> Option<Hello> {
        self.connections.set(self.connections.get() + 1);
        Some(Hello {
            number: self.connections.get(),
            last: Some(self.connections.get()) == self.stop_after,
        })
    }
}

impl ClientFactory for Client {
    fn client_connection_failed(&self, _connector: &Connector, reason: &ConnectError) {
        tracing::info!(%reason, "connection failed; retrying");
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: &CloseReason) {
        println!("connection lost");
        tracing::info!(%reason, "connection lost; retrying");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".to_owned());
    let port = args.next().map_or(Ok(8000), |p| p.parse())?;
    let stop_after = args.next().map(|n| n.parse()).transpose()?;
    let reactor = Reactor::new()?;
    let factory = ReconnectingClientFactory::new(Client {
        connections: Cell::new(0),
        stop_after,
    })
    .initial_delay(Duration::from_millis(100))
    .max_delay(Duration::from_secs(5));
    let factory = SharedFactory::new(factory);
    reactor.connect_tcp(&host, port, factory.clone(), Duration::from_secs(5));
    reactor.run()?;
    factory.stop_trying();
    Ok(())
}
