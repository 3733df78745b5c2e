//! The librdkafka callbacks of the exactly-once relay: rebalances and logs.

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Statistics, TopicPartitionList};
use tracing::{debug, error, warn};

use super::producers::Transactions;
use crate::health::ClientWatch;

/// Takes assignments itself: with per-partition producers, a partition starts from the
/// offset stored in the output cluster, which only an explicit assignment can say.
pub(super) struct TransactionContext {
    pub(super) stage: &'static str,
    pub(super) state: Arc<Mutex<Transactions>>,
    /// The consumer's window on the stage's health (its cluster is the input).
    pub(super) watch: ClientWatch,
}

impl ClientContext for TransactionContext {
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

impl ConsumerContext for TransactionContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match error {
            // A stage that met a fatal error is stopping: taking partitions would start
            // producers that fence their rightful owner.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if state.has_failed() => {
                debug!(
                    stage = self.stage,
                    "Partitions assigned while stopping on a fatal error: not taken."
                );
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(error) = state.prepare_assignment(consumer, partitions) {
                    error!(stage = self.stage, %error, "Cannot take the assigned partitions.");
                    state.fail(error);
                }
                drop(state);
                if let Err(error) = consumer.assign(partitions) {
                    error!(stage = self.stage, %error, "Cannot assign partitions.");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                state.release(consumer, partitions);
                drop(state);
                if let Err(error) = consumer.unassign() {
                    error!(stage = self.stage, %error, "Cannot release partitions.");
                }
            }
            other => {
                warn!(stage = self.stage, error = ?other, "Rebalance failed.");
                drop(state);
                if let Err(error) = consumer.unassign() {
                    error!(stage = self.stage, %error, "Cannot release partitions.");
                }
            }
        }
    }
}

/// Routes a producer's librdkafka logs to `tracing`; delivery reports are not needed:
/// a failed record fails the commit of its transaction.
pub(super) struct ProducerLog {
    pub(super) stage: &'static str,
    /// The producer's window on the stage's health.
    pub(super) watch: ClientWatch,
}

impl ClientContext for ProducerLog {
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

impl ProducerContext for ProducerLog {
    type DeliveryOpaque = ();

    fn delivery(&self, _report: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
}
