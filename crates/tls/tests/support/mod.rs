//! Test certificates (rcgen) and an in-memory connection between two
//! protocols whose transports have write buffers and flow control.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use torsion_protocol::{
    Address, CloseReason, Producer, Protocol, Reactor, Transport, TransportRef,
};
use torsion_tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use torsion_tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use torsion_tls::{server_name, ClientSettings, ServerSettings, TlsProtocol};

/// A certificate and its key, in DER and PEM.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A test CA with a server certificate (localhost, 127.0.0.1) and a client
/// certificate, each with a distinct CN.
pub struct Pki {
    pub ca: Identity,
    issuer: Issuer<'static, KeyPair>,
    pub server: Identity,
    pub client: Identity,
}

fn ca(name: &str) -> (Identity, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    let identity = Identity {
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    (identity, Issuer::new(params, key))
}

pub fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    client: bool,
    expired: bool,
) -> Identity {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity {
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    pub fn new() -> Pki {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (ca, issuer) = ca(&format!("Torsion test CA {n}"));
        let server = leaf(
            &issuer,
            "torsion test server",
            &["localhost", "127.0.0.1"],
            false,
            false,
        );
        let client = leaf(
            &issuer,
            "torsion test client",
            &["client.test"],
            true,
            false,
        );
        Pki {
            ca,
            issuer,
            server,
            client,
        }
    }

    /// Another certificate from the same CA.
    pub fn issue(&self, cn: &str, names: &[&str], expired: bool) -> Identity {
        leaf(&self.issuer, cn, names, false, expired)
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).unwrap();
        roots
    }

    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings::new(vec![self.server.cert.clone()], self.server.key()).unwrap()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_settings().build().unwrap()
    }

    pub fn client_settings(&self) -> ClientSettings {
        ClientSettings::new()
            .trust(std::slice::from_ref(&self.ca.cert))
            .unwrap()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_settings().build().unwrap()
    }
}

thread_local! {
    static PKI: Rc<Pki> = Rc::new(Pki::new());
}

/// One PKI per test thread (key generation is not free).
pub fn pki() -> Rc<Pki> {
    PKI.with(Rc::clone)
}

/// What was asked of a [`Pipe`] about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    Open,
    Lost,
    LostWithError(String),
    Aborted,
}

/// An in-memory transport with a write buffer, watermarks and a producer
/// driven as a socket transport drives it.
pub struct Pipe {
    pub out: RefCell<Vec<u8>>,
    pub closing: RefCell<Closing>,
    pub write_closed: Cell<bool>,
    pub reading_paused: Cell<bool>,
    pub producer: RefCell<Option<(Rc<dyn Producer>, bool)>>,
    pub producer_paused: Cell<bool>,
    pub high: Cell<usize>,
    pub low: Cell<usize>,
    pub writes: Cell<usize>,
    /// Resume the producer from inside every write (as a transport under
    /// TLS over TLS may).
    pub resume_on_write: Cell<bool>,
    pub reactor: RefCell<Option<Reactor>>,
}

impl Pipe {
    pub fn new(reactor: Option<&Reactor>) -> Rc<Pipe> {
        Rc::new(Pipe {
            out: RefCell::new(Vec::new()),
            closing: RefCell::new(Closing::Open),
            write_closed: Cell::new(false),
            reading_paused: Cell::new(false),
            producer: RefCell::new(None),
            producer_paused: Cell::new(false),
            high: Cell::new(64 * 1024),
            low: Cell::new(16 * 1024),
            writes: Cell::new(0),
            resume_on_write: Cell::new(false),
            reactor: RefCell::new(reactor.cloned()),
        })
    }

    fn accepting(&self) -> bool {
        match &*self.closing.borrow() {
            Closing::Open => !self.write_closed.get(),
            Closing::Lost | Closing::LostWithError(_) => self.producer.borrow().is_some(),
            Closing::Aborted => false,
        }
    }

    /// Takes up to `max` bytes of what was written (the peer reads them),
    /// and resumes the producer once the buffer is at the low watermark.
    pub fn take(&self, max: usize) -> Vec<u8> {
        let data = {
            let mut out = self.out.borrow_mut();
            let n = max.min(out.len());
            out.drain(..n).collect::<Vec<u8>>()
        };
        if self.out.borrow().len() <= self.low.get() && self.producer_paused.replace(false) {
            let producer = self.producer.borrow().clone();
            if let Some((producer, _)) = producer {
                producer.resume_producing();
            }
        }
        data
    }

    pub fn buffered(&self) -> usize {
        self.out.borrow().len()
    }
}

impl Transport for Pipe {
    fn write(&self, data: &[u8]) {
        self.write_sequence(&[data]);
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        if !self.accepting() {
            return;
        }
        self.writes.set(self.writes.get() + 1);
        for part in data {
            self.out.borrow_mut().extend_from_slice(part);
        }
        if self.resume_on_write.get() {
            let producer = self.producer.borrow().clone();
            if let Some((producer, _)) = producer {
                self.producer_paused.set(false);
                producer.resume_producing();
            }
        }
        if self.out.borrow().len() > self.high.get() {
            let producer = self.producer.borrow().clone();
            if let Some((producer, true)) = producer {
                if !self.producer_paused.replace(true) {
                    producer.pause_producing();
                }
            }
        }
    }

    fn lose_connection(&self) {
        let mut closing = self.closing.borrow_mut();
        if *closing == Closing::Open {
            *closing = Closing::Lost;
        }
    }

    fn lose_connection_with_error(&self, fault: String) {
        let mut closing = self.closing.borrow_mut();
        if *closing == Closing::Open {
            *closing = Closing::LostWithError(fault);
        }
    }

    fn abort_connection(&self) {
        *self.closing.borrow_mut() = Closing::Aborted;
        self.out.borrow_mut().clear();
    }

    fn get_peer(&self) -> Address {
        Address::Unknown
    }

    fn get_host(&self) -> Address {
        Address::Unknown
    }

    fn get_write_buffer_size(&self) -> usize {
        self.out.borrow().len()
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow() != Closing::Open || self.write_closed.get()
    }

    fn lose_write_connection(&self) {
        self.write_closed.set(true);
    }

    fn pause_reading(&self) {
        self.reading_paused.set(true);
    }

    fn resume_reading(&self) {
        self.reading_paused.set(false);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> io::Result<()> {
        let mut slot = self.producer.borrow_mut();
        if slot.is_some() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        *slot = Some((producer, streaming));
        self.producer_paused.set(false);
        Ok(())
    }

    fn unregister_producer(&self) {
        self.producer.borrow_mut().take();
        self.producer_paused.set(false);
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.high.set(high);
        self.low.set(low);
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.borrow().clone()
    }
}

/// One end: a protocol on a [`Pipe`].
pub struct End<P> {
    pub pipe: Rc<Pipe>,
    pub handle: TransportRef,
    pub protocol: P,
    pub lost: bool,
    pub eof_sent: bool,
}

impl<P: Protocol> End<P> {
    pub fn new(mut protocol: P, reactor: Option<&Reactor>) -> End<P> {
        let pipe = Pipe::new(reactor);
        let handle: TransportRef = pipe.clone();
        protocol.make_connection(&handle);
        End {
            pipe,
            handle,
            protocol,
            lost: false,
            eof_sent: false,
        }
    }

    pub fn receive(&mut self, data: &[u8]) {
        if !self.lost {
            self.protocol.data_received(&self.handle, data);
        }
    }

    pub fn lose(&mut self, reason: &CloseReason) {
        if !std::mem::replace(&mut self.lost, true) {
            let producer = self.pipe.producer.borrow_mut().take();
            if let Some((producer, _)) = producer {
                producer.stop_producing();
            }
            self.protocol.connection_lost(reason);
        }
    }
}

/// Two protocols connected in memory.
pub struct Pair<S, C> {
    pub server: End<S>,
    pub client: End<C>,
    /// Bytes moved per `data_received` (0: everything at once).
    pub chunk: usize,
    pub closed: bool,
}

impl<S: Protocol, C: Protocol> Pair<S, C> {
    pub fn new(server: S, client: C, reactor: Option<&Reactor>) -> Pair<S, C> {
        Pair {
            server: End::new(server, reactor),
            client: End::new(client, reactor),
            chunk: 0,
            closed: false,
        }
    }

    /// Moves bytes both ways (each side reads only while not paused)
    /// until nothing moves, then carries out closes. Returns bytes moved.
    pub fn pump(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let mut step = 0;
            let max = if self.chunk == 0 {
                usize::MAX
            } else {
                self.chunk
            };
            if !self.server.pipe.reading_paused.get() {
                let data = self.client.pipe.take(max);
                step += data.len();
                if !data.is_empty() {
                    self.server.receive(&data);
                }
            }
            if !self.client.pipe.reading_paused.get() {
                let data = self.server.pipe.take(max);
                step += data.len();
                if !data.is_empty() {
                    self.client.receive(&data);
                }
            }
            if let Some(reactor) = self.server.pipe.reactor() {
                reactor.iterate(std::time::Duration::ZERO).unwrap();
            }
            moved += step;
            let deliverable = (!self.server.pipe.reading_paused.get()
                && self.client.pipe.buffered() > 0)
                || (!self.client.pipe.reading_paused.get() && self.server.pipe.buffered() > 0);
            if step == 0 && !deliverable {
                break;
            }
        }
        self.carry_out_closes();
        moved
    }

    fn carry_out_closes(&mut self) {
        if self.closed {
            return;
        }
        let server = self.server.pipe.closing.borrow().clone();
        let client = self.client.pipe.closing.borrow().clone();
        let reason_for = |own: &Closing, other: &Closing| match (own, other) {
            (Closing::Aborted, _) => CloseReason::Aborted,
            (Closing::LostWithError(fault), _) => CloseReason::ProtocolError(fault.clone()),
            (Closing::Lost, _) => CloseReason::Closed,
            (Closing::Open, Closing::Aborted) => {
                CloseReason::Lost(io::Error::from(io::ErrorKind::ConnectionReset))
            }
            (Closing::Open, _) => CloseReason::ClosedByPeer,
        };
        let server_done = server == Closing::Aborted
            || (server != Closing::Open && self.server.pipe.buffered() == 0);
        let client_done = client == Closing::Aborted
            || (client != Closing::Open && self.client.pipe.buffered() == 0);
        if server_done || client_done {
            self.closed = true;
            self.server.lose(&reason_for(&server, &client));
            self.client.lose(&reason_for(&client, &server));
            return;
        }
        if self.server.pipe.write_closed.get()
            && self.server.pipe.buffered() == 0
            && !self.server.eof_sent
        {
            self.server.eof_sent = true;
            self.client
                .protocol
                .read_connection_lost(&self.client.handle);
            self.pump();
        }
        if self.client.pipe.write_closed.get()
            && self.client.pipe.buffered() == 0
            && !self.client.eof_sent
        {
            self.client.eof_sent = true;
            self.server
                .protocol
                .read_connection_lost(&self.server.handle);
            self.pump();
        }
    }
}

/// What a test protocol saw.
#[derive(Default)]
pub struct Record {
    pub received: Vec<u8>,
    pub made: bool,
    pub handshake: bool,
    pub handshake_before_data: bool,
    pub lost: Option<String>,
    pub lost_clean: Option<bool>,
    pub lost_kind: Option<io::ErrorKind>,
    pub events_after_lost: usize,
}

pub type OnEvent = Box<dyn FnMut(&TransportRef)>;
pub type OnData = Box<dyn FnMut(&TransportRef, &[u8])>;

/// A protocol that records its events into a shared [`Record`] and can
/// run a closure on connection and on data.
pub struct Recorder {
    pub record: Rc<RefCell<Record>>,
    pub on_made: Option<OnEvent>,
    pub on_data: Option<OnData>,
    pub on_handshake: Option<OnEvent>,
}

impl Recorder {
    pub fn new() -> (Recorder, Rc<RefCell<Record>>) {
        let record = Rc::new(RefCell::new(Record::default()));
        (
            Recorder {
                record: record.clone(),
                on_made: None,
                on_data: None,
                on_handshake: None,
            },
            record,
        )
    }

    pub fn on_made(mut self, f: impl FnMut(&TransportRef) + 'static) -> Self {
        self.on_made = Some(Box::new(f));
        self
    }

    pub fn on_data(mut self, f: impl FnMut(&TransportRef, &[u8]) + 'static) -> Self {
        self.on_data = Some(Box::new(f));
        self
    }

    pub fn on_handshake(mut self, f: impl FnMut(&TransportRef) + 'static) -> Self {
        self.on_handshake = Some(Box::new(f));
        self
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.record.borrow_mut().made = true;
        if let Some(f) = &mut self.on_made {
            f(transport);
        }
    }

    fn handshake_completed(&mut self, transport: &TransportRef) {
        {
            let mut record = self.record.borrow_mut();
            if record.lost.is_some() {
                record.events_after_lost += 1;
            }
            record.handshake = true;
            record.handshake_before_data = record.received.is_empty();
        }
        if let Some(f) = &mut self.on_handshake {
            f(transport);
        }
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        {
            let mut record = self.record.borrow_mut();
            if record.lost.is_some() {
                record.events_after_lost += 1;
            }
            record.received.extend_from_slice(data);
        }
        if let Some(f) = &mut self.on_data {
            f(transport, data);
        }
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        let mut record = self.record.borrow_mut();
        if record.lost.is_some() {
            record.events_after_lost += 1;
        }
        record.lost = Some(reason.to_string());
        record.lost_clean = Some(reason.is_clean());
        record.lost_kind = reason.error().map(io::Error::kind);
    }
}

/// A TLS server and client around two protocols, over in-memory pipes.
pub fn tls_pair<S: Protocol, C: Protocol>(
    server: S,
    client: C,
    reactor: Option<&Reactor>,
) -> Pair<TlsProtocol<S>, TlsProtocol<C>> {
    let pki = pki();
    let server = TlsProtocol::server(pki.server_config(), server).unwrap();
    let client = TlsProtocol::client(
        pki.client_config(),
        server_name("localhost").unwrap(),
        client,
    )
    .unwrap();
    Pair::new(server, client, reactor)
}
