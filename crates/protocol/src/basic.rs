//! Framing: turning a byte stream into lines, length-delimited strings or
//! frames of any format (Twisted's `twisted.protocols.basic`, and the
//! role of tokio-util's `codec`).
//!
//! Each receiver is a [`Protocol`] that wraps a handler of your own:
//!
//! - [`LineReceiver`] splits the stream at a delimiter (`\r\n` by default)
//!   and calls [`LineHandler::line_received`]; it can switch to raw mode and
//!   back mid-stream without losing or repeating a byte;
//! - [`NetstringReceiver`] reads netstrings (`5:hello,`);
//! - [`Int32StringReceiver`], [`Int16StringReceiver`] and
//!   [`Int8StringReceiver`] read strings prefixed with their big-endian
//!   length;
//!
//! the last three calling [`StringHandler::string_received`];
//! - [`FrameReceiver`] reads frames of any other format, described by a
//!   [`Decoder`] of yours, and calls [`FrameHandler::frame_received`].
//!
//! All of them give the same frames however the input is split into
//! chunks, and parse in place: a frame whole in the read it arrived in is
//! lent to the handler from that read, without a copy, and only an
//! unfinished frame is kept, which is not searched again when more arrives
//! (a 1 MiB line arriving a byte at a time costs no more per byte than a
//! short one). The work per frame does not grow with the number of frames
//! in a read, mode switches included, and is a loop, never a recursion.
//! They bound what they buffer: a frame over the maximum length is
//! refused, and by default the connection is closed with
//! [`CloseReason::ProtocolError`] naming the fault. Malformed input is
//! handled the same way. Each can be paused and resumed as Twisted's
//! (`pause_producing`, `resume_producing`).

use torsion_transport::{CloseReason, TransportRef};

use crate::protocol::Protocol;

/// Default maximum line length, in bytes (Twisted's `MAX_LENGTH`).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Default maximum string length for the length-prefixed and netstring
/// receivers, in bytes.
pub const DEFAULT_MAX_STRING: usize = 1 << 20;

// ----- lines ---------------------------------------------------------------

/// The settings and mode of a [`LineReceiver`], handed to its handler so it
/// can switch modes, change the delimiter, pause, or send lines.
#[derive(Debug, Clone)]
pub struct LineState {
    delimiter: Vec<u8>,
    max_length: usize,
    raw: bool,
    /// Lines end at `\n`, with or without a `\r` before it.
    bare_newline: bool,
    /// Paused: no frames are delivered until resumed (the same state and
    /// rules as every frame receiver's).
    flow: FrameFlow,
    /// What the receiver buffers is part of a line, already searched for
    /// the line end in the current mode and delimiter (cleared by any
    /// change of either).
    scanned: bool,
    /// The address range of the data lent to the raw handler in the call
    /// in progress, to recognise `set_line_mode(extra)` with `extra` the
    /// tail of it (compared, never dereferenced).
    lent: (usize, usize),
    /// Bytes at the end of the lent data handed back by `set_line_mode`:
    /// parsed again without being copied.
    handed_back: usize,
    /// Data handed back by `set_line_mode` that is not the tail of what
    /// was lent: copied, then parsed next.
    extra: Vec<u8>,
}

impl LineState {
    /// The delimiter between lines.
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// Sets the delimiter (it must not be empty). It applies from the next
    /// line on, including to lines already received but not yet delivered.
    pub fn set_delimiter(&mut self, delimiter: &[u8]) {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        self.delimiter = delimiter.to_vec();
        self.scanned = false;
    }

    /// Accepts a bare `\n` as the end of a line, as well as `\r\n` (off by
    /// default). When on, a line ends at the first `\n` whatever the
    /// delimiter, and a `\r` just before that `\n` is not part of the line;
    /// the delimiter is still what [`LineState::send_line`] sends. Many
    /// text protocols (SMTP and HTTP servers in practice, IRC) accept both.
    pub fn set_accept_bare_newline(&mut self, accept: bool) {
        self.bare_newline = accept;
        self.scanned = false;
    }

    /// True if a bare `\n` ends a line (see
    /// [`LineState::set_accept_bare_newline`]).
    pub fn accepts_bare_newline(&self) -> bool {
        self.bare_newline
    }

    /// The longest line accepted, delimiter excluded.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Sets the longest line accepted.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Switches to raw mode: from the next byte on, data goes to
    /// [`LineHandler::raw_data_received`] (Twisted's `setRawMode`).
    #[doc(alias = "setRawMode")]
    pub fn set_raw_mode(&mut self) {
        self.raw = true;
        self.scanned = false;
    }

    /// Switches back to line mode, from raw mode (Twisted's
    /// `setLineMode`). `extra` is data the raw handler received but did not
    /// consume: it is parsed as lines next, before anything received
    /// later. Handing back the tail of the data the raw handler is given
    /// (`&data[used..]`), the usual case, copies nothing; other bytes are
    /// copied.
    #[doc(alias = "setLineMode")]
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.raw = false;
        self.scanned = false;
        if extra.is_empty() {
            return;
        }
        let (start, length) = self.lent;
        let at = extra.as_ptr() as usize;
        if self.handed_back == 0
            && self.extra.is_empty()
            && at >= start
            && at + extra.len() == start + length
        {
            self.handed_back = extra.len();
        } else {
            self.extra.extend_from_slice(extra);
        }
    }

    /// True in raw mode.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Stops delivering frames, those already received included, and stops
    /// reading from the transport, until [`LineState::resume_producing`]
    /// or [`LineReceiver::resume_producing`] (Twisted's
    /// `LineReceiver.pauseProducing`). Called from a handler's callback,
    /// it takes effect after that callback returns.
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        self.flow.pause_producing(transport);
    }

    /// Resumes after [`LineState::pause_producing`] (Twisted's
    /// `resumeProducing`) and resumes reading. Called from a handler's
    /// callback, delivery goes on once that callback returns; from
    /// outside the receiver, call [`LineReceiver::resume_producing`]
    /// instead, which also delivers the lines received meanwhile.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        self.flow.resume_producing(transport);
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.flow.is_paused()
    }

    /// Sends `line` followed by the delimiter, in one write (Twisted's
    /// `sendLine`).
    #[doc(alias = "sendLine")]
    pub fn send_line(&self, transport: &TransportRef, line: &[u8]) {
        transport.write_sequence(&[line, &self.delimiter]);
    }

    /// How many bytes the search for a line end looks for.
    fn search_length(&self) -> usize {
        if self.bare_newline {
            1
        } else {
            self.delimiter.len()
        }
    }

    /// The most a line end takes: bytes beyond the maximum line length
    /// that a line may still end in.
    fn end_length(&self) -> usize {
        if self.bare_newline {
            2
        } else {
            self.delimiter.len()
        }
    }

    /// The first line end in `data`: where the line stops and where the
    /// next one starts.
    fn find_line(&self, data: &[u8]) -> Option<(usize, usize)> {
        if self.bare_newline {
            let at = position(data, b'\n')?;
            Some((at, at + 1))
        } else {
            let at = find(data, &self.delimiter)?;
            Some((at, at + self.delimiter.len()))
        }
    }

    /// `line` without the `\r` a bare-newline line end leaves on it.
    fn trim<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        match line {
            [rest @ .., b'\r'] if self.bare_newline => rest,
            _ => line,
        }
    }
}

/// What a [`LineReceiver`] tells its handler (Twisted's `LineReceiver`
/// methods).
pub trait LineHandler: 'static {
    /// The connection is made.
    fn connection_made(&mut self, lines: &mut LineState, transport: &TransportRef) {
        let _ = (lines, transport);
    }

    /// A complete line arrived, without its delimiter (Twisted's
    /// `lineReceived`).
    #[doc(alias = "lineReceived")]
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]);

    /// Data arrived in raw mode (Twisted's `rawDataReceived`): all that is
    /// at hand, which may run past what the handler wants; it hands the
    /// rest back with [`LineState::set_line_mode`].
    #[doc(alias = "rawDataReceived")]
    fn raw_data_received(&mut self, lines: &mut LineState, transport: &TransportRef, data: &[u8]) {
        let _ = (lines, transport, data);
    }

    /// A line longer than the maximum arrived (or is arriving); it is
    /// dropped (Twisted's `lineLengthExceeded`). `length` is how much of it
    /// has been seen: the whole line if its delimiter came in the same
    /// read, otherwise at least the maximum plus one, depending on how the
    /// network split the stream. The default closes the connection with a
    /// [`CloseReason::ProtocolError`] that names the maximum only, so the
    /// reason is the same however the stream was split.
    #[doc(alias = "lineLengthExceeded")]
    fn line_length_exceeded(
        &mut self,
        lines: &mut LineState,
        transport: &TransportRef,
        length: usize,
    ) {
        let _ = length;
        transport.lose_connection_with_error(format!(
            "line exceeds the maximum of {} bytes",
            lines.max_length()
        ));
    }

    /// The connection is closed.
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

/// A protocol that splits its input into lines (Twisted's
/// `LineReceiver`).
///
/// Lines are parsed where they lie: in the data of the current read when
/// they are whole in it (lent to the handler without a copy), and only the
/// unfinished line at the end of a read is kept. Raw data is lent the same
/// way, and a switch to raw mode and back copies nothing, however many
/// switches one read holds; the work is a loop, never a recursion, so a
/// peer cannot exhaust the stack with them.
///
/// ```
/// use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
/// use torsion_protocol::testing::ProtocolHarness;
/// use torsion_protocol::TransportRef;
///
/// /// Answers every line with its length.
/// struct Measure;
/// impl LineHandler for Measure {
///     fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
///         lines.send_line(transport, line.len().to_string().as_bytes());
///     }
/// }
///
/// let mut harness = ProtocolHarness::new(LineReceiver::new(Measure));
/// harness.receive(b"hello\r\nwor");
/// harness.receive(b"ld!\r\n");
/// assert_eq!(harness.transport.take_written(), b"5\r\n6\r\n");
/// ```
pub struct LineReceiver<H> {
    handler: H,
    state: LineState,
    /// Bytes received but not delivered: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// The line being received is over the maximum: drop it up to the
    /// next line end.
    discarding: bool,
}

/// Why parsing stopped before the end of the data.
enum Stop {
    /// Everything was consumed.
    End,
    /// What is left is an unfinished line, searched to its end.
    Unfinished,
    /// Paused, or the connection is closing.
    Held,
    /// The handler handed back bytes to copy (`LineState::extra`): from
    /// raw mode, to go after what is left; otherwise before it.
    Extra { from_raw: bool },
}

impl<H: LineHandler> LineReceiver<H> {
    /// A line receiver with the `\r\n` delimiter and the default maximum
    /// line length.
    pub fn new(handler: H) -> LineReceiver<H> {
        LineReceiver {
            handler,
            state: LineState {
                delimiter: b"\r\n".to_vec(),
                max_length: DEFAULT_MAX_LINE,
                raw: false,
                bare_newline: false,
                flow: FrameFlow::default(),
                scanned: false,
                lent: (0, 0),
                handed_back: 0,
                extra: Vec::new(),
            },
            buffer: Vec::new(),
            start: 0,
            discarding: false,
        }
    }

    /// The same, with another delimiter.
    pub fn with_delimiter(handler: H, delimiter: &[u8]) -> LineReceiver<H> {
        let mut receiver = LineReceiver::new(handler);
        receiver.state.set_delimiter(delimiter);
        receiver
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The settings and mode.
    pub fn state_mut(&mut self) -> &mut LineState {
        &mut self.state
    }

    /// Bytes held, received but not delivered: the unfinished line, never
    /// more than the maximum line length plus the delimiter; while paused,
    /// also what arrived since the pause.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start + self.state.extra.len()
    }

    /// Stops delivering lines and raw data, those already received
    /// included, and stops reading from the transport (Twisted's
    /// `pauseProducing`). See [`LineState::pause_producing`] to pause from
    /// the handler.
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        self.state.pause_producing(transport);
    }

    /// Resumes after a pause (Twisted's `resumeProducing`): delivers what
    /// was received meanwhile, in a loop until it is all delivered or the
    /// handler pauses again, then resumes reading. The handler cannot call
    /// this method from its callbacks (it is lent the [`LineState`], not
    /// the receiver), so delivery never re-enters it.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        self.state.resume_producing(transport);
        self.receive(transport, &[]);
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.state.flow.paused
    }

    /// Delivers what is buffered, then `input`, in the current mode: a
    /// loop over the two, never a recursion.
    fn receive(&mut self, transport: &TransportRef, input: &[u8]) {
        let mut at = 0;
        loop {
            if transport.is_closing() {
                // Twisted stops delivering lines once the connection is
                // closing; so do we.
                self.buffer.clear();
                self.start = 0;
                self.state.extra.clear();
                return;
            }
            if self.state.flow.paused {
                if at < input.len() {
                    self.buffer.extend_from_slice(&input[at..]);
                    self.state.scanned = false;
                }
                return;
            }
            if self.start < self.buffer.len() {
                if !self.state.raw && self.state.scanned {
                    // An unfinished line: finish it from the input.
                    if at == input.len() {
                        return;
                    }
                    at += self.finish_line(transport, &input[at..]);
                    continue;
                }
                // Frames already buffered (after a pause, or bytes handed
                // back) go first, parsed where they lie.
                let buffer = std::mem::take(&mut self.buffer);
                let (used, stop) = self.parse(transport, &buffer[self.start..]);
                self.buffer = buffer;
                self.start += used;
                match stop {
                    Stop::Unfinished => self.keep_unfinished(transport),
                    Stop::Extra { from_raw: true } => {
                        self.buffer.append(&mut self.state.extra);
                    }
                    Stop::Extra { from_raw: false } => {
                        let extra = std::mem::take(&mut self.state.extra);
                        self.buffer.splice(self.start..self.start, extra);
                    }
                    Stop::End | Stop::Held => {}
                }
                if self.start == self.buffer.len() {
                    self.buffer.clear();
                    self.start = 0;
                }
                continue;
            }
            if at == input.len() {
                return;
            }
            let (used, stop) = self.parse(transport, &input[at..]);
            at += used;
            match stop {
                Stop::Unfinished => {
                    self.buffer.extend_from_slice(&input[at..]);
                    at = input.len();
                    self.keep_unfinished(transport);
                }
                Stop::Extra { from_raw: true } => {
                    self.buffer.extend_from_slice(&input[at..]);
                    self.buffer.append(&mut self.state.extra);
                    at = input.len();
                }
                Stop::Extra { from_raw: false } => {
                    self.buffer.append(&mut self.state.extra);
                    self.buffer.extend_from_slice(&input[at..]);
                    at = input.len();
                }
                Stop::End | Stop::Held => {}
            }
        }
    }

    /// Delivers the frames in `data`, where they lie, until the end, an
    /// unfinished line, a pause or a close. Returns how much it consumed.
    fn parse(&mut self, transport: &TransportRef, data: &[u8]) -> (usize, Stop) {
        let mut at = 0;
        while at < data.len() {
            if self.state.flow.paused || transport.is_closing() {
                return (at, Stop::Held);
            }
            let rest = &data[at..];
            if self.state.raw {
                self.state.lent = (rest.as_ptr() as usize, rest.len());
                self.handler
                    .raw_data_received(&mut self.state, transport, rest);
                self.state.lent = (0, 0);
                at = data.len() - std::mem::take(&mut self.state.handed_back);
                if !self.state.extra.is_empty() {
                    return (at, Stop::Extra { from_raw: true });
                }
                continue;
            }
            let Some((end, next)) = self.state.find_line(rest) else {
                return (at, Stop::Unfinished);
            };
            at += next;
            if std::mem::take(&mut self.discarding) {
                // The tail of an overlong line.
                continue;
            }
            let line = self.state.trim(&rest[..end]);
            if line.len() > self.state.max_length {
                self.handler
                    .line_length_exceeded(&mut self.state, transport, line.len());
            } else {
                self.handler.line_received(&mut self.state, transport, line);
            }
            if !self.state.extra.is_empty() {
                return (at, Stop::Extra { from_raw: false });
            }
        }
        (at, Stop::End)
    }

    /// `buffer[start..]` is an unfinished line, searched to its end: keeps
    /// it (at the front of the buffer), or, if it is already over the
    /// maximum, drops all but the bytes a line end could start with.
    fn keep_unfinished(&mut self, transport: &TransportRef) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.state.scanned = true;
        let keep = self.state.search_length() - 1;
        let length = self.buffer.len();
        if self.discarding {
            if length > keep {
                self.buffer.drain(..length - keep);
            }
        } else if length >= self.state.max_length + self.state.end_length() {
            self.buffer.drain(..length - keep);
            self.discarding = true;
            self.handler
                .line_length_exceeded(&mut self.state, transport, length);
        }
    }

    /// The buffer holds an unfinished line; `input` (not empty) continues
    /// it. Delivers the line if `input` ends it, or keeps `input` too.
    /// Returns how much of `input` it consumed.
    fn finish_line(&mut self, transport: &TransportRef, input: &[u8]) -> usize {
        let held = self.buffer.len();
        let straddle = self.state.search_length() - 1;
        // A line end that starts in the buffer and ends in the input.
        let mut found = None;
        if straddle > 0 {
            let head = straddle.min(input.len());
            self.buffer.extend_from_slice(&input[..head]);
            let from = held.saturating_sub(straddle);
            if let Some((end, next)) = self.state.find_line(&self.buffer[from..]) {
                found = Some((from + end, next + from - held));
            }
            self.buffer.truncate(held);
        }
        let used = match found {
            Some((end, used)) => {
                self.buffer.truncate(end);
                used
            }
            None => match self.state.find_line(input) {
                Some((end, next)) => {
                    let cr = self.state.bare_newline
                        && input[..end].last().or(self.buffer.last()) == Some(&b'\r');
                    let length = held + end - usize::from(cr);
                    if !self.discarding && length <= self.state.max_length {
                        self.buffer.extend_from_slice(&input[..end]);
                    } else {
                        // Not needed: an overlong line is not delivered.
                        self.buffer.clear();
                        if !std::mem::take(&mut self.discarding) {
                            self.handler
                                .line_length_exceeded(&mut self.state, transport, length);
                        }
                        self.state.scanned = false;
                        return next;
                    }
                    next
                }
                None => {
                    self.buffer.extend_from_slice(input);
                    self.keep_unfinished(transport);
                    return input.len();
                }
            },
        };
        self.state.scanned = false;
        if std::mem::take(&mut self.discarding) {
            self.buffer.clear();
            return used;
        }
        let line = self.state.trim(&self.buffer);
        if line.len() > self.state.max_length {
            let length = line.len();
            self.buffer.clear();
            self.handler
                .line_length_exceeded(&mut self.state, transport, length);
        } else {
            self.handler.line_received(&mut self.state, transport, line);
            self.buffer.clear();
        }
        // Bytes handed back go before the rest of the input.
        self.buffer.append(&mut self.state.extra);
        used
    }
}

/// The index of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(at) = position(&haystack[from..], first) {
        let at = from + at;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where `byte` first occurs in `haystack`, looking at eight bytes per
/// step (a byte-by-byte loop was about a third of a line server's own CPU
/// per request). A word's bytes equal to `byte` become zero after the
/// XOR; `(w - 0x01..) & !w & 0x80..` marks the lowest zero byte exactly
/// (a borrow can only mark bytes above it), which `trailing_zeros` finds.
fn position(haystack: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut words = haystack.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let word = u64::from_le_bytes(bytes) ^ pattern;
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let rest = words.remainder().iter().position(|&b| b == byte)?;
    Some(offset + rest)
}

impl<H: LineHandler> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(&mut self.state, transport);
        // Bytes handed back before any data: parsed first.
        self.buffer.append(&mut self.state.extra);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.receive(transport, data);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

/// Twisted's `LineOnlyReceiver` is a `LineReceiver` without raw mode, kept
/// for speed; Torsion's [`LineReceiver`] parses lines the same way whether
/// or not a handler uses raw mode, and a switch copies nothing, so this is
/// the same type. A handler that never switches modes is a line-only
/// receiver.
pub type LineOnlyReceiver<H> = LineReceiver<H>;

// ----- strings ----------------------------------------------------------------

/// What a netstring or length-prefixed receiver tells its handler.
pub trait StringHandler: 'static {
    /// The connection is made.
    fn connection_made(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

    /// A complete string arrived (Twisted's `stringReceived`).
    #[doc(alias = "stringReceived")]
    fn string_received(&mut self, transport: &TransportRef, data: &[u8]);

    /// A string announced a length over the maximum (Twisted's
    /// `lengthLimitExceeded`). Nothing more is parsed; the default closes
    /// the connection with a [`CloseReason::ProtocolError`].
    #[doc(alias = "lengthLimitExceeded")]
    fn length_limit_exceeded(&mut self, transport: &TransportRef, length: u64, max: usize) {
        transport.lose_connection_with_error(format!(
            "string of {length} bytes exceeds the maximum of {max}"
        ));
    }

    /// The connection is closed.
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

/// Pausing a [`FrameReceiver`] from its handler's callback: handed to
/// [`FrameHandler::frame_received`].
#[derive(Debug, Default, Clone)]
pub struct FrameFlow {
    paused: bool,
}

impl FrameFlow {
    /// Stops delivering frames once the callback returns, those already
    /// received included, and stops reading from the transport, until
    /// resumed (Twisted's `pauseProducing`): back-pressure from the
    /// handler, when what it does with frames cannot keep up. Resume it
    /// with [`FrameFlow::resume_producing`] or the receiver's own
    /// `resume_producing`, not with `transport.resume_reading()` alone: that
    /// would read on while the receiver holds every frame, unbounded.
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        if !self.paused {
            self.paused = true;
            transport.pause_reading();
        }
    }

    /// Resumes after [`FrameFlow::pause_producing`] (Twisted's
    /// `resumeProducing`) and resumes reading. Called from the callback,
    /// delivery goes on once it returns; from outside the receiver, call
    /// [`FrameReceiver::resume_producing`] instead, which also delivers
    /// the frames received meanwhile.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        if self.paused {
            self.paused = false;
            transport.resume_reading();
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// A frame found at the start of buffered bytes, or how many more bytes
/// it needs.
enum Step<F> {
    /// A frame, the first `consumed` bytes used.
    Frame { frame: F, consumed: usize },
    /// More bytes are needed: at least this many, if known.
    Need(Option<usize>),
}

/// Why a stream of frames cannot be parsed further.
enum Fault {
    /// Malformed input, described.
    Malformed(String),
    /// A frame announced this length, over the maximum.
    TooLong(u64),
}

/// What [`Framer::receive`] tells the receiver.
enum Event<F> {
    Frame(F),
    Fault(Fault),
}

/// A decode step the [`Framer`] runs: the netstring and length-prefix
/// formats, and a user's [`Decoder`] with its size limit.
trait Decode {
    type Frame<'a>;
    fn step<'a>(&mut self, data: &'a [u8]) -> Result<Step<Self::Frame<'a>>, Fault>;
}

/// The bytes an unfinished frame of unknown length takes from the next
/// read at least; then as much as it already holds (so its bytes are
/// decoded again a bounded number of times: linear in its length).
const GROW: usize = 64;

/// The buffering all the frame receivers share (netstrings, length
/// prefixes, [`FrameReceiver`]): frames are decoded where
/// they lie, in the current read when they are whole in it (lent without a
/// copy); only an unfinished frame is kept, completed from the next read
/// by appending just the bytes it still needs. A loop, never a recursion.
#[derive(Default)]
struct Framer {
    /// Bytes received but not delivered: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// What the decoder last answered about `buffer[start..]`, while no
    /// byte was added since: it is not asked again until its need is met
    /// (`Some(n)`: until `n` more bytes arrived; `None`: until any did).
    waiting: Option<Option<usize>>,
    flow: FrameFlow,
    failed: bool,
}

impl Framer {
    fn held(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Appends `bytes` to the unfinished frame, and counts them against
    /// what the decoder is waiting for.
    fn append(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        self.waiting = match self.waiting {
            Some(Some(need)) if need > bytes.len() => Some(Some(need - bytes.len())),
            Some(_) if bytes.is_empty() => self.waiting,
            _ => None,
        };
    }

    fn pause(&mut self, transport: &TransportRef) {
        self.flow.pause_producing(transport);
    }

    fn resume(&mut self, transport: &TransportRef) -> bool {
        let was = self.flow.paused;
        self.flow.resume_producing(transport);
        was
    }

    /// Delivers what is buffered, then `input`.
    fn receive<D: Decode>(
        &mut self,
        transport: &TransportRef,
        input: &[u8],
        decoder: &mut D,
        mut on: impl for<'a> FnMut(&mut FrameFlow, &TransportRef, Event<D::Frame<'a>>),
    ) {
        let mut at = 0;
        loop {
            if self.failed {
                return;
            }
            if transport.is_closing() {
                // Nothing more is delivered once the connection is closing.
                self.buffer.clear();
                self.start = 0;
                self.waiting = None;
                return;
            }
            if self.flow.paused {
                self.append(&input[at..]);
                return;
            }
            let (data, buffered) = if self.start < self.buffer.len() {
                (&self.buffer[self.start..], true)
            } else if at < input.len() {
                (&input[at..], false)
            } else {
                return;
            };
            // A decoder that already said what the buffered bytes need is
            // not asked again before it arrives.
            let known = if buffered { self.waiting } else { None };
            // The frame is handed on before the buffer changes: it may
            // borrow from it.
            let step = match known.map_or_else(|| decoder.step(data), |more| Ok(Step::Need(more))) {
                Err(fault) => Err(fault),
                Ok(Step::Frame { frame, consumed }) => {
                    on(&mut self.flow, transport, Event::Frame(frame));
                    Ok(Step::Frame {
                        frame: (),
                        consumed,
                    })
                }
                Ok(Step::Need(more)) => Ok(Step::Need(more)),
            };
            match step {
                Err(fault) => {
                    self.failed = true;
                    self.buffer = Vec::new();
                    self.start = 0;
                    self.waiting = None;
                    on(&mut self.flow, transport, Event::Fault(fault));
                    return;
                }
                Ok(Step::Frame {
                    frame: (),
                    consumed,
                }) => {
                    self.waiting = None;
                    if buffered {
                        self.start += consumed;
                        if self.start == self.buffer.len() {
                            self.buffer.clear();
                            self.start = 0;
                        }
                    } else {
                        at += consumed;
                    }
                }
                Ok(Step::Need(more)) => {
                    if buffered {
                        self.waiting = Some(more);
                        if at == input.len() {
                            if self.start > 0 {
                                self.buffer.drain(..self.start);
                                self.start = 0;
                            }
                            return;
                        }
                        // Only what the frame needs (when the need is not
                        // known, a share of the input as large as what is
                        // held): the rest of the input is parsed in place.
                        let take = more
                            .unwrap_or_else(|| self.held().max(GROW))
                            .max(1)
                            .min(input.len() - at);
                        self.append(&input[at..at + take]);
                        at += take;
                    } else {
                        // The decoder has seen these bytes: they do not
                        // count towards what it asked for.
                        self.buffer.extend_from_slice(&input[at..]);
                        self.waiting = Some(more);
                        return;
                    }
                }
            }
        }
    }
}

/// Reads netstrings: `<decimal length>:<bytes>,` (Twisted's
/// `NetstringReceiver`). Malformed input — a non-digit in the length, a
/// leading zero, a missing colon or comma — closes the connection with a
/// [`CloseReason::ProtocolError`] naming the fault.
///
/// Strings are lent to the handler from the read they arrived in when
/// they are whole in it; only an unfinished one is kept.
pub struct NetstringReceiver<H> {
    handler: H,
    max_length: usize,
    framer: Framer,
}

impl<H: StringHandler> NetstringReceiver<H> {
    /// A receiver with the default maximum length.
    pub fn new(handler: H) -> NetstringReceiver<H> {
        NetstringReceiver {
            handler,
            max_length: DEFAULT_MAX_STRING,
            framer: Framer::default(),
        }
    }

    /// Sets the longest string accepted.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Bytes held waiting for the rest of a netstring: never more than
    /// the maximum length plus its 20-digit length and two separators;
    /// while paused, also what arrived since the pause.
    pub fn buffered(&self) -> usize {
        self.framer.held()
    }

    /// Stops delivering strings, those already received included, and
    /// stops reading from the transport (Twisted's `pauseProducing`).
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        self.framer.pause(transport);
    }

    /// Resumes after a pause (Twisted's `resumeProducing`): delivers the
    /// strings received meanwhile, in a loop, and resumes reading.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        if self.framer.resume(transport) {
            self.data_received(transport, &[]);
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.framer.flow.paused
    }
}

/// Where the netstring at the start of `data` lies.
fn decode_netstring(data: &[u8], max_length: usize) -> Result<Step<&[u8]>, Fault> {
    // Digits of the length are at most 20 (u64::MAX). Only the first 21
    // bytes are examined, so the fault named is the same however the
    // stream was split.
    let Some(colon) = data.iter().take(21).position(|&b| b == b':') else {
        if let Some(bad) = data.iter().take(21).find(|b| !b.is_ascii_digit()) {
            return Err(Fault::Malformed(format!(
                "netstring length contains {:?}, not a digit",
                *bad as char
            )));
        }
        if data.len() > 20 {
            return Err(Fault::Malformed(
                "netstring length has too many digits".into(),
            ));
        }
        return Ok(Step::Need(Some(1)));
    };
    let digits = &data[..colon];
    if digits.is_empty() {
        return Err(Fault::Malformed("netstring length is empty".into()));
    }
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_digit()) {
        return Err(Fault::Malformed(format!(
            "netstring length contains {:?}, not a digit",
            *bad as char
        )));
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(Fault::Malformed(
            "netstring length has a leading zero".into(),
        ));
    }
    // Only ASCII digits remain, so parsing fails only on overflow.
    let Some(value) = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Err(Fault::Malformed(
            "netstring length does not fit in 64 bits".into(),
        ));
    };
    if value > max_length as u64 {
        return Err(Fault::TooLong(value));
    }
    let length = value as usize;
    let body = &data[colon + 1..];
    // Compared without adding: the length may be `usize::MAX`.
    if body.len() <= length {
        return Ok(Step::Need(Some((length - body.len()).saturating_add(1))));
    }
    if body[length] != b',' {
        return Err(Fault::Malformed(format!(
            "netstring of {length} bytes is not followed by ','"
        )));
    }
    Ok(Step::Frame {
        frame: &body[..length],
        consumed: colon + 1 + length + 1,
    })
}

/// The netstring format as a [`Decode`] step.
struct Netstrings {
    max_length: usize,
}

impl Decode for Netstrings {
    type Frame<'a> = &'a [u8];
    fn step<'a>(&mut self, data: &'a [u8]) -> Result<Step<&'a [u8]>, Fault> {
        decode_netstring(data, self.max_length)
    }
}

impl<H: StringHandler> Protocol for NetstringReceiver<H> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let max_length = self.max_length;
        let handler = &mut self.handler;
        self.framer.receive(
            transport,
            data,
            &mut Netstrings { max_length },
            |_flow, transport, event| match event {
                Event::Frame(data) => handler.string_received(transport, data),
                Event::Fault(Fault::Malformed(fault)) => {
                    transport.lose_connection_with_error(fault);
                }
                Event::Fault(Fault::TooLong(length)) => {
                    handler.length_limit_exceeded(transport, length, max_length);
                }
            },
        );
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

/// Sends `data` as one netstring, in one write (Twisted's `sendString`).
pub fn send_netstring(transport: &TransportRef, data: &[u8]) {
    let prefix = format!("{}:", data.len());
    transport.write_sequence(&[prefix.as_bytes(), data, b","]);
}

/// Reads strings prefixed with their length as an `N`-byte big-endian
/// unsigned integer (Twisted's `IntNStringReceiver`). Use the aliases
/// [`Int32StringReceiver`], [`Int16StringReceiver`],
/// [`Int8StringReceiver`].
///
/// The prefix is 1 to 8 bytes wide; any other width is refused when the
/// program is compiled:
///
/// ```compile_fail,E0080
/// use torsion_protocol::basic::{PrefixedStringReceiver, StringHandler};
/// use torsion_protocol::TransportRef;
///
/// struct Strings;
/// impl StringHandler for Strings {
///     fn string_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
/// }
/// let no_prefix = PrefixedStringReceiver::<Strings, 0>::new(Strings);
/// ```
///
/// ```compile_fail,E0080
/// # use torsion_protocol::basic::{PrefixedStringReceiver, StringHandler};
/// # use torsion_protocol::TransportRef;
/// # struct Strings;
/// # impl StringHandler for Strings {
/// #     fn string_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
/// # }
/// let too_wide = PrefixedStringReceiver::<Strings, 9>::new(Strings);
/// ```
///
/// Strings are lent to the handler from the read they arrived in when
/// they are whole in it; only an unfinished one is kept.
pub struct PrefixedStringReceiver<H, const N: usize> {
    handler: H,
    max_length: usize,
    framer: Framer,
}

/// Strings prefixed with a 4-byte big-endian length (Twisted's
/// `Int32StringReceiver`).
pub type Int32StringReceiver<H> = PrefixedStringReceiver<H, 4>;
/// Strings prefixed with a 2-byte big-endian length (Twisted's
/// `Int16StringReceiver`).
pub type Int16StringReceiver<H> = PrefixedStringReceiver<H, 2>;
/// Strings prefixed with a 1-byte length (Twisted's `Int8StringReceiver`).
pub type Int8StringReceiver<H> = PrefixedStringReceiver<H, 1>;

/// What an `N`-byte length prefix can express.
struct PrefixWidth<const N: usize>;

impl<const N: usize> PrefixWidth<N> {
    /// The longest length the prefix expresses. Evaluating it refuses a
    /// width outside 1 to 8 bytes when the program is compiled: no prefix
    /// would never advance, and more than 8 bytes would not fit a `u64`.
    const MAX: u64 = {
        assert!(N >= 1 && N <= 8, "a length prefix is 1 to 8 bytes wide");
        if N == 8 {
            u64::MAX
        } else {
            (1 << (8 * N)) - 1
        }
    };
}

impl<H: StringHandler, const N: usize> PrefixedStringReceiver<H, N> {
    /// A receiver with the default maximum length (or the prefix's own
    /// limit, if smaller).
    pub fn new(handler: H) -> PrefixedStringReceiver<H, N> {
        // Checks the prefix width when the program is compiled.
        let _ = PrefixWidth::<N>::MAX;
        PrefixedStringReceiver {
            handler,
            max_length: DEFAULT_MAX_STRING,
            framer: Framer::default(),
        }
    }

    /// Sets the longest string accepted. The prefix's own limit still
    /// applies if it is smaller (see
    /// [`PrefixedStringReceiver::max_length`]).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// The longest string accepted: the maximum set (by default
    /// [`DEFAULT_MAX_STRING`]), or what `N` bytes can express if that is
    /// smaller (255 for one byte, 65,535 for two).
    pub fn max_length(&self) -> usize {
        let expressible = usize::try_from(PrefixWidth::<N>::MAX).unwrap_or(usize::MAX);
        self.max_length.min(expressible)
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Bytes held waiting for the rest of a string: never more than the
    /// maximum length plus the prefix; while paused, also what arrived
    /// since the pause.
    pub fn buffered(&self) -> usize {
        self.framer.held()
    }

    /// Stops delivering strings, those already received included, and
    /// stops reading from the transport (Twisted's `pauseProducing`).
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        self.framer.pause(transport);
    }

    /// Resumes after a pause (Twisted's `resumeProducing`): delivers the
    /// strings received meanwhile, in a loop, and resumes reading.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        if self.framer.resume(transport) {
            self.data_received(transport, &[]);
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.framer.flow.paused
    }
}

/// Where the string at the start of `data`, after an `N`-byte length,
/// lies.
fn decode_prefixed<const N: usize>(data: &[u8], max_length: usize) -> Result<Step<&[u8]>, Fault> {
    if data.len() < N {
        return Ok(Step::Need(Some(N - data.len())));
    }
    let length = data[..N]
        .iter()
        .fold(0u64, |value, &byte| value << 8 | u64::from(byte));
    if length > max_length as u64 {
        return Err(Fault::TooLong(length));
    }
    let length = length as usize;
    let body = data.len() - N;
    // Compared without adding: a limit of `usize::MAX` and a prefix of all
    // ones must not overflow.
    if body < length {
        return Ok(Step::Need(Some(length - body)));
    }
    Ok(Step::Frame {
        frame: &data[N..N + length],
        consumed: N + length,
    })
}

/// The `N`-byte length-prefix format as a [`Decode`] step.
struct Prefixed<const N: usize> {
    max_length: usize,
}

impl<const N: usize> Decode for Prefixed<N> {
    type Frame<'a> = &'a [u8];
    fn step<'a>(&mut self, data: &'a [u8]) -> Result<Step<&'a [u8]>, Fault> {
        decode_prefixed::<N>(data, self.max_length)
    }
}

impl<H: StringHandler, const N: usize> Protocol for PrefixedStringReceiver<H, N> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let max_length = self.max_length();
        let handler = &mut self.handler;
        self.framer.receive(
            transport,
            data,
            &mut Prefixed::<N> { max_length },
            |_flow, transport, event| match event {
                Event::Frame(data) => handler.string_received(transport, data),
                Event::Fault(Fault::Malformed(fault)) => {
                    transport.lose_connection_with_error(fault);
                }
                Event::Fault(Fault::TooLong(length)) => {
                    handler.length_limit_exceeded(transport, length, max_length);
                }
            },
        );
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

/// Sends `data` prefixed with its `N`-byte big-endian length, in one
/// write (Twisted's `sendString`).
///
/// As for [`PrefixedStringReceiver`], `N` is 1 to 8, checked when the
/// program is compiled:
///
/// ```compile_fail,E0080
/// # let transport: torsion_protocol::TransportRef =
/// #     torsion_protocol::testing::StringTransport::new();
/// torsion_protocol::basic::send_prefixed::<9>(&transport, b"too wide")?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// `InvalidInput` if `data` is too long for an `N`-byte length; nothing
/// is written then.
pub fn send_prefixed<const N: usize>(transport: &TransportRef, data: &[u8]) -> std::io::Result<()> {
    // Evaluating the limit checks the prefix width when compiling.
    let max = PrefixWidth::<N>::MAX;
    let length = data.len() as u64;
    if length > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a string of {length} bytes does not fit a {N}-byte length prefix (at most {max})"
            ),
        ));
    }
    let prefix = length.to_be_bytes();
    transport.write_sequence(&[&prefix[8 - N..], data]);
    Ok(())
}

// ----- decoders ---------------------------------------------------------------

/// Default maximum frame size for a [`FrameReceiver`], in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What a [`Decoder`] found at the start of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<F> {
    /// A whole frame, which used the first `consumed` bytes (at least
    /// one, and no more than were given). Decoding goes on after them.
    Frame {
        /// The frame, as the handler receives it; it may borrow from the
        /// bytes given.
        frame: F,
        /// How many bytes the frame took up in the stream, headers and
        /// trailers included.
        consumed: usize,
    },
    /// The bytes given are the start of a frame, not all of it. With
    /// `Some(n)`, at least `n` more bytes are needed (the decoder is not
    /// asked again before they arrive, and a frame that could not fit the
    /// limit is refused at once); with `None`, the decoder does not know.
    NeedMore(Option<usize>),
}

/// Why a [`Decoder`] refuses its input: the connection is closed with
/// [`CloseReason::ProtocolError`] carrying this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    reason: String,
}

impl DecodeError {
    /// An error with this reason, for the peer's log and yours.
    pub fn new(reason: impl Into<String>) -> DecodeError {
        DecodeError {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// A framing format for a [`FrameReceiver`]: given the bytes received and
/// not yet used, it finds the frame at their start (the role of
/// tokio-util's `Decoder`, without the buffer: the receiver owns it).
///
/// [`Decoder::decode`] is handed the buffered bytes, which always start
/// at a frame boundary. It returns the frame and how many bytes it took
/// up, or asks for more bytes, or fails. It is asked again with more
/// bytes (the same start) after asking for more, and with the bytes after
/// a frame after returning one. It may keep state between calls (how far
/// it has already scanned, say), as long as that state describes the
/// frame at the start. After an error it is not called again.
///
/// Frames are borrowed: `Frame<'a>` may hold slices of the bytes given,
/// so nothing is copied on the way to the handler.
///
/// ```
/// use torsion_protocol::basic::{DecodeError, Decoded, Decoder};
///
/// /// Frames end with a zero byte.
/// struct ZeroTerminated;
///
/// impl Decoder for ZeroTerminated {
///     type Frame<'a> = &'a [u8];
///
///     fn decode<'a>(&mut self, buffered: &'a [u8]) -> Result<Decoded<&'a [u8]>, DecodeError> {
///         Ok(match buffered.iter().position(|&b| b == 0) {
///             Some(end) => Decoded::Frame { frame: &buffered[..end], consumed: end + 1 },
///             None => Decoded::NeedMore(None),
///         })
///     }
/// }
///
/// let frame = ZeroTerminated.decode(b"abc\0de").unwrap();
/// assert_eq!(frame, Decoded::Frame { frame: &b"abc"[..], consumed: 4 });
/// ```
pub trait Decoder: 'static {
    /// What the handler receives, possibly borrowing the buffered bytes.
    type Frame<'a>;

    /// Finds the frame at the start of `buffered`.
    ///
    /// # Errors
    /// A [`DecodeError`] when the bytes cannot start a valid frame: the
    /// connection is closed with its reason.
    fn decode<'a>(&mut self, buffered: &'a [u8]) -> Result<Decoded<Self::Frame<'a>>, DecodeError>;
}

/// What a [`FrameReceiver`] tells its handler.
pub trait FrameHandler<D: Decoder>: 'static {
    /// The connection is made.
    fn connection_made(&mut self, transport: &TransportRef) {
        let _ = transport;
    }

    /// A frame arrived. It may borrow the receiver's buffer or the read
    /// it came in: keep what you need of it by copying. `flow` pauses
    /// delivery and reading ([`FrameFlow::pause_producing`]).
    fn frame_received(
        &mut self,
        flow: &mut FrameFlow,
        transport: &TransportRef,
        frame: D::Frame<'_>,
    );

    /// The connection is closed.
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

/// A user's decoder with the receiver's size limit.
struct Limited<'d, D> {
    decoder: &'d mut D,
    max_length: usize,
}

impl<D: Decoder> Decode for Limited<'_, D> {
    type Frame<'a> = D::Frame<'a>;

    fn step<'a>(&mut self, data: &'a [u8]) -> Result<Step<D::Frame<'a>>, Fault> {
        match self.decoder.decode(data) {
            Err(error) => Err(Fault::Malformed(error.reason)),
            Ok(Decoded::Frame { frame, consumed }) => {
                if consumed == 0 || consumed > data.len() {
                    return Err(Fault::Malformed(format!(
                        "decoder error: a frame consumed {consumed} of {} bytes",
                        data.len()
                    )));
                }
                if consumed > self.max_length {
                    return Err(Fault::TooLong(consumed as u64));
                }
                Ok(Step::Frame { frame, consumed })
            }
            Ok(Decoded::NeedMore(more)) => {
                // The frame takes at least this much: refused now if that
                // is over the limit, before anything is buffered for it.
                let least = data.len().saturating_add(more.unwrap_or(1).max(1));
                if least > self.max_length {
                    return Err(Fault::TooLong(least as u64));
                }
                Ok(Step::Need(more))
            }
        }
    }
}

/// Reads frames of any format a [`Decoder`] describes and hands them to a
/// [`FrameHandler`]: the parse-in-place pattern as a component (as
/// tokio-util's `FramedRead`, for a [`Protocol`]).
///
/// It does the buffering once, for every format: frames whole in the read
/// they arrived in are decoded and lent from that read, without a copy;
/// only an unfinished frame is kept, completed from the next read, and
/// the buffer is compacted as frames are used. Frames are delivered in
/// order, in a loop (never a recursion), and the same frames come out
/// however the input is split.
///
/// - **Size limit**: a frame longer than the maximum (by default
///   [`DEFAULT_MAX_FRAME`], counted in bytes of the stream, headers
///   included) closes the connection with
///   [`CloseReason::ProtocolError`] naming the limit, as soon as the
///   decoder says so: a decoder that asks for
///   [`Decoded::NeedMore`]`(Some(n))` after reading a huge declared
///   length gets the connection closed before any of it is buffered. So
///   the receiver holds at most the maximum (plus, while paused, what
///   arrived since the pause).
/// - **Errors**: a [`DecodeError`] closes the connection with its reason;
///   nothing after it is delivered.
/// - **Back-pressure**: [`FrameReceiver::pause_producing`], or
///   [`FrameFlow::pause_producing`] from the handler's callback, stops
///   delivery, frames already received included, and reading from the
///   transport, until [`FrameReceiver::resume_producing`].
///
/// A type-length-value format, one tag byte and a 2-byte big-endian
/// length:
///
/// ```
/// use torsion_protocol::basic::{
///     DecodeError, Decoded, Decoder, FrameFlow, FrameHandler, FrameReceiver,
/// };
/// use torsion_protocol::testing::ProtocolHarness;
/// use torsion_protocol::TransportRef;
///
/// struct Tlv;
///
/// impl Decoder for Tlv {
///     type Frame<'a> = (u8, &'a [u8]);
///
///     fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Decoded<(u8, &'a [u8])>, DecodeError> {
///         let [tag, high, low, value @ ..] = bytes else {
///             return Ok(Decoded::NeedMore(Some(3 - bytes.len())));
///         };
///         let length = usize::from(u16::from_be_bytes([*high, *low]));
///         if value.len() < length {
///             return Ok(Decoded::NeedMore(Some(length - value.len())));
///         }
///         Ok(Decoded::Frame { frame: (*tag, &value[..length]), consumed: 3 + length })
///     }
/// }
///
/// #[derive(Default)]
/// struct Record(Vec<(u8, Vec<u8>)>);
///
/// impl FrameHandler<Tlv> for Record {
///     fn frame_received(&mut self, _: &mut FrameFlow, _: &TransportRef, (tag, value): (u8, &[u8])) {
///         self.0.push((tag, value.to_vec()));
///     }
/// }
///
/// let mut harness = ProtocolHarness::new(FrameReceiver::new(Tlv, Record::default()));
/// harness.receive_in_chunks_of(b"\x01\x00\x02hi\x02\x00\x00", 2);
/// assert_eq!(harness.protocol().handler().0, [(1, b"hi".to_vec()), (2, vec![])]);
/// ```
pub struct FrameReceiver<D, H> {
    decoder: D,
    handler: H,
    max_length: usize,
    framer: Framer,
}

impl<D: Decoder, H: FrameHandler<D>> FrameReceiver<D, H> {
    /// A receiver with the default maximum frame size.
    pub fn new(decoder: D, handler: H) -> FrameReceiver<D, H> {
        FrameReceiver {
            decoder,
            handler,
            max_length: DEFAULT_MAX_FRAME,
            framer: Framer::default(),
        }
    }

    /// Sets the most bytes a frame may take up in the stream.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// The most bytes a frame may take up in the stream.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Bytes held waiting for the rest of a frame: never more than the
    /// maximum; while paused, also what arrived since the pause.
    pub fn buffered(&self) -> usize {
        self.framer.held()
    }

    /// Stops delivering frames, those already received included, and
    /// stops reading from the transport (Twisted's `pauseProducing`).
    #[doc(alias = "pauseProducing")]
    pub fn pause_producing(&mut self, transport: &TransportRef) {
        self.framer.pause(transport);
    }

    /// Resumes after a pause (Twisted's `resumeProducing`): delivers the
    /// frames received meanwhile, in a loop, and resumes reading.
    #[doc(alias = "resumeProducing")]
    pub fn resume_producing(&mut self, transport: &TransportRef) {
        if self.framer.resume(transport) {
            self.data_received(transport, &[]);
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.framer.flow.paused
    }
}

impl<D: Decoder, H: FrameHandler<D>> Protocol for FrameReceiver<D, H> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        let max_length = self.max_length;
        let handler = &mut self.handler;
        self.framer.receive(
            transport,
            data,
            &mut Limited {
                decoder: &mut self.decoder,
                max_length,
            },
            |flow, transport, event| match event {
                Event::Frame(frame) => handler.frame_received(flow, transport, frame),
                Event::Fault(Fault::Malformed(reason)) => {
                    transport.lose_connection_with_error(reason);
                }
                Event::Fault(Fault::TooLong(_)) => {
                    // The size is not named: how much of an oversized
                    // frame was seen depends on how the input was split.
                    transport.lose_connection_with_error(format!(
                        "frame exceeds the maximum of {max_length} bytes"
                    ));
                }
            },
        );
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

#[cfg(test)]
mod position_tests {
    #[test]
    fn finds_the_first_occurrence_at_every_offset_and_length() {
        for len in 0..40 {
            for at in 0..=len {
                let mut data = vec![b'\n'; len];
                // Bytes next to the one sought (0x0a), high bytes and
                // zeros, which could fool a word-at-a-time search.
                for (i, b) in data.iter_mut().enumerate().take(at) {
                    *b = [0x0b, 0x09, 0x8a, 0xff, 0x00][i % 5];
                }
                let expected = (at < len).then_some(at);
                assert_eq!(super::position(&data, b'\n'), expected, "{len} {at}");
            }
        }
    }
}
