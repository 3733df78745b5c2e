//! Errors of the crate ([`Error`]) and the reasons an event is rejected ([`Rejection`]).
//!
//! An [`Error`] is a failure of an operation (a keyring that will not open, a policy that
//! does not parse). A [`Rejection`] is data: the event goes to quarantine with its
//! [`Reason`] and the pipeline keeps going. Neither ever holds a key or an event value.

use std::fmt;

/// A failure of a key, policy or audit operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The KEK file does not hold a 32-byte key.
    #[error("the KEK file {path} holds {len} bytes that are neither 32 raw bytes nor the base64 of 32 bytes; create one with `pseudopipe keys new-kek --out PATH`")]
    InvalidKek {
        /// The file.
        path: String,
        /// Its size.
        len: usize,
    },
    /// A secret file for `keys import` does not hold a 32-byte secret.
    #[error("the secret file {path} ({len} bytes) holds neither 32 raw bytes, 64 hex digits nor the base64 of 32 bytes")]
    InvalidSecretFile {
        /// The file.
        path: String,
        /// Its size.
        len: usize,
    },
    /// The KEK given does not open this keyring.
    #[error("the KEK does not open the keyring {path}: it was created with another KEK (check --kek-file)")]
    WrongKek {
        /// The keyring file.
        path: String,
    },
    /// The keyring file is not a well-formed keyring or fails its integrity check.
    #[error("the keyring {path} is corrupted or was edited: {detail}; restore it from backup or escrow (`keys import`)")]
    CorruptKeyring {
        /// The keyring file.
        path: String,
        /// What is wrong, without any key material.
        detail: String,
    },
    /// The requested key operation is not allowed in the keyring's current state.
    #[error("{0}")]
    KeyOperation(String),
    /// The policy file is invalid.
    #[error("policy {path}: {detail}")]
    InvalidPolicy {
        /// The policy file, or `<inline>`.
        path: String,
        /// What to fix.
        detail: String,
    },
    /// The audit log fails verification.
    #[error("audit log {path}: line {line} is the first bad entry: {detail}")]
    AuditTampered {
        /// The log file.
        path: String,
        /// 1-based line of the first bad entry.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The audit log is shorter than the head recorded in the keyring.
    #[error("audit log {path} ends at sequence {last} but the keyring records head {head}: entries were cut off")]
    AuditTruncated {
        /// The log file.
        path: String,
        /// The last sequence number found.
        last: u64,
        /// The sequence number the keyring expects.
        head: u64,
    },
    /// The audit log is shorter than its signed head file records.
    #[error("audit log {path} ends at sequence {last} but its signed head {head_path} records sequence {head}: entries were cut off")]
    AuditCutShort {
        /// The log file.
        path: String,
        /// The signed head file.
        head_path: String,
        /// The last sequence number found.
        last: u64,
        /// The sequence number the head records.
        head: u64,
    },
    /// The signed head file of an audit log is missing, malformed or not signed by the
    /// log's key.
    #[error("the signed audit head {path}: {detail}")]
    InvalidAuditHead {
        /// The head file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A file given as an audit public key is not one.
    #[error("the audit public key {path} is not usable: {detail}; export it again with `pseudopipe audit export-key`")]
    InvalidAuditKey {
        /// The key file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// Machine-readable reason codes of a rejected event; stable, used in quarantine records,
/// headers and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The payload is larger than the policy's `limits.max_event_bytes`, or a string, an
    /// array or an object in it is over `limits.max_string_bytes`, `max_array_len` or
    /// `max_object_fields`.
    TooLarge,
    /// The payload is not valid UTF-8.
    InvalidUtf8,
    /// The payload is not valid JSON.
    MalformedJson,
    /// The payload nests deeper than the policy's `limits.max_depth`.
    TooDeep,
    /// The payload is valid JSON but not an object.
    NotAnObject,
    /// A field has no rule in the policy.
    UnknownField,
    /// An object holds the same field twice (which value a reader keeps varies).
    DuplicateField,
    /// A field the policy requires is missing or null.
    MissingField,
    /// A field holds a type its rule cannot take.
    WrongType,
    /// A field's value cannot be processed by its rule (a date that is not a date...).
    InvalidValue,
    /// The tenant field is not a valid tenant name.
    InvalidTenant,
    /// The tenant is not in the keyring.
    UnknownTenant,
    /// The tenant is in the keyring but has no active key version (its active version was
    /// retired or destroyed): its events wait in quarantine until a version is active again.
    TenantSuspended,
    /// The event's consent flag (the policy's `consent_field`) is false, absent or null: it
    /// is dropped, neither forwarded nor quarantined ([`Reason::is_drop`]).
    NoConsent,
    /// The payload is not in the configured format (Avro framing, schema id).
    UndecodableFormat,
    /// An Avro record names a writer schema id the schema registry does not know.
    UnknownSchema,
    /// A pseudonymized record failed the sink's leak guard.
    LeakGuard,
    /// A value of a `keep` field looks like personal data (an e-mail address, a phone or
    /// card number, an IBAN, an IP address) that the field's `allow` does not list.
    PersonalValueInKeptField,
}

impl Reason {
    /// Every reason, for metrics pre-registration and documentation.
    pub const ALL: [Reason; 18] = [
        Self::TooLarge,
        Self::InvalidUtf8,
        Self::MalformedJson,
        Self::TooDeep,
        Self::NotAnObject,
        Self::UnknownField,
        Self::DuplicateField,
        Self::MissingField,
        Self::WrongType,
        Self::InvalidValue,
        Self::InvalidTenant,
        Self::UnknownTenant,
        Self::TenantSuspended,
        Self::NoConsent,
        Self::UndecodableFormat,
        Self::UnknownSchema,
        Self::LeakGuard,
        Self::PersonalValueInKeptField,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MalformedJson => "malformed_json",
            Self::TooDeep => "too_deep",
            Self::NotAnObject => "not_an_object",
            Self::UnknownField => "unknown_field",
            Self::DuplicateField => "duplicate_field",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::InvalidTenant => "invalid_tenant",
            Self::UnknownTenant => "unknown_tenant",
            Self::TenantSuspended => "tenant_suspended",
            Self::NoConsent => "no_consent",
            Self::UndecodableFormat => "undecodable_format",
            Self::UnknownSchema => "unknown_schema",
            Self::LeakGuard => "leak_guard",
            Self::PersonalValueInKeptField => "personal_value_in_kept_field",
        }
    }

    /// Whether an event rejected for this reason is dropped rather than quarantined: it
    /// is not malformed, it must not be processed at all (no consent), so the caller
    /// neither forwards it nor keeps it, and only counts it.
    pub fn is_drop(self) -> bool {
        matches!(self, Self::NoConsent)
    }

    /// Parses a code written by [`Reason::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why one event was rejected: a reason code and a message naming the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The machine-readable reason.
    pub reason: Reason,
    /// A human message: which field, what was expected.
    pub message: String,
    /// The detector that found personal data in a kept field ([`Detector::name`], e.g.
    /// `card`), with the field's policy path (e.g. `basket.items[].sku`): set only for
    /// [`Reason::PersonalValueInKeptField`]. Both are the policy's words, never the value,
    /// so they may label a metric and name the record in quarantine.
    ///
    /// [`Detector::name`]: crate::detect::Detector::name
    pub finding: Option<Finding>,
}

/// Where a detector found personal data: the kept field's policy path and the detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The field's path as the policy writes it (`basket.items[].sku`).
    pub field: String,
    /// The detector's name (`email`, `phone`, `card`, `iban`, `ip`).
    pub detector: &'static str,
}

impl Rejection {
    /// A rejection with a reason and a message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            finding: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}
