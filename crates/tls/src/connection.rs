//! The TLS wrapper: [`TlsProtocol`] runs rustls over any lower transport
//! and hands its inner protocol a [`TlsTransport`] that encrypts.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use torsion_protocol::{
    Address, CloseReason, DelayedCall, Keepalive, PeerCredentials, Producer, Protocol, Reactor,
    Transport, TransportRef, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
};

/// How long a handshake may take before the connection is dropped, unless
/// set otherwise ([`TlsProtocol::handshake_timeout`]).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Transport::lose_connection`] waits for the peer's
/// close_notify (or end of stream) after sending its own, and for a
/// registered producer that writes nothing, unless set otherwise
/// ([`TlsProtocol::close_timeout`]).
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which side of a TLS session to start, for [`TlsTransport::start_tls`].
#[derive(Clone)]
pub enum TlsRole {
    /// Act as the server with this configuration.
    Server(Arc<ServerConfig>),
    /// Act as the client with this configuration, verifying (and sending
    /// as SNI) this server name.
    Client(Arc<ClientConfig>, ServerName<'static>),
}

impl std::fmt::Debug for TlsRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsRole::Server(_) => f.write_str("TlsRole::Server"),
            TlsRole::Client(_, name) => write!(f, "TlsRole::Client({name:?})"),
        }
    }
}

impl TlsRole {
    fn connect(&self) -> Result<Connection, rustls::Error> {
        let mut conn: Connection = match self {
            TlsRole::Server(config) => ServerConnection::new(config.clone())?.into(),
            TlsRole::Client(config, name) => {
                ClientConnection::new(config.clone(), name.clone())?.into()
            }
        };
        // Records are handed to the lower transport at the end of every
        // event, whose buffer (and producer) is the back-pressure.
        conn.set_buffer_limit(None);
        Ok(conn)
    }
}

/// Why the inner protocol's connection ended, when the TLS layer decided.
#[derive(Clone, Debug)]
enum Fault {
    /// A TLS failure, a timeout, a refused STARTTLS:
    /// [`CloseReason::ProtocolError`].
    Error(String),
    /// The peer's stream ended without close_notify:
    /// [`CloseReason::Lost`] with `UnexpectedEof`.
    Truncated(String),
}

impl Fault {
    fn text(&self) -> &str {
        match self {
            Fault::Error(text) | Fault::Truncated(text) => text,
        }
    }

    fn reason(&self) -> CloseReason {
        match self {
            Fault::Error(text) => CloseReason::ProtocolError(text.clone()),
            Fault::Truncated(text) => {
                CloseReason::Lost(io::Error::new(io::ErrorKind::UnexpectedEof, text.clone()))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    Open,
    /// `lose_connection` was called; waiting for the handshake, or for a
    /// producer.
    Requested,
    /// Our close_notify is sent; waiting (bounded) for the peer's.
    Sent,
    /// The lower transport was asked to close (or was aborted).
    Done,
}

struct State {
    /// The rustls session; `None` while passing bytes through (before
    /// `start_tls`).
    conn: Option<Connection>,
    handshake_done: bool,
    /// Plaintext written before the handshake completed, in order.
    pending: Vec<u8>,
    /// Small writes made during one of the wrapper's events, encrypted
    /// together when it ends (fewer, fuller records).
    gather: Vec<u8>,
    /// Ciphertext received but not yet given to rustls (reading paused,
    /// or bytes handed over by `start_tls`).
    backlog: Vec<u8>,
    /// Whether any TLS byte was received yet (to name plaintext sent to a
    /// TLS port).
    seen_input: bool,
    closing: Closing,
    /// `lose_write_connection` was asked for.
    write_close: bool,
    fault: Option<Fault>,
    /// The peer's close_notify arrived.
    peer_closed: bool,
    handshake_timer: Option<DelayedCall>,
    /// Bounds the wait for a producer (while `Requested`), then for the
    /// peer's close_notify (while `Sent`).
    close_timer: Option<DelayedCall>,
}

/// The transport a TLS-wrapped protocol writes to: it encrypts what is
/// written and sends it over the lower transport (Twisted's
/// `TLSMemoryBIOProtocol` as its wrapped protocol's transport, and
/// `ISSLTransport`).
///
/// Reach it from a protocol's [`TransportRef`] with [`TlsTransport::of`]
/// to learn what was negotiated or to start TLS on a plain connection.
#[doc(alias = "ISSLTransport")]
pub struct TlsTransport {
    me: Weak<TlsTransport>,
    lower: RefCell<Option<TransportRef>>,
    state: RefCell<State>,
    /// The inner protocol's producer and whether it streams.
    producer: RefCell<Option<(Rc<dyn Producer>, bool)>>,
    /// Whether we paused the inner streaming producer.
    producer_paused: Cell<bool>,
    /// Whether the lower transport paused us (its producer).
    lower_paused: Cell<bool>,
    /// Whether our producer proxy is registered with the lower transport.
    registered_below: Cell<bool>,
    /// A lower write is under way: producer callbacks wait until it ends.
    flushing: Cell<bool>,
    /// A producer update arrived during a lower write.
    deferred_update: Cell<bool>,
    /// A pull request from below arrived during a lower write.
    deferred_pull: Cell<bool>,
    /// A resume from below, which may carry out a held close, arrived
    /// during a lower write.
    deferred_close: Cell<bool>,
    /// Inside one of the wrapper's own events: writes are flushed at its
    /// end rather than at once.
    in_event: Cell<bool>,
    /// Counts writes made while a close waits for the producer: a
    /// producer that writes is not stuck.
    progress: Cell<u64>,
    /// Reading is paused by the inner protocol.
    reading_paused: Cell<bool>,
    /// The lower stream ended while received bytes were held back by a
    /// pause: acted on once they are delivered.
    eof_pending: Cell<bool>,
    /// The connection is over (connection_lost heard, or aborted):
    /// nothing more is delivered.
    stopped: Cell<bool>,
    high: Cell<usize>,
    low: Cell<usize>,
    handshake_timeout: Cell<Duration>,
    close_timeout: Cell<Duration>,
    /// Runs deliveries that must wait for a later turn (after
    /// `resume_reading`, or `start_tls` outside an event).
    pump: RefCell<Option<Weak<dyn Pump>>>,
}

/// What a scheduled delivery calls: the wrapper's core.
trait Pump {
    fn pump(&self);
}

impl TlsTransport {
    fn new(role: Option<TlsRole>) -> Result<Rc<TlsTransport>, rustls::Error> {
        let conn = role.as_ref().map(TlsRole::connect).transpose()?;
        Ok(Rc::new_cyclic(|me| TlsTransport {
            me: me.clone(),
            lower: RefCell::new(None),
            state: RefCell::new(State {
                conn,
                handshake_done: false,
                pending: Vec::new(),
                gather: Vec::new(),
                backlog: Vec::new(),
                seen_input: false,
                closing: Closing::Open,
                write_close: false,
                fault: None,
                peer_closed: false,
                handshake_timer: None,
                close_timer: None,
            }),
            producer: RefCell::new(None),
            producer_paused: Cell::new(false),
            lower_paused: Cell::new(false),
            registered_below: Cell::new(false),
            flushing: Cell::new(false),
            deferred_update: Cell::new(false),
            deferred_pull: Cell::new(false),
            deferred_close: Cell::new(false),
            in_event: Cell::new(false),
            progress: Cell::new(0),
            reading_paused: Cell::new(false),
            eof_pending: Cell::new(false),
            stopped: Cell::new(false),
            high: Cell::new(DEFAULT_HIGH_WATER),
            low: Cell::new(DEFAULT_LOW_WATER),
            handshake_timeout: Cell::new(DEFAULT_HANDSHAKE_TIMEOUT),
            close_timeout: Cell::new(DEFAULT_CLOSE_TIMEOUT),
            pump: RefCell::new(None),
        }))
    }

    /// The TLS transport behind `transport`, if it is one: how a protocol
    /// wrapped by [`TlsProtocol`] reaches the negotiated details or
    /// [`TlsTransport::start_tls`] from its [`TransportRef`].
    pub fn of(transport: &TransportRef) -> Option<&TlsTransport> {
        transport.as_any()?.downcast_ref::<TlsTransport>()
    }

    fn lower(&self) -> Option<TransportRef> {
        self.lower.borrow().clone()
    }

    /// True once TLS is on (from the start, or after
    /// [`TlsTransport::start_tls`]).
    pub fn is_tls(&self) -> bool {
        self.state.borrow().conn.is_some()
    }

    /// True once the handshake has completed (Twisted's
    /// `handshakeCompleted` has been called).
    pub fn is_handshake_complete(&self) -> bool {
        self.state.borrow().handshake_done
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Option<T>) -> Option<T> {
        self.state.borrow().conn.as_ref().and_then(f)
    }

    /// The application protocol agreed by ALPN (for example `b"h2"`), if
    /// any (pyOpenSSL's `get_alpn_proto_negotiated`).
    #[doc(alias = "negotiatedProtocol")]
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.with_conn(|conn| conn.alpn_protocol().map(<[u8]>::to_vec))
    }

    /// On a server, the host name the client asked for (SNI).
    pub fn server_name(&self) -> Option<String> {
        self.with_conn(|conn| match conn {
            Connection::Server(server) => server.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        })
    }

    /// The peer's certificate chain, its own certificate first: the
    /// server's on a client; on a server, the client's when it sent one
    /// (mutual TLS). Empty before the handshake (Twisted's
    /// `getPeerCertificate`).
    #[doc(alias = "getPeerCertificate")]
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.with_conn(|conn| conn.peer_certificates().map(<[_]>::to_vec))
            .unwrap_or_default()
    }

    /// The negotiated protocol version (TLS 1.2 or 1.3).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.with_conn(|conn| conn.protocol_version())
    }

    /// True if this session was resumed (from a session ticket or the
    /// server's session cache) rather than fully negotiated.
    pub fn is_resumed(&self) -> bool {
        self.with_conn(|conn| conn.handshake_kind())
            .is_some_and(|kind| kind == rustls::HandshakeKind::Resumed)
    }

    /// Sends a TLS 1.3 key update that also asks the peer to update its
    /// keys (rustls also does this by itself when a cipher suite's limits
    /// require it). Call it sparingly: peers limit how often they accept
    /// one.
    ///
    /// # Errors
    /// `NotConnected` before the handshake, or if rustls refuses (TLS 1.2
    /// has no key update).
    pub fn refresh_traffic_keys(&self) -> io::Result<()> {
        {
            let mut state = self.state.borrow_mut();
            let State {
                conn,
                gather,
                handshake_done,
                ..
            } = &mut *state;
            let conn = conn
                .as_mut()
                .filter(|_| *handshake_done)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            // What was written is sent under the old keys.
            encrypt_gathered(conn, gather);
            conn.refresh_traffic_keys()
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
        }
        if !self.in_event.get() {
            self.flush();
        }
        Ok(())
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.with_conn(|conn| conn.negotiated_cipher_suite().map(|suite| suite.suite()))
    }

    /// Switches a plain connection to TLS (Twisted's `startTLS`), for
    /// STARTTLS in SMTP, IMAP, LDAP and the like: what was written before
    /// goes out in plaintext, what is written after is sent once the
    /// handshake completes.
    ///
    /// `unread` is what the protocol has received but not consumed after
    /// the command (for example the rest of its line buffer): it is given
    /// to TLS, as the first bytes of the handshake. On a server, bytes
    /// that are not a TLS handshake record there are plaintext the client
    /// pipelined after its STARTTLS command, and the connection is closed
    /// with a [`CloseReason::ProtocolError`] that says so: they are never
    /// delivered as if they had been encrypted.
    ///
    /// Only a [`TlsProtocol`] made with [`TlsProtocol::plain`] can start
    /// TLS later.
    ///
    /// # Errors
    /// `AlreadyExists` if TLS is on already; `InvalidData` for pipelined
    /// plaintext (the connection is closing); `NotConnected` once the
    /// connection is closing; `Other` if rustls refuses the
    /// configuration.
    #[doc(alias = "startTLS")]
    pub fn start_tls(&self, role: TlsRole, unread: &[u8]) -> io::Result<()> {
        if self.stopped.get() || self.state.borrow().closing != Closing::Open {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is closing",
            ));
        }
        if self.is_tls() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "TLS is on already",
            ));
        }
        let server = matches!(role, TlsRole::Server(_));
        if server && unread.first().is_some_and(|&byte| byte != HANDSHAKE_RECORD) {
            let fault = format!(
                "the client sent {} bytes of plaintext after its STARTTLS command, \
                 before the TLS handshake; refused (possible command injection)",
                unread.len()
            );
            self.fail(Fault::Error(fault.clone()));
            return Err(io::Error::new(io::ErrorKind::InvalidData, fault));
        }
        let conn = role.connect().map_err(io::Error::other)?;
        {
            let mut state = self.state.borrow_mut();
            state.conn = Some(conn);
            // `unread` came before anything held back since (reading
            // paused): it goes first.
            state.backlog.splice(0..0, unread.iter().copied());
        }
        self.start_handshake_timer();
        // The client's hello goes out now; received bytes are processed
        // when the current event ends, or on the next turn.
        if !self.in_event.get() {
            self.flush();
            self.schedule_pump();
        }
        Ok(())
    }

    fn start_handshake_timer(&self) {
        let Some(reactor) = self.reactor() else {
            return;
        };
        let timeout = self.handshake_timeout.get();
        let me = self.me.clone();
        let timer = reactor.call_later(timeout, move |_| {
            let Some(me) = me.upgrade() else { return };
            if me.state.borrow().handshake_done || me.stopped.get() {
                return;
            }
            tracing::debug!(?timeout, "TLS handshake timed out");
            me.set_fault(Fault::Error(format!(
                "TLS handshake not completed within {timeout:?}"
            )));
            me.state.borrow_mut().closing = Closing::Done;
            if let Some(lower) = me.lower() {
                lower.abort_connection();
            }
        });
        if let Some(old) = self.state.borrow_mut().handshake_timer.replace(timer) {
            let _ = old.cancel();
        }
    }

    fn set_fault(&self, fault: Fault) {
        let mut state = self.state.borrow_mut();
        if state.fault.is_none() {
            state.fault = Some(fault);
        }
    }

    /// Ends the connection for `fault`: what rustls queued (an alert) is
    /// sent, then the lower transport closes with the fault's text.
    fn fail(&self, fault: Fault) {
        self.set_fault(fault);
        self.flush();
        let text = {
            let mut state = self.state.borrow_mut();
            if state.closing == Closing::Done {
                return;
            }
            state.closing = Closing::Done;
            state
                .fault
                .as_ref()
                .map(|f| f.text().to_owned())
                .unwrap_or_default()
        };
        self.unregister_below();
        if let Some(lower) = self.lower() {
            lower.lose_connection_with_error(text);
        }
    }

    fn schedule_pump(&self) {
        let Some(pump) = self.pump.borrow().clone() else {
            return;
        };
        if let Some(reactor) = self.reactor() {
            reactor.call_soon(move |_| {
                if let Some(pump) = pump.upgrade() {
                    pump.pump();
                }
            });
        }
    }

    /// Sends everything rustls has ready to the lower transport, in one
    /// gathered write per 64 records.
    fn flush(&self) {
        let Some(lower) = self.lower() else { return };
        if self.flushing.replace(true) {
            return;
        }
        {
            let mut state = self.state.borrow_mut();
            let State { conn, gather, .. } = &mut *state;
            if let Some(conn) = conn.as_mut() {
                encrypt_gathered(conn, gather);
                let mut out = LowerWriter(&*lower);
                while conn.wants_write() {
                    if conn.write_tls(&mut out).is_err() {
                        break;
                    }
                }
            }
        }
        self.flushing.set(false);
        if self.deferred_update.replace(false) {
            self.update_producer();
        }
        if self.deferred_pull.replace(false) {
            self.pull();
        }
        if self.deferred_close.replace(false) {
            self.try_close();
        }
    }

    /// Pauses or resumes the inner streaming producer to match the
    /// buffers: the lower transport's (it pauses us) and the plaintext
    /// held until the handshake completes.
    fn update_producer(&self) {
        if self.flushing.get() {
            self.deferred_update.set(true);
            return;
        }
        let Some((producer, true)) = self.producer.borrow().clone() else {
            return;
        };
        let pending = self.state.borrow().pending.len();
        let paused = self.producer_paused.get();
        let want_paused = self.lower_paused.get()
            || pending > self.high.get()
            || (paused && pending > self.low.get());
        if want_paused != paused {
            self.producer_paused.set(want_paused);
            if want_paused {
                producer.pause_producing();
            } else {
                producer.resume_producing();
            }
        }
    }

    /// The lower transport asks a pull producer for more.
    fn pull(&self) {
        if self.flushing.get() {
            self.deferred_pull.set(true);
            return;
        }
        let producer = self.producer.borrow().clone();
        if let Some((producer, false)) = producer {
            producer.resume_producing();
        }
    }

    fn register_below(&self, streaming: bool) {
        let Some(lower) = self.lower() else { return };
        let proxy: Rc<dyn Producer> = Rc::new(ProducerProxy(self.me.clone()));
        match lower.register_producer(proxy, streaming) {
            Ok(()) => self.registered_below.set(true),
            Err(error) => {
                tracing::debug!(%error, "TLS: the lower transport has a producer already");
            }
        }
    }

    fn unregister_below(&self) {
        if self.registered_below.replace(false) {
            if let Some(lower) = self.lower() {
                lower.unregister_producer();
            }
        }
    }

    /// Carries out a requested close once nothing holds it: a producer
    /// that is pulling or paused, or plaintext waiting for the handshake.
    fn try_close(&self) {
        if self.stopped.get() {
            return;
        }
        if self.state.borrow().closing != Closing::Requested {
            return;
        }
        let held = match &*self.producer.borrow() {
            Some((_, false)) => true,
            Some((_, true)) => self.producer_paused.get(),
            None => false,
        };
        if held {
            self.bound_producer_wait();
            return;
        }
        // Nothing holds the close any more: that wait is over.
        let timer = self.state.borrow_mut().close_timer.take();
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        let (tls, handshake_done, pending, write_close, fault) = {
            let state = self.state.borrow();
            (
                state.conn.is_some(),
                state.handshake_done,
                !state.pending.is_empty(),
                state.write_close,
                state.fault.clone(),
            )
        };
        if tls && !handshake_done && pending {
            // What was written goes out after the handshake (bounded by
            // the handshake timeout), then the close.
            return;
        }
        let Some(lower) = self.lower() else { return };
        self.unregister_below();
        if let Some(fault) = fault {
            self.state.borrow_mut().closing = Closing::Done;
            if tls && handshake_done {
                self.send_close_notify();
            }
            lower.lose_connection_with_error(fault.text().to_owned());
            return;
        }
        let peer_closed = self.state.borrow().peer_closed;
        // After the peer's close_notify a write-side close ends it all.
        let write_close = write_close && !peer_closed;
        if !tls || !handshake_done {
            self.state.borrow_mut().closing = Closing::Done;
            if write_close {
                lower.lose_write_connection();
            } else {
                lower.lose_connection();
            }
            return;
        }
        self.send_close_notify();
        if write_close {
            self.state.borrow_mut().closing = Closing::Done;
            lower.lose_write_connection();
            return;
        }
        let reactor = self.reactor();
        match reactor {
            Some(reactor) if !peer_closed => {
                // Wait, bounded, for the peer's close_notify or end of
                // stream; our side is shut for writing meanwhile.
                self.state.borrow_mut().closing = Closing::Sent;
                self.arm_close_wait(&reactor, 0);
                lower.lose_write_connection();
            }
            _ => {
                self.state.borrow_mut().closing = Closing::Done;
                lower.lose_connection();
            }
        }
    }

    /// True once `lose_connection` stopped reading (a write-side close
    /// alone leaves it going).
    fn reading_stopped(&self) -> bool {
        let state = self.state.borrow();
        state.closing != Closing::Open && !state.write_close
    }

    /// A close held by a producer waits at most the close timeout for
    /// the producer to write something (a pull producer that never
    /// unregisters, a streaming one a never-reading peer keeps paused);
    /// then the producer is stopped and the close goes on.
    fn bound_producer_wait(&self) {
        if self.state.borrow().close_timer.is_some() {
            return;
        }
        let Some(reactor) = self.reactor() else {
            return;
        };
        let timeout = self.close_timeout.get();
        let seen = self.progress.get();
        let me = self.me.clone();
        let timer = reactor.call_later(timeout, move |_| {
            let Some(me) = me.upgrade() else { return };
            me.state.borrow_mut().close_timer = None;
            if me.stopped.get() || me.state.borrow().closing != Closing::Requested {
                return;
            }
            if me.progress.get() == seen {
                tracing::debug!(
                    ?timeout,
                    "TLS: the producer held the close too long; stopping it"
                );
                let producer = me.producer.borrow_mut().take();
                me.producer_paused.set(false);
                me.unregister_below();
                if let Some((producer, _)) = producer {
                    producer.stop_producing();
                }
            }
            // Closes now, or waits another period for a producer that
            // wrote meanwhile.
            me.try_close();
        });
        self.state.borrow_mut().close_timer = Some(timer);
    }

    fn send_close_notify(&self) {
        let mut state = self.state.borrow_mut();
        let State { conn, gather, .. } = &mut *state;
        if let Some(conn) = conn.as_mut() {
            // What was written comes first.
            encrypt_gathered(conn, gather);
            conn.send_close_notify();
        }
        drop(state);
        self.flush();
    }

    /// Waits, bounded, for the peer's close_notify after ours: after the
    /// close timeout the lower transport is closed. The period starts
    /// again while the peer is still taking what we queued below (a slow
    /// reader), up to [`MAX_CLOSE_WAIT_PERIODS`] in all; a peer that takes
    /// nothing for a whole period, or is not done by then, is cut off.
    fn arm_close_wait(&self, reactor: &Reactor, period: u32) {
        let me = self.me.clone();
        let timeout = self.close_timeout.get();
        let queued = self
            .lower()
            .map_or(0, |lower| lower.get_write_buffer_size());
        let timer = reactor.call_later(timeout, move |reactor| {
            if let Some(me) = me.upgrade() {
                tracing::debug!(?timeout, "TLS: no close_notify from the peer; closing");
                me.close_wait_over(reactor, queued, period);
            }
        });
        self.state.borrow_mut().close_timer = Some(timer);
    }

    /// The close timeout passed without the peer's close_notify; `queued`
    /// is what waited below when the period began, `period` how many
    /// periods have passed before this one.
    fn close_wait_over(&self, reactor: &Reactor, queued: usize, period: u32) {
        self.state.borrow_mut().close_timer = None;
        let now = self
            .lower()
            .map_or(0, |lower| lower.get_write_buffer_size());
        if now == 0 {
            self.close_lower();
            return;
        }
        if now < queued && period + 1 < MAX_CLOSE_WAIT_PERIODS {
            // Still being read, slowly: another period.
            if self.state.borrow().closing == Closing::Sent {
                self.arm_close_wait(reactor, period + 1);
            }
            return;
        }
        // Not a byte taken for a whole period (our close_notify among
        // them), or still not done after the last period: a graceful close
        // would wait on that queue without bound.
        tracing::debug!("TLS: the peer does not read our close; aborting");
        {
            let mut state = self.state.borrow_mut();
            if state.closing == Closing::Done {
                return;
            }
            state.closing = Closing::Done;
        }
        if let Some(lower) = self.lower() {
            lower.abort_connection();
        }
    }

    /// Closes the lower transport after our close_notify (the wait is
    /// over).
    fn close_lower(&self) {
        let timer = {
            let mut state = self.state.borrow_mut();
            if state.closing == Closing::Done {
                return;
            }
            state.closing = Closing::Done;
            state.close_timer.take()
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        if let Some(lower) = self.lower() {
            lower.lose_connection();
        }
    }
}

thread_local! {
    /// The buffer decrypted plaintext is read into before it is handed to
    /// an inner protocol.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The page size that store-to-load forwarding compares addresses
/// modulo (4 KiB on x86-64 and most other CPUs).
const PAGE: usize = 4096;

/// Where in a buffer starting at `scratch` to copy bytes read from
/// `source` so that the two are half a page apart modulo the page size.
///
/// A copy between addresses a multiple of 4 KiB apart (or nearly) runs
/// at a fraction of its speed on x86-64 ("4K aliasing": each load waits
/// for the store before it whose low 12 address bits match). rustls
/// allocates a fresh 16 KiB buffer per received record, and malloc hands
/// back the same address each time, so a process whose scratch buffer
/// landed at the wrong offset paid that on every record: callgrind
/// counted the same instructions as tokio-rustls, while `perf record`
/// put 2.6× tokio-rustls's samples in this one copy.
fn unaliased_start(source: *const u8, scratch: *const u8) -> usize {
    let (source, scratch) = (source as usize % PAGE, scratch as usize % PAGE);
    (source + PAGE / 2 + PAGE - scratch) % PAGE
}

/// How many close timeouts a peer that still reads, slowly, is given to
/// take what was queued before our close_notify; then the connection is
/// aborted, so a trickling reader cannot hold a descriptor for hours.
const MAX_CLOSE_WAIT_PERIODS: u32 = 4;

/// Writes smaller than this, made during one of the wrapper's events, are
/// gathered and encrypted together at its end.
const GATHER_BELOW: usize = 4096;

/// Gathered plaintext is encrypted once it reaches this (one full record).
const GATHER_LIMIT: usize = 16 * 1024;

/// Encrypts what was gathered; a buffer that grew large is freed, so an
/// idle connection holds little.
fn encrypt_gathered(conn: &mut Connection, gather: &mut Vec<u8>) {
    if gather.is_empty() {
        return;
    }
    let _ = conn.writer().write_all(gather);
    gather.clear();
    if gather.capacity() > GATHER_LIMIT {
        *gather = Vec::new();
    }
}

/// A TLS handshake record's first byte (content type 22).
const HANDSHAKE_RECORD: u8 = 0x16;

/// Writes TLS records to the lower transport; a vectored write becomes one
/// `write_sequence`.
struct LowerWriter<'a>(&'a dyn Transport);

impl Write for LowerWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut parts: [&[u8]; 64] = [&[]; 64];
        let mut total = 0;
        let mut count = 0;
        for (slot, buf) in parts.iter_mut().zip(bufs) {
            *slot = buf;
            total += buf.len();
            count += 1;
        }
        self.0.write_sequence(&parts[..count]);
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the TLS layer registers as the producer of the lower transport:
/// it passes pause, resume and stop on to the inner protocol's producer.
struct ProducerProxy(Weak<TlsTransport>);

impl Producer for ProducerProxy {
    fn pause_producing(&self) {
        if let Some(tls) = self.0.upgrade() {
            tls.lower_paused.set(true);
            tls.update_producer();
        }
    }

    fn resume_producing(&self) {
        let Some(tls) = self.0.upgrade() else { return };
        tls.lower_paused.set(false);
        let streaming = matches!(&*tls.producer.borrow(), Some((_, true)));
        if streaming {
            tls.update_producer();
        } else {
            tls.pull();
        }
        // Called from inside our own lower write (TLS over TLS, or a
        // transport that resumes its producer as it writes), the close
        // waits until the write is over, as the updates above do.
        if tls.flushing.get() {
            tls.deferred_close.set(true);
        } else {
            tls.try_close();
        }
    }

    fn stop_producing(&self) {
        let Some(tls) = self.0.upgrade() else { return };
        tls.registered_below.set(false);
        let producer = tls.producer.borrow_mut().take();
        if let Some((producer, _)) = producer {
            producer.stop_producing();
        }
    }
}

impl Transport for TlsTransport {
    /// Encrypts `data` (or, before the handshake, queues it in order).
    /// Inside the wrapper's own events the records go out when the event
    /// ends, in one lower write; otherwise at once.
    fn write(&self, data: &[u8]) {
        self.write_sequence(&[data]);
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        if self.stopped.get() {
            return;
        }
        let over_pending = {
            let mut state = self.state.borrow_mut();
            let open = match state.closing {
                Closing::Open => !state.write_close,
                // A registered producer may finish its work.
                Closing::Requested => {
                    let open = self.producer.borrow().is_some();
                    self.progress.set(self.progress.get() + u64::from(open));
                    open
                }
                Closing::Sent | Closing::Done => false,
            };
            if !open {
                return;
            }
            let State {
                conn,
                handshake_done,
                pending,
                ..
            } = &mut *state;
            match conn {
                None => {
                    drop(state);
                    if let Some(lower) = self.lower() {
                        lower.write_sequence(data);
                    }
                    return;
                }
                Some(_) if !*handshake_done => {
                    for part in data {
                        pending.extend_from_slice(part);
                    }
                    pending.len() > self.high.get()
                }
                Some(_) => {
                    let total: usize = data.iter().map(|part| part.len()).sum();
                    if self.in_event.get() && total < GATHER_BELOW {
                        let gather = &mut state.gather;
                        for part in data {
                            gather.extend_from_slice(part);
                        }
                        if gather.len() >= GATHER_LIMIT {
                            let State { conn, gather, .. } = &mut *state;
                            encrypt_gathered(conn.as_mut().expect("TLS is on"), gather);
                        }
                    } else {
                        let State { conn, gather, .. } = &mut *state;
                        let conn = conn.as_mut().expect("TLS is on");
                        encrypt_gathered(conn, gather);
                        let mut writer = conn.writer();
                        for part in data {
                            // The buffer limit is off: rustls takes it all.
                            let _ = writer.write_all(part);
                        }
                    }
                    false
                }
            }
        };
        if over_pending {
            self.update_producer();
        }
        if !self.in_event.get() {
            self.flush();
        }
    }

    /// Sends close_notify once everything written is sent (after the
    /// handshake, if it is still under way, and after a registered
    /// producer is done: it is stopped if it goes a close timeout without
    /// writing), then closes the lower transport after the peer's
    /// close_notify or end of stream, or after the close timeout,
    /// whichever comes first. Safe before the handshake, twice, and after
    /// the connection is gone.
    fn lose_connection(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.closing != Closing::Open {
                // After `lose_write_connection`, this closes the rest.
                if std::mem::replace(&mut state.write_close, false)
                    && state.closing == Closing::Done
                    && !self.stopped.get()
                {
                    drop(state);
                    if let Some(lower) = self.lower() {
                        lower.lose_connection();
                    }
                }
                return;
            }
            state.closing = Closing::Requested;
        }
        self.try_close();
    }

    fn lose_connection_with_error(&self, fault: String) {
        self.set_fault(Fault::Error(fault));
        self.lose_connection();
    }

    /// Drops the connection at once: nothing more is sent or delivered.
    fn abort_connection(&self) {
        self.stopped.set(true);
        self.state.borrow_mut().closing = Closing::Done;
        if let Some(lower) = self.lower() {
            lower.abort_connection();
        }
    }

    fn get_peer(&self) -> Address {
        self.lower()
            .map_or(Address::Unknown, |lower| lower.get_peer())
    }

    fn get_host(&self) -> Address {
        self.lower()
            .map_or(Address::Unknown, |lower| lower.get_host())
    }

    /// Plaintext waiting for the handshake plus what the lower transport
    /// holds.
    fn get_write_buffer_size(&self) -> usize {
        let pending = self.state.borrow().pending.len();
        pending
            + self
                .lower()
                .map_or(0, |lower| lower.get_write_buffer_size())
    }

    fn is_closing(&self) -> bool {
        let state = self.state.borrow();
        self.stopped.get()
            || state.closing != Closing::Open
            || state.write_close
            || self.lower().is_none_or(|lower| lower.is_closing())
    }

    /// Sends close_notify after what is written (TLS 1.3 lets the peer go
    /// on sending), then shuts the lower transport's write side.
    fn lose_write_connection(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.closing != Closing::Open || state.write_close {
                return;
            }
            state.write_close = true;
            state.closing = Closing::Requested;
        }
        self.try_close();
    }

    /// Stops delivering data. The lower transport stops reading too,
    /// except during a handshake, which needs the peer's messages: it goes
    /// on, and reading stops when it completes (twisted#6385).
    fn pause_reading(&self) {
        self.reading_paused.set(true);
        let handshaking = {
            let state = self.state.borrow();
            state.conn.is_some() && !state.handshake_done
        };
        if handshaking {
            return;
        }
        if let Some(lower) = self.lower() {
            lower.pause_reading();
        }
    }

    /// Resumes reading; what was received meanwhile is delivered on the
    /// next turn (never from inside this call).
    fn resume_reading(&self) {
        if !self.reading_paused.replace(false) {
            return;
        }
        if let Some(lower) = self.lower() {
            lower.resume_reading();
        }
        self.schedule_pump();
    }

    /// Registers the inner protocol's producer: the TLS layer pauses it
    /// while plaintext waits for the handshake above the high watermark,
    /// and while the lower transport's buffer is full (the TLS layer is
    /// that transport's producer meanwhile).
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()> {
        {
            let mut slot = self.producer.borrow_mut();
            if slot.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a producer is already registered with this transport",
                ));
            }
            *slot = Some((producer, streaming));
        }
        self.producer_paused.set(false);
        self.lower_paused.set(false);
        self.register_below(streaming);
        if streaming {
            self.update_producer();
        } else if !self.registered_below.get() {
            self.pull();
        }
        Ok(())
    }

    fn unregister_producer(&self) {
        if self.producer.borrow_mut().take().is_none() {
            return;
        }
        self.producer_paused.set(false);
        self.unregister_below();
        self.try_close();
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.high.set(high);
        self.low.set(low.min(high));
        if let Some(lower) = self.lower() {
            lower.set_write_buffer_limits(high, low);
        }
    }

    fn reactor(&self) -> Option<Reactor> {
        self.lower().and_then(|lower| lower.reactor())
    }

    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        self.lower()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?
            .peer_credentials()
    }

    fn set_tcp_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.lower()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?
            .set_tcp_nodelay(nodelay)
    }

    fn tcp_nodelay(&self) -> io::Result<bool> {
        self.lower()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?
            .tcp_nodelay()
    }

    fn set_tcp_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.lower()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?
            .set_tcp_keepalive(keepalive)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A protocol wrapped in TLS (Twisted's `TLSMemoryBIOProtocol`): it runs
/// as the protocol of any lower transport (TCP, a Unix socket, an
/// in-memory transport, TLS itself) and gives the inner protocol a
/// [`TlsTransport`] that encrypts. The inner protocol sees the ordinary
/// [`Transport`] contract and is never told it is encrypted, except
/// through [`Protocol::handshake_completed`].
///
/// Its events:
/// - the inner protocol's `connection_made` at once (writes wait for the
///   handshake, in order);
/// - `handshake_completed` when the handshake is done, before any data;
/// - `data_received` with decrypted data;
/// - `connection_lost` with: a clean reason after close_notify, a
///   [`CloseReason::Lost`] of kind `UnexpectedEof` when the peer's stream
///   ends without close_notify (a possible truncation), a
///   [`CloseReason::ProtocolError`] naming the alert or cause when the
///   handshake fails (unknown CA, wrong name, no common ALPN protocol, a
///   plaintext peer, ...) or times out.
#[doc(alias = "TLSMemoryBIOProtocol")]
pub struct TlsProtocol<P> {
    core: Rc<Core<P>>,
}

struct Core<P> {
    tls: Rc<TlsTransport>,
    /// The same transport, as the inner protocol is handed it.
    handle: TransportRef,
    protocol: RefCell<P>,
    /// The inner protocol heard `connection_lost`.
    done: Cell<bool>,
    /// Where the reason the inner protocol hears is left for a client
    /// factory, which the connector tells the lower transport's reason.
    heard: std::cell::OnceCell<HeardSlot>,
}

/// The reason a [`TlsProtocol`] gave its inner protocol in
/// `connection_lost`, when it differs from the lower transport's (a TLS
/// failure, a handshake timeout, a truncation, the peer's close_notify):
/// left by the protocol just before the connector calls
/// `client_connection_lost`, and taken by [`TlsClientFactory`](crate::TlsClientFactory).
pub(crate) type HeardSlot = Rc<RefCell<Option<CloseReason>>>;

impl<P: Protocol> TlsProtocol<P> {
    fn with_role(role: Option<TlsRole>, inner: P) -> Result<TlsProtocol<P>, rustls::Error> {
        let tls = TlsTransport::new(role)?;
        let handle: TransportRef = tls.clone();
        let core = Rc::new(Core {
            tls,
            handle,
            protocol: RefCell::new(inner),
            done: Cell::new(false),
            heard: std::cell::OnceCell::new(),
        });
        let pump: Weak<dyn Pump> = Rc::downgrade(&(core.clone() as Rc<dyn Pump>));
        *core.tls.pump.borrow_mut() = Some(pump);
        Ok(TlsProtocol { core })
    }

    /// `inner` as the server side of a TLS session.
    ///
    /// # Errors
    /// If rustls refuses the configuration.
    pub fn server(config: Arc<ServerConfig>, inner: P) -> Result<TlsProtocol<P>, rustls::Error> {
        TlsProtocol::with_role(Some(TlsRole::Server(config)), inner)
    }

    /// `inner` as the client side of a TLS session with `server_name`
    /// (sent as SNI and verified against the server's certificate).
    ///
    /// # Errors
    /// If rustls refuses the configuration.
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        inner: P,
    ) -> Result<TlsProtocol<P>, rustls::Error> {
        TlsProtocol::with_role(Some(TlsRole::Client(config, server_name)), inner)
    }

    /// `inner` over a plain connection that may switch to TLS later with
    /// [`TlsTransport::start_tls`] (STARTTLS). Until then bytes pass
    /// through unchanged.
    pub fn plain(inner: P) -> TlsProtocol<P> {
        TlsProtocol::with_role(None, inner).expect("no TLS session to configure")
    }

    /// Sets how long the handshake may take (default 30 s); past it the
    /// connection is aborted and the protocol hears a
    /// [`CloseReason::ProtocolError`]. Timed on the reactor's clock.
    #[must_use]
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        self.core.tls.handshake_timeout.set(timeout);
        self
    }

    /// Sets how long a close waits for the peer's close_notify after
    /// sending ours, and how long it waits for a registered producer that
    /// writes nothing before stopping it (default 5 s).
    #[must_use]
    pub fn close_timeout(self, timeout: Duration) -> Self {
        self.core.tls.close_timeout.set(timeout);
        self
    }

    /// Leaves in `slot` the reason the inner protocol hears when it
    /// differs from the lower transport's, for the client factory.
    pub(crate) fn report_to(self, slot: HeardSlot) -> Self {
        let _ = self.core.heard.set(slot);
        self
    }

    /// The TLS transport the inner protocol writes to.
    pub fn tls(&self) -> &Rc<TlsTransport> {
        &self.core.tls
    }

    /// The wrapped protocol (borrowed; not while it is running).
    pub fn inner(&self) -> std::cell::Ref<'_, P> {
        self.core.protocol.borrow()
    }
}

impl<P: Protocol> Core<P> {
    /// Runs `f` as one of the wrapper's events: writes made meanwhile are
    /// flushed in one go at the end.
    fn event(&self, f: impl FnOnce()) {
        let nested = self.tls.in_event.replace(true);
        f();
        if !nested {
            self.tls.in_event.set(false);
            self.tls.flush();
        }
    }

    /// Feeds `input` to rustls and delivers what it decrypts.
    fn receive(&self, mut input: &[u8]) {
        let tls = &self.tls;
        loop {
            if tls.stopped.get() || self.done.get() {
                return;
            }
            if tls.state.borrow().conn.is_none() {
                // Passing through (before STARTTLS).
                if input.is_empty() {
                    return;
                }
                if tls.reading_paused.get() {
                    tls.state.borrow_mut().backlog.extend_from_slice(input);
                    return;
                }
                self.protocol
                    .borrow_mut()
                    .data_received(&self.handle, input);
                // A `start_tls` there left its unread bytes in the backlog.
                let backlog = std::mem::take(&mut tls.state.borrow_mut().backlog);
                if backlog.is_empty() || !tls.is_tls() {
                    return;
                }
                return self.receive(&backlog);
            }
            // A paused protocol does not stop a handshake.
            if tls.reading_paused.get() && tls.state.borrow().handshake_done {
                tls.state.borrow_mut().backlog.extend_from_slice(input);
                return;
            }
            let processed = {
                let mut state = tls.state.borrow_mut();
                let state = &mut *state;
                if !state.seen_input && !input.is_empty() {
                    state.seen_input = true;
                    if matches!(state.conn, Some(Connection::Server(_)))
                        && input[0] != HANDSHAKE_RECORD
                    {
                        Err(Fault::Error(not_tls_message(input)))
                    } else {
                        Ok(())
                    }
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    let conn = state.conn.as_mut().expect("TLS is on");
                    let before = input.len();
                    match conn.read_tls(&mut input) {
                        Ok(_) => {}
                        Err(error)
                            if error.kind() == io::ErrorKind::Other
                                && before == input.len()
                                && conn
                                    .process_new_packets()
                                    .is_ok_and(|io| io.plaintext_bytes_to_read() == 0) =>
                        {
                            return Err(Fault::Error(format!("TLS: {error}")));
                        }
                        // Received plaintext is full: deliver, then feed
                        // the rest.
                        Err(error) if error.kind() == io::ErrorKind::Other => {}
                        Err(error) => return Err(Fault::Error(format!("TLS: {error}"))),
                    }
                    conn.process_new_packets().map_err(|error| {
                        let during = if conn.is_handshaking() {
                            "TLS handshake failed"
                        } else {
                            "TLS error"
                        };
                        Fault::Error(format!("{during}: {}", describe(&error)))
                    })
                })
            };
            let io_state = match processed {
                Ok(io_state) => io_state,
                Err(fault) => {
                    tracing::debug!(fault = fault.text(), "TLS failure");
                    tls.fail(fault);
                    return;
                }
            };
            self.check_handshake();
            if !self.deliver(io_state.plaintext_bytes_to_read()) {
                // Paused: keep what was not fed.
                tls.state.borrow_mut().backlog.extend_from_slice(input);
                return;
            }
            if self.drained(io_state.peer_has_closed()) || input.is_empty() {
                return;
            }
        }
    }

    /// Notes a completed handshake: sends what was written meanwhile and
    /// tells the inner protocol.
    fn check_handshake(&self) {
        let tls = &self.tls;
        let timer = {
            let mut state = tls.state.borrow_mut();
            let state = &mut *state;
            let Some(conn) = state.conn.as_mut() else {
                return;
            };
            if state.handshake_done || conn.is_handshaking() {
                return;
            }
            state.handshake_done = true;
            if !state.pending.is_empty() {
                let _ = conn.writer().write_all(&state.pending);
                state.pending = Vec::new();
            }
            state.handshake_timer.take()
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        tracing::debug!(
            version = ?tls.protocol_version(),
            suite = ?tls.cipher_suite(),
            "TLS handshake completed"
        );
        tls.update_producer();
        if tls.reading_paused.get() {
            // Paused during the handshake: stop reading now.
            if let Some(lower) = tls.lower() {
                lower.pause_reading();
            }
        }
        if !self.done.get() {
            self.protocol.borrow_mut().handshake_completed(&self.handle);
        }
        tls.try_close();
    }

    /// Hands decrypted plaintext to the inner protocol; false if reading
    /// is paused.
    fn deliver(&self, mut available: usize) -> bool {
        let tls = &self.tls;
        while available > 0 {
            if tls.reading_paused.get() {
                return false;
            }
            if tls.stopped.get() || self.done.get() {
                return true;
            }
            if tls.reading_stopped() {
                // Reading stopped with `lose_connection` (not after
                // `lose_write_connection`, where reading goes on): what
                // still arrives (until the peer's close_notify) is dropped.
                let mut state = tls.state.borrow_mut();
                let conn = state.conn.as_mut().expect("TLS is on");
                let mut sink = io::sink();
                let _ = io::copy(&mut conn.reader(), &mut sink);
                return true;
            }
            // One buffer per thread, not per connection: an idle
            // connection holds none. (Taken out while in use, so TLS over
            // TLS, delivering inside a delivery, gets a buffer of its own.)
            let mut scratch = SCRATCH.with(|slot| std::mem::take(&mut *slot.borrow_mut()));
            if scratch.len() < available + PAGE {
                scratch.resize(available + PAGE, 0);
            }
            let (start, read) = {
                let mut state = tls.state.borrow_mut();
                let conn = state.conn.as_mut().expect("TLS is on");
                let mut reader = conn.reader();
                // Record by record (one chunk each), all in one delivery;
                // the first decides where in the buffer the copy starts.
                let mut start = None;
                let mut read = 0;
                while read < available {
                    let Ok(chunk) = reader.fill_buf() else { break };
                    if chunk.is_empty() {
                        break;
                    }
                    let at = *start
                        .get_or_insert_with(|| unaliased_start(chunk.as_ptr(), scratch.as_ptr()));
                    let take = chunk.len().min(available - read);
                    scratch[at + read..at + read + take].copy_from_slice(&chunk[..take]);
                    reader.consume(take);
                    read += take;
                }
                (start.unwrap_or(0), read)
            };
            if read > 0 {
                available -= read;
                self.protocol
                    .borrow_mut()
                    .data_received(&self.handle, &scratch[start..start + read]);
            }
            SCRATCH.with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot.capacity() < scratch.capacity() {
                    *slot = scratch;
                }
            });
            if read == 0 {
                return true;
            }
        }
        !tls.reading_paused.get()
    }

    /// The lower transport's stream ended (and nothing received before it
    /// is held back): a clean TLS end after close_notify, a truncation
    /// without; plain, as a transport without TLS would tell it.
    fn lower_ended(&self) {
        let tls = &self.tls;
        let Some(lower) = tls.lower() else { return };
        if !tls.is_tls() {
            // Plain: as a transport without TLS would.
            let half = self.protocol.borrow().half_closeable();
            if half {
                self.event(|| {
                    self.protocol
                        .borrow_mut()
                        .read_connection_lost(&self.handle);
                });
            } else {
                tls.state.borrow_mut().closing = Closing::Done;
                lower.lose_connection();
            }
            return;
        }
        let (closing, peer_closed, handshake_done, write_close) = {
            let state = tls.state.borrow();
            (
                state.closing,
                state.peer_closed,
                state.handshake_done,
                state.write_close,
            )
        };
        if peer_closed && closing == Closing::Open {
            // A half-closeable protocol heard `read_connection_lost` at
            // the close_notify and closes when it is done writing.
            return;
        }
        // After `lose_write_connection` we still read: an end of stream
        // without close_notify is a truncation as when open.
        if peer_closed || closing == Closing::Sent || (closing == Closing::Done && !write_close) {
            tls.close_lower();
            return;
        }
        let text = truncation_text(handshake_done);
        tls.set_fault(Fault::Truncated(text.clone()));
        tls.state.borrow_mut().closing = Closing::Done;
        tls.unregister_below();
        lower.lose_connection_with_error(text);
    }

    /// True while reading is paused with something received before the
    /// lower end of stream not yet delivered or acted on.
    fn held_back(&self) -> bool {
        let tls = &self.tls;
        if !tls.reading_paused.get() {
            return false;
        }
        let mut state = tls.state.borrow_mut();
        if !state.backlog.is_empty() {
            return true;
        }
        let peer_closed = state.peer_closed;
        state.conn.as_mut().is_some_and(|conn| {
            conn.process_new_packets().is_ok_and(|io| {
                io.plaintext_bytes_to_read() > 0 || (io.peer_has_closed() && !peer_closed)
            })
        })
    }

    /// Called once the plaintext rustls holds has been delivered (after a
    /// receive, and after a paused delivery resumes): the one place a
    /// close_notify that came with it is acted on. True if it had.
    fn drained(&self, peer_has_closed: bool) -> bool {
        if peer_has_closed {
            self.peer_closed();
        }
        peer_has_closed
    }

    /// The peer's close_notify arrived: answer it and close (once).
    fn peer_closed(&self) {
        let tls = &self.tls;
        let (closing, write_close) = {
            let mut state = tls.state.borrow_mut();
            if std::mem::replace(&mut state.peer_closed, true) {
                return;
            }
            (state.closing, state.write_close)
        };
        match closing {
            // The TLS end of stream, told as a socket tells its own: a
            // half-closeable protocol (TLS over TLS is one) hears
            // `read_connection_lost` and may go on writing until it
            // closes; any other is answered and closed.
            Closing::Open if self.protocol.borrow().half_closeable() => {
                if !self.done.get() {
                    self.protocol
                        .borrow_mut()
                        .read_connection_lost(&self.handle);
                }
            }
            Closing::Open => {
                tls.state.borrow_mut().closing = Closing::Done;
                tls.unregister_below();
                tls.send_close_notify();
                if let Some(lower) = tls.lower() {
                    lower.lose_connection();
                }
            }
            Closing::Sent => tls.close_lower(),
            // Waiting for a producer or the handshake: the peer is done
            // reading, so close now.
            Closing::Requested => {
                tls.state.borrow_mut().closing = Closing::Done;
                tls.unregister_below();
                if let Some(lower) = tls.lower() {
                    lower.lose_connection();
                }
            }
            // Our write side is shut already (`lose_write_connection`):
            // now both are, so the connection closes.
            Closing::Done if write_close => {
                if let Some(lower) = tls.lower() {
                    lower.lose_connection();
                }
            }
            Closing::Done => {}
        }
    }
}

impl<P: Protocol> Pump for Core<P> {
    /// Delivers what waited (reading paused, or `start_tls` from outside
    /// an event).
    fn pump(&self) {
        if self.tls.reading_paused.get() || self.done.get() {
            return;
        }
        self.event(|| {
            let backlog = std::mem::take(&mut self.tls.state.borrow_mut().backlog);
            let tls_on = self.tls.is_tls();
            if tls_on {
                // Plaintext decrypted before the pause comes first.
                let (available, peer_has_closed) = {
                    let mut state = self.tls.state.borrow_mut();
                    let conn = state.conn.as_mut().expect("TLS is on");
                    conn.process_new_packets()
                        .map(|io| (io.plaintext_bytes_to_read(), io.peer_has_closed()))
                        .unwrap_or((0, false))
                };
                self.check_handshake();
                if !self.deliver(available) {
                    self.tls.state.borrow_mut().backlog.splice(0..0, backlog);
                    return;
                }
                // A close_notify that came before the pause: nothing after
                // it counts.
                if self.drained(peer_has_closed) {
                    return;
                }
            }
            if !backlog.is_empty() {
                self.receive(&backlog);
            }
            // An end of stream that waited behind the held-back bytes.
            if self.tls.eof_pending.get() && !self.held_back() && !self.tls.stopped.get() {
                self.tls.eof_pending.set(false);
                self.lower_ended();
            }
        });
    }
}

/// rustls's error, with what it means where its own words are terse.
fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::NoApplicationProtocol => {
            format!("no application protocol in common (ALPN): {error}")
        }
        rustls::Error::AlertReceived(alert) => format!("the peer sent the TLS alert {alert:?}"),
        rustls::Error::NoCertificatesPresented => {
            format!("the client sent no certificate, and one is required: {error}")
        }
        _ => error.to_string(),
    }
}

/// Why a connection whose peer sent no close_notify is not clean.
fn truncation_text(handshake_done: bool) -> String {
    if handshake_done {
        "the peer closed the connection without a TLS close_notify (possible truncation)"
    } else {
        "the peer closed the connection during the TLS handshake"
    }
    .to_owned()
}

fn not_tls_message(input: &[u8]) -> String {
    let start = &input[..input.len().min(16)];
    let looks_like_text = start
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r' || b == b'\n');
    if looks_like_text {
        format!(
            "TLS handshake failed: the peer sent plaintext ({:?}...), not a TLS handshake \
             (a plaintext client on a TLS port?)",
            String::from_utf8_lossy(start)
        )
    } else {
        format!(
            "TLS handshake failed: the peer's first byte 0x{:02x} does not begin a TLS handshake",
            input[0]
        )
    }
}

impl<P: Protocol> Protocol for TlsProtocol<P> {
    fn make_connection(&mut self, transport: &TransportRef) {
        let core = &self.core;
        *core.tls.lower.borrow_mut() = Some(transport.clone());
        if core.tls.is_tls() {
            core.tls.start_handshake_timer();
        }
        core.event(|| {
            core.protocol.borrow_mut().make_connection(&core.handle);
        });
    }

    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        let core = &self.core;
        core.event(|| {
            let backlog = std::mem::take(&mut core.tls.state.borrow_mut().backlog);
            if backlog.is_empty() {
                core.receive(data);
            } else {
                let mut all = backlog;
                all.extend_from_slice(data);
                core.receive(&all);
            }
        });
    }

    /// The wrapper handles the lower end of stream itself, to tell a clean
    /// TLS close from a truncation.
    fn half_closeable(&self) -> bool {
        true
    }

    fn read_connection_lost(&mut self, _transport: &TransportRef) {
        let core = &self.core;
        if core.held_back() {
            // What came before the end of stream is delivered first, when
            // reading resumes (a close_notify among it makes this clean).
            core.tls.eof_pending.set(true);
            return;
        }
        core.lower_ended();
    }

    fn write_connection_lost(&mut self, _transport: &TransportRef) {
        let core = &self.core;
        let wanted = core.tls.state.borrow().write_close;
        if wanted && core.protocol.borrow().half_closeable() {
            core.event(|| {
                core.protocol
                    .borrow_mut()
                    .write_connection_lost(&core.handle);
            });
        }
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        let core = &self.core;
        let tls = &core.tls;
        tls.stopped.set(true);
        let (fault, peer_closed, timers) = {
            let mut state = tls.state.borrow_mut();
            // A lower transport that ends "cleanly" when TLS is on, the
            // peer sent no close_notify and we did not start the close
            // (a write-side close alone does not count) is no proof that
            // nothing was cut off: as TLS over TLS, where the outer
            // session's close ends this one.
            let we_closed = state.closing != Closing::Open && !state.write_close;
            if state.fault.is_none()
                && state.conn.is_some()
                && !state.peer_closed
                && !we_closed
                && reason.is_clean()
            {
                state.fault = Some(Fault::Truncated(truncation_text(state.handshake_done)));
            }
            state.closing = Closing::Done;
            (
                state.fault.clone(),
                state.peer_closed,
                [state.handshake_timer.take(), state.close_timer.take()],
            )
        };
        for timer in timers.into_iter().flatten() {
            let _ = timer.cancel();
        }
        // The contract: a producer is stopped before the protocol hears
        // the close.
        let producer = tls.producer.borrow_mut().take();
        if let Some((producer, _)) = producer {
            producer.stop_producing();
        }
        if core.done.replace(true) {
            return;
        }
        // What the TLS layer decided, rather than what the lower
        // transport saw (an abort by the handshake timer, a close after
        // an alert).
        // (`CloseReason` is not `Clone`: made once for each listener.)
        let own = || match &fault {
            Some(fault) => Some(fault.reason()),
            None if peer_closed && reason.is_clean() => Some(CloseReason::ClosedByPeer),
            None => None,
        };
        // Left before the inner protocol runs, so that a panic there
        // still lets the factory hear it.
        if let Some(heard) = core.heard.get() {
            *heard.borrow_mut() = own();
        }
        let own = own();
        core.protocol
            .borrow_mut()
            .connection_lost(own.as_ref().unwrap_or(reason));
    }
}
