//! One acceptor, several worker reactors: the alternative to
//! `echo_server --threads N` (where every reactor listens on the port
//! through `SO_REUSEPORT` and the kernel spreads the connections).
//!
//! ```text
//! cargo run --example acceptor [PORT] [--workers N]    # default 8000, 2 workers
//! ```
//!
//! The main thread's reactor watches the listening socket and accepts;
//! each accepted socket goes, round-robin, to a worker thread's reactor
//! through its `ReactorHandle`, which adopts it
//! (`ReactorSocket::adopt_stream_connection`) and serves it with the echo
//! protocol. The acceptor decides where every connection goes — useful
//! where `SO_REUSEPORT` is missing or its hashing spreads badly — at the
//! price of one cross-thread hand-off per connection (none per message).
//!
//! SIGINT or SIGTERM stops the acceptor, which then stops the workers;
//! each logs how many connections it served.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, TcpListener};
use std::rc::Rc;

use torsion_echo::EchoFactory;
use torsion_protocol::{Reactor, ReactorHandle, ReactorSocket};
use torsion_reactor::{Handler, Interest, Readiness, Registration};

thread_local! {
    /// Connections this worker thread's reactor adopted.
    static ADOPTED: Cell<usize> = const { Cell::new(0) };
}

/// Accepts every pending connection and hands each to the next worker.
struct Acceptor {
    listener: RefCell<Option<Registration<TcpListener>>>,
    workers: Vec<ReactorHandle>,
    next: Cell<usize>,
}

impl Handler for Acceptor {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        let listener = self.listener.borrow();
        let Some(listener) = listener.as_ref() else {
            return;
        };
        // Level-triggered: what is left for the next turn is reported again.
        for _ in 0..64 {
            match listener.get_ref().accept() {
                Ok((stream, peer)) => {
                    let worker = &self.workers[self.next.get() % self.workers.len()];
                    self.next.set(self.next.get() + 1);
                    let handed = worker.call_from_thread(move |reactor| {
                        match reactor.adopt_stream_connection(stream, &EchoFactory) {
                            Ok(true) => ADOPTED.with(|adopted| adopted.set(adopted.get() + 1)),
                            Ok(false) => {} // the factory refused it
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "could not adopt a connection")
                            }
                        }
                    });
                    if handed.is_err() {
                        tracing::warn!(%peer, "worker gone; connection dropped");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors, for one: a real server backs off
                    // here as Torsion's own listener does.
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        // Stop accepting: dropping the registration closes the socket.
        self.listener.borrow_mut().take();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut port: u16 = 8000;
    let mut workers: usize = 2;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--workers" {
            let n = args.next().ok_or("--workers needs a number")?;
            workers = n
                .parse()
                .map_err(|e| format!("bad worker count {n:?}: {e}"))?;
        } else {
            port = arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?;
        }
    }

    // Worker reactors: each runs until the acceptor stops it.
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..workers.max(1))
        .map(|index| {
            let tx = tx.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let reactor = Reactor::new().map_err(|e| e.to_string())?;
                // Signals are the acceptor's to handle.
                reactor.set_signal_handling(false);
                tx.send(reactor.handle()).map_err(|e| e.to_string())?;
                reactor.run().map_err(|e| e.to_string())?;
                let connections = ADOPTED.with(Cell::get);
                tracing::info!(reactor = index, connections, "reactor stopped");
                Ok(())
            })
        })
        .collect();
    let handles: Vec<ReactorHandle> = rx.iter().take(threads.len()).collect();

    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
    listener.set_nonblocking(true)?;
    let host = listener.local_addr()?;
    let reactor = Reactor::new()?;
    let acceptor = Rc::new(Acceptor {
        listener: RefCell::new(None),
        workers: handles.clone(),
        next: Cell::new(0),
    });
    let registration = reactor.register(listener, Interest::READABLE, acceptor.clone())?;
    *acceptor.listener.borrow_mut() = Some(registration);
    tracing::info!(host = %format!("tcp:{host}"), workers = handles.len(), "accepting");
    reactor.run()?;

    for handle in &handles {
        let _ = handle.stop();
    }
    for thread in threads {
        thread.join().map_err(|_| "a worker thread panicked")??;
    }
    Ok(())
}
