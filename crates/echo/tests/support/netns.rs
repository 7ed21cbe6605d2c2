//! A test network made of Linux network namespaces joined by veth pairs,
//! with per-link packet loss (nftables `numgen random`), bandwidth limits
//! (`tc tbf` at a router namespace, [`setup_routed`]) and partitions (link
//! down).
//!
//! Servers and clients live in one test process, each on a thread of its
//! own that has entered its namespace with `setns(CLONE_NEWNET)`
//! ([`Namespace::spawn`]): a socket belongs to the namespace of the thread
//! that made it, so the server's heap and descriptors are measured in
//! process exactly as in the loopback soak suite, and a thread that
//! panics takes nothing with it. (Children under `ip netns exec` would
//! hide the server's heap behind a process boundary.)
//!
//! Every namespace is named `tsn<pid>x<n>`; dropping the [`TestNet`]
//! deletes them, which takes their veth ends, addresses, nftables rules
//! and qdiscs with them, also when the test panics. Namespaces left by a
//! test process that no longer exists (killed mid-run) are deleted by the
//! next [`TestNet::new`]. No link touches the initial namespace: traffic
//! never leaves the test network.
//!
//! [`TestNet::new`] returns `Err` with the reason when namespaces cannot be
//! made here (not root, no `ip`/`nft`, no kernel support); the tests then
//! report themselves as skipped (see `skip`).
//!
//! Also here, as both network suites (echo's and torsion-tls's, which
//! includes this file) use them: the counting allocator, one test at a
//! time ([`setup`]), and the measurements (idle CPU, descriptors, RSS).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ----- measuring ----------------------------------------------------------

/// Counts the bytes the process has allocated and not freed.
pub struct Counting;

pub static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
pub static ALLOCATOR: Counting = Counting;

/// Bytes allocated and not yet freed, process-wide.
pub fn heap() -> isize {
    HEAP.load(Ordering::Relaxed)
}

/// Whether the full sizes run (`just soak`: `TORSION_SOAK=full`).
pub fn full() -> bool {
    std::env::var("TORSION_SOAK").is_ok_and(|v| v == "full")
}

fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The CPU time this process used while `window` passed with nothing to
/// do, as a share of one core.
pub fn idle_cpu(window: Duration) -> f64 {
    let before = cpu();
    let started = Instant::now();
    // The measurement is the window itself: nothing is awaited.
    std::thread::sleep(window);
    (cpu() - before).as_secs_f64() / started.elapsed().as_secs_f64()
}

/// This process's resident set in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page as u64
}

/// The descriptors this process has open.
pub fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

// ----- one network test at a time -------------------------------------------

/// The environment variable that gives a child process of a network suite
/// its role.
pub const NET_ROLE: &str = "TORSION_NET_ROLE";

/// Scenarios one at a time: each measures the whole process.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Waits for any other scenario to end; `None` in a child process (one of
/// the suites' roles), where the scenarios do not run.
pub fn serial() -> Option<MutexGuard<'static, ()>> {
    if std::env::var(NET_ROLE).is_ok() || std::env::var("TORSION_SOAK_ROLE").is_ok() {
        return None;
    }
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// The preamble of [`setup`] and [`setup_routed`]: the other scenarios'
/// end, then an empty [`TestNet`]; `None` in a child process, or (after
/// printing a `SKIPPED` line, see [`skip`]) where namespaces cannot be
/// made.
fn begin(test: &str) -> Option<(MutexGuard<'static, ()>, TestNet)> {
    let serial = serial()?;
    match TestNet::new() {
        Ok(net) => Some((serial, net)),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// A server namespace and a client namespace joined by one link.
pub struct Pair {
    pub net: TestNet,
    pub server: Namespace,
    pub client: Namespace,
    pub link: Link,
}

/// A network test's preamble: the other scenarios' end, then a [`Pair`];
/// `None` in a child process, or (after printing a `SKIPPED` line, see
/// [`skip`]) where namespaces cannot be made.
pub fn setup(test: &str) -> Option<(MutexGuard<'static, ()>, Pair)> {
    let (serial, mut net) = begin(test)?;
    let server = net.namespace();
    let client = net.namespace();
    let link = net.link(&server, &client);
    Some((
        serial,
        Pair {
            net,
            server,
            client,
            link,
        },
    ))
}

/// A server and a client namespace joined through a third, a router
/// that forwards between two links; see [`setup_routed`].
pub struct Routed {
    /// The server and client namespaces; `pair.link` is the server's
    /// link to the router (its `a()` is the server's address).
    pub pair: Pair,
    /// The router's namespace.
    pub router: Namespace,
    /// The client's link to the router.
    pub client_link: Link,
}

impl Routed {
    /// Limits each direction to `kbit` kbit/s at the router, with a
    /// `queue`-byte tail-drop queue per direction (see [`Link::shape_b`]):
    /// a slow link whose queue is in the network, not in either end.
    pub fn rate(&self, kbit: u32, queue: usize) {
        self.pair.link.shape_b(kbit, queue);
        self.client_link.shape_b(kbit, queue);
    }
}

/// Like [`setup`], but the client reaches the server through a router
/// namespace: server (10.77.1.1) — router — client (10.77.2.1), with
/// routes both ways and forwarding on in the router.
pub fn setup_routed(test: &str) -> Option<(MutexGuard<'static, ()>, Routed)> {
    let (serial, mut net) = begin(test)?;
    let server = net.namespace();
    let client = net.namespace();
    let router = net.namespace();
    let link = net.link(&server, &router);
    let client_link = net.link(&client, &router);
    // Forwarding is a per-namespace setting: a thread inside the router
    // namespace sees the router's `/proc/sys/net` (no `sysctl` tool
    // needed).
    router
        .spawn(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("test network: enabling forwarding in the router: {e}"));
    for (from, to) in [(&link, &client_link), (&client_link, &link)] {
        let [near, via] = &from.ends;
        let far = &to.ends[0];
        let [a, b, c, _] = far.ip.octets();
        must(
            "ip",
            &[
                "-n",
                &near.namespace,
                "route",
                "add",
                &format!("{a}.{b}.{c}.0/24"),
                "via",
                &via.ip.to_string(),
            ],
        );
    }
    Some((
        serial,
        Routed {
            pair: Pair {
                net,
                server,
                client,
                link,
            },
            router,
            client_link,
        },
    ))
}

const PREFIX: &str = "tsn";

/// Runs a command; its failure is an `Err` with its output.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("test network: {e}");
    }
}

/// Deletes the namespaces of test processes that are gone.
///
/// Gone means no `/proc/<pid>`: if the killed run's pid has since been
/// reused by an unrelated process, its namespaces stay until that process
/// ends too (left over, never deleted under a live test).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// Why the network cannot be made here, or `None` when it can.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "tc", "nft"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Makes in `namespace` one of each thing the tests make: a veth pair, an
/// nftables netdev table with an ingress chain on it, a tbf qdisc.
fn probe_features(namespace: &Namespace) -> Result<(), String> {
    let ns = namespace.name();
    run(
        "ip",
        &[
            "-n", ns, "link", "add", "tsp0", "type", "veth", "peer", "name", "tsp1",
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", "tsp0", "up"])?;
    let chain = "add chain netdev probe tsp0 { type filter hook ingress device tsp0 priority 0 ; }";
    for command in ["add table netdev probe", chain] {
        run("ip", &["netns", "exec", ns, "nft", command])?;
    }
    run(
        "tc",
        &[
            "-n", ns, "qdisc", "replace", "dev", "tsp0", "root", "tbf", "rate", "1mbit", "burst",
            "16kb", "latency", "200ms",
        ],
    )
}

/// The namespaces of one test; dropped, they are deleted with everything
/// in them.
pub struct TestNet {
    namespaces: Vec<String>,
    links: usize,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestNet {
    /// An empty test network, or why there cannot be one here.
    pub fn new() -> Result<TestNet, String> {
        if let Some(reason) = unsupported() {
            return Err(reason);
        }
        remove_stale();
        let net = TestNet {
            namespaces: Vec::new(),
            links: 0,
        };
        // One probe namespace, with everything the tests use inside it (a
        // veth pair, a netdev nftables table with an ingress chain, a tbf
        // qdisc), proves the kernel and the tools let us.
        let mut probe = net;
        let namespace = probe
            .try_namespace()
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        probe_features(&namespace).map_err(|e| format!("the test network cannot be built: {e}"))?;
        Ok(probe)
    }

    fn try_namespace(&mut self) -> Result<Namespace, String> {
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(Namespace { name })
    }

    /// A new namespace with its loopback up.
    pub fn namespace(&mut self) -> Namespace {
        self.try_namespace()
            .unwrap_or_else(|e| panic!("test network: {e}"))
    }

    /// A veth pair between `a` and `b`, addressed on a /24 of its own
    /// (10.77.N.1 in `a`, 10.77.N.2 in `b`).
    pub fn link(&mut self, a: &Namespace, b: &Namespace) -> Link {
        self.links += 1;
        let n = self.links;
        assert!(n < 250, "too many links");
        let (dev_a, dev_b) = (format!("tsl{n}a"), format!("tsl{n}b"));
        // Made inside `a`, then one end moved to `b`: never in the
        // initial namespace.
        must(
            "ip",
            &[
                "-n", &a.name, "link", "add", &dev_a, "type", "veth", "peer", "name", &dev_b,
                "netns", &b.name,
            ],
        );
        let link = Link {
            ends: [
                End {
                    namespace: a.name.clone(),
                    device: dev_a,
                    ip: Ipv4Addr::new(10, 77, n as u8, 1),
                },
                End {
                    namespace: b.name.clone(),
                    device: dev_b,
                    ip: Ipv4Addr::new(10, 77, n as u8, 2),
                },
            ],
        };
        for end in &link.ends {
            must(
                "ip",
                &[
                    "-n",
                    &end.namespace,
                    "addr",
                    "add",
                    &format!("{}/24", end.ip),
                    "dev",
                    &end.device,
                ],
            );
            // One packet per TCP segment, as on a wire: otherwise a veth
            // carries 64 KiB super-packets, and loss drops them whole.
            must(
                "ip",
                &[
                    "-n",
                    &end.namespace,
                    "link",
                    "set",
                    &end.device,
                    "gso_max_segs",
                    "1",
                    "up",
                ],
            );
            // The filters for loss, empty until asked for.
            let chain = format!(
                "add chain netdev torsion {dev} {{ type filter hook ingress device {dev} priority 0 ; }}",
                dev = end.device
            );
            for command in ["add table netdev torsion", &chain] {
                must("ip", &["netns", "exec", &end.namespace, "nft", command]);
            }
        }
        link
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for name in self.namespaces.drain(..) {
            if let Err(e) = run("ip", &["netns", "del", &name]) {
                eprintln!("test network: {e}");
            }
        }
    }
}

/// A network namespace of a [`TestNet`].
#[derive(Clone)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// The namespace's name (for `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `body` on a new thread inside this namespace: every socket it
    /// makes belongs to the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_path(&path);
            body()
        })
    }
}

/// Moves the calling thread into the network namespace at `path`
/// (`/run/netns/NAME`). Network namespaces are Linux's: the network
/// suites are compiled on Linux only, and elsewhere this file is built for
/// the measuring helpers the loopback soak shares (`support/mod.rs`).
#[cfg(target_os = "linux")]
pub fn enter_path(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a descriptor we own for the call's duration and
    // changes only this thread's network namespace.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        result,
        0,
        "setns {path}: {}",
        std::io::Error::last_os_error()
    );
}

/// See the Linux version: there are no network namespaces here.
#[cfg(not(target_os = "linux"))]
pub fn enter_path(path: &str) {
    panic!("cannot enter {path}: network namespaces are Linux's");
}

/// One end of a [`Link`].
struct End {
    namespace: String,
    device: String,
    ip: Ipv4Addr,
}

/// A veth pair between two namespaces.
pub struct Link {
    ends: [End; 2],
}

impl Link {
    /// The address of the first namespace's end.
    pub fn a(&self) -> Ipv4Addr {
        self.ends[0].ip
    }

    /// The address of the second namespace's end.
    pub fn b(&self) -> Ipv4Addr {
        self.ends[1].ip
    }

    /// Drops `percent` % of the packets arriving at each end, at random
    /// (0 removes the loss).
    pub fn loss(&self, percent: u32) {
        for end in &self.ends {
            self.filter(end, percent, "");
        }
    }

    /// Drops every TCP SYN arriving at the first end (a blackholed
    /// server: its SYN-ACKs never come).
    pub fn drop_syns_to_a(&self) {
        self.filter(&self.ends[0], 100, "tcp flags & (syn | ack) == syn");
    }

    /// Drops every packet longer than `bytes`, and every reset, arriving
    /// at either end (0 removes the rules): bare SYNs, ACKs and FINs still
    /// cross, data does not, and neither side hears of the other's abort.
    pub fn drop_longer_than(&self, bytes: u32) {
        for end in &self.ends {
            if bytes == 0 {
                self.filter(end, 0, "");
            } else {
                self.filter(end, 100, &format!("meta length > {bytes}"));
                let rule = format!(
                    "add rule netdev torsion {} tcp flags & rst == rst drop",
                    end.device
                );
                must("ip", &["netns", "exec", &end.namespace, "nft", &rule]);
            }
        }
    }

    fn filter(&self, end: &End, percent: u32, matching: &str) {
        let chain = format!("netdev torsion {}", end.device);
        let flush = format!("flush chain {chain}");
        must("ip", &["netns", "exec", &end.namespace, "nft", &flush]);
        if percent > 0 {
            let rule = if percent >= 100 {
                format!("add rule {chain} {matching} drop")
            } else {
                format!("add rule {chain} {matching} numgen random mod 100 < {percent} drop")
            };
            must("ip", &["netns", "exec", &end.namespace, "nft", &rule]);
        }
    }

    /// Limits what the second end sends to `kbit` kbit/s, with a
    /// `queue`-byte tail-drop queue (a router's outgoing interface, when
    /// that end is a router).
    pub fn shape_b(&self, kbit: u32, queue: usize) {
        shape(&self.ends[1], kbit, queue);
    }

    /// Takes the link down (both ends: a partition) or brings it back up.
    pub fn set_up(&self, up: bool) {
        for end in &self.ends {
            must(
                "ip",
                &[
                    "-n",
                    &end.namespace,
                    "link",
                    "set",
                    &end.device,
                    if up { "up" } else { "down" },
                ],
            );
        }
    }
}

/// A token bucket on `end`'s outgoing traffic: `kbit` kbit/s, 16 KiB
/// burst, a `queue`-byte queue.
fn shape(end: &End, kbit: u32, queue: usize) {
    must(
        "tc",
        &[
            "-n",
            &end.namespace,
            "qdisc",
            "replace",
            "dev",
            &end.device,
            "root",
            "tbf",
            "rate",
            &format!("{kbit}kbit"),
            "burst",
            "16kb",
            "limit",
            &queue.to_string(),
        ],
    );
}

/// Prints why a network test did not run, where the test summary shows it
/// (the line goes to the terminal even under the harness's capture).
///
/// Under `TORSION_REQUIRE_NETNS=1` (set by `.ci/run` when it runs as root)
/// a test that cannot build its network fails instead.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("TORSION_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{test}: the test network is required (TORSION_REQUIRE_NETNS=1): {reason}");
    }
    use std::io::Write;
    // Straight to the process's stderr: the test harness captures only
    // the print macros. The harness writes `test NAME ... ` to stdout
    // without a newline before the result, so under `2>&1` this line
    // could land in the middle of it: it starts a line of its own.
    let line = format!("\nSKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
