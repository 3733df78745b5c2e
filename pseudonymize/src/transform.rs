//! The record path: one raw event in, one pseudonymized event (or a [`Rejection`]) out.
//!
//! [`Pseudonymizer`] holds a compiled [`Policy`] and, per tenant, the keys of the active
//! version already derived for every domain the policy uses. An event is parsed once,
//! walked once alongside the policy tree (touching only the fields it has), rewritten in
//! place and serialized into a caller-owned buffer.

use std::collections::HashMap;

use serde_json::{Map, Value};
use time::Date;

use crate::error::{Reason, Rejection};
use crate::generalize::{parse_date, Failure};
use crate::policy::{is_valid_tenant, Node, ObjectNode, Policy, Rule};
use crate::secret::MasterSecret;
use crate::token::{fingerprint, EncryptKey, TokenKey};

/// The keys of one tenant's active version, derived for every domain of the policy.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    version: u32,
    fingerprint: String,
    tokens: Vec<TokenKey>,
    encrypts: Vec<EncryptKey>,
}

impl TenantKeys {
    /// Derives the keys of `tenant` version `version` for the domains of `policy`.
    pub fn derive(policy: &Policy, tenant: &str, version: u32, secret: &MasterSecret) -> Self {
        Self {
            version,
            fingerprint: fingerprint(secret),
            tokens: policy
                .token_domains()
                .iter()
                .map(|d| TokenKey::derive(secret, version, tenant, d))
                .collect(),
            encrypts: policy
                .encrypt_domains()
                .iter()
                .map(|d| EncryptKey::derive(secret, version, tenant, d))
                .collect(),
        }
    }

    /// The key version these keys belong to.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The fingerprint of the master secret.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// What came out of a successful [`Pseudonymizer::pseudonymize_into`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// The tenant the event belongs to.
    pub tenant: &'a str,
    /// The key version used for its tokens.
    pub key_version: u32,
    /// The token of the policy's `record_key` field, when it has one and it is not null.
    pub record_key: Option<String>,
}

/// Applies a policy with a set of tenant keys.
#[derive(Debug, Clone)]
pub struct Pseudonymizer {
    policy: Policy,
    tenants: HashMap<String, TenantKeys>,
}

/// State of one event while it is walked.
struct EventContext<'k> {
    keys: &'k TenantKeys,
    event_date: Option<Date>,
    scratch: String,
}

impl Pseudonymizer {
    /// A pseudonymizer with the given active keys, one entry per tenant.
    pub fn new<'s>(
        policy: Policy,
        active: impl IntoIterator<Item = (String, u32, &'s MasterSecret)>,
    ) -> Self {
        let tenants = active
            .into_iter()
            .map(|(tenant, version, secret)| {
                let keys = TenantKeys::derive(&policy, &tenant, version, secret);
                (tenant, keys)
            })
            .collect();
        Self { policy, tenants }
    }

    /// The policy applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The active keys of every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &TenantKeys)> {
        self.tenants
            .iter()
            .map(|(name, keys)| (name.as_str(), keys))
    }

    /// Pseudonymizes one event into a fresh buffer.
    pub fn pseudonymize(&self, payload: &[u8]) -> Result<(Vec<u8>, Option<String>), Rejection> {
        let mut out = Vec::with_capacity(payload.len());
        let outcome = self.pseudonymize_into(payload, &mut out)?;
        Ok((out, outcome.record_key))
    }

    /// Pseudonymizes one event, appending the JSON result to `out` (left untouched on rejection).
    pub fn pseudonymize_into(
        &self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Outcome<'_>, Rejection> {
        let limit = self.policy.limits.max_event_bytes;
        if payload.len() > limit {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "event of {} bytes exceeds the limit of {limit} bytes",
                    payload.len()
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|error| {
            Rejection::new(
                Reason::InvalidUtf8,
                format!(
                    "payload is not valid UTF-8 (first bad byte at offset {})",
                    error.valid_up_to()
                ),
            )
        })?;
        let mut event: Value = serde_json::from_str(text).map_err(|error| {
            let message = error.to_string();
            if message.starts_with("recursion limit exceeded") {
                Rejection::new(Reason::TooDeep, "payload nests deeper than 128 levels")
            } else {
                Rejection::new(
                    Reason::MalformedJson,
                    format!("payload is not valid JSON: {message}"),
                )
            }
        })?;
        let Value::Object(map) = &mut event else {
            return Err(Rejection::new(
                Reason::NotAnObject,
                format!("payload is a JSON {}, not an object", type_name(&event)),
            ));
        };

        for (path, segments) in &self.policy.required {
            if matches!(resolve(map, segments), None | Some(Value::Null)) {
                return Err(Rejection::new(
                    Reason::MissingField,
                    format!("required field `{path}` is missing or null"),
                ));
            }
        }
        let (tenant, keys) = self.tenant_of(map)?;
        let event_date = if self.policy.needs_event_date {
            resolve(map, &self.policy.event_time_field)
                .and_then(Value::as_str)
                .and_then(parse_date)
        } else {
            None
        };
        let mut context = EventContext {
            keys,
            event_date,
            scratch: String::new(),
        };
        apply_object(&self.policy.root, map, &mut context)?;

        let record_key = match &self.policy.record_key {
            Some(segments) => match resolve(map, segments) {
                Some(Value::String(token)) => Some(token.clone()),
                _ => None,
            },
            None => None,
        };
        serde_json::to_writer(&mut *out, &event)
            .expect("serializing a JSON value into a Vec cannot fail");
        Ok(Outcome {
            tenant,
            key_version: keys.version,
            record_key,
        })
    }

    fn tenant_of(&self, map: &Map<String, Value>) -> Result<(&str, &TenantKeys), Rejection> {
        let name = match &self.policy.tenant_field {
            Some(segments) => match resolve(map, segments) {
                None | Some(Value::Null) => self.policy.default_tenant.as_str(),
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
                            "the tenant field holds a {}, not a string",
                            type_name(other)
                        ),
                    ))
                }
            },
            None => self.policy.default_tenant.as_str(),
        };
        match self.tenants.get_key_value(name) {
            Some((name, keys)) => Ok((name.as_str(), keys)),
            // The tenant name passed the grammar check, is not personal, and tells the operator which keyring to create.
            None => Err(Rejection::new(
                Reason::UnknownTenant,
                format!("tenant `{name}` has no active key in the keyring"),
            )),
        }
    }
}

/// The value at an object path, if every step is an object.
fn resolve<'v>(map: &'v Map<String, Value>, segments: &[String]) -> Option<&'v Value> {
    let (last, parents) = segments.split_last()?;
    let mut current = map;
    for segment in parents {
        current = current.get(segment)?.as_object()?;
    }
    current.get(last)
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
    node: &ObjectNode,
    map: &mut Map<String, Value>,
    context: &mut EventContext<'_>,
) -> Result<(), Rejection> {
    let mut failure = None;
    map.retain(|key, value| {
        if failure.is_some() {
            return true;
        }
        let outcome = match node.child(key) {
            Some(child) => apply_node(child, value, context, &|| node.child_path(key)),
            None => Err(Rejection::new(
                Reason::UnknownField,
                format!("field `{}` has no rule in the policy", node.child_path(key)),
            )),
        };
        outcome.unwrap_or_else(|rejection| {
            failure = Some(rejection);
            true
        })
    });
    failure.map_or(Ok(()), Err)
}

/// Applies `node` to `value`; `Ok(false)` means the field is dropped. `path` names the
/// field for messages and is only called on failure, so the happy path never formats.
fn apply_node(
    node: &Node,
    value: &mut Value,
    context: &mut EventContext<'_>,
    path: &dyn Fn() -> String,
) -> Result<bool, Rejection> {
    let expected_container = |what: &str, value: &Value| {
        Rejection::new(
            Reason::WrongType,
            format!(
                "field `{}` holds a {}; the policy expects {what}",
                path(),
                type_name(value)
            ),
        )
    };
    match node {
        Node::Leaf(rule) => apply_rule(rule, value, context).map_err(|failure| match failure {
            Failure::WrongType(expected) => Rejection::new(
                Reason::WrongType,
                format!(
                    "field `{}` holds a {}; its rule takes {expected}",
                    path(),
                    type_name(value)
                ),
            ),
            Failure::Invalid(expected) => Rejection::new(
                Reason::InvalidValue,
                format!("field `{}` is not {expected}", path()),
            ),
        }),
        Node::Object(inner) => match value {
            Value::Object(map) => apply_object(inner, map, context).map(|()| true),
            Value::Null => Ok(true),
            other => Err(expected_container("an object", other)),
        },
        Node::Array(element, array_path) => match value {
            Value::Array(items) => {
                let element_path = || format!("{array_path}[]");
                let mut failure = None;
                items.retain_mut(|item| {
                    if failure.is_some() {
                        return true;
                    }
                    apply_node(element, item, context, &element_path).unwrap_or_else(|rejection| {
                        failure = Some(rejection);
                        true
                    })
                });
                failure.map_or(Ok(true), Err)
            }
            Value::Null => Ok(true),
            other => Err(expected_container("an array", other)),
        },
    }
}

/// Applies a leaf rule. `Ok(false)` drops the field.
fn apply_rule(
    rule: &Rule,
    value: &mut Value,
    context: &mut EventContext<'_>,
) -> Result<bool, Failure> {
    if matches!(rule, Rule::Drop) {
        return Ok(false);
    }
    if value.is_null() {
        return Ok(true);
    }
    match rule {
        Rule::Drop => unreachable!("handled above"),
        Rule::Keep => match value {
            Value::Object(_) | Value::Array(_) => Err(Failure::WrongType(
                "only a scalar (list the nested fields in the policy)",
            )),
            _ => Ok(true),
        },
        Rule::Token { domain, normalizer } => {
            let key = &context.keys.tokens[*domain];
            let token = {
                let raw = scalar_text(value, &mut context.scratch, "a string or an integer")?;
                key.token(normalizer.apply(raw).as_bytes())
            };
            *value = Value::String(token);
            Ok(true)
        }
        Rule::Encrypt { domain } => {
            let key = &context.keys.encrypts[*domain];
            let sealed = key.encrypt(
                scalar_text(value, &mut context.scratch, "a string or an integer")?.as_bytes(),
            );
            *value = Value::String(sealed);
            Ok(true)
        }
        Rule::Mask { keep_last } => {
            let raw = scalar_text(value, &mut context.scratch, "a string or an integer")?;
            let total = raw.chars().count();
            let masked: String = raw
                .chars()
                .enumerate()
                .map(|(i, c)| if i + keep_last < total { '*' } else { c })
                .collect();
            *value = Value::String(masked);
            Ok(true)
        }
        Rule::Generalize(generalization) => {
            *value = generalization.apply(value, context.event_date)?;
            Ok(true)
        }
    }
}

/// The text of a string, or the decimal form of an integer (written into `scratch`).
fn scalar_text<'a>(
    value: &'a Value,
    scratch: &'a mut String,
    expected: &'static str,
) -> Result<&'a str, Failure> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            use std::fmt::Write as _;
            scratch.clear();
            write!(scratch, "{n}").expect("writing to a String cannot fail");
            Ok(scratch)
        }
        _ => Err(Failure::WrongType(expected)),
    }
}
