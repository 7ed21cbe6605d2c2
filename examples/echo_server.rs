//! The echo server of the Twisted book's example 2-1, on Torsion.
//!
//! ```text
//! cargo run --example echo_server [PORT] [--threads N]    # default 8000, 1 thread
//! ```
//!
//! With `--threads N`, N reactors — one per thread — listen on the same
//! port through `SO_REUSEPORT`, and the kernel spreads connections among
//! them: Torsion's way to use several cores, with nothing shared between
//! the threads. Once all of them listen it logs `all reactors listening`;
//! SIGINT or SIGTERM stops them all, and each logs how many connections it
//! served.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::mpsc;

use torsion_echo::{Echo, EchoFactory};
use torsion_protocol::{Address, Factory, ListenOptions, Reactor, ReactorTcp};

/// The echo factory, counting the connections of one reactor.
struct Counted(Rc<Cell<usize>>);

impl Factory for Counted {
    type Protocol = Echo;

    fn build_protocol(&self, peer: &Address) -> Option<Echo> {
        self.0.set(self.0.get() + 1);
        EchoFactory.build_protocol(peer)
    }
}

/// Logs how many connections reactor `index` served.
fn report(index: usize, served: &Cell<usize>) {
    tracing::info!(
        reactor = index,
        connections = served.get(),
        "reactor stopped"
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut port: u16 = 8000;
    let mut threads: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--threads" {
            let n = args.next().ok_or("--threads needs a number")?;
            threads = n
                .parse()
                .map_err(|e| format!("bad thread count {n:?}: {e}"))?;
        } else {
            port = arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?;
        }
    }
    if threads <= 1 {
        let reactor = Reactor::new()?;
        reactor.listen_tcp(port, EchoFactory)?;
        reactor.run()?;
        return Ok(());
    }
    let options = ListenOptions {
        reuse_port: true,
        ..ListenOptions::interface(Ipv4Addr::UNSPECIFIED.into())
    };
    // The first reactor binds (choosing the port if asked for 0); the
    // others join it on the same port.
    let reactor = Reactor::new()?;
    let served = Rc::new(Cell::new(0));
    let listening = reactor.listen_tcp_with(port, Counted(served.clone()), options)?;
    let port = listening.get_host().port().ok_or("no port")?;
    let (listening_tx, listening_rx) = mpsc::channel();
    let workers: Vec<_> = (1..threads)
        .map(|index| {
            let listening = listening_tx.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let served = Rc::new(Cell::new(0));
                let setup = Reactor::new().and_then(|reactor| {
                    reactor.listen_tcp_with(port, Counted(served.clone()), options)?;
                    Ok(reactor)
                });
                let setup = setup.map_err(|e| e.to_string());
                // Tell the main thread, whatever happened.
                let _ = listening.send(setup.as_ref().map(drop).map_err(String::clone));
                drop(listening);
                let reactor = setup?;
                reactor.run().map_err(|e| e.to_string())?;
                report(index, &served);
                Ok(())
            })
        })
        .collect();
    drop(listening_tx);
    for listened in listening_rx.iter() {
        listened?;
    }
    tracing::info!(port, reactors = threads, "all reactors listening");
    reactor.run()?;
    report(0, &served);
    for worker in workers {
        worker.join().map_err(|_| "a reactor thread panicked")??;
    }
    Ok(())
}
