//! Framing benchmark: a long line delivered one byte at a time must cost
//! the same per byte as a short one (the receiver never rescans).

use std::time::Instant;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::testing::ProtocolHarness;
use torsion_protocol::TransportRef;

struct Count(usize);

impl LineHandler for Count {
    fn line_received(&mut self, _lines: &mut LineState, _transport: &TransportRef, line: &[u8]) {
        self.0 += line.len();
    }
}

/// Nanoseconds per byte to receive one `length`-byte line a byte at a
/// time.
fn per_byte(length: usize) -> f64 {
    let mut receiver = LineReceiver::new(Count(0));
    receiver.state_mut().set_max_length(length + 1);
    let mut harness = ProtocolHarness::new(receiver);
    let start = Instant::now();
    for _ in 0..length {
        harness.receive(b"a");
    }
    harness.receive(b"\r\n");
    let elapsed = start.elapsed();
    assert_eq!(harness.protocol().handler().0, length);
    elapsed.as_nanos() as f64 / length as f64
}

pub fn run() {
    println!("LineReceiver, one line delivered a byte at a time:");
    println!("{:>12} {:>14}", "line bytes", "ns per byte");
    for length in [1 << 10, 1 << 14, 1 << 17, 1 << 20] {
        let mut samples: Vec<f64> = (0..3).map(|_| per_byte(length)).collect();
        samples.sort_by(|a, b| a.total_cmp(b));
        println!("{:>12} {:>14.1}", length, samples[1]);
    }
    println!();
}
