//! The harness of the black-box pipeline tests: two brokers (the shared pair, or a cloud
//! one a test starts for itself), a test's own topics and groups, config files for ingest
//! and sink in either delivery mode, the stages as processes, and the checks of what
//! reached the cloud and the quarantine.

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
    free_port, random_name, shared_brokers, wait_until, Broker, Process, Record, StageConfig,
};

use crate::util::Scratch;

pub(crate) const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);
pub(crate) const TENANT: &str = "brand-a";
pub(crate) const PARTITIONS: u32 = 3;
/// Records in flight per stage: small, so that a stalled cloud shows the bound.
pub(crate) const MAX_IN_FLIGHT: usize = 2000;

/// Events in each volume test (end to end in both modes, Avro, kill -9, rotations):
/// 20,000 at CI's scale, or `PSEUDOPIPE_TEST_EVENTS` (the README's test figures were taken
/// with `PSEUDOPIPE_TEST_EVENTS=100000`). Volume costs CPU, not coverage: every path those
/// tests check is crossed by a few thousand events.
pub(crate) fn volume() -> u64 {
    const CI_SCALE: u64 = 20_000;
    match std::env::var("PSEUDOPIPE_TEST_EVENTS") {
        Ok(text) => text
            .parse()
            .ok()
            .filter(|events| *events >= 1_000)
            .unwrap_or_else(|| {
                panic!("PSEUDOPIPE_TEST_EVENTS={text}: give a number of events, at least 1000")
            }),
        Err(_) => CI_SCALE,
    }
}

/// A broker of the shared pair, or one a test started for itself (to stop it).
pub(crate) enum Zone {
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
pub(crate) struct Pipeline {
    pub(crate) delivery: Delivery,
    pub(crate) scratch: Scratch,
    pub(crate) onprem: Zone,
    pub(crate) cloud: Zone,
    pub(crate) raw: String,
    pub(crate) pseudonymized: String,
    pub(crate) quarantine: String,
    pub(crate) cloud_topic: String,
    pub(crate) ingest_group: String,
    pub(crate) sink_group: String,
    /// Where the sink stores its source offsets in the cloud, exactly once.
    pub(crate) offsets_topic: String,
    /// More librdkafka properties of the sink's cloud producer (`[sink.kafka]`).
    pub(crate) sink_kafka: BTreeMap<String, String>,
    /// The on-prem topic ingest mirrors the audit log to.
    pub(crate) audit_topic: String,
    /// The on-prem topic of the rotation bridge.
    pub(crate) bridge_topic: String,
    /// More lines of the ingest's `[keys]` section.
    pub(crate) keys_extra: String,
    /// Extra lines of both stages' `[metrics]` section.
    pub(crate) metrics_extra: String,
    /// Both stages' format lines and schema-registry table (Avro), empty for JSON.
    pub(crate) format: Option<String>,
    /// The policy both stages apply.
    pub(crate) policy: PathBuf,
}

/// `delivery` in `[ingest]` and `[sink]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        }
    }
}

impl Pipeline {
    pub(crate) fn start(onprem: Zone, cloud: Zone) -> Pipeline {
        Pipeline::start_with_partitions(onprem, cloud, PARTITIONS)
    }

    /// [`start`](Self::start) with `partitions` partitions in the raw, pseudonymized and
    /// cloud topics.
    pub(crate) fn start_with_partitions(onprem: Zone, cloud: Zone, partitions: u32) -> Pipeline {
        let scratch = Scratch::with_tenants(&[TENANT]);
        let raw = onprem.random_topic("redemptions.raw", partitions);
        let pseudonymized = onprem.random_topic("redemptions.pseudonymized", partitions);
        let quarantine = onprem.random_topic("redemptions.quarantine", 1);
        let cloud_topic = cloud.random_topic("redemptions", partitions);
        let offsets_topic = cloud.random_topic("pseudopipe.sink-offsets", partitions);
        let audit_topic = onprem.random_topic("pseudopipe.audit", 1);
        let bridge_topic = onprem.random_topic("pseudopipe.bridge", 1);
        Pipeline {
            audit_topic,
            bridge_topic,
            keys_extra: String::new(),
            metrics_extra: String::new(),
            format: None,
            policy: PathBuf::from(POLICY),
            delivery: Delivery::AtLeastOnce,
            offsets_topic,
            scratch,
            onprem,
            cloud,
            raw,
            pseudonymized,
            quarantine,
            cloud_topic,
            ingest_group: random_name("ingest-test"),
            sink_group: random_name("sink-test"),
            sink_kafka: BTreeMap::new(),
        }
    }

    /// On the shared brokers: plaintext on-prem, mTLS cloud.
    pub(crate) fn new() -> Pipeline {
        let shared = shared_brokers();
        Pipeline::start(Zone::Shared(&shared.onprem), Zone::Shared(&shared.cloud))
    }

    /// Both stages deliver with `delivery`.
    pub(crate) fn with_delivery(mut self, delivery: Delivery) -> Pipeline {
        self.delivery = delivery;
        self
    }

    /// The cloud broker, which this test started for itself to stop and restart it.
    pub(crate) fn own_cloud(&mut self) -> &mut Broker {
        match &mut self.cloud {
            Zone::Own(broker) => broker,
            Zone::Shared(_) => panic!("the shared cloud broker must not be stopped"),
        }
    }

    /// The on-prem broker, which this test started for itself to stop and restart it.
    pub(crate) fn own_onprem(&mut self) -> &mut Broker {
        match &mut self.onprem {
            Zone::Own(broker) => broker,
            Zone::Shared(_) => panic!("the shared on-prem broker must not be stopped"),
        }
    }

    /// Both stages apply the policy `text` instead of the default one.
    pub(crate) fn with_policy(mut self, text: &str) -> Pipeline {
        let path = self.scratch.path("policy.toml");
        std::fs::write(&path, text).unwrap();
        self.policy = path;
        self
    }

    /// The ingest's `[keys]` section also gets `line` (e.g. `bridge_overlap = "1h"`).
    pub(crate) fn with_keys_line(mut self, line: &str) -> Pipeline {
        self.keys_extra.push_str(line);
        self.keys_extra.push('\n');
        self
    }

    /// Both stages read and write Avro in Confluent's wire format, with the schema
    /// registry at `url`.
    pub(crate) fn with_avro(mut self, url: &str) -> Pipeline {
        self.format = Some(url.to_owned());
        self
    }

    /// `config` with `format = "avro"` and the `[STAGE.schema_registry]` table, or as it
    /// is (JSON).
    fn with_format(&self, config: StageConfig, stage: &str) -> StageConfig {
        match &self.format {
            None => config,
            // The tests' one registry stands for both zones' on the sink's side.
            Some(url) => {
                let config = config.set(stage, "format", "avro").set(
                    &format!("{stage}.schema_registry"),
                    "url",
                    url,
                );
                if stage == "sink" {
                    config.set("sink.cloud_schema_registry", "url", url)
                } else {
                    config
                }
            }
        }
    }

    /// Both stages' `[metrics]` section also gets `line` (e.g. `linger_after_failure = "20s"`).
    pub(crate) fn with_metrics_line(mut self, line: &str) -> Pipeline {
        self.metrics_extra.push_str(line);
        self.metrics_extra.push('\n');
        self
    }

    /// The sink's cloud producer also gets librdkafka property `key` (`[sink.kafka]`).
    pub(crate) fn with_sink_kafka(mut self, key: &str, value: &str) -> Pipeline {
        self.sink_kafka.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Where the sink reaches the cloud: through the link in front of the cloud broker
    /// if it has one, else straight.
    pub(crate) fn sink_cloud_bootstrap(&self) -> String {
        self.cloud
            .link()
            .map_or_else(|| self.cloud.bootstrap(), |link| link.bootstrap())
    }

    /// The `[sink.kafka]` properties: TLS with the client certificate, unless
    /// `with_certificate` is false, and [`sink_kafka`](Self::with_sink_kafka).
    fn cloud_tls(&self, with_certificate: bool) -> BTreeMap<String, String> {
        let mut properties = self.cloud.client_properties();
        properties.retain(|key, _| {
            key != "bootstrap.servers"
                && (with_certificate
                    || !key.starts_with("ssl.certificate") && !key.starts_with("ssl.key"))
        });
        properties.extend(self.sink_kafka.clone());
        properties
    }

    /// Writes the ingest config (keys, ingest, metrics) and returns its path.
    pub(crate) fn ingest_config(&self, metrics_port: u16) -> PathBuf {
        let config = StageConfig::new()
            .keys(&self.scratch.keyring, &self.scratch.kek)
            .set("keys", "audit_topic", &self.audit_topic)
            .set("keys", "bridge_topic", &self.bridge_topic)
            .line("keys", &self.keys_extra)
            .ingest(
                &self.onprem.bootstrap(),
                [&self.raw, &self.pseudonymized, &self.quarantine],
                &self.policy,
            )
            .set("ingest", "group_id", &self.ingest_group)
            .set("ingest", "max_in_flight", MAX_IN_FLIGHT)
            .set("ingest", "delivery", self.delivery.as_str())
            // Unique among the live instances, the same across restarts (a StatefulSet pod
            // name): the default, GROUP.HOSTNAME, is the same for every instance here.
            .set(
                "ingest",
                "transactional_id",
                format!("{}.{metrics_port}", self.ingest_group),
            )
            .set("ingest.kafka", "session.timeout.ms", 6000);
        self.with_format(config, "ingest")
            .metrics(metrics_port)
            .line("metrics", &self.metrics_extra)
            .write(&self.scratch.path(&format!("ingest-{metrics_port}.toml")))
    }

    /// Writes the sink config (sink, metrics; no keys) and returns its path.
    pub(crate) fn sink_config(&self, metrics_port: u16, with_certificate: bool) -> PathBuf {
        self.sink_config_with(metrics_port, with_certificate, "")
    }

    /// [`sink_config`](Self::sink_config) with `extra` lines in `[sink]`.
    pub(crate) fn sink_config_with(
        &self,
        metrics_port: u16,
        with_certificate: bool,
        extra: &str,
    ) -> PathBuf {
        let config = StageConfig::new()
            .sink(
                (&self.onprem.bootstrap(), &self.pseudonymized),
                (&self.sink_cloud_bootstrap(), &self.cloud_topic),
                &self.quarantine,
                &self.policy,
            )
            .set("sink", "group_id", &self.sink_group)
            .set("sink", "max_in_flight", MAX_IN_FLIGHT)
            .set("sink", "delivery", self.delivery.as_str())
            .set("sink", "offsets_topic", &self.offsets_topic)
            .line("sink", extra)
            .set("sink.source_kafka", "session.timeout.ms", 6000)
            .properties("sink.kafka", &self.cloud_tls(with_certificate))
            .set("sink.kafka", "compression.type", "zstd");
        self.with_format(config, "sink")
            .metrics(metrics_port)
            .line("metrics", &self.metrics_extra)
            .write(&self.scratch.path(&format!("sink-{metrics_port}.toml")))
    }

    /// Starts `ingest` and `sink` as two processes on free metrics ports, logging into `logs`.
    pub(crate) fn start_stages(&self, logs: &std::path::Path) -> (Stage, Stage) {
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
    pub(crate) fn produce(&self, events: u64, malformed_ratio: f64, seed: u64) {
        let args = self.produce_args(events, malformed_ratio, seed);
        let run = self
            .scratch
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run.ok();
        eprintln!("{}", run.stderr().trim_end());
    }

    /// `pseudopipe produce --rate RATE` in the background, as retail systems produce.
    pub(crate) fn produce_in_background(
        &self,
        events: u64,
        malformed_ratio: f64,
        seed: u64,
        rate: u64,
    ) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pseudopipe"));
        command
            .args(self.produce_args(events, malformed_ratio, seed))
            .args(["--rate", &rate.to_string()]);
        Process::start("produce", command)
    }

    /// The arguments of `pseudopipe produce` into this test's raw topic.
    fn produce_args(&self, events: u64, malformed_ratio: f64, seed: u64) -> Vec<String> {
        [
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
        .into()
    }
}

/// A running `pseudopipe ingest|sink --config FILE` with its metrics address.
pub(crate) struct Stage {
    pub(crate) process: Process,
    pub(crate) command: &'static str,
    pub(crate) config: PathBuf,
    pub(crate) metrics_port: u16,
    pub(crate) log: PathBuf,
}

impl Stage {
    pub(crate) fn start(
        command: &'static str,
        config: PathBuf,
        metrics_port: u16,
        log: PathBuf,
    ) -> Stage {
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

    pub(crate) fn wait_started(&mut self) {
        assert!(
            self.process
                .wait_for_log("Pipeline started.", Duration::from_secs(60)),
            "{}",
            self.process.failure("start")
        );
    }

    /// Starts the same stage again (after a SIGTERM or a kill), appending to the same log,
    /// and waits until it has started.
    pub(crate) fn restart(&mut self) {
        let before = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Pipeline started.")
            .count();
        self.respawn();
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

    pub(crate) fn metrics(&self) -> Metrics {
        Metrics(scrape(self.metrics_port, "/metrics"))
    }

    /// Starts the same stage again, appending to the same log, without waiting: what a
    /// supervisor does when the stage has exited, whether or not its clusters answer.
    pub(crate) fn respawn(&mut self) {
        self.process = Process::start_logging_to(
            self.command,
            stage_command(self.command, &self.config),
            &self.log,
        );
    }

    /// The process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

pub(crate) fn stage_command(command: &str, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pseudopipe"));
    cmd.args([command, "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info,plumbing=debug");
    cmd
}

/// `GET path` on the metrics port, the body as text.
pub(crate) fn scrape(port: u16, path: &str) -> String {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `GET path` on a metrics port: the status code and the body.
pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    (status, body.to_owned())
}

/// A Prometheus text exposition.
pub(crate) struct Metrics(pub(crate) String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include every one of `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
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
pub(crate) struct Expected {
    pub(crate) valid: BTreeMap<String, Value>,
    /// The position of each valid event in the order they were produced.
    pub(crate) produced_at: HashMap<String, usize>,
    pub(crate) malformed: HashMap<Vec<u8>, Vec<&'static str>>,
    pub(crate) malformed_count: usize,
}

pub(crate) fn expected(events: u64, malformed_ratio: f64, seed: u64) -> Expected {
    // `pseudopipe produce` builds the same generator from the same options.
    let mut generator = Generator::new(seed)
        .with_tenants(vec![TENANT.to_owned()])
        .with_malformed_ratio(malformed_ratio);
    let mut expected = Expected {
        valid: BTreeMap::new(),
        produced_at: HashMap::new(),
        malformed: HashMap::new(),
        malformed_count: 0,
    };
    for _ in 0..events {
        let record = generator.next_record();
        match record.kind.expected_reason() {
            None => {
                let event: Value = serde_json::from_slice(&record.payload).unwrap();
                let id = event["event_id"].as_str().unwrap().to_owned();
                expected
                    .produced_at
                    .insert(id.clone(), expected.produced_at.len());
                expected.valid.insert(id, event);
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
pub(crate) fn distinct_events(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap().to_owned())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Reads `topic` until every one of `ids` is there (duplicates allowed) or `timeout` passes.
pub(crate) fn read_until_complete(
    broker: &Broker,
    topic: &str,
    ids: usize,
    timeout: Duration,
) -> Vec<Record> {
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
pub(crate) fn check_cloud(p: &Pipeline, expected: &Expected, cloud: &[Record]) -> usize {
    let batch: HashMap<String, String> = batch_mode(p, expected.valid.values())
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

/// The client properties a tool needs to read `broker` (TLS, certificates), as
/// `KEY=VALUE` for `--scan-property`.
pub(crate) fn scan_properties(broker: &Broker) -> Vec<String> {
    broker
        .client_properties()
        .into_iter()
        .filter(|(key, _)| key != "bootstrap.servers")
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// `events` pseudonymized by `pseudopipe pseudonymize` (batch mode) with the test's
/// policy and keyring: the output lines, in order.
pub(crate) fn batch_mode<'a>(p: &Pipeline, events: impl Iterator<Item = &'a Value>) -> String {
    let input: String = events.map(|event| format!("{event}\n")).collect();
    let input_path = p.scratch.path("batch-input.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let output_path = p.scratch.path("batch-output.jsonl");
    p.scratch
        .run(&[
            "pseudonymize",
            "--policy",
            p.policy.to_str().unwrap(),
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
    std::fs::read_to_string(&output_path).unwrap()
}

/// Checks the on-prem quarantine: every malformed payload, unchanged, with its reason and source.
pub(crate) fn check_quarantine(p: &Pipeline, expected: &Expected) -> Quarantine {
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
pub(crate) struct Quarantine {
    /// Distinct quarantined records by reason.
    pub(crate) by_reason: BTreeMap<String, usize>,
    /// Records quarantined more than once (after a restart).
    pub(crate) duplicates: usize,
}

/// Prints where the events missing from the cloud were in the raw and pseudonymized
/// topics (partition and offset ranges), the watermarks, and what the stages logged
/// about their partitions and commits: what a loss needs to be understood.
pub(crate) fn explain_missing(
    p: &Pipeline,
    expected: &Expected,
    cloud: &[Record],
    stages: &[&Stage],
) {
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
    // (what lost it, the topic the offsets are in, partition) → offsets.
    let mut lost_where: BTreeMap<(&str, &str, i32), Vec<i64>> = BTreeMap::new();
    // Where the sink's losses were in its input: one aborted transaction's span, say.
    for record in &middle {
        if event_id(record).is_some_and(|id| !in_cloud.contains(&id)) {
            lost_where
                .entry((
                    "lost by sink, in its input",
                    "pseudonymized",
                    record.partition,
                ))
                .or_default()
                .push(record.offset);
        }
    }
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
            .entry((stage, "raw", record.partition))
            .or_default()
            .push(record.offset);
    }
    for ((stage, topic, partition), offsets) in lost_where {
        eprintln!("{stage}: {topic}[{partition}] offsets {}", ranges(&offsets));
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
                    "abort",
                    "ewind",
                    "refused",
                    "fenced",
                ]
                .iter()
                .any(|word| line.contains(word))
            })
            .take(120)
            .map(|line| line.get(..400).unwrap_or(line))
            .collect();
        eprintln!(
            "--- {} log, partitions, commits and aborts\n{}",
            stage.command,
            interesting.join("\n")
        );
    }
    // After every log: a failure summary that is cut short keeps the logs.
    for stage in stages {
        let metrics = stage.metrics().0;
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|line| !line.starts_with('#') && !line.contains("_bucket{"))
            .collect();
        eprintln!("--- {} metrics\n{}", stage.command, counters.join("\n"));
    }
}

/// The offsets between the first and the last of `sorted` that are not in it.
pub(crate) fn missing_between(sorted: &[i64]) -> Vec<i64> {
    sorted
        .windows(2)
        .flat_map(|pair| (pair[0] + 1)..pair[1])
        .collect()
}

/// Sorted offsets as ranges: `3-7, 9, 12-40`.
pub(crate) fn ranges(offsets: &[i64]) -> String {
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

/// The memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    /// Resident now (`VmRSS`), KiB.
    pub(crate) rss_kib: u64,
    /// The resident peak since it started (`VmHWM`), KiB.
    pub(crate) hwm_kib: u64,
}

/// The memory of process `pid`, or `None` once it has exited.
pub(crate) fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}
