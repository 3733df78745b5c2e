//! `pseudopipe reidentify`: decrypts values of an `encrypt` field, on-prem only.
//!
//! Every value is checked and decrypted in memory first; then the `reidentify` audit
//! entry (ticket, reason, field, versions, count; never a value) is written; only then
//! are the plaintexts printed, so a disclosure that is not on the trail never happens.
//! A destroyed version is refused with its date (crypto-shredding), a retired one works.
//! A value that does not decrypt is named by its line, never echoed.

use std::collections::btree_map::{BTreeMap, Entry};
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use pseudonymize::policy::Rule;
use pseudonymize::{is_encrypted, EncryptKey, KeyState, Policy};
use zeroize::Zeroizing;

use crate::cli::ReidentifyArgs;
use crate::keys::Session;
use crate::subject::{check_reference, read_stdin};

/// Runs `reidentify`.
pub fn run(args: ReidentifyArgs) -> Result<ExitCode> {
    check_reference("--reason", &args.reason)?;
    check_reference("--ticket", &args.ticket)?;
    let policy = Policy::from_file(&args.policy)?;
    let domain = encrypt_domain(&policy, &args.field)?;

    let from_stdin = args.value == "-";
    let stdin = if from_stdin {
        read_stdin()?
    } else {
        Zeroizing::new(String::new())
    };
    let values: Vec<&str> = if from_stdin {
        stdin.lines().collect()
    } else {
        vec![args.value.as_str()]
    };
    if values.is_empty() {
        bail!("no value to decrypt: give one as an argument, or one per line on standard input");
    }
    // Errors name where a value was, never the value.
    let place = |index: usize| {
        if from_stdin {
            format!("line {}", index + 1)
        } else {
            "the value".to_string()
        }
    };

    let mut s = Session::open(&args.keyring, false)?;
    let tenant = args.keyring.tenant.as_str();
    let versions = s.keyring.versions(tenant)?;
    let mut keys: BTreeMap<u32, EncryptKey> = BTreeMap::new();
    let mut plaintexts = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let value = value.trim();
        let number = version_of(value).with_context(|| {
            format!(
                "{} is not an encrypted value (`e<version>.<base64url>`, docs/token-spec.md)",
                place(index)
            )
        })?;
        let Some(version) = versions.iter().find(|v| v.version == number) else {
            bail!(
                "{}: tenant {tenant} has no key version {number} in {}",
                place(index),
                args.keyring.keyring.display()
            );
        };
        if version.state == KeyState::Destroyed {
            bail!(
                "{}: v{number} of tenant {tenant} was destroyed on {} (crypto-shredding): its ciphertexts can no longer be decrypted",
                place(index),
                version.destroyed_at.as_deref().unwrap_or("an unrecorded date")
            );
        }
        let key = match keys.entry(number) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let secret = s.keyring.secret(tenant, number).with_context(|| {
                    format!("v{number} of tenant {tenant} has no key material in the keyring")
                })?;
                slot.insert(EncryptKey::derive(secret, number, tenant, &domain))
            }
        };
        let plain = key.decrypt(value).with_context(|| {
            format!(
                "{} does not decrypt with v{number} of tenant {tenant} for field {} (domain {domain}): it was encrypted for another field, tenant or keyring, or it was altered",
                place(index),
                args.field
            )
        })?;
        let plain = Zeroizing::new(plain);
        let text = std::str::from_utf8(&plain)
            .with_context(|| format!("{} decrypts to bytes that are not UTF-8", place(index)))?;
        plaintexts.push(Zeroizing::new(text.to_string()));
    }
    drop(keys);

    let used: Vec<String> = {
        let mut used: Vec<u32> = values.iter().filter_map(|v| version_of(v.trim())).collect();
        used.sort_unstable();
        used.dedup();
        used.iter().map(u32::to_string).collect()
    };
    s.keyring.record(
        &mut s.log,
        &s.actor,
        "reidentify",
        tenant,
        format!(
            "ticket={} reason={} field={} domain={domain} versions={} values={}",
            args.ticket,
            args.reason,
            args.field,
            used.join(","),
            plaintexts.len()
        ),
    )?;
    drop(s);

    let mut out = std::io::stdout().lock();
    for plain in &plaintexts {
        writeln!(out, "{}", plain.as_str()).context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// The domain of `field`, which must be an `encrypt` field of the policy.
fn encrypt_domain(policy: &Policy, field: &str) -> Result<String> {
    match policy.rules().iter().find(|(path, _)| path == field) {
        Some((_, Rule::Encrypt { domain })) => Ok(policy.encrypt_domains()[*domain].clone()),
        Some((_, Rule::Token { .. })) => bail!(
            "field {field} is tokenized (a one-way keyed hash): tokens cannot be decrypted; use `pseudopipe subject` to find a known person's tokens"
        ),
        Some(_) => bail!(
            "field {field} is not encrypted by the policy (its rule is not `encrypt`): only `encrypt` fields can be re-identified"
        ),
        None => bail!("the policy has no field {field}"),
    }
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
}
