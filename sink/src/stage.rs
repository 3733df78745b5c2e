//! The sink stage: the leak guard decides, the shared relay moves records to the cloud.

use std::sync::Arc;

use formats::SinkFormat;
use plumbing::{
    config, Decision, Finding, Layout, Processor, ProcessorError, Reason, RelayReport,
    RelaySettings, Shutdown, StageMetrics,
};
use pseudonymize::{LeakGuard, Rejection};

use crate::config::Settings;

/// Forwards a record unchanged when it has the policy's output shape; quarantines it otherwise.
#[derive(Debug)]
pub struct SinkProcessor {
    guard: LeakGuard,
    /// What the records are made of: the guard judges them as their format says, and the
    /// bytes forwarded are the bytes judged.
    format: SinkFormat,
}

impl SinkProcessor {
    /// A processor enforcing `guard` on records of `format`.
    pub fn new(guard: LeakGuard, format: SinkFormat) -> Self {
        Self { guard, format }
    }
}

/// The quarantine of a rejected event: its reason, message and detector finding.
fn quarantine(rejection: Rejection) -> Decision {
    Decision::Quarantine {
        reason: Reason::new(rejection.reason.code()),
        message: rejection.message,
        finding: rejection.finding.map(|finding| Finding {
            field: finding.field,
            detector: finding.detector,
        }),
    }
}

impl Processor for SinkProcessor {
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        let Some(payload) = payload else {
            return Decision::quarantine(Reason::new("leak_guard"), "the record has no payload");
        };
        match self.format.judge(&self.guard, key, payload) {
            Ok(forwarded) => Decision::Forward {
                key: key.map(<[u8]>::to_vec),
                payload: forwarded.into_owned(),
            },
            // The relay logs it (topic, partition, offset, reason; rate-limited), never
            // the explanation, which stays on-prem in the quarantine record's headers.
            Err(rejection) => quarantine(rejection),
        }
    }

    fn between_batches(&self) -> Result<(), ProcessorError> {
        Ok(self.format.failure()?)
    }
}

/// Runs the sink until `shutdown`; returns what it did.
///
/// At least once by default. With [`Settings::exactly_once`], the cloud records of a batch
/// and the source offsets past it commit in one transaction on the cloud cluster: one
/// transactional producer per source partition (`transactional.id` =
/// `GROUP_ID.SOURCE_TOPIC.PARTITION`, which fences a previous owner), the offsets stored
/// under the consumer group `group_id` of the cloud cluster as offsets of
/// [`ExactlyOnce::offsets_topic`](crate::ExactlyOnce::offsets_topic) (ADR 0007).
pub async fn run(
    settings: Settings,
    guard: LeakGuard,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, plumbing::Error> {
    let cloud = config::producer(&settings.brokers, &settings.kafka)?;
    let quarantine = config::producer(&settings.source_brokers, &settings.source_kafka)?;
    let consumer = config::consumer(
        &settings.source_brokers,
        &settings.group_id,
        &settings.source_kafka,
    )?;
    let mut relay = RelaySettings::new(
        "sink",
        &settings.source_topic,
        &settings.topic,
        &settings.quarantine_topic,
    );
    relay.max_in_flight = settings.max_in_flight;
    relay.stall_timeout = settings.stall_timeout();
    let format = SinkFormat::new(
        settings.format,
        settings.registry().as_ref(),
        settings.cloud_registry().as_ref(),
        &settings.topic,
    )
    .map_err(|error| plumbing::Error::InvalidSettings(error.to_string()))?;
    let processor = Arc::new(SinkProcessor::new(guard, format));
    match settings.exactly_once() {
        None => {
            let delivery = plumbing::DeliveryMode::AtLeastOnce {
                output: cloud,
                quarantine,
            };
            plumbing::run(relay, consumer, delivery, processor, metrics, shutdown).await
        }
        Some(exactly_once) => {
            let layout = Layout::CrossCluster {
                output: cloud,
                transactional_id_prefix: settings.group_id.clone(),
                offsets_topic: exactly_once.offsets_topic,
                offsets: config::consumer(&settings.brokers, &settings.group_id, &settings.kafka)?,
                quarantine,
            };
            let delivery = plumbing::DeliveryMode::ExactlyOnce {
                transactions: exactly_once.transactions,
                layout,
            };
            plumbing::run(relay, consumer, delivery, processor, metrics, shutdown).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pseudonymize::Policy;

    #[test]
    fn a_raw_event_never_passes_the_sink() {
        let policy =
            Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml")).unwrap();
        let processor = SinkProcessor::new(LeakGuard::new(policy), SinkFormat::Json);
        let raw = include_bytes!("../../schemas/coupon_redemption.json");
        assert!(matches!(
            processor.process(None, Some(raw)),
            Decision::Quarantine { reason, .. } if reason == "leak_guard"
        ));
        assert!(matches!(
            processor.process(None, None),
            Decision::Quarantine { reason, .. } if reason == "leak_guard"
        ));
    }
}
