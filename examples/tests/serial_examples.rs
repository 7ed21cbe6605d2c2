//! The serial example, run on a pseudo-terminal made by the test (which
//! plays the device on the master end).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use torsion_protocol::testing::{PseudoTerminal, XorShift};

#[allow(dead_code)] // each test binary uses what it needs
mod common;
use common::example;

#[test]
fn serial_echo_on_a_pty_echoes_then_exits_on_hang_up() {
    let mut pty = PseudoTerminal::open().unwrap();
    let mut child = Command::new(example("serial_echo"))
        .arg(pty.path())
        .args(["--baud", "115200"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(
        ready,
        format!(
            "serial_echo: open on {} at 115200 baud\n",
            pty.path().display()
        )
    );
    pty.close_slave();

    // Raw mode: every byte value comes back unchanged.
    let data = XorShift::new(3).bytes(100_000);
    let mut master = pty.into_master();
    let mut reader = master.try_clone().unwrap();
    let expected = data.len();
    let read = std::thread::spawn(move || {
        let mut got = vec![0; expected];
        reader.read_exact(&mut got).unwrap();
        got
    });
    master.write_all(&data).unwrap();
    assert!(read.join().unwrap() == data, "the echo differs");

    // The device goes away: the program says so and exits with 1.
    drop(master);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hung up"), "{stderr}");
}

#[test]
fn serial_echo_takes_a_bare_rate_and_refuses_bad_arguments() {
    let pty = PseudoTerminal::open().unwrap();
    let mut child = Command::new(example("serial_echo"))
        .arg(pty.path())
        .arg("57600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.ends_with("at 57600 baud\n"), "{ready}");
    drop(pty);
    assert_eq!(child.wait().unwrap().code(), Some(1));

    let output = Command::new(example("serial_echo"))
        .args(["/dev/null", "--baud", "fast"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    // 0 baud is no speed (on a serial line B0 hangs up): a usage error.
    let output = Command::new(example("serial_echo"))
        .args(["/dev/null", "--baud", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let output = Command::new(example("serial_echo"))
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a terminal"), "{stderr}");
}
