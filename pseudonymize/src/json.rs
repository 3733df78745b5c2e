//! JSON at the byte level, for the record path and the leak guard: a strict reader that
//! validates as it goes (RFC 8259, the same grammar and limits as `serde_json`) and hands
//! out spans instead of building values, and the writer of JSON strings.
//!
//! Nothing here allocates except [`unescape`] into a caller-owned buffer, and only for
//! strings that hold escapes.

use std::fmt;

/// How deep objects and arrays may nest: `serde_json`'s limit, so that both paths reject
/// the same payloads.
pub(crate) const MAX_DEPTH: usize = 127;

/// What is wrong with a payload's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyntaxKind {
    /// The payload ends inside a value.
    Eof,
    /// Something else was expected here.
    Expected(Expected),
    /// A control character (U+0000 to U+001F) inside a string.
    ControlCharacter,
    /// A backslash not followed by a valid escape.
    InvalidEscape,
    /// A `\u` escape of half a surrogate pair.
    LoneSurrogate,
    /// A number that does not follow the grammar.
    InvalidNumber,
    /// A number too large for a double.
    NumberOutOfRange,
    /// Something after the top-level value.
    TrailingCharacters,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// What a reader expected where it found something else (a small type, so that results
/// of the reader stay small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    Value,
    Key,
    Colon,
    CommaOrBrace,
    CommaOrBracket,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Value => "a value",
            Self::Key => "a string key",
            Self::Colon => "`:`",
            Self::CommaOrBrace => "`,` or `}`",
            Self::CommaOrBracket => "`,` or `]`",
        })
    }
}

/// A syntax error and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// What is wrong.
    pub(crate) kind: SyntaxKind,
    /// Byte offset of the problem.
    pub(crate) offset: usize,
}

impl SyntaxError {
    /// Line and column (1-based, in bytes) of the error in `bytes`, as editors show them.
    fn position(&self, bytes: &[u8]) -> (usize, usize) {
        let before = &bytes[..self.offset.min(bytes.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
        (line, column)
    }

    /// The message of a rejection: what and where, never a byte of the payload.
    pub(crate) fn describe(&self, bytes: &[u8]) -> String {
        let (line, column) = self.position(bytes);
        format!("{} at line {line} column {column}", self.kind)
    }
}

impl fmt::Display for SyntaxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("the payload ends inside a value"),
            Self::Expected(what) => write!(f, "expected {what}"),
            Self::ControlCharacter => {
                f.write_str("control character (\\u0000-\\u001F) inside a string")
            }
            Self::InvalidEscape => f.write_str("invalid escape in a string"),
            Self::LoneSurrogate => f.write_str("lone surrogate in a \\u escape"),
            Self::InvalidNumber => f.write_str("invalid number"),
            Self::NumberOutOfRange => f.write_str("number out of range"),
            Self::TrailingCharacters => f.write_str("trailing characters after the value"),
            Self::TooDeep => f.write_str("nesting deeper than 128 levels"),
        }
    }
}

/// A number as `serde_json` classifies it: an integer that fits 64 bits, or a double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// A negative integer.
    I64(i64),
    /// A non-negative integer.
    U64(u64),
    /// Anything else (a fraction, an exponent, `-0`, an integer beyond 64 bits).
    F64(f64),
}

impl Number {
    /// The value as a double.
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Self::I64(n) => n as f64,
            Self::U64(n) => n as f64,
            Self::F64(x) => x,
        }
    }

    /// Whether it is an integer (its text is then its canonical decimal form).
    pub(crate) fn is_integer(self) -> bool {
        !matches!(self, Self::F64(_))
    }
}

/// The type of a value, as found at its first byte (and, for numbers, parsed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number(Number),
    /// A string; `escaped` when it holds a backslash (its text needs [`unescape`]).
    String {
        escaped: bool,
    },
    Array,
    Object,
}

impl Kind {
    /// The name used in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "boolean",
            Self::Number(n) if n.is_integer() => "integer",
            Self::Number(_) => "float",
            Self::String { .. } => "string",
            Self::Array => "array",
            Self::Object => "object",
        }
    }

    /// The name with its article, for "holds …" in messages.
    pub(crate) fn with_article(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number(n) if n.is_integer() => "an integer",
            Self::Number(_) => "a float",
            Self::String { .. } => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

/// A cursor over a payload that validates everything it steps over.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Which bytes end the fast scan of a string: `"`, `\` and control characters.
const fn string_stops() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
}
static STRING_STOPS: [bool; 256] = string_stops();

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The current byte offset.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    fn error(&self, kind: SyntaxKind) -> SyntaxError {
        SyntaxError {
            kind,
            offset: self.pos,
        }
    }

    /// Skips whitespace and returns the next byte, without consuming it.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                return Some(b);
            }
        }
        None
    }

    /// Skips whitespace and consumes `byte`, or fails naming `what` was expected.
    pub(crate) fn expect(&mut self, byte: u8, what: Expected) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.error(SyntaxKind::Expected(what))),
            None => Err(self.error(SyntaxKind::Eof)),
        }
    }

    /// After the first member or element of a container: `,` (another follows, `true`) or
    /// the closing byte (`false`).
    pub(crate) fn next_member(&mut self, close: u8) -> Result<bool, SyntaxError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => Err(self.error(SyntaxKind::Expected(if close == b'}' {
                Expected::CommaOrBrace
            } else {
                Expected::CommaOrBracket
            }))),
            None => Err(self.error(SyntaxKind::Eof)),
        }
    }

    /// Right after `{` or `[`: consumes the closing byte of an empty container.
    pub(crate) fn empty_container(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Fails unless only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(SyntaxKind::TrailingCharacters)),
        }
    }

    /// Reads an object key and the `:` after it; returns the span of its text (between
    /// the quotes) and whether it holds escapes.
    pub(crate) fn key(&mut self) -> Result<(usize, usize, bool), SyntaxError> {
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return Err(self.error(SyntaxKind::Expected(Expected::Key))),
            None => return Err(self.error(SyntaxKind::Eof)),
        }
        self.pos += 1;
        let start = self.pos;
        let escaped = self.string_body()?;
        let end = self.pos - 1;
        self.expect(b':', Expected::Colon)?;
        Ok((start, end, escaped))
    }

    /// Reads the start of a value. Scalars are read whole: the span is the value's text
    /// (a string's without its quotes). For `{` and `[` only the opening byte is consumed;
    /// the span is empty and the caller reads the members.
    pub(crate) fn value_start(&mut self) -> Result<(Kind, usize, usize), SyntaxError> {
        let Some(first) = self.peek() else {
            return Err(self.error(SyntaxKind::Eof));
        };
        let start = self.pos;
        let kind = match first {
            b'{' => {
                self.pos += 1;
                return Ok((Kind::Object, start, start));
            }
            b'[' => {
                self.pos += 1;
                return Ok((Kind::Array, start, start));
            }
            b'"' => {
                self.pos += 1;
                let escaped = self.string_body()?;
                return Ok((Kind::String { escaped }, start + 1, self.pos - 1));
            }
            b'n' => self.literal(b"null", Kind::Null)?,
            b't' => self.literal(b"true", Kind::Bool)?,
            b'f' => self.literal(b"false", Kind::Bool)?,
            b'-' | b'0'..=b'9' => Kind::Number(self.number()?),
            _ => return Err(self.error(SyntaxKind::Expected(Expected::Value))),
        };
        Ok((kind, start, self.pos))
    }

    /// Steps over a whole value of kind `kind` whose start [`Reader::value_start`] read,
    /// validating it; `depth` is the nesting of the container it opens. Returns the
    /// nesting of the deepest container in it (0 for a scalar).
    pub(crate) fn skip_rest(&mut self, kind: Kind, depth: usize) -> Result<usize, SyntaxError> {
        let close = match kind {
            Kind::Object => b'}',
            Kind::Array => b']',
            _ => return Ok(0),
        };
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                kind: SyntaxKind::TooDeep,
                offset: self.pos - 1,
            });
        }
        let mut deepest = depth;
        if self.empty_container(close) {
            return Ok(deepest);
        }
        loop {
            if close == b'}' {
                self.key()?;
            }
            let (inner, _, _) = self.value_start()?;
            deepest = deepest.max(self.skip_rest(inner, depth + 1)?);
            if !self.next_member(close)? {
                return Ok(deepest);
            }
        }
    }

    fn literal(&mut self, word: &'static [u8], kind: Kind) -> Result<Kind, SyntaxError> {
        for &expected in word {
            match self.bytes.get(self.pos) {
                Some(&b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.error(SyntaxKind::Expected(Expected::Value))),
                None => return Err(self.error(SyntaxKind::Eof)),
            }
        }
        Ok(kind)
    }

    /// After the opening quote: up to and including the closing one. Returns whether the
    /// string holds escapes.
    fn string_body(&mut self) -> Result<bool, SyntaxError> {
        let mut escaped = false;
        loop {
            let Some(stop) = find_stop(&self.bytes[self.pos..]) else {
                self.pos = self.bytes.len();
                return Err(self.error(SyntaxKind::Eof));
            };
            self.pos += stop;
            match self.bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.error(SyntaxKind::ControlCharacter)),
            }
        }
    }

    /// At a backslash: validates one escape (a surrogate pair as one).
    fn escape(&mut self) -> Result<(), SyntaxError> {
        self.pos += 1;
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(self.error(SyntaxKind::Eof));
        };
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.pos += 1;
                Ok(())
            }
            b'u' => {
                self.pos += 1;
                let unit = self.hex4()?;
                match unit {
                    0xDC00..=0xDFFF => Err(self.error(SyntaxKind::LoneSurrogate)),
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error(SyntaxKind::LoneSurrogate));
                        }
                        self.pos += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.error(SyntaxKind::LoneSurrogate)),
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => Err(self.error(SyntaxKind::InvalidEscape)),
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut unit = 0;
        for _ in 0..4 {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error(SyntaxKind::Eof));
            };
            let digit = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.error(SyntaxKind::InvalidEscape))?;
            unit = unit * 16 + digit;
            self.pos += 1;
        }
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, classified as `serde_json` does.
    fn number(&mut self) -> Result<Number, SyntaxError> {
        let start = self.pos;
        let negative = self.bytes[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        // The integer part's value, `None` past u64 (then parsed as a double below).
        let mut magnitude = Some(0u64);
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(&b) = self.bytes.get(self.pos).filter(|b| b.is_ascii_digit()) {
                    magnitude = magnitude
                        .and_then(|m| m.checked_mul(10))
                        .and_then(|m| m.checked_add(u64::from(b - b'0')));
                    self.pos += 1;
                }
            }
            Some(_) => return Err(self.error(SyntaxKind::InvalidNumber)),
            None => return Err(self.error(SyntaxKind::Eof)),
        }
        if self.bytes[int_start] == b'0' && self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit)
        {
            return Err(self.error(SyntaxKind::InvalidNumber));
        }
        let mut integral = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            integral = false;
            if self.digits() == 0 {
                return Err(self.bytes_error_at_end());
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            integral = false;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.bytes_error_at_end());
            }
        }
        if let (true, Some(n)) = (integral, magnitude) {
            if !negative {
                return Ok(Number::U64(n));
            }
            if n != 0 {
                if let Some(n) = 0i64.checked_sub_unsigned(n) {
                    return Ok(Number::I64(n));
                }
            }
        }
        // ASCII digits, signs, dots and exponents only: valid UTF-8.
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or_default();
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Number::F64(x)),
            _ => Err(SyntaxError {
                kind: SyntaxKind::NumberOutOfRange,
                offset: start,
            }),
        }
    }

    fn bytes_error_at_end(&self) -> SyntaxError {
        if self.pos >= self.bytes.len() {
            self.error(SyntaxKind::Eof)
        } else {
            self.error(SyntaxKind::InvalidNumber)
        }
    }
}

/// The first `"`, `\\` or control character of `bytes`, eight bytes at a time.
fn find_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The classic zero-byte test: its lowest flagged byte is always a real match.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight bytes"));
        let found = zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| STRING_STOPS[usize::from(b)])
        .map(|position| offset + position)
}

/// The text of a string span that holds escapes, unescaped into `out` (cleared first).
/// The span must have been validated by [`Reader`].
pub(crate) fn unescape<'o>(raw: &str, out: &'o mut String) -> &'o str {
    out.clear();
    let mut rest = raw;
    while let Some(backslash) = rest.find('\\') {
        out.push_str(&rest[..backslash]);
        let escape = &rest[backslash + 1..];
        let (c, used) = match escape.as_bytes()[0] {
            b'b' => ('\u{8}', 1),
            b'f' => ('\u{c}', 1),
            b'n' => ('\n', 1),
            b'r' => ('\r', 1),
            b't' => ('\t', 1),
            b'u' => {
                let unit = u32::from_str_radix(&escape[1..5], 16).unwrap_or(0xFFFD);
                if (0xD800..=0xDBFF).contains(&unit) {
                    let low = u32::from_str_radix(&escape[7..11], 16).unwrap_or(0xDC00);
                    let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(c).unwrap_or('\u{FFFD}'), 11)
                } else {
                    (char::from_u32(unit).unwrap_or('\u{FFFD}'), 5)
                }
            }
            other => (char::from(other), 1),
        };
        out.push(c);
        rest = &escape[used..];
    }
    out.push_str(rest);
    out
}

/// The length in bytes of the text of a validated string span once unescaped, without
/// unescaping it.
pub(crate) fn unescaped_len(raw: &[u8]) -> usize {
    let mut len = 0;
    let mut pos = 0;
    while let Some(backslash) = raw[pos..].iter().position(|&b| b == b'\\') {
        len += backslash;
        pos += backslash + 1;
        if raw.get(pos) != Some(&b'u') {
            len += 1;
            pos += 1;
            continue;
        }
        let unit = std::str::from_utf8(&raw[pos + 1..pos + 5])
            .ok()
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        // A high surrogate is followed by its low half: one four-byte character.
        let (bytes, used) = match unit {
            0..=0x7F => (1, 5),
            0x80..=0x7FF => (2, 5),
            0xD800..=0xDBFF => (4, 11),
            _ => (3, 5),
        };
        len += bytes;
        pos += used;
    }
    len + raw.len() - pos
}

/// Appends `text` as a JSON string (quotes included), escaped as `serde_json` does.
pub(crate) fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !STRING_STOPS[usize::from(b)] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(text: &str) -> Result<(), SyntaxError> {
        let mut reader = Reader::new(text.as_bytes());
        let (kind, _, _) = reader.value_start()?;
        reader.skip_rest(kind, 1)?;
        reader.end()
    }

    #[test]
    fn skipping_tells_the_deepest_level() {
        for (text, deepest) in [
            ("1", 0),
            ("[]", 1),
            ("{\"a\":[1,{\"b\":[]}],\"c\":{}}", 4),
            ("[[],[[]]]", 3),
        ] {
            let mut reader = Reader::new(text.as_bytes());
            let (kind, _, _) = reader.value_start().unwrap();
            assert_eq!(reader.skip_rest(kind, 1), Ok(deepest), "{text}");
        }
    }

    #[test]
    fn unescaped_length_is_the_length_of_the_text() {
        let mut scratch = String::new();
        for raw in [
            "",
            "plain",
            "\\n\\\\",
            "\\u0041\\u00e9\\u20ac\\ud83d\\ude00x",
            "é\\/",
        ] {
            assert_eq!(
                unescaped_len(raw.as_bytes()),
                unescape(raw, &mut scratch).len(),
                "{raw}"
            );
        }
    }

    #[test]
    fn accepts_and_rejects_what_serde_json_does() {
        let cases = [
            "{}",
            "[]",
            " {\"a\" : [1, -2, 3.5e-3, true, false, null, \"x\\u00e9\\ud83d\\ude00\"]} ",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "-",
            "1.",
            "1e",
            "1e400",
            "-0",
            "18446744073709551616",
            "-9223372036854775809",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\u{1}\"",
            "tru",
            "nul",
            "{} x",
            "{\"a\" 1}",
            "{1:2}",
            "",
            "\u{feff}{}",
        ];
        for text in cases {
            let ours = skip(text).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        for depth in [126, 127, 128, 129] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let theirs = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(skip(&text).is_ok(), theirs, "depth {depth}");
        }
    }

    #[test]
    fn numbers_are_classified_like_serde_json() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "1.5",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
        ] {
            let mut reader = Reader::new(text.as_bytes());
            let (kind, _, _) = reader.value_start().unwrap();
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            let theirs = theirs.as_number().unwrap();
            let expected = if let Some(n) = theirs.as_u64() {
                Number::U64(n)
            } else if let Some(n) = theirs.as_i64() {
                Number::I64(n)
            } else {
                Number::F64(theirs.as_f64().unwrap())
            };
            assert_eq!(kind, Kind::Number(expected), "{text}");
        }
    }

    #[test]
    fn strings_round_trip_through_unescape_and_write() {
        let mut scratch = String::new();
        for text in [
            "plain",
            "é \u{1F600}",
            "q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}",
        ] {
            let mut json = Vec::new();
            write_string(&mut json, text);
            assert_eq!(json, serde_json::to_vec(text).unwrap(), "{text:?}");
            let inner = std::str::from_utf8(&json[1..json.len() - 1]).unwrap();
            assert_eq!(unescape(inner, &mut scratch), text);
        }
        assert_eq!(
            unescape("\\u00e9\\ud83d\\ude00\\/", &mut scratch),
            "é\u{1F600}/"
        );
    }

    #[test]
    fn the_word_scan_finds_the_first_stop() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| STRING_STOPS[usize::from(b)]);
        let mut bytes: Vec<u8> = (0u8..=255).collect();
        bytes.extend_from_slice(b"abcdefghijklmnopq\"");
        for start in 0..bytes.len() {
            for end in start..bytes.len().min(start + 40) {
                let slice = &bytes[start..end];
                assert_eq!(find_stop(slice), naive(slice), "{slice:?}");
            }
        }
        for stop in [b'"', b'\\', 0, 0x1f] {
            for at in 0..20 {
                let mut text = vec![b'a'; 20];
                text[at] = stop;
                text[(at + 3).min(19)] = b'"';
                assert_eq!(find_stop(&text), naive(&text));
            }
        }
    }

    #[test]
    fn errors_say_where_without_quoting() {
        let error = skip("{\n  \"secret\": tru}").unwrap_err();
        let message = error.describe(b"{\n  \"secret\": tru}");
        assert_eq!(message, "expected a value at line 2 column 16");
    }
}
