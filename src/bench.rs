//! `pseudopipe bench transform`: the record path in process, with simulated events and a
//! throw-away key, no Kafka. Prints events/s (in all and per thread), MB/s, the cost of an
//! event by phase and, when built with `--features count-allocations`, allocations per
//! event, so that the figures of `docs/performance.md` can be reproduced with one command.
//!
//! The phases are measured apart on one thread, over the same events:
//! - decode+walk: reading the bytes alongside the policy, the required fields and the
//!   tenant ([`Pseudonymizer::decode_and_walk`]);
//! - tokens: normalizing and HMAC-ing the values of the token fields (found beforehand);
//! - encode: the rest of the whole path (writing the output, generalizations), by
//!   difference.
//!
//! With `--format avro`, the same events are also written as Avro datums of the raw schema
//! and timed beside JSON, per event on one thread: ingest's whole path (JSON's record path,
//! Avro's direct walk, ADR 0024) and the sink's guard on its output (Avro's in one pass, and
//! through the datum's JSON rendering as before), and allocations per event of each ingest
//! path.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use pseudonymize::avro::{to_json, AvroWriter};
use pseudonymize::avro_schema::{derive, Schema};
use pseudonymize::avro_walk::AvroPlan;
use pseudonymize::policy::Rule;
use pseudonymize::{LeakGuard, MasterSecret, Normalizer, Policy, Pseudonymizer, TokenKey};
use serde_json::Value;

use crate::batch::worker_threads;
use crate::cli::{BenchArgs, BenchFormat};

/// The raw events' Avro schema, which `--format avro` writes the simulated events with.
const RAW_SCHEMA: &str = include_str!("../schemas/coupon_redemption.avsc");

const TENANTS: [&str; 2] = ["brand-a", "brand-b"];

/// Runs the benchmark.
pub fn transform(args: BenchArgs) -> Result<ExitCode> {
    let policy = match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => {
            Policy::from_toml(crate::DEFAULT_POLICY).expect("the embedded default policy is valid")
        }
    };
    let secret = MasterSecret::generate();
    let engine = Pseudonymizer::new(
        policy.clone(),
        TENANTS.iter().map(|t| (t.to_string(), 1, &secret)),
    );
    let mut generator = simulator::Generator::new(args.seed)
        .with_tenants(TENANTS.iter().map(|t| t.to_string()).collect());
    let events: Vec<Vec<u8>> = (0..args.events)
        .map(|_| generator.next_record().payload)
        .collect();
    let bytes: usize = events.iter().map(Vec::len).sum();
    let threads = worker_threads(args.threads);
    println!(
        "record path: {} simulated events, {:.0} bytes on average, {} policy, {threads} thread(s)",
        events.len(),
        bytes as f64 / events.len().max(1) as f64,
        if args.policy.is_some() {
            "the given"
        } else {
            "the default"
        },
    );

    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    for round in 1..=args.rounds {
        let (seconds, cpu, ok) = run_round(&engine, &events, threads);
        best = best.min(seconds);
        let cpu_text = match cpu {
            Some(cpu) => {
                best_cpu = best_cpu.min(cpu);
                format!("{:>10.0} per CPU-second", events.len() as f64 / cpu)
            }
            None => String::new(),
        };
        println!(
            "round {round}: {:>10.0} events/s  {:>10.0} per thread  {cpu_text}  {:>7.1} MB/s  ({ok} pseudonymized, {:.3} s)",
            events.len() as f64 / seconds,
            events.len() as f64 / seconds / threads as f64,
            bytes as f64 / seconds / 1e6,
            seconds
        );
    }
    println!(
        "best: {:.0} events/s, {:.0} events/s per thread, {:.1} MB/s",
        events.len() as f64 / best,
        events.len() as f64 / best / threads as f64,
        bytes as f64 / best / 1e6
    );
    if best_cpu.is_finite() {
        // CPU time, unlike wall time, does not count the time other processes held the core.
        println!(
            "per core, by CPU time: {:.0} events/s, {:.1} MB/s",
            events.len() as f64 / best_cpu,
            bytes as f64 / best_cpu / 1e6
        );
    }

    let phases = Phases::measure(&engine, &policy, &secret, &events);
    println!(
        "phases, one thread, ns per event: decode+walk {:.0}, tokens {:.0} ({:.1} tokens per event), encode {:.0}; whole {:.0}",
        phases.walk, phases.tokens, phases.tokens_per_event, phases.encode(), phases.whole
    );
    match allocations_per_event(&engine, &events) {
        Some(allocations) => println!("allocations per event, steady state: {allocations:.3}"),
        None => println!(
            "allocations per event: not counted (build with `--features count-allocations`)"
        ),
    }
    if args.format == BenchFormat::Avro {
        avro_beside_json(&engine, &policy, &events)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Best of three passes over `events`, in nanoseconds per event, on this thread (CPU time
/// when Linux tells it, else wall time).
fn ns_per_event(count: usize, f: &mut dyn FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let cpu = thread_cpu_seconds();
            f();
            let seconds = match cpu.zip(thread_cpu_seconds()) {
                Some((before, after)) => after - before,
                None => started.elapsed().as_secs_f64(),
            };
            seconds * 1e9 / count.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The same events as JSON and as Avro datums, ingest's whole path and the sink's guard
/// of each, in one run.
fn avro_beside_json(engine: &Pseudonymizer, policy: &Policy, events: &[Vec<u8>]) -> Result<()> {
    let raw = Schema::parse_str(RAW_SCHEMA).context("the embedded raw schema")?;
    let derived = derive(policy, &raw).map_err(|problems| {
        anyhow::anyhow!("the policy does not fit schemas/coupon_redemption.avsc: {problems:?}")
    })?;
    let plan = AvroPlan::compile(policy, &raw, 1)?;
    let as_avro = AvroWriter::new(raw.clone());
    let guard = LeakGuard::new(policy.clone());
    // The events ingest forwards, in both formats: the JSON event, its datum, and the
    // outputs and keys the guard judges.
    let mut cases = Vec::new();
    for event in events {
        let mut datum = Vec::new();
        let mut json_out = Vec::new();
        let mut avro_out = Vec::new();
        if as_avro.write(event, &mut datum).is_err() {
            continue;
        }
        let Ok(outcome) = engine.pseudonymize_into(event, &mut json_out) else {
            continue;
        };
        let key = outcome.record_key(&json_out).map(<[u8]>::to_vec);
        if plan
            .pseudonymize_into(engine, &datum, &mut avro_out, None, None)
            .is_err()
        {
            continue;
        }
        cases.push((event.as_slice(), datum, json_out, avro_out, key));
    }
    let count = cases.len();
    let mut out = Vec::with_capacity(4096);
    let mut json_ingest = || {
        for (event, ..) in &cases {
            out.clear();
            let _ = engine.pseudonymize_into(event, &mut out);
        }
    };
    let json_whole = ns_per_event(count, &mut json_ingest);
    let json_allocations = count_allocations(&mut json_ingest);
    let mut avro_ingest = || {
        for (_, datum, ..) in &cases {
            out.clear();
            let _ = plan.pseudonymize_into(engine, datum, &mut out, None, None);
        }
    };
    let avro_whole = ns_per_event(count, &mut avro_ingest);
    let avro_allocations = count_allocations(&mut avro_ingest);
    let json_guard = ns_per_event(count, &mut || {
        for (_, _, json_out, _, key) in &cases {
            let _ = guard.check(key.as_deref(), json_out);
        }
    });
    let guard_plan = AvroPlan::for_guard(policy, &derived, 2)?;
    let avro_guard = ns_per_event(count, &mut || {
        for (_, _, _, avro_out, key) in &cases {
            let _ = guard_plan.judge(&guard, key.as_deref(), avro_out);
        }
    });
    let avro_guard_through_json = ns_per_event(count, &mut || {
        for (_, _, _, avro_out, key) in &cases {
            if let Ok(json) = to_json(&derived, 2, avro_out) {
                let _ = guard.check(key.as_deref(), &json);
            }
        }
    });
    let json_bytes: usize = cases.iter().map(|case| case.0.len()).sum();
    let avro_bytes: usize = cases.iter().map(|case| case.1.len()).sum();
    println!(
        "avro beside json, one thread, {count} events ({:.0} bytes as JSON, {:.0} as Avro on average):",
        json_bytes as f64 / count.max(1) as f64,
        avro_bytes as f64 / count.max(1) as f64
    );
    println!(
        "  ingest, whole path, ns per event: json {json_whole:.0}, avro {avro_whole:.0} (avro/json {:.2})",
        avro_whole / json_whole
    );
    println!(
        "  sink guard, ns per event: json {json_guard:.0}, avro {avro_guard:.0} (avro/json {:.2}; through the JSON rendering {avro_guard_through_json:.0})",
        avro_guard / json_guard
    );
    match json_allocations.zip(avro_allocations) {
        Some((json, avro)) => println!(
            "  allocations per event, steady state: json {:.3}, avro {:.3}",
            json as f64 / count.max(1) as f64,
            avro as f64 / count.max(1) as f64
        ),
        None => println!(
            "  allocations per event: not counted (build with `--features count-allocations`)"
        ),
    }
    Ok(())
}

/// Pseudonymizes every event once, split over `threads`; returns the wall time and the
/// CPU time of the threads in seconds (when Linux tells it), and how many were
/// pseudonymized.
fn run_round(
    engine: &Pseudonymizer,
    events: &[Vec<u8>],
    threads: usize,
) -> (f64, Option<f64>, usize) {
    let chunk = events.len().div_ceil(threads).max(1);
    let started = Instant::now();
    let (cpu, ok) = std::thread::scope(|scope| {
        let workers: Vec<_> = events
            .chunks(chunk)
            .map(|share| {
                scope.spawn(move || {
                    let before = thread_cpu_seconds();
                    let ok = pseudonymize_all(engine, share);
                    let cpu = before.zip(thread_cpu_seconds()).map(|(a, b)| b - a);
                    (cpu, ok)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a bench thread panicked"))
            .fold((Some(0.0), 0), |(cpu, ok), (more_cpu, more_ok)| {
                (cpu.zip(more_cpu).map(|(a, b)| a + b), ok + more_ok)
            })
    });
    (started.elapsed().as_secs_f64(), cpu, ok)
}

/// The CPU time of the calling thread so far, from `/proc/thread-self/schedstat` (Linux).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds as f64 / 1e9)
}

fn pseudonymize_all(engine: &Pseudonymizer, events: &[Vec<u8>]) -> usize {
    let mut out = Vec::with_capacity(4096);
    let mut ok = 0;
    for event in events {
        out.clear();
        ok += usize::from(engine.pseudonymize_into(event, &mut out).is_ok());
    }
    ok
}

/// Nanoseconds per event by phase, on one thread (best of three passes each, in CPU time
/// when Linux tells it, else in wall time).
struct Phases {
    whole: f64,
    walk: f64,
    tokens: f64,
    tokens_per_event: f64,
}

impl Phases {
    fn measure(
        engine: &Pseudonymizer,
        policy: &Policy,
        secret: &MasterSecret,
        events: &[Vec<u8>],
    ) -> Self {
        let per_event = |f: &dyn Fn()| {
            (0..3)
                .map(|_| {
                    let started = Instant::now();
                    let cpu = thread_cpu_seconds();
                    f();
                    let seconds = match cpu.zip(thread_cpu_seconds()) {
                        Some((before, after)) => after - before,
                        None => started.elapsed().as_secs_f64(),
                    };
                    seconds * 1e9 / events.len().max(1) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let whole = per_event(&|| {
            pseudonymize_all(engine, events);
        });
        let walk = per_event(&|| {
            for event in events {
                let _ = engine.decode_and_walk(event);
            }
        });
        let keys = token_keys(policy, secret);
        let inputs = token_inputs(policy, &keys, events);
        let tokens = per_event(&|| {
            let mut out = Vec::with_capacity(64);
            let mut scratch = String::new();
            for (key, normalizer, value) in &inputs {
                out.clear();
                key.write_token(
                    normalizer.normalize(value, &mut scratch).as_bytes(),
                    &mut out,
                );
            }
        });
        Self {
            whole,
            walk,
            tokens,
            tokens_per_event: inputs.len() as f64 / events.len().max(1) as f64,
        }
    }

    fn encode(&self) -> f64 {
        (self.whole - self.walk - self.tokens).max(0.0)
    }
}

/// One token key per domain of `policy` and bench tenant: `keys[domain]` lists
/// `(tenant, key)`.
fn token_keys(policy: &Policy, secret: &MasterSecret) -> Vec<Vec<(String, TokenKey)>> {
    policy
        .token_domains()
        .iter()
        .map(|domain| {
            TENANTS
                .iter()
                .map(|t| (t.to_string(), TokenKey::derive(secret, 1, t, domain)))
                .collect()
        })
        .collect()
}

/// The values of the token fields of `events` (strings and integers), with the key and
/// normalizer of their field, found with a JSON parser beforehand.
fn token_inputs<'k>(
    policy: &Policy,
    keys: &'k [Vec<(String, TokenKey)>],
    events: &[Vec<u8>],
) -> Vec<(&'k TokenKey, Normalizer, String)> {
    let mut inputs = Vec::new();
    for event in events {
        let Ok(value) = serde_json::from_slice::<Value>(event) else {
            continue;
        };
        let tenant = value["tenant"].as_str().unwrap_or(policy.default_tenant());
        for (path, rule) in policy.rules() {
            let Rule::Token { domain, normalizer } = rule else {
                continue;
            };
            let Some((_, key)) = keys[*domain].iter().find(|(t, _)| t == tenant) else {
                continue;
            };
            let mut found = Vec::new();
            values_at(&value, path.split('.'), &mut found);
            for text in found {
                inputs.push((key, *normalizer, text));
            }
        }
    }
    inputs
}

/// The scalar texts at a policy path (`a.b[].c`) in `value`.
fn values_at<'p>(value: &Value, mut segments: std::str::Split<'p, char>, found: &mut Vec<String>) {
    let Some(segment) = segments.next() else {
        match value {
            Value::String(text) => found.push(text.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => found.push(n.to_string()),
            _ => {}
        }
        return;
    };
    let arrays = segment.matches("[]").count();
    let mut current = vec![&value[segment.trim_end_matches("[]")]];
    for _ in 0..arrays {
        current = current
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .collect();
    }
    for item in current {
        values_at(item, segments.clone(), found);
    }
}

/// Allocations per event over one more single-threaded pass, if they are counted.
fn allocations_per_event(engine: &Pseudonymizer, events: &[Vec<u8>]) -> Option<f64> {
    count_allocations(&mut || {
        pseudonymize_all(engine, events);
    })
    .map(|allocations| allocations as f64 / events.len().max(1) as f64)
}

/// The allocations `f` makes, if they are counted.
#[cfg(feature = "count-allocations")]
fn count_allocations(f: &mut dyn FnMut()) -> Option<usize> {
    let region = stats_alloc::Region::new(crate::ALLOCATOR);
    f();
    Some(region.change().allocations)
}

#[cfg(not(feature = "count-allocations"))]
fn count_allocations(_f: &mut dyn FnMut()) -> Option<usize> {
    None
}
