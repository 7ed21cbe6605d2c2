//! What the fuzz targets share: an input is a one-byte maximum length, a
//! one-byte chunk size and a byte stream. Each target feeds the stream to a
//! receiver twice — whole, and cut into chunks — and checks that
//!
//! - nothing panics;
//! - both deliveries give the same frames and end in the same state (the
//!   parsers do not depend on how the network splits the stream);
//! - no delivered frame is over the maximum, and the bytes a receiver holds
//!   between calls stay under its bound.
//!
//! A chunk size of 0 also feeds the stream repeated to 64 KiB, in one read,
//! on a thread with a 2 MiB stack: however many mode switches that read
//! holds, the receiver must not exhaust the stack or hold more than its
//! bound.

use torsion_protocol::basic::{
    LineHandler, LineReceiver, LineState, NetstringReceiver, PrefixedStringReceiver, StringHandler,
};
use torsion_protocol::testing::{Closing, ProtocolHarness};
use torsion_protocol::{Protocol, TransportRef};

/// A receiver as the fuzz targets see it.
pub trait Target: Protocol + Sized {
    /// A receiver accepting frames up to `max` bytes.
    fn make(max: usize) -> Self;
    /// The bytes it holds now.
    fn held(&self) -> usize;
    /// The most it may hold between calls.
    fn bound(max: usize) -> usize;
    /// What it delivered, in order.
    fn delivered(&self) -> Vec<Vec<u8>>;
    /// Called after each read: resumes a receiver the input paused.
    fn after_read(&mut self, transport: &TransportRef) {
        let _ = transport;
    }
}

/// Runs one fuzz input against `T`.
pub fn run<T: Target>(input: &[u8]) {
    let [max, chunk, stream @ ..] = input else {
        return;
    };
    let max = usize::from(*max);
    if *chunk == 0 && !stream.is_empty() {
        let long = stream.repeat((64 * 1024) / stream.len() + 1);
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let mut harness = ProtocolHarness::new(T::make(max));
                receive(&mut harness, &long);
                assert!(harness.protocol().held() <= T::bound(max));
            })
            .unwrap()
            .join()
            .unwrap();
    }
    let chunk = usize::from(*chunk).max(1);

    let mut whole = ProtocolHarness::new(T::make(max));
    receive(&mut whole, stream);

    let mut cut = ProtocolHarness::new(T::make(max));
    for piece in stream.chunks(chunk) {
        receive(&mut cut, piece);
        assert!(cut.protocol().held() <= T::bound(max));
    }

    let frames = whole.protocol().delivered();
    assert_eq!(frames, cut.protocol().delivered());
    assert_eq!(whole.transport.closing(), cut.transport.closing());
    assert_eq!(whole.transport.written(), cut.transport.written());
    for frame in &frames {
        assert!(frame.len() <= max, "a frame of {} bytes", frame.len());
    }
    if let Closing::LostWithError(reason) = whole.transport.closing() {
        assert!(!reason.is_empty());
    }
}

/// One read, then whatever the receiver needs after it.
fn receive<T: Target>(harness: &mut ProtocolHarness<T>, data: &[u8]) {
    harness.receive(data);
    let transport = harness.transport_ref().clone();
    harness.protocol_mut().after_read(&transport);
}

/// A string handler that records what it receives.
#[derive(Default)]
pub struct Strings(pub Vec<Vec<u8>>);

impl StringHandler for Strings {
    fn string_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0.push(data.to_vec());
    }
}

/// A line handler that records what it receives: a line `R<n>` switches to
/// raw mode for the next `n` bytes (0–9), a line `D` swaps the delimiter
/// between `\r\n` and `\n`, `B` toggles accepting a bare `\n`, `P`
/// pauses (resumed after the read), and `X` hands back the bytes `x\r\n`
/// to parse next.
#[derive(Default)]
pub struct Lines {
    /// Lines, and raw bytes one by one.
    pub frames: Vec<Vec<u8>>,
    raw_left: usize,
}

impl LineHandler for Lines {
    fn line_received(&mut self, lines: &mut LineState, t: &TransportRef, line: &[u8]) {
        match line {
            [b'R', n @ b'0'..=b'9'] => {
                self.raw_left = usize::from(n - b'0');
                lines.set_raw_mode();
            }
            b"D" => {
                let next: &[u8] = if lines.delimiter() == b"\r\n" {
                    b"\n"
                } else {
                    b"\r\n"
                };
                lines.set_delimiter(next);
            }
            b"B" => {
                let accept = !lines.accepts_bare_newline();
                lines.set_accept_bare_newline(accept);
            }
            b"P" => lines.pause_producing(t),
            b"X" => lines.set_line_mode(b"x\r\n"),
            _ => {}
        }
        self.frames.push(line.to_vec());
    }

    fn raw_data_received(&mut self, lines: &mut LineState, _t: &TransportRef, data: &[u8]) {
        let take = self.raw_left.min(data.len());
        self.raw_left -= take;
        // Raw bytes one by one, so chunking does not show.
        for byte in &data[..take] {
            self.frames.push(vec![*byte]);
        }
        if self.raw_left == 0 {
            lines.set_line_mode(&data[take..]);
        }
    }
}

impl Target for LineReceiver<Lines> {
    fn make(max: usize) -> Self {
        let mut receiver = LineReceiver::new(Lines::default());
        receiver.state_mut().set_max_length(max);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound(max: usize) -> usize {
        max + 2
    }
    fn delivered(&self) -> Vec<Vec<u8>> {
        self.handler().frames.clone()
    }
    fn after_read(&mut self, transport: &TransportRef) {
        // Each resume delivers at least one line before a `P` can pause
        // again.
        while self.is_paused() {
            self.resume_producing(transport);
        }
    }
}

impl Target for NetstringReceiver<Strings> {
    fn make(max: usize) -> Self {
        let mut receiver = NetstringReceiver::new(Strings::default());
        receiver.set_max_length(max);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound(max: usize) -> usize {
        max + 22
    }
    fn delivered(&self) -> Vec<Vec<u8>> {
        self.handler().0.clone()
    }
}

impl<const N: usize> Target for PrefixedStringReceiver<Strings, N> {
    fn make(max: usize) -> Self {
        let mut receiver = PrefixedStringReceiver::new(Strings::default());
        receiver.set_max_length(max);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound(max: usize) -> usize {
        max + N
    }
    fn delivered(&self) -> Vec<Vec<u8>> {
        self.handler().0.clone()
    }
}
