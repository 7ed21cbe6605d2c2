//! Helpers shared by the tests that run the example programs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// An example program, freshly built: the first call per test run builds
/// the examples, so a test never runs a stale program (a filtered
/// `cargo test` does not rebuild examples by itself).
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "torsion-examples", "--examples"])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the examples failed");
    });
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Kills the server when dropped, so a failing test leaves no server
/// behind.
#[allow(dead_code)] // each test binary uses what it needs
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Which output a server reports its port on.
#[allow(dead_code)] // each test binary uses what it needs
pub enum Reports {
    /// On standard output.
    Stdout,
    /// On standard error (where the examples log).
    Stderr,
}

/// Starts `command` and returns it with the port it prints after `marker`
/// (as in "listening host=tcp:0.0.0.0:PORT"), waiting at most a minute.
/// The rest of that output is drained on a thread, so the server never
/// blocks on a full pipe.
pub fn start_logging_port(command: Command, marker: &str, reports: Reports) -> (Child, u16) {
    let (child, port, _rest) = start_logging(command, marker, reports);
    (child, port)
}

/// As [`start_logging_port`], and also returns the lines that follow the
/// marker's, as they come; the channel closes when the server's output
/// does (it exited).
pub fn start_logging(
    mut command: Command,
    marker: &str,
    reports: Reports,
) -> (Child, u16, mpsc::Receiver<String>) {
    command.stdin(Stdio::null());
    match reports {
        Reports::Stdout => command.stdout(Stdio::piped()).stderr(Stdio::inherit()),
        Reports::Stderr => command.stderr(Stdio::piped()).stdout(Stdio::null()),
    };
    let mut child = command.spawn().expect("server starts");
    let stream: Box<dyn std::io::Read + Send> = match reports {
        Reports::Stdout => Box::new(child.stdout.take().unwrap()),
        Reports::Stderr => Box::new(child.stderr.take().unwrap()),
    };
    let (tx, rx) = mpsc::channel();
    let (rest_tx, rest) = mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stream).lines();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(at) = line.find(&marker) {
                let digits: String = line[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let _ = tx.send(digits.parse::<u16>().ok());
                break;
            }
        }
        // Keep draining even if nobody reads them.
        for line in lines {
            let _ = rest_tx.send(line.unwrap_or_default());
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Some(port)) => (child, port, rest),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not report its port");
        }
    }
}
