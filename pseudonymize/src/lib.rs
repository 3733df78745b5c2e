//! The pseudonymization core of pseudopipe: turns a nominative event into one that can
//! leave the premises, under keys that never do.
//!
//! It is a pure library (no Kafka, no async): the token, encryption and fingerprint
//! formats of `docs/token-spec.md`, the normalizers, the fail-closed policy, the keyring with
//! secrets wrapped under a KEK, and the hash-chained audit log of key operations.
//!
//! ```
//! use pseudonymize::{MasterSecret, Policy, Pseudonymizer};
//!
//! let policy = Policy::from_toml(r#"
//!     tenant_field = "tenant"
//!     record_key = "card"
//!     [fields]
//!     tenant = "keep"
//!     card = { action = "token", domain = "customer", normalizer = "digits" }
//!     name = "drop"
//! "#).unwrap();
//! let secret = MasterSecret::from_bytes(std::array::from_fn(|i| i as u8));
//! let engine = Pseudonymizer::new(policy, [("default".to_string(), 1, &secret)]);
//! let (json, key) = engine.pseudonymize(r#"{"card": "1234 5678", "name": "Émilie"}"#.as_bytes()).unwrap();
//! assert_eq!(String::from_utf8(json).unwrap(), format!(r#"{{"card":"{}"}}"#, key.unwrap()));
//!
//! let rejected = engine.pseudonymize(br#"{"card": "1", "email": "a@b.c"}"#).unwrap_err();
//! assert_eq!(rejected.reason.code(), "unknown_field");
//! ```
//!
//! # Layout
//! - [`secret`]: master secrets and the KEK; redacted `Debug`, zeroized on drop.
//! - [`token`]: token, encryption and fingerprint formats; the token grammar.
//! - [`normalize`]: the normalizers applied before HMAC.
//! - [`generalize`]: year, month, age band, prefix, IP network, hour, rounding.
//! - [`policy`]: the TOML policy, validated and compiled into a path tree.
//! - [`risk`]: the policy's quasi-identifiers and the k each tenant should reach.
//! - [`transform`]: the record path, [`Pseudonymizer`]: one pass over the bytes
//!   (`json` reads them, `walk` follows the policy's tree, `tree`), no value tree;
//!   suspended tenants, the consent drop, and the [`BridgePairs`] of a rotation's overlap.
//! - [`detect`]: content detectors (e-mail, phone, card, IBAN, IP) for kept values.
//! - [`avro_schema`]: Avro writer schemas under a policy: the fit check and the derived
//!   schema of the pseudonymized records.
//! - [`guard`]: the leak guard, [`LeakGuard`]: a record has the output shape of a policy.
//! - [`keyring`]: versions per tenant, wrapped at rest, life-cycle operations.
//! - [`audit`]: the hash-chained, authenticated and signed log of key operations,
//!   verifiable with a public key.
//! - [`avro`]: Avro datums in Confluent's wire format, to and from the JSON record path
//!   (the oracle of the direct walk).
//! - [`avro_walk`]: Avro datums pseudonymized directly, [`avro_walk::AvroPlan`]: a writer
//!   schema compiled once under the policy, each datum read once, the derived datum
//!   written straight out.
//! - [`error`]: [`Error`] for operations, [`Rejection`] for events.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod avro;
pub mod avro_schema;
pub mod avro_walk;
pub mod detect;
pub mod error;
pub mod generalize;
pub mod guard;
mod json;
pub mod keyring;
pub mod normalize;
#[cfg(test)]
mod oracle;
pub mod policy;
pub mod risk;
pub mod secret;
pub mod token;
pub mod transform;
mod tree;
mod walk;

pub use detect::{Detector, Detectors};
pub use error::{Error, Finding, Reason, Rejection};
pub use guard::LeakGuard;
pub use keyring::{KeyState, KeyVersion, Keyring, KeyringLock};
pub use normalize::Normalizer;
pub use policy::Policy;
pub use secret::{Kek, MasterSecret};
pub use token::{fingerprint, is_encrypted, is_token, EncryptKey, TokenKey};
pub use transform::{BridgePair, BridgePairs, Outcome, Pseudonymizer, QuasiValues, TenantKeys};
