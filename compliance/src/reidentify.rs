//! Decrypting values of an `encrypt` field (`pseudopipe reidentify`), on-prem only.
//!
//! [`decrypt`] checks and decrypts every value in memory first and returns the
//! plaintexts with the versions they used; the binary then writes the `reidentify` audit
//! entry (ticket, reason, field, versions, count; never a value) and only then prints the
//! plaintexts, so a disclosure that is not on the trail never happens. A destroyed
//! version is refused with its date (crypto-shredding), a retired one works. A value that
//! does not decrypt is named by its place ([`Place`]), never echoed.

use std::collections::btree_map::{BTreeMap, Entry};
use std::fmt;

use pseudonymize::policy::Rule;
use pseudonymize::{is_encrypted, EncryptKey, KeyState, Keyring, Policy};
use zeroize::Zeroizing;

use crate::Error;

/// The domain of `field`, which must be an `encrypt` field of the policy.
pub fn encrypt_domain(policy: &Policy, field: &str) -> Result<String, Error> {
    match policy.rules().iter().find(|(path, _)| path == field) {
        Some((_, Rule::Encrypt { domain })) => Ok(policy.encrypt_domains()[*domain].clone()),
        Some((_, Rule::Token { .. })) => Err(Error::DecryptTokenized(field.to_owned())),
        Some(_) => Err(Error::DecryptUnencrypted(field.to_owned())),
        None => Err(Error::DecryptUnknown(field.to_owned())),
    }
}

/// Where a value was given, for messages that must not echo it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The one value given as an argument.
    Argument,
    /// A line of standard input, 1-based.
    Line(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argument => f.write_str("the value"),
            Self::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// What one field of one tenant decrypts with.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// The tenant whose keys encrypted the values.
    pub tenant: &'a str,
    /// The field's policy path, for messages.
    pub path: &'a str,
    /// Its encryption domain ([`encrypt_domain`]).
    pub domain: &'a str,
}

/// The plaintexts of the values given, in their order, and the key versions they used.
pub struct Decrypted {
    /// One per value, erased when dropped.
    pub plaintexts: Vec<Zeroizing<String>>,
    /// The versions used, ascending, each once.
    pub versions: Vec<u32>,
}

/// Decrypts every value (surrounding spaces ignored), each given at its [`Place`], or
/// says which one fails and why without quoting it.
pub fn decrypt(
    keyring: &Keyring,
    field: Field<'_>,
    values: &[(Place, &str)],
) -> Result<Decrypted, Error> {
    let tenant = field.tenant;
    let versions = keyring.versions(tenant)?;
    let mut keys: BTreeMap<u32, EncryptKey> = BTreeMap::new();
    let mut plaintexts = Vec::with_capacity(values.len());
    for &(place, value) in values {
        let value = value.trim();
        let version = version_of(value).ok_or(Error::NotEncrypted(place))?;
        let Some(state) = versions.iter().find(|v| v.version == version) else {
            return Err(Error::NoSuchVersion {
                place,
                tenant: tenant.to_owned(),
                version,
            });
        };
        if state.state == KeyState::Destroyed {
            return Err(Error::VersionDestroyed {
                place,
                tenant: tenant.to_owned(),
                version,
                on: state
                    .destroyed_at
                    .clone()
                    .unwrap_or_else(|| "an unrecorded date".to_owned()),
            });
        }
        let key = match keys.entry(version) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let secret =
                    keyring
                        .secret(tenant, version)
                        .ok_or_else(|| Error::NoKeyMaterial {
                            tenant: tenant.to_owned(),
                            version,
                        })?;
                slot.insert(EncryptKey::derive(secret, version, tenant, field.domain))
            }
        };
        let plain =
            key.decrypt(value)
                .map(Zeroizing::new)
                .ok_or_else(|| Error::DoesNotDecrypt {
                    place,
                    tenant: tenant.to_owned(),
                    version,
                    field: field.path.to_owned(),
                    domain: field.domain.to_owned(),
                })?;
        let text = std::str::from_utf8(&plain).map_err(|_| Error::NotUtf8(place))?;
        plaintexts.push(Zeroizing::new(text.to_owned()));
    }
    Ok(Decrypted {
        plaintexts,
        versions: keys.into_keys().collect(),
    })
}

/// The version number of an encrypted value `e<v>.<base64url>`, if it has that grammar.
fn version_of(value: &str) -> Option<u32> {
    if !is_encrypted(value) {
        return None;
    }
    let digits = value.strip_prefix('e')?.split_once('.')?.0;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_value_grammar() {
        let secret = pseudonymize::MasterSecret::from_bytes([7; 32]);
        let sealed = EncryptKey::derive(&secret, 12, "brand-a", "birth").encrypt(b"1987-04-12");
        assert_eq!(version_of(&sealed), Some(12));
        for bad in [
            "",
            "e12.",
            "v1.KxaYpQJkpd4SOvySjpg7xw",
            "1987-04-12",
            "e0.AAAA",
        ] {
            assert_eq!(version_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_encrypt_fields_are_accepted() {
        let policy = Policy::from_toml(
            "[fields]\nbirth = { action = \"encrypt\", domain = \"birth\" }\nmail = { action = \"token\", domain = \"email\" }\nid = \"keep\"",
        )
        .unwrap();
        assert_eq!(encrypt_domain(&policy, "birth").unwrap(), "birth");
        let refusals = [
            ("mail", "tokenized"),
            ("id", "only `encrypt` fields"),
            ("other", "no field other"),
        ];
        for (field, expected) in refusals {
            let error = encrypt_domain(&policy, field).unwrap_err().to_string();
            assert!(error.contains(expected), "{field}: {error}");
        }
    }

    #[test]
    fn places_are_named_never_quoted() {
        assert_eq!(Place::Argument.to_string(), "the value");
        assert_eq!(Place::Line(2).to_string(), "line 2");
    }
}
