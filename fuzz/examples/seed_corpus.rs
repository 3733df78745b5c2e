//! Writes the seed corpus of the `record_path` fuzz target and its libFuzzer dictionary:
//! simulated valid events and every kind of malformed payload, so that the fuzzer starts
//! from inputs that reach deep into the policy instead of discovering JSON byte by byte.
//!
//! `cargo run --example seed_corpus -- CORPUS_DIR DICTIONARY_FILE` (run by `scripts/fuzz.sh`).
//!
//! `too_large` is left out: its megabyte of padding is above the fuzzer's `-max_len`, so
//! libFuzzer would cut it back into a valid event; ingest's size check is tested by
//! `pseudonymize/tests/hostile_input.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pseudonymize::Policy;
use simulator::{Generator, Malformation};

/// Valid events in the corpus.
const VALID: usize = 16;
/// Payloads per malformation kind.
const PER_MALFORMATION: usize = 3;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(corpus), Some(dictionary)) = (args.next(), args.next()) else {
        eprintln!("usage: seed_corpus CORPUS_DIR DICTIONARY_FILE");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&corpus)?;
    let mut generator = Generator::new(1).with_tenants(vec!["brand-a".into(), "default".into()]);
    for i in 0..VALID {
        std::fs::write(
            corpus.join(format!("valid-{i:02}.json")),
            generator.valid_record().payload,
        )?;
    }
    for malformation in Malformation::ALL {
        if malformation == Malformation::TooLarge {
            continue;
        }
        for i in 0..PER_MALFORMATION {
            let payload = generator.malformed_record(malformation).payload;
            std::fs::write(corpus.join(format!("{}-{i}", malformation.name())), payload)?;
        }
    }
    std::fs::write(dictionary, dictionary_text())
}

/// libFuzzer dictionary entries: the policy's field names as JSON keys, and the JSON
/// spellings a parser can disagree on.
fn dictionary_text() -> String {
    let policy = Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml"))
        .expect("the shipped default policy is valid");
    let names: BTreeSet<&str> = policy
        .rules()
        .iter()
        .flat_map(|(path, _)| path.split('.'))
        .map(|segment| segment.trim_end_matches("[]"))
        .collect();
    let keys = names.into_iter().map(|name| format!("\"{name}\":"));
    let spellings = [
        r"\u0000",
        r"\ud83d\ude00",
        r"\ud800",
        r"\u0065",
        r"\/",
        r#"\""#,
        "1e400",
        "-0",
        "1E+2",
        "0.0000001",
        "18446744073709551616",
        "-9223372036854775809",
        "null",
        "true",
        "[]",
        "{}",
        "v1.AAAAAAAAAAAAAAAAAAAAAA",
        "e1.",
        "192.0.2.1",
    ];
    // A dictionary entry is a quoted string in which `\` and `"` are escaped.
    keys.chain(spellings.map(String::from))
        .map(|entry| format!("\"{}\"\n", entry.replace('\\', r"\\").replace('"', r#"\""#)))
        .collect()
}
