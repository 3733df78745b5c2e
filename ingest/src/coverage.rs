//! Whether the policy's rules meet the events: the first [`EVENTS`] events are read a
//! second time for their field paths, and every rule whose path none of them had is then
//! warned about by name. A typo (`customer.emial`) matches nothing while the field it
//! meant, left without a rule, quarantines every event as `unknown_field`; this says
//! which rule to look at, without a schema configured.

use std::collections::BTreeSet;

use pseudonymize::Policy;
use serde_json::Value;
use tracing::warn;

/// How many events are looked at: enough for every optional field of a retail event to
/// show up, few enough that the second parse costs nothing after the first seconds.
pub(crate) const EVENTS: u64 = 1000;

/// The rules no event looked at has matched so far.
#[derive(Debug)]
pub(crate) struct Coverage {
    unmatched: BTreeSet<String>,
    seen: u64,
    reported: bool,
}

impl Coverage {
    /// Every rule of `policy`, none matched yet.
    pub(crate) fn new(policy: &Policy) -> Self {
        Self {
            unmatched: policy
                .rules()
                .iter()
                .map(|(path, _)| path.clone())
                .collect(),
            seen: 0,
            reported: false,
        }
    }

    /// Notes the field paths of `event` (a JSON object; anything else is not counted),
    /// and warns once [`EVENTS`] events were seen.
    pub(crate) fn observe(&mut self, event: &[u8]) {
        if self.reported {
            return;
        }
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(event) else {
            return;
        };
        self.seen += 1;
        let mut present = BTreeSet::new();
        for (name, value) in &fields {
            paths(value, name.clone(), &mut present);
        }
        self.unmatched.retain(|path| !present.contains(path));
        if self.seen >= EVENTS {
            self.report();
        }
    }

    /// Warns about every rule no event matched (at most once; nothing before any event).
    pub(crate) fn report(&mut self) {
        if self.reported || self.seen == 0 {
            return;
        }
        self.reported = true;
        for path in &self.unmatched {
            warn!(
                path,
                events = self.seen,
                "Policy rule matched no field of the first events (a typo leaves the field it meant without a rule, and its events quarantined as unknown_field): check the policy with `pseudopipe schema check --policy POLICY --schema SCHEMA` against the raw events' schema."
            );
        }
    }
}

/// `value`'s path and those under it, in the policy's notation.
fn paths(value: &Value, path: String, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (name, value) in fields {
                paths(value, format!("{path}.{name}"), out);
            }
        }
        Value::Array(items) => {
            let items_path = format!("{path}[]");
            for item in items {
                paths(item, items_path.clone(), out);
            }
            out.insert(items_path);
        }
        _ => {}
    }
    out.insert(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");
    const EVENT: &str = include_str!("../../schemas/coupon_redemption.json");

    #[test]
    fn a_rule_no_event_matched_is_left_once_the_first_events_were_seen() {
        let typo = POLICY.replace("\"customer.email\"", "\"customer.emial\"");
        let mut coverage = Coverage::new(&Policy::from_toml(&typo).unwrap());
        for _ in 0..EVENTS - 1 {
            coverage.observe(EVENT.as_bytes());
        }
        coverage.observe(b"not json");
        assert!(!coverage.reported);
        coverage.observe(EVENT.as_bytes());
        assert!(coverage.reported);
        assert!(coverage.unmatched.contains("customer.emial"));
        assert!(!coverage.unmatched.contains("basket.items[].sku"));
        assert!(!coverage.unmatched.contains("customer.loyalty_card"));
    }
}
