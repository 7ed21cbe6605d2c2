//! The process and standard I/O examples: `stdio_echo` over a pipe, a
//! regular file, `/dev/null` and a terminal; `process` running a command.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[allow(dead_code)] // each test binary uses what it needs
mod common;
use common::example;

#[test]
fn stdio_echo_over_a_pipe_leaves_the_shared_pipe_blocking() {
    let mut child = Command::new(example("stdio_echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut write = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(write, "first").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    // The child is running and reading: the description of its stdin
    // (shared with whoever else holds the pipe) is still blocking.
    let flags = description_flags(child.id(), 0);
    assert_eq!(flags & O_NONBLOCK, 0, "stdin was made non-blocking");
    writeln!(write, "second").unwrap();
    drop(write);
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(lines.next().is_none());
    assert!(child.wait().unwrap().success());
}

/// The status flags of the description behind descriptor `fd` of process
/// `pid` (from /proc: the examples crate has no libc).
fn description_flags(pid: u32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap()
}

/// Linux's `O_NONBLOCK`.
const O_NONBLOCK: u32 = 0o4000;

fn echo_with_stdin(stdin: Stdio) -> String {
    let output = Command::new(example("stdio_echo"))
        .stdin(stdin)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn stdio_echo_reads_a_regular_file_to_its_end() {
    let path = std::env::temp_dir().join(format!("torsion-stdio-{}", std::process::id()));
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, &text).unwrap();
    let out = echo_with_stdin(File::open(&path).unwrap().into());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out, text);
}

#[test]
fn stdio_echo_with_dev_null_ends_at_once() {
    assert_eq!(echo_with_stdin(Stdio::null()), "");
}

#[test]
fn process_example_prints_output_and_how_it_ended() {
    let output = Command::new(example("process"))
        .args(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let out = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"out: hi"), "{out}");
    assert!(lines.contains(&"err: oops"), "{out}");
    assert_eq!(
        &lines[lines.len() - 2..],
        [
            "exited: process exited with status 3",
            "ended: process exited with status 3"
        ]
    );
}

#[test]
fn process_example_passes_stdin_on() {
    let mut child = Command::new(example("process"))
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        out,
        "out: one\nout: two\nexited: process exited with status 0\nended: process exited with status 0\n"
    );
}

#[test]
fn stdio_echo_on_a_terminal_and_use_pty() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;
    use torsion_protocol::testing::guarded_reactor;
    use torsion_protocol::{
        ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef, ReactorProcess,
        Transport, WeakReactor,
    };

    /// Types a line, then Ctrl-D once the echo of the line came back.
    struct Typist {
        out: Rc<RefCell<Vec<u8>>>,
        ended: Rc<RefCell<Option<ProcessReason>>>,
        reactor: WeakReactor,
        sent_eof: bool,
    }
    impl ProcessProtocol for Typist {
        fn connection_made(&mut self, transport: &ProcessTransportRef) {
            transport.write(b"hello\n");
        }
        fn child_data_received(&mut self, transport: &ProcessTransportRef, fd: i32, data: &[u8]) {
            assert_eq!(fd, 1, "a terminal's output arrives as descriptor 1");
            self.out.borrow_mut().extend_from_slice(data);
            let text = String::from_utf8_lossy(&self.out.borrow()).into_owned();
            // The terminal's echo of what we typed, then the program's.
            if !self.sent_eof && text.matches("hello").count() == 2 {
                self.sent_eof = true;
                transport.write(b"\x04");
            }
        }
        fn process_ended(&mut self, reason: ProcessReason) {
            *self.ended.borrow_mut() = Some(reason);
            self.reactor.upgrade().unwrap().stop().unwrap();
        }
    }
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let out = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(RefCell::new(None));
    reactor
        .spawn_process(
            Typist {
                out: out.clone(),
                ended: ended.clone(),
                reactor: reactor.downgrade(),
                sent_eof: false,
            },
            example("stdio_echo"),
            [] as [&str; 0],
            ProcessOptions::new().use_pty(true),
        )
        .unwrap();
    reactor.run().unwrap();
    assert_eq!(*ended.borrow(), Some(ProcessReason::Done));
    let text = String::from_utf8_lossy(&out.borrow()).into_owned();
    assert_eq!(text.matches("hello").count(), 2, "{text:?}");
}
