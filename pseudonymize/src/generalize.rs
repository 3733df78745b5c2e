//! Generalization operators: coarsen a value so that it stays useful for analysis but no
//! longer singles a person out (a birth date to a year or an age band, an IP to its
//! network, a postal code to its department...).
//!
//! Every operator parses its input fully before producing anything: a value that is not
//! what the rule expects is rejected, never passed through truncated (a name typed into a
//! birth-date field must not leak out as its first four letters).

use std::net::IpAddr;

use std::fmt::Write as _;
use std::io::Write as _;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, UtcOffset};

use crate::json::{write_string, Number};

/// What a `generalize` rule turns its value into.
#[derive(Debug, Clone, PartialEq)]
pub enum Generalization {
    /// A date or timestamp to its year, `"1987"`.
    Year,
    /// A date or timestamp to its month, `"1987-04"`.
    Month,
    /// A birth date to the age band at the event's time, `"30-39"` for width 10.
    AgeBand {
        /// Band width in years.
        width: u32,
    },
    /// A string (or integer) to its first `length` characters.
    Prefix {
        /// Characters kept.
        length: usize,
    },
    /// An IP address to its network in CIDR notation.
    IpNetwork {
        /// Prefix length for IPv4 (default 24).
        bits_v4: u8,
        /// Prefix length for IPv6 (default 48).
        bits_v6: u8,
    },
    /// An RFC 3339 timestamp to its hour, in UTC: `"2026-11-21T14:00:00Z"`.
    Hour,
    /// A number to the nearest multiple of `step`.
    Round {
        /// The step; integral steps keep integers integral.
        step: f64,
    },
}

/// The raw `generalize` table of a policy, validated into a [`Generalization`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GeneralizeSpec {
    pub(crate) to: String,
    pub(crate) width: Option<u32>,
    pub(crate) length: Option<usize>,
    pub(crate) bits: Option<u8>,
    pub(crate) bits_v6: Option<u8>,
    pub(crate) step: Option<f64>,
}

/// What is wrong with a `generalize` rule's options; the policy adds the field path.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpecError {
    /// Options given that the operator does not take.
    #[error("option(s) {} do not apply to generalize.to = \"{to}\"", options.join(", "))]
    Extra {
        /// The options.
        options: Vec<String>,
        /// The operator.
        to: String,
    },
    /// An operator's option is missing or out of range.
    #[error("generalize.to = \"{to}\" {needs}")]
    Option {
        /// The operator.
        to: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// `ip_network` prefix lengths longer than the addresses.
    #[error("generalize.to = \"ip_network\": `bits` must be <= 32 and `bits_v6` <= 128")]
    NetworkBits,
    /// No such operator.
    #[error("unknown generalize.to = \"{0}\"; expected year, month, age_band, prefix, ip_network, hour or round")]
    Unknown(String),
}

impl GeneralizeSpec {
    /// Checks that exactly the options of `to` are given; the error says what to fix.
    pub(crate) fn validate(self) -> Result<Generalization, SpecError> {
        let given = |name: &str, present: bool| present.then(|| name.to_string());
        let extra: Vec<String> = [
            given("width", self.width.is_some() && self.to != "age_band"),
            given("length", self.length.is_some() && self.to != "prefix"),
            given("bits", self.bits.is_some() && self.to != "ip_network"),
            given("bits_v6", self.bits_v6.is_some() && self.to != "ip_network"),
            given("step", self.step.is_some() && self.to != "round"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !extra.is_empty() {
            return Err(SpecError::Extra {
                options: extra,
                to: self.to,
            });
        }
        Ok(match self.to.as_str() {
            "year" => Generalization::Year,
            "month" => Generalization::Month,
            "hour" => Generalization::Hour,
            "age_band" => match self.width {
                Some(width) if width >= 1 => Generalization::AgeBand { width },
                _ => {
                    return Err(SpecError::Option {
                        to: "age_band",
                        needs: "needs `width` >= 1 (years)",
                    })
                }
            },
            "prefix" => match self.length {
                Some(length) => Generalization::Prefix { length },
                None => {
                    return Err(SpecError::Option {
                        to: "prefix",
                        needs: "needs `length` (characters kept)",
                    })
                }
            },
            "ip_network" => {
                let bits_v4 = self.bits.unwrap_or(24);
                let bits_v6 = self.bits_v6.unwrap_or(48);
                if bits_v4 > 32 || bits_v6 > 128 {
                    return Err(SpecError::NetworkBits);
                }
                Generalization::IpNetwork { bits_v4, bits_v6 }
            }
            "round" => match self.step {
                Some(step) if step.is_finite() && step > 0.0 => Generalization::Round { step },
                _ => {
                    return Err(SpecError::Option {
                        to: "round",
                        needs: "needs a positive `step`",
                    })
                }
            },
            other => return Err(SpecError::Unknown(other.to_owned())),
        })
    }
}

/// Why a generalization could not be applied; the caller adds the field path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The JSON type does not fit the operator.
    WrongType(&'static str),
    /// The value does not parse as what the operator expects.
    Invalid(&'static str),
}

/// Parses a date `YYYY-MM-DD` or an RFC 3339 timestamp (its own calendar date).
pub(crate) fn parse_date(value: &str) -> Option<Date> {
    if value.len() == 10 {
        // `[year]-[month]-[day]` by hand: the format parser costs more than a token.
        let b = value.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            b[range].iter().try_fold(0u16, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u16::from(c - b'0'))
            })
        };
        if b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
        Date::from_calendar_date(
            i32::from(digits(0..4)?),
            month,
            u8::try_from(digits(8..10)?).ok()?,
        )
        .ok()
    } else {
        OffsetDateTime::parse(value, &Rfc3339)
            .ok()
            .map(|t| t.date())
    }
}

/// A scalar of an event as the operators see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    /// A string's text (unescaped).
    Str(&'a str),
    /// A number and its text.
    Number(Number, &'a str),
    /// Anything else, by its type name (`boolean`, `object`...).
    Other,
}

impl<'a> Scalar<'a> {
    fn as_str(self) -> Option<&'a str> {
        match self {
            Self::Str(text) => Some(text),
            _ => None,
        }
    }
}

impl Generalization {
    /// Whether the operator needs the event's date (only `age_band` does).
    pub(crate) fn needs_event_date(&self) -> bool {
        matches!(self, Self::AgeBand { .. })
    }

    /// Applies the operator to a non-null value and appends the JSON result to `out`;
    /// `scratch` holds intermediate text. Nothing is written on failure.
    pub(crate) fn apply(
        &self,
        value: Scalar<'_>,
        event_date: Option<Date>,
        scratch: &mut String,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        scratch.clear();
        match self {
            Self::Year | Self::Month | Self::AgeBand { .. } => {
                let text = value.as_str().ok_or(Failure::WrongType("a date string"))?;
                let date = parse_date(text).ok_or(Failure::Invalid(
                    "a date (YYYY-MM-DD) or an RFC 3339 timestamp",
                ))?;
                match self {
                    Self::Year => write!(scratch, "{:04}", date.year()),
                    Self::Month => {
                        write!(scratch, "{:04}-{:02}", date.year(), u8::from(date.month()))
                    }
                    Self::AgeBand { width } => {
                        let event = event_date.ok_or(Failure::Invalid(
                            "an event with a valid `event_time` to compute an age",
                        ))?;
                        let mut age = event.year() - date.year();
                        if (event.month(), event.day()) < (date.month(), date.day()) {
                            age -= 1;
                        }
                        if age < 0 {
                            return Err(Failure::Invalid("a birth date before the event time"));
                        }
                        let width = *width as i32;
                        let low = age / width * width;
                        write!(scratch, "{}-{}", low, low + width - 1)
                    }
                    _ => unreachable!("outer match covers only date operators"),
                }
            }
            Self::Prefix { length } => {
                let text = match value {
                    Scalar::Str(text) => text,
                    Scalar::Number(n, text) if n.is_integer() => text,
                    _ => return Err(Failure::WrongType("a string or an integer")),
                };
                let end = text
                    .char_indices()
                    .nth(*length)
                    .map_or(text.len(), |(i, _)| i);
                scratch.push_str(&text[..end]);
                Ok(())
            }
            Self::IpNetwork { bits_v4, bits_v6 } => {
                let text = value
                    .as_str()
                    .ok_or(Failure::WrongType("an IP address string"))?;
                let ip: IpAddr = text
                    .trim()
                    .parse()
                    .map_err(|_| Failure::Invalid("an IPv4 or IPv6 address"))?;
                let bits = if ip.is_ipv4() { *bits_v4 } else { *bits_v6 };
                write!(scratch, "{}/{bits}", network(ip, bits))
            }
            Self::Hour => {
                let text = value
                    .as_str()
                    .ok_or(Failure::WrongType("an RFC 3339 timestamp string"))?;
                let time = OffsetDateTime::parse(text, &Rfc3339)
                    .map_err(|_| Failure::Invalid("an RFC 3339 timestamp"))?;
                let utc = time.to_offset(UtcOffset::UTC);
                write!(
                    scratch,
                    "{:04}-{:02}-{:02}T{:02}:00:00Z",
                    utc.year(),
                    u8::from(utc.month()),
                    utc.day(),
                    utc.hour()
                )
            }
            Self::Round { step } => {
                let Scalar::Number(number, _) = value else {
                    return Err(Failure::WrongType("a number"));
                };
                return round(number, *step, out);
            }
        }
        .expect("writing to a String cannot fail");
        write_string(out, scratch);
        Ok(())
    }
}

/// A number to the nearest multiple of `step`, as a JSON number: integers stay integers
/// when the step is integral.
fn round(number: Number, step: f64, out: &mut Vec<u8>) -> Result<(), Failure> {
    let integral_step = step.fract() == 0.0 && step <= i64::MAX as f64;
    let as_i64 = match number {
        Number::I64(n) => Some(n),
        Number::U64(n) => i64::try_from(n).ok(),
        Number::F64(_) => None,
    };
    if let (Some(n), true) = (as_i64, integral_step) {
        let s = step as i64;
        // Up by `s - remainder` or down by `remainder`: each can overflow at the ends of
        // the range (i64::MIN rounds down past it), the sum `remainder * 2` too.
        let remainder = n.rem_euclid(s);
        let rounded = if remainder >= s - remainder {
            n.checked_add(s - remainder)
        } else {
            n.checked_sub(remainder)
        };
        let rounded = rounded.ok_or(Failure::Invalid(
            "a number that can be rounded without overflow",
        ))?;
        let _ = write!(out, "{rounded}");
        return Ok(());
    }
    let rounded = (number.as_f64() / step).round() * step;
    if !rounded.is_finite() {
        return Err(Failure::Invalid("a finite number"));
    }
    serde_json::to_writer(out, &rounded).map_err(|_| Failure::Invalid("a finite number"))
}

/// The network of `ip` with its first `bits` bits (all of them past the address's length).
pub(crate) fn network(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(bits)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(bits)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use serde_json::Value;

    /// Applies `g` to a JSON value the way the record path sees it.
    fn apply(g: Generalization, v: Value) -> Result<Value, Failure> {
        let text = v.to_string();
        let scalar = match &v {
            Value::String(s) => Scalar::Str(s),
            Value::Number(n) => Scalar::Number(
                if let Some(u) = n.as_u64() {
                    Number::U64(u)
                } else if let Some(i) = n.as_i64() {
                    Number::I64(i)
                } else {
                    Number::F64(n.as_f64().unwrap())
                },
                &text,
            ),
            _ => Scalar::Other,
        };
        let mut out = Vec::new();
        g.apply(
            scalar,
            Some(time::macros::date!(2026 - 11 - 21)),
            &mut String::new(),
            &mut out,
        )?;
        Ok(serde_json::from_slice(&out).expect("operators write JSON"))
    }

    #[test]
    fn dates() {
        assert_eq!(
            apply(Generalization::Year, json!("1987-04-12")),
            Ok(json!("1987"))
        );
        assert_eq!(
            apply(Generalization::Month, json!("1987-04-12")),
            Ok(json!("1987-04"))
        );
        assert_eq!(
            apply(Generalization::Year, json!("2026-11-21T14:03:22.512Z")),
            Ok(json!("2026"))
        );
        assert_eq!(
            apply(Generalization::AgeBand { width: 10 }, json!("1987-04-12")),
            Ok(json!("30-39"))
        );
        assert_eq!(
            apply(Generalization::AgeBand { width: 5 }, json!("1986-11-22")),
            Ok(json!("35-39")),
            "birthday tomorrow: still 39"
        );
        assert_eq!(
            apply(Generalization::AgeBand { width: 10 }, json!("1986-11-21")),
            Ok(json!("40-49"))
        );
        assert!(matches!(
            apply(Generalization::AgeBand { width: 10 }, json!("2030-01-01")),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            apply(Generalization::Year, json!("Dupont Émilie")),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            apply(Generalization::Year, json!(1987)),
            Err(Failure::WrongType(_))
        ));
    }

    #[test]
    fn networks_prefixes_hours_rounding() {
        let ip = Generalization::IpNetwork {
            bits_v4: 24,
            bits_v6: 48,
        };
        assert_eq!(
            apply(ip.clone(), json!("192.0.2.44")),
            Ok(json!("192.0.2.0/24"))
        );
        assert_eq!(
            apply(ip.clone(), json!("2001:db8:abcd:12::1")),
            Ok(json!("2001:db8:abcd::/48"))
        );
        assert!(matches!(
            apply(ip, json!("not an ip")),
            Err(Failure::Invalid(_))
        ));
        let ip16 = Generalization::IpNetwork {
            bits_v4: 16,
            bits_v6: 0,
        };
        assert_eq!(
            apply(ip16.clone(), json!("10.1.2.3")),
            Ok(json!("10.1.0.0/16"))
        );
        assert_eq!(apply(ip16, json!("::1")), Ok(json!("::/0")));
        assert_eq!(
            apply(Generalization::Prefix { length: 2 }, json!("75011")),
            Ok(json!("75"))
        );
        assert_eq!(
            apply(Generalization::Prefix { length: 2 }, json!(75011)),
            Ok(json!("75"))
        );
        assert_eq!(
            apply(Generalization::Prefix { length: 3 }, json!("Éméa")),
            Ok(json!("Émé"))
        );
        assert_eq!(
            apply(Generalization::Hour, json!("2026-11-21T14:03:22.512Z")),
            Ok(json!("2026-11-21T14:00:00Z"))
        );
        assert_eq!(
            apply(Generalization::Hour, json!("2026-11-21T14:03:22+05:30")),
            Ok(json!("2026-11-21T08:00:00Z"))
        );
        assert_eq!(
            apply(Generalization::Round { step: 100.0 }, json!(4520)),
            Ok(json!(4500))
        );
        assert_eq!(
            apply(Generalization::Round { step: 100.0 }, json!(4550)),
            Ok(json!(4600))
        );
        assert_eq!(
            apply(Generalization::Round { step: 100.0 }, json!(-4520)),
            Ok(json!(-4500))
        );
        assert_eq!(
            apply(Generalization::Round { step: 0.5 }, json!(1.3)),
            Ok(json!(1.5))
        );
        // At the ends of the range: refused where the multiple is past it, never a panic
        // nor a wrapped value.
        let round = |step: f64, n: i64| apply(Generalization::Round { step }, json!(n));
        assert!(matches!(round(10.0, i64::MIN), Err(Failure::Invalid(_))));
        assert_eq!(round(8.0, i64::MIN), Ok(json!(i64::MIN)));
        assert_eq!(round(10.0, i64::MIN + 7), Ok(json!(i64::MIN + 8)));
        assert!(matches!(round(10.0, i64::MAX), Err(Failure::Invalid(_))));
        assert_eq!(round(10.0, i64::MAX - 5), Ok(json!(i64::MAX - 7)));
        // A step past i64::MAX / 2: twice the remainder would overflow.
        let huge = 2f64.powi(62) * 1.5;
        assert_eq!(round(huge, -1), Ok(json!(0)));
        assert_eq!(round(huge, i64::MAX), Ok(json!(huge as i64)));
    }

    #[test]
    fn dates_parse_as_the_format_parser_does() {
        let reference = |text: &str| {
            Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
        };
        for text in [
            "1987-04-12",
            "2024-02-29",
            "2023-02-29",
            "1987-13-01",
            "1987-00-10",
            "1987-04-00",
            "1987-04-31",
            "0000-01-01",
            "9999-12-31",
            "+987-04-12",
            "1987/04/12",
            "1987-4-120",
            "19a7-04-12",
            "1987-04-1x",
            "１９87-04-1",
        ] {
            if text.len() == 10 {
                assert_eq!(parse_date(text), reference(text), "{text}");
            }
        }
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let spec = |to: &str| GeneralizeSpec {
            to: to.into(),
            width: None,
            length: None,
            bits: None,
            bits_v6: None,
            step: None,
        };
        let problem = |spec: GeneralizeSpec| spec.validate().unwrap_err().to_string();
        assert!(problem(spec("age_band")).contains("width"));
        assert!(problem(spec("decade")).contains("unknown generalize.to"));
        let mut s = spec("year");
        s.length = Some(2);
        assert!(problem(s).contains("length"));
        assert_eq!(
            spec("ip_network").validate(),
            Ok(Generalization::IpNetwork {
                bits_v4: 24,
                bits_v6: 48
            })
        );
    }
}
