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

mod context;
mod producers;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::context::TransactionContext;
use self::producers::{Outcome, Sent, Transactions};
use crate::health::Cluster;
use crate::relay::{decide, librdkafka_log_level};
use crate::secrets::RedactedConfig;
use crate::{config, Error, Processor, RelayReport, RelaySettings, Shutdown, StageMetrics};

/// How long one poll of the consumer may block: the loop checks shutdown and the
/// transaction's age this often when no record arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
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
    settings.validate()?;
    transactions.validate()?;
    let mut consumer_config = config::ensure_manual_commit(&consumer)?;
    consumer_config
        .set("isolation.level", "read_committed")
        .set_log_level(librdkafka_log_level());
    // The transactional calls block: the whole loop runs on a thread of its own.
    tokio::task::spawn_blocking(move || {
        let relay = ExactlyOnce::start(
            settings,
            transactions,
            consumer_config,
            layout,
            processor,
            metrics,
        )?;
        relay.run(&shutdown)
    })
    .await
    .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
}

/// The running relay, owned by its thread.
struct ExactlyOnce {
    settings: RelaySettings,
    transactions: TransactionSettings,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
    /// Shared with the rebalance callbacks, which run inside `consumer.poll`.
    state: Arc<Mutex<Transactions>>,
    consumer: BaseConsumer<TransactionContext>,
    consumed: u64,
}

impl ExactlyOnce {
    fn start(
        settings: RelaySettings,
        transactions: TransactionSettings,
        consumer_config: ClientConfig,
        layout: Layout,
        processor: Arc<dyn Processor>,
        metrics: StageMetrics,
    ) -> Result<Self, Error> {
        let state = Arc::new(Mutex::new(Transactions::new(
            &settings,
            &transactions,
            layout,
            metrics.clone(),
        )?));
        let consumer: BaseConsumer<TransactionContext> = consumer_config
            .create_with_context(TransactionContext {
                stage: settings.stage,
                state: Arc::clone(&state),
                watch: metrics.health.watch(Cluster::Input),
            })
            .map_err(Error::create_consumer)?;
        settings.subscribe(&consumer)?;
        info!(
            stage = settings.stage,
            input_topic = %settings.input_topic,
            output_topic = %settings.output_topic,
            quarantine_topic = %settings.quarantine_topic,
            max_records = transactions.max_records,
            max_duration_ms = transactions.max_duration.as_millis(),
            "Relay started, exactly once."
        );
        Ok(Self {
            settings,
            transactions,
            processor,
            metrics,
            state,
            consumer,
            consumed: 0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Transactions> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(mut self, shutdown: &Shutdown) -> Result<RelayReport, Error> {
        let result = self.relay_until(shutdown);
        let result = result.and_then(|()| {
            // The last batch: committed before the group is left.
            let outcome = self.lock().commit_open(&self.consumer, None);
            self.settle(outcome)
        });
        let report = self.lock().report(self.consumed);
        self.processor.stopped();
        // Leaving the group revokes the partitions; nothing is open any more.
        self.consumer.unsubscribe();
        drop(self.consumer);
        match &result {
            Ok(()) => info!(
                stage = self.settings.stage,
                consumed = report.consumed,
                forwarded = report.forwarded,
                quarantined = report.quarantined_total(),
                aborted = report.retries,
                "Relay stopped."
            ),
            Err(error) => warn!(
                stage = self.settings.stage,
                %error,
                consumed = report.consumed,
                forwarded = report.forwarded,
                "Relay stopped on a fatal error; uncommitted records will be consumed again after a restart."
            ),
        }
        result.map(|()| report)
    }

    fn relay_until(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        let mut next_lag = Instant::now();
        let (_, mut aborted_seen) = self.lock().progress();
        let mut clean = true;
        // Records refused by failed transactions since the last commit.
        let mut refusals = 0;
        while !shutdown.is_triggered() {
            if let Some(error) = self.lock().take_fatal() {
                return Err(error);
            }
            if let Some(error) = self.metrics.health.take_fatal() {
                return Err(error);
            }
            let polled = self.consumer.poll(POLL_INTERVAL);
            match polled {
                Some(Ok(message)) => {
                    self.consumed += 1;
                    self.metrics.consumed.inc();
                    let decision = decide(self.processor.as_ref(), &message);
                    let sent = self.lock().send(&message, decision)?;
                    if let Sent::Refused(error) = sent {
                        refusals += 1;
                        if refusals > MAX_REFUSALS {
                            return Err(error);
                        }
                        warn!(stage = self.settings.stage, partition = message.partition(), offset = message.offset(), %error, "A failed transaction refused a record: aborting it and consuming its records again.");
                        let outcome = self.lock().commit_open(&self.consumer, None);
                        self.settle(outcome.rewinding(message.partition(), message.offset()))?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    debug!(
                        stage = self.settings.stage,
                        partition, "Reached the end of a partition."
                    );
                }
                Some(Err(error)) => {
                    warn!(stage = self.settings.stage, %error, "Consumer error.");
                    self.consumer.context().watch.on_error(&error, "");
                }
                None => {}
            }
            let due = self.lock().is_due(&self.transactions);
            if due {
                let outcome = self.lock().commit_open(&self.consumer, None);
                let committed = matches!(outcome, Outcome::Committed);
                if committed {
                    refusals = 0;
                }
                self.settle(outcome)?;
                clean |= committed;
            }
            // The processor may change what it does only between two committed
            // transactions: after an abort, the records consumed again must be decided
            // as they were the first time.
            let (open, aborted) = self.lock().progress();
            if aborted != aborted_seen {
                aborted_seen = aborted;
                clean = false;
            }
            if clean && open == 0 {
                self.processor.between_batches().map_err(Error::Processor)?;
            }
            if Instant::now() >= next_lag {
                crate::relay::measure_lag(&self.consumer, &self.metrics, self.settings.stage);
                next_lag = Instant::now() + self.settings.lag_interval;
            }
        }
        Ok(())
    }

    /// Whether `partition` of the input topic is assigned to this instance.
    fn is_assigned(&self, partition: i32) -> bool {
        self.consumer.assignment().is_ok_and(|assignment| {
            assignment
                .find_partition(&self.settings.input_topic, partition)
                .is_some()
        })
    }

    /// Acts on how a commit went: rewinds what was aborted, stops on a fatal error.
    fn settle(&self, outcome: Outcome) -> Result<(), Error> {
        match outcome {
            Outcome::Committed => Ok(()),
            Outcome::Aborted { rewind } => {
                // What the output cluster stores is the truth: it holds nothing of the
                // aborted records, whatever this instance remembers of them.
                let partitions: Vec<i32> = rewind.iter().map(|(partition, _)| *partition).collect();
                let stored = self.lock().stored_offsets(&self.consumer, &partitions)?;
                for (partition, first) in rewind {
                    let offset = match stored.get(&partition) {
                        // Past a record that was never committed: read it again all the same.
                        Some(&stored) if stored > first => {
                            warn!(stage = self.settings.stage, partition, stored, first, "An offset is stored past the first record of an aborted transaction: rewinding to that record.");
                            first
                        }
                        // Behind what this instance committed before the aborted
                        // transaction: the output cluster's word wins (what it lost is
                        // written again), but a stored offset read stale would write
                        // committed records twice, so it is said.
                        Some(&stored) if stored < first => {
                            warn!(stage = self.settings.stage, partition, stored, first, "The stored offset is behind the first record of the aborted transaction, although this instance committed the records between: rewinding to the stored offset.");
                            stored
                        }
                        Some(&stored) => stored,
                        None => first,
                    };
                    let sought = self.consumer.seek(
                        &self.settings.input_topic,
                        partition,
                        rdkafka::Offset::Offset(offset),
                        self.transactions.call_timeout,
                    );
                    match sought {
                        Ok(()) => info!(
                            stage = self.settings.stage,
                            partition,
                            offset,
                            first_aborted = first,
                            "Rewound to the stored offset after an aborted transaction."
                        ),
                        // Revoked meanwhile: its next owner starts from the committed offset.
                        Err(error) if !self.is_assigned(partition) => {
                            debug!(stage = self.settings.stage, partition, offset, %error, "Not rewound after an aborted transaction: the partition was revoked.");
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
            Outcome::Fatal(error) => Err(error),
        }
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
