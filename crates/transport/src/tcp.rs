//! TCP socket mechanics: listening, accepting and connecting without
//! blocking. The protocol layer turns these into ports and connectors.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{Domain, SockAddr, Socket};

use crate::sys;

/// Default listen backlog: the kernel clamps it to `somaxconn`.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Creates a non-blocking TCP socket listening on `addr` with
/// `SO_REUSEADDR` set, so a restarted server can bind while old
/// connections linger in `TIME_WAIT`, and `SO_REUSEPORT` if asked, so
/// several listeners (one per reactor thread) can share the port. Port 0
/// picks a free port; read it back with [`local_addr`].
///
/// # Errors
/// If the socket cannot be created, bound (address in use, permission) or
/// put into listening state.
pub fn bind_listener(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Socket> {
    let socket = new_socket(addr)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // Listen on IPv6 only, so an IPv4 listener on the same port can
        // coexist; the behaviour no longer depends on a system setting.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// Accepts one pending connection, already non-blocking and
/// close-on-exec (one `accept4` call where the platform has it).
///
/// # Errors
/// `WouldBlock` when nothing is pending; `EMFILE`/`ENFILE` when the process
/// or system is out of descriptors; others as `accept(2)` reports them.
pub fn accept(listener: &Socket) -> io::Result<(Socket, SocketAddr)> {
    let (socket, addr) = sys::accept(listener)?;
    Ok((socket, socket_addr(&addr)?))
}

/// Starts a non-blocking connect to `addr`. The connection completes (or
/// fails) later: wait until the socket is writable, then call
/// [`finish_connect`].
///
/// # Errors
/// If the socket cannot be created, or the connect fails at once (for
/// example with no route to the host).
pub fn start_connect(addr: SocketAddr) -> io::Result<Socket> {
    let socket = new_socket(addr)?;
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(socket),
        Err(e) => Err(e),
    }
}

/// Tells whether a connect started by [`start_connect`] succeeded, once
/// the socket has reported writable.
///
/// # Errors
/// The connect's error (refused, unreachable, timed out by the kernel...).
pub fn finish_connect(socket: &Socket) -> io::Result<()> {
    if let Some(error) = socket.take_error()? {
        return Err(error);
    }
    // A socket that reports writable without an error is connected, unless
    // the readiness was spurious; asking for the peer tells them apart.
    match socket.peer_addr() {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
        Err(e) => Err(e),
    }
}

/// Resolves `host` and `port` to addresses, blocking. Run it off the
/// reactor's thread (the protocol layer does, through
/// `Reactor::defer_to_thread`); literal IP addresses never block.
///
/// # Errors
/// If the name does not resolve to any address.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the name resolved to no addresses",
        ));
    }
    Ok(addrs)
}

/// The local address of a socket, as an IP address and port.
///
/// # Errors
/// If the socket is not bound or not an IP socket.
pub fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket_addr(&socket.local_addr()?)
}

/// The peer address of a connected socket.
///
/// # Errors
/// If the socket is not connected or not an IP socket.
pub fn peer_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket_addr(&socket.peer_addr()?)
}

fn socket_addr(addr: &SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket address"))
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    sys::stream_socket(Domain::for_address(addr))
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
