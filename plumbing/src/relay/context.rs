//! The librdkafka callbacks of every client a relay makes, written once: [`Watched`]
//! sends log lines to `tracing`, errors and statistics to the stage's health, and what a
//! client's role adds to its hooks (the consumer's rebalances to the [`Strategy`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus::IntGaugeVec;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Statistics, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::engine::Strategy;
use super::partitions::partitions_of_topic;
use super::RelaySettings;
use crate::health::{ClientWatch, Cluster, Health};

/// A client's callbacks: its window on the stage's health, and its role's `hooks`.
pub(crate) struct Watched<H> {
    pub(crate) stage: &'static str,
    pub(crate) watch: ClientWatch,
    pub(crate) hooks: H,
}

impl<H: Send + Sync + 'static> ClientContext for Watched<H> {
    // librdkafka's own lines go to `tracing` like everything else.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.watch.log(self.stage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error(self.stage, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.watch.on_stats(&statistics);
    }
}

/// The consumer's hooks: the relay's one lock (its strategy and its partitions) and the
/// rebalance generation.
pub(super) struct Rebalancing<D> {
    /// Taken by the loop and by these callbacks, on the relay's thread.
    pub(super) relay: Mutex<Locked<D>>,
    /// Bumped by every assignment and revocation, so that a batch polled before one can
    /// tell its records from the new assignment's.
    pub(super) generation: AtomicU64,
    pub(super) input_topic: String,
    /// Whose series of a revoked partition go with it.
    pub(super) lag: IntGaugeVec,
}

/// What the relay's lock guards.
pub(super) struct Locked<D> {
    pub(super) strategy: D,
    /// The assigned partitions of the input topic, with the generation each was assigned
    /// in: the registry both strategies rely on to tell a record of the current
    /// assignment from one polled before a rebalance.
    pub(super) assigned: HashMap<i32, u64>,
}

impl<D> Rebalancing<D> {
    pub(super) fn new(strategy: D, settings: &RelaySettings, lag: IntGaugeVec) -> Self {
        Self {
            relay: Mutex::new(Locked {
                strategy,
                assigned: HashMap::new(),
            }),
            generation: AtomicU64::new(0),
            input_topic: settings.input_topic.clone(),
            lag,
        }
    }

    /// The relay's state; a panic elsewhere while holding the lock leaves it usable
    /// (every update under the lock keeps it consistent).
    pub(super) fn lock(&self) -> MutexGuard<'_, Locked<D>> {
        self.relay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current rebalance generation.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Forgets released partitions (all of them when `everything`), and their lag.
    fn forget(&self, relay: &mut Locked<D>, partitions: &TopicPartitionList, everything: bool) {
        let released: Vec<i32> = if everything {
            relay
                .assigned
                .drain()
                .map(|(partition, _)| partition)
                .collect()
        } else {
            partitions_of_topic(partitions, &self.input_topic)
        };
        for partition in released {
            relay.assigned.remove(&partition);
            // An absent series is fine: nothing was measured for the partition yet.
            let _ = self
                .lag
                .remove_label_values(&[self.input_topic.as_str(), &partition.to_string()]);
        }
    }
}

/// A relay's consumer.
pub(super) type RelayConsumer<D> = BaseConsumer<Watched<Rebalancing<D>>>;

impl<D: Strategy> ConsumerContext for Watched<Rebalancing<D>> {
    /// Takes assignments itself (rdkafka's default does the same, less the hooks): the
    /// strategy may set where each partition starts before it is taken, which only an
    /// explicit assignment can say.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let mut relay = self.hooks.lock();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let generation = self.hooks.next_generation();
                if !relay.strategy.assigning(consumer, partitions) {
                    return;
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                };
                if let Err(error) = assigned {
                    error!(stage = self.stage, %error, "Cannot assign partitions.");
                }
                for partition in partitions_of_topic(partitions, &self.hooks.input_topic) {
                    relay.assigned.insert(partition, generation);
                }
                relay.strategy.assigned(consumer, partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.hooks.next_generation();
                relay.strategy.revoking(consumer, partitions);
                self.hooks.forget(&mut relay, partitions, false);
                self.release(consumer, partitions, cooperative);
            }
            other => {
                warn!(stage = self.stage, error = ?other, "Rebalance failed.");
                self.hooks.forget(&mut relay, partitions, !cooperative);
                self.release(consumer, partitions, cooperative);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // A lost periodic commit is made good by the next one, and by the final commit.
        if let Err(error) = result {
            D::commit_failed(self.stage, &error);
        }
    }
}

impl<H> Watched<H> {
    /// The callbacks of a client of `cluster`, with the hooks of its role.
    pub(crate) fn new(stage: &'static str, health: &Health, cluster: Cluster, hooks: H) -> Self {
        let watch = health.watch(cluster);
        Self {
            stage,
            watch,
            hooks,
        }
    }

    fn release<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &TopicPartitionList,
        cooperative: bool,
    ) {
        let released = if cooperative {
            consumer.incremental_unassign(partitions)
        } else {
            consumer.unassign()
        };
        if let Err(error) = released {
            error!(stage = self.stage, %error, "Cannot release partitions.");
        }
    }
}

/// A transactional producer needs no delivery report: a failed record fails the commit
/// of its transaction.
impl ProducerContext for Watched<()> {
    type DeliveryOpaque = ();

    fn delivery(&self, _report: &DeliveryResult<'_>, _opaque: ()) {}
}

/// A librdkafka log line into `tracing`, at the matching level. librdkafka's lines name
/// brokers, topics and partitions, never record content.
pub(crate) fn log_to_tracing(
    stage: &'static str,
    level: RDKafkaLogLevel,
    facility: &str,
    message: &str,
) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(stage, facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => warn!(stage, facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(stage, facility, "librdkafka: {message}");
        }
        RDKafkaLogLevel::Debug => debug!(stage, facility, "librdkafka: {message}"),
    }
}
