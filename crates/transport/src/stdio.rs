//! Our own standard input and output as one stream transport (what
//! Twisted's `StandardIO` runs a protocol over): [`StdioPipe`] reads
//! descriptor 0 and writes descriptor 1.
//!
//! # The shared open file description
//! Standard input and output are usually shared with the shell and with
//! other processes; `O_NONBLOCK` lives on the open file description, so
//! setting it on descriptor 0 or 1 would break them (a shell whose
//! terminal was left non-blocking). So:
//!
//! - **pipes, FIFOs and terminals** are re-opened through
//!   `/proc/self/fd/N` (Linux), which gives a description of our own that
//!   we make non-blocking; descriptors 0 and 1 stay as they were;
//! - **sockets** are used with per-call non-blocking flags
//!   (`MSG_DONTWAIT`), never changing the description;
//! - **regular files, `/dev/null`** and anything else epoll refuses
//!   (`EPERM`) never block long: they are read and written as they are,
//!   and a stand-in that is always ready is watched instead, so reads go
//!   on turn after turn, in order, to the end of the file;
//! - where `/proc/self/fd` is missing (other systems), a pipe or terminal
//!   is set non-blocking and its previous flags are restored when the
//!   transport closes.
//!
//! Closing the write side (`lose_write_connection`, or the end of the
//! connection) puts `/dev/null` on descriptor 1, so the reader of our
//! output sees its end while descriptor 1 stays valid for the rest of
//! the program; a socket is also shut down for writing, since closing
//! one descriptor does not end it when others remain (standard input
//! the same socket, inetd style). The reader sees the end only once
//! every descriptor of the pipe is closed: a standard error that shares
//! standard output's pipe (`2>&1`) keeps it open.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use torsion_reactor::{Handler, Interest, Reactor, Registration};

use crate::address::Address;
use crate::stream::{Opening, Pipe, StreamTransport};
use crate::sys::process::{set_nonblocking, sigpipe_ignored, without_sigpipe};
use crate::sys::stdio as sys;

/// How one side is read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A description of our own, non-blocking.
    Private,
    /// A socket shared with others: per-call `MSG_DONTWAIT`.
    Socket,
    /// Never blocks for long (a regular file, `/dev/null`): plain calls,
    /// and a stand-in that is always ready is watched.
    AlwaysReady,
    /// The shared description, set non-blocking; the old flags are put
    /// back when the side closes, through the side's own copy of the
    /// descriptor (the number it came from may hold `/dev/null` by then).
    Shared { flags: i32 },
}

/// One side: the descriptor moved through, and what the reactor watches.
struct Side {
    io: File,
    kind: Kind,
    registration: Registration<OwnedFd>,
    /// The other end of an always-ready stand-in (holds its byte).
    _stand_in: Option<UnixStream>,
}

impl Side {
    fn open(
        reactor: &Reactor,
        fd: RawFd,
        write: bool,
        handler: Rc<dyn Handler>,
        interest: Interest,
    ) -> io::Result<Side> {
        let kind = sys::file_type(fd)?;
        let (io, kind) = match kind {
            sys::FileType::Pipe | sys::FileType::CharDevice => match sys::reopen(fd, write) {
                Ok(file) => (file, Kind::Private),
                Err(_) => {
                    let file = sys::duplicate(fd)?;
                    let flags = sys::status_flags(fd)?;
                    set_nonblocking(file.as_fd())?;
                    (file, Kind::Shared { flags })
                }
            },
            sys::FileType::Socket => (sys::duplicate(fd)?, Kind::Socket),
            sys::FileType::Other => (sys::duplicate(fd)?, Kind::AlwaysReady),
        };
        if kind != Kind::AlwaysReady {
            let watched: OwnedFd = io.as_fd().try_clone_to_owned()?;
            match reactor.register(watched, interest, handler.clone()) {
                Ok(registration) => {
                    return Ok(Side {
                        io,
                        kind,
                        registration,
                        _stand_in: None,
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
        }
        // epoll refuses it (a regular file, /dev/null): watch a socket
        // that is always readable and writable instead.
        let (watched, other) = UnixStream::pair()?;
        (&other).write_all(b"!")?;
        let registration = reactor.register(OwnedFd::from(watched), interest, handler)?;
        let kind = match kind {
            Kind::Shared { .. } | Kind::Private => Kind::AlwaysReady,
            kind => kind,
        };
        Ok(Side {
            io,
            kind,
            registration,
            _stand_in: Some(other),
        })
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Kind::Shared { flags } = self.kind {
            sys::set_status_flags(self.io.as_fd(), flags);
        }
    }
}

/// Standard input and output as a [`Pipe`]: reads descriptor 0, writes
/// descriptor 1, each watched by its own registration (both go to the
/// same handler). See the [module](self) for how each kind of descriptor
/// is handled.
pub struct StdioPipe {
    input: Side,
    output: std::cell::RefCell<Option<Side>>,
    output_fd: Option<RawFd>,
    guard_sigpipe: bool,
}

/// A [`StreamTransport`] over standard input and output.
pub type StdioTransport = StreamTransport<StdioPipe>;

impl StdioTransport {
    /// Makes the transport over descriptors `input` (read) and `output`
    /// (written): normally 0 and `Some(1)`. Without an output, what is
    /// written is discarded. `make_handler` receives the new
    /// transport and returns the handler that drives it (which calls
    /// [`StreamTransport::process`] with each readiness); both
    /// registrations go to it, so its `shutdown` may be called twice.
    ///
    /// # Errors
    /// If a descriptor is not open, cannot be re-opened or registered.
    pub fn stdio(
        reactor: &Reactor,
        input: RawFd,
        output: Option<RawFd>,
        make_handler: impl FnOnce(Rc<StdioTransport>) -> Rc<dyn Handler>,
    ) -> io::Result<Rc<StdioTransport>> {
        StreamTransport::new(
            reactor,
            Address::Unknown,
            Opening::Open,
            |transport, interest| {
                let handler = make_handler(transport.clone());
                let input_side = Side::open(
                    reactor,
                    input,
                    false,
                    handler.clone(),
                    interest.with_writable(false),
                )?;
                let output_side = match output {
                    Some(fd) => Some(Side::open(
                        reactor,
                        fd,
                        true,
                        handler,
                        interest.with_readable(false),
                    )?),
                    None => None,
                };
                Ok(StdioPipe {
                    input: input_side,
                    output: std::cell::RefCell::new(output_side),
                    output_fd: output,
                    guard_sigpipe: !sigpipe_ignored(),
                })
            },
        )
    }
}

impl StdioPipe {
    fn write_with(
        &self,
        len: usize,
        write: impl FnOnce(&Side) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let output = self.output.borrow();
        let Some(side) = output.as_ref() else {
            return match self.output_fd {
                // No output: discarded.
                None => Ok(len),
                Some(_) => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            };
        };
        if self.guard_sigpipe && side.kind != Kind::Socket {
            without_sigpipe(|| write(side))
        } else {
            write(side)
        }
    }

    fn close_output(&self) {
        let side = self.output.borrow_mut().take();
        if let (Some(side), Some(fd)) = (side, self.output_fd) {
            // A socket may also be our input (inetd style), or held by
            // others: closing descriptors would not end it, a shutdown
            // does (reading goes on).
            if side.kind == Kind::Socket {
                let _ = sys::shutdown_write(side.io.as_fd());
            }
            // The description gets its flags back first (through the
            // side's own descriptor), then the reader of our output sees
            // its end; the descriptor stays valid.
            drop(side);
            let _ = sys::replace_with_null(fd);
        }
    }
}

impl Drop for StdioPipe {
    fn drop(&mut self) {
        self.close_output();
    }
}

impl Pipe for StdioPipe {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.write_with(data.len(), |side| match side.kind {
            Kind::Socket => sys::send_dontwait(side.io.as_fd(), data),
            _ => (&side.io).write(data),
        })
    }

    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        let len = data.iter().map(|s| s.len()).sum();
        self.write_with(len, |side| match side.kind {
            Kind::Socket => {
                let first = data.iter().find(|s| !s.is_empty()).map_or(&[][..], |s| s);
                sys::send_dontwait(side.io.as_fd(), first)
            }
            _ => (&side.io).write_vectored(data),
        })
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.kind {
            Kind::Socket => sys::recv_dontwait(self.input.io.as_fd(), buf),
            // A terminal whose other end is gone reads EIO: its end.
            _ => match (&self.input.io).read(buf) {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
                other => other,
            },
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.close_output();
        Ok(())
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        // The only error condition: the reader of our output went away.
        Ok(self
            .output
            .borrow()
            .as_ref()
            .map(|_| io::Error::from_raw_os_error(libc::EPIPE)))
    }

    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        self.input
            .registration
            .set_interest(interest.with_writable(false))?;
        if let Some(output) = &*self.output.borrow() {
            output
                .registration
                .set_interest(interest.with_readable(false))?;
        }
        Ok(())
    }

    fn wake(&self) {
        self.input.registration.wake();
    }
}

/// What kind of file a descriptor is (for the tests and the docs).
#[doc(hidden)]
pub fn describe(fd: RawFd) -> io::Result<&'static str> {
    Ok(match sys::file_type(fd)? {
        sys::FileType::Pipe => "pipe",
        sys::FileType::CharDevice => "character device",
        sys::FileType::Socket => "socket",
        sys::FileType::Other => "file",
    })
}
