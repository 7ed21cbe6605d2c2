//! What the soak suites share: a counting allocator for the server's heap,
//! the echo server on a reactor thread of its own (on loopback or in a
//! network namespace), and per-scenario baselines of descriptors and heap.
#![allow(dead_code)]

pub mod netns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use torsion_echo::Echo;
use torsion_protocol::policies::TimeoutFactory;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::{
    Address, CloseReason, Factory, Keepalive, ListenOptions, Protocol, Reactor, ReactorHandle,
    ReactorTcp, TransportRef,
};

use netns::Namespace;

// ----- measuring ----------------------------------------------------------

// The counting allocator lives with the test network (the TLS network
// suite includes that file on its own).
#[allow(unused_imports)] // Each test binary uses some of them.
pub use netns::{descriptors, full, heap, idle_cpu, serial, HEAP};

/// The bounded size, or the full one under `just soak`.
pub fn scale(bounded: usize, full_size: usize) -> usize {
    if full() {
        full_size
    } else {
        bounded
    }
}

/// Raises this process's descriptor limit as far as it may go.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or fill the struct they are
    // given, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux only.
    let current = limit.rlim_cur as u64;
    current
}

pub const DEADLINE: Duration = Duration::from_secs(120);

// ----- the server ---------------------------------------------------------

/// The number of live server-side connections, with a condition to wait
/// on (no polling, no sleeps).
#[derive(Default)]
pub struct Live {
    /// Connections open now, and accepted in all.
    pub counts: Mutex<(usize, usize)>,
    pub changed: Condvar,
    /// Why each connection ended, with when, in order: kept only when
    /// the server was started with `record_reasons` (the list grows with
    /// every connection, which the heap checks would count).
    pub reasons: Option<Mutex<Vec<(Instant, String)>>>,
}

impl Live {
    pub fn opened(&self) {
        let mut counts = self.counts.lock().unwrap();
        counts.0 += 1;
        counts.1 += 1;
        self.changed.notify_all();
    }

    pub fn closed(&self) {
        self.counts.lock().unwrap().0 -= 1;
        self.changed.notify_all();
    }

    pub fn open(&self) -> usize {
        self.counts.lock().unwrap().0
    }

    pub fn wait_until(&self, what: &str, done: impl Fn(usize, usize) -> bool) {
        let counts = self.counts.lock().unwrap();
        let (counts, timeout) = self
            .changed
            .wait_timeout_while(counts, DEADLINE, |(open, accepted)| !done(*open, *accepted))
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{what}: {} open connections, {} accepted",
            counts.0,
            counts.1
        );
    }

    pub fn wait_for(&self, want: usize, what: &str) {
        self.wait_until(what, |open, _| open == want);
    }
}

/// The echo protocol, counted while it lives.
pub struct Tracked {
    pub echo: Echo,
    pub live: Arc<Live>,
    pub keepalive: Option<Keepalive>,
}

impl Protocol for Tracked {
    fn connection_made(&mut self, transport: &TransportRef) {
        if let Some(keepalive) = self.keepalive {
            transport.set_tcp_keepalive(Some(keepalive)).unwrap();
        }
        self.echo.connection_made(transport);
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.echo.data_received(transport, data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        if let Some(reasons) = &self.live.reasons {
            reasons
                .lock()
                .unwrap()
                .push((Instant::now(), reason.to_string()));
        }
        self.echo.connection_lost(reason);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.closed();
    }
}

pub struct TrackedFactory(Arc<Live>, Option<Keepalive>);

impl Factory for TrackedFactory {
    type Protocol = Tracked;
    fn build_protocol(&self, _peer: &Address) -> Option<Tracked> {
        self.0.opened();
        Some(Tracked {
            echo: Echo,
            live: self.0.clone(),
            keepalive: self.1,
        })
    }
}

/// The echo server on a reactor thread of its own.
pub struct Server {
    pub addr: SocketAddr,
    pub handle: ReactorHandle,
    pub thread: Option<JoinHandle<()>>,
    pub live: Arc<Live>,
    /// Where `still_serves` connects from, on a test network.
    pub client: Option<Namespace>,
}

/// How to start a [`Server`].
#[derive(Default)]
pub struct ServerSetup {
    /// The port (0: any free one).
    pub port: u16,
    /// Close connections idle this long (`TimeoutFactory`).
    pub idle_timeout: Option<Duration>,
    /// TCP keep-alive on every accepted connection.
    pub keepalive: Option<Keepalive>,
    /// On a test network: the server's namespace (it listens on all its
    /// interfaces), the namespace that checks it, and the address it is
    /// reached at from there.
    pub network: Option<(Namespace, Namespace, Ipv4Addr)>,
    /// Keep why and when each connection ended (`Live::reasons`); off by
    /// default, as the list grows with every connection.
    pub record_reasons: bool,
}

impl Server {
    pub fn start(idle_timeout: Option<Duration>) -> Server {
        Server::start_on(0, idle_timeout)
    }

    /// The server on `port` (0: any free port).
    pub fn start_on(port: u16, idle_timeout: Option<Duration>) -> Server {
        Server::start_with(ServerSetup {
            port,
            idle_timeout,
            ..ServerSetup::default()
        })
    }

    /// The server as `setup` says.
    pub fn start_with(setup: ServerSetup) -> Server {
        let ServerSetup {
            port,
            idle_timeout,
            keepalive,
            network,
            record_reasons,
        } = setup;
        let live = Arc::new(Live {
            reasons: record_reasons.then(Mutex::default),
            ..Live::default()
        });
        let (tx, rx) = mpsc::channel();
        let factory_live = live.clone();
        let (interface, client) = match &network {
            Some((_, client, ip)) => (Ipv4Addr::UNSPECIFIED, Some((client.clone(), *ip))),
            None => (Ipv4Addr::LOCALHOST, None),
        };
        let body = move || {
            let reactor = Reactor::new().unwrap();
            reactor.set_signal_handling(false);
            let options = ListenOptions::interface(interface.into());
            let factory = TrackedFactory(factory_live, keepalive);
            let port = match idle_timeout {
                Some(timeout) => {
                    reactor.listen_tcp_with(port, TimeoutFactory::new(factory, timeout), options)
                }
                None => reactor.listen_tcp_with(port, factory, options),
            }
            .unwrap();
            tx.send((port.get_host().socket_addr().unwrap(), reactor.handle()))
                .unwrap();
            reactor.run().unwrap();
            drop(port);
        };
        let thread = match &network {
            Some((server, _, _)) => server.spawn(body),
            None => std::thread::spawn(body),
        };
        let (mut addr, handle) = rx.recv().unwrap();
        if let Some((_, ip)) = &client {
            addr.set_ip((*ip).into());
        }
        let server = Server {
            addr,
            handle,
            thread: Some(thread),
            live,
            client: client.map(|(ns, _)| ns),
        };
        // The first connection allocates what lives as long as the thread
        // (the shared read buffer): allocate it before any baseline.
        server.still_serves();
        server
    }

    /// One fresh client gets its echo back (from the client namespace,
    /// on a test network).
    pub fn still_serves(&self) {
        let before = self.live.open();
        match &self.client {
            Some(ns) => {
                let addr = self.addr;
                ns.spawn(move || echo_once(addr)).join().unwrap();
            }
            None => echo_once(self.addr),
        }
        self.live.wait_for(before, "after the check connection");
    }
}

/// One connection to `addr` that gets `still there?` echoed.
fn echo_once(addr: SocketAddr) {
    {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(b"still there?").unwrap();
        let mut echo = [0u8; 12];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"still there?");
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

/// Set in a child process: the role it plays (see `child_role`); the
/// scenarios run one at a time (`serial`) except there.
pub const ROLE: &str = "TORSION_SOAK_ROLE";

/// Baselines taken once the server is up; `finish` checks that the server
/// still serves and is back at them.
pub struct Scenario {
    pub name: &'static str,
    pub fds: DescriptorGuard,
    pub heap: isize,
    pub started: Instant,
}

impl Scenario {
    /// Takes the baselines; call it once the server is up (and has served
    /// its first connection, in `Server::start`).
    pub fn begin(name: &'static str) -> Scenario {
        Scenario {
            name,
            fds: DescriptorGuard::new(),
            heap: heap(),
            started: Instant::now(),
        }
    }

    /// Asserts the server serves, holds its baseline descriptors, and has
    /// given back all but `slack` bytes of heap; prints `figures`.
    pub fn finish(self, server: &Server, slack: isize, figures: String) {
        server.live.wait_for(0, self.name);
        server.still_serves();
        let retained = heap() - self.heap;
        self.fds.check();
        eprintln!(
            "soak {}: {figures}; heap retained {retained} B; descriptors back to baseline; {:.2} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
        assert!(
            retained <= slack,
            "{}: {retained} bytes of heap not given back (allowed {slack})",
            self.name
        );
    }
}
