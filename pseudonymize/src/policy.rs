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
//! consent_field = "consent.analytics"
//!
//! [fields]
//! event_id = "keep"
//! tenant = "keep"
//! "customer.loyalty_card" = { action = "token", domain = "customer", normalizer = "digits" }
//! "customer.first_name" = "drop"
//! "customer.birth_date" = { action = "generalize", to = "year" }
//! "retailer.note" = { action = "keep", allow = ["phone"] }
//!
//! [limits]
//! max_event_bytes = 1048576
//! max_depth = 32
//! max_string_bytes = 65536
//! max_array_len = 10000
//! max_object_fields = 256
//! ```
//!
//! `consent_field` names a `keep` field holding the data subject's consent to analytics:
//! an event whose value there is `false`, absent or null is dropped (`no_consent`, see
//! [`crate::Reason::is_drop`]), one holding anything but a boolean is quarantined
//! (`wrong_type`). Without the option every event is processed.
//!
//! Every value of a `keep` field goes through the content detectors of [`crate::detect`]
//! (e-mail, phone, card, IBAN, IP): a hit quarantines the event as
//! `personal_value_in_kept_field`; `allow` lists the kinds a field may hold.
//!
//! `[limits]` bounds what one event may cost, in ingest and in the leak guard alike:
//! - `max_event_bytes`: the payload's size (`too_large`), checked before anything else.
//! - `max_depth`: how deep objects and arrays nest (`too_deep`); at most 127, the JSON
//!   reader's own bound, which also holds inside fields the policy skips.
//! - `max_string_bytes`: a string value of a policy field, in bytes as written (`too_large`).
//! - `max_array_len`: the elements of an array of the policy (`too_large`).
//! - `max_object_fields`: the members of one object of the policy, the event itself
//!   included, known or not (`too_large`).
//!
//! The last three apply to what the policy describes; inside a field it does not (an
//! unknown field, a container where a scalar is due) nothing is read into anything, and
//! the event is rejected or the field dropped whole.
//!
//! [`Policy::from_toml`] validates the file and compiles the paths into a tree that the
//! record path walks alongside the event, so each event field costs one lookup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::risk::{Risk, RiskSpec};

use crate::detect::{Detector, Detectors};
use crate::error::Error;
use crate::generalize::{Generalization, GeneralizeSpec};
use crate::json::MAX_DEPTH;
use crate::normalize::Normalizer;
use crate::tree::{NodeId, Tree};

/// Default size limit of one event: 1 MiB, ten times the largest event seen in the
/// retailers' exports and well under Kafka's default `message.max.bytes`.
fn default_max_event_bytes() -> usize {
    1024 * 1024
}

/// Default tenant name, `docs/token-spec.md`'s default.
fn default_tenant() -> String {
    "default".into()
}

/// Default field holding the event time (needed by `age_band`).
fn default_event_time_field() -> String {
    "event_time".into()
}

/// Default nesting limit: 32 levels, four times the deepest simulated or example event
/// (`basket.items[]` objects are at level 3) and well under the reader's bound of 127.
fn default_max_depth() -> usize {
    32
}

/// Default longest string: 64 KiB, far above any field of the schema (a user agent is
/// the longest, a few hundred bytes).
fn default_max_string_bytes() -> usize {
    64 * 1024
}

/// Default longest array: 10,000 elements, a basket two orders of magnitude larger than
/// any seen in the retailers' exports.
fn default_max_array_len() -> usize {
    10_000
}

/// Default widest object: 256 members, ten times the widest object of the schema.
fn default_max_object_fields() -> usize {
    256
}

/// What one event may cost; every limit applies in ingest and in the leak guard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted payload in bytes; larger events are rejected as `too_large`.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Deepest nesting of objects and arrays (the top-level object is level 1), at most
    /// 127; deeper events are rejected as `too_deep`.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Longest string value of a policy field, in bytes as written (escapes included);
    /// longer ones are rejected as `too_large`.
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// Most elements in an array of the policy; more are rejected as `too_large`.
    #[serde(default = "default_max_array_len")]
    pub max_array_len: usize,
    /// Most members in one object of the policy (the event itself included), known or
    /// not; more are rejected as `too_large`.
    #[serde(default = "default_max_object_fields")]
    pub max_object_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: default_max_event_bytes(),
            max_depth: default_max_depth(),
            max_string_bytes: default_max_string_bytes(),
            max_array_len: default_max_array_len(),
            max_object_fields: default_max_object_fields(),
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
    /// Path of a `keep` field holding the consent to analytics; events where it is not
    /// `true` are dropped.
    consent_field: Option<String>,
    /// Size limits.
    #[serde(default)]
    limits: Limits,
    /// Quasi-identifiers and k (see [`crate::risk`]).
    risk: Option<RiskSpec>,
    /// One rule per field path.
    fields: BTreeMap<String, toml::Value>,
}

/// A rule table, before validation.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum RuleSpec {
    Keep {
        /// Detectors not applied to this field: kinds of value it may hold.
        #[serde(default)]
        allow: Vec<String>,
    },
    // A struct variant, so that options given to `drop` are refused as unknown.
    Drop {},
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
    /// Forwarded unchanged (scalars only), once the detectors found nothing personal.
    Keep {
        /// The detectors applied to its values.
        detect: Detectors,
    },
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
    pub(crate) consent_field: Option<NodeId>,
    pub(crate) limits: Limits,
    pub(crate) needs_event_date: bool,
    risk: Option<Risk>,
    /// Per node of the tree, its index among the quasi-identifiers; empty without `[risk]`.
    pub(crate) quasi_of: Vec<Option<usize>>,
    /// The first 16 hex digits of the SHA-256 of the TOML text.
    digest: String,
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
        Self::compile(&text).map_err(|detail| Error::InvalidPolicy {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses and validates a policy given as text; the error ([`Error::InvalidPolicy`],
    /// naming the policy `<inline>`) says what to fix.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        Self::compile(text).map_err(|detail| Error::InvalidPolicy {
            path: "<inline>".to_owned(),
            detail,
        })
    }

    /// Parses, validates and compiles a policy; the error is the `detail` of an
    /// [`Error::InvalidPolicy`], which its callers name the policy in.
    fn compile(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| error.to_string())?;
        if !is_valid_tenant(&file.default_tenant) {
            return Err(format!(
                "`default_tenant` = \"{}\" is not a valid tenant name ([a-z0-9_-]{{1,64}})",
                file.default_tenant
            ));
        }
        if !(1..=MAX_DEPTH).contains(&file.limits.max_depth) {
            return Err(format!(
                "`limits.max_depth` = {} is out of range: set it between 1 and {MAX_DEPTH} (the JSON reader's own bound)",
                file.limits.max_depth
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
                    "keep" => RuleSpec::Keep { allow: Vec::new() },
                    "drop" => RuleSpec::Drop {},
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
                RuleSpec::Keep { allow } => Rule::Keep {
                    detect: allow.iter().try_fold(Detectors::ALL, |detect, name| {
                        Detector::from_name(name).map(|d| detect.without(d)).ok_or_else(|| {
                            let known: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
                            format!(
                                "field `{path}`: `allow` names an unknown detector \"{name}\"; the detectors are {}",
                                known.join(", ")
                            )
                        })
                    })?,
                },
                RuleSpec::Drop {} => Rule::Drop,
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
            tree.insert(&segments, rule.clone(), &path)
                .map_err(|conflict| conflict.to_string())?;
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
                Some((id, Rule::Keep { .. } | Rule::Drop)) => Some(id),
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
        let consent_field = match file.consent_field.as_deref() {
            Some(path) => match leaf("consent_field", path)? {
                Some((id, Rule::Keep { .. })) => Some(id),
                Some(_) => return Err(format!(
                    "`consent_field` = \"{path}\" must name a field whose rule is \"keep\": the consent flag travels with the event"
                )),
                None => return Err(format!(
                    "`consent_field` = \"{path}\" has no rule in [fields]; add `\"{path}\" = \"keep\"`"
                )),
            },
            None => None,
        };
        let risk = file
            .risk
            .map(|spec| {
                spec.validate(
                    &rules,
                    file.tenant_field.as_deref(),
                    file.record_key.as_deref(),
                )
            })
            .transpose()?;
        let mut quasi_of = Vec::new();
        if let Some(risk) = &risk {
            quasi_of = vec![None; tree.len()];
            for (index, path) in risk.quasi_identifiers().iter().enumerate() {
                let segments = split_path(path)?;
                if let Some(node) = tree.find(&segments) {
                    quasi_of[node as usize] = Some(index);
                }
            }
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tree,
            tenant_field,
            default_tenant: file.default_tenant,
            record_key,
            event_time_field,
            required,
            consent_field,
            limits: file.limits,
            needs_event_date,
            risk,
            quasi_of,
            digest: hex::encode(&Sha256::digest(text.as_bytes())[..8]),
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

    /// The nodes a record walk captures before it writes: the tenant, the event time, the
    /// consent and the required fields.
    pub(crate) fn watched(&self) -> Vec<NodeId> {
        self.tenant_field
            .iter()
            .chain(&self.event_time_field)
            .chain(&self.consent_field)
            .chain(self.required.iter().map(|(_, node)| node))
            .copied()
            .collect()
    }

    /// The quasi-identifiers and k of `[risk]`, when the policy declares them.
    pub fn risk(&self) -> Option<&Risk> {
        self.risk.as_ref()
    }

    /// The tenant used when an event names none.
    pub fn default_tenant(&self) -> &str {
        &self.default_tenant
    }

    /// The first 16 hex digits of the SHA-256 of the policy's text as read: names the
    /// exact policy a run applied, in audit entries, without quoting it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The path of the consent field, if the policy has one.
    pub fn consent_field(&self) -> Option<&str> {
        self.consent_field.map(|node| &*self.tree.node(node).path)
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
        assert_eq!(policy.consent_field(), None, "consent is opt-in");
        let with_consent = format!(
            "consent_field = \"consent.analytics\"\n{}",
            include_str!("../../schemas/coupon_redemption.policy.toml")
        );
        let policy = Policy::from_toml(&with_consent).expect("the commented-out option is valid");
        assert_eq!(policy.consent_field(), Some("consent.analytics"));
    }

    #[test]
    fn the_digest_is_the_start_of_the_texts_sha256() {
        // `printf '[fields]\na = "keep"\n' | sha256sum`
        let policy = Policy::from_toml("[fields]\na = \"keep\"\n").unwrap();
        assert_eq!(policy.digest(), "f9ae34a7d6f58f09");
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
            (
                "[fields]\na = { action = \"keep\", allow = [\"phone\", \"phones\"] }",
                "field `a`: `allow` names an unknown detector \"phones\"; the detectors are email, card, phone, iban, ip",
            ),
            (
                "[fields]\na = { action = \"drop\", allow = [\"phone\"] }",
                "unknown field `allow`",
            ),
            ("[limits]\nmax_depth = 128\n[fields]\na = \"keep\"", "between 1 and 127"),
            ("[limits]\nmax_depth = 0\n[fields]\na = \"keep\"", "between 1 and 127"),
            ("[limits]\nmax_strings = 1\n[fields]\na = \"keep\"", "unknown field `max_strings`"),
            (
                "consent_field = \"c.ok\"\n[fields]\na = \"keep\"",
                "`consent_field` = \"c.ok\" has no rule in [fields]; add `\"c.ok\" = \"keep\"`",
            ),
            (
                "consent_field = \"c\"\n[fields]\nc = \"drop\"",
                "`consent_field` = \"c\" must name a field whose rule is \"keep\"",
            ),
            (
                "consent_field = \"c[]\"\n[fields]\n\"c[]\" = \"keep\"",
                "`consent_field` = \"c[]\" cannot go through an array",
            ),
            (
                "consent_field = \"c\"\n[fields]\n\"c.ok\" = \"keep\"",
                "`consent_field` = \"c\" has no rule in [fields]",
            ),
        ];
        for (text, expected) in cases {
            let error = Policy::from_toml(text).expect_err(text).to_string();
            assert!(
                error.starts_with("policy <inline>: ") && error.contains(expected),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn allow_lists_compile_into_detector_sets() {
        let policy = Policy::from_toml(
            "[fields]\na = \"keep\"\nb = { action = \"keep\", allow = [\"phone\", \"ip\"] }\nc = { action = \"keep\" }",
        )
        .unwrap();
        let rules: Vec<&Rule> = policy.rules().iter().map(|(_, rule)| rule).collect();
        let all = Detectors::ALL;
        assert_eq!(
            rules,
            [
                &Rule::Keep { detect: all },
                &Rule::Keep {
                    detect: all.without(Detector::Phone).without(Detector::Ip)
                },
                &Rule::Keep { detect: all },
            ]
        );
    }

    #[test]
    fn limits_default_when_absent_and_read_when_given() {
        let policy = Policy::from_toml("[fields]\na = \"keep\"").unwrap();
        assert_eq!(*policy.limits(), Limits::default());
        assert_eq!(policy.limits().max_depth, 32);
        let policy = Policy::from_toml(
            "[limits]\nmax_depth = 5\nmax_string_bytes = 6\nmax_array_len = 7\nmax_object_fields = 8\n[fields]\na = \"keep\"",
        )
        .unwrap();
        let expected = Limits {
            max_depth: 5,
            max_string_bytes: 6,
            max_array_len: 7,
            max_object_fields: 8,
            ..Limits::default()
        };
        assert_eq!(*policy.limits(), expected);
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
