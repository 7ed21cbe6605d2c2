//! Producers on socket transports, against Twisted's contract: a producer
//! that panics costs only its own connection, `lose_connection` waits for
//! a registered producer, every close stops the producer before the
//! protocol hears `connection_lost`, and a pull producer is asked again
//! whenever what it wrote has gone out.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use torsion_protocol::socket2::SockRef;
use torsion_protocol::testing::DescriptorGuard;
use torsion_protocol::{CloseReason, LoopingCall, Producer, Protocol, Reactor, TransportRef};

mod support;
use support::{listen, reactor};

type Log = Rc<RefCell<Vec<String>>>;

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

/// Closes `stream` with a reset (`SO_LINGER` 0) instead of a FIN.
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
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
    let (_watchdog, reactor) = reactor();
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

/// A pull producer that writes `left` numbered pieces, one each time it is
/// asked, then unregisters itself.
struct Pieces {
    transport: TransportRef,
    left: Cell<usize>,
    log: Log,
}

impl Producer for Pieces {
    fn resume_producing(&self) {
        match self.left.get() {
            0 => {
                self.log.borrow_mut().push("unregister".into());
                self.transport.unregister_producer();
                self.transport.write(b"ignored: written after the close");
            }
            n => {
                self.left.set(n - 1);
                self.transport.write(format!("piece {n};").as_bytes());
            }
        }
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push("stop".into());
    }
}

/// Registers a pull producer and asks for the connection to close at
/// once; the connection must stay open until the producer is done.
struct LoseEarly {
    log: Log,
    reactor: Option<Reactor>,
}

impl Protocol for LoseEarly {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.reactor = transport.reactor();
        let pieces = Rc::new(Pieces {
            transport: transport.clone(),
            left: Cell::new(3),
            log: self.log.clone(),
        });
        transport.register_producer(pieces, false).unwrap();
        transport.lose_connection();
        self.log
            .borrow_mut()
            .push(format!("closing: {}", transport.is_closing()));
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn lose_connection_waits_for_a_pull_producer_to_unregister() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || LoseEarly {
        log: l.clone(),
        reactor: None,
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut all = String::new();
        stream.read_to_string(&mut all).unwrap();
        all
    });
    reactor.run().unwrap();
    assert_eq!(client.join().unwrap(), "piece 3;piece 2;piece 1;");
    assert_eq!(
        *log.borrow(),
        ["closing: true", "unregister", "lost: Closed"]
    );
}

/// A streaming producer that only records what it is told.
struct Recorder {
    log: Log,
}

impl Producer for Recorder {
    fn pause_producing(&self) {
        self.log.borrow_mut().push("pause".into());
    }
    fn resume_producing(&self) {
        self.log.borrow_mut().push("resume".into());
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push("stop".into());
    }
}

/// A streaming producer that stands for another connection (a proxy's
/// upstream): it writes nothing, and nobody unregisters it.
struct Idle;

impl Producer for Idle {
    fn pause_producing(&self) {}
    fn resume_producing(&self) {}
    fn stop_producing(&self) {}
}

/// The proxy idiom (Twisted's port-forwarding): its upstream is the
/// registered producer; when the upstream goes, it loses this connection
/// without unregistering anything.
struct Forwarder {
    log: Log,
    reactor: Option<Reactor>,
}

impl Protocol for Forwarder {
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_made(&mut self, transport: &TransportRef) {
        let reactor = transport.reactor().unwrap();
        transport.register_producer(Rc::new(Idle), true).unwrap();
        transport.write(b"hello");
        transport.lose_connection();
        // Fires only if the close never comes.
        let log = self.log.clone();
        reactor.call_later(Duration::from_secs(10), move |reactor| {
            log.borrow_mut().push("still open after 10 s".into());
            reactor.stop().unwrap();
        });
        self.reactor = Some(reactor);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn lose_connection_with_an_unpaused_streaming_producer_closes_once_drained() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || Forwarder {
        log: l.clone(),
        reactor: None,
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut all = String::new();
        stream.read_to_string(&mut all).unwrap();
        all
    });
    reactor.run().unwrap();
    // Before: the connection waited for an unregister that never came.
    assert_eq!(client.join().unwrap(), "hello");
    assert_eq!(*log.borrow(), ["lost: Closed"]);
}

/// A streaming producer that writes a tail once it is resumed.
struct Tail {
    transport: TransportRef,
    log: Log,
}

impl Producer for Tail {
    fn pause_producing(&self) {
        self.log.borrow_mut().push("pause".into());
    }
    fn resume_producing(&self) {
        self.log.borrow_mut().push("resume".into());
        self.transport.write(b"tail");
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push("stop".into());
    }
}

/// Fills the buffer past the high watermark while the peer reads nothing
/// (pausing its streaming producer), loses the connection, then tells
/// the peer to read.
struct FillThenLose {
    log: Log,
    reactor: Option<Reactor>,
    go: Option<mpsc::Sender<()>>,
}

/// More than the kernel's buffers on both sides hold, so most of it
/// waits in the transport's queue.
const FILL: usize = 16 << 20;

impl Protocol for FillThenLose {
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_made(&mut self, transport: &TransportRef) {
        self.reactor = transport.reactor();
        let tail = Rc::new(Tail {
            transport: transport.clone(),
            log: self.log.clone(),
        });
        transport.register_producer(tail, true).unwrap();
        transport.write(&vec![b'x'; FILL]);
        transport.lose_connection();
        self.go.take().unwrap().send(()).unwrap();
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn a_paused_streaming_producer_is_resumed_before_the_close() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let (go, read) = mpsc::channel();
    let go = RefCell::new(Some(go));
    let addr = listen(&reactor, move || FillThenLose {
        log: l.clone(),
        reactor: None,
        go: go.borrow_mut().take(),
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        read.recv().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    reactor.run().unwrap();
    let all = client.join().unwrap();
    assert_eq!(all.len(), FILL + 4);
    assert!(all.ends_with(b"tail"));
    assert_eq!(*log.borrow(), ["pause", "resume", "stop", "lost: Closed"]);
}

/// Registers an idle streaming producer and queues more than the peer
/// reads; once the peer's end of stream has made the connection close
/// (draining), it loses the connection too, and tells the client to read.
struct LoseAfterPeerEnd {
    log: Log,
    reactor: Option<Reactor>,
    go: Option<mpsc::Sender<()>>,
}

const BIG: usize = 16 << 20;

impl Protocol for LoseAfterPeerEnd {
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_made(&mut self, transport: &TransportRef) {
        let reactor = transport.reactor().unwrap();
        transport.register_producer(Rc::new(Idle), true).unwrap();
        transport.write(&vec![b'x'; BIG]);
        let t = transport.clone();
        let go = self.go.take().unwrap();
        let poll = LoopingCall::new(&reactor, move |call| {
            if t.is_closing() {
                t.lose_connection();
                go.send(()).unwrap();
                call.stop().unwrap();
            }
        });
        poll.start(Duration::from_millis(1), false).unwrap();
        self.reactor = Some(reactor);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason:?}"));
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn lose_connection_after_the_peers_end_of_stream_still_closes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let (go, read) = mpsc::channel();
    let go = RefCell::new(Some(go));
    let addr = listen(&reactor, move || LoseAfterPeerEnd {
        log: l.clone(),
        reactor: None,
        go: go.borrow_mut().take(),
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        read.recv().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all.len()
    });
    reactor.run().unwrap();
    // Before: lose_connection turned the close the peer's end of stream
    // had started into a wait for an unregister that never came.
    assert_eq!(client.join().unwrap(), BIG);
    assert_eq!(log.borrow().len(), 1);
}

/// Answers a request with a pull producer of many small pieces, then
/// closes.
struct ManyPieces {
    transport: TransportRef,
    left: Cell<usize>,
}

impl Producer for ManyPieces {
    fn resume_producing(&self) {
        match self.left.get() {
            0 => {
                self.transport.unregister_producer();
                self.transport.lose_connection();
            }
            n => {
                self.left.set(n - 1);
                self.transport.write(&[b'p'; 10]);
            }
        }
    }
}

struct OnRequest {
    reactor: Option<Reactor>,
}

const PIECES: usize = 2000;

impl Protocol for OnRequest {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.reactor = transport.reactor();
    }
    fn data_received(&mut self, transport: &TransportRef, _data: &[u8]) {
        let pieces = Rc::new(ManyPieces {
            transport: transport.clone(),
            left: Cell::new(PIECES),
        });
        transport.register_producer(pieces, false).unwrap();
    }
    fn connection_lost(&mut self, _reason: &CloseReason) {
        self.reactor.take().unwrap().stop().unwrap();
    }
}

#[test]
fn a_request_followed_by_the_peers_end_of_stream_gets_the_whole_response() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let addr = listen(&reactor, || OnRequest { reactor: None });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all.len()
    });
    reactor.run().unwrap();
    // Before: the peer's end of stream closed the connection as soon as
    // one piece went out whole, and the client saw a clean, short reply.
    assert_eq!(client.join().unwrap(), PIECES * 10);
}

/// How the connection ends in [`close_path`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    /// `abort_connection`.
    Abort,
    /// `lose_connection` with a pull producer still registered (which
    /// holds the connection open), then `abort_connection`.
    LoseThenAbort,
    /// The peer ends its stream.
    PeerCloses,
    /// The peer resets the connection.
    PeerResets,
    /// The reactor shuts down.
    Shutdown,
}

/// Greets, registers a producer (streaming, but a pull producer for
/// [`Ending::LoseThenAbort`]), and lets the connection end as [`Ending`]
/// says.
struct Ended {
    ending: Ending,
    log: Log,
    reactor: Option<Reactor>,
}

impl Protocol for Ended {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.reactor = transport.reactor();
        transport.write(b"hi");
        let recorder = Rc::new(Recorder {
            log: self.log.clone(),
        });
        let streaming = self.ending != Ending::LoseThenAbort;
        transport.register_producer(recorder, streaming).unwrap();
        match self.ending {
            Ending::Abort => transport.abort_connection(),
            Ending::LoseThenAbort => {
                transport.lose_connection();
                let t = transport.clone();
                self.reactor
                    .as_ref()
                    .unwrap()
                    .call_later(Duration::from_millis(20), move |_| t.abort_connection());
            }
            Ending::PeerCloses | Ending::PeerResets | Ending::Shutdown => {}
        }
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {
        if self.ending == Ending::Shutdown {
            self.reactor.as_ref().unwrap().stop().unwrap();
        }
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.borrow_mut().push(format!("lost: {reason}"));
        if self.ending != Ending::Shutdown {
            self.reactor.take().unwrap().stop().unwrap();
        }
    }
}

fn close_path(ending: Ending) -> Vec<String> {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let log: Log = Rc::default();
    let l = log.clone();
    let addr = listen(&reactor, move || Ended {
        ending,
        log: l.clone(),
        reactor: None,
    });
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut greeting = [0u8; 2];
        stream.read_exact(&mut greeting).unwrap();
        match ending {
            Ending::PeerCloses => stream.shutdown(Shutdown::Write).unwrap(),
            Ending::PeerResets => {
                reset(stream);
                return;
            }
            Ending::Shutdown => stream.write_all(b"stop").unwrap(),
            Ending::Abort | Ending::LoseThenAbort => {}
        }
        read_all(&mut stream);
    });
    reactor.run().unwrap();
    client.join().unwrap();
    // Only the order of the ends matters here.
    let log = log.borrow().clone();
    log.into_iter()
        .filter(|entry| entry != "resume" && entry != "pause")
        .collect()
}

#[test]
fn every_close_stops_the_producer_before_the_protocol_hears_connection_lost() {
    let cases = [
        (Ending::Abort, "connection was aborted by this side"),
        (Ending::LoseThenAbort, "connection was aborted by this side"),
        (
            Ending::PeerCloses,
            "connection was closed cleanly by the peer",
        ),
        (
            Ending::Shutdown,
            "connection was closed as the reactor shut down",
        ),
    ];
    for (ending, reason) in cases {
        assert_eq!(
            close_path(ending),
            ["stop".to_string(), format!("lost: {reason}")],
            "{ending:?}"
        );
    }
    let reset = close_path(Ending::PeerResets);
    assert_eq!(reset.len(), 2, "{reset:?}");
    assert_eq!(reset[0], "stop");
    assert!(
        reset[1].starts_with("lost: connection was lost: "),
        "{reset:?}"
    );
}

/// A pull producer that writes a small piece each time it is asked (the
/// kernel takes each whole), then unregisters and closes. Each answer
/// earns the next request at once: enough of them would overflow the
/// stack if each were asked from inside the write that answered the last.
struct Trickle {
    transport: TransportRef,
    left: Cell<usize>,
    asked: Rc<Cell<usize>>,
}

impl Producer for Trickle {
    fn resume_producing(&self) {
        self.asked.set(self.asked.get() + 1);
        match self.left.get() {
            0 => {
                self.transport.unregister_producer();
                self.transport.lose_connection();
            }
            n => {
                self.left.set(n - 1);
                self.transport.write(&[b't'; 10]);
            }
        }
    }
}

/// Registers a [`Trickle`] where [`Where`] says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Where {
    ConnectionMade,
    DataReceived,
    Timer,
}

struct TrickleServer {
    at: Where,
    pieces: usize,
    asked: Rc<Cell<usize>>,
}

impl TrickleServer {
    fn register(&self, transport: &TransportRef) {
        let trickle = Rc::new(Trickle {
            transport: transport.clone(),
            left: Cell::new(self.pieces),
            asked: self.asked.clone(),
        });
        transport.register_producer(trickle, false).unwrap();
    }
}

impl Protocol for TrickleServer {
    fn connection_made(&mut self, transport: &TransportRef) {
        match self.at {
            Where::ConnectionMade => self.register(transport),
            Where::DataReceived => {}
            Where::Timer => {
                let t = transport.clone();
                let (pieces, asked) = (self.pieces, self.asked.clone());
                transport
                    .reactor()
                    .unwrap()
                    .call_later(Duration::ZERO, move |_| {
                        TrickleServer {
                            at: Where::Timer,
                            pieces,
                            asked,
                        }
                        .register(&t)
                    });
            }
        }
    }
    fn data_received(&mut self, transport: &TransportRef, _data: &[u8]) {
        if self.at == Where::DataReceived {
            self.register(transport);
        }
    }
}

#[test]
fn a_pull_producer_whose_writes_go_out_whole_is_asked_again() {
    for at in [Where::ConnectionMade, Where::DataReceived, Where::Timer] {
        let _fds = DescriptorGuard::new();
        let (_watchdog, reactor) = reactor();
        let asked = Rc::new(Cell::new(0));
        let a = asked.clone();
        let pieces = 100_000;
        let addr = listen(&reactor, move || TrickleServer {
            at,
            pieces,
            asked: a.clone(),
        });
        let handle = reactor.handle();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(b"go").unwrap();
            let all = read_all(&mut stream);
            handle.stop().unwrap();
            all.len()
        });
        reactor.run().unwrap();
        assert_eq!(client.join().unwrap(), pieces * 10, "{at:?}");
        assert_eq!(asked.get(), pieces + 1, "{at:?}");
    }
}

/// A pull producer whose first answer is a small write the kernel takes
/// whole followed by a large one it cannot take; it finishes once asked
/// again.
struct Burst {
    transport: TransportRef,
    asked: Cell<usize>,
    turns: Rc<Cell<u64>>,
    go: RefCell<Option<mpsc::Sender<()>>>,
}

impl Producer for Burst {
    fn resume_producing(&self) {
        self.asked.set(self.asked.get() + 1);
        if self.asked.get() > 1 {
            self.transport.unregister_producer();
            self.transport.lose_connection();
            return;
        }
        self.transport.write(&[b's'; 100]);
        self.transport.write(&vec![b'b'; 8 << 20]);
        // While the peer reads nothing, the loop should sleep: count its
        // turns for a while, then let the peer read.
        let reactor = self.transport.reactor().unwrap();
        let start = reactor.turn_count();
        let turns = self.turns.clone();
        let go = self.go.borrow_mut().take().unwrap();
        reactor.call_later(Duration::from_millis(100), move |reactor| {
            turns.set(reactor.turn_count() - start);
            go.send(()).unwrap();
        });
    }
}

struct BurstServer {
    turns: Rc<Cell<u64>>,
    go: RefCell<Option<mpsc::Sender<()>>>,
}

impl Protocol for BurstServer {
    fn connection_made(&mut self, transport: &TransportRef) {
        let burst = Rc::new(Burst {
            transport: transport.clone(),
            asked: Cell::new(0),
            turns: self.turns.clone(),
            go: RefCell::new(self.go.borrow_mut().take()),
        });
        transport.register_producer(burst, false).unwrap();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
}

#[test]
fn a_pull_producer_with_output_queued_is_not_polled_while_the_peer_reads_nothing() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let turns = Rc::new(Cell::new(u64::MAX));
    let (go, wait) = mpsc::channel();
    let go = RefCell::new(Some(go));
    let t = turns.clone();
    let addr = listen(&reactor, move || BurstServer {
        turns: t.clone(),
        go: RefCell::new(go.borrow_mut().take()),
    });
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        wait.recv().unwrap();
        let all = read_all(&mut stream);
        handle.stop().unwrap();
        all.len()
    });
    reactor.run().unwrap();
    assert_eq!(client.join().unwrap(), 100 + (8 << 20));
    assert!(turns.get() <= 5, "{} loop turns in 100 ms", turns.get());
}
