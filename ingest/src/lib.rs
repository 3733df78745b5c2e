//! Stage 1 of pseudopipe, on-prem: consumes raw events from the retail topic, applies the
//! pseudonymization policy with the tenant keys, and produces the result to the
//! pseudonymized topic with the token of the policy's `record_key` as the Kafka key.
//! Rejected records go to the quarantine topic unchanged, with the reason in headers.
//!
//! It is the only stage that reads raw data and the only one that holds keys. Input keys
//! and headers are never forwarded: they may be personal.
//!
//! # Layout
//! - [`config`]: what the stage needs to run ([`Settings`]).
//! - [`stage`]: the record decision ([`IngestProcessor`]) and [`run`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod stage;

pub use config::{ExactlyOnce, Settings};
pub use stage::{run, IngestProcessor};
