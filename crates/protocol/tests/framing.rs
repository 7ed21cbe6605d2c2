//! The framing receivers, on an in-memory transport: the same frames for
//! every split of the input, limits, malformed input, and mode switches.

use proptest::prelude::*;
use torsion_protocol::basic::{
    send_netstring, send_prefixed, DecodeError, Decoded, Decoder, FrameFlow, FrameHandler,
    FrameReceiver, Int16StringReceiver, Int32StringReceiver, Int8StringReceiver, LineHandler,
    LineReceiver, LineState, NetstringReceiver, StringHandler,
};
use torsion_protocol::testing::{Closing, ProtocolHarness, StringTransport};
use torsion_protocol::{Protocol, TransportRef};

/// Records every line and raw chunk; `RAW n` switches to raw mode for `n`
/// bytes, then back to line mode.
#[derive(Default)]
struct Lines {
    events: Vec<String>,
    raw_left: usize,
}

impl LineHandler for Lines {
    fn line_received(&mut self, lines: &mut LineState, _t: &TransportRef, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        if let Some(n) = line.strip_prefix("RAW ") {
            self.raw_left = n.parse().unwrap();
            lines.set_raw_mode();
        }
        self.events.push(format!("line {line}"));
    }

    fn raw_data_received(&mut self, lines: &mut LineState, _t: &TransportRef, data: &[u8]) {
        let take = self.raw_left.min(data.len());
        self.raw_left -= take;
        // Raw chunks are split however the input was; record bytes only.
        for &byte in &data[..take] {
            self.events.push(format!("raw {}", byte as char));
        }
        if self.raw_left == 0 {
            lines.set_line_mode(&data[take..]);
        }
    }
}

fn feed<P: Protocol>(protocol: P, input: &[u8], cuts: &[usize]) -> ProtocolHarness<P> {
    let mut harness = ProtocolHarness::new(protocol);
    harness.receive_in_chunks(input, cuts);
    harness
}

/// Lines with raw-mode switches in them, and what [`Lines`] records.
const RAW_SWITCHES: &[u8] = b"one\r\nRAW 5\r\nab\r\ncdtwo\r\nRAW 1\r\nxthree\r\n";
const RAW_SWITCH_EVENTS: [&str; 11] = [
    "line one",
    "line RAW 5",
    "raw a",
    "raw b",
    "raw \r",
    "raw \n",
    "raw c",
    "line dtwo",
    "line RAW 1",
    "raw x",
    "line three",
];

fn line_events(input: &[u8], cuts: &[usize]) -> Vec<String> {
    let harness = feed(LineReceiver::new(Lines::default()), input, cuts);
    harness.protocol().handler().events.clone()
}

proptest! {
    // A fixed seed: the same cases on every run, so a failure is
    // reproducible and a pass means the same thing everywhere.
    #![proptest_config(ProptestConfig {
        // Miri is ~1000 times slower: a few cases there.
        cases: if cfg!(miri) { 4 } else { 256 },
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7015_1011),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lines_are_the_same_for_every_chunking(
        lines in prop::collection::vec("[a-z ]{0,20}", 0..20),
        cuts in prop::collection::vec(1usize..10, 0..40),
    ) {
        let input: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
        let whole = line_events(&input, &[]);
        prop_assert_eq!(whole.len(), lines.len());
        prop_assert_eq!(line_events(&input, &cuts), whole);
    }

    #[test]
    fn raw_mode_switches_lose_and_repeat_nothing(
        cuts in prop::collection::vec(1usize..7, 0..40),
    ) {
        prop_assert_eq!(line_events(RAW_SWITCHES, &cuts), RAW_SWITCH_EVENTS);
    }

    #[test]
    fn netstrings_are_the_same_for_every_chunking(
        strings in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..10),
        cuts in prop::collection::vec(1usize..10, 0..40),
    ) {
        let transport = StringTransport::new();
        let handle: TransportRef = transport.clone();
        for s in &strings {
            send_netstring(&handle, s);
        }
        let input = transport.take_written();
        let harness = feed(NetstringReceiver::new(Strings::default()), &input, &cuts);
        prop_assert_eq!(&harness.protocol().handler().0, &strings);
    }

    #[test]
    fn prefixed_strings_are_the_same_for_every_chunking(
        strings in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..10),
        cuts in prop::collection::vec(1usize..10, 0..40),
    ) {
        let transport = StringTransport::new();
        let handle: TransportRef = transport.clone();
        for s in &strings {
            send_prefixed::<4>(&handle, s).unwrap();
        }
        let input = transport.take_written();
        let harness = feed(Int32StringReceiver::new(Strings::default()), &input, &cuts);
        prop_assert_eq!(&harness.protocol().handler().0, &strings);
        for s in &strings {
            send_prefixed::<2>(&handle, s).unwrap();
        }
        let input = transport.take_written();
        let harness = feed(Int16StringReceiver::new(Strings::default()), &input, &cuts);
        prop_assert_eq!(&harness.protocol().handler().0, &strings);
    }
}

#[derive(Default)]
struct Strings(Vec<Vec<u8>>);

impl StringHandler for Strings {
    fn string_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0.push(data.to_vec());
    }
}

#[test]
fn an_overlong_line_closes_the_connection_with_a_reason() {
    let mut receiver = LineReceiver::new(Lines::default());
    receiver.state_mut().set_max_length(10);
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive(b"short\r\n0123456789");
    assert_eq!(
        harness.transport.closing(),
        Closing::Open,
        "10 bytes may still end"
    );
    harness.receive(b"ABC");
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("line exceeds the maximum of 10 bytes".into())
    );
    assert_eq!(harness.protocol().handler().events, ["line short"]);
    // A complete overlong line is refused as well.
    let mut receiver = LineReceiver::new(Lines::default());
    receiver.state_mut().set_max_length(3);
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive(b"abcd\r\n");
    assert!(matches!(
        harness.transport.closing(),
        Closing::LostWithError(_)
    ));
}

#[test]
fn other_delimiters_and_send_line() {
    struct Answer;
    impl LineHandler for Answer {
        fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
            lines.send_line(transport, &[b"re: ", line].concat());
        }
    }
    let mut harness = ProtocolHarness::new(LineReceiver::with_delimiter(Answer, b"\n"));
    harness.receive(b"a\nb\n");
    assert_eq!(harness.transport.take_written(), b"re: a\nre: b\n");
}

fn netstring_fault(input: &[u8]) -> String {
    let mut harness = ProtocolHarness::new(NetstringReceiver::new(Strings::default()));
    harness.receive(input);
    match harness.transport.closing() {
        Closing::LostWithError(fault) => fault,
        other => panic!("{input:?} was accepted: {other:?}"),
    }
}

#[test]
fn malformed_netstrings_name_their_fault() {
    assert_eq!(
        netstring_fault(b"3x:abc,"),
        "netstring length contains 'x', not a digit"
    );
    assert_eq!(
        netstring_fault(b"03:abc,"),
        "netstring length has a leading zero"
    );
    assert_eq!(netstring_fault(b":abc,"), "netstring length is empty");
    assert_eq!(
        netstring_fault(b"3:abcd"),
        "netstring of 3 bytes is not followed by ','"
    );
    assert_eq!(
        netstring_fault(b"-3:abc,"),
        "netstring length contains '-', not a digit"
    );
    assert_eq!(
        netstring_fault(b"99999999999999999999999"),
        "netstring length has too many digits"
    );
    assert_eq!(
        netstring_fault(b"2000000:"),
        "string of 2000000 bytes exceeds the maximum of 1048576"
    );
}

#[test]
fn huge_length_prefixes_are_refused_before_buffering() {
    let mut harness = ProtocolHarness::new(Int32StringReceiver::new(Strings::default()));
    harness.receive(&[0xff, 0xff, 0xff, 0xff, b'x']);
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("string of 4294967295 bytes exceeds the maximum of 1048576".into())
    );
    let mut harness = ProtocolHarness::new(Int8StringReceiver::new(Strings::default()));
    harness.receive(&[3, b'a', b'b', b'c', 0, 1]);
    harness.receive(b"z");
    assert_eq!(
        harness.protocol().handler().0,
        [b"abc".to_vec(), vec![], b"z".to_vec()]
    );
}

#[test]
fn send_prefixed_refuses_what_does_not_fit() {
    let transport = StringTransport::new();
    let handle: TransportRef = transport.clone();
    assert!(send_prefixed::<1>(&handle, &[0u8; 256]).is_err());
    send_prefixed::<1>(&handle, &[7u8; 255]).unwrap();
    assert_eq!(transport.written().len(), 256);
}

#[test]
#[cfg_attr(miri, ignore = "a million calls: hours under Miri")]
fn a_megabyte_line_a_byte_at_a_time() {
    let mut receiver = LineReceiver::new(Lines::default());
    receiver.state_mut().set_max_length(2 << 20);
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive_in_chunks_of(&vec![b'a'; 1 << 20], 1);
    harness.receive(b"\r\n");
    let events = &harness.protocol().handler().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].len(), "line ".len() + (1 << 20));
}

#[test]
fn every_even_chunk_size_gives_the_same_lines_and_raw_bytes() {
    for size in 1..=RAW_SWITCHES.len() + 1 {
        let mut harness = ProtocolHarness::new(LineReceiver::new(Lines::default()));
        harness.receive_in_chunks_of(RAW_SWITCHES, size);
        assert_eq!(
            harness.protocol().handler().events,
            RAW_SWITCH_EVENTS,
            "chunks of {size}"
        );
    }
}

#[test]
#[should_panic(expected = "a chunk holds at least one byte")]
fn chunks_of_zero_bytes_are_refused() {
    ProtocolHarness::new(LineReceiver::new(Lines::default())).receive_in_chunks_of(b"x", 0);
}

#[test]
fn the_length_limit_is_the_smaller_of_the_maximum_and_the_prefixs_own() {
    let max = torsion_protocol::basic::DEFAULT_MAX_STRING;
    assert_eq!(
        Int8StringReceiver::new(Strings::default()).max_length(),
        255
    );
    assert_eq!(
        Int16StringReceiver::new(Strings::default()).max_length(),
        65_535
    );
    assert_eq!(
        Int32StringReceiver::new(Strings::default()).max_length(),
        max
    );
    let mut receiver = Int32StringReceiver::new(Strings::default());
    receiver.set_max_length(usize::MAX);
    assert_eq!(receiver.max_length(), u32::MAX as usize);
    receiver.set_max_length(10);
    assert_eq!(receiver.max_length(), 10);
    // The limit reported to the handler is the one that applies.
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive(&[0, 0, 0, 11]);
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("string of 11 bytes exceeds the maximum of 10".into())
    );
}

#[test]
fn send_prefixed_with_the_widest_prefix() {
    let transport = StringTransport::new();
    let handle: TransportRef = transport.clone();
    send_prefixed::<8>(&handle, b"abc").unwrap();
    assert_eq!(transport.take_written(), b"\0\0\0\0\0\0\0\x03abc");
    let error = send_prefixed::<2>(&handle, &[0u8; 65_536]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        error.to_string(),
        "a string of 65536 bytes does not fit a 2-byte length prefix (at most 65535)"
    );
    assert!(transport.written().is_empty());
}

#[test]
fn an_8_byte_prefix_of_all_ones_with_no_limit_does_not_panic() {
    let mut receiver =
        torsion_protocol::basic::PrefixedStringReceiver::<Strings, 8>::new(Strings::default());
    // "No limit": the prefix's own (u64::MAX) is all that applies.
    receiver.set_max_length(usize::MAX);
    let mut harness = ProtocolHarness::new(receiver);
    // length = u64::MAX: `N + length` overflows in data_received.
    harness.receive(&[0xff; 9]);
}

/// Records lines; a line `pause` pauses the receiver from the handler.
#[derive(Default)]
struct Pausing(Vec<String>);

impl LineHandler for Pausing {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        if line == "pause" {
            lines.pause_producing(transport);
        }
        self.0.push(line);
    }
}

#[test]
fn a_paused_line_receiver_delivers_nothing_until_resumed() {
    let mut harness = ProtocolHarness::new(LineReceiver::new(Pausing::default()));
    // Paused by its handler mid-read: the lines after it in the same read
    // wait, and reading from the socket pauses.
    harness.receive(b"a\r\npause\r\nb\r\nc\r\nunfin");
    assert_eq!(harness.protocol().handler().0, ["a", "pause"]);
    assert!(harness.transport.reading_paused());
    assert!(harness.protocol().is_paused());
    // What still arrives is held too.
    harness.receive(b"ished\r\nd\r\n");
    assert_eq!(harness.protocol().handler().0, ["a", "pause"]);
    // Resumed from outside: every held line, in order, and reading again.
    let transport = harness.transport_ref().clone();
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(
        harness.protocol().handler().0,
        ["a", "pause", "b", "c", "unfinished", "d"]
    );
    assert!(!harness.transport.reading_paused());
    assert_eq!(harness.protocol().buffered(), 0);

    // Paused from outside with lines held: a second `pause` in them stops
    // the delivery again, the rest wait for the next resume.
    harness.protocol_mut().pause_producing(&transport);
    harness.receive(b"e\r\npause\r\nf\r\n");
    assert_eq!(harness.protocol().handler().0.len(), 6);
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(harness.protocol().handler().0[6..], ["e", "pause"]);
    assert!(harness.transport.reading_paused());
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(harness.protocol().handler().0[8..], ["f"]);
}

#[test]
fn raw_data_waits_while_paused_too() {
    let mut harness = ProtocolHarness::new(LineReceiver::new(Lines::default()));
    let transport = harness.transport_ref().clone();
    harness.receive(b"RAW 3\r\nx");
    harness.protocol_mut().pause_producing(&transport);
    harness.receive(b"yzone\r\n");
    assert_eq!(harness.protocol().handler().events, ["line RAW 3", "raw x"]);
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(
        harness.protocol().handler().events,
        ["line RAW 3", "raw x", "raw y", "raw z", "line one"]
    );
}

#[test]
fn a_handler_that_resumes_in_its_callback_gets_the_rest_at_once() {
    struct Blip(Vec<Vec<u8>>);
    impl LineHandler for Blip {
        fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
            // Pause and resume within the callback: a no-op for delivery.
            lines.pause_producing(transport);
            lines.resume_producing(transport);
            self.0.push(line.to_vec());
        }
    }
    let mut harness = ProtocolHarness::new(LineReceiver::new(Blip(Vec::new())));
    harness.receive(b"a\r\nb\r\n");
    assert_eq!(
        harness.protocol().handler().0,
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert!(!harness.transport.reading_paused());
}

#[test]
fn paused_string_receivers_hold_their_strings() {
    let mut harness = ProtocolHarness::new(NetstringReceiver::new(Strings::default()));
    let transport = harness.transport_ref().clone();
    harness.protocol_mut().pause_producing(&transport);
    harness.receive(b"1:a,2:bc,3:d");
    assert!(harness.protocol().handler().0.is_empty());
    assert!(harness.transport.reading_paused());
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(
        harness.protocol().handler().0,
        [b"a".to_vec(), b"bc".to_vec()]
    );
    assert!(!harness.transport.reading_paused());
    harness.receive(b"ef,");
    assert_eq!(harness.protocol().handler().0[2], b"def");

    let mut harness = ProtocolHarness::new(Int16StringReceiver::new(Strings::default()));
    harness.protocol_mut().pause_producing(&transport);
    harness.receive(b"\0\x01a\0\x02bc\0");
    harness.protocol_mut().resume_producing(&transport);
    harness.receive(b"\x01d");
    assert_eq!(
        harness.protocol().handler().0,
        [b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]
    );
}

#[test]
fn bare_newlines_end_lines_when_accepted() {
    let mut receiver = LineReceiver::new(Lines::default());
    assert!(!receiver.state_mut().accepts_bare_newline());
    receiver.state_mut().set_accept_bare_newline(true);
    let input: &[u8] = b"crlf\r\nlf\n\nlone\rcr\r\nlast\r";
    for size in 1..=input.len() {
        let mut receiver = LineReceiver::new(Lines::default());
        receiver.state_mut().set_accept_bare_newline(true);
        let mut harness = ProtocolHarness::new(receiver);
        harness.receive_in_chunks_of(input, size);
        harness.receive(b"\n");
        assert_eq!(
            harness.protocol().handler().events,
            [
                "line crlf",
                "line lf",
                "line ",
                "line lone\rcr",
                "line last"
            ],
            "chunks of {size}"
        );
    }
    // Off (the default), a bare `\n` is part of the line.
    let mut harness = ProtocolHarness::new(LineReceiver::new(Lines::default()));
    harness.receive(b"a\nb\r\n");
    assert_eq!(harness.protocol().handler().events, ["line a\nb"]);
}

#[test]
fn with_bare_newlines_the_limit_does_not_count_the_cr() {
    for input in [&b"abcd\r\n"[..], b"abcd\n"] {
        for size in 1..=input.len() {
            let mut receiver = LineReceiver::new(Lines::default());
            receiver.state_mut().set_accept_bare_newline(true);
            receiver.state_mut().set_max_length(4);
            let mut harness = ProtocolHarness::new(receiver);
            harness.receive_in_chunks_of(input, size);
            assert_eq!(harness.protocol().handler().events, ["line abcd"]);
            assert_eq!(harness.transport.closing(), Closing::Open);
        }
    }
    let mut receiver = LineReceiver::new(Lines::default());
    receiver.state_mut().set_accept_bare_newline(true);
    receiver.state_mut().set_max_length(4);
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive(b"abcde\n");
    assert!(matches!(
        harness.transport.closing(),
        Closing::LostWithError(_)
    ));
}

#[test]
fn lines_are_lent_from_the_read_and_raw_switches_copy_nothing() {
    /// Checks that each line and raw chunk lies inside the read.
    struct Inside {
        read: (usize, usize),
        lent: usize,
        raw_left: usize,
    }
    impl Inside {
        fn check(&mut self, data: &[u8]) {
            let at = data.as_ptr() as usize;
            assert!(at >= self.read.0 && at + data.len() <= self.read.1);
            self.lent += 1;
        }
    }
    impl LineHandler for Inside {
        fn line_received(&mut self, lines: &mut LineState, _t: &TransportRef, line: &[u8]) {
            self.check(line);
            self.raw_left = 2;
            lines.set_raw_mode();
        }
        fn raw_data_received(&mut self, lines: &mut LineState, _t: &TransportRef, data: &[u8]) {
            self.check(data);
            self.raw_left -= 2;
            lines.set_line_mode(&data[2..]);
        }
    }
    let read = b"h\r\nxyhead\r\nzw".to_vec();
    let range = (read.as_ptr() as usize, read.as_ptr() as usize + read.len());
    let mut harness = ProtocolHarness::new(LineReceiver::new(Inside {
        read: range,
        lent: 0,
        raw_left: 0,
    }));
    harness.receive(&read);
    assert_eq!(harness.protocol().handler().lent, 4);
    assert_eq!(harness.protocol().buffered(), 0);
}

// ----- FrameReceiver: a decoder of the user's ---------------------------------

/// Type-length-value: a tag byte, a 2-byte big-endian length, the value.
/// Tag 0 is refused.
struct Tlv;

impl Decoder for Tlv {
    type Frame<'a> = (u8, &'a [u8]);

    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<(u8, &'a [u8])>, DecodeError> {
        if bytes.first() == Some(&0) {
            return Err(DecodeError::new("unknown tag 0"));
        }
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

#[derive(Default)]
struct Records(Vec<(u8, Vec<u8>)>);

impl FrameHandler<Tlv> for Records {
    fn frame_received(
        &mut self,
        _flow: &mut FrameFlow,
        _transport: &TransportRef,
        (tag, value): (u8, &[u8]),
    ) {
        self.0.push((tag, value.to_vec()));
    }
}

/// Frames end at a zero byte; the decoder cannot say how many more bytes
/// it needs, and counts the bytes it scans.
#[derive(Default)]
struct Zero {
    scanned: usize,
}

impl Decoder for Zero {
    type Frame<'a> = &'a [u8];

    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<&'a [u8]>, DecodeError> {
        let end = bytes.iter().position(|&b| b == 0);
        self.scanned += end.map_or(bytes.len(), |end| end + 1);
        Ok(match end {
            Some(end) => Decoded::Frame {
                frame: &bytes[..end],
                consumed: end + 1,
            },
            None => Decoded::NeedMore(None),
        })
    }
}

impl FrameHandler<Zero> for Strings {
    fn frame_received(&mut self, _flow: &mut FrameFlow, _transport: &TransportRef, frame: &[u8]) {
        self.0.push(frame.to_vec());
    }
}

fn tlv_stream(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut stream = Vec::new();
    for (tag, value) in records {
        stream.push(*tag);
        stream.extend_from_slice(&(value.len() as u16).to_be_bytes());
        stream.extend_from_slice(value);
    }
    stream
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7015_1012),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decoded_frames_are_the_same_for_every_chunking(
        records in prop::collection::vec(
            (1u8.., prop::collection::vec(any::<u8>(), 0..100)), 0..10),
        strings in prop::collection::vec(prop::collection::vec(1u8.., 0..100), 0..10),
        cuts in prop::collection::vec(1usize..10, 0..40),
    ) {
        let input = tlv_stream(&records);
        let harness = feed(FrameReceiver::new(Tlv, Records::default()), &input, &cuts);
        prop_assert_eq!(&harness.protocol().handler().0, &records);
        prop_assert_eq!(harness.protocol().buffered(), 0);

        let input: Vec<u8> = strings.iter().flat_map(|s| [&s[..], &[0]].concat()).collect();
        let harness = feed(FrameReceiver::new(Zero::default(), Strings::default()), &input, &cuts);
        prop_assert_eq!(&harness.protocol().handler().0, &strings);
        prop_assert_eq!(harness.protocol().buffered(), 0);
    }
}

#[test]
fn every_chunk_size_gives_the_same_decoded_frames() {
    let records: Vec<(u8, Vec<u8>)> = (1..=40u8)
        .map(|i| (i, vec![i; usize::from(i) * 3]))
        .collect();
    let input = tlv_stream(&records);
    for size in 1..=input.len() {
        let mut harness = ProtocolHarness::new(FrameReceiver::new(Tlv, Records::default()));
        harness.receive_in_chunks_of(&input, size);
        assert_eq!(harness.protocol().handler().0, records, "chunks of {size}");
        assert_eq!(harness.protocol().buffered(), 0);
        assert_eq!(harness.transport.closing(), Closing::Open);
    }
    let input = b"one\0\0three\0a longer frame than the others\0".repeat(20);
    let whole = feed(
        FrameReceiver::new(Zero::default(), Strings::default()),
        &input,
        &[],
    );
    assert_eq!(whole.protocol().handler().0.len(), 80);
    for size in 1..=input.len() {
        let mut harness =
            ProtocolHarness::new(FrameReceiver::new(Zero::default(), Strings::default()));
        harness.receive_in_chunks_of(&input, size);
        assert_eq!(
            harness.protocol().handler().0,
            whole.protocol().handler().0,
            "chunks of {size}"
        );
    }
}

#[test]
fn decoded_frames_are_lent_from_the_read() {
    struct Inside((usize, usize), usize);
    impl FrameHandler<Zero> for Inside {
        fn frame_received(
            &mut self,
            _flow: &mut FrameFlow,
            _transport: &TransportRef,
            frame: &[u8],
        ) {
            let at = frame.as_ptr() as usize;
            assert!(at >= self.0 .0 && at + frame.len() <= self.0 .1);
            self.1 += 1;
        }
    }
    let read = b"ab\0cd\0\0ef\0gh".to_vec();
    let range = (read.as_ptr() as usize, read.as_ptr() as usize + read.len());
    let mut harness = ProtocolHarness::new(FrameReceiver::new(Zero::default(), Inside(range, 0)));
    harness.receive(&read);
    assert_eq!(harness.protocol().handler().1, 4);
    // Only the unfinished frame is kept.
    assert_eq!(harness.protocol().buffered(), 2);
}

#[test]
fn a_frame_over_the_limit_closes_the_connection_naming_the_limit() {
    // A declared length over the limit is refused before it is buffered.
    let mut receiver = FrameReceiver::new(Tlv, Records::default());
    receiver.set_max_length(100);
    let mut harness = ProtocolHarness::new(receiver);
    harness.receive(b"\x01\x00\x01a\x02\xff\xff");
    assert_eq!(harness.protocol().handler().0, [(1, b"a".to_vec())]);
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("frame exceeds the maximum of 100 bytes".into())
    );
    assert_eq!(harness.protocol().buffered(), 0);
    harness.receive(b"\x01\x00\x01b");
    assert_eq!(harness.protocol().handler().0.len(), 1);

    // A frame whole in one read, one byte over, is refused too; exactly at
    // the limit is accepted.
    for (length, accepted) in [(97u16, true), (98, false)] {
        let mut receiver = FrameReceiver::new(Tlv, Records::default());
        receiver.set_max_length(100);
        let mut harness = ProtocolHarness::new(receiver);
        harness.receive(&tlv_stream(&[(7, vec![b'x'; usize::from(length)])]));
        assert_eq!(harness.protocol().handler().0.len(), usize::from(accepted));
        assert_eq!(harness.transport.closing() == Closing::Open, accepted);
    }

    // A decoder that cannot tell the length: refused once the buffered
    // part alone is over the limit, however it arrives.
    for size in [1, 7, 100, 1000] {
        let mut receiver = FrameReceiver::new(Zero::default(), Strings::default());
        receiver.set_max_length(100);
        let mut harness = ProtocolHarness::new(receiver);
        harness.receive_in_chunks_of(&[b'x'; 1000], size);
        assert!(harness.protocol().buffered() <= 100);
        assert_eq!(
            harness.transport.closing(),
            Closing::LostWithError("frame exceeds the maximum of 100 bytes".into())
        );
    }
}

#[test]
fn a_decoder_error_closes_with_its_reason() {
    let mut harness = ProtocolHarness::new(FrameReceiver::new(Tlv, Records::default()));
    harness.receive(b"\x01\x00\x00\x00\x00\x00\x01\x00\x00");
    assert_eq!(harness.protocol().handler().0, [(1, vec![])]);
    assert_eq!(
        harness.transport.closing(),
        Closing::LostWithError("unknown tag 0".into())
    );
}

#[test]
fn a_decoder_that_consumes_nothing_is_stopped_not_looped() {
    struct Stuck;
    impl Decoder for Stuck {
        type Frame<'a> = &'a [u8];
        fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<&'a [u8]>, DecodeError> {
            Ok(Decoded::Frame {
                frame: &bytes[..0],
                consumed: 0,
            })
        }
    }
    impl FrameHandler<Stuck> for Strings {
        fn frame_received(
            &mut self,
            _flow: &mut FrameFlow,
            _transport: &TransportRef,
            frame: &[u8],
        ) {
            self.0.push(frame.to_vec());
        }
    }
    let mut harness = ProtocolHarness::new(FrameReceiver::new(Stuck, Strings::default()));
    harness.receive(b"abc");
    assert!(harness.protocol().handler().0.is_empty());
    assert!(matches!(
        harness.transport.closing(),
        Closing::LostWithError(reason) if reason.contains("consumed 0 of 3 bytes")
    ));
}

#[test]
fn a_paused_frame_receiver_holds_its_frames() {
    let mut harness = ProtocolHarness::new(FrameReceiver::new(Tlv, Records::default()));
    let transport = harness.transport_ref().clone();
    harness.protocol_mut().pause_producing(&transport);
    harness.receive(b"\x01\x00\x01a\x02\x00\x02bc\x03\x00");
    assert!(harness.protocol().handler().0.is_empty());
    assert!(harness.protocol().is_paused());
    assert!(harness.transport.reading_paused());
    harness.protocol_mut().resume_producing(&transport);
    assert_eq!(
        harness.protocol().handler().0,
        [(1, b"a".to_vec()), (2, b"bc".to_vec())]
    );
    assert!(!harness.transport.reading_paused());
    harness.receive(b"\x01d");
    assert_eq!(harness.protocol().handler().0[2], (3, b"d".to_vec()));
    assert_eq!(harness.protocol().buffered(), 0);
}

#[test]
fn a_long_frame_of_unknown_length_is_scanned_a_bounded_number_of_times() {
    // After a partial frame is kept, a frame of unknown length that ends in
    // the next read is appended in growing steps: its bytes are scanned a
    // few times, not once per byte, and the frames after it are parsed in
    // place.
    let mut harness = ProtocolHarness::new(FrameReceiver::new(Zero::default(), Strings::default()));
    harness.receive(b"start");
    let mut rest = vec![b'x'; 100_000];
    rest.push(0);
    rest.extend_from_slice(&b"after\0".repeat(1000));
    harness.receive(&rest);
    assert_eq!(harness.protocol().handler().0.len(), 1001);
    assert_eq!(harness.protocol().buffered(), 0);
    let scanned = harness.protocol().decoder().scanned;
    assert!(scanned < 4 * 106_005, "{scanned} bytes scanned");
}

#[test]
fn a_frame_handler_pauses_from_its_callback() {
    /// Records values; a record of tag 9 pauses delivery.
    #[derive(Default)]
    struct Pausing(Vec<Vec<u8>>);
    impl FrameHandler<Tlv> for Pausing {
        fn frame_received(
            &mut self,
            flow: &mut FrameFlow,
            t: &TransportRef,
            (tag, value): (u8, &[u8]),
        ) {
            self.0.push(value.to_vec());
            if tag == 9 {
                flow.pause_producing(t);
            }
        }
    }
    let input = tlv_stream(&[
        (1, b"a".to_vec()),
        (9, b"stop".to_vec()),
        (1, b"b".to_vec()),
        (9, b"again".to_vec()),
        (1, b"c".to_vec()),
    ]);
    for size in 1..=input.len() {
        let mut harness = ProtocolHarness::new(FrameReceiver::new(Tlv, Pausing::default()));
        let transport = harness.transport_ref().clone();
        harness.receive_in_chunks_of(&input, size);
        // Frames already received wait too, and reading stops.
        assert_eq!(
            harness.protocol().handler().0,
            [&b"a"[..], b"stop"],
            "chunks of {size}"
        );
        assert!(harness.protocol().is_paused());
        assert!(harness.transport.reading_paused());
        harness.protocol_mut().resume_producing(&transport);
        assert_eq!(harness.protocol().handler().0.len(), 4, "chunks of {size}");
        assert!(harness.protocol().is_paused());
        harness.protocol_mut().resume_producing(&transport);
        assert_eq!(
            harness.protocol().handler().0,
            [&b"a"[..], b"stop", b"b", b"again", b"c"]
        );
        assert!(!harness.transport.reading_paused());
        assert_eq!(harness.protocol().buffered(), 0);
    }
}

/// A length-prefixed decoder (4-byte header) that checks the receiver's
/// promise: once it asked for `n` more bytes, it is not asked again
/// before they arrive.
struct Patient {
    calls: std::rc::Rc<std::cell::Cell<usize>>,
    /// What it had and how much more it asked for, last time.
    asked: Option<(usize, usize)>,
}

impl torsion_protocol::basic::Decoder for Patient {
    type Frame<'a> = &'a [u8];
    fn decode<'a>(
        &mut self,
        buffered: &'a [u8],
    ) -> Result<torsion_protocol::basic::Decoded<&'a [u8]>, torsion_protocol::basic::DecodeError>
    {
        use torsion_protocol::basic::{DecodeError, Decoded};
        self.calls.set(self.calls.get() + 1);
        if let Some((had, more)) = self.asked.take() {
            if buffered.len() < had + more {
                return Err(DecodeError::new(format!(
                    "asked again with {} bytes after asking for {more} more than {had}",
                    buffered.len()
                )));
            }
        }
        let need = if buffered.len() < 4 {
            4
        } else {
            4 + u32::from_be_bytes(buffered[..4].try_into().unwrap()) as usize
        };
        if buffered.len() < need {
            self.asked = Some((buffered.len(), need - buffered.len()));
            return Ok(Decoded::NeedMore(Some(need - buffered.len())));
        }
        Ok(Decoded::Frame {
            frame: &buffered[4..need],
            consumed: need,
        })
    }
}

struct CountFrames(usize);

impl torsion_protocol::basic::FrameHandler<Patient> for CountFrames {
    fn frame_received(
        &mut self,
        _flow: &mut torsion_protocol::basic::FrameFlow,
        _transport: &TransportRef,
        _frame: &[u8],
    ) {
        self.0 += 1;
    }
}

#[test]
fn a_decoder_that_asked_for_n_bytes_is_not_asked_again_before_they_arrive() {
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let decoder = Patient {
        calls: calls.clone(),
        asked: None,
    };
    let mut harness = ProtocolHarness::new(torsion_protocol::basic::FrameReceiver::new(
        decoder,
        CountFrames(0),
    ));
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[7; 100]);
    // Before: each read first asked the decoder again about the bytes it
    // had already answered for, and again whenever fewer bytes than it
    // asked for had come.
    harness.receive_in_chunks_of(&frame, 10);
    assert_eq!(harness.transport.closing(), Closing::Open);
    assert_eq!(harness.protocol().handler().0, 1);
    // Once for the header, once when the body had come.
    assert_eq!(calls.get(), 2);
}
