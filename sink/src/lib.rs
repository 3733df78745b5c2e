//! Stage 2 of pseudopipe, at the on-prem end of the private link: consumes the
//! pseudonymized topic, re-checks every record against the policy's output shape (the
//! leak guard), and produces it to the cloud cluster over TLS. It holds the cloud
//! credentials and never sees raw data or keys.
//!
//! The Kafka wiring arrives with the pipeline issue; this crate is a placeholder that
//! fixes its place in the workspace.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
