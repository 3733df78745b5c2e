//! [`personal_values`]: what a leak check searches pseudonymized output for, and
//! [`leaked_fields`], that check for one event.
//!
//! A leak check looks for every personal value of every input event in the whole output,
//! so a value must not turn up there by chance. The machine-made parts of a pseudonymized
//! event (UUIDs, base64url tokens, SKUs, amounts, timestamps, IP networks, JSON keys) are
//! all ASCII letters, digits and `-_.:/`; a short value made of those alone (a postal code
//! `75011`, a name `Dupont`) occurs in thousands of SKUs or tokens. Such a value is given
//! as a JSON string, quotes included (`"75011"`), which only a whole field value matches.

use serde_json::Value;

/// Values shorter than this (in characters) are left out: `Lê`, `Eze`, `Zoë`.
pub const MIN_CHARS: usize = 4;

/// A value of machine-like characters is searched for bare from this length on.
const BARE_MACHINE_CHARS: usize = 8;

/// How a field is normalized before tokenization, hence which forms may leak.
#[derive(Clone, Copy)]
enum Forms {
    /// As written, trimmed, lowercased.
    Text,
    /// Also the digits (with a leading `+`), as the `digits` normalizer keeps them.
    Digits,
}

/// The personal fields of the default policy, with the forms to search for.
const PERSONAL_FIELDS: [(&str, Forms); 12] = [
    ("customer.loyalty_card", Forms::Digits),
    ("customer.first_name", Forms::Text),
    ("customer.last_name", Forms::Text),
    ("customer.email", Forms::Text),
    ("customer.phone", Forms::Digits),
    ("customer.birth_date", Forms::Text),
    ("customer.address.street", Forms::Text),
    ("customer.address.postal_code", Forms::Text),
    ("customer.address.city", Forms::Text),
    ("device.ip", Forms::Text),
    ("device.user_agent", Forms::Text),
    ("coupon.coupon_code", Forms::Text),
];

/// One form of a personal value, as searched for.
struct Searchable {
    /// The form itself.
    bare: String,
    /// The text to search JSON for: `bare`, or `bare` as a JSON string if it is short
    /// and machine-like.
    search: String,
}

/// The personal values of a valid event, none of which may appear in its pseudonymized
/// form: names, e-mail, phone, card, street, city, full postal code, birth date, full IP,
/// user agent and coupon code.
///
/// Each comes as written, trimmed, and lowercased (and as digits for card and phone),
/// without duplicates. Values under [`MIN_CHARS`] characters are left out. Short values
/// made only of ASCII letters, digits and `-_.:/` come as JSON strings with their quotes
/// (see the module documentation), so search JSON output for them as given and
/// case-insensitively with both sides lowercased.
///
/// ```
/// let event = serde_json::json!({
///     "customer": {"first_name": "Émilie", "last_name": "Dupont", "email": " Emilie.Dupont@Example.FR ",
///                  "address": {"postal_code": "75011", "country": "FR"}},
/// });
/// let values = simulator::personal_values(&event);
/// assert!(values.contains(&"Émilie".to_string()) && values.contains(&"émilie".to_string()));
/// assert!(values.contains(&"emilie.dupont@example.fr".to_string()));
/// assert!(values.contains(&"\"75011\"".to_string()) && values.contains(&"\"Dupont\"".to_string()));
/// assert!(!values.iter().any(|v| v.contains("FR\"")));
/// ```
pub fn personal_values(event: &Value) -> Vec<String> {
    let mut forms = Vec::new();
    for (path, kind) in PERSONAL_FIELDS {
        if let Some(raw) = string_at(event, path) {
            push_forms(&mut forms, raw, kind);
        }
    }
    forms.into_iter().map(|form| form.search).collect()
}

/// Every string value of `event` outside its personal fields, trimmed and lowercased:
/// what its pseudonymized form may carry as it is (store ids, SKUs, campaign ids, ...).
///
/// A personal value that is also one of these (a customer's postal code `1234` and a store
/// numbered `1234`) is no evidence of a leak when it shows up in the output: leak checks
/// leave such a value out.
///
/// ```
/// let event = serde_json::json!({"store_id": " 1234 ", "customer": {"address": {"postal_code": "1234"}}});
/// assert_eq!(simulator::kept_values(&event), ["1234"]);
/// ```
pub fn kept_values(event: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &mut String, out: &mut Vec<String>) {
        match value {
            Value::String(text)
                if !PERSONAL_FIELDS.iter().any(|(personal, _)| personal == path) =>
            {
                out.push(text.trim().to_lowercase());
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path, out)),
            Value::Object(fields) => {
                for (key, item) in fields {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(event, &mut String::new(), &mut out);
    out
}

/// The paths of the personal fields of `input` (a valid event) whose value shows up in
/// `output` (its pseudonymized form) or in the output record's `key`, case-insensitively,
/// in any form [`personal_values`] gives, unless that form is also part of one of the
/// event's [`kept_values`]. Empty when nothing leaked.
///
/// Only paths are returned, never values, so the result can be printed.
///
/// ```
/// let input = serde_json::json!({"customer": {"first_name": "Émilie", "email": "emilie@example.fr",
///                                             "loyalty_card": "6280 0012 3456 7890"}});
/// let output = serde_json::json!({"customer": {"email": "v1.2bM4nYfQ0xkq6kRt9fS0Qw", "note": "ÉMILIE"}});
/// assert_eq!(simulator::leaked_fields(&input, &output, Some(b"v1.kx8e0aF1rQ3yTn0mLd2cPg")), ["customer.first_name"]);
/// assert_eq!(simulator::leaked_fields(&input, &output, Some(b"6280001234567890")), ["customer.loyalty_card", "customer.first_name"]);
/// ```
pub fn leaked_fields(input: &Value, output: &Value, key: Option<&[u8]>) -> Vec<&'static str> {
    let output = output.to_string().to_lowercase();
    let key = key.map(|key| String::from_utf8_lossy(key).trim().to_lowercase());
    let kept = kept_values(input);
    let mut forms = Vec::new();
    let mut leaked = Vec::new();
    for (path, kind) in PERSONAL_FIELDS {
        let Some(raw) = string_at(input, path) else {
            continue;
        };
        forms.clear();
        push_forms(&mut forms, raw, kind);
        let found = forms.iter().any(|form| {
            let (bare, search) = (form.bare.to_lowercase(), form.search.to_lowercase());
            // The output may hold it as (part of) a kept value: a short form matches only a
            // whole value, a long one anywhere.
            let whole = search != bare;
            if kept.iter().any(|value| {
                if whole {
                    *value == bare
                } else {
                    value.contains(&bare)
                }
            }) {
                return false;
            }
            output.contains(&search)
                || key.as_deref().is_some_and(|key| {
                    // A key is one bare value: a short form must be all of it.
                    key == bare || (bare == search && key.contains(&bare))
                })
        });
        if found {
            leaked.push(path);
        }
    }
    leaked
}

/// The string at a dotted object path.
fn string_at<'v>(event: &'v Value, path: &str) -> Option<&'v str> {
    path.split('.')
        .try_fold(event, |value, key| value.get(key))?
        .as_str()
}

/// Appends the searchable forms of `raw` not already in `forms`.
fn push_forms(forms: &mut Vec<Searchable>, raw: &str, kind: Forms) {
    let trimmed = raw.trim();
    push_searchable(forms, raw.to_owned());
    push_searchable(forms, trimmed.to_owned());
    push_searchable(forms, trimmed.to_lowercase());
    if let Forms::Digits = kind {
        push_searchable(forms, digits(trimmed));
    }
}

fn push_searchable(forms: &mut Vec<Searchable>, bare: String) {
    if bare.chars().count() < MIN_CHARS || forms.iter().any(|form| form.bare == bare) {
        return;
    }
    let machine_like = bare
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    let search = if machine_like && bare.len() < BARE_MACHINE_CHARS {
        serde_json::to_string(&bare).expect("a string always serializes")
    } else {
        bare.clone()
    };
    forms.push(Searchable { bare, search });
}

/// The `digits` normalizer: a leading `+` kept, then ASCII digits only.
fn digits(value: &str) -> String {
    let plus = value.starts_with('+').then_some('+');
    plus.into_iter()
        .chain(value.chars().filter(char::is_ascii_digit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_event() {
        let event = serde_json::json!({
            "customer": {
                "loyalty_card": "6280 0012 3456 7890",
                "first_name": "Lê",
                "last_name": "O'Brien",
                "phone": "+33 (0)6 12 34 56 78",
                "birth_date": null,
                "address": {"city": "Lyon"},
            },
            "device": {"ip": "1.2.3.4"},
        });
        assert_eq!(
            personal_values(&event),
            [
                "6280 0012 3456 7890",
                "6280001234567890",
                "O'Brien",
                "o'brien",
                "+33 (0)6 12 34 56 78",
                "+330612345678",
                "\"Lyon\"",
                "\"lyon\"",
                "\"1.2.3.4\"",
            ]
        );
    }

    #[test]
    fn a_value_the_event_keeps_anyway_is_no_leak() {
        let event = serde_json::json!({
            "store_id": "1234",
            "customer": {"address": {"postal_code": "1234", "city": "Namur"}},
        });
        let output = serde_json::json!({"store_id": "1234"});
        assert!(leaked_fields(&event, &output, None).is_empty());
        let elsewhere = serde_json::json!({"store_id": "1234", "note": "Namur"});
        assert_eq!(
            leaked_fields(&event, &elsewhere, None),
            ["customer.address.city"]
        );
    }

    #[test]
    fn an_event_leaks_all_its_personal_fields_into_itself_and_its_card_into_a_key() {
        let event: Value =
            serde_json::from_str(include_str!("../../schemas/coupon_redemption.json")).unwrap();
        let all: Vec<&str> = PERSONAL_FIELDS
            .iter()
            .map(|(path, _)| *path)
            .filter(|path| string_at(&event, path).is_some())
            .collect();
        assert_eq!(all.len(), 12, "the example event has every personal field");
        assert_eq!(leaked_fields(&event, &event, None), all);
        let nothing = serde_json::json!({"event_id": event["event_id"]});
        assert!(leaked_fields(&event, &nothing, Some(b"v1.kx8e0aF1rQ3yTn0mLd2cPg")).is_empty());
        assert_eq!(
            leaked_fields(&event, &nothing, Some(b"6280 0012 3456 7890")),
            ["customer.loyalty_card"]
        );
    }
}
