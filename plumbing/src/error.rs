//! The one error type of this crate.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What can go wrong while setting up or running a relay.
///
/// A bad record is not an error: it is quarantined. A record that cannot be delivered
/// is not an error of the process either: its partition stalls and an alert fires.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A librdkafka property would break at-least-once delivery.
    #[error(
        "librdkafka property `{key} = {value}` would commit offsets before their records \
         are delivered (at-least-once needs it): remove it or set it to `false`"
    )]
    UnsafeProperty {
        /// The property name.
        key: String,
        /// The value that was given.
        value: String,
    },
    /// A librdkafka property that is set from pseudopipe's own configuration.
    #[error(
        "librdkafka property `{key}` cannot be set in the passthrough table: \
         set it with the stage's own `{setting}` option"
    )]
    ReservedProperty {
        /// The property name.
        key: String,
        /// The pseudopipe option that sets it.
        setting: &'static str,
    },
    /// The relay settings are inconsistent.
    #[error("invalid relay settings: {0}")]
    InvalidSettings(String),
    /// A Kafka client (e.g. a stage's producer) could not be created.
    #[error("failed to create a Kafka client")]
    Client(#[from] KafkaError),
    /// The relay's Kafka consumer could not be created.
    #[error("failed to create the Kafka consumer")]
    CreateConsumer(#[source] KafkaError),
    /// The consumer could not subscribe to the input topic.
    #[error("failed to subscribe to topic `{topic}`")]
    Subscribe {
        /// The input topic.
        topic: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
    /// The relay's thread was cancelled before it could report (the runtime is shutting
    /// down): its uncommitted records are consumed again after a restart.
    #[error("the relay was interrupted before it could drain and commit")]
    Interrupted,
    /// A transaction could not be completed nor aborted, or another instance fenced
    /// this one: the process must stop, its uncommitted records are consumed again.
    #[error("transaction failed while {during}{hint}", hint = fenced_hint(.source))]
    Transaction {
        /// What the relay was doing.
        during: &'static str,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
}

impl Error {
    pub(crate) fn transaction(during: &'static str, source: KafkaError) -> Self {
        Self::Transaction { during, source }
    }
}

/// Says what a fenced producer means, after the error's first sentence.
fn fenced_hint(source: &KafkaError) -> &'static str {
    match source.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced,
        ) => ": another instance took over these partitions (this one was fenced); it stops and its open transaction is aborted",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_producer_says_so_whatever_call_saw_it() {
        for source in [
            KafkaError::MessageProduction(RDKafkaErrorCode::Fenced),
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
        ] {
            let message = Error::transaction("producing a record", source).to_string();
            assert!(message.contains("this one was fenced"), "{message}");
        }
        let other = Error::transaction(
            "producing a record",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(!other.to_string().contains("fenced"), "{other}");
    }
}
