//! Flow control and half-close: a server streams 8 MiB to each client
//! through a pull producer — one 256 KiB piece each time its write buffer
//! has drained — then shuts down its write side; the client counts bytes
//! until end of stream. Both run on one reactor.
//!
//! ```text
//! cargo run --example producer
//! ```

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use torsion_protocol::{
    Address, ClientFactory, CloseReason, Connector, Factory, ListenOptions, Producer, Protocol,
    Reactor, ReactorTcp, TransportRef, DEFAULT_CONNECT_TIMEOUT,
};

const PIECE: usize = 256 * 1024;
const PIECES: usize = 32;

/// Writes the next piece whenever the transport asks for one.
struct Pieces {
    transport: TransportRef,
    sent: Cell<usize>,
}

impl Producer for Pieces {
    fn resume_producing(&self) {
        if self.sent.get() == PIECES {
            self.transport.unregister_producer();
            // Everything written: send end of stream, keep reading.
            self.transport.lose_write_connection();
            return;
        }
        self.sent.set(self.sent.get() + 1);
        self.transport.write(&[b'x'; PIECE]);
    }
}

struct Streamer;

impl Protocol for Streamer {
    fn connection_made(&mut self, transport: &TransportRef) {
        let pieces = Rc::new(Pieces {
            transport: transport.clone(),
            sent: Cell::new(0),
        });
        transport
            .register_producer(pieces, false)
            .expect("the only producer");
    }

    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

struct Counter {
    received: Rc<Cell<usize>>,
    reads: Rc<Cell<usize>>,
}

impl Protocol for Counter {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.received.set(self.received.get() + data.len());
        self.reads.set(self.reads.get() + 1);
    }
}

struct Both {
    received: Rc<Cell<usize>>,
    reads: Rc<Cell<usize>>,
}

impl Factory for Both {
    type Protocol = Counter;
    fn build_protocol(&self, _peer: &Address) -> Option<Counter> {
        Some(Counter {
            received: self.received.clone(),
            reads: self.reads.clone(),
        })
    }
}

impl ClientFactory for Both {
    fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
        println!(
            "received {} MiB in {} reads; connection ended: {reason}",
            self.received.get() >> 20,
            self.reads.get()
        );
        let _ = connector.reactor().expect("running").stop();
    }
}

struct StreamerFactory;

impl Factory for StreamerFactory {
    type Protocol = Streamer;
    fn build_protocol(&self, _peer: &Address) -> Option<Streamer> {
        Some(Streamer)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp_with(
        0,
        StreamerFactory,
        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
    )?;
    let port = port.get_host().port().expect("a TCP port");
    let counts = Both {
        received: Rc::default(),
        reads: Rc::default(),
    };
    reactor.connect_tcp("127.0.0.1", port, counts, DEFAULT_CONNECT_TIMEOUT);
    reactor.run()?;
    Ok(())
}
