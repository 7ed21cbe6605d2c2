//! Pipelined lines: a server that answers each line with a line, written
//! the way each framework's users write it, under clients that send
//! `depth` lines before reading the replies.
//!
//! - `lines-torsion`: Torsion's `LineReceiver`, one `send_line` per reply,
//!   as a Twisted user writes it;
//! - `lines-tokio`: tokio current-thread with tokio-util's
//!   `Framed<TcpStream, LinesCodec>`, replies fed to the sink and flushed
//!   once no further line is ready;
//! - `lines-mio`: a hand-written mio loop that parses in place and writes
//!   each read's replies in one call.
//!
//! Reported per server and depth (medians of the rounds, servers
//! interleaved, server on CPU 0 and clients on CPU 1): requests per
//! second, server CPU per request, and the server's send calls per
//! request (`sendto`, `sendmsg`, `write`, `writev`, counted by
//! `perf stat` when it is available).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{Address, Factory, ListenOptions, Reactor, ReactorTcp, TransportRef};

use crate::{median, pin, server_labels, Server};

const SERVERS: [&str; 3] = ["lines-torsion", "lines-tokio", "lines-mio"];
const CONNECTIONS: usize = 8;
const LINE: &[u8] = b"GET /an/ordinary/request\r\n";

fn announce(port: u16) {
    println!("{port}");
    let _ = io::stdout().flush();
}

/// Answers each line with the same line.
struct Answer;

impl LineHandler for Answer {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
        lines.send_line(transport, line);
    }
}

/// Builds a `LineReceiver` per connection.
struct Answers;

impl Factory for Answers {
    type Protocol = LineReceiver<Answer>;
    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Answer>> {
        Some(LineReceiver::new(Answer))
    }
}

/// Torsion: `LineReceiver`, one `send_line` per reply.
pub fn torsion() -> io::Result<()> {
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp_with(
        0,
        Answers,
        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
    )?;
    announce(port.get_host().port().unwrap_or(0));
    reactor.run().map_err(io::Error::other)
}

/// tokio current-thread with `Framed<_, LinesCodec>`.
pub fn tokio() -> io::Result<()> {
    use futures_util::{FutureExt, SinkExt, StreamExt};
    use tokio_util::codec::{Framed, LinesCodec};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        announce(listener.local_addr()?.port());
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, LinesCodec::new());
                while let Some(Ok(line)) = framed.next().await {
                    if framed.feed(line).await.is_err() {
                        return;
                    }
                    // Further lines already read: answer them before one
                    // flush.
                    while let Some(Some(Ok(line))) = framed.next().now_or_never() {
                        if framed.feed(line).await.is_err() {
                            return;
                        }
                    }
                    if SinkExt::<String>::flush(&mut framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A hand-written mio loop: parse in place, one write per read's replies.
pub fn mio_loop() -> io::Result<()> {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};

    const LISTENER: Token = Token(usize::MAX);
    struct Conn {
        stream: TcpStream,
        input: Vec<u8>,
        output: Vec<u8>,
    }

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    announce(listener.local_addr()?.port());
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let key = conns.len();
                    poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns.push(Some(Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                    }));
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns[key].as_mut() else {
                continue;
            };
            let mut closed = false;
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            let mut start = 0;
            while let Some(end) = conn.input[start..].iter().position(|&b| b == b'\n') {
                conn.output
                    .extend_from_slice(&conn.input[start..start + end + 1]);
                start += end + 1;
            }
            conn.input.drain(..start);
            if !conn.output.is_empty() {
                match conn.stream.write(&conn.output) {
                    Ok(n) => {
                        conn.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
            if closed {
                if let Some(mut conn) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
            }
        }
    }
}

/// Drives the server on `port` with [`CONNECTIONS`] clients, each sending
/// `depth` lines and then reading `depth` replies, for `duration`.
/// Returns the requests answered.
fn drive(port: u16, depth: usize, duration: Duration) -> io::Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let request: Vec<u8> = LINE.repeat(depth);
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (stop, answered, request) = (stop.clone(), answered.clone(), request.clone());
            std::thread::spawn(move || -> io::Result<()> {
                pin(0, 1);
                let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
                stream.set_nodelay(true)?;
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&request)?;
                    let mut lines = 0;
                    while lines < depth {
                        let n = stream.read(&mut buf)?;
                        if n == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
                    }
                    answered.fetch_add(depth as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread
            .join()
            .map_err(|_| io::Error::other("a client panicked"))??;
    }
    Ok(answered.load(Ordering::Relaxed))
}

/// One server's figures from one round.
#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    cpu_us: f64,
    sends: Option<f64>,
}

fn measure(kind: &str, depth: usize, duration: Duration) -> io::Result<Sample> {
    let server = Server::start(kind)?;
    pin(server.child.id(), 0);
    let out = std::env::temp_dir().join(format!("torsion-bench-sends-{}", std::process::id()));
    let pid = server.child.id().to_string();
    let events = "syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,\
                  syscalls:sys_enter_write,syscalls:sys_enter_writev";
    let mut perf = Command::new("perf")
        .args(["stat", "-x", ",", "-e", events, "-o"])
        .arg(&out)
        .args(["-p", &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok();
    // perf does not say when it is attached; an idle server makes no calls.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let requests = drive(server.port, depth, duration)?;
    let elapsed = started.elapsed();
    let cpu = server.cpu()?.saturating_sub(cpu_before);
    let sends = perf.as_mut().and_then(|perf| {
        // SAFETY: kill only sends a signal to the perf process we started.
        unsafe {
            libc::kill(perf.id() as libc::pid_t, libc::SIGINT);
        }
        perf.wait().ok()?;
        let summary = std::fs::read_to_string(&out).ok()?;
        let _ = std::fs::remove_file(&out);
        let calls: f64 = summary
            .lines()
            .filter(|line| line.contains("sys_enter_"))
            .filter_map(|line| line.split(',').next()?.trim().parse::<f64>().ok())
            .sum();
        Some(calls / requests.max(1) as f64)
    });
    Ok(Sample {
        rps: requests as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        sends,
    })
}

/// `torsion-bench pipelined [--quick] [--servers a,b,...]`: every server
/// at depths 1 and 32. A server may be another build's, as `KIND@PATH`
/// (see `Server::start`); ratios are to the first server listed.
pub fn run(quick: bool, servers: Option<&str>) -> io::Result<()> {
    let servers: Vec<&str> = servers.map_or(SERVERS.to_vec(), |list| list.split(',').collect());
    let (labels, legend) = server_labels(&servers);
    pin(0, 1);
    let (rounds, duration) = if quick { (1, 0.8) } else { (3, 2.0) };
    let duration = Duration::from_secs_f64(duration);
    println!(
        "pipelined lines: {CONNECTIONS} connections, {} B lines, {rounds} round(s) of {duration:?}, servers interleaved",
        LINE.len()
    );
    for depth in [1, 32] {
        println!("\n== depth {depth}");
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for round in 1..=rounds {
            for (i, kind) in servers.iter().enumerate() {
                let sample = measure(kind, depth, duration)?;
                eprintln!(
                    "round {round} {kind:>14}: {:>9.0} req/s  server {:>6.3} us/req",
                    sample.rps, sample.cpu_us
                );
                samples[i].push(sample);
            }
        }
        let base = median(samples[0].iter().map(|s| s.cpu_us).collect());
        println!(
            "{:<14} {:>10} {:>12} {:>10} {:>12}",
            "server", "req/s", "CPU us/req", "CPU x", "sends/req"
        );
        for (kind, runs) in labels.iter().zip(&samples) {
            let rps = median(runs.iter().map(|s| s.rps).collect());
            let cpu = median(runs.iter().map(|s| s.cpu_us).collect());
            let sends = if runs.iter().all(|s| s.sends.is_some()) {
                format!(
                    "{:.3}",
                    median(runs.iter().filter_map(|s| s.sends).collect())
                )
            } else {
                "-".into()
            };
            println!(
                "{kind:<14} {rps:>10.0} {cpu:>12.3} {:>10.2} {sends:>12}",
                cpu / base
            );
        }
    }
    println!(
        "\n\"CPU x\": each server's CPU per request divided by that of the first server ({})",
        labels[0]
    );
    for line in legend {
        println!("{line}");
    }
    Ok(())
}
