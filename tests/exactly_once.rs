//! Delivery proven the way Kafka's own system tests prove it: kill things during a run,
//! then count. Retail systems produce events at a steady rate for 40 s while ingest and sink
//! are each killed with SIGKILL five times at random moments (seeded, so a failure can be
//! replayed) and started again; then the cloud topic and the quarantine are read with
//! `read_committed` and every event is counted. And a sink paused with SIGSTOP while a
//! second one takes its partitions must not commit anything when it wakes up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use simulator::Generator;
use testkit::{free_port, wait_until, NewRecord};

use crate::harness::*;

const MALFORMED_RATIO: f64 = 0.01;
/// Seconds the producing lasts while the stages are killed (the kills take about 25 s).
const PRODUCE_SECONDS: u64 = 40;
/// Kills of each stage.
const KILLS: usize = 5;

#[test]
fn exactly_once_survives_five_kills_of_each_stage_with_nothing_lost_or_duplicated() {
    let (expected, cloud, quarantine) = kill_both_stages_during_a_run(Delivery::ExactlyOnce, 21);
    let duplicated = cloud.len() - distinct_events(&cloud);
    eprintln!(
        "exactly once after {KILLS} kill -9 of each stage: {} valid events expected, {} in the cloud, {} distinct, {duplicated} duplicated; {} malformed expected, {} quarantined, {} twice",
        expected.valid.len(),
        cloud.len(),
        distinct_events(&cloud),
        expected.malformed_count,
        quarantine.by_reason.values().sum::<usize>(),
        quarantine.duplicates,
    );
    assert_eq!(duplicated, 0, "no event twice in the cloud");
    assert_eq!(cloud.len(), expected.valid.len(), "every event once");
    assert_eq!(quarantine.duplicates, 0, "no malformed record twice");
}

#[test]
fn at_least_once_survives_five_kills_of_each_stage_with_nothing_lost() {
    let (expected, cloud, quarantine) = kill_both_stages_during_a_run(Delivery::AtLeastOnce, 22);
    eprintln!(
        "at least once after {KILLS} kill -9 of each stage: {} valid events expected, {} in the cloud ({} duplicates); {} quarantined twice",
        expected.valid.len(),
        cloud.len(),
        cloud.len() - distinct_events(&cloud),
        quarantine.duplicates,
    );
    // check_cloud and check_quarantine have asserted that nothing is missing.
    assert_eq!(distinct_events(&cloud), expected.valid.len());
}

/// Runs both stages while [`volume`] events are produced over [`PRODUCE_SECONDS`], kills each `KILLS` times at random
/// moments, and returns what the cloud and the quarantine hold once every valid event is
/// there (checked: nothing missing, nothing personal, byte for byte as batch mode).
fn kill_both_stages_during_a_run(
    delivery: Delivery,
    seed: u64,
) -> (Expected, Vec<testkit::Record>, Quarantine) {
    let p = Pipeline::new().with_delivery(delivery);
    let events = volume();
    let expected = expected(events, MALFORMED_RATIO, seed);
    let logs = tempfile::tempdir().unwrap();
    let (mut ingest, mut sink) = p.start_stages(logs.path());
    let mut producer = p.produce_in_background(
        events,
        MALFORMED_RATIO,
        seed,
        events.div_ceil(PRODUCE_SECONDS),
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let mut victims: Vec<&str> = [["ingest"; KILLS], ["sink"; KILLS]].concat();
    victims.shuffle(&mut rng);
    let started = Instant::now();
    for victim in victims {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1_000..4_000)));
        let stage = if victim == "ingest" {
            &mut ingest
        } else {
            &mut sink
        };
        let in_cloud: i64 = p.cloud.watermarks(&p.cloud_topic).iter().map(|w| w.1).sum();
        eprintln!(
            "{:5.1} s: kill -9 {} ({in_cloud} offsets in the cloud topic)",
            started.elapsed().as_secs_f64(),
            stage.command
        );
        stage.process.kill();
        stage.restart();
    }
    // The kills must have hit a pipeline at work, not one that had finished.
    let in_cloud: i64 = p.cloud.watermarks(&p.cloud_topic).iter().map(|w| w.1).sum();
    assert!(
        in_cloud < expected.valid.len() as i64,
        "the run ended before the last kill ({in_cloud} offsets in the cloud): produce slower"
    );
    assert!(
        producer
            .wait_for_exit(Duration::from_secs(300))
            .is_some_and(|status| status.success()),
        "{}",
        producer.failure("producing")
    );

    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(600),
    );
    if distinct_events(&cloud) < expected.valid.len() {
        explain_missing(&p, &expected, &cloud, &[&ingest, &sink]);
    }
    check_cloud(&p, &expected, &cloud);
    let quarantine = check_quarantine(&p, &expected);
    (expected, cloud, quarantine)
}

/// Sink A holds an open transaction when it is paused (SIGSTOP); sink B, in the same
/// group, takes its partitions once A's session expires, fences A's transactional ids
/// and delivers everything. A, resumed, must find itself fenced and stop without
/// committing: the cloud holds every event once.
#[test]
fn a_paused_sink_is_fenced_by_the_one_that_took_its_partitions() {
    const EVENTS: u64 = 20_000;
    const SEED: u64 = 23;
    let p = Pipeline::new().with_delivery(Delivery::ExactlyOnce);
    let expected = expected(EVENTS, 0.0, SEED);
    p.produce(EVENTS, 0.0, SEED);
    let logs = tempfile::tempdir().unwrap();
    let ingest_port = free_port();
    let _ingest = Stage::start(
        "ingest",
        p.ingest_config(ingest_port),
        ingest_port,
        logs.path().join("ingest.log"),
    );

    // A keeps its transaction open for 20 s: pausing it mid-transaction is then certain.
    let a_port = free_port();
    let mut a = Stage::start(
        "sink",
        p.sink_config_with(
            a_port,
            true,
            "transaction_interval_ms = 20000\ntransaction_max_records = 1000000",
        ),
        a_port,
        logs.path().join("sink-a.log"),
    );
    assert!(
        wait_until(Duration::from_secs(60), || a
            .metrics()
            .value("pseudopipe_in_flight", &[])
            >= 1_000.0),
        "{}",
        a.process.failure("sink A consuming")
    );
    a.process.pause();

    let b_port = free_port();
    let b = Stage::start(
        "sink",
        p.sink_config(b_port, true),
        b_port,
        logs.path().join("sink-b.log"),
    );
    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(300),
    );
    assert_eq!(
        distinct_events(&cloud),
        expected.valid.len(),
        "{}",
        b.process.failure("sink B delivering")
    );

    a.process.resume();
    let status = a.process.wait_for_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|status| !status.success()),
        "sink A must stop on being fenced: {}",
        a.process.failure("waiting for A to stop")
    );
    let log = a.process.log();
    // No client of the sink dumps rdkafka's statistics into the log.
    assert!(!log.contains("Client stats"), "{}", a.process.log_tail(30));
    let fenced = log
        .lines()
        .find(|line| line.contains("this one was fenced"));
    assert!(
        fenced.is_some(),
        "A says it was fenced: {}",
        a.process.log_tail(30)
    );
    eprintln!("sink A, resumed: {}", fenced.unwrap_or_default());

    // Whatever A had produced stays in its aborted transaction: nothing twice.
    let cloud = p.cloud.read_all(
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(10),
    );
    let mut copies: HashMap<String, usize> = HashMap::new();
    for record in &cloud {
        *copies
            .entry(record.json()["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    eprintln!(
        "fencing: {} events expected, {} cloud records, {duplicated} duplicated",
        expected.valid.len(),
        cloud.len()
    );
    assert_eq!(duplicated, 0);
    assert_eq!(cloud.len(), expected.valid.len());
    check_cloud(&p, &expected, &cloud);
}

/// Raw events written straight to the pseudonymized topic (a misconfigured producer) fail
/// the sink's leak guard: exactly once, each is quarantined on-prem and its source offset
/// stored in the cloud with its partition's transaction, so a restarted sink starts past
/// them and quarantines none of them again.
#[test]
fn records_failing_the_leak_guard_are_quarantined_and_not_consumed_again() {
    const RECORDS: usize = 60;
    let p = Pipeline::new().with_delivery(Delivery::ExactlyOnce);
    let mut generator = Generator::new(31).with_tenants(vec![TENANT.to_owned()]);
    let raw: Vec<NewRecord> = (0..RECORDS)
        .map(|_| NewRecord::new(generator.next_record().payload))
        .collect();
    p.onprem.produce(&p.pseudonymized, raw);

    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sink = Stage::start(
        "sink",
        p.sink_config(port, true),
        port,
        logs.path().join("sink.log"),
    );
    let quarantined = p
        .onprem
        .read_all(&p.quarantine, RECORDS, Duration::from_secs(60));
    assert_eq!(
        quarantined.len(),
        RECORDS,
        "{}",
        sink.process.failure("quarantining")
    );
    assert!(quarantined
        .iter()
        .all(|record| record.header("pseudopipe-reason") == Some("leak_guard")));
    assert!(
        sink.process
            .terminate(Duration::from_secs(30))
            .is_some_and(|status| status.success()),
        "{}",
        sink.process.failure("SIGTERM")
    );

    sink.restart();
    let starts = |log: &str| -> Option<i64> {
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains("stored_offsets="))?;
        let stored = line
            .split("stored_offsets=")
            .nth(1)?
            .split_whitespace()
            .next()?;
        Some(
            stored
                .split(',')
                .filter_map(|start| start.split_once('@')?.1.parse::<i64>().ok())
                .sum(),
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || starts(&sink.process.log())
            == Some(RECORDS as i64)),
        "the restarted sink starts past the quarantined records: {}",
        sink.process.failure("restart")
    );
    let quarantined = p
        .onprem
        .read_all(&p.quarantine, RECORDS + 1, Duration::from_secs(5));
    assert_eq!(quarantined.len(), RECORDS, "none quarantined twice");
    assert!(p
        .cloud
        .read_all(&p.cloud_topic, 1, Duration::from_secs(2))
        .is_empty());
}
