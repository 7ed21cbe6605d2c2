//! The finger tutorial's four servers (`examples/finger/`) answer real
//! queries on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

#[allow(dead_code)] // each test binary uses what it needs
mod common;
use common::{example, start_logging, Reports, Server};

/// Sends one finger query and returns the whole answer (the server closes
/// the connection after it).
fn finger(port: u16, user: &str) -> String {
    send(port, format!("{user}\r\n").as_bytes())
}

/// Sends `query` in one write and returns all the server sends back
/// before it closes, failing after ten seconds of silence.
fn send(port: u16, query: &[u8]) -> String {
    let mut stream = connect(port);
    stream.write_all(query).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A connection whose reads fail after ten seconds of silence.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn start(name: &str, args: &[&str]) -> (Server, u16, std::sync::mpsc::Receiver<String>) {
    let mut command = Command::new(example(name));
    command.args(args);
    let (child, port, rest) = start_logging(command, "listening on port ", Reports::Stdout);
    (Server(child), port, rest)
}

#[test]
fn step_1_answers_every_query_alike() {
    let (_server, port, _) = start("finger1_static", &["0"]);
    assert_eq!(finger(port, "moshez"), "No such user\r\n");
    assert_eq!(finger(port, "anyone"), "No such user\r\n");
}

#[test]
fn step_2_answers_from_its_table() {
    let (_server, port, _) = start("finger2_table", &["0"]);
    assert_eq!(finger(port, "moshez"), "Happy and well\r\n");
    assert_eq!(finger(port, "nobody"), "No such user\r\n");
}

#[test]
fn step_3_reads_the_file_again_on_its_timer() {
    let dir = std::env::temp_dir().join(format!("torsion-finger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    std::fs::write(&file, "moshez:Happy and well\n").unwrap();
    // The first reading happens before the server listens.
    let (_server, port, mut rest) = start("finger3_file", &["0", file.to_str().unwrap(), "0.05"]);
    assert_eq!(finger(port, "moshez"), "Happy and well\r\n");
    assert_eq!(finger(port, "alice"), "No such user\r\n");
    // Replace the file whole, then wait for a reading that saw it.
    let new = dir.join("users.new");
    // Spaces around the parts and CRLF line ends are dropped.
    std::fs::write(&new, "moshez : Out to lunch\r\nalice:Writing\n").unwrap();
    std::fs::rename(&new, &file).unwrap();
    wait_for(&mut rest, "finger: loaded 2 users");
    assert_eq!(finger(port, "moshez"), "Out to lunch\r\n");
    assert_eq!(send(port, b"alice\n"), "Writing\r\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn step_3_refuses_an_interval_of_zero() {
    // Zero would read the file on every turn of the loop, at full CPU.
    let output = Command::new(example("finger3_file"))
        .args(["0", "/nonexistent/users", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("usage: finger3_file"), "{stderr}");
}

#[test]
fn step_4_answers_with_a_programs_output() {
    // `echo status of` stands in for the system's finger command.
    let (_server, port, _) = start("finger4_process", &["0", "echo", "status of"]);
    assert_eq!(finger(port, "moshez"), "status of moshez\r\n");
    // A bare "\n" ends a line too.
    assert_eq!(send(port, b"alice\n"), "status of alice\r\n");
    // A name that would read as an option never reaches the program.
    assert_eq!(finger(port, "-l"), "No such user\r\n");
    assert_eq!(finger(port, ""), "No such user\r\n");
}

#[test]
fn step_4_reports_a_program_that_cannot_start() {
    let (_server, port, _) = start("finger4_process", &["0", "/nonexistent/finger"]);
    assert_eq!(finger(port, "moshez"), "Internal error\r\n");
}

#[test]
fn step_4_runs_one_child_per_connection() {
    let (_server, port, mut rest) = start("finger4_process", &["0", "echo", "status of"]);
    // Two lines in one write: only the first is a query.
    assert_eq!(send(port, b"first\r\nsecond\r\n"), "status of first\r\n");
    // The next child to end is the next connection's, not one for
    // "second" (whose child would have started before "first" answered).
    assert_eq!(finger(port, "third"), "status of third\r\n");
    assert_eq!(
        next_line(&mut rest),
        "finger: first: process exited with status 0"
    );
    assert_eq!(
        next_line(&mut rest),
        "finger: third: process exited with status 0"
    );
}

#[test]
fn step_4_kills_the_child_when_its_client_leaves() {
    let (_server, port, mut rest) = start("finger4_process", &["0", "sleep"]);
    let mut stream = connect(port);
    // `sleep 3600`: the user name is the program's last argument.
    stream.write_all(b"3600\r\n").unwrap();
    // Whether the query and the end of input arrive in one read or two,
    // the child starts first and is killed when the connection is lost.
    drop(stream);
    assert_eq!(
        next_line(&mut rest),
        "finger: 3600: process killed by signal 9 (SIGKILL)"
    );
}

/// The server's next output line, waiting at most a minute.
fn next_line(lines: &mut std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a line from the server")
}

/// Reads the server's output lines until `line`, for at most a minute.
fn wait_for(lines: &mut std::sync::mpsc::Receiver<String>, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(seen) if seen == line => return,
            Ok(_) => {}
            Err(error) => panic!("no {line:?} from the server: {error}"),
        }
    }
}
