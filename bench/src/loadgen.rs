//! The load generator: many ping-pong connections on one thread, over
//! non-blocking sockets, verifying every echoed byte.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use torsion_protocol::testing::XorShift;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What one run measured.
pub struct Report {
    /// Round trips completed.
    pub requests: u64,
    /// Wall time of the measured window.
    pub elapsed: Duration,
    /// Round-trip latencies in nanoseconds, sorted.
    pub latencies: Vec<u32>,
    /// CPU time the load generator used (user + system).
    pub cpu: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(self.latencies[rank] as u64)
    }
}

struct Conn {
    stream: TcpStream,
    /// The message in flight.
    message: Vec<u8>,
    written: usize,
    received: usize,
    sent_at: Instant,
    seq: u64,
    /// At a fixed rate: when the next request is due, if it is waiting.
    due: Option<Instant>,
    /// At a fixed rate: the slot of the request in flight.
    slot: Instant,
}

/// Fills `message` with bytes that depend on the connection and the
/// sequence number, so a misrouted or stale echo is caught.
fn fill(message: &mut [u8], conn: usize, seq: u64) {
    XorShift::new((conn as u64) << 32 ^ seq ^ 0x9e37_79b9_7f4a_7c15).fill(message);
}

/// Runs `connections` ping-pong clients of `size`-byte messages against
/// `addr` for `warmup` then `duration`, counting only the second window.
///
/// With a `rate` (requests per second, over all connections) each
/// connection sends its next request on a fixed schedule instead of as
/// soon as the last echo is back: connection `k` every
/// `connections / rate` seconds, on a fixed grid, staggered. A request
/// whose slot has passed goes out at once (slots more than one interval
/// late are skipped, not replayed); latency is measured from the actual
/// send. The generator polls without sleeping in this mode, so its own
/// wake-ups add nothing to the latencies (it has its own CPU).
///
/// With `per_connection`, each client closes its connection after that
/// many round trips and connects again (1: short-lived connections, as
/// HTTP/1.0 clients and health checks make); the latency of a connection's
/// first round trip then includes its connect.
pub fn run(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    rate: Option<f64>,
    per_connection: Option<u64>,
) -> io::Result<Report> {
    let interval = rate.map(|rate| Duration::from_secs_f64(connections as f64 / rate));
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(connections);
    for key in 0..connections {
        let std_stream = std::net::TcpStream::connect(addr)?;
        std_stream.set_nonblocking(true)?;
        std_stream.set_nodelay(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            stream,
            message: vec![0; size],
            written: 0,
            received: 0,
            sent_at: Instant::now(),
            seq: 0,
            due: None,
            slot: Instant::now(),
        });
    }
    let mut buf = vec![0u8; size.max(64 * 1024)];
    let mut events = Events::with_capacity(1024);
    let mut latencies: Vec<u32> = Vec::new();
    let mut requests = 0u64;
    let cpu_start = cpu_time();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut measuring = false;
    let mut window_start = start;
    let mut cpu_window_start = cpu_start;

    for (key, conn) in conns.iter_mut().enumerate() {
        fill(&mut conn.message, key, 0);
        match interval {
            Some(interval) => conn.due = Some(start + interval * key as u32 / connections as u32),
            None => {
                conn.sent_at = Instant::now();
                send(conn)?;
            }
        }
    }
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // At a fixed rate: send what is due, and poll without waiting
        // (epoll waits in whole milliseconds, far coarser than the slots).
        let mut timeout = Duration::from_millis(10);
        if interval.is_some() {
            timeout = Duration::ZERO;
            for conn in conns.iter_mut() {
                if let Some(due) = conn.due.filter(|due| *due <= now) {
                    conn.due = None;
                    conn.slot = due;
                    conn.sent_at = now;
                    send(conn)?;
                }
            }
        }
        if !measuring && now >= measure_from {
            measuring = true;
            window_start = now;
            cpu_window_start = cpu_time();
            requests = 0;
            latencies.clear();
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let key = event.token().0;
            let conn = &mut conns[key];
            if event.is_writable() && conn.written < size {
                send(conn)?;
            }
            if event.is_readable() {
                loop {
                    let want = size - conn.received;
                    if want == 0 {
                        break;
                    }
                    match conn.stream.read(&mut buf[..want]) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "server closed a connection",
                            ))
                        }
                        Ok(n) => {
                            let at = conn.received;
                            if buf[..n] != conn.message[at..at + n] {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "echoed bytes differ from those sent",
                                ));
                            }
                            conn.received += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if conn.received == size {
                    let rtt = conn.sent_at.elapsed();
                    requests += 1;
                    latencies.push(u32::try_from(rtt.as_nanos()).unwrap_or(u32::MAX));
                    conn.seq += 1;
                    fill(&mut conn.message, key, conn.seq);
                    conn.written = 0;
                    conn.received = 0;
                    if per_connection.is_some_and(|n| conn.seq % n.max(1) == 0) {
                        // Close, connect again, and send once connected
                        // (the writable event).
                        poll.registry().deregister(&mut conn.stream)?;
                        let mut stream = TcpStream::connect(addr)?;
                        stream.set_nodelay(true)?;
                        poll.registry().register(
                            &mut stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        conn.stream = stream;
                        conn.sent_at = Instant::now();
                        continue;
                    }
                    match interval {
                        Some(interval) => {
                            // The next slot on the grid, unless that is
                            // already more than an interval gone.
                            let next = conn.slot + interval;
                            let now = Instant::now();
                            conn.due = Some(if next + interval < now { now } else { next });
                        }
                        None => {
                            conn.sent_at = Instant::now();
                            send(conn)?;
                        }
                    }
                }
            }
        }
    }
    let elapsed = window_start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_window_start);
    latencies.sort_unstable();
    Ok(Report {
        requests,
        elapsed,
        latencies,
        cpu,
    })
}

fn send(conn: &mut Conn) -> io::Result<()> {
    while conn.written < conn.message.len() {
        match conn.stream.write(&conn.message[conn.written..]) {
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// CPU time this thread has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is
    // valid on Linux, the only platform the benchmark runs on.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}
