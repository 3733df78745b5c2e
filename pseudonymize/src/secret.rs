//! Secret byte strings: master secrets and the key-encryption key.
//!
//! Both are 32 bytes, print as `**REDACTED**`, implement neither `Serialize` nor
//! `Clone` (a copy of a key is one more place to erase; see [`MasterSecret`]'s one
//! exception), and are zeroized when dropped.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Error;

/// Length in bytes of every secret handled by this crate.
pub const SECRET_LEN: usize = 32;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; SECRET_LEN]);

        impl $name {
            /// Wraps 32 bytes. The caller should zeroize its own copy.
            pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
                Self(bytes)
            }

            /// Draws 32 bytes from the operating system's CSPRNG.
            pub fn generate() -> Self {
                let mut bytes = [0u8; SECRET_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                Self(bytes)
            }

            /// The raw bytes; only for key derivation and wrapping.
            pub fn expose(&self) -> &[u8; SECRET_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(**REDACTED**)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("**REDACTED**")
            }
        }
    };
}

secret_type!(
    /// The 32-byte master secret `M_v` of one key version of one tenant.
    MasterSecret
);

secret_type!(
    /// The key-encryption key: wraps master secrets and the audit log's keys at rest.
    Kek
);

impl Kek {
    /// Reads a KEK file: exactly 32 raw bytes, or the base64 of 32 bytes
    /// (surrounding whitespace allowed).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let mut raw = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("cannot read the KEK file {}", path.display()),
            source,
        })?;
        let result = decode_secret(&raw, false)
            .map(Self)
            .ok_or_else(|| Error::InvalidKek {
                path: path.display().to_string(),
                len: raw.len(),
            });
        raw.zeroize();
        result
    }

    /// A one-way fingerprint that tells KEKs apart in the audit log and in messages
    /// without revealing them: 8 lowercase hex digits,
    /// `lowercase_hex(SHA-256("pseudopipe kek fingerprint v1" || 0x00 || KEK)[0..4])`.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"pseudopipe kek fingerprint v1\x00")
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..4])
    }
}

impl MasterSecret {
    /// Reads an escrowed master secret: 32 raw bytes, 64 hex digits, or base64 of 32 bytes.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let mut raw = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("cannot read the secret file {}", path.display()),
            source,
        })?;
        let result = decode_secret(&raw, true)
            .map(Self)
            .ok_or_else(|| Error::InvalidSecretFile {
                path: path.display().to_string(),
                len: raw.len(),
            });
        raw.zeroize();
        result
    }
}

/// Accepts 32 raw bytes, or (after trimming whitespace) base64 — standard or URL-safe,
/// padded or not — of 32 bytes, or, when `allow_hex`, 64 hex digits.
fn decode_secret(raw: &[u8], allow_hex: bool) -> Option<[u8; SECRET_LEN]> {
    if raw.len() == SECRET_LEN {
        let mut out = [0u8; SECRET_LEN];
        out.copy_from_slice(raw);
        return Some(out);
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let mut decoded =
        if allow_hex && text.len() == 2 * SECRET_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            hex::decode(text).ok()?
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|engine| engine.decode(text).ok())?
        };
    let result = (decoded.len() == SECRET_LEN).then(|| {
        let mut out = [0u8; SECRET_LEN];
        out.copy_from_slice(&decoded);
        out
    });
    decoded.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = MasterSecret::from_bytes([0x41; 32]);
        let kek = Kek::from_bytes([0x42; 32]);
        for printed in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{kek:?}"),
            format!("{kek}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(printed.contains("**REDACTED**"), "{printed}");
            assert!(
                !printed.contains("41") && !printed.contains("AAAA") && !printed.contains("65")
            );
        }
    }

    #[test]
    fn key_material_is_erased_on_drop() {
        fn erased_on_drop<T: ZeroizeOnDrop>() {}
        erased_on_drop::<MasterSecret>();
        erased_on_drop::<Kek>();
        erased_on_drop::<crate::keyring::KekKeys>();
        erased_on_drop::<crate::audit::AuditKeys>();
        // What drop runs: every byte back to zero.
        let mut secret = MasterSecret::from_bytes([0x41; 32]);
        secret.zeroize();
        assert_eq!(secret.expose(), &[0; SECRET_LEN]);
    }

    #[test]
    fn a_kek_fingerprint_is_short_one_way_and_tells_keks_apart() {
        let a = Kek::from_bytes([0x42; 32]).fingerprint();
        assert_eq!(a.len(), 8);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, Kek::from_bytes([0x42; 32]).fingerprint());
        assert_ne!(a, Kek::from_bytes([0x43; 32]).fingerprint());
        assert!(!hex::encode([0x42; 32]).contains(&a));
    }

    #[test]
    fn decodes_raw_base64_and_hex() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(decode_secret(&bytes, false), Some(bytes));
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(
            decode_secret(format!("{b64}\n").as_bytes(), false),
            Some(bytes)
        );
        let hexed = hex::encode(bytes);
        assert_eq!(decode_secret(hexed.as_bytes(), true), Some(bytes));
        assert_eq!(decode_secret(hexed.as_bytes(), false), None);
        assert_eq!(decode_secret(b"too short", true), None);
        assert_eq!(decode_secret(&[0xff; 33], true), None);
    }
}
