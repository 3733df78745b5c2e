//! `pseudopipe subject`: answers a data subject's access or erasure request.
//!
//! For the identifiers of one person (e-mail, phone, loyalty card, or any tokenized field
//! named by its path) it computes, under every version of the tenant's keyring whose
//! material still exists, the token each tokenized field of the policy maps them to, as
//! ingest would have. With `--scan-brokers` and `--scan-topic` it then reads a
//! pseudonymized (or cloud) topic from the beginning up to its end offsets at start and
//! reports every record holding one of those tokens. The request is an audit entry
//! (`subject`: ticket, fields, versions, scanned topic, match count); the values and
//! tokens never are.
//!
//! Also here, shared with `reidentify` and `lookup`: [`read_stdin`], [`check_reference`]
//! and [`check_ticket`].

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use plumbing::rdkafka::Message as _;
use pseudonymize::policy::Rule;
use pseudonymize::{KeyState, Keyring, Normalizer, Policy, TokenKey};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::{ScanArgs, SubjectArgs, TicketArgs};
use crate::config::Config;
use crate::keys::{read_kek, Session};
use crate::topic_read::{self, Source, TopicRead};

/// Reads standard input whole, into memory that is erased when dropped: it holds
/// personal values.
pub(crate) fn read_stdin() -> Result<Zeroizing<String>> {
    let mut buffer = Zeroizing::new(String::with_capacity(4096));
    std::io::stdin()
        .read_to_string(&mut buffer)
        .context("cannot read standard input")?;
    Ok(buffer)
}

/// Checks a reference written into an audit entry's `details` (a ticket, a reason): one
/// word of at most 64 letters, digits and `._:/#+-`, so that `key=value` pairs stay
/// parseable and no free text (which could name a person) lands on the trail.
pub(crate) fn check_reference(option: &str, value: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/#+-".contains(c);
    if value.is_empty() || value.len() > 64 || !value.chars().all(allowed) {
        bail!(
            "{option} must be a short reference of letters, digits and `._:/#+-` (at most 64, no spaces), e.g. DSR-42 or fraud-investigation"
        );
    }
    Ok(())
}

/// Checks `--ticket`, or that the `--config` file lets it be left out (`[keys]
/// require_ticket = false`). Returns the ticket.
pub(crate) fn check_ticket(args: &TicketArgs) -> Result<Option<&str>> {
    if let Some(ticket) = &args.ticket {
        check_reference("--ticket", ticket)?;
        return Ok(Some(ticket));
    }
    let required = match &args.config {
        Some(path) => Config::from_file(path)?.require_ticket()?,
        None => true,
    };
    if required {
        bail!(
            "--ticket is required: pass the reference of the request this answers (e.g. --ticket DSR-42); a site without tickets sets `require_ticket = false` in [keys] of the file given with --config (or PSEUDOPIPE_CONFIG)"
        );
    }
    Ok(None)
}

/// What an identifier given on the command line applies to.
enum Target {
    /// Every field tokenized in this domain (`--email`, `--phone`, `--loyalty-card`).
    Domain {
        option: &'static str,
        domain: &'static str,
    },
    /// One field of the policy (`--value FIELD=...`).
    Field(String),
}

/// A tokenized field of the policy that a given value applies to.
struct TokenField {
    path: String,
    domain: String,
    normalizer: Normalizer,
    /// Index of the value in the list of given values.
    value: usize,
}

/// The token of one field under one version.
#[derive(Debug, Serialize)]
struct TokenRow {
    field: String,
    domain: String,
    normalizer: &'static str,
    version: u32,
    token: String,
}

/// A version whose tokens cannot be computed any more.
#[derive(Debug, Serialize)]
struct DestroyedVersion {
    version: u32,
    destroyed_at: Option<String>,
}

/// Where one of the person's tokens was found in a record.
#[derive(Debug, Serialize)]
struct FieldMatch {
    /// The path in the record (`[]` for array elements).
    path: String,
    /// The policy field whose token it is.
    field: String,
    version: u32,
}

/// A record holding at least one of the person's tokens.
#[derive(Debug, Serialize)]
struct RecordMatch {
    partition: i32,
    offset: i64,
    event_id: Option<String>,
    fields: Vec<FieldMatch>,
}

/// What a scan read and found.
#[derive(Debug, Serialize)]
struct ScanReport {
    brokers: String,
    topic: String,
    /// Records read, up to the end offsets taken when the scan started.
    records_read: u64,
    /// Records whose payload is not a JSON document, hence not searched.
    not_json: u64,
    matches: Vec<RecordMatch>,
}

/// The answer to a request, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Answer {
    tenant: String,
    ticket: Option<String>,
    tokens: Vec<TokenRow>,
    destroyed_versions: Vec<DestroyedVersion>,
    scan: Option<ScanReport>,
}

/// Runs `subject`.
pub fn run(args: SubjectArgs) -> Result<ExitCode> {
    let ticket = check_ticket(&args.request)?.map(str::to_owned);
    let policy = Policy::from_file(&args.policy)?;
    let (targets, values) = given_values(&args)?;
    let fields = token_fields(&policy, &targets)?;
    let tenant = args.keyring.tenant.clone();

    // The keyring is read without its lock: a scan can take minutes, and key operations
    // (and running ingests recording key switches) must not wait for it.
    let kek = read_kek(&args.keyring.kek_file)?;
    let keyring = Keyring::open(&args.keyring.keyring, &kek)?;
    let (tokens, destroyed_versions) = compute_tokens(&keyring, &tenant, &fields, &values)?;
    drop(values);
    drop(keyring);

    let scan = match (&args.scan.scan_brokers, &args.scan.scan_topic) {
        (Some(brokers), Some(topic)) => Some(scan(&args.scan, brokers, topic, &tokens)?),
        _ => None,
    };

    let mut s = Session::open(&args.keyring, false)?;
    s.keyring.record(
        &mut s.log,
        &s.actor,
        "subject",
        &tenant,
        details(
            ticket.as_deref(),
            &fields,
            &tokens,
            &destroyed_versions,
            scan.as_ref(),
        ),
    )?;
    drop(s);

    let answer = Answer {
        tenant,
        ticket,
        tokens,
        destroyed_versions,
        scan,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_tables(&answer);
    }
    Ok(ExitCode::SUCCESS)
}

/// The identifiers given, with what each applies to; values given as `-` are read from
/// standard input, one line each, in the order --email, --phone, --loyalty-card, then
/// --value as given.
fn given_values(args: &SubjectArgs) -> Result<(Vec<Target>, Vec<Zeroizing<String>>)> {
    let mut given: Vec<(Target, &str)> = Vec::new();
    for (option, domain, value) in [
        ("--email", "email", &args.email),
        ("--phone", "phone", &args.phone),
        ("--loyalty-card", "customer", &args.loyalty_card),
    ] {
        if let Some(value) = value {
            given.push((Target::Domain { option, domain }, value));
        }
    }
    for pair in &args.values {
        let Some((field, value)) = pair.split_once('=') else {
            bail!("--value expects FIELD=VALUE (or FIELD=- to read the value from standard input)");
        };
        given.push((Target::Field(field.to_string()), value));
    }
    if given.is_empty() {
        bail!("give at least one of the person's identifiers: --email, --phone, --loyalty-card or --value FIELD=VALUE");
    }
    let dashes = given.iter().filter(|(_, value)| *value == "-").count();
    let stdin = if dashes > 0 {
        read_stdin()?
    } else {
        Zeroizing::new(String::new())
    };
    let mut lines = stdin.lines();
    let mut targets = Vec::with_capacity(given.len());
    let mut values = Vec::with_capacity(given.len());
    for (target, value) in given {
        let value = if value == "-" {
            lines.next().with_context(|| {
                format!("{dashes} values are given as `-` but standard input holds fewer lines")
            })?
        } else {
            value
        };
        targets.push(target);
        values.push(Zeroizing::new(value.to_string()));
    }
    Ok((targets, values))
}

/// The tokenized fields of the policy that the given values apply to.
fn token_fields(policy: &Policy, targets: &[Target]) -> Result<Vec<TokenField>> {
    let domains = policy.token_domains();
    let mut fields = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        match target {
            Target::Domain { option, domain } => {
                let before = fields.len();
                for (path, rule) in policy.rules() {
                    if let Rule::Token { domain: d, normalizer } = rule {
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
                    bail!("{option}: the policy tokenizes no field in domain `{domain}`; name the field with --value FIELD=VALUE");
                }
            }
            Target::Field(path) => match policy.rules().iter().find(|(p, _)| p == path) {
                Some((_, Rule::Token { domain, normalizer })) => fields.push(TokenField {
                    path: path.clone(),
                    domain: domains[*domain].clone(),
                    normalizer: *normalizer,
                    value: index,
                }),
                Some((_, Rule::Encrypt { .. })) => bail!(
                    "--value {path}=...: the field is encrypted with a fresh nonce per value, so its values cannot be searched for; find the records by another identifier, then decrypt with `pseudopipe reidentify`"
                ),
                Some(_) => bail!(
                    "--value {path}=...: the policy does not tokenize this field, so it leaves no token to search for"
                ),
                None => bail!("--value {path}=...: the policy has no field `{path}`"),
            },
        }
    }
    Ok(fields)
}

/// The token of every field under every live version of `tenant`, and the destroyed versions.
fn compute_tokens(
    keyring: &Keyring,
    tenant: &str,
    fields: &[TokenField],
    values: &[Zeroizing<String>],
) -> Result<(Vec<TokenRow>, Vec<DestroyedVersion>)> {
    // Each value's normal form, once per field (the normalizer is the field's).
    let mut normalized = Vec::with_capacity(fields.len());
    for field in fields {
        let form = Zeroizing::new(field.normalizer.apply(&values[field.value]).into_owned());
        if form.is_empty() {
            bail!(
                "the value given for {} is empty once normalized ({}): it would match every record where the field is empty",
                field.path,
                field.normalizer.name()
            );
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
fn details(
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

/// Reads `topic` from the beginning to its end offsets at start and returns the records
/// holding one of `tokens`.
fn scan(args: &ScanArgs, brokers: &str, topic: &str, tokens: &[TokenRow]) -> Result<ScanReport> {
    let wanted: HashMap<&str, &TokenRow> = tokens.iter().map(|t| (t.token.as_str(), t)).collect();
    let properties = topic_read::properties(
        "--scan-property",
        &args.scan_property,
        &[
            ("bootstrap.servers", "give the cluster with --scan-brokers"),
            (
                "group.id",
                "the scan reads in a throw-away group of its own and commits nothing",
            ),
        ],
    )?;
    let read = TopicRead::open(Source {
        option: "--scan-brokers",
        brokers,
        topic,
        properties: &properties,
        connect_timeout: args.connect_timeout,
        timeout_option: "--scan-timeout",
        timeout: Duration::from_secs(args.scan_timeout),
    })?;
    let mut report = ScanReport {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        records_read: 0,
        not_json: 0,
        matches: Vec::new(),
    };
    read.read(
        |_| None,
        |message| {
            report.records_read += 1;
            match message.payload().map(serde_json::from_slice::<Value>) {
                Some(Ok(json)) => {
                    let mut fields = Vec::new();
                    find_tokens(&json, &mut String::new(), &wanted, &mut fields);
                    if !fields.is_empty() {
                        report.matches.push(RecordMatch {
                            partition: message.partition(),
                            offset: message.offset(),
                            event_id: json["event_id"].as_str().map(String::from),
                            fields,
                        });
                    }
                }
                _ => report.not_json += 1,
            }
            Ok(())
        },
    )?;
    report.matches.sort_by_key(|m| (m.partition, m.offset));
    Ok(report)
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

fn print_tables(answer: &Answer) {
    match &answer.ticket {
        Some(ticket) => println!("tenant {} (ticket {ticket})", answer.tenant),
        None => println!("tenant {}", answer.tenant),
    }
    let width = answer
        .tokens
        .iter()
        .map(|t| t.field.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!("{:<width$}  {:<7}  TOKEN", "FIELD", "VERSION");
    for row in &answer.tokens {
        println!("{:<width$}  {:<7}  {}", row.field, row.version, row.token);
    }
    for version in &answer.destroyed_versions {
        println!(
            "v{}: destroyed on {}: tokens cannot be computed",
            version.version,
            version
                .destroyed_at
                .as_deref()
                .unwrap_or("an unrecorded date")
        );
    }
    let Some(scan) = &answer.scan else {
        return;
    };
    println!();
    println!(
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
    );
    if scan.matches.is_empty() {
        return;
    }
    println!(
        "{:<9}  {:<10}  {:<36}  FIELDS",
        "PARTITION", "OFFSET", "EVENT_ID"
    );
    for m in &scan.matches {
        let fields: Vec<String> = m
            .fields
            .iter()
            .map(|f| format!("{} (v{})", f.path, f.version))
            .collect();
        println!(
            "{:<9}  {:<10}  {:<36}  {}",
            m.partition,
            m.offset,
            m.event_id.as_deref().unwrap_or("-"),
            fields.join(", ")
        );
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
        let wanted = rows.iter().map(|r| (r.token.as_str(), r)).collect();
        let record: Value = serde_json::json!({
            "event_id": "e-1",
            "customer": {"email": "v1.aaaaaaaaaaaaaaaaaaaaaa", "phone": "v1.cccccccccccccccccccccc"},
            "basket": {"items": [{"sku": "x"}, {"note": "v2.bbbbbbbbbbbbbbbbbbbbbb"}]},
            "n": 3
        });
        let mut found = Vec::new();
        find_tokens(&record, &mut String::new(), &wanted, &mut found);
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
