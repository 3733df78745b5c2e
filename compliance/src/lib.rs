//! What pseudopipe answers a compliance officer, as a library the binary calls: no Kafka,
//! no command line, no printing. The binary reads the files, keys and topics, writes the
//! audit entries and prints; this crate decides what the answers are.
//!
//! # Layout
//!
//! - [`report`]: the audit trail verified and rendered for people (`audit report`): per
//!   tenant, key versions with the events tokenized under each, and every entry, with a
//!   failed verification marked where it is.
//! - [`subject`]: a data subject's tokens under every live key version, and where they
//!   sit in pseudonymized records (`subject`).
//! - [`reidentify`]: the plaintexts of an `encrypt` field's values (`reidentify`).
//! - [`risk`]: equivalence classes of the policy's quasi-identifiers and the events and
//!   subjects in classes smaller than k (`risk`); needs no key.
//! - [`Error`]: what goes wrong, in words an operator can act on; never a value.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod reidentify;
pub mod report;
pub mod risk;
pub mod subject;

use std::path::PathBuf;

use crate::reidentify::Place;

/// What a compliance answer can fail on. Messages name options, fields, tenants and
/// versions, never a value or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The keyring or the audit log refused (wrong key, tampering, unknown tenant…).
    #[error(transparent)]
    Keys(#[from] pseudonymize::Error),
    /// The audit log named does not exist.
    #[error("the audit log {} does not exist", .0.display())]
    NoAuditLog(PathBuf),
    /// The audit log could not be read.
    #[error("cannot read the audit log {}: {source}", path.display())]
    ReadAuditLog {
        /// The log.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A report was asked for a tenant that neither the keyring nor the log knows.
    #[error("tenant {0} is neither in the keyring nor in the audit log")]
    UnknownTenant(String),
    /// A reference for the audit trail (`--ticket`, `--reason`) is not one short word.
    #[error("{option} must be a short reference of letters, digits and `._:/#+-` (at most 64, no spaces), e.g. DSR-42 or fraud-investigation")]
    BadReference {
        /// The option it was given with.
        option: &'static str,
    },
    /// An identifier's domain has no tokenized field in the policy.
    #[error("{option}: the policy tokenizes no field in domain `{domain}`; name the field with --value FIELD=VALUE")]
    NoFieldInDomain {
        /// The option it was given with.
        option: &'static str,
        /// The domain.
        domain: &'static str,
    },
    /// A value was given for an encrypted field, which cannot be searched for.
    #[error("--value {path}=...: the field is encrypted with a fresh nonce per value, so its values cannot be searched for; find the records by another identifier, then decrypt with `pseudopipe reidentify`")]
    SearchEncrypted {
        /// The field.
        path: String,
    },
    /// A value was given for a field the policy does not tokenize.
    #[error("--value {path}=...: the policy does not tokenize this field, so it leaves no token to search for")]
    SearchUntokenized {
        /// The field.
        path: String,
    },
    /// A value was given for a field the policy does not have.
    #[error("--value {path}=...: the policy has no field `{path}`")]
    SearchUnknown {
        /// The field.
        path: String,
    },
    /// A given identifier normalizes to nothing, which would match every empty field.
    #[error("the value given for {path} is empty once normalized ({normalizer}): it would match every record where the field is empty")]
    EmptyOnceNormalized {
        /// The field.
        path: String,
        /// Its normalizer.
        normalizer: &'static str,
    },
    /// `reidentify` of a tokenized field.
    #[error("field {0} is tokenized (a one-way keyed hash): tokens cannot be decrypted; use `pseudopipe subject` to find a known person's tokens")]
    DecryptTokenized(String),
    /// `reidentify` of a field the policy does not encrypt.
    #[error("field {0} is not encrypted by the policy (its rule is not `encrypt`): only `encrypt` fields can be re-identified")]
    DecryptUnencrypted(String),
    /// `reidentify` of a field the policy does not have.
    #[error("the policy has no field {0}")]
    DecryptUnknown(String),
    /// A value is not `e<version>.<base64url>`.
    #[error("{0} is not an encrypted value (`e<version>.<base64url>`, docs/token-spec.md)")]
    NotEncrypted(Place),
    /// A value names a version the tenant never had.
    #[error("{place}: tenant {tenant} has no key version {version} in the keyring")]
    NoSuchVersion {
        /// Where the value was.
        place: Place,
        /// The tenant.
        tenant: String,
        /// The version it names.
        version: u32,
    },
    /// A value's version was destroyed (crypto-shredding).
    #[error("{place}: v{version} of tenant {tenant} was destroyed on {on} (crypto-shredding): its ciphertexts can no longer be decrypted")]
    VersionDestroyed {
        /// Where the value was.
        place: Place,
        /// The tenant.
        tenant: String,
        /// The version.
        version: u32,
        /// When, as the keyring recorded it.
        on: String,
    },
    /// A version is listed but its material is gone.
    #[error("v{version} of tenant {tenant} has no key material in the keyring")]
    NoKeyMaterial {
        /// The tenant.
        tenant: String,
        /// The version.
        version: u32,
    },
    /// A value fails authentication under its version's key for this field.
    #[error("{place} does not decrypt with v{version} of tenant {tenant} for field {field} (domain {domain}): it was encrypted for another field, tenant or keyring, or it was altered")]
    DoesNotDecrypt {
        /// Where the value was.
        place: Place,
        /// The tenant.
        tenant: String,
        /// The version.
        version: u32,
        /// The field.
        field: String,
        /// Its domain.
        domain: String,
    },
    /// `risk` under a policy that declares no quasi-identifiers.
    #[error("the policy declares no quasi-identifiers: add a [risk] table with `quasi_identifiers` (and `k`), see docs/compliance.md")]
    NoQuasiIdentifiers,
    /// A value decrypts to bytes that are not text.
    #[error("{0} decrypts to bytes that are not UTF-8")]
    NotUtf8(Place),
}
