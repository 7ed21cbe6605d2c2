//! The finger tutorial's four servers (`examples/finger/`) answer real
//! queries on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};

#[allow(dead_code)] // each test binary uses what it needs
mod common;
use common::{example, start_logging, Reports};

/// Sends one finger query and returns the whole answer (the server closes
/// the connection after it).
fn finger(port: u16, user: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(format!("{user}\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    std::fs::write(&new, "moshez:Out to lunch\nalice:Writing\n").unwrap();
    std::fs::rename(&new, &file).unwrap();
    wait_for(&mut rest, "finger: loaded 2 users");
    assert_eq!(finger(port, "moshez"), "Out to lunch\r\n");
    assert_eq!(finger(port, "alice"), "Writing\r\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn step_4_answers_with_a_programs_output() {
    // `echo status of` stands in for the system's finger command.
    let (_server, port, _) = start("finger4_process", &["0", "echo", "status of"]);
    assert_eq!(finger(port, "moshez"), "status of moshez\n");
    // A name that would read as an option never reaches the program.
    assert_eq!(finger(port, "-l"), "No such user\r\n");
    assert_eq!(finger(port, ""), "No such user\r\n");
}

#[test]
fn step_4_reports_a_program_that_cannot_start() {
    let (_server, port, _) = start("finger4_process", &["0", "/nonexistent/finger"]);
    assert_eq!(finger(port, "moshez"), "Internal error\r\n");
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
