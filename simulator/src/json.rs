//! A minimal streaming JSON writer into a caller-owned buffer, and the digit helpers
//! the generator uses instead of `format!`.
//!
//! Output is compact and escapes exactly what `serde_json` escapes (`"`, `\` and control
//! characters; everything else, accents included, is written as UTF-8), so a value's
//! JSON form can be searched for in a payload byte for byte.

/// Writes one JSON document; commas are placed by the writer.
pub(crate) struct Json<'a> {
    out: &'a mut Vec<u8>,
    /// Whether the next key or value follows a sibling and needs a comma.
    comma: bool,
}

impl<'a> Json<'a> {
    /// A writer appending to `out`.
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, comma: false }
    }

    fn separate(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }

    /// Starts an object member: `"key":`. Keys are the schema's identifiers, which need
    /// no escaping.
    pub(crate) fn key(&mut self, key: &str) {
        debug_assert!(!needs_escape(key.as_bytes()));
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = false;
    }

    /// Starts an object member from its key already quoted and followed by `:`.
    pub(crate) fn quoted_key(&mut self, quoted_key: &str) {
        self.separate();
        self.out.extend_from_slice(quoted_key.as_bytes());
        self.comma = false;
    }

    /// A string value given as UTF-8 bytes, with `extra` bytes appended inside the quotes
    /// (malformations put invalid UTF-8 there; valid events pass `b""`).
    ///
    /// Generated values never hold a character JSON escapes (no table entry has one, and
    /// tests run with this assertion on), so the hot path copies them as they are.
    pub(crate) fn string_with(&mut self, value: &[u8], extra: &[u8]) {
        debug_assert!(!needs_escape(value), "a generated value needs escaping");
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(extra);
        self.out.push(b'"');
        self.comma = true;
    }

    /// An unsigned integer value.
    pub(crate) fn number(&mut self, value: u64) {
        self.separate();
        push_u64(self.out, value);
        self.comma = true;
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self, value: bool) {
        self.raw(if value { "true" } else { "false" });
    }

    /// `null`.
    pub(crate) fn null(&mut self) {
        self.raw("null");
    }

    /// Any JSON text, written as given.
    pub(crate) fn raw(&mut self, json: &str) {
        self.separate();
        self.out.extend_from_slice(json.as_bytes());
        self.comma = true;
    }

    /// `{`.
    pub(crate) fn begin_object(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.comma = false;
    }

    /// `}`.
    pub(crate) fn end_object(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }

    /// `[`.
    pub(crate) fn begin_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.comma = false;
    }

    /// `]`.
    pub(crate) fn end_array(&mut self) {
        self.out.push(b']');
        self.comma = true;
    }
}

/// Appends the UTF-8 text `value` as a JSON string, quotes included.
pub(crate) fn push_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    push_escaped(out, value);
    out.push(b'"');
}

/// Whether `bytes` hold a character JSON escapes.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends the decimal form of `value`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `value` with at least `width` digits, zero-padded.
pub(crate) fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    let mut rest = value;
    while rest > 0 {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = i.min(digits.len() - width.clamp(1, digits.len()));
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for value in [
            "plain",
            "Émilie \"Mimi\"",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "Adébáyọ̀",
        ] {
            let mut out = Vec::new();
            push_string(&mut out, value.as_bytes());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(value).unwrap()
            );
        }
    }

    #[test]
    fn numbers_and_padding() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        out.push(b' ');
        push_padded(&mut out, 7, 3);
        out.push(b' ');
        push_padded(&mut out, 2026, 2);
        out.push(b' ');
        push_padded(&mut out, 0, 2);
        assert_eq!(out, format!("0 {} 007 2026 00", u64::MAX).into_bytes());
    }

    #[test]
    fn commas_follow_nesting() {
        let mut out = Vec::new();
        let mut json = Json::new(&mut out);
        json.begin_object();
        json.key("a");
        json.begin_array();
        json.number(1);
        json.begin_object();
        json.end_object();
        json.null();
        json.end_array();
        json.key("b");
        json.boolean(true);
        json.end_object();
        assert_eq!(out, br#"{"a":[1,{},null],"b":true}"#);
    }
}
