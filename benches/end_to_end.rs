//! End-to-end throughput through two real Apache Kafka brokers (testkit: an on-prem one,
//! plaintext, and a cloud one demanding client certificates), in events/s, for three
//! pipelines over the same pre-filled raw topic (200,000 simulated redemptions, 1 %
//! malformed, 3 partitions per topic):
//!
//! - `pass-through`, the ceiling: two plain librdkafka consume → produce copies (raw →
//!   on-prem copy topic → cloud topic over mTLS), run concurrently in this process with
//!   the stages' producer defaults and no transformation;
//! - `at_least_once`: the built binary, `pseudopipe ingest` and `pseudopipe sink` as two
//!   processes;
//! - `exactly_once`: the same with `delivery = "exactly_once"` in both stages.
//!
//! Each mode gets fresh downstream topics and consumer groups. A `read_committed`
//! consumer counts the cloud topic; the time runs from the pipeline's start until it has
//! seen every valid event (the malformed ones go to quarantine), so it includes process
//! start-up and the consumer-group joins. The stages are then stopped with SIGTERM.
//!
//! ```sh
//! cargo bench -p pseudopipe --bench end_to_end                   # 200,000 events
//! cargo bench -p pseudopipe --bench end_to_end -- --events 20000
//! PSEUDOPIPE_BENCH_EVENTS=20000 cargo bench -p pseudopipe --bench end_to_end
//! ```
//!
//! Needs the Kafka jars and a Java runtime (`scripts/install-test-deps.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use plumbing::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use plumbing::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use plumbing::rdkafka::message::{BorrowedMessage, Message as _};
use plumbing::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use plumbing::rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;
use testkit::{free_port, random_name, shared_brokers, Broker, Brokers, Process};

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);
const TENANT: &str = "brand-a";
const PARTITIONS: u32 = 3;
const DEFAULT_EVENTS: u64 = 200_000;
const EVENTS_VARIABLE: &str = "PSEUDOPIPE_BENCH_EVENTS";
const MALFORMED_RATIO: &str = "0.01";
/// How long one mode may take to bring every record to the cloud.
const MODE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a stage gets to drain and commit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How often the pass-through copies commit their consumed positions.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
const LOG_TAIL_LINES: usize = 40;

fn main() -> Result<()> {
    let events = events()?;
    eprintln!("starting the on-prem and the cloud broker...");
    let bench = Bench::prepare(shared_brokers(), events)?;
    let mut results = Vec::new();
    for mode in [Mode::PassThrough, Mode::AtLeastOnce, Mode::ExactlyOnce] {
        eprintln!("measuring {}...", mode.name());
        let seconds = bench
            .measure(mode)
            .with_context(|| format!("{} failed", mode.name()))?;
        results.push((mode, seconds));
    }
    print_table(events, bench.expected, &results);
    Ok(())
}

/// `--events N`, else `$PSEUDOPIPE_BENCH_EVENTS`, else 200,000. Other arguments (cargo
/// passes `--bench`) are ignored.
fn events() -> Result<u64> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--events" {
            let value = args.next().context("`--events` needs a number")?;
            return value
                .parse()
                .with_context(|| format!("`--events {value}`: not a number"));
        }
    }
    match std::env::var(EVENTS_VARIABLE) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{EVENTS_VARIABLE}={value}: not a number")),
        Err(_) => Ok(DEFAULT_EVENTS),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    PassThrough,
    AtLeastOnce,
    ExactlyOnce,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PassThrough => "pass-through",
            Mode::AtLeastOnce => "at_least_once",
            Mode::ExactlyOnce => "exactly_once",
        }
    }
}

/// The brokers, a keyring, and the raw topic filled once for all modes.
struct Bench {
    brokers: &'static Brokers,
    /// Keyring, KEK, stage configs and logs.
    scratch: TempDir,
    raw: String,
    /// Valid events, the records every mode must bring to the cloud.
    expected: usize,
}

impl Bench {
    fn prepare(brokers: &'static Brokers, events: u64) -> Result<Bench> {
        let scratch = tempfile::Builder::new()
            .prefix("pseudopipe-bench-")
            .tempdir()?;
        let raw = brokers.onprem.random_topic("bench.raw", PARTITIONS);
        let mut bench = Bench {
            brokers,
            scratch,
            raw,
            expected: 0,
        };
        bench.make_keyring()?;
        eprintln!("producing {events} events to {}...", bench.raw);
        bench.expected = bench.fill_raw_topic(events)?;
        Ok(bench)
    }

    fn make_keyring(&self) -> Result<()> {
        let (kek, keyring) = (self.path("kek"), self.path("keyring.json"));
        pseudopipe(&["keys", "new-kek", "--out", text(&kek)])?;
        pseudopipe(&[
            "keys",
            "init",
            "--keyring",
            text(&keyring),
            "--kek-file",
            text(&kek),
            "--tenant",
            TENANT,
        ])?;
        Ok(())
    }

    /// `pseudopipe produce`; returns the number of valid events it reports.
    fn fill_raw_topic(&self, events: u64) -> Result<usize> {
        let output = pseudopipe(&[
            "produce",
            "--brokers",
            &self.brokers.onprem.bootstrap(),
            "--topic",
            &self.raw,
            "--events",
            &events.to_string(),
            "--malformed-ratio",
            MALFORMED_RATIO,
            "--seed",
            "7",
            "--tenant",
            TENANT,
        ])?;
        // "produced N events to T (V valid, M malformed) in ..."
        let line = output
            .lines()
            .find(|line| line.starts_with("produced "))
            .with_context(|| format!("`produce` did not say what it produced:\n{output}"))?;
        line.split_once('(')
            .and_then(|(_, rest)| rest.split_once(" valid"))
            .and_then(|(valid, _)| valid.parse().ok())
            .with_context(|| format!("no valid count in {line:?}"))
    }

    /// Runs `mode` on fresh topics and groups until the cloud has every valid event;
    /// returns the seconds from the pipeline's start.
    fn measure(&self, mode: Mode) -> Result<f64> {
        let cloud_topic = self.brokers.cloud.random_topic("bench.cloud", PARTITIONS);
        let launch = self.launch(mode, &cloud_topic)?;
        let counter = Counter::start(&self.brokers.cloud, &cloud_topic, self.expected)?;
        let started = Instant::now();
        let mut running = launch.start()?;
        let outcome = counter.wait(&mut running);
        let tails = running.log_tails();
        running.stop()?;
        match outcome {
            Ok(done) => Ok((done - started).as_secs_f64()),
            Err(error) => Err(anyhow::anyhow!("{error:#}\n{tails}")),
        }
    }

    /// Creates the mode's other topics and writes its configs, so that the clock only
    /// runs for the pipeline itself.
    fn launch(&self, mode: Mode, cloud_topic: &str) -> Result<Launch> {
        let onprem = &self.brokers.onprem;
        if mode == Mode::PassThrough {
            return Ok(Launch::PassThrough(PassThrough {
                onprem: onprem.bootstrap(),
                raw: self.raw.clone(),
                copy: onprem.random_topic("bench.copy", PARTITIONS),
                cloud: self.brokers.cloud.bootstrap(),
                cloud_tls: self.cloud_tls(),
                cloud_topic: cloud_topic.to_owned(),
            }));
        }
        let stages = Stages {
            pseudonymized: onprem.random_topic("bench.pseudonymized", PARTITIONS),
            quarantine: onprem.random_topic("bench.quarantine", PARTITIONS),
            cloud_topic: cloud_topic.to_owned(),
            // The sink stores its source offsets there: a partition per source partition.
            offsets_topic: (mode == Mode::ExactlyOnce).then(|| {
                self.brokers
                    .cloud
                    .random_topic("bench.sink-offsets", PARTITIONS)
            }),
            delivery: if mode == Mode::ExactlyOnce {
                "exactly_once"
            } else {
                "at_least_once"
            },
        };
        Ok(Launch::Stages(vec![
            self.stage_files(mode, "ingest", self.ingest_config(&stages))?,
            self.stage_files(mode, "sink", self.sink_config(&stages))?,
        ]))
    }

    /// Writes the config of `command` (ingest or sink) and names its log.
    fn stage_files(&self, mode: Mode, command: &'static str, config: String) -> Result<StageFiles> {
        let files = StageFiles {
            command,
            config: self.path(&format!("{}-{command}.toml", mode.name())),
            log: self.path(&format!("{}-{command}.log", mode.name())),
        };
        std::fs::write(&files.config, config)?;
        Ok(files)
    }

    fn ingest_config(&self, stages: &Stages) -> String {
        format!(
            r#"[keys]
keyring = {keyring:?}
kek_file = {kek:?}

[ingest]
brokers = "{onprem}"
group_id = "{group}"
input_topic = "{raw}"
output_topic = "{pseudonymized}"
quarantine_topic = "{quarantine}"
policy = {POLICY:?}
delivery = "{delivery}"

[metrics]
listen = "127.0.0.1:{port}"
"#,
            keyring = text(&self.path("keyring.json")),
            kek = text(&self.path("kek")),
            onprem = self.brokers.onprem.bootstrap(),
            group = random_name("bench-ingest"),
            raw = self.raw,
            pseudonymized = stages.pseudonymized,
            quarantine = stages.quarantine,
            delivery = stages.delivery,
            port = free_port(),
        )
    }

    fn sink_config(&self, stages: &Stages) -> String {
        let offsets_topic = stages
            .offsets_topic
            .as_ref()
            .map(|topic| format!("offsets_topic = \"{topic}\"\n"))
            .unwrap_or_default();
        let tls: String = self
            .cloud_tls()
            .iter()
            .map(|(key, value)| format!("{key:?} = {value:?}\n"))
            .collect();
        format!(
            r#"[sink]
source_brokers = "{onprem}"
source_topic = "{pseudonymized}"
group_id = "{group}"
brokers = "{cloud}"
topic = "{cloud_topic}"
policy = {POLICY:?}
quarantine_topic = "{quarantine}"
delivery = "{delivery}"
{offsets_topic}
[sink.kafka]
{tls}
[metrics]
listen = "127.0.0.1:{port}"
"#,
            onprem = self.brokers.onprem.bootstrap(),
            pseudonymized = stages.pseudonymized,
            group = random_name("bench-sink"),
            cloud = self.brokers.cloud.bootstrap(),
            cloud_topic = stages.cloud_topic,
            quarantine = stages.quarantine,
            delivery = stages.delivery,
            port = free_port(),
        )
    }

    /// The cloud broker's client properties (TLS with the client certificate) without
    /// `bootstrap.servers`, which comes from the `brokers` option.
    fn cloud_tls(&self) -> BTreeMap<String, String> {
        let mut properties = self.brokers.cloud.client_properties();
        properties.remove("bootstrap.servers");
        properties
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

/// The downstream topics and delivery of one run of the two stages.
struct Stages {
    pseudonymized: String,
    quarantine: String,
    cloud_topic: String,
    offsets_topic: Option<String>,
    delivery: &'static str,
}

/// A pipeline ready to start: everything it needs exists.
enum Launch {
    PassThrough(PassThrough),
    Stages(Vec<StageFiles>),
}

impl Launch {
    fn start(self) -> Result<Running> {
        match self {
            Launch::PassThrough(pass_through) => pass_through.start(),
            Launch::Stages(stages) => Ok(Running::Stages(
                stages.iter().map(StageFiles::start).collect(),
            )),
        }
    }
}

/// The config and the log of one stage process.
struct StageFiles {
    command: &'static str,
    config: PathBuf,
    log: PathBuf,
}

impl StageFiles {
    /// `pseudopipe COMMAND --config CONFIG`, quiet, logging to `log`.
    fn start(&self) -> Process {
        let mut pseudopipe = Command::new(env!("CARGO_BIN_EXE_pseudopipe"));
        pseudopipe
            .args([self.command, "--config", text(&self.config)])
            .env("RUST_LOG", "warn");
        Process::start_logging_to(self.command, pseudopipe, &self.log)
    }
}

/// The ceiling: raw → copy on-prem and copy → cloud, no transformation.
struct PassThrough {
    onprem: String,
    raw: String,
    copy: String,
    cloud: String,
    cloud_tls: BTreeMap<String, String>,
    cloud_topic: String,
}

impl PassThrough {
    /// Starts both hops, each on its own thread, as ingest and sink run side by side.
    fn start(self) -> Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let on_prem_hop = Hop {
            consumer: plumbing::config::consumer(
                &self.onprem,
                &random_name("bench-copy-onprem"),
                &BTreeMap::new(),
            )?,
            source: self.raw,
            producer: plumbing::config::producer(&self.onprem, &BTreeMap::new())?,
            destination: self.copy.clone(),
        };
        let cloud_hop = Hop {
            consumer: plumbing::config::consumer(
                &self.onprem,
                &random_name("bench-copy-cloud"),
                &BTreeMap::new(),
            )?,
            source: self.copy,
            producer: plumbing::config::producer(&self.cloud, &self.cloud_tls)?,
            destination: self.cloud_topic,
        };
        let hops = [on_prem_hop, cloud_hop]
            .into_iter()
            .map(|hop| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || hop.run(&stop))
            })
            .collect();
        Ok(Running::PassThrough { stop, hops })
    }
}

/// One consume → produce copy of every record (key and payload) of `source` into `destination`.
struct Hop {
    consumer: plumbing::rdkafka::ClientConfig,
    source: String,
    producer: plumbing::rdkafka::ClientConfig,
    destination: String,
}

impl Hop {
    fn run(self, stop: &AtomicBool) -> Result<()> {
        let consumer: BaseConsumer = self.consumer.create()?;
        consumer.subscribe(&[&self.source])?;
        let producer: BaseProducer = self.producer.create()?;
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                send(&producer, &self.destination, &message?)?;
            }
            producer.poll(Duration::ZERO);
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                // Fails while nothing has been consumed yet; the next round commits.
                let _ = consumer.commit(&consumer.position()?, CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    }
}

/// Sends a copy of `message`, waiting for room while the producer's queue is full.
fn send(producer: &BaseProducer, topic: &str, message: &BorrowedMessage<'_>) -> Result<()> {
    let mut record = BaseRecord::to(topic);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => bail!("cannot send to {topic}: {error}"),
        }
    }
}

/// A pipeline under measurement.
enum Running {
    PassThrough {
        stop: Arc<AtomicBool>,
        hops: Vec<JoinHandle<Result<()>>>,
    },
    Stages(Vec<Process>),
}

impl Running {
    /// An error if a part of the pipeline has ended on its own.
    fn check(&mut self) -> Result<()> {
        match self {
            Running::PassThrough { hops, .. } => {
                if let Some(index) = hops.iter().position(JoinHandle::is_finished) {
                    join(hops.swap_remove(index))?;
                    bail!("a pass-through hop ended early");
                }
            }
            Running::Stages(stages) => {
                for stage in stages {
                    if let Some(status) = stage.exit_status() {
                        bail!("{} exited early ({status})", stage.name());
                    }
                }
            }
        }
        Ok(())
    }

    /// The last lines of each stage's log, for a failure message.
    fn log_tails(&self) -> String {
        match self {
            Running::PassThrough { .. } => "the pass-through logs nothing".to_owned(),
            Running::Stages(stages) => stages
                .iter()
                .map(|stage| {
                    format!(
                        "--- last lines of {} ({}) ---\n{}",
                        stage.name(),
                        stage.log_path().display(),
                        stage.log_tail(LOG_TAIL_LINES)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Stops the hops, or the stages with SIGTERM; says so if one does not stop cleanly.
    fn stop(self) -> Result<()> {
        match self {
            Running::PassThrough { stop, hops } => {
                stop.store(true, Ordering::Relaxed);
                hops.into_iter().try_for_each(join)
            }
            Running::Stages(stages) => {
                for mut stage in stages {
                    match stage.terminate(STOP_GRACE) {
                        Some(status) if status.success() => {}
                        Some(status) => {
                            eprintln!("note: {} exited with {status} after SIGTERM", stage.name())
                        }
                        None => eprintln!(
                            "note: {} did not stop within {STOP_GRACE:?} of SIGTERM and was killed",
                            stage.name()
                        ),
                    }
                }
                Ok(())
            }
        }
    }
}

fn join(hop: JoinHandle<Result<()>>) -> Result<()> {
    hop.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A `read_committed` consumer counting the records of a cloud topic from the beginning
/// of every partition, on its own thread.
struct Counter {
    expected: usize,
    thread: JoinHandle<(usize, Option<Instant>)>,
}

impl Counter {
    /// Assigns every partition and connects before returning, so that the pipeline
    /// started next is not timed against the counter's own start-up.
    fn start(cloud: &Broker, topic: &str, expected: usize) -> Result<Counter> {
        let consumer: BaseConsumer = cloud
            .client()
            .config()
            // librdkafka wants a group even for assigned partitions; nothing is committed.
            .set("group.id", random_name("bench-counter"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS as i32 {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let deadline = Instant::now() + MODE_TIMEOUT;
        let thread = thread::spawn(move || count(&consumer, expected, deadline));
        Ok(Counter { expected, thread })
    }

    /// When the last expected record arrived, or an error once the pipeline fails or
    /// the time is up.
    fn wait(self, running: &mut Running) -> Result<Instant> {
        while !self.thread.is_finished() {
            running.check()?;
            thread::sleep(Duration::from_millis(100));
        }
        match self.thread.join() {
            Ok((_, Some(done))) => Ok(done),
            Ok((counted, None)) => bail!(
                "{counted} of {} records reached the cloud within {MODE_TIMEOUT:?}",
                self.expected
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Polls until `expected` records have arrived (returns when) or `deadline` has passed.
fn count(consumer: &BaseConsumer, expected: usize, deadline: Instant) -> (usize, Option<Instant>) {
    let mut counted = 0;
    while counted < expected {
        if Instant::now() >= deadline {
            return (counted, None);
        }
        // Transient fetch errors are retried by librdkafka.
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            counted += 1;
        }
    }
    (counted, Some(Instant::now()))
}

fn print_table(events: u64, expected: usize, results: &[(Mode, f64)]) {
    println!();
    println!(
        "{events} events, {expected} valid ones to the cloud, {PARTITIONS} partitions per topic"
    );
    println!(
        "{:<15} {:>10} {:>10} {:>12}",
        "pipeline", "records", "seconds", "events/s"
    );
    for (mode, seconds) in results {
        println!(
            "{:<15} {:>10} {:>10.2} {:>12.0}",
            mode.name(),
            expected,
            seconds,
            expected as f64 / seconds
        );
    }
    let rate = |wanted: Mode| {
        results
            .iter()
            .find(|(mode, _)| *mode == wanted)
            .map(|(_, seconds)| expected as f64 / seconds)
    };
    if let (Some(stages), Some(ceiling)) = (rate(Mode::AtLeastOnce), rate(Mode::PassThrough)) {
        println!("at_least_once / pass-through: {:.2}", stages / ceiling);
    }
    println!(
        "seconds: from the pipeline's start to the last record counted on the cloud \
         (read_committed), including process start-up and the consumer-group joins"
    );
}

/// Runs the built binary with `args` and returns its stdout and stderr; an error with
/// both if it fails.
fn pseudopipe(args: &[&str]) -> Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_pseudopipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("PSEUDOPIPE_ACTOR", "bench")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "`pseudopipe {}` failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    Ok(text)
}

/// A path as the UTF-8 text a config file and a command line take.
fn text(path: &Path) -> &str {
    path.to_str()
        .expect("temporary paths are UTF-8 on the machines the bench runs on")
}
