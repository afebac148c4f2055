//! RESP2/RESP3 on the wire: parsing client requests, encoding replies, and parsing replies
//! back (for tests and client-side checks).
//!
//! Requests come in Redis' two forms, told apart by their first byte exactly as Redis does:
//! - multibulk (`*<n>\r\n$<len>\r\n<bytes>\r\n…`), binary safe;
//! - inline (anything else): one line of words ending in `\n` or `\r\n`, split with the rules
//!   of Redis' `sdssplitargs` (double quotes with `\n \r \t \b \a \\ \" \xHH` escapes, single
//!   quotes with `\'`, a closing quote followed by a blank or the end of the line).
//!
//! [`parse`] reads one request from the front of a buffer into a reusable [`Command`] whose
//! arguments point into that buffer (or, for unescaped inline arguments, into the command's
//! own scratch space). It keeps no state between calls: after `Ok(None)` the caller reads
//! more bytes and calls again with the grown buffer. Protocol errors carry Redis' own reply
//! texts; a Redis server replies with the error and closes the connection.
//!
//! Faithful to Redis (`processMultibulkBuffer`, `processInlineBuffer`), including the parts
//! that are lenient: the two bytes after a length line's `\r` and after a bulk argument's
//! data are skipped unchecked, as Redis does; an inline line ends at its first NUL byte
//! (Redis splits it as a C string); `*0` and `*-<n>` are empty commands.
//!
//! The reply encoders write straight into a `Vec<u8>`; [`Version`] picks RESP3's types or
//! their RESP2 stand-ins.

use std::fmt;
use std::io::Write as _;

use crate::decimal::Decimal;

/// Redis' `PROTO_INLINE_MAX_SIZE`: the longest inline request or length line.
const DEFAULT_MAX_INLINE: usize = 64 * 1024;

/// Size limits on requests, enforced while parsing so a peer cannot make the server buffer
/// without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest bulk argument, in bytes (Redis' `proto-max-bulk-len`, 512 MiB). Larger
    /// lengths are an [`ProtoError::InvalidBulkLength`].
    pub max_bulk: usize,
    /// The most arguments in a multibulk request (1024 × 1024). More is an
    /// [`ProtoError::InvalidMultibulkLength`]. Inline requests are bounded by
    /// `max_inline` instead, as in Redis.
    pub max_args: usize,
    /// The longest inline request line and the longest multibulk length line, in bytes (64
    /// KiB, Redis' `PROTO_INLINE_MAX_SIZE`).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline: DEFAULT_MAX_INLINE,
        }
    }
}

/// A protocol error. Request errors display as Redis' own reply texts; a server sends them
/// as `-ERR <text>` (see [`ProtoError::write_reply`]) and closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The `*<n>` count is not a number or exceeds [`Limits::max_args`].
    InvalidMultibulkLength,
    /// A multibulk argument does not start with `$`; carries the byte found instead.
    ExpectedDollar(u8),
    /// The `$<len>` length is not a number, negative, or exceeds [`Limits::max_bulk`].
    InvalidBulkLength,
    /// An inline request line is longer than [`Limits::max_inline`].
    TooBigInlineRequest,
    /// The `*<n>` line is longer than [`Limits::max_inline`] without a `\r`.
    TooBigMbulkCount,
    /// A `$<len>` line is longer than [`Limits::max_inline`] without a `\r`.
    TooBigBulkCount,
    /// An inline request has an unterminated quote, or a closing quote followed by
    /// something other than a blank.
    UnbalancedQuotes,
    /// A malformed reply, from [`parse_value`] only (not a Redis server text); carries why.
    InvalidReply(&'static str),
}

impl ProtoError {
    /// Appends the error reply a Redis server sends for this error: `-ERR <text>\r\n`, with
    /// the offending byte of [`ProtoError::ExpectedDollar`] written raw (`\r` and `\n`
    /// become spaces, as Redis' error replies do).
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        match self {
            ProtoError::ExpectedDollar(b) => {
                out.extend_from_slice(b"-ERR Protocol error: expected '$', got '");
                out.push(no_newline(*b));
                out.extend_from_slice(b"'\r\n");
            }
            other => {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "-ERR {other}\r\n");
            }
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ProtoError::InvalidMultibulkLength => "Protocol error: invalid multibulk length",
            ProtoError::ExpectedDollar(b) => {
                // Non-ASCII bytes show as the Latin-1 character of the same value.
                return write!(
                    f,
                    "Protocol error: expected '$', got '{}'",
                    char::from(no_newline(*b))
                );
            }
            ProtoError::InvalidBulkLength => "Protocol error: invalid bulk length",
            ProtoError::TooBigInlineRequest => "Protocol error: too big inline request",
            ProtoError::TooBigMbulkCount => "Protocol error: too big mbulk count string",
            ProtoError::TooBigBulkCount => "Protocol error: too big bulk count string",
            ProtoError::UnbalancedQuotes => "Protocol error: unbalanced quotes in request",
            ProtoError::InvalidReply(why) => return write!(f, "Protocol error: {why}"),
        };
        f.write_str(text)
    }
}

impl std::error::Error for ProtoError {}

/// `\r` and `\n` as spaces, as Redis writes them inside error replies.
fn no_newline(b: u8) -> u8 {
    if b == b'\r' || b == b'\n' {
        b' '
    } else {
        b
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Where one argument lives: a range of the parsed buffer, or of the command's scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    scratch: bool,
}

/// One parsed command: its arguments, borrowed from the read buffer where possible.
///
/// Arguments are ranges into the buffer given to [`parse`] (so read them with that same
/// buffer), or into the command's own scratch buffer for inline arguments that needed
/// unquoting. Both vectors keep their capacity across calls, so a connection that reuses
/// one `Command` parses without allocating once warmed up.
#[derive(Clone, Debug, Default)]
pub struct Command {
    spans: Vec<Span>,
    scratch: Vec<u8>,
}

impl Command {
    /// An empty command, ready to be filled by [`parse`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no arguments (an empty request, or nothing parsed).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the command name), `buf` being the buffer given to [`parse`].
    ///
    /// # Panics
    /// If `i >= self.len()`, or `buf` is shorter than the buffer the command was parsed from.
    pub fn arg<'a>(&'a self, buf: &'a [u8], i: usize) -> &'a [u8] {
        self.resolve(buf, self.spans[i])
    }

    /// Argument `i`, or `None` if there is no such argument or `buf` is too short for it.
    pub fn get<'a>(&'a self, buf: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let span = *self.spans.get(i)?;
        let from = if span.scratch { &self.scratch[..] } else { buf };
        from.get(span.start..span.end)
    }

    /// The arguments in order, `buf` being the buffer given to [`parse`].
    ///
    /// # Panics
    /// If `buf` is shorter than the buffer the command was parsed from.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans.iter().map(move |span| self.resolve(buf, *span))
    }

    fn resolve<'a>(&'a self, buf: &'a [u8], span: Span) -> &'a [u8] {
        if span.scratch {
            &self.scratch[span.start..span.end]
        } else {
            &buf[span.start..span.end]
        }
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.scratch.clear();
    }
}

/// Parses the first request in `buf` into `cmd`.
///
/// - `Ok(Some(consumed))`: `cmd` holds a whole command, which with its framing took the
///   first `consumed` bytes of `buf`. An empty request (an empty or blank inline line,
///   `*0`, `*-1`) gives `Some(consumed)` with `cmd` empty: skip it.
/// - `Ok(None)`: more bytes are needed; call again with the same bytes plus more.
/// - `Err`: a protocol error; reply with it and close the connection.
///
/// `cmd` is empty after `Ok(None)` and `Err`. One call runs in time linear in `buf.len()`
/// and never panics.
pub fn parse(buf: &[u8], limits: &Limits, cmd: &mut Command) -> Result<Option<usize>, ProtoError> {
    cmd.clear();
    let parsed = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, cmd),
        Some(_) => parse_inline(buf, limits, cmd),
    };
    if !matches!(parsed, Ok(Some(_))) {
        cmd.clear();
    }
    parsed
}

/// The length line starting at `buf[pos]`, as Redis reads it: up to the first `\r`, which
/// must be followed by one more byte (skipped unchecked). Returns the position of the `\r`
/// and of the line's end; `None` if incomplete; `too_big` if no `\r` comes within
/// `max_line` bytes.
fn length_line(
    buf: &[u8],
    pos: usize,
    max_line: usize,
    too_big: ProtoError,
) -> Result<Option<(usize, usize)>, ProtoError> {
    let rest = &buf[pos..];
    let window = rest.len().min(max_line.saturating_add(1));
    match rest[..window].iter().position(|&b| b == b'\r') {
        None if rest.len() > max_line => Err(too_big),
        None => Ok(None),
        Some(cr) if cr + 2 > rest.len() => Ok(None),
        Some(cr) => Ok(Some((pos + cr, pos + cr + 2))),
    }
}

/// Whether `n` is at most `limit`.
fn within(n: i64, limit: usize) -> bool {
    match u64::try_from(n) {
        Ok(n) => n <= u64::try_from(limit).unwrap_or(u64::MAX),
        Err(_) => true,
    }
}

fn parse_multibulk(
    buf: &[u8],
    limits: &Limits,
    cmd: &mut Command,
) -> Result<Option<usize>, ProtoError> {
    let Some((cr, mut pos)) = length_line(buf, 0, limits.max_inline, ProtoError::TooBigMbulkCount)?
    else {
        return Ok(None);
    };
    let count = match parse_i64(&buf[1..cr]) {
        Some(n) if within(n, limits.max_args) => n,
        _ => return Err(ProtoError::InvalidMultibulkLength),
    };
    let Ok(count) = usize::try_from(count) else {
        // `*0`, `*-1` and other non-positive counts: an empty command.
        return Ok(Some(pos));
    };
    cmd.spans.reserve(count.min(1024));
    for _ in 0..count {
        let Some((cr, next)) =
            length_line(buf, pos, limits.max_inline, ProtoError::TooBigBulkCount)?
        else {
            return Ok(None);
        };
        if buf[pos] != b'$' {
            return Err(ProtoError::ExpectedDollar(buf[pos]));
        }
        let len = match parse_i64(&buf[pos + 1..cr]) {
            Some(n) if n >= 0 && within(n, limits.max_bulk) => n,
            _ => return Err(ProtoError::InvalidBulkLength),
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| next.checked_add(len))
            .ok_or(ProtoError::InvalidBulkLength)?;
        // The data and its trailing `\r\n`, which Redis skips without checking.
        match end.checked_add(2) {
            Some(after) if after <= buf.len() => {
                cmd.spans.push(Span {
                    start: next,
                    end,
                    scratch: false,
                });
                pos = after;
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(pos))
}

fn parse_inline(
    buf: &[u8],
    limits: &Limits,
    cmd: &mut Command,
) -> Result<Option<usize>, ProtoError> {
    // The `\n` must come within `max_inline` bytes (a `\r` before it included), whatever
    // the chunking: a complete line longer than that is refused like a partial one.
    let window = buf.len().min(limits.max_inline.saturating_add(1));
    let Some(nl) = buf[..window].iter().position(|&b| b == b'\n') else {
        return if buf.len() > limits.max_inline {
            Err(ProtoError::TooBigInlineRequest)
        } else {
            Ok(None)
        };
    };
    let mut end = nl;
    if end > 0 && buf[end - 1] == b'\r' {
        end -= 1;
    }
    // Redis splits the line as a C string: it ends at the first NUL.
    let end = buf[..end].iter().position(|&b| b == 0).unwrap_or(end);
    split_args(buf, end, cmd)?;
    Ok(Some(nl + 1))
}

/// C's `isspace` in the C locale.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `buf[..end]` (free of NULs) into `cmd`'s arguments with `sdssplitargs`' rules.
/// Arguments without quotes are borrowed from `buf`; the others are unescaped into scratch.
fn split_args(buf: &[u8], end: usize, cmd: &mut Command) -> Result<(), ProtoError> {
    let line = &buf[..end];
    // The byte at `i`, with C's terminating NUL past the end.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < end && is_blank(line[p]) {
            p += 1;
        }
        if p >= end {
            return Ok(());
        }
        let start = p;
        // Where the argument starts in scratch, once it has needed unquoting.
        let mut owned: Option<usize> = None;
        let (mut in_double, mut in_single) = (false, false);
        let span = loop {
            let c = at(p);
            if in_double {
                let hex = (at(p + 1) == b'x')
                    .then(|| Some(hex_value(at(p + 2))? * 16 + hex_value(at(p + 3))?))
                    .flatten();
                if let (b'\\', Some(byte)) = (c, hex) {
                    cmd.scratch.push(byte);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cmd.scratch.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_blank(at(p + 1)) {
                        return Err(ProtoError::UnbalancedQuotes);
                    }
                    p += 1;
                    break None;
                } else if c == 0 {
                    return Err(ProtoError::UnbalancedQuotes);
                } else {
                    cmd.scratch.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cmd.scratch.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_blank(at(p + 1)) {
                        return Err(ProtoError::UnbalancedQuotes);
                    }
                    p += 1;
                    break None;
                } else if c == 0 {
                    return Err(ProtoError::UnbalancedQuotes);
                } else {
                    cmd.scratch.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        let span = Span {
                            start,
                            end: p,
                            scratch: false,
                        };
                        if c != 0 {
                            p += 1;
                        }
                        break Some(span);
                    }
                    b'"' | b'\'' => {
                        if owned.is_none() {
                            owned = Some(cmd.scratch.len());
                            cmd.scratch.extend_from_slice(&line[start..p]);
                        }
                        in_double = c == b'"';
                        in_single = c == b'\'';
                    }
                    _ => {
                        if owned.is_some() {
                            cmd.scratch.push(c);
                        }
                    }
                }
            }
            p += 1;
        };
        let span = match (owned, span) {
            (Some(from), _) => Span {
                start: from,
                end: cmd.scratch.len(),
                scratch: true,
            },
            (None, Some(span)) => span,
            // Quoted arguments always own their bytes.
            (None, None) => Span {
                start: cmd.scratch.len(),
                end: cmd.scratch.len(),
                scratch: true,
            },
        };
        cmd.spans.push(span);
    }
}

/// Parses a whole argument as a signed 64-bit integer with Redis' `string2ll` strictness:
/// optional `-`, then digits with no leading zero (`0` alone excepted), no `+`, no blanks,
/// at most 20 bytes, in range; `-0` is refused.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    if arg.is_empty() || arg.len() > 20 {
        return None;
    }
    if arg == b"0" {
        return Some(0);
    }
    let (negative, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, arg),
    };
    let (first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Whether the argument `arg` equals the command or option name `name`, ignoring ASCII case.
pub fn eq_ignore_case(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// The protocol version a connection speaks (chosen with `HELLO`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    /// RESP2: maps, sets and pushes as arrays, booleans as integers, doubles and verbatim
    /// strings as bulk strings, both nulls distinct (`$-1`, `*-1`).
    Resp2,
    /// RESP3: the typed replies.
    Resp3,
}

const CRLF: &[u8] = b"\r\n";

/// Appends the decimal digits of `v` without allocating.
fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(Decimal::of_u64(v).as_bytes());
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(Decimal::of(v).as_bytes());
}

/// `<kind><n>\r\n`.
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    push_u64(out, n as u64);
    out.extend_from_slice(CRLF);
}

/// `<kind><text>\r\n`, with any `\r` or `\n` in `text` turned into a space.
fn line(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(text.bytes().map(no_newline));
    out.extend_from_slice(CRLF);
}

/// A simple string, `+OK\r\n`; any `\r` or `\n` in `s` becomes a space.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    line(out, b'+', s);
}

/// An error reply, `-<text>\r\n`. `text` is the whole message with its code, as in
/// `ERR unknown command 'foo'` or `WRONGTYPE …`; any `\r` or `\n` in it becomes a space.
pub fn error(out: &mut Vec<u8>, text: &str) {
    line(out, b'-', text);
}

/// An integer, `:<v>\r\n`.
pub fn integer(out: &mut Vec<u8>, v: i64) {
    out.push(b':');
    push_i64(out, v);
    out.extend_from_slice(CRLF);
}

/// A bulk string, `$<len>\r\n<data>\r\n`.
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    header(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

/// A null (a missing bulk string): `$-1\r\n` in RESP2, `_\r\n` in RESP3.
pub fn null(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(match version {
        Version::Resp2 => b"$-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

/// A null array (a missing aggregate): `*-1\r\n` in RESP2, `_\r\n` in RESP3.
pub fn null_array(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(match version {
        Version::Resp2 => b"*-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

/// The header of an array of `len` replies, `*<len>\r\n`; the replies follow.
pub fn array(out: &mut Vec<u8>, len: usize) {
    header(out, b'*', len);
}

/// The header of a map of `pairs` key/value pairs: `%<pairs>` in RESP3, an array of
/// `2 × pairs` in RESP2. Each key is followed by its value.
pub fn map(out: &mut Vec<u8>, version: Version, pairs: usize) {
    match version {
        Version::Resp2 => header(out, b'*', pairs.saturating_mul(2)),
        Version::Resp3 => header(out, b'%', pairs),
    }
}

/// The header of a set of `len` replies: `~<len>` in RESP3, an array in RESP2.
pub fn set(out: &mut Vec<u8>, version: Version, len: usize) {
    match version {
        Version::Resp2 => header(out, b'*', len),
        Version::Resp3 => header(out, b'~', len),
    }
}

/// The header of an out-of-band push of `len` replies (pub/sub messages, invalidations):
/// `><len>` in RESP3, an array in RESP2.
pub fn push(out: &mut Vec<u8>, version: Version, len: usize) {
    match version {
        Version::Resp2 => header(out, b'*', len),
        Version::Resp3 => header(out, b'>', len),
    }
}

/// A boolean: `#t`/`#f` in RESP3, the integer `1`/`0` in RESP2.
pub fn boolean(out: &mut Vec<u8>, version: Version, b: bool) {
    out.extend_from_slice(match (version, b) {
        (Version::Resp2, true) => b":1\r\n",
        (Version::Resp2, false) => b":0\r\n",
        (Version::Resp3, true) => b"#t\r\n",
        (Version::Resp3, false) => b"#f\r\n",
    });
}

/// A small stack buffer for formatting a double without allocating.
struct DoubleText {
    buf: [u8; 64],
    len: usize,
}

impl fmt::Write for DoubleText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `d` as Redis writes doubles: `inf`, `-inf`, `nan`, integral values without a fraction,
/// others in their shortest round-tripping form (exponent notation when very large or
/// small).
fn double_text(d: f64) -> DoubleText {
    use fmt::Write as _;
    let mut text = DoubleText {
        buf: [0; 64],
        len: 0,
    };
    let plain = d == 0.0 || (1e-5..1e17).contains(&d.abs());
    let written = if d.is_nan() {
        text.write_str("nan")
    } else if d.is_infinite() {
        text.write_str(if d > 0.0 { "inf" } else { "-inf" })
    } else if plain {
        write!(text, "{d}")
    } else {
        write!(text, "{d:e}")
    };
    if written.is_err() {
        // Unreachable: every form above fits in 64 bytes. Fall back to the shortest.
        text.len = 0;
        let _ = write!(text, "{d:e}");
    }
    text
}

/// A double: `,<d>` in RESP3 (`inf`, `-inf`, `nan` included), the same text as a bulk
/// string in RESP2.
pub fn double(out: &mut Vec<u8>, version: Version, d: f64) {
    let text = double_text(d);
    let text = &text.buf[..text.len];
    match version {
        Version::Resp2 => bulk(out, text),
        Version::Resp3 => {
            out.push(b',');
            out.extend_from_slice(text);
            out.extend_from_slice(CRLF);
        }
    }
}

/// A verbatim string: `=<len>\r\n<format>:<data>\r\n` in RESP3 (`format` is `b"txt"` or
/// `b"mkd"`), a bulk string of `data` alone in RESP2.
pub fn verbatim(out: &mut Vec<u8>, version: Version, format: &[u8; 3], data: &[u8]) {
    match version {
        Version::Resp2 => bulk(out, data),
        Version::Resp3 => {
            header(out, b'=', data.len() + 4);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(data);
            out.extend_from_slice(CRLF);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing replies
// ---------------------------------------------------------------------------------------

/// The deepest nesting of aggregates [`parse_value`] accepts.
pub const MAX_VALUE_DEPTH: usize = 64;

/// A reply, as [`parse_value`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+…`
    Simple(Vec<u8>),
    /// `-…`, and RESP3's blob error `!…`.
    Error(Vec<u8>),
    /// `:…`
    Integer(i64),
    /// `$…`; `None` for RESP2's null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for RESP2's null array `*-1`.
    Array(Option<Vec<Value>>),
    /// RESP3's `_`.
    Null,
    /// RESP3's `%…`, pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// RESP3's `~…`, elements in wire order.
    Set(Vec<Value>),
    /// RESP3's `>…`.
    Push(Vec<Value>),
    /// RESP3's `#t` / `#f`.
    Boolean(bool),
    /// RESP3's `,…`.
    Double(f64),
    /// RESP3's `=…`: the three-byte format (`txt`, `mkd`) and the text after its `:`.
    Verbatim([u8; 3], Vec<u8>),
    /// RESP3's `(…`, the digits as sent.
    BigNumber(Vec<u8>),
}

/// Parses the first reply in `buf`: `Ok(Some((value, consumed)))`, `Ok(None)` if more bytes
/// are needed, `Err` if malformed. Strict where [`parse`] is lenient: lines must end in
/// `\r\n`, bulk data must be followed by `\r\n`. RESP3 attributes (`|…`) are read and
/// dropped; streamed strings and aggregates (`$?`, `*?`) are refused; aggregates nest at
/// most [`MAX_VALUE_DEPTH`] deep. Never panics.
pub fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtoError> {
    value_at(buf, 0, 0)
}

type Parsed<T> = Result<Option<(T, usize)>, ProtoError>;

fn bad(why: &'static str) -> ProtoError {
    ProtoError::InvalidReply(why)
}

/// The line starting at `buf[pos]` up to its `\r\n`, and the position after it.
fn reply_line(buf: &[u8], pos: usize) -> Parsed<&[u8]> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => Ok(None),
        Some(i) if rest[i] == b'\n' => Err(bad("line ends without '\\r'")),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], pos + i + 2))),
            Some(_) => Err(bad("'\\r' not followed by '\\n'")),
        },
    }
}

/// An aggregate's or blob's length: `-1` (null) allowed only if `nullable`.
fn reply_len(line: &[u8], nullable: bool) -> Result<Option<usize>, ProtoError> {
    if line == b"?" {
        return Err(bad("streamed replies are not supported"));
    }
    match parse_i64(line) {
        Some(-1) if nullable => Ok(None),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| bad("invalid length")),
        None => Err(bad("invalid length")),
    }
}

fn value_at(buf: &[u8], mut pos: usize, depth: usize) -> Parsed<Value> {
    if depth > MAX_VALUE_DEPTH {
        return Err(bad("replies nested too deep"));
    }
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        if !b"+-:$*_%~>#,=(!|".contains(&kind) {
            return Err(bad("unknown reply type byte"));
        }
        let Some((line, next)) = reply_line(buf, pos + 1)? else {
            return Ok(None);
        };
        let value = match kind {
            b'+' => Value::Simple(line.to_vec()),
            b'-' => Value::Error(line.to_vec()),
            b':' => {
                let digits = match line.split_first() {
                    Some((b'+', rest)) if rest.first() != Some(&b'-') => rest,
                    _ => line,
                };
                Value::Integer(parse_i64(digits).ok_or(bad("invalid integer"))?)
            }
            b'_' if line.is_empty() => Value::Null,
            b'_' => return Err(bad("invalid null")),
            b'#' => match line {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(bad("invalid boolean")),
            },
            b',' => {
                let text = std::str::from_utf8(line).map_err(|_| bad("invalid double"))?;
                Value::Double(text.parse().map_err(|_| bad("invalid double"))?)
            }
            b'(' => {
                let digits = line.strip_prefix(b"-").unwrap_or(line);
                let digits = digits.strip_prefix(b"+").unwrap_or(digits);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(bad("invalid big number"));
                }
                Value::BigNumber(line.to_vec())
            }
            b'$' | b'!' | b'=' => {
                let Some(len) = reply_len(line, kind == b'$')? else {
                    return Ok(Some((Value::Bulk(None), next)));
                };
                let Some(end) = next.checked_add(len) else {
                    return Err(bad("invalid length"));
                };
                let Some(data) = buf.get(next..end) else {
                    return Ok(None);
                };
                match buf.get(end..end + 2) {
                    None if buf.len() <= end + 1 => return Ok(None),
                    Some(CRLF) => {}
                    _ => return Err(bad("bulk data not followed by '\\r\\n'")),
                }
                let value = match kind {
                    b'$' => Value::Bulk(Some(data.to_vec())),
                    b'!' => Value::Error(data.to_vec()),
                    _ => match data {
                        [a, b, c, b':', text @ ..] => Value::Verbatim([*a, *b, *c], text.to_vec()),
                        _ => return Err(bad("invalid verbatim string")),
                    },
                };
                return Ok(Some((value, end + 2)));
            }
            // Aggregates: `*`, `~`, `>`, `%` and attributes `|`.
            _ => {
                let Some(len) = reply_len(line, kind == b'*')? else {
                    return Ok(Some((Value::Array(None), next)));
                };
                let items = if matches!(kind, b'%' | b'|') {
                    len.checked_mul(2).ok_or(bad("invalid length"))?
                } else {
                    len
                };
                // Every reply takes at least three bytes: never reserve more than the
                // buffer could hold, nor much at each of the nesting levels.
                let mut elements = Vec::with_capacity(items.min((buf.len() - next) / 3).min(1024));
                let mut at = next;
                for _ in 0..items {
                    let Some((element, after)) = value_at(buf, at, depth + 1)? else {
                        return Ok(None);
                    };
                    elements.push(element);
                    at = after;
                }
                let value = match kind {
                    b'*' => Value::Array(Some(elements)),
                    b'~' => Value::Set(elements),
                    b'>' => Value::Push(elements),
                    b'%' => Value::Map(pairs(elements)),
                    _ => {
                        // An attribute annotates the reply that follows it: drop it and
                        // read that reply.
                        pos = at;
                        continue;
                    }
                };
                return Ok(Some((value, at)));
            }
        };
        return Ok(Some((value, next)));
    }
}

fn pairs(elements: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(elements.len() / 2);
    let mut it = elements.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Parses `input` as one command with default limits: the arguments and bytes consumed.
    fn one(input: &[u8]) -> Parsed<Vec<Vec<u8>>> {
        one_with(input, &Limits::default())
    }

    fn one_with(input: &[u8], limits: &Limits) -> Parsed<Vec<Vec<u8>>> {
        let mut cmd = Command::new();
        let parsed = parse(input, limits, &mut cmd)?;
        Ok(parsed.map(|n| (cmd.args(input).map(<[u8]>::to_vec).collect(), n)))
    }

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn multibulk(list: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        array(&mut out, list.len());
        for a in list {
            bulk(&mut out, a);
        }
        out
    }

    /// Every command in `stream`, parsed one after another (empty ones skipped).
    fn all(stream: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtoError> {
        let mut cmd = Command::new();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(n) = parse(&stream[pos..], &Limits::default(), &mut cmd)? {
            assert!(n > 0 && n <= stream.len() - pos);
            if !cmd.is_empty() {
                out.push(cmd.args(&stream[pos..]).map(<[u8]>::to_vec).collect());
            }
            pos += n;
        }
        assert_eq!(pos, stream.len(), "unparsed tail");
        Ok(out)
    }

    #[test]
    fn multibulk_command() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let (got, n) = one(input).unwrap().unwrap();
        assert_eq!(got, args(&["SET", "key", "value"]));
        assert_eq!(n, input.len());
        // Trailing bytes are left for the next call.
        let mut more = input.to_vec();
        more.extend_from_slice(b"*1\r\n$4\r\nPI");
        assert_eq!(one(&more).unwrap().unwrap().1, input.len());
        // An empty argument.
        assert_eq!(
            one(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n").unwrap().unwrap().0,
            args(&["ECHO", ""])
        );
    }

    #[test]
    fn command_accessors() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut cmd = Command::new();
        assert!(cmd.is_empty());
        assert_eq!(
            parse(input, &Limits::default(), &mut cmd),
            Ok(Some(input.len()))
        );
        assert_eq!(cmd.len(), 2);
        assert!(!cmd.is_empty());
        assert_eq!(cmd.arg(input, 0), b"GET");
        assert!(eq_ignore_case(cmd.arg(input, 0), "get"));
        assert!(!eq_ignore_case(cmd.arg(input, 0), "gets"));
        assert_eq!(cmd.get(input, 1), Some(&b"k"[..]));
        assert_eq!(cmd.get(input, 2), None);
        assert_eq!(cmd.get(b"short", 1), None);
        // A failed parse leaves the command empty.
        assert_eq!(
            parse(b"*2\r\n$3\r\nGE", &Limits::default(), &mut cmd),
            Ok(None)
        );
        assert!(cmd.is_empty());
        assert!(parse(b"*x\r\n", &Limits::default(), &mut cmd).is_err());
        assert!(cmd.is_empty());
    }

    #[test]
    fn command_is_reused_without_reallocating() {
        let mut cmd = Command::new();
        let inline = b"SET \"a b\" 'c d' e\r\n";
        let big = multibulk(&[&b"MSET"[..]; 40]);
        assert!(parse(&big, &Limits::default(), &mut cmd).unwrap().is_some());
        assert!(parse(inline, &Limits::default(), &mut cmd)
            .unwrap()
            .is_some());
        let (spans, scratch) = (cmd.spans.capacity(), cmd.scratch.capacity());
        for _ in 0..100 {
            assert!(parse(inline, &Limits::default(), &mut cmd)
                .unwrap()
                .is_some());
            assert!(parse(&big, &Limits::default(), &mut cmd).unwrap().is_some());
        }
        assert_eq!(
            (cmd.spans.capacity(), cmd.scratch.capacity()),
            (spans, scratch)
        );
    }

    #[test]
    fn inline_commands() {
        assert_eq!(one(b"PING\r\n").unwrap(), Some((args(&["PING"]), 6)));
        assert_eq!(one(b"PING\n").unwrap(), Some((args(&["PING"]), 5)));
        assert_eq!(
            one(b"  SET\tkey   value \r\n").unwrap().unwrap().0,
            args(&["SET", "key", "value"])
        );
        // A lone `\r` inside the line separates words; only the one before `\n` is dropped.
        assert_eq!(one(b"a\rb\r\r\n").unwrap().unwrap().0, args(&["a", "b"]));
        // Vertical tab and form feed are skipped between words but do not end one.
        assert_eq!(
            one(b"\x0ba\x0bb c\n").unwrap().unwrap().0,
            args(&["a\x0bb", "c"])
        );
        // The line ends at its first NUL, as Redis splits it as a C string.
        assert_eq!(
            one(b"GET a\0b c\r\n").unwrap(),
            Some((args(&["GET", "a"]), 11))
        );
        // Waiting for the end of the line.
        assert_eq!(one(b"PING").unwrap(), None);
        assert_eq!(one(b"PING\r").unwrap(), None);
        // Non-ASCII bytes pass through.
        assert_eq!(one(b"SET k \xff\xfe\n").unwrap().unwrap().0[2], b"\xff\xfe");
    }

    #[test]
    fn inline_quoting() {
        let q = |line: &[u8]| one(line).unwrap().unwrap().0;
        assert_eq!(q(b"SET \"a b\" 'c d'\r\n"), args(&["SET", "a b", "c d"]));
        assert_eq!(q(b"ECHO \"\\x41\"\n"), args(&["ECHO", "A"]));
        assert_eq!(q(b"ECHO \"\\x4a\\x4A\"\n"), args(&["ECHO", "JJ"]));
        assert_eq!(q(b"ECHO 'it\\'s'\n"), args(&["ECHO", "it's"]));
        assert_eq!(
            q(b"ECHO \"a\\nb\\rc\\td\\be\\af\\\\g\\\"h\"\n")[1],
            b"a\nb\rc\td\x08e\x07f\\g\"h"
        );
        // Unknown escapes keep the character; `\x` without two hex digits is just `x`.
        assert_eq!(q(b"ECHO \"\\q\\xZZ\\x4\"\n")[1], b"qxZZx4");
        assert_eq!(q(b"ECHO \"\\x00\\xff\"\n")[1], b"\x00\xff");
        // Single quotes keep backslashes other than before a quote.
        assert_eq!(q(b"ECHO 'a\\nb'\n")[1], b"a\\nb");
        // A quote may start in the middle of a word, which then ends with it.
        assert_eq!(q(b"ECHO foo\"bar baz\"\n"), args(&["ECHO", "foobar baz"]));
        // Empty quoted arguments are kept.
        assert_eq!(q(b"SET k \"\"\n"), args(&["SET", "k", ""]));
        assert_eq!(q(b"SET k ''\n"), args(&["SET", "k", ""]));
        // Quotes end before a blank or the end of the line.
        assert_eq!(q(b"\"a\"\t'b'\n"), args(&["a", "b"]));
        assert_eq!(q(b"\"a\"\x0b'b'\n"), args(&["a", "b"]));
        // Borrowed and unescaped arguments mix.
        assert_eq!(q(b"a \"b\" c 'd' e\n"), args(&["a", "b", "c", "d", "e"]));
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for line in [
            &b"ECHO \"abc\n"[..],
            b"ECHO 'abc\n",
            b"ECHO \"a\"b\n",
            b"ECHO 'a'b\n",
            b"ECHO \"abc\\\"\n",
            b"ECHO \"abc\\\n",
            b"ECHO 'it\\'\n",
            b"\"\n",
            b"ECHO \"a\0\"\n",
        ] {
            assert_eq!(
                one(line),
                Err(ProtoError::UnbalancedQuotes),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn empty_requests_are_consumed_and_skipped() {
        for (input, n) in [
            (&b"\r\n"[..], 2),
            (b"\n", 1),
            (b"   \t \r\n", 7),
            (b"*0\r\n", 4),
            (b"*-1\r\n", 5),
            (b"*-7\r\n", 5),
            (b"\0junk\n", 6),
        ] {
            assert_eq!(one(input).unwrap(), Some((vec![], n)), "{input:?}");
        }
    }

    #[test]
    fn pipelined_commands() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&multibulk(&[b"SET", b"k", b"v"]));
        stream.extend_from_slice(b"GET k\r\n");
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(b"*0\r\n");
        stream.extend_from_slice(&multibulk(&[b"ECHO", b"a\r\nb"]));
        stream.extend_from_slice(b"ECHO \"x y\"\n");
        stream.extend_from_slice(&multibulk(&[b"PING"]));
        let expected = vec![
            args(&["SET", "k", "v"]),
            args(&["GET", "k"]),
            args(&["ECHO", "a\r\nb"]),
            args(&["ECHO", "x y"]),
            args(&["PING"]),
        ];
        assert_eq!(all(&stream).unwrap(), expected);

        // Fed a byte at a time into a growing buffer, the same commands come out.
        let mut cmd = Command::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &stream {
            buf.push(b);
            while let Some(n) = parse(&buf, &Limits::default(), &mut cmd).unwrap() {
                if !cmd.is_empty() {
                    got.push(cmd.args(&buf).map(<[u8]>::to_vec).collect::<Vec<_>>());
                }
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, expected);
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        let commands: Vec<Vec<u8>> = vec![
            multibulk(&[b"SET", b"key", b"value"]),
            multibulk(&[b"ECHO", b"\r\n\r\n", b""]),
            multibulk(&[b"PING"]),
            b"*0\r\n".to_vec(),
            b"SET \"a b\" 'c'\r\n".to_vec(),
            b"PING\n".to_vec(),
            b"\r\n".to_vec(),
        ];
        for command in &commands {
            let mut cmd = Command::new();
            for end in 0..command.len() {
                assert_eq!(
                    parse(&command[..end], &Limits::default(), &mut cmd),
                    Ok(None),
                    "{:?}",
                    String::from_utf8_lossy(&command[..end])
                );
            }
            assert_eq!(
                parse(command, &Limits::default(), &mut cmd),
                Ok(Some(command.len()))
            );
        }
    }

    #[test]
    fn binary_safe_bulk_arguments() {
        let value: Vec<u8> = (0..=255u8).chain(*b"\r\n*1\r\n$3\r\n").collect();
        let input = multibulk(&[b"SET", b"\r\n", &value]);
        let (got, n) = one(&input).unwrap().unwrap();
        assert_eq!(got, vec![b"SET".to_vec(), b"\r\n".to_vec(), value]);
        assert_eq!(n, input.len());
    }

    #[test]
    fn redis_leniency_after_lengths_and_data() {
        // Redis skips the byte after a length line's `\r` and the two after bulk data unchecked.
        assert_eq!(
            one(b"*1\rX$4\r\nPING\r\n").unwrap().unwrap().0,
            args(&["PING"])
        );
        assert_eq!(
            one(b"*1\r\n$4\r\nPINGxy").unwrap(),
            Some((args(&["PING"]), 14))
        );
        // A line feed before the `\r` makes the count unreadable.
        assert_eq!(
            one(b"*1\n$4\r\nPING\r\n"),
            Err(ProtoError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn protocol_errors_with_redis_texts() {
        let cases: Vec<(&[u8], ProtoError, &str)> = vec![
            (
                b"*x\r\n",
                ProtoError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*\r\n",
                ProtoError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*01\r\n",
                ProtoError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*-0\r\n",
                ProtoError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*+1\r\n",
                ProtoError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*1\r\nX\r\n",
                ProtoError::ExpectedDollar(b'X'),
                "Protocol error: expected '$', got 'X'",
            ),
            (
                b"*1\r\n:1\r\n",
                ProtoError::ExpectedDollar(b':'),
                "Protocol error: expected '$', got ':'",
            ),
            (
                b"*1\r\n\r\n",
                ProtoError::ExpectedDollar(b'\r'),
                "Protocol error: expected '$', got ' '",
            ),
            (
                b"*1\r\n$x\r\n",
                ProtoError::InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$-1\r\n",
                ProtoError::InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$\r\n",
                ProtoError::InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$99999999999999999999\r\n",
                ProtoError::InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"SET \"a\n",
                ProtoError::UnbalancedQuotes,
                "Protocol error: unbalanced quotes in request",
            ),
        ];
        for (input, err, text) in cases {
            assert_eq!(one(input), Err(err), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(err.to_string(), text);
            let mut reply = Vec::new();
            err.write_reply(&mut reply);
            assert_eq!(reply, format!("-ERR {text}\r\n").into_bytes());
        }
        // The remaining texts.
        assert_eq!(
            ProtoError::TooBigInlineRequest.to_string(),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            ProtoError::TooBigMbulkCount.to_string(),
            "Protocol error: too big mbulk count string"
        );
        assert_eq!(
            ProtoError::TooBigBulkCount.to_string(),
            "Protocol error: too big bulk count string"
        );
        // A non-ASCII byte goes on the wire raw.
        let mut reply = Vec::new();
        ProtoError::ExpectedDollar(0xff).write_reply(&mut reply);
        assert_eq!(reply, b"-ERR Protocol error: expected '$', got '\xff'\r\n");
        // The error is a std error.
        let boxed: Box<dyn std::error::Error> = Box::new(ProtoError::InvalidBulkLength);
        assert_eq!(boxed.to_string(), "Protocol error: invalid bulk length");
    }

    #[test]
    fn limits_on_bulk_and_arg_count() {
        let limits = Limits {
            max_bulk: 10,
            max_args: 3,
            ..Limits::default()
        };
        assert!(one_with(&multibulk(&[b"0123456789"]), &limits)
            .unwrap()
            .is_some());
        assert_eq!(
            one_with(b"*1\r\n$11\r\n", &limits),
            Err(ProtoError::InvalidBulkLength)
        );
        assert!(one_with(&multibulk(&[b"a", b"b", b"c"]), &limits)
            .unwrap()
            .is_some());
        assert_eq!(
            one_with(b"*4\r\n", &limits),
            Err(ProtoError::InvalidMultibulkLength)
        );
        // The defaults: Redis' 512 MiB and 1024 × 1024.
        let defaults = Limits::default();
        assert_eq!(defaults.max_bulk, 512 * 1024 * 1024);
        assert_eq!(one(b"*1\r\n$536870912\r\n").unwrap(), None);
        assert_eq!(
            one(b"*1\r\n$536870913\r\n"),
            Err(ProtoError::InvalidBulkLength)
        );
        assert_eq!(one(b"*1048576\r\n").unwrap(), None);
        assert_eq!(
            one(b"*1048577\r\n"),
            Err(ProtoError::InvalidMultibulkLength)
        );
        assert_eq!(
            one(b"*9223372036854775807\r\n"),
            Err(ProtoError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn limits_on_lines() {
        let limits = Limits {
            max_inline: 16,
            ..Limits::default()
        };
        // Inline: the `\n` must come within 16 bytes (a `\r` before it included).
        let ok = b"ECHO 0123456789\r\n"; // 16 bytes before the `\n`
        assert!(one_with(ok, &limits).unwrap().is_some());
        assert_eq!(one_with(&ok[..16], &limits).unwrap(), None);
        assert_eq!(
            one_with(b"ECHO 01234567890\r\n", &limits),
            Err(ProtoError::TooBigInlineRequest)
        );
        assert_eq!(
            one_with(b"ECHO 01234567890\r", &limits),
            Err(ProtoError::TooBigInlineRequest)
        );
        assert_eq!(
            one_with(&[b'a'; 17], &limits),
            Err(ProtoError::TooBigInlineRequest)
        );
        // Length lines without a `\r` within the limit.
        let mut count = b"*".to_vec();
        count.extend_from_slice(&[b'1'; 15]);
        assert_eq!(one_with(&count, &limits).unwrap(), None);
        count.push(b'1');
        assert_eq!(one_with(&count, &limits), Err(ProtoError::TooBigMbulkCount));
        let mut len = b"*1\r\n$".to_vec();
        len.extend_from_slice(&[b'1'; 15]);
        assert_eq!(one_with(&len, &limits).unwrap(), None);
        len.push(b'1');
        assert_eq!(one_with(&len, &limits), Err(ProtoError::TooBigBulkCount));
        // A complete overlong length line is no number.
        assert_eq!(
            one(b"*000000000000000000001\r\n"),
            Err(ProtoError::InvalidMultibulkLength)
        );
        // The default line limit is 64 KiB.
        let mut long = vec![b'a'; 64 * 1024];
        assert_eq!(one(&long).unwrap(), None);
        long.push(b'a');
        assert_eq!(one(&long), Err(ProtoError::TooBigInlineRequest));
        let mut long = b"*".to_vec();
        long.resize(64 * 1024 + 1, b'1');
        assert_eq!(one(&long), Err(ProtoError::TooBigMbulkCount));
    }

    #[test]
    fn large_requests_parse_in_one_linear_pass() {
        let arg_list: Vec<Vec<u8>> = (0..100_000).map(|i| i.to_string().into_bytes()).collect();
        let refs: Vec<&[u8]> = arg_list.iter().map(Vec::as_slice).collect();
        let input = multibulk(&refs);
        let (got, n) = one(&input).unwrap().unwrap();
        assert_eq!(n, input.len());
        assert_eq!(got, arg_list);
        let big = vec![b'x'; 8 * 1024 * 1024];
        let input = multibulk(&[b"SET", b"k", &big]);
        assert_eq!(one(&input).unwrap().unwrap().0[2].len(), big.len());
        assert_eq!(one(&input[..input.len() - 1]).unwrap(), None);
    }

    #[test]
    fn parse_i64_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"7"), Some(7));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"1234567890"), Some(1_234_567_890));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"18446744073709551615"), None);
        assert_eq!(parse_i64(b"18446744073709551616"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
        assert_eq!(parse_i64(b"-0000000000000000001"), None);
        assert_eq!(parse_i64(b"100000000000000000000"), None);
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"00",
            b"-0",
            b"-01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"0x10",
            b"1.0",
            b"--1",
            b"1-",
            b"\x001",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Encodes with `write`, checks the exact bytes, and parses them back.
    fn round_trip(write: impl Fn(&mut Vec<u8>), wire: &[u8], value: Value) {
        let mut out = Vec::new();
        write(&mut out);
        assert_eq!(out, wire, "{:?}", String::from_utf8_lossy(&out));
        assert_eq!(parse_value(&out), Ok(Some((value, out.len()))));
        for end in 0..out.len() {
            assert_eq!(parse_value(&out[..end]), Ok(None), "prefix {end}");
        }
    }

    #[test]
    fn scalar_encoders_round_trip() {
        use Version::*;
        round_trip(
            |o| simple(o, "OK"),
            b"+OK\r\n",
            Value::Simple(b"OK".to_vec()),
        );
        round_trip(
            |o| simple(o, "a\r\nb"),
            b"+a  b\r\n",
            Value::Simple(b"a  b".to_vec()),
        );
        round_trip(
            |o| error(o, "ERR unknown command 'foo'"),
            b"-ERR unknown command 'foo'\r\n",
            Value::Error(b"ERR unknown command 'foo'".to_vec()),
        );
        round_trip(
            |o| error(o, "ERR bad\r\nthing\n"),
            b"-ERR bad  thing \r\n",
            Value::Error(b"ERR bad  thing ".to_vec()),
        );
        for v in [0, 1, -1, 42, 10, -10, 1_000_000, i64::MAX, i64::MIN] {
            round_trip(
                |o| integer(o, v),
                format!(":{v}\r\n").as_bytes(),
                Value::Integer(v),
            );
        }
        round_trip(
            |o| bulk(o, b"hello"),
            b"$5\r\nhello\r\n",
            Value::Bulk(Some(b"hello".to_vec())),
        );
        round_trip(|o| bulk(o, b""), b"$0\r\n\r\n", Value::Bulk(Some(vec![])));
        round_trip(
            |o| bulk(o, b"a\r\nb"),
            b"$4\r\na\r\nb\r\n",
            Value::Bulk(Some(b"a\r\nb".to_vec())),
        );
        round_trip(|o| null(o, Resp2), b"$-1\r\n", Value::Bulk(None));
        round_trip(|o| null(o, Resp3), b"_\r\n", Value::Null);
        round_trip(|o| null_array(o, Resp2), b"*-1\r\n", Value::Array(None));
        round_trip(|o| null_array(o, Resp3), b"_\r\n", Value::Null);
        round_trip(|o| boolean(o, Resp2, true), b":1\r\n", Value::Integer(1));
        round_trip(|o| boolean(o, Resp2, false), b":0\r\n", Value::Integer(0));
        round_trip(|o| boolean(o, Resp3, true), b"#t\r\n", Value::Boolean(true));
        round_trip(
            |o| boolean(o, Resp3, false),
            b"#f\r\n",
            Value::Boolean(false),
        );
        round_trip(
            |o| verbatim(o, Resp3, b"txt", b"Some string"),
            b"=15\r\ntxt:Some string\r\n",
            Value::Verbatim(*b"txt", b"Some string".to_vec()),
        );
        round_trip(
            |o| verbatim(o, Resp2, b"txt", b"Some string"),
            b"$11\r\nSome string\r\n",
            Value::Bulk(Some(b"Some string".to_vec())),
        );
    }

    #[test]
    fn double_encoder_round_trips() {
        for (d, text) in [
            (1.5, "1.5"),
            (3.0, "3"),
            (-2.25, "-2.25"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (1e16, "10000000000000000"),
            (1e17, "1e17"),
            (1e300, "1e300"),
            (-1.5e-7, "-1.5e-7"),
            (f64::MAX, "1.7976931348623157e308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            round_trip(
                |o| double(o, Version::Resp3, d),
                format!(",{text}\r\n").as_bytes(),
                Value::Double(d),
            );
            round_trip(
                |o| double(o, Version::Resp2, d),
                format!("${}\r\n{text}\r\n", text.len()).as_bytes(),
                Value::Bulk(Some(text.as_bytes().to_vec())),
            );
            let parsed: f64 = text.parse().unwrap();
            assert_eq!(parsed.to_bits(), d.to_bits(), "{text}");
        }
        let mut out = Vec::new();
        double(&mut out, Version::Resp3, f64::NAN);
        assert_eq!(out, b",nan\r\n");
        match parse_value(&out) {
            Ok(Some((Value::Double(d), 6))) => assert!(d.is_nan()),
            other => panic!("{other:?}"),
        }
        out.clear();
        double(&mut out, Version::Resp2, f64::NAN);
        assert_eq!(out, b"$3\r\nnan\r\n");
    }

    #[test]
    fn aggregate_encoders_round_trip() {
        use Version::*;
        let one_two = |o: &mut Vec<u8>| {
            integer(o, 1);
            bulk(o, b"two");
        };
        let items = vec![Value::Integer(1), Value::Bulk(Some(b"two".to_vec()))];
        round_trip(
            |o| {
                array(o, 2);
                one_two(o);
            },
            b"*2\r\n:1\r\n$3\r\ntwo\r\n",
            Value::Array(Some(items.clone())),
        );
        round_trip(|o| array(o, 0), b"*0\r\n", Value::Array(Some(vec![])));
        // Sets and pushes: their own type in RESP3, plain arrays in RESP2.
        type Header = fn(&mut Vec<u8>, Version, usize);
        for (header, resp3_wire, resp3_value) in [
            (
                set as Header,
                &b"~2\r\n:1\r\n$3\r\ntwo\r\n"[..],
                Value::Set(items.clone()),
            ),
            (
                push as Header,
                &b">2\r\n:1\r\n$3\r\ntwo\r\n"[..],
                Value::Push(items.clone()),
            ),
        ] {
            for (version, wire, value) in [
                (Resp3, resp3_wire, resp3_value),
                (
                    Resp2,
                    &b"*2\r\n:1\r\n$3\r\ntwo\r\n"[..],
                    Value::Array(Some(items.clone())),
                ),
            ] {
                round_trip(
                    |o| {
                        header(o, version, 2);
                        one_two(o);
                    },
                    wire,
                    value,
                );
            }
        }
        let write_map = |version| {
            move |o: &mut Vec<u8>| {
                map(o, version, 2);
                bulk(o, b"a");
                integer(o, 1);
                bulk(o, b"b");
                null(o, version);
            }
        };
        round_trip(
            write_map(Resp3),
            b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n",
            Value::Map(vec![
                (Value::Bulk(Some(b"a".to_vec())), Value::Integer(1)),
                (Value::Bulk(Some(b"b".to_vec())), Value::Null),
            ]),
        );
        round_trip(
            write_map(Resp2),
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
            Value::Array(Some(vec![
                Value::Bulk(Some(b"a".to_vec())),
                Value::Integer(1),
                Value::Bulk(Some(b"b".to_vec())),
                Value::Bulk(None),
            ])),
        );
        // Nested aggregates.
        round_trip(
            |o| {
                array(o, 2);
                array(o, 1);
                simple(o, "x");
                map(o, Resp3, 0);
            },
            b"*2\r\n*1\r\n+x\r\n%0\r\n",
            Value::Array(Some(vec![
                Value::Array(Some(vec![Value::Simple(b"x".to_vec())])),
                Value::Map(vec![]),
            ])),
        );
    }

    #[test]
    fn parse_value_other_types_and_errors() {
        let ok = |wire: &[u8], value: Value| {
            assert_eq!(parse_value(wire), Ok(Some((value, wire.len()))), "{wire:?}");
        };
        ok(
            b"!10\r\nERR failed\r\n",
            Value::Error(b"ERR failed".to_vec()),
        );
        ok(
            b"(3492890328409238509324850943850943825024385\r\n",
            Value::BigNumber(b"3492890328409238509324850943850943825024385".to_vec()),
        );
        ok(b"(-12\r\n", Value::BigNumber(b"-12".to_vec()));
        ok(b":+5\r\n", Value::Integer(5));
        ok(b",1.5e3\r\n", Value::Double(1500.0));
        // Attributes are dropped, in front of a reply or of an element.
        ok(b"|1\r\n+key\r\n+val\r\n:7\r\n", Value::Integer(7));
        ok(
            b"*1\r\n|1\r\n+k\r\n+v\r\n|0\r\n:1\r\n",
            Value::Array(Some(vec![Value::Integer(1)])),
        );
        assert_eq!(parse_value(b"|1\r\n+key\r\n+val\r\n"), Ok(None));
        // Only the first reply is read.
        assert_eq!(
            parse_value(b":1\r\n:2\r\n"),
            Ok(Some((Value::Integer(1), 4)))
        );
        for bad in [
            &b"?x\r\n"[..],
            b":1x\r\n",
            b":01\r\n",
            b"+a\nb\r\n",
            b"+a\rb\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*-2\r\n",
            b"~-1\r\n",
            b"!-1\r\n",
            b"$?\r\n",
            b"*?\r\n",
            b"_x\r\n",
            b"#x\r\n",
            b",abc\r\n",
            b"(1a\r\n",
            b"(\r\n",
            b"=3\r\ntxt\r\n",
            b"*1\r\n?\r\n",
        ] {
            assert!(
                matches!(parse_value(bad), Err(ProtoError::InvalidReply(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_value(b""), Ok(None));
        assert_eq!(parse_value(b"*3\r\n:1\r\n"), Ok(None));
        assert_eq!(parse_value(b"$999999999999\r\nabc"), Ok(None));
        assert_eq!(parse_value(b"*9223372036854775807\r\n"), Ok(None));
        assert_eq!(parse_value(b"%9223372036854775807\r\n"), Ok(None));
    }

    #[test]
    fn parse_value_depth_limit() {
        let nested = |depth: usize| {
            let mut wire = b"*1\r\n".repeat(depth);
            wire.extend_from_slice(b":1\r\n");
            wire
        };
        let wire = nested(MAX_VALUE_DEPTH);
        let (mut value, n) = parse_value(&wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        for _ in 0..MAX_VALUE_DEPTH {
            value = match value {
                Value::Array(Some(mut v)) => v.pop().unwrap(),
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(value, Value::Integer(1));
        assert!(matches!(
            parse_value(&nested(MAX_VALUE_DEPTH + 1)),
            Err(ProtoError::InvalidReply(_))
        ));
        // Deep nesting never recurses without bound, even far past the limit.
        assert!(parse_value(&nested(100_000)).is_err());
        // Nor do long chains of attributes.
        let mut wire = b"|0\r\n".repeat(100_000);
        wire.extend_from_slice(b"+ok\r\n");
        assert_eq!(
            parse_value(&wire),
            Ok(Some((Value::Simple(b"ok".to_vec()), wire.len())))
        );
    }

    /// A seeded xorshift64 generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let seeds: Vec<Vec<u8>> = vec![
            multibulk(&[b"SET", b"key", b"value"]),
            multibulk(&[b"ECHO", b"\r\n"]),
            b"SET \"a\\x41 b\" 'it\\'s' c\r\n".to_vec(),
            b"*0\r\n\r\nPING\n".to_vec(),
            b"%1\r\n+a\r\n*2\r\n:1\r\n,1.5\r\n|1\r\n+k\r\n+v\r\n=7\r\ntxt:abc\r\n".to_vec(),
        ];
        let alphabet = b"*$:+-_%~>#,=(!|?\r\n\"'\\x0123456789 abc\0";
        let small = Limits {
            max_bulk: 64,
            max_args: 8,
            max_inline: 32,
        };
        let mut cmd = Command::new();
        let mut outcomes = [0usize; 3];
        for round in 0..5_000 {
            let mut buf = seeds[rng.below(seeds.len())].clone();
            if round % 4 == 0 {
                // Entirely random bytes from a protocol-heavy alphabet.
                let len = rng.below(64);
                buf = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
            }
            for _ in 0..rng.below(6) {
                match rng.below(5) {
                    0 if !buf.is_empty() => {
                        let i = rng.below(buf.len());
                        buf[i] = alphabet[rng.below(alphabet.len())];
                    }
                    1 if !buf.is_empty() => {
                        let i = rng.below(buf.len());
                        buf[i] = rng.next() as u8;
                    }
                    2 => {
                        let at = rng.below(buf.len() + 1);
                        buf.insert(at, alphabet[rng.below(alphabet.len())]);
                    }
                    3 if !buf.is_empty() => {
                        let at = rng.below(buf.len());
                        buf.remove(at);
                    }
                    _ => {
                        let at = rng.below(buf.len() + 1);
                        buf.truncate(at);
                    }
                }
            }
            for limits in [&Limits::default(), &small] {
                // Parse the whole buffer as a pipeline, as a connection would.
                let mut pos = 0;
                loop {
                    match parse(&buf[pos..], limits, &mut cmd) {
                        Ok(Some(n)) => {
                            assert!(n >= 1 && n <= buf.len() - pos, "{buf:?}");
                            for i in 0..cmd.len() {
                                assert!(cmd.get(&buf[pos..], i).is_some());
                            }
                            assert_eq!(cmd.args(&buf[pos..]).count(), cmd.len());
                            outcomes[0] += 1;
                            pos += n;
                        }
                        Ok(None) => {
                            outcomes[1] += 1;
                            break;
                        }
                        Err(e) => {
                            assert!(e.to_string().starts_with("Protocol error: "));
                            outcomes[2] += 1;
                            break;
                        }
                    }
                }
            }
            let mut pos = 0;
            while let Ok(Some((_, n))) = parse_value(&buf[pos..]) {
                assert!(n >= 1 && n <= buf.len() - pos, "{buf:?}");
                pos += n;
            }
        }
        // The loop exercised every outcome.
        assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
    }
}
