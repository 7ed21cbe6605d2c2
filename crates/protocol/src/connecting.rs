//! Outgoing connections: resolve, connect with a timeout, and report to a
//! client factory. The [`Connector`] handle forwards to what is here.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_transport::driver::{Progress, SocketTransport};
use torsion_transport::reactor::{DelayedCall, Reactor};
use torsion_transport::reactor::{Handler, Readiness, WeakReactor};
use torsion_transport::socket2::SockAddr;
use torsion_transport::{net, tcp, Address, CloseReason, ConnectError, Transport};

use crate::connection::{guarded, Driver};
use crate::connector::{Connector, ConnectorControl, ConnectorState, Destination};
use crate::factory::ClientFactory;

enum State {
    Disconnected,
    Connecting {
        timer: Option<DelayedCall>,
        transport: Option<Rc<SocketTransport>>,
        remaining: VecDeque<SockAddr>,
        last_error: Option<io::Error>,
    },
    Connected {
        transport: Rc<SocketTransport>,
    },
}

pub(crate) struct ConnectorInner<F: ClientFactory> {
    me: Weak<ConnectorInner<F>>,
    factory: F,
    destination: Destination,
    timeout: Duration,
    reactor: WeakReactor,
    state: RefCell<State>,
    /// Identifies the current attempt, so late results of an abandoned one
    /// (a slow name lookup, a timer) are ignored.
    attempt: Cell<u64>,
    /// True between the factory's `start_factory` and `stop_factory`: from
    /// an attempt's start until it fails or its connection is lost without
    /// a new attempt begun (Twisted's `factoryStarted`).
    factory_started: Cell<bool>,
}

impl<F: ClientFactory> ConnectorInner<F> {
    pub(crate) fn start(
        reactor: &Reactor,
        destination: Destination,
        factory: F,
        timeout: Duration,
    ) -> Connector {
        let inner = Rc::new_cyclic(|me| ConnectorInner {
            me: me.clone(),
            factory,
            destination,
            timeout,
            reactor: reactor.downgrade(),
            state: RefCell::new(State::Disconnected),
            attempt: Cell::new(0),
            factory_started: Cell::new(false),
        });
        inner.connect();
        Connector { inner }
    }

    /// A strong reference to this connector; it exists whenever one of
    /// its methods runs.
    fn strong(&self) -> Rc<ConnectorInner<F>> {
        self.me.upgrade().expect("connector is alive while in use")
    }

    fn handle(&self) -> Connector {
        Connector {
            inner: self.strong(),
        }
    }

    fn connect(&self) {
        if !matches!(*self.state.borrow(), State::Disconnected) {
            tracing::debug!(destination = %self.destination, "connect() ignored: already connecting or connected");
            return;
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let attempt = self.attempt.get() + 1;
        self.attempt.set(attempt);
        // The reactor keeps a connector alive while it works: the timer,
        // the lookup and the connection's handler each hold it. The timer
        // is cancelled (dropping its hold) when the attempt ends.
        let me = self.strong();
        let timer = reactor.call_later(self.timeout, move |reactor| {
            me.timed_out(reactor, attempt);
        });
        *self.state.borrow_mut() = State::Connecting {
            timer: Some(timer),
            transport: None,
            remaining: VecDeque::new(),
            last_error: None,
        };
        if !self.factory_started.replace(true) {
            guarded("start_factory", || self.factory.start_factory());
        }
        let connector = self.handle();
        guarded("started_connecting", || {
            self.factory.started_connecting(&connector)
        });

        // Results always arrive on a later turn, so the factory never hears
        // of a failure from inside `connect_tcp`.
        let me = self.strong();
        let known = match &self.destination {
            Destination::Unix(path) => Some(SockAddr::unix(path)),
            Destination::Tcp { host, port } => host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| Ok(SockAddr::from(SocketAddr::new(ip, *port)))),
        };
        if let Some(addr) = known {
            reactor.call_soon(move |reactor| {
                me.resolved(reactor, attempt, addr.map(|addr| vec![addr]));
            });
        } else if let Destination::Tcp { host, port } = &self.destination {
            let (host, port) = (host.clone(), *port);
            reactor.defer_to_thread(
                move || {
                    tcp::resolve(&host, port)
                        .map(|addrs| addrs.into_iter().map(SockAddr::from).collect())
                },
                move |reactor, result| {
                    let result =
                        result.unwrap_or_else(|_| Err(io::Error::other("the resolver panicked")));
                    me.resolved(reactor, attempt, result);
                },
            );
        }
    }

    fn is_current(&self, attempt: u64) -> bool {
        self.attempt.get() == attempt && matches!(*self.state.borrow(), State::Connecting { .. })
    }

    fn resolved(&self, reactor: &Reactor, attempt: u64, result: io::Result<Vec<SockAddr>>) {
        if !self.is_current(attempt) {
            return;
        }
        match result {
            Ok(addrs) => {
                if let State::Connecting { remaining, .. } = &mut *self.state.borrow_mut() {
                    remaining.extend(addrs);
                }
                self.try_next(reactor);
            }
            Err(error) => self.fail(match &self.destination {
                Destination::Tcp { host, .. } => ConnectError::Resolve {
                    host: host.clone(),
                    error,
                },
                // A path that cannot be a socket address: nothing was
                // looked up.
                Destination::Unix(_) => ConnectError::Failed(error),
            }),
        }
    }

    /// Tries the next resolved address, or reports failure when none is
    /// left.
    fn try_next(&self, reactor: &Reactor) {
        loop {
            let next = match &mut *self.state.borrow_mut() {
                State::Connecting { remaining, .. } => remaining.pop_front(),
                _ => return,
            };
            let Some(addr) = next else {
                let last = match &mut *self.state.borrow_mut() {
                    State::Connecting { last_error, .. } => last_error.take(),
                    _ => None,
                };
                let error = last.unwrap_or_else(|| io::Error::other("no address to connect to"));
                return self.fail(ConnectError::from_io(error));
            };
            let peer = Address::from_sockaddr(&addr);
            let started = net::start_connect(&addr).and_then(|socket| {
                let connector = self.strong();
                SocketTransport::connecting(reactor, socket, peer.clone(), move |transport| {
                    Rc::new(ClientConnection {
                        connector,
                        driver: Driver::new(transport),
                    })
                })
            });
            let mut state = self.state.borrow_mut();
            let State::Connecting {
                transport,
                last_error,
                ..
            } = &mut *state
            else {
                return;
            };
            match started {
                Ok(started) => {
                    tracing::debug!(%peer, "connecting");
                    *transport = Some(started);
                    return;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connect attempt failed");
                    *last_error = Some(e);
                }
            }
        }
    }

    fn attempt_failed(&self, reactor: &Reactor, error: io::Error) {
        if let State::Connecting {
            transport,
            last_error,
            ..
        } = &mut *self.state.borrow_mut()
        {
            tracing::debug!(%error, "connect attempt failed");
            transport.take();
            *last_error = Some(error);
        }
        self.try_next(reactor);
    }

    fn connected(&self, connection: &ClientConnection<F>) {
        let previous = std::mem::replace(
            &mut *self.state.borrow_mut(),
            State::Connected {
                transport: connection.driver.transport.clone(),
            },
        );
        if let State::Connecting {
            timer: Some(timer), ..
        } = previous
        {
            let _ = timer.cancel();
        }
        let peer = connection.driver.transport.peer();
        let built = guarded("build_protocol", || self.factory.build_protocol(&peer));
        match built.flatten() {
            Some(protocol) => connection.driver.attach(protocol),
            None => connection.driver.transport.lose_connection(),
        }
    }

    fn lost(&self, reason: &CloseReason) {
        *self.state.borrow_mut() = State::Disconnected;
        let connector = self.handle();
        guarded("client_connection_lost", || {
            self.factory.client_connection_lost(&connector, reason)
        });
        self.stop_factory_unless_reconnecting();
    }

    /// After an attempt or connection ended and the factory heard of it:
    /// stops the factory, unless the factory began a new attempt from its
    /// callback.
    fn stop_factory_unless_reconnecting(&self) {
        let idle = matches!(*self.state.borrow(), State::Disconnected);
        if idle && self.factory_started.replace(false) {
            guarded("stop_factory", || self.factory.stop_factory());
        }
    }

    fn timed_out(&self, _reactor: &Reactor, attempt: u64) {
        if self.is_current(attempt) {
            self.fail(ConnectError::TimedOut(self.timeout));
        }
    }

    /// Ends the current attempt and reports `error` to the factory.
    fn fail(&self, error: ConnectError) {
        let previous = std::mem::replace(&mut *self.state.borrow_mut(), State::Disconnected);
        let State::Connecting {
            timer, transport, ..
        } = previous
        else {
            *self.state.borrow_mut() = previous;
            return;
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        if let Some(transport) = transport {
            transport.cancel_connect();
        }
        tracing::debug!(destination = %self.destination, %error, "connection failed");
        let connector = self.handle();
        guarded("client_connection_failed", || {
            self.factory.client_connection_failed(&connector, &error)
        });
        self.stop_factory_unless_reconnecting();
    }
}

impl<F: ClientFactory> ConnectorControl for ConnectorInner<F> {
    fn connect(&self) {
        ConnectorInner::connect(self);
    }

    fn stop_connecting(&self) {
        self.fail(ConnectError::Cancelled);
    }

    fn disconnect(&self) {
        let transport = match &*self.state.borrow() {
            State::Connected { transport } => Some(transport.clone()),
            _ => None,
        };
        match transport {
            Some(transport) => transport.lose_connection(),
            None => self.stop_connecting(),
        }
    }

    fn abort(&self) {
        let transport = match &*self.state.borrow() {
            State::Connected { transport } => Some(transport.clone()),
            _ => None,
        };
        match transport {
            Some(transport) => transport.abort_connection(),
            None => self.stop_connecting(),
        }
    }

    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade()
    }

    fn state(&self) -> ConnectorState {
        match *self.state.borrow() {
            State::Disconnected => ConnectorState::Disconnected,
            State::Connecting { .. } => ConnectorState::Connecting,
            State::Connected { .. } => ConnectorState::Connected,
        }
    }
}

/// The reactor-facing side of one outgoing connection.
struct ClientConnection<F: ClientFactory> {
    connector: Rc<ConnectorInner<F>>,
    driver: Driver<F::Protocol>,
}

impl<F: ClientFactory> Handler for ClientConnection<F> {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        match self.driver.ready(readiness) {
            Progress::Pending => {}
            Progress::Connected => self.connector.connected(self),
            Progress::ConnectFailed(error) => self.connector.attempt_failed(reactor, error),
            Progress::Closed(reason) => self.closed(&reason),
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if self.driver.transport.is_connecting() {
            self.connector.fail(ConnectError::Cancelled);
        } else if let Some(reason) = self.driver.transport.close_for_shutdown() {
            self.closed(&reason);
        }
    }
}

impl<F: ClientFactory> ClientConnection<F> {
    fn closed(&self, reason: &CloseReason) {
        if self.driver.has_protocol() {
            self.driver.lost(reason);
        }
        self.connector.lost(reason);
    }
}
