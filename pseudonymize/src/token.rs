//! The token, encryption and fingerprint formats of `docs/token-spec.md`, version 1.
//!
//! Derived keys are computed once per tenant, domain and version: [`TokenKey`] keeps the
//! HMAC state already keyed, so tokenizing a value costs one clone of that state and
//! two SHA-256 compressions for short values.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::secret::MasterSecret;

/// HKDF salt for token keys.
const TOKEN_SALT: &[u8] = b"pseudopipe token v1";
/// HKDF salt for encryption keys.
const ENCRYPT_SALT: &[u8] = b"pseudopipe encrypt v1";
/// Prefix hashed with the master secret into its fingerprint.
const FINGERPRINT_PREFIX: &[u8] = b"pseudopipe fingerprint v1\x00";
/// Length of the base64url part of a token: 16 bytes, no padding.
pub const TOKEN_TAG_CHARS: usize = 22;
/// Bytes of nonce in an encrypted value.
const NONCE_LEN: usize = 12;
/// Bytes of GCM tag in an encrypted value.
const GCM_TAG_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// `HKDF-SHA256(salt, ikm = M_v, info = tenant || 0x00 || domain, L = 32)`.
fn derive(salt: &[u8], secret: &MasterSecret, tenant: &str, domain: &str) -> [u8; 32] {
    let hkdf = Hkdf::<Sha256>::new(Some(salt), secret.expose());
    let mut out = [0u8; 32];
    hkdf.expand_multi_info(&[tenant.as_bytes(), b"\x00", domain.as_bytes()], &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// The fingerprint of a master secret: 16 lowercase hex digits.
pub fn fingerprint(secret: &MasterSecret) -> String {
    let digest = Sha256::new()
        .chain_update(FINGERPRINT_PREFIX)
        .chain_update(secret.expose())
        .finalize();
    hex::encode(&digest[..8])
}

/// A token key for one tenant, domain and version, with the HMAC state precomputed.
pub struct TokenKey {
    version: u32,
    /// `v<version>.`, written before every tag.
    prefix: Box<[u8]>,
    keyed: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Derives `K_tok` for `tenant`/`domain` from version `version`'s master secret.
    pub fn derive(secret: &MasterSecret, version: u32, tenant: &str, domain: &str) -> Self {
        let mut key = derive(TOKEN_SALT, secret, tenant, domain);
        let keyed = <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC accepts any key length");
        key.zeroize();
        Self {
            version,
            prefix: format!("v{version}.").into_bytes().into(),
            keyed,
        }
    }

    /// The key version written into every token.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Appends the token of the already-normalized bytes `normalized` to a byte buffer,
    /// without allocating.
    pub fn write_token(&self, normalized: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.keyed.clone();
        mac.update(normalized);
        let tag = mac.finalize().into_bytes();
        let mut encoded = [0u8; TOKEN_TAG_CHARS];
        URL_SAFE_NO_PAD
            .encode_slice(&tag[..16], &mut encoded)
            .expect("16 bytes take 22 base64 characters");
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&encoded);
    }

    /// The token of the already-normalized bytes `normalized`.
    pub fn token(&self, normalized: &[u8]) -> String {
        let mut out = Vec::with_capacity(self.prefix.len() + TOKEN_TAG_CHARS);
        self.write_token(normalized, &mut out);
        String::from_utf8(out).expect("a token is ASCII")
    }
}

/// An AES-256-GCM key for one tenant, domain and version.
pub struct EncryptKey {
    version: u32,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl EncryptKey {
    /// Derives `K_enc` for `tenant`/`domain` from version `version`'s master secret.
    pub fn derive(secret: &MasterSecret, version: u32, tenant: &str, domain: &str) -> Self {
        let mut key = derive(ENCRYPT_SALT, secret, tenant, domain);
        let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte AES-256 key");
        key.zeroize();
        let mut aad = Vec::with_capacity(16 + tenant.len() + domain.len());
        aad.extend_from_slice(b"pseudopipe\x00");
        aad.extend_from_slice(tenant.as_bytes());
        aad.push(0);
        aad.extend_from_slice(domain.as_bytes());
        aad.push(0);
        aad.extend_from_slice(version.to_string().as_bytes());
        Self {
            version,
            cipher,
            aad,
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce: `e<v>.<base64url(nonce || ct)>`.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        self.encrypt_with_nonce(plaintext, nonce)
    }

    /// Encrypts with a caller-chosen nonce; public for known-answer tests only.
    #[doc(hidden)]
    pub fn encrypt_with_nonce(&self, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        let mut out = format!("e{}.", self.version);
        URL_SAFE_NO_PAD.encode_string(&blob, &mut out);
        out
    }

    /// Decrypts a value produced by [`EncryptKey::encrypt`] with this key; `None` when the
    /// version, the encoding or the authentication tag does not match.
    pub fn decrypt(&self, value: &str) -> Option<Vec<u8>> {
        let (version, body) = split_versioned(value, 'e')?;
        if version != self.version {
            return None;
        }
        let blob = URL_SAFE_NO_PAD.decode(body).ok()?;
        if blob.len() < NONCE_LEN + GCM_TAG_LEN {
            return None;
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &self.aad,
                },
            )
            .ok()
    }
}

/// Splits `v12.xxxx` into `(12, "xxxx")` for the given prefix letter.
fn split_versioned(value: &str, prefix: char) -> Option<(u32, &str)> {
    let rest = value.strip_prefix(prefix)?;
    let (digits, body) = rest.split_once('.')?;
    if digits.is_empty()
        || digits.len() > 10
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((digits.parse().ok()?, body))
}

fn is_base64url(body: &str) -> bool {
    body.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `value` has the grammar of a keyed token: `v<version>.<22 base64url chars>`.
pub fn is_token(value: &str) -> bool {
    matches!(split_versioned(value, 'v'), Some((v, body)) if v >= 1 && body.len() == TOKEN_TAG_CHARS && is_base64url(body))
}

/// Whether `value` has the grammar of an encrypted value: `e<version>.<base64url>`
/// holding at least a nonce and a GCM tag.
pub fn is_encrypted(value: &str) -> bool {
    // 12 + 16 bytes encode to at least 38 characters.
    matches!(split_versioned(value, 'e'), Some((v, body)) if v >= 1 && body.len() >= 38 && is_base64url(body) && body.len() % 4 != 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m1() -> MasterSecret {
        MasterSecret::from_bytes(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn spec_known_answers() {
        assert_eq!(fingerprint(&m1()), "ab464f4c37bdcb23");
        let key = TokenKey::derive(&m1(), 1, "default", "email");
        assert_eq!(key.token(b"alice@example.com"), "v1.KxaYpQJkpd4SOvySjpg7xw");
    }

    #[test]
    fn grammar_accepts_tokens_and_rejects_look_alikes() {
        let token = TokenKey::derive(&m1(), 12, "t", "d").token(b"x");
        assert!(is_token(&token));
        for bad in [
            "",
            "v1.",
            "v0.KxaYpQJkpd4SOvySjpg7xw",
            "v01.KxaYpQJkpd4SOvySjpg7xw",
            "v1.KxaYpQJkpd4SOvySjpg7x",
            "v1.KxaYpQJkpd4SOvySjpg7x=",
            "x1.KxaYpQJkpd4SOvySjpg7xw",
            "alice@example.com",
        ] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn encryption_round_trips_and_is_bound_to_context() {
        let key = EncryptKey::derive(&m1(), 1, "default", "email");
        let sealed = key.encrypt("alice@example.com".as_bytes());
        assert!(is_encrypted(&sealed), "{sealed}");
        assert_ne!(
            sealed,
            key.encrypt("alice@example.com".as_bytes()),
            "fresh nonce each time"
        );
        assert_eq!(
            key.decrypt(&sealed).as_deref(),
            Some("alice@example.com".as_bytes())
        );
        let other_domain = EncryptKey::derive(&m1(), 1, "default", "phone");
        assert_eq!(other_domain.decrypt(&sealed), None);
        let other_version = EncryptKey::derive(&m1(), 2, "default", "email");
        assert_eq!(other_version.decrypt(&sealed), None);
    }
}
