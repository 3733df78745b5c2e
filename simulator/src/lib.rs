//! Simulated *nominative* coupon-redemption events, the input pseudopipe exists to make
//! safe: varied names, e-mails, phones, cards and addresses from several countries, as a
//! retail system would send them, plus malformed payloads that each must be quarantined
//! with one known reason code. Everything is drawn from a seed, so a run can be repeated.
//!
//! It feeds `pseudopipe produce` and `demo`, the benchmarks and the tests. Events have
//! exactly the shape of `schemas/coupon_redemption.json` and only fields the default
//! policy lists; [`personal_values`] and [`leaked_fields`] tell a leak check what must
//! never reach the output.
//!
//! ```
//! use simulator::{Generator, Kind};
//!
//! let mut generator = Generator::new(42).with_malformed_ratio(0.1);
//! for record in generator.by_ref().take(100) {
//!     match record.kind {
//!         Kind::Valid => {
//!             let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
//!             assert!(!simulator::personal_values(&event).is_empty());
//!         }
//!         Kind::Malformed(malformation) => assert!(!malformation.expected_reason().is_empty()),
//!     }
//! }
//! ```
//!
//! # Layout
//! - `generator`: [`Generator`], [`Record`] and [`Kind`]: the seeded stream of records.
//! - `malformation`: [`Malformation`], the broken payloads and the reason each must get.
//! - `personal`: [`personal_values`], the values a leak check searches the output for,
//!   and [`leaked_fields`], that check for one event.
//! - `event`: one event written straight into a payload; the one-field tampering that
//!   malformations use.
//! - [`corpus`]: labelled non-personal and personal values that measure the content
//!   detectors' false positives and recall.
//! - `data`: names by origin, countries, retailers, campaigns, user agents.
//! - `json`: a streaming JSON writer and digit helpers, instead of `format!`.
//! - `clock`: calendar arithmetic for event times and birth dates.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
pub mod corpus;
mod data;
mod event;
mod generator;
mod json;
mod malformation;
mod personal;
mod population;

pub use generator::{Generator, Kind, Record};
pub use malformation::{Malformation, DEFAULT_MAX_EVENT_BYTES, MAX_JSON_DEPTH};
pub use personal::{kept_values, leaked_fields, personal_values, MIN_CHARS};
