//! The precision/recall table of the content detectors (`docs/detectors.md`), measured on
//! the simulator's corpora and events:
//!
//! ```text
//! cargo run --release -p pseudonymize --example detector_report -- [VALUES] [EVENTS]
//! ```
//!
//! - each detector alone over VALUES (default 1,000,000) non-personal values of
//!   `simulator::corpus::NonPersonal`: how many it flags, by class;
//! - every detector over VALUES / 10 personal values of `simulator::corpus::Personal`:
//!   how many the right detector finds, by class;
//! - EVENTS (default 1,000,000) valid simulator events through ingest's transform and the
//!   sink's leak guard under the default policy: how many a detector quarantines, by field
//!   and kind.
//!
//! It prints Markdown; the counts never include a value.

use std::collections::BTreeMap;
use std::time::Instant;

use pseudonymize::{Detector, Detectors, LeakGuard, MasterSecret, Policy, Pseudonymizer, Reason};
use simulator::corpus::{NonPersonal, Personal};
use simulator::Generator;

const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

/// The set of `detector` alone.
fn only(detector: Detector) -> Detectors {
    Detector::ALL
        .into_iter()
        .filter(|&other| other != detector)
        .fold(Detectors::ALL, Detectors::without)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|arg| {
        arg.replace('_', "")
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("usage: detector_report [VALUES] [EVENTS], got {arg:?}"))
    });
    let values = args.next().unwrap_or(1_000_000);
    let events = args.next().unwrap_or(1_000_000);

    println!("### False positives: each detector alone on {values} non-personal values\n");
    let started = Instant::now();
    let mut flagged: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    for sample in NonPersonal::new(2026).take(values) {
        *per_class.entry(sample.class).or_default() += 1;
        for detector in Detector::ALL {
            if only(detector).in_text(&sample.value).is_some() {
                *flagged.entry((detector.name(), sample.class)).or_default() += 1;
            }
        }
    }
    println!("| detector | flagged | rate | flagged classes (count of that class's values) |");
    println!("| --- | ---: | ---: | --- |");
    for detector in Detector::ALL {
        let name = detector.name();
        let by_class: Vec<String> = flagged
            .iter()
            .filter(|((d, _), _)| *d == name)
            .map(|((_, class), n)| format!("`{class}` {n} ({})", per_class[class]))
            .collect();
        let total: usize = flagged
            .iter()
            .filter(|((d, _), _)| *d == name)
            .map(|(_, n)| n)
            .sum();
        println!(
            "| {name} | {total} | {:.2e} | {} |",
            total as f64 / values as f64,
            if by_class.is_empty() {
                "—".to_string()
            } else {
                by_class.join(", ")
            }
        );
    }
    let classes: Vec<&str> = NonPersonal::CLASSES.to_vec();
    println!("\nClasses, in equal shares: {}.", classes.join(", "));
    eprintln!("non-personal values: {:.1?}", started.elapsed());

    let personal = (values / 10).max(Personal::CLASSES.len());
    println!("\n### Recall: all detectors on {personal} personal values\n");
    let started = Instant::now();
    let mut recall: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for sample in Personal::new(2026).take(personal) {
        let expected = sample.detector.and_then(Detector::from_name);
        let found = Detectors::ALL.in_text(&sample.value);
        let entry = recall.entry(sample.class).or_default();
        entry.0 += usize::from(found.is_some() && found == expected);
        entry.1 += 1;
    }
    println!("| class | found by its detector | of |");
    println!("| --- | ---: | ---: |");
    for (class, (found, total)) in &recall {
        println!("| `{class}` | {found} | {total} |");
    }
    eprintln!("personal values: {:.1?}", started.elapsed());

    println!("\n### Simulator events quarantined by a detector under the default policy\n");
    let started = Instant::now();
    let policy = Policy::from_toml(POLICY).expect("the default policy is valid");
    let secret = MasterSecret::from_bytes([9; 32]);
    let engine = Pseudonymizer::new(policy.clone(), [("brand-a".to_string(), 1, &secret)]);
    let guard = LeakGuard::new(policy);
    let mut quarantined: BTreeMap<String, usize> = BTreeMap::new();
    let mut other = 0;
    let mut out = Vec::with_capacity(2048);
    for record in Generator::new(2026).take(events) {
        out.clear();
        let outcome = engine.pseudonymize_into(&record.payload, &mut out);
        let rejection = match outcome {
            Ok(outcome) => {
                let key = outcome.record_key(&out).map(<[u8]>::to_vec);
                guard.check(key.as_deref(), &out).err()
            }
            Err(rejection) => Some(rejection),
        };
        match rejection {
            None => {}
            Some(rejection) if rejection.reason == Reason::PersonalValueInKeptField => {
                // "`field` holds what looks like a kind; ...": the field and the kind,
                // never the value.
                let what = rejection.message.split(';').next().unwrap_or_default();
                *quarantined.entry(what.to_string()).or_default() += 1;
            }
            Some(_) => other += 1,
        }
    }
    let total: usize = quarantined.values().sum();
    println!(
        "{total} of {events} valid events ({:.2e}); other rejections: {other}.\n",
        total as f64 / events as f64
    );
    for (what, n) in &quarantined {
        println!("- {what}: {n}");
    }
    eprintln!("events: {:.1?}", started.elapsed());
}
