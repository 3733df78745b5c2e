//! `pseudopipe produce`: a retail simulator writing realistic nominative redemptions (and,
//! on request, malformed ones) to a Kafka topic, keyed by loyalty card as a POS would; with
//! `--input`, a history export replayed instead (`replay`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plumbing::rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use plumbing::rdkafka::ClientConfig;

use crate::cli::ProduceArgs;

/// Records handed to librdkafka before waiting for their delivery reports.
const WINDOW: usize = 10_000;

/// Produces simulated events with `producer`; returns (valid, malformed).
pub async fn produce_events(
    producer: &FutureProducer,
    topic: &str,
    generator: &mut simulator::Generator,
    events: u64,
    rate: Option<f64>,
    progress: &ProgressBar,
) -> Result<(u64, u64)> {
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    let (mut valid, mut malformed) = (0u64, 0u64);
    for i in 0..events {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let record = generator.next_record();
        if record.kind.is_valid() {
            valid += 1;
        } else {
            malformed += 1;
        }
        let mut future_record = FutureRecord::<[u8], [u8]>::to(topic).payload(&record.payload);
        if let Some(key) = &record.key {
            future_record = future_record.key(key);
        }
        let delivery = producer
            .send_result(future_record)
            .map_err(|(error, _)| error)
            .context("cannot queue a record")?;
        pending.push_back(delivery);
        if pending.len() >= WINDOW {
            let report = pending.pop_front().expect("the window is full");
            report
                .await
                .context("the producer was dropped")?
                .map_err(|(error, _)| error)
                .context("a record was not delivered")?;
        }
        progress.inc(1);
    }
    for report in pending {
        report
            .await
            .context("the producer was dropped")?
            .map_err(|(error, _)| error)
            .context("a record was not delivered")?;
    }
    Ok((valid, malformed))
}

/// Runs `produce`.
pub async fn run(args: ProduceArgs) -> Result<ExitCode> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "zstd");
    for property in &args.property {
        let (key, value) = property
            .split_once('=')
            .with_context(|| format!("`--property {property}`: expected KEY=VALUE"))?;
        config.set(key, value);
    }
    // A replay's input is opened (and an empty one refused) before connecting.
    let input = args
        .input
        .as_deref()
        .map(crate::replay::Input::open)
        .transpose()?;
    // An unreachable cluster is one line within --connect-timeout, not librdkafka's error
    // line per reconnection attempt, forever.
    let target = plumbing::probe::Target {
        option: "--brokers",
        brokers: &args.brokers,
        timeout_option: "--connect-timeout",
        timeout: args.connect_timeout,
    };
    let properties = config
        .config_map()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()));
    tokio::task::block_in_place(|| plumbing::probe::metadata(target, &properties.collect(), None))?;
    let producer: FutureProducer = config.create().context("invalid producer configuration")?;
    if let Some(input) = input {
        let replay = crate::replay::Replay {
            input,
            topic: &args.topic,
            rate: args.rate,
            key_field: args.key_field.as_deref(),
        };
        return crate::replay::run(&producer, replay).await;
    }
    let events = args
        .events
        .expect("clap requires --events when --input is not given");
    let mut generator = simulator::Generator::new(args.seed)
        .with_tenants(args.tenant.clone())
        .with_malformed_ratio(args.malformed_ratio);
    let progress = ProgressBar::new(events);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} events [{bar:40}] {per_sec} eta {eta}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let (valid, malformed) = produce_events(
        &producer,
        &args.topic,
        &mut generator,
        events,
        args.rate,
        &progress,
    )
    .await?;
    producer
        .flush(Duration::from_secs(30))
        .context("cannot flush the producer")?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} events to {} ({valid} valid, {malformed} malformed) in {seconds:.2} s ({:.0} events/s)",
        valid + malformed,
        args.topic,
        (valid + malformed) as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}
