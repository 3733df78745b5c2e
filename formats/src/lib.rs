//! The wire formats pseudopipe reads and writes, and where their schemas come from.
//!
//! The stages call one seam ([`IngestFormat`], [`SinkFormat`]) and know no format: a
//! record is decoded, pseudonymized under the policy and encoded (ingest), or judged by the
//! leak guard (sink), the way its topic's `format` says. What is policy (the walks, the
//! guard, the schema derived under a policy) stays in `pseudonymize`; moving records stays
//! in `plumbing`. Today's formats are JSON and Avro in Confluent's wire format, with its
//! writer schemas fetched from a schema registry by id (ADR 0021, ADR 0024).
//!
//! # Layout
//!
//! - [`format`]: the seam, one variant per format ([`IngestFormat`], [`SinkFormat`]).
//! - [`avro`]: Avro records: ingest's schemas judged once and datums walked directly
//!   ([`avro::IngestAvro`]), the sink's datums judged as their JSON event
//!   ([`avro::SinkAvro`], [`AvroInput`]), schema ids rewritten for another registry; what is
//!   refused, with its quarantine reason ([`Refusal`]).
//! - [`registry`]: writer schemas by id and ids of the schemas written, from a schema
//!   registry (cached) or a directory ([`Registry`]); its error, [`RegistryError`].
//! - [`settings`]: a stage's `format` and `schema_registry` tables, as the config file
//!   writes them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod avro;
pub mod format;
pub mod registry;
pub mod settings;

pub use avro::{AvroInput, Refusal, RegistryFailed};
pub use format::{IngestFormat, SinkFormat};
pub use registry::{Registry, RegistryError, RegistrySettings};
