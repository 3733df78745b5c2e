//! The figures of docs/compliance.md, "In the stream": simulated events of a population
//! through the record path ingest runs (`pseudonymize_observed`, then [`RiskWatch`]), one
//! partition, windows of `--window` offsets, the default policy with `enforce_k` on.
//!
//! ```sh
//! cargo run --release -p ingest --example risk_figures -- --events 1000000 --customers 100000
//! # one record path only (k = 5), for a profiler: instruction counts do not depend on the load
//! valgrind --tool=callgrind target/release/examples/risk_figures --events 20000 --only monitor
//! ```
//!
//! Prints, per k: the share of events in classes below k within their own window before
//! enforcement (as the policy writes them) and after (as they leave), the share of
//! quasi-identifier values generalized further, and the record path's on-CPU time per
//! event with the watch off, monitoring only, and enforcing.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use ingest::risk::{RiskWatch, Verdict};
use plumbing::prometheus::Registry;
use plumbing::Origin;
use pseudonymize::{MasterSecret, Policy, Pseudonymizer, QuasiValues};
use simulator::Generator;

const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

fn main() {
    let mut events = 1_000_000usize;
    let mut customers = 100_000usize;
    let mut window = 100_000u64;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--events" => events = value() as usize,
            "--customers" => customers = value() as usize,
            "--window" => window = value(),
            "--only" => only = args.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut generator = Generator::new(42).with_population(customers);
    let payloads: Vec<Vec<u8>> = (0..events)
        .map(|_| generator.valid_record().payload)
        .collect();
    println!(
        "{events} events of {customers} customers, windows of {window} offsets, one partition"
    );
    if let Some(path) = only {
        return profile(&payloads, window, &path);
    }
    for k in [5, 10] {
        figures(&payloads, k, window);
    }
}

/// The record path without the watch, monitoring and enforcing: the default policy with
/// `k` and `window`, without its `[risk]`, as it is, and with `enforce_k` on.
fn engines(k: u32, window: u64) -> [Pseudonymizer; 3] {
    let policy_text = POLICY
        .replace("k = 5\n", &format!("k = {k}\n"))
        .replace("window = 100000", &format!("window = {window}"));
    let secret = MasterSecret::from_bytes([9; 32]);
    let engine = |text: &str| {
        let policy = Policy::from_toml(text).expect("the default policy, edited, is valid");
        Pseudonymizer::new(policy, [("brand-a".to_string(), 1, &secret)])
    };
    [
        engine(
            policy_text
                .split_once("\n[risk]")
                .map(|(fields, _)| fields)
                .unwrap_or(&policy_text),
        ),
        engine(&policy_text),
        engine(&policy_text.replace("enforce_k = false", "enforce_k = true")),
    ]
}

/// Runs one record path (`plain`, `monitor` or `enforce`, k = 5) over the events once.
fn profile(payloads: &[Vec<u8>], window: u64, path: &str) {
    let [plain, monitoring, enforcing] = engines(5, window);
    let mut out = Vec::new();
    let started = on_cpu_ns();
    if path == "plain" {
        for payload in payloads {
            out.clear();
            let _ = plain.pseudonymize_into(payload, &mut out);
        }
    } else {
        let engine = match path {
            "monitor" => &monitoring,
            "enforce" => &enforcing,
            other => panic!("--only takes plain, monitor or enforce, not {other}"),
        };
        let mut watch = RiskWatch::for_policy(engine.policy(), &Registry::new())
            .expect("metrics register")
            .expect("[risk]");
        let mut quasi = QuasiValues::new();
        for (offset, payload) in payloads.iter().enumerate() {
            out.clear();
            if let Ok(outcome) = engine.pseudonymize_observed(payload, &mut out, None, &mut quasi) {
                let origin = Origin {
                    partition: 0,
                    offset: offset as i64,
                };
                watch.observe(origin, outcome.tenant, outcome.record_key, &quasi, &mut out);
            }
        }
    }
    let ns = (on_cpu_ns() - started) as f64 / payloads.len() as f64;
    println!("{path}: {ns:.0} ns on CPU per event");
}

fn figures(payloads: &[Vec<u8>], k: u32, window: u64) {
    let [plain, monitoring, enforcing] = engines(k, window);
    let risk = enforcing.policy().risk().expect("[risk]").clone();
    let qis = risk.quasi_identifiers().len();

    // The record path alone, without the watch.
    let mut out = Vec::new();
    let started = on_cpu_ns();
    for payload in payloads {
        out.clear();
        let _ = plain.pseudonymize_into(payload, &mut out);
    }
    let plain_ns = (on_cpu_ns() - started) as f64 / payloads.len() as f64;

    let mut run = |engine: &Pseudonymizer, record: bool| {
        let mut watch = RiskWatch::for_policy(engine.policy(), &Registry::new())
            .expect("metrics register")
            .expect("[risk]");
        let mut quasi = QuasiValues::new();
        let mut classes = Classes::default();
        let (mut generalized_values, mut counted) = (0u64, 0u64);
        let started = on_cpu_ns();
        for (offset, payload) in payloads.iter().enumerate() {
            out.clear();
            let Ok(outcome) = engine.pseudonymize_observed(payload, &mut out, None, &mut quasi)
            else {
                continue;
            };
            let subject = outcome.record_key.clone();
            let before: Vec<bool> = (0..qis).map(|qi| quasi.value(qi, &out).is_some()).collect();
            let subject_hash = hash(subject.clone().map(|span| out[span].to_vec()));
            let origin = Origin {
                partition: 0,
                offset: offset as i64,
            };
            let verdict = watch.observe(origin, outcome.tenant, subject, &quasi, &mut out);
            if record {
                let level = match verdict {
                    Verdict::Kept => 0,
                    Verdict::Generalized(level) => level,
                    Verdict::Suppressed => risk.max_level(),
                };
                counted += 1;
                generalized_values += (0..qis)
                    .filter(|&qi| before[qi] && risk.steps_at(qi, level) > 0)
                    .count() as u64;
                // The event as it leaves, by its values (null where suppressed).
                let value: serde_json::Value =
                    serde_json::from_slice(&out).expect("the output is JSON");
                let key: Vec<String> = risk
                    .quasi_identifiers()
                    .iter()
                    .map(|path| {
                        let pointer = format!("/{}", path.replace('.', "/"));
                        match value.pointer(&pointer) {
                            None | Some(serde_json::Value::Null) => String::new(),
                            Some(v) => v.to_string(),
                        }
                    })
                    .collect();
                classes.add(offset as u64 / window, key, subject_hash);
            }
        }
        let ns = (on_cpu_ns() - started) as f64 / payloads.len() as f64;
        (
            ns,
            classes.below(k as usize),
            generalized_values as f64 / (counted * qis as u64) as f64,
        )
    };
    let (monitor_ns, before, _) = run(&monitoring, true);
    let (enforce_ns, after, lost) = run(&enforcing, true);
    let (monitor_only_ns, _, _) = run(&monitoring, false);
    let (enforce_only_ns, _, _) = run(&enforcing, false);
    println!(
        "k = {k}: events in classes below k in their window: {:.2} % before enforcement, {:.2} % after ({:.2} % after, window 0 excluded: it leaves suppressed); quasi-identifier values generalized further: {:.2} %",
        100.0 * before.0,
        100.0 * after.0,
        100.0 * after.1,
        100.0 * lost
    );
    println!(
        "k = {k}: record path per event: {plain_ns:.0} ns without the watch, {monitor_only_ns:.0} ns monitoring (+{:.1} %), {enforce_only_ns:.0} ns enforcing (+{:.1} %) [with the figures' own bookkeeping: {monitor_ns:.0} / {enforce_ns:.0} ns]",
        100.0 * (monitor_only_ns / plain_ns - 1.0),
        100.0 * (enforce_only_ns / plain_ns - 1.0),
    );
}

/// The time this thread has spent on a CPU, in nanoseconds (Linux's schedstat): other load
/// on the machine does not inflate it, as it does wall-clock time.
fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .expect("Linux's /proc/thread-self/schedstat")
}

fn hash(token: Option<Vec<u8>>) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// A class as it leaves: events and distinct subjects.
type Class = (u64, HashSet<u64>);

/// Classes of the events as they leave, per window.
#[derive(Default)]
struct Classes {
    windows: HashMap<u64, HashMap<Vec<String>, Class>>,
}

impl Classes {
    fn add(&mut self, window: u64, key: Vec<String>, subject: u64) {
        let class = self
            .windows
            .entry(window)
            .or_default()
            .entry(key)
            .or_default();
        class.0 += 1;
        class.1.insert(subject);
    }

    /// The share of events in classes below k, over every window and without window 0.
    fn below(&self, k: usize) -> (f64, f64) {
        let mut all = (0u64, 0u64);
        let mut later = (0u64, 0u64);
        for (window, classes) in &self.windows {
            for (events, subjects) in classes.values() {
                let below = if subjects.len() < k { *events } else { 0 };
                all = (all.0 + events, all.1 + below);
                if *window > 0 {
                    later = (later.0 + events, later.1 + below);
                }
            }
        }
        let share = |(events, below): (u64, u64)| below as f64 / events.max(1) as f64;
        (share(all), share(later))
    }
}
