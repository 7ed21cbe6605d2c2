//! Memory per idle connection: heap bytes an echo server holds per open,
//! idle connection (counted by the benchmark's allocator; kernel socket
//! buffers are not included).

use std::cell::Cell;
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use torsion_echo::Echo;
use torsion_protocol::{
    Address, Factory, ListenOptions, Protocol, Reactor, ReactorTcp, TransportRef,
};

use crate::reactor::allocated;

/// Counts connections made, around the library's echo protocol.
struct Counted(Echo, Rc<Cell<usize>>);

impl Protocol for Counted {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.1.set(self.1.get() + 1);
        self.0.connection_made(transport);
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.0.data_received(transport, data);
    }
}

struct CountedFactory(Rc<Cell<usize>>);

impl Factory for CountedFactory {
    type Protocol = Counted;
    fn build_protocol(&self, _peer: &Address) -> Option<Counted> {
        Some(Counted(Echo, self.0.clone()))
    }
}

/// Opens `n` idle connections to an in-process Torsion echo server and
/// returns the server's heap bytes per connection.
pub fn run(n: usize) {
    let (port_tx, port_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (report_tx, report_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        reactor.set_signal_handling(false);
        let made = Rc::new(Cell::new(0));
        let port = reactor
            .listen_tcp_with(
                0,
                CountedFactory(made.clone()),
                ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
            )
            .unwrap();
        // Warm up: the per-thread read buffer and the slabs' first growth.
        let before = allocated();
        port_tx.send(port.get_host().port().unwrap()).unwrap();
        while made.get() < n {
            reactor.iterate(Duration::from_millis(100)).unwrap();
        }
        let after = allocated();
        report_tx.send((before, after)).unwrap();
        let _ = done_rx.recv();
    });
    let port = port_rx.recv().unwrap();
    let clients: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap())
        .collect();
    let (before, after) = report_rx.recv().unwrap();
    let _ = done_tx.send(());
    server.join().unwrap();
    drop(clients);
    println!(
        "idle connections: {n} open, {:.0} bytes of server heap each (Torsion echo server)",
        (after - before) as f64 / n as f64
    );
}
