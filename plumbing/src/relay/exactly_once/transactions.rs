//! The transactional producers of an exactly-once relay and the batch they hold open.
//!
//! Everything here runs on the relay's thread: from its loop, or from the rebalance
//! callbacks that its `poll` calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::{Layout, TransactionSettings};
use crate::health::stops_the_stage;
use crate::health::Cluster;
use crate::relay::context::Watched;
use crate::relay::outgoing;
use crate::relay::partitions::partitions_of_topic;
use crate::relay::tally::{set_stalled, Route, Tally};
use crate::{Decision, Error, RelaySettings, StageMetrics};

type TxProducer = ThreadedProducer<Watched<()>>;

/// How often a retriable failure of a transactional call is tried again.
const RETRIES: usize = 3;
/// How long to wait for room when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// How a commit went.
pub(super) enum Outcome {
    /// Every open transaction committed (or none was open).
    Committed,
    /// Some transactions were aborted: rewind these input partitions to these offsets.
    Aborted { rewind: Vec<(i32, i64)> },
    /// This process cannot go on.
    Fatal(Error),
}

/// What became of a record handed to [`ExactlyOnce::send`].
pub(super) enum Sent {
    /// In the open transaction (or dropped, its offset moving with it).
    Taken,
    /// Refused by its partition's transaction, which failed and must be aborted first;
    /// the record is to be consumed again.
    Refused(Error),
}

/// The records of one input partition in the open transaction.
#[derive(Debug)]
struct PartitionBatch {
    /// The first offset: where to rewind to if the transaction aborts.
    first: i64,
    /// One past the last offset: the offset to commit.
    next: i64,
    /// Where each record went and when it was consumed, counted once committed.
    records: Vec<(Route, Instant)>,
}

/// A transactional producer and whether it has a transaction open.
struct Owned {
    producer: TxProducer,
    open: bool,
}

impl Owned {
    fn begin_if_needed(&mut self) -> Result<(), Error> {
        if !self.open {
            self.producer
                .begin_transaction()
                .map_err(|source| Error::transaction("beginning a transaction", source))?;
            self.open = true;
        }
        Ok(())
    }
}

enum Producers {
    /// [`Layout::SameCluster`]: one producer for output and quarantine.
    Shared(Owned),
    /// [`Layout::CrossCluster`]: one producer per assigned input partition.
    PerPartition {
        output: ClientConfig,
        prefix: String,
        owned: BTreeMap<i32, Owned>,
        /// Partition P of this output-cluster topic holds, as the committed offset of the
        /// offsets consumer's group, the next offset of input partition P.
        offsets_topic: String,
        /// Never subscribed: its group is where the input offsets are stored.
        offsets: BaseConsumer,
        group: ConsumerGroupMetadata,
        quarantine: ThreadedProducer<Watched<()>>,
        /// Whether a quarantined record may still be in the quarantine producer's queue.
        quarantine_pending: bool,
    },
}

impl Producers {
    /// Opens the transaction that carries `partition`'s offsets, if it is not open yet;
    /// returns the producer of a record of `route`, and whether it is that transactional
    /// one (the quarantine producer of per-partition producers is not).
    fn open_for(&mut self, partition: i32, route: Route) -> Result<(&TxProducer, bool), Error> {
        match self {
            Producers::Shared(owned) => {
                owned.begin_if_needed()?;
                Ok((&owned.producer, true))
            }
            Producers::PerPartition {
                owned,
                quarantine,
                quarantine_pending,
                ..
            } => {
                let owned = owned.get_mut(&partition).ok_or_else(|| {
                    Error::InvalidSettings(format!(
                        "a record of partition {partition} arrived without its transactional producer"
                    ))
                })?;
                owned.begin_if_needed()?;
                if let Route::Quarantine(_) = route {
                    *quarantine_pending = true;
                    Ok((quarantine, false))
                } else {
                    Ok((&owned.producer, true))
                }
            }
        }
    }
}

/// The exactly-once strategy: the open transaction(s), their producers, what was
/// committed so far, and how the loop stands with them.
pub(in crate::relay) struct ExactlyOnce {
    pub(super) stage: &'static str,
    pub(super) settings: RelaySettings,
    pub(super) transactions: TransactionSettings,
    /// When the commit began that the liveness bound aborted, while no transaction has
    /// committed since.
    stalled_since: Option<Instant>,
    producers: Producers,
    batch: BTreeMap<i32, PartitionBatch>,
    /// Records in the open transaction(s).
    pub(super) records: usize,
    started: Option<Instant>,
    pub(super) tally: Tally,
    /// Whether a transaction committed since the last abort.
    pub(super) clean: bool,
    /// Whether a transaction was aborted since the loop last looked.
    pub(super) aborted: bool,
    /// Records refused by failed transactions since the last commit.
    pub(super) refusals: u32,
    /// Partitions rewound during the current batch: their later records in it are
    /// consumed again.
    pub(super) rewound: Vec<i32>,
}

impl ExactlyOnce {
    pub(in crate::relay) fn new(
        settings: &RelaySettings,
        transactions: TransactionSettings,
        layout: Layout,
        metrics: StageMetrics,
    ) -> Result<Self, Error> {
        let stage = settings.stage;
        let call_timeout = transactions.call_timeout;
        set_stalled(&metrics, Cluster::Output, false);
        let producers = match layout {
            Layout::SameCluster {
                producer,
                transactional_id,
            } => Producers::Shared(transactional(
                Watched::new(stage, &metrics.health, Cluster::Output, ()),
                &producer,
                &transactional_id,
                call_timeout,
            )?),
            Layout::CrossCluster {
                output,
                transactional_id_prefix,
                offsets_topic,
                offsets,
                quarantine,
            } => {
                let mut offsets = offsets;
                // Committed offsets are read with require_stable: pending transactional
                // commits first complete or abort. A side client with rdkafka's default
                // context, whose statistics nobody watches: that context would log each
                // report whole, at INFO.
                offsets
                    .set("isolation.level", "read_committed")
                    .set("statistics.interval.ms", "0");
                let offsets: BaseConsumer = offsets.create().map_err(Error::create_consumer)?;
                let group = offsets.group_metadata().ok_or_else(|| {
                    Error::InvalidSettings(
                        "the offsets consumer of the output cluster needs a `group.id`".to_owned(),
                    )
                })?;
                Producers::PerPartition {
                    output,
                    prefix: transactional_id_prefix,
                    owned: BTreeMap::new(),
                    offsets_topic,
                    offsets,
                    group,
                    quarantine: quarantine.create_with_context(Watched::new(
                        stage,
                        &metrics.health,
                        Cluster::Quarantine,
                        (),
                    ))?,
                    quarantine_pending: false,
                }
            }
        };
        Ok(Self {
            stage,
            settings: settings.clone(),
            transactions,
            stalled_since: None,
            producers,
            batch: BTreeMap::new(),
            records: 0,
            started: None,
            tally: Tally::new(stage, metrics),
            clean: true,
            aborted: false,
            refusals: 0,
            rewound: Vec::new(),
        })
    }

    /// Whether the open transaction is full or old enough to commit.
    pub(super) fn is_due(&self) -> bool {
        self.records >= self.transactions.max_records
            || self
                .started
                .is_some_and(|started| started.elapsed() >= self.transactions.max_duration)
    }

    /// Produces what `decision` says about `message` inside the open transaction.
    pub(super) fn send(
        &mut self,
        message: &BorrowedMessage<'_>,
        decision: Decision,
        received: Instant,
    ) -> Result<Sent, Error> {
        // A rebalance inside the poll that returned `message` may have met a fatal error
        // (and let the failed producers go): that is what stops the stage, not whatever
        // this record would meet next.
        if let Some(error) = self.tally.metrics.health.take_fatal() {
            return Err(error);
        }
        let partition = message.partition();
        let route = Route::of(&decision);
        let topic = match route {
            Route::Forward => &self.settings.output_topic,
            _ => &self.settings.quarantine_topic,
        };
        let (producer, transactional) = self.producers.open_for(partition, route)?;
        let sent = match route {
            // Nothing is produced, but the offset moves in the partition's transaction.
            Route::Drop(_) => Ok(()),
            _ => send_waiting_for_room(
                producer,
                outgoing(topic, &decision, message, self.stage, ()),
            ),
        };
        if let Err(error) = sent {
            if let Some(code) = self.fatal_cause() {
                return Err(Error::transaction(
                    "producing a record",
                    KafkaError::MessageProduction(code),
                ));
            }
            // The transaction failed (a record timed out, say) and takes no more records
            // until aborted: the abort, not this refusal, tells whether this instance may
            // go on (it may have been fenced meanwhile).
            // librdkafka refuses a record with `State` once its producer's transaction
            // failed (an abortable error): it may be produced again once that is aborted.
            let refused = matches!(
                &error,
                Error::Transaction {
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::State),
                    ..
                }
            );
            if transactional && refused {
                return Ok(Sent::Refused(error));
            }
            return Err(error);
        }
        let offset = message.offset();
        let entry = self
            .batch
            .entry(partition)
            .or_insert_with(|| PartitionBatch {
                first: offset,
                next: offset + 1,
                records: Vec::new(),
            });
        entry.next = offset + 1;
        entry.records.push((route, received));
        self.records += 1;
        // When the transaction opened, not when the batch was polled: a batch may outlast
        // several transactions.
        self.started.get_or_insert_with(Instant::now);
        self.tally
            .metrics
            .in_flight
            .set(i64::try_from(self.records).unwrap_or(i64::MAX));
        Ok(Sent::Taken)
    }

    /// The error that made one of this stage's transactional producers fail fatally, if
    /// one did. When another instance took some partitions over, the producer of one
    /// partition learns it is fenced while the next record may go to another partition's
    /// producer, whose transaction merely failed: the fencing is what to report.
    fn fatal_cause(&self) -> Option<RDKafkaErrorCode> {
        let fatal = |owned: &Owned| owned.producer.client().fatal_error().map(|(code, _)| code);
        match &self.producers {
            Producers::Shared(owned) => fatal(owned),
            Producers::PerPartition { owned, .. } => owned.values().find_map(fatal),
        }
    }

    /// Commits the open transaction(s) with the offsets past their records: all of them,
    /// or (per-partition producers) those of `only`. An input offset moves only inside
    /// the transaction that carries the records before it.
    pub(super) fn commit_open<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        only: Option<&[i32]>,
    ) -> Outcome {
        if matches!(&self.producers, Producers::Shared(owned) if !owned.open) {
            return Outcome::Committed;
        }
        // A producer that cannot commit within the liveness bound (offsets, then the commit,
        // retries included) is stuck or its cluster is gone.
        let deadline = Instant::now() + self.settings.stall_timeout;
        let outcome = match self.commit_each(consumer, only, deadline) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Fatal(error),
        };
        let outcome = self.watch_liveness(outcome, deadline);
        // One producer commits every partition at once; per-partition producers commit `only`.
        let settled = match self.producers {
            Producers::Shared(_) => None,
            Producers::PerPartition { .. } => only,
        };
        self.account(&outcome, settled);
        outcome
    }

    /// Commits each open transaction with its offsets: the one shared producer's (every
    /// partition, with the consumer's group metadata), or each per-partition producer's
    /// of `only` (stored in the output cluster, after the quarantine is flushed).
    fn commit_each<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        only: Option<&[i32]>,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
        let (timeout, batch, topic) = (
            self.transactions.call_timeout,
            &self.batch,
            &self.settings.input_topic,
        );
        let in_batch = |filter: Option<&[i32]>| -> Vec<i32> {
            let kept = |partition: &i32| filter.is_none_or(|only| only.contains(partition));
            batch.keys().copied().filter(kept).collect()
        };
        let per_partition = matches!(self.producers, Producers::PerPartition { .. });
        let consumer_group;
        let mut flushed = Ok(());
        let (group, units) = match &mut self.producers {
            Producers::Shared(owned) => {
                consumer_group = consumer.group_metadata().ok_or_else(|| {
                    Error::InvalidSettings(
                        "the consumer has no group metadata: set its `group.id`".to_owned(),
                    )
                })?;
                let partitions = in_batch(None);
                let offsets = offsets_list(topic, batch, &partitions)?;
                (&consumer_group, vec![(owned, partitions, offsets)])
            }
            Producers::PerPartition {
                owned,
                offsets_topic,
                group,
                quarantine,
                quarantine_pending,
                ..
            } => {
                // A quarantined record must be stored before its offset moves on.
                if *quarantine_pending {
                    flushed = quarantine.flush(remaining(timeout, deadline));
                    *quarantine_pending = flushed.is_err();
                }
                let mut units = Vec::new();
                for (partition, producer) in owned.iter_mut() {
                    if let Some(records) = batch.get(partition).filter(|_| producer.open) {
                        if only.is_none_or(|only| only.contains(partition)) {
                            let offsets = stored_offsets_list(
                                offsets_topic,
                                topic,
                                *partition,
                                records.next,
                            )?;
                            units.push((producer, vec![*partition], offsets));
                        }
                    }
                }
                (&*group, units)
            }
        };
        let mut outcome = Outcome::Committed;
        for (owned, partitions, offsets) in units {
            let committed = flushed
                .clone()
                .and_then(|()| commit(&owned.producer, &offsets, group, timeout, deadline));
            owned.open = false;
            let one = finish(&owned.producer, committed, &partitions, batch, timeout);
            outcome = merge(outcome, one);
            if matches!(outcome, Outcome::Fatal(_)) {
                break;
            }
        }
        let partitions = in_batch(only);
        if per_partition && matches!(outcome, Outcome::Committed) && !partitions.is_empty() {
            // The input cluster's group follows as a hint for lag monitoring (and the start
            // of a partition the output cluster stores nothing for yet): only the
            // partitions whose transaction committed.
            let hint = offsets_list(topic, batch, &partitions).and_then(|hint| {
                let hinted = consumer.commit(&hint, CommitMode::Async);
                hinted.map_err(|source| Error::transaction("committing the offsets hint", source))
            });
            if let Err(error) = hint {
                debug!(stage = self.stage, %error, "Cannot commit the offsets hint to the input cluster.");
            }
        }
        Ok(outcome)
    }

    /// The liveness guard of exactly once: a commit that the stall bound (`deadline`)
    /// cut short was aborted and its records will be consumed again; if the next one is
    /// cut short too, before any commit, the stage stops ([`Error::Stalled`]) so that its
    /// supervisor restarts it with new producers.
    fn watch_liveness(&mut self, outcome: Outcome, deadline: Instant) -> Outcome {
        let (stage, metrics) = (self.stage, &self.tally.metrics);
        match outcome {
            Outcome::Committed if self.stalled_since.take().is_some() => {
                set_stalled(metrics, Cluster::Output, false);
                info!(stage, "Deliveries go on again: a transaction committed.");
                Outcome::Committed
            }
            Outcome::Aborted { .. } if Instant::now() >= deadline => {
                set_stalled(metrics, Cluster::Output, true);
                if let Some(since) = self.stalled_since {
                    return Outcome::Fatal(Error::Stalled {
                        cluster: Cluster::Output.label(),
                        stalled_for: since.elapsed(),
                    });
                }
                let stall_timeout_ms = self.settings.stall_timeout.as_millis();
                warn!(stage, stall_timeout_ms, "A transaction could not commit within the stall bound: it was aborted and its records are consumed again.");
                self.stalled_since = Some(deadline - self.settings.stall_timeout);
                outcome
            }
            other => other,
        }
    }

    /// Moves the settled partitions out of the batch: into the counters when committed.
    fn account(&mut self, outcome: &Outcome, only: Option<&[i32]>) {
        let aborted: Vec<i32> = match outcome {
            Outcome::Aborted { rewind } => rewind.iter().map(|(partition, _)| *partition).collect(),
            _ => Vec::new(),
        };
        let settled: Vec<i32> = self
            .batch
            .keys()
            .copied()
            .filter(|partition| only.is_none_or(|only| only.contains(partition)))
            .collect();
        if matches!(outcome, Outcome::Fatal(_)) {
            return;
        }
        let now = Instant::now();
        for partition in settled {
            let Some(batch) = self.batch.remove(&partition) else {
                continue;
            };
            self.records -= batch.records.len();
            if aborted.contains(&partition) {
                self.tally.aborted();
                self.aborted = true;
                continue;
            }
            for (route, received) in batch.records {
                self.tally.settled(route, received, now);
            }
        }
        if self.batch.is_empty() {
            self.started = None;
        }
        self.tally.export(self.records);
    }

    /// Before `assignment` is taken, sets each partition's starting offset.
    ///
    /// With one shared producer: the offset committed by the input group, read here with
    /// `require_stable` (a previous owner's pending transaction first commits or aborts).
    /// librdkafka 2.12 would read it itself, but when the assignment changes while that
    /// read waits on a pending transaction, it starts the partition at
    /// `auto.offset.reset` instead (`rd_kafka_assignment_apply_offsets` puts the partition
    /// back with the invalid offset of the unstable answer): with `earliest`, the whole
    /// partition again, duplicates in the output. That fits the duplicates the chaos suite
    /// once met with three ingests, one killed and one added.
    ///
    /// With per-partition producers: initializes the producer of each new partition (which
    /// fences its previous owner and aborts what that one left open), then sets each
    /// partition's starting offset to the one stored in the output cluster, if any.
    pub(super) fn prepare_assignment<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assignment: &mut TopicPartitionList,
    ) -> Result<(), Error> {
        let Producers::PerPartition {
            output,
            prefix,
            owned,
            ..
        } = &mut self.producers
        else {
            return self.start_at_stored(consumer, assignment).map(drop);
        };
        let partitions = partitions_of_topic(assignment, &self.settings.input_topic);
        for partition in &partitions {
            if owned.contains_key(partition) {
                continue;
            }
            let id = format!("{prefix}.{}.{partition}", self.settings.input_topic);
            owned.insert(
                *partition,
                transactional(
                    Watched::new(self.stage, &self.tally.metrics.health, Cluster::Output, ()),
                    output,
                    &id,
                    self.transactions.call_timeout,
                )?,
            );
        }
        let starts = self.start_at_stored(consumer, assignment)?;
        info!(
            stage = self.stage,
            topic = %self.settings.input_topic,
            partitions = ?partitions,
            stored_offsets = %starts.join(","),
            "Partitions assigned: their transactional producers fenced any previous owner; starting from the offsets stored in the output cluster (the input group's where none is stored)."
        );
        Ok(())
    }

    /// Sets the starting offset of each partition of `assignment` to its stored offset
    /// ([`stored_offsets`](Self::stored_offsets)), where one is stored (elsewhere
    /// librdkafka reads the input group's, or applies `auto.offset.reset`, as it would);
    /// returns them as `partition@offset`.
    fn start_at_stored<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        assignment: &mut TopicPartitionList,
    ) -> Result<Vec<String>, Error> {
        let partitions = partitions_of_topic(assignment, &self.settings.input_topic);
        let mut starts = Vec::new();
        for (partition, offset) in self.stored_offsets(consumer, &partitions)? {
            assignment
                .set_partition_offset(
                    &self.settings.input_topic,
                    partition,
                    Offset::Offset(offset),
                )
                .map_err(|source| Error::transaction("setting a starting offset", source))?;
            starts.push(format!("{partition}@{offset}"));
        }
        Ok(starts)
    }

    /// The next offset of each of `partitions` of the input topic as committed so far,
    /// where one is: in the output cluster with per-partition producers, in the input
    /// group with one shared producer. Read with `require_stable`: a pending transaction
    /// first commits or aborts.
    pub(super) fn stored_offsets<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, Error> {
        let mut stored = BTreeMap::new();
        if partitions.is_empty() {
            return Ok(stored);
        }
        let (offsets, topic, during) = match &self.producers {
            Producers::PerPartition {
                offsets,
                offsets_topic,
                ..
            } => (
                Some(offsets),
                offsets_topic.as_str(),
                crate::error::READING_STORED_OFFSETS,
            ),
            Producers::Shared(_) => (
                None,
                self.settings.input_topic.as_str(),
                "reading the input group's offsets",
            ),
        };
        let mut asked = TopicPartitionList::new();
        for partition in partitions {
            asked.add_partition(topic, *partition);
        }
        let list = match offsets {
            Some(offsets) => offsets.committed_offsets(asked, self.transactions.call_timeout),
            None => consumer.committed_offsets(asked, self.transactions.call_timeout),
        }
        .map_err(|source| Error::transaction(during, source))?;
        for elem in list.elements_for_topic(topic) {
            let partition = elem.partition();
            if let Err(source) = elem.error() {
                return Err(Error::transaction(during, source));
            }
            let Offset::Offset(offset) = elem.offset() else {
                continue; // none stored yet
            };
            // The offsets topic says which input topic each offset belongs to.
            if topic != self.settings.input_topic && elem.metadata() != self.settings.input_topic {
                return Err(Error::InvalidSettings(format!(
                    "partition {partition} of the offsets topic `{topic}` holds the offset of another input topic \
                     for this group: give this sink its own `group_id` or offsets topic"
                )));
            }
            stored.insert(partition, offset);
        }
        Ok(stored)
    }

    /// Before `revoked` is released: commits what is open for it, and (per-partition
    /// producers) lets its producers go. A failure here is not rewound: the next owner
    /// starts from the committed offsets.
    pub(super) fn release<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        let partitions = partitions_of_topic(revoked, &self.settings.input_topic);
        match self.commit_open(consumer, Some(&partitions)) {
            Outcome::Committed => {}
            Outcome::Aborted { rewind } => {
                warn!(stage = self.stage, partitions = ?rewind, "The transaction of revoked partitions was aborted: their next owner consumes those records again.");
            }
            Outcome::Fatal(error) => self.tally.metrics.health.fail(error),
        }
        if let Producers::PerPartition { owned, .. } = &mut self.producers {
            for partition in &partitions {
                owned.remove(partition);
            }
        }
    }
}

/// How long the broker lets a transaction stay open before aborting it, unless
/// `transaction.timeout.ms` is set: Kafka Streams' value under exactly-once (librdkafka's
/// own default is 60 s). A dead instance's open transaction holds back `read_committed`
/// readers of its output partitions, and the next owner's start, until it is aborted.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// A transactional producer with `transactional_id`, initialized: any earlier producer
/// with that id is fenced and its open transaction aborted.
fn transactional(
    context: Watched<()>,
    config: &ClientConfig,
    transactional_id: &str,
    timeout: Duration,
) -> Result<Owned, Error> {
    let stage = context.stage;
    let mut config = config.clone();
    config.set("transactional.id", transactional_id);
    if config.get("transaction.timeout.ms").is_none() {
        config.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
    }
    let producer: TxProducer = config.create_with_context(context)?;
    producer
        .init_transactions(timeout)
        .map_err(|source| Error::transaction("initializing transactions", source))?;
    debug!(stage, transactional_id, "Transactional producer ready.");
    Ok(Owned {
        producer,
        open: false,
    })
}

/// Hands `record` to librdkafka, waiting while its local queue is full.
fn send_waiting_for_room(
    producer: &TxProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), Error> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_BACKOFF);
            }
            // The record itself cannot be produced (too large, say): stop rather than
            // skip it, as the at-least-once relay stalls its partition.
            // Reported as what made the stage's producers fail, if one did: see
            // `ExactlyOnce::fatal_cause`.
            Err((source, _record)) => {
                return Err(Error::transaction("producing a record", source));
            }
        }
    }
}

/// The offsets to commit: one past the batch's last record, for each of `partitions`.
/// librdkafka refusing one (never seen: they come from consumed records) fails the commit,
/// which aborts the transaction as any failed commit does.
fn offsets_list(
    topic: &str,
    batch: &BTreeMap<i32, PartitionBatch>,
    partitions: &[i32],
) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        if let Some(records) = batch.get(partition) {
            list.add_partition_offset(topic, *partition, Offset::Offset(records.next))
                .map_err(|source| Error::transaction(LISTING_OFFSETS, source))?;
        }
    }
    Ok(list)
}

/// The next `offset` of input partition `partition`, as the offset of the same partition
/// of `offsets_topic`, with the input topic's name as metadata (checked when read back).
fn stored_offsets_list(
    offsets_topic: &str,
    input_topic: &str,
    partition: i32,
    offset: i64,
) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    let mut elem = list.add_partition(offsets_topic, partition);
    elem.set_offset(Offset::Offset(offset))
        .map_err(|source| Error::transaction(LISTING_OFFSETS, source))?;
    elem.set_metadata(input_topic);
    Ok(list)
}

/// What the relay was doing when an offset could not be listed (a negative one: never
/// the offset of a consumed record).
const LISTING_OFFSETS: &str = "listing the offsets to commit";

/// What to do after a failed transactional call.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Retry,
    Abort,
    Fatal,
}

fn classify(error: &KafkaError) -> Failure {
    match error {
        KafkaError::Transaction(error) if error.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(error) if error.txn_requires_abort() => Failure::Abort,
        KafkaError::Transaction(error) if error.is_retriable() => Failure::Retry,
        _ => Failure::Abort,
    }
}

/// Sends the offsets into the transaction and commits it, retrying what may be retried,
/// each call within `timeout` and all of it by `deadline` (the liveness bound).
fn commit(
    producer: &TxProducer,
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
    deadline: Instant,
) -> Result<(), KafkaError> {
    retrying(deadline, || {
        producer.send_offsets_to_transaction(offsets, group, remaining(timeout, deadline))
    })?;
    retrying(deadline, || {
        producer.commit_transaction(remaining(timeout, deadline))
    })
}

/// `timeout`, or less when `deadline` comes sooner (at least 100 ms: a call given no time
/// at all fails without asking the broker).
fn remaining(timeout: Duration, deadline: Instant) -> Duration {
    timeout
        .min(deadline.saturating_duration_since(Instant::now()))
        .max(Duration::from_millis(100))
}

fn retrying(
    deadline: Instant,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(error)
                if classify(&error) == Failure::Retry
                    && attempt < RETRIES
                    && Instant::now() < deadline =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Turns the result of a commit into an outcome, aborting when needed.
fn finish(
    producer: &TxProducer,
    committed: Result<(), KafkaError>,
    partitions: &[i32],
    batch: &BTreeMap<i32, PartitionBatch>,
    timeout: Duration,
) -> Outcome {
    let error = match committed {
        Ok(()) => return Outcome::Committed,
        Err(error) => error,
    };
    if classify(&error) == Failure::Fatal {
        return Outcome::Fatal(Error::transaction("committing a transaction", error));
    }
    warn!(%error, "A transaction failed: aborting it and consuming its records again.");
    if let Err(abort_error) = producer.abort_transaction(timeout) {
        return Outcome::Fatal(Error::transaction("aborting a transaction", abort_error));
    }
    // Refused authorization fails every attempt again: stop instead of looping.
    if stops_the_stage(&error, "") {
        return Outcome::Fatal(Error::Fatal {
            cluster: "output",
            source: error,
            reason: "committing a transaction".to_owned(),
        });
    }
    let rewind = partitions
        .iter()
        .filter_map(|partition| Some((*partition, batch.get(partition)?.first)))
        .collect();
    Outcome::Aborted { rewind }
}

/// Both outcomes together: the worst wins, rewound partitions add up.
pub(super) fn merge(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (fatal @ Outcome::Fatal(_), _) | (_, fatal @ Outcome::Fatal(_)) => fatal,
        // A partition rewound already keeps where its transaction began.
        (Outcome::Aborted { mut rewind }, Outcome::Aborted { rewind: more }) => {
            for (partition, offset) in more {
                if !rewind.iter().any(|(rewound, _)| *rewound == partition) {
                    rewind.push((partition, offset));
                }
            }
            Outcome::Aborted { rewind }
        }
        (aborted @ Outcome::Aborted { .. }, Outcome::Committed)
        | (Outcome::Committed, aborted @ Outcome::Aborted { .. }) => aborted,
        (Outcome::Committed, Outcome::Committed) => Outcome::Committed,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_partitions_add_up_and_a_fatal_error_wins() {
        let merged = merge(
            Outcome::Aborted {
                rewind: vec![(0, 5)],
            },
            Outcome::Aborted {
                rewind: vec![(2, 9)],
            },
        );
        assert!(matches!(merged, Outcome::Aborted { rewind } if rewind == vec![(0, 5), (2, 9)]));
        let fatal = Outcome::Fatal(Error::InvalidSettings("x".into()));
        assert!(matches!(
            merge(Outcome::Committed, fatal),
            Outcome::Fatal(_)
        ));
    }

    #[test]
    fn offsets_point_past_the_last_record_of_each_partition() {
        let batch = BTreeMap::from([
            (
                0,
                PartitionBatch {
                    first: 10,
                    next: 15,
                    records: Vec::new(),
                },
            ),
            (
                3,
                PartitionBatch {
                    first: 0,
                    next: 1,
                    records: Vec::new(),
                },
            ),
        ]);
        let list = offsets_list("raw", &batch, &[0, 3]).unwrap();
        assert_eq!(
            list.find_partition("raw", 0).unwrap().offset(),
            Offset::Offset(15)
        );
        assert_eq!(list.count(), 2);
        assert_eq!(offsets_list("raw", &batch, &[3]).unwrap().count(), 1);
        let stored = stored_offsets_list("raw.offsets", "raw", 3, 1).unwrap();
        let elem = stored.find_partition("raw.offsets", 3).unwrap();
        assert_eq!((elem.offset(), elem.metadata()), (Offset::Offset(1), "raw"));
    }

    #[test]
    fn failures_outside_a_transaction_call_abort() {
        assert_eq!(classify(&KafkaError::Canceled), Failure::Abort);
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            Failure::Abort
        );
    }
}
