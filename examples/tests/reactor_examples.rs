//! The reactor examples run and print what they promise.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::{example, start_logging, start_logging_port, Reports};

fn run(name: &str) -> String {
    run_args(name, &[])
}

/// Runs an example to its end and returns its output; kills it if it
/// has not closed its output within two minutes.
fn run_args(name: &str, args: &[&str]) -> String {
    use std::io::Read;
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // The output ends when the example exits.
    let Ok(stdout) = rx.recv_timeout(std::time::Duration::from_secs(120)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} {args:?} did not finish within 2 minutes; killed");
    };
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(
        status.success(),
        "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn timers_example() {
    let out = run("timers");
    // Calls run in deadline order however late the loop is; only the
    // interval counts depend on timing, so they are left out.
    let lines: Vec<&str> = out
        .lines()
        .map(|line| line.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "cancelled: true",
            "beat 1",
            "50 ms: call_later fired",
            "80 ms: delayed call fired",
            "beat 2",
            "120 ms: reset call fired",
            "beat 3",
            "beat 4",
            "beat 5",
            "done after 5 beats"
        ]
    );
}

#[test]
fn threads_example() {
    let out = run("threads");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"defer_to_thread: sum = 500500"), "{out}");
    let messages: Vec<&&str> = lines.iter().filter(|l| l.contains("message")).collect();
    assert_eq!(
        messages,
        [
            &"call_from_thread: message 1",
            &"call_from_thread: message 2",
            &"call_from_thread: message 3"
        ]
    );
    assert_eq!(lines.last(), Some(&"call_from_thread: stopping"));
}

#[test]
fn shutdown_example_on_sigint() {
    let mut child = Command::new(example("shutdown"))
        .arg("wait")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Wait until it runs, then interrupt it as Ctrl-C would.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let running = line == "running";
        seen.push(line);
        if running {
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            break;
        }
    }
    seen.extend(lines.map(|line| line.unwrap()));
    assert!(child.wait().unwrap().success());
    assert_eq!(
        seen,
        [
            "Before Startup",
            "After Startup",
            "running",
            "Before Shutdown",
            "During Shutdown",
            "After Shutdown",
            "run() returned"
        ]
    );
}

#[test]
fn unix_echo_example() {
    let path = std::env::temp_dir().join(format!("torsion-example-{}.sock", std::process::id()));
    let output = Command::new(example("unix_echo"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "Server said: Hello, world!\nConnection lost.\n"
    );
    assert!(!path.exists(), "the socket file is removed on shutdown");
}

#[test]
fn udp_echo_example() {
    let mut command = Command::new(example("udp_echo"));
    command.args(["server", "0"]).env("RUST_LOG", "info");
    let (mut server, port) = start_logging_port(command, "host=udp:0.0.0.0:", Reports::Stderr);
    let port = port.to_string();
    let output = Command::new(example("udp_echo"))
        .args(["client", "127.0.0.1", &port, "ping"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "Server said: ping\n"
    );
}

#[test]
fn producer_example() {
    let out = run("producer");
    assert!(
        out.starts_with("received 8 MiB in ")
            && out.ends_with("connection ended: connection was closed cleanly by the peer\n"),
        "{out}"
    );
}

/// Starts an example server on port 0 and returns it with its port.
fn start_tcp_server(name: &str) -> (std::process::Child, u16) {
    let mut command = Command::new(example(name));
    command.arg("0").env("RUST_LOG", "info");
    start_logging_port(command, "host=tcp:0.0.0.0:", Reports::Stderr)
}

#[test]
fn chat_server_example_with_three_clients() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;

    let (mut server, port) = start_tcp_server("chat_server");
    let join = |name: &str| {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "What's your name?\r\n");
        (&stream)
            .write_all(format!("{name}\r\n").as_bytes())
            .unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("Welcome, {name}!\r\n"));
        (stream, reader)
    };
    let next = |reader: &mut BufReader<TcpStream>| {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    let (alice, mut alice_in) = join("alice");
    let (_bob, mut bob_in) = join("bob");
    assert_eq!(next(&mut alice_in), "bob has joined.\r\n");
    let (carol, mut carol_in) = join("carol");
    assert_eq!(next(&mut alice_in), "carol has joined.\r\n");
    assert_eq!(next(&mut bob_in), "carol has joined.\r\n");

    (&alice).write_all(b"hello all\r\n").unwrap();
    assert_eq!(next(&mut bob_in), "<alice> hello all\r\n");
    assert_eq!(next(&mut carol_in), "<alice> hello all\r\n");

    drop(carol);
    drop(carol_in);
    assert_eq!(next(&mut alice_in), "carol has left.\r\n");
    assert_eq!(next(&mut bob_in), "carol has left.\r\n");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn reconnecting_client_survives_a_server_restart() {
    let (mut server, port) = start_tcp_server("echo_server");
    let mut client = Command::new(example("reconnecting_client"))
        .args(["127.0.0.1", &port.to_string(), "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut restarted = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let echoed = line.starts_with("server said");
        seen.push(line);
        if echoed && restarted.is_none() {
            // Restart the server on the same port.
            let _ = server.kill();
            let _ = server.wait();
            let new = Command::new(example("echo_server"))
                .arg(port.to_string())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            restarted = Some(new);
        }
    }
    assert!(client.wait().unwrap().success());
    if let Some(mut server) = restarted {
        let _ = server.kill();
        let _ = server.wait();
    }
    assert_eq!(
        seen,
        [
            "connected (1)",
            "server said: hello again",
            "connection lost",
            "connected (2)",
            "server said: hello again",
            "connection lost"
        ]
    );
}

/// Starts a multi-reactor echo server from `args` and waits for `marker`
/// (logged once every reactor is ready), has 30 connections echo a
/// message each, then stops it with SIGTERM and checks it exits cleanly
/// (every reactor stopped). Returns how many connections each reactor
/// served, from the `reactor stopped reactor=I connections=N` lines.
fn thirty_echoes_then_sigterm(name: &str, args: &[&str], marker: &str) -> Vec<usize> {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let mut command = Command::new(example(name));
    command.args(args).env("RUST_LOG", "info");
    let (mut server, port, log) = start_logging(command, marker, Reports::Stderr);
    let streams: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for (i, mut stream) in streams.iter().enumerate() {
        let message = format!("message {i}");
        stream.write_all(message.as_bytes()).unwrap();
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message.as_bytes());
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success());
    // The server has exited: its log is complete.
    let field = |line: &str, name: &str| -> usize {
        let at = line.find(name).unwrap_or_else(|| panic!("{line}")) + name.len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let mut served = Vec::new();
    for line in log.iter().filter(|line| line.contains("reactor stopped")) {
        let reactor = field(&line, "reactor=");
        if served.len() <= reactor {
            served.resize(reactor + 1, None);
        }
        assert_eq!(served[reactor], None, "reactor {reactor} reported twice");
        served[reactor] = Some(field(&line, "connections="));
    }
    let served: Vec<usize> = served
        .into_iter()
        .map(|count| count.expect("every reactor reports"))
        .collect();
    assert_eq!(served.iter().sum::<usize>(), 30, "{served:?}");
    served
}

#[test]
fn echo_server_on_several_reactors() {
    // Connections spread by the kernel over three reactors. The kernel
    // hashes each connection's addresses to pick a listener, so no split
    // is certain; but all 30 on one reactor has odds of 3 in 3^30.
    let served = thirty_echoes_then_sigterm(
        "echo_server",
        &["0", "--threads", "3"],
        "all reactors listening port=",
    );
    assert_eq!(served.len(), 3);
    let busy = served.iter().filter(|&&count| count > 0).count();
    assert!(busy >= 2, "one reactor served everything: {served:?}");
}

#[test]
fn acceptor_hands_connections_to_workers() {
    // Connections handed round-robin by one acceptor to three workers.
    let served =
        thirty_echoes_then_sigterm("acceptor", &["0", "--workers", "3"], "host=tcp:0.0.0.0:");
    assert_eq!(served, [10, 10, 10]);
}

#[test]
fn async_fetch_gathers_replies_and_failures() {
    let (mut server, port) = start_tcp_server("echo_server");
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Connects (the kernel's backlog accepts) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let output = Command::new(example("async_fetch"))
        .args(["--timeout-ms", "300"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("127.0.0.1:{refused}"))
        .arg(format!("127.0.0.1:{silent_port}"))
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        lines[0],
        format!("127.0.0.1:{port}: replied 23 bytes: hello from async_fetch")
    );
    assert!(
        lines[1].starts_with(&format!("127.0.0.1:{refused}: failed: "))
            && lines[1].contains("refused"),
        "{out}"
    );
    assert_eq!(
        lines[2],
        format!("127.0.0.1:{silent_port}: failed: timed out after 300ms")
    );
    assert_eq!(lines[3], "3 servers, 2 failed");
    drop(silent);
}

#[test]
fn stats_example_counts_its_demo_load() {
    let out = run_args("stats", &["--demo"]);
    let lines: Vec<&str> = out.lines().collect();
    let last = lines.last().expect("output");
    let final_counts = last.strip_prefix("final: ").expect("a final line");
    for expected in [
        "open=0",
        "accepted=4",
        "closed=4",
        "closed_by_peer=4",
        "bytes_read=6400",
        "bytes_written=6400",
        "accept_errors=0",
        "panicked=0",
    ] {
        assert!(
            final_counts.split(' ').any(|pair| pair == expected),
            "{expected} in {last}"
        );
    }
    // The monitor thread's last snapshot, read after the reactor stopped,
    // is the reactor's own final count, whole.
    assert!(lines.len() >= 2, "{out}");
    assert_eq!(lines[lines.len() - 2], final_counts, "{out}");
}
