//! The ingest stage: decide per record with the [`Pseudonymizer`], then let the shared
//! relay do the Kafka work (in-flight window, watermarks, commits, quarantine headers).

use std::sync::Arc;

use plumbing::{
    config, Decision, Layout, Processor, RelayReport, RelaySettings, Shutdown, StageMetrics,
};
use pseudonymize::{Pseudonymizer, Reason};

use crate::config::Settings;

/// Pseudonymizes one record; a rejection becomes a quarantine decision.
#[derive(Debug)]
pub struct IngestProcessor {
    engine: Pseudonymizer,
}

impl IngestProcessor {
    /// A processor applying `engine`.
    pub fn new(engine: Pseudonymizer) -> Self {
        Self { engine }
    }
}

impl Processor for IngestProcessor {
    fn process(&self, _key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        // The input key is ignored on purpose: retail systems key by card or email.
        let Some(payload) = payload else {
            return Decision::Quarantine {
                reason: Reason::MalformedJson.code(),
                message: "the record has no payload".into(),
            };
        };
        let mut out = Vec::with_capacity(payload.len());
        match self.engine.pseudonymize_into(payload, &mut out) {
            Ok(outcome) => Decision::Forward {
                key: outcome.record_key(&out).map(<[u8]>::to_vec),
                payload: out,
            },
            Err(rejection) => Decision::Quarantine {
                reason: rejection.reason.code(),
                message: rejection.message,
            },
        }
    }
}

/// Runs ingest until `shutdown`; returns what it did.
///
/// At least once by default; with [`Settings::exactly_once`], the pseudonymized and
/// quarantined records of a batch and the input offsets past it commit in one Kafka
/// transaction on the on-prem cluster.
pub async fn run(
    settings: Settings,
    engine: Pseudonymizer,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, plumbing::Error> {
    let producer = config::producer(&settings.brokers, &settings.kafka)?;
    let consumer = config::consumer(&settings.brokers, &settings.group_id, &settings.kafka)?;
    let mut relay = RelaySettings::new(
        "ingest",
        &settings.input_topic,
        &settings.output_topic,
        &settings.quarantine_topic,
    );
    relay.max_in_flight = settings.max_in_flight;
    let processor = Arc::new(IngestProcessor::new(engine));
    match settings.exactly_once {
        None => {
            // One producer serves both topics: they live on the same cluster.
            plumbing::run(
                relay,
                consumer,
                producer.clone(),
                producer,
                processor,
                metrics,
                shutdown,
            )
            .await
        }
        Some(exactly_once) => {
            let layout = Layout::SameCluster {
                producer,
                transactional_id: exactly_once.transactional_id,
            };
            plumbing::run_exactly_once(
                relay,
                exactly_once.transactions,
                consumer,
                layout,
                processor,
                metrics,
                shutdown,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pseudonymize::{MasterSecret, Policy};

    fn processor() -> IngestProcessor {
        let policy =
            Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml")).unwrap();
        let secret = MasterSecret::from_bytes([4; 32]);
        IngestProcessor::new(Pseudonymizer::new(
            policy,
            [("brand-a".to_string(), 1, &secret)],
        ))
    }

    #[test]
    fn a_valid_event_is_forwarded_keyed_by_its_card_token_not_its_input_key() {
        let event = include_bytes!("../../schemas/coupon_redemption.json");
        match processor().process(Some(b"6280 0012 3456 7890"), Some(event)) {
            Decision::Forward { key, payload } => {
                let key = String::from_utf8(key.unwrap()).unwrap();
                assert!(pseudonymize::is_token(&key));
                let out: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(out["customer"]["loyalty_card"], key.as_str());
            }
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn bad_records_are_quarantined_with_their_reason() {
        for (payload, reason) in [
            (None, "malformed_json"),
            (Some(&b"{\"x\":1}"[..]), "missing_field"),
            (Some(&b"[]"[..]), "not_an_object"),
        ] {
            match processor().process(None, payload) {
                Decision::Quarantine { reason: got, .. } => assert_eq!(got, reason),
                other => panic!("expected quarantine, got {other:?}"),
            }
        }
    }
}
