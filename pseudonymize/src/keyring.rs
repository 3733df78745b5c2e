//! The keyring: per tenant, numbered versions of a 32-byte master secret, wrapped at rest.
//!
//! On disk a keyring is one JSON file. Each master secret is wrapped with AES-256-GCM
//! under a key derived from the KEK, with the tenant and version as associated data, so a
//! wrapped secret cannot be moved to another slot. The whole body is authenticated with an
//! HMAC under another KEK-derived key, so editing a state, a date or the recorded audit
//! head is detected; a separate KEK check value tells a wrong KEK from an edited file.
//!
//! The body also keeps the audit log's keys: its MAC key and its Ed25519 signing key,
//! wrapped the same way (each with its own associated data), and the public half of the
//! signing key in clear. A keyring written before they were stored gets them at its next
//! operation, derived from its KEK (see [`KekKeys::initial_audit_keys`]), so that its old
//! entries still verify; from then on they are kept, and survive `keys rewrap`.
//!
//! Every operation that changes the keyring appends an audit entry first, then writes the
//! keyring (atomically, via a temporary file and a rename) with the new audit head. A
//! destroyed version's wrapped secret is gone from the file once that write is done.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::audit::{self, AuditHead, AuditKeys, AuditLog, AuditPublicKey, NewEntry, Verified};
use crate::error::Error;
use crate::policy::is_valid_tenant;
use crate::secret::{Kek, MasterSecret, SECRET_LEN};
use crate::token::fingerprint;

/// The `format` field of keyring files this version writes and reads.
const FORMAT: &str = "pseudopipe-keyring/1";
/// HKDF salt for every key derived from the KEK.
const KEK_SALT: &[u8] = b"pseudopipe kek v1";
/// Associated data of the wrapped audit signing key.
const SIGNING_KEY_AAD: &[u8] = b"pseudopipe keyring v1\x00audit signing key";
/// Associated data of the wrapped audit MAC key.
const AUDIT_MAC_AAD: &[u8] = b"pseudopipe keyring v1\x00audit mac key";
/// The tenant of audit entries about the whole keyring (`rewrap`).
pub const ALL_TENANTS: &str = "*";

/// Now, as RFC 3339 UTC with second precision.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

/// Keys derived from the KEK, one per purpose, and the KEK's fingerprint.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct KekKeys {
    wrap: [u8; 32],
    mac: [u8; 32],
    check: [u8; 32],
    audit: [u8; 32],
    signing: [u8; 32],
    fingerprint: String,
}

impl std::fmt::Debug for KekKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KekKeys(**REDACTED**)")
    }
}

impl KekKeys {
    pub(crate) fn derive(kek: &Kek) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(KEK_SALT), kek.expose());
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            hkdf.expand(info, &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        Self {
            wrap: expand(b"keyring wrap"),
            mac: expand(b"keyring mac"),
            check: expand(b"kek check"),
            audit: expand(b"audit mac"),
            signing: expand(b"audit signing"),
            fingerprint: kek.fingerprint(),
        }
    }

    /// The audit MAC key a keyring created under this KEK starts with; what verifies a
    /// log with the KEK alone (until `keys rewrap`).
    pub(crate) fn initial_audit_mac(&self) -> &[u8] {
        &self.audit
    }

    /// The audit keys a keyring created under this KEK starts with, stored (wrapped) at
    /// its first write. Derived rather than drawn at random so that every process that
    /// opens a keyring from before they were stored agrees on them, and so that the MAC
    /// key is the one the log was always written with.
    pub(crate) fn initial_audit_keys(&self) -> AuditKeys {
        AuditKeys::from_bytes(&self.audit, &self.signing)
    }

    fn hmac(key: &[u8], data: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    fn check_value(&self) -> String {
        Self::hmac(&self.check, b"pseudopipe kek check v1")
    }

    fn wrap_aad(tenant: &str, version: u32) -> Vec<u8> {
        format!("pseudopipe keyring v1\x00{tenant}\x00{version}").into_bytes()
    }

    /// AES-256-GCM of 32 secret bytes under the wrap key: base64 of nonce || ciphertext.
    fn seal(&self, aad: &[u8], secret: &[u8; SECRET_LEN]) -> String {
        let cipher = Aes256Gcm::new_from_slice(&self.wrap).expect("32-byte AES-256 key");
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        STANDARD.encode([nonce.as_slice(), &ct].concat())
    }

    /// The 32 bytes sealed by [`KekKeys::seal`] with the same `aad`, if they open.
    fn open_sealed(&self, aad: &[u8], wrapped: &str) -> Option<Zeroizing<[u8; SECRET_LEN]>> {
        let cipher = Aes256Gcm::new_from_slice(&self.wrap).expect("32-byte AES-256 key");
        let blob = STANDARD.decode(wrapped).ok()?;
        if blob.len() != 12 + SECRET_LEN + 16 {
            return None;
        }
        let (nonce, ct) = blob.split_at(12);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                .ok()?,
        );
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        bytes.copy_from_slice(&plain);
        Some(bytes)
    }

    fn wrap(&self, tenant: &str, version: u32, secret: &MasterSecret) -> String {
        self.seal(&Self::wrap_aad(tenant, version), secret.expose())
    }

    fn unwrap(&self, tenant: &str, version: u32, wrapped: &str) -> Option<MasterSecret> {
        let bytes = self.open_sealed(&Self::wrap_aad(tenant, version), wrapped)?;
        Some(MasterSecret::from_bytes(*bytes))
    }

    fn wrap_audit(&self, keys: &AuditKeys) -> WrappedAuditKeys {
        WrappedAuditKeys {
            signing_public: STANDARD.encode(keys.public().to_bytes()),
            signing_wrapped: self.seal(SIGNING_KEY_AAD, keys.signing_key()),
            mac_wrapped: self.seal(AUDIT_MAC_AAD, keys.mac_key()),
        }
    }

    /// The audit keys of a keyring body; the error says what does not match.
    fn unwrap_audit(&self, wrapped: &WrappedAuditKeys) -> Result<AuditKeys, &'static str> {
        let signing = self
            .open_sealed(SIGNING_KEY_AAD, &wrapped.signing_wrapped)
            .ok_or("the audit signing key does not unwrap")?;
        let mac = self
            .open_sealed(AUDIT_MAC_AAD, &wrapped.mac_wrapped)
            .ok_or("the audit MAC key does not unwrap")?;
        let keys = AuditKeys::from_bytes(&mac, &signing);
        if STANDARD.encode(keys.public().to_bytes()) != wrapped.signing_public {
            return Err("the audit public key does not match the signing key");
        }
        Ok(keys)
    }
}

/// The life-cycle state of a key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Used for new tokens; at most one per tenant.
    Active,
    /// Kept for lookups and re-identification; not used for new tokens.
    Retired,
    /// Material erased (crypto-shredding): its tokens can never be recomputed.
    Destroyed,
}

impl KeyState {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
        }
    }
}

/// The public description of one key version (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersion {
    /// Version number, from 1.
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// `docs/token-spec.md` fingerprint of the master secret.
    pub fingerprint: String,
    /// When the version was created or imported.
    pub created_at: String,
    /// When it became active, if it ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    /// When it was retired, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
    /// When its material was destroyed, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<String>,
    /// The wrapped master secret; absent once destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
}

/// The authenticated part of the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    tenants: BTreeMap<String, Vec<KeyVersion>>,
    audit_head: Option<AuditHead>,
    /// Absent in keyrings written before the audit keys were stored; left out when
    /// absent, so that such a body serializes (and authenticates) as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_keys: Option<WrappedAuditKeys>,
}

/// The audit log's keys as stored in the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedAuditKeys {
    /// The Ed25519 public key, base64, in clear: what `audit export-key` writes.
    signing_public: String,
    /// The Ed25519 secret key, wrapped like a master secret.
    signing_wrapped: String,
    /// The HMAC key of the entries, wrapped like a master secret.
    mac_wrapped: String,
}

/// What `keys rewrap` did: how many versions it re-wrapped, and the one-way fingerprints
/// ([`Kek::fingerprint`]) of the KEK before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    /// Versions re-wrapped (every version that is not destroyed, all tenants).
    pub versions: usize,
    /// Fingerprint of the KEK the keyring was wrapped under.
    pub old_kek: String,
    /// Fingerprint of the KEK it is wrapped under now.
    pub new_kek: String,
}

/// The file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: String,
    kek_check: String,
    body: Body,
    mac: String,
}

/// An exclusive lock on a keyring, held while a command reads, changes and writes it, so
/// that two operators cannot fork the audit chain.
#[derive(Debug)]
pub struct KeyringLock {
    _file: File,
}

impl KeyringLock {
    /// Takes the lock `<keyring>.lock`, waiting for another holder to finish.
    pub fn acquire(keyring: &Path) -> Result<Self, Error> {
        let path = sibling(keyring, ".lock");
        let io = |source| Error::Io {
            what: format!("cannot lock {}", path.display()),
            source,
        };
        let file = audit::trail_file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A keyring opened with its KEK: public descriptions and the unwrapped secrets.
pub struct Keyring {
    path: PathBuf,
    keys: KekKeys,
    body: Body,
    secrets: BTreeMap<(String, u32), MasterSecret>,
    audit: AuditKeys,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("tenants", &self.body.tenants)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring at `path` with `kek`, verifying the KEK, the MAC and every
    /// wrapped secret. A missing file is an error; see [`Keyring::open_or_new`].
    pub fn open(path: &Path, kek: &Kek) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            what: format!(
                "cannot read the keyring {} (create it with `pseudopipe keys init`)",
                path.display()
            ),
            source,
        })?;
        let keys = KekKeys::derive(kek);
        let corrupt = |detail: String| Error::CorruptKeyring {
            path: path.display().to_string(),
            detail,
        };
        let file: KeyringFile = serde_json::from_slice(&text)
            .map_err(|error| corrupt(format!("not a keyring file ({error})")))?;
        if file.format != FORMAT {
            return Err(corrupt(format!(
                "unknown format \"{}\" (this build reads {FORMAT})",
                file.format
            )));
        }
        if file.kek_check != keys.check_value() {
            return Err(Error::WrongKek {
                path: path.display().to_string(),
            });
        }
        let canonical = serde_json::to_vec(&file.body).expect("a keyring body always serializes");
        if KekKeys::hmac(&keys.mac, &canonical) != file.mac {
            return Err(corrupt("its MAC does not match its content".into()));
        }
        let mut secrets = BTreeMap::new();
        for (tenant, versions) in &file.body.tenants {
            if !is_valid_tenant(tenant) {
                return Err(corrupt(format!("invalid tenant name `{tenant}`")));
            }
            if versions
                .iter()
                .filter(|v| v.state == KeyState::Active)
                .count()
                > 1
            {
                return Err(corrupt(format!(
                    "tenant `{tenant}` has more than one active version"
                )));
            }
            for v in versions {
                match (&v.wrapped, v.state) {
                    (None, KeyState::Destroyed) => {}
                    (Some(wrapped), KeyState::Active | KeyState::Retired) => {
                        let secret = keys.unwrap(tenant, v.version, wrapped).ok_or_else(|| {
                            corrupt(format!(
                                "the secret of `{tenant}` v{} does not unwrap",
                                v.version
                            ))
                        })?;
                        if fingerprint(&secret) != v.fingerprint {
                            return Err(corrupt(format!(
                                "the secret of `{tenant}` v{} does not match its fingerprint",
                                v.version
                            )));
                        }
                        secrets.insert((tenant.clone(), v.version), secret);
                    }
                    _ => {
                        return Err(corrupt(format!(
                            "`{tenant}` v{} has a state that does not match its material",
                            v.version
                        )))
                    }
                }
            }
        }
        let mut body = file.body;
        let audit = match &body.audit_keys {
            Some(wrapped) => keys
                .unwrap_audit(wrapped)
                .map_err(|detail| corrupt(detail.into()))?,
            None => {
                let audit = keys.initial_audit_keys();
                body.audit_keys = Some(keys.wrap_audit(&audit));
                audit
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            keys,
            body,
            secrets,
            audit,
        })
    }

    /// Opens the keyring, or starts an empty one (written at its first operation) when
    /// the file does not exist.
    pub fn open_or_new(path: &Path, kek: &Kek) -> Result<Self, Error> {
        if path.exists() {
            Self::open(path, kek)
        } else {
            let keys = KekKeys::derive(kek);
            let audit = keys.initial_audit_keys();
            let body = Body {
                audit_keys: Some(keys.wrap_audit(&audit)),
                ..Body::default()
            };
            Ok(Self {
                path: path.to_path_buf(),
                keys,
                body,
                secrets: BTreeMap::new(),
                audit,
            })
        }
    }

    /// The keyring's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tenant name.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.body.tenants.keys().map(String::as_str)
    }

    /// The versions of `tenant`, oldest first.
    pub fn versions(&self, tenant: &str) -> Result<&[KeyVersion], Error> {
        self.body
            .tenants
            .get(tenant)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                Error::KeyOperation(format!(
                    "tenant `{tenant}` is not in the keyring {}",
                    self.path.display()
                ))
            })
    }

    /// The master secret of `tenant` version `version`, if not destroyed.
    pub fn secret(&self, tenant: &str, version: u32) -> Option<&MasterSecret> {
        self.secrets.get(&(tenant.to_string(), version))
    }

    /// The description of `tenant` version `version` (state, fingerprint, dates), if the
    /// keyring has it; a destroyed version keeps its description, with `destroyed_at`.
    pub fn version(&self, tenant: &str, version: u32) -> Option<&KeyVersion> {
        self.body
            .tenants
            .get(tenant)?
            .iter()
            .find(|v| v.version == version)
    }

    /// The state of `tenant` version `version`, `None` if the keyring never had it: tells
    /// a destroyed version (whose [`Keyring::secret`] is `None` too) from an unknown one.
    pub fn state(&self, tenant: &str, version: u32) -> Option<KeyState> {
        self.version(tenant, version).map(|v| v.state)
    }

    /// The active version of every tenant that has one, with its secret.
    pub fn active(&self) -> impl Iterator<Item = (String, u32, &MasterSecret)> {
        self.body.tenants.iter().filter_map(|(tenant, versions)| {
            let active = versions.iter().find(|v| v.state == KeyState::Active)?;
            Some((
                tenant.clone(),
                active.version,
                self.secret(tenant, active.version)?,
            ))
        })
    }

    /// The audit head recorded at the last operation.
    pub fn audit_head(&self) -> Option<&AuditHead> {
        self.body.audit_head.as_ref()
    }

    /// The public half of the audit log's signing key, for auditors
    /// ([`audit::verify_signed`]).
    pub fn audit_public_key(&self) -> AuditPublicKey {
        self.audit.public()
    }

    /// Opens the audit log for appending; fails if it does not verify against this keyring's head.
    pub fn audit_log(&self, path: &Path) -> Result<AuditLog, Error> {
        AuditLog::open(path, &self.audit, self.body.audit_head.as_ref())
    }

    /// Verifies the audit log at `path` with this keyring's audit keys (MACs and
    /// signatures) and against its recorded head.
    pub fn verify_audit(&self, path: &Path) -> Result<Verified, Error> {
        audit::verify(path, &self.audit, self.body.audit_head.as_ref())
    }

    /// Creates `tenant` with version 1 active.
    pub fn init(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        tenant: &str,
    ) -> Result<KeyVersion, Error> {
        if !is_valid_tenant(tenant) {
            return Err(Error::KeyOperation(format!(
                "`{tenant}` is not a valid tenant name ([a-z0-9_-]{{1,64}})"
            )));
        }
        if self.body.tenants.contains_key(tenant) {
            return Err(Error::KeyOperation(format!(
                "tenant `{tenant}` already exists; use `keys rotate` for a new version"
            )));
        }
        self.body.tenants.insert(tenant.to_string(), Vec::new());
        let version = self.add_version(tenant, 1, MasterSecret::generate(), true);
        self.commit(log, actor, "init", tenant, &version, None)?;
        Ok(version)
    }

    /// Adds a new active version; the previous active one becomes retired.
    pub fn rotate(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        tenant: &str,
    ) -> Result<KeyVersion, Error> {
        let next = self
            .versions(tenant)?
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        let version = self.add_version(tenant, next, MasterSecret::generate(), true);
        self.commit(log, actor, "rotate", tenant, &version, None)?;
        Ok(version)
    }

    /// Restores version `number` of `tenant` from an escrowed secret. The version is active
    /// when `activate` is set or the tenant has no active version, retired otherwise.
    pub fn import(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        tenant: &str,
        number: u32,
        secret: MasterSecret,
        activate: bool,
    ) -> Result<KeyVersion, Error> {
        if !is_valid_tenant(tenant) {
            return Err(Error::KeyOperation(format!(
                "`{tenant}` is not a valid tenant name ([a-z0-9_-]{{1,64}})"
            )));
        }
        if number == 0 {
            return Err(Error::KeyOperation("key versions start at 1".into()));
        }
        let versions = self.body.tenants.entry(tenant.to_string()).or_default();
        if let Some(existing) = versions.iter().find(|v| v.version == number) {
            return Err(Error::KeyOperation(match existing.state {
                KeyState::Destroyed => format!(
                    "`{tenant}` v{number} was destroyed; destroyed versions are never restored"
                ),
                _ => format!(
                    "`{tenant}` v{number} already exists ({}, fingerprint {})",
                    existing.state.name(),
                    existing.fingerprint
                ),
            }));
        }
        let activate = activate || !versions.iter().any(|v| v.state == KeyState::Active);
        let version = self.add_version(tenant, number, secret, activate);
        self.commit(log, actor, "import", tenant, &version, None)?;
        Ok(version)
    }

    /// Retires version `number`. Retiring the active version leaves the tenant without an
    /// active key: its events are quarantined (`tenant_suspended`) until `keys rotate`.
    pub fn retire(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        tenant: &str,
        number: u32,
    ) -> Result<KeyVersion, Error> {
        let version = self.version_mut(tenant, number)?;
        if version.state != KeyState::Active {
            return Err(Error::KeyOperation(format!(
                "`{tenant}` v{number} is {}, not active",
                version.state.name()
            )));
        }
        version.state = KeyState::Retired;
        version.retired_at = Some(now_rfc3339());
        let version = version.clone();
        self.commit(log, actor, "retire", tenant, &version, None)?;
        Ok(version)
    }

    /// Erases the material of version `number` (crypto-shredding); refuses the active version.
    pub fn destroy(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        tenant: &str,
        number: u32,
    ) -> Result<KeyVersion, Error> {
        let version = self.version_mut(tenant, number)?;
        match version.state {
            KeyState::Active => {
                return Err(Error::KeyOperation(format!(
                    "`{tenant}` v{number} is the active version; run `keys rotate` (or `keys retire`) first"
                )))
            }
            KeyState::Destroyed => return Err(Error::KeyOperation(format!("`{tenant}` v{number} is already destroyed"))),
            KeyState::Retired => {}
        }
        version.state = KeyState::Destroyed;
        version.destroyed_at = Some(now_rfc3339());
        version.wrapped = None;
        let version = version.clone();
        self.secrets.remove(&(tenant.to_string(), number));
        self.commit(log, actor, "destroy", tenant, &version, None)?;
        Ok(version)
    }

    /// Re-wraps every version that is not destroyed, and the audit keys, under `new_kek`
    /// (KEK rotation), records a `rewrap` entry (`versions=N old_kek=FP new_kek=FP`, with
    /// [`Kek::fingerprint`]s) and writes the keyring with the new KEK check and MAC. The
    /// audit keys themselves do not change, so the whole log keeps verifying.
    ///
    /// The file is replaced in one rename: if the write fails, the keyring on disk is the
    /// old one, still opened by the old KEK, and `self` is unchanged (the log then holds a
    /// `rewrap` entry the keyring does not record; the next operation continues after it).
    /// Refuses a `new_kek` equal to the current one.
    pub fn rewrap(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        new_kek: &Kek,
    ) -> Result<Rewrapped, Error> {
        let new_keys = KekKeys::derive(new_kek);
        if new_keys.check_value() == self.keys.check_value() {
            return Err(Error::KeyOperation(format!(
                "the new KEK is the KEK the keyring {} is already wrapped under; create another with `pseudopipe keys new-kek --out PATH`",
                self.path.display()
            )));
        }
        let mut body = self.body.clone();
        let mut versions = 0;
        for (tenant, list) in &mut body.tenants {
            for version in list.iter_mut().filter(|v| v.wrapped.is_some()) {
                let secret = self
                    .secrets
                    .get(&(tenant.clone(), version.version))
                    .expect("open() unwrapped every version that has material");
                version.wrapped = Some(new_keys.wrap(tenant, version.version, secret));
                versions += 1;
            }
        }
        body.audit_keys = Some(new_keys.wrap_audit(&self.audit));
        let done = Rewrapped {
            versions,
            old_kek: self.keys.fingerprint.clone(),
            new_kek: new_keys.fingerprint.clone(),
        };
        let head = log.append(
            &self.audit,
            NewEntry {
                actor: actor.into(),
                action: "rewrap".into(),
                tenant: ALL_TENANTS.into(),
                details: Some(format!(
                    "versions={} old_kek={} new_kek={}",
                    done.versions, done.old_kek, done.new_kek
                )),
                ..NewEntry::default()
            },
        )?;
        body.audit_head = Some(head);
        write_keyring(&self.path, &new_keys, &body)?;
        self.keys = new_keys;
        self.body = body;
        Ok(done)
    }

    /// Records an operation that reads keys without changing them (a lookup), so that it
    /// stands on the audit trail.
    pub fn record(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        action: &str,
        tenant: &str,
        details: String,
    ) -> Result<(), Error> {
        self.record_version(log, actor, action, tenant, None, details)
    }

    /// Records an operation about one key version of `tenant` that does not change the
    /// keyring (a running ingest switching to it, say): the version and its fingerprint
    /// stand in the entry's own fields.
    pub fn record_version(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        action: &str,
        tenant: &str,
        version: Option<(u32, String)>,
        details: String,
    ) -> Result<(), Error> {
        let (key_version, fingerprint) = version.map_or((None, None), |(v, f)| (Some(v), Some(f)));
        let head = log.append(
            &self.audit,
            NewEntry {
                actor: actor.into(),
                action: action.into(),
                tenant: tenant.into(),
                key_version,
                fingerprint,
                details: Some(details),
            },
        )?;
        self.body.audit_head = Some(head);
        self.save()
    }

    fn version_mut(&mut self, tenant: &str, number: u32) -> Result<&mut KeyVersion, Error> {
        let path = self.path.display().to_string();
        self.body
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| {
                Error::KeyOperation(format!("tenant `{tenant}` is not in the keyring {path}"))
            })?
            .iter_mut()
            .find(|v| v.version == number)
            .ok_or_else(|| {
                Error::KeyOperation(format!("tenant `{tenant}` has no version {number}"))
            })
    }

    fn add_version(
        &mut self,
        tenant: &str,
        number: u32,
        secret: MasterSecret,
        activate: bool,
    ) -> KeyVersion {
        let now = now_rfc3339();
        let versions = self
            .body
            .tenants
            .get_mut(tenant)
            .expect("callers create the tenant first");
        if activate {
            for v in versions.iter_mut().filter(|v| v.state == KeyState::Active) {
                v.state = KeyState::Retired;
                v.retired_at = Some(now.clone());
            }
        }
        let version = KeyVersion {
            version: number,
            state: if activate {
                KeyState::Active
            } else {
                KeyState::Retired
            },
            fingerprint: fingerprint(&secret),
            created_at: now.clone(),
            activated_at: activate.then(|| now.clone()),
            retired_at: (!activate).then(|| now.clone()),
            destroyed_at: None,
            wrapped: Some(self.keys.wrap(tenant, number, &secret)),
        };
        versions.push(version.clone());
        versions.sort_by_key(|v| v.version);
        self.secrets.insert((tenant.to_string(), number), secret);
        version
    }

    fn commit(
        &mut self,
        log: &mut AuditLog,
        actor: &str,
        action: &str,
        tenant: &str,
        version: &KeyVersion,
        details: Option<String>,
    ) -> Result<(), Error> {
        let head = log.append(
            &self.audit,
            NewEntry {
                actor: actor.into(),
                action: action.into(),
                tenant: tenant.into(),
                key_version: Some(version.version),
                fingerprint: Some(version.fingerprint.clone()),
                details,
            },
        )?;
        self.body.audit_head = Some(head);
        self.save()
    }

    fn save(&self) -> Result<(), Error> {
        write_keyring(&self.path, &self.keys, &self.body)
    }
}

/// Writes a keyring file for `body` under `keys` atomically (temporary file, fsync,
/// rename), mode 0600: the file at `path` is either the old keyring or the new one.
fn write_keyring(path: &Path, keys: &KekKeys, body: &Body) -> Result<(), Error> {
    let canonical = serde_json::to_vec(body).expect("a keyring body always serializes");
    let file = KeyringFile {
        format: FORMAT.into(),
        kek_check: keys.check_value(),
        mac: KekKeys::hmac(&keys.mac, &canonical),
        body: body.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&file).expect("a keyring file always serializes");
    text.push(b'\n');
    audit::write_atomically(path, &text, Some(0o600)).map_err(|source| Error::Io {
        what: format!("cannot write the keyring {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_log, verify_signed, AuditEntry, SignedHead};

    struct Fixture {
        dir: tempfile::TempDir,
        keyring: PathBuf,
        log: PathBuf,
        kek: Kek,
    }

    /// A keyring with brand-a (v1 destroyed, v2 retired, v3 active) and brand-b (v1).
    fn populated() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture {
            keyring: dir.path().join("keyring.json"),
            log: dir.path().join("keyring.json.audit.jsonl"),
            kek: Kek::from_bytes([0x5a; 32]),
            dir,
        };
        let mut ring = Keyring::open_or_new(&f.keyring, &f.kek).unwrap();
        let mut log = ring.audit_log(&f.log).unwrap();
        ring.init(&mut log, "alice", "brand-a").unwrap();
        ring.rotate(&mut log, "alice", "brand-a").unwrap();
        ring.rotate(&mut log, "alice", "brand-a").unwrap();
        ring.destroy(&mut log, "alice", "brand-a", 1).unwrap();
        ring.init(&mut log, "alice", "brand-b").unwrap();
        f
    }

    /// Rewrites the fixture as the code before audit signatures left it: entries without
    /// `sig` (chained and MACed anew), no head file, a keyring body without audit keys.
    fn make_legacy(f: &Fixture) {
        let keys = KekKeys::derive(&f.kek);
        let text = std::fs::read_to_string(&f.log).unwrap();
        let mut prev = "0".repeat(64);
        let mut out = String::new();
        for line in text.lines() {
            let mut entry: AuditEntry = serde_json::from_str(line).unwrap();
            entry.sig = None;
            entry.record.prev = prev;
            entry.mac = KekKeys::hmac(keys.initial_audit_mac(), &entry.record.canonical());
            let line = serde_json::to_string(&entry).unwrap();
            prev = hex::encode(<Sha256 as sha2::Digest>::digest(line.as_bytes()));
            out.push_str(&line);
            out.push('\n');
        }
        std::fs::write(&f.log, out).unwrap();
        std::fs::remove_file(SignedHead::default_path(&f.log)).unwrap();
        let file: KeyringFile =
            serde_json::from_slice(&std::fs::read(&f.keyring).unwrap()).unwrap();
        let mut body = file.body;
        body.audit_keys = None;
        body.audit_head = Some(AuditHead {
            seq: text.lines().count() as u64,
            hash: prev,
        });
        write_keyring(&f.keyring, &keys, &body).unwrap();
    }

    #[test]
    fn a_keyring_from_before_audit_keys_gets_them_at_its_next_write() {
        let f = populated();
        make_legacy(&f);
        assert!(!std::fs::read_to_string(&f.keyring)
            .unwrap()
            .contains("audit_keys"));
        let mut ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        let public = ring.audit_public_key();
        assert_eq!(
            public,
            KekKeys::derive(&f.kek).initial_audit_keys().public(),
            "derived from the KEK, so every process opening the old file agrees on it"
        );
        let verified = ring.verify_audit(&f.log).unwrap();
        assert_eq!((verified.entries.len(), verified.unsigned), (5, 5));
        assert!(matches!(
            verify_signed(&f.log, &public, None).unwrap_err(),
            Error::InvalidAuditHead { .. }
        ));

        let mut log = ring.audit_log(&f.log).unwrap();
        ring.record(&mut log, "bob", "lookup", "brand-a", "domain=email".into())
            .unwrap();
        assert!(std::fs::read_to_string(&f.keyring)
            .unwrap()
            .contains("audit_keys"));
        let reopened = Keyring::open(&f.keyring, &f.kek).unwrap();
        assert_eq!(reopened.audit_public_key(), public);
        let verified = verify_signed(&f.log, &public, None).unwrap();
        assert_eq!((verified.entries.len(), verified.unsigned), (6, 5));
        assert_eq!(verify_log(&f.log, &f.kek, None).unwrap().entries.len(), 6);
    }

    #[test]
    fn rewrap_moves_every_live_secret_and_the_audit_keys_to_the_new_kek() {
        let f = populated();
        let new = Kek::from_bytes([0x77; 32]);
        let mut ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        let public = ring.audit_public_key();
        let mut log = ring.audit_log(&f.log).unwrap();
        let done = ring.rewrap(&mut log, "carol", &new).unwrap();
        assert_eq!(
            done,
            Rewrapped {
                versions: 3,
                old_kek: f.kek.fingerprint(),
                new_kek: new.fingerprint(),
            }
        );

        assert!(matches!(
            Keyring::open(&f.keyring, &f.kek).unwrap_err(),
            Error::WrongKek { .. }
        ));
        let reopened = Keyring::open(&f.keyring, &new).unwrap();
        for (tenant, version) in [("brand-a", 2), ("brand-a", 3), ("brand-b", 1)] {
            assert_eq!(
                reopened.secret(tenant, version).map(fingerprint),
                ring.secret(tenant, version).map(fingerprint),
                "{tenant} v{version}"
            );
            assert!(reopened.secret(tenant, version).is_some());
        }
        assert_eq!(reopened.state("brand-a", 1), Some(KeyState::Destroyed));
        assert_eq!(
            reopened.audit_public_key(),
            public,
            "the signing key is kept"
        );

        // Old and new entries verify with the keyring, with the public key, and with the
        // old KEK alone (the MAC key is the one derived from it); not with the new KEK alone.
        let verified = reopened.verify_audit(&f.log).unwrap();
        let last = verified.entries.last().unwrap();
        assert_eq!(
            (last.action.as_str(), last.tenant.as_str()),
            ("rewrap", "*")
        );
        assert_eq!(
            last.details.as_deref(),
            Some(
                format!(
                    "versions=3 old_kek={} new_kek={}",
                    f.kek.fingerprint(),
                    new.fingerprint()
                )
                .as_str()
            )
        );
        verify_signed(&f.log, &public, None).unwrap();
        assert_eq!(verify_log(&f.log, &f.kek, None).unwrap().entries.len(), 6);
        match verify_log(&f.log, &new, None).unwrap_err() {
            Error::AuditTampered { line, detail, .. } => {
                assert_eq!(line, 1);
                assert!(detail.contains("verify with the keyring"), "{detail}");
            }
            other => panic!("expected a MAC mismatch, got {other}"),
        }

        // Operations continue under the new KEK, on the same chain.
        let mut ring = Keyring::open(&f.keyring, &new).unwrap();
        let mut log = ring.audit_log(&f.log).unwrap();
        ring.rotate(&mut log, "carol", "brand-b").unwrap();
        assert_eq!(ring.verify_audit(&f.log).unwrap().entries.len(), 7);
    }

    #[test]
    fn rewrap_refuses_the_same_kek_and_changes_nothing() {
        let f = populated();
        let before = (
            std::fs::read(&f.keyring).unwrap(),
            std::fs::read(&f.log).unwrap(),
        );
        let mut ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        let mut log = ring.audit_log(&f.log).unwrap();
        let error = ring
            .rewrap(&mut log, "carol", &Kek::from_bytes([0x5a; 32]))
            .unwrap_err();
        assert!(
            error.to_string().contains("already wrapped under"),
            "{error}"
        );
        assert_eq!(
            before,
            (
                std::fs::read(&f.keyring).unwrap(),
                std::fs::read(&f.log).unwrap()
            )
        );
    }

    #[test]
    fn a_rewrap_whose_write_fails_leaves_the_old_keyring_intact() {
        let f = populated();
        let new = Kek::from_bytes([0x77; 32]);
        let before = std::fs::read(&f.keyring).unwrap();
        // A directory where the temporary file goes: the write fails before the rename.
        let tmp = f.dir.path().join("keyring.json.tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        let mut log = ring.audit_log(&f.log).unwrap();
        let error = ring.rewrap(&mut log, "carol", &new).unwrap_err();
        assert!(
            matches!(&error, Error::Io { what, .. } if what.contains("cannot write the keyring")),
            "{error}"
        );
        assert_eq!(std::fs::read(&f.keyring).unwrap(), before);
        let old = Keyring::open(&f.keyring, &f.kek).unwrap();
        assert!(old.secret("brand-a", 3).is_some());
        assert!(matches!(
            Keyring::open(&f.keyring, &new).unwrap_err(),
            Error::WrongKek { .. }
        ));
        // The log holds the `rewrap` entry the keyring does not record yet: it verifies,
        // and the next operation under the old KEK continues after it.
        assert_eq!(old.verify_audit(&f.log).unwrap().entries.len(), 6);
        std::fs::remove_dir(&tmp).unwrap();
        let mut ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        let mut log = ring.audit_log(&f.log).unwrap();
        ring.rewrap(&mut log, "carol", &new).unwrap();
        assert_eq!(
            Keyring::open(&f.keyring, &new)
                .unwrap()
                .verify_audit(&f.log)
                .unwrap()
                .entries
                .len(),
            7
        );
    }

    #[test]
    fn state_tells_a_destroyed_version_from_an_unknown_one() {
        let f = populated();
        let ring = Keyring::open(&f.keyring, &f.kek).unwrap();
        assert!(ring.secret("brand-a", 1).is_none());
        assert_eq!(ring.state("brand-a", 1), Some(KeyState::Destroyed));
        assert!(ring.version("brand-a", 1).unwrap().destroyed_at.is_some());
        assert_eq!(ring.state("brand-a", 2), Some(KeyState::Retired));
        assert_eq!(ring.state("brand-a", 3), Some(KeyState::Active));
        assert_eq!(ring.state("brand-a", 4), None);
        assert_eq!(ring.state("brand-z", 1), None);
    }

    #[test]
    fn edited_audit_keys_are_a_corrupt_keyring() {
        let f = populated();
        let keys = KekKeys::derive(&f.kek);
        let file: KeyringFile =
            serde_json::from_slice(&std::fs::read(&f.keyring).unwrap()).unwrap();
        let other = AuditKeys::from_bytes(&[1; 32], &[2; 32]);
        let same_kek = keys.wrap_audit(&other);
        let other_kek = KekKeys::derive(&Kek::from_bytes([3; 32])).wrap_audit(&other);
        type Edit<'a> = Box<dyn Fn(&mut WrappedAuditKeys) + 'a>;
        let cases: [(&str, Edit); 3] = [
            (
                "public key swapped",
                Box::new(|w| w.signing_public = same_kek.signing_public.clone()),
            ),
            (
                "signing key moved to the MAC key's slot",
                Box::new(|w| w.signing_wrapped = w.mac_wrapped.clone()),
            ),
            (
                "MAC key sealed under another KEK",
                Box::new(|w| w.mac_wrapped = other_kek.mac_wrapped.clone()),
            ),
        ];
        for (what, edit) in cases {
            let mut body = file.body.clone();
            edit(body.audit_keys.as_mut().unwrap());
            // Re-MACed with the right KEK: only the audit keys' own checks can tell.
            write_keyring(&f.keyring, &keys, &body).unwrap();
            let error = Keyring::open(&f.keyring, &f.kek).unwrap_err();
            assert!(
                matches!(error, Error::CorruptKeyring { .. }),
                "{what}: {error}"
            );
        }
    }
}
