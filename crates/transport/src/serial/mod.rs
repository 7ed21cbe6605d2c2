//! Serial ports as stream transports (Twisted's
//! `twisted.internet.serialport`): a terminal device opened non-blocking
//! and configured through termios, moving bytes under the shared
//! [`StreamTransport`] (write queue, back-pressure, producers, closing),
//! with a [`SerialControl`] for what only a serial line has: its speed
//! and framing, a break, the modem lines.
//!
//! # What is checked
//! - Settings are written and then read back; whatever the device did not
//!   keep is an [`UnsupportedSettings`] error naming each setting (a
//!   pseudo-terminal accepts 7 data bits or parity and silently keeps
//!   8N1), and the previous attributes are put back.
//! - The device going away (a USB adapter unplugged, the other end of a
//!   pseudo-terminal closed) is a hang-up: reads give end of file or
//!   `EIO`, epoll reports it on every wait. The connection ends at once
//!   with [`CloseReason::Lost`](crate::CloseReason::Lost) carrying a
//!   [`HungUp`] error.
//! - Modem-line calls on a device without modem lines (`ENOTTY`) are an
//!   `Unsupported` error.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_reactor::{DelayedCall, Handler, Interest, Reactor, Registration, WeakReactor};

use crate::address::Address;
use crate::stream::{Opening, Pipe, StreamTransport};
use crate::sys::serial as sys;

/// Bits per character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataBits {
    /// 5 bits (`CS5`).
    Five,
    /// 6 bits (`CS6`).
    Six,
    /// 7 bits (`CS7`).
    Seven,
    /// 8 bits (`CS8`), the default.
    Eight,
}

/// The parity bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parity {
    /// No parity bit, the default.
    None,
    /// Even parity (`PARENB`).
    Even,
    /// Odd parity (`PARENB | PARODD`).
    Odd,
}

/// Stop bits per character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopBits {
    /// One stop bit, the default.
    One,
    /// Two stop bits (`CSTOPB`).
    Two,
}

/// How a serial port is set up: 9600 baud, 8 data bits, no parity, one
/// stop bit, no flow control, raw, exclusive by default (Twisted's
/// `SerialPort` arguments `baudrate`, `bytesize`, `parity`, `stopbits`,
/// `xonxoff`, `rtscts`).
///
/// ```
/// use torsion_transport::serial::{Parity, SerialSettings};
///
/// let settings = SerialSettings {
///     parity: Parity::Even,
///     ..SerialSettings::baud(115_200)
/// };
/// assert_eq!(settings.baud_rate, 115_200);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    /// Bits per second, both directions. Standard rates everywhere; on
    /// Linux (but for PowerPC) any rate the driver can make (`BOTHER`). 0 is refused
    /// (`InvalidInput`): on a serial line it means hang up.
    #[doc(alias = "baudrate")]
    pub baud_rate: u32,
    /// Bits per character.
    #[doc(alias = "bytesize")]
    pub data_bits: DataBits,
    /// The parity bit. When on, received characters are checked
    /// (`INPCK`): one whose parity is wrong reads as a 0 byte.
    pub parity: Parity,
    /// Stop bits.
    #[doc(alias = "stopbits")]
    pub stop_bits: StopBits,
    /// Software flow control: XON/XOFF characters both ways (`IXON |
    /// IXOFF`). Those two bytes (0x11, 0x13) are then flow control, not
    /// data, both ways.
    #[doc(alias = "xonxoff")]
    pub xon_xoff: bool,
    /// Hardware flow control on the RTS and CTS lines (`CRTSCTS`).
    #[doc(alias = "rtscts")]
    pub rts_cts: bool,
    /// Raw mode (what `cfmakeraw` does): bytes pass unchanged, with no
    /// line editing, echo, signals or newline translation. When false,
    /// the device's line discipline settings are left as they are.
    pub raw: bool,
    /// Claims the device for this port alone (`TIOCEXCL`): later opens
    /// by others fail with `EBUSY` (except for a privileged process).
    pub exclusive: bool,
}

impl SerialSettings {
    /// The defaults at `baud_rate` bits per second.
    pub fn baud(baud_rate: u32) -> SerialSettings {
        SerialSettings {
            baud_rate,
            ..SerialSettings::default()
        }
    }
}

impl Default for SerialSettings {
    fn default() -> SerialSettings {
        SerialSettings {
            baud_rate: 9600,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            xon_xoff: false,
            rts_cts: false,
            raw: true,
            exclusive: true,
        }
    }
}

/// One setting the device did not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedSetting {
    /// Which setting: `"baud rate"`, `"data bits"`, `"parity"`, `"stop
    /// bits"`, `"XON/XOFF"`, `"RTS/CTS"`, `"raw mode"` or `"exclusive"`.
    pub setting: &'static str,
    /// What was asked.
    pub asked: String,
    /// What the device kept.
    pub kept: String,
}

/// Settings a device did not honour: it took the request and kept
/// something else (read back after setting). Carried inside an
/// `io::Error` of kind `Unsupported`; reach it with
/// `error.get_ref().and_then(|e| e.downcast_ref::<UnsupportedSettings>())`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedSettings {
    /// The device.
    pub path: PathBuf,
    /// Each setting that was not kept.
    pub refused: Vec<RefusedSetting>,
}

impl fmt::Display for UnsupportedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "serial device {} did not keep ", self.path.display())?;
        for (i, refused) in self.refused.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{} {} (kept {})",
                refused.setting, refused.asked, refused.kept
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for UnsupportedSettings {}

/// The device went away: unplugged, or the other end of a
/// pseudo-terminal closed (the kernel hung the terminal up). Carried
/// inside an `io::Error` of kind `NotConnected`, as the reason
/// ([`CloseReason::Lost`](crate::CloseReason::Lost)) the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HungUp {
    /// The device.
    pub path: PathBuf,
}

impl HungUp {
    /// True if `error` says the device went away.
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<HungUp>().is_some())
    }
}

impl fmt::Display for HungUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serial device {} hung up (removed, or the other end closed)",
            self.path.display()
        )
    }
}

impl std::error::Error for HungUp {}

/// The modem status lines (Twisted's `getCTS`, `getDSR`, `getCD`,
/// `getRI` in one read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModemLines {
    /// Clear To Send.
    pub cts: bool,
    /// Data Set Ready.
    pub dsr: bool,
    /// Carrier Detect.
    pub cd: bool,
    /// Ring Indicator.
    pub ri: bool,
    /// Data Terminal Ready (ours).
    pub dtr: bool,
    /// Request To Send (ours).
    pub rts: bool,
}

fn hung_up(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        HungUp {
            path: path.to_path_buf(),
        },
    )
}

/// True for the errors a terminal gives once it is hung up or its device
/// is gone.
fn is_gone(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EIO | libc::ENXIO | libc::ENODEV)
    )
}

/// True if the terminal on `file` is gone: its attributes can no longer
/// be read.
fn device_gone(file: &File) -> bool {
    match sys::get(file.as_fd()) {
        Ok(_) => false,
        Err(e) => is_gone(&e),
    }
}

/// The error to report for `error` from the terminal on `file` at
/// `path`: a [`HungUp`] error if the device is gone (an `EIO` alone is
/// not enough: a driver may give it for a failed transfer), otherwise
/// `error` with the device named. The pipe and the control both report
/// through this.
fn device_error(file: &File, path: &Path, error: io::Error) -> io::Error {
    if is_gone(&error) && device_gone(file) {
        hung_up(path)
    } else {
        named(path, error)
    }
}

/// `error`, its kind kept, with the device named. `WouldBlock` and
/// `Interrupted` pass unchanged: they are not reported, and a pipe that
/// is full gives them all the time.
fn named(path: &Path, error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => error,
        kind => io::Error::new(kind, format!("serial device {}: {error}", path.display())),
    }
}

/// The open terminal, shared by its [`SerialPipe`] and [`SerialControl`]s.
///
/// `claimed` is true while this port holds an exclusive claim
/// (`TIOCEXCL`) that it made itself. The claim marks the tty, not our
/// descriptor, so it would outlive us while anything else (another
/// program, a pseudo-terminal's own slave descriptor) keeps the device
/// open; dropping the device gives it back. That drop is the one way
/// out of every path, so an open that fails after the claim was taken
/// (settings refused, the reactor refusing the descriptor) gives it
/// back as well; a claim someone else made is never touched.
///
/// The last close of a real serial tty waits in the kernel until its
/// output is sent (`closing_wait`, 30 s by default, `O_NONBLOCK` or not):
/// with RTS/CTS and CTS low, or after an XOFF, that would stop the whole
/// reactor. So a device whose kernel output queue (`TIOCOUTQ`) is not
/// empty at drop is closed on a short-lived helper thread; an aborted
/// port flushes that queue first (see [`SerialPipe`]'s `reset_on_close`),
/// so it closes at once.
struct Device {
    /// Taken out only by `drop`.
    file: ManuallyDrop<File>,
    claimed: Cell<bool>,
    /// The timer that ends the break under way, if any.
    break_end: RefCell<Option<DelayedCall>>,
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device {
    /// Takes (`on`) or gives back the claim; only a claim this port made
    /// is ever given back.
    fn claim(&self, on: bool) -> io::Result<()> {
        if on == self.claimed.get() {
            return Ok(());
        }
        if on {
            // Someone else's claim stays theirs: nothing to take.
            if sys::exclusive(self.as_fd()).unwrap_or(false) {
                return Ok(());
            }
            sys::set_exclusive(self.as_fd(), true)?;
        } else {
            sys::set_exclusive(self.as_fd(), false)?;
        }
        self.claimed.set(on);
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // A break under way ends with the port, not on a timer that
        // would find it gone.
        if let Some(call) = self.break_end.get_mut().take() {
            if call.active() {
                let _ = call.cancel();
                let _ = sys::set_break(self.file.as_fd(), false);
            }
        }
        if self.claimed.get() {
            let _ = sys::set_exclusive(self.file.as_fd(), false);
        }
        let pending = sys::queued(self.file.as_fd(), true).unwrap_or(0);
        // SAFETY: `file` is not used again: this is the device's drop.
        let file = unsafe { ManuallyDrop::take(&mut self.file) };
        if pending > 0 {
            // If no thread can be made, the closure (and the file with
            // it) is dropped here: closed inline, as before.
            let _ = std::thread::Builder::new()
                .name("torsion-serial-close".into())
                .spawn(move || drop(file));
        } else {
            drop(file);
        }
    }
}

/// A non-blocking terminal descriptor registered with the reactor: the
/// [`Pipe`] under a [`SerialTransport`].
///
/// A read of end of file or `EIO`, a write of `EIO`, and an error the
/// reactor reports are a hang-up when the terminal's attributes can no
/// longer be read: the connection fails with a [`HungUp`] error. A serial
/// line has no half-close: closing the write side only stops writing.
pub struct SerialPipe {
    registration: Registration<Rc<Device>>,
    path: Rc<Path>,
}

/// A [`StreamTransport`] over a serial port.
pub type SerialTransport = StreamTransport<SerialPipe>;

impl SerialPipe {
    fn file(&self) -> &File {
        &self.registration.get_ref().file
    }

    /// The error to report for `error`: a hang-up if the device is gone.
    fn map(&self, error: io::Error) -> io::Error {
        device_error(self.file(), &self.path, error)
    }

    fn gone(&self) -> bool {
        device_gone(self.file())
    }
}

impl Pipe for SerialPipe {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.file().write(data).map_err(|e| self.map(e))
    }

    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.file().write_vectored(data).map_err(|e| self.map(e))
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file().read(buf) {
            Ok(0) if self.gone() => Err(hung_up(&self.path)),
            // In canonical mode the end-of-file character reads as zero
            // bytes: nothing to deliver, and the line goes on.
            Ok(0) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Ok(n) => Ok(n),
            Err(e) => Err(self.map(e)),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }

    fn reset_on_close(&self) {
        // An abort drops what the kernel holds too, so that the close
        // does not wait for it to be sent.
        let _ = sys::flush(self.file().as_fd(), libc::TCOFLUSH);
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.gone().then(|| hung_up(&self.path)))
    }

    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        self.registration.set_interest(interest)
    }

    fn wake(&self) {
        self.registration.wake();
    }
}

/// What only a serial port has, beside its transport: its settings, a
/// break, the modem lines (Twisted's `SerialPort.setBaudRate`,
/// `sendBreak`, `setDTR`, `setRTS`, `getCTS`, ...). Cheap to clone; once
/// the port is closed every call fails with `NotConnected`.
#[derive(Clone)]
pub struct SerialControl {
    file: Weak<Device>,
    path: Rc<Path>,
    reactor: WeakReactor,
}

impl fmt::Debug for SerialControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialControl")
            .field("path", &self.path)
            .field("open", &(self.file.strong_count() > 0))
            .finish()
    }
}

impl SerialTransport {
    /// Opens the terminal device at `path` (non-blocking, close-on-exec,
    /// never as our controlling terminal), claims it if
    /// `settings.exclusive`, applies `settings` and checks that the
    /// device kept them. `make_handler` receives the new transport and
    /// returns the handler that drives it (calling
    /// [`StreamTransport::process`] with each readiness).
    ///
    /// # Errors
    /// If the device cannot be opened (the error names it and keeps the
    /// system's kind: `NotFound`, `PermissionDenied`, `EBUSY` when another
    /// holds it exclusively), is not a terminal (`InvalidInput`), asks
    /// for baud rate 0 (`InvalidInput`), or did
    /// not keep the settings ([`UnsupportedSettings`], kind
    /// `Unsupported`; its attributes are put back). Nothing stays open.
    pub fn open_serial(
        reactor: &Reactor,
        path: &Path,
        settings: &SerialSettings,
        make_handler: impl FnOnce(Rc<SerialTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<(Rc<SerialTransport>, SerialControl)> {
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::EBUSY) {
                    " (another program holds it exclusively)"
                } else {
                    ""
                };
                io::Error::new(
                    e.kind(),
                    format!("cannot open serial device {}: {e}{why}", path.display()),
                )
            })?;
        let path: Rc<Path> = Rc::from(path);
        let original = sys::get(file.as_fd()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTTY) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a terminal device", path.display()),
                )
            } else {
                named(&path, e)
            }
        })?;
        // From here every way out drops `file`, which gives back a claim
        // made here (see `Device`).
        let file = Rc::new(Device {
            file: ManuallyDrop::new(file),
            claimed: Cell::new(false),
            break_end: RefCell::new(None),
        });
        let control = SerialControl {
            file: Rc::downgrade(&file),
            path: path.clone(),
            reactor: reactor.downgrade(),
        };
        control.apply(&file, original, settings)?;
        let transport = StreamTransport::new(
            reactor,
            Address::Unknown,
            Opening::Open,
            |transport, interest| {
                let handler = make_handler(transport.clone());
                Ok(SerialPipe {
                    registration: reactor
                        .register(file, interest, handler)
                        .map_err(|e| named(&path, e))?,
                    path,
                })
            },
        )?;
        Ok((transport, control))
    }
}

impl SerialControl {
    fn file(&self) -> io::Result<Rc<Device>> {
        self.file.upgrade().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("serial device {} is closed", self.path.display()),
            )
        })
    }

    /// The device's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while the port is open.
    pub fn is_open(&self) -> bool {
        self.file.strong_count() > 0
    }

    /// Takes or gives back the claim, writes `settings` over `previous`
    /// and reads them back. On any error (the device did not keep them
    /// all, or refused a call) `previous` and the claim as it was are put
    /// back.
    fn apply(
        &self,
        device: &Device,
        previous: sys::Attributes,
        settings: &SerialSettings,
    ) -> io::Result<()> {
        if settings.baud_rate == 0 {
            // B0 is no speed: on a serial line it drops DTR and RTS, a
            // hang-up.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "serial device {}: baud rate 0 is not a speed (it would hang the line up)",
                    self.path.display()
                ),
            ));
        }
        let wanted = sys::configure(previous, settings).map_err(|e| named(&self.path, e))?;
        let was_claimed = device.claimed.get();
        let result = self.try_apply(device, &wanted, settings);
        if result.is_err() {
            // Leave the device as it was.
            let _ = sys::put(device.as_fd(), &previous);
            let _ = device.claim(was_claimed);
        }
        result
    }

    fn try_apply(
        &self,
        device: &Device,
        wanted: &sys::Attributes,
        settings: &SerialSettings,
    ) -> io::Result<()> {
        let fd = device.as_fd();
        device.claim(settings.exclusive).map_err(|e| self.map(e))?;
        sys::put(fd, wanted).map_err(|e| self.map(e))?;
        let kept = sys::describe(&sys::get(fd).map_err(|e| self.map(e))?);
        let mut refused = Vec::new();
        let mut check = |setting, asked: String, got: String| {
            if asked != got {
                refused.push(RefusedSetting {
                    setting,
                    asked,
                    kept: got,
                });
            }
        };
        check(
            "baud rate",
            settings.baud_rate.to_string(),
            kept.baud_rate.to_string(),
        );
        check(
            "data bits",
            format!("{:?}", settings.data_bits).to_lowercase(),
            format!("{:?}", kept.data_bits).to_lowercase(),
        );
        check(
            "parity",
            format!("{:?}", settings.parity).to_lowercase(),
            format!("{:?}", kept.parity).to_lowercase(),
        );
        check(
            "stop bits",
            format!("{:?}", settings.stop_bits).to_lowercase(),
            format!("{:?}", kept.stop_bits).to_lowercase(),
        );
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        check("XON/XOFF", on_off(settings.xon_xoff), on_off(kept.xon_xoff));
        check("RTS/CTS", on_off(settings.rts_cts), on_off(kept.rts_cts));
        if settings.raw {
            check("raw mode", on_off(true), on_off(kept.raw));
        }
        // Both ways: asking for no claim on a device someone else has
        // claimed is refused too, so that `settings` reads back what was
        // asked.
        if let Ok(exclusive) = sys::exclusive(fd) {
            check("exclusive", on_off(settings.exclusive), on_off(exclusive));
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            UnsupportedSettings {
                path: self.path.to_path_buf(),
                refused,
            },
        ))
    }

    fn map(&self, error: io::Error) -> io::Error {
        match self.file.upgrade() {
            Some(device) => device_error(&device.file, &self.path, error),
            None => named(&self.path, error),
        }
    }

    /// The settings the device has now, as read back from it.
    ///
    /// # Errors
    /// `NotConnected` once the port is closed; a [`HungUp`] error if the
    /// device went away.
    pub fn settings(&self) -> io::Result<SerialSettings> {
        let file = self.file()?;
        let mut settings = sys::describe(&sys::get(file.as_fd()).map_err(|e| self.map(e))?);
        settings.exclusive = sys::exclusive(file.as_fd()).unwrap_or(file.claimed.get());
        Ok(settings)
    }

    /// Changes every setting on the open port; data queued or in flight
    /// is not discarded.
    ///
    /// # Errors
    /// As for opening: [`UnsupportedSettings`] (the previous settings are
    /// put back), `NotConnected` once closed.
    pub fn set_settings(&self, settings: &SerialSettings) -> io::Result<()> {
        let file = self.file()?;
        let previous = sys::get(file.as_fd()).map_err(|e| self.map(e))?;
        self.apply(&file, previous, settings)
    }

    /// Changes the speed of the open port (Twisted's `setBaudRate`).
    ///
    /// The other settings are read from the device and written back
    /// unchanged, the line discipline included (raw or not), with what
    /// every configuration of a port makes sure of: the receiver on
    /// (`CREAD`), the modem status lines ignored (`CLOCAL`), `VMIN` 1 and
    /// `VTIME` 0, `IXANY` off, `INPCK` as the parity says, and software
    /// flow control both ways or not at all (a lone `IXON` or `IXOFF`
    /// reads as off and is cleared).
    ///
    /// # Errors
    /// As for [`SerialControl::set_settings`].
    #[doc(alias = "setBaudRate")]
    pub fn set_baud_rate(&self, baud_rate: u32) -> io::Result<()> {
        let file = self.file()?;
        let previous = sys::get(file.as_fd()).map_err(|e| self.map(e))?;
        let mut settings = sys::describe(&previous);
        settings.baud_rate = baud_rate;
        settings.exclusive = sys::exclusive(file.as_fd()).unwrap_or(file.claimed.get());
        // Keep the line discipline as is (see the doc comment for what
        // is made sure of all the same).
        settings.raw = false;
        self.apply(&file, previous, &settings)
    }

    /// Sends a break: holds the line at 0 for `duration` (Twisted's
    /// `sendBreak`; 250 ms is customary). Does not block: the break starts
    /// now and a timer on the reactor ends it. Bytes the kernel holds and
    /// has not sent yet may be cut by it. A break asked for while one is
    /// under way makes one break that ends at the later of the two ends.
    ///
    /// # Errors
    /// `NotConnected` once closed, the device's error otherwise
    /// (`Unsupported` if it cannot send a break).
    #[doc(alias = "sendBreak")]
    pub fn send_break(&self, duration: Duration) -> io::Result<()> {
        let file = self.file()?;
        sys::set_break(file.as_fd(), true).map_err(|e| self.break_error(e))?;
        let Some(reactor) = self.reactor.upgrade() else {
            return sys::set_break(file.as_fd(), false).map_err(|e| self.break_error(e));
        };
        let mut end = file.break_end.borrow_mut();
        if let Some(call) = end.as_ref().filter(|call| call.active()) {
            // One break under way: it lasts to the later end.
            if call.time() < reactor.seconds() + duration {
                let _ = call.reset(duration);
            }
            return Ok(());
        }
        let weak = self.file.clone();
        *end = Some(reactor.call_later(duration, move |_| {
            if let Some(file) = weak.upgrade() {
                let _ = sys::set_break(file.as_fd(), false);
            }
        }));
        Ok(())
    }

    fn break_error(&self, error: io::Error) -> io::Error {
        match error.raw_os_error() {
            Some(libc::ENOTTY | libc::EINVAL) => io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "serial device {} cannot send a break ({error})",
                    self.path.display()
                ),
            ),
            _ => self.map(error),
        }
    }

    fn modem_error(&self, error: io::Error) -> io::Error {
        match error.raw_os_error() {
            Some(libc::ENOTTY | libc::EINVAL) => io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "serial device {} has no modem control lines ({error})",
                    self.path.display()
                ),
            ),
            _ => self.map(error),
        }
    }

    /// Reads the modem lines.
    ///
    /// # Errors
    /// `Unsupported` if the device has none (a pseudo-terminal);
    /// `NotConnected` once closed.
    pub fn modem_lines(&self) -> io::Result<ModemLines> {
        let file = self.file()?;
        let bits = sys::modem_bits(file.as_fd()).map_err(|e| self.modem_error(e))?;
        let has = |bit| bits & bit != 0;
        Ok(ModemLines {
            cts: has(libc::TIOCM_CTS),
            dsr: has(libc::TIOCM_DSR),
            cd: has(libc::TIOCM_CAR),
            ri: has(libc::TIOCM_RNG),
            dtr: has(libc::TIOCM_DTR),
            rts: has(libc::TIOCM_RTS),
        })
    }

    /// Clear To Send (Twisted's `getCTS`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "getCTS")]
    pub fn cts(&self) -> io::Result<bool> {
        Ok(self.modem_lines()?.cts)
    }

    /// Data Set Ready (Twisted's `getDSR`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "getDSR")]
    pub fn dsr(&self) -> io::Result<bool> {
        Ok(self.modem_lines()?.dsr)
    }

    /// Carrier Detect (Twisted's `getCD`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "getCD")]
    pub fn cd(&self) -> io::Result<bool> {
        Ok(self.modem_lines()?.cd)
    }

    /// Ring Indicator (Twisted's `getRI`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "getRI")]
    pub fn ri(&self) -> io::Result<bool> {
        Ok(self.modem_lines()?.ri)
    }

    fn set_line(&self, bit: libc::c_int, on: bool) -> io::Result<()> {
        let file = self.file()?;
        sys::set_modem_bits(file.as_fd(), bit, on).map_err(|e| self.modem_error(e))
    }

    /// Raises or lowers Data Terminal Ready (Twisted's `setDTR`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "setDTR")]
    pub fn set_dtr(&self, on: bool) -> io::Result<()> {
        self.set_line(libc::TIOCM_DTR, on)
    }

    /// Raises or lowers Request To Send (Twisted's `setRTS`).
    ///
    /// # Errors
    /// As for [`SerialControl::modem_lines`].
    #[doc(alias = "setRTS")]
    pub fn set_rts(&self, on: bool) -> io::Result<()> {
        self.set_line(libc::TIOCM_RTS, on)
    }

    /// Discards what was received and not yet read (Twisted's
    /// `flushInput`).
    ///
    /// # Errors
    /// `NotConnected` once closed; the device's error.
    #[doc(alias = "flushInput")]
    pub fn flush_input(&self) -> io::Result<()> {
        let file = self.file()?;
        sys::flush(file.as_fd(), libc::TCIFLUSH).map_err(|e| self.map(e))
    }

    /// Discards what the kernel holds and has not sent (Twisted's
    /// `flushOutput`); the transport's own queue is not touched.
    ///
    /// # Errors
    /// `NotConnected` once closed; the device's error.
    #[doc(alias = "flushOutput")]
    pub fn flush_output(&self) -> io::Result<()> {
        let file = self.file()?;
        sys::flush(file.as_fd(), libc::TCOFLUSH).map_err(|e| self.map(e))
    }

    /// Bytes received and not yet read (Twisted's `inWaiting`).
    ///
    /// # Errors
    /// `NotConnected` once closed; the device's error.
    #[doc(alias = "inWaiting")]
    pub fn in_waiting(&self) -> io::Result<usize> {
        let file = self.file()?;
        sys::queued(file.as_fd(), false).map_err(|e| self.map(e))
    }

    /// Bytes the kernel holds and has not sent (Twisted's `outWaiting`);
    /// the transport's own queue is not counted.
    ///
    /// # Errors
    /// `NotConnected` once closed; the device's error.
    #[doc(alias = "outWaiting")]
    pub fn out_waiting(&self) -> io::Result<usize> {
        let file = self.file()?;
        sys::queued(file.as_fd(), true).map_err(|e| self.map(e))
    }
}

/// A pseudo-terminal to stand in for a serial device, for tests and
/// demonstrations without hardware.
///
/// [`PseudoTerminal::path`] is the device to open as a serial port (the
/// slave end); [`PseudoTerminal::master`] plays the device on the other
/// side of the line: what is written to it arrives at the port, what the
/// port writes is read from it. Dropping the master hangs the port up,
/// as unplugging a device does. A pseudo-terminal keeps only 8 data bits
/// and no parity, and has no modem lines.
///
/// ```
/// use torsion_transport::serial::PseudoTerminal;
///
/// let pty = PseudoTerminal::open()?;
/// assert!(pty.path().starts_with("/dev/"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PseudoTerminal {
    master: File,
    slave: Option<File>,
    path: PathBuf,
}

impl PseudoTerminal {
    /// Makes a new pair (`openpty`), both ends close-on-exec and blocking.
    ///
    /// # Errors
    /// If the system has no pseudo-terminal left.
    pub fn open() -> io::Result<PseudoTerminal> {
        let (master, slave) = crate::sys::process::openpty()?;
        let path = sys::terminal_path(slave.as_fd())?;
        Ok(PseudoTerminal {
            master: File::from(master),
            slave: Some(File::from(slave)),
            path,
        })
    }

    /// The slave end's path: the device to open as a serial port.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master end: the device's side of the line.
    pub fn master(&self) -> &File {
        &self.master
    }

    /// Closes the slave descriptor made with the pair. While it is open,
    /// the master does not see the port closing (its reads wait instead
    /// of failing with `EIO`).
    pub fn close_slave(&mut self) {
        self.slave = None;
    }

    /// The master end, taken out; dropping it hangs the port up.
    pub fn into_master(self) -> File {
        self.master
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn open_device(pty: &PseudoTerminal) -> Device {
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(pty.path())
            .unwrap();
        Device {
            file: ManuallyDrop::new(file),
            claimed: Cell::new(false),
            break_end: RefCell::new(None),
        }
    }

    /// The guard every error path after the claim relies on: dropping
    /// the device gives back the claim it made, and only that one.
    #[test]
    fn a_dropped_device_gives_back_only_its_own_claim() {
        let pty = PseudoTerminal::open().unwrap();
        let slave = pty.slave.as_ref().unwrap().as_fd();
        let device = open_device(&pty);
        device.claim(true).unwrap();
        assert!(sys::exclusive(slave).unwrap());
        drop(device);
        assert!(!sys::exclusive(slave).unwrap(), "claim left behind");

        // Someone else's claim: not ours to give back.
        let device = open_device(&pty);
        sys::set_exclusive(slave, true).unwrap();
        device.claim(true).unwrap();
        assert!(!device.claimed.get());
        drop(device);
        assert!(sys::exclusive(slave).unwrap(), "another's claim released");
    }

    /// The control reports a hang-up only when the device is gone, as
    /// the pipe does: an `EIO` from a device still there stays itself.
    #[test]
    fn an_error_is_a_hang_up_only_once_the_device_is_gone() {
        let pty = PseudoTerminal::open().unwrap();
        let reactor = Reactor::new().unwrap();
        let device = Rc::new(open_device(&pty));
        let control = SerialControl {
            file: Rc::downgrade(&device),
            path: Rc::from(pty.path()),
            reactor: reactor.downgrade(),
        };
        let error = control.map(io::Error::from_raw_os_error(libc::EIO));
        assert!(!HungUp::is(&error), "{error}");
        let eio = io::Error::from_raw_os_error(libc::EIO).to_string();
        assert!(error.to_string().contains(&eio), "{error}");
        drop(pty);
        let error = control.map(io::Error::from_raw_os_error(libc::EIO));
        assert!(HungUp::is(&error), "{error}");
    }

    /// Parity on checks received characters (`INPCK`); off, it does not.
    #[test]
    fn parity_checks_input() {
        let pty = PseudoTerminal::open().unwrap();
        let attributes = sys::get(pty.slave.as_ref().unwrap().as_fd()).unwrap();
        let even = SerialSettings {
            parity: Parity::Even,
            ..SerialSettings::default()
        };
        let checked = sys::configure(attributes, &even).unwrap();
        assert_ne!(checked.c_iflag & libc::INPCK, 0);
        let plain = sys::configure(checked, &SerialSettings::default()).unwrap();
        assert_eq!(plain.c_iflag & libc::INPCK, 0);
    }

    /// A device that cannot send a break says so, not that it has no
    /// modem lines.
    #[test]
    fn a_break_error_is_about_the_break() {
        let pty = PseudoTerminal::open().unwrap();
        let reactor = Reactor::new().unwrap();
        let device = Rc::new(open_device(&pty));
        let control = SerialControl {
            file: Rc::downgrade(&device),
            path: Rc::from(pty.path()),
            reactor: reactor.downgrade(),
        };
        let error = control.break_error(io::Error::from_raw_os_error(libc::ENOTTY));
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
        assert!(error.to_string().contains("cannot send a break"), "{error}");
    }
}
