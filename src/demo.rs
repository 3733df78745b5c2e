//! `pseudopipe demo`: the whole pipeline on an embedded default, no external service.
//!
//! Two in-process Kafka clusters (librdkafka's mock cluster) stand for the on-prem and the
//! cloud clusters. The demo creates a throw-away KEK and keyring, produces simulated
//! redemptions with some malformed ones, runs ingest and sink, reads the cloud topic back
//! and checks every record: nothing lost, nothing personal, every malformed record in
//! quarantine with its reason. It exits 0 only if all of that holds.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use indicatif::ProgressBar;
use ingest::{IngestKeys, KeySettings, LiveKeys};
use plumbing::prometheus::Registry;
use plumbing::rdkafka::consumer::{BaseConsumer, Consumer as _};
use plumbing::rdkafka::message::{Headers as _, Message as _};
use plumbing::rdkafka::mocking::MockCluster;
use plumbing::rdkafka::producer::FutureProducer;
use plumbing::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use plumbing::{Shutdown, StageMetrics};
use pseudonymize::{Kek, Keyring, LeakGuard, Policy};
use serde_json::Value;

use crate::cli::DemoArgs;

/// The fewest partitions of every demo topic.
const MIN_PARTITIONS: i32 = 4;
/// librdkafka's mock cluster keeps at most 5 MiB of record batches per partition and drops
/// the oldest beyond that: a fixed retention, with no setting to change it. The demo's
/// topics must hold every event (the raw topic until ingest reads it, the cloud topic until
/// the check reads it back), so each partition is planned for at most this much.
const PARTITION_BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// A generous size for one event in any demo topic (simulated events average ~950 bytes
/// of JSON before compression; the pseudonymized ones are of the same order).
const EVENT_BUDGET_BYTES: u64 = 1024;

/// Partitions per topic so that `events` fit in the mock cluster's retention.
fn partitions_for(events: u64) -> i32 {
    let per_partition = PARTITION_BUDGET_BYTES / EVENT_BUDGET_BYTES;
    i32::try_from(events.div_ceil(per_partition))
        .unwrap_or(i32::MAX)
        .max(MIN_PARTITIONS)
}
const TENANTS: [&str; 2] = ["brand-a", "brand-b"];

/// One record read back from a topic.
pub struct ReadRecord {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The headers, as text.
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `expected` records arrived or `timeout` passed.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pseudopipe-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the reader")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("a fresh list accepts offsets");
    }
    consumer
        .assign(&assignment)
        .context("cannot assign the topic's partitions")?;
    let deadline = Instant::now() + timeout;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records.push(ReadRecord {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(error)) => tracing::debug!(%error, topic, "Reader error (retrying)."),
            None => {}
        }
    }
    Ok(records)
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let scratch = std::env::temp_dir().join(format!("pseudopipe-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = demo(&args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let ok = result?;
    eprintln!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn demo(args: &DemoArgs, scratch: &std::path::Path) -> Result<bool> {
    // 1. A throw-away KEK and keyring, with the audit trail a real site would have.
    let kek = Kek::generate();
    let mut keyring = Keyring::open_or_new(&scratch.join("keyring.json"), &kek)?;
    let mut audit = keyring.audit_log(&scratch.join("keyring.json.audit.jsonl"))?;
    for tenant in TENANTS {
        keyring.init(&mut audit, "demo", tenant)?;
    }
    let policy =
        Policy::from_toml(crate::DEFAULT_POLICY).expect("the embedded default policy is valid");
    drop(keyring);

    // 2. Two in-process clusters, with room for every event (see `partitions_for`).
    let partitions = partitions_for(args.events);
    let onprem = MockCluster::new(1).context("cannot start the on-prem mock cluster")?;
    let cloud = MockCluster::new(1).context("cannot start the cloud mock cluster")?;
    let (raw, pseudonymized, quarantine, cloud_topic) = (
        "redemptions.raw",
        "redemptions.pseudonymized",
        "redemptions.quarantine",
        "redemptions",
    );
    for topic in [raw, pseudonymized, quarantine] {
        onprem
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create {topic}"))?;
    }
    cloud
        .create_topic(cloud_topic, partitions, 1)
        .context("cannot create the cloud topic")?;
    let (onprem_brokers, cloud_brokers) = (onprem.bootstrap_servers(), cloud.bootstrap_servers());

    // 3. Simulated redemptions. The same seed regenerates them for the checks below.
    let generator = || {
        simulator::Generator::new(args.seed)
            .with_tenants(TENANTS.iter().map(|t| t.to_string()).collect())
            .with_malformed_ratio(args.malformed_ratio)
    };
    let mut inputs: HashMap<String, Value> = HashMap::new();
    let mut expected_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_valid = None;
    let mut replay = generator();
    for _ in 0..args.events {
        let record = replay.next_record();
        match record.kind.expected_reason() {
            None => {
                let event: Value = serde_json::from_slice(&record.payload)
                    .context("a valid simulated event is JSON")?;
                let id = event["event_id"]
                    .as_str()
                    .context("a valid event has an event_id")?
                    .to_string();
                first_valid.get_or_insert_with(|| (id.clone(), record.payload.clone()));
                inputs.insert(id, event);
            }
            Some(reason) => *expected_reasons.entry(reason.to_string()).or_default() += 1,
        }
    }
    let expected_quarantined: u64 = expected_reasons.values().sum();
    println!(
        "producing {} simulated redemptions to the on-prem cluster ({} valid, {} malformed; {partitions} partitions per topic)...",
        args.events,
        inputs.len(),
        expected_quarantined
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &onprem_brokers)
        .set("linger.ms", "5")
        .set("compression.type", "zstd")
        .create()
        .context("cannot create the producer")?;
    crate::produce::produce_events(
        &producer,
        raw,
        &mut generator(),
        args.events,
        None,
        &ProgressBar::hidden(),
    )
    .await?;

    // 4. Both stages, as `pseudopipe run` would start them.
    let registry = Registry::new();
    let shutdown = Shutdown::new();
    // The sections a site's config file would hold, read and checked as `pseudopipe run`
    // reads them (librdkafka's mock cluster does not commit transactions: at least once).
    let policy_file = scratch.join("policy.toml");
    std::fs::write(&policy_file, crate::DEFAULT_POLICY)
        .with_context(|| format!("cannot write {}", policy_file.display()))?;
    let config = crate::config::Config::parse(
        &format!(
            r#"[ingest]
brokers = {onprem_brokers:?}
input_topic = {raw:?}
output_topic = {pseudonymized:?}
quarantine_topic = {quarantine:?}
policy = {policy_file:?}
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
source_brokers = {onprem_brokers:?}
source_topic = {pseudonymized:?}
brokers = {cloud_brokers:?}
topic = {cloud_topic:?}
quarantine_topic = {quarantine:?}
policy = {policy_file:?}
source_kafka = {{ "session.timeout.ms" = 6000 }}
"#
        ),
        "the demo's config",
    )?;
    let (ingest_settings, sink_settings) = (config.ingest()?, config.for_sink()?);
    let pipeline_started = Instant::now();
    // Ingest follows the keyring as a real site's does (no bridge, no audit topic here).
    let live = LiveKeys::open(
        KeySettings {
            keyring: scratch.join("keyring.json"),
            audit_log: scratch.join("keyring.json.audit.jsonl"),
            check_every: Duration::from_secs(5),
            rotate_every: None,
            bridge_overlap: None,
            instance: "demo".into(),
            input_topic: raw.into(),
        },
        kek,
        policy.clone(),
        &registry,
    )
    .map_err(anyhow::Error::msg)?;
    let ingest_task = tokio::spawn(ingest::run(
        ingest_settings,
        IngestKeys {
            live,
            bridge: None,
            mirror: None,
            risk: None,
        },
        StageMetrics::new(&registry, "ingest")?,
        shutdown.clone(),
    ));
    let sink_task = tokio::spawn(sink::run(
        sink_settings,
        LeakGuard::new(policy.clone()),
        StageMetrics::new(&registry, "sink")?,
        shutdown.clone(),
    ));

    // 5. Read back what reached the cloud and the quarantine.
    let expected_out = inputs.len();
    let cloud_records = {
        let brokers = cloud_brokers.clone();
        tokio::task::spawn_blocking(move || {
            read_topic(
                &brokers,
                cloud_topic,
                partitions,
                expected_out,
                Duration::from_secs(120),
            )
        })
        .await
        .expect("the reader does not panic")?
    };
    let elapsed = pipeline_started.elapsed().as_secs_f64();
    let quarantined = {
        let brokers = onprem_brokers.clone();
        let expected = expected_quarantined as usize;
        tokio::task::spawn_blocking(move || {
            read_topic(
                &brokers,
                quarantine,
                partitions,
                expected,
                Duration::from_secs(30),
            )
        })
        .await
        .expect("the reader does not panic")?
    };
    shutdown.trigger();
    let ingest_report = ingest_task.await.context("ingest panicked")??;
    let sink_report = sink_task.await.context("sink panicked")??;

    // 6. The verdict, counted record by record.
    let guard = LeakGuard::new(policy);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut leaks, mut unknown, mut guard_failures) = (0usize, 0usize, 0usize);
    let mut after_first = None;
    for record in &cloud_records {
        if guard.check(record.key.as_deref(), &record.payload).is_err() {
            guard_failures += 1;
        }
        let output: Value =
            serde_json::from_slice(&record.payload).context("a cloud record is JSON")?;
        let id = output["event_id"].as_str().unwrap_or_default().to_string();
        match inputs.get(&id) {
            Some(input) => {
                leaks += simulator::leaked_fields(input, &output, record.key.as_deref()).len()
            }
            None => unknown += 1,
        }
        if first_valid.as_ref().is_some_and(|(first, _)| *first == id) {
            after_first = Some(serde_json::to_string_pretty(&output)?);
        }
        *seen.entry(id).or_default() += 1;
    }
    let lost = inputs.keys().filter(|id| !seen.contains_key(*id)).count();
    let duplicates: usize = seen.values().map(|n| n.saturating_sub(1)).sum();
    let mut got_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for record in &quarantined {
        *got_reasons
            .entry(
                record
                    .headers
                    .get("pseudopipe-reason")
                    .cloned()
                    .unwrap_or_else(|| "<none>".into()),
            )
            .or_default() += 1;
    }

    if let (Some((_, before)), Some(after)) = (&first_valid, &after_first) {
        let before: Value = serde_json::from_slice(before)?;
        println!(
            "\none event before (on-prem, raw):\n{}",
            serde_json::to_string_pretty(&before)?
        );
        println!("\nthe same event after (cloud, pseudonymized):\n{after}");
    }
    println!("\nsummary");
    println!(
        "  in:           {} events ({} valid, {} malformed)",
        args.events,
        inputs.len(),
        expected_quarantined
    );
    println!(
        "  out (cloud):  {} records, {} distinct events, {} duplicates",
        cloud_records.len(),
        seen.len(),
        duplicates
    );
    println!("  quarantined:  {} records", quarantined.len());
    for (reason, n) in &got_reasons {
        println!(
            "    {reason:<16} {n:>6}   (expected {})",
            expected_reasons.get(reason).copied().unwrap_or(0)
        );
    }
    println!("  throughput:   {:.0} events/s through both stages ({:.2} s from start to last cloud record)", args.events as f64 / elapsed, elapsed);
    println!("  ingest:       {ingest_report}");
    println!("  sink:         {sink_report}");

    // Offsets a stage jumped over never went through the pipeline (the mock cluster's
    // retention dropped them before they were read, for instance).
    let skipped: u64 = registry
        .gather()
        .iter()
        .filter(|family| family.name() == "pseudopipe_input_offsets_skipped_total")
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum();
    println!("  skipped:      {skipped} input offsets never received by a stage");

    let mut problems = Vec::new();
    if skipped > 0 {
        problems.push(format!(
            "{skipped} input offsets were never received by a stage"
        ));
    }
    if lost > 0 {
        problems.push(format!("{lost} valid events did not reach the cloud"));
    }
    if leaks > 0 || guard_failures > 0 || unknown > 0 {
        problems.push(format!("{leaks} personal values, {guard_failures} leak-guard failures and {unknown} unknown records in the cloud topic"));
    }
    if got_reasons != expected_reasons {
        problems.push(
            "the quarantine does not hold exactly the malformed events with their reasons"
                .to_string(),
        );
    }
    if problems.is_empty() {
        println!(
            "\nverdict: OK — nothing lost ({} of {} valid events in the cloud), nothing leaked (every cloud record checked against its raw event and the leak guard), every malformed event quarantined with its reason",
            seen.len(),
            inputs.len()
        );
        Ok(true)
    } else {
        println!("\nverdict: FAILED — {}", problems.join("; "));
        if lost > 0 && cloud_records.len() < expected_out {
            bail!(
                "the cloud topic held {} of {} expected records after 120 s",
                cloud_records.len(),
                expected_out
            );
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_have_room_for_every_event() {
        assert_eq!(partitions_for(10), MIN_PARTITIONS);
        assert_eq!(partitions_for(10_000), MIN_PARTITIONS);
        assert_eq!(partitions_for(200_000), 49);
        let per_partition = PARTITION_BUDGET_BYTES / EVENT_BUDGET_BYTES;
        for events in [16_385, 1_000_000, 10_000_000] {
            let partitions = u64::try_from(partitions_for(events)).unwrap();
            assert!(partitions * per_partition >= events, "{events}");
        }
    }
}
