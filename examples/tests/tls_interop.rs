//! TLS against peers nobody here wrote: `openssl s_client` / `s_server`,
//! Python's `ssl` module, and Twisted's TLS (`twisted[tls]`), each way,
//! with ALPN and mutual TLS.
//!
//! The peers come from the machine (`openssl`) and from the project's
//! virtualenv (`TORSION_PYTHON` or `.venv/bin/python`, which `just setup`
//! fills). When one is missing its tests are skipped, unless
//! `TORSION_REQUIRE_TWISTED=1` (set by `just test`) makes that a failure.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(dead_code)] // the port helpers serve other test binaries
mod common;
use common::{example, workspace_root};

#[path = "../tls/certs.rs"]
mod certs;

/// Longest any program may take (a guard against hanging, not a wait).
const LIMIT: Duration = Duration::from_secs(60);

fn required() -> bool {
    std::env::var("TORSION_REQUIRE_TWISTED").as_deref() == Ok("1")
}

fn skip(what: &str) -> Option<()> {
    assert!(
        !required(),
        "{what} is required (TORSION_REQUIRE_TWISTED=1)"
    );
    eprintln!("skipped: {what}");
    None
}

/// A Python with Twisted and its TLS extras.
fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("TORSION_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import twisted, OpenSSL, service_identity"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if ok {
        Some(candidate)
    } else {
        skip(&format!(
            "no Python with twisted[tls] at {} (run `just setup`)",
            candidate.display()
        ))
        .map(|()| candidate)
    }
}

fn openssl() -> Option<()> {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if ok {
        Some(())
    } else {
        skip("no openssl command (Debian package `openssl`)")
    }
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fresh throwaway certificates in a directory of their own.
fn certificates(name: &str) -> certs::Throwaway {
    let dir = std::env::temp_dir().join(format!("torsion-interop-{name}-{}", std::process::id()));
    certs::make(&dir).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts `command` with piped stdout, and reads its output on a thread
/// (in chunks as they come: a peer may print without a newline).
fn spawn_lines(mut command: Command) -> (Running, Option<ChildStdin>, mpsc::Receiver<String>) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            if tx
                .send(String::from_utf8_lossy(&buffer[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    (Running(child), stdin, rx)
}

/// Waits until a complete line of the output satisfies `want`, and
/// returns the complete lines seen (the rest stays for the next call).
fn wait_for(
    output: &mpsc::Receiver<String>,
    pending: &mut String,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    wait_for_maybe_partial(output, pending, false, want)
}

/// As [`wait_for`]; with `partial`, an incomplete last line counts too.
fn wait_for_maybe_partial(
    output: &mpsc::Receiver<String>,
    pending: &mut String,
    partial: bool,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let done = want(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
        // A partial line may be all there is (a peer that prints what it
        // received without a newline).
        if partial && !pending.is_empty() && want(pending) {
            seen.push(std::mem::take(pending));
            return seen;
        }
        match output.recv_timeout(LIMIT) {
            Ok(chunk) => pending.push_str(&chunk),
            Err(_) => panic!("did not see the expected output; saw {seen:#?} {pending:?}"),
        }
    }
}

/// Our `tls_echo_server` on a free port, with the given extra arguments.
fn our_server(files: &certs::Throwaway, extra: &[&str]) -> (Running, u16) {
    let mut command = Command::new(example("tls_echo_server"));
    command
        .args(["0", "--cert", s(&files.chain), "--key", s(&files.key)])
        .args(extra)
        .env("RUST_LOG", "warn");
    let (child, _stdin, lines) = spawn_lines(command);
    let seen = wait_for(&lines, &mut String::new(), |line| {
        line.starts_with("listening on port ")
    });
    let port = seen.last().unwrap()["listening on port ".len()..]
        .parse()
        .unwrap();
    (child, port)
}

fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(LIMIT).expect("finished in time").unwrap()
}

fn our_client(port: u16, files: &certs::Throwaway, extra: &[&str]) -> String {
    let mut command = Command::new(example("tls_echo_client"));
    command
        .args(["localhost", &port.to_string(), "--ca", s(&files.ca)])
        .args(extra)
        .env("RUST_LOG", "warn");
    let output = run(command);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn openssl_s_client_against_our_server_with_mutual_tls_and_alpn() {
    let Some(()) = openssl() else { return };
    let files = certificates("s_client");
    let (_server, port) = our_server(&files, &["--client-ca", s(&files.ca), "--alpn", "echo/1"]);
    let mut command = Command::new("openssl");
    command.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
        "-verify_return_error",
        "-CAfile",
        s(&files.ca),
        "-cert",
        s(&files.client_chain),
        "-key",
        s(&files.client_key),
        "-alpn",
        "echo/1",
    ]);
    let (_client, stdin, lines) = spawn_lines(command);
    let mut stdin = stdin.unwrap();
    let mut pending = String::new();
    let seen = wait_for(&lines, &mut pending, |line| {
        line.contains("Verify return code")
    });
    stdin.write_all(b"ping from openssl\n").unwrap();
    stdin.flush().unwrap();
    let mut all = seen;
    // (s_client may print it in the middle of a line of its own.)
    all.extend(wait_for(&lines, &mut pending, |line| {
        line.ends_with("ping from openssl")
    }));
    assert!(all.iter().any(|l| l == "ALPN protocol: echo/1"), "{all:#?}");
    assert!(
        all.iter().any(|l| l.contains("Verify return code: 0 (ok)")),
        "{all:#?}"
    );
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}

#[test]
fn our_client_against_openssl_s_server() {
    let Some(()) = openssl() else { return };
    let files = certificates("s_server");
    let mut command = Command::new("openssl");
    command.args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-cert",
        s(&files.chain),
        "-key",
        s(&files.key),
        "-alpn",
        "echo/1",
        "-Verify",
        "1",
        "-CAfile",
        s(&files.ca),
        "-verify_return_error",
    ]);
    let (_server, stdin, lines) = spawn_lines(command);
    let mut stdin = stdin.unwrap();
    let mut pending = String::new();
    let seen = wait_for(&lines, &mut pending, |line| line.starts_with("ACCEPT"));
    let port: u16 = seen
        .last()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let client = std::thread::spawn({
        let files = certs::Throwaway {
            ca: files.ca.clone(),
            chain: files.chain.clone(),
            key: files.key.clone(),
            client_chain: files.client_chain.clone(),
            client_key: files.client_key.clone(),
        };
        move || {
            our_client(
                port,
                &files,
                &[
                    "--alpn",
                    "echo/1",
                    "--cert",
                    s(&files.client_chain),
                    "--key",
                    s(&files.client_key),
                ],
            )
        }
    });
    // s_server prints what the client sent; then answer it.
    let seen = wait_for_maybe_partial(&lines, &mut pending, true, |line| {
        line.contains("Hello, world!")
    });
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();
    let out = client.join().unwrap();
    assert_eq!(out, "Server said: hello from openssl\n\nConnection lost.\n");
    assert!(
        seen.iter().any(|l| l == "ALPN protocols selected: echo/1"),
        "{seen:#?}"
    );
    // (s_server refuses a client without a certificate from the CA:
    // `-Verify 1 -verify_return_error`.)
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}

const PYTHON_SSL_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["echo/1"])
with socket.create_connection(("127.0.0.1", port)) as raw:
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"ping from python")
    got = b""
    while len(got) < 16:
        got += s.recv(100)
    print(got.decode(), s.selected_alpn_protocol(), s.version())
    s.unwrap()  # close_notify both ways
    print("clean close")
"#;

#[test]
fn python_ssl_client_against_our_server() {
    let Some(python) = python() else { return };
    let files = certificates("py_client");
    let (_server, port) = our_server(&files, &["--client-ca", s(&files.ca), "--alpn", "echo/1"]);
    let mut command = Command::new(python);
    command.args([
        "-c",
        PYTHON_SSL_CLIENT,
        &port.to_string(),
        s(&files.ca),
        s(&files.client_chain),
        s(&files.client_key),
    ]);
    let output = run(command);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ping from python echo/1 TLSv1.3\nclean close\n"
    );
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}

const PYTHON_SSL_SERVER: &str = r#"
import socket, ssl, sys
chain, key, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_cert_chain(chain, key)
ctx.set_alpn_protocols(["echo/1"])
listener = socket.create_server(("127.0.0.1", 0))
print("port", listener.getsockname()[1], flush=True)
raw, _ = listener.accept()
s = ctx.wrap_socket(raw, server_side=True)
data = s.recv(100)
s.sendall(data)
print("client", dict(x[0] for x in s.getpeercert()["subject"])["commonName"], s.selected_alpn_protocol(), flush=True)
s.recv(100)  # the client's close_notify
s.unwrap()
print("clean close", flush=True)
"#;

#[test]
fn our_client_against_a_python_ssl_server() {
    let Some(python) = python() else { return };
    let files = certificates("py_server");
    let mut command = Command::new(python);
    command.args([
        "-c",
        PYTHON_SSL_SERVER,
        s(&files.chain),
        s(&files.key),
        s(&files.ca),
    ]);
    let (_server, _stdin, lines) = spawn_lines(command);
    let mut pending = String::new();
    let seen = wait_for(&lines, &mut pending, |line| line.starts_with("port "));
    let port: u16 = seen.last().unwrap()[5..].parse().unwrap();
    let out = our_client(
        port,
        &files,
        &[
            "--alpn",
            "echo/1",
            "--cert",
            s(&files.client_chain),
            "--key",
            s(&files.client_key),
        ],
    );
    assert_eq!(out, "Server said: Hello, world!\nConnection lost.\n");
    let seen = wait_for(&lines, &mut pending, |line| line == "clean close");
    assert_eq!(
        seen,
        [
            "client Torsion example client (throwaway) echo/1",
            "clean close"
        ]
    );
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}

const TWISTED_CLIENT: &str = r#"
import sys
from twisted.internet import reactor, ssl, endpoints, protocol
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
authority = ssl.Certificate.loadPEM(open(ca).read())
client_cert = ssl.PrivateCertificate.loadPEM(open(cert).read() + open(key).read())
options = ssl.optionsForClientTLS("localhost", trustRoot=authority,
                                  clientCertificate=client_cert,
                                  acceptableProtocols=[b"echo/1"])

class Client(protocol.Protocol):
    got = b""
    def connectionMade(self):
        self.transport.write(b"ping from twisted")
    def dataReceived(self, data):
        self.got += data
        if len(self.got) >= 17:
            print(self.got.decode(), self.transport.negotiatedProtocol.decode(), flush=True)
            self.transport.loseConnection()
    def connectionLost(self, reason):
        print("lost:", reason.type.__name__, flush=True)
        reactor.stop()

endpoint = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
d = endpoint.connect(protocol.Factory.forProtocol(Client))
d.addErrback(lambda f: (print("failed:", f.getErrorMessage(), flush=True), reactor.stop()))
reactor.run()
"#;

#[test]
fn twisted_tls_client_against_our_server() {
    let Some(python) = python() else { return };
    let files = certificates("tx_client");
    let (_server, port) = our_server(&files, &["--client-ca", s(&files.ca), "--alpn", "echo/1"]);
    let mut command = Command::new(python);
    command.args([
        "-c",
        TWISTED_CLIENT,
        &port.to_string(),
        s(&files.ca),
        s(&files.client_chain),
        s(&files.client_key),
    ]);
    let output = run(command);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ping from twisted echo/1\nlost: ConnectionDone\n"
    );
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}

const TWISTED_SERVER: &str = r#"
import sys
from twisted.internet import reactor, ssl, protocol
chain, key, ca = sys.argv[1], sys.argv[2], sys.argv[3]
me = ssl.PrivateCertificate.loadPEM(open(chain).read() + open(key).read())
authority = ssl.Certificate.loadPEM(open(ca).read())
options = ssl.CertificateOptions(privateKey=me.privateKey.original,
                                 certificate=me.original,
                                 trustRoot=authority,
                                 acceptableProtocols=[b"echo/1"])

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)
        peer = self.transport.getPeerCertificate().get_subject().commonName
        print("client", peer, self.transport.negotiatedProtocol.decode(), flush=True)
    def connectionLost(self, reason):
        print("lost:", reason.type.__name__, flush=True)
        reactor.stop()

port = reactor.listenSSL(0, protocol.Factory.forProtocol(Echo), options, interface="127.0.0.1")
print("port", port.getHost().port, flush=True)
reactor.run()
"#;

#[test]
fn our_client_against_a_twisted_tls_server() {
    let Some(python) = python() else { return };
    let files = certificates("tx_server");
    let mut command = Command::new(python);
    command.args([
        "-c",
        TWISTED_SERVER,
        s(&files.chain),
        s(&files.key),
        s(&files.ca),
    ]);
    let (_server, _stdin, lines) = spawn_lines(command);
    let mut pending = String::new();
    let seen = wait_for(&lines, &mut pending, |line| line.starts_with("port "));
    let port: u16 = seen.last().unwrap()[5..].parse().unwrap();
    let out = our_client(
        port,
        &files,
        &[
            "--alpn",
            "echo/1",
            "--cert",
            s(&files.client_chain),
            "--key",
            s(&files.client_key),
        ],
    );
    assert_eq!(out, "Server said: Hello, world!\nConnection lost.\n");
    let seen = wait_for(&lines, &mut pending, |line| line.starts_with("lost:"));
    assert_eq!(
        seen,
        [
            "client Torsion example client (throwaway) echo/1",
            "lost: ConnectionDone"
        ]
    );
    let _ = std::fs::remove_dir_all(files.ca.parent().unwrap());
}
