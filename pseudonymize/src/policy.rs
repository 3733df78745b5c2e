//! The pseudonymization policy: which rule applies to every field of an event.
//!
//! A policy is a TOML file. Every field path that may appear in an event has a rule; an
//! event with a field the policy does not know is rejected (fail closed). Paths use dots
//! for nesting and `[]` for the elements of an array (`basket.items[].sku`).
//!
//! ```toml
//! tenant_field = "tenant"
//! default_tenant = "default"
//! record_key = "customer.loyalty_card"
//! required = ["event_id"]
//!
//! [fields]
//! event_id = "keep"
//! tenant = "keep"
//! "customer.loyalty_card" = { action = "token", domain = "customer", normalizer = "digits" }
//! "customer.first_name" = "drop"
//! "customer.birth_date" = { action = "generalize", to = "year" }
//! ```
//!
//! [`Policy::from_toml`] validates the file and compiles the paths into a tree that the
//! record path walks alongside the event, so each event field costs one lookup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::error::Error;
use crate::generalize::{Generalization, GeneralizeSpec};
use crate::normalize::Normalizer;
use crate::tree::{NodeId, Tree};

/// Default size limit of one event: 1 MiB, ten times the largest event seen in the
/// retailers' exports and well under Kafka's default `message.max.bytes`.
fn default_max_event_bytes() -> usize {
    1024 * 1024
}

/// Default tenant name, `TOKEN-SPEC.md`'s default.
fn default_tenant() -> String {
    "default".into()
}

/// Default field holding the event time (needed by `age_band`).
fn default_event_time_field() -> String {
    "event_time".into()
}

/// Size limits applied before parsing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted payload in bytes; larger events are rejected as `too_large`.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: default_max_event_bytes(),
        }
    }
}

/// The policy file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Path of the field naming the tenant; absent means every event is `default_tenant`.
    tenant_field: Option<String>,
    /// Tenant of events whose tenant field is absent or null.
    #[serde(default = "default_tenant")]
    default_tenant: String,
    /// Path of the field whose token becomes the Kafka record key.
    record_key: Option<String>,
    /// Path of the event-time field (RFC 3339), used by `age_band`.
    #[serde(default = "default_event_time_field")]
    event_time_field: String,
    /// Paths that must be present and non-null.
    #[serde(default)]
    required: Vec<String>,
    /// Size limits.
    #[serde(default)]
    limits: Limits,
    /// One rule per field path.
    fields: BTreeMap<String, toml::Value>,
}

/// A rule table, before validation.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum RuleSpec {
    Keep,
    Drop,
    Token {
        domain: String,
        #[serde(default = "exact")]
        normalizer: Normalizer,
    },
    Encrypt {
        domain: String,
    },
    Mask {
        keep_last: usize,
    },
    Generalize(GeneralizeSpec),
}

fn exact() -> Normalizer {
    Normalizer::Exact
}

/// What happens to one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Forwarded unchanged (scalars only).
    Keep,
    /// Removed from the output.
    Drop,
    /// Replaced by its keyed token in `domain` (index into [`Policy::token_domains`]).
    Token {
        /// Index of the domain in [`Policy::token_domains`].
        domain: usize,
        /// Applied before HMAC.
        normalizer: Normalizer,
    },
    /// Replaced by its AES-GCM encryption in `domain` (index into [`Policy::encrypt_domains`]).
    Encrypt {
        /// Index of the domain in [`Policy::encrypt_domains`].
        domain: usize,
    },
    /// Every character but the last `keep_last` replaced by `*`.
    Mask {
        /// Characters left visible at the end.
        keep_last: usize,
    },
    /// Coarsened.
    Generalize(Generalization),
}

/// A validated, compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Tells compiled policies apart (clones share it): per-thread scratch space is kept
    /// per policy.
    pub(crate) id: u64,
    pub(crate) tree: Tree,
    pub(crate) tenant_field: Option<NodeId>,
    pub(crate) default_tenant: String,
    pub(crate) record_key: Option<NodeId>,
    pub(crate) event_time_field: Option<NodeId>,
    pub(crate) required: Vec<(String, NodeId)>,
    pub(crate) limits: Limits,
    pub(crate) needs_event_date: bool,
    token_domains: Vec<String>,
    encrypt_domains: Vec<String>,
    rules: Vec<(String, Rule)>,
}

/// Whether `name` is a valid tenant: `[a-z0-9_-]{1,64}`.
pub fn is_valid_tenant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `name` is a valid domain: `[a-z0-9_.-]{1,64}`.
pub fn is_valid_domain(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

/// A path split into object keys, `[]` kept as its own segment.
fn split_path(path: &str) -> Result<Vec<String>, String> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut name = part;
        let mut arrays = 0;
        while let Some(stripped) = name.strip_suffix("[]") {
            name = stripped;
            arrays += 1;
        }
        if name.is_empty() || name.contains('[') || name.contains(']') {
            return Err(format!(
                "`{path}` is not a field path (use dots for nesting and `[]` for array elements)"
            ));
        }
        segments.push(name.to_string());
        segments.extend(std::iter::repeat_n("[]".to_string(), arrays));
    }
    Ok(segments)
}

/// A path of plain object keys (no `[]`), for `tenant_field`, `record_key`, `required`.
fn object_path(option: &str, path: &str) -> Result<Vec<String>, String> {
    let segments = split_path(path)?;
    if segments.iter().any(|s| s == "[]") {
        return Err(format!(
            "`{option}` = \"{path}\" cannot go through an array"
        ));
    }
    Ok(segments)
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read the policy {}", path.display()),
            source,
        })?;
        Self::from_toml(&text).map_err(|detail| Error::InvalidPolicy {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses and validates a policy; the error says what to fix.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| error.to_string())?;
        if !is_valid_tenant(&file.default_tenant) {
            return Err(format!(
                "`default_tenant` = \"{}\" is not a valid tenant name ([a-z0-9_-]{{1,64}})",
                file.default_tenant
            ));
        }
        if file.fields.is_empty() {
            return Err("`[fields]` is empty: classify every field of the event".into());
        }
        let mut token_domains: Vec<String> = Vec::new();
        let mut encrypt_domains: Vec<String> = Vec::new();
        let intern = |domains: &mut Vec<String>, domain: String| -> Result<usize, String> {
            if !is_valid_domain(&domain) {
                return Err(format!(
                    "domain \"{domain}\" is not valid ([a-z0-9_.-]{{1,64}})"
                ));
            }
            Ok(domains
                .iter()
                .position(|d| *d == domain)
                .unwrap_or_else(|| {
                    domains.push(domain);
                    domains.len() - 1
                }))
        };
        let mut tree = Tree::new();
        let mut rules = Vec::new();
        let mut needs_event_date = false;
        for (path, value) in file.fields {
            let spec = match value {
                toml::Value::String(name) => match name.as_str() {
                    "keep" => RuleSpec::Keep,
                    "drop" => RuleSpec::Drop,
                    other => {
                        return Err(format!(
                            "field `{path}`: \"{other}\" needs options; write it as a table, e.g. {{ action = \"{other}\", ... }}"
                        ))
                    }
                },
                toml::Value::Table(table) => toml::Value::Table(table)
                    .try_into::<RuleSpec>()
                    .map_err(|error| format!("field `{path}`: {}", error.to_string().trim()))?,
                other => return Err(format!("field `{path}`: expected \"keep\", \"drop\" or a rule table, found {}", other.type_str())),
            };
            let rule = match spec {
                RuleSpec::Keep => Rule::Keep,
                RuleSpec::Drop => Rule::Drop,
                RuleSpec::Token { domain, normalizer } => Rule::Token {
                    domain: intern(&mut token_domains, domain)
                        .map_err(|e| format!("field `{path}`: {e}"))?,
                    normalizer,
                },
                RuleSpec::Encrypt { domain } => Rule::Encrypt {
                    domain: intern(&mut encrypt_domains, domain)
                        .map_err(|e| format!("field `{path}`: {e}"))?,
                },
                RuleSpec::Mask { keep_last } => Rule::Mask { keep_last },
                RuleSpec::Generalize(spec) => {
                    let generalization = spec
                        .validate()
                        .map_err(|e| format!("field `{path}`: {e}"))?;
                    needs_event_date |= generalization.needs_event_date();
                    Rule::Generalize(generalization)
                }
            };
            let segments = split_path(&path)?;
            tree.insert(&segments, rule.clone(), &path)?;
            rules.push((path, rule));
        }
        // The leaf at an object path: an error for a path through an array, `None` when
        // no rule has that path.
        let leaf = |option: &str, path: &str| -> Result<Option<(NodeId, &Rule)>, String> {
            let segments = object_path(option, path)?;
            Ok(tree
                .find(&segments)
                .and_then(|id| tree.rule(id).map(|rule| (id, rule))))
        };
        let tenant_field = match file.tenant_field.as_deref() {
            Some(path) => match leaf("tenant_field", path)? {
                Some((id, Rule::Keep | Rule::Drop)) => Some(id),
                _ => {
                    return Err(
                        "`tenant_field` must name a field whose rule is \"keep\" or \"drop\""
                            .into(),
                    )
                }
            },
            None => None,
        };
        let record_key = match file.record_key.as_deref() {
            Some(path) => match leaf("record_key", path)? {
                Some((id, Rule::Token { .. })) => Some(id),
                _ => return Err("`record_key` must name a field whose rule is a token".into()),
            },
            None => None,
        };
        let event_time_field = match leaf("event_time_field", &file.event_time_field)? {
            Some((id, _)) => Some(id),
            None if !needs_event_date => None,
            None => {
                return Err(format!(
                    "`event_time_field` = \"{}\" has no rule in [fields]; an `age_band` rule computes ages at the event's time",
                    file.event_time_field
                ))
            }
        };
        let required = file
            .required
            .iter()
            .map(|p| match leaf("required", p)? {
                Some((id, _)) => Ok((p.clone(), id)),
                None => Err(format!("required field `{p}` has no rule in [fields]")),
            })
            .collect::<Result<_, String>>()?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tree,
            tenant_field,
            default_tenant: file.default_tenant,
            record_key,
            event_time_field,
            required,
            limits: file.limits,
            needs_event_date,
            token_domains,
            encrypt_domains,
            rules,
        })
    }

    /// Domains used by `token` rules; key sets derive one key per domain.
    pub fn token_domains(&self) -> &[String] {
        &self.token_domains
    }

    /// Domains used by `encrypt` rules.
    pub fn encrypt_domains(&self) -> &[String] {
        &self.encrypt_domains
    }

    /// Every rule with its path, in path order.
    pub fn rules(&self) -> &[(String, Rule)] {
        &self.rules
    }

    /// The size limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The tenant used when an event names none.
    pub fn default_tenant(&self) -> &str {
        &self.default_tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Shape, ROOT};

    #[test]
    fn the_default_policy_compiles() {
        let policy = Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml"))
            .expect("default policy is valid");
        assert_eq!(
            policy.token_domains(),
            ["coupon", "email", "customer", "phone"],
            "in path order"
        );
        assert!(policy.record_key.is_some());
    }

    #[test]
    fn errors_say_what_to_fix() {
        let cases = [
            ("[fields]\na = \"tok\"", "needs options"),
            (
                "[fields]\na = { action = \"token\" }",
                "missing field `domain`",
            ),
            (
                "[fields]\na = { action = \"token\", domain = \"x\", normaliser = \"digits\" }",
                "unknown field `normaliser`",
            ),
            (
                "[fields]\na = { action = \"token\", domain = \"X Y\" }",
                "domain \"X Y\" is not valid",
            ),
            ("[fields]\na = \"keep\"\n\"a.b\" = \"keep\"", "conflicts"),
            (
                "[fields]\n\"a[]\" = \"keep\"\n\"a.b\" = \"keep\"",
                "conflicts",
            ),
            ("[fields]\n\"a..b\" = \"keep\"", "not a field path"),
            ("record_key = \"a\"\n[fields]\na = \"keep\"", "record_key"),
            (
                "required = [\"b\"]\n[fields]\na = \"keep\"",
                "required field `b`",
            ),
            (
                "colour = 1\n[fields]\na = \"keep\"",
                "unknown field `colour`",
            ),
            (
                "[fields]\na = { action = \"generalize\", to = \"age_band\" }",
                "width",
            ),
            ("[fields]", "empty"),
        ];
        for (text, expected) in cases {
            let error = Policy::from_toml(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn array_paths_compile_into_the_tree() {
        let policy = Policy::from_toml("[fields]\n\"basket.items[].sku\" = \"keep\"\n\"basket.items[].qty\" = \"drop\"\n\"tags[]\" = \"keep\"").unwrap();
        let tree = &policy.tree;
        let basket = tree.child(ROOT, b"basket").expect("basket");
        let items = tree.child(basket, b"items").expect("items");
        let Shape::Array(item) = tree.node(items).shape else {
            panic!("items is an array")
        };
        assert_eq!(&*tree.node(item).path, "basket.items[]");
        let Shape::Object(fields) = &tree.node(item).shape else {
            panic!("items hold objects")
        };
        assert_eq!(fields.len(), 2);
        let tags = tree.child(ROOT, b"tags").expect("tags");
        assert!(matches!(tree.node(tags).shape, Shape::Array(_)));
        assert_eq!(&*tree.node(tags).key_json, b"\"tags\":");
    }
}
