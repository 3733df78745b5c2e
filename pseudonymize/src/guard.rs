//! The leak guard: checks that a record has the *output* shape of a policy before it
//! leaves the premises.
//!
//! It is the sink's last line of defence and needs no key: every field must be one the
//! policy emits (no dropped field, no unknown field), every token field must match the
//! token grammar of `TOKEN-SPEC.md`, every encrypted field the encryption grammar, every
//! generalized field the shape its operator produces, and the record key must be a token.
//! A raw event, an event pseudonymized with another policy, or a producer bug upstream
//! fails here instead of crossing the link.

use serde_json::{Map, Value};

use crate::error::{Reason, Rejection};
use crate::generalize::Generalization;
use crate::policy::{Node, ObjectNode, Policy, Rule};
use crate::token::{is_encrypted, is_token};

/// Checks records against the output shape of a policy.
#[derive(Debug, Clone)]
pub struct LeakGuard {
    policy: Policy,
}

fn fail(message: String) -> Rejection {
    Rejection::new(Reason::LeakGuard, message)
}

impl LeakGuard {
    /// A guard for the output of `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }

    /// Checks one record; the message names the field and the rule, never the value.
    pub fn check(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), Rejection> {
        if let Some(key) = key {
            if !std::str::from_utf8(key).is_ok_and(is_token) {
                return Err(fail("the record key is not a token".into()));
            }
        }
        let value: Value =
            serde_json::from_slice(payload).map_err(|_| fail("the payload is not JSON".into()))?;
        let Value::Object(map) = &value else {
            return Err(fail("the payload is not a JSON object".into()));
        };
        check_object(&self.policy.root, map)
    }
}

fn check_object(node: &ObjectNode, map: &Map<String, Value>) -> Result<(), Rejection> {
    for (key, value) in map {
        let child = node.child(key).ok_or_else(|| {
            fail(format!(
                "field `{}` is not in the policy's output",
                node.child_path(key)
            ))
        })?;
        check_node(child, value, &|| node.child_path(key))?;
    }
    Ok(())
}

fn check_node(node: &Node, value: &Value, path: &dyn Fn() -> String) -> Result<(), Rejection> {
    match (node, value) {
        (Node::Leaf(Rule::Drop), _) => {
            Err(fail(format!("field `{}` must have been dropped", path())))
        }
        (_, Value::Null) => Ok(()),
        (Node::Leaf(rule), value) => {
            if leaf_ok(rule, value) {
                Ok(())
            } else {
                Err(fail(format!(
                    "field `{}` does not have the shape of its rule's output",
                    path()
                )))
            }
        }
        (Node::Object(inner), Value::Object(map)) => check_object(inner, map),
        (Node::Array(element, array_path), Value::Array(items)) => {
            let element_path = || format!("{array_path}[]");
            items
                .iter()
                .try_for_each(|item| check_node(element, item, &element_path))
        }
        _ => Err(fail(format!("field `{}` has the wrong structure", path()))),
    }
}

fn leaf_ok(rule: &Rule, value: &Value) -> bool {
    let text = value.as_str();
    match rule {
        Rule::Keep => !matches!(value, Value::Object(_) | Value::Array(_)),
        Rule::Drop => false,
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

fn generalized_ok(generalization: &Generalization, value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    match generalization {
        Generalization::Year => text.len() == 4 && all_digits(text),
        Generalization::Month => text.len() == 7 && all_digits(&text[..4]) && &text[4..5] == "-" && all_digits(&text[5..]),
        Generalization::AgeBand { width } => text.split_once('-').is_some_and(|(low, high)| {
            all_digits(low)
                && all_digits(high)
                && matches!((low.parse::<u32>(), high.parse::<u32>()), (Ok(low), Ok(high)) if low % width == 0 && high + 1 == low + width)
        }),
        Generalization::Prefix { length } => value.is_string() && text.chars().count() <= *length,
        Generalization::IpNetwork { bits_v4, bits_v6 } => text.split_once('/').is_some_and(|(addr, bits)| {
            match addr.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => {
                    bits == bits_v4.to_string() && u32::from(v4) & !u32::MAX.checked_shl(32 - u32::from(*bits_v4)).unwrap_or(0) == 0
                }
                Ok(std::net::IpAddr::V6(v6)) => {
                    bits == bits_v6.to_string() && u128::from(v6) & !u128::MAX.checked_shl(128 - u32::from(*bits_v6)).unwrap_or(0) == 0
                }
                Err(_) => false,
            }
        }),
        Generalization::Hour => {
            text.len() == 20 && text.ends_with(":00:00Z") && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
        }
        Generalization::Round { step } => value.as_f64().is_some_and(|x| {
            let q = x / step;
            (q - q.round()).abs() < 1e-9
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasterSecret, Pseudonymizer};

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
