//! The plumbing that both pseudopipe stages need, written once.
//!
//! ingest and sink run the same loop: consume a topic in a consumer group, decide per
//! record (forward it with a new key and payload, or quarantine it with a reason),
//! produce, and commit input offsets only once everything before them is delivered
//! (at-least-once, no loss). This crate is that loop and what it stands on; a stage
//! brings only its [`Processor`].
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use plumbing::{config, Decision, DeliveryMode, RelaySettings, Shutdown, StageMetrics};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let passthrough = BTreeMap::new();
//! let producer = config::producer("localhost:9092", &passthrough)?;
//! let report = plumbing::run(
//!     RelaySettings::new("ingest", "redemptions.raw", "redemptions.pseudonymized", "redemptions.quarantine"),
//!     config::consumer("localhost:9092", "pseudopipe-ingest", &passthrough)?,
//!     DeliveryMode::AtLeastOnce { output: producer.clone(), quarantine: producer },
//!     Arc::new(|_key: Option<&[u8]>, payload: Option<&[u8]>| match payload {
//!         Some(payload) => Decision::Forward { key: None, payload: payload.to_vec() },
//!         None => Decision::quarantine(plumbing::Reason::new("empty"), "no payload"),
//!     }),
//!     StageMetrics::new(&plumbing::prometheus::Registry::new(), "ingest")?,
//!     Shutdown::on_signals(),
//! )
//! .await?;
//! println!("{} records forwarded", report.forwarded);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: Kafka client configurations with safe defaults and a passthrough table.
//! - [`probe`]: whether a cluster answers before a command starts, within a bound.
//! - [`offsets`]: per-partition contiguous watermarks — which offset is safe to commit.
//! - [`secrets`]: secret librdkafka properties from files or environment variables, redacted.
//! - [`settings`]: what the stages' config sections share: durations, property tables,
//!   the format and its registry, delivery and its limits, checks that say what to fix.
//! - [`shutdown`]: one shutdown handle, fired by SIGTERM/SIGINT or by hand.
//! - [`metrics`]: the Prometheus metrics of a stage, labelled by `stage`.
//! - [`relay`]: the consume → decide → produce → commit loop, in batches, with its two
//!   delivery strategies: at least once (acknowledgements, contiguous commits) and exactly
//!   once (Kafka transactions).
//! - `health`: whether a stage's clusters answer, and the client errors that stop it.
//! - `log_limit`: per-record log lines, at most one per reason per 10 s.
//! - `error`: the crate's one error type, [`Error`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod error;
mod health;
mod log_limit;
pub mod metrics;
pub mod offsets;
pub mod probe;
pub mod relay;
pub mod secrets;
pub mod settings;
pub mod shutdown;

pub use error::Error;
pub use metrics::StageMetrics;
pub use offsets::TopicPartition;
pub use relay::{
    run, Decision, DeliveryMode, Finding, Layout, Origin, Processor, ProcessorError, Reason,
    RelayReport, RelaySettings, TransactionSettings,
};
pub use shutdown::Shutdown;

/// The prometheus this crate registers its metrics with.
pub use prometheus;
/// The rdkafka this crate is built against, so that stages use the same version.
pub use rdkafka;
