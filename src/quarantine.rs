//! `pseudopipe quarantine`: what the on-prem operator does with a quarantine topic.
//!
//! - `list` counts the quarantined records by stage, reason, field and detector, with their
//!   time range and how many were replayed already; values only with `--show-values`,
//!   recorded in the audit log before anything is printed.
//! - `replay` writes the selected records back to the topic they were read from (the
//!   `pseudopipe-source-topic` header), so that a fixed policy or a restored registry
//!   handles them. Each replayed record and a *marker* naming its quarantine offset are
//!   written in one Kafka transaction (the marker goes to the quarantine topic itself):
//!   a record is replayed at most once, even when the command is interrupted and run
//!   again, because a run skips every record a committed marker names. The replay is
//!   recorded in the audit log (selection and count) before the first record is written,
//!   and again with the count written at the end.
//!
//! Both read the quarantine topic `read_committed` from the beginning up to the end offsets
//! it had when the command started, in a throw-away group that commits nothing, twice: a
//! first pass finds the markers and counts, a second one shows or replays. Records are
//! passed on as bytes with their key and original headers: both stages' quarantines and
//! both formats (JSON, Avro with its schema id) replay the same way. See ADR 0017.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use plumbing::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use plumbing::rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use plumbing::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use plumbing::rdkafka::{ClientConfig, Message as _};
use plumbing::relay::headers;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::{
    AuditTrailArgs, ListArgs, QuarantineArgs, QuarantineCommand, ReplayArgs, Selection,
};
use crate::keys::{read_kek, Session};
use crate::subject::check_ticket;
use crate::topic_read::{self, Source, TopicRead};

/// The header of a replay marker in the quarantine topic: `PARTITION/OFFSET` of the
/// quarantined record it stands for (in the same partition as that record).
const REPLAYED: &str = "pseudopipe-replayed";
/// The header of a replayed record: `TOPIC/PARTITION/OFFSET` of its quarantine record.
/// Ingest and sink never forward input headers, and a quarantine drops `pseudopipe-*`
/// headers of an earlier one.
const REPLAYED_FROM: &str = "pseudopipe-replayed-from";
/// Records per replay transaction.
const TRANSACTION_RECORDS: usize = 500;

/// Runs `quarantine list` or `quarantine replay`.
pub fn run(command: QuarantineCommand) -> Result<ExitCode> {
    match command {
        QuarantineCommand::List(args) => list(&args),
        QuarantineCommand::Replay(args) => replay(&args),
    }
}

/// What the headers of a quarantined record say.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct About {
    stage: String,
    reason: String,
    field: String,
    detector: String,
}

/// One quarantined record, as a pass sees it.
struct Quarantined {
    partition: i32,
    offset: i64,
    /// The record's timestamp (the input record's, kept by the quarantine), ms since 1970.
    timestamp: Option<i64>,
    about: About,
    /// The topic it was read from, where a replay writes it.
    source_topic: Option<String>,
}

/// What a record of the quarantine topic is.
enum Entry {
    Quarantined(Quarantined),
    /// A replay marker: the quarantined record at this partition and offset was replayed.
    Marker(i32, i64),
    /// A record no pseudopipe stage wrote (no `pseudopipe-reason`): left alone.
    Foreign,
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

fn entry(message: &BorrowedMessage<'_>) -> Entry {
    if let Some(replayed) = header(message, REPLAYED) {
        return match replayed
            .split_once('/')
            .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        {
            Some((partition, offset)) => Entry::Marker(partition, offset),
            None => Entry::Foreign,
        };
    }
    let Some(reason) = header(message, headers::REASON) else {
        return Entry::Foreign;
    };
    let text = |name| header(message, name).unwrap_or("").to_owned();
    Entry::Quarantined(Quarantined {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        about: About {
            stage: text(headers::STAGE),
            reason: reason.to_owned(),
            field: text(headers::FIELD),
            detector: text(headers::DETECTOR),
        },
        source_topic: header(message, headers::SOURCE_TOPIC).map(str::to_owned),
    })
}

/// The selection options, checked and ready to match.
struct Filter {
    reasons: Vec<String>,
    field: Option<String>,
    detector: Option<String>,
    stage: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    partition: Option<i32>,
    from_offset: Option<i64>,
    to_offset: Option<i64>,
}

impl Filter {
    fn new(selection: &Selection) -> Result<Self> {
        let time = |option: &str, text: &Option<String>| -> Result<Option<i64>> {
            text.as_deref()
                .map(|text| {
                    let at = OffsetDateTime::parse(text, &Rfc3339).with_context(|| {
                        format!(
                            "{option} {text}: expected an RFC 3339 time, e.g. 2026-12-07T04:00:00Z"
                        )
                    })?;
                    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
                })
                .transpose()
        };
        let filter = Self {
            reasons: selection.reason.clone(),
            field: selection.field.clone(),
            detector: selection.detector.clone(),
            stage: selection.stage.clone(),
            since: time("--since", &selection.since)?,
            until: time("--until", &selection.until)?,
            partition: selection.partition,
            from_offset: selection.from_offset,
            to_offset: selection.to_offset,
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if since >= until {
                bail!("--since must be before --until");
            }
        }
        if let (Some(from), Some(to)) = (filter.from_offset, filter.to_offset) {
            if from > to {
                bail!("--from-offset {from} is past --to-offset {to}");
            }
        }
        Ok(filter)
    }

    fn matches(&self, record: &Quarantined) -> bool {
        let about = &record.about;
        let is =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
        (self.reasons.is_empty() || self.reasons.contains(&about.reason))
            && is(&self.field, &about.field)
            && is(&self.detector, &about.detector)
            && is(&self.stage, &about.stage)
            && self.partition.is_none_or(|p| p == record.partition)
            && self.from_offset.is_none_or(|from| record.offset >= from)
            && self.to_offset.is_none_or(|to| record.offset <= to)
            && self
                .since
                .is_none_or(|since| record.timestamp.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| record.timestamp.is_some_and(|t| t < until))
    }

    /// The selection as the audit entry's details: `key=value` pairs of the policy's and
    /// Kafka's words, never a value of an event.
    fn details(&self) -> String {
        let mut parts = Vec::new();
        if !self.reasons.is_empty() {
            parts.push(format!("reason={}", self.reasons.join(",")));
        }
        for (key, value) in [
            ("field", &self.field),
            ("detector", &self.detector),
            ("stage", &self.stage),
        ] {
            if let Some(value) = value {
                parts.push(format!("{key}={value}"));
            }
        }
        for (key, value) in [("since", self.since), ("until", self.until)] {
            if let Some(ms) = value {
                parts.push(format!("{key}={}", format_time(ms)));
            }
        }
        if let Some(partition) = self.partition {
            parts.push(format!("partition={partition}"));
        }
        for (key, value) in [
            ("from_offset", self.from_offset),
            ("to_offset", self.to_offset),
        ] {
            if let Some(offset) = value {
                parts.push(format!("{key}={offset}"));
            }
        }
        if parts.is_empty() {
            "selection=all".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

fn format_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The properties given with --property, secrets resolved.
fn properties(args: &QuarantineArgs) -> Result<BTreeMap<String, String>> {
    topic_read::properties(
        "--property",
        &args.property,
        &[
            ("bootstrap.servers", "give the cluster with --brokers"),
            ("group.id", "the command names its own clients"),
            ("transactional.id", "the command names its own clients"),
        ],
    )
}

/// The quarantine topic, opened for reading to the end offsets it has now.
fn open<'a>(
    args: &'a QuarantineArgs,
    properties: &'a BTreeMap<String, String>,
) -> Result<TopicRead<'a>> {
    TopicRead::open(Source {
        option: "--brokers",
        brokers: &args.brokers,
        topic: &args.topic,
        properties,
        connect_timeout: args.connect_timeout,
        timeout_option: "--timeout",
        timeout: Duration::from_secs(args.timeout),
    })
}

/// The first pass: the quarantined records the filter selects, and the markers.
fn survey(topic: &TopicRead<'_>, filter: &Filter) -> Result<Survey> {
    let mut survey = Survey::default();
    topic.read(
        |_| None,
        |message| {
            match entry(message) {
                Entry::Marker(partition, offset) => {
                    survey.replayed.insert((partition, offset));
                }
                Entry::Foreign => survey.foreign += 1,
                Entry::Quarantined(record) => {
                    survey.records += 1;
                    if filter.matches(&record) {
                        survey.selected.push(record);
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(survey)
}

/// What the first pass found.
#[derive(Default)]
struct Survey {
    /// Quarantined records, selected or not.
    records: u64,
    /// Records no stage wrote.
    foreign: u64,
    selected: Vec<Quarantined>,
    /// (partition, offset) of every quarantined record a committed marker names.
    replayed: HashSet<(i32, i64)>,
}

impl Survey {
    /// The selected records not replayed yet, by partition.
    fn to_do(&self) -> BTreeMap<i32, BTreeSet<i64>> {
        let mut to_do: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for record in &self.selected {
            if !self.replayed.contains(&(record.partition, record.offset)) {
                to_do
                    .entry(record.partition)
                    .or_default()
                    .insert(record.offset);
            }
        }
        to_do
    }
}

/// One row of `list`.
#[derive(Serialize)]
struct Group {
    stage: String,
    reason: String,
    field: String,
    detector: String,
    records: u64,
    replayed: u64,
    first: Option<String>,
    last: Option<String>,
}

/// `list`'s answer.
#[derive(Serialize)]
struct Listing {
    topic: String,
    brokers: String,
    quarantined: u64,
    selected: u64,
    replayed: u64,
    not_from_pseudopipe: u64,
    groups: Vec<Group>,
}

/// The counts of one group of quarantined records.
#[derive(Default)]
struct Tally {
    records: u64,
    replayed: u64,
    /// The earliest and latest timestamps, ms since 1970.
    span: Option<(i64, i64)>,
}

fn listing(args: &QuarantineArgs, survey: &Survey) -> Listing {
    let mut tallies: BTreeMap<&About, Tally> = BTreeMap::new();
    for record in &survey.selected {
        let tally = tallies.entry(&record.about).or_default();
        tally.records += 1;
        if survey.replayed.contains(&(record.partition, record.offset)) {
            tally.replayed += 1;
        }
        if let Some(at) = record.timestamp {
            tally.span = Some(
                tally
                    .span
                    .map_or((at, at), |(first, last)| (first.min(at), last.max(at))),
            );
        }
    }
    let groups: Vec<Group> = tallies
        .into_iter()
        .map(|(about, tally)| Group {
            stage: about.stage.clone(),
            reason: about.reason.clone(),
            field: about.field.clone(),
            detector: about.detector.clone(),
            records: tally.records,
            replayed: tally.replayed,
            first: tally.span.map(|(first, _)| format_time(first)),
            last: tally.span.map(|(_, last)| format_time(last)),
        })
        .collect();
    Listing {
        topic: args.topic.clone(),
        brokers: args.brokers.clone(),
        quarantined: survey.records,
        selected: survey.selected.len() as u64,
        replayed: groups.iter().map(|g| g.replayed).sum(),
        not_from_pseudopipe: survey.foreign,
        groups,
    }
}

fn print_listing(listing: &Listing) {
    println!(
        "{}: {} quarantined records, {} selected, {} of them replayed already{}",
        listing.topic,
        listing.quarantined,
        listing.selected,
        listing.replayed,
        if listing.not_from_pseudopipe > 0 {
            format!(
                "; {} records not written by a pseudopipe stage left aside",
                listing.not_from_pseudopipe
            )
        } else {
            String::new()
        }
    );
    if listing.groups.is_empty() {
        return;
    }
    let dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let rows: Vec<[String; 8]> = listing
        .groups
        .iter()
        .map(|g| {
            [
                dash(&g.stage),
                g.reason.clone(),
                dash(&g.field),
                dash(&g.detector),
                g.records.to_string(),
                g.replayed.to_string(),
                g.first.clone().unwrap_or_else(|| "-".into()),
                g.last.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let titles = [
        "stage", "reason", "field", "detector", "records", "replayed", "first", "last",
    ];
    let mut widths = titles.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(&titles.map(str::to_owned));
    for row in &rows {
        line(row);
    }
}

/// `quarantine list`.
fn list(args: &ListArgs) -> Result<ExitCode> {
    let filter = Filter::new(&args.selection)?;
    if args.show_values {
        return show_values(args, &filter);
    }
    let properties = properties(&args.quarantine)?;
    let topic = open(&args.quarantine, &properties)?;
    let survey = survey(&topic, &filter)?;
    let listing = listing(&args.quarantine, &survey);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print_listing(&listing);
    }
    Ok(ExitCode::SUCCESS)
}

/// One record as `--show-values` prints it (a JSON line).
#[derive(Serialize)]
struct Shown<'a> {
    partition: i32,
    offset: i64,
    stage: &'a str,
    reason: &'a str,
    field: &'a str,
    detector: &'a str,
    message: &'a str,
    /// The payload as text when it is UTF-8; otherwise `payload_base64`.
    payload: Option<&'a str>,
    payload_base64: Option<String>,
}

/// `quarantine list --show-values`: the selected records' payloads (personal data),
/// recorded in the audit log before the first one is printed.
fn show_values(args: &ListArgs, filter: &Filter) -> Result<ExitCode> {
    let audit = &args.audit;
    let ticket = check_ticket(&args.ticket)?;
    drop(session(audit, "--show-values prints personal data")?);
    let properties = properties(&args.quarantine)?;
    let topic = open(&args.quarantine, &properties)?;
    let survey = survey(&topic, filter)?;
    let chosen: HashSet<(i32, i64)> = survey
        .selected
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    record(
        audit,
        "quarantine_show",
        format!(
            "{}topic={} {} records={}",
            ticket.map(|t| format!("ticket={t} ")).unwrap_or_default(),
            args.quarantine.topic,
            filter.details(),
            chosen.len()
        ),
    )?;
    let start = first_offsets(chosen.iter().copied());
    let mut out = std::io::stdout().lock();
    topic.read(
        |partition| start.get(&partition).copied(),
        |message| {
            if !chosen.contains(&(message.partition(), message.offset())) {
                return Ok(());
            }
            let text = |name| header(message, name).unwrap_or("");
            let payload = message.payload().unwrap_or_default();
            let utf8 = std::str::from_utf8(payload).ok();
            let shown = Shown {
                partition: message.partition(),
                offset: message.offset(),
                stage: text(headers::STAGE),
                reason: text(headers::REASON),
                field: text(headers::FIELD),
                detector: text(headers::DETECTOR),
                message: text(headers::MESSAGE),
                payload: utf8,
                payload_base64: utf8
                    .is_none()
                    .then(|| base64::engine::general_purpose::STANDARD.encode(payload)),
            };
            serde_json::to_writer(&mut out, &shown)?;
            writeln!(out).context("cannot write to standard output")
        },
    )?;
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// The lowest offset of each partition among `offsets`.
fn first_offsets(offsets: impl Iterator<Item = (i32, i64)>) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    for (partition, offset) in offsets {
        first
            .entry(partition)
            .and_modify(|o: &mut i64| *o = (*o).min(offset))
            .or_insert(offset);
    }
    first
}

/// The keyring and its audit log, under the keyring's lock; `why` says what needs them.
fn session(audit: &AuditTrailArgs, why: &str) -> Result<Session> {
    let (Some(keyring), Some(kek_file)) = (&audit.keyring, &audit.kek_file) else {
        bail!("{why}, recorded in the audit log: give --keyring and --kek-file");
    };
    Session::open_with(
        keyring,
        &read_kek(kek_file)?,
        audit.audit_log.as_ref(),
        audit.actor.as_ref(),
        false,
    )
}

/// Appends an entry about the quarantine to the keyring's audit log (tenant `*`: the
/// records may be any tenant's), holding the keyring's lock only for that.
fn record(audit: &AuditTrailArgs, action: &str, details: String) -> Result<()> {
    let mut s = session(audit, "the quarantine is")?;
    s.keyring
        .record(&mut s.log, &s.actor, action, "*", details)?;
    Ok(())
}

/// `quarantine replay`.
fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let filter = Filter::new(&args.selection)?;
    let ticket = check_ticket(&args.ticket)?;
    // Checked before anything is read: the keyring opens and the actor is known.
    drop(session(&args.audit, "a replay is")?);

    // The transactional producer first: its initialization aborts a transaction an
    // interrupted run left open, so that the survey sees every committed marker and is
    // not held up by an open transaction.
    let properties = properties(&args.quarantine)?;
    let producer = transactional_producer(&args.quarantine, &properties)?;
    let topic = open(&args.quarantine, &properties)?;
    let survey = survey(&topic, &filter)?;
    let to_do = survey.to_do();
    let count: usize = to_do.values().map(BTreeSet::len).sum();
    let already = survey.selected.len() - count;
    let mut targets: BTreeMap<String, u64> = BTreeMap::new();
    let mut unknown_source = 0;
    for record in &survey.selected {
        if to_do
            .get(&record.partition)
            .is_some_and(|offsets| offsets.contains(&record.offset))
        {
            match (&args.to_topic, &record.source_topic) {
                (Some(topic), _) | (None, Some(topic)) => {
                    *targets.entry(topic.clone()).or_default() += 1
                }
                (None, None) => unknown_source += 1,
            }
        }
    }
    if unknown_source > 0 {
        bail!(
            "{unknown_source} selected records do not say which topic they were read from (no {} header): give --to-topic",
            headers::SOURCE_TOPIC
        );
    }
    if count == 0 {
        println!(
            "nothing to replay: {} records selected, {already} of them replayed already",
            survey.selected.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let destinations: Vec<String> = targets.keys().cloned().collect();
    let ticket_detail = ticket.map(|t| format!("ticket={t} ")).unwrap_or_default();
    record(
        &args.audit,
        "quarantine_replay",
        format!(
            "{ticket_detail}phase=start topic={} to={} {} records={count} replayed_before={already}",
            args.quarantine.topic,
            destinations.join(","),
            filter.details(),
        ),
    )?;

    let start = first_offsets(
        to_do
            .iter()
            .flat_map(|(p, offsets)| offsets.iter().map(move |o| (*p, *o))),
    );
    let mut replay = Transaction::new(&producer, &args.quarantine, args.to_topic.as_deref());
    let result = topic
        .read(
            |partition| start.get(&partition).copied(),
            |message| {
                if to_do
                    .get(&message.partition())
                    .is_some_and(|offsets| offsets.contains(&message.offset()))
                {
                    replay.add(message)?;
                }
                Ok(())
            },
        )
        .and_then(|()| replay.commit());
    let written = replay.committed;
    let outcome = match &result {
        Ok(()) => "end",
        Err(_) => "failed",
    };
    record(
        &args.audit,
        "quarantine_replay",
        format!(
            "{ticket_detail}phase={outcome} topic={} to={} {} records={written}",
            args.quarantine.topic,
            destinations.join(","),
            filter.details(),
        ),
    )?;
    result.with_context(|| {
        format!("the replay stopped after {written} of {count} records; run the same command again to replay the rest (nothing is replayed twice)")
    })?;
    let to: Vec<String> = targets
        .iter()
        .map(|(topic, n)| format!("{n} to {topic}"))
        .collect();
    println!(
        "replayed {written} records ({}); {already} selected records had been replayed already",
        to.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// A transactional producer on the quarantine's cluster, one transactional id per
/// quarantine topic: two replays of the same topic fence each other.
fn transactional_producer(
    args: &QuarantineArgs,
    properties: &BTreeMap<String, String>,
) -> Result<BaseProducer> {
    // An unreachable cluster is one line within --connect-timeout, before the producer
    // exists (its librdkafka lines would repeat every reconnection attempt).
    let target = plumbing::probe::Target {
        option: "--brokers",
        brokers: &args.brokers,
        timeout_option: "--connect-timeout",
        timeout: args.connect_timeout,
    };
    plumbing::probe::metadata(target, properties, Some(&args.topic))?;
    let mut config: ClientConfig = plumbing::config::producer(&args.brokers, properties)?;
    config
        .set(
            "transactional.id",
            format!("pseudopipe-quarantine-replay-{}", args.topic),
        )
        .set("statistics.interval.ms", "0");
    let producer: BaseProducer = config
        .create()
        .context("invalid producer configuration for the replay")?;
    producer
        .init_transactions(Duration::from_secs(args.timeout.min(60)))
        .map_err(plumbing::secrets::redact_error)
        .with_context(|| {
            format!(
                "cannot start a transaction on the cluster at {} (--brokers)",
                args.brokers
            )
        })?;
    Ok(producer)
}

/// The replay's open transaction: each record with its marker.
struct Transaction<'a> {
    producer: &'a BaseProducer,
    args: &'a QuarantineArgs,
    to_topic: Option<&'a str>,
    open: usize,
    committed: usize,
}

impl<'a> Transaction<'a> {
    fn new(
        producer: &'a BaseProducer,
        args: &'a QuarantineArgs,
        to_topic: Option<&'a str>,
    ) -> Self {
        Self {
            producer,
            args,
            to_topic,
            open: 0,
            committed: 0,
        }
    }

    /// Writes `message` back to its source topic and its marker to the quarantine, in
    /// the open transaction.
    fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<()> {
        if self.open == 0 {
            self.producer.begin_transaction()?;
        }
        let topic = self
            .to_topic
            .or_else(|| header(message, headers::SOURCE_TOPIC))
            .context("a selected record lost its source topic")?;
        let from = format!(
            "{}/{}/{}",
            self.args.topic,
            message.partition(),
            message.offset()
        );
        let mut original = OwnedHeaders::new();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                if !header.key.starts_with(headers::PREFIX) {
                    original = original.insert(header);
                }
            }
        }
        original = original.insert(Header {
            key: REPLAYED_FROM,
            value: Some(from.as_str()),
        });
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(original);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.send(record)?;
        let marker = format!("{}/{}", message.partition(), message.offset());
        let marker_headers = OwnedHeaders::new().insert(Header {
            key: REPLAYED,
            value: Some(marker.as_str()),
        });
        self.send(
            BaseRecord::<[u8], [u8]>::to(&self.args.topic)
                .partition(message.partition())
                .key(REPLAYED.as_bytes())
                .headers(marker_headers),
        )?;
        self.open += 1;
        if self.open >= TRANSACTION_RECORDS {
            self.commit()?;
        }
        Ok(())
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((error, _)) => {
                    let error = plumbing::secrets::redact_error(error);
                    bail!("cannot write a replayed record: {error}");
                }
            }
        }
    }

    /// Commits the open transaction, if any.
    fn commit(&mut self) -> Result<()> {
        if self.open == 0 {
            return Ok(());
        }
        self.producer
            .commit_transaction(Duration::from_secs(self.args.timeout.min(60)))
            .map_err(plumbing::secrets::redact_error)
            .context("cannot commit the replay's transaction (it is aborted: none of its records counts as replayed)")?;
        self.committed += self.open;
        self.open = 0;
        Ok(())
    }
}
