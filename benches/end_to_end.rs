//! End to end through two real Apache Kafka brokers (testkit: an on-prem one, plaintext,
//! and a cloud one demanding client certificates), for four pipelines:
//!
//! - `pass-through`, the ceiling: two plain librdkafka consume → produce copies (raw →
//!   on-prem copy topic → cloud topic over mTLS), run concurrently in this process with
//!   the stages' producer defaults and no transformation;
//! - `at_least_once`: the built binary, `pseudopipe ingest` and `pseudopipe sink` as two
//!   processes;
//! - `exactly_once`: the same with `delivery = "exactly_once"` in both stages;
//! - `at_least_once@base` and `exactly_once@base`, with `--baseline BINARY`: the same two
//!   pipelines run by another build of `pseudopipe` (e.g. the commit before a change),
//!   each right after the built binary's run of the same mode, so that a change is
//!   measured against its baseline in one run, on the same brokers and under the same load;
//! - `python`: `bench/reference/pseudonymize.py`, the same job as one Python process with
//!   `confluent-kafka` (raw → cloud in one hop, at least once), run with the interpreter
//!   of `$PSEUDOPIPE_BENCH_PYTHON`, else `~/.cache/pseudopipe/bench-venv/bin/python`
//!   (`scripts/bench-pipeline.sh` creates it); skipped, with the reason, when that
//!   interpreter or its `confluent_kafka` is missing.
//!
//! Two phases, each mode on fresh downstream topics and consumer groups:
//!
//! 1. **Throughput** over one pre-filled raw topic (200,000 simulated redemptions, 1 %
//!    malformed, 3 partitions per topic): a `read_committed` consumer counts the cloud
//!    topic, and the time runs from the pipeline's start until it has seen every valid
//!    event, so it includes process start-up and the consumer-group joins. events/s
//!    counts valid events; MB/s the raw bytes of all events, malformed ones included.
//! 2. **Latency at a fixed rate** (20,000 events/s for 15 s) into a fresh raw topic: once
//!    a 2-second warm-up at that rate has reached the cloud, each valid event's produce
//!    time is matched, by `event_id` (which the policy keeps), with the time a
//!    `read_committed` consumer of the cloud topic receives it; p50 and p99 of those.
//!    An event still missing 60 s after the last one was produced counts with the time
//!    waited, and a percentile that rests on one is printed as a lower bound (`≥`).
//!
//! `--repeat N` runs the throughput phase N times, every mode once per round in the order
//! above except that every other round runs each baseline before its built mode, and prints
//! each mode's median with every round's figure: on a shared machine one run's load decides
//! more than a small change does, and brokers warming up over the rounds would favour
//! whichever side always runs second. An even N balances the two orders.
//!
//! The peak RSS (`VmHWM`) of every stage process is read from `/proc` before it is
//! stopped with SIGTERM; the table shows the larger of the two phases.
//!
//! ```sh
//! cargo bench -p pseudopipe --bench end_to_end                   # 200,000 events, 20,000/s for 15 s
//! cargo bench -p pseudopipe --bench end_to_end -- --events 20000 --rate 20000 --seconds 15
//! cargo bench -p pseudopipe --bench end_to_end -- --baseline /tmp/pseudopipe-before \
//!     --baseline-policy /tmp/before/schemas/coupon_redemption.policy.toml --repeat 3
//! PSEUDOPIPE_BENCH_EVENTS=20000 cargo bench -p pseudopipe --bench end_to_end
//! # no Kafka: write the simulated events of `pseudopipe bench transform --events N` as JSON lines
//! cargo bench -p pseudopipe --bench end_to_end -- --write-events events.jsonl --events 200000
//! ```
//!
//! Needs the Kafka jars and a Java runtime (`scripts/install-test-deps.sh`);
//! `scripts/bench-pipeline.sh` installs everything and runs it.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use plumbing::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use plumbing::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use plumbing::rdkafka::message::Message as _;
use plumbing::rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext,
};
use plumbing::rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use simulator::{Generator, Record};
use tempfile::TempDir;
use testkit::{free_port, random_name, shared_brokers, Broker, Brokers, Process, StageConfig};

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);
const PYTHON_REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/bench/reference/pseudonymize.py"
);
const PYTHON_VARIABLE: &str = "PSEUDOPIPE_BENCH_PYTHON";
const TENANT: &str = "brand-a";
const PARTITIONS: u32 = 3;
const DEFAULT_EVENTS: u64 = 200_000;
const EVENTS_VARIABLE: &str = "PSEUDOPIPE_BENCH_EVENTS";
/// The fixed rate of the latency phase, in events/s (the issue's figure).
const DEFAULT_RATE: f64 = 20_000.0;
/// How long the latency phase produces at that rate.
const DEFAULT_SECONDS: f64 = 15.0;
const MALFORMED_RATIO: f64 = 0.01;
/// Seeds of the throughput fill and of the latency phase's events.
const FILL_SEED: u64 = 7;
const RATE_SEED: u64 = 11;
/// `pseudopipe bench transform` draws its events from seed 1 over these tenants.
const TRANSFORM_SEED: u64 = 1;
const TRANSFORM_TENANTS: [&str; 2] = ["brand-a", "brand-b"];
/// How long one mode may take to bring every record to the cloud.
const MODE_TIMEOUT: Duration = Duration::from_secs(600);
/// The latency phase first produces this long at the rate, and waits for it to arrive,
/// so that start-up and group joins are over when the clock starts.
const WARM_UP: Duration = Duration::from_secs(2);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the latency phase waits for the last events after producing them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stage gets to drain and commit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How often the pass-through copies commit their consumed positions.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
const LOG_TAIL_LINES: usize = 40;

fn main() -> Result<()> {
    let options = Options::parse()?;
    if let Some(path) = &options.write_events {
        return write_events(path, options.events);
    }
    let python = python_reference();
    let load_at_start = load_average();
    eprintln!("starting the on-prem and the cloud broker...");
    let bench = Bench::prepare(shared_brokers(), &options, python)?;
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|mode| *mode != Mode::Python || bench.python.is_some())
        .filter(|mode| !mode.is_baseline() || bench.baseline.is_some())
        .collect();
    let mut rows: Vec<Row> = modes.iter().map(|&mode| Row::new(mode)).collect();
    for round in 1..=options.repeat {
        // Every other round runs each baseline before the built binary's same mode, so that
        // a machine warming up (or cooling down) over the rounds favours neither side.
        let order: Vec<usize> = (0..rows.len())
            .map(|i| match (round % 2 == 0, rows[i].mode.is_baseline()) {
                (true, true) => i - 1,
                (true, false) if rows.get(i + 1).is_some_and(|next| next.mode.is_baseline()) => {
                    i + 1
                }
                _ => i,
            })
            .collect();
        for i in order {
            let row = &mut rows[i];
            eprintln!(
                "throughput, round {round} of {}: {}...",
                options.repeat,
                row.mode.name()
            );
            let outcome = bench.throughput(row.mode);
            if let Some(seconds) = row.settle(outcome) {
                row.rounds.push(seconds);
            }
        }
    }
    for row in &mut rows {
        row.throughput = Throughput::median(&row.rounds);
    }
    for row in &mut rows {
        eprintln!(
            "latency at {:.0} events/s: {}...",
            options.rate,
            row.mode.name()
        );
        let outcome = bench.latency(row.mode, options.rate, options.seconds);
        row.latency = row.settle(outcome);
    }
    print_table(&bench, &options, &rows, (load_at_start, load_average()));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| row.failed)
        .map(|row| row.mode.name())
        .collect();
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

/// The command line. Other arguments (cargo passes `--bench`) are ignored.
struct Options {
    /// `--events N`, else `$PSEUDOPIPE_BENCH_EVENTS`, else 200,000.
    events: u64,
    /// `--rate R`: events/s of the latency phase.
    rate: f64,
    /// `--seconds S`: how long the latency phase produces.
    seconds: f64,
    /// `--write-events FILE`: only write `events` simulated events there.
    write_events: Option<PathBuf>,
    /// `--baseline BINARY`: another `pseudopipe` build to run beside the built one.
    baseline: Option<PathBuf>,
    /// `--baseline-policy FILE`: the policy the baseline runs with, when it does not read
    /// the current one (an older build refuses tables it does not know).
    baseline_policy: Option<PathBuf>,
    /// `--repeat N`: rounds of the throughput phase (1).
    repeat: usize,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut options = Options {
            events: match std::env::var(EVENTS_VARIABLE) {
                Ok(value) => value
                    .parse()
                    .with_context(|| format!("{EVENTS_VARIABLE}={value}: not a number"))?,
                Err(_) => DEFAULT_EVENTS,
            },
            rate: DEFAULT_RATE,
            seconds: DEFAULT_SECONDS,
            write_events: None,
            baseline: None,
            baseline_policy: None,
            repeat: 1,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .with_context(|| format!("`{arg}` needs a value"))
            };
            match arg.as_str() {
                "--events" => options.events = number(&arg, &value()?)?,
                "--rate" => options.rate = number(&arg, &value()?)?,
                "--seconds" => options.seconds = number(&arg, &value()?)?,
                "--write-events" => options.write_events = Some(value()?.into()),
                "--baseline" => options.baseline = Some(value()?.into()),
                "--baseline-policy" => options.baseline_policy = Some(value()?.into()),
                "--repeat" => options.repeat = number(&arg, &value()?)?,
                _ => {}
            }
        }
        ensure!(
            options.rate > 0.0 && options.seconds > 0.0 && options.repeat > 0,
            "`--rate`, `--seconds` and `--repeat` must be positive"
        );
        if let Some(baseline) = &options.baseline {
            ensure!(
                baseline.is_file(),
                "`--baseline {}`: no such file; build the other commit with `cargo build --release` and name its target/release/pseudopipe",
                baseline.display()
            );
        }
        Ok(options)
    }
}

fn number<T: std::str::FromStr>(option: &str, value: &str) -> Result<T> {
    value
        .parse()
        .ok()
        .with_context(|| format!("`{option} {value}`: not a number"))
}

/// Writes the events `pseudopipe bench transform --events N` measures, as JSON lines, so that the
/// Python reference's transform can be timed on the very same events.
fn write_events(path: &Path, events: u64) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut generator = Generator::new(TRANSFORM_SEED)
        .with_tenants(TRANSFORM_TENANTS.iter().map(|t| t.to_string()).collect());
    for _ in 0..events {
        out.write_all(&generator.next_record().payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!(
        "wrote {events} simulated events to {} (seed {TRANSFORM_SEED}, tenants {}: the events of `pseudopipe bench transform --events {events}`)",
        path.display(),
        TRANSFORM_TENANTS.join(" and ")
    );
    Ok(())
}

/// The interpreter of the Python reference, if it can import `confluent_kafka`; says
/// why the reference is skipped otherwise.
fn python_reference() -> Option<PathBuf> {
    let python = match std::env::var_os(PYTHON_VARIABLE) {
        Some(path) => PathBuf::from(path),
        None => {
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/pseudopipe/bench-venv/bin/python")
        }
    };
    let works = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .output();
    match works {
        Ok(output) if output.status.success() => Some(python),
        Ok(output) => {
            eprintln!(
                "skipping the Python reference: {} cannot import confluent_kafka ({}); \
                 scripts/bench-pipeline.sh installs it",
                python.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            None
        }
        Err(error) => {
            eprintln!(
                "skipping the Python reference: cannot run {} ({error}); \
                 scripts/bench-pipeline.sh creates it, ${PYTHON_VARIABLE} picks another",
                python.display()
            );
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    PassThrough,
    AtLeastOnce,
    ExactlyOnce,
    /// `--baseline`'s binary, at least once.
    AtLeastOnceBaseline,
    /// `--baseline`'s binary, exactly once.
    ExactlyOnceBaseline,
    Python,
}

impl Mode {
    /// In the order they run: each baseline right after the built binary's same mode.
    const ALL: [Mode; 6] = [
        Mode::PassThrough,
        Mode::AtLeastOnce,
        Mode::AtLeastOnceBaseline,
        Mode::ExactlyOnce,
        Mode::ExactlyOnceBaseline,
        Mode::Python,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::PassThrough => "pass-through",
            Mode::AtLeastOnce => "at_least_once",
            Mode::AtLeastOnceBaseline => "at_least_once@base",
            Mode::ExactlyOnce => "exactly_once",
            Mode::ExactlyOnceBaseline => "exactly_once@base",
            Mode::Python => "python",
        }
    }

    /// Whether the mode runs the `--baseline` binary.
    fn is_baseline(self) -> bool {
        matches!(self, Mode::AtLeastOnceBaseline | Mode::ExactlyOnceBaseline)
    }

    /// Whether the mode runs the two stages of a `pseudopipe` binary.
    fn is_stages(self) -> bool {
        !matches!(self, Mode::PassThrough | Mode::Python)
    }
}

/// What one mode measured; a phase that failed is `None` and its error was printed.
struct Row {
    mode: Mode,
    throughput: Option<Throughput>,
    /// Each round's seconds of the throughput phase.
    rounds: Vec<f64>,
    latency: Option<Latency>,
    /// Peak RSS in KiB of each process of the mode, the larger of the two phases.
    peak_rss: BTreeMap<String, u64>,
    failed: bool,
}

impl Row {
    fn new(mode: Mode) -> Row {
        Row {
            mode,
            throughput: None,
            rounds: Vec::new(),
            latency: None,
            peak_rss: BTreeMap::new(),
            failed: false,
        }
    }

    /// Keeps the peak RSS of a phase and its result, or prints why it failed.
    fn settle<T>(&mut self, outcome: Result<(T, PeakRss)>) -> Option<T> {
        match outcome {
            Ok((result, peak_rss)) => {
                for (name, kib) in peak_rss {
                    let peak = self.peak_rss.entry(name).or_default();
                    *peak = (*peak).max(kib);
                }
                Some(result)
            }
            Err(error) => {
                eprintln!("{} failed: {error:#}", self.mode.name());
                self.failed = true;
                None
            }
        }
    }
}

/// `VmHWM` in KiB of each process, by name.
type PeakRss = Vec<(String, u64)>;

/// The throughput phase's median round.
struct Throughput {
    seconds: f64,
}

impl Throughput {
    /// The median of `rounds` (the mean of the middle two of an even count); none if no
    /// round succeeded.
    fn median(rounds: &[f64]) -> Option<Throughput> {
        let mut sorted = rounds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let seconds = match sorted.len() {
            0 => return None,
            n if n % 2 == 1 => sorted[middle],
            _ => (sorted[middle - 1] + sorted[middle]) / 2.0,
        };
        Some(Throughput { seconds })
    }
}

struct Latency {
    /// Events produced in the measured window (malformed ones included), and how long
    /// producing them took.
    produced: u64,
    sending: Duration,
    /// Valid events among them.
    sent: usize,
    /// Of those, how many reached the cloud.
    arrived: usize,
    p50: Percentile,
    p99: Percentile,
    /// How long after the last produce call the last event arrived: the backlog left
    /// when the pipeline is slower than the rate; `None` when some never arrived.
    behind: Option<Duration>,
}

/// A latency percentile; `lower_bound` when it rests on an event that never arrived.
struct Percentile {
    value: Duration,
    lower_bound: bool,
}

/// The brokers, a keyring, and the raw topic filled once for the throughput phase.
struct Bench {
    brokers: &'static Brokers,
    /// Keyring, KEK, the master secret (for the Python reference), configs and logs.
    scratch: TempDir,
    raw: String,
    /// Valid events of `raw`, the records every mode must bring to the cloud.
    expected: usize,
    /// Bytes of every payload of `raw`.
    raw_bytes: u64,
    events: u64,
    python: Option<PathBuf>,
    /// `--baseline`: another build of the binary, run beside the built one.
    baseline: Option<PathBuf>,
    /// `--baseline-policy`: the baseline's policy, else the current one.
    baseline_policy: Option<PathBuf>,
    feeder: Feeder,
}

impl Bench {
    fn prepare(
        brokers: &'static Brokers,
        options: &Options,
        python: Option<PathBuf>,
    ) -> Result<Bench> {
        let events = options.events;
        let scratch = tempfile::Builder::new()
            .prefix("pseudopipe-bench-")
            .tempdir()?;
        let raw = brokers.onprem.random_topic("bench.raw", PARTITIONS);
        let feeder = Feeder::new(&brokers.onprem)?;
        let mut bench = Bench {
            brokers,
            scratch,
            raw,
            expected: 0,
            raw_bytes: 0,
            events,
            python,
            baseline: options.baseline.clone(),
            baseline_policy: options.baseline_policy.clone(),
            feeder,
        };
        bench.make_keyring()?;
        eprintln!("producing {events} events to {}...", bench.raw);
        let mut generator = Generator::new(FILL_SEED)
            .with_tenants(vec![TENANT.to_owned()])
            .with_malformed_ratio(MALFORMED_RATIO);
        let (mut expected, mut raw_bytes) = (0, 0);
        bench
            .feeder
            .feed(&bench.raw, &mut generator, events, None, |record, _| {
                expected += usize::from(record.is_valid());
                raw_bytes += record.payload.len() as u64;
            })?;
        (bench.expected, bench.raw_bytes) = (expected, raw_bytes);
        Ok(bench)
    }

    /// A keyring whose active key is a master secret this bench also hands to the Python
    /// reference (`keys import`), so that both write the same tokens.
    fn make_keyring(&self) -> Result<()> {
        let (kek, keyring, secret) = (
            self.path("kek"),
            self.path("keyring.json"),
            self.path("secret.hex"),
        );
        std::fs::write(&secret, hex::encode(rand::random::<[u8; 32]>()))?;
        pseudopipe(&["keys", "new-kek", "--out", text(&kek)])?;
        pseudopipe(&[
            "keys",
            "import",
            "--keyring",
            text(&keyring),
            "--kek-file",
            text(&kek),
            "--tenant",
            TENANT,
            "--version",
            "1",
            "--secret-file",
            text(&secret),
        ])?;
        Ok(())
    }

    /// Runs `mode` over the pre-filled raw topic until the cloud has every valid event.
    fn throughput(&self, mode: Mode) -> Result<(f64, PeakRss)> {
        let cloud_topic = self.brokers.cloud.random_topic("bench.cloud", PARTITIONS);
        let launch = self.launch(mode, "throughput", &self.raw, &cloud_topic)?;
        let counter = Counter::start(&self.brokers.cloud, &cloud_topic, self.expected)?;
        let started = Instant::now();
        let mut running = launch.start()?;
        let outcome = counter.wait(&mut running);
        let peak_rss = running.peak_rss();
        let tails = running.log_tails();
        running.stop()?;
        match outcome {
            Ok(done) => Ok(((done - started).as_secs_f64(), peak_rss)),
            Err(error) => Err(anyhow::anyhow!("{error:#}\n{tails}")),
        }
    }

    /// Runs `mode` on a fresh raw topic fed at `rate` events/s for `seconds`, and times
    /// each valid event from its produce call to its arrival in the cloud.
    fn latency(&self, mode: Mode, rate: f64, seconds: f64) -> Result<(Latency, PeakRss)> {
        let raw = self
            .brokers
            .onprem
            .random_topic("bench.raw-rate", PARTITIONS);
        let cloud_topic = self.brokers.cloud.random_topic("bench.cloud", PARTITIONS);
        let launch = self.launch(mode, "latency", &raw, &cloud_topic)?;
        let tracker = Tracker::start(&self.brokers.cloud, &cloud_topic)?;
        let mut running = launch.start()?;
        let outcome = self.feed_at_rate(&raw, &tracker, &mut running, rate, seconds);
        let peak_rss = running.peak_rss();
        let tails = running.log_tails();
        running.stop()?;
        let arrivals = tracker.finish()?;
        match outcome {
            Ok(timed) => Ok((timed.latency(&arrivals), peak_rss)),
            Err(error) => Err(anyhow::anyhow!("{error:#}\n{tails}")),
        }
    }

    fn feed_at_rate(
        &self,
        raw: &str,
        tracker: &Tracker,
        running: &mut Running,
        rate: f64,
        seconds: f64,
    ) -> Result<Timed> {
        let mut generator = Generator::new(RATE_SEED)
            .with_tenants(vec![TENANT.to_owned()])
            .with_malformed_ratio(MALFORMED_RATIO);
        let mut warm_up = 0;
        let warm_up_events = (rate * WARM_UP.as_secs_f64()).ceil() as u64;
        self.feeder.feed(
            raw,
            &mut generator,
            warm_up_events,
            Some(rate),
            |record, _| {
                warm_up += usize::from(record.is_valid());
            },
        )?;
        if !tracker.wait_for(warm_up, WARM_UP_TIMEOUT, running)? {
            bail!(
                "the warm-up did not reach the cloud within {WARM_UP_TIMEOUT:?} ({} of {warm_up})",
                tracker.arrived()
            );
        }
        let mut sent = Vec::new();
        let started = Instant::now();
        let events = (rate * seconds).round() as u64;
        self.feeder
            .feed(raw, &mut generator, events, Some(rate), |record, at| {
                if record.is_valid() {
                    sent.push((event_id(&record.payload), at));
                }
            })?;
        let sending = started.elapsed();
        tracker.wait_for(warm_up + sent.len(), DRAIN_TIMEOUT, running)?;
        Ok(Timed {
            produced: events,
            sent,
            sending,
            gave_up: Instant::now(),
        })
    }

    /// Creates the mode's other topics and writes its configs, so that the clock only
    /// runs for the pipeline itself. `phase` tells the config and log files apart.
    fn launch(&self, mode: Mode, phase: &str, raw: &str, cloud_topic: &str) -> Result<Launch> {
        let onprem = &self.brokers.onprem;
        let files = |command: &str| {
            let stem = format!("{phase}-{}-{command}", mode.name());
            (
                self.path(&format!("{stem}.toml")),
                self.path(&format!("{stem}.log")),
            )
        };
        let quarantine = || onprem.random_topic("bench.quarantine", PARTITIONS);
        let delivery = match mode {
            Mode::PassThrough => {
                return Ok(Launch::PassThrough(PassThrough {
                    onprem: onprem.bootstrap(),
                    raw: raw.to_owned(),
                    copy: onprem.random_topic("bench.copy", PARTITIONS),
                    cloud: self.brokers.cloud.bootstrap(),
                    cloud_tls: self.cloud_tls(),
                    cloud_topic: cloud_topic.to_owned(),
                }))
            }
            Mode::Python => {
                let (_, log) = files("python");
                let python = self
                    .python
                    .as_ref()
                    .expect("the Python mode only runs with an interpreter");
                return Ok(Launch::Processes(vec![Spawn {
                    name: "python",
                    command: self.python_command(python, raw, &quarantine(), cloud_topic),
                    log,
                }]));
            }
            Mode::AtLeastOnce | Mode::AtLeastOnceBaseline => "at_least_once",
            Mode::ExactlyOnce | Mode::ExactlyOnceBaseline => "exactly_once",
        };
        let binary = match (mode.is_baseline(), &self.baseline) {
            (true, Some(baseline)) => baseline.as_path(),
            _ => Path::new(env!("CARGO_BIN_EXE_pseudopipe")),
        };
        let stages = Stages {
            raw: raw.to_owned(),
            pseudonymized: onprem.random_topic("bench.pseudonymized", PARTITIONS),
            quarantine: quarantine(),
            cloud_topic: cloud_topic.to_owned(),
            // The sink stores its source offsets there: a partition per source partition.
            offsets_topic: (delivery == "exactly_once").then(|| {
                self.brokers
                    .cloud
                    .random_topic("bench.sink-offsets", PARTITIONS)
            }),
            delivery,
            policy: match (mode.is_baseline(), &self.baseline_policy) {
                (true, Some(policy)) => policy.clone(),
                _ => PathBuf::from(POLICY),
            },
        };
        let mut processes = Vec::new();
        for (name, config) in [
            ("ingest", self.ingest_config(&stages)),
            ("sink", self.sink_config(&stages)),
        ] {
            let (config_path, log) = files(name);
            std::fs::write(&config_path, config)?;
            let mut command = Command::new(binary);
            command
                .args([name, "--config", text(&config_path)])
                .env("RUST_LOG", "warn");
            processes.push(Spawn { name, command, log });
        }
        Ok(Launch::Processes(processes))
    }

    fn ingest_config(&self, stages: &Stages) -> String {
        StageConfig::new()
            .keys(&self.path("keyring.json"), &self.path("kek"))
            // The bench measures the record path: no audit topic to create per run.
            .set("keys", "audit_topic", "")
            .ingest(
                &self.brokers.onprem.bootstrap(),
                [&stages.raw, &stages.pseudonymized, &stages.quarantine],
                &stages.policy,
            )
            .set("ingest", "group_id", random_name("bench-ingest"))
            .set("ingest", "delivery", stages.delivery)
            .metrics(free_port())
            .to_string()
    }

    fn sink_config(&self, stages: &Stages) -> String {
        let config = StageConfig::new()
            .sink(
                (&self.brokers.onprem.bootstrap(), &stages.pseudonymized),
                (&self.brokers.cloud.bootstrap(), &stages.cloud_topic),
                &stages.quarantine,
                &stages.policy,
            )
            .set("sink", "group_id", random_name("bench-sink"))
            .set("sink", "delivery", stages.delivery);
        let config = match &stages.offsets_topic {
            Some(topic) => config.set("sink", "offsets_topic", topic),
            None => config,
        };
        config
            .properties("sink.kafka", &self.cloud_tls())
            .metrics(free_port())
            .to_string()
    }

    /// `pseudonymize.py` between `raw` and the cloud topic, with the keyring's secret and
    /// the cloud broker's client certificate as PEM files.
    fn python_command(
        &self,
        python: &Path,
        raw: &str,
        quarantine: &str,
        cloud_topic: &str,
    ) -> Command {
        let tls = self
            .brokers
            .cloud
            .tls_files()
            .expect("the cloud broker demands client certificates");
        let mut command = Command::new(python);
        command
            .arg("-u")
            .arg(PYTHON_REFERENCE)
            .args(["--policy", POLICY])
            .arg("--secret")
            .arg(format!("{TENANT}:1:{}", text(&self.path("secret.hex"))))
            .args(["--brokers", &self.brokers.onprem.bootstrap()])
            .args(["--group-id", &random_name("bench-python")])
            .args(["--input-topic", raw])
            .args(["--quarantine-topic", quarantine])
            .args(["--cloud-brokers", &self.brokers.cloud.bootstrap()])
            .args(["--cloud-topic", cloud_topic])
            .args(["--cloud-ca", text(&tls.ca())])
            .args(["--cloud-cert", text(&tls.client_cert())])
            .args(["--cloud-key", text(&tls.client_key())]);
        command
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

/// The topics and delivery of one run of the two stages.
struct Stages {
    raw: String,
    pseudonymized: String,
    quarantine: String,
    cloud_topic: String,
    offsets_topic: Option<String>,
    delivery: &'static str,
    /// The policy file both stages read.
    policy: PathBuf,
}

/// What the latency phase produced: each valid event's id and produce time.
struct Timed {
    produced: u64,
    sent: Vec<(String, Instant)>,
    sending: Duration,
    /// When the bench stopped waiting for events still missing.
    gave_up: Instant,
}

impl Timed {
    fn latency(&self, arrivals: &HashMap<String, Instant>) -> Latency {
        // (latency, arrived); a missing event counts with the time waited, a lower bound.
        let mut samples: Vec<(Duration, bool)> = self
            .sent
            .iter()
            .map(|(id, produced)| match arrivals.get(id) {
                Some(arrived) => (arrived.saturating_duration_since(*produced), true),
                None => (self.gave_up.saturating_duration_since(*produced), false),
            })
            .collect();
        samples.sort_unstable();
        let percentile = |fraction: f64| {
            let rank = ((fraction * samples.len() as f64).ceil() as usize).max(1);
            let (value, _) = samples.get(rank - 1).copied().unwrap_or_default();
            Percentile {
                value,
                // Raising the missing samples to their true latency can only raise the
                // value at this rank when one of them sorts at or below it.
                lower_bound: samples[..rank.min(samples.len())]
                    .iter()
                    .any(|(_, arrived)| !arrived),
            }
        };
        let arrived = samples.iter().filter(|(_, arrived)| *arrived).count();
        let last_produced = self.sent.iter().map(|(_, at)| *at).max();
        let last_arrived = self
            .sent
            .iter()
            .filter_map(|(id, _)| arrivals.get(id))
            .max();
        let behind = match (last_produced, last_arrived) {
            (Some(produced), Some(arrived_at)) if arrived == samples.len() => {
                Some(arrived_at.saturating_duration_since(produced))
            }
            _ => None,
        };
        Latency {
            produced: self.produced,
            sending: self.sending,
            sent: self.sent.len(),
            arrived,
            p50: percentile(0.50),
            p99: percentile(0.99),
            behind,
        }
    }
}

#[derive(Deserialize)]
struct EventId {
    event_id: String,
}

/// The `event_id` of a valid simulated event.
fn event_id(payload: &[u8]) -> String {
    serde_json::from_slice::<EventId>(payload)
        .expect("valid simulated events carry a string event_id")
        .event_id
}

/// Produces simulated records to the on-prem broker with `pseudopipe produce`'s settings.
struct Feeder {
    producer: BaseProducer<CountFailures>,
}

/// Counts the records the broker did not take.
#[derive(Default)]
struct CountFailures(AtomicUsize);

impl ClientContext for CountFailures {}

impl ProducerContext for CountFailures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Feeder {
    fn new(onprem: &Broker) -> Result<Feeder> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", onprem.bootstrap())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "zstd")
            .create_with_context(CountFailures::default())?;
        Ok(Feeder { producer })
    }

    /// Produces `count` records of `generator` to `topic`, at `rate` records/s if given,
    /// calling `sent` with each record and the instant it was handed to the producer;
    /// returns once all are delivered.
    fn feed(
        &self,
        topic: &str,
        generator: &mut Generator,
        count: u64,
        rate: Option<f64>,
        mut sent: impl FnMut(&Record, Instant),
    ) -> Result<()> {
        let started = Instant::now();
        for index in 0..count {
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            let record = generator.next_record();
            let at = Instant::now();
            send(
                &self.producer,
                topic,
                record.key.as_deref(),
                &record.payload,
            )?;
            sent(&record, at);
            self.producer.poll(Duration::ZERO);
        }
        self.producer.flush(Duration::from_secs(60))?;
        let failed = self.producer.context().0.swap(0, Ordering::Relaxed);
        ensure!(
            failed == 0,
            "{failed} records were not delivered to {topic}"
        );
        Ok(())
    }
}

/// A pipeline ready to start: everything it needs exists.
enum Launch {
    PassThrough(PassThrough),
    Processes(Vec<Spawn>),
}

impl Launch {
    fn start(self) -> Result<Running> {
        match self {
            Launch::PassThrough(pass_through) => pass_through.start(),
            Launch::Processes(processes) => Ok(Running::Processes(
                processes
                    .into_iter()
                    .map(|spawn| Process::start_logging_to(spawn.name, spawn.command, &spawn.log))
                    .collect(),
            )),
        }
    }
}

/// A process of a pipeline (a stage, or the Python reference) and its log.
struct Spawn {
    name: &'static str,
    command: Command,
    log: PathBuf,
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
    consumer: ClientConfig,
    source: String,
    producer: ClientConfig,
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
                let message = message?;
                send(
                    &producer,
                    &self.destination,
                    message.key(),
                    message.payload().unwrap_or_default(),
                )?;
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

/// Sends a record, waiting for room while the producer's queue is full.
fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
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
    Processes(Vec<Process>),
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
            Running::Processes(processes) => {
                for process in processes {
                    if let Some(status) = process.exit_status() {
                        bail!("{} exited early ({status})", process.name());
                    }
                }
            }
        }
        Ok(())
    }

    /// The peak resident set (`VmHWM`) of each process so far; nothing for the
    /// pass-through, which runs inside this bench.
    fn peak_rss(&self) -> PeakRss {
        match self {
            Running::PassThrough { .. } => Vec::new(),
            Running::Processes(processes) => processes
                .iter()
                .filter_map(|process| {
                    Some((process.name().to_owned(), vm_hwm_kib(process.pid()?)?))
                })
                .collect(),
        }
    }

    /// The last lines of each process's log, for a failure message.
    fn log_tails(&self) -> String {
        match self {
            Running::PassThrough { .. } => "the pass-through logs nothing".to_owned(),
            Running::Processes(processes) => processes
                .iter()
                .map(|process| {
                    format!(
                        "--- last lines of {} ({}) ---\n{}",
                        process.name(),
                        process.log_path().display(),
                        process.log_tail(LOG_TAIL_LINES)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Stops the hops, or the processes with SIGTERM; says so if one does not stop cleanly.
    fn stop(self) -> Result<()> {
        match self {
            Running::PassThrough { stop, hops } => {
                stop.store(true, Ordering::Relaxed);
                hops.into_iter().try_for_each(join)
            }
            Running::Processes(processes) => {
                for mut process in processes {
                    match process.terminate(STOP_GRACE) {
                        Some(status) if status.success() => {}
                        Some(status) => eprintln!(
                            "note: {} exited with {status} after SIGTERM",
                            process.name()
                        ),
                        None => eprintln!(
                            "note: {} did not stop within {STOP_GRACE:?} of SIGTERM and was killed",
                            process.name()
                        ),
                    }
                }
                Ok(())
            }
        }
    }
}

/// `VmHWM` of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn join(hop: JoinHandle<Result<()>>) -> Result<()> {
    hop.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A `read_committed` consumer of every partition of a cloud topic from the beginning,
/// connected before returning, so that the pipeline started next is not timed against
/// the consumer's own start-up.
fn cloud_reader(cloud: &Broker, topic: &str) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = cloud
        .client()
        .config()
        // librdkafka wants a group even for assigned partitions; nothing is committed.
        .set("group.id", random_name("bench-reader"))
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
    Ok(consumer)
}

/// Counts the records of a cloud topic on its own thread.
struct Counter {
    expected: usize,
    thread: JoinHandle<(usize, Option<Instant>)>,
}

impl Counter {
    fn start(cloud: &Broker, topic: &str, expected: usize) -> Result<Counter> {
        let consumer = cloud_reader(cloud, topic)?;
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

/// Notes when each `event_id` first reaches a cloud topic, on its own thread.
struct Tracker {
    stop: Arc<AtomicBool>,
    /// Distinct events arrived so far.
    arrived: Arc<AtomicUsize>,
    thread: JoinHandle<HashMap<String, Instant>>,
}

impl Tracker {
    fn start(cloud: &Broker, topic: &str) -> Result<Tracker> {
        let consumer = cloud_reader(cloud, topic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let arrived = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, arrived) = (Arc::clone(&stop), Arc::clone(&arrived));
            thread::spawn(move || {
                let mut arrivals = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let now = Instant::now();
                    // A payload without an event_id would count as never arrived.
                    if let Ok(id) =
                        serde_json::from_slice::<EventId>(message.payload().unwrap_or_default())
                    {
                        arrivals.entry(id.event_id).or_insert(now);
                        arrived.store(arrivals.len(), Ordering::Relaxed);
                    }
                }
                arrivals
            })
        };
        Ok(Tracker {
            stop,
            arrived,
            thread,
        })
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::Relaxed)
    }

    /// Whether `expected` events arrived within `timeout`; an error if the pipeline fails.
    fn wait_for(&self, expected: usize, timeout: Duration, running: &mut Running) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while self.arrived() < expected {
            running.check()?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(true)
    }

    /// Stops the consumer; the first arrival of each `event_id`.
    fn finish(self) -> Result<HashMap<String, Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the cloud tracker panicked"))
    }
}

fn print_table(bench: &Bench, options: &Options, rows: &[Row], load: (String, String)) {
    let rate = |wanted: Mode| {
        rows.iter()
            .find(|row| row.mode == wanted)
            .and_then(|row| row.throughput.as_ref())
            .map(|throughput| bench.expected as f64 / throughput.seconds)
    };
    println!();
    println!(
        "throughput: {} events ({} valid to the cloud, {:.1} MB of raw JSON), {PARTITIONS} partitions per topic",
        bench.events,
        bench.expected,
        bench.raw_bytes as f64 / 1e6,
    );
    println!(
        "latency: {:.0} events/s for {:.0} s after a {WARM_UP:?} warm-up; load average (1 min) {} at the start, {} at the end, on {} CPUs",
        options.rate,
        options.seconds,
        load.0,
        load.1,
        thread::available_parallelism().map_or(0, |cpus| cpus.get()),
    );
    println!(
        "{:<18} {:>7} {:>8} {:>5} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} | peak RSS MiB",
        "pipeline",
        "seconds",
        "events/s",
        "MB/s",
        "x pass",
        "sent/s",
        "missing",
        "p50 ms",
        "p99 ms",
        "behind"
    );
    let ceiling = rate(Mode::PassThrough);
    for row in rows {
        let throughput = match &row.throughput {
            Some(throughput) => {
                let events_per_second = bench.expected as f64 / throughput.seconds;
                format!(
                    "{:>7.2} {:>8.0} {:>5.1} {:>6}",
                    throughput.seconds,
                    events_per_second,
                    bench.raw_bytes as f64 / 1e6 / throughput.seconds,
                    ceiling
                        .map(|ceiling| format!("{:.2}", events_per_second / ceiling))
                        .unwrap_or_default()
                )
            }
            None => format!("{:>29}", "failed"),
        };
        let latency = match &row.latency {
            Some(latency) => format!(
                "{:>7.0} {:>7} {:>7} {:>7} {:>7}",
                latency.produced as f64 / latency.sending.as_secs_f64(),
                latency.sent - latency.arrived,
                milliseconds(&latency.p50),
                milliseconds(&latency.p99),
                latency.behind.map_or("-".to_owned(), |behind| format!(
                    "{:.1}s",
                    behind.as_secs_f64()
                ))
            ),
            None => format!("{:>39}", "failed"),
        };
        let rss = if row.peak_rss.is_empty() {
            "- (in the bench process)".to_owned()
        } else {
            row.peak_rss
                .iter()
                .map(|(name, kib)| format!("{name} {:.0}", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("{:<18} {throughput} | {latency} | {rss}", row.mode.name());
    }
    if options.repeat > 1 {
        println!("throughput rounds (events/s, in order; the table shows each mode's median):");
        for row in rows {
            let rounds: Vec<String> = row
                .rounds
                .iter()
                .map(|seconds| format!("{:.0}", bench.expected as f64 / seconds))
                .collect();
            println!("  {:<18} {}", row.mode.name(), rounds.join(", "));
        }
    }
    println!(
        "seconds: from the pipeline's start to the last valid event counted on the cloud (read_committed),\n  \
         start-up and group joins included; events/s: valid events; MB/s: raw bytes of all events.\n\
         sent/s: events produced per second in the latency phase, malformed ones included; missing: valid\n  \
         events not in the cloud {DRAIN_TIMEOUT:?} after the last was produced; p50/p99: from the produce\n  \
         call to a read_committed cloud consumer (≥: a lower bound, resting on missing events); behind: the\n  \
         last arrival after the last produce call (the backlog when a pipeline is slower than the rate).\n\
         peak RSS: VmHWM of each process. The Python reference is one process and one hop (raw → cloud)."
    );
    print_targets(rows, &rate);
}

/// The 1-minute load average, as `/proc/loadavg` says it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The issue's targets, met or missed, from the measured figures only.
fn print_targets(rows: &[Row], rate: &dyn Fn(Mode) -> Option<f64>) {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("targets:");
    let ceiling = rate(Mode::PassThrough);
    let python = rate(Mode::Python);
    for mode in Mode::ALL.into_iter().filter(|mode| mode.is_stages()) {
        if let (Some(stages), Some(ceiling)) = (rate(mode), ceiling) {
            let ratio = stages / ceiling;
            println!(
                "  {} >= 0.8 of pass-through: {ratio:.2} {}",
                mode.name(),
                verdict(ratio >= 0.8)
            );
        }
        if let (Some(stages), Some(python)) = (rate(mode), python) {
            let ratio = stages / python;
            println!(
                "  {} >= 10x the Python reference: {ratio:.1}x {}",
                mode.name(),
                verdict(ratio >= 10.0)
            );
        }
    }
    for row in rows {
        if let (true, Some(latency)) = (row.mode.is_stages(), &row.latency) {
            println!(
                "  {} p99 < 50 ms: {} ms {}",
                row.mode.name(),
                milliseconds(&latency.p99),
                verdict(!latency.p99.lower_bound && latency.p99.value < Duration::from_millis(50))
            );
        }
    }
    for row in rows {
        for (name, kib) in &row.peak_rss {
            if row.mode.is_stages() {
                println!(
                    "  {} {name} peak RSS < 256 MiB: {:.0} MiB {}",
                    row.mode.name(),
                    *kib as f64 / 1024.0,
                    verdict(*kib < 256 * 1024)
                );
            }
        }
    }
}

fn milliseconds(percentile: &Percentile) -> String {
    let value = percentile.value.as_secs_f64() * 1e3;
    if percentile.lower_bound {
        format!("≥{value:.0}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
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
