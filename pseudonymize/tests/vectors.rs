//! Known-answer vectors of `docs/token-spec.md`, generated from a table.
//!
//! `vectors/tokens.json` is the shipped file; this test recomputes every entry with the
//! library and compares. `vectors/recompute.py` recomputes the same file with nothing but
//! Python's standard `hmac`/`hashlib` (an independent implementation), and the last test
//! runs it when `python3` is available. Regenerate the file after a deliberate change with
//! `PSEUDOPIPE_WRITE_VECTORS=1 cargo test -p pseudonymize --test vectors`.

use pseudonymize::{fingerprint, EncryptKey, MasterSecret, Normalizer, TokenKey};
use serde_json::{json, Value};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tokens.json");

fn m(start: u8) -> MasterSecret {
    MasterSecret::from_bytes(std::array::from_fn(|i| start + i as u8))
}

/// (key name, first byte, version, tenant)
const KEYS: [(&str, u8, u32, &str); 2] = [("M_1", 0x00, 1, "default"), ("M_2", 0x20, 2, "brand-a")];
const DOMAINS: [&str; 3] = ["customer", "email", "phone"];

/// (value, normalizer); integers are written as JSON numbers.
fn values() -> Vec<(Value, Normalizer)> {
    vec![
        (json!("alice@example.com"), Normalizer::Email),
        (json!("  Alice@Example.COM "), Normalizer::Email),
        (json!("+33 6 12 34 56 78"), Normalizer::Digits),
        (json!("Émilie  DUPONT"), Normalizer::Name),
        (json!("6280 0012 3456 7890"), Normalizer::Digits),
        (json!(1234), Normalizer::Exact),
        (json!(""), Normalizer::Exact),
    ]
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("vectors hold strings and integers, not {other}"),
    }
}

fn generate() -> Value {
    let mut fingerprints = Vec::new();
    let mut tokens = Vec::new();
    let mut encrypted = Vec::new();
    for (name, start, version, tenant) in KEYS {
        let secret = m(start);
        fingerprints.push(json!({ "key": name, "master_secret_hex": hex::encode(secret.expose()), "fingerprint": fingerprint(&secret) }));
        for domain in DOMAINS {
            let key = TokenKey::derive(&secret, version, tenant, domain);
            for (value, normalizer) in values() {
                let token = key.token(normalizer.apply(&text_of(&value)).as_bytes());
                tokens.push(json!({
                    "key": name, "version": version, "tenant": tenant, "domain": domain,
                    "normalizer": normalizer.name(), "value": value, "token": token,
                }));
            }
        }
        let nonce: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let sealed = EncryptKey::derive(&secret, version, tenant, "email")
            .encrypt_with_nonce(b"alice@example.com", nonce);
        encrypted.push(json!({
            "key": name, "version": version, "tenant": tenant, "domain": "email",
            "plaintext": "alice@example.com", "nonce_hex": hex::encode(nonce), "encrypted": sealed,
        }));
    }
    json!({
        "spec": "TOKEN-SPEC.md version 1",
        "keys": fingerprints,
        "tokens": tokens,
        "encrypted": encrypted,
    })
}

#[test]
fn shipped_vectors_match_the_library() {
    let generated = generate();
    if std::env::var_os("PSEUDOPIPE_WRITE_VECTORS").is_some() {
        std::fs::write(
            FILE,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string(FILE).expect("vectors file is shipped"))
            .unwrap();
    assert_eq!(
        shipped, generated,
        "the library no longer produces the shipped vectors"
    );
    assert_eq!(shipped["tokens"].as_array().unwrap().len(), 2 * 3 * 7);
}

#[test]
fn spec_table_known_answers() {
    let token = |start, version, tenant, domain, normalizer: Normalizer, value: &str| {
        TokenKey::derive(&m(start), version, tenant, domain)
            .token(normalizer.apply(value).as_bytes())
    };
    assert_eq!(fingerprint(&m(0x00)), "ab464f4c37bdcb23");
    assert_eq!(fingerprint(&m(0x20)), "8503faa5f9adca1a");
    assert_eq!(
        token(
            0x00,
            1,
            "default",
            "email",
            Normalizer::Email,
            "alice@example.com"
        ),
        "v1.KxaYpQJkpd4SOvySjpg7xw"
    );
    assert_eq!(
        token(
            0x00,
            1,
            "default",
            "email",
            Normalizer::Email,
            "  Alice@Example.COM "
        ),
        "v1.KxaYpQJkpd4SOvySjpg7xw"
    );
    assert_eq!(
        token(
            0x20,
            2,
            "brand-a",
            "phone",
            Normalizer::Digits,
            "+33 6 12 34 56 78"
        ),
        "v2.D5uRV8fm68YVDDzDJfAGkQ"
    );
    assert_eq!(
        token(
            0x00,
            1,
            "default",
            "customer",
            Normalizer::Name,
            "Émilie  DUPONT"
        ),
        "v1.m9DJHTSjASrFngLbFsAc4w"
    );
    assert_eq!(
        token(0x00, 1, "default", "customer", Normalizer::Exact, "1234"),
        "v1.1c2AlXY5OFBGndxZpKQRMg"
    );
}

#[test]
fn shipped_encryption_vectors_decrypt() {
    let shipped: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    for entry in shipped["encrypted"].as_array().unwrap() {
        let (_, start, version, tenant) = KEYS.into_iter().find(|k| k.0 == entry["key"]).unwrap();
        let key = EncryptKey::derive(
            &m(start),
            version,
            tenant,
            entry["domain"].as_str().unwrap(),
        );
        let plain = key
            .decrypt(entry["encrypted"].as_str().unwrap())
            .expect("vector decrypts");
        assert_eq!(plain, entry["plaintext"].as_str().unwrap().as_bytes());
    }
}

#[test]
fn vectors_recompute_with_python_standard_library() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/recompute.py");
    let output = match std::process::Command::new("python3")
        .arg(script)
        .arg(FILE)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!(
                "python3 is not available ({error}); the independent recomputation was skipped"
            );
            return;
        }
    };
    assert!(
        output.status.success(),
        "recompute.py disagrees:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("44 vectors OK"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
