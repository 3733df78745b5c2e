//! Stage 2 of pseudopipe, at the on-prem end of the private link: consumes the
//! pseudonymized topic, re-checks every record against the policy's output shape (the
//! leak guard), and produces it to the cloud cluster over TLS (mTLS or SASL through
//! librdkafka properties). A record that fails the guard is quarantined on-prem, counted,
//! and logged without its content (by the relay: rate-limited, with topic, partition and
//! offset). Input headers never cross: a forwarded record carries only its key and
//! payload. The sink holds the cloud credentials and never sees raw data or keys.
//!
//! # Layout
//! - [`config`]: `[sink]` of the config file, validated ([`Settings`]).
//! - [`stage`]: the leak-guard decision ([`SinkProcessor`]) and [`run`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod stage;

pub use config::{ExactlyOnce, Settings};
pub use stage::{run, SinkProcessor};
