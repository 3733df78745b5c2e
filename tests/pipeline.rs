//! `ingest`, `sink` and `produce` against two real Apache Kafka brokers: the on-prem one
//! and the cloud one, which demands the sink's client certificate (the private link). The
//! tests share one pair (`testkit::shared_brokers`), each with its own topics and consumer
//! groups; a test that stops a broker starts its own. The built binary runs as separate
//! processes, as an operator would run it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use simulator::Generator;
use testkit::{
    free_port, random_name, shared_brokers, wait_until, Broker, NewRecord, Process, Record,
};

use crate::util::Scratch;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);
const TENANT: &str = "brand-a";
const PARTITIONS: u32 = 3;
/// Records in flight per stage: small, so that a stalled cloud shows the bound.
const MAX_IN_FLIGHT: usize = 2000;

/// A broker of the shared pair, or one a test started for itself (to stop it).
enum Zone {
    Shared(&'static Broker),
    Own(Box<Broker>),
}

impl Deref for Zone {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        match self {
            Zone::Shared(broker) => broker,
            Zone::Own(broker) => broker,
        }
    }
}

/// Two brokers, this test's topics and consumer groups, a keyring, and config files for
/// ingest and sink.
struct Pipeline {
    scratch: Scratch,
    onprem: Zone,
    cloud: Zone,
    raw: String,
    pseudonymized: String,
    quarantine: String,
    cloud_topic: String,
    ingest_group: String,
    sink_group: String,
}

impl Pipeline {
    fn start(onprem: Zone, cloud: Zone) -> Pipeline {
        let scratch = Scratch::with_tenants(&[TENANT]);
        let raw = onprem.random_topic("redemptions.raw", PARTITIONS);
        let pseudonymized = onprem.random_topic("redemptions.pseudonymized", PARTITIONS);
        let quarantine = onprem.random_topic("redemptions.quarantine", 1);
        let cloud_topic = cloud.random_topic("redemptions", PARTITIONS);
        Pipeline {
            scratch,
            onprem,
            cloud,
            raw,
            pseudonymized,
            quarantine,
            cloud_topic,
            ingest_group: random_name("ingest-test"),
            sink_group: random_name("sink-test"),
        }
    }

    /// On the shared brokers: plaintext on-prem, mTLS cloud.
    fn new() -> Pipeline {
        let shared = shared_brokers();
        Pipeline::start(Zone::Shared(&shared.onprem), Zone::Shared(&shared.cloud))
    }

    /// The cloud broker, which this test started for itself to stop and restart it.
    fn own_cloud(&mut self) -> &mut Broker {
        match &mut self.cloud {
            Zone::Own(broker) => broker,
            Zone::Shared(_) => panic!("the shared cloud broker must not be stopped"),
        }
    }

    /// The `[sink.kafka]` table: TLS with the client certificate, unless `with_certificate` is false.
    fn cloud_tls(&self, with_certificate: bool) -> String {
        self.cloud
            .client_properties()
            .iter()
            .filter(|(key, _)| key.as_str() != "bootstrap.servers")
            .filter(|(key, _)| {
                with_certificate
                    || !key.starts_with("ssl.certificate") && !key.starts_with("ssl.key")
            })
            .map(|(key, value)| format!("{key:?} = {value:?}\n"))
            .collect()
    }

    /// Writes the ingest config (keys, ingest, metrics) and returns its path.
    fn ingest_config(&self, metrics_port: u16) -> PathBuf {
        let text = format!(
            r#"[keys]
keyring = {keyring:?}
kek_file = {kek:?}

[ingest]
brokers = "{brokers}"
group_id = "{ingest_group}"
input_topic = "{raw}"
output_topic = "{pseudonymized}"
quarantine_topic = "{quarantine}"
policy = {policy:?}
max_in_flight = {MAX_IN_FLIGHT}

[ingest.kafka]
"session.timeout.ms" = 6000

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
            keyring = self.scratch.keyring,
            kek = self.scratch.kek,
            brokers = self.onprem.bootstrap(),
            raw = self.raw,
            pseudonymized = self.pseudonymized,
            quarantine = self.quarantine,
            policy = POLICY,
            ingest_group = self.ingest_group,
        );
        let path = self.scratch.path(&format!("ingest-{metrics_port}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes the sink config (sink, metrics; no keys) and returns its path.
    fn sink_config(&self, metrics_port: u16, with_certificate: bool) -> PathBuf {
        let text = format!(
            r#"[sink]
source_brokers = "{onprem}"
source_topic = "{pseudonymized}"
group_id = "{sink_group}"
brokers = "{cloud}"
topic = "{cloud_topic}"
policy = {policy:?}
quarantine_topic = "{quarantine}"
max_in_flight = {MAX_IN_FLIGHT}

[sink.source_kafka]
"session.timeout.ms" = 6000

[sink.kafka]
{tls}"compression.type" = "zstd"

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
            onprem = self.onprem.bootstrap(),
            pseudonymized = self.pseudonymized,
            cloud = self.cloud.bootstrap(),
            cloud_topic = self.cloud_topic,
            policy = POLICY,
            quarantine = self.quarantine,
            tls = self.cloud_tls(with_certificate),
            sink_group = self.sink_group,
        );
        let path = self.scratch.path(&format!("sink-{metrics_port}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `ingest` and `sink` as two processes on free metrics ports, logging into `logs`.
    fn start_stages(&self, logs: &std::path::Path) -> (Stage, Stage) {
        let (ingest_port, sink_port) = (free_port(), free_port());
        let ingest = Stage::start(
            "ingest",
            self.ingest_config(ingest_port),
            ingest_port,
            logs.join("ingest.log"),
        );
        let sink = Stage::start(
            "sink",
            self.sink_config(sink_port, true),
            sink_port,
            logs.join("sink.log"),
        );
        (ingest, sink)
    }

    /// `pseudopipe produce` of `events` simulated redemptions, `malformed_ratio` of them bad.
    fn produce(&self, events: u64, malformed_ratio: f64, seed: u64) {
        let args: Vec<String> = [
            "produce",
            "--brokers",
            &self.onprem.bootstrap(),
            "--topic",
            &self.raw,
            "--events",
            &events.to_string(),
            "--malformed-ratio",
            &malformed_ratio.to_string(),
            "--seed",
            &seed.to_string(),
            "--tenant",
            TENANT,
        ]
        .map(str::to_owned)
        .into();
        let run = self
            .scratch
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run.ok();
        eprintln!("{}", run.stderr().trim_end());
    }
}

/// A running `pseudopipe ingest|sink --config FILE` with its metrics address.
struct Stage {
    process: Process,
    command: &'static str,
    config: PathBuf,
    metrics_port: u16,
    log: PathBuf,
}

impl Stage {
    fn start(command: &'static str, config: PathBuf, metrics_port: u16, log: PathBuf) -> Stage {
        let mut stage = Stage {
            process: Process::start_logging_to(command, stage_command(command, &config), &log),
            command,
            config,
            metrics_port,
            log,
        };
        stage.wait_started();
        stage
    }

    fn wait_started(&mut self) {
        assert!(
            self.process
                .wait_for_log("Pipeline started.", Duration::from_secs(60)),
            "{}",
            self.process.failure("start")
        );
    }

    /// Starts the same stage again (after a SIGTERM or a kill), appending to the same log.
    fn restart(&mut self) {
        let before = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Pipeline started.")
            .count();
        self.process = Process::start_logging_to(
            self.command,
            stage_command(self.command, &self.config),
            &self.log,
        );
        assert!(
            wait_until(Duration::from_secs(60), || {
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .matches("Pipeline started.")
                    .count()
                    > before
            }),
            "{}",
            self.process.failure("restart")
        );
    }

    fn metrics(&self) -> Metrics {
        Metrics(scrape(self.metrics_port, "/metrics"))
    }
}

fn stage_command(command: &str, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pseudopipe"));
    cmd.args([command, "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info,plumbing=debug");
    cmd
}

/// `GET path` on the metrics port, the body as text.
fn scrape(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// A Prometheus text exposition.
struct Metrics(String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include every one of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().unwrap())
            })
            .sum()
    }
}

/// What the simulator made for `seed`: the valid events by `event_id`, and the expected
/// reason of each malformed payload (a payload may repeat).
struct Expected {
    valid: BTreeMap<String, Value>,
    malformed: HashMap<Vec<u8>, Vec<&'static str>>,
    malformed_count: usize,
}

fn expected(events: u64, malformed_ratio: f64, seed: u64) -> Expected {
    // `pseudopipe produce` builds the same generator from the same options.
    let mut generator = Generator::new(seed)
        .with_tenants(vec![TENANT.to_owned()])
        .with_malformed_ratio(malformed_ratio);
    let mut expected = Expected {
        valid: BTreeMap::new(),
        malformed: HashMap::new(),
        malformed_count: 0,
    };
    for _ in 0..events {
        let record = generator.next_record();
        match record.kind.expected_reason() {
            None => {
                let event: Value = serde_json::from_slice(&record.payload).unwrap();
                expected
                    .valid
                    .insert(event["event_id"].as_str().unwrap().to_owned(), event);
            }
            Some(reason) => {
                expected
                    .malformed
                    .entry(record.payload)
                    .or_default()
                    .push(reason);
                expected.malformed_count += 1;
            }
        }
    }
    expected
}

/// How many different `event_id`s `records` hold.
fn distinct_events(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap().to_owned())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Reads `topic` until every one of `ids` is there (duplicates allowed) or `timeout` passes.
fn read_until_complete(broker: &Broker, topic: &str, ids: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let records = broker.read_all(topic, ids, left.min(Duration::from_secs(120)));
        if distinct_events(&records) >= ids || Instant::now() >= deadline {
            return records;
        }
    }
}

/// Checks the cloud topic against the batch-mode output of the same valid events: every
/// event there, byte for byte as `pseudonymize` writes it, keyed by its loyalty-card
/// token, nothing personal in it; duplicates (at-least-once) are byte-identical.
/// Returns the number of duplicates.
fn check_cloud(p: &Pipeline, expected: &Expected, cloud: &[Record]) -> usize {
    let input: String = expected
        .valid
        .values()
        .map(|event| format!("{event}\n"))
        .collect();
    let input_path = p.scratch.path("valid.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let output_path = p.scratch.path("batch.jsonl");
    p.scratch
        .run(&[
            "pseudonymize",
            "--policy",
            POLICY,
            "--keyring",
            p.scratch.keyring.to_str().unwrap(),
            "--kek-file",
            p.scratch.kek.to_str().unwrap(),
            "--input",
            input_path.to_str().unwrap(),
            "--output",
            output_path.to_str().unwrap(),
        ])
        .ok();
    let batch: HashMap<String, String> = std::fs::read_to_string(&output_path)
        .unwrap()
        .lines()
        .map(|line| {
            let id = serde_json::from_str::<Value>(line).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned();
            (id, line.to_owned())
        })
        .collect();
    assert_eq!(
        batch.len(),
        expected.valid.len(),
        "batch mode writes every valid event"
    );

    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in cloud {
        let output = record.json();
        let id = output["event_id"].as_str().expect("an event_id").to_owned();
        let payload = record.payload_str().unwrap();
        assert_eq!(
            Some(payload),
            batch.get(&id).map(String::as_str),
            "cloud record {id} differs from batch mode"
        );
        assert_eq!(
            record.key_str(),
            output["customer"]["loyalty_card"].as_str(),
            "the Kafka key is the loyalty-card token"
        );
        assert!(
            record.headers.is_empty(),
            "no input header crosses the link: {:?}",
            record.headers
        );
        let leaked = simulator::leaked_fields(&expected.valid[&id], &output, record.key.as_deref());
        assert!(
            leaked.is_empty(),
            "{id}: personal fields reached the cloud: {leaked:?}"
        );
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<_> = expected
        .valid
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} valid events never reached the cloud, e.g. {missing:?}",
        expected.valid.len() - seen.len()
    );
    cloud.len() - seen.len()
}

/// Checks the on-prem quarantine: every malformed payload, unchanged, with its reason and source.
fn check_quarantine(p: &Pipeline, expected: &Expected) -> Quarantine {
    let quarantined = p.onprem.read_all(
        &p.quarantine,
        expected.malformed_count,
        Duration::from_secs(120),
    );
    let mut by_reason = BTreeMap::new();
    let mut left = expected.malformed.clone();
    let mut seen: HashMap<String, (Vec<u8>, String)> = HashMap::new();
    let mut duplicates = 0;
    for record in &quarantined {
        let reason = record.header("pseudopipe-reason").expect("a reason header");
        assert!(record
            .header("pseudopipe-message")
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(
            record.header("pseudopipe-source-topic"),
            Some(p.raw.as_str())
        );
        assert!(record
            .header("pseudopipe-source-offset")
            .is_some_and(|o| o.parse::<i64>().is_ok()));
        let payload = record.payload.clone().unwrap_or_default();
        // At-least-once: a stage stopped before its commit quarantines a record again,
        // with the same source position, payload and reason.
        let source = format!(
            "{:?}/{:?}",
            record.header("pseudopipe-source-partition"),
            record.header("pseudopipe-source-offset")
        );
        if let Some((first_payload, first_reason)) = seen.get(&source) {
            assert_eq!(
                (first_payload, first_reason.as_str()),
                (&payload, reason),
                "a record quarantined twice is quarantined the same way"
            );
            duplicates += 1;
            continue;
        }
        seen.insert(source, (payload.clone(), reason.to_owned()));
        let reasons = left
            .get_mut(&payload)
            .unwrap_or_else(|| panic!("unexpected quarantined record ({reason})"));
        let position = reasons
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_else(|| panic!("quarantined with {reason}, expected one of {reasons:?}"));
        reasons.remove(position);
        if reasons.is_empty() {
            left.remove(&payload);
        }
        *by_reason.entry(reason.to_owned()).or_default() += 1;
    }
    assert!(
        left.is_empty(),
        "{} malformed records are not in quarantine",
        left.values().map(Vec::len).sum::<usize>()
    );
    Quarantine {
        by_reason,
        duplicates,
    }
}

/// What [`check_quarantine`] found.
struct Quarantine {
    /// Distinct quarantined records by reason.
    by_reason: BTreeMap<String, usize>,
    /// Records quarantined more than once (after a restart).
    duplicates: usize,
}

#[test]
fn a_hundred_thousand_events_reach_the_cloud_as_batch_mode_writes_them() {
    const EVENTS: u64 = 100_000;
    const SEED: u64 = 7;
    let p = Pipeline::new();
    let expected = expected(EVENTS, 0.01, SEED);
    p.produce(EVENTS, 0.01, SEED);

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
        "end to end: {EVENTS} events through ingest and sink in {seconds:.1} s ({:.0} events/s, stages and consumer-group joins included)",
        EVENTS as f64 / seconds
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
            == EVENTS as f64),
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

/// Prints where the events missing from the cloud were in the raw and pseudonymized
/// topics (partition and offset ranges), the watermarks, and what the stages logged
/// about their partitions and commits: what a loss needs to be understood.
fn explain_missing(p: &Pipeline, expected: &Expected, cloud: &[Record], stages: &[&Stage]) {
    let event_id = |record: &Record| -> Option<String> {
        let value: Value = serde_json::from_slice(record.payload.as_deref()?).ok()?;
        Some(value.get("event_id")?.as_str()?.to_owned())
    };
    let ids_of = |records: &[Record]| -> std::collections::HashSet<String> {
        records.iter().filter_map(event_id).collect()
    };
    let raw = p.onprem.read_all(
        &p.raw,
        expected.valid.len() + expected.malformed_count,
        Duration::from_secs(60),
    );
    let middle = p.onprem.read_all(
        &p.pseudonymized,
        expected.valid.len(),
        Duration::from_secs(30),
    );
    let (in_middle, in_cloud) = (ids_of(&middle), ids_of(cloud));
    eprintln!(
        "cloud: {} distinct of {}; pseudonymized topic: {} records, {} distinct",
        in_cloud.len(),
        expected.valid.len(),
        middle.len(),
        in_middle.len()
    );
    for (name, topic, records) in [
        ("raw", &p.raw, &raw),
        ("pseudonymized", &p.pseudonymized, &middle),
    ] {
        eprintln!(
            "{name} watermarks (low, high) by partition: {:?}",
            p.onprem.watermarks(topic)
        );
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for record in records {
            by_partition
                .entry(record.partition)
                .or_default()
                .push(record.offset);
        }
        for (partition, offsets) in by_partition {
            eprintln!(
                "{name}[{partition}]: {} read, holes in the offsets read: {}",
                offsets.len(),
                ranges(&missing_between(&offsets))
            );
        }
    }
    let mut lost_where: BTreeMap<(&str, i32), Vec<i64>> = BTreeMap::new();
    for record in &raw {
        let Some(id) = event_id(record) else { continue };
        if !expected.valid.contains_key(&id) || in_cloud.contains(&id) {
            continue;
        }
        let stage = if in_middle.contains(&id) {
            "lost by sink"
        } else {
            "lost by ingest"
        };
        lost_where
            .entry((stage, record.partition))
            .or_default()
            .push(record.offset);
    }
    for ((stage, partition), offsets) in lost_where {
        eprintln!("{stage}: raw[{partition}] offsets {}", ranges(&offsets));
    }
    for stage in stages {
        let log = std::fs::read_to_string(&stage.log).unwrap_or_default();
        let interesting: Vec<&str> = log
            .lines()
            .filter(|line| {
                [
                    "assigned",
                    "revoked",
                    "ommit",
                    "started",
                    "stopped",
                    "Shutting",
                    "jumped over",
                ]
                .iter()
                .any(|word| line.contains(word))
            })
            .map(|line| line.get(..400).unwrap_or(line))
            .collect();
        eprintln!(
            "--- {} log, partitions and commits\n{}",
            stage.command,
            interesting.join("\n")
        );
        eprintln!("--- {} metrics\n{}", stage.command, stage.metrics().0);
    }
}

/// The offsets between the first and the last of `sorted` that are not in it.
fn missing_between(sorted: &[i64]) -> Vec<i64> {
    sorted
        .windows(2)
        .flat_map(|pair| (pair[0] + 1)..pair[1])
        .collect()
}

/// Sorted offsets as ranges: `3-7, 9, 12-40`.
fn ranges(offsets: &[i64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = offsets.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
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
        peak_rss = peak_rss.max(rss_kib(sink.process.pid().unwrap()));
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
