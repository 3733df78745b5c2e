//! The consumer's librdkafka callbacks: rebalances, commit results, logs.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::TopicPartitionList;
use tracing::{debug, error, info, warn};

use super::state::Shared;

/// Hooks the relay's offset tracking into the consumer group protocol.
pub(super) struct RelayContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for RelayContext {
    // librdkafka's own lines go to `tracing` like everything else.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(self.shared.stage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(stage = self.shared.stage, %error, reason, "Kafka client error.");
    }
}

impl ConsumerContext for RelayContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.shared.on_revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                warn!(stage = self.shared.stage, %error, "Rebalance failed.");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.shared.on_assign(consumer, tpl);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // A lost periodic commit is made good by the next one, and by the final commit.
        if let Err(error) = result {
            warn!(stage = self.shared.stage, %error, "Failed to commit offsets.");
        }
    }
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
