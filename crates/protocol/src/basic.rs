//! Framing: turning a byte stream into lines or length-delimited strings
//! (Twisted's `twisted.protocols.basic`).
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
//! the last three calling [`StringHandler::string_received`].
//!
//! All of them give the same frames however the input is split into
//! chunks, scan each byte once (a 1 MiB line arriving a byte at a time
//! costs no more per byte than a short one), and bound what they buffer:
//! a frame over the maximum length is refused, and by default the
//! connection is closed with [`CloseReason::ProtocolError`] naming the
//! fault. Malformed input is handled the same way.

use torsion_transport::{CloseReason, TransportRef};

use crate::protocol::Protocol;

/// Default maximum line length, in bytes (Twisted's `MAX_LENGTH`).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Default maximum string length for the length-prefixed and netstring
/// receivers, in bytes.
pub const DEFAULT_MAX_STRING: usize = 1 << 20;

// ----- lines ---------------------------------------------------------------

/// The settings and mode of a [`LineReceiver`], handed to its handler so it
/// can switch modes, change the delimiter, or send lines.
#[derive(Debug, Clone)]
pub struct LineState {
    delimiter: Vec<u8>,
    max_length: usize,
    raw: bool,
    /// Data to process in line mode after a switch back from raw mode.
    extra: Vec<u8>,
}

impl LineState {
    /// The delimiter between lines.
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// Sets the delimiter (it must not be empty).
    pub fn set_delimiter(&mut self, delimiter: &[u8]) {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        self.delimiter = delimiter.to_vec();
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
    /// [`LineHandler::raw_data_received`] as it arrives (Twisted's
    /// `setRawMode`).
    #[doc(alias = "setRawMode")]
    pub fn set_raw_mode(&mut self) {
        self.raw = true;
    }

    /// Switches back to line mode, from raw mode (Twisted's
    /// `setLineMode`). `extra` is data the raw handler received but did not
    /// consume: it is parsed as lines first.
    #[doc(alias = "setLineMode")]
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.raw = false;
        self.extra.extend_from_slice(extra);
    }

    /// True in raw mode.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Sends `line` followed by the delimiter, in one write (Twisted's
    /// `sendLine`).
    #[doc(alias = "sendLine")]
    pub fn send_line(&self, transport: &TransportRef, line: &[u8]) {
        transport.write_sequence(&[line, &self.delimiter]);
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

    /// Data arrived in raw mode (Twisted's `rawDataReceived`).
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
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for the delimiter.
    scanned: usize,
    /// The line being received is over the maximum: drop it up to the
    /// next delimiter.
    discarding: bool,
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
                extra: Vec::new(),
            },
            buffer: Vec::new(),
            scanned: 0,
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

    /// Bytes held waiting for the end of a line: never more than the
    /// maximum line length plus the delimiter.
    pub fn buffered(&self) -> usize {
        self.buffer.len() + self.state.extra.len()
    }

    /// Parses `data` (appended to what is buffered) in the current mode.
    fn feed(&mut self, transport: &TransportRef, data: &[u8]) {
        if self.state.raw {
            self.handler
                .raw_data_received(&mut self.state, transport, data);
            self.after_raw(transport);
            return;
        }
        self.buffer.extend_from_slice(data);
        self.parse_lines(transport);
    }

    /// After a raw-mode call: if the handler switched back to line mode,
    /// parse what it handed back.
    fn after_raw(&mut self, transport: &TransportRef) {
        if !self.state.raw && !self.state.extra.is_empty() {
            let extra = std::mem::take(&mut self.state.extra);
            self.feed(transport, &extra);
        }
    }

    fn parse_lines(&mut self, transport: &TransportRef) {
        let delimiter = self.state.delimiter.clone();
        let mut start = 0;
        loop {
            if transport.is_closing() {
                // Twisted stops delivering lines once the connection is
                // closing; so do we.
                self.buffer.clear();
                self.scanned = 0;
                return;
            }
            // Resume the search where the last one stopped, minus the bytes
            // a delimiter could straddle.
            let from = self.scanned.saturating_sub(delimiter.len() - 1).max(start);
            match find(&self.buffer[from..], &delimiter) {
                Some(at) => {
                    let end = from + at;
                    let next = end + delimiter.len();
                    self.scanned = next;
                    if std::mem::take(&mut self.discarding) {
                        // The tail of an overlong line.
                        start = next;
                        continue;
                    }
                    let length = end - start;
                    if length > self.state.max_length {
                        start = next;
                        self.handler
                            .line_length_exceeded(&mut self.state, transport, length);
                        continue;
                    }
                    let line = self.buffer[start..end].to_vec();
                    start = next;
                    self.handler
                        .line_received(&mut self.state, transport, &line);
                    if self.state.raw {
                        // The rest of the buffer is raw data now.
                        let rest = self.buffer.split_off(start);
                        self.buffer.clear();
                        self.scanned = 0;
                        if !rest.is_empty() {
                            self.handler
                                .raw_data_received(&mut self.state, transport, &rest);
                        }
                        self.after_raw(transport);
                        return;
                    }
                    if delimiter != self.state.delimiter {
                        // The handler changed the delimiter: rescan the rest.
                        self.buffer.drain(..start);
                        self.scanned = 0;
                        return self.parse_lines(transport);
                    }
                }
                None => {
                    self.buffer.drain(..start);
                    self.scanned = self.buffer.len();
                    if self.buffer.len() >= self.state.max_length + delimiter.len()
                        && !self.discarding
                    {
                        let length = self.buffer.len();
                        // Keep the last bytes: they may start a delimiter.
                        let keep = delimiter.len() - 1;
                        self.buffer.drain(..length - keep);
                        self.scanned = self.buffer.len();
                        self.discarding = true;
                        self.handler
                            .line_length_exceeded(&mut self.state, transport, length);
                    } else if self.discarding && self.buffer.len() >= delimiter.len() {
                        let keep = delimiter.len() - 1;
                        let length = self.buffer.len();
                        self.buffer.drain(..length - keep);
                        self.scanned = self.buffer.len();
                    }
                    return;
                }
            }
        }
    }
}

/// The index of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(at) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + at;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl<H: LineHandler> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(&mut self.state, transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.feed(transport, data);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.handler.connection_lost(reason);
    }
}

/// Twisted's `LineOnlyReceiver` is a `LineReceiver` without raw mode, kept
/// for speed; Torsion's [`LineReceiver`] costs nothing extra for raw mode,
/// so this is the same type. A handler that never switches modes is a line-
/// only receiver.
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

/// Reads netstrings: `<decimal length>:<bytes>,` (Twisted's
/// `NetstringReceiver`). Malformed input — a non-digit in the length, a
/// leading zero, a missing colon or comma — closes the connection with a
/// [`CloseReason::ProtocolError`] naming the fault.
pub struct NetstringReceiver<H> {
    handler: H,
    max_length: usize,
    buffer: Vec<u8>,
    /// The length of the string being read, once its prefix is parsed.
    pending: Option<usize>,
    failed: bool,
}

impl<H: StringHandler> NetstringReceiver<H> {
    /// A receiver with the default maximum length.
    pub fn new(handler: H) -> NetstringReceiver<H> {
        NetstringReceiver {
            handler,
            max_length: DEFAULT_MAX_STRING,
            buffer: Vec::new(),
            pending: None,
            failed: false,
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
    /// the maximum length plus its 20-digit length and two separators.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    fn fail(&mut self, transport: &TransportRef, fault: String) {
        self.failed = true;
        self.buffer = Vec::new();
        transport.lose_connection_with_error(fault);
    }

    fn parse(&mut self, transport: &TransportRef) {
        let mut start = 0;
        while !self.failed && !transport.is_closing() {
            let available = &self.buffer[start..];
            let length = match self.pending {
                Some(length) => length,
                None => {
                    // Digits of the length are at most 20 (u64::MAX).
                    // Only the first 21 bytes are examined, so the fault
                    // named is the same however the stream was split.
                    let Some(colon) = available.iter().take(21).position(|&b| b == b':') else {
                        if let Some(bad) = available.iter().take(21).find(|b| !b.is_ascii_digit()) {
                            return self.fail(
                                transport,
                                format!(
                                    "netstring length contains {:?}, not a digit",
                                    *bad as char
                                ),
                            );
                        }
                        if available.len() > 20 {
                            return self
                                .fail(transport, "netstring length has too many digits".into());
                        }
                        break;
                    };
                    let digits = &available[..colon];
                    if digits.is_empty() {
                        return self.fail(transport, "netstring length is empty".into());
                    }
                    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_digit()) {
                        return self.fail(
                            transport,
                            format!("netstring length contains {:?}, not a digit", *bad as char),
                        );
                    }
                    if digits.len() > 1 && digits[0] == b'0' {
                        return self.fail(transport, "netstring length has a leading zero".into());
                    }
                    // Only ASCII digits remain, so parsing fails only on
                    // overflow.
                    let Some(value) = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        return self
                            .fail(transport, "netstring length does not fit in 64 bits".into());
                    };
                    if value > self.max_length as u64 {
                        self.failed = true;
                        self.buffer = Vec::new();
                        self.handler
                            .length_limit_exceeded(transport, value, self.max_length);
                        return;
                    }
                    start += colon + 1;
                    self.pending = Some(value as usize);
                    value as usize
                }
            };
            let available = &self.buffer[start..];
            if available.len() < length + 1 {
                break;
            }
            if available[length] != b',' {
                return self.fail(
                    transport,
                    format!("netstring of {length} bytes is not followed by ','"),
                );
            }
            let data = available[..length].to_vec();
            start += length + 1;
            self.pending = None;
            self.handler.string_received(transport, &data);
        }
        if !self.failed {
            self.buffer.drain(..start.min(self.buffer.len()));
        }
    }
}

impl<H: StringHandler> Protocol for NetstringReceiver<H> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        if self.failed {
            return;
        }
        self.buffer.extend_from_slice(data);
        self.parse(transport);
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
pub struct PrefixedStringReceiver<H, const N: usize> {
    handler: H,
    max_length: usize,
    buffer: Vec<u8>,
    failed: bool,
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
            buffer: Vec::new(),
            failed: false,
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
    /// maximum length plus the prefix.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

impl<H: StringHandler, const N: usize> Protocol for PrefixedStringReceiver<H, N> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.handler.connection_made(transport);
    }

    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        if self.failed {
            return;
        }
        self.buffer.extend_from_slice(data);
        let mut start = 0;
        while !transport.is_closing() {
            let available = &self.buffer[start..];
            if available.len() < N {
                break;
            }
            let length = available[..N]
                .iter()
                .fold(0u64, |value, &byte| value << 8 | u64::from(byte));
            let max_length = self.max_length();
            if length > max_length as u64 {
                self.failed = true;
                self.buffer = Vec::new();
                self.handler
                    .length_limit_exceeded(transport, length, max_length);
                return;
            }
            let length = length as usize;
            // Compared without adding: a limit of `usize::MAX` and a prefix
            // of all ones must not overflow.
            if available.len() - N < length {
                break;
            }
            let data = available[N..N + length].to_vec();
            start += N + length;
            self.handler.string_received(transport, &data);
        }
        self.buffer.drain(..start.min(self.buffer.len()));
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
