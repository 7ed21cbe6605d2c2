//! A reset reaches the protocol at once, even while it reads nothing and
//! has nothing queued, and the loop stays quiet meanwhile (issue 11, §1).

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torsion_protocol::socket2::SockRef;
use torsion_protocol::testing::{guarded_reactor, DescriptorGuard};
use torsion_protocol::{
    Address, CloseReason, Factory, ListenOptions, Protocol, ReactorTcp, TransportRef,
};

/// Pauses reading as soon as it connects and never writes; records how
/// the connection ended.
struct Quiet {
    lost: Rc<RefCell<Option<String>>>,
}

impl Protocol for Quiet {
    fn connection_made(&mut self, transport: &TransportRef) {
        transport.pause_reading();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {
        unreachable!("reading is paused");
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        let kind = reason.error().map(io::Error::kind);
        *self.lost.borrow_mut() = Some(format!("{kind:?}: {reason}"));
    }
}

struct Build(Rc<RefCell<Option<String>>>);

impl Factory for Build {
    type Protocol = Quiet;
    fn build_protocol(&self, _peer: &Address) -> Option<Quiet> {
        Some(Quiet {
            lost: self.0.clone(),
        })
    }
}

/// Closes `stream` with a reset (`SO_LINGER` 0) instead of a FIN.
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

#[test]
fn a_reset_on_a_paused_idle_connection_is_reported_at_once_and_the_loop_stays_quiet() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let lost = Rc::new(RefCell::new(None));
    let port = reactor
        .listen_tcp_with(
            0,
            Build(lost.clone()),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let turns = Arc::new(AtomicU64::new(u64::MAX));
    let handle = reactor.handle();
    let t = turns.clone();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"a few bytes").unwrap();
        reset(stream);
        // Reset sent: count the server's loop turns for 100 ms, then stop.
        handle
            .call_from_thread(move |reactor| {
                let start = reactor.turn_count();
                reactor.call_later(Duration::from_millis(100), move |reactor| {
                    t.store(reactor.turn_count() - start, Ordering::Relaxed);
                    reactor.stop().unwrap();
                });
            })
            .unwrap();
    });
    reactor.run().unwrap();
    client.join().unwrap();
    let lost = lost.borrow().clone().expect("connection_lost was heard");
    assert!(
        lost.starts_with("Some(ConnectionReset): connection was lost: "),
        "the protocol must hear the reset as its reason, not: {lost}"
    );
    let turns = turns.load(Ordering::Relaxed);
    assert!(turns <= 5, "{turns} loop turns in 100 ms");
}

/// Reads; its `connection_made` blocks the loop until the client has
/// sent its last words and reset the connection, so both are waiting in
/// the kernel when the loop first looks (as on any busy server).
struct LastWords {
    log: Rc<RefCell<Vec<String>>>,
    go: Option<std::sync::mpsc::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Protocol for LastWords {
    fn connection_made(&mut self, _transport: &TransportRef) {
        self.go.take().unwrap().send(()).unwrap();
        self.done.take().unwrap().recv().unwrap();
    }
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(String::from_utf8_lossy(data).into_owned());
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        let kind = reason.error().map(io::Error::kind);
        self.log.borrow_mut().push(format!("lost: {kind:?}"));
    }
}

struct LastWordsFactory {
    log: Rc<RefCell<Vec<String>>>,
    channels: RefCell<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Factory for LastWordsFactory {
    type Protocol = LastWords;
    fn build_protocol(&self, _peer: &Address) -> Option<LastWords> {
        let (go, done) = self.channels.borrow_mut().take()?;
        Some(LastWords {
            log: self.log.clone(),
            go: Some(go),
            done: Some(done),
        })
    }
}

#[test]
fn bytes_sent_before_a_reset_reach_a_reading_protocol_first() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (go, wait) = std::sync::mpsc::channel();
    let (finished, done) = std::sync::mpsc::channel();
    let port = reactor
        .listen_tcp_with(
            0,
            LastWordsFactory {
                log: log.clone(),
                channels: RefCell::new(Some((go, done))),
            },
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        wait.recv().unwrap();
        stream.write_all(b"QUIT").unwrap();
        reset(stream);
        finished.send(()).unwrap();
    });
    let stop = log.clone();
    let check = torsion_protocol::LoopingCall::new(&reactor, move |call| {
        if stop.borrow().iter().any(|entry| entry.starts_with("lost")) {
            call.reactor().unwrap().stop().unwrap();
        }
    });
    check.start(Duration::from_millis(1), false).unwrap();
    reactor.run().unwrap();
    client.join().unwrap();
    // Before: the error was taken first and the connection closed without
    // reading, so "QUIT" was lost (Twisted and asyncio deliver it).
    assert_eq!(
        *log.borrow(),
        ["QUIT", "lost: Some(ConnectionReset)"],
        "the data before the reset comes first"
    );
}
