//! Terminal attributes and control lines for serial ports, through
//! termios and a few `ioctl`s.
//!
//! On Linux the attributes go through `TCGETS2`/`TCSETS2` (`struct
//! termios2`), whose integer speed fields carry any rate (`BOTHER`) and
//! report the rate the driver kept; elsewhere through `tcgetattr` and
//! `tcsetattr` with the standard `B...` rates. Linux on PowerPC
//! (`powerpc`, `powerpc64`) takes the second path: its termios already
//! has the speed fields, and the `libc` crate has neither `termios2` nor
//! `TCGETS2` there.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::serial::{DataBits, Parity, SerialSettings, StopBits};

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The standard rates this platform names, with their `B...` codes.
const RATES: &[(u32, libc::speed_t)] = &[
    (50, libc::B50),
    (75, libc::B75),
    (110, libc::B110),
    (134, libc::B134),
    (150, libc::B150),
    (200, libc::B200),
    (300, libc::B300),
    (600, libc::B600),
    (1200, libc::B1200),
    (1800, libc::B1800),
    (2400, libc::B2400),
    (4800, libc::B4800),
    (9600, libc::B9600),
    (19200, libc::B19200),
    (38400, libc::B38400),
    (57600, libc::B57600),
    (115200, libc::B115200),
    (230400, libc::B230400),
    #[cfg(target_os = "linux")]
    (460800, libc::B460800),
    #[cfg(target_os = "linux")]
    (500000, libc::B500000),
    #[cfg(target_os = "linux")]
    (576000, libc::B576000),
    #[cfg(target_os = "linux")]
    (921600, libc::B921600),
    #[cfg(target_os = "linux")]
    (1000000, libc::B1000000),
    #[cfg(target_os = "linux")]
    (1152000, libc::B1152000),
    #[cfg(target_os = "linux")]
    (1500000, libc::B1500000),
    #[cfg(target_os = "linux")]
    (2000000, libc::B2000000),
    #[cfg(target_os = "linux")]
    (2500000, libc::B2500000),
    #[cfg(target_os = "linux")]
    (3000000, libc::B3000000),
    #[cfg(target_os = "linux")]
    (3500000, libc::B3500000),
    #[cfg(target_os = "linux")]
    (4000000, libc::B4000000),
];

fn rate_code(baud: u32) -> Option<libc::speed_t> {
    RATES
        .iter()
        .find(|&&(rate, _)| rate == baud)
        .map(|&(_, code)| code)
}

#[cfg(not(all(
    target_os = "linux",
    not(any(target_arch = "powerpc", target_arch = "powerpc64"))
)))]
fn code_rate(code: libc::speed_t) -> u32 {
    RATES
        .iter()
        .find(|&&(_, c)| c == code)
        .map_or(0, |&(rate, _)| rate)
}

#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "powerpc", target_arch = "powerpc64"))
))]
mod imp {
    use super::*;

    /// The kernel's attributes, with integer speeds.
    pub(crate) type Attributes = libc::termios2;

    pub(crate) fn get(fd: BorrowedFd<'_>) -> io::Result<Attributes> {
        // SAFETY: termios2 is plain data; TCGETS2 fills it.
        let mut attributes: Attributes = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS2 writes one termios2 through the pointer.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut attributes) })?;
        Ok(attributes)
    }

    pub(crate) fn put(fd: BorrowedFd<'_>, attributes: &Attributes) -> io::Result<()> {
        // SAFETY: TCSETS2 reads one termios2 through the pointer.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, attributes) })?;
        Ok(())
    }

    /// Sets both speeds: a standard rate by its code (so programs using
    /// the old interface read it back), any other as `BOTHER`.
    pub(crate) fn set_speed(attributes: &mut Attributes, baud: u32) -> io::Result<()> {
        attributes.c_cflag &= !(libc::CBAUD | libc::CIBAUD);
        attributes.c_cflag |= rate_code(baud).unwrap_or(libc::BOTHER);
        attributes.c_ispeed = baud;
        attributes.c_ospeed = baud;
        Ok(())
    }

    pub(crate) fn speed(attributes: &Attributes) -> u32 {
        attributes.c_ospeed
    }
}

#[cfg(not(all(
    target_os = "linux",
    not(any(target_arch = "powerpc", target_arch = "powerpc64"))
)))]
mod imp {
    use super::*;

    pub(crate) type Attributes = libc::termios;

    pub(crate) fn get(fd: BorrowedFd<'_>) -> io::Result<Attributes> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut attributes: Attributes = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios through the pointer.
        check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut attributes) })?;
        Ok(attributes)
    }

    pub(crate) fn put(fd: BorrowedFd<'_>, attributes: &Attributes) -> io::Result<()> {
        // SAFETY: tcsetattr reads one termios through the pointer.
        check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, attributes) })?;
        Ok(())
    }

    pub(crate) fn set_speed(attributes: &mut Attributes, baud: u32) -> io::Result<()> {
        let code = rate_code(baud).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{baud} baud is not a standard rate (other rates need Linux)"),
            )
        })?;
        // SAFETY: plain functions on a termios we own.
        unsafe {
            libc::cfsetispeed(attributes, code);
            libc::cfsetospeed(attributes, code);
        }
        Ok(())
    }

    pub(crate) fn speed(attributes: &Attributes) -> u32 {
        // SAFETY: reads a field of a termios we own.
        code_rate(unsafe { libc::cfgetospeed(attributes) })
    }
}

pub(crate) use imp::{get, put, Attributes};

/// `attributes` changed as `settings` ask: speed, character size,
/// parity, stop bits, flow control, raw mode; the receiver on, modem
/// status lines ignored for opening (`CLOCAL`), and reads that return
/// as soon as one byte is there (`VMIN` 1, `VTIME` 0).
pub(crate) fn configure(
    mut attributes: Attributes,
    settings: &SerialSettings,
) -> io::Result<Attributes> {
    if settings.raw {
        attributes.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL);
        attributes.c_oflag &= !libc::OPOST;
        attributes.c_lflag &=
            !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    }
    attributes.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::PARODD | libc::CSTOPB);
    attributes.c_cflag |= libc::CREAD
        | libc::CLOCAL
        | match settings.data_bits {
            DataBits::Five => libc::CS5,
            DataBits::Six => libc::CS6,
            DataBits::Seven => libc::CS7,
            DataBits::Eight => libc::CS8,
        };
    // With parity on, received characters are checked too (`INPCK`);
    // one that fails reads as a 0 byte (neither `IGNPAR` nor `PARMRK`).
    attributes.c_iflag &= !libc::INPCK;
    match settings.parity {
        Parity::None => {}
        Parity::Even => attributes.c_cflag |= libc::PARENB,
        Parity::Odd => attributes.c_cflag |= libc::PARENB | libc::PARODD,
    }
    if settings.parity != Parity::None {
        attributes.c_iflag |= libc::INPCK;
    }
    if settings.stop_bits == StopBits::Two {
        attributes.c_cflag |= libc::CSTOPB;
    }
    attributes.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
    if settings.xon_xoff {
        attributes.c_iflag |= libc::IXON | libc::IXOFF;
    }
    attributes.c_cflag &= !libc::CRTSCTS;
    if settings.rts_cts {
        attributes.c_cflag |= libc::CRTSCTS;
    }
    attributes.c_cc[libc::VMIN] = 1;
    attributes.c_cc[libc::VTIME] = 0;
    imp::set_speed(&mut attributes, settings.baud_rate)?;
    Ok(attributes)
}

/// The settings `attributes` describe (`exclusive` left false).
pub(crate) fn describe(attributes: &Attributes) -> SerialSettings {
    let cflag = attributes.c_cflag;
    SerialSettings {
        baud_rate: imp::speed(attributes),
        data_bits: match cflag & libc::CSIZE {
            libc::CS5 => DataBits::Five,
            libc::CS6 => DataBits::Six,
            libc::CS7 => DataBits::Seven,
            _ => DataBits::Eight,
        },
        parity: match (cflag & libc::PARENB != 0, cflag & libc::PARODD != 0) {
            (false, _) => Parity::None,
            (true, false) => Parity::Even,
            (true, true) => Parity::Odd,
        },
        stop_bits: if cflag & libc::CSTOPB != 0 {
            StopBits::Two
        } else {
            StopBits::One
        },
        xon_xoff: attributes.c_iflag & (libc::IXON | libc::IXOFF) == (libc::IXON | libc::IXOFF),
        rts_cts: cflag & libc::CRTSCTS != 0,
        raw: attributes.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG) == 0
            && attributes.c_oflag & libc::OPOST == 0,
        exclusive: false,
    }
}

/// Claims the terminal for this open file alone (`TIOCEXCL`), or gives
/// the claim up (`TIOCNXCL`).
pub(crate) fn set_exclusive(fd: BorrowedFd<'_>, exclusive: bool) -> io::Result<()> {
    let request = if exclusive {
        libc::TIOCEXCL
    } else {
        libc::TIOCNXCL
    };
    // SAFETY: TIOCEXCL and TIOCNXCL take no argument. (`as _`: macOS's
    // libc types these as `c_int`, narrower than ioctl's request; they
    // are argument-less `_IO` requests, so nothing is lost.)
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as _) })?;
    Ok(())
}

/// Whether the terminal is claimed exclusively (`TIOCGEXCL`, Linux 3.8).
#[cfg(target_os = "linux")]
pub(crate) fn exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut value: libc::c_int = 0;
    // SAFETY: TIOCGEXCL writes one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGEXCL, &mut value) })?;
    Ok(value != 0)
}

/// Not readable here: reported as what was asked.
#[cfg(not(target_os = "linux"))]
pub(crate) fn exclusive(_fd: BorrowedFd<'_>) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The modem lines' bits (`TIOCMGET`).
pub(crate) fn modem_bits(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut bits: libc::c_int = 0;
    // SAFETY: TIOCMGET writes one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCMGET, &mut bits) })?;
    Ok(bits)
}

/// Raises (`TIOCMBIS`) or lowers (`TIOCMBIC`) the output lines in `bits`.
pub(crate) fn set_modem_bits(fd: BorrowedFd<'_>, bits: libc::c_int, on: bool) -> io::Result<()> {
    let request = if on { libc::TIOCMBIS } else { libc::TIOCMBIC };
    // SAFETY: TIOCMBIS and TIOCMBIC read one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, &bits) })?;
    Ok(())
}

/// Starts (`TIOCSBRK`) or ends (`TIOCCBRK`) a break condition.
pub(crate) fn set_break(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let request = if on { libc::TIOCSBRK } else { libc::TIOCCBRK };
    // SAFETY: TIOCSBRK and TIOCCBRK take no argument. (`as _`: FreeBSD's
    // and macOS's libc type these two narrower than ioctl's request.)
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as _) })?;
    Ok(())
}

/// Discards what was received and not read (`TCIFLUSH`), written and not
/// sent (`TCOFLUSH`), or both.
pub(crate) fn flush(fd: BorrowedFd<'_>, queue: libc::c_int) -> io::Result<()> {
    // SAFETY: plain call on a descriptor we hold.
    check(unsafe { libc::tcflush(fd.as_raw_fd(), queue) })?;
    Ok(())
}

/// Bytes waiting in the input (`FIONREAD`) or output (`TIOCOUTQ`) queue.
pub(crate) fn queued(fd: BorrowedFd<'_>, output: bool) -> io::Result<usize> {
    let request = if output {
        libc::TIOCOUTQ
    } else {
        libc::FIONREAD
    };
    let mut count: libc::c_int = 0;
    // SAFETY: both requests write one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut count) })?;
    Ok(count.max(0) as usize)
}

/// The path of the terminal open on `fd` (`ttyname_r`).
pub(crate) fn terminal_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: ttyname_r writes at most `buf.len()` bytes, NUL included.
    let error = unsafe { libc::ttyname_r(fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(std::ffi::OsStr::from_bytes(name.to_bytes()).into())
}
