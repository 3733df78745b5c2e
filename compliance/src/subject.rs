//! A data subject's tokens (`pseudopipe subject`): for the identifiers of one person
//! (e-mail, phone, loyalty card, or any tokenized field named by its path), the token each
//! tokenized field of the policy maps them to under every version of the tenant's keyring
//! whose material still exists, as ingest would have computed it; and where those tokens
//! sit in a pseudonymized record ([`Matcher`]). The audit entry's details
//! ([`details`]) say what was asked and found, never a value or a token.
//!
//! Reading the identifiers (arguments, standard input) and the topic to scan is the
//! binary's; this module holds what a request means.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use pseudonymize::policy::Rule;
use pseudonymize::{KeyState, Keyring, Normalizer, Policy, TokenKey};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::Error;

/// Checks a reference written into an audit entry's `details` (a ticket, a reason): one
/// word of at most 64 letters, digits and `._:/#+-`, so that `key=value` pairs stay
/// parseable and no free text (which could name a person) lands on the trail. `option`
/// names where it was given, for the message.
pub fn check_reference(option: &'static str, value: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/#+-".contains(c);
    if value.is_empty() || value.len() > 64 || !value.chars().all(allowed) {
        return Err(Error::BadReference { option });
    }
    Ok(())
}

/// What an identifier given on the command line applies to.
pub enum Target {
    /// Every field tokenized in this domain (`--email`, `--phone`, `--loyalty-card`).
    Domain {
        /// The option it was given with, for messages.
        option: &'static str,
        /// The token domain.
        domain: &'static str,
    },
    /// One field of the policy (`--value FIELD=...`).
    Field(String),
}

/// A tokenized field of the policy that a given value applies to.
pub struct TokenField {
    /// The field's policy path.
    pub path: String,
    /// Its token domain.
    pub domain: String,
    /// Its normalizer.
    pub normalizer: Normalizer,
    /// Index of the value in the list of given values.
    pub value: usize,
}

/// The token of one field under one version.
#[derive(Debug, Serialize)]
pub struct TokenRow {
    /// The field's policy path.
    pub field: String,
    /// Its token domain.
    pub domain: String,
    /// Its normalizer's name.
    pub normalizer: &'static str,
    /// The key version.
    pub version: u32,
    /// The token.
    pub token: String,
}

/// A version whose tokens cannot be computed any more.
#[derive(Debug, Serialize)]
pub struct DestroyedVersion {
    /// The key version.
    pub version: u32,
    /// When it was destroyed, as the keyring recorded it.
    pub destroyed_at: Option<String>,
}

/// Where one of the person's tokens was found in a record.
#[derive(Debug, Serialize)]
pub struct FieldMatch {
    /// The path in the record (`[]` for array elements).
    pub path: String,
    /// The policy field whose token it is.
    pub field: String,
    /// The key version of the token.
    pub version: u32,
}

/// A record holding at least one of the person's tokens.
#[derive(Debug, Serialize)]
pub struct RecordMatch {
    /// The record's partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's `event_id`, when it has one.
    pub event_id: Option<String>,
    /// Where the tokens are in it.
    pub fields: Vec<FieldMatch>,
}

/// What a scan read and found.
#[derive(Debug, Serialize)]
pub struct ScanReport {
    /// The cluster scanned.
    pub brokers: String,
    /// The topic scanned.
    pub topic: String,
    /// Records read, up to the end offsets taken when the scan started.
    pub records_read: u64,
    /// Records whose payload is not a JSON document, hence not searched.
    pub not_json: u64,
    /// The records holding a token, in partition and offset order.
    pub matches: Vec<RecordMatch>,
}

/// The answer to a request, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The tenant asked about.
    pub tenant: String,
    /// The request's reference.
    pub ticket: Option<String>,
    /// The person's tokens.
    pub tokens: Vec<TokenRow>,
    /// The versions whose tokens cannot be computed any more.
    pub destroyed_versions: Vec<DestroyedVersion>,
    /// What a scan found, when one ran.
    pub scan: Option<ScanReport>,
}

/// The tokenized fields of the policy that the given values apply to.
pub fn token_fields(policy: &Policy, targets: &[Target]) -> Result<Vec<TokenField>, Error> {
    let domains = policy.token_domains();
    let mut fields = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        match target {
            Target::Domain { option, domain } => {
                let before = fields.len();
                for (path, rule) in policy.rules() {
                    if let Rule::Token {
                        domain: d,
                        normalizer,
                    } = rule
                    {
                        if domains[*d] == *domain {
                            fields.push(TokenField {
                                path: path.clone(),
                                domain: domains[*d].clone(),
                                normalizer: *normalizer,
                                value: index,
                            });
                        }
                    }
                }
                if fields.len() == before {
                    return Err(Error::NoFieldInDomain { option, domain });
                }
            }
            Target::Field(path) => match policy.rules().iter().find(|(p, _)| p == path) {
                Some((_, Rule::Token { domain, normalizer })) => fields.push(TokenField {
                    path: path.clone(),
                    domain: domains[*domain].clone(),
                    normalizer: *normalizer,
                    value: index,
                }),
                Some((_, Rule::Encrypt { .. })) => {
                    return Err(Error::SearchEncrypted { path: path.clone() })
                }
                Some(_) => return Err(Error::SearchUntokenized { path: path.clone() }),
                None => return Err(Error::SearchUnknown { path: path.clone() }),
            },
        }
    }
    Ok(fields)
}

/// The token of every field under every live version of `tenant`, and the destroyed versions.
pub fn compute_tokens(
    keyring: &Keyring,
    tenant: &str,
    fields: &[TokenField],
    values: &[Zeroizing<String>],
) -> Result<(Vec<TokenRow>, Vec<DestroyedVersion>), Error> {
    // Each value's normal form, once per field (the normalizer is the field's).
    let mut normalized = Vec::with_capacity(fields.len());
    for field in fields {
        let form = Zeroizing::new(field.normalizer.apply(&values[field.value]).into_owned());
        if form.is_empty() {
            return Err(Error::EmptyOnceNormalized {
                path: field.path.clone(),
                normalizer: field.normalizer.name(),
            });
        }
        normalized.push(form);
    }
    let mut live = Vec::new();
    let mut destroyed = Vec::new();
    for version in keyring.versions(tenant)? {
        match (version.state, keyring.secret(tenant, version.version)) {
            (KeyState::Active | KeyState::Retired, Some(secret)) => {
                live.push((version.version, secret));
            }
            _ => destroyed.push(DestroyedVersion {
                version: version.version,
                destroyed_at: version.destroyed_at.clone(),
            }),
        }
    }
    let mut tokens = Vec::with_capacity(fields.len() * live.len());
    for (field, form) in fields.iter().zip(&normalized) {
        for (version, secret) in &live {
            let key = TokenKey::derive(secret, *version, tenant, &field.domain);
            tokens.push(TokenRow {
                field: field.path.clone(),
                domain: field.domain.clone(),
                normalizer: field.normalizer.name(),
                version: *version,
                token: key.token(form.as_bytes()),
            });
        }
    }
    Ok((tokens, destroyed))
}

/// The audit entry's details: what was asked and found, never a value or a token.
pub fn details(
    ticket: Option<&str>,
    fields: &[TokenField],
    tokens: &[TokenRow],
    destroyed: &[DestroyedVersion],
    scan: Option<&ScanReport>,
) -> String {
    let join = |items: Vec<String>| {
        let mut items = items;
        items.dedup();
        items.join(",")
    };
    let versions: BTreeSet<u32> = tokens.iter().map(|t| t.version).collect();
    let mut parts = Vec::new();
    if let Some(ticket) = ticket {
        parts.push(format!("ticket={ticket}"));
    }
    parts.push(format!(
        "fields={}",
        join(fields.iter().map(|f| f.path.clone()).collect())
    ));
    parts.push(if versions.is_empty() {
        "versions=none".to_string()
    } else {
        format!(
            "versions={}",
            join(versions.iter().map(u32::to_string).collect())
        )
    });
    if !destroyed.is_empty() {
        parts.push(format!(
            "destroyed={}",
            join(destroyed.iter().map(|d| d.version.to_string()).collect())
        ));
    }
    if let Some(scan) = scan {
        parts.push(format!("scan_topic={}", scan.topic));
        parts.push(format!("scanned={}", scan.records_read));
        parts.push(format!("matches={}", scan.matches.len()));
    }
    parts.join(" ")
}

/// Finds a person's tokens in pseudonymized records.
pub struct Matcher<'a> {
    wanted: HashMap<&'a str, &'a TokenRow>,
}

impl<'a> Matcher<'a> {
    /// A matcher for `tokens`.
    pub fn new(tokens: &'a [TokenRow]) -> Self {
        Self {
            wanted: tokens.iter().map(|t| (t.token.as_str(), t)).collect(),
        }
    }

    /// Every place in `record` that holds one of the tokens, with its path.
    pub fn find(&self, record: &Value) -> Vec<FieldMatch> {
        let mut found = Vec::new();
        find_tokens(record, &mut String::new(), &self.wanted, &mut found);
        found
    }
}

/// Appends to `found` every string of `value` that is one of `wanted`, with its path.
fn find_tokens(
    value: &Value,
    path: &mut String,
    wanted: &HashMap<&str, &TokenRow>,
    found: &mut Vec<FieldMatch>,
) {
    match value {
        Value::String(text) => {
            if let Some(row) = wanted.get(text.as_str()) {
                found.push(FieldMatch {
                    path: path.clone(),
                    field: row.field.clone(),
                    version: row.version,
                });
            }
        }
        Value::Array(items) => {
            let length = path.len();
            path.push_str("[]");
            for item in items {
                find_tokens(item, path, wanted, found);
            }
            path.truncate(length);
        }
        Value::Object(members) => {
            for (name, member) in members {
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                find_tokens(member, path, wanted, found);
                path.truncate(length);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The answer as tables for a terminal.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answer = self;
        match &answer.ticket {
            Some(ticket) => writeln!(f, "tenant {} (ticket {ticket})", answer.tenant)?,
            None => writeln!(f, "tenant {}", answer.tenant)?,
        }
        let width = answer
            .tokens
            .iter()
            .map(|t| t.field.len())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(f, "{:<width$}  {:<7}  TOKEN", "FIELD", "VERSION")?;
        for row in &answer.tokens {
            writeln!(
                f,
                "{:<width$}  {:<7}  {}",
                row.field, row.version, row.token
            )?;
        }
        for version in &answer.destroyed_versions {
            writeln!(
                f,
                "v{}: destroyed on {}: tokens cannot be computed",
                version.version,
                version
                    .destroyed_at
                    .as_deref()
                    .unwrap_or("an unrecorded date")
            )?;
        }
        let Some(scan) = &answer.scan else {
            return Ok(());
        };
        writeln!(f)?;
        writeln!(
            f,
            "scan of {} at {}: {} records read up to the end offsets at start, {} matching{}",
            scan.topic,
            scan.brokers,
            scan.records_read,
            scan.matches.len(),
            if scan.not_json > 0 {
                format!(
                    " ({} records are not JSON and were not searched)",
                    scan.not_json
                )
            } else {
                String::new()
            }
        )?;
        if scan.matches.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<9}  {:<10}  {:<36}  FIELDS",
            "PARTITION", "OFFSET", "EVENT_ID"
        )?;
        for m in &scan.matches {
            let fields: Vec<String> = m
                .fields
                .iter()
                .map(|m| format!("{} (v{})", m.path, m.version))
                .collect();
            writeln!(
                f,
                "{:<9}  {:<10}  {:<36}  {}",
                m.partition,
                m.offset,
                m.event_id.as_deref().unwrap_or("-"),
                fields.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(token: &str, field: &str, version: u32) -> TokenRow {
        TokenRow {
            field: field.into(),
            domain: "email".into(),
            normalizer: "email",
            version,
            token: token.into(),
        }
    }

    #[test]
    fn tokens_are_found_at_any_depth_with_their_path() {
        let rows = [
            row("v1.aaaaaaaaaaaaaaaaaaaaaa", "customer.email", 1),
            row("v2.bbbbbbbbbbbbbbbbbbbbbb", "coupon.coupon_code", 2),
        ];

        let record: Value = serde_json::json!({
            "event_id": "e-1",
            "customer": {"email": "v1.aaaaaaaaaaaaaaaaaaaaaa", "phone": "v1.cccccccccccccccccccccc"},
            "basket": {"items": [{"sku": "x"}, {"note": "v2.bbbbbbbbbbbbbbbbbbbbbb"}]},
            "n": 3
        });
        let found = Matcher::new(&rows).find(&record);
        let found: Vec<(&str, &str, u32)> = found
            .iter()
            .map(|f| (f.path.as_str(), f.field.as_str(), f.version))
            .collect();
        assert_eq!(
            found,
            [
                ("customer.email", "customer.email", 1),
                ("basket.items[].note", "coupon.coupon_code", 2)
            ]
        );
    }

    #[test]
    fn references_are_one_short_word() {
        for good in ["DSR-42", "INC-7", "fraud-investigation", "JIRA:SEC/12#3"] {
            check_reference("--ticket", good).unwrap();
        }
        for bad in ["", "two words", "a=b", "é", &"x".repeat(65)] {
            let error = check_reference("--reason", bad).unwrap_err().to_string();
            assert!(error.starts_with("--reason must be"), "{bad}: {error}");
        }
    }
}
