//! Listening ports: accept connections and hand each to a new protocol.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_transport::driver::SocketTransport;
use torsion_transport::reactor::Reactor;
use torsion_transport::reactor::{panic_message, Handler, Interest, Readiness, Registration};
use torsion_transport::socket2::Socket;
use torsion_transport::unix::SocketFile;
use torsion_transport::{net, Address};

use crate::connection::{guarded, Driver, StreamConnection};
use crate::factory::Factory;

/// Connections accepted per readiness event before other sources get a
/// turn.
const ACCEPT_BATCH: usize = 64;

/// How long accepting pauses when accepting fails and the listener would
/// stay readable (out of descriptors, or every accept refused).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves a connected, non-blocking socket with a protocol from `factory`.
/// Returns false if the factory refused (or panicked) and the socket was
/// closed.
///
/// # Errors
/// If the socket cannot be registered with the reactor (it is closed).
pub(crate) fn serve<F: Factory>(
    reactor: &Reactor,
    factory: &F,
    socket: Socket,
    peer: Address,
) -> io::Result<bool> {
    let built = panic::catch_unwind(AssertUnwindSafe(|| factory.build_protocol(&peer)));
    let protocol = match built {
        Ok(Some(protocol)) => {
            tracing::debug!(%peer, "accepted");
            protocol
        }
        Ok(None) => {
            tracing::debug!(%peer, "factory refused the connection");
            return Ok(false);
        }
        Err(payload) => {
            tracing::error!(%peer, panic = panic_message(&*payload), "factory panicked in build_protocol; connection closed");
            return Ok(false);
        }
    };
    let mut created = None;
    let registered = SocketTransport::accepted(reactor, socket, peer.clone(), |transport| {
        let connection = Rc::new(StreamConnection {
            driver: Driver::<F::Protocol>::new(transport),
        });
        created = Some(connection.clone());
        connection
    });
    match registered {
        Ok(_) => {
            if let Some(connection) = created {
                connection.driver.attach(protocol);
            }
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "could not register an accepted connection");
            Err(e)
        }
    }
}

/// A listening socket and the factory that serves it.
pub(crate) struct Port<F: Factory> {
    me: Weak<Port<F>>,
    registration: RefCell<Option<Registration<Socket>>>,
    factory: F,
    host: Address,
    /// The socket file of a Unix listener, removed when it stops.
    file: Option<SocketFile>,
    /// True while accepting is paused (see [`Port::back_off`]).
    backing_off: Cell<bool>,
    span: tracing::Span,
}

impl<F: Factory> Port<F> {
    /// Listens on `socket`, bound and listening at `host`, serving
    /// connections with `factory`; `file` is a Unix socket's file, removed
    /// when the port stops.
    pub(crate) fn listen(
        reactor: &Reactor,
        socket: Socket,
        host: Address,
        file: Option<SocketFile>,
        factory: F,
    ) -> io::Result<ListeningPort> {
        let port = Rc::new_cyclic(|me| Port {
            me: me.clone(),
            registration: RefCell::new(None),
            factory,
            host: host.clone(),
            file,
            backing_off: Cell::new(false),
            span: tracing::info_span!("port", host = %host),
        });
        let registration = reactor.register(socket, Interest::READABLE, port.clone())?;
        *port.registration.borrow_mut() = Some(registration);
        guarded("start_factory", || port.factory.start_factory());
        tracing::info!(%host, "listening");
        Ok(ListeningPort { port })
    }

    fn accept_batch(&self, reactor: &Reactor) {
        let _span = self.span.enter();
        // Whether this event accepted a connection, and the last error that
        // let it go on to the next one.
        let mut took_any = false;
        let mut skipped = None;
        for _ in 0..ACCEPT_BATCH {
            let accepted = match &*self.registration.borrow() {
                Some(registration) => net::accept(registration.get_ref()),
                None => return,
            };
            match accepted {
                Ok((socket, peer)) => {
                    took_any = true;
                    self.start_connection(reactor, socket, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if net::is_connection_failed_before_accept(&e)
                        || e.kind() == io::ErrorKind::PermissionDenied =>
                {
                    // The connection failed before it was accepted and
                    // left the backlog (the peer aborted, a network error
                    // passed on), or a firewall dropped it (`EPERM`): the
                    // next accept finds the next one. But a security policy
                    // (seccomp, an LSM) can refuse accept with any of these
                    // and leave the connection queued, so go on only
                    // within this event's batch.
                    reactor.counters().accept_failed(net::accept_error_kind(&e));
                    tracing::debug!(host = %self.host, error = %e, "accept failed; trying the next connection");
                    skipped = Some(e);
                }
                Err(e) => {
                    // Out of descriptors or memory, or an error that
                    // retrying at once would not cure: the connection stays
                    // queued.
                    reactor.counters().accept_failed(net::accept_error_kind(&e));
                    self.back_off(reactor, &e);
                    return;
                }
            }
        }
        // A whole batch of failures and never "nothing more": the same
        // connection is likely refused over and over, the listener stays
        // readable, and trying again at once would spin. (Connections that
        // really failed drain to "nothing more" long before.)
        if let (false, Some(e)) = (took_any, skipped) {
            self.back_off(reactor, &e);
        }
    }

    fn start_connection(&self, reactor: &Reactor, socket: Socket, peer: Address) {
        // A refusal is the factory's choice and a failure is logged; the
        // listener carries on either way.
        let counters = reactor.counters();
        match serve(reactor, &self.factory, socket, peer) {
            Ok(true) => counters.connection_accepted(),
            Ok(false) | Err(_) => counters.connection_refused(),
        }
    }

    /// Accepting failed and the pending connection stays in the backlog
    /// (out of descriptors, every accept refused, ...): the listener would
    /// report readable forever. Stop watching it for a moment instead of
    /// spinning, with one warning per pause.
    fn back_off(&self, reactor: &Reactor, error: &io::Error) {
        if self.backing_off.replace(true) {
            return;
        }
        if net::is_out_of_descriptors(error) {
            tracing::warn!(host = %self.host, %error, "out of file descriptors; pausing accept for {ACCEPT_BACKOFF:?}");
        } else {
            tracing::warn!(host = %self.host, %error, "accept failed; pausing accept for {ACCEPT_BACKOFF:?}");
        }
        self.set_interest(Interest::NONE);
        let me = self.me.clone();
        reactor.call_later(ACCEPT_BACKOFF, move |reactor| {
            if let Some(port) = me.upgrade() {
                port.backing_off.set(false);
                port.set_interest(Interest::READABLE);
                port.accept_batch(reactor);
            }
        });
    }

    fn set_interest(&self, interest: Interest) {
        if let Some(registration) = &*self.registration.borrow() {
            if let Err(e) = registration.set_interest(interest) {
                tracing::warn!(host = %self.host, error = %e, "could not change accept interest");
            }
        }
    }

    fn stop(&self) {
        let registration = self.registration.borrow_mut().take();
        if let Some(registration) = registration {
            drop(registration);
            if let Some(file) = &self.file {
                file.remove();
            }
            tracing::info!(host = %self.host, "stopped listening");
            guarded("stop_factory", || self.factory.stop_factory());
        }
    }
}

impl<F: Factory> Handler for Port<F> {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        if readiness.is_readable() {
            self.accept_batch(reactor);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        self.stop();
    }
}

impl<F: Factory> Drop for Port<F> {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) trait PortControl {
    fn host(&self) -> &Address;
    fn stop(&self);
    fn is_listening(&self) -> bool;
}

impl<F: Factory> PortControl for Port<F> {
    fn host(&self) -> &Address {
        &self.host
    }
    fn stop(&self) {
        Port::stop(self);
    }
    fn is_listening(&self) -> bool {
        self.registration.borrow().is_some()
    }
}

/// A listening port (Twisted's `IListeningPort`), returned by
/// [`listen_tcp`](crate::ReactorTcp::listen_tcp).
///
/// The port keeps listening when this handle is dropped, until
/// [`ListeningPort::stop_listening`] is called or the reactor is dropped.
/// Stopping does not close connections already accepted.
#[doc(alias = "IListeningPort")]
#[derive(Clone)]
pub struct ListeningPort {
    pub(crate) port: Rc<dyn PortControl>,
}

impl ListeningPort {
    /// The address the port listens on, with the real port number when 0
    /// was asked for (Twisted's `getHost`).
    #[doc(alias = "getHost")]
    pub fn get_host(&self) -> Address {
        self.port.host().clone()
    }

    /// Stops accepting and closes the listening socket (Twisted's
    /// `stopListening`). Does nothing if already stopped.
    #[doc(alias = "stopListening")]
    pub fn stop_listening(&self) {
        self.port.stop();
    }

    /// True until [`ListeningPort::stop_listening`].
    pub fn is_listening(&self) -> bool {
        self.port.is_listening()
    }
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("host", &self.port.host())
            .field("listening", &self.port.is_listening())
            .finish()
    }
}
