//! The raw topic read back for the risk watch ([`crate::risk::History`], ADR 0025): a
//! consumer assigned one partition at a time, outside any group, that commits nothing and
//! reads `read_committed`, configured as ingest's own consumer is (the same brokers and
//! `[ingest.kafka]` properties, so TLS and SASL are the same).

use std::ops::Range;
use std::time::{Duration, Instant};

use plumbing::rdkafka::consumer::{BaseConsumer, Consumer as _};
use plumbing::rdkafka::error::KafkaError;
use plumbing::rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::risk::History;
use crate::{Error, Settings};

/// Exactly once, the longest a rebuild may take: half the transaction timeout the relay
/// sets by default (10 s), so that a transaction left open while the relay's thread
/// rebuilds is not aborted by the broker.
const EXACTLY_ONCE_BUDGET: Duration = Duration::from_secs(5);

/// How long one rebuild may take before it gives up and fails closed: the stage's
/// liveness bound (`stall_timeout_ms`, 30 s by default), since the relay's thread makes no
/// other progress meanwhile (no commit, no retry, no liveness check); exactly once, at
/// most [`EXACTLY_ONCE_BUDGET`].
pub fn rebuild_budget(settings: &Settings) -> Duration {
    match settings.exactly_once() {
        Some(_) => settings.stall_timeout().min(EXACTLY_ONCE_BUDGET),
        None => settings.stall_timeout(),
    }
}

/// Longest one poll waits, so that the deadline is looked at.
const POLL: Duration = Duration::from_millis(100);

/// The raw topic's records, read back by partition and offset range.
pub struct RawHistory {
    consumer: BaseConsumer,
    topic: String,
    /// The bound of one rebuild, for the error that says it was passed.
    budget: Duration,
}

impl std::fmt::Debug for RawHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawHistory")
            .field("topic", &self.topic)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RawHistory {
    /// A reader of `settings.input_topic`, built as ingest's consumer is, without its
    /// group; each rebuild bounded by [`rebuild_budget`].
    pub fn new(settings: &Settings) -> Result<Self, plumbing::Error> {
        // librdkafka wants a group id even for assigned partitions; this one is never
        // joined (nothing is subscribed) and nothing is committed under it.
        let group = format!("{}.risk-replay", settings.group_id);
        let mut config = plumbing::config::consumer(&settings.brokers, &group, &settings.kafka)?;
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // Its statistics would tell nothing `/readyz` does not already know.
            .set("statistics.interval.ms", "0");
        Ok(Self {
            consumer: config.create()?,
            topic: settings.input_topic.clone(),
            budget: rebuild_budget(settings),
        })
    }

    fn fail(&self, partition: i32, what: &'static str) -> impl Fn(KafkaError) -> Error + '_ {
        move |source| Error::RiskReplay {
            topic: self.topic.clone(),
            partition,
            what,
            source,
        }
    }

    fn too_long(&self, partition: i32) -> Error {
        Error::RiskReplayTooLong {
            topic: self.topic.clone(),
            partition,
            budget_ms: self.budget.as_millis(),
        }
    }

    /// Reads from `offsets.start` until a record at or past `offsets.end` shows.
    fn read(
        &self,
        partition: i32,
        offsets: Range<i64>,
        deadline: Instant,
        each: &mut dyn FnMut(i64, Option<&[u8]>),
    ) -> Result<(), Error> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offsets.start))
            .map_err(self.fail(partition, "cannot seek"))?;
        self.consumer
            .assign(&list)
            .map_err(self.fail(partition, "cannot assign"))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.too_long(partition));
            }
            match self.consumer.poll(left.min(POLL)) {
                Some(Ok(message)) => {
                    if message.offset() >= offsets.end {
                        return Ok(());
                    }
                    each(message.offset(), message.payload());
                    if message.offset() + 1 >= offsets.end {
                        return Ok(());
                    }
                }
                Some(Err(error)) => return Err(self.fail(partition, "cannot read")(error)),
                // Transaction markers (or aborted records) may end the range: the position
                // says so.
                None if self.position(partition) >= Some(offsets.end) => return Ok(()),
                None => {}
            }
        }
    }

    /// The consumer's position in `partition`, once it has one.
    fn position(&self, partition: i32) -> Option<i64> {
        let list = self.consumer.position().ok()?;
        match list.find_partition(&self.topic, partition)?.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }
    }
}

impl History for RawHistory {
    fn first_held(&mut self, partition: i32, deadline: Instant) -> Result<i64, Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, _) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, left)
            .map_err(self.fail(partition, "cannot read its low watermark"))?;
        Ok(low)
    }

    fn replay(
        &mut self,
        partition: i32,
        offsets: Range<i64>,
        deadline: Instant,
        each: &mut dyn FnMut(i64, Option<&[u8]>),
    ) -> Result<(), Error> {
        let read = self.read(partition, offsets, deadline, each);
        // Nothing stays fetched between rebuilds.
        let released = self
            .consumer
            .unassign()
            .map_err(self.fail(partition, "cannot release the partition"));
        read.and(released)
    }
}
