//! Bad input to every framing receiver: each malformed or oversized frame
//! closes the connection with a reason that names the fault, nothing after
//! the fault is delivered, nothing panics, and what a receiver buffers
//! stays under its bound for any input at all.

use proptest::prelude::*;
use torsion_protocol::basic::{
    DecodeError, Decoded, Decoder, FrameFlow, FrameHandler, FrameReceiver, Int16StringReceiver,
    Int32StringReceiver, Int8StringReceiver, LineHandler, LineReceiver, LineState,
    NetstringReceiver, StringHandler,
};
use torsion_protocol::testing::{Closing, ProtocolHarness};
use torsion_protocol::{Protocol, TransportRef};

const MAX: usize = 64;

#[derive(Default)]
struct Lines(Vec<Vec<u8>>);
impl LineHandler for Lines {
    fn line_received(&mut self, _lines: &mut LineState, _t: &TransportRef, line: &[u8]) {
        self.0.push(line.to_vec());
    }
}

#[derive(Default)]
struct Strings(Vec<Vec<u8>>);
impl StringHandler for Strings {
    fn string_received(&mut self, _t: &TransportRef, data: &[u8]) {
        self.0.push(data.to_vec());
    }
}

/// One receiver under test, behind a common face.
trait Receiver: Protocol + Sized {
    fn make() -> Self;
    fn held(&self) -> usize;
    /// The most it may hold between calls.
    fn bound() -> usize;
    fn delivered(&self) -> &[Vec<u8>];
}

impl Receiver for LineReceiver<Lines> {
    fn make() -> Self {
        let mut receiver = LineReceiver::new(Lines::default());
        receiver.state_mut().set_max_length(MAX);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound() -> usize {
        MAX + 2
    }
    fn delivered(&self) -> &[Vec<u8>] {
        &self.handler().0
    }
}

impl Receiver for NetstringReceiver<Strings> {
    fn make() -> Self {
        let mut receiver = NetstringReceiver::new(Strings::default());
        receiver.set_max_length(MAX);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound() -> usize {
        MAX + 22
    }
    fn delivered(&self) -> &[Vec<u8>] {
        &self.handler().0
    }
}

macro_rules! prefixed {
    ($ty:ident, $n:expr) => {
        impl Receiver for $ty<Strings> {
            fn make() -> Self {
                let mut receiver = $ty::new(Strings::default());
                receiver.set_max_length(MAX);
                receiver
            }
            fn held(&self) -> usize {
                self.buffered()
            }
            fn bound() -> usize {
                MAX + $n
            }
            fn delivered(&self) -> &[Vec<u8>] {
                &self.handler().0
            }
        }
    };
}
prefixed!(Int32StringReceiver, 4);
prefixed!(Int16StringReceiver, 2);
prefixed!(Int8StringReceiver, 1);

/// Type-length-value records (a tag byte, a 2-byte big-endian length, the
/// value) through a user's [`Decoder`]; tags over 200 are refused.
struct Tlv;

impl Decoder for Tlv {
    type Frame<'a> = &'a [u8];

    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<&'a [u8]>, DecodeError> {
        if let Some(&tag) = bytes.first() {
            if tag > 200 {
                return Err(DecodeError::new(format!("unknown tag {tag}")));
            }
        }
        let [_, high, low, value @ ..] = bytes else {
            return Ok(Decoded::NeedMore(Some(3 - bytes.len())));
        };
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if value.len() < length {
            return Ok(Decoded::NeedMore(Some(length - value.len())));
        }
        Ok(Decoded::Frame {
            frame: &value[..length],
            consumed: 3 + length,
        })
    }
}

impl FrameHandler<Tlv> for Strings {
    fn frame_received(&mut self, _flow: &mut FrameFlow, _t: &TransportRef, frame: &[u8]) {
        self.0.push(frame.to_vec());
    }
}

impl Receiver for FrameReceiver<Tlv, Strings> {
    fn make() -> Self {
        let mut receiver = FrameReceiver::new(Tlv, Strings::default());
        receiver.set_max_length(MAX);
        receiver
    }
    fn held(&self) -> usize {
        self.buffered()
    }
    fn bound() -> usize {
        MAX
    }
    fn delivered(&self) -> &[Vec<u8>] {
        &self.handler().0
    }
}

/// Feeds `good` then `bad` then more valid-looking input; the connection
/// must close with a fault containing `fault`, after delivering exactly the
/// good frames, and hold nothing.
fn refuses<R: Receiver>(good: &[u8], bad: &[u8], good_frames: usize, fault: &str) {
    let mut harness = ProtocolHarness::new(R::make());
    harness.receive(good);
    harness.receive(bad);
    // Frames that follow the fault are never delivered.
    harness.receive(good);
    match harness.transport.closing() {
        Closing::LostWithError(reason) => assert!(
            reason.contains(fault),
            "{bad:?}: reason {reason:?} does not mention {fault:?}"
        ),
        other => panic!("{bad:?} was accepted: {other:?}"),
    }
    assert_eq!(harness.protocol().delivered().len(), good_frames, "{bad:?}");
    assert!(harness.protocol().held() <= R::bound(), "{bad:?}");
}

#[test]
fn lines_over_the_maximum() {
    type R = LineReceiver<Lines>;
    let long = [b'x'; MAX + 1];
    refuses::<R>(
        b"ok\r\n",
        &[&long[..], b"\r\n"].concat(),
        1,
        "exceeds the maximum",
    );
    // Never terminated: refused once it cannot end in time.
    refuses::<R>(b"ok\r\n", &vec![b'x'; 10 * MAX], 1, "exceeds the maximum");
    // The wrong delimiter is just more line.
    refuses::<R>(b"ok\r\n", &b"a\n".repeat(MAX), 1, "exceeds the maximum");
    refuses::<R>(b"ok\r\n", &b"a\r".repeat(MAX), 1, "exceeds the maximum");
}

#[test]
fn malformed_netstrings() {
    type R = NetstringReceiver<Strings>;
    let good = b"2:ok,";
    for (bad, fault) in [
        (&b"x:abc,"[..], "not a digit"),
        (b"-1:a,", "not a digit"),
        (b"+1:a,", "not a digit"),
        (b" 1:a,", "not a digit"),
        (b"1 :a,", "not a digit"),
        (b"0x10:", "not a digit"),
        (b"01:a,", "leading zero"),
        (b":,", "empty"),
        (b"3:abcd,", "not followed by ','"),
        (b"3:abc;", "not followed by ','"),
        (b"65:", "exceeds the maximum"),
        (b"18446744073709551616:", "does not fit in 64 bits"),
        (b"9999999999999999999:", "exceeds the maximum"),
        (b"123456789012345678901234567890", "too many digits"),
        (b"\x00\xff", "not a digit"),
    ] {
        refuses::<R>(good, bad, 1, fault);
    }
}

#[test]
fn hostile_length_prefixes() {
    // Lengths over the maximum, including "negative" 32-bit values that a
    // signed reading would take as small.
    for bad in [
        &[0x80, 0, 0, 0][..],
        &[0xff, 0xff, 0xff, 0xff],
        &[0x7f, 0xff, 0xff, 0xff],
        &[0, 0, 0, MAX as u8 + 1],
    ] {
        refuses::<Int32StringReceiver<Strings>>(&[0, 0, 0, 1, b'a'], bad, 1, "exceeds");
    }
    for bad in [&[0xff, 0xff][..], &[0x80, 0], &[0, MAX as u8 + 1]] {
        refuses::<Int16StringReceiver<Strings>>(&[0, 1, b'a'], bad, 1, "exceeds");
    }
    refuses::<Int8StringReceiver<Strings>>(&[1, b'a'], &[0xff], 1, "exceeds");
}

#[test]
fn hostile_decoded_frames() {
    type R = FrameReceiver<Tlv, Strings>;
    let good = b"\x01\x00\x01a";
    // Huge declared sizes: refused at once, nothing buffered for them.
    for bad in [&b"\x01\xff\xff"[..], b"\x01\x00\x3e", b"\x07\x80\x00abc"] {
        refuses::<R>(good, bad, 1, "exceeds the maximum of 64 bytes");
    }
    // Garbage: the decoder's reason.
    refuses::<R>(good, b"\xfe\x00\x00", 1, "unknown tag 254");
    refuses::<R>(good, &[0xff; 1000], 1, "unknown tag 255");
}

fn survives<R: Receiver>(chunks: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut harness = ProtocolHarness::new(R::make());
    for chunk in chunks {
        harness.receive(chunk);
        prop_assert!(harness.protocol().held() <= R::bound());
        if harness.transport.closing() != Closing::Open {
            prop_assert!(matches!(
                harness.transport.closing(),
                Closing::LostWithError(_)
            ));
        }
    }
    for frame in harness.protocol().delivered() {
        prop_assert!(frame.len() <= MAX);
    }
    Ok(())
}

/// Input that is mostly frame syntax, so the parsers go deep.
fn hostile_bytes() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![
        any::<u8>(),
        Just(b'\r'),
        Just(b'\n'),
        Just(b':'),
        Just(b','),
        Just(0u8),
        Just(1u8),
        b'0'..=b'9',
    ];
    // Miri runs this about a thousand times slower: smaller inputs there.
    let (bytes, chunks) = if cfg!(miri) { (40, 4) } else { (200, 20) };
    prop::collection::vec(prop::collection::vec(byte, 0..bytes), 0..chunks)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Miri is ~1000 times slower: a few cases there.
        cases: if cfg!(miri) { 4 } else { 256 },
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0bad_1dea),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_input_to_a_line_receiver(chunks in hostile_bytes()) {
        survives::<LineReceiver<Lines>>(&chunks)?;
    }

    #[test]
    fn any_input_to_a_netstring_receiver(chunks in hostile_bytes()) {
        survives::<NetstringReceiver<Strings>>(&chunks)?;
    }

    #[test]
    fn any_input_to_prefixed_receivers(chunks in hostile_bytes()) {
        survives::<Int32StringReceiver<Strings>>(&chunks)?;
        survives::<Int16StringReceiver<Strings>>(&chunks)?;
        survives::<Int8StringReceiver<Strings>>(&chunks)?;
    }

    #[test]
    fn any_input_to_a_frame_receiver(chunks in hostile_bytes()) {
        survives::<FrameReceiver<Tlv, Strings>>(&chunks)?;
    }
}

/// Inputs the fuzzers (`just fuzz`) found; each once made two splits of the
/// same stream end differently, or panicked.
#[test]
fn fuzz_regressions() {
    // An overlong line once reported a length that depended on the split.
    let stream = [0x00, 0xf5, 0x01, b'l'];
    let close = |chunk: usize| {
        let mut receiver = LineReceiver::new(Lines::default());
        receiver.state_mut().set_max_length(0);
        let mut harness = ProtocolHarness::new(receiver);
        for piece in stream.chunks(chunk) {
            harness.receive(piece);
        }
        harness.transport.closing()
    };
    assert_eq!(close(1), close(4));
    // A non-digit after 21 digits was named in one split and "too many
    // digits" in another.
    let stream = b"1111111111111111111111111111111A0:11A0:\x01";
    let close = |chunk: usize| {
        let mut harness = ProtocolHarness::new(NetstringReceiver::new(Strings::default()));
        for piece in stream.chunks(chunk) {
            harness.receive(piece);
        }
        harness.transport.closing()
    };
    assert_eq!(close(3), close(stream.len()));
    // An endpoint timeout too long for a Duration panicked.
    let error =
        torsion_protocol::endpoints::client_from_string(&format!("unix:c1:{}", "9".repeat(300)))
            .unwrap_err();
    assert_eq!(error.message, "timeout is too long");
}
