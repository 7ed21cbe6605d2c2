//! UDP echo: 64-byte datagrams from several sender sockets, each keeping a
//! window of datagrams in flight, echoed back by the server.
//!
//! Servers (each a child process pinned to CPU 0, the load pinned to
//! CPU 1, interleaved round by round):
//! - `udp-torsion`: a `DatagramProtocol` that writes each datagram back
//!   with `write_to`, as `examples/udp_echo.rs`;
//! - `udp-tokio`: tokio's current-thread runtime, one task looping on
//!   `UdpSocket::recv_from` / `send_to`, as its documentation shows;
//! - `udp-mio`: a hand-written mio loop that reads until `WouldBlock` and
//!   sends each echo straight back.
//!
//! Reported: datagrams echoed per second and the server's CPU time per
//! datagram (medians of the rounds).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use torsion_protocol::{
    Address, DatagramProtocol, DatagramTransportRef, Reactor, ReactorUdp, UdpOptions,
};

use crate::servers::announce;
use crate::{median, pin, Server};

const SERVERS: [&str; 4] = ["udp-torsion", "udp-torsion-nogso", "udp-tokio", "udp-mio"];
const SENDERS: usize = 8;
const WINDOW: usize = 16;
const SIZE: usize = 64;
/// Largest datagram the echo servers read (they see only 64-byte ones).
const MAX_DATAGRAM: usize = 64 * 1024;

/// Writes every datagram back to its sender.
struct Echo;

impl DatagramProtocol for Echo {
    fn datagram_received(&mut self, transport: &DatagramTransportRef, data: &[u8], from: &Address) {
        // A full send buffer drops the echo, as the other servers do; the
        // load generator resends after a quiet spell.
        let _ = transport.write_to(data, from);
    }
}

/// Torsion's UDP echo on 127.0.0.1.
pub fn torsion() -> io::Result<()> {
    torsion_with(true)
}

/// Torsion's UDP echo with segmentation offload turned off.
pub fn torsion_without_gso() -> io::Result<()> {
    torsion_with(false)
}

fn torsion_with(gso: bool) -> io::Result<()> {
    let reactor = Reactor::new()?;
    let options = UdpOptions {
        interface: Ipv4Addr::LOCALHOST.into(),
        ..UdpOptions::default()
    };
    let port = reactor.listen_udp_with(0, Echo, options)?;
    if !gso {
        port.set_segmentation_offload(false);
    }
    announce(port.get_host().port().unwrap_or(0));
    reactor.run().map_err(io::Error::other)
}

/// tokio current-thread: one task receiving and echoing.
pub fn tokio() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        announce(socket.local_addr()?.port());
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            let _ = socket.send_to(&buf[..n], from).await;
        }
    })
}

/// A hand-written mio loop: read until `WouldBlock`, echo each datagram
/// at once (dropping it if the send buffer is full).
pub fn mio_loop() -> io::Result<()> {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new()?;
    let mut socket = mio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    announce(socket.local_addr()?.port());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut events = Events::with_capacity(16);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
    }
}

/// Drives the server on `port` from `senders` connected sockets, each
/// keeping `window` datagrams in flight, for `warmup` then `duration`.
/// Returns the datagrams echoed in `duration` and the server's CPU time
/// over it.
fn drive(
    server: &Server,
    (senders, window): (usize, usize),
    warmup: Duration,
    duration: Duration,
) -> io::Result<(u64, Duration)> {
    use mio::{Events, Interest, Poll, Token};
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(senders);
    for i in 0..senders {
        let mut socket = mio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        socket.connect(target)?;
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)?;
        sockets.push(socket);
    }
    let payload = [0x5au8; SIZE];
    let mut buf = [0u8; 2 * SIZE];
    let mut in_flight = vec![0usize; senders];
    let refill = |sockets: &[mio::net::UdpSocket], in_flight: &mut [usize]| {
        for (socket, count) in sockets.iter().zip(in_flight.iter_mut()) {
            while *count < window {
                match socket.send(&payload) {
                    Ok(_) => *count += 1,
                    Err(_) => break,
                }
            }
        }
    };
    refill(&sockets, &mut in_flight);
    let mut events = Events::with_capacity(senders);
    let start = Instant::now();
    let mut measuring: Option<(Instant, Duration)> = None;
    let mut echoed = 0u64;
    loop {
        let now = Instant::now();
        match measuring {
            None if now - start >= warmup => {
                measuring = Some((now, server.cpu()?));
                echoed = 0;
            }
            Some((began, cpu_before)) if now - began >= duration => {
                let cpu = server.cpu()?.saturating_sub(cpu_before);
                let rate_scale = duration.as_secs_f64() / (now - began).as_secs_f64();
                return Ok(((echoed as f64 * rate_scale) as u64, cpu));
            }
            _ => {}
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        if events.is_empty() {
            // Datagrams were lost: start every window afresh.
            in_flight.fill(0);
            refill(&sockets, &mut in_flight);
            continue;
        }
        for event in events.iter() {
            let i = event.token().0;
            loop {
                match sockets[i].recv(&mut buf) {
                    Ok(n) => {
                        if n != SIZE {
                            return Err(io::Error::other(format!("echo of {n} bytes")));
                        }
                        echoed += 1;
                        in_flight[i] = in_flight[i].saturating_sub(1);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        refill(&sockets, &mut in_flight);
    }
}

#[derive(Clone, Copy)]
struct Sample {
    per_second: f64,
    cpu_ns: f64,
}

fn measure(
    kind: &str,
    load: (usize, usize),
    warmup: Duration,
    duration: Duration,
) -> io::Result<Sample> {
    let server = Server::start(kind)?;
    pin(server.child.id(), 0);
    let (echoed, cpu) = drive(&server, load, warmup, duration)?;
    Ok(Sample {
        per_second: echoed as f64 / duration.as_secs_f64(),
        cpu_ns: cpu.as_secs_f64() * 1e9 / (echoed.max(1) as f64),
    })
}

/// `torsion-bench udp [--quick] [--servers a,b] [--senders N] [--window N]`
/// (default 8 senders x 16 in flight; `--senders 64 --window 1` is a
/// load of many peers with one datagram each, where GSO finds no runs).
pub fn run(args: &[String]) -> io::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let servers: Vec<String> = match args.iter().position(|a| a == "--servers") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').map(String::from).collect())
            .unwrap_or_default(),
        None => SERVERS.map(String::from).to_vec(),
    };
    let number = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let (senders, window) = (number("--senders", SENDERS), number("--window", WINDOW));
    pin(0, 1);
    let (rounds, warmup, duration) = if quick { (1, 0.3, 1.0) } else { (3, 1.0, 3.0) };
    let (warmup, duration) = (
        Duration::from_secs_f64(warmup),
        Duration::from_secs_f64(duration),
    );
    println!(
        "udp echo: {senders} senders x {window} datagrams in flight, {SIZE} B, {rounds} round(s) of {duration:?} (after {warmup:?}), server on CPU 0, load on CPU 1"
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    for round in 1..=rounds {
        for (i, kind) in servers.iter().enumerate() {
            let sample = measure(kind, (senders, window), warmup, duration)?;
            eprintln!(
                "round {round} {kind:>12}: {:>9.0} datagrams/s  server {:>6.0} ns/datagram",
                sample.per_second, sample.cpu_ns
            );
            samples[i].push(sample);
        }
    }
    let base = median(samples[0].iter().map(|s| s.cpu_ns).collect());
    println!(
        "{:<12} {:>12} {:>14} {:>8}",
        "server", "datagrams/s", "CPU ns/dgram", "CPU x"
    );
    for (kind, runs) in servers.iter().zip(&samples) {
        let rate = median(runs.iter().map(|s| s.per_second).collect());
        let cpu = median(runs.iter().map(|s| s.cpu_ns).collect());
        println!("{kind:<12} {rate:>12.0} {cpu:>14.0} {:>8.2}", cpu / base);
    }
    println!("\n\"CPU x\": each server's CPU per datagram divided by the first's");
    Ok(())
}
