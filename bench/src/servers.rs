//! The echo servers under test. Each binds 127.0.0.1 on a free port,
//! prints the port on stdout, and serves until killed.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use torsion_echo::EchoFactory;
use torsion_protocol::{ListenOptions, Reactor, ReactorTcp};

pub(crate) fn announce(port: u16) {
    println!("{port}");
    let _ = io::stdout().flush();
}

/// Torsion's echo server on `threads` reactors, one per thread, sharing
/// the port through `SO_REUSEPORT` (as `echo_server --threads N`).
pub fn torsion_threads(threads: usize) -> io::Result<()> {
    let options = ListenOptions {
        reuse_port: true,
        ..ListenOptions::interface(Ipv4Addr::LOCALHOST.into())
    };
    let reactor = Reactor::new()?;
    let port = reactor
        .listen_tcp_with(0, EchoFactory, options)?
        .get_host()
        .port()
        .unwrap_or(0);
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            std::thread::spawn(move || -> io::Result<()> {
                let reactor = Reactor::new()?;
                reactor.listen_tcp_with(port, EchoFactory, options)?;
                reactor.run().map_err(io::Error::other)
            })
        })
        .collect();
    announce(port);
    reactor.run().map_err(io::Error::other)?;
    for worker in workers {
        worker
            .join()
            .map_err(|_| io::Error::other("a reactor thread panicked"))??;
    }
    Ok(())
}

/// Torsion's echo server: the library's `EchoFactory`, nothing tuned.
pub fn torsion() -> io::Result<()> {
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp_with(
        0,
        EchoFactory,
        ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
    )?;
    announce(port.get_host().port().unwrap_or(0));
    reactor.run().map_err(io::Error::other)
}

/// Torsion's echo server written as async code: one task per connection
/// over the `AsyncStream` adapter, with its own buffer, as the tokio
/// server below is written.
pub fn torsion_async() -> io::Result<()> {
    use torsion_protocol::ReactorAsync;
    let reactor = Reactor::new()?;
    let listener =
        reactor.listen_tcp_stream(0, ListenOptions::interface(Ipv4Addr::LOCALHOST.into()))?;
    announce(listener.get_host().port().unwrap_or(0));
    let r = reactor.clone();
    reactor
        .run_until_complete(async move {
            loop {
                let stream = listener.accept().await;
                r.spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                })
                .detach();
            }
        })
        .map_err(io::Error::other)
}

/// An echo server on tokio's current-thread runtime, written the way its
/// documentation shows: a task per connection with its own buffer.
pub fn tokio_current_thread() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(tokio_serve())
}

/// The same server on tokio's multi-thread runtime, for reference.
pub fn tokio_multi_thread() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    runtime.block_on(tokio_serve())
}

async fn tokio_serve() -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    announce(listener.local_addr()?.port());
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// A hand-written single-threaded mio echo loop, done right:
/// edge-triggered, read until `WouldBlock` into one shared buffer, write
/// straight through, and keep only what the kernel did not take.
pub fn mio_loop() -> io::Result<()> {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};

    const LISTENER: Token = Token(usize::MAX);
    struct Conn {
        stream: TcpStream,
        pending: Vec<u8>,
    }

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    announce(listener.local_addr()?.port());

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let key = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(key),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[key] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns[key].as_mut() else {
                continue;
            };
            let mut closed = false;
            if event.is_writable() && !conn.pending.is_empty() {
                match conn.stream.write(&conn.pending) {
                    Ok(n) => {
                        conn.pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
            if event.is_readable() && !closed {
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => {
                            if !conn.pending.is_empty() {
                                conn.pending.extend_from_slice(&buf[..n]);
                                continue;
                            }
                            match conn.stream.write(&buf[..n]) {
                                Ok(sent) => conn.pending.extend_from_slice(&buf[sent..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    conn.pending.extend_from_slice(&buf[..n])
                                }
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if closed {
                if let Some(mut conn) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
                free.push(key);
            }
        }
    }
}
