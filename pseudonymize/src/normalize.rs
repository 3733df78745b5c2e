//! Normalizers applied before HMAC, so that one person gets one token whatever the typing.
//!
//! Each returns a borrowed slice of its input when nothing changes (the common case for
//! clean data), so the record path allocates only for values that need rewriting.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// A normalizer of `TOKEN-SPEC.md`.
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
        match self {
            Self::Exact => Cow::Borrowed(value),
            Self::Trim => Cow::Borrowed(value.trim()),
            Self::Lower | Self::Email => lower(value.trim()),
            Self::Digits => digits(value.trim()),
            Self::Name => name(value),
        }
    }
}

fn lower(value: &str) -> Cow<'_, str> {
    if value
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.to_lowercase())
    }
}

fn digits(value: &str) -> Cow<'_, str> {
    let (plus, rest) = match value.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", value),
    };
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    out.push_str(plus);
    out.extend(rest.chars().filter(char::is_ascii_digit));
    Cow::Owned(out)
}

fn name(value: &str) -> Cow<'_, str> {
    let nfkc: String = value.nfkc().collect::<String>().to_lowercase();
    let mut out = String::with_capacity(nfkc.len());
    for word in nfkc.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out == value {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(out)
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
        fn normalization_is_idempotent(value in "\\PC*", which in 0usize..6) {
            let n = Normalizer::ALL[which];
            let once = n.apply(&value).into_owned();
            let twice = n.apply(&once).into_owned();
            prop_assert_eq!(once, twice);
        }
    }
}
