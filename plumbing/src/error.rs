//! The one error type of this crate.

use std::path::PathBuf;

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
    /// The file named by `PROPERTY_file` cannot be read.
    #[error("`{property}_file` = {}: cannot read it ({source}); mount the secret there or fix the path", path.display())]
    SecretFile {
        /// The secret property.
        property: String,
        /// The file that was named.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The variable named by `PROPERTY_env` is not set, or not UTF-8.
    #[error("`{property}_env` = {variable}: the environment variable is not set (or not UTF-8); set it, or name the variable that holds the secret")]
    SecretEnv {
        /// The secret property.
        property: String,
        /// The variable that was named.
        variable: String,
    },
    /// The file or the variable is empty (after trimming one trailing newline).
    #[error("`{property}` comes from {origin}, which is empty: put the secret there")]
    SecretEmpty {
        /// The secret property.
        property: String,
        /// `file PATH` or `environment variable NAME`.
        origin: String,
    },
    /// The property is given more than once (inline, `_file`, `_env`).
    #[error("`{property}` is given {forms}: keep only one of them")]
    SecretAmbiguous {
        /// The secret property.
        property: String,
        /// The forms given, e.g. "as `sasl.password` and `sasl.password_file`".
        forms: String,
    },
    /// `_file` or `_env` on a property whose value is not a secret.
    #[error("`{given}`: `{property}` is not a secret librdkafka property ({}); set `{property}` itself", crate::secrets::SENSITIVE.join(", "))]
    NotASecret {
        /// The key as written.
        given: String,
        /// The property it would set.
        property: String,
    },
    /// No broker of a cluster answered within the bound a command waits for it (see
    /// [`crate::probe`]).
    #[error(
        "cannot reach `{option}` = \"{brokers}\" within {timeout:?} (`{timeout_option}`): {cause}; \
         check the address, that the cluster is up, and its TLS/SASL settings"
    )]
    Unreachable {
        /// The option that gives the address.
        option: String,
        /// The bootstrap servers it gives.
        brokers: String,
        /// The option that bounds the wait.
        timeout_option: String,
        /// The bound.
        timeout: std::time::Duration,
        /// librdkafka's last reason (names brokers, never credentials).
        cause: String,
    },
    /// The relay settings are inconsistent.
    #[error("invalid relay settings: {0}")]
    InvalidSettings(String),
    /// A Kafka client (e.g. a stage's producer) could not be created.
    #[error("failed to create a Kafka client")]
    Client(#[source] KafkaError),
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
    /// A Kafka client met an error that no retry can fix (fenced, idempotence lost,
    /// authorization refused, SASL credentials refused): the stage stops, and what was
    /// not committed is consumed again after the restart.
    #[error("fatal Kafka error on the {cluster} cluster: {source} ({reason}): {hint}", hint = fatal_hint(.source))]
    Fatal {
        /// `input`, `output` or `quarantine`: which of the stage's clusters.
        cluster: &'static str,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
        /// librdkafka's explanation (names brokers and topics, never record content).
        reason: String,
    },
    /// The processor cannot go on between two batches (e.g. its keyring no longer opens):
    /// the stage stops, and what was not committed is consumed again after a restart.
    #[error("the stage's processor stopped it")]
    Processor(#[source] crate::relay::ProcessorError),
    /// A producer held records and had none acknowledged for the stall bound while its
    /// cluster answered, and a new producer did not deliver either: the stage stops so
    /// that its supervisor restarts it; what was not committed is consumed again.
    #[error(
        "deliveries to the {cluster} cluster stalled: no record acknowledged for {} s although \
         the cluster answers, and a new producer did not deliver either; the stage stops so \
         that its supervisor restarts it",
        stalled_for.as_secs()
    )]
    Stalled {
        /// `output` or `quarantine`: which of the stage's clusters.
        cluster: &'static str,
        /// How long nothing was acknowledged, the new producer's time included.
        stalled_for: std::time::Duration,
    },
    /// The relay's thread was cancelled before it could report (the runtime is shutting
    /// down): its uncommitted records are consumed again after a restart.
    #[error("the relay was interrupted before it could drain and commit")]
    Interrupted,
    /// A transaction could not be completed nor aborted, or another instance fenced
    /// this one: the process must stop, its uncommitted records are consumed again.
    #[error("transaction failed while {during} ({source}){}", hint(during, .source).map(|hint| format!(": {hint}")).unwrap_or_default())]
    Transaction {
        /// What the relay was doing.
        during: &'static str,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
}

/// A client that cannot be created: librdkafka's configuration errors quote the value
/// they refused, which is redacted when it is a secret.
impl From<KafkaError> for Error {
    fn from(source: KafkaError) -> Self {
        Self::Client(crate::secrets::redact_error(source))
    }
}

impl Error {
    /// The consumer of a relay could not be created (its configuration error redacted).
    pub(crate) fn create_consumer(source: KafkaError) -> Self {
        Self::CreateConsumer(crate::secrets::redact_error(source))
    }

    pub(crate) fn transaction(during: &'static str, source: KafkaError) -> Self {
        Self::Transaction { during, source }
    }
}

/// What reading the stored offsets says when they do not come, as [`Error::Transaction`]'s
/// `during`.
pub(crate) const READING_STORED_OFFSETS: &str = "reading the offsets stored in the output cluster";

/// Says what stored offsets that do not come, or a fenced producer, mean, after the
/// error's first sentence.
fn hint(during: &str, source: &KafkaError) -> Option<&'static str> {
    if during == READING_STORED_OFFSETS
        && source.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut)
    {
        return Some("the output cluster did not answer in time, or holds a transaction it never completed (a hanging transaction, left for instance by a lone broker's controlled shutdown); docs/operations.md, \"A hanging transaction\", says how to find and abort it");
    }
    fenced_hint(source)
}

/// Says what a fenced producer means, after the error's first sentence.
fn fenced_hint(source: &KafkaError) -> Option<&'static str> {
    match source.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced,
        ) => Some("another instance took over these partitions (this one was fenced), or the broker aborted this instance's transaction after it stayed open longer than `transaction.timeout.ms` (an outage of the cluster or of the link); it stops and its open transaction is aborted, and a restart resumes from the committed offsets"),
        _ => None,
    }
}

/// What to do about a fatal error, by its code.
fn fatal_hint(source: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as Code;
    if let Some(fenced) = fenced_hint(source) {
        return fenced;
    }
    match source.rdkafka_error_code() {
        Some(Code::TopicAuthorizationFailed) => {
            "grant this client's principal access to the topic (READ to consume, WRITE to produce), then restart the stage"
        }
        Some(Code::ClusterAuthorizationFailed) => {
            "grant this client's principal IDEMPOTENT_WRITE on the cluster (the idempotent producer needs it), then restart the stage"
        }
        Some(Code::TransactionalIdAuthorizationFailed) => {
            "grant this client's principal WRITE and DESCRIBE on its transactional id, then restart the stage"
        }
        Some(Code::GroupAuthorizationFailed) => {
            "grant this client's principal READ on its consumer group, then restart the stage"
        }
        Some(Code::Authentication | Code::SaslAuthenticationFailed) => {
            "the broker refused the SASL credentials: check `sasl.mechanisms`, `sasl.username` and the password (`sasl.password_file` / `sasl.password_env`)"
        }
        _ => "the client cannot go on (librdkafka's fatal error, e.g. the idempotent producer lost its guarantees); the stage stops so that its supervisor restarts it",
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

    #[test]
    fn stored_offsets_that_do_not_come_point_to_the_hanging_transaction_runbook() {
        let timed_out = Error::transaction(
            READING_STORED_OFFSETS,
            KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
        )
        .to_string();
        assert!(
            timed_out.starts_with(
                "transaction failed while reading the offsets stored in the output cluster (Meta data fetch error: "
            ),
            "librdkafka's own words are kept: {timed_out}"
        );
        assert!(
            timed_out.contains("\"A hanging transaction\""),
            "{timed_out}"
        );
        let refused = Error::transaction(
            READING_STORED_OFFSETS,
            KafkaError::MetadataFetch(RDKafkaErrorCode::GroupAuthorizationFailed),
        );
        assert!(!refused.to_string().contains("hanging"), "{refused}");
    }

    #[test]
    fn a_fatal_error_says_which_cluster_and_what_to_do() {
        let error = Error::Fatal {
            cluster: "output",
            source: KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
            reason: "redemptions".to_owned(),
        }
        .to_string();
        assert!(
            error.starts_with("fatal Kafka error on the output cluster"),
            "{error}"
        );
        assert!(error.contains("WRITE to produce"), "{error}");
        let fenced = Error::Fatal {
            cluster: "output",
            source: KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
            reason: String::new(),
        };
        assert!(
            fenced.to_string().contains("this one was fenced"),
            "{fenced}"
        );
    }
}
