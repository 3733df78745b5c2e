//! `pseudopipe bench`: the record path's throughput on one core, with simulated events
//! and a throw-away key, no Kafka. Prints events/s and MB/s so that figures in the README
//! can be reproduced with one command.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use pseudonymize::{MasterSecret, Policy, Pseudonymizer};

use crate::cli::BenchArgs;

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let policy = match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => {
            Policy::from_toml(crate::DEFAULT_POLICY).expect("the embedded default policy is valid")
        }
    };
    let secret = MasterSecret::generate();
    let tenants = ["brand-a", "brand-b"];
    let engine = Pseudonymizer::new(policy, tenants.iter().map(|t| (t.to_string(), 1, &secret)));
    let mut generator = simulator::Generator::new(args.seed)
        .with_tenants(tenants.iter().map(|t| t.to_string()).collect());
    let events: Vec<Vec<u8>> = (0..args.events)
        .map(|_| generator.next_record().payload)
        .collect();
    let bytes: usize = events.iter().map(Vec::len).sum();
    println!(
        "record path, 1 thread: {} simulated events, {:.0} bytes on average, default policy",
        events.len(),
        bytes as f64 / events.len().max(1) as f64
    );
    let mut out = Vec::with_capacity(4096);
    for round in 1..=args.rounds {
        let started = Instant::now();
        let mut ok = 0usize;
        for event in &events {
            out.clear();
            ok += usize::from(engine.pseudonymize_into(event, &mut out).is_ok());
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {:>10.0} events/s  {:>7.1} MB/s  ({ok} pseudonymized, {:.3} s)",
            events.len() as f64 / seconds,
            bytes as f64 / seconds / 1e6,
            seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
