//! Endpoint addresses.

use std::fmt;
use std::net::SocketAddr;

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
    /// An endpoint whose address is not known (for example an in-memory
    /// transport in a test).
    Unknown,
}

impl Address {
    /// The IP address and port, for TCP endpoints.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(addr) => Some(*addr),
            Address::Unknown => None,
        }
    }

    /// The port, for TCP endpoints.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|addr| addr.port())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
            Address::Unknown => f.write_str("unknown"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}
