//! The `watch` example prints filesystem events as `inotifywait -m`
//! does, for a temporary directory it watches, and stops on SIGINT.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(dead_code)] // shared helpers; this test needs only `example`
mod common;
use common::example;

#[test]
fn watch_prints_events_like_inotifywait() {
    let dir = std::env::temp_dir().join(format!("torsion-watch-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(example("watch"))
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_tx = lines_tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(format!("stderr: {line}"));
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the example prints within a minute")
    };
    while next() != "stderr: watching" {}

    std::fs::write(dir.join("a"), b"hello").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/b"), b"").unwrap();
    std::fs::remove_file(dir.join("a")).unwrap();
    let root = format!("{}/", dir.display());
    let sub = format!("{}/sub/", dir.display());
    let mut seen = Vec::new();
    let last = format!("{root} DELETE a");
    loop {
        let line = next();
        let done = line == last;
        seen.push(line);
        if done {
            break;
        }
    }
    for expected in [
        format!("{root} CREATE a"),
        format!("{root} MODIFY a"),
        format!("{root} CLOSE_WRITE a"),
        format!("{root} CREATE,ISDIR sub"),
        format!("{sub} CREATE b"),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:#?}");
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
