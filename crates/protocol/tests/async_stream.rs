//! Connections as async streams: connecting and accepting as futures,
//! the AsyncRead/AsyncWrite adapter with its back-pressure, and the book's
//! echo client written as async code, over loopback.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use torsion_protocol::stream::READ_BUFFER_LIMIT;
use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, Watchdog};
use torsion_protocol::{
    AsyncStream, ConnectError, ConnectorState, ListenOptions, Reactor, ReactorAsync,
    StreamListener, UnixListenOptions,
};

const LIMIT: Duration = Duration::from_secs(30);

fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(LIMIT)
}

fn loopback() -> ListenOptions {
    ListenOptions::interface(Ipv4Addr::LOCALHOST.into())
}

fn port_of(listener: &StreamListener) -> u16 {
    match listener.get_host() {
        torsion_protocol::Address::Tcp(addr) => addr.port(),
        other => panic!("not TCP: {other:?}"),
    }
}

/// Serves each accepted connection with an echo task until `count`
/// connections have come and gone.
async fn echo_server(reactor: Reactor, listener: StreamListener, count: usize) {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let stream = listener.accept().await;
        tasks.push(reactor.spawn(async move {
            let mut buffer = vec![0; 4096];
            loop {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return stream.close().await;
                }
                stream.write_all(&buffer[..n]).await?;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

/// The book's echo client as async code: connect, write, read until the
/// echo is complete, close; all under a timeout.
async fn echo_client(reactor: Reactor, port: u16, message: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let stream = reactor
            .connect_tcp_stream("127.0.0.1", port, LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(message).await.map_err(|e| e.to_string())?;
        let mut echoed = Vec::new();
        let mut buffer = [0; 1024];
        while echoed.len() < message.len() {
            let n = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed early".into());
            }
            echoed.extend_from_slice(&buffer[..n]);
        }
        stream.close().await.map_err(|e| e.to_string())?;
        Ok(echoed)
    };
    reactor
        .timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|e| e.to_string())?
}

#[test]
fn the_echo_client_as_async_code() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let port = port_of(&listener);
    let server = reactor.spawn(echo_server(reactor.clone(), listener, 2));
    let r = reactor.clone();
    let echoed = reactor
        .run_until_complete(async move {
            let first = echo_client(r.clone(), port, b"Hello, world!").await;
            let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
            let second = echo_client(r.clone(), port, &big).await;
            server.await.unwrap();
            (first, second.map(|echo| echo == big))
        })
        .unwrap();
    assert_eq!(echoed.0.as_deref(), Ok(&b"Hello, world!"[..]));
    assert_eq!(echoed.1, Ok(true));
    assert_eq!(reactor.task_count(), 0);
}

#[test]
fn unix_sockets_too() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let path = torsion_protocol::testing::socket_path("async");
    let listener = reactor
        .listen_unix_stream(&path, UnixListenOptions::default())
        .unwrap();
    let server = reactor.spawn(echo_server(reactor.clone(), listener, 1));
    let r = reactor.clone();
    let reply = reactor
        .run_until_complete(async move {
            let stream = r.connect_unix_stream(&path, LIMIT).await.unwrap();
            stream.write_all(b"over a path").await.unwrap();
            stream.transport().unwrap().lose_write_connection();
            let mut reply = Vec::new();
            let mut buffer = [0; 64];
            loop {
                let n = stream.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&buffer[..n]);
            }
            server.await.unwrap();
            reply
        })
        .unwrap();
    assert_eq!(reply, b"over a path");
}

#[test]
fn a_refused_connect_is_the_connect_error() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let connect = reactor.connect_tcp_stream("127.0.0.1", port, LIMIT);
    let result = reactor.run_until_complete(connect).unwrap();
    assert!(
        matches!(result, Err(ConnectError::Refused(_))),
        "{result:?}"
    );
}

#[test]
fn dropping_the_connect_future_cancels_the_attempt() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = reactor.connect_tcp_stream("127.0.0.1", port, LIMIT);
    let connector = connect.connector().clone();
    assert_eq!(connector.state(), ConnectorState::Connecting);
    assert_eq!(reactor.pending_call_count(), 1, "the connect timeout");
    drop(connect);
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    assert_eq!(reactor.pending_call_count(), 0, "the timeout was cancelled");
    for _ in 0..5 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(connector.state(), ConnectorState::Disconnected);
    assert_eq!(reactor.source_count(), 0, "no socket left connecting");
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing connected"
    );
}

/// A connected pair: our `AsyncStream` and the peer's plain socket.
fn connected(reactor: &Reactor) -> (AsyncStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stream = reactor
        .run_until_complete(reactor.connect_tcp_stream("127.0.0.1", port, LIMIT))
        .unwrap()
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

fn noop_waker() -> Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

/// Turns the reactor until `done` or the watchdog fires; never sleeps on
/// its own account.
fn turn_until(reactor: &Reactor, mut done: impl FnMut() -> bool) {
    while !done() {
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
}

#[test]
fn reading_pauses_while_the_task_does_not_read_and_loses_nothing() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, mut peer) = connected(&reactor);
    let total = 1 << 20;
    let writer = std::thread::spawn(move || {
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).unwrap();
        peer
    });
    turn_until(&reactor, || stream.is_reading_paused());
    // Turn some more: nothing more is read while paused.
    let buffered = stream.buffered();
    for _ in 0..10 {
        reactor.iterate(Duration::from_millis(1)).unwrap();
    }
    assert_eq!(stream.buffered(), buffered);
    assert!((READ_BUFFER_LIMIT..READ_BUFFER_LIMIT + 256 * 1024).contains(&buffered));

    let s = stream.clone();
    let received = reactor
        .run_until_complete(async move {
            let mut received = Vec::new();
            let mut buffer = vec![0; 8192];
            while received.len() < total {
                let n = s.read(&mut buffer).await.unwrap();
                assert!(n > 0);
                received.extend_from_slice(&buffer[..n]);
            }
            received
        })
        .unwrap();
    assert!(received
        .iter()
        .enumerate()
        .all(|(i, byte)| *byte == (i % 251) as u8));
    drop(writer.join().unwrap());
    let s = stream.clone();
    let eof = reactor
        .run_until_complete(async move { s.read(&mut [0; 16]).await.unwrap() })
        .unwrap();
    assert_eq!(eof, 0, "end of stream");
}

#[test]
fn writing_waits_above_the_high_watermark_and_flush_waits_for_the_kernel() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, mut peer) = connected(&reactor);
    stream.set_write_high_water(32 * 1024);
    let transport = stream.transport().unwrap();
    let chunk = vec![7u8; 16 * 1024];
    let s = stream.clone();
    let writer = reactor.spawn(async move {
        let mut written = 0usize;
        for _ in 0..256 {
            s.write_all(&chunk).await.unwrap();
            written += chunk.len();
        }
        s.flush().await.unwrap();
        written
    });
    // The peer does not read: the writer stops, and the buffer stays
    // bounded.
    let mut max_buffer = 0;
    let mut stalled_turns = 0;
    while stalled_turns < 20 {
        let before = reactor.task_poll_count();
        reactor.iterate(Duration::from_millis(5)).unwrap();
        max_buffer = max_buffer.max(transport.get_write_buffer_size());
        if reactor.task_poll_count() == before {
            stalled_turns += 1;
        }
    }
    assert!(!writer.is_finished());
    assert!(
        max_buffer <= 32 * 1024 + 16 * 1024,
        "buffer {max_buffer} above high water + one write"
    );
    let reader = std::thread::spawn(move || {
        let mut received = 0usize;
        let mut buffer = vec![0; 65536];
        while received < 256 * 16 * 1024 {
            received += peer.read(&mut buffer).unwrap();
        }
        (peer, received)
    });
    let written = reactor.run_until_complete(writer).unwrap().unwrap();
    assert_eq!(written, 256 * 16 * 1024);
    assert_eq!(
        transport.get_write_buffer_size(),
        0,
        "flushed to the kernel"
    );
    let (_peer, received) = reader.join().unwrap();
    assert_eq!(received, written);
}

#[test]
fn an_idle_connection_costs_no_polls() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, mut peer) = connected(&reactor);
    let s = stream.clone();
    let reader = reactor.spawn(async move {
        let mut buffer = [0; 16];
        let n = s.read(&mut buffer).await.unwrap();
        buffer[..n].to_vec()
    });
    reactor.iterate(Duration::ZERO).unwrap();
    let polls = reactor.task_poll_count();
    for _ in 0..100 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(reactor.task_poll_count(), polls);
    peer.write_all(b"ping").unwrap();
    turn_until(&reactor, || reader.is_finished());
    assert_eq!(
        reactor.task_poll_count(),
        polls + 1,
        "one poll for the data"
    );
    let got = reactor.run_until_complete(reader).unwrap().unwrap();
    assert_eq!(got, b"ping");
}

#[test]
fn a_reset_is_an_error_and_writes_after_close_fail() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, peer) = connected(&reactor);
    let socket = torsion_protocol::socket2::Socket::from(peer);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
    let s = stream.clone();
    let result = reactor
        .run_until_complete(async move {
            let read = s.read(&mut [0; 8]).await;
            let write = s.write_all(b"late").await;
            (read, write)
        })
        .unwrap();
    assert!(result.0.is_err(), "{:?}", result.0);
    assert!(result.1.is_err());
    assert!(stream.is_closed());
}

/// The futures and the stream are `Unpin`: they can be polled by hand
/// and stored without pinning.
#[test]
fn futures_are_unpin() {
    fn unpin<T: Unpin>() {}
    unpin::<torsion_protocol::Connect>();
    unpin::<AsyncStream>();
    unpin::<torsion_protocol::JoinHandle<()>>();
    unpin::<torsion_protocol::Sleep>();
    // The combinators' futures, at the crate root like their functions.
    type D = torsion_protocol::Deferred<u32, torsion_protocol::CancelledError>;
    unpin::<torsion_protocol::GatherResults<D>>();
    unpin::<torsion_protocol::DeferredList<D>>();
    unpin::<torsion_protocol::FirstSuccess<D>>();
    const { assert!(torsion_protocol::MAX_TASK_POLLS_PER_TURN > 0) };
}

/// Sends a greeting and fires a Deferred with the first reply: a
/// protocol bridged to async code.
struct Greeter {
    reply: torsion_protocol::Deferred<Vec<u8>, torsion_protocol::CancelledError>,
}

impl torsion_protocol::Protocol for Greeter {
    fn connection_made(&mut self, transport: &torsion_protocol::TransportRef) {
        transport.write(b"hi there");
    }

    fn data_received(&mut self, _transport: &torsion_protocol::TransportRef, data: &[u8]) {
        let _ = self.reply.callback(data.to_vec());
    }
}

#[test]
fn connect_protocol_yields_the_connected_protocol() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let port = port_of(&listener);
    let server = reactor.spawn(echo_server(reactor.clone(), listener, 1));
    let r = reactor.clone();
    let reply = reactor
        .run_until_complete(async move {
            let reply = torsion_protocol::Deferred::new();
            let greeter = Greeter {
                reply: reply.clone(),
            };
            let connected = r
                .connect_tcp_protocol("127.0.0.1", port, greeter, LIMIT)
                .await
                .unwrap();
            let echoed = reply.await.unwrap();
            assert!(connected.protocol.borrow().reply.is_called());
            connected.transport.lose_connection();
            server.await.unwrap();
            echoed
        })
        .unwrap();
    assert_eq!(reply, b"hi there");
}

#[test]
fn endpoints_connect_and_listen() {
    use torsion_protocol::endpoints::{client_from_string, server_from_string};
    use torsion_protocol::stream::{connect_endpoint, listen_endpoint};
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let server = server_from_string("tcp:0:interface=127.0.0.1").unwrap();
    let listener = listen_endpoint(&reactor, &server).unwrap();
    let port = port_of(&listener);
    let served = reactor.spawn(echo_server(reactor.clone(), listener, 1));
    let client = client_from_string(&format!("tcp:host=127.0.0.1:port={port}:timeout=5")).unwrap();
    let r = reactor.clone();
    let reply = reactor
        .run_until_complete(async move {
            let stream = connect_endpoint(&r, &client).await.unwrap();
            stream.write_all(b"endpoint").await.unwrap();
            let mut buffer = [0; 8];
            let mut got = 0;
            while got < buffer.len() {
                got += stream.read(&mut buffer[got..]).await.unwrap();
            }
            drop(stream); // the last handle: closes gracefully
            served.await.unwrap();
            buffer
        })
        .unwrap();
    assert_eq!(&reply, b"endpoint");
}

#[test]
fn a_read_future_dropped_midway_loses_no_bytes() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, mut peer) = connected(&reactor);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut buffer = [0u8; 64];
    {
        // A read that waits, then is given up (as a timeout would).
        let read = stream.read(&mut buffer);
        let mut read = std::pin::pin!(read);
        assert!(read.as_mut().poll(&mut cx).is_pending());
        peer.write_all(b"first ").unwrap();
        turn_until(&reactor, || stream.buffered() > 0);
        peer.write_all(b"second").unwrap();
        turn_until(&reactor, || stream.buffered() == 12);
    } // dropped without being polled again
    let n = {
        let mut read = std::pin::pin!(stream.read(&mut buffer));
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(n) => n.unwrap(),
            Poll::Pending => panic!("the bytes are buffered"),
        }
    };
    assert_eq!(&buffer[..n], b"first second");
}

/// Turns until the connect has connected; the server side accepted.
fn connected_but_not_polled<T>(
    reactor: &Reactor,
    connect: &torsion_protocol::Connect<T>,
    listener: &TcpListener,
) -> std::net::TcpStream {
    turn_until(reactor, || {
        connect.connector().state() == ConnectorState::Connected
    });
    let (peer, _) = listener.accept().unwrap();
    // A safety net only: the test fails, not hangs, without the close.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer
}

#[test]
fn dropping_a_connect_that_connected_unpolled_closes_the_connection() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = reactor.connect_tcp_stream("127.0.0.1", port, LIMIT);
    let mut peer = connected_but_not_polled(&reactor, &connect, &listener);
    drop(connect);
    for _ in 0..5 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(peer.read(&mut [0; 16]).unwrap(), 0, "closed: end of stream");
    assert_eq!(reactor.source_count(), 0);
}

#[test]
fn dropping_a_protocol_connect_that_connected_unpolled_closes_the_connection() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let greeter = Greeter {
        reply: torsion_protocol::Deferred::new(),
    };
    let connect = reactor.connect_tcp_protocol("127.0.0.1", port, greeter, LIMIT);
    let mut peer = connected_but_not_polled(&reactor, &connect, &listener);
    drop(connect);
    for _ in 0..5 {
        reactor.iterate(Duration::ZERO).unwrap();
    }
    let mut greeting = [0; 8];
    peer.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"hi there");
    assert_eq!(peer.read(&mut [0; 16]).unwrap(), 0, "closed: end of stream");
    assert_eq!(reactor.source_count(), 0);
}

/// A detached task holding a clone of its reactor keeps it alive after
/// `run_until_complete` (which does not shut down); `shut_down` ends
/// that cycle, and dropping the reactor then frees every descriptor.
#[test]
fn shut_down_after_run_until_complete_frees_a_reactor_its_tasks_hold() {
    let fds = DescriptorGuard::new();
    let (watchdog, reactor) = reactor();
    let listener = reactor.listen_tcp_stream(0, loopback()).unwrap();
    let r = reactor.clone();
    reactor
        .spawn(async move {
            let _reactor = r;
            let _stream = listener.accept().await;
        })
        .detach();
    let answer = reactor.run_until_complete(async { 42 }).unwrap();
    assert_eq!(answer, 42);
    reactor.shut_down().unwrap();
    assert_eq!(reactor.task_count(), 0);
    drop(reactor);
    drop(watchdog);
    fds.check();
}

#[test]
fn two_tasks_accepting_on_one_listener_both_get_a_connection() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let listener = std::rc::Rc::new(reactor.listen_tcp_stream(0, loopback()).unwrap());
    let port = port_of(&listener);
    let accepting: Vec<_> = (0..2)
        .map(|_| {
            let listener = listener.clone();
            reactor.spawn(async move { listener.accept().await })
        })
        .collect();
    // Both wait before anything connects.
    reactor.iterate(Duration::ZERO).unwrap();
    let clients: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for _ in 0..50 {
        if accepting.iter().all(|task| task.is_finished()) {
            break;
        }
        reactor.iterate(Duration::from_millis(100)).unwrap();
    }
    assert!(
        accepting.iter().all(|task| task.is_finished()),
        "an accept was never woken"
    );
    let streams: Vec<_> = accepting
        .into_iter()
        .map(|task| reactor.run_until_complete(task).unwrap().unwrap())
        .collect();
    assert_eq!(streams.len(), 2);
    drop(streams);
    drop(clients);
    drop(listener);
    reactor.shut_down().unwrap();
}

#[test]
fn one_huge_write_is_held_to_the_high_watermark() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, peer) = connected(&reactor);
    let transport = stream.transport().unwrap();
    let high = torsion_protocol::DEFAULT_HIGH_WATER;
    let s = stream.clone();
    let writer = reactor.spawn(async move {
        let data = vec![7u8; 100 << 20];
        s.write_all(&data).await
    });
    // The peer never reads: the kernel's buffers fill, then the writer
    // waits with at most the high watermark (and a byte) buffered.
    let mut max_buffer = 0;
    let mut stalled_turns = 0;
    while stalled_turns < 20 {
        let before = reactor.task_poll_count();
        reactor.iterate(Duration::from_millis(5)).unwrap();
        max_buffer = max_buffer.max(transport.get_write_buffer_size());
        if reactor.task_poll_count() == before {
            stalled_turns += 1;
        }
    }
    assert!(
        max_buffer <= high + 1,
        "buffer {max_buffer} above the high watermark {high}"
    );
    assert!(!writer.is_finished(), "100 MB do not fit in the kernel");
    assert!(max_buffer > 0);
    drop(writer);
    drop(peer);
}

/// A watermark of zero (every write waits for the drain) still writes in
/// chunks, not a byte per drain.
#[test]
fn a_zero_high_watermark_still_writes_in_chunks() {
    let _fds = DescriptorGuard::new();
    let (_watchdog, reactor) = reactor();
    let (stream, mut peer) = connected(&reactor);
    stream.set_write_high_water(0);
    let total = 256 * 1024;
    let reader = std::thread::spawn(move || {
        let mut received = 0;
        let mut buffer = vec![0; 65536];
        while received < total {
            received += peer.read(&mut buffer).unwrap();
        }
        (peer, received)
    });
    let s = stream.clone();
    let polls = reactor.task_poll_count();
    reactor
        .run_until_complete(async move { s.write_all(&vec![1u8; total]).await })
        .unwrap()
        .unwrap();
    let polls = reactor.task_poll_count() - polls;
    assert!(polls <= 64, "{polls} polls to write {total} bytes");
    let (_peer, received) = reader.join().unwrap();
    assert_eq!(received, total);
}
