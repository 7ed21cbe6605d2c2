//! The TLS wrapper over in-memory transports: no sockets, manual clock.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use support::{pki, tls_pair, Closing, Pair, Recorder};
use torsion_protocol::testing::Echo;
use torsion_protocol::{Producer, Protocol, Reactor, Transport, TransportRef};
use torsion_tls::rustls::ProtocolVersion;
use torsion_tls::{server_name, ClientSettings, TlsProtocol, TlsRole, TlsTransport};

#[test]
fn handshake_then_data_both_ways() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hello"));
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    let record = record.borrow();
    assert!(record.made && record.handshake && record.handshake_before_data);
    assert_eq!(record.received, b"hello");
    let tls = pair.client.protocol.tls();
    assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert!(tls.cipher_suite().is_some());
    assert_eq!(tls.peer_certificates()[0], pki().server.cert);
    assert_eq!(
        pair.server.protocol.tls().server_name().as_deref(),
        Some("localhost")
    );
}

#[test]
fn arbitrary_chunking_delivers_everything_in_order() {
    let message: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in [1, 2, 3, 5, 7, 100, 1000, 4097, 16_389] {
        let (client, record) = Recorder::new();
        let sent = message.clone();
        let client = client.on_made(move |t| {
            for piece in sent.chunks(333) {
                t.write(piece);
            }
        });
        let mut pair = tls_pair(Echo, client, None);
        pair.chunk = chunk;
        pair.pump();
        assert_eq!(record.borrow().received, message, "chunk {chunk}");
    }
}

#[test]
fn writes_before_the_handshake_are_sent_after_it_in_order() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| {
        t.write(b"one ");
        t.write_sequence(&[b"two ", b"three "]);
        t.write_bytes(torsion_protocol::Bytes::from_static(b"four"));
        // Queued: nothing of it is on the wire in plaintext.
        assert!(t.get_write_buffer_size() >= 18);
    });
    let mut pair = tls_pair(Echo, client, None);
    let hello = pair.client.pipe.out.borrow().clone();
    assert!(!hello.windows(4).any(|w| w == b"one "));
    pair.pump();
    assert_eq!(record.borrow().received, b"one two three four");
}

#[test]
fn huge_writes_and_write_sequence() {
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (client, record) = Recorder::new();
    let payload = big.clone();
    let client = client.on_handshake(move |t| {
        t.write(&payload[..3 * 1024 * 1024]);
        t.write_sequence(&[
            &payload[3 * 1024 * 1024..5 * 1024 * 1024],
            &payload[5 * 1024 * 1024..],
        ]);
    });
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    assert_eq!(record.borrow().received.len(), big.len());
    assert!(record.borrow().received == big);
}

#[test]
fn one_lower_write_per_event() {
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| {
        for _ in 0..100 {
            t.write(b"x");
        }
    });
    let mut pair = tls_pair(Echo, client, None);
    // Run the handshake up to the client's Finished.
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let writes = pair.client.pipe.writes.get();
    // The Finished and the 100 writes went out in one lower write, the
    // writes gathered into one record.
    assert_eq!(writes, 2, "ClientHello, then one write for the rest");
    let sent = pair.client.pipe.buffered();
    assert!(sent < 400, "{sent} bytes: one record, not 100");
    pair.pump();
    assert_eq!(record.borrow().received.len(), 100);
}

/// A streaming producer that writes 16 KiB per resume until paused, up to
/// a total.
struct Streamer {
    transport: RefCell<Option<TransportRef>>,
    paused: Cell<bool>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
    stopped: Cell<bool>,
    sent: Cell<usize>,
    total: usize,
}

impl Streamer {
    fn run(&self) {
        let transport = self.transport.borrow().clone().unwrap();
        let block = [7u8; 16 * 1024];
        while !self.paused.get() && self.sent.get() < self.total {
            transport.write(&block);
            self.sent.set(self.sent.get() + block.len());
        }
        if self.sent.get() >= self.total {
            transport.unregister_producer();
            transport.lose_connection();
        }
    }
}

impl Producer for Streamer {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.resumes.set(self.resumes.get() + 1);
    }
    fn stop_producing(&self) {
        self.stopped.set(true);
    }
}

#[test]
fn producers_are_paused_by_the_tls_and_lower_buffers_and_memory_stays_bounded() {
    let streamer = Rc::new(Streamer {
        transport: RefCell::new(None),
        paused: Cell::new(false),
        pauses: Cell::new(0),
        resumes: Cell::new(0),
        stopped: Cell::new(false),
        sent: Cell::new(0),
        total: 8 * 1024 * 1024,
    });
    let s = streamer.clone();
    let (server, _) = Recorder::new();
    let server = server.on_made(move |t| {
        *s.transport.borrow_mut() = Some(t.clone());
        t.register_producer(s.clone(), true).unwrap();
        // Before the handshake: plaintext waits, and its buffer pauses the
        // producer at the high watermark.
        s.run();
    });
    let (client, record) = Recorder::new();
    let mut pair = tls_pair(server, client, None);
    assert!(streamer.paused.get(), "paused before the handshake");
    assert!(streamer.sent.get() <= 64 * 1024 + 16 * 1024);
    // The handshake, but the client reads nothing of the data: only the
    // handshake messages move.
    for _ in 0..4 {
        let to_server = pair.client.pipe.take(usize::MAX);
        pair.server.receive(&to_server);
        let to_client = pair.server.pipe.take(pair.server.pipe.buffered().min(4000));
        pair.client.receive(&to_client);
    }
    // A peer that never reads: the producer stays paused and the server's
    // buffers stay bounded.
    for _ in 0..10 {
        if !streamer.paused.get() {
            streamer.run();
        }
    }
    assert!(streamer.paused.get());
    assert!(
        pair.server.pipe.buffered() < 64 * 1024 + 2 * 17 * 1024,
        "bounded: {}",
        pair.server.pipe.buffered()
    );
    assert!(streamer.sent.get() < 256 * 1024);
    // The peer reads: the producer is resumed and finishes.
    for _ in 0..2000 {
        if !streamer.paused.get() && streamer.sent.get() < streamer.total {
            streamer.run();
        }
        pair.pump();
        if pair.closed {
            break;
        }
    }
    assert!(streamer.resumes.get() > 10);
    assert_eq!(record.borrow().received.len(), 8 * 1024 * 1024);
    assert_eq!(record.borrow().lost_clean, Some(true));
}

#[test]
fn close_sends_close_notify_and_waits_a_bounded_time() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (server, server_record) = Recorder::new();
    let server = server.on_data(|t, _| {
        t.write(b"bye");
        t.lose_connection();
    });
    let (client, client_record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    // The client never answers close_notify: its pipe drops what it
    // receives after the handshake.
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    // The server replied, sent close_notify and shut its write side.
    assert!(pair.server.pipe.write_closed.get());
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    // The client's side takes the bytes but does not answer yet.
    let to_client = pair.server.pipe.take(usize::MAX);
    clock.advance(Duration::from_secs(4));
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Lost);
    // The client got the data and a clean close.
    pair.client.receive(&to_client);
    pair.pump();
    assert_eq!(client_record.borrow().received, b"bye");
    assert_eq!(client_record.borrow().lost_clean, Some(true));
    assert_eq!(server_record.borrow().lost_clean, Some(true));
}

#[test]
fn a_peer_that_never_reads_does_not_hold_the_close_past_the_timeout() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (server, _server_record) = Recorder::new();
    let server = server.on_data(|t, _| {
        t.write(&vec![7u8; 256 * 1024]);
        t.lose_connection();
    });
    let (client, _client_record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    // The client never reads again: the reply and our close_notify stay
    // queued in the server's lower transport.
    assert!(pair.server.pipe.buffered() > 0);
    assert!(pair.server.pipe.write_closed.get());
    clock.advance(Duration::from_secs(5));
    // A graceful close would wait on that queue for ever.
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Aborted);
}

#[test]
fn a_slow_reader_keeps_the_close_going_while_it_takes_bytes() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (server, _server_record) = Recorder::new();
    let server = server.on_data(|t, _| {
        t.write(&vec![7u8; 256 * 1024]);
        t.lose_connection();
    });
    let (client, _client_record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    // The peer takes a little in every period: the wait goes on.
    for _ in 0..2 {
        pair.server.pipe.take(16 * 1024);
        clock.advance(Duration::from_secs(5));
        assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    }
    // It stops taking: cut off after one more period.
    clock.advance(Duration::from_secs(5));
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Aborted);
    assert_eq!(reactor.pending_call_count(), 0, "no timer left behind");
}

#[test]
fn a_trickling_reader_is_cut_off_after_four_close_timeouts() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (server, _server_record) = Recorder::new();
    let server = server.on_data(|t, _| {
        t.write(&vec![7u8; 256 * 1024]);
        t.lose_connection();
    });
    let (client, _client_record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    // 4 KiB per period: the queue would last far longer than 4 periods.
    for _ in 0..3 {
        pair.server.pipe.take(4 * 1024);
        clock.advance(Duration::from_secs(5));
        assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    }
    pair.server.pipe.take(4 * 1024);
    clock.advance(Duration::from_secs(5));
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Aborted);
    assert_eq!(reactor.pending_call_count(), 0, "no timer left behind");
}

#[test]
fn close_completes_at_once_when_the_peer_answers() {
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let (server, server_record) = Recorder::new();
    let server = server.on_data(|t, _| {
        t.write(b"bye");
        t.lose_connection();
    });
    let (client, client_record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    pair.pump();
    assert!(pair.closed);
    assert_eq!(client_record.borrow().received, b"bye");
    let client_lost = client_record.borrow().lost.clone().unwrap();
    assert!(
        client_lost.contains("closed cleanly by the peer"),
        "{client_lost}"
    );
    assert_eq!(server_record.borrow().lost_clean, Some(true));
    assert_eq!(reactor.pending_call_count(), 0, "no timer left behind");
}

#[test]
fn lose_connection_before_handshake_twice_and_after_close_is_safe() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| {
        t.write(b"early");
        t.lose_connection();
        t.lose_connection();
    });
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    // What was written before went out after the handshake, then the close.
    assert!(pair.closed);
    assert_eq!(record.borrow().lost_clean, Some(true));
    let tls = pair.client.protocol.tls().clone();
    tls.lose_connection();
    tls.write(b"ignored");
    tls.abort_connection();
    assert_eq!(record.borrow().events_after_lost, 0);
}

#[test]
fn unclean_end_of_stream_is_reported_as_possible_truncation() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    // The server's TCP stream ends with no close_notify.
    pair.client
        .protocol
        .read_connection_lost(&pair.client.handle.clone());
    pair.pump();
    let record = record.borrow();
    assert_eq!(record.lost_clean, Some(false));
    assert_eq!(record.lost_kind, Some(std::io::ErrorKind::UnexpectedEof));
    assert!(record.lost.as_ref().unwrap().contains("close_notify"));
    let closing = pair.client.pipe.closing.borrow().clone();
    match closing {
        Closing::LostWithError(text) => assert!(text.contains("truncation")),
        other => panic!("{other:?}"),
    }
}

fn failing_handshake(
    server: TlsProtocol<Recorder>,
    client: TlsProtocol<Recorder>,
) -> (String, String) {
    let server_record = server.inner().record.clone();
    let client_record = client.inner().record.clone();
    let mut pair = Pair::new(server, client, None);
    pair.pump();
    assert!(pair.closed);
    let s = server_record.borrow();
    let c = client_record.borrow();
    // (A TLS 1.3 client may finish its side before the server refuses
    // its certificate.)
    assert!(!s.handshake);
    assert!(s.received.is_empty() && c.received.is_empty());
    (s.lost.clone().unwrap(), c.lost.clone().unwrap())
}

#[test]
fn handshake_failures_name_their_cause() {
    let pki = pki();
    let name = || server_name("localhost").unwrap();
    let rec = || Recorder::new().0;

    // Unknown CA.
    let other = support::Pki::new();
    let (_server_lost, client_lost) = failing_handshake(
        TlsProtocol::server(pki.server_config(), rec()).unwrap(),
        TlsProtocol::client(other.client_config(), name(), rec()).unwrap(),
    );
    assert!(client_lost.contains("UnknownIssuer"), "{client_lost}");

    // Wrong host name.
    let (_, client_lost) = failing_handshake(
        TlsProtocol::server(pki.server_config(), rec()).unwrap(),
        TlsProtocol::client(
            pki.client_config(),
            server_name("example.org").unwrap(),
            rec(),
        )
        .unwrap(),
    );
    assert!(client_lost.contains("not valid for name"), "{client_lost}");

    // Expired certificate.
    let expired = pki.issue("expired server", &["localhost"], true);
    let config = torsion_tls::ServerSettings::new(vec![expired.cert.clone()], expired.key())
        .unwrap()
        .build()
        .unwrap();
    let (_, client_lost) = failing_handshake(
        TlsProtocol::server(config, rec()).unwrap(),
        TlsProtocol::client(pki.client_config(), name(), rec()).unwrap(),
    );
    assert!(client_lost.contains("certificate expired"), "{client_lost}");

    // No common ALPN protocol.
    let server_config = pki.server_settings().alpn(["h2"]).build().unwrap();
    let client_config = pki.client_settings().alpn(["imap"]).build().unwrap();
    let (server_lost, client_lost) = failing_handshake(
        TlsProtocol::server(server_config, rec()).unwrap(),
        TlsProtocol::client(client_config, name(), rec()).unwrap(),
    );
    assert!(server_lost.contains("ALPN"), "{server_lost}");
    assert!(
        client_lost.contains("NoApplicationProtocol"),
        "{client_lost}"
    );

    // Client certificate required but missing.
    let server_config = pki
        .server_settings()
        .require_client_certificate(pki.roots())
        .build()
        .unwrap();
    let (server_lost, client_lost) = failing_handshake(
        TlsProtocol::server(server_config, rec()).unwrap(),
        TlsProtocol::client(pki.client_config(), name(), rec()).unwrap(),
    );
    assert!(server_lost.contains("no certificate"), "{server_lost}");
    assert!(client_lost.contains("CertificateRequired"), "{client_lost}");
}

#[test]
fn plaintext_or_random_bytes_to_a_tls_server_fail_clearly() {
    for (input, expected) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], "plaintext"),
        (
            &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
            "TLS handshake failed",
        ),
        (&[0x00, 0xff, 0x13, 0x37][..], "first byte 0x00"),
    ] {
        let (server, record) = Recorder::new();
        let server = TlsProtocol::server(pki().server_config(), server).unwrap();
        let mut end = support::End::new(server, None);
        end.receive(input);
        end.receive(b"more junk");
        let closing = end.pipe.closing.borrow().clone();
        match closing {
            Closing::LostWithError(text) => assert!(text.contains(expected), "{text}"),
            other => panic!("{other:?}"),
        }
        end.lose(&torsion_protocol::CloseReason::ProtocolError("x".into()));
        let lost = record.borrow().lost.clone().unwrap();
        assert!(lost.contains(expected), "{lost}");
        assert!(record.borrow().received.is_empty());
    }
}

#[test]
fn handshake_timeout_on_the_reactor_clock() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let (server, record) = Recorder::new();
    let server = TlsProtocol::server(pki().server_config(), server)
        .unwrap()
        .handshake_timeout(Duration::from_secs(10));
    let mut end = support::End::new(server, Some(&reactor));
    clock.advance(Duration::from_secs(9));
    assert_eq!(*end.pipe.closing.borrow(), Closing::Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(*end.pipe.closing.borrow(), Closing::Aborted);
    end.lose(&torsion_protocol::CloseReason::Aborted);
    let lost = record.borrow().lost.clone().unwrap();
    assert!(
        lost.contains("TLS handshake not completed within 10s"),
        "{lost}"
    );
}

#[test]
fn default_handshake_timeout_is_thirty_seconds_and_cancelled_by_success() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let mut pair = tls_pair(Echo, Recorder::new().0, Some(&reactor));
    pair.pump();
    assert_eq!(reactor.pending_call_count(), 0);
    clock.advance(Duration::from_secs(31));
    assert!(!pair.closed);
    let mut end = support::End::new(
        TlsProtocol::server(pki().server_config(), Echo).unwrap(),
        Some(&reactor),
    );
    clock.advance(Duration::from_secs(29));
    assert_eq!(*end.pipe.closing.borrow(), Closing::Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(*end.pipe.closing.borrow(), Closing::Aborted);
    end.lose(&torsion_protocol::CloseReason::Aborted);
}

#[test]
fn abort_mid_handshake_delivers_nothing_more() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| {
        t.write(b"never sent");
    });
    let mut pair = tls_pair(Echo, client, None);
    // ServerHello reaches the client, which aborts before it is processed.
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    pair.client.protocol.tls().abort_connection();
    pair.pump();
    let record = record.borrow();
    assert!(!record.handshake);
    assert!(record.received.is_empty());
    assert_eq!(record.lost_clean, Some(false));
    assert_eq!(record.events_after_lost, 0);
}

#[test]
fn key_updates_and_session_tickets_are_written_after_reads() {
    let (server, server_record) = Recorder::new();
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"ping"));
    let mut pair = tls_pair(server, client, None);
    // Up to the client's Finished: the server answers it with session
    // tickets (TLS 1.3), written at once although its protocol wrote
    // nothing.
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    assert!(
        pair.server.pipe.buffered() > 0,
        "tickets sent after the read"
    );
    pair.pump();
    // A key update from the server, asking the client for one (rustls
    // sends its answer before its next data): traffic goes on both ways
    // under the new keys.
    pair.server.protocol.tls().refresh_traffic_keys().unwrap();
    let update = pair.server.pipe.take(usize::MAX);
    assert!(!update.is_empty(), "sent at once, from outside an event");
    pair.client.receive(&update);
    pair.client.protocol.tls().write(b"to server");
    pair.server.protocol.tls().write(b" after update");
    pair.pump();
    assert_eq!(record.borrow().received, b" after update");
    assert_eq!(server_record.borrow().received, b"pingto server");
    assert!(!pair.closed);
}

#[test]
fn pause_reading_holds_plaintext_back_and_resume_delivers_it_later() {
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let (server, record) = Recorder::new();
    let paused_once = Rc::new(Cell::new(false));
    let flag = paused_once.clone();
    let server = server.on_data(move |t, _| {
        if !flag.replace(true) {
            t.pause_reading();
        }
    });
    let payload = big.clone();
    let client = Recorder::new().0.on_handshake(move |t| t.write(&payload));
    let mut pair = tls_pair(server, client, Some(&reactor));
    pair.pump();
    let got = record.borrow().received.len();
    assert!(got < big.len(), "paused after the first delivery ({got})");
    let tls = pair.server.protocol.tls().clone();
    tls.resume_reading();
    // Delivered on a later turn, not inside resume_reading.
    assert_eq!(record.borrow().received.len(), got);
    pair.pump();
    assert!(record.borrow().received == big);
}

#[test]
fn tls_over_tls() {
    let pki = pki();
    let inner_server = TlsProtocol::server(pki.server_config(), Echo).unwrap();
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"nested"));
    let inner_client = TlsProtocol::client(
        pki.client_config(),
        server_name("localhost").unwrap(),
        client,
    )
    .unwrap();
    let mut pair = tls_pair(inner_server, inner_client, None);
    pair.pump();
    assert_eq!(record.borrow().received, b"nested");
}

/// A line protocol that upgrades after a `STARTTLS` line.
struct StartTlsServer {
    buffer: Vec<u8>,
    record: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for StartTlsServer {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let tls = TlsTransport::of(transport).unwrap();
        if tls.is_tls() {
            self.record.borrow_mut().extend_from_slice(data);
            transport.write(data);
            return;
        }
        self.buffer.extend_from_slice(data);
        if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
            let line = self.buffer[..end].to_vec();
            let rest = self.buffer.split_off(end + 2);
            self.buffer.clear();
            if line == b"STARTTLS" {
                transport.write(b"OK go ahead\r\n");
                let _ = tls.start_tls(TlsRole::Server(pki().server_config()), &rest);
            }
        }
    }
}

#[test]
fn starttls_upgrades_and_feeds_bytes_already_received() {
    let record = Rc::new(RefCell::new(Vec::new()));
    let server = TlsProtocol::plain(StartTlsServer {
        buffer: Vec::new(),
        record: record.clone(),
    });
    let (client, client_record) = Recorder::new();
    let client = client
        .on_made(|t| t.write(b"STARTTLS\r\n"))
        .on_data(|t, data| {
            let tls = TlsTransport::of(t).unwrap();
            if !tls.is_tls() && data.ends_with(b"OK go ahead\r\n") {
                let config = pki().client_config();
                tls.start_tls(
                    TlsRole::Client(config, server_name("localhost").unwrap()),
                    b"",
                )
                .unwrap();
            }
        })
        .on_handshake(|t| t.write(b"secret"));
    let mut pair = Pair::new(server, TlsProtocol::plain(client), None);
    pair.pump();
    assert_eq!(*record.borrow(), b"secret");
    let received = client_record.borrow().received.clone();
    assert!(received.ends_with(b"secret"), "{received:?}");
    assert!(pair.server.protocol.tls().is_handshake_complete());
}

#[test]
fn starttls_with_the_client_hello_in_the_same_read_is_fed_to_tls() {
    // A client that pipelines its ClientHello right after STARTTLS (not
    // allowed, but harmless): the bytes already read go to TLS.
    let record = Rc::new(RefCell::new(Vec::new()));
    let server = TlsProtocol::plain(StartTlsServer {
        buffer: Vec::new(),
        record: record.clone(),
    });
    let mut end = support::End::new(server, None);
    let (client, _) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"data"));
    let mut client_end = support::End::new(
        TlsProtocol::client(
            pki().client_config(),
            server_name("localhost").unwrap(),
            client,
        )
        .unwrap(),
        None,
    );
    let hello = client_end.pipe.take(usize::MAX);
    let mut first = b"STARTTLS\r\n".to_vec();
    first.extend_from_slice(&hello);
    end.receive(&first);
    assert_eq!(*end.pipe.closing.borrow(), Closing::Open);
    let reply = end.pipe.take(usize::MAX);
    assert!(reply.starts_with(b"OK go ahead\r\n"));
    client_end.receive(&reply[13..]);
    for _ in 0..4 {
        let a = client_end.pipe.take(usize::MAX);
        end.receive(&a);
        let b = end.pipe.take(usize::MAX);
        client_end.receive(&b);
    }
    assert_eq!(*record.borrow(), b"data");
}

#[test]
fn plaintext_pipelined_after_starttls_is_rejected() {
    let record = Rc::new(RefCell::new(Vec::new()));
    let server = TlsProtocol::plain(StartTlsServer {
        buffer: Vec::new(),
        record: record.clone(),
    });
    let mut end = support::End::new(server, None);
    end.receive(b"STARTTLS\r\nRCPT TO:<victim@example.org>\r\n");
    match end.pipe.closing.borrow().clone() {
        Closing::LostWithError(text) => assert!(text.contains("plaintext"), "{text}"),
        other => panic!("{other:?}"),
    }
    // Plaintext arriving later, once TLS is on, is not delivered either.
    let server = TlsProtocol::plain(StartTlsServer {
        buffer: Vec::new(),
        record: record.clone(),
    });
    let mut end = support::End::new(server, None);
    end.receive(b"STARTTLS\r\n");
    end.receive(b"RCPT TO:<victim@example.org>\r\n");
    match end.pipe.closing.borrow().clone() {
        Closing::LostWithError(text) => assert!(text.contains("plaintext"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(record.borrow().is_empty());
}

#[test]
fn mutual_tls_and_alpn_are_visible_to_the_protocols() {
    let pki = pki();
    let server_config = pki
        .server_settings()
        .require_client_certificate(pki.roots())
        .alpn(["h2", "http/1.1"])
        .build()
        .unwrap();
    let client_config = pki
        .client_settings()
        .client_certificate(vec![pki.client.cert.clone()], pki.client.key())
        .alpn(["http/1.1"])
        .build()
        .unwrap();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let (server, _) = Recorder::new();
    let server = server.on_handshake(move |t| {
        let tls = TlsTransport::of(t).unwrap();
        *s.borrow_mut() = Some((tls.alpn_protocol(), tls.peer_certificates()));
    });
    let mut pair = Pair::new(
        TlsProtocol::server(server_config, server).unwrap(),
        TlsProtocol::client(client_config, server_name("localhost").unwrap(), Echo).unwrap(),
        None,
    );
    pair.pump();
    let (alpn, certs) = seen.borrow().clone().unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(certs[0], pki.client.cert);
}

#[test]
fn sni_chooses_the_certificate() {
    let pki = pki();
    let other = pki.issue("other server", &["other.test"], false);
    let config = pki
        .server_settings()
        .sni_certificate("other.test", vec![other.cert.clone()], other.key())
        .unwrap()
        .build()
        .unwrap();
    for (name, expected) in [("other.test", &other.cert), ("localhost", &pki.server.cert)] {
        let mut pair = Pair::new(
            TlsProtocol::server(config.clone(), Echo).unwrap(),
            TlsProtocol::client(pki.client_config(), server_name(name).unwrap(), Echo).unwrap(),
            None,
        );
        pair.pump();
        assert_eq!(&pair.client.protocol.tls().peer_certificates()[0], expected);
    }
}

#[test]
fn dangerous_opt_out_accepts_an_unknown_certificate() {
    let config = ClientSettings::new()
        .dangerous_accept_any_server_certificate()
        .build()
        .unwrap();
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"x"));
    let mut pair = Pair::new(
        TlsProtocol::server(pki().server_config(), Echo).unwrap(),
        TlsProtocol::client(config, server_name("wrong.name").unwrap(), client).unwrap(),
        None,
    );
    pair.pump();
    assert_eq!(record.borrow().received, b"x");
}

#[test]
fn sessions_resume_by_default() {
    let pki = pki();
    let server_config = pki.server_config();
    let client_config = pki.client_config();
    let connect = || {
        let (client, record) = Recorder::new();
        let client = client.on_handshake(|t| t.write(b"x"));
        let mut pair = Pair::new(
            TlsProtocol::server(server_config.clone(), Echo).unwrap(),
            TlsProtocol::client(
                client_config.clone(),
                server_name("localhost").unwrap(),
                client,
            )
            .unwrap(),
            None,
        );
        pair.pump();
        assert_eq!(record.borrow().received, b"x");
        (
            pair.client.protocol.tls().is_resumed(),
            pair.server.protocol.tls().is_resumed(),
        )
    };
    assert_eq!(connect(), (false, false), "the first handshake is full");
    assert_eq!(connect(), (true, true), "the second resumes");
    // A server without tickets still resumes TLS 1.3 from its cache.
    let server_config = pki.server_settings().without_tickets().build().unwrap();
    let client_config = pki.client_config();
    let connect = || {
        let mut pair = Pair::new(
            TlsProtocol::server(server_config.clone(), Echo).unwrap(),
            TlsProtocol::client(
                client_config.clone(),
                server_name("localhost").unwrap(),
                Echo,
            )
            .unwrap(),
            None,
        );
        pair.pump();
        pair.client.protocol.tls().is_resumed()
    };
    assert!(!connect());
    assert!(connect());
}

#[test]
fn a_streaming_producer_that_is_not_paused_does_not_hold_the_close() {
    struct Idle;
    impl Producer for Idle {
        fn resume_producing(&self) {}
    }
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| {
        t.register_producer(Rc::new(Idle), true).unwrap();
        t.write(b"last words");
        // Never unregistered (a proxy whose other side went away).
        t.lose_connection();
    });
    let (server, server_record) = Recorder::new();
    let mut pair = tls_pair(server, client, None);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(server_record.borrow().received, b"last words");
    assert_eq!(record.borrow().lost_clean, Some(true));
}

#[test]
fn the_tls_transport_is_freed_with_its_connection() {
    let (client, _) = Recorder::new();
    let client = client.on_made(|t| t.write(b"x"));
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    let weak = Rc::downgrade(pair.client.protocol.tls());
    pair.client.protocol.tls().lose_connection();
    pair.pump();
    assert!(pair.closed);
    drop(pair);
    assert!(weak.upgrade().is_none(), "no reference cycle keeps it");
}

#[test]
fn reading_paused_before_the_handshake_does_not_stall_it() {
    // twisted#6385: a protocol that pauses reading at once must not keep
    // TLS from reading the handshake it needs to send anything.
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let (server, record) = Recorder::new();
    let server = server.on_made(|t| {
        t.pause_reading();
        t.write(b"greeting");
    });
    let (client, client_record) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"hello"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    pair.pump();
    assert!(pair.server.protocol.tls().is_handshake_complete());
    assert_eq!(client_record.borrow().received, b"greeting");
    // Paused: nothing delivered, and the lower transport stopped reading.
    assert!(record.borrow().received.is_empty());
    assert!(pair.server.pipe.reading_paused.get());
    pair.server.protocol.tls().resume_reading();
    pair.pump();
    assert_eq!(record.borrow().received, b"hello");
}

#[test]
fn lose_connection_after_lose_write_connection_closes_the_rest() {
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| {
        t.write(b"request");
        t.lose_write_connection();
    });
    let mut pair = tls_pair(Echo, client, None);
    // The handshake, up to the client's half-close.
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    let to_client = pair.server.pipe.take(usize::MAX);
    pair.client.receive(&to_client);
    assert!(pair.client.pipe.write_closed.get());
    assert_eq!(*pair.client.pipe.closing.borrow(), Closing::Open);
    pair.client.protocol.tls().lose_connection();
    assert_eq!(*pair.client.pipe.closing.borrow(), Closing::Lost);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(record.borrow().lost_clean, Some(true));
}

#[test]
fn half_close_then_read_the_reply() {
    // The Transport contract: reading goes on after lose_write_connection.
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| {
        t.write(b"request");
        t.lose_write_connection();
    });
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    assert_eq!(
        record.borrow().received,
        b"request",
        "the reply after a half-close"
    );
    assert!(pair.closed);
    assert_eq!(record.borrow().lost_clean, Some(true));
}

#[test]
fn half_closed_then_end_of_stream_without_close_notify_is_a_truncation() {
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    pair.client.protocol.tls().lose_write_connection();
    assert!(pair.client.pipe.write_closed.get());
    // The server's stream ends with no close_notify.
    pair.client
        .protocol
        .read_connection_lost(&pair.client.handle.clone());
    pair.pump();
    assert_eq!(record.borrow().lost_clean, Some(false));
    assert_eq!(
        record.borrow().lost_kind,
        Some(std::io::ErrorKind::UnexpectedEof)
    );
}

#[test]
fn close_notify_received_while_paused_is_honoured_on_resume() {
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let (server, record) = Recorder::new();
    let once = Rc::new(Cell::new(false));
    let flag = once.clone();
    let server = server.on_data(move |t, _| {
        if !flag.replace(true) {
            t.pause_reading();
        }
    });
    let (client, client_record) = Recorder::new();
    let client = client.on_handshake(|t| {
        t.write(b"data");
        t.lose_connection();
    });
    let mut pair = tls_pair(server, client, Some(&reactor));
    for _ in 0..3 {
        let to_server = pair.client.pipe.take(usize::MAX);
        pair.server.receive(&to_server);
        let to_client = pair.server.pipe.take(usize::MAX);
        pair.client.receive(&to_client);
    }
    assert_eq!(record.borrow().received, b"data");
    // The close_notify came with the data, while reading was paused.
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    pair.server.protocol.tls().resume_reading();
    reactor.iterate(Duration::ZERO).unwrap();
    // Answered and closed on resume, not left for the end of stream
    // (which would then be reported as a truncation).
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Lost);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(record.borrow().lost_clean, Some(true));
    assert_eq!(client_record.borrow().lost_clean, Some(true));
}

#[test]
fn clean_lower_close_without_close_notify_is_not_reported_clean() {
    // The lower transport ends "cleanly" without an end of stream first
    // (for TLS over TLS: the outer session's close): without our peer's
    // close_notify that is a possible truncation.
    let (client, record) = Recorder::new();
    let client = client.on_made(|t| t.write(b"hi"));
    let mut pair = tls_pair(Echo, client, None);
    pair.pump();
    assert!(pair.client.protocol.tls().is_handshake_complete());
    pair.client
        .lose(&torsion_protocol::CloseReason::ClosedByPeer);
    let record = record.borrow();
    assert_eq!(record.lost_clean, Some(false), "{:?}", record.lost);
    assert_eq!(record.lost_kind, Some(std::io::ErrorKind::UnexpectedEof));
}

/// A half-closeable protocol that answers once the peer's stream ends.
struct ReplyAtEnd {
    got: Vec<u8>,
}

impl Protocol for ReplyAtEnd {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn half_closeable(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, transport: &TransportRef) {
        transport.write(b"reply to ");
        transport.write(&self.got);
        transport.lose_connection();
    }
}

#[test]
fn close_notify_is_an_end_of_stream_for_a_half_closeable_protocol() {
    // As a socket's end of stream: the protocol hears
    // read_connection_lost and may still write before it closes.
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| {
        t.write(b"request");
        t.lose_write_connection();
    });
    let server = ReplyAtEnd { got: Vec::new() };
    let mut pair = tls_pair(server, client, None);
    pair.pump();
    assert_eq!(record.borrow().received, b"reply to request");
    assert!(pair.closed);
    assert_eq!(record.borrow().lost_clean, Some(true));
}

#[test]
fn tls_over_tls_outer_close_without_the_inner_close_notify_is_a_truncation() {
    let pki = pki();
    let inner_server = TlsProtocol::server(pki.server_config(), Echo).unwrap();
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"nested"));
    let inner_client = TlsProtocol::client(
        pki.client_config(),
        server_name("localhost").unwrap(),
        client,
    )
    .unwrap();
    let mut pair = tls_pair(inner_server, inner_client, None);
    pair.pump();
    assert_eq!(record.borrow().received, b"nested");
    // The server closes the outer session only: its close_notify, not the
    // inner one's.
    pair.server.protocol.tls().lose_connection();
    pair.pump();
    assert!(pair.closed);
    let record = record.borrow();
    assert_eq!(record.lost_clean, Some(false), "{:?}", record.lost);
    assert_eq!(record.lost_kind, Some(std::io::ErrorKind::UnexpectedEof));
}

#[test]
fn a_resume_from_inside_a_lower_write_waits_for_it_to_end() {
    // The lower transport resumes its producer (our proxy) while we write
    // to it: the close that resume releases must wait until the write is
    // over (it re-entered the TLS state mid-write).
    struct Idle;
    impl Producer for Idle {
        fn resume_producing(&self) {}
    }
    let (client, record) = Recorder::new();
    let client = client.on_handshake(|t| t.register_producer(Rc::new(Idle), true).unwrap());
    let (server, server_record) = Recorder::new();
    let mut pair = tls_pair(server, client, None);
    pair.pump();
    let tls = pair.client.protocol.tls().clone();
    // The lower transport pauses us, so our producer: the close is held.
    let proxy = pair.client.pipe.producer.borrow().clone().unwrap().0;
    proxy.pause_producing();
    tls.lose_connection();
    assert_eq!(*pair.client.pipe.closing.borrow(), Closing::Open);
    pair.client.pipe.resume_on_write.set(true);
    tls.write(b"last");
    // Resumed, the close went ahead once the write was over.
    assert_eq!(*pair.client.pipe.closing.borrow(), Closing::Lost);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(server_record.borrow().received, b"last");
    assert_eq!(record.borrow().lost_clean, Some(true));
}

/// Upgrades after `STARTTLS`, but pauses reading and starts TLS later,
/// from outside its events, with what it had not consumed.
struct LateStartTls {
    held: Rc<RefCell<Vec<u8>>>,
    record: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for LateStartTls {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        if TlsTransport::of(transport).unwrap().is_tls() {
            self.record.borrow_mut().extend_from_slice(data);
            return;
        }
        let rest = data.strip_prefix(b"STARTTLS\r\n").expect("the command");
        transport.write(b"OK\r\n");
        self.held.borrow_mut().extend_from_slice(rest);
        transport.pause_reading();
    }
}

#[test]
fn starttls_unread_bytes_go_before_those_held_back_since() {
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let held = Rc::new(RefCell::new(Vec::new()));
    let record = Rc::new(RefCell::new(Vec::new()));
    let server = TlsProtocol::plain(LateStartTls {
        held: held.clone(),
        record: record.clone(),
    });
    let mut end = support::End::new(server, Some(&reactor));
    let (client, _) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"data"));
    let mut client_end = support::End::new(
        TlsProtocol::client(
            pki().client_config(),
            server_name("localhost").unwrap(),
            client,
        )
        .unwrap(),
        Some(&reactor),
    );
    // The ClientHello arrives in two reads: the first with the command
    // (the protocol keeps it and pauses), the second while paused.
    let hello = client_end.pipe.take(usize::MAX);
    let mut first = b"STARTTLS\r\n".to_vec();
    first.extend_from_slice(&hello[..10]);
    end.receive(&first);
    end.receive(&hello[10..]);
    let tls = end.protocol.tls().clone();
    let unread = held.borrow().clone();
    tls.start_tls(TlsRole::Server(pki().server_config()), &unread)
        .unwrap();
    tls.resume_reading();
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(*end.pipe.closing.borrow(), Closing::Open);
    let reply = end.pipe.take(usize::MAX);
    assert!(reply.starts_with(b"OK\r\n"));
    client_end.receive(&reply[4..]);
    for _ in 0..4 {
        let a = client_end.pipe.take(usize::MAX);
        end.receive(&a);
        let b = end.pipe.take(usize::MAX);
        client_end.receive(&b);
        reactor.iterate(Duration::ZERO).unwrap();
    }
    assert_eq!(*record.borrow(), b"data");
}

/// A producer that does nothing but note that it was stopped.
#[derive(Default)]
struct Stuck {
    stopped: Cell<bool>,
}

impl Producer for Stuck {
    fn resume_producing(&self) {}
    fn stop_producing(&self) {
        self.stopped.set(true);
    }
}

#[test]
fn a_close_held_by_a_paused_streaming_producer_is_bounded_by_the_close_timeout() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let stuck = Rc::new(Stuck::default());
    let producer = stuck.clone();
    let (client, record) = Recorder::new();
    let client = client.on_handshake(move |t| t.register_producer(producer.clone(), true).unwrap());
    let (server, server_record) = Recorder::new();
    let mut pair = tls_pair(server, client, Some(&reactor));
    pair.pump();
    let tls = pair.client.protocol.tls().clone();
    // A peer that never reads keeps the producer paused.
    let proxy = pair.client.pipe.producer.borrow().clone().unwrap().0;
    proxy.pause_producing();
    tls.lose_connection();
    clock.advance(Duration::from_secs(4));
    tls.write(b"more");
    // It wrote: at 5 s the wait goes on for another period.
    clock.advance(Duration::from_secs(1));
    clock.advance(Duration::from_secs(4));
    assert!(!stuck.stopped.get());
    assert!(!pair.client.pipe.write_closed.get());
    clock.advance(Duration::from_secs(1));
    // Five seconds without a write: stopped, and the close goes on.
    assert!(stuck.stopped.get());
    assert!(pair.client.pipe.write_closed.get(), "close_notify sent");
    // The peer takes the bytes but does not answer within the timeout.
    let to_server = pair.client.pipe.take(usize::MAX);
    clock.advance(Duration::from_secs(5));
    assert_eq!(*pair.client.pipe.closing.borrow(), Closing::Lost);
    pair.server.receive(&to_server);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(server_record.borrow().received, b"more");
    assert_eq!(record.borrow().lost_clean, Some(true));
    assert_eq!(reactor.pending_call_count(), 0, "no timer left behind");
}

#[test]
fn a_close_held_by_a_pull_producer_that_never_unregisters_is_bounded() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let stuck = Rc::new(Stuck::default());
    let producer = stuck.clone();
    let client = Recorder::new()
        .0
        .on_handshake(move |t| t.register_producer(producer.clone(), false).unwrap());
    let mut pair = tls_pair(Echo, client, Some(&reactor));
    pair.pump();
    pair.client.protocol.tls().lose_connection();
    clock.advance(Duration::from_secs(4));
    assert!(!stuck.stopped.get());
    clock.advance(Duration::from_secs(1));
    assert!(stuck.stopped.get());
    // The close went on: close_notify, and the peer answers.
    pair.pump();
    assert!(pair.closed);
}

#[test]
fn an_end_of_stream_while_paused_waits_behind_the_bytes_held_back() {
    // The peer's last data, its close_notify and its end of stream all
    // arrive while reading is paused: on resume the data is delivered and
    // the close is clean (not a truncation, nothing lost).
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let (server, record) = Recorder::new();
    let once = Cell::new(false);
    let server = server.on_data(move |t, _| {
        if !once.replace(true) {
            t.pause_reading();
        }
    });
    let (client, _) = Recorder::new();
    let client = client.on_handshake(|t| t.write(b"one"));
    let mut pair = tls_pair(server, client, Some(&reactor));
    pair.pump();
    assert_eq!(record.borrow().received, b"one");
    let tls = pair.client.protocol.tls().clone();
    tls.write(b"two");
    tls.lose_connection();
    let to_server = pair.client.pipe.take(usize::MAX);
    pair.server.receive(&to_server);
    pair.server
        .protocol
        .read_connection_lost(&pair.server.handle.clone());
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Open);
    pair.server.protocol.tls().resume_reading();
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(record.borrow().received, b"onetwo");
    assert_eq!(*pair.server.pipe.closing.borrow(), Closing::Lost);
    pair.pump();
    assert!(pair.closed);
    assert_eq!(
        record.borrow().lost_clean,
        Some(true),
        "{:?}",
        record.borrow().lost
    );
}
