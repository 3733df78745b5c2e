//! Fuzzing support for pseudopipe: the invariants every fuzz target checks.
//!
//! # Layout
//! - [`invariants`]: [`Subject`], the record path (decode, policy, leak guard) under the
//!   default policy and a fixed test key, and what must hold for any input bytes. The
//!   property tests of `pseudonymize/tests/hostile_input.rs` include the same file, so
//!   they and CI's replay of `fuzz/regressions/` check exactly what the fuzzer checks.

pub mod invariants;

pub use invariants::Subject;
