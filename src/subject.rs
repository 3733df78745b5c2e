//! `pseudopipe subject`: answers a data subject's access or erasure request.
//!
//! Reads the person's identifiers (arguments, or standard input for `-`), has
//! [`compliance::subject`] compute their tokens under every live key version, and with
//! `--scan-brokers` and `--scan-topic` reads a pseudonymized (or cloud) topic from the
//! beginning up to its end offsets at start for records holding one of them. The request
//! is an audit entry (`subject`: ticket, fields, versions, scanned topic, match count);
//! the values and tokens never are.
//!
//! Also here, shared with `reidentify` and `lookup`: [`read_stdin`] and [`check_ticket`].

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use compliance::subject::{
    check_reference, compute_tokens, details, token_fields, Answer, Matcher, RecordMatch,
    ScanReport, Target, TokenRow,
};
use plumbing::rdkafka::Message as _;
use pseudonymize::{Keyring, Policy};
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
        print!("{answer}");
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

/// Reads `topic` from the beginning to its end offsets at start and returns the records
/// holding one of `tokens`.
fn scan(args: &ScanArgs, brokers: &str, topic: &str, tokens: &[TokenRow]) -> Result<ScanReport> {
    let matcher = Matcher::new(tokens);
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
                    let fields = matcher.find(&json);
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
