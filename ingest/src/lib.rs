//! Stage 1 of pseudopipe, on-prem: consumes raw events from the retail topic, applies the
//! pseudonymization policy with the tenant keys, and produces the result to the
//! pseudonymized topic with the token of the policy's `record_key` as the Kafka key.
//! Rejected records go to the quarantine topic unchanged, with the reason in headers.
//!
//! It is the only stage that reads raw data and the only one that holds keys. Input keys
//! and headers are never forwarded: they may be personal.
//!
//! Its keys follow the keyring while it runs: a rotation, a retirement, a destruction
//! applies between two batches (two transactions), and is an audit entry.
//!
//! # Layout
//! - [`config`]: `[ingest]` of the config file, validated ([`Settings`]).
//! - [`keys`]: live keys ([`LiveKeys`]): keyring checks, switches, scheduled rotation,
//!   overlaps, and the audit entries about them.
//! - [`bridge`]: pairs of old and new tokens during an overlap, to the bridge topic.
//! - [`audit_topic`]: the audit log mirrored to an on-prem topic.
//! - `error`: the crate's one error type, [`Error`].
//! - `coverage`: the policy rules the first 1000 events did not match, warned about.
//! - [`risk`]: classes below k counted per window, and k enforced ([`RiskWatch`]).
//! - `risk_replay`: the raw topic read back to rebuild the risk windows of a partition
//!   this instance did not see.
//! - [`stage`]: the record decision ([`IngestProcessor`]) and [`run`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit_topic;
pub mod bridge;
pub mod config;
mod coverage;
mod error;
pub mod keys;
pub mod risk;
mod risk_replay;
pub mod stage;

pub use audit_topic::AuditMirror;
pub use bridge::Bridge;
pub use config::{ExactlyOnce, Settings};
pub use error::Error;
pub use keys::{Clock, KeySettings, LiveKeys, SystemClock};
pub use risk::RiskWatch;
pub use stage::{run, IngestKeys, IngestProcessor};

/// The options of an ingest metric: every series carries `stage="ingest"`, as the
/// relay's do.
pub(crate) fn metric_opts(name: &str, help: &str) -> plumbing::prometheus::Opts {
    plumbing::prometheus::Opts::new(name, help).const_label("stage", "ingest")
}
