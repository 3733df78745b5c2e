//! The wire formats pseudopipe reads and writes, and where their schemas come from.
//!
//! Both stages judge JSON events. A record in another format is read here into the JSON
//! event it stands for, and written back from the pseudonymized one; what to do with the
//! event (the policy, the leak guard) is not this crate's business, nor is moving the
//! records (`plumbing`). Today the one format besides JSON is Avro in Confluent's wire
//! format, with its writer schemas fetched from a schema registry by id.
//!
//! # Layout
//!
//! - [`avro`]: Avro records read as the JSON events both stages judge ([`AvroInput`]),
//!   pseudonymized events written as datums of a derived schema ([`avro::Output`]), schema
//!   ids rewritten for another registry; what is refused, with its quarantine reason
//!   ([`Refusal`]).
//! - [`registry`]: writer schemas by id and ids of the schemas written, from a schema
//!   registry (cached) or a directory ([`Registry`]); its error, [`RegistryError`].
//! - [`settings`]: a stage's `format` and `schema_registry` tables, as the config file
//!   writes them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod avro;
pub mod registry;
pub mod settings;

pub use avro::{AvroInput, Refusal, RegistryFailed};
pub use registry::{Registry, RegistryError, RegistrySettings};
