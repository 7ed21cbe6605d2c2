//! The echo server stays bounded when its peer never reads, and loses
//! nothing once the peer does.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;
use torsion_protocol::testing::{DescriptorGuard, Watchdog};

use torsion_echo::Echo;
use torsion_protocol::DEFAULT_HIGH_WATER;
use torsion_protocol::{
    Address, Factory, ListenOptions, Protocol, Reactor, ReactorTcp, TransportRef,
};

const TOTAL: usize = 1 << 30;
/// Sent over and over; its odd length makes any slip show.
const PATTERN_LEN: usize = 65_537;

fn pattern() -> Vec<u8> {
    (0..PATTERN_LEN).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The library's echo protocol, watched: records the largest write buffer
/// it ever had, and says when it first went past the high watermark.
struct Probe {
    echo: Echo,
    max_buffered: Rc<Cell<usize>>,
    backlogged: Rc<RefCell<Option<mpsc::Sender<()>>>>,
}

impl Protocol for Probe {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.echo.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.echo.data_received(transport, data);
        let buffered = transport.get_write_buffer_size();
        self.max_buffered.set(self.max_buffered.get().max(buffered));
        if buffered > DEFAULT_HIGH_WATER {
            if let Some(tell) = self.backlogged.borrow_mut().take() {
                let _ = tell.send(());
            }
        }
    }
}

struct ProbeFactory {
    max_buffered: Rc<Cell<usize>>,
    backlogged: Rc<RefCell<Option<mpsc::Sender<()>>>>,
}

impl Factory for ProbeFactory {
    type Protocol = Probe;
    fn build_protocol(&self, _peer: &Address) -> Option<Probe> {
        Some(Probe {
            echo: Echo,
            max_buffered: self.max_buffered.clone(),
            backlogged: self.backlogged.clone(),
        })
    }
}

#[test]
fn a_peer_that_sends_a_gibibyte_without_reading_cannot_grow_the_server() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let _watchdog = Watchdog::new(Duration::from_secs(120));
    let max_buffered = Rc::new(Cell::new(0));
    let (tell, backlogged) = mpsc::channel();
    let port = reactor
        .listen_tcp_with(
            0,
            ProbeFactory {
                max_buffered: max_buffered.clone(),
                backlogged: Rc::new(RefCell::new(Some(tell))),
            },
            ListenOptions::interface(Ipv4Addr::LOCALHOST.into()),
        )
        .unwrap();
    let addr = port.get_host().socket_addr().unwrap();
    let handle = reactor.handle();

    let client = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let writing = std::thread::spawn(move || {
            let pattern = pattern();
            let mut sent = 0;
            while sent < TOTAL {
                let at = sent % PATTERN_LEN;
                let n = (PATTERN_LEN - at).min(TOTAL - sent);
                writer.write_all(&pattern[at..at + n]).unwrap();
                sent += n;
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        // Read nothing until the server's buffer has filled up.
        backlogged.recv().unwrap();
        let pattern = pattern();
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0;
        let mut intact = true;
        loop {
            let n = (&stream).read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let mut checked = 0;
            while checked < n {
                let at = (received + checked) % PATTERN_LEN;
                let len = (PATTERN_LEN - at).min(n - checked);
                intact &= buf[checked..checked + len] == pattern[at..at + len];
                checked += len;
            }
            received += n;
        }
        writing.join().unwrap();
        handle.stop().unwrap();
        (received, intact)
    });
    reactor.run().unwrap();
    let (received, intact) = client.join().unwrap();
    assert_eq!(received, TOTAL, "every byte comes back");
    assert!(intact, "and unchanged");
    // One 64 KiB read past the high watermark at most.
    let max = max_buffered.get();
    assert!(
        max <= DEFAULT_HIGH_WATER + 64 * 1024,
        "the server buffered {max} bytes"
    );
}
