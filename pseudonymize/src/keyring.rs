//! The keyring: per tenant, numbered versions of a 32-byte master secret, wrapped at rest.
//!
//! On disk a keyring is one JSON file. Each master secret is wrapped with AES-256-GCM
//! under a key derived from the KEK, with the tenant and version as associated data, so a
//! wrapped secret cannot be moved to another slot. The whole body is authenticated with an
//! HMAC under another KEK-derived key, so editing a state, a date or the recorded audit
//! head is detected; a separate KEK check value tells a wrong KEK from an edited file.
//!
//! Every operation that changes the keyring appends an audit entry first, then writes the
//! keyring (atomically, via a temporary file and a rename) with the new audit head.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::audit::{self, AuditHead, AuditLog, NewEntry, Verified};
use crate::error::Error;
use crate::policy::is_valid_tenant;
use crate::secret::{Kek, MasterSecret, SECRET_LEN};
use crate::token::fingerprint;

/// The `format` field of keyring files this version writes and reads.
const FORMAT: &str = "pseudopipe-keyring/1";
/// HKDF salt for every key derived from the KEK.
const KEK_SALT: &[u8] = b"pseudopipe kek v1";

/// Now, as RFC 3339 UTC with second precision.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

/// Keys derived from the KEK, one per purpose.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct KekKeys {
    wrap: [u8; 32],
    mac: [u8; 32],
    check: [u8; 32],
    audit: [u8; 32],
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
        }
    }

    pub(crate) fn audit_mac(&self) -> &[u8] {
        &self.audit
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

    fn wrap(&self, tenant: &str, version: u32, secret: &MasterSecret) -> String {
        let cipher = Aes256Gcm::new_from_slice(&self.wrap).expect("32-byte AES-256 key");
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let aad = Self::wrap_aad(tenant, version);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        STANDARD.encode([nonce.as_slice(), &ct].concat())
    }

    fn unwrap(&self, tenant: &str, version: u32, wrapped: &str) -> Option<MasterSecret> {
        let cipher = Aes256Gcm::new_from_slice(&self.wrap).expect("32-byte AES-256 key");
        let blob = STANDARD.decode(wrapped).ok()?;
        if blob.len() != 12 + SECRET_LEN + 16 {
            return None;
        }
        let (nonce, ct) = blob.split_at(12);
        let mut plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &Self::wrap_aad(tenant, version),
                },
            )
            .ok()?;
        let mut bytes = [0u8; SECRET_LEN];
        bytes.copy_from_slice(&plain);
        plain.zeroize();
        let secret = MasterSecret::from_bytes(bytes);
        bytes.zeroize();
        Some(secret)
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
    /// `TOKEN-SPEC.md` fingerprint of the master secret.
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
        let file = std::fs::OpenOptions::new()
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
        Ok(Self {
            path: path.to_path_buf(),
            keys,
            body: file.body,
            secrets,
        })
    }

    /// Opens the keyring, or starts an empty one (written at its first operation) when
    /// the file does not exist.
    pub fn open_or_new(path: &Path, kek: &Kek) -> Result<Self, Error> {
        if path.exists() {
            Self::open(path, kek)
        } else {
            Ok(Self {
                path: path.to_path_buf(),
                keys: KekKeys::derive(kek),
                body: Body::default(),
                secrets: BTreeMap::new(),
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

    /// Opens the audit log for appending; fails if it does not verify against this keyring's head.
    pub fn audit_log(&self, path: &Path) -> Result<AuditLog, Error> {
        AuditLog::open(path, &self.keys, self.body.audit_head.as_ref())
    }

    /// Verifies the audit log at `path` against this keyring's recorded head.
    pub fn verify_audit(&self, path: &Path) -> Result<Verified, Error> {
        audit::verify(path, &self.keys, self.body.audit_head.as_ref())
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
    /// active key: its events are rejected (`unknown_tenant`) until `keys rotate`.
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
        let head = log.append(
            &self.keys,
            NewEntry {
                actor: actor.into(),
                action: action.into(),
                tenant: tenant.into(),
                details: Some(details),
                ..NewEntry::default()
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
            &self.keys,
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

    /// Writes the keyring atomically (temporary file, fsync, rename), mode 0600.
    fn save(&self) -> Result<(), Error> {
        let canonical = serde_json::to_vec(&self.body).expect("a keyring body always serializes");
        let file = KeyringFile {
            format: FORMAT.into(),
            kek_check: self.keys.check_value(),
            mac: KekKeys::hmac(&self.keys.mac, &canonical),
            body: self.body.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("a keyring file always serializes");
        text.push(b'\n');
        let tmp = sibling(&self.path, ".tmp");
        let io = |source| Error::Io {
            what: format!("cannot write the keyring {}", self.path.display()),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp).map_err(io)?;
        out.write_all(&text).map_err(io)?;
        out.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

impl Keyring {
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
            &self.keys,
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
}
