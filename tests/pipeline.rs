//! `ingest`, `sink` and `produce` against two real Apache Kafka brokers: the on-prem one
//! and the cloud one, which demands the sink's client certificate (the private link). The
//! tests share one pair (`testkit::shared_brokers`), each with its own topics and consumer
//! groups; a test that stops a broker starts its own. The built binary runs as separate
//! processes, as an operator would run it.

use std::time::{Duration, Instant};

use simulator::Generator;
use testkit::{free_port, shared_brokers, wait_until, Broker, NewRecord};

use crate::harness::*;

#[test]
fn every_event_reaches_the_cloud_as_batch_mode_writes_it() {
    every_event_reaches_the_cloud(Delivery::AtLeastOnce);
}

#[test]
fn every_event_reaches_the_cloud_exactly_once() {
    every_event_reaches_the_cloud(Delivery::ExactlyOnce);
}

/// [`volume`] events (1 % malformed) through both stages: every valid event in the cloud,
/// byte for byte as batch mode writes it, once; every malformed one in quarantine, once;
/// the metrics agree; SIGTERM drains and exits 0.
fn every_event_reaches_the_cloud(delivery: Delivery) {
    let events = volume();
    const SEED: u64 = 7;
    let p = Pipeline::new().with_delivery(delivery);
    let expected = expected(events, 0.01, SEED);
    p.produce(events, 0.01, SEED);

    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ingest, sink) = p.start_stages(logs.path());
    assert!(scrape(sink.metrics_port, "/readyz").contains("ready"));

    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(600),
    );
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "end to end, {delivery:?}: {events} events through ingest and sink in {seconds:.1} s ({:.0} events/s, stages and consumer-group joins included)",
        events as f64 / seconds
    );
    let duplicates = check_cloud(&p, &expected, &cloud);
    assert_eq!(duplicates, 0, "no restart, no duplicate");
    let quarantine = check_quarantine(&p, &expected);
    assert_eq!(quarantine.duplicates, 0, "no restart, no duplicate");
    let by_reason = quarantine.by_reason;

    // /metrics agrees with what was counted here.
    let valid = expected.valid.len() as f64;
    let ingest_metrics = ingest.metrics();
    assert!(
        wait_until(Duration::from_secs(30), || ingest
            .metrics()
            .value("pseudopipe_events_consumed_total", &[])
            == events as f64),
        "{}",
        ingest_metrics.0
    );
    let ingest_metrics = ingest.metrics();
    assert_eq!(
        ingest_metrics.value("pseudopipe_events_produced_total", &[]),
        valid
    );
    for (reason, count) in &by_reason {
        assert_eq!(
            ingest_metrics.value("pseudopipe_events_quarantined_total", &[("reason", reason)]),
            *count as f64,
            "{reason}"
        );
    }
    assert_eq!(
        ingest_metrics.value("pseudopipe_events_quarantined_total", &[]),
        expected.malformed_count as f64
    );
    assert_eq!(
        ingest_metrics.value("pseudopipe_key_active_version", &[("tenant", TENANT)]),
        1.0
    );
    assert!(ingest_metrics.value("pseudopipe_processing_latency_seconds_count", &[]) >= valid);
    let sink_metrics = sink.metrics();
    assert_eq!(
        sink_metrics.value("pseudopipe_events_consumed_total", &[]),
        valid
    );
    assert_eq!(
        sink_metrics.value("pseudopipe_events_produced_total", &[]),
        valid
    );
    assert_eq!(
        sink_metrics.value("pseudopipe_events_quarantined_total", &[]),
        0.0
    );
    assert!(wait_until(Duration::from_secs(30), || sink
        .metrics()
        .value("pseudopipe_consumer_lag", &[])
        == 0.0));

    // Graceful shutdown: SIGTERM drains, commits and exits 0.
    for mut stage in [ingest, sink] {
        let status = stage.process.terminate(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{}",
            stage.process.failure("SIGTERM")
        );
        let log = stage.process.log();
        assert!(
            log.contains("Stage stopped after draining and committing."),
            "{log}"
        );
    }
}

/// Offsets the consumer jumps over are not silent: ingest counts them and says where they
/// were. Here, as retention would, DeleteRecords removes offsets 0 to 59 of a partition
/// while the group's committed offset is 50 and ingest is stopped: the fetch at 50 is
/// out of range, the consumer resets to the earliest offset, 60, and 50 to 59 never go
/// through the pipeline.
#[test]
fn offsets_the_broker_jumps_over_are_counted_and_logged() {
    let p = Pipeline::new();
    let mut generator = Generator::new(5).with_tenants(vec![TENANT.to_owned()]);
    let mut events = |n: usize| -> Vec<NewRecord> {
        (0..n)
            .map(|_| NewRecord::new(generator.next_record().payload).partition(0))
            .collect()
    };
    // 100 records on partition 0, the group's offset at 50, then 10 more; 0 to 59 deleted.
    p.onprem.produce(&p.raw, events(100));
    p.onprem
        .client()
        .commit_offset(&p.ingest_group, &p.raw, 0, 50)
        .unwrap();
    p.onprem.produce(&p.raw, events(10));
    assert_eq!(p.onprem.delete_records_before(&p.raw, 0, 60), 60);

    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let ingest = Stage::start(
        "ingest",
        p.ingest_config(port),
        port,
        logs.path().join("ingest.log"),
    );
    let skipped = |stage: &Stage| {
        stage.metrics().value(
            "pseudopipe_input_offsets_skipped_total",
            &[("topic", &p.raw), ("partition", "0")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || skipped(&ingest) == 10.0),
        "skipped: {}\n{}",
        skipped(&ingest),
        ingest.process.failure("counting skipped offsets")
    );
    // The 50 records after the gap (60 to 109) go through, once each.
    let out = p
        .onprem
        .read_all(&p.pseudonymized, 50, Duration::from_secs(30));
    assert_eq!(distinct_events(&out), 50);
    assert_eq!(out.len(), 50, "no restart, no duplicate");
    assert!(ingest.process.wait_for_log(
        "Input offsets were jumped over and never received",
        Duration::from_secs(5)
    ));
    let log = ingest.process.log();
    assert!(log.contains("from=50 to=59 count=10"), "{log}");
}

/// Each stage is stopped twice while it moves records, once with SIGTERM (drain and
/// commit) and once with kill -9 (nothing committed since the last periodic commit):
/// every event still reaches the cloud, duplicates allowed. Restarts start from committed
/// offsets inside record batches.
#[test]
fn restarting_ingest_and_sink_mid_run_loses_nothing() {
    const EVENTS: u64 = 20_000;
    const SEED: u64 = 11;
    let p = Pipeline::new();
    let expected = expected(EVENTS, 0.01, SEED);
    p.produce(EVENTS, 0.01, SEED);

    let logs = tempfile::tempdir().unwrap();
    let (mut ingest, mut sink) = p.start_stages(logs.path());

    // Interrupt each stage while it is moving records: SIGTERM first, then kill -9.
    let moving = |stage: &Stage, at_least: f64| {
        wait_until(Duration::from_secs(120), || {
            stage
                .metrics()
                .value("pseudopipe_events_produced_total", &[])
                >= at_least
        })
    };
    assert!(
        moving(&ingest, 1.0),
        "{}",
        ingest.process.failure("ingest moving")
    );
    assert!(
        ingest
            .process
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        ingest.process.failure("SIGTERM")
    );
    ingest.restart();
    assert!(
        moving(&sink, 1.0),
        "{}",
        sink.process.failure("sink moving")
    );
    sink.process.kill();
    sink.restart();
    assert!(
        moving(&ingest, 1.0),
        "{}",
        ingest.process.failure("ingest moving again")
    );
    ingest.process.kill();
    ingest.restart();
    assert!(
        moving(&sink, 1.0),
        "{}",
        sink.process.failure("sink moving again")
    );
    assert!(
        sink.process
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        sink.process.failure("SIGTERM")
    );
    sink.restart();

    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(120),
    );
    if distinct_events(&cloud) < expected.valid.len() {
        explain_missing(&p, &expected, &cloud, &[&ingest, &sink]);
    }
    let duplicates = check_cloud(&p, &expected, &cloud);
    let quarantine = check_quarantine(&p, &expected);
    eprintln!(
        "after two SIGTERMs and two kill -9: {} cloud records, {duplicates} duplicates; {} quarantined twice",
        cloud.len(),
        quarantine.duplicates
    );
}

/// The cloud broker crashes (kill -9) and stays down for a minute while retail systems
/// produce: sink holds at most `max_in_flight` records, memory stays flat, nothing is
/// acknowledged; once the broker is restarted (same port, same data) every event
/// arrives. Back-pressure pauses and resumes inside record batches.
#[test]
fn a_cloud_broker_down_for_a_minute_holds_the_pipeline_back_and_it_catches_up() {
    const EVENTS: u64 = 30_000;
    const SEED: u64 = 13;
    let cloud = Broker::start_with_client_certificates("cloud-outage");
    let mut p = Pipeline::start(
        Zone::Shared(&shared_brokers().onprem),
        Zone::Own(Box::new(cloud)),
    );
    let expected = expected(EVENTS, 0.0, SEED);

    let logs = tempfile::tempdir().unwrap();
    let (ingest, sink) = p.start_stages(logs.path());

    // The cloud goes down; retail systems keep producing.
    p.own_cloud().kill();
    let down = Instant::now();
    p.produce(EVENTS, 0.0, SEED);
    let mut peak_in_flight = 0.0f64;
    let mut peak_rss = 0;
    while down.elapsed() < Duration::from_secs(60) {
        let metrics = sink.metrics();
        peak_in_flight = peak_in_flight.max(metrics.value("pseudopipe_in_flight", &[]));
        peak_rss = peak_rss.max(
            memory(sink.process.pid().unwrap())
                .expect("the sink runs")
                .rss_kib,
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let sink_metrics = sink.metrics();
    let delivered = sink_metrics.value("pseudopipe_events_produced_total", &[]);
    eprintln!(
        "cloud down 60 s: sink in flight peaked at {peak_in_flight} (bound {MAX_IN_FLIGHT}), RSS at {} MiB, {delivered} delivered, lag {}",
        peak_rss / 1024,
        sink_metrics.value("pseudopipe_consumer_lag", &[])
    );
    assert_eq!(
        delivered, 0.0,
        "nothing is acknowledged while the cloud is down"
    );
    assert!(
        peak_in_flight <= MAX_IN_FLIGHT as f64,
        "in flight is bounded: {peak_in_flight}"
    );
    assert!(
        peak_rss < 300 * 1024,
        "memory stays bounded: {peak_rss} KiB"
    );
    assert!(
        ingest
            .metrics()
            .value("pseudopipe_events_produced_total", &[])
            == EVENTS as f64,
        "ingest is not held back by the cloud"
    );

    // The cloud returns; the sink catches up from where it was.
    p.own_cloud().restart();
    let back = Instant::now();
    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(300),
    );
    eprintln!(
        "caught up {} events {:.1} s after the cloud returned",
        expected.valid.len(),
        back.elapsed().as_secs_f64()
    );
    check_cloud(&p, &expected, &cloud);
    drop(ingest);
}

#[test]
fn the_sink_without_its_client_certificate_is_refused_by_the_cloud() {
    let p = Pipeline::new();
    let port = free_port();
    let config = p.sink_config(port, false);
    let started = Instant::now();
    let run = p
        .scratch
        .run(&["sink", "--config", config.to_str().unwrap()]);
    let message = run.fails();
    assert!(message.contains("cannot reach `sink.brokers`"), "{message}");
    assert!(
        message.contains("TLS"),
        "the message points at the TLS settings: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_config_fails_fast_and_says_what_to_fix() {
    let p = Pipeline::new();
    let port = free_port();
    let good = std::fs::read_to_string(p.ingest_config(port)).unwrap();
    let unreachable = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            good.replace("max_in_flight", "max_inflight"),
            "unknown field `max_inflight`",
        ),
        (
            "missing topic",
            good.replace(&p.raw, "no-such-topic"),
            "topic `no-such-topic` does not exist",
        ),
        (
            "unreadable KEK",
            good.replace(p.scratch.kek.to_str().unwrap(), "/nonexistent/kek"),
            "keys.kek_file",
        ),
        (
            "unreachable brokers",
            good.replace(&p.onprem.bootstrap(), &unreachable),
            "cannot reach `ingest.brokers`",
        ),
    ];
    for (case, text, needle) in cases {
        let path = p.scratch.path("bad.toml");
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let message = p
            .scratch
            .run(&["ingest", "--config", path.to_str().unwrap()])
            .fails();
        let seconds = started.elapsed().as_secs_f64();
        assert!(message.contains(needle), "{case}: {message}");
        assert!(seconds < 20.0, "{case}: failed after {seconds:.1} s");
        assert!(!message.contains("Pipeline started"), "{case}: {message}");
    }
}

/// With `consent_field`, the events whose customer withheld consent to analytics (false,
/// null or absent) reach neither the cloud nor the quarantine; ingest counts them in
/// `pseudopipe_events_dropped_total{reason="no_consent"}` and commits past them.
#[test]
fn events_without_consent_never_leave_and_are_counted() {
    const EVENTS: u64 = 3_000;
    const SEED: u64 = 23;
    let policy = std::fs::read_to_string(POLICY)
        .unwrap()
        .replace("# consent_field = ", "consent_field = ");
    assert!(policy.contains("\nconsent_field = \"consent.analytics\""));
    let p = Pipeline::new().with_policy(&policy);
    // No malformed record: one without consent is dropped before its fields are checked.
    let expected = expected(EVENTS, 0.0, SEED);
    let (consenting, withheld): (Vec<&String>, Vec<&String>) = expected
        .valid
        .keys()
        .partition(|id| expected.valid[*id]["consent"]["analytics"] == true);
    assert!(!withheld.is_empty(), "the simulator withholds some consent");
    p.produce(EVENTS, 0.0, SEED);

    let logs = tempfile::tempdir().unwrap();
    let (ingest, _sink) = p.start_stages(logs.path());
    let cloud = p
        .cloud
        .read_all(&p.cloud_topic, consenting.len(), Duration::from_secs(120));
    let ids: std::collections::BTreeSet<String> = cloud
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        consenting.len(),
        "every consenting event arrives"
    );
    assert!(
        withheld.iter().all(|id| !ids.contains(*id)),
        "no event without consent reaches the cloud"
    );
    assert!(wait_until(Duration::from_secs(30), || ingest
        .metrics()
        .value("pseudopipe_events_consumed_total", &[])
        == EVENTS as f64));
    assert_eq!(
        ingest.metrics().value(
            "pseudopipe_events_dropped_total",
            &[("reason", "no_consent")]
        ),
        withheld.len() as f64
    );
    assert_eq!(
        ingest
            .metrics()
            .value("pseudopipe_events_quarantined_total", &[]),
        0.0,
        "nothing is quarantined"
    );
    eprintln!(
        "consent: {} of {} valid events forwarded, {} dropped without consent",
        consenting.len(),
        expected.valid.len(),
        withheld.len()
    );
}
