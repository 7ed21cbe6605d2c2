//! Framing benchmark: what a receiver costs per frame must not depend on
//! how many frames arrive in one read (1, 32 or 1,500: a 64 KiB read of
//! small pipelined requests), including with a switch into raw mode and
//! back for every frame; and a long line delivered one byte at a time must
//! cost the same per byte as a short one (the receiver never rescans).
//! A user's decoder (`FrameReceiver`, a type-length-value format) is
//! measured alongside.

use std::time::Instant;

use torsion_protocol::basic::{
    send_prefixed, DecodeError, Decoded, Decoder, FrameFlow, FrameHandler, FrameReceiver,
    Int32StringReceiver, LineHandler, LineReceiver, LineState, StringHandler,
};
use torsion_protocol::testing::{ProtocolHarness, StringTransport};
use torsion_protocol::{Protocol, TransportRef};

struct Count(usize);

impl LineHandler for Count {
    fn line_received(&mut self, _lines: &mut LineState, _transport: &TransportRef, line: &[u8]) {
        self.0 += line.len();
    }
}

/// Requests of a header line (`R`) and a raw body of [`BODY`] bytes: two
/// mode switches per request, as a line-header/raw-payload protocol does.
struct Requests {
    bytes: usize,
    body_left: usize,
}

/// The raw body of each request in the raw-mode case.
const BODY: usize = 37;

impl LineHandler for Requests {
    fn line_received(&mut self, lines: &mut LineState, _transport: &TransportRef, line: &[u8]) {
        self.bytes += line.len();
        self.body_left = BODY;
        lines.set_raw_mode();
    }

    fn raw_data_received(&mut self, lines: &mut LineState, _transport: &TransportRef, data: &[u8]) {
        let take = self.body_left.min(data.len());
        self.body_left -= take;
        self.bytes += take;
        if self.body_left == 0 {
            lines.set_line_mode(&data[take..]);
        }
    }
}

struct Strings(usize);

impl StringHandler for Strings {
    fn string_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0 += data.len();
    }
}

/// A type-length-value format through a user's [`Decoder`]: a tag byte, a
/// 2-byte big-endian length, the value.
struct Tlv;

impl Decoder for Tlv {
    type Frame<'a> = (u8, &'a [u8]);

    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<(u8, &'a [u8])>, DecodeError> {
        let [tag, high, low, value @ ..] = bytes else {
            return Ok(Decoded::NeedMore(Some(3 - bytes.len())));
        };
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if value.len() < length {
            return Ok(Decoded::NeedMore(Some(length - value.len())));
        }
        Ok(Decoded::Frame {
            frame: (*tag, &value[..length]),
            consumed: 3 + length,
        })
    }
}

impl FrameHandler<Tlv> for Strings {
    fn frame_received(
        &mut self,
        _flow: &mut FrameFlow,
        _transport: &TransportRef,
        (_tag, value): (u8, &[u8]),
    ) {
        self.0 += value.len();
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

/// Frames of 40 bytes each, for every case.
const FRAME: usize = 40;

/// Nanoseconds per frame to receive reads of `frames` frames each (about
/// 100,000 frames in all), checking with `delivered` that every byte
/// arrived. Never inlined: each case is compiled alike whatever else the
/// benchmark measures (inlined, adding a case moved another's figure).
#[inline(never)]
fn per_frame<P: Protocol>(
    make: impl Fn() -> P,
    read: &[u8],
    frames: usize,
    delivered: impl Fn(&P) -> usize,
    payload: usize,
) -> f64 {
    let reads = (100_000 / frames).max(1);
    let mut harness = ProtocolHarness::new(make());
    let start = Instant::now();
    for _ in 0..reads {
        harness.receive(read);
    }
    let elapsed = start.elapsed();
    assert_eq!(delivered(harness.protocol()), reads * frames * payload);
    elapsed.as_nanos() as f64 / (reads * frames) as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn frames_per_read() {
    println!("Cost per {FRAME}-byte frame by frames per read (ns per frame, median of 3):");
    println!(
        "{:>16} {:>14} {:>20} {:>14} {:>14}",
        "frames per read", "lines", "lines + raw body", "int32 strings", "tlv decoder"
    );
    for frames in [1, 32, 1500] {
        let line = [vec![b'a'; FRAME - 2], b"\r\n".to_vec()].concat();
        let lines = line.repeat(frames);
        let request = [b"R\r\n".to_vec(), vec![b'b'; BODY]].concat();
        let requests = request.repeat(frames);
        let transport = StringTransport::new();
        let handle: TransportRef = transport.clone();
        send_prefixed::<4>(&handle, &[b'c'; FRAME - 4]).unwrap();
        let strings = transport.take_written().repeat(frames);
        let record = [vec![7, 0, FRAME as u8 - 3], vec![b'd'; FRAME - 3]].concat();
        let records = record.repeat(frames);

        let mut plain = Vec::new();
        let mut raw = Vec::new();
        let mut prefixed = Vec::new();
        let mut decoded = Vec::new();
        for _ in 0..3 {
            plain.push(per_frame(
                || LineReceiver::new(Count(0)),
                &lines,
                frames,
                |r| r.handler().0,
                FRAME - 2,
            ));
            raw.push(per_frame(
                || {
                    LineReceiver::new(Requests {
                        bytes: 0,
                        body_left: 0,
                    })
                },
                &requests,
                frames,
                |r| r.handler().bytes,
                1 + BODY,
            ));
            prefixed.push(per_frame(
                || Int32StringReceiver::new(Strings(0)),
                &strings,
                frames,
                |r| r.handler().0,
                FRAME - 4,
            ));
            decoded.push(per_frame(
                || FrameReceiver::new(Tlv, Strings(0)),
                &records,
                frames,
                |r| r.handler().0,
                FRAME - 3,
            ));
        }
        println!(
            "{:>16} {:>14.1} {:>20.1} {:>14.1} {:>14.1}",
            frames,
            median(plain),
            median(raw),
            median(prefixed),
            median(decoded)
        );
    }
    println!();
}

pub fn run() {
    // A large stack: earlier versions of the line receiver recursed once per mode switch,
    // and this benchmark also measures them for comparison.
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| {
            frames_per_read();
            println!("LineReceiver, one line delivered a byte at a time:");
            println!("{:>12} {:>14}", "line bytes", "ns per byte");
            for length in [1 << 10, 1 << 14, 1 << 17, 1 << 20] {
                let samples: Vec<f64> = (0..3).map(|_| per_byte(length)).collect();
                println!("{:>12} {:>14.1}", length, median(samples));
            }
            println!();
        })
        .unwrap()
        .join()
        .unwrap();
}
