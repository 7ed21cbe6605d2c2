//! TLS echo: Torsion's `TlsProtocol` against tokio-rustls on a
//! current-thread runtime, with the same rustls configuration (ring, an
//! ECDSA P-256 certificate, TLS 1.3 only, X25519 first), servers
//! interleaved, server on CPU 0 and clients on CPU 1.
//!
//! - ping-pong: [`CONNECTIONS`] clients, each writing 1 KiB and reading
//!   it back before the next; server CPU per message;
//! - handshakes: clients that connect, handshake, echo 1 KiB, send
//!   close_notify and close, in a loop, full (a fresh client
//!   configuration each time) or resumed (one shared configuration, whose
//!   session cache resumes); server CPU per handshake.
//!
//! The clients are blocking rustls clients and check every byte.
//!
//! Twisted's TLS echo (pyOpenSSL, the epoll reactor, an `ssl:` endpoint
//! with the same certificate) runs as a reference line when a Python with
//! Twisted and pyOpenSSL is found (`TORSION_PYTHON`, or the workspace's
//! `.venv`, which `just setup` makes); otherwise it is skipped with a
//! message.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, StreamOwned};
use torsion_echo::EchoFactory;
use torsion_protocol::{ListenOptions, Reactor, ReactorTcp};
use torsion_tls::TlsServerFactory;

use crate::{median, pin, Server};

const SERVERS: [&str; 2] = ["tls-torsion", "tls-tokio"];
/// The reference line, when Twisted is there.
const TWISTED: &str = "tls-twisted";
const CONNECTIONS: usize = 64;
const MESSAGE: usize = 1024;

/// The certificate, its key and the CA, made the same way in every
/// process (fixed seedless keys are not needed: only the kind matters).
struct Pki {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "bench server");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let _ = ca_cert;
    Pki {
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration both servers use: TLS 1.3 only, tickets on.
fn server_config(pki: &Pki) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), key)
        .unwrap();
    config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    Arc::new(config)
}

fn announce(port: u16) {
    println!("{port}");
    let _ = io::stdout().flush();
}

/// Torsion: the echo protocol behind `TlsServerFactory`.
pub fn torsion() -> io::Result<()> {
    let pki = pki();
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp_with(
        0,
        TlsServerFactory::new(server_config(&pki), EchoFactory),
        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
    )?;
    announce(port.get_host().port().unwrap_or(0));
    reactor.run().map_err(io::Error::other)
}

/// tokio-rustls on a current-thread runtime: accept, then copy what is
/// read back, with a 16 KiB buffer.
pub fn tokio() -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&pki));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        announce(listener.local_addr()?.port());
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                loop {
                    let (socket, _) = listener.accept().await?;
                    socket.set_nodelay(true)?;
                    let acceptor = acceptor.clone();
                    tokio::task::spawn_local(async move {
                        let Ok(mut stream) = acceptor.accept(socket).await else {
                            return;
                        };
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = stream.shutdown().await;
                    });
                }
            })
            .await
    })
}

/// The clients do not know each server's throwaway CA: they check
/// signatures but not the chain (client-side work, not measured).
fn client_config() -> Arc<ClientConfig> {
    torsion_tls::ClientSettings::new()
        .dangerous_accept_any_server_certificate()
        .build()
        .unwrap()
}

fn connect(
    port: u16,
    config: Arc<ClientConfig>,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let socket = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    socket.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    Ok(StreamOwned::new(conn, socket))
}

fn echo_once(
    stream: &mut StreamOwned<ClientConnection, TcpStream>,
    message: &[u8],
) -> io::Result<()> {
    stream.write_all(message)?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back)?;
    if back != message {
        return Err(io::Error::other("the echo differs"));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Load {
    PingPong,
    /// 8 connections echoing 16 KiB messages.
    Streams,
    Handshakes {
        resumed: bool,
    },
}

/// Runs the clients for `duration`; returns the operations done
/// (messages or handshakes).
fn drive(port: u16, load: Load, duration: Duration) -> io::Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients = match load {
        Load::PingPong => CONNECTIONS,
        Load::Streams => 8,
        Load::Handshakes { .. } => 4,
    };
    let shared = client_config();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (stop, done, shared) = (stop.clone(), done.clone(), shared.clone());
            std::thread::spawn(move || -> io::Result<()> {
                pin(0, 1);
                let size = if matches!(load, Load::Streams) {
                    16 * 1024
                } else {
                    MESSAGE
                };
                let message: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
                match load {
                    Load::PingPong | Load::Streams => {
                        let mut stream = connect(port, shared)?;
                        while !stop.load(Ordering::Relaxed) {
                            echo_once(&mut stream, &message)?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    Load::Handshakes { resumed } => {
                        while !stop.load(Ordering::Relaxed) {
                            let config = if resumed {
                                shared.clone()
                            } else {
                                client_config()
                            };
                            let mut stream = connect(port, config)?;
                            echo_once(&mut stream, &message)?;
                            stream.conn.send_close_notify();
                            stream.flush()?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
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
    Ok(done.load(Ordering::Relaxed))
}

#[derive(Clone, Copy)]
struct Sample {
    per_second: f64,
    cpu_us: f64,
}

/// Twisted's TLS echo server, run by Python from a script on its
/// command line, with the certificate and key in PEM files.
const TWISTED_SERVER: &str = r#"
import sys
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

def listening(port):
    print(port.getHost().port, flush=True)

endpoint = serverFromString(
    reactor, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (sys.argv[1], sys.argv[2]))
endpoint.listen(Factory.forProtocol(Echo)).addCallback(listening)
reactor.run()
"#;

/// How to start Twisted's server: a Python with Twisted and pyOpenSSL,
/// and the PEM files.
struct Twisted {
    python: PathBuf,
    dir: PathBuf,
}

impl Twisted {
    /// `None`, with the reason, if there is no usable Python.
    fn find() -> Result<Twisted, String> {
        let python = std::env::var_os("TORSION_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
            });
        let ok = Command::new(&python)
            .args(["-c", "import twisted, OpenSSL, service_identity"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !ok {
            return Err(format!(
                "{} cannot import twisted, OpenSSL and service_identity (run `just setup`, or set TORSION_PYTHON)",
                python.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!("torsion-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pem = pem();
        std::fs::write(dir.join("key.pem"), pem.key).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("cert.pem"), pem.cert).map_err(|e| e.to_string())?;
        Ok(Twisted { python, dir })
    }

    fn start(&self) -> io::Result<Server> {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(TWISTED_SERVER)
            .arg(self.dir.join("key.pem"))
            .arg(self.dir.join("cert.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let port = line.trim().parse().map_err(|_| {
            let _ = child.kill();
            io::Error::other(format!("Twisted did not report its port: {line:?}"))
        })?;
        Ok(Server { child, port })
    }
}

impl Drop for Twisted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate like [`pki`]'s, in PEM, for Twisted.
struct Pem {
    cert: String,
    key: String,
}

fn pem() -> Pem {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "bench server");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn measure(
    kind: &str,
    twisted: Option<&Twisted>,
    load: Load,
    duration: Duration,
) -> io::Result<Sample> {
    let server = match twisted {
        Some(twisted) if kind == TWISTED => twisted.start()?,
        _ => Server::start(kind)?,
    };
    pin(server.child.id(), 0);
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let count = drive(server.port, load, duration)?;
    let elapsed = started.elapsed();
    let cpu = server.cpu()?.saturating_sub(cpu_before);
    Ok(Sample {
        per_second: count as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / count.max(1) as f64,
    })
}

/// `torsion-bench tls [--quick]`.
pub fn run(quick: bool) -> io::Result<()> {
    pin(0, 1);
    let (rounds, duration) = if quick { (1, 0.8) } else { (3, 2.0) };
    let duration = Duration::from_secs_f64(duration);
    println!(
        "TLS echo (TLS 1.3, ECDSA P-256, ring): {rounds} round(s) of {duration:?}, servers interleaved"
    );
    let twisted = match Twisted::find() {
        Ok(twisted) => Some(twisted),
        Err(why) => {
            println!("Twisted's reference line skipped: {why}");
            None
        }
    };
    let mut servers = SERVERS.to_vec();
    if twisted.is_some() {
        servers.push(TWISTED);
    }
    for (title, load) in [
        (format!("ping-pong, {CONNECTIONS} x 1 KiB"), Load::PingPong),
        ("streams, 8 x 16 KiB messages".to_owned(), Load::Streams),
        (
            "full handshakes (+ one echo, close_notify)".to_owned(),
            Load::Handshakes { resumed: false },
        ),
        (
            "resumed handshakes (+ one echo, close_notify)".to_owned(),
            Load::Handshakes { resumed: true },
        ),
    ] {
        println!("\n== {title}");
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for round in 1..=rounds {
            for (i, kind) in servers.iter().enumerate() {
                let sample = measure(kind, twisted.as_ref(), load, duration)?;
                eprintln!(
                    "round {round} {kind:>12}: {:>9.0}/s  server {:>7.2} us each",
                    sample.per_second, sample.cpu_us
                );
                samples[i].push(sample);
            }
        }
        let base = median(samples[0].iter().map(|s| s.cpu_us).collect());
        println!(
            "{:<12} {:>10} {:>14} {:>8} {:>8}",
            "server", "per s", "CPU us each", "CPU x", "MiB/s"
        );
        for (kind, runs) in servers.iter().zip(&samples) {
            let rate = median(runs.iter().map(|s| s.per_second).collect());
            let cpu = median(runs.iter().map(|s| s.cpu_us).collect());
            let mib = match load {
                Load::Streams => format!("{:.0}", rate * 16.0 / 1024.0),
                _ => "-".to_owned(),
            };
            println!(
                "{kind:<12} {rate:>10.0} {cpu:>14.2} {:>8.2} {mib:>8}",
                cpu / base
            );
        }
    }
    println!("\n\"CPU x\": each server's CPU per operation divided by Torsion's");
    Ok(())
}

/// `torsion-bench tls-idle [N]`: heap bytes a TLS echo server holds per
/// idle connection (after its handshake and one echo), Torsion against
/// tokio-rustls, each measured in a process of its own by the benchmark's
/// counting allocator, with the clients in another process.
pub fn idle(n: usize) -> io::Result<()> {
    println!(
        "== memory per idle TLS connection ({n} connections, server heap, after one echo each)"
    );
    for kind in SERVERS {
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["tls-idle-one", kind, &n.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    Ok(())
}

/// One server kind: serves on a thread of this process, drives clients
/// in a child process, prints the heap growth per connection.
pub fn idle_one(kind: &str, n: usize) -> io::Result<()> {
    use std::io::{BufRead, BufReader};
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    match kind {
        "tls-torsion" => {
            std::thread::spawn(move || {
                let pki = pki();
                let reactor = Reactor::new().unwrap();
                reactor.set_signal_handling(false);
                let port = reactor
                    .listen_tcp_with(
                        0,
                        TlsServerFactory::new(server_config(&pki), EchoFactory),
                        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
                    )
                    .unwrap();
                port_tx.send(port.get_host().port().unwrap()).unwrap();
                let _ = reactor.run();
            });
        }
        _ => {
            std::thread::spawn(move || {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let pki = pki();
                let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&pki));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                        .await
                        .unwrap();
                    port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                    let local = tokio::task::LocalSet::new();
                    local
                        .run_until(async move {
                            loop {
                                let (socket, _) = listener.accept().await.unwrap();
                                let acceptor = acceptor.clone();
                                tokio::task::spawn_local(async move {
                                    let Ok(mut stream) = acceptor.accept(socket).await else {
                                        return;
                                    };
                                    // The usual copy loop's buffer: what a
                                    // tokio-rustls echo server holds.
                                    let mut buf = vec![0u8; 16 * 1024];
                                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                                        if stream.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                });
                            }
                        })
                        .await
                });
            });
        }
    }
    let port: u16 = port_rx
        .recv()
        .map_err(|_| io::Error::other("the server did not start"))?;
    let mut clients = std::process::Command::new(std::env::current_exe()?)
        .args(["tls-idle-clients", &port.to_string(), &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut to_clients = clients.stdin.take().expect("piped");
    let mut lines = BufReader::new(clients.stdout.take().expect("piped")).lines();
    let mut next = || -> io::Result<String> {
        lines
            .next()
            .ok_or_else(|| io::Error::other("the clients stopped"))?
    };
    // The first connection warms up what is made once (the per-thread
    // buffer, session ticket keys, ...).
    assert_eq!(next()?, "warm");
    std::thread::sleep(Duration::from_millis(200));
    let before = crate::reactor::allocated();
    writeln!(to_clients, "go")?;
    assert_eq!(next()?, "ready");
    std::thread::sleep(Duration::from_millis(200));
    let after = crate::reactor::allocated();
    drop(to_clients);
    let _ = clients.wait();
    println!(
        "{kind:<12} {:>8.0} bytes per idle connection",
        (after - before) as f64 / n as f64
    );
    Ok(())
}

/// The client side of [`idle_one`]: one connection, `warm`; on a line,
/// `n` more, each with a handshake and one echo, `ready`; then holds them
/// until its input ends.
pub fn idle_clients(port: u16, n: usize) -> io::Result<()> {
    use std::io::BufRead;
    let config = client_config();
    let message = [7u8; 64];
    let mut held = Vec::with_capacity(n + 1);
    let mut stream = connect(port, config.clone())?;
    echo_once(&mut stream, &message)?;
    held.push(stream);
    println!("warm");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    for _ in 0..n {
        let mut stream = connect(port, config.clone())?;
        echo_once(&mut stream, &message)?;
        held.push(stream);
    }
    println!("ready");
    io::stdout().flush()?;
    let _ = io::stdin().lock().read_line(&mut line);
    Ok(())
}

/// `torsion-bench tls-drive PORT [streams|pingpong] [N]`: drives a server
/// started by hand (`torsion-bench serve tls-torsion`, for instance under
/// `valgrind --tool=callgrind`) with exactly `N` messages per connection
/// (8 × 16 KiB streams or 64 × 1 KiB ping-pong), then closes with
/// close_notify; for instruction counts, which need a fixed amount of work
/// rather than a fixed time.
pub fn drive_count(port: u16, load: &str, per_connection: u64) -> io::Result<()> {
    let (clients, size) = match load {
        "pingpong" => (CONNECTIONS, MESSAGE),
        _ => (8, 16 * 1024),
    };
    let shared = client_config();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || -> io::Result<()> {
                let message: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
                let mut stream = connect(port, shared)?;
                for _ in 0..per_connection {
                    echo_once(&mut stream, &message)?;
                }
                stream.conn.send_close_notify();
                stream.flush()
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| io::Error::other("a client panicked"))??;
    }
    println!("{} messages", clients as u64 * per_connection);
    Ok(())
}
