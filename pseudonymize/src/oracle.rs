//! The record path as it was before the one-pass rewrite, kept as the oracle of the
//! differential test: parse into a `serde_json::Value`, walk it alongside the policy's
//! tree, rewrite it in place, serialize. Slow and simple on purpose. It follows the rules
//! added since (suspended tenants, consent, bridge pairs) the same simple way.

use serde_json::{Map, Value};
use time::Date;

use crate::error::{Reason, Rejection};
use crate::generalize::{parse_date, Failure, Scalar};
use crate::json::Number;
use crate::policy::{is_valid_tenant, Limits, Rule};
use crate::transform::{
    consent_wrong_type, no_consent, personal_rejection, suspended_rejection,
    unknown_tenant_rejection, Pseudonymizer, TenantKeys,
};
use crate::tree::{NodeId, Shape, Tree, ROOT};
use crate::walk::{unknown_field_at, Limit};

/// A bridge pair: the field's path, its domain, the old token, the new one.
pub(crate) type Pair = (String, String, String, String);

/// What the oracle makes of an event: the JSON output, the record key's token, and the
/// bridge pairs of its tenant's overlap (empty outside one).
pub(crate) type Output = (Value, Option<String>, Vec<Pair>);

/// What rewriting an event needs besides its values.
struct Context<'a> {
    keys: &'a TenantKeys,
    event_date: Option<Date>,
    token_domains: &'a [String],
    pairs: Vec<Pair>,
}

/// Pseudonymizes `payload` the old way.
pub(crate) fn pseudonymize(engine: &Pseudonymizer, payload: &[u8]) -> Result<Output, Rejection> {
    let policy = engine.policy();
    let tree = &policy.tree;
    let limit = policy.limits.max_event_bytes;
    if payload.len() > limit {
        return Err(Rejection::new(Reason::TooLarge, "too large"));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::new(Reason::InvalidUtf8, "not UTF-8"))?;
    let mut event: Value = serde_json::from_str(text).map_err(|error| {
        if error.to_string().starts_with("recursion limit exceeded") {
            Rejection::new(Reason::TooDeep, "too deep")
        } else {
            Rejection::new(Reason::MalformedJson, "malformed")
        }
    })?;
    let Value::Object(map) = &mut event else {
        return Err(Rejection::new(
            Reason::NotAnObject,
            format!("payload is a JSON {}, not an object", type_name(&event)),
        ));
    };
    if let Some((limit, node)) = object_limits(&policy.limits, tree, ROOT, map, 1) {
        return Err(Rejection::new(
            limit.reason(),
            limit.describe(&policy.limits, &tree.node(node).path),
        ));
    }
    for (path, node) in &policy.required {
        if matches!(resolve(tree, map, *node), None | Some(Value::Null)) {
            return Err(Rejection::new(
                Reason::MissingField,
                format!("required field `{path}` is missing or null"),
            ));
        }
    }
    let tenant = match policy
        .tenant_field
        .and_then(|node| resolve(tree, map, node))
    {
        None | Some(Value::Null) => policy.default_tenant(),
        Some(Value::String(name)) if is_valid_tenant(name) => name.as_str(),
        Some(Value::String(_)) => {
            return Err(Rejection::new(
                Reason::InvalidTenant,
                "the tenant field is not a valid tenant name ([a-z0-9_-]{1,64})",
            ))
        }
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidTenant,
                format!(
                    "the tenant field holds {}, not a string",
                    with_article(type_name(other))
                ),
            ))
        }
    }
    .to_owned();
    let keys = match engine.tenants().find(|(name, _)| *name == tenant) {
        Some((_, keys)) => keys,
        None if engine.suspended().any(|name| name == tenant) => {
            return Err(suspended_rejection(&tenant))
        }
        None => return Err(unknown_tenant_rejection(&tenant)),
    };
    if let Some(node) = policy.consent_field {
        let path = &tree.node(node).path;
        match resolve(tree, map, node) {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(no_consent(path, "false")),
            Some(Value::Null) => return Err(no_consent(path, "null")),
            None => return Err(no_consent(path, "absent")),
            Some(other) => return Err(consent_wrong_type(path, with_article(type_name(other)))),
        }
    }
    let event_date = policy
        .event_time_field
        .filter(|_| policy.needs_event_date)
        .and_then(|node| resolve(tree, map, node))
        .and_then(Value::as_str)
        .and_then(parse_date);
    let mut context = Context {
        keys,
        event_date,
        token_domains: policy.token_domains(),
        pairs: Vec::new(),
    };
    apply_object(tree, ROOT, map, &mut context)?;
    let record_key = match policy.record_key.and_then(|node| resolve(tree, map, node)) {
        Some(Value::String(token)) => Some(token.clone()),
        _ => None,
    };
    Ok((event, record_key, context.pairs))
}

/// How deep containers nest in `value` (0 for a scalar).
fn nesting(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// The first limit exceeded in object node `node` at nesting `depth`, in document order.
fn object_limits(
    limits: &Limits,
    tree: &Tree,
    node: NodeId,
    map: &Map<String, Value>,
    depth: usize,
) -> Option<(Limit, NodeId)> {
    if depth > limits.max_depth {
        return Some((Limit::Depth, node));
    }
    map.iter().enumerate().find_map(|(index, (key, value))| {
        if index >= limits.max_object_fields {
            return Some((Limit::ObjectFields, node));
        }
        match tree.child(node, key.as_bytes()) {
            Some(child) => value_limits(limits, tree, child, value, depth),
            None => (depth + nesting(value) > limits.max_depth && nesting(value) > 0)
                .then_some((Limit::Depth, node)),
        }
    })
}

/// The first limit exceeded in `value` of node `node`, inside a container at `depth`.
fn value_limits(
    limits: &Limits,
    tree: &Tree,
    node: NodeId,
    value: &Value,
    depth: usize,
) -> Option<(Limit, NodeId)> {
    match (&tree.node(node).shape, value) {
        (Shape::Object(_), Value::Object(map)) => object_limits(limits, tree, node, map, depth + 1),
        (Shape::Array(element), Value::Array(items)) => {
            if depth + 1 > limits.max_depth {
                return Some((Limit::Depth, node));
            }
            items.iter().enumerate().find_map(|(index, item)| {
                if index >= limits.max_array_len {
                    return Some((Limit::ArrayLen, node));
                }
                value_limits(limits, tree, *element, item, depth + 1)
            })
        }
        (Shape::Leaf(_), Value::String(text)) => {
            (text.len() > limits.max_string_bytes).then_some((Limit::StringBytes, node))
        }
        (_, value) => (nesting(value) > 0 && depth + nesting(value) > limits.max_depth)
            .then_some((Limit::Depth, node)),
    }
}

/// The value at the path of object-path node `node`.
fn resolve<'v>(tree: &Tree, map: &'v Map<String, Value>, node: NodeId) -> Option<&'v Value> {
    let path = &tree.node(node).path;
    let mut segments = path.split('.');
    let last = segments.next_back()?;
    let mut current = map;
    for segment in segments {
        current = current.get(segment)?.as_object()?;
    }
    current.get(last)
}

/// `name` with its article, as the record path's messages write it.
fn with_article(name: &'static str) -> &'static str {
    match name {
        "boolean" => "a boolean",
        "integer" => "an integer",
        "float" => "a float",
        "string" => "a string",
        "array" => "an array",
        "object" => "an object",
        other => other,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn apply_object(
    tree: &Tree,
    node: NodeId,
    map: &mut Map<String, Value>,
    context: &mut Context<'_>,
) -> Result<(), Rejection> {
    let mut failure = None;
    map.retain(|key, value| {
        if failure.is_some() {
            return true;
        }
        let outcome = match tree.child(node, key.as_bytes()) {
            Some(child) => apply_node(tree, child, value, context),
            None => Err(Rejection::new(
                Reason::UnknownField,
                unknown_field_at(tree, node),
            )),
        };
        outcome.unwrap_or_else(|rejection| {
            failure = Some(rejection);
            true
        })
    });
    failure.map_or(Ok(()), Err)
}

/// `Ok(false)` drops the value.
fn apply_node(
    tree: &Tree,
    node: NodeId,
    value: &mut Value,
    context: &mut Context<'_>,
) -> Result<bool, Rejection> {
    let path = &tree.node(node).path;
    let expected = |what: &str, value: &Value| {
        Rejection::new(
            Reason::WrongType,
            format!(
                "field `{path}` holds {}; the policy expects {what}",
                with_article(type_name(value))
            ),
        )
    };
    match &tree.node(node).shape {
        Shape::Leaf(Rule::Keep { detect }) => {
            let found = match value {
                Value::String(text) => detect.in_text(text),
                Value::Number(n) if n.is_i64() || n.is_u64() => detect.in_integer(&n.to_string()),
                _ => None,
            };
            match found {
                Some(detector) => Err(personal_rejection(path, detector)),
                None => apply_rule(&Rule::Keep { detect: *detect }, path, value, context)
                    .map_err(|failure| rule_failure(path, value, failure)),
            }
        }
        Shape::Leaf(rule) => apply_rule(rule, path, value, context)
            .map_err(|failure| rule_failure(path, value, failure)),
        Shape::Object(_) => match value {
            Value::Object(map) => apply_object(tree, node, map, context).map(|()| true),
            Value::Null => Ok(true),
            other => Err(expected("an object", other)),
        },
        Shape::Array(element) => match value {
            Value::Array(items) => {
                let mut failure = None;
                items.retain_mut(|item| {
                    if failure.is_some() {
                        return true;
                    }
                    apply_node(tree, *element, item, context).unwrap_or_else(|rejection| {
                        failure = Some(rejection);
                        true
                    })
                });
                failure.map_or(Ok(true), Err)
            }
            Value::Null => Ok(true),
            other => Err(expected("an array", other)),
        },
    }
}

fn rule_failure(path: &str, value: &Value, failure: Failure) -> Rejection {
    match failure {
        Failure::WrongType(expected) => Rejection::new(
            Reason::WrongType,
            format!(
                "field `{path}` holds {}; its rule takes {expected}",
                with_article(type_name(value))
            ),
        ),
        Failure::Invalid(expected) => Rejection::new(
            Reason::InvalidValue,
            format!("field `{path}` is not {expected}"),
        ),
    }
}

fn apply_rule(
    rule: &Rule,
    path: &str,
    value: &mut Value,
    context: &mut Context<'_>,
) -> Result<bool, Failure> {
    let keys = context.keys;
    if matches!(rule, Rule::Drop) {
        return Ok(false);
    }
    if value.is_null() {
        return Ok(true);
    }
    let text = |value: &Value| match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(Failure::WrongType("a string or an integer")),
    };
    *value = match rule {
        Rule::Drop => unreachable!("handled above"),
        Rule::Keep { .. } => match value {
            Value::Object(_) | Value::Array(_) => {
                return Err(Failure::WrongType(
                    "only a scalar (list the nested fields in the policy)",
                ))
            }
            _ => return Ok(true),
        },
        Rule::Token { domain, normalizer } => {
            let normalized = normalizer.apply(&text(value)?).into_owned();
            let token = keys.token_key(*domain).token(normalized.as_bytes());
            if let Some(previous) = keys.previous_token_key(*domain) {
                context.pairs.push((
                    path.to_owned(),
                    context.token_domains[*domain].clone(),
                    previous.token(normalized.as_bytes()),
                    token.clone(),
                ));
            }
            Value::String(token)
        }
        Rule::Encrypt { domain } => {
            Value::String(keys.encrypt_key(*domain).encrypt(text(value)?.as_bytes()))
        }
        Rule::Mask { keep_last } => {
            let raw = text(value)?;
            let total = raw.chars().count();
            Value::String(
                raw.chars()
                    .enumerate()
                    .map(|(i, c)| if i + keep_last < total { '*' } else { c })
                    .collect(),
            )
        }
        Rule::Generalize(generalization) => {
            let number_text = value.to_string();
            let scalar = match &*value {
                Value::String(s) => Scalar::Str(s),
                Value::Number(n) => Scalar::Number(number_of(n), &number_text),
                _ => Scalar::Other,
            };
            let mut out = Vec::new();
            generalization.apply(scalar, context.event_date, &mut String::new(), &mut out)?;
            serde_json::from_slice(&out).expect("operators write JSON")
        }
    };
    Ok(true)
}

/// A `serde_json` number as the record path classifies it.
pub(crate) fn number_of(n: &serde_json::Number) -> Number {
    if let Some(u) = n.as_u64() {
        Number::U64(u)
    } else if let Some(i) = n.as_i64() {
        Number::I64(i)
    } else {
        Number::F64(n.as_f64().unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    //! The differential test: the one-pass record path and the oracle agree on arbitrary
    //! events, valid or not.

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Map, Value};

    use super::{pseudonymize, Pair};
    use crate::{BridgePairs, MasterSecret, Policy, Pseudonymizer, Reason};

    const POLICY: &str = r#"
        tenant_field = "tenant"
        record_key = "customer.card"
        required = ["id"]
        consent_field = "consent.analytics"
        [limits]
        max_depth = 5
        max_string_bytes = 64
        max_array_len = 2
        max_object_fields = 13
        [fields]
        id = "keep"
        tenant = "keep"
        event_time = "keep"
        "customer.card" = { action = "token", domain = "customer", normalizer = "digits" }
        "customer.email" = { action = "token", domain = "email", normalizer = "email" }
        "customer.name" = { action = "token", domain = "name", normalizer = "name" }
        "customer.code" = { action = "token", domain = "code", normalizer = "exact" }
        "customer.ref" = { action = "token", domain = "code", normalizer = "trim" }
        "customer.lowered" = { action = "token", domain = "code", normalizer = "lower" }
        "customer.iban" = { action = "encrypt", domain = "iban" }
        "customer.phone" = { action = "mask", keep_last = 2 }
        "customer.first" = "drop"
        "customer.birth" = { action = "generalize", to = "age_band", width = 10 }
        "customer.month" = { action = "generalize", to = "month" }
        "customer.year" = { action = "generalize", to = "year" }
        "customer.address.zip" = { action = "generalize", to = "prefix", length = 2 }
        "customer.address.street" = "drop"
        "device.ip" = { action = "generalize", to = "ip_network" }
        "device.seen" = { action = "generalize", to = "hour" }
        "basket.total" = { action = "generalize", to = "round", step = 100 }
        "basket.ratio" = { action = "generalize", to = "round", step = 0.5 }
        "basket.items[].sku" = "keep"
        "basket.items[].qty" = "keep"
        "basket.items[].note" = "drop"
        "tags[]" = "keep"
        "matrix[][]" = { action = "token", domain = "m" }
        "consent.analytics" = "keep"
        "consent.marketing" = "keep"
    "#;

    /// Plausible values per field: valid ones mostly, a bad one now and then.
    fn good(field: &str, rng: &mut StdRng) -> Value {
        let (valid, invalid): (Vec<Value>, Vec<Value>) = match field {
            "id" => (vec![json!("e-1"), json!(7), json!("é\"\\/\u{1}")], vec![]),
            "tenant" => (
                vec![json!("brand-a"), json!("brand-a"), json!(null)],
                vec![json!("Brand A"), json!("nobody"), json!("paused"), json!(3)],
            ),
            "analytics" | "marketing" => (
                vec![json!(true); 19]
                    .into_iter()
                    .chain([json!(false)])
                    .collect(),
                vec![json!("yes"), json!(1)],
            ),
            "event_time" => (
                vec![json!("2026-11-21T14:03:22.512Z"), json!("2026-11-21")],
                vec![json!("yesterday")],
            ),
            "card" | "code" | "ref" | "lowered" | "iban" | "phone" | "email" | "name" | "sku"
            | "note" => (
                vec![
                    json!("6280 0012 3456 7890"),
                    json!("  Emilie.Dupont@Example.FR "),
                    json!("Émilie  DUPONT"),
                    json!(" ＡＢＣ\u{a0}\tdé"),
                    json!("+33 6 12-34"),
                    json!(1234),
                    json!(-5),
                    json!(18446744073709551615u64),
                    json!(""),
                    json!("q\"uote\\ \n\u{1F600}"),
                    json!("ΣΑΣ"),
                ],
                vec![json!(1.5), json!(true), json!("long ".repeat(13))],
            ),
            "birth" | "month" | "year" => (
                vec![json!("1987-04-12"), json!("1986-11-22T23:00:00+02:00")],
                vec![json!("2030-01-01"), json!("not a date"), json!(1987)],
            ),
            "zip" => (
                vec![json!("75011"), json!(75011), json!("É")],
                vec![json!(true)],
            ),
            "ip" => (
                vec![json!("192.0.2.44"), json!(" 2001:db8::1 ")],
                vec![json!("999.1.1.1")],
            ),
            "seen" => (
                vec![json!("2026-11-21T14:03:22+05:30")],
                vec![json!("2026-11-21")],
            ),
            "total" | "ratio" | "qty" => (
                vec![
                    json!(4520),
                    json!(-4550),
                    json!(1.3),
                    json!(9223372036854775807i64),
                    json!(1e300),
                ],
                vec![json!("12")],
            ),
            _ => (vec![json!(null)], vec![]),
        };
        let pool = if invalid.is_empty() || rng.gen_bool(0.98) {
            valid
        } else {
            invalid
        };
        pool.choose(rng).cloned().unwrap()
    }

    fn anything(rng: &mut StdRng, depth: u32) -> Value {
        match rng.gen_range(0..if depth > 2 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(rng.gen::<bool>()),
            2 => json!(rng.gen_range(-1000i64..1000)),
            3 => json!(rng.gen_range(-1e6..1e6f64)),
            4 | 5 => json!(["x", "Émilie", "a\u{0}b", "12 34", ""].choose(rng).unwrap()),
            6 => Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| anything(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..3))
                    .map(|i| (format!("k{i}"), anything(rng, depth + 1)))
                    .collect(),
            ),
        }
    }

    /// A value for a policy node: mostly what the policy wants, sometimes anything.
    fn value_for(name: &str, rng: &mut StdRng) -> Value {
        let roll = rng.gen_range(0..100);
        if roll < 3 {
            return Value::Null;
        }
        if roll < 5 {
            return anything(rng, 0);
        }
        match name {
            "customer" => object(
                rng,
                &[
                    "card", "email", "name", "code", "ref", "lowered", "iban", "phone", "first",
                    "birth", "month", "year", "address",
                ],
            ),
            "address" => object(rng, &["zip", "street"]),
            // The consent flag is there most of the time, so that most events are kept.
            "consent" => {
                let mut consent = object(rng, &["marketing"]);
                if rng.gen_bool(0.97) {
                    consent["analytics"] = good("analytics", rng);
                }
                consent
            }
            "device" => object(rng, &["ip", "seen"]),
            "basket" => object(rng, &["total", "ratio", "items"]),
            "items" => Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| object(rng, &["sku", "qty", "note"]))
                    .collect(),
            ),
            "tags" => {
                // Now and then one more than the policy's `max_array_len`.
                let len = rng.gen_range(0..3) + usize::from(rng.gen_bool(0.05));
                Value::Array((0..len).map(|_| anything(rng, 2)).collect())
            }
            "matrix" => Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| {
                        Value::Array(
                            (0..rng.gen_range(0..3))
                                .map(|_| good("code", rng))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            _ => good(name, rng),
        }
    }

    fn object(rng: &mut StdRng, fields: &[&str]) -> Value {
        let mut names: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.9))
            .collect();
        names.shuffle(rng);
        let mut map = Map::new();
        for name in names {
            map.insert(name.to_owned(), value_for(name, rng));
        }
        if rng.gen_bool(0.04) {
            map.insert("alice@example.com".to_owned(), anything(rng, 2));
        }
        Value::Object(map)
    }

    /// JSON text of `value` with random whitespace and escaped spellings.
    fn write(value: &Value, rng: &mut StdRng, out: &mut String) {
        let space = |rng: &mut StdRng, out: &mut String| {
            if rng.gen_bool(0.1) {
                out.push_str([" ", "\n", "\t ", "\r\n"].choose(rng).unwrap());
            }
        };
        space(rng, out);
        match value {
            Value::Object(map) => {
                out.push('{');
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    if rng.gen_bool(0.05) {
                        out.push('"');
                        for c in key.chars() {
                            out.push_str(&format!("\\u{:04x}", c as u32));
                        }
                        out.push('"');
                    } else {
                        out.push_str(&serde_json::to_string(key).unwrap());
                    }
                    space(rng, out);
                    out.push(':');
                    write(value, rng, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, rng, out);
                }
                out.push(']');
            }
            Value::String(s) if rng.gen_bool(0.1) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '/' => out.push_str("\\/"),
                        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
                        c => out.push_str(
                            &serde_json::to_string(&c.to_string()).unwrap()[1..][..c.len_utf8()],
                        ),
                    }
                }
                out.push('"');
            }
            other => out.push_str(&other.to_string()),
        }
        space(rng, out);
    }

    fn event(seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut map = Map::new();
        let top = [
            "id",
            "tenant",
            "event_time",
            "customer",
            "device",
            "basket",
            "tags",
            "matrix",
            "consent",
        ];
        let mut names: Vec<&str> = top
            .iter()
            .copied()
            .filter(|name| *name == "consent" || rng.gen_bool(0.95))
            .collect();
        names.shuffle(&mut rng);
        for name in names {
            map.insert(name.to_owned(), value_for(name, &mut rng));
        }
        if rng.gen_bool(0.03) {
            map.insert("nested".into(), json!([[[[1]]]]));
        }
        let event = if rng.gen_bool(0.02) {
            anything(&mut rng, 1)
        } else {
            Value::Object(map)
        };
        let mut text = String::new();
        write(&event, &mut rng, &mut text);
        if rng.gen_bool(0.02) {
            text = format!("{}{}{}", "[".repeat(130), text, "]".repeat(130));
        }
        let mut bytes = text.into_bytes();
        match rng.gen_range(0..100) {
            0..=3 => bytes.truncate(rng.gen_range(0..=bytes.len())),
            4..=7 => {
                let at = rng.gen_range(0..=bytes.len());
                let junk = [b'"', b',', b'}', b'\\', b'x', b'0', 0xff, b' '];
                bytes.insert(at, *junk.choose(&mut rng).unwrap());
            }
            8 => bytes.extend_from_slice(b" {}"),
            _ => {}
        }
        bytes
    }

    /// Equal, floats up to rounding (the oracle parses and re-prints them), encrypted
    /// values compared by their plaintext.
    fn same(ours: &Value, theirs: &Value, engine: &Pseudonymizer) -> bool {
        match (ours, theirs) {
            (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
            }
            (Value::String(a), Value::String(b))
                if a.starts_with('e') && crate::is_encrypted(a) =>
            {
                let decrypt = |text: &str| {
                    engine
                        .tenants()
                        .find_map(|(_, keys)| keys.encrypt_key(0).decrypt(text))
                };
                decrypt(a).is_some() && decrypt(a) == decrypt(b)
            }
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b, engine))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb, engine))
            }
            (a, b) => a == b,
        }
    }

    /// `brand-a` in the overlap of its rotation from v1 to v2, `default` on v3 alone,
    /// `paused` suspended.
    fn engine() -> Pseudonymizer {
        let (secret, previous) = (
            MasterSecret::from_bytes([7; 32]),
            MasterSecret::from_bytes([8; 32]),
        );
        Pseudonymizer::new(
            Policy::from_toml(POLICY).unwrap(),
            [
                ("brand-a".to_string(), 2, &secret),
                ("default".to_string(), 3, &secret),
            ],
        )
        .bridging([("brand-a".to_string(), 1, &previous)])
        .suspending(["paused".to_string()])
    }

    /// Reasons whose message depends on the parser, not on the policy.
    fn parser_specific(reason: Reason) -> bool {
        matches!(
            reason,
            Reason::MalformedJson | Reason::TooDeep | Reason::TooLarge | Reason::InvalidUtf8
        )
    }

    fn check(engine: &Pseudonymizer, payload: &[u8]) -> Result<(), TestCaseError> {
        let mut json = Vec::new();
        let mut pairs = BridgePairs::new();
        let ours = engine
            .pseudonymize_bridged(payload, &mut json, &mut pairs)
            .map(|outcome| {
                let key = outcome
                    .record_key(&json)
                    .map(|k| String::from_utf8(k.to_vec()).unwrap());
                (key, outcome.bridged_from)
            });
        let our_pairs: Vec<Pair> = pairs
            .iter()
            .map(|p| (p.path.into(), p.domain.into(), p.old.into(), p.new.into()))
            .collect();
        let theirs = pseudonymize(engine, payload);
        let shown = String::from_utf8_lossy(payload);
        match (ours, theirs) {
            (Ok((key, bridged_from)), Ok((value, their_key, their_pairs))) => {
                prop_assert_eq!(&our_pairs, &their_pairs, "{}", shown);
                prop_assert_eq!(bridged_from, (!their_pairs.is_empty()).then_some(1));
                let ours: Value = serde_json::from_slice(&json)
                    .map_err(|e| TestCaseError::fail(format!("{e} in our output for {shown}")))?;
                prop_assert!(
                    same(&ours, &value, engine),
                    "{shown}\n ours {ours}\n theirs {value}"
                );
                prop_assert_eq!(key, their_key);
            }
            (Err(ours), Err(theirs)) => {
                prop_assert!(
                    our_pairs.is_empty(),
                    "no pairs of a rejected event: {}",
                    shown
                );
                prop_assert_eq!(
                    ours.reason,
                    theirs.reason,
                    "{} | {} for {}",
                    ours,
                    theirs,
                    shown
                );
                if !parser_specific(ours.reason) {
                    prop_assert_eq!(&ours.message, &theirs.message, "{}", shown);
                }
            }
            (ours, theirs) => prop_assert!(false, "{shown}\n ours {ours:?}\n theirs {theirs:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn the_one_pass_path_agrees_with_the_oracle(seed in any::<u64>()) {
            check(&engine(), &event(seed))?;
        }
    }

    #[test]
    fn the_generator_reaches_every_outcome() {
        let engine = engine();
        let mut reasons = std::collections::BTreeMap::new();
        let (mut out, mut pairs, mut bridged) = (Vec::new(), BridgePairs::new(), 0);
        for seed in 0..3000 {
            let outcome = engine
                .pseudonymize_bridged(&event(seed), &mut out, &mut pairs)
                .map(|outcome| bridged += usize::from(outcome.bridged_from.is_some()))
                .map_err(|r| r.reason);
            *reasons.entry(format!("{outcome:?}")).or_insert(0) += 1;
        }
        assert!(
            bridged >= 200,
            "too few bridged events: {bridged}, {reasons:?}"
        );
        for expected in [
            "Ok(())",
            "MalformedJson",
            "TooDeep",
            "UnknownField",
            "WrongType",
            "InvalidValue",
            "InvalidTenant",
            "UnknownTenant",
            "TenantSuspended",
            "NoConsent",
            "MissingField",
            "NotAnObject",
            "PersonalValueInKeptField",
            "TooLarge",
        ] {
            assert!(
                reasons.keys().any(|k| k.contains(expected)),
                "{expected} never reached: {reasons:?}"
            );
        }
        assert!(
            reasons["Ok(())"] >= 600,
            "too few valid events: {reasons:?}"
        );
    }

    #[test]
    fn the_default_policy_and_example_event_agree() {
        let secret = MasterSecret::from_bytes([3; 32]);
        let policy =
            Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml")).unwrap();
        let engine = Pseudonymizer::new(policy, [("brand-a".to_string(), 1, &secret)]);
        let example = include_bytes!("../../schemas/coupon_redemption.json");
        check(&engine, example).unwrap();
        let (json, _) = engine.pseudonymize(example).unwrap();
        let (value, ..) = pseudonymize(&engine, example).unwrap();
        assert_eq!(
            json,
            serde_json::to_vec(&value).unwrap(),
            "byte for byte, for a clean event"
        );
    }

    #[test]
    fn a_field_twice_is_rejected_by_the_path_and_the_guard() {
        let engine = engine();
        let guard = crate::LeakGuard::new(engine.policy().clone());
        for payload in [
            r#"{"id":"1","customer":{"email":"a@b.c","email":"v1.KxaYpQJkpd4SOvySjpg7xw"}}"#,
            r#"{"id":"1","customer":{"email":"a@b.c","em\u0061il":"v1.KxaYpQJkpd4SOvySjpg7xw"}}"#,
        ] {
            let rejection = engine.pseudonymize(payload.as_bytes()).unwrap_err();
            assert_eq!(rejection.reason, Reason::DuplicateField);
            assert_eq!(
                rejection.message,
                "field `customer.email` appears twice in one object"
            );
            let rejection = guard.check(None, payload.as_bytes()).unwrap_err();
            assert!(rejection.message.contains("twice"), "{rejection}");
        }
        let fine = r#"{"id":"1","basket":{"items":[{"sku":"a"},{"sku":"b"}]},"consent":{"analytics":true}}"#;
        assert!(
            engine.pseudonymize(fine.as_bytes()).is_ok(),
            "the same field in two objects is fine"
        );
    }
}
