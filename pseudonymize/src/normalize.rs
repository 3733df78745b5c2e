//! Normalizers applied before HMAC, so that one person gets one token whatever the typing.
//!
//! Each returns a slice of its input when nothing changes (the common case for clean
//! data) and otherwise writes into a scratch string the caller reuses; ASCII input, the
//! common case, takes byte-wise fast paths.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// A normalizer of `docs/token-spec.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalizer {
    /// The value as given.
    Exact,
    /// Leading and trailing whitespace stripped.
    Trim,
    /// `trim`, then Unicode lowercase.
    Lower,
    /// Same as `lower` (no provider-specific rewriting).
    Email,
    /// `trim`; a leading `+` kept; then only ASCII digits.
    Digits,
    /// NFKC, Unicode lowercase, trim, whitespace runs collapsed to one space.
    Name,
}

impl Normalizer {
    /// Every normalizer, in documentation order.
    pub const ALL: [Normalizer; 6] = [
        Self::Exact,
        Self::Trim,
        Self::Lower,
        Self::Email,
        Self::Digits,
        Self::Name,
    ];

    /// The name used in policies and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Trim => "trim",
            Self::Lower => "lower",
            Self::Email => "email",
            Self::Digits => "digits",
            Self::Name => "name",
        }
    }

    /// Parses a normalizer name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Normalizes `value`.
    pub fn apply(self, value: &str) -> Cow<'_, str> {
        let mut scratch = String::new();
        match self.normalize_into(value, &mut scratch) {
            Normalized::Slice(slice) => Cow::Borrowed(slice),
            Normalized::Rewritten => Cow::Owned(scratch),
        }
    }

    /// Normalizes `value`, writing into `scratch` only when the result is not a slice of
    /// `value`: the record path reuses one scratch string and allocates nothing.
    pub fn normalize<'a>(self, value: &'a str, scratch: &'a mut String) -> &'a str {
        match self.normalize_into(value, scratch) {
            Normalized::Slice(slice) => slice,
            Normalized::Rewritten => scratch,
        }
    }

    fn normalize_into<'a>(self, value: &'a str, scratch: &mut String) -> Normalized<'a> {
        scratch.clear();
        match self {
            Self::Exact => Normalized::Slice(value),
            Self::Trim => Normalized::Slice(value.trim()),
            Self::Lower | Self::Email => lower(value.trim(), scratch),
            Self::Digits => digits(value.trim(), scratch),
            Self::Name if value.is_ascii() => ascii_name(value, scratch),
            Self::Name => name(value, scratch),
        }
    }
}

/// A normalized value: a slice of the input, or what was written into the scratch string.
enum Normalized<'a> {
    Slice(&'a str),
    Rewritten,
}

fn lower<'a>(value: &'a str, out: &mut String) -> Normalized<'a> {
    if value.is_ascii() {
        if !value.bytes().any(|b| b.is_ascii_uppercase()) {
            return Normalized::Slice(value);
        }
        out.extend(value.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        // Rare, and `str::to_lowercase` knows the final sigma: no fast path here.
        out.push_str(&value.to_lowercase());
    }
    Normalized::Rewritten
}

fn digits<'a>(value: &'a str, out: &mut String) -> Normalized<'a> {
    let (plus, rest) = match value.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", value),
    };
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return Normalized::Slice(value);
    }
    out.push_str(plus);
    out.extend(rest.bytes().filter(u8::is_ascii_digit).map(char::from));
    Normalized::Rewritten
}

/// `name` for ASCII input: NFKC changes no ASCII character, and the Unicode whitespace of
/// ASCII is `\t`, `\n`, `\x0b`, `\x0c`, `\r` and the space.
fn ascii_name<'a>(value: &'a str, out: &mut String) -> Normalized<'a> {
    let clean = !value
        .bytes()
        .any(|b| b.is_ascii_uppercase() || is_ascii_unicode_space(b) && b != b' ')
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ");
    if clean {
        return Normalized::Slice(value);
    }
    for word in value
        .split(|c: char| is_ascii_unicode_space(c as u8))
        .filter(|word| !word.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Normalized::Rewritten
}

fn is_ascii_unicode_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

fn name<'a>(value: &'a str, out: &mut String) -> Normalized<'a> {
    let nfkc: String = value.nfkc().collect::<String>().to_lowercase();
    for word in nfkc.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out == value {
        Normalized::Slice(value)
    } else {
        Normalized::Rewritten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        assert_eq!(Normalizer::Digits.apply(" +33 6 12-34 "), "+3361234");
        assert_eq!(Normalizer::Digits.apply("06 12"), "0612");
        assert_eq!(
            Normalizer::Email.apply("  Alice@Example.COM "),
            "alice@example.com"
        );
        assert_eq!(Normalizer::Name.apply("Émilie  DUPONT"), "émilie dupont");
        assert_eq!(Normalizer::Name.apply(" ＡＢＣ\u{00a0}\tdé"), "abc dé");
        assert_eq!(Normalizer::Trim.apply("  x y "), "x y");
        assert_eq!(Normalizer::Exact.apply("  X "), "  X ");
        assert_eq!(Normalizer::Digits.apply("12+34"), "1234");
        assert_eq!(Normalizer::Digits.apply("++1"), "+1");
    }

    #[test]
    fn names_round_trip() {
        for n in Normalizer::ALL {
            assert_eq!(Normalizer::from_name(n.name()), Some(n));
        }
        assert_eq!(Normalizer::from_name("upper"), None);
    }

    proptest! {
        #[test]
        fn the_ascii_name_fast_path_agrees_with_the_unicode_one(value in "[ -~\t\n\x0b\x0c\r]*") {
            let mut fast = String::new();
            let mut slow = String::new();
            let fast = match ascii_name(&value, &mut fast) { Normalized::Slice(s) => s.to_owned(), Normalized::Rewritten => fast };
            let slow = match name(&value, &mut slow) { Normalized::Slice(s) => s.to_owned(), Normalized::Rewritten => slow };
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn normalization_is_idempotent(value in "\\PC*", which in 0usize..6) {
            let n = Normalizer::ALL[which];
            let once = n.apply(&value).into_owned();
            let twice = n.apply(&once).into_owned();
            prop_assert_eq!(once, twice);
        }
    }
}
