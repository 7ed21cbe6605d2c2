//! Socket mechanics shared by every stream transport (TCP and Unix):
//! accepting and connecting without blocking. The protocol layer turns
//! these into ports and connectors.

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket};

use crate::address::Address;
use crate::sys;

/// Accepts one pending connection, already non-blocking and close-on-exec
/// (one `accept4` call where the platform has it), with the peer's
/// address.
///
/// # Errors
/// `WouldBlock` when nothing is pending; `EMFILE`/`ENFILE` when the process
/// or system is out of descriptors (see [`is_out_of_descriptors`]); others
/// as `accept(2)` reports them.
pub fn accept(listener: &Socket) -> io::Result<(Socket, Address)> {
    let (socket, addr) = sys::accept(listener)?;
    Ok((socket, Address::from_sockaddr(&addr)))
}

/// A new non-blocking stream socket for `domain` (TCP for IP domains).
///
/// # Errors
/// If the socket cannot be created (for example, out of descriptors).
pub fn stream_socket(domain: Domain) -> io::Result<Socket> {
    let protocol = if domain == Domain::UNIX {
        None
    } else {
        Some(Protocol::TCP)
    };
    sys::stream_socket(domain, protocol)
}

/// Starts a non-blocking connect to `addr` (an IP address or a Unix socket
/// path). The connection completes (or fails) later: wait until the socket
/// is writable, then call [`finish_connect`]. A TCP socket has Nagle's
/// algorithm turned off (`TCP_NODELAY`).
///
/// # Errors
/// If the socket cannot be created, or the connect fails at once (refused,
/// no such socket file, no route to the host).
pub fn start_connect(addr: &SockAddr) -> io::Result<Socket> {
    let socket = stream_socket(addr.domain())?;
    if addr.domain() != Domain::UNIX {
        // Writes are gathered per loop turn: Nagle's algorithm would only
        // delay replies (see `Transport::tcp_nodelay`).
        socket.set_tcp_nodelay(true)?;
    }
    match socket.connect(addr) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        // A Unix socket whose listener's backlog is full.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && addr.domain() != Domain::UNIX => {
            Ok(socket)
        }
        Err(e) => Err(e),
    }
}

/// Tells whether a connect started by [`start_connect`] succeeded, once
/// the socket has reported writable.
///
/// # Errors
/// The connect's error (refused, unreachable, timed out by the kernel...),
/// or `WouldBlock` if the readiness was spurious and the connect is still in
/// flight.
pub fn finish_connect(socket: &Socket) -> io::Result<()> {
    if let Some(error) = socket.take_error()? {
        return Err(error);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
        Err(e) => Err(e),
    }
}

/// The local address of a socket.
///
/// # Errors
/// If the socket has no address (closed).
pub fn local_address(socket: &Socket) -> io::Result<Address> {
    Ok(Address::from_sockaddr(&socket.local_addr()?))
}

/// True for the errors that mean the process or the system has run out of
/// descriptors or socket memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`):
/// an accept that fails this way leaves the connection pending, so a
/// listener must stop watching for a while instead of retrying at once.
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// True for the errors by which `accept` reports a pending connection that
/// failed before it was accepted: the peer aborted it (`ECONNABORTED`), or
/// a network error the kernel passes on from the new socket (`EPROTO`,
/// `ENETDOWN`, `ENETUNREACH`, `EHOSTDOWN`, `EHOSTUNREACH`, `ENOPROTOOPT`,
/// `EOPNOTSUPP`, and on Linux `ENONET`, as accept(2) lists them). That
/// connection has left the backlog, so the next accept finds the next one:
/// a listener tries the next at once instead of pausing.
pub fn is_connection_failed_before_accept(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::ConnectionAborted {
        return true;
    }
    let Some(code) = error.raw_os_error() else {
        return false;
    };
    #[cfg(target_os = "linux")]
    if code == libc::ENONET {
        return true;
    }
    matches!(
        code,
        libc::ECONNABORTED
            | libc::EPROTO
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENOPROTOOPT
            | libc::EOPNOTSUPP
    )
}

/// How the reactor's counters file a failed accept
/// ([`ReactorStats::accept_errors`](torsion_reactor::ReactorStats::accept_errors)).
pub fn accept_error_kind(error: &io::Error) -> torsion_reactor::AcceptErrorKind {
    use torsion_reactor::AcceptErrorKind;
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => AcceptErrorKind::OutOfDescriptors,
        Some(libc::ENOBUFS | libc::ENOMEM) => AcceptErrorKind::OutOfMemory,
        _ if is_connection_failed_before_accept(error) => AcceptErrorKind::PeerAborted,
        _ => AcceptErrorKind::Other,
    }
}

/// A non-blocking datagram socket bound to `addr` (an IP address and port,
/// 0 for any free port, or a Unix socket path), with `SO_REUSEADDR` for IP
/// sockets.
///
/// # Errors
/// If the socket cannot be created or bound.
pub fn bind_datagram(addr: &SockAddr) -> io::Result<Socket> {
    let domain = addr.domain();
    let protocol = if domain == Domain::UNIX {
        None
    } else {
        Some(Protocol::UDP)
    };
    let socket = sys::datagram_socket(domain, protocol)?;
    if domain != Domain::UNIX {
        socket.set_reuse_address(true)?;
        if domain == Domain::IPV6 {
            socket.set_only_v6(true)?;
        }
    }
    socket.bind(addr)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_that_failed_before_accept_are_told_from_persistent_errors() {
        let failed = |code| is_connection_failed_before_accept(&io::Error::from_raw_os_error(code));
        for code in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETDOWN,
            libc::EHOSTUNREACH,
        ] {
            assert!(failed(code), "{code}");
        }
        for code in [
            libc::EPERM,
            libc::EACCES,
            libc::EMFILE,
            libc::ENOBUFS,
            libc::EINVAL,
        ] {
            assert!(!failed(code), "{code}");
        }
        assert!(is_connection_failed_before_accept(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
