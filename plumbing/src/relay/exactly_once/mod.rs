//! The exactly-once relay: consume → decide → produce, in Kafka transactions.
//!
//! [`run_exactly_once`] reads the input topic with `isolation.level=read_committed` and
//! gathers records into a transaction until it holds
//! [`max_records`](TransactionSettings::max_records) records or has been open for
//! [`max_duration`](TransactionSettings::max_duration). The forwarded and quarantined
//! records of that batch and the input offsets past it commit together or not at all:
//!
//! - [`Layout::SameCluster`] (ingest): one transactional producer per instance on the
//!   input cluster; the offsets go to the consumer group with the consumer's group
//!   metadata (KIP-447), so a member of an older generation (a zombie) cannot commit.
//! - [`Layout::CrossCluster`] (sink): the output cluster cannot commit the input cluster's
//!   group, so the offsets are stored in the output cluster, under a group of their own,
//!   in the same transaction as the records (the pattern of MirrorMaker 2 and KIP-618),
//!   as committed offsets of an `offsets_topic` whose partitions mirror the input's.
//!   There is one transactional producer per input partition, `transactional.id =
//!   PREFIX.TOPIC.PARTITION`: whoever is assigned a partition initializes that id, which
//!   aborts and fences the previous owner's transaction, then seeks to the offset the
//!   output cluster holds. ADR 0007 explains the scheme.
//!
//! A transaction that fails is aborted and the consumer rewinds its partitions to where
//! the batch began, so the batch is consumed again. A fatal error (the producer was
//! fenced by another instance) stops the relay with an error: the process must restart.
//! On revocation the open transaction is committed before the partitions are released.

mod transactions;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use tracing::{debug, error, info, warn};

use self::transactions::{Outcome, Sent, Transactions};
use super::context::RelayConsumer;
use super::engine::{self, Delivery, Pace};
use crate::relay::decide;
use crate::secrets::RedactedConfig;
use crate::{Error, Processor, RelayReport, RelaySettings, Shutdown, StageMetrics};
/// Records refused by failed transactions, one abort each, before the stage gives up: a
/// refusal that aborting does not cure is not a failed transaction.
const MAX_REFUSALS: u32 = 3;

/// How transactions are cut.
#[derive(Clone, Debug)]
pub struct TransactionSettings {
    /// Most records in one transaction. Default 5 000: large enough that the commit
    /// (a few round trips) is a small share of the time, small enough that an aborted
    /// batch is quick to do again.
    pub max_records: usize,
    /// Longest a transaction stays open, which is also how late at most a record becomes
    /// visible to `read_committed` readers downstream. Default 100 ms, Kafka Streams'
    /// commit interval under exactly-once.
    pub max_duration: Duration,
    /// How long a transactional call (init, commit, abort, sending offsets) may take.
    /// Default 30 s.
    pub call_timeout: Duration,
}

impl Default for TransactionSettings {
    fn default() -> Self {
        Self {
            max_records: 5_000,
            max_duration: Duration::from_millis(100),
            call_timeout: Duration::from_secs(30),
        }
    }
}

impl TransactionSettings {
    fn validate(&self) -> Result<(), Error> {
        if self.max_records == 0 {
            return Err(Error::InvalidSettings(
                "`max_records` of a transaction must be at least 1".to_owned(),
            ));
        }
        if self.max_duration.is_zero() || self.call_timeout.is_zero() {
            return Err(Error::InvalidSettings(
                "`max_duration` and `call_timeout` of a transaction must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Where the transactional producers write, and where the input offsets are kept.
/// `Debug` redacts the secret librdkafka properties.
#[derive(Clone)]
pub enum Layout {
    /// Output, quarantine and the input's consumer group live on one cluster (ingest).
    SameCluster {
        /// Producer configuration for that cluster (`transactional.id` is set here).
        producer: ClientConfig,
        /// Unique per live instance and stable across its restarts, so that a restarted
        /// instance aborts what its previous life left open at once.
        transactional_id: String,
    },
    /// The output lives on another cluster than the input (sink).
    CrossCluster {
        /// Producer configuration for the output cluster.
        output: ClientConfig,
        /// `transactional.id` prefix of the per-partition producers; every instance of
        /// one deployment must use the same, that is how they fence each other.
        transactional_id_prefix: String,
        /// A topic of the output cluster with at least as many partitions as the input
        /// topic: the input offset of partition P is stored as the offsets group's
        /// committed offset of its partition P (Kafka accepts commits for existing topics
        /// only). It holds no records.
        offsets_topic: String,
        /// Consumer configuration for the output cluster whose `group.id` names the group
        /// under which the input offsets are stored there. It never subscribes.
        offsets: ClientConfig,
        /// Producer configuration for the quarantine, on the input cluster. Quarantined
        /// records are flushed before the transaction that moves past them commits: after
        /// a crash one may be written twice (its headers name its source offset), never lost.
        quarantine: ClientConfig,
    },
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SameCluster {
                producer,
                transactional_id,
            } => f
                .debug_struct("SameCluster")
                .field("producer", &RedactedConfig(producer))
                .field("transactional_id", transactional_id)
                .finish(),
            Self::CrossCluster {
                output,
                transactional_id_prefix,
                offsets_topic,
                offsets,
                quarantine,
            } => f
                .debug_struct("CrossCluster")
                .field("output", &RedactedConfig(output))
                .field("transactional_id_prefix", transactional_id_prefix)
                .field("offsets_topic", offsets_topic)
                .field("offsets", &RedactedConfig(offsets))
                .field("quarantine", &RedactedConfig(quarantine))
                .finish(),
        }
    }
}

/// Runs an exactly-once relay until `shutdown` fires, then commits the open transaction,
/// leaves the group and returns what it did.
///
/// `consumer` is a consumer configuration such as [`config::consumer`] builds; it is
/// switched to `isolation.level=read_committed` with manual commits. The relay settings'
/// `max_in_flight` and `commit_interval` do not apply: a transaction bounds both.
///
/// Errors are those of setting up, and fatal transaction errors (fenced by another
/// instance, or a transaction that cannot even be aborted).
pub async fn run_exactly_once(
    settings: RelaySettings,
    transactions: TransactionSettings,
    consumer: ClientConfig,
    layout: Layout,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, Error> {
    transactions.validate()?;
    let mut consumer = consumer;
    consumer.set("isolation.level", "read_committed");
    let strategy_metrics = metrics.clone();
    info!(
        stage = settings.stage,
        max_records = transactions.max_records,
        max_duration_ms = transactions.max_duration.as_millis(),
        "Delivery exactly once, in transactions."
    );
    engine::run(
        settings,
        consumer,
        move |settings| ExactlyOnce::new(settings, transactions, layout, strategy_metrics),
        processor,
        metrics,
        shutdown,
    )
    .await
}

/// The exactly-once strategy: the open transaction(s), and how the loop stands with them.
struct ExactlyOnce {
    stage: &'static str,
    input_topic: String,
    transactions: TransactionSettings,
    /// Shared with the rebalance callbacks, which run inside `consumer.poll`.
    state: Mutex<Transactions>,
    progress: Mutex<Progress>,
}

/// Where the loop stands since the last commit.
#[derive(Default)]
struct Progress {
    /// Whether a transaction committed since the last abort.
    clean: bool,
    /// Aborted transactions counted when last looked at.
    aborted_seen: u64,
    /// Records refused by failed transactions since the last commit.
    refusals: u32,
}

impl ExactlyOnce {
    fn new(
        settings: &RelaySettings,
        transactions: TransactionSettings,
        layout: Layout,
        metrics: StageMetrics,
    ) -> Result<Self, Error> {
        let state = Transactions::new(settings, &transactions, layout, metrics)?;
        Ok(Self {
            stage: settings.stage,
            input_topic: settings.input_topic.clone(),
            transactions,
            state: Mutex::new(state),
            progress: Mutex::new(Progress {
                clean: true,
                ..Progress::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Transactions> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits the open transaction(s) and acts on how that went. `refused` is a record
    /// that a failed transaction refused: it is consumed again whatever became of its
    /// partition's transaction. Returns the partitions rewound.
    fn commit(
        &self,
        consumer: &RelayConsumer<Self>,
        refused: Option<(i32, i64)>,
    ) -> Result<Vec<i32>, Error> {
        let mut outcome = self.lock().commit_open(consumer, None);
        if let Some((partition, offset)) = refused {
            outcome = outcome.rewinding(partition, offset);
        }
        let rewound = match &outcome {
            Outcome::Committed => {
                let mut progress = self.progress();
                progress.refusals = 0;
                progress.clean = true;
                Vec::new()
            }
            Outcome::Aborted { rewind } => rewind.iter().map(|(partition, _)| *partition).collect(),
            Outcome::Fatal(_) => Vec::new(),
        };
        self.settle(consumer, outcome)?;
        Ok(rewound)
    }

    /// Whether `partition` of the input topic is assigned to this instance.
    fn is_assigned(&self, consumer: &RelayConsumer<Self>, partition: i32) -> bool {
        consumer.assignment().is_ok_and(|assignment| {
            assignment
                .find_partition(&self.input_topic, partition)
                .is_some()
        })
    }

    /// Acts on how a commit went: rewinds what was aborted, stops on a fatal error.
    fn settle(&self, consumer: &RelayConsumer<Self>, outcome: Outcome) -> Result<(), Error> {
        let rewind = match outcome {
            Outcome::Committed => return Ok(()),
            Outcome::Fatal(error) => return Err(error),
            Outcome::Aborted { rewind } => rewind,
        };
        // What the output cluster stores is the truth: it holds nothing of the aborted
        // records, whatever this instance remembers of them.
        let partitions: Vec<i32> = rewind.iter().map(|(partition, _)| *partition).collect();
        let stored = self.lock().stored_offsets(consumer, &partitions)?;
        for (partition, first) in rewind {
            let offset = match stored.get(&partition) {
                // Past a record that was never committed: read it again all the same.
                Some(&stored) if stored > first => {
                    warn!(stage = self.stage, partition, stored, first, "An offset is stored past the first record of an aborted transaction: rewinding to that record.");
                    first
                }
                // Behind what this instance committed before the aborted transaction: the
                // output cluster's word wins (what it lost is written again), but a
                // stored offset read stale would write committed records twice, so it is
                // said.
                Some(&stored) if stored < first => {
                    warn!(stage = self.stage, partition, stored, first, "The stored offset is behind the first record of the aborted transaction, although this instance committed the records between: rewinding to the stored offset.");
                    stored
                }
                Some(&stored) => stored,
                None => first,
            };
            let sought = consumer.seek(
                &self.input_topic,
                partition,
                rdkafka::Offset::Offset(offset),
                self.transactions.call_timeout,
            );
            match sought {
                Ok(()) => info!(
                    stage = self.stage,
                    partition,
                    offset,
                    first_aborted = first,
                    "Rewound to the stored offset after an aborted transaction."
                ),
                // Revoked meanwhile: its next owner starts from the committed offset.
                Err(error) if !self.is_assigned(consumer, partition) => {
                    debug!(stage = self.stage, partition, offset, %error, "Not rewound after an aborted transaction: the partition was revoked.");
                }
                // Still ours: consuming on would skip the aborted records.
                Err(source) => {
                    return Err(Error::transaction(
                        "rewinding a partition after an aborted transaction",
                        source,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Delivery for ExactlyOnce {
    fn assigning(
        &self,
        consumer: &RelayConsumer<Self>,
        partitions: &mut TopicPartitionList,
    ) -> bool {
        let mut state = self.lock();
        // A stage that met a fatal error is stopping: taking partitions would start
        // producers that fence their rightful owner.
        if state.has_failed() {
            debug!(
                stage = self.stage,
                "Partitions assigned while stopping on a fatal error: not taken."
            );
            return false;
        }
        if let Err(error) = state.prepare_assignment(consumer, partitions) {
            error!(stage = self.stage, %error, "Cannot take the assigned partitions.");
            state.fail(error);
        }
        true
    }

    fn assigned(
        &self,
        _consumer: &RelayConsumer<Self>,
        _partitions: &TopicPartitionList,
        _generation: u64,
    ) {
    }

    fn revoking(&self, consumer: &RelayConsumer<Self>, partitions: &TopicPartitionList) {
        self.lock().release(consumer, partitions);
    }

    fn commit_failed(&self, stage: &'static str, error: &KafkaError) {
        // Only the hint for lag monitoring: the offsets that count are in transactions.
        debug!(stage, %error, "Cannot commit the offsets hint to the input cluster.");
    }

    fn between(&self, consumer: &RelayConsumer<Self>) -> Result<Pace, Error> {
        if let Some(error) = self.lock().take_fatal() {
            return Err(error);
        }
        let due = self.lock().is_due(&self.transactions);
        if due {
            self.commit(consumer, None)?;
        }
        // The processor may change what it does only between two committed
        // transactions: after an abort, the records consumed again must be decided as
        // they were the first time.
        let (open, aborted) = self.lock().progress();
        let mut progress = self.progress();
        if aborted != progress.aborted_seen {
            progress.aborted_seen = aborted;
            progress.clean = false;
        }
        Ok(Pace {
            room: self.transactions.max_records.saturating_sub(open),
            busy: open > 0,
            settled: progress.clean && open == 0,
        })
    }

    fn dispatch(
        &self,
        consumer: &RelayConsumer<Self>,
        batch: &[BorrowedMessage<'_>],
        generation: u64,
        current: u64,
        processor: &dyn Processor,
    ) -> Result<(), Error> {
        if generation != current {
            // Polled before a rebalance (which committed what was open for the revoked
            // partitions): the assignment starts again from the committed offsets.
            debug!(
                stage = self.stage,
                "Records of an earlier assignment are left to be consumed again."
            );
            return Ok(());
        }
        // Partitions rewound during this batch: their later records are consumed again.
        let mut rewound: Vec<i32> = Vec::new();
        for message in batch {
            let partition = message.partition();
            if rewound.contains(&partition) {
                continue;
            }
            self.lock().consumed(1);
            let decision = decide(processor, message);
            let sent = self.lock().send(message, decision)?;
            if let Sent::Refused(error) = sent {
                let refusals = {
                    let mut progress = self.progress();
                    progress.refusals += 1;
                    progress.refusals
                };
                if refusals > MAX_REFUSALS {
                    return Err(error);
                }
                warn!(stage = self.stage, partition, offset = message.offset(), %error, "A failed transaction refused a record: aborting it and consuming its records again.");
                rewound.extend(self.commit(consumer, Some((partition, message.offset())))?);
            } else if self.lock().is_due(&self.transactions) {
                rewound.extend(self.commit(consumer, None)?);
            }
        }
        Ok(())
    }

    /// Commits the last batch before the group is left, unless the stage stops on an
    /// error (what is open is then aborted by the broker or the next owner).
    fn finish(
        &self,
        consumer: &RelayConsumer<Self>,
        fatal: Option<&Error>,
    ) -> Result<RelayReport, Error> {
        if fatal.is_none() {
            let outcome = self.lock().commit_open(consumer, None);
            self.settle(consumer, outcome)?;
        }
        Ok(self.lock().report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_transaction_settings_are_valid() {
        assert!(TransactionSettings::default().validate().is_ok());
    }

    #[test]
    fn empty_transactions_are_refused() {
        let settings = TransactionSettings {
            max_records: 0,
            ..TransactionSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("max_records"), "{error}");
    }
}
