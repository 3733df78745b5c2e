//! Reading a whole topic once, for the commands that look into one (`subject
//! --scan-brokers`, `quarantine`): the cluster asked first within `--connect-timeout` (one
//! line when it does not answer), then every partition read `read_committed` from a start
//! offset up to the end offset it had when the reading began, in a throw-away group that
//! commits nothing, within an overall bound.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use plumbing::rdkafka::consumer::{BaseConsumer, Consumer as _};
use plumbing::rdkafka::error::KafkaError;
use plumbing::rdkafka::message::BorrowedMessage;
use plumbing::rdkafka::{Message as _, Offset, TopicPartitionList};

/// Parses `KEY=VALUE` client properties given with `option`, refusing those the command
/// sets itself (`own`), and resolves secrets given as `PROPERTY_file` or `PROPERTY_env`.
pub(crate) fn properties(
    option: &str,
    given: &[String],
    own: &[(&str, &str)],
) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for property in given {
        let (key, value) = property
            .split_once('=')
            .with_context(|| format!("{option} {property}: expected KEY=VALUE"))?;
        let key = key.trim();
        if let Some((_, why)) = own.iter().find(|(name, _)| *name == key) {
            bail!("{option} {key}: {why}");
        }
        properties.insert(key.to_owned(), value.to_owned());
    }
    Ok(plumbing::secrets::resolve(properties)?)
}

/// Where the topic is and how long the reading may take.
pub(crate) struct Source<'a> {
    /// The option that gives the cluster (`--brokers`, `--scan-brokers`).
    pub(crate) option: &'a str,
    pub(crate) brokers: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) properties: &'a BTreeMap<String, String>,
    /// How long the cluster may take to answer at all (`--connect-timeout`).
    pub(crate) connect_timeout: Duration,
    /// The option that bounds the whole reading, and its value.
    pub(crate) timeout_option: &'a str,
    pub(crate) timeout: Duration,
}

/// A topic opened for reading: its partitions' offsets when it was opened.
pub(crate) struct TopicRead<'a> {
    source: Source<'a>,
    consumer: BaseConsumer,
    /// Per partition, its first and end offsets when the topic was opened.
    bounds: BTreeMap<i32, (i64, i64)>,
    deadline: Instant,
}

impl<'a> TopicRead<'a> {
    /// Asks the cluster for the topic (one error line when it does not answer within the
    /// connect timeout) and notes each partition's offsets.
    pub(crate) fn open(source: Source<'a>) -> Result<Self> {
        let deadline = Instant::now() + source.timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let target = plumbing::probe::Target {
            option: source.option,
            brokers: source.brokers,
            timeout_option: "--connect-timeout",
            timeout: source.connect_timeout.min(left()),
        };
        let topic = source.topic;
        let metadata = plumbing::probe::metadata(target, source.properties, Some(topic))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            bail!("the cluster at {} has no topic {topic}", source.brokers);
        }
        let group = format!("pseudopipe-read-{:016x}", rand::random::<u64>());
        let mut config = plumbing::config::consumer(source.brokers, &group, source.properties)?;
        config
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false")
            .set("statistics.interval.ms", "0");
        let consumer: BaseConsumer = config
            .create()
            .with_context(|| format!("invalid consumer configuration for reading {topic}"))?;
        // End offsets at start: with read_committed, librdkafka asks for the last stable
        // offset, so an open transaction at the end is not waited for.
        let mut bounds = BTreeMap::new();
        for partition in partitions {
            let offsets = consumer
                .fetch_watermarks(topic, partition, left().min(Duration::from_secs(30)))
                .with_context(|| format!("cannot read the offsets of {topic}/{partition}"))?;
            bounds.insert(partition, offsets);
        }
        Ok(Self {
            source,
            consumer,
            bounds,
            deadline,
        })
    }

    /// Reads every partition from `start(partition)` (or its first offset) up to its end
    /// offset when the topic was opened, handing each record to `visit`. Transient errors
    /// (a broker restarting) are left to librdkafka's retries, within the overall bound.
    pub(crate) fn read(
        &self,
        start: impl Fn(i32) -> Option<i64>,
        mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
    ) -> Result<()> {
        let topic = self.source.topic;
        let mut pending = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for (&partition, &(low, high)) in &self.bounds {
            let from = start(partition).unwrap_or(low).max(low);
            if from < high {
                pending.insert(partition, high);
                assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            }
        }
        self.consumer.assign(&assignment)?;
        let mut last_error = None;
        while !pending.is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let partitions: Vec<String> = pending.keys().map(i32::to_string).collect();
                bail!(
                    "reading {topic} did not reach the end offsets of partitions {} within {} s{}; raise {} or check the cluster",
                    partitions.join(","),
                    self.source.timeout.as_secs(),
                    last_error
                        .map(|e: KafkaError| format!(
                            " (last error: {})",
                            plumbing::secrets::redact_error(e)
                        ))
                        .unwrap_or_default(),
                    self.source.timeout_option
                );
            }
            match self.consumer.poll(left.min(Duration::from_millis(500))) {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let Some(&end) = pending.get(&partition) else {
                        continue;
                    };
                    if message.offset() < end {
                        visit(&message)?;
                    }
                    if message.offset() + 1 >= end {
                        pending.remove(&partition);
                    }
                }
                // The end: only commit markers or aborted records were left before it.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    pending.remove(&partition);
                }
                Some(Err(error)) => last_error = Some(error),
                None => {}
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }
}
