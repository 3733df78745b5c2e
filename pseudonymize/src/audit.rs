//! The audit log: append-only JSON lines, hash-chained, authenticated and signed.
//!
//! Each line is one [`AuditEntry`]. `prev` is the SHA-256 of the previous line's bytes
//! (64 zeros for the first). `mac` (HMAC-SHA256) and `sig` (Ed25519) both cover the same
//! bytes, the entry's canonical record ([`AuditRecord::canonical`]). The MAC key and the
//! signing key are kept wrapped in the keyring, so they outlive a change of KEK
//! (`keys rewrap`). Editing, deleting, inserting or reordering a line breaks the sequence,
//! the chain, a MAC or a signature, and nobody without the keys can write a consistent log.
//!
//! A log cut short at its end is detected against a recorded head (last sequence and
//! hash): the keyring records one after every key operation, and every append also writes
//! a signed head file, `<log>.head` ([`SignedHead`]).
//!
//! Two ways to verify:
//! - with key custody: [`verify_log`] with the KEK (MACs only, for a log whose keyring is
//!   not at hand), or `Keyring::verify_audit` (MACs, signatures and the keyring's head);
//! - without: [`verify_signed`] with the exported [`AuditPublicKey`] (signatures, chain
//!   and the signed head file), which needs neither the KEK nor the keyring.
//!
//! Entries written before signatures existed carry no `sig`; they are accepted only at
//! the start of the log, where the chain of the signed entries after them vouches for
//! their bytes ([`Verified::unsigned`]).
//!
//! Every file of the trail (the log, its head, the keyring's `.lock`, the exported public
//! key) is created with mode 0600 whatever the umask ([`TRAIL_FILE_MODE`]). Where an
//! auditors' group must read the log, its head and the public key, an administrator
//! `chgrp`s them and `chmod 0640`s them: the log is appended to in place and a replaced
//! head or key keeps the mode of the file it replaces, group read included, never more
//! ([`write_atomically`] with `None`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::Error;
use crate::keyring::{now_rfc3339, sibling, KekKeys};

/// `prev` of the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The `format` of signed head files.
const HEAD_FORMAT: &str = "pseudopipe-audit-head/1";
/// The tag that opens the key line of a public key file.
const KEY_FORMAT: &str = "pseudopipe-audit-key/1";
/// Prefix hashed with the public key into its fingerprint.
const KEY_FINGERPRINT_PREFIX: &[u8] = b"pseudopipe audit key v1\x00";

/// The position of the last entry of a log: what the keyring and the head file remember.
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
    /// `init`, `rotate`, `retire`, `destroy`, `import`, `lookup`, `rewrap`...
    pub action: String,
    /// The tenant concerned (`*` for an operation on the whole keyring, like `rewrap`).
    pub tenant: String,
    /// The key version concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    /// Fingerprint of that version's master secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Space-separated `key=value` pairs without any personal value (e.g. the domain of a
    /// lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Hex SHA-256 of the previous line.
    pub prev: String,
}

impl AuditRecord {
    /// The bytes the MAC and the signature cover: the record's compact JSON, fields in
    /// declaration order, absent options left out, without `mac` and `sig`.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit record always serializes")
    }
}

/// One line of the log: the record, its MAC and its signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// The authenticated content.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Hex HMAC-SHA256 of [`AuditRecord::canonical`].
    pub mac: String,
    /// Base64 Ed25519 signature of [`AuditRecord::canonical`]; absent in entries written
    /// before signatures existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
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
    /// How many entries, all at the start of the log, carry no signature (written before
    /// signatures existed); the chain up to the first signed entry vouches for them.
    pub unsigned: usize,
}

/// The keys that write the log: the MAC key and the Ed25519 signing key. Both are kept
/// wrapped in the keyring; they print redacted and are erased on drop.
pub(crate) struct AuditKeys {
    mac: Zeroizing<[u8; 32]>,
    signing: SigningKey,
}

// Both fields erase themselves on drop (`Zeroizing`, and `SigningKey` with the
// `zeroize` feature of ed25519-dalek).
impl ZeroizeOnDrop for AuditKeys {}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKeys(**REDACTED**)")
    }
}

impl AuditKeys {
    /// The keys from their 32-byte MAC key and 32-byte Ed25519 secret key; the caller
    /// erases its copies.
    pub(crate) fn from_bytes(mac: &[u8; 32], signing: &[u8; 32]) -> Self {
        Self {
            mac: Zeroizing::new(*mac),
            signing: SigningKey::from_bytes(signing),
        }
    }

    /// The MAC key, for wrapping.
    pub(crate) fn mac_key(&self) -> &[u8; 32] {
        &self.mac
    }

    /// The Ed25519 secret key, for wrapping.
    pub(crate) fn signing_key(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    /// The public half of the signing key.
    pub(crate) fn public(&self) -> AuditPublicKey {
        AuditPublicKey(self.signing.verifying_key())
    }

    fn mac_of(&self, canonical: &[u8]) -> String {
        hmac_hex(self.mac.as_slice(), canonical)
    }

    fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.signing.sign(message).to_bytes())
    }
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The public half of a log's signing key: all an auditor needs to verify the log.
///
/// Its file ([`AuditPublicKey::to_text`]) is a few lines of text:
///
/// ```text
/// pseudopipe-audit-key/1 <base64 of the 32-byte Ed25519 public key>
/// fingerprint <16 hex digits>
/// ```
///
/// Lines starting with `#` are comments. The fingerprint is
/// `lowercase_hex(SHA-256("pseudopipe audit key v1" || 0x00 || key)[0..8])`; compare it
/// with the one the key custodian gives you by another channel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuditPublicKey(VerifyingKey);

impl std::fmt::Debug for AuditPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditPublicKey({})", self.fingerprint())
    }
}

impl AuditPublicKey {
    /// The 32 bytes of the Ed25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A public key from its 32 bytes; `None` if they are not a usable Ed25519 point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        VerifyingKey::from_bytes(bytes)
            .ok()
            .filter(|key| !key.is_weak())
            .map(Self)
    }

    /// 16 lowercase hex digits that identify the key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(KEY_FINGERPRINT_PREFIX)
            .chain_update(self.0.as_bytes())
            .finalize();
        hex::encode(&digest[..8])
    }

    /// The text of a public key file.
    pub fn to_text(&self) -> String {
        format!(
            "{KEY_FORMAT} {}\nfingerprint {}\n# Verify an audit log with it: pseudopipe audit verify --audit-log LOG --public-key THIS-FILE\n",
            STANDARD.encode(self.0.as_bytes()),
            self.fingerprint()
        )
    }

    /// Parses the text of a public key file; the error ([`Error::InvalidAuditKey`], naming
    /// the key `<inline>`) says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::read(text).map_err(|detail| Error::InvalidAuditKey {
            path: "<inline>".to_owned(),
            detail,
        })
    }

    /// Reads a public key from the text of its file; the error is the `detail` of an
    /// [`Error::InvalidAuditKey`], which its callers name the file in.
    fn read(text: &str) -> Result<Self, String> {
        let mut key = None;
        let mut fingerprint = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(encoded) = line.strip_prefix(KEY_FORMAT) {
                if key.is_some() {
                    return Err("it holds more than one key line".into());
                }
                let bytes = STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or("its key is not the base64 of 32 bytes")?;
                key = Some(Self::from_bytes(&bytes).ok_or("its key is not an Ed25519 public key")?);
            } else if let Some(value) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(value.trim().to_string());
            } else {
                return Err(format!(
                    "unexpected line (expected `{KEY_FORMAT} <base64>` and `fingerprint <hex>`)"
                ));
            }
        }
        let key = key.ok_or_else(|| format!("no `{KEY_FORMAT} <base64>` line"))?;
        match fingerprint {
            Some(written) if written != key.fingerprint() => Err(format!(
                "its fingerprint line says {written} but the key's fingerprint is {} (the file was edited)",
                key.fingerprint()
            )),
            _ => Ok(key),
        }
    }

    /// Reads a public key file written by [`AuditPublicKey::to_file`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read the audit public key {}", path.display()),
            source,
        })?;
        Self::read(&text).map_err(|detail| Error::InvalidAuditKey {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Writes the key to `path` (replacing the file, atomically, mode 0600 or the 0640 of
    /// the file it replaces) in the format of [`AuditPublicKey::to_text`].
    pub fn to_file(&self, path: &Path) -> Result<(), Error> {
        write_atomically(path, self.to_text().as_bytes(), None).map_err(|source| Error::Io {
            what: format!("cannot write the audit public key {}", path.display()),
            source,
        })
    }

    fn verifies(&self, message: &[u8], sig: &str) -> Result<(), &'static str> {
        let bytes = STANDARD
            .decode(sig)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or("malformed")?;
        self.0
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .map_err(|_| "invalid")
    }
}

/// The signed head file `<log>.head`: the last sequence and line hash of the log, signed
/// with the log's key, rewritten (atomically) after every append. A log that ends before
/// it was cut short.
///
/// On disk, one JSON object: `{"format":"pseudopipe-audit-head/1","seq":N,"hash":"<hex>",
/// "time":"<RFC 3339>","sig":"<base64>"}`; `sig` is the Ed25519 signature of the same
/// object without `sig`, as compact JSON in that field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The head it vouches for.
    pub head: AuditHead,
    /// When it was written (RFC 3339 UTC).
    pub time: String,
    sig: String,
}

/// The signed part of a head file.
#[derive(Serialize)]
struct HeadMessage<'a> {
    format: &'a str,
    seq: u64,
    hash: &'a str,
    time: &'a str,
}

/// A head file as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadFile {
    format: String,
    seq: u64,
    hash: String,
    time: String,
    sig: String,
}

impl SignedHead {
    /// The head file of the log at `log`: `<log>.head`.
    pub fn default_path(log: &Path) -> PathBuf {
        sibling(log, ".head")
    }

    fn message(head: &AuditHead, time: &str) -> Vec<u8> {
        serde_json::to_vec(&HeadMessage {
            format: HEAD_FORMAT,
            seq: head.seq,
            hash: &head.hash,
            time,
        })
        .expect("a head message always serializes")
    }

    fn sign(keys: &AuditKeys, head: AuditHead) -> Self {
        let time = now_rfc3339();
        let sig = keys.sign(&Self::message(&head, &time));
        Self { head, time, sig }
    }

    /// Reads a head file; does not check its signature (see [`SignedHead::verify`]).
    pub fn read(path: &Path) -> Result<Self, Error> {
        let invalid = |detail: String| Error::InvalidAuditHead {
            path: path.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => invalid(
                "it does not exist: every append writes it, so it was deleted, or the log was never appended to by a version that signs (run any key operation, then verify again)".into(),
            ),
            _ => invalid(format!("it cannot be read ({error})")),
        })?;
        let file: HeadFile = serde_json::from_slice(&bytes)
            .map_err(|error| invalid(format!("it is not a signed head ({error})")))?;
        if file.format != HEAD_FORMAT {
            return Err(invalid(format!(
                "its format \"{}\" is unknown (this build reads {HEAD_FORMAT})",
                file.format
            )));
        }
        Ok(Self {
            head: AuditHead {
                seq: file.seq,
                hash: file.hash,
            },
            time: file.time,
            sig: file.sig,
        })
    }

    /// Checks the head's signature under `key`.
    pub fn verify(&self, key: &AuditPublicKey) -> bool {
        key.verifies(&Self::message(&self.head, &self.time), &self.sig)
            .is_ok()
    }

    /// Writes the head file atomically: a temporary sibling, fsync, rename.
    fn write(&self, path: &Path) -> Result<(), Error> {
        let file = HeadFile {
            format: HEAD_FORMAT.into(),
            seq: self.head.seq,
            hash: self.head.hash.clone(),
            time: self.time.clone(),
            sig: self.sig.clone(),
        };
        let mut text = serde_json::to_vec(&file).expect("a head file always serializes");
        text.push(b'\n');
        write_atomically(path, &text, None).map_err(|source| Error::Io {
            what: format!("cannot write the signed audit head {}", path.display()),
            source,
        })
    }
}

/// The mode of a new file of the audit trail: owner only.
pub const TRAIL_FILE_MODE: u32 = 0o600;

/// The most a replaced trail file keeps of the mode it had: owner read-write, group read.
const TRAIL_FILE_MAX_MODE: u32 = 0o640;

/// Writes `bytes` to `path` through `<path>.tmp`, fsync and rename, so that `path` holds
/// either its old or its new content. The new file's Unix mode is `mode` whatever the
/// umask; with `None`, a trail file's: the mode of the file it replaces within 0640, or
/// 0600 ([`TRAIL_FILE_MODE`]). The temporary file is removed when a step fails.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let tmp = sibling(path, ".tmp");
    let mode = mode.unwrap_or_else(|| replaced_mode(path));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let written = options.open(&tmp).and_then(|mut out| {
        // The umask, or a stale temporary file, may have left other bits.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() && tmp.is_file() {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The mode a trail file replacing `path` gets: `path`'s own within 0640, else 0600.
fn replaced_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        return (meta.permissions().mode() & TRAIL_FILE_MAX_MODE) | TRAIL_FILE_MODE;
    }
    #[cfg(not(unix))]
    let _ = path;
    TRAIL_FILE_MODE
}

/// Options that create a trail file with mode 0600 (the umask can only take bits away,
/// and there are none it may take that the owner needs); add how to open it.
pub(crate) fn trail_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, TRAIL_FILE_MODE);
    options
}

/// Verifies the whole log at `path` with the KEK that wrote it, checking MACs and the
/// chain (not signatures). With `expected_head` (from the keyring), also checks that the
/// log reaches that entry. For a keyring whose KEK was changed with `keys rewrap`, use
/// `Keyring::verify_audit`, which knows the log's MAC key.
pub fn verify_log(
    path: &Path,
    kek: &crate::secret::Kek,
    expected_head: Option<&AuditHead>,
) -> Result<Verified, Error> {
    let kek_keys = KekKeys::derive(kek);
    let checks = Checks {
        mac: Some((
            kek_keys.initial_audit_mac(),
            "its MAC does not match (the entry was edited, or the KEK is not the one that wrote it; after `keys rewrap`, verify with the keyring)",
        )),
        public: None,
    };
    let verified = check(path, &checks)?;
    if let Some(expected) = expected_head {
        reaches(path, &verified, expected, Anchor::Keyring)?;
    }
    Ok(verified)
}

/// Verifies the log at `path` with its public key alone, no KEK and no keyring: every
/// entry's signature (entries before the first signed one are vouched for by the chain,
/// see [`Verified::unsigned`]), the sequence, the hash chain, and that the log reaches the
/// signed head at `head` (default [`SignedHead::default_path`]), whose signature is
/// checked too. The error names the first bad entry, or says that the head file is
/// missing or forged, or that the log was cut short.
pub fn verify_signed(
    path: &Path,
    key: &AuditPublicKey,
    head: Option<&Path>,
) -> Result<Verified, Error> {
    let head_path = head.map_or_else(|| SignedHead::default_path(path), Path::to_path_buf);
    let checks = Checks {
        mac: None,
        public: Some(key),
    };
    let verified = check(path, &checks)?;
    let signed = SignedHead::read(&head_path)?;
    if !signed.verify(key) {
        return Err(Error::InvalidAuditHead {
            path: head_path.display().to_string(),
            detail: format!(
                "its signature does not verify under audit key {} (the head was forged or edited, or the key is not this log's)",
                key.fingerprint()
            ),
        });
    }
    reaches(
        path,
        &verified,
        &signed.head,
        Anchor::SignedHead(&head_path),
    )?;
    Ok(verified)
}

/// Verifies the log with the keys of its keyring: MACs, signatures, chain, and the head
/// the keyring recorded.
pub(crate) fn verify(
    path: &Path,
    keys: &AuditKeys,
    expected_head: Option<&AuditHead>,
) -> Result<Verified, Error> {
    let public = keys.public();
    let checks = Checks {
        mac: Some((
            keys.mac.as_slice(),
            "its MAC does not match (the entry was edited)",
        )),
        public: Some(&public),
    };
    let verified = check(path, &checks)?;
    if let Some(expected) = expected_head {
        reaches(path, &verified, expected, Anchor::Keyring)?;
    }
    Ok(verified)
}

/// What each entry is checked with: a MAC key (with the message for a mismatch), a
/// public key, or both.
struct Checks<'a> {
    mac: Option<(&'a [u8], &'static str)>,
    public: Option<&'a AuditPublicKey>,
}

/// Where a recorded head comes from, for the error messages.
enum Anchor<'a> {
    Keyring,
    SignedHead(&'a Path),
}

fn tampered(path: &Path, line: usize, detail: impl Into<String>) -> Error {
    Error::AuditTampered {
        path: path.display().to_string(),
        line,
        detail: detail.into(),
    }
}

/// Reads and checks every line: sequence, MAC, signature, chain.
fn check(path: &Path, checks: &Checks<'_>) -> Result<Verified, Error> {
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
    let body = match bytes.strip_suffix(b"\n") {
        Some(body) => body,
        None if bytes.is_empty() => &bytes[..],
        None => {
            let line = bytes.split(|b| *b == b'\n').count();
            return Err(tampered(path, line, "the last line is incomplete (no newline): the log was cut or a write was interrupted"));
        }
    };
    let mut entries = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut head = None;
    let mut unsigned = 0;
    let lines = body.split(|b| *b == b'\n').filter(|_| !body.is_empty());
    for (index, line) in lines.enumerate() {
        let number = index + 1;
        if line.is_empty() {
            return Err(tampered(path, number, "empty line"));
        }
        let entry: AuditEntry = serde_json::from_slice(line).map_err(|error| {
            tampered(path, number, format!("not a valid audit entry ({error})"))
        })?;
        let expected_seq = entries.len() as u64 + 1;
        if entry.record.seq != expected_seq {
            return Err(tampered(path, number, format!("sequence {} where {expected_seq} was expected (a line was deleted, inserted or moved)", entry.record.seq)));
        }
        let canonical = entry.record.canonical();
        let mut authenticated = false;
        if let Some((key, mismatch)) = checks.mac {
            if hmac_hex(key, &canonical) != entry.mac {
                return Err(tampered(path, number, mismatch));
            }
            authenticated = true;
        }
        match (&entry.sig, checks.public) {
            (None, _) if unsigned < entries.len() => {
                return Err(tampered(path, number, "it carries no signature although earlier entries do (it was added or edited without the signing key)"));
            }
            (None, _) => unsigned += 1,
            (Some(sig), Some(public)) => {
                public.verifies(&canonical, sig).map_err(|problem| {
                    tampered(path, number, format!("its signature is {problem} under audit key {} (the entry was edited, or the key is not this log's)", public.fingerprint()))
                })?;
                authenticated = true;
            }
            (Some(_), None) => {}
        }
        if entry.record.prev != prev {
            // An authenticated entry vouches for its `prev`: then it is the line before
            // that changed, in a part the MAC and signature do not cover (`mac`, `sig`).
            return Err(if authenticated && number > 1 {
                tampered(path, number - 1, "its bytes are not the ones the next entry's authenticated `prev` hash covers (its `mac` or `sig` was edited, or the line was rewritten)")
            } else {
                tampered(
                    path,
                    number,
                    "its `prev` hash does not match the previous line (the chain is broken)",
                )
            });
        }
        prev = hash_line(line);
        head = Some(AuditHead {
            seq: entry.record.seq,
            hash: prev.clone(),
        });
        entries.push(entry.record);
    }
    Ok(Verified {
        entries,
        head,
        unsigned,
    })
}

/// Checks that the verified log reaches `expected`, and that its entry at that sequence
/// is the one recorded.
fn reaches(
    path: &Path,
    verified: &Verified,
    expected: &AuditHead,
    anchor: Anchor<'_>,
) -> Result<(), Error> {
    let last = verified.head.as_ref().map_or(0, |h| h.seq);
    if last < expected.seq {
        return Err(match anchor {
            Anchor::Keyring => Error::AuditTruncated {
                path: path.display().to_string(),
                last,
                head: expected.seq,
            },
            Anchor::SignedHead(head_path) => Error::AuditCutShort {
                path: path.display().to_string(),
                head_path: head_path.display().to_string(),
                last,
                head: expected.seq,
            },
        });
    }
    // A recorded head behind the log is a crash between the append and the head's
    // write: the entries after it are authenticated, just not yet anchored.
    let at_head = if last == expected.seq {
        verified.head.as_ref().map(|h| h.hash.as_str())
    } else {
        verified
            .entries
            .get(expected.seq as usize)
            .map(|next| next.prev.as_str())
    };
    if at_head != Some(expected.hash.as_str()) {
        let detail = match anchor {
            Anchor::Keyring => "it differs from the head recorded in the keyring".to_string(),
            Anchor::SignedHead(head_path) => format!(
                "it differs from the signed head {} (the entry was replaced or edited)",
                head_path.display()
            ),
        };
        return Err(tampered(path, expected.seq.max(1) as usize, detail));
    }
    Ok(())
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
        keys: &AuditKeys,
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

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, MACed and signed, syncs it to disk, then rewrites the signed
    /// head file; returns the new head.
    pub(crate) fn append(&mut self, keys: &AuditKeys, entry: NewEntry) -> Result<AuditHead, Error> {
        let record = AuditRecord {
            seq: self.head.as_ref().map_or(1, |h| h.seq + 1),
            time: now_rfc3339(),
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
        let canonical = record.canonical();
        let mac = keys.mac_of(&canonical);
        let sig = Some(keys.sign(&canonical));
        let seq = record.seq;
        let line = serde_json::to_vec(&AuditEntry { record, mac, sig })
            .expect("an audit entry always serializes");
        let io = |source| Error::Io {
            what: format!("cannot append to the audit log {}", self.path.display()),
            source,
        };
        let mut file = trail_file_options()
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
        SignedHead::sign(keys, head.clone()).write(&SignedHead::default_path(&self.path))?;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> AuditKeys {
        AuditKeys::from_bytes(&[seed; 32], &[seed.wrapping_add(1); 32])
    }

    fn append(log: &mut AuditLog, keys: &AuditKeys, action: &str) {
        log.append(
            keys,
            NewEntry {
                actor: "alice".into(),
                action: action.into(),
                tenant: "brand-a".into(),
                details: Some("domain=email".into()),
                ..NewEntry::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn audit_keys_print_redacted() {
        let keys = keys(0x41);
        let printed = format!("{keys:?}");
        assert_eq!(printed, "AuditKeys(**REDACTED**)");
        assert!(!printed.contains("41") && !printed.contains("42"));
    }

    #[test]
    fn a_public_key_file_round_trips_and_names_its_fingerprint() {
        let public = keys(1).public();
        let text = public.to_text();
        assert!(text.starts_with("pseudopipe-audit-key/1 "), "{text}");
        assert!(text.contains(&format!("fingerprint {}\n", public.fingerprint())));
        assert_eq!(AuditPublicKey::parse(&text).unwrap(), public);
        assert_eq!(public.fingerprint().len(), 16);
        assert_ne!(public.fingerprint(), keys(2).public().fingerprint());
        // The fingerprint line is optional, and comments and blank lines are skipped.
        let bare = text.lines().next().unwrap();
        assert_eq!(
            AuditPublicKey::parse(&format!("# from ops\n\n{bare}\n")).unwrap(),
            public
        );
    }

    #[test]
    fn a_bad_public_key_file_says_what_is_wrong() {
        let good = keys(1).public().to_text();
        let other = keys(2).public();
        let key_line = good.lines().next().unwrap();
        let cases = [
            ("", "no `pseudopipe-audit-key/1"),
            ("pseudopipe-audit-key/1 !!!", "not the base64 of 32 bytes"),
            ("pseudopipe-audit-key/1 AAAA", "not the base64 of 32 bytes"),
            ("ssh-ed25519 AAAA", "unexpected line"),
            (&format!("{key_line}\n{key_line}"), "more than one key line"),
            (
                &format!("{key_line}\nfingerprint {}", other.fingerprint()),
                "the file was edited",
            ),
        ];
        for (text, expected) in cases {
            let error = AuditPublicKey::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        // The all-zero point has a small order: a key that would accept forged signatures.
        let zeros = format!("pseudopipe-audit-key/1 {}", STANDARD.encode([0u8; 32]));
        assert!(AuditPublicKey::parse(&zeros).is_err());
    }

    #[test]
    fn every_append_signs_the_entry_and_rewrites_the_signed_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let keys = keys(7);
        let mut log = AuditLog::open(&path, &keys, None).unwrap();
        append(&mut log, &keys, "init");
        append(&mut log, &keys, "lookup");
        let verified = verify_signed(&path, &keys.public(), None).unwrap();
        assert_eq!(verified.entries.len(), 2);
        assert_eq!(verified.unsigned, 0);
        let head = SignedHead::read(&SignedHead::default_path(&path)).unwrap();
        assert_eq!(Some(&head.head), log.head());
        assert!(head.verify(&keys.public()));
        assert!(!head.verify(&self::keys(8).public()));
        assert!(
            !sibling(&SignedHead::default_path(&path), ".tmp").exists(),
            "no temporary file is left"
        );
        // The MAC and the signature cover the same canonical bytes.
        let line = std::fs::read_to_string(&path).unwrap();
        let entry: AuditEntry = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        let canonical = entry.record.canonical();
        assert_eq!(entry.mac, hmac_hex(&[7; 32], &canonical));
        keys.public()
            .verifies(&canonical, entry.sig.as_deref().unwrap())
            .unwrap();
    }

    #[test]
    fn an_unsigned_entry_after_a_signed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let keys = keys(7);
        let mut log = AuditLog::open(&path, &keys, None).unwrap();
        append(&mut log, &keys, "init");
        append(&mut log, &keys, "rotate");
        // Strip the second entry's signature: its MAC still matches.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut entry: AuditEntry = serde_json::from_str(&lines[1]).unwrap();
        entry.sig = None;
        lines[1] = serde_json::to_string(&entry).unwrap();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        match verify(&path, &keys, None).unwrap_err() {
            Error::AuditTampered { line, detail, .. } => {
                assert_eq!(line, 2);
                assert!(detail.contains("no signature"), "{detail}");
            }
            other => panic!("expected a tampered log, got {other}"),
        }
    }

    #[test]
    fn unsigned_entries_at_the_start_are_vouched_for_by_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let keys = keys(7);
        let mut log = AuditLog::open(&path, &keys, None).unwrap();
        append(&mut log, &keys, "init");
        append(&mut log, &keys, "rotate");
        // Make the first entry look like one written before signatures existed, and
        // re-sign the second one over the new chain, as the old and new code would have.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut first: AuditEntry = serde_json::from_str(lines[0]).unwrap();
        first.sig = None;
        let first = serde_json::to_string(&first).unwrap();
        let mut second: AuditEntry = serde_json::from_str(lines[1]).unwrap();
        second.record.prev = hash_line(first.as_bytes());
        second.mac = keys.mac_of(&second.record.canonical());
        second.sig = Some(keys.sign(&second.record.canonical()));
        let second = serde_json::to_string(&second).unwrap();
        std::fs::write(&path, format!("{first}\n{second}\n")).unwrap();
        SignedHead::sign(
            &keys,
            AuditHead {
                seq: 2,
                hash: hash_line(second.as_bytes()),
            },
        )
        .write(&SignedHead::default_path(&path))
        .unwrap();
        let verified = verify_signed(&path, &keys.public(), None).unwrap();
        assert_eq!((verified.entries.len(), verified.unsigned), (2, 1));
        // Editing the unsigned entry breaks the chain the signed one vouches for.
        let edited = first.replace("alice", "mallory");
        std::fs::write(&path, format!("{edited}\n{second}\n")).unwrap();
        match verify_signed(&path, &keys.public(), None).unwrap_err() {
            Error::AuditTampered { line, .. } => assert_eq!(line, 1),
            other => panic!("expected a tampered log, got {other}"),
        }
    }
}
