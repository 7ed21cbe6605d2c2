//! The example programs, end to end: our echo client and server against
//! each other and against real Twisted (the book's examples in
//! `examples/twisted/`, run with the Python of the project's virtualenv).
//!
//! The Twisted tests need a Python with Twisted: `TORSION_PYTHON`, or
//! `.venv/bin/python` at the workspace root (`just test` creates it). When
//! neither has Twisted they are skipped, unless `TORSION_REQUIRE_TWISTED=1`
//! (set by `just test`), which makes a missing Twisted a failure.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{example, start_logging_port, workspace_root, Reports, Server};

/// Longest any program may take before the test fails (a guard against
/// hanging, not a wait for an event).
const LIMIT: Duration = Duration::from_secs(60);

/// The Python to run Twisted with, if there is one.
fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("TORSION_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let has_twisted = Command::new(&candidate)
        .args(["-c", "import twisted"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if has_twisted {
        return Some(candidate);
    }
    if std::env::var("TORSION_REQUIRE_TWISTED").as_deref() == Ok("1") {
        panic!(
            "Twisted is required but {} cannot import it; run `just setup`",
            candidate.display()
        );
    }
    eprintln!("skipped: no Python with Twisted at {}", candidate.display());
    None
}

/// Runs a client to completion, failing the test if it takes too long.
fn run_client(mut command: Command) -> Output {
    command.stdin(Stdio::null());
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(LIMIT)
        .expect("client finished in time")
        .expect("client ran")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn our_server() -> (Server, u16) {
    let mut command = Command::new(example("echo_server"));
    command.arg("0").env("RUST_LOG", "info");
    let (child, port) = start_logging_port(command, "host=tcp:0.0.0.0:", Reports::Stderr);
    (Server(child), port)
}

fn our_client(port: u16) -> Output {
    let mut command = Command::new(example("echo_client"));
    command.args(["127.0.0.1", &port.to_string()]);
    run_client(command)
}

const BOOK_OUTPUT: &str = "Server said: Hello, world!\nConnection lost.\n";

#[test]
fn our_client_against_our_server() {
    let (_server, port) = our_server();
    let output = our_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), BOOK_OUTPUT);
}

#[test]
fn our_client_without_a_server_reports_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = our_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), "Connection failed.\n");
}

#[test]
fn twisted_client_against_our_server() {
    let Some(python) = python() else { return };
    let (_server, port) = our_server();
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("examples/twisted/echo_client.py"))
        .args(["127.0.0.1", &port.to_string()]);
    let output = run_client(command);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), BOOK_OUTPUT);
}

#[test]
fn our_client_against_a_twisted_server() {
    let Some(python) = python() else { return };
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("examples/twisted/echo_server.py"))
        .arg("0");
    let (server, port) = start_logging_port(command, "listening on ", Reports::Stdout);
    let _server = Server(server);
    let output = our_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), BOOK_OUTPUT);
}

fn our_async_client(port: u16) -> Output {
    let mut command = Command::new(example("async_echo_client"));
    command.args(["127.0.0.1", &port.to_string()]);
    run_client(command)
}

#[test]
fn our_async_client_against_our_server() {
    let (_server, port) = our_server();
    let output = our_async_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), BOOK_OUTPUT);
}

#[test]
fn our_async_client_without_a_server_reports_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = our_async_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), "Connection failed.\n");
}

#[test]
fn our_async_client_against_a_twisted_server() {
    let Some(python) = python() else { return };
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("examples/twisted/echo_server.py"))
        .arg("0");
    let (server, port) = start_logging_port(command, "listening on ", Reports::Stdout);
    let _server = Server(server);
    let output = our_async_client(port);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), BOOK_OUTPUT);
}

#[test]
fn twisted_spawn_process_runs_our_stdio_echo() {
    let Some(python) = python() else { return };
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("examples/twisted/spawn_echo.py"))
        .arg(example("stdio_echo"))
        .arg("5000");
    let output = run_client(command);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_of(&output), "ok: 5000 lines\n");
}

#[test]
fn our_process_example_runs_a_twisted_standard_io_program() {
    let Some(python) = python() else { return };
    let mut child = Command::new(example("process"))
        .arg(python)
        .arg(workspace_root().join("examples/twisted/stdio_lines.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx.recv_timeout(LIMIT).unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    let out = stdout_of(&output);
    // Standard output in order; standard error is another pipe, so its
    // line may come anywhere before the end.
    let lines: Vec<&str> = out.lines().collect();
    let answers: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("out: "))
        .collect();
    assert_eq!(
        answers,
        ["out: got: one", "out: got: two", "out: got: three"],
        "{out}"
    );
    assert!(lines.contains(&"err: bye"), "{out}");
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "exited: process exited with status 0",
            "ended: process exited with status 0"
        ],
        "{out}"
    );
}
