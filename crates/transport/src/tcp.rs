//! TCP specifics: listening sockets and name resolution. Accepting and
//! connecting are shared with Unix sockets, in [`crate::net`].

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{Domain, Socket};

use crate::net;

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
    let socket = net::stream_socket(Domain::for_address(addr))?;
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

/// The local address of an IP socket, with the real port when 0 was
/// asked for.
///
/// # Errors
/// If the socket is not bound or not an IP socket.
pub fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket address"))
}
