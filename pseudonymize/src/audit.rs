//! The audit log: append-only JSON lines, hash-chained and authenticated.
//!
//! Each line is one [`AuditEntry`]. `prev` is the SHA-256 of the previous line's bytes
//! (64 zeros for the first), and `mac` is an HMAC-SHA256 of the entry's other fields under
//! a key derived from the KEK. Editing, deleting, inserting or reordering a line breaks
//! the sequence, the chain or a MAC, and nobody without the KEK can write a consistent
//! log. The keyring records the head (sequence and hash) after every key operation, so a
//! log cut short at its end is detected too ([`verify`] with `expected_head`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::keyring::KekKeys;

/// `prev` of the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The position of the last entry of a log: what the keyring remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Hex SHA-256 of the last line.
    pub hash: String,
}

/// The authenticated content of one audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1-based, consecutive.
    pub seq: u64,
    /// RFC 3339 UTC time of the operation.
    pub time: String,
    /// Who did it (`--actor`, or the login name).
    pub actor: String,
    /// `init`, `rotate`, `retire`, `destroy`, `import`, `lookup`...
    pub action: String,
    /// The tenant concerned.
    pub tenant: String,
    /// The key version concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    /// Fingerprint of that version's master secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Free-form details without any personal value (e.g. the domain of a lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Hex SHA-256 of the previous line.
    pub prev: String,
}

/// One line of the log: the record and its MAC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// The authenticated content.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Hex HMAC-SHA256 of the record's canonical JSON.
    pub mac: String,
}

/// What the caller supplies for a new entry; the log fills in sequence, time and chain.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which tenant.
    pub tenant: String,
    /// Which version.
    pub key_version: Option<u32>,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// Details without personal values.
    pub details: Option<String>,
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// All entries, in order.
    pub entries: Vec<AuditRecord>,
    /// The head, `None` for an empty or absent log.
    pub head: Option<AuditHead>,
}

fn mac_of(keys: &KekKeys, record: &AuditRecord) -> String {
    let canonical = serde_json::to_vec(record).expect("an audit record always serializes");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keys.audit_mac())
        .expect("HMAC accepts any key length");
    mac.update(&canonical);
    hex::encode(mac.finalize().into_bytes())
}

fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Verifies the whole log at `path` with the KEK that wrote it; see [`verify`].
pub fn verify_log(
    path: &Path,
    kek: &crate::secret::Kek,
    expected_head: Option<&AuditHead>,
) -> Result<Verified, Error> {
    verify(path, &KekKeys::derive(kek), expected_head)
}

/// Verifies the whole log at `path`. With `expected_head` (from the keyring), also checks
/// that the log reaches at least that entry and that its hash matches.
pub(crate) fn verify(
    path: &Path,
    keys: &KekKeys,
    expected_head: Option<&AuditHead>,
) -> Result<Verified, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                what: format!("cannot read the audit log {}", path.display()),
                source,
            })
        }
    };
    let display = path.display().to_string();
    let tampered = |line: usize, detail: String| Error::AuditTampered {
        path: display.clone(),
        line,
        detail,
    };
    let mut entries = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut head = None;
    let body = match bytes.strip_suffix(b"\n") {
        Some(body) => body,
        None if bytes.is_empty() => &bytes[..],
        None => {
            let line = bytes.split(|b| *b == b'\n').count();
            return Err(tampered(line, "the last line is incomplete (no newline): the log was cut or a write was interrupted".into()));
        }
    };
    let lines = body.split(|b| *b == b'\n').filter(|_| !body.is_empty());
    for (index, line) in lines.enumerate() {
        let number = index + 1;
        if line.is_empty() {
            return Err(tampered(number, "empty line".into()));
        }
        let entry: AuditEntry = serde_json::from_slice(line)
            .map_err(|error| tampered(number, format!("not a valid audit entry ({error})")))?;
        let expected_seq = entries.len() as u64 + 1;
        if entry.record.seq != expected_seq {
            return Err(tampered(number, format!("sequence {} where {expected_seq} was expected (a line was deleted, inserted or moved)", entry.record.seq)));
        }
        if entry.record.prev != prev {
            return Err(tampered(
                number,
                "its `prev` hash does not match the previous line (the chain is broken)".into(),
            ));
        }
        if mac_of(keys, &entry.record) != entry.mac {
            return Err(tampered(number, "its MAC does not match (the entry was edited, or the KEK is not the one that wrote it)".into()));
        }
        prev = hash_line(line);
        head = Some(AuditHead {
            seq: entry.record.seq,
            hash: prev.clone(),
        });
        entries.push(entry.record);
    }
    if let Some(expected) = expected_head {
        let last = head.as_ref().map_or(0, |h| h.seq);
        if last < expected.seq {
            return Err(Error::AuditTruncated {
                path: display,
                last,
                head: expected.seq,
            });
        }
        // The entry at the recorded head must be the one the keyring saw.
        let at_head = if last == expected.seq {
            head.as_ref().map(|h| h.hash.clone())
        } else {
            entries
                .get(expected.seq as usize)
                .map(|next| next.prev.clone())
        };
        if at_head.as_deref() != Some(expected.hash.as_str()) {
            return Err(tampered(
                expected.seq as usize,
                "it differs from the head recorded in the keyring".into(),
            ));
        }
    }
    Ok(Verified { entries, head })
}

/// An audit log opened for appending, positioned after its verified head.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    head: Option<AuditHead>,
}

impl AuditLog {
    /// Opens (or prepares to create) the log at `path`, refusing one that fails verification.
    pub(crate) fn open(
        path: &Path,
        keys: &KekKeys,
        expected_head: Option<&AuditHead>,
    ) -> Result<Self, Error> {
        let verified = verify(path, keys, expected_head)?;
        Ok(Self {
            path: path.to_path_buf(),
            head: verified.head,
        })
    }

    /// The current head.
    pub fn head(&self) -> Option<&AuditHead> {
        self.head.as_ref()
    }

    /// Appends one entry and syncs it to disk; returns the new head.
    pub(crate) fn append(&mut self, keys: &KekKeys, entry: NewEntry) -> Result<AuditHead, Error> {
        let record = AuditRecord {
            seq: self.head.as_ref().map_or(1, |h| h.seq + 1),
            time: crate::keyring::now_rfc3339(),
            actor: entry.actor,
            action: entry.action,
            tenant: entry.tenant,
            key_version: entry.key_version,
            fingerprint: entry.fingerprint,
            details: entry.details,
            prev: self
                .head
                .as_ref()
                .map_or_else(|| GENESIS.to_string(), |h| h.hash.clone()),
        };
        let mac = mac_of(keys, &record);
        let seq = record.seq;
        let line = serde_json::to_vec(&AuditEntry { record, mac })
            .expect("an audit entry always serializes");
        let io = |source| Error::Io {
            what: format!("cannot append to the audit log {}", self.path.display()),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(&[line.as_slice(), b"\n"].concat())
            .map_err(io)?;
        file.sync_data().map_err(io)?;
        let head = AuditHead {
            seq,
            hash: hash_line(&line),
        };
        self.head = Some(head.clone());
        Ok(head)
    }
}
