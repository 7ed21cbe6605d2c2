//! Testing protocols without sockets (Twisted's `twisted.internet.testing`).
//!
//! [`StringTransport`] is an in-memory [`Transport`]: it records what is
//! written and what the protocol asked for (closing, aborting, pausing),
//! and does nothing else. [`ProtocolHarness`] connects a protocol to one
//! and drives it: feed it bytes, close it from the peer's side, read back
//! what it wrote. Together with a reactor on a
//! [`ManualClock`](crate::ManualClock) for its timers, a protocol's whole
//! behaviour can be tested deterministically, in microseconds.
//!
//! ```
//! use torsion_protocol::testing::ProtocolHarness;
//! use torsion_protocol::{Protocol, TransportRef};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! let mut harness = ProtocolHarness::new(Echo);
//! harness.receive(b"hello");
//! assert_eq!(harness.transport.take_written(), b"hello");
//! ```

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use torsion_transport::reactor::Reactor;
use torsion_transport::reactor::WeakReactor;
use torsion_transport::{Address, CloseReason, Producer, Transport, TransportRef};

use crate::protocol::Protocol;

pub use torsion_transport::reactor::testing::{
    guarded_reactor, open_descriptors, DescriptorGuard, Watchdog, XorShift,
};
pub use torsion_transport::serial::PseudoTerminal;

/// A fresh path for a Unix socket in the temporary directory, unique in
/// this process (`torsion-NAME-PID-N.sock`); any stale file there is
/// removed first.
pub fn socket_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("torsion-{name}-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A protocol that writes back whatever it receives: the smallest server,
/// for tests (the echo crate has the documented one).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

/// What a protocol asked its [`StringTransport`] to do about the
/// connection.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Closing {
    /// Nothing: the connection is open.
    #[default]
    Open,
    /// `lose_connection` was called.
    Lost,
    /// `lose_connection_with_error` was called, with this fault.
    LostWithError(String),
    /// `abort_connection` was called.
    Aborted,
}

/// An in-memory transport that records everything (Twisted's
/// `StringTransport`).
///
/// It records what a protocol asks for and drives nothing itself: a
/// registered producer is kept (see [`StringTransport::producer`]) but
/// never paused, resumed or asked for more — a test calls it as the
/// socket transport would.
pub struct StringTransport {
    written: RefCell<Vec<u8>>,
    closing: RefCell<Closing>,
    write_closed: Cell<bool>,
    reading_paused: Cell<bool>,
    producer: RefCell<Option<(Rc<dyn Producer>, bool)>>,
    peer: Address,
    host: Address,
    reactor: RefCell<WeakReactor>,
}

impl StringTransport {
    /// A transport between two unknown addresses.
    pub fn new() -> Rc<StringTransport> {
        StringTransport::with_addresses(Address::Unknown, Address::Unknown)
    }

    /// A transport that reports these addresses.
    pub fn with_addresses(peer: Address, host: Address) -> Rc<StringTransport> {
        Rc::new(StringTransport {
            written: RefCell::new(Vec::new()),
            closing: RefCell::new(Closing::Open),
            write_closed: Cell::new(false),
            reading_paused: Cell::new(false),
            producer: RefCell::new(None),
            peer,
            host,
            reactor: RefCell::new(WeakReactor::new()),
        })
    }

    /// Makes [`Transport::reactor`] return `reactor` (for protocols that
    /// schedule timers; use one on a manual clock).
    pub fn set_reactor(&self, reactor: &Reactor) {
        *self.reactor.borrow_mut() = reactor.downgrade();
    }

    /// Everything written so far (Twisted's `value()`).
    pub fn written(&self) -> Vec<u8> {
        self.written.borrow().clone()
    }

    /// Everything written so far, emptying the record (Twisted's `value()`
    /// then `clear()`).
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut *self.written.borrow_mut())
    }

    /// What the protocol asked for about the connection.
    pub fn closing(&self) -> Closing {
        self.closing.borrow().clone()
    }

    /// True after `lose_write_connection`.
    pub fn write_closed(&self) -> bool {
        self.write_closed.get()
    }

    /// True while reading is paused.
    pub fn reading_paused(&self) -> bool {
        self.reading_paused.get()
    }

    /// The registered producer, and whether it streams.
    pub fn producer(&self) -> Option<(Rc<dyn Producer>, bool)> {
        self.producer.borrow().clone()
    }

    fn open(&self) -> bool {
        *self.closing.borrow() == Closing::Open && !self.write_closed.get()
    }
}

impl Transport for StringTransport {
    /// Records `data` while the connection is open, and after
    /// `lose_connection` while a producer is registered (a socket
    /// transport still takes a registered producer's writes then).
    fn write(&self, data: &[u8]) {
        let producing = self.producer.borrow().is_some()
            && matches!(
                *self.closing.borrow(),
                Closing::Lost | Closing::LostWithError(_)
            )
            && !self.write_closed.get();
        if self.open() || producing {
            self.written.borrow_mut().extend_from_slice(data);
        }
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        for part in data {
            self.write(part);
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
    }

    fn get_peer(&self) -> Address {
        self.peer.clone()
    }

    fn get_host(&self) -> Address {
        self.host.clone()
    }

    fn get_write_buffer_size(&self) -> usize {
        0
    }

    fn is_closing(&self) -> bool {
        !self.open()
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
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a producer is already registered with this transport",
            ));
        }
        *slot = Some((producer, streaming));
        Ok(())
    }

    fn unregister_producer(&self) {
        self.producer.borrow_mut().take();
    }

    fn set_write_buffer_limits(&self, _high: usize, _low: usize) {}

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.borrow().upgrade()
    }
}

/// A protocol connected to a [`StringTransport`], driven by hand.
pub struct ProtocolHarness<P> {
    /// The in-memory transport the protocol writes to.
    pub transport: Rc<StringTransport>,
    handle: TransportRef,
    protocol: P,
    lost: bool,
}

impl<P: Protocol> ProtocolHarness<P> {
    /// Connects `protocol` to a new [`StringTransport`] (calling
    /// `make_connection`).
    pub fn new(protocol: P) -> ProtocolHarness<P> {
        ProtocolHarness::with_transport(protocol, StringTransport::new())
    }

    /// Connects `protocol` to `transport`.
    pub fn with_transport(mut protocol: P, transport: Rc<StringTransport>) -> ProtocolHarness<P> {
        let handle: TransportRef = transport.clone();
        protocol.make_connection(&handle);
        ProtocolHarness {
            transport,
            handle,
            protocol,
            lost: false,
        }
    }

    /// Delivers `data` to the protocol, as one `data_received` call.
    pub fn receive(&mut self, data: &[u8]) {
        self.protocol.data_received(&self.handle, data);
    }

    /// Delivers `data` split into the given chunk sizes (the last chunk
    /// takes what is left), to test a protocol against any fragmentation.
    pub fn receive_in_chunks(&mut self, data: &[u8], sizes: &[usize]) {
        let mut at = 0;
        for &size in sizes {
            let end = (at + size).min(data.len());
            if at < end {
                self.receive(&data[at..end]);
            }
            at = end;
        }
        if at < data.len() {
            self.receive(&data[at..]);
        }
    }

    /// Delivers `data` in chunks of `chunk_size` bytes, one `data_received`
    /// call each (the last chunk may be shorter): `1` feeds it a byte at a
    /// time. To try every even split, loop over the sizes.
    ///
    /// ```
    /// use torsion_protocol::testing::ProtocolHarness;
    /// use torsion_protocol::{Protocol, TransportRef};
    ///
    /// #[derive(Default)]
    /// struct Sizes(Vec<usize>);
    /// impl Protocol for Sizes {
    ///     fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
    ///         self.0.push(data.len());
    ///     }
    /// }
    ///
    /// let mut harness = ProtocolHarness::new(Sizes::default());
    /// harness.receive_in_chunks_of(b"1234567", 3);
    /// assert_eq!(harness.protocol().0, [3, 3, 1]);
    /// ```
    ///
    /// # Panics
    /// If `chunk_size` is 0.
    pub fn receive_in_chunks_of(&mut self, data: &[u8], chunk_size: usize) {
        assert!(chunk_size > 0, "a chunk holds at least one byte");
        for chunk in data.chunks(chunk_size) {
            self.receive(chunk);
        }
    }

    /// The peer ends its stream: a half-closeable protocol hears
    /// `read_connection_lost`, any other `connection_lost` with
    /// [`CloseReason::ClosedByPeer`].
    pub fn peer_closes(&mut self) {
        if self.protocol.half_closeable() {
            self.protocol.read_connection_lost(&self.handle);
        } else {
            self.lose(&CloseReason::ClosedByPeer);
        }
    }

    /// Ends the connection with `reason` (`connection_lost`), once.
    pub fn lose(&mut self, reason: &CloseReason) {
        if !std::mem::replace(&mut self.lost, true) {
            self.protocol.connection_lost(reason);
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The protocol, mutably.
    pub fn protocol_mut(&mut self) -> &mut P {
        &mut self.protocol
    }

    /// The transport as the protocol sees it.
    pub fn transport_ref(&self) -> &TransportRef {
        &self.handle
    }
}

/// A server and a client protocol connected back to back in memory, with
/// no socket (Twisted's `loopbackAsync` and `IOPump`): what one writes,
/// the other receives when [`Loopback::pump`] runs.
///
/// ```
/// use torsion_protocol::testing::Loopback;
/// use torsion_protocol::{Protocol, TransportRef};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
///
/// #[derive(Default)]
/// struct Greeter(Vec<u8>);
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, transport: &TransportRef) {
///         transport.write(b"hi");
///     }
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         self.0.extend_from_slice(data);
///         transport.lose_connection();
///     }
/// }
///
/// let mut pair = Loopback::new(Echo, Greeter::default());
/// pair.pump();
/// assert_eq!(pair.client.protocol().0, b"hi");
/// assert!(pair.is_closed());
/// ```
pub struct Loopback<S, C> {
    /// The server side.
    pub server: ProtocolHarness<S>,
    /// The client side.
    pub client: ProtocolHarness<C>,
    server_eof_sent: bool,
    client_eof_sent: bool,
    closed: bool,
}

impl<S: Protocol, C: Protocol> Loopback<S, C> {
    /// Connects `server` then `client` (each hears `make_connection`).
    pub fn new(server: S, client: C) -> Loopback<S, C> {
        Loopback {
            server: ProtocolHarness::new(server),
            client: ProtocolHarness::new(client),
            server_eof_sent: false,
            client_eof_sent: false,
            closed: false,
        }
    }

    /// Moves bytes both ways until neither side has anything to send, then
    /// carries out closes: a side that lost or aborted its connection ends
    /// it for both, and a half-close reaches the other side as end of
    /// stream. Returns the number of bytes moved.
    pub fn pump(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let to_server = self.client.transport.take_written();
            let to_client = self.server.transport.take_written();
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
            moved += to_server.len() + to_client.len();
            if !to_server.is_empty() && !self.closed {
                self.server.receive(&to_server);
            }
            if !to_client.is_empty() && !self.closed {
                self.client.receive(&to_client);
            }
        }
        self.carry_out_closes();
        moved
    }

    fn carry_out_closes(&mut self) {
        if self.closed {
            return;
        }
        let server = self.server.transport.closing();
        let client = self.client.transport.closing();
        let reason_for = |own: &Closing, other: &Closing| match (own, other) {
            (Closing::Aborted, _) => CloseReason::Aborted,
            (Closing::LostWithError(fault), _) => CloseReason::ProtocolError(fault.clone()),
            (Closing::Lost, _) => CloseReason::Closed,
            (Closing::Open, Closing::Aborted) => {
                CloseReason::Lost(io::Error::from(io::ErrorKind::ConnectionReset))
            }
            (Closing::Open, _) => CloseReason::ClosedByPeer,
        };
        if server != Closing::Open || client != Closing::Open {
            self.closed = true;
            self.server.lose(&reason_for(&server, &client));
            self.client.lose(&reason_for(&client, &server));
            return;
        }
        if self.server.transport.write_closed() && !self.server_eof_sent {
            self.server_eof_sent = true;
            self.client.peer_closes();
        }
        if self.client.transport.write_closed() && !self.client_eof_sent {
            self.client_eof_sent = true;
            self.server.peer_closes();
        }
    }

    /// True once both sides heard `connection_lost`.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// A reactor stand-in that records `listen_tcp` and `connect_tcp` calls
/// instead of opening sockets (Twisted's `MemoryReactor`), so factories are
/// tested without a network. It carries a real reactor on a
/// [`ManualClock`](crate::ManualClock) for timers.
///
/// ```
/// use torsion_protocol::testing::MemoryReactor;
/// use torsion_protocol::{Address, Factory, Protocol, ReactorTcp, TransportRef};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
/// struct EchoFactory;
/// impl Factory for EchoFactory {
///     type Protocol = Echo;
///     fn build_protocol(&self, _peer: &Address) -> Option<Echo> {
///         Some(Echo)
///     }
/// }
///
/// let memory = MemoryReactor::new()?;
/// memory.listen_tcp(8000, EchoFactory)?;
/// let listen = &memory.listens()[0];
/// assert_eq!(listen.port, 8000);
/// let mut connection = listen.accept(&Address::Unknown).unwrap();
/// connection.receive(b"ping");
/// assert_eq!(connection.transport.take_written(), b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct MemoryReactor {
    reactor: Reactor,
    clock: crate::ManualClock,
    listens: RefCell<Vec<Rc<MemoryListen>>>,
    connects: RefCell<Vec<Rc<MemoryConnect>>>,
}

type BuildFn = Box<dyn Fn(&Address) -> Option<Box<dyn Protocol>>>;

/// A recorded `listen_tcp` call.
pub struct MemoryListen {
    /// The port asked for.
    pub port: u16,
    /// The options asked for.
    pub options: crate::ListenOptions,
    build: BuildFn,
    stop: Box<dyn Fn()>,
    listening: Cell<bool>,
}

impl MemoryListen {
    /// Builds a protocol with the recorded factory, as an accepted
    /// connection from `peer` would, and connects it to a
    /// [`StringTransport`]; `None` if the factory refused.
    pub fn accept(&self, peer: &Address) -> Option<ProtocolHarness<Box<dyn Protocol>>> {
        let protocol = (self.build)(peer)?;
        let transport = StringTransport::with_addresses(peer.clone(), Address::Unknown);
        Some(ProtocolHarness::with_transport(protocol, transport))
    }

    /// True until the port's `stop_listening`.
    pub fn is_listening(&self) -> bool {
        self.listening.get()
    }
}

impl crate::port::PortControl for MemoryListen {
    fn host(&self) -> &Address {
        &Address::Unknown
    }
    fn stop(&self) {
        if self.listening.replace(false) {
            (self.stop)();
        }
    }
    fn is_listening(&self) -> bool {
        self.listening.get()
    }
}

/// The client-factory events of a recorded connect, type-erased.
trait ClientEvents {
    fn start(&self);
    fn stop(&self);
    fn started(&self, connector: &crate::Connector);
    fn build(&self, peer: &Address) -> Option<Box<dyn Protocol>>;
    fn failed(&self, connector: &crate::Connector, reason: &torsion_transport::ConnectError);
    fn lost(&self, connector: &crate::Connector, reason: &CloseReason);
}

impl<F: crate::ClientFactory> ClientEvents for F {
    fn start(&self) {
        self.start_factory();
    }
    fn stop(&self) {
        self.stop_factory();
    }
    fn started(&self, connector: &crate::Connector) {
        self.started_connecting(connector);
    }
    fn build(&self, peer: &Address) -> Option<Box<dyn Protocol>> {
        self.build_protocol(peer)
            .map(|p| Box::new(p) as Box<dyn Protocol>)
    }
    fn failed(&self, connector: &crate::Connector, reason: &torsion_transport::ConnectError) {
        self.client_connection_failed(connector, reason);
    }
    fn lost(&self, connector: &crate::Connector, reason: &CloseReason) {
        self.client_connection_lost(connector, reason);
    }
}

/// A recorded `connect_tcp` call. Play the network's part with
/// [`MemoryConnect::succeed`] or [`MemoryConnect::fail`].
///
/// As a real connector does, it starts its factory and tells it
/// `started_connecting` at each attempt, and stops the factory when an
/// attempt fails or a connection is lost and no new attempt has begun.
pub struct MemoryConnect {
    /// Where the connection was to go.
    pub destination: crate::Destination,
    /// The timeout asked for.
    pub timeout: std::time::Duration,
    factory: Box<dyn ClientEvents>,
    me: std::rc::Weak<MemoryConnect>,
    state: Cell<crate::ConnectorState>,
    reactor: WeakReactor,
    /// True between the factory's `start_factory` and `stop_factory`.
    factory_started: Cell<bool>,
    /// How many times the connector was told to connect again.
    pub reconnects: Cell<u32>,
    /// How many times `disconnect` was called while connected; the test
    /// then ends the connection with [`MemoryConnect::lose`].
    pub disconnects: Cell<u32>,
}

impl MemoryConnect {
    /// The connector the factory sees.
    pub fn connector(&self) -> crate::Connector {
        crate::Connector {
            inner: self.me.upgrade().expect("recorded by the memory reactor"),
        }
    }

    /// The connection succeeds: the factory builds a protocol, connected to
    /// a [`StringTransport`]. `None` if the factory refused: then, as on a
    /// socket, the connection closes at once and the factory hears
    /// `client_connection_lost` (and `stop_factory`, unless it connects
    /// again).
    pub fn succeed(&self) -> Option<ProtocolHarness<Box<dyn Protocol>>> {
        self.state.set(crate::ConnectorState::Connected);
        let Some(protocol) = self.factory.build(&Address::Unknown) else {
            self.state.set(crate::ConnectorState::Disconnected);
            self.factory.lost(&self.connector(), &CloseReason::Closed);
            self.stop_factory_unless_reconnecting();
            return None;
        };
        Some(ProtocolHarness::new(protocol))
    }

    /// The attempt fails: the factory hears `client_connection_failed`.
    pub fn fail(&self, reason: torsion_transport::ConnectError) {
        self.state.set(crate::ConnectorState::Disconnected);
        self.factory.failed(&self.connector(), &reason);
        self.stop_factory_unless_reconnecting();
    }

    /// Starts an attempt: the factory is started if it is not, and hears
    /// `started_connecting`.
    fn begin_attempt(&self) {
        self.state.set(crate::ConnectorState::Connecting);
        if !self.factory_started.replace(true) {
            self.factory.start();
        }
        self.factory.started(&self.connector());
    }

    fn stop_factory_unless_reconnecting(&self) {
        if self.state.get() == crate::ConnectorState::Disconnected
            && self.factory_started.replace(false)
        {
            self.factory.stop();
        }
    }

    /// The connection made by `succeed` ends: the protocol hears
    /// `connection_lost`, then the factory `client_connection_lost`.
    pub fn lose(&self, harness: &mut ProtocolHarness<Box<dyn Protocol>>, reason: CloseReason) {
        self.state.set(crate::ConnectorState::Disconnected);
        harness.lose(&reason);
        self.factory.lost(&self.connector(), &reason);
        self.stop_factory_unless_reconnecting();
    }
}

impl crate::connector::ConnectorControl for MemoryConnect {
    fn connect(&self) {
        if self.state.get() != crate::ConnectorState::Disconnected {
            return;
        }
        self.reconnects.set(self.reconnects.get() + 1);
        self.begin_attempt();
    }
    fn stop_connecting(&self) {
        if self.state.get() == crate::ConnectorState::Connecting {
            self.fail(torsion_transport::ConnectError::Cancelled);
        }
    }
    fn disconnect(&self) {
        match self.state.get() {
            // As a real connector: the attempt is cancelled.
            crate::ConnectorState::Connecting => self.stop_connecting(),
            // The connection is the test's to end, with `lose`, as a
            // transport would end it.
            crate::ConnectorState::Connected => {
                self.disconnects.set(self.disconnects.get() + 1);
            }
            crate::ConnectorState::Disconnected => {}
        }
    }
    fn destination(&self) -> &crate::Destination {
        &self.destination
    }
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }
    fn state(&self) -> crate::ConnectorState {
        self.state.get()
    }
}

impl MemoryReactor {
    /// A memory reactor whose timers run on a manual clock.
    ///
    /// # Errors
    /// If the underlying reactor cannot be created.
    pub fn new() -> io::Result<MemoryReactor> {
        let (reactor, clock) = Reactor::with_manual_clock()?;
        Ok(MemoryReactor {
            reactor,
            clock,
            listens: RefCell::new(Vec::new()),
            connects: RefCell::new(Vec::new()),
        })
    }

    /// The real reactor behind it (for timers).
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// Its manual clock.
    pub fn clock(&self) -> &crate::ManualClock {
        &self.clock
    }

    /// The `listen_tcp` calls so far.
    pub fn listens(&self) -> Vec<Rc<MemoryListen>> {
        self.listens.borrow().clone()
    }

    /// The `connect_tcp` calls so far.
    pub fn connects(&self) -> Vec<Rc<MemoryConnect>> {
        self.connects.borrow().clone()
    }
}

impl crate::ReactorTcp for MemoryReactor {
    fn listen_tcp_with<F: crate::Factory>(
        &self,
        port: u16,
        factory: F,
        options: crate::ListenOptions,
    ) -> io::Result<crate::ListeningPort> {
        factory.start_factory();
        let factory = Rc::new(factory);
        let (build, stop) = (factory.clone(), factory);
        let listen = Rc::new(MemoryListen {
            port,
            options,
            build: Box::new(move |peer| {
                build
                    .build_protocol(peer)
                    .map(|p| Box::new(p) as Box<dyn Protocol>)
            }),
            stop: Box::new(move || stop.stop_factory()),
            listening: Cell::new(true),
        });
        self.listens.borrow_mut().push(listen.clone());
        Ok(crate::ListeningPort { port: listen })
    }

    fn connect_tcp<F: crate::ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
        timeout: std::time::Duration,
    ) -> crate::Connector {
        let record = Rc::new_cyclic(|me| MemoryConnect {
            destination: crate::Destination::Tcp {
                host: host.to_owned(),
                port,
            },
            timeout,
            factory: Box::new(factory),
            me: me.clone(),
            state: Cell::new(crate::ConnectorState::Disconnected),
            reactor: self.reactor.downgrade(),
            factory_started: Cell::new(false),
            reconnects: Cell::new(0),
            disconnects: Cell::new(0),
        });
        self.connects.borrow_mut().push(record.clone());
        record.begin_attempt();
        record.connector()
    }
}
