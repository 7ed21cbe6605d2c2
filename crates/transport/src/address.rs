//! Endpoint addresses.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::{Domain, SockAddr};

/// One end of a connection, as reported by [`Transport::get_peer`] and
/// [`Transport::get_host`] (Twisted's `IAddress`: `IPv4Address`,
/// `IPv6Address`).
///
/// [`Transport::get_peer`]: crate::Transport::get_peer
/// [`Transport::get_host`]: crate::Transport::get_host
#[doc(alias = "IAddress")]
#[doc(alias = "IPv4Address")]
#[doc(alias = "IPv6Address")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP endpoint, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A UDP endpoint, IPv4 or IPv6.
    Udp(SocketAddr),
    /// A Unix-domain socket: its path, or `None` for an unnamed socket
    /// (such as the client end of a connection; Twisted's `UNIXAddress`).
    #[doc(alias = "UNIXAddress")]
    Unix(Option<PathBuf>),
    /// An endpoint whose address is not known (for example an in-memory
    /// transport in a test).
    Unknown,
}

impl Address {
    /// The IP address and port, for TCP and UDP endpoints.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(addr) | Address::Udp(addr) => Some(*addr),
            _ => None,
        }
    }

    /// Converts an operating-system socket address.
    pub fn from_sockaddr(addr: &SockAddr) -> Address {
        if let Some(addr) = addr.as_socket() {
            Address::Tcp(addr)
        } else if addr.domain() == Domain::UNIX {
            Address::Unix(addr.as_pathname().map(Into::into))
        } else {
            Address::Unknown
        }
    }

    /// The port, for TCP and UDP endpoints.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|addr| addr.port())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
            Address::Udp(addr) => write!(f, "udp:{addr}"),
            Address::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Address::Unix(None) => f.write_str("unix:(unnamed)"),
            Address::Unknown => f.write_str("unknown"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}
