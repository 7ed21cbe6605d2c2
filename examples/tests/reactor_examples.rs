//! The reactor examples run and print what they promise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "torsion-examples", "--examples"])
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

fn run(name: &str) -> String {
    let output = Command::new(example(name)).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
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
    let mut server = Command::new(example("udp_echo"))
        .args(["server", "0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server logs where it listens: "... host=udp:0.0.0.0:PORT".
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let mut port = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(at) = line.find("host=udp:0.0.0.0:") {
            let digits: String = line[at + "host=udp:0.0.0.0:".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            port = digits.parse::<u16>().ok();
            break;
        }
    }
    let port = port.expect("the server reports its port").to_string();
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
