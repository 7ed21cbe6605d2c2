//! A protocol over a serial port (Twisted's
//! `twisted.internet.serialport.SerialPort`).

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;

use torsion_transport::reactor::Reactor;
use torsion_transport::serial::{SerialControl, SerialSettings, SerialTransport};
use torsion_transport::{Transport, TransportRef};

use crate::connection::{Driver, StreamConnection};
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
/// [`CloseReason::Lost`](crate::CloseReason::Lost) carrying a
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
        let mut connection = None;
        let (transport, control) =
            SerialTransport::open_serial(reactor, path.as_ref(), settings, |transport| {
                let made = Rc::new(StreamConnection {
                    driver: Driver::new(transport),
                });
                connection = Some(made.clone());
                made
            })?;
        tracing::debug!(path = %control.path().display(), "serial port open");
        connection
            .expect("the handler was made")
            .driver
            .attach(protocol);
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
