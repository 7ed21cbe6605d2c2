//! A test network made of Linux network namespaces joined by veth pairs,
//! with per-link packet loss (nftables `numgen random`), bandwidth limits
//! (`tc tbf`) and partitions (link down).
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
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

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
/// (`/run/netns/NAME`).
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

    /// Limits each direction to `kbit` kbit/s with a token bucket.
    pub fn rate(&self, kbit: u32) {
        for end in &self.ends {
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
                    "latency",
                    "200ms",
                ],
            );
        }
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
