//! The platform-specific corners of sockets, in one place: socket setup
//! (here) and peer credentials ([`credentials`]).
//!
//! Where the platform can create and accept sockets already non-blocking
//! and close-on-exec, and suppress `SIGPIPE` per call, one system call does
//! what otherwise takes three.

mod credentials;
pub(crate) mod inotify;
pub(crate) mod process;
pub(crate) mod serial;
pub(crate) mod stdio;

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[cfg(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "linux",
    target_os = "netbsd",
    target_os = "openbsd",
))]
mod imp {
    use super::*;

    /// Flags for every `send`: a dead peer is an `EPIPE` error, not a
    /// `SIGPIPE` signal.
    pub(crate) const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;

    pub(crate) fn stream_socket(domain: Domain, protocol: Option<Protocol>) -> io::Result<Socket> {
        Socket::new(domain, Type::STREAM.nonblocking(), protocol)
    }

    pub(crate) fn datagram_socket(
        domain: Domain,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        Socket::new(domain, Type::DGRAM.nonblocking(), protocol)
    }

    pub(crate) fn accept(listener: &Socket) -> io::Result<(Socket, SockAddr)> {
        listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
    }
}

#[cfg(not(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "linux",
    target_os = "netbsd",
    target_os = "openbsd",
)))]
mod imp {
    use super::*;

    /// No per-call flag here: `prepare` sets `SO_NOSIGPIPE` where it
    /// exists.
    pub(crate) const SEND_FLAGS: libc::c_int = 0;

    pub(crate) fn stream_socket(domain: Domain, protocol: Option<Protocol>) -> io::Result<Socket> {
        let socket = Socket::new(domain, Type::STREAM, protocol)?;
        prepare(&socket)?;
        Ok(socket)
    }

    pub(crate) fn datagram_socket(
        domain: Domain,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        let socket = Socket::new(domain, Type::DGRAM, protocol)?;
        prepare(&socket)?;
        Ok(socket)
    }

    pub(crate) fn accept(listener: &Socket) -> io::Result<(Socket, SockAddr)> {
        let (socket, addr) = listener.accept()?;
        prepare(&socket)?;
        Ok((socket, addr))
    }

    fn prepare(socket: &Socket) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        socket.set_nosigpipe(true)?;
        Ok(())
    }
}

pub(crate) use credentials::peer_credentials;
pub(crate) use imp::{accept, datagram_socket, stream_socket, SEND_FLAGS};
