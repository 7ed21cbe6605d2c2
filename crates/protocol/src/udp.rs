//! UDP on a reactor (Twisted's `IReactorUDP`): the [`ReactorUdp`]
//! extension trait and how to listen ([`UdpOptions`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use torsion_transport::reactor::Reactor;
use torsion_transport::{net, DatagramTransportRef, DEFAULT_MAX_DATAGRAM};

use crate::datagram::{DatagramHandler, DatagramProtocol};

/// How to listen for UDP datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// The local address. Default: every IPv4 interface.
    pub interface: IpAddr,
    /// The largest datagram received whole; larger ones reach the
    /// protocol's `datagram_truncated` instead (Twisted's
    /// `maxPacketSize`). Default: 65,536 bytes, enough for any UDP
    /// datagram.
    pub max_datagram_size: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            max_datagram_size: DEFAULT_MAX_DATAGRAM,
        }
    }
}

/// UDP on a [`Reactor`] (Twisted's `IReactorUDP`).
#[doc(alias = "IReactorUDP")]
pub trait ReactorUdp {
    /// Receives datagrams on `port` of every IPv4 interface and hands them
    /// to `protocol` (Twisted's `listenUDP`). Port 0 picks a free port. The
    /// returned transport sends datagrams, connects, reports its address
    /// and stops listening.
    ///
    /// # Errors
    /// If the port cannot be bound.
    #[doc(alias = "listenUDP")]
    fn listen_udp<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
    ) -> io::Result<DatagramTransportRef> {
        self.listen_udp_with(port, protocol, UdpOptions::default())
    }

    /// Like [`ReactorUdp::listen_udp`], with a chosen interface and maximum
    /// datagram size.
    ///
    /// # Errors
    /// As for [`ReactorUdp::listen_udp`].
    fn listen_udp_with<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
        options: UdpOptions,
    ) -> io::Result<DatagramTransportRef>;
}

impl ReactorUdp for Reactor {
    fn listen_udp_with<P: DatagramProtocol>(
        &self,
        port: u16,
        protocol: P,
        options: UdpOptions,
    ) -> io::Result<DatagramTransportRef> {
        let addr = SocketAddr::new(options.interface, port);
        let socket = net::bind_datagram(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp:{addr}: {e}")))?;
        DatagramHandler::start(
            self,
            socket,
            protocol,
            Some(options.max_datagram_size),
            None,
        )
    }
}
