//! Exactly once: the forwarded and quarantined records of a batch and the input offsets
//! past them commit in one Kafka transaction, or not at all (ADR 0007).
//!
//! [`Layout::SameCluster`] commits the offsets with the consumer's group metadata
//! (KIP-447); [`Layout::CrossCluster`] stores them in the output cluster as MirrorMaker 2
//! does (KIP-618) and fences a partition's previous owner with the partition's
//! `transactional.id`. An aborted transaction rewinds its partitions to the stored
//! offsets; a revocation commits the open transaction first (`docs/architecture.md`).

mod transactions;

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use tracing::{debug, error, info, warn};

pub(super) use self::transactions::ExactlyOnce;
use self::transactions::{merge, Outcome, Sent};
use super::context::RelayConsumer;
use super::engine::{Pace, Strategy};
use super::tally::Tally;
use crate::secrets::RedactedConfig;
use crate::{Decision, Error, RelayReport};
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
    pub(super) fn validate(&self) -> Result<(), Error> {
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

impl ExactlyOnce {
    /// Commits the open transaction(s) and acts on how that went. `refused` is a record
    /// that a failed transaction refused: it is consumed again whatever became of its
    /// partition's transaction. Returns the partitions rewound.
    fn commit(
        &mut self,
        consumer: &RelayConsumer<Self>,
        refused: Option<(i32, i64)>,
    ) -> Result<Vec<i32>, Error> {
        let mut outcome = self.commit_open(consumer, None);
        if let Some(refused) = refused {
            outcome = merge(
                outcome,
                Outcome::Aborted {
                    rewind: vec![refused],
                },
            );
        }
        if let Outcome::Committed = outcome {
            self.refusals = 0;
            self.clean = true;
        }
        self.settle(consumer, outcome)
    }

    /// Acts on how a commit went: rewinds what was aborted (returns those partitions),
    /// stops on a fatal error.
    fn settle(
        &mut self,
        consumer: &RelayConsumer<Self>,
        outcome: Outcome,
    ) -> Result<Vec<i32>, Error> {
        let rewind = match outcome {
            Outcome::Committed => return Ok(Vec::new()),
            Outcome::Fatal(error) => return Err(error),
            Outcome::Aborted { rewind } => rewind,
        };
        // What the output cluster stores is the truth: it holds nothing of the aborted
        // records, whatever this instance remembers of them.
        let partitions: Vec<i32> = rewind.iter().map(|(partition, _)| *partition).collect();
        let stored = self.stored_offsets(consumer, &partitions)?;
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
                &self.settings.input_topic,
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
                Err(error)
                    if !consumer.assignment().is_ok_and(|assignment| {
                        assignment
                            .find_partition(&self.settings.input_topic, partition)
                            .is_some()
                    }) =>
                {
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
        Ok(partitions)
    }
}

impl Strategy for ExactlyOnce {
    fn assigning(
        &mut self,
        consumer: &RelayConsumer<Self>,
        partitions: &mut TopicPartitionList,
    ) -> bool {
        // A stage that met a fatal error is stopping: taking partitions would start
        // producers that fence their rightful owner.
        if self.tally.metrics.health.has_failed() {
            debug!(
                stage = self.stage,
                "Partitions assigned while stopping on a fatal error: not taken."
            );
            return false;
        }
        if let Err(error) = self.prepare_assignment(consumer, partitions) {
            error!(stage = self.stage, %error, "Cannot take the assigned partitions.");
            self.tally.metrics.health.fail(error);
        }
        true
    }

    fn revoking(&mut self, consumer: &RelayConsumer<Self>, partitions: &TopicPartitionList) {
        self.release(consumer, partitions);
    }

    fn commit_failed(stage: &'static str, error: &KafkaError) {
        // Only the hint for lag monitoring: the offsets that count are in transactions.
        debug!(stage, %error, "Cannot commit the offsets hint to the input cluster.");
    }

    fn between(&mut self, consumer: &RelayConsumer<Self>) -> Result<Pace, Error> {
        self.rewound.clear();
        if self.is_due() {
            self.commit(consumer, None)?;
        }
        // The processor may change what it does only between two committed
        // transactions: after an abort, the records consumed again must be decided as
        // they were the first time.
        if std::mem::take(&mut self.aborted) {
            self.clean = false;
        }
        Ok(Pace {
            room: self.transactions.max_records.saturating_sub(self.records),
            busy: self.records > 0,
            settled: self.clean && self.records == 0,
        })
    }

    fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    fn takes(&self, partition: i32) -> bool {
        !self.rewound.contains(&partition)
    }

    fn hand_on(
        &mut self,
        consumer: &RelayConsumer<Self>,
        message: &BorrowedMessage<'_>,
        decision: Decision,
        received: Instant,
    ) -> Result<(), Error> {
        let (partition, offset) = (message.partition(), message.offset());
        let rewound = if let Sent::Refused(error) = self.send(message, decision, received)? {
            self.refusals += 1;
            if self.refusals > MAX_REFUSALS {
                return Err(error);
            }
            warn!(stage = self.stage, partition, offset, %error, "A failed transaction refused a record: aborting it and consuming its records again.");
            self.commit(consumer, Some((partition, offset)))?
        } else if self.is_due() {
            self.commit(consumer, None)?
        } else {
            return Ok(());
        };
        self.rewound.extend(rewound);
        Ok(())
    }

    /// Commits the last batch before the group is left, unless the stage stops on an
    /// error (what is open is then aborted by the broker or the next owner).
    fn finish(
        &mut self,
        consumer: &RelayConsumer<Self>,
        fatal: Option<&Error>,
    ) -> Result<RelayReport, Error> {
        if fatal.is_none() {
            let outcome = self.commit_open(consumer, None);
            self.settle(consumer, outcome)?;
        }
        Ok(self.tally.report(Vec::new(), Vec::new()))
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
