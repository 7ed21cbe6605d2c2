//! An echo server whose counters another thread prints periodically:
//! [`ReactorHandle::stats`] read from a monitor thread, without locks and
//! without disturbing the reactor (see `docs/observability.md`).
//!
//! ```text
//! cargo run --example stats [PORT] [--every MS]   # default 8000, 1000 ms; runs until Ctrl-C
//! cargo run --example stats -- --demo             # port 0, a built-in load, then exits
//! ```
//!
//! With `--demo` it serves 4 clients of its own (100 round trips each,
//! then each closes), prints a snapshot every 20 ms while they run, then
//! stops and prints the final counts.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torsion_echo::EchoFactory;
use torsion_protocol::{ListenOptions, Reactor, ReactorHandle, ReactorStats, ReactorTcp};

const DEMO_CLIENTS: usize = 4;
const DEMO_ROUND_TRIPS: usize = 100;
const DEMO_MESSAGE: &[u8] = b"0123456789abcdef";
/// How long `--demo` may take before it stops and exits with an error.
const DEMO_LIMIT: Duration = Duration::from_secs(60);

/// One line per snapshot: `name=value` pairs.
fn line(stats: &ReactorStats) -> String {
    format!(
        "turns={} io_events={} timers_pending={} timers_fired={} open={} accepted={} \
         closed={} closed_by_peer={} bytes_read={} bytes_written={} write_buffer_peak={} \
         accept_errors={} panicked={}",
        stats.turns,
        stats.io_events,
        stats.timers_pending,
        stats.timers_fired,
        stats.connections_open,
        stats.connections_accepted,
        stats.closed.total(),
        stats.closed.by_peer,
        stats.bytes_read,
        stats.bytes_written,
        stats.write_buffer_peak,
        stats.accept_errors.total(),
        stats.callbacks_panicked,
    )
}

/// Prints the reactor's counters every `every`, and once more when
/// `done` is set.
fn monitor(handle: ReactorHandle, every: Duration, done: Arc<AtomicBool>) {
    let mut last = ReactorStats::default();
    loop {
        let finished = done.load(Ordering::Acquire);
        if !finished {
            std::thread::sleep(every);
        }
        let stats = handle.stats();
        // An idle server prints nothing new.
        if stats != last {
            println!("{}", line(&stats));
            last = stats;
        }
        if finished {
            return;
        }
    }
}

/// The `--demo` load: clients that echo a message back and forth, then
/// close; stops the reactor when all are done (or one failed: it then
/// panics once the reactor is told to stop). Gives up waiting for the
/// server's closes once `done` is set (the reactor stopped).
fn demo_load(addr: SocketAddr, handle: ReactorHandle, done: Arc<AtomicBool>) {
    let clients: Vec<_> = (0..DEMO_CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connects");
                let mut reply = [0; DEMO_MESSAGE.len()];
                for _ in 0..DEMO_ROUND_TRIPS {
                    stream.write_all(DEMO_MESSAGE).expect("sends");
                    stream.read_exact(&mut reply).expect("echoed");
                    assert_eq!(reply, DEMO_MESSAGE);
                }
            })
        })
        .collect();
    // Every client is joined before anything can panic here.
    let failed = clients
        .into_iter()
        .map(|client| client.join())
        .filter(Result::is_err)
        .count();
    // The server hears each client's close; stop once it has.
    while failed == 0
        && !done.load(Ordering::Acquire)
        && handle.stats().closed.total() < DEMO_CLIENTS as u64
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Always: a reactor left running would keep the example alive.
    let _ = handle.stop();
    assert_eq!(failed, 0, "{failed} demo clients failed");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut port: u16 = 8000;
    let mut every = Duration::from_secs(1);
    let mut demo = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--demo" => demo = true,
            "--every" => {
                let ms = args.next().ok_or("--every needs milliseconds")?;
                every = Duration::from_millis(ms.parse().map_err(|e| format!("bad {ms:?}: {e}"))?);
            }
            other => {
                port = other
                    .parse()
                    .map_err(|e| format!("bad port {other:?}: {e}"))?
            }
        }
    }
    if demo {
        port = 0;
        every = Duration::from_millis(20);
    }

    let reactor = Reactor::new()?;
    let listening = reactor.listen_tcp_with(
        port,
        EchoFactory,
        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
    )?;
    let addr = listening.get_host().socket_addr().ok_or("no address")?;
    tracing::info!(%addr, "echo server listening; counters every {every:?}");

    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (handle, done) = (reactor.handle(), done.clone());
        std::thread::spawn(move || monitor(handle, every, done))
    };
    let load = demo.then(|| {
        let (handle, done) = (reactor.handle(), done.clone());
        std::thread::spawn(move || demo_load(addr, handle, done))
    });
    // A demo that has not finished by then has failed: stop anyway.
    let timed_out = Rc::new(Cell::new(false));
    if demo {
        let timed_out = timed_out.clone();
        reactor.call_later(DEMO_LIMIT, move |reactor| {
            timed_out.set(true);
            let _ = reactor.stop();
        });
    }

    reactor.run()?;
    done.store(true, Ordering::Release);
    monitor.join().map_err(|_| "the monitor panicked")?;
    if let Some(load) = load {
        load.join().map_err(|_| "the load panicked")?;
    }
    if timed_out.get() {
        return Err(format!("the demo did not finish within {DEMO_LIMIT:?}").into());
    }
    // On the reactor's own thread the snapshot is exact.
    println!("final: {}", line(&reactor.stats()));
    Ok(())
}
