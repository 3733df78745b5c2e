//! The one error type of this crate: what stops ingest, or keeps one of its side topics
//! from starting. A bad record is not an error: it is quarantined.

use std::path::PathBuf;

use plumbing::rdkafka::error::KafkaError;

/// What can go wrong with ingest's keys, its audit mirror, its bridge or the risk windows'
/// read-back.
/// Messages name files, topics and sequence numbers, never a key or an event value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The keyring file cannot be looked at.
    #[error("cannot read the keyring {}: {source}", path.display())]
    KeyringUnreadable {
        /// The keyring file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// No tenant of the keyring has an active version: nothing could be pseudonymized.
    #[error("the keyring {} has no tenant with an active key: run `pseudopipe keys init --tenant ...`", path.display())]
    NoActiveKey {
        /// The keyring file.
        path: PathBuf,
    },
    /// The keyring does not open, or a key operation on it failed.
    #[error(transparent)]
    Keys(#[from] pseudonymize::Error),
    /// The audit log does not verify against the keyring: ingest must not go on with keys
    /// nobody can account for.
    #[error("the audit log {} does not verify against the keyring ({source}): run `pseudopipe audit verify` and investigate", path.display())]
    AuditUnverified {
        /// The audit log.
        path: PathBuf,
        /// What verification found.
        #[source]
        source: pseudonymize::Error,
    },
    /// An entry of this instance could not be written to the audit log.
    #[error("cannot write to the audit log of the keyring: {0}")]
    AuditWrite(#[source] pseudonymize::Error),
    /// The audit log cannot be read to mirror it.
    #[error("cannot read the audit log {}: {source}", path.display())]
    AuditLogUnreadable {
        /// The audit log.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The audit topic cannot be read or written.
    #[error("audit topic `{topic}`: {what} ({source})")]
    AuditTopic {
        /// The topic.
        topic: String,
        /// What was being done.
        what: &'static str,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// An audit entry could not be handed to the audit topic's producer.
    #[error("cannot mirror audit entry {seq} to `{topic}`: {source}")]
    AuditNotMirrored {
        /// The entry's sequence number.
        seq: u64,
        /// The topic.
        topic: String,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// Mirrored audit entries were not acknowledged in time.
    #[error("audit entries up to {last} were not acknowledged by `{topic}`: {source}")]
    AuditUnacknowledged {
        /// The last entry sent.
        last: u64,
        /// The topic.
        topic: String,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// The bridge topic's producer cannot be created.
    #[error("cannot create the producer of the bridge topic `{topic}`: {source}")]
    BridgeProducer {
        /// The topic.
        topic: String,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// The raw topic could not be read back to rebuild the risk windows of a partition.
    #[error("cannot read back `{topic}`/{partition} for the risk windows: {what} ({source})")]
    RiskReplay {
        /// The raw topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// What was being done.
        what: &'static str,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// Reading back the raw topic for the risk windows took longer than its bound.
    #[error(
        "reading back `{topic}`/{partition} for the risk windows took longer than {budget_ms} ms"
    )]
    RiskReplayTooLong {
        /// The raw topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The bound.
        budget_ms: u128,
    },
    /// A metric cannot be registered (a name taken twice in one registry).
    #[error(transparent)]
    Metrics(#[from] plumbing::prometheus::Error),
}
