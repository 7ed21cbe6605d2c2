//! `torsion-bench`: Torsion's echo server side by side with peers.
//!
//! ```text
//! torsion-bench [suite] [--quick]
//! torsion-bench echo [--connections N] [--size BYTES] [--duration SECS]
//!                    [--warmup SECS] [--rounds N] [--servers a,b,...]
//!                    [--rate REQ_PER_S]
//! torsion-bench serve KIND
//! torsion-bench load PORT [--connections N] [--size BYTES] [--duration SECS]
//! torsion-bench reactor
//! torsion-bench framing
//! torsion-bench async
//! torsion-bench pipelined [--quick] [--servers a,b,...]
//! torsion-bench turns
//! torsion-bench idle [CONNECTIONS]
//! torsion-bench udp [--quick] [--servers a,b,...] [--senders N] [--window N]
//! torsion-bench fsevents [--quick]
//! ```
//!
//! `suite` (the default) runs every server on every workload and writes
//! `bench/results/` (see `suite.rs`); `echo` runs one workload of your
//! choosing. `reactor` benchmarks timers against tokio's (1,000,000 scheduled then
//! cancelled, 1,000,000 fired), the CPU an idle reactor uses, and
//! `call_from_thread` throughput. `async` measures spawning and completing
//! a task and a `sleep(0)` round trip against tokio's `LocalSet` (the
//! async echo server is `echo --servers torsion,torsion-async,tokio-ct`).
//! `framing` shows that the framing
//! receivers cost the same per frame with 1, 32 or 1,500 frames per read
//! (raw-mode switches included), and that a line receiver's
//! cost per byte stays flat as lines grow. `pipelined` answers lines with
//! lines (Torsion's `LineReceiver`, tokio + `LinesCodec`, a mio loop) at
//! depths 1 and 32: CPU and send calls per request. `udp` echoes
//! 64-byte datagrams from 8 senders (Torsion, tokio current-thread and a
//! mio loop): datagrams per second and CPU per datagram.
//!
//! `serve` runs one server (printing its port); `load` drives a server
//! that is already running, for tracing it (`strace -c -f -p`) or
//! profiling it.
//!
//! In `suite` and `echo`, each round starts every server in turn (interleaved, so drift on a noisy
//! machine hits all of them alike) as a child process pinned to CPU 0, and
//! drives it from this process, pinned to CPU 1, with ping-pong clients
//! that verify every echoed byte. It prints the medians over the rounds:
//! requests per second, latency percentiles, the server's CPU time per
//! request, and each figure's ratio to Torsion's.

mod framing;
mod fsevents;
mod idle;
mod loadgen;
mod pipelined;
mod process;
mod reactor;
mod servers;
mod suite;
mod tasks;
mod tls;
mod turns;
mod udp;

#[global_allocator]
static ALLOCATOR: reactor::CountingAllocator = reactor::CountingAllocator;

use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KINDS: &[&str] = &["torsion", "torsion-2t", "tokio-ct", "mio", "tokio-mt"];

struct Options {
    connections: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    rounds: usize,
    servers: Vec<String>,
    /// Requests per second over all connections; `None`: as fast as the
    /// server answers.
    rate: Option<f64>,
    /// Round trips per connection before the client closes it and
    /// connects again; `None`: connections live for the whole run.
    per_connection: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("serve") {
        serve(args.get(1).map(String::as_str).unwrap_or(""))
    } else if args.first().map(String::as_str) == Some("load") {
        load(&args[1..])
    } else if args.first().map(String::as_str) == Some("reactor") {
        reactor::run(3);
        Ok(())
    } else if args.first().map(String::as_str) == Some("turns") {
        turns::run(5);
        Ok(())
    } else if args.first().map(String::as_str) == Some("async") {
        tasks::run(3);
        Ok(())
    } else if args.first().map(String::as_str) == Some("pipelined") {
        pipelined::run(
            args.iter().any(|a| a == "--quick"),
            args.iter()
                .position(|a| a == "--servers")
                .and_then(|i| args.get(i + 1))
                .map(String::as_str),
        )
    } else if args.first().map(String::as_str) == Some("process") {
        process::run(if args.iter().any(|a| a == "--quick") {
            1
        } else {
            3
        });
        Ok(())
    } else if args.first().map(String::as_str) == Some("tls") {
        tls::run(args.iter().any(|a| a == "--quick"))
    } else if args.first().map(String::as_str) == Some("tls-drive") {
        tls::drive_count(
            args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
            args.get(2).map_or("streams", String::as_str),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1000),
        )
    } else if args.first().map(String::as_str) == Some("tls-idle") {
        tls::idle(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(400))
    } else if args.first().map(String::as_str) == Some("tls-idle-one") {
        tls::idle_one(
            args.get(1).map_or("tls-torsion", String::as_str),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(400),
        )
    } else if args.first().map(String::as_str) == Some("tls-idle-clients") {
        tls::idle_clients(
            args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(400),
        )
    } else if args.first().map(String::as_str) == Some("fsevents") {
        fsevents::run(if args.iter().any(|a| a == "--quick") {
            1
        } else {
            3
        });
        Ok(())
    } else if args.first().map(String::as_str) == Some("framing") {
        framing::run();
        Ok(())
    } else if args.first().map(String::as_str) == Some("udp") {
        udp::run(&args[1..])
    } else if args.first().map(String::as_str) == Some("idle") {
        idle::run(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(400));
        Ok(())
    } else if args.first().map(String::as_str) == Some("echo") {
        parse(&args[1..]).and_then(|options| compare(&options))
    } else if args.first().map(String::as_str) == Some("suite") || args.is_empty() {
        suite::run(args.iter().any(|a| a == "--quick"))
    } else {
        Err(invalid(format!("unknown command {:?}", args[0])))
    };
    if let Err(e) = result {
        eprintln!("torsion-bench: {e}");
        std::process::exit(1);
    }
}

fn serve(kind: &str) -> io::Result<()> {
    match kind {
        "torsion" => servers::torsion(),
        "torsion-2t" => servers::torsion_threads(2),
        "tokio-ct" => servers::tokio_current_thread(),
        "torsion-async" => servers::torsion_async(),
        "tokio-mt" => servers::tokio_multi_thread(),
        "mio" => servers::mio_loop(),
        "lines-torsion" => pipelined::torsion(),
        "lines-tokio" => pipelined::tokio(),
        "lines-mio" => pipelined::mio_loop(),
        "udp-torsion" => udp::torsion(),
        "udp-torsion-nogso" => udp::torsion_without_gso(),
        "udp-tokio" => udp::tokio(),
        "udp-mio" => udp::mio_loop(),
        "tls-torsion" => tls::torsion(),
        "tls-tokio" => tls::tokio(),
        other => Err(invalid(format!(
            "unknown server {other:?}; one of {KINDS:?}"
        ))),
    }
}

fn load(args: &[String]) -> io::Result<()> {
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| invalid("load needs a port".into()))?;
    let options = parse(&args[1..])?;
    let report = drive(port, &options)?;
    println!(
        "{} requests in {:?}: {:.0} req/s, p50 {:?}, p99 {:?}",
        report.requests,
        report.elapsed,
        report.per_second(),
        report.percentile(0.5),
        report.percentile(0.99)
    );
    Ok(())
}

/// Runs the load generator against the server on `port`.
fn drive(port: u16, options: &Options) -> io::Result<loadgen::Report> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loadgen::run(
        addr,
        options.connections,
        options.size,
        options.warmup,
        options.duration,
        options.rate,
        options.per_connection,
    )
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn parse(args: &[String]) -> io::Result<Options> {
    let mut options = Options {
        connections: 64,
        size: 1024,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        rounds: 3,
        servers: ["torsion", "tokio-ct", "mio"].map(String::from).to_vec(),
        rate: None,
        per_connection: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| invalid(format!("{flag} needs a value")))?;
        let number = || {
            value
                .parse::<f64>()
                .map_err(|e| invalid(format!("{flag} {value}: {e}")))
        };
        match flag.as_str() {
            "--connections" => options.connections = number()? as usize,
            "--size" => options.size = number()? as usize,
            "--warmup" => options.warmup = Duration::from_secs_f64(number()?),
            "--duration" => options.duration = Duration::from_secs_f64(number()?),
            "--rounds" => options.rounds = number()? as usize,
            "--servers" => options.servers = value.split(',').map(String::from).collect(),
            "--rate" => options.rate = Some(number()?),
            "--requests-per-connection" => options.per_connection = Some(number()? as u64),
            other => return Err(invalid(format!("unknown option {other}"))),
        }
    }
    if options.connections == 0 || options.size == 0 || options.rounds == 0 {
        return Err(invalid(
            "connections, size and rounds must be positive".into(),
        ));
    }
    Ok(options)
}

/// Short names for the servers of a table: a server of another build
/// (`KIND@PATH`) shows as its kind with a marker (`torsion*`, then
/// `torsion**` for a second path), and the legend lines name the paths.
fn server_labels<S: AsRef<str>>(servers: &[S]) -> (Vec<String>, Vec<String>) {
    let mut paths: Vec<&str> = Vec::new();
    let mut legend = Vec::new();
    let labels = servers
        .iter()
        .map(|server| match server.as_ref().split_once('@') {
            Some((kind, path)) => {
                let n = match paths.iter().position(|p| *p == path) {
                    Some(i) => i + 1,
                    None => {
                        paths.push(path);
                        legend.push(format!("{}: served by {path}", "*".repeat(paths.len())));
                        paths.len()
                    }
                };
                format!("{kind}{}", "*".repeat(n))
            }
            None => server.as_ref().to_owned(),
        })
        .collect();
    (labels, legend)
}

/// A server process that is killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `kind` may name another build of this benchmark as
    /// `KIND@PATH` (say `torsion@/tmp/bench-main`), to compare two builds'
    /// servers interleaved in one run.
    fn start(kind: &str) -> io::Result<Server> {
        let (kind, exe) = match kind.split_once('@') {
            Some((kind, path)) => (kind, std::path::PathBuf::from(path)),
            None => (kind, std::env::current_exe()?),
        };
        let mut child = Command::new(&exe)
            .args(["serve", kind])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", exe.display())))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let port = line.trim().parse().map_err(|_| {
            invalid(format!(
                "{kind} ({}) did not report its port: {line:?}",
                exe.display()
            ))
        })?;
        Ok(Server { child, port })
    }

    /// User + system CPU time of the server process so far.
    fn cpu(&self) -> io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) start at
        // field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins a process (0 = this one) to one CPU, if the machine has it.
fn pin(pid: u32, cpu: usize) {
    // SAFETY: the set is zeroed, then filled through libc's own macros;
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of_val(&set), &set);
    }
}

/// One server's figures from one round.
#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    mib_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    server_cpu_us: f64,
    loadgen_cpu_pct: f64,
}

fn measure(kind: &str, options: &Options, two_cpus: bool) -> io::Result<Sample> {
    let server = Server::start(kind)?;
    // Single-threaded servers get CPU 0 to themselves; multi-threaded ones
    // are left free to use both CPUs (and compete with the load).
    let name = kind.split_once('@').map_or(kind, |(name, _)| name);
    let multi_threaded = name.ends_with("-2t") || name.ends_with("-mt");
    if two_cpus && !multi_threaded {
        pin(server.child.id(), 0);
    }
    let cpu_before = server.cpu()?;
    let report = drive(server.port, options)?;
    // The server's CPU is read around the whole run, warm-up included, so
    // divide it by the requests of the whole run at the measured rate.
    let server_cpu = server.cpu()?.saturating_sub(cpu_before);
    let total_time = options.warmup + report.elapsed;
    let total_requests = report.per_second() * total_time.as_secs_f64();
    Ok(Sample {
        rps: report.per_second(),
        mib_s: report.per_second() * options.size as f64 / (1 << 20) as f64,
        p50_us: report.percentile(0.50).as_secs_f64() * 1e6,
        p99_us: report.percentile(0.99).as_secs_f64() * 1e6,
        p999_us: report.percentile(0.999).as_secs_f64() * 1e6,
        server_cpu_us: server_cpu.as_secs_f64() * 1e6 / total_requests.max(1.0),
        loadgen_cpu_pct: report.cpu.as_secs_f64() * 100.0 / report.elapsed.as_secs_f64(),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn compare(options: &Options) -> io::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let two_cpus = cpus >= 2;
    if two_cpus {
        pin(0, 1);
    }
    println!(
        "echo ping-pong: {} connections x {} B{}, {} round(s) of {:?} (after {:?} warm-up), {} CPU(s){}",
        options.connections,
        options.size,
        options
            .rate
            .map_or(String::new(), |rate| format!(" at {rate:.0} req/s")),
        options.rounds,
        options.duration,
        options.warmup,
        cpus,
        if two_cpus { ", server on CPU 0, load on CPU 1" } else { "" }
    );
    let medians = run_rounds(options, two_cpus)?;
    print_table(options, &medians);
    Ok(())
}

/// Every server of `options`, interleaved, for each round; the medians,
/// one per server.
fn run_rounds(options: &Options, two_cpus: bool) -> io::Result<Vec<Sample>> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); options.servers.len()];
    for round in 1..=options.rounds {
        for (i, kind) in options.servers.iter().enumerate() {
            let sample = measure(kind, options, two_cpus)?;
            eprintln!(
                "round {round} {kind:>10}: {:>9.0} req/s  p99 {:>7.1} us  server {:>5.2} us/req",
                sample.rps, sample.p99_us, sample.server_cpu_us
            );
            samples[i].push(sample);
        }
    }
    Ok(samples.iter().map(|runs| medians(runs)).collect())
}

/// The median of each figure over several rounds.
fn medians(runs: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
    Sample {
        rps: pick(|s| s.rps),
        mib_s: pick(|s| s.mib_s),
        p50_us: pick(|s| s.p50_us),
        p99_us: pick(|s| s.p99_us),
        p999_us: pick(|s| s.p999_us),
        server_cpu_us: pick(|s| s.server_cpu_us),
        loadgen_cpu_pct: pick(|s| s.loadgen_cpu_pct),
    }
}

/// One table: a row per server, with ratios to Torsion's figures.
fn print_table(options: &Options, medians: &[Sample]) {
    let base = options
        .servers
        .iter()
        .position(|kind| kind == "torsion")
        .map(|i| medians[i]);
    println!();
    println!(
        "{:<10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>10} {:>14} {:>10} {:>10} {:>11}",
        "server",
        "req/s",
        "MiB/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "server us",
        "loadgen CPU %",
        "req/s x",
        "p99 x",
        "CPU/req x"
    );
    let (labels, legend) = server_labels(&options.servers);
    for (kind, m) in labels.iter().zip(medians) {
        let ratio = |ours: f64, theirs: f64| {
            if ours > 0.0 {
                format!("{:.2}", theirs / ours)
            } else {
                "-".into()
            }
        };
        let (rps_x, p99_x, cpu_x) = match base {
            Some(b) => (
                ratio(b.rps, m.rps),
                ratio(b.p99_us, m.p99_us),
                ratio(b.server_cpu_us, m.server_cpu_us),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<10} {:>10.0} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>10.2} {:>14.0} {:>10} {:>10} {:>11}",
            kind,
            m.rps,
            m.mib_s,
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.server_cpu_us,
            m.loadgen_cpu_pct,
            rps_x,
            p99_x,
            cpu_x
        );
    }
    println!();
    println!(
        "medians of {} round(s); \"x\" columns are each server's figure divided by Torsion's",
        options.rounds
    );
    println!(
        "(req/s x above 1: faster than Torsion; p99 x and CPU/req x above 1: slower than Torsion)"
    );
    for line in legend {
        println!("{line}");
    }
}
