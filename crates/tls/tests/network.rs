//! TLS across a real network (network namespaces, see
//! `crates/echo/tests/support/netns.rs`, shared with the echo crate's
//! network suite): handshakes and echoes under packet loss, a partition in
//! the middle of a handshake, and the mixed soak of plain and TLS clients
//! that `just soak` runs for ten minutes. Where namespaces cannot be made,
//! each test prints a `SKIPPED` line and returns.
//!
//! The server runs on a reactor thread of this process inside its
//! namespace; the soak's clients run in a child process (this binary in
//! the role of `net_child`), so the resident set and descriptor count
//! sampled here are the server's.

// Namespaces, veth pairs and setns are Linux's.
#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use torsion_protocol::testing::{DescriptorGuard, XorShift};
use torsion_protocol::{
    Address, ClientFactory, CloseReason, ConnectError, Connector, Factory, Keepalive,
    ListenOptions, Protocol, Reactor, ReactorHandle, ReactorTcp, ReadThrottle, TransportRef,
};
use torsion_tls::rustls::{ClientConfig, ServerConfig};
use torsion_tls::{server_name, TlsClientFactory, TlsServerFactory};

mod support;

// The namespace test network and the measurements shared with the echo
// crate's network suite: included by path, as a test crate cannot depend
// on another crate's tests (and a helper crate for a few test files would
// be more to keep than this one shared file).
#[path = "../../echo/tests/support/netns.rs"]
mod netns;
use netns::{descriptors, full, heap, idle_cpu, rss, setup, Namespace, NET_ROLE};

// ----- the server -------------------------------------------------------------

/// Echoes what it reads, reading no faster than it can write.
struct Echo(Arc<Counts>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &TransportRef) {
        let _ = ReadThrottle::install(transport);
        // A client that reset its connection after everything was echoed,
        // with that reset lost on the lossy link, would leave this side
        // open for good (nothing left to send, so nothing to be reset
        // again): a keep-alive probe, answered by a reset, ends it within
        // a few seconds of idleness.
        transport
            .set_tcp_keepalive(Some(Keepalive {
                idle: Duration::from_secs(1),
                interval: Some(Duration::from_secs(1)),
                retries: Some(3),
            }))
            .unwrap();
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let mut ended = self.0.ended.lock().unwrap();
        ended.0 += 1;
        ended.1.get_or_insert_with(Instant::now);
    }
}

#[derive(Default)]
struct Counts {
    built: Mutex<usize>,
    /// How many server-side protocols went away, and when the first did
    /// (a count, not a list: the soak's memory is measured).
    ended: Mutex<(usize, Option<Instant>)>,
}

struct EchoFactory(Arc<Counts>);

impl Factory for EchoFactory {
    type Protocol = Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
        *self.0.built.lock().unwrap() += 1;
        Some(Echo(self.0.clone()))
    }
}

/// A plain and a TLS echo server on a reactor thread in `ns`.
struct Server {
    plain: u16,
    tls: u16,
    handle: ReactorHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<Counts>,
}

impl Server {
    fn start(ns: &Namespace, config: Arc<ServerConfig>, handshake_timeout: Duration) -> Server {
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::channel();
        let factory_counts = counts.clone();
        let thread = ns.spawn(move || {
            let reactor = Reactor::new().unwrap();
            reactor.set_signal_handling(false);
            let any = || ListenOptions::interface(Ipv4Addr::UNSPECIFIED.into());
            let plain = reactor
                .listen_tcp_with(0, EchoFactory(factory_counts.clone()), any())
                .unwrap();
            let tls = reactor
                .listen_tcp_with(
                    0,
                    TlsServerFactory::new(config, EchoFactory(factory_counts))
                        .handshake_timeout(handshake_timeout),
                    any(),
                )
                .unwrap();
            let port =
                |p: &torsion_protocol::ListeningPort| p.get_host().socket_addr().unwrap().port();
            tx.send((port(&plain), port(&tls), reactor.handle()))
                .unwrap();
            reactor.run().unwrap();
            drop((plain, tls));
        });
        let (plain, tls, handle) = rx.recv().unwrap();
        Server {
            plain,
            tls,
            handle,
            thread: Some(thread),
            counts,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ----- clients --------------------------------------------------------------------

/// How a client connection behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Sends, checks the echo, closes.
    Echo,
    /// Sends, stops reading for a while, then checks the echo.
    Stall,
    /// Sends and resets the connection without waiting.
    Reset,
    /// Sends, half-closes, and expects everything back before the close
    /// (plain only).
    HalfClose,
}

#[derive(Default)]
struct Tally {
    started: usize,
    verified: usize,
    reset: usize,
    failures: Vec<String>,
    bytes: u64,
}

impl Tally {
    fn ended(&self) -> usize {
        self.verified + self.reset + self.failures.len()
    }
}

fn pattern(seed: u64, offset: usize, out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        let x = ((offset + i) as u64 ^ (seed << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        *byte = (x >> 56) as u8;
    }
}

struct Client {
    seed: u64,
    size: usize,
    mode: Mode,
    received: usize,
    tally: Rc<RefCell<Tally>>,
    done: bool,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &TransportRef) {
        let mut data = vec![0u8; self.size];
        pattern(self.seed, 0, &mut data);
        transport.write(&data);
        match self.mode {
            Mode::Reset => {
                self.done = true;
                self.tally.borrow_mut().reset += 1;
                transport.abort_connection();
            }
            Mode::HalfClose => transport.lose_write_connection(),
            Mode::Stall => {
                transport.pause_reading();
                if let Some(reactor) = transport.reactor() {
                    let transport = transport.clone();
                    reactor.call_later(Duration::from_millis(300), move |_| {
                        transport.resume_reading();
                    });
                }
            }
            Mode::Echo => {}
        }
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let mut expected = vec![0u8; data.len()];
        pattern(self.seed, self.received, &mut expected);
        if data != expected.as_slice() || self.received + data.len() > self.size {
            self.done = true;
            self.tally.borrow_mut().failures.push(format!(
                "{:?} connection of {} bytes: wrong bytes at {}",
                self.mode, self.size, self.received
            ));
            transport.abort_connection();
            return;
        }
        self.received += data.len();
        if self.received == self.size && self.mode != Mode::HalfClose {
            transport.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        if self.done {
            return;
        }
        let mut tally = self.tally.borrow_mut();
        // Either side's close_notify may come first under TLS.
        let clean = match self.mode {
            Mode::HalfClose => matches!(reason, CloseReason::ClosedByPeer),
            _ => reason.is_clean(),
        };
        if clean && self.received == self.size {
            tally.verified += 1;
            tally.bytes += self.size as u64;
        } else {
            tally.failures.push(format!(
                "{:?} connection: {} of {} bytes back, ended: {reason}",
                self.mode, self.received, self.size
            ));
        }
    }
}

/// Makes one client connection, and calls `next` when it is over.
struct ClientFactoryOf {
    protocol: RefCell<Option<Client>>,
    tally: Rc<RefCell<Tally>>,
    next: Rc<dyn Fn(&Reactor)>,
}

impl Factory for ClientFactoryOf {
    type Protocol = Client;
    fn build_protocol(&self, _peer: &Address) -> Option<Client> {
        self.protocol.borrow_mut().take()
    }
}

impl ClientFactory for ClientFactoryOf {
    fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
        self.tally
            .borrow_mut()
            .failures
            .push(format!("connect failed: {reason}"));
        if let Some(reactor) = connector.reactor() {
            (self.next)(&reactor);
        }
    }
    fn client_connection_lost(&self, connector: &Connector, _reason: &CloseReason) {
        if let Some(reactor) = connector.reactor() {
            (self.next)(&reactor);
        }
    }
}

/// What a client process does.
struct Plan {
    addr: Ipv4Addr,
    plain: u16,
    tls: u16,
    /// Connections open at once.
    concurrency: usize,
    /// Connections in all (when `until` is `None`).
    total: usize,
    /// Keep going until then instead.
    until: Option<Instant>,
    /// Share of TLS connections, and whether modes other than `Echo` are
    /// used.
    tls_share: f64,
    mixed: bool,
    config: Arc<ClientConfig>,
}

/// How long clients may take (beyond `Plan::until`) before their run is
/// stopped and failed.
const CLIENTS_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `plan` on a client reactor in the calling thread (which is in the
/// client namespace); returns the tally.
fn run_clients(plan: Plan) -> Tally {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let plan = Rc::new(plan);
    let random = Rc::new(RefCell::new(XorShift::new(18)));
    type Starter = Rc<dyn Fn(&Reactor)>;
    let start: Rc<RefCell<Option<Starter>>> = Rc::new(RefCell::new(None));
    let starter: Rc<dyn Fn(&Reactor)> = {
        let (tally, plan, random, start) =
            (tally.clone(), plan.clone(), random.clone(), start.clone());
        Rc::new(move |reactor: &Reactor| {
            let more = match plan.until {
                Some(until) => Instant::now() < until,
                None => tally.borrow().started < plan.total,
            };
            if !more {
                let t = tally.borrow();
                if t.ended() == t.started {
                    let _ = reactor.stop();
                }
                return;
            }
            let mut random = random.borrow_mut();
            let tls = random.unit() < plan.tls_share;
            let mode = if !plan.mixed {
                Mode::Echo
            } else {
                match random.below(10) {
                    0 => Mode::Reset,
                    1 => Mode::Stall,
                    2 if !tls => Mode::HalfClose,
                    _ => Mode::Echo,
                }
            };
            let size = if plan.mixed {
                1 + random.below(64 * 1024) as usize
            } else {
                4096
            };
            let seed = random.next_u64() >> 24;
            drop(random);
            tally.borrow_mut().started += 1;
            let factory = ClientFactoryOf {
                protocol: RefCell::new(Some(Client {
                    seed,
                    size,
                    mode,
                    received: 0,
                    tally: tally.clone(),
                    done: false,
                })),
                tally: tally.clone(),
                next: start.borrow().clone().unwrap(),
            };
            let host = plan.addr.to_string();
            let timeout = Duration::from_secs(30);
            if tls {
                let name = server_name("localhost").unwrap();
                reactor.connect_tcp(
                    &host,
                    plan.tls,
                    TlsClientFactory::new(plan.config.clone(), name, factory),
                    timeout,
                );
            } else {
                reactor.connect_tcp(&host, plan.plain, factory, timeout);
            }
        })
    };
    *start.borrow_mut() = Some(starter.clone());
    for _ in 0..plan.concurrency {
        starter(&reactor);
    }
    // A run that hangs ends as a failure after its deadline, rather than
    // holding the test run forever.
    let limit = match plan.until {
        Some(until) => until.saturating_duration_since(Instant::now()) + CLIENTS_DEADLINE,
        None => CLIENTS_DEADLINE,
    };
    let deadline = {
        let tally = tally.clone();
        reactor.call_later(limit, move |reactor| {
            let t = tally.borrow();
            let line = format!(
                "the clients did not finish within {limit:?}: {} of {} ended",
                t.ended(),
                t.started
            );
            drop(t);
            tally.borrow_mut().failures.push(line);
            let _ = reactor.stop();
        })
    };
    reactor.run().unwrap();
    let _ = deadline.cancel();
    // The closures hold each other: break the cycle.
    start.borrow_mut().take();
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| std::mem::take(&mut *rc.borrow_mut()))
}

// ----- loss ------------------------------------------------------------------------

#[test]
fn tls_handshakes_and_echoes_at_5_percent_loss() {
    let test = "tls_handshakes_and_echoes_at_5_percent_loss";
    let Some((_serial, pair)) = setup(test) else {
        return;
    };
    let pki = support::pki();
    let fds = DescriptorGuard::new();
    // Made before the baseline and kept past the measurement (the
    // session caches they hold count as retained).
    let (server_config, client_config) = (pki.server_config(), pki.client_config());
    let config = client_config.clone();
    let heap_before = heap();
    let server = Server::start(&pair.server, server_config.clone(), Duration::from_secs(30));
    pair.link.loss(5);
    let rss_before = rss();
    let total = if full() { 500 } else { 100 };
    let addr = pair.link.a();
    let (plain, tls) = (server.plain, server.tls);
    let started = Instant::now();
    let tally = pair
        .client
        .spawn(move || {
            let tally = run_clients(Plan {
                addr,
                plain,
                tls,
                concurrency: 50,
                total,
                until: None,
                tls_share: 1.0,
                mixed: false,
                config,
            });
            (tally.verified, tally.failures)
        })
        .join()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    pair.link.loss(0);
    assert!(tally.1.is_empty(), "{:?}", tally.1);
    assert_eq!(tally.0, total);
    let idle = idle_cpu(Duration::from_millis(500));
    let grown = rss().saturating_sub(rss_before);
    drop(server);
    let retained = heap() - heap_before;
    drop((server_config, client_config));
    fds.check();
    eprintln!(
        "network TLS at loss: {total} TLS handshakes and 4 KiB echoes at 5 % loss each way, all verified, in {seconds:.1} s; idle afterwards {:.2} % of a core; resident set grew {} KiB (the allocator keeps freed pages); heap retained {retained} B once the server stopped; descriptors back to baseline",
        idle * 100.0,
        grown >> 10
    );
    assert!(idle < 0.02, "{:.2} % of a core while idle", idle * 100.0);
    // Everything the server and the clients allocated is given back (the
    // counting allocator; RSS keeps the allocator's freed pages).
    assert!(retained < 64 * 1024, "{retained} B of heap not given back");
}

#[test]
fn a_partition_during_a_tls_handshake_ends_with_the_handshake_timeout() {
    handshake_partition("a_partition_during_a_tls_handshake_ends_with_the_handshake_timeout");
}

/// What `TlsClientFactory`'s rustdoc promises: the factory's
/// `client_connection_lost` hears the handshake timeout's `ProtocolError`,
/// as the protocol does (it heard the aborted TCP connection's `Aborted`
/// until the TLS layer kept its own reason: docs/reliability.md, "Found by
/// the network").
#[test]
fn the_tls_client_factory_hears_the_handshake_timeout() {
    let Some(factory_reason) =
        handshake_partition("the_tls_client_factory_hears_the_handshake_timeout")
    else {
        return;
    };
    assert!(
        factory_reason.contains("handshake not completed"),
        "the factory heard `{factory_reason}`"
    );
}

/// A TLS handshake cut by a partition after the TCP connect: both sides'
/// handshake timeouts end it, and everything is given back. Returns what
/// the client factory heard (`None` where the test network cannot be
/// made).
fn handshake_partition(test: &str) -> Option<String> {
    let (_serial, pair) = setup(test)?;
    let pki = support::pki();
    let fds = DescriptorGuard::new();
    // Different on each side, so each must time out on its own (no reset
    // crosses either).
    let timeout = Duration::from_secs(1);
    let server_timeout = Duration::from_secs(2);
    // Made before the baseline and kept past the measurement (the
    // session caches they hold count as retained).
    let (server_config, client_config) = (pki.server_config(), pki.client_config());
    let config = client_config.clone();
    let heap_before = heap();
    let server = Server::start(&pair.server, server_config.clone(), server_timeout);
    // TCP's own segments (SYN, ACK: no payload) still cross, nothing
    // bigger does: the connection is made, and the link fails under the
    // handshake's first flight.
    pair.link.drop_longer_than(100);
    let (addr, port) = (pair.link.a(), server.tls);
    let started = Instant::now();
    let (factory_reason, ended, heard) = pair
        .client
        .spawn(move || {
            let reactor = Reactor::new().unwrap();
            reactor.set_signal_handling(false);
            let ends = Rc::new(RefCell::new(None));
            let heard = Rc::new(RefCell::new(None));
            struct Ends(
                Rc<RefCell<Option<(String, Instant)>>>,
                Rc<RefCell<Option<String>>>,
            );
            /// Records what the protocol hears.
            struct Silent(Rc<RefCell<Option<String>>>);
            impl Protocol for Silent {
                fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
                fn connection_lost(&mut self, reason: &CloseReason) {
                    *self.0.borrow_mut() = Some(reason.to_string());
                }
            }
            impl Factory for Ends {
                type Protocol = Silent;
                fn build_protocol(&self, _peer: &Address) -> Option<Silent> {
                    Some(Silent(self.1.clone()))
                }
            }
            impl ClientFactory for Ends {
                fn client_connection_lost(&self, connector: &Connector, reason: &CloseReason) {
                    *self.0.borrow_mut() = Some((reason.to_string(), Instant::now()));
                    if let Some(reactor) = connector.reactor() {
                        let _ = reactor.stop();
                    }
                }
                fn client_connection_failed(&self, connector: &Connector, reason: &ConnectError) {
                    *self.0.borrow_mut() =
                        Some((format!("connect failed: {reason}"), Instant::now()));
                    if let Some(reactor) = connector.reactor() {
                        let _ = reactor.stop();
                    }
                }
            }
            let name = server_name("localhost").unwrap();
            let _connector = reactor.connect_tcp(
                &addr.to_string(),
                port,
                TlsClientFactory::new(config, name, Ends(ends.clone(), heard.clone()))
                    .handshake_timeout(timeout),
                Duration::from_secs(5),
            );
            reactor.call_later(timeout * 5, |r| {
                let _ = r.stop();
            });
            reactor.run().unwrap();
            let end = ends.borrow_mut().take();
            let heard = heard.borrow_mut().take();
            let (reason, when) = end.expect("the connection never ended");
            (reason, when, heard)
        })
        .join()
        .unwrap();
    let client_after = ended.duration_since(started);
    // The server side's protocol went with its connection.
    let deadline = Instant::now() + server_timeout * 2;
    while server.counts.ended.lock().unwrap().0 == 0 && Instant::now() < deadline {
        // Bounded: the server's timer runs on another thread.
        std::thread::sleep(Duration::from_millis(20));
    }
    let server_ended = server.counts.ended.lock().unwrap().1;
    pair.link.drop_longer_than(0);
    let idle = idle_cpu(Duration::from_millis(500));
    drop(server);
    let retained = heap() - heap_before;
    drop((server_config, client_config));
    fds.check();
    eprintln!(
        "network TLS partition: handshake cut after the TCP connect; client ended after {:.2} s (protocol: {heard:?}; factory: {factory_reason}); server side ended after {:?}; idle afterwards {:.2} % of a core; heap retained {retained} B; descriptors back to baseline",
        client_after.as_secs_f64(),
        server_ended.map(|t| t.duration_since(started)),
        idle * 100.0
    );
    // The protocol hears why; the factory hears the TCP connection's own
    // end, an abort (see docs/reliability.md: the handshake timer aborts
    // the connection underneath).
    let reason = heard.expect("the protocol heard no connection_lost");
    assert!(reason.contains("handshake not completed"), "{reason}");
    assert!(client_after >= timeout && client_after < timeout * 2);
    let server_after = server_ended
        .expect("the server never dropped the connection")
        .duration_since(started);
    assert!(server_after >= server_timeout && server_after < server_timeout + timeout);
    assert!(idle < 0.02);
    assert!(retained < 64 * 1024, "{retained} B of heap not given back");
    Some(factory_reason)
}

// ----- the long soak -----------------------------------------------------------------

/// Hands the parent's CA to the client process, hex-encoded.
const CA_VAR: &str = "TORSION_NET_CA";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client configuration in the child: trusts the parent's CA.
fn child_config() -> Arc<ClientConfig> {
    let text = std::env::var(CA_VAR).unwrap();
    let der: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    let ca = torsion_tls::pki_types::CertificateDer::from(der);
    torsion_tls::ClientSettings::new()
        .trust(&[ca])
        .unwrap()
        .build()
        .unwrap()
}

/// The soak's client process: enters the namespace, runs the mixed plan
/// until the deadline, prints `SOAK <figures>`. Does nothing as an
/// ordinary test.
#[test]
fn net_child() {
    let Ok(role) = std::env::var(NET_ROLE) else {
        return;
    };
    let parts: Vec<&str> = role.split(':').collect();
    netns::enter_path(&format!("/run/netns/{}", parts[0]));
    let addr: Ipv4Addr = parts[1].parse().unwrap();
    let (plain, tls, seconds): (u16, u16, u64) = (
        parts[2].parse().unwrap(),
        parts[3].parse().unwrap(),
        parts[4].parse().unwrap(),
    );
    let tally = run_clients(Plan {
        addr,
        plain,
        tls,
        concurrency: 64,
        total: 0,
        until: Some(Instant::now() + Duration::from_secs(seconds)),
        tls_share: 0.5,
        mixed: true,
        config: child_config(),
    });
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    println!(
        "SOAK {} connections: {} verified ({} MiB echoed and checked), {} reset by the client",
        tally.started,
        tally.verified,
        tally.bytes >> 20,
        tally.reset
    );
    std::io::stdout().flush().unwrap();
}

#[test]
fn a_mixed_soak_of_plain_and_tls_clients() {
    let test = "a_mixed_soak_of_plain_and_tls_clients";
    let Some((_serial, pair)) = setup(test) else {
        return;
    };
    let (seconds, warmup) = if full() { (600u64, 60u64) } else { (8, 3) };
    let pki = support::pki();
    let fds = DescriptorGuard::new();
    let server = Server::start(&pair.server, pki.server_config(), Duration::from_secs(10));
    pair.link.loss(1);
    let baseline_fds = descriptors();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["net_child", "--exact", "--quiet", "--nocapture"])
        .env(
            NET_ROLE,
            format!(
                "{}:{}:{}:{}:{seconds}",
                pair.client.name(),
                pair.link.a(),
                server.plain,
                server.tls
            ),
        )
        .env(CA_VAR, hex(&pki.ca.cert))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("SOAK ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    // One sample a second: the sampling is the point of the wait.
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let mut second = 0;
    loop {
        second += 1;
        let next = started + Duration::from_secs(second);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        samples.push((second, rss(), descriptors()));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the soak's clients failed: {status}");
            break;
        }
        if second >= seconds + 120 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the soak's clients did not finish: killed");
        }
    }
    reader.join().unwrap();
    let report = rx.try_recv().unwrap_or_default();
    pair.link.loss(0);
    // The server's last connections close as the clients' ends arrive.
    // Those whose client's reset was lost end by keep-alive (about 2 s:
    // see `Echo`), or, when the handshake had not completed, by the 10 s
    // handshake timeout: 15 s bounds both.
    let settling = Instant::now();
    let deadline = settling + Duration::from_secs(15);
    let ended_of_built = || {
        (
            server.counts.ended.lock().unwrap().0,
            *server.counts.built.lock().unwrap(),
        )
    };
    while ended_of_built().0 < ended_of_built().1 && Instant::now() < deadline {
        // Bounded: the server's reactor runs on another thread.
        std::thread::sleep(Duration::from_millis(20));
    }
    let settle = settling.elapsed();
    let (ended, built) = ended_of_built();
    let settled = descriptors();
    let idle = idle_cpu(Duration::from_millis(500));
    let server_built = *server.counts.built.lock().unwrap();
    drop(server);
    fds.check();

    let after_warmup: Vec<_> = samples
        .iter()
        .filter(|s| s.0 > warmup && s.0 <= seconds)
        .collect();
    let warm_rss = after_warmup.first().map_or(0, |s| s.1);
    let max_rss = after_warmup.iter().map(|s| s.1).max().unwrap_or(0);
    let warm_fds_max = samples
        .iter()
        .filter(|s| s.0 <= warmup)
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    let later_fds_max = after_warmup.iter().map(|s| s.2).max().unwrap_or(0);
    if let Ok(path) = std::env::var("TORSION_SOAK_CSV") {
        let mut csv = String::from("second,rss_bytes,descriptors\n");
        for (second, rss, fds) in &samples {
            csv.push_str(&format!("{second},{rss},{fds}\n"));
        }
        std::fs::write(&path, csv).unwrap();
    }
    eprintln!(
        "network soak: {seconds} s of mixed plain and TLS clients (64 at once, 1 % loss, random sizes up to 64 KiB, a tenth reset, a tenth stall, a tenth of plain ones half-close): {report}; server accepted {server_built}; resident set after the warm-up {} KiB, peak later {} KiB (growth {} KiB); descriptors: {baseline_fds} before, peak {warm_fds_max} in the warm-up and {later_fds_max} later, {settled} after; {ended} of {built} server connections ended {:.2} s after the clients; idle afterwards {:.2} % of a core",
        warm_rss >> 10,
        max_rss >> 10,
        max_rss.saturating_sub(warm_rss) >> 10,
        settle.as_secs_f64(),
        idle * 100.0
    );
    assert!(
        max_rss.saturating_sub(warm_rss) < 1024 * 1024,
        "the resident set grew by {} KiB after the warm-up",
        max_rss.saturating_sub(warm_rss) >> 10
    );
    // 64 connections at once, each one descriptor on the server, plus a
    // few accepted or closing in passing: the count stays in that band
    // for the whole run (the exact check is `fds` once the server stops).
    assert!(
        later_fds_max <= baseline_fds + 64 + 8,
        "descriptors grew: {warm_fds_max} in the warm-up, {later_fds_max} later"
    );
    assert_eq!(
        ended, built,
        "server connections still open after {settle:?}"
    );
    assert_eq!(settled, baseline_fds, "descriptors after the clients ended");
    assert!(idle < 0.02);
}
