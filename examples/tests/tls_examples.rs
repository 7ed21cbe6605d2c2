//! The TLS examples run and print what they promise.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

#[allow(dead_code)] // the port helpers serve other test binaries
mod common;
use common::example;

/// Starts `tls_echo_server` with `args`; returns it, its port, and the CA
/// it wrote (when it made a throwaway certificate).
fn start_server(args: &[&str]) -> (Child, u16, Option<PathBuf>) {
    let mut child = Command::new(example("tls_echo_server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ca = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("throwaway CA written to ") {
            ca = Some(PathBuf::from(path));
        }
        if let Some(port) = line.strip_prefix("listening on port ") {
            let port = port.parse().unwrap();
            std::thread::spawn(move || lines.for_each(drop));
            return (child, port, ca);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tls_echo_server did not report its port");
}

fn client(args: &[&str]) -> String {
    let output = Command::new(example("tls_echo_client"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn tls_echo_pair_with_a_throwaway_certificate_and_with_pem_files() {
    let (mut server, port, ca) = start_server(&["0"]);
    let ca = ca.expect("the server says where the CA is");
    let port_arg = port.to_string();
    let ca_arg = ca.to_str().unwrap();
    let out = client(&["localhost", &port_arg, "--ca", ca_arg]);
    assert_eq!(out, "Server said: Hello, world!\nConnection lost.\n");
    // The certificate is for localhost and 127.0.0.1, nothing else.
    let out = client(&["127.0.0.1", &port_arg, "--ca", ca_arg]);
    assert_eq!(out, "Server said: Hello, world!\nConnection lost.\n");
    let _ = server.kill();
    let _ = server.wait();

    // The same files given on the command line, with ALPN.
    let dir = ca.parent().unwrap();
    let chain = dir.join("chain.pem");
    let key = dir.join("key.pem");
    let (mut server, port, _) = start_server(&[
        "0",
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--alpn",
        "echo/1",
    ]);
    let port_arg = port.to_string();
    let out = client(&["localhost", &port_arg, "--ca", ca_arg, "--alpn", "echo/1"]);
    assert_eq!(out, "Server said: Hello, world!\nConnection lost.\n");
    // No protocol in common: the handshake fails, nothing is echoed.
    let out = client(&["localhost", &port_arg, "--ca", ca_arg, "--alpn", "other"]);
    assert_eq!(out, "Connection lost.\n");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn starttls_example() {
    let output = Command::new(example("starttls"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "client got \"HELLO plaintext; say STARTTLS\"",
            "server got \"STARTTLS\" (encrypted: false)",
            "client got \"READY\"",
            "client: TLS is on",
            "server: TLS is on",
            "server got \"the secret is 42\" (encrypted: true)",
            "client got \"you said \\\"the secret is 42\\\" privately\"",
            "client: connection closed (connection was closed cleanly by this side)",
        ]
    );
}

#[test]
fn starttls_example_refuses_plaintext_pipelined_after_the_command() {
    // `STARTTLS\r\nMAIL FROM:<x>\r\n` in one write: the server answers
    // the command, then refuses the plaintext after it instead of
    // dropping it (or taking it for TLS).
    let output = Command::new(example("starttls"))
        .arg("--pipeline")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "client got \"HELLO plaintext; say STARTTLS\"",
            "server got \"STARTTLS\" (encrypted: false)"
        ],
        "{out}"
    );
    assert!(
        lines[2].starts_with(
            "server refused: the client sent 15 bytes of plaintext after its STARTTLS command"
        ),
        "{out}"
    );
    assert!(!out.contains("TLS is on"), "{out}");
    assert!(!out.contains("MAIL"), "{out}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("client: connection closed"),
        "{out}"
    );
}
