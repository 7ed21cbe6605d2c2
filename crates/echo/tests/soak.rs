//! The soak and fault suite: the echo server under many connections, a
//! long verified stream, clients that reset, die or half-close, slow and
//! idle peers. After each scenario the server must still serve, hold the
//! descriptors it held before, and be back near its heap baseline.
//!
//! `cargo test` runs a bounded version (seconds); `just soak` sets
//! `TORSION_SOAK=full` and runs the full one (10,000 connections, 1 GiB).
//! Each scenario prints one line of figures; `docs/reliability.md` quotes
//! them.
//!
//! The server runs on its own reactor thread in this process, so its heap
//! (a counting allocator) and descriptors can be measured. Clients are
//! plain blocking sockets, or child processes (this same test binary in
//! the role of `child_role`) where they need descriptors of their own or
//! must be killed. The measuring machinery is in `support/`, shared with
//! the network suite (`network.rs`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use torsion_protocol::socket2::{SockRef, Socket};
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::{
    Address, ClientFactory, Factory, Protocol, Reactor, ReactorTcp, ReconnectingClientFactory,
    TransportRef,
};

mod support;
use support::*;

// ----- child processes -----------------------------------------------------

fn spawn_child(role: String) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_role", "--exact", "--quiet", "--nocapture"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// Reads the child's output up to its `READY` line.
fn wait_ready(stdout: &mut BufReader<std::process::ChildStdout>) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "child ended early"
        );
        if line.trim() == "READY" {
            return;
        }
    }
}

/// The child's role. `many:ADDR:N:ROUNDS` opens N connections and echoes
/// ROUNDS verified messages on each; `flood:ADDR:N` opens N connections
/// and sends on each without reading. Both print `READY` and then hold
/// their connections until stdin closes (or they are killed). Does nothing
/// as an ordinary test.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    raise_descriptor_limit();
    let parts: Vec<&str> = role.split(':').collect();
    let addr: SocketAddr = format!("{}:{}", parts[1], parts[2]).parse().unwrap();
    let count: usize = parts[3].parse().unwrap();
    let mut streams: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    match parts[0] {
        "many" => {
            let rounds: usize = parts[4].parse().unwrap();
            for round in 0..rounds {
                for (i, stream) in streams.iter_mut().enumerate() {
                    stream.write_all(&message(i, round)).unwrap();
                }
                for (i, stream) in streams.iter_mut().enumerate() {
                    stream.set_read_timeout(Some(DEADLINE)).unwrap();
                    let mut echo = [0u8; 64];
                    stream.read_exact(&mut echo).unwrap();
                    assert_eq!(echo, message(i, round), "connection {i}, round {round}");
                }
            }
        }
        "flood" => {
            for stream in &mut streams {
                stream.set_nonblocking(true).unwrap();
                let chunk = [b'f'; 64 * 1024];
                while stream.write(&chunk).is_ok() {}
            }
        }
        other => panic!("unknown role {other}"),
    }
    println!("READY");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(streams);
}

/// A 64-byte message unique to its connection and round.
fn message(connection: usize, round: usize) -> [u8; 64] {
    let mut message = [b'.'; 64];
    let text = format!("connection {connection} round {round}");
    message[..text.len()].copy_from_slice(text.as_bytes());
    message
}

// ----- scenarios -----------------------------------------------------------

#[test]
fn many_concurrent_connections_each_verified() {
    let Some(_serial) = serial() else {
        return;
    };
    let limit = raise_descriptor_limit();
    let wanted = scale(1_000, 10_000);
    // This process holds the server's end of each connection.
    let connections = wanted.min(limit.saturating_sub(100) as usize);
    let rounds = 4;
    let server = Server::start(None);
    let scenario = Scenario::begin("many connections");
    let (mut child, mut stdout) = spawn_child(format!(
        "many:{}:{}:{connections}:{rounds}",
        server.addr.ip(),
        server.addr.port()
    ));
    wait_ready(&mut stdout);
    server.live.wait_for(connections, "all connected");
    let per_connection = (heap() - scenario.heap) / connections as isize;
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "every echo was verified");
    drop(stdout);
    scenario.finish(
        &server,
        64 * 1024 + 64 * connections as isize,
        format!(
            "{connections} concurrent connections (descriptor limit {limit}), {} messages verified, {per_connection} B of server heap per open connection",
            connections * rounds
        ),
    );
    assert!(per_connection < 1024, "{per_connection} B per connection");
}

/// Deterministic, incompressible-looking bytes: block `n` of the stream.
fn block(n: u64, buffer: &mut [u8; 64 * 1024]) {
    for (i, word) in buffer.chunks_exact_mut(8).enumerate() {
        let x = (n * 8192 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        word.copy_from_slice(&(x ^ (x >> 29)).to_le_bytes());
    }
}

#[test]
fn a_long_stream_comes_back_with_the_same_sha256() {
    let Some(_serial) = serial() else {
        return;
    };
    let total: u64 = scale(64, 1024) as u64 * 1024 * 1024;
    let server = Server::start(None);
    // The client's own buffer, allocated before the baseline.
    let mut buffer = vec![0u8; 256 * 1024];
    let scenario = Scenario::begin("stream");
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut buffer = [0u8; 64 * 1024];
        for n in 0..total / buffer.len() as u64 {
            block(n, &mut buffer);
            hash.update(buffer);
            writer.write_all(&buffer).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        hash.finalize()
    });
    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut peak = 0;
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        received += n as u64;
        peak = peak.max(heap() - scenario.heap);
    }
    let sent = sender.join().unwrap();
    drop(reader);
    assert_eq!(received, total);
    assert_eq!(hash.finalize(), sent, "SHA-256 of what came back");
    scenario.finish(
        &server,
        64 * 1024,
        format!(
            "{} MiB echoed, SHA-256 {} matches, bytes lost 0, peak extra heap {peak} B",
            total >> 20,
            hex(&sent)
        ),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + "…"
}

#[test]
fn clients_that_reset_while_the_server_writes() {
    let Some(_serial) = serial() else {
        return;
    };
    let clients = scale(50, 500);
    let server = Server::start(None);
    let scenario = Scenario::begin("resets");
    let mut sent = 0usize;
    let mut streams = Vec::new();
    for _ in 0..clients {
        // A small receive buffer, never read: the server's echo backs up
        // in its write buffer, and it stops reading from us.
        let socket = Socket::new(
            torsion_protocol::socket2::Domain::IPV4,
            torsion_protocol::socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_nonblocking(true).unwrap();
        let chunk = [b'r'; 64 * 1024];
        loop {
            match stream.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        streams.push(stream);
    }
    server.live.wait_for(clients, "all connected");
    // Each client has unread echo in its receive buffer and the server has
    // more in flight: the reset lands while the server is writing.
    for stream in streams {
        SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream); // RST
    }
    scenario.finish(
        &server,
        64 * 1024,
        format!(
            "{clients} clients sent {} MiB without reading the echo, then reset (SO_LINGER 0)",
            sent >> 20,
        ),
    );
}

#[test]
fn clients_killed_with_sigkill() {
    let Some(_serial) = serial() else {
        return;
    };
    let (children, per_child) = (scale(4, 16), 25);
    let server = Server::start(None);
    let scenario = Scenario::begin("SIGKILL");
    let mut killed = Vec::new();
    for _ in 0..children {
        let (child, mut stdout) = spawn_child(format!(
            "flood:{}:{}:{per_child}",
            server.addr.ip(),
            server.addr.port()
        ));
        wait_ready(&mut stdout);
        killed.push(child);
    }
    server.live.wait_for(children * per_child, "all connected");
    for child in &mut killed {
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    scenario.finish(
        &server,
        64 * 1024,
        format!(
            "{children} client processes with {} flooding connections killed",
            children * per_child
        ),
    );
}

#[test]
fn peers_that_half_close_get_everything_back() {
    let Some(_serial) = serial() else {
        return;
    };
    let clients = scale(100, 1_000);
    let server = Server::start(None);
    let scenario = Scenario::begin("half-close");
    let mut total = 0;
    for i in 0..clients {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let data: Vec<u8> = (0..32 * 1024).map(|j| (i + j) as u8).collect();
        stream.write_all(&data).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echo = Vec::new();
        stream.read_to_end(&mut echo).unwrap();
        assert!(echo == data, "client {i} got {} bytes back", echo.len());
        total += echo.len();
    }
    scenario.finish(
        &server,
        64 * 1024,
        format!(
            "{clients} clients half-closed after 32 KiB; all {} KiB came back before the close",
            total >> 10
        ),
    );
}

#[test]
fn a_peer_sending_one_byte_at_a_time() {
    let Some(_serial) = serial() else {
        return;
    };
    let bytes = scale(200, 2_000);
    let server = Server::start(None);
    let scenario = Scenario::begin("slow peer");
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut others = 0;
    for i in 0..bytes {
        // The injected fault is the pace itself: a byte every 2 ms.
        std::thread::sleep(Duration::from_millis(2));
        slow.write_all(&[i as u8]).unwrap();
        if i % 50 == 0 {
            // Meanwhile the server serves everyone else.
            server.still_serves();
            others += 1;
        }
    }
    let mut echo = vec![0u8; bytes];
    slow.read_exact(&mut echo).unwrap();
    assert!(echo.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(slow);
    scenario.finish(
        &server,
        64 * 1024,
        format!("{bytes} bytes at one per 2 ms, all echoed in order; {others} other clients served meanwhile"),
    );
}

#[test]
fn idle_peers_are_reaped() {
    let Some(_serial) = serial() else {
        return;
    };
    let clients = scale(50, 500);
    let timeout = Duration::from_millis(200);
    let server = Server::start(Some(timeout));
    let scenario = Scenario::begin("idle reaping");
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let live = &server.live;
    live.wait_until("idle peers reaped", |open, accepted| {
        open == 0 && accepted == clients + 1
    });
    let reaped_after = started.elapsed();
    for stream in &mut streams {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            stream.read_to_end(&mut rest).unwrap(),
            0,
            "closed, not reset"
        );
    }
    drop(streams);
    assert!(reaped_after >= timeout);
    scenario.finish(
        &server,
        64 * 1024,
        format!(
            "{clients} idle peers closed by a {} ms idle timeout, all within {} ms",
            timeout.as_millis(),
            reaped_after.as_millis()
        ),
    );
}

/// Says `ping` on every connection and counts the echoes.
struct Pinger(Arc<Live>);

impl Protocol for Pinger {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.write(b"ping");
    }
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        // Loopback delivers four bytes whole.
        assert_eq!(data, b"ping");
        self.0.opened();
    }
}

struct PingerFactory(Arc<Live>);

impl Factory for PingerFactory {
    type Protocol = Pinger;
    fn build_protocol(&self, _peer: &Address) -> Option<Pinger> {
        Some(Pinger(self.0.clone()))
    }
}

impl ClientFactory for PingerFactory {}

#[test]
fn a_server_restarted_under_a_reconnecting_client() {
    let Some(_serial) = serial() else {
        return;
    };
    let restarts = scale(3, 20);
    // Baselines before any server: each restart makes new descriptors.
    let fds = DescriptorGuard::new();
    let heap_before = heap();
    let started = Instant::now();
    let mut server = Server::start(None);
    let port = server.addr.port();

    let echoes = Arc::new(Live::default());
    let (tx, rx) = mpsc::channel();
    let client_echoes = echoes.clone();
    let client = std::thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        reactor.set_signal_handling(false);
        let factory = ReconnectingClientFactory::new(PingerFactory(client_echoes))
            .initial_delay(Duration::from_millis(20))
            .max_delay(Duration::from_millis(100))
            .jitter(0.0);
        let connector = reactor.connect_tcp("127.0.0.1", port, factory, Duration::from_secs(5));
        tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
        drop(connector);
    });
    let client_handle = rx.recv().unwrap();
    for restart in 1..=restarts {
        // Accepted counts echoes here: one per connection.
        echoes.wait_until("echo before the restart", |_, echoed| echoed == restart);
        drop(server); // the server goes away: its connections close
        server = Server::start_on(port, None);
    }
    echoes.wait_until("echo after the last restart", |_, echoed| {
        echoed == restarts + 1
    });
    client_handle.stop().unwrap();
    client.join().unwrap();
    drop(server);
    let retained = heap() - heap_before;
    fds.check();
    eprintln!(
        "soak restarts: the server restarted {restarts} times under a ReconnectingClientFactory client, which reconnected and got its echo each time; heap retained {retained} B; descriptors back to baseline; {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        retained <= 64 * 1024,
        "{retained} bytes of heap not given back"
    );
}
