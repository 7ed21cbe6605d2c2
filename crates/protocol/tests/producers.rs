//! Producers on socket transports, against Twisted's contract: a producer
//! that panics costs only its own connection, `lose_connection` waits for
//! a registered producer, every close stops the producer before the
//! protocol hears `connection_lost`, and a pull producer is asked again
//! whenever what it wrote has gone out.

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::{
    Address, CloseReason, Factory, ListenOptions, Producer, Protocol, Reactor, ReactorTcp,
    TransportRef,
};

type Log = Rc<RefCell<Vec<String>>>;

fn reactor() -> Reactor {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    reactor.call_later(Duration::from_secs(30), |_| panic!("test timed out"));
    reactor
}

/// A factory that builds protocols from a closure.
struct Build<P, F: Fn() -> P>(F);

impl<P: Protocol, F: Fn() -> P + 'static> Factory for Build<P, F> {
    type Protocol = P;
    fn build_protocol(&self, _peer: &Address) -> Option<P> {
        Some((self.0)())
    }
}

fn listen<P: Protocol>(reactor: &Reactor, build: impl Fn() -> P + 'static) -> SocketAddr {
    let port = reactor
        .listen_tcp_with(
            0,
            Build(build),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    port.get_host().socket_addr().unwrap()
}

/// Reads until end of stream or an error (a reset counts as the end).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Which producer callback panics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Panics {
    Resume,
    Pause,
    Stop,
}

/// A streaming producer that panics in one of its callbacks.
struct Faulty {
    panics: Panics,
    log: Log,
}

impl Producer for Faulty {
    fn pause_producing(&self) {
        self.log.borrow_mut().push("pause".into());
        if self.panics == Panics::Pause {
            panic!("pause_producing failed");
        }
    }
    fn resume_producing(&self) {
        self.log.borrow_mut().push("resume".into());
        if self.panics == Panics::Resume {
            panic!("resume_producing failed");
        }
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push("stop".into());
        if self.panics == Panics::Stop {
            panic!("stop_producing failed");
        }
    }
}

/// The first connection registers a faulty producer and writes more than
/// the kernel takes at once (the client reads nothing until told to), so
/// the producer is paused, then resumed from the transport's flush as the
/// client reads. Later connections are greeted and closed, to show the
/// server goes on serving.
struct Sender {
    panics: Panics,
    log: Log,
    count: Rc<Cell<usize>>,
    /// Tells the client to start reading.
    go: Option<mpsc::Sender<()>>,
}

/// More than the kernel's buffers take while the peer does not read.
const LARGE: usize = 32 << 20;

impl Protocol for Sender {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.count.set(self.count.get() + 1);
        if self.count.get() > 1 {
            transport.write(b"still serving");
            transport.lose_connection();
            return;
        }
        transport.set_write_buffer_limits(1, 0);
        let producer = Rc::new(Faulty {
            panics: self.panics,
            log: self.log.clone(),
        });
        transport.register_producer(producer, true).unwrap();
        let go = self.go.take().unwrap();
        if self.panics == Panics::Pause {
            // Written from a timer, outside every protocol callback: the
            // pause runs inside this write.
            let t = transport.clone();
            let reactor = transport.reactor().unwrap();
            reactor.call_later(Duration::ZERO, move |_| {
                t.write(&vec![b'x'; LARGE]);
                go.send(()).unwrap();
            });
        } else {
            transport.write(&vec![b'x'; LARGE]);
            go.send(()).unwrap();
        }
        if self.panics == Panics::Stop {
            // The producer is stopped as the connection closes.
            transport.abort_connection();
        }
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        if self.count.get() == 1 {
            self.log.borrow_mut().push(format!("lost: {reason}"));
        }
    }
}

/// Runs a server whose first connection's producer panics, then checks
/// that the connection (only) was lost and the server served another.
fn producer_panic(panics: Panics) -> Vec<String> {
    let _fds = DescriptorGuard::new();
    let reactor = reactor();
    let log: Log = Rc::default();
    let count = Rc::new(Cell::new(0));
    let (l, c) = (log.clone(), count.clone());
    let (go, wait) = mpsc::channel();
    let go = RefCell::new(Some(go));
    let addr = listen(&reactor, move || Sender {
        panics,
        log: l.clone(),
        count: c.clone(),
        go: go.borrow_mut().take(),
    });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut first = TcpStream::connect(addr).unwrap();
        wait.recv().unwrap();
        read_all(&mut first);
        let mut second = TcpStream::connect(addr).unwrap();
        let greeting = read_all(&mut second);
        handle.stop().unwrap();
        greeting
    });
    let result = reactor.run();
    let greeting = client.join().unwrap();
    result.expect("a producer's panic must not escape run()");
    assert_eq!(greeting, b"still serving");
    assert_eq!(count.get(), 2);
    let log = log.borrow().clone();
    log
}

#[test]
fn a_panic_in_resume_producing_during_a_flush_loses_only_that_connection() {
    let log = producer_panic(Panics::Resume);
    assert_eq!(
        log,
        [
            "pause",
            "resume",
            "stop",
            "lost: connection was closed because its producer panicked in resume_producing: \
             resume_producing failed",
        ]
    );
}

#[test]
fn a_panic_in_pause_producing_during_a_write_loses_only_that_connection() {
    let log = producer_panic(Panics::Pause);
    assert_eq!(
        log,
        [
            "pause",
            "stop",
            "lost: connection was closed because its producer panicked in pause_producing: \
             pause_producing failed",
        ]
    );
}

#[test]
fn a_panic_in_stop_producing_still_closes_and_reports_the_connection() {
    // The connection was closing anyway: it keeps its reason, and the
    // panic is logged.
    let log = producer_panic(Panics::Stop);
    assert_eq!(
        log,
        ["pause", "stop", "lost: connection was aborted by this side"]
    );
}
