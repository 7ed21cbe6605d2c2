//! The whole suite (`just bench`; `just bench-quick` for a short version):
//! every echo server on every workload, interleaved, then memory per idle
//! connection and system calls per message for each server. Prints a
//! table per workload and writes `bench/results/latest.json`, a dated
//! copy, and `bench/results/chart.svg`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{pin, print_table, run_rounds, Options, Sample, Server};

/// The servers compared, Torsion first.
const SERVERS: &[&str] = &["torsion", "tokio-ct", "mio", "tokio-mt", "torsion-2t"];

struct Workload {
    name: &'static str,
    title: &'static str,
    connections: usize,
    size: usize,
    rate: Option<f64>,
    /// Round trips per connection before it is closed and made again.
    per_connection: Option<u64>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pingpong_1k_x64",
        title: "ping-pong, 64 connections x 1 KiB, saturated",
        connections: 64,
        size: 1024,
        rate: None,
        per_connection: None,
    },
    Workload {
        name: "pingpong_1k_x64_30k",
        title: "ping-pong, 64 connections x 1 KiB, fixed 30,000 req/s",
        connections: 64,
        size: 1024,
        rate: Some(30_000.0),
        per_connection: None,
    },
    Workload {
        name: "latency_16b_x1",
        title: "ping-pong, 1 connection x 16 B (latency)",
        connections: 1,
        size: 16,
        rate: None,
        per_connection: None,
    },
    Workload {
        name: "stream_16k_x8",
        title: "streaming, 8 connections x 16 KiB",
        connections: 8,
        size: 16 * 1024,
        rate: None,
        per_connection: None,
    },
    Workload {
        name: "short_64b_x64",
        title: "short-lived connections, 64 clients: connect, 64 B echoed, close",
        connections: 64,
        size: 64,
        rate: None,
        per_connection: Some(1),
    },
];

/// One server's figures over the whole suite.
#[derive(Default, Clone)]
struct Row {
    workloads: Vec<Sample>,
    idle_bytes: Option<f64>,
    /// System calls per echoed message: 1 x 16 B, and 64 x 1 KiB.
    syscalls: Option<(f64, f64)>,
}

pub fn run(quick: bool) -> io::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let two_cpus = cpus >= 2;
    if two_cpus {
        pin(0, 1);
    }
    let descriptors = raise_descriptor_limit();
    let (rounds, warmup, duration, idle, trace_seconds) = if quick {
        (1, 0.2, 0.8, 1_000, 0.4)
    } else {
        (3, 0.5, 2.0, 10_000, 1.0)
    };
    // Each side of an idle connection needs a descriptor in its process.
    let idle = idle.min(descriptors.saturating_sub(100) as usize).max(1);
    // The quick run keeps to the three single-threaded servers.
    let servers: Vec<String> = SERVERS
        .iter()
        .take(if quick { 3 } else { SERVERS.len() })
        .map(|s| s.to_string())
        .collect();
    println!(
        "Torsion benchmark suite{}: {} CPU(s){}; {rounds} round(s) of {duration} s after {warmup} s warm-up, servers interleaved",
        if quick { " (quick)" } else { "" },
        cpus,
        if two_cpus {
            "; single-threaded servers on CPU 0, load generator on CPU 1"
        } else {
            ""
        }
    );
    let mut rows = vec![Row::default(); servers.len()];
    for workload in WORKLOADS {
        let options = Options {
            connections: workload.connections,
            size: workload.size,
            warmup: Duration::from_secs_f64(warmup),
            duration: Duration::from_secs_f64(duration),
            rounds,
            servers: servers.clone(),
            rate: workload.rate,
            per_connection: workload.per_connection,
        };
        println!("\n== {}", workload.title);
        let medians = run_rounds(&options, two_cpus)?;
        print_table(&options, &medians);
        for (row, sample) in rows.iter_mut().zip(medians) {
            row.workloads.push(sample);
        }
    }

    println!("\n== memory per idle connection ({idle} connections, server resident set)");
    for (kind, row) in servers.iter().zip(&mut rows) {
        let bytes = idle_bytes(kind, idle)?;
        println!("{kind:<10} {bytes:>8.0} B per connection");
        row.idle_bytes = Some(bytes);
    }

    if let Some(tracer) = Tracer::find() {
        println!(
            "\n== system calls per echoed message ({}, {} s of load)",
            tracer.name(),
            trace_seconds
        );
        for (kind, row) in servers.iter().zip(&mut rows) {
            let trace_for = Duration::from_secs_f64(trace_seconds);
            let small = syscalls(tracer, kind, 1, 16, two_cpus, trace_for)?;
            let wide = syscalls(tracer, kind, 64, 1024, two_cpus, trace_for)?;
            println!("{kind:<10} {small:>6.2} (1 x 16 B)   {wide:>6.2} (64 x 1 KiB)");
            row.syscalls = Some((small, wide));
        }
    } else {
        println!("\n== system calls per echoed message: skipped (needs perf or strace)");
    }

    if let Some(two) = servers.iter().position(|s| s == "torsion-2t") {
        let one = rows[0].workloads[0].rps;
        let both = rows[two].workloads[0].rps;
        println!(
            "\n== scaling: 2 reactors / 1 reactor, 64 x 1 KiB saturated: {:.2}x ({both:.0} / {one:.0} req/s; the load generator shares the 2 CPUs)",
            both / one
        );
    }

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let json = to_json(&servers, &rows, quick, cpus);
    let svg = to_svg(
        &servers,
        &rows,
        &format!(
            "{}, {cpus} CPU(s), Linux {}, {}",
            cpu_model(),
            command_output("uname", &["-r"]),
            command_output("date", &["-u", "+%Y-%m-%d"])
        ),
    );
    // A quick run is a check before a change, not a result to publish.
    let written: Vec<(String, &str)> = if quick {
        vec![("quick.json".into(), &json), ("quick.svg".into(), &svg)]
    } else {
        let stamp = command_output("date", &["-u", "+%Y-%m-%d"]);
        vec![
            (format!("{stamp}.json"), &json),
            ("latest.json".into(), &json),
            ("chart.svg".into(), &svg),
        ]
    };
    println!();
    for (name, contents) in written {
        std::fs::write(dir.join(&name), contents)?;
        println!("wrote {}", display(&dir.join(&name)));
    }
    Ok(())
}

fn display(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    path.strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(path))
        .display()
        .to_string()
}

/// Raises this process's descriptor limit as far as it may go and returns
/// it; the servers, started later, inherit it.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or fill the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux only.
    let current = limit.rlim_cur as u64;
    current
}

/// The server's resident set, in bytes.
fn rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))?;
    Ok(kib * 1024)
}

/// Opens `n` connections to a fresh `kind` server, has each echo one
/// byte (so the server has accepted and set up every one), and returns
/// the growth of the server's resident set per connection.
fn idle_bytes(kind: &str, n: usize) -> io::Result<f64> {
    let server = Server::start(kind)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let round_trip = |stream: &mut TcpStream| -> io::Result<()> {
        stream.write_all(b"x")?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)
    };
    // One connection first: what a server allocates once (buffers,
    // worker threads) is not a per-connection cost.
    let mut warm = TcpStream::connect(addr)?;
    round_trip(&mut warm)?;
    let before = rss(server.child.id())?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(b"x")?;
        streams.push(stream);
    }
    for stream in &mut streams {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
    }
    let after = rss(server.child.id())?;
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// How system calls are counted.
#[derive(Clone, Copy, PartialEq)]
enum Tracer {
    /// `perf stat -e raw_syscalls:sys_enter`: a kernel counter, which
    /// barely slows the server.
    Perf,
    /// `strace -f -c`: slows every call, which flatters loops that read
    /// until `EAGAIN` (the next request is already there when they try).
    Strace,
}

impl Tracer {
    fn find() -> Option<Tracer> {
        let works = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works("perf", &["stat", "-e", "raw_syscalls:sys_enter", "true"]) {
            Some(Tracer::Perf)
        } else if works("strace", &["-V"]) {
            Some(Tracer::Strace)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tracer::Perf => "perf stat -e raw_syscalls:sys_enter",
            Tracer::Strace => "strace -f -c",
        }
    }
}

/// System calls the `kind` server makes per echoed message over a second
/// of ping-pong load.
fn syscalls(
    tracer: Tracer,
    kind: &str,
    connections: usize,
    size: usize,
    two_cpus: bool,
    duration: Duration,
) -> io::Result<f64> {
    let server = Server::start(kind)?;
    if two_cpus && !(kind.ends_with("-2t") || kind.ends_with("-mt")) {
        pin(server.child.id(), 0);
    }
    let out = std::env::temp_dir().join(format!("torsion-bench-trace-{}", std::process::id()));
    let pid = server.child.id().to_string();
    let mut trace = match tracer {
        Tracer::Perf => Command::new("perf")
            .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"])
            .arg(&out)
            .args(["-p", &pid])
            .stderr(Stdio::null())
            .spawn()?,
        Tracer::Strace => Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&out)
            .args(["-p", &pid])
            .stderr(Stdio::null())
            .spawn()?,
    };
    // Neither tool says when it is attached; an idle server makes no
    // calls, so a generous pause before the load costs nothing.
    std::thread::sleep(Duration::from_millis(300));
    let options = Options {
        connections,
        size,
        warmup: Duration::ZERO,
        duration,
        rounds: 1,
        servers: Vec::new(),
        rate: None,
        per_connection: None,
    };
    let report = crate::drive(server.port, &options)?;
    // SAFETY: kill only sends a signal to the tracer we started.
    unsafe {
        libc::kill(trace.id() as libc::pid_t, libc::SIGINT);
    }
    trace.wait()?;
    let summary = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_file(&out);
    let calls = match tracer {
        // "244197,,raw_syscalls:sys_enter,..."
        Tracer::Perf => summary
            .lines()
            .find(|line| line.contains("raw_syscalls:sys_enter"))
            .and_then(|line| line.split(',').next())
            .and_then(|n| n.trim().parse::<f64>().ok()),
        // The last line: "100.00  seconds  usecs/call  calls  [errors]  total".
        Tracer::Strace => summary
            .lines()
            .rev()
            .find(|line| line.trim_end().ends_with("total"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|n| n.parse::<f64>().ok()),
    }
    .ok_or_else(|| io::Error::other(format!("unreadable {} output:\n{summary}", tracer.name())))?;
    Ok(calls / report.requests.max(1) as f64)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}

fn to_json(servers: &[String], rows: &[Row], quick: bool, cpus: usize) -> String {
    let mut json = String::from("{\n");
    let _ = writeln!(
        json,
        "  \"date\": \"{}\",",
        command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
    );
    let _ = writeln!(
        json,
        "  \"machine\": {{\"cpus\": {cpus}, \"cpu\": \"{}\", \"kernel\": \"{}\"}},",
        cpu_model().replace('"', "'"),
        command_output("uname", &["-r"])
    );
    let _ = writeln!(json, "  \"quick\": {quick},");
    json.push_str("  \"workloads\": {\n");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let _ = writeln!(json, "    \"{}\": {{", workload.name);
        for (s, kind) in servers.iter().enumerate() {
            let m = &rows[s].workloads[w];
            let _ = write!(
                json,
                "      \"{kind}\": {{\"req_per_s\": {}, \"mib_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"server_cpu_us_per_msg\": {}, \"loadgen_cpu_pct\": {}}}",
                json_number(m.rps),
                json_number(m.mib_s),
                json_number(m.p50_us),
                json_number(m.p99_us),
                json_number(m.p999_us),
                json_number(m.server_cpu_us),
                json_number(m.loadgen_cpu_pct)
            );
            json.push_str(if s + 1 < servers.len() { ",\n" } else { "\n" });
        }
        json.push_str(if w + 1 < WORKLOADS.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    json.push_str("  },\n  \"idle_bytes_per_connection\": {");
    let idle: Vec<String> = servers
        .iter()
        .zip(rows)
        .map(|(kind, row)| {
            format!(
                "\"{kind}\": {}",
                row.idle_bytes.map_or("null".into(), json_number)
            )
        })
        .collect();
    json.push_str(&idle.join(", "));
    json.push_str("},\n  \"syscalls_per_message\": {");
    let calls: Vec<String> = servers
        .iter()
        .zip(rows)
        .map(|(kind, row)| match row.syscalls {
            Some((small, wide)) => format!(
                "\"{kind}\": {{\"1x16B\": {}, \"64x1KiB\": {}}}",
                json_number(small),
                json_number(wide)
            ),
            None => format!("\"{kind}\": null"),
        })
        .collect();
    json.push_str(&calls.join(", "));
    json.push_str("}\n}\n");
    json
}

/// A grouped bar chart of every cost (lower is better) relative to
/// Torsion's: server CPU per message on each workload, p99 latency,
/// memory per idle connection, system calls per message.
fn to_svg(servers: &[String], rows: &[Row], machine: &str) -> String {
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    let labels = [
        "CPU/msg 64x1K",
        "CPU/msg 30k/s",
        "CPU/msg 1x16B",
        "CPU/msg 8x16K",
        "CPU/conn short",
    ];
    for (w, label) in labels.iter().enumerate() {
        groups.push((
            label.to_string(),
            rows.iter().map(|r| r.workloads[w].server_cpu_us).collect(),
        ));
    }
    groups.push((
        "p99 1x16B".into(),
        rows.iter().map(|r| r.workloads[2].p99_us).collect(),
    ));
    groups.push((
        "idle B/conn".into(),
        rows.iter().map(|r| r.idle_bytes.unwrap_or(0.0)).collect(),
    ));
    if rows.iter().all(|r| r.syscalls.is_some()) {
        groups.push((
            "syscalls/msg".into(),
            rows.iter()
                .map(|r| r.syscalls.map_or(0.0, |s| s.0))
                .collect(),
        ));
    }
    let colours = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#718096"];
    let (width, height, left, top, bottom) = (900.0, 420.0, 50.0, 40.0, 80.0);
    let plot_h = height - top - bottom;
    let group_w = (width - left - 20.0) / groups.len() as f64;
    let bar_w = group_w * 0.8 / servers.len() as f64;
    let max_ratio = 2.0f64;
    let y = |ratio: f64| top + plot_h * (1.0 - ratio.min(max_ratio) / max_ratio);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">Cost relative to Torsion (Torsion = 1; lower is better; bars capped at 2)</text>\n<text x=\"{left}\" y=\"34\" font-size=\"11\" fill=\"#555\">{machine}</text>\n"
    );
    for tick in [0.0, 0.5, 1.0, 1.5, 2.0] {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick:.1}</text>",
            width - 20.0,
            y(tick),
            y(tick),
            if tick == 1.0 { "#000" } else { "#ddd" },
            left - 5.0,
            y(tick) + 4.0
        );
    }
    for (g, (label, values)) in groups.iter().enumerate() {
        let base = values[0];
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (s, value) in values.iter().enumerate() {
            let ratio = if base > 0.0 { value / base } else { 0.0 };
            let x = x0 + s as f64 * bar_w;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {value:.2} ({ratio:.2}x)</title></rect>",
                y(ratio),
                bar_w * 0.9,
                y(0.0) - y(ratio),
                colours[s % colours.len()],
                servers[s]
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x0 + group_w * 0.4,
            height - bottom + 18.0
        );
    }
    for (s, kind) in servers.iter().enumerate() {
        let x = left + s as f64 * 140.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{kind}</text>",
            height - 30.0,
            colours[s % colours.len()],
            x + 16.0,
            height - 20.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
