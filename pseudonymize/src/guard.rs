//! The leak guard: checks that a record has the *output* shape of a policy before it
//! leaves the premises.
//!
//! It is the sink's last line of defence and needs no key: every field must be one the
//! policy emits (no dropped field, no unknown field), every token field must match the
//! token grammar of `docs/token-spec.md`, every encrypted field the encryption grammar, every
//! generalized field the shape its operator produces, and the record key must be a token.
//! A raw event, an event pseudonymized with another policy, or a producer bug upstream
//! fails here instead of crossing the link.

use std::cell::RefCell;

use crate::error::{Reason, Rejection};
use crate::generalize::{Generalization, Scalar};
use crate::json::{unescape, Kind};
use crate::policy::{Policy, Rule};
use crate::token::{is_encrypted, is_token};
use crate::transform::{personal_rejection, Kept, Value};
use crate::tree::Shape;
use crate::walk::{unknown_field_at, Malformed, Problem, Step, Walk};

/// Checks records against the output shape of a policy.
#[derive(Debug, Clone)]
pub struct LeakGuard {
    policy: Policy,
}

fn fail(message: String) -> Rejection {
    Rejection::new(Reason::LeakGuard, message)
}

/// A walk and a string, reused from one record to the next on a thread.
struct Scratch {
    policy: u64,
    walk: Walk,
    text: String,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl LeakGuard {
    /// A guard for the output of `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }

    /// The policy whose output the guard checks.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks one record in one pass over its bytes, without building a value; the
    /// message names the field and the rule, never the value. A field twice in one object
    /// fails: the guard judges every byte it lets through.
    pub fn check(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), Rejection> {
        if let Some(key) = key {
            if !std::str::from_utf8(key).is_ok_and(is_token) {
                return Err(fail("the record key is not a token".into()));
            }
        }
        let payload =
            std::str::from_utf8(payload).map_err(|_| fail("the payload is not JSON".into()))?;
        SCRATCH.with_borrow_mut(|slot| {
            let scratch = match slot {
                Some(scratch) if scratch.policy == self.policy.id => scratch,
                _ => slot.insert(Scratch {
                    policy: self.policy.id,
                    walk: Walk::new(&self.policy.tree, &self.policy.limits, &[]),
                    text: String::new(),
                }),
            };
            self.check_walked(payload, scratch)
        })
    }

    fn check_walked(&self, payload: &str, scratch: &mut Scratch) -> Result<(), Rejection> {
        let tree = &self.policy.tree;
        scratch
            .walk
            .run(tree, payload)
            .map_err(|malformed| match malformed {
                Malformed::Syntax(_) => fail("the payload is not JSON".into()),
                Malformed::NotAnObject(_) => fail("the payload is not a JSON object".into()),
                Malformed::Duplicate(node) => fail(format!(
                    "field `{}` appears twice in one object",
                    tree.node(node).path
                )),
                Malformed::Limit { limit, node } => Rejection::new(
                    limit.reason(),
                    limit.describe(&self.policy.limits, &tree.node(node).path),
                ),
            })?;
        let (steps, problem) = match scratch.walk.problem {
            Some((at, problem)) => (&scratch.walk.steps[..at], Some(problem)),
            None => (&scratch.walk.steps[..], None),
        };
        for step in steps {
            let Step::Value {
                node,
                kind,
                start,
                end,
                ..
            } = *step
            else {
                continue;
            };
            let path = &tree.node(node).path;
            let rule = match &tree.node(node).shape {
                Shape::Leaf(Rule::Drop) => {
                    return Err(fail(format!("field `{path}` must have been dropped")))
                }
                Shape::Leaf(Rule::Keep { detect }) => {
                    let value = Value {
                        payload,
                        kind,
                        start,
                        end,
                    };
                    match value.kept(*detect, &mut scratch.text) {
                        Ok(()) => continue,
                        Err(Kept::NotAScalar) => return Err(not_its_shape(path)),
                        Err(Kept::Personal(detector)) => {
                            return Err(personal_rejection(path, detector))
                        }
                    }
                }
                Shape::Leaf(rule) if kind != Kind::Null => rule,
                _ => continue,
            };
            let raw = &payload[start..end];
            let scalar = match kind {
                Kind::String { escaped: true } => Scalar::Str(unescape(raw, &mut scratch.text)),
                Kind::String { escaped: false } => Scalar::Str(raw),
                Kind::Number(n) => Scalar::Number(n, raw),
                _ => Scalar::Other,
            };
            let container = matches!(kind, Kind::Object | Kind::Array);
            if container || !leaf_ok(rule, scalar) {
                return Err(not_its_shape(path));
            }
        }
        match problem {
            None => Ok(()),
            Some(Problem::Unknown { parent }) => Err(fail(format!(
                "{} is not in the policy's output",
                unknown_field_at(tree, parent)
            ))),
            Some(Problem::NotAnObject { node, .. } | Problem::NotAnArray { node, .. }) => {
                Err(fail(format!(
                    "field `{}` has the wrong structure",
                    tree.node(node).path
                )))
            }
        }
    }
}

pub(crate) fn not_its_shape(path: &str) -> Rejection {
    fail(format!(
        "field `{path}` does not have the shape of its rule's output"
    ))
}

/// Whether a non-null scalar has the shape of `rule`'s output (a `keep` rule's values are
/// checked by the detectors instead).
pub(crate) fn leaf_ok(rule: &Rule, value: Scalar<'_>) -> bool {
    let text = match value {
        Scalar::Str(text) => Some(text),
        _ => None,
    };
    match rule {
        Rule::Keep { .. } | Rule::Drop => false,
        Rule::Token { .. } => text.is_some_and(is_token),
        Rule::Encrypt { .. } => text.is_some_and(is_encrypted),
        Rule::Mask { keep_last } => text.is_some_and(|t| {
            let total = t.chars().count();
            t.chars()
                .take(total.saturating_sub(*keep_last))
                .all(|c| c == '*')
        }),
        Rule::Generalize(g) => generalized_ok(g, value),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `"1980-1989"`: ten years from a multiple of ten.
fn is_decade(text: &str) -> bool {
    text.split_once('-').is_some_and(|(low, high)| {
        low.len() == 4
            && all_digits(low)
            && all_digits(high)
            && matches!((low.parse::<u32>(), high.parse::<u32>()), (Ok(low), Ok(high)) if low % 10 == 0 && high == low + 9)
    })
}

fn generalized_ok(generalization: &Generalization, value: Scalar<'_>) -> bool {
    let text = match value {
        Scalar::Str(text) => text,
        _ => "",
    };
    match generalization {
        // A year, or the decade enforcement of k coarsens it to (`crate::risk`).
        Generalization::Year => (text.len() == 4 && all_digits(text)) || is_decade(text),
        Generalization::Month => text.len() == 7 && all_digits(&text[..4]) && &text[4..5] == "-" && all_digits(&text[5..]),
        Generalization::AgeBand { width } => text.split_once('-').is_some_and(|(low, high)| {
            all_digits(low)
                && all_digits(high)
                && matches!((low.parse::<u32>(), high.parse::<u32>()), (Ok(low), Ok(high)) if low % width == 0 && high + 1 == low + width)
        }),
        Generalization::Prefix { length } => matches!(value, Scalar::Str(_)) && text.chars().count() <= *length,
        // The rule's network, or a wider one (enforcement of k coarsens it, `crate::risk`).
        Generalization::IpNetwork { bits_v4, bits_v6 } => text.split_once('/').is_some_and(|(addr, bits)| {
            let Some(bits) = bits.parse::<u8>().ok().filter(|bits| *bits > 0) else {
                return false;
            };
            addr.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                bits <= if ip.is_ipv4() { *bits_v4 } else { *bits_v6 } && crate::generalize::network(ip, bits) == ip
            })
        }),
        Generalization::Hour => {
            text.len() == 20 && text.ends_with(":00:00Z") && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
        }
        Generalization::Round { step } => matches!(value, Scalar::Number(n, _) if {
            let q = n.as_f64() / step;
            (q - q.round()).abs() < 1e-9
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasterSecret, Pseudonymizer};
    use serde_json::Value;

    const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");
    const EVENT: &str = include_str!("../../schemas/coupon_redemption.json");

    fn guard_and_output() -> (LeakGuard, Vec<u8>, Option<String>) {
        let policy = Policy::from_toml(POLICY).unwrap();
        let secret = MasterSecret::from_bytes([3; 32]);
        let engine = Pseudonymizer::new(policy.clone(), [("brand-a".to_string(), 1, &secret)]);
        let (out, key) = engine.pseudonymize(EVENT.as_bytes()).unwrap();
        (LeakGuard::new(policy), out, key)
    }

    #[test]
    fn pseudonymized_output_passes() {
        let (guard, out, key) = guard_and_output();
        guard
            .check(key.as_deref().map(str::as_bytes), &out)
            .unwrap();
    }

    /// `out` with `from` (which must be in it) replaced by `to`.
    fn edited(out: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.contains(from), "{from} is in {text}");
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn hostile_records_fail_with_their_reason_and_no_value() {
        let (guard, out, key) = guard_and_output();
        let key = key.as_deref().map(str::as_bytes);
        let text = String::from_utf8(out.clone()).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        let email = value["customer"]["email"].as_str().unwrap().to_owned();
        let email_member = format!(r#""email":"{email}""#);
        let raw = "emilie.dupont@example.fr";
        let leak = Reason::LeakGuard;
        let cases: Vec<(&str, Vec<u8>, Reason, &str)> = vec![
            (
                "the raw address, then a valid token, under one key",
                edited(&out, &email_member, &format!(r#""email":"{raw}",{email_member}"#)),
                leak,
                "field `customer.email` appears twice in one object",
            ),
            (
                "the same twice, the second key escaped",
                edited(&out, &email_member, &format!(r#""email":"{raw}","em\u0061il":"{email}""#)),
                leak,
                "field `customer.email` appears twice in one object",
            ),
            (
                "an escaped spelling of a token field holding a raw value",
                edited(&out, &email_member, &format!(r#""em\u0061il":"{raw}""#)),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "an escaped spelling of a dropped field",
                edited(&out, r#""customer":{"#, r#""customer":{"first_n\u0061me":"Émilie","#),
                leak,
                "field `customer.first_name` must have been dropped",
            ),
            (
                "a second record after the first",
                format!(r#"{text}{{"customer":{{"email":"{raw}"}}}}"#).into_bytes(),
                leak,
                "the payload is not JSON",
            ),
            (
                "trailing garbage",
                format!("{text} x").into_bytes(),
                leak,
                "the payload is not JSON",
            ),
            (
                "a byte-order mark",
                format!("\u{feff}{text}").into_bytes(),
                leak,
                "the payload is not JSON",
            ),
            (
                "a number where a token goes",
                edited(&out, &email_member, r#""email":33612345678"#),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "an object where a token goes",
                edited(&out, &email_member, &format!(r#""email":{{"v":"{raw}"}}"#)),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "an array where a token goes",
                edited(&out, &email_member, &format!(r#""email":["{email}","{raw}"]"#)),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "a boolean where a token goes",
                edited(&out, &email_member, r#""email":true"#),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "a token of version 0",
                edited(&out, &email_member, &format!(r#""email":"v0{}""#, &email[2..])),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "a token whose version has a leading zero",
                edited(&out, &email_member, &format!(r#""email":"v01{}""#, &email[2..])),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "a token one character short",
                edited(&out, &email_member, &format!(r#""email":"{}""#, &email[..email.len() - 1])),
                leak,
                "field `customer.email` does not have the shape of its rule's output",
            ),
            (
                "an object in a kept field",
                edited(&out, r#""currency":"EUR""#, &format!(r#""currency":{{"EUR":"{raw}"}}"#)),
                leak,
                "field `coupon.currency` does not have the shape of its rule's output",
            ),
            (
                "an e-mail address in a kept field",
                edited(&out, r#""currency":"EUR""#, &format!(r#""currency":"{raw}""#)),
                Reason::PersonalValueInKeptField,
                "`coupon.currency` holds what looks like an e-mail address; if the field may hold one, add \"email\" to its `allow`",
            ),
            (
                "an unknown key that is personal data",
                edited(&out, r#""customer":{"#, &format!(r#""customer":{{"{raw}":1,"#)),
                leak,
                "an unknown field in `customer` is not in the policy's output",
            ),
        ];
        for (what, record, reason, message) in cases {
            let rejection = guard.check(key, &record).expect_err(what);
            assert_eq!(
                (rejection.reason, rejection.message.as_str()),
                (reason, message),
                "{what}"
            );
            assert!(!rejection.message.contains("emilie"), "{what}");
        }
        let spaced = format!(" \n{text}\r\n\t ");
        guard
            .check(key, spaced.as_bytes())
            .expect("whitespace around the record is fine");
    }

    #[test]
    fn a_well_formed_token_is_all_the_guard_can_check_without_keys() {
        // The sink holds no key: a token of another domain, tenant or key version is as
        // meaningless to it as ours, and as pseudonymous (docs/token-spec.md's tokens carry
        // only their version).
        let (guard, out, key) = guard_and_output();
        let key = key.as_deref().map(str::as_bytes);
        let value: Value = serde_json::from_slice(&out).unwrap();
        let email = value["customer"]["email"].as_str().unwrap();
        let other =
            crate::TokenKey::derive(&MasterSecret::from_bytes([4; 32]), 9, "brand-z", "customer")
                .token(b"emilie.dupont@example.fr");
        let record = edited(&out, email, &other);
        guard
            .check(key, &record)
            .expect("a token of another key is a token");
    }

    #[test]
    fn raw_events_and_tampered_outputs_fail() {
        let (guard, out, key) = guard_and_output();
        let key = key.as_deref().map(str::as_bytes);
        assert_eq!(
            guard.check(None, EVENT.as_bytes()).unwrap_err().reason,
            Reason::LeakGuard,
            "a raw event never passes"
        );
        assert!(
            guard.check(Some(b"6280 0012 3456 7890"), &out).is_err(),
            "a raw record key never passes"
        );
        let value: Value = serde_json::from_slice(&out).unwrap();
        let tampered: Vec<fn(&mut Value)> = vec![
            |v| v["customer"]["email"] = "emilie.dupont@example.fr".into(),
            |v| v["customer"]["first_name"] = "Émilie".into(),
            |v| v["customer"]["nickname"] = "Mimi".into(),
            |v| v["customer"]["birth_date"] = "1987-04-12".into(),
            |v| v["customer"]["address"]["postal_code"] = "75011".into(),
            |v| v["device"]["ip"] = "192.0.2.44".into(),
            |v| v["device"]["ip"] = "192.0.2.44/24".into(),
            |v| v["consent"] = "yes".into(),
            |v| v["basket"]["items"][0]["note"] = "gift".into(),
        ];
        for (i, edit) in tampered.iter().enumerate() {
            let mut v = value.clone();
            edit(&mut v);
            let rejection = guard
                .check(key, &serde_json::to_vec(&v).unwrap())
                .expect_err(&format!("case {i}"));
            assert!(
                !rejection.message.contains("Émilie") && !rejection.message.contains("75011"),
                "{}",
                rejection.message
            );
        }
    }
}
