//! The echo server of the Twisted book's example 2-1, on Torsion.
//!
//! ```text
//! cargo run --example echo_server [PORT] [--threads N]    # default 8000, 1 thread
//! ```
//!
//! With `--threads N`, N reactors — one per thread — listen on the same
//! port through `SO_REUSEPORT`, and the kernel spreads connections among
//! them: Torsion's way to use several cores, with nothing shared between
//! the threads. SIGINT or SIGTERM stops them all.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::net::Ipv4Addr;

use torsion_echo::EchoFactory;
use torsion_protocol::{ListenOptions, Reactor, ReactorTcp};

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
    let listening = reactor.listen_tcp_with(port, EchoFactory, options)?;
    let port = listening.get_host().port().ok_or("no port")?;
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                let reactor = Reactor::new().map_err(|e| e.to_string())?;
                reactor
                    .listen_tcp_with(port, EchoFactory, options)
                    .map_err(|e| e.to_string())?;
                reactor.run().map_err(|e| e.to_string())
            })
        })
        .collect();
    reactor.run()?;
    for worker in workers {
        worker.join().map_err(|_| "a reactor thread panicked")??;
    }
    Ok(())
}
