//! Connections are watched edge-triggered on Linux: the kernel reports a
//! socket's readiness when it arises, not on every turn while it lasts.
//! A read that stops short usually means the socket is drained, but not
//! when the kernel stopped it before something else: the peer's end of
//! stream, or an urgent byte. These tests queue such input before the
//! server first looks, and check that nothing behind the short read is
//! stranded.
#![cfg(target_os = "linux")]

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::socket2::SockRef;
use torsion_protocol::{CloseReason, Protocol, Reactor, TransportRef};

/// What a server connection heard, in order.
type Log = Rc<RefCell<Vec<String>>>;

struct Record(Log);

impl Protocol for Record {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0
            .borrow_mut()
            .push(String::from_utf8_lossy(data).into_owned());
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.0.borrow_mut().push(format!("lost: {reason}"));
    }
}

/// Turns the loop until `done` says so, each turn waiting at most 100 ms
/// for an event; false if that took more than 50 turns.
fn turn_until(reactor: &Reactor, done: impl Fn() -> bool) -> bool {
    for _ in 0..50 {
        if done() {
            return true;
        }
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    done()
}

fn received(log: &Log) -> String {
    log.borrow()
        .iter()
        .filter(|entry| !entry.starts_with("lost"))
        .map(String::as_str)
        .collect()
}

#[test]
fn a_request_and_the_end_of_stream_behind_it_are_both_read() {
    let (_watchdog, reactor) = support::reactor();
    let log: Log = Rc::default();
    let record = log.clone();
    let addr = support::listen(&reactor, move || Record(record.clone()));
    // The request and the end of stream are both queued before the server
    // accepts: one readiness event tells of both, and the read of the
    // request stops short before the end.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let lost = log.clone();
    assert!(
        turn_until(&reactor, || lost
            .borrow()
            .iter()
            .any(|entry| entry.starts_with("lost"))),
        "the end of stream behind the request was never read: {:?}",
        log.borrow()
    );
    assert_eq!(received(&log), "GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn bytes_behind_an_urgent_byte_are_not_stranded() {
    let (_watchdog, reactor) = support::reactor();
    let log: Log = Rc::default();
    let record = log.clone();
    let addr = support::listen(&reactor, move || Record(record.clone()));
    // "abc", an urgent byte, "def", all queued before the server reads. A
    // TCP read stops short at the urgent mark; the urgent byte itself is
    // out of band (not in the stream) and the read after it goes on.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"abc").unwrap();
    SockRef::from(&client).send_out_of_band(b"!").unwrap();
    client.write_all(b"def").unwrap();
    let seen = log.clone();
    assert!(
        turn_until(&reactor, || received(&seen) == "abcdef"),
        "bytes behind the urgent byte were stranded: {:?}",
        log.borrow()
    );
    drop(client);
    let lost = log.clone();
    assert!(turn_until(&reactor, || lost
        .borrow()
        .iter()
        .any(|entry| entry.starts_with("lost"))));
}
