//! A protocol over a serial port (Twisted's
//! `twisted.internet.serialport.SerialPort`).

use std::cell::Cell;
use std::io;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;

use torsion_transport::driver::Progress;
use torsion_transport::reactor::{panic_message, Handler, Reactor, Readiness};
use torsion_transport::serial::{SerialControl, SerialSettings, SerialTransport};
use torsion_transport::{CloseReason, Transport, TransportRef};

use crate::protocol::Protocol;

/// A [`Protocol`] running over a serial port (Twisted's `SerialPort`).
///
/// The protocol sees an ordinary [`TransportRef`]: writes are queued and
/// flow-controlled as on a socket (producers, watermarks,
/// `lose_connection`, `abort_connection`). What only a serial line has
/// (its speed, a break, the modem lines) is on the [`SerialControl`]
/// this dereferences to; clone it ([`SerialPort::control`]) to hand it
/// to the protocol.
///
/// The connection ends when this side closes it, when the reactor shuts
/// down, or when the device goes away (unplugged, or the other end of a
/// pseudo-terminal closed): then at once, with
/// [`CloseReason::Lost`] carrying a
/// [`HungUp`](crate::HungUp) error. A serial line
/// has no end of stream otherwise. See `docs/serial.md`.
///
/// ```no_run
/// use torsion_protocol::{Protocol, Reactor, SerialPort, SerialSettings, TransportRef};
///
/// /// Writes back what it reads.
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
///         transport.write(data);
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let port = SerialPort::open(&reactor, Echo, "/dev/ttyUSB0", &SerialSettings::baud(115_200))?;
/// port.set_dtr(true)?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SerialPort {
    transport: Rc<SerialTransport>,
    control: SerialControl,
}

impl SerialPort {
    /// Opens the device at `path` with `settings` and runs `protocol`
    /// over it; the protocol hears `make_connection` before this returns.
    ///
    /// # Errors
    /// If the device cannot be opened or is not a terminal, or did not
    /// keep the settings (an
    /// [`UnsupportedSettings`](crate::UnsupportedSettings)
    /// error naming them; the device's attributes are put back).
    /// The protocol is then dropped without hearing anything.
    pub fn open<P: Protocol>(
        reactor: &Reactor,
        protocol: P,
        path: impl AsRef<Path>,
        settings: &SerialSettings,
    ) -> io::Result<SerialPort> {
        let mut driver = None;
        let (transport, control) =
            SerialTransport::open_serial(reactor, path.as_ref(), settings, |transport| {
                let made = Rc::new(SerialDriver {
                    transport,
                    protocol: Cell::new(None),
                });
                driver = Some(made.clone());
                made
            })?;
        let driver = driver.expect("the handler was made");
        transport.set_half_closeable(protocol.half_closeable());
        driver.protocol.set(Some(protocol));
        tracing::debug!(path = %control.path().display(), "serial port open");
        driver.call("make_connection", |protocol, transport| {
            protocol.make_connection(transport);
        });
        Ok(SerialPort { transport, control })
    }

    /// The transport the protocol writes to.
    pub fn transport(&self) -> TransportRef {
        self.transport.clone()
    }

    /// The port's controls, to keep beside the protocol.
    pub fn control(&self) -> SerialControl {
        self.control.clone()
    }

    /// Closes the port once everything queued is written (the
    /// transport's `lose_connection`).
    #[doc(alias = "loseConnection")]
    pub fn lose_connection(&self) {
        self.transport.lose_connection();
    }
}

impl Deref for SerialPort {
    type Target = SerialControl;
    fn deref(&self) -> &SerialControl {
        &self.control
    }
}

/// Drives the protocol (as the socket connections' driver does).
struct SerialDriver<P> {
    transport: Rc<SerialTransport>,
    protocol: Cell<Option<P>>,
}

impl<P: Protocol> SerialDriver<P> {
    fn call(&self, what: &str, f: impl FnOnce(&mut P, &TransportRef)) {
        let Some(mut protocol) = self.protocol.take() else {
            return;
        };
        let handle: TransportRef = self.transport.clone();
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(&mut protocol, &handle)));
        self.protocol.set(Some(protocol));
        if let Err(payload) = result {
            tracing::error!(
                panic = panic_message(&*payload),
                "serial port protocol panicked in {what}; closing"
            );
            self.transport.abort_connection();
        }
    }

    fn lost(&self, reason: &CloseReason) {
        tracing::debug!(%reason, "serial port closed");
        self.call("connection_lost", |protocol, _| {
            protocol.connection_lost(reason)
        });
        drop(self.protocol.take());
    }
}

impl<P: Protocol> Handler for SerialDriver<P> {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let mut progress = self.transport.process(readiness, &mut |data| {
            self.call("data_received", |protocol, transport| {
                protocol.data_received(transport, data);
            });
        });
        loop {
            let events = self.transport.take_half_close_events();
            if !events.read_closed && !events.write_closed {
                break;
            }
            if events.read_closed {
                self.call("read_connection_lost", |protocol, transport| {
                    protocol.read_connection_lost(transport);
                });
            }
            if events.write_closed {
                self.call("write_connection_lost", |protocol, transport| {
                    protocol.write_connection_lost(transport);
                });
            }
            if let Progress::Pending = progress {
                progress = self.transport.process(Readiness::WOKEN, &mut |_| {});
            }
        }
        if let Progress::Closed(reason) = progress {
            self.lost(&reason);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(reason) = self.transport.close_for_shutdown() {
            self.lost(&reason);
        }
    }
}
