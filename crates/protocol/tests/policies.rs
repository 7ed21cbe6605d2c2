//! Idle timeouts, on the manual clock and the in-memory transport.

use std::time::Duration;

use torsion_protocol::policies::TimeoutProtocol;
use torsion_protocol::testing::{Closing, ProtocolHarness, StringTransport};
use torsion_protocol::{Protocol, Reactor, TransportRef};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
}

#[test]
fn an_idle_connection_is_closed_and_traffic_postpones_it() {
    let (reactor, clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let mut harness = ProtocolHarness::with_transport(
        TimeoutProtocol::new(Echo, Duration::from_secs(30)),
        transport,
    );

    clock.advance(Duration::from_secs(20));
    harness.receive(b"still here");
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        harness.transport.closing(),
        Closing::Open,
        "traffic reset the timer"
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("no traffic for 30s".into())
    );
    assert_eq!(harness.transport.take_written(), b"still here");
}

#[test]
fn a_closed_connection_leaves_no_timer_behind() {
    let (reactor, _clock) = Reactor::with_manual_clock().unwrap();
    let transport = StringTransport::new();
    transport.set_reactor(&reactor);
    let mut harness = ProtocolHarness::with_transport(
        TimeoutProtocol::new(Echo, Duration::from_secs(30)),
        transport,
    );
    assert_eq!(reactor.pending_call_count(), 1);
    harness.lose(torsion_protocol::CloseReason::ClosedByPeer);
    assert_eq!(reactor.pending_call_count(), 0);
}
