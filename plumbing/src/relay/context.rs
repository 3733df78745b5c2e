//! The librdkafka callbacks of a relay: the consumer's (rebalances, commit results, logs)
//! and the producers' (delivery reports, logs).

use std::sync::mpsc::Sender;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::{Statistics, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::delivery::{Failure, Outgoing, Report};
use super::state::Shared;
use crate::health::ClientWatch;

/// Hooks the relay's offset tracking into the consumer group protocol.
pub(super) struct RelayContext {
    pub(super) shared: Arc<Shared>,
    /// The consumer's window on the stage's health (its cluster is the input).
    pub(super) watch: ClientWatch,
}

impl ClientContext for RelayContext {
    // librdkafka's own lines go to `tracing` like everything else.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.watch.log(self.shared.stage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error(self.shared.stage, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.watch.on_stats(&statistics);
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

/// Passes delivery reports on to the relay's thread, which settles them in bulk: a
/// report costs a channel send here, no lock.
pub(super) struct DeliveryContext {
    pub(super) stage: &'static str,
    pub(super) reports: Sender<Report>,
    /// The producer's window on the stage's health.
    pub(super) watch: ClientWatch,
}

impl ClientContext for DeliveryContext {
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

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let report = match result {
            Ok(_) => Report::Delivered(token),
            // The record comes back for a retry; its content is never logged.
            Err((error, message)) => Report::Failed(Box::new(Failure {
                token,
                error: error.clone(),
                record: Outgoing::from_report(message),
            })),
        };
        // The relay is gone only once it stopped caring (after its drain).
        let _ = self.reports.send(report);
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
