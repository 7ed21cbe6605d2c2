//! Helpers shared by the socket tests of this crate (each test file that
//! needs them says `mod support;`; not every file uses every helper).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, Watchdog};
use torsion_protocol::{Address, Factory, ListenOptions, Protocol, Reactor, ReactorTcp};

/// A reactor for one test, and a watchdog that ends the process if the
/// test hangs. Bind the watchdog first: `let (_watchdog, reactor) = ...`.
pub fn reactor() -> (Watchdog, Reactor) {
    guarded_reactor(Duration::from_secs(30))
}

/// A factory that builds protocols from a closure.
pub struct Build<P, F: Fn() -> P>(pub F);

impl<P: Protocol, F: Fn() -> P + 'static> Factory for Build<P, F> {
    type Protocol = P;
    fn build_protocol(&self, _peer: &Address) -> Option<P> {
        Some((self.0)())
    }
}

/// Listens on a free loopback port with protocols from `build`; returns
/// the address to connect to. The port lives as long as the reactor.
pub fn listen<P: Protocol>(reactor: &Reactor, build: impl Fn() -> P + 'static) -> SocketAddr {
    let port = reactor
        .listen_tcp_with(
            0,
            Build(build),
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    port.get_host().socket_addr().unwrap()
}

/// CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// An echo factory that counts the connections it serves.
pub struct Counting(pub std::rc::Rc<std::cell::Cell<usize>>);

impl Factory for Counting {
    type Protocol = torsion_protocol::testing::Echo;
    fn build_protocol(&self, _peer: &Address) -> Option<Self::Protocol> {
        self.0.set(self.0.get() + 1);
        Some(torsion_protocol::testing::Echo)
    }
}
