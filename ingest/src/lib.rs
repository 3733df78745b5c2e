//! Stage 1 of pseudopipe, on-prem: consumes raw events from the retail topic, decodes
//! and validates them, applies the pseudonymization policy with the tenant keys, and
//! produces the result to the pseudonymized topic; rejected events go to quarantine.
//!
//! It is the only stage that reads raw data and the only one that can unwrap keys. The
//! Kafka wiring arrives with the pipeline issue (#3); until then the batch command of the
//! binary calls `pseudonymize` directly.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
