//! One pipe to or from a child (or a pseudo-terminal's master end) as
//! the [`Pipe`] under a [`StreamTransport`]: the write queue, flow
//! control and producers are the stream transport's.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};

use torsion_reactor::{Interest, Registration};

use crate::stream::{Pipe, StreamTransport};
use crate::sys::process::without_sigpipe;

/// Which way a [`ChildPipe`] carries bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The child writes, we read.
    FromChild,
    /// We write, the child reads.
    ToChild,
    /// Both (a pseudo-terminal's master end).
    Both,
}

/// A non-blocking pipe end of ours (or a pseudo-terminal's master),
/// registered with the reactor: the [`Pipe`] of a child's stream.
///
/// Writes never raise `SIGPIPE`: a child that closed its end gives an
/// `EPIPE` error. (A process that does not ignore `SIGPIPE`, unlike Rust
/// programs, pays four system calls more per write for that.)
///
/// The end we only write to is watched for reading too: the kernel
/// reports it in error once the child closes its end (epoll's `EPOLLERR`
/// on a pipe's write end), which the transport reads as `EPIPE` and
/// closes; so the protocol hears that the child closed its input even
/// when nothing is being written.
pub struct ChildPipe {
    registration: Registration<File>,
    direction: Direction,
    guard_sigpipe: bool,
}

/// A [`StreamTransport`] over one pipe of a child.
pub type ChildPipeTransport = StreamTransport<ChildPipe>;

impl ChildPipe {
    pub(crate) fn new(
        registration: Registration<File>,
        direction: Direction,
        guard_sigpipe: bool,
    ) -> ChildPipe {
        ChildPipe {
            registration,
            direction,
            guard_sigpipe,
        }
    }

    /// Which way this pipe carries bytes.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn write_with(&self, write: impl FnOnce(&File) -> io::Result<usize>) -> io::Result<usize> {
        let file = self.registration.get_ref();
        if self.guard_sigpipe {
            without_sigpipe(|| write(file))
        } else {
            write(file)
        }
    }
}

impl Pipe for ChildPipe {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.write_with(|mut file| file.write(data))
    }

    fn send_vectored(&self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|mut file| file.write_vectored(data))
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.direction {
            // Readable only in error: the child closed its end.
            Direction::ToChild => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Direction::FromChild => (&mut self.registration.get_ref()).read(buf),
            // A terminal whose last slave descriptor is closed reads EIO:
            // that is its end of stream.
            Direction::Both => match (&mut self.registration.get_ref()).read(buf) {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
                other => other,
            },
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        // A pipe has one direction: closing it is the end of stream.
        Ok(())
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(match self.direction {
            Direction::ToChild => Some(io::Error::from_raw_os_error(libc::EPIPE)),
            _ => None,
        })
    }

    fn set_interest(&self, interest: Interest) -> io::Result<()> {
        self.registration.set_interest(interest)
    }

    fn wake(&self) {
        self.registration.wake();
    }
}
