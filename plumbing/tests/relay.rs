//! The relay against librdkafka's mock cluster (testing tier 2): routing and headers,
//! commits at shutdown, retries while the output cluster is down or failing, a stalled
//! partition, and a rebalance between two relays. The mock cluster listens on real local
//! ports; a consumer group takes about 3 s to form there.
//!
//! Every test counts what arrived by reading the topics back, never by trusting the
//! relay's own report alone. A test that times out prints everything logged (librdkafka
//! included), which is also searched for leaked record content.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use plumbing::prometheus::Registry;
use plumbing::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use plumbing::rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use plumbing::rdkafka::mocking::MockCluster;
use plumbing::rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use plumbing::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use plumbing::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use plumbing::relay::{headers, PROCESSOR_PANIC};
use plumbing::{
    config, Decision, Error, Finding, Processor, ProcessorError, Reason, RelayReport,
    RelaySettings, Shutdown, StageMetrics, TopicPartition,
};
use tokio::task::JoinHandle;

/// How long any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Test kit: a cluster, topics, records in and out, a running relay.
// ---------------------------------------------------------------------------------------

/// A mock Kafka cluster of one broker (id 1).
struct Cluster {
    mock: MockCluster<'static, DefaultProducerContext>,
}

impl Cluster {
    fn start() -> Self {
        logs(); // every test logs into the shared buffer
        Self {
            mock: MockCluster::new(1).expect("the mock cluster starts"),
        }
    }

    fn brokers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    /// A new topic with a unique name.
    fn topic(&self, name: &str, partitions: i32) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let topic = format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.mock
            .create_topic(&topic, partitions, 1)
            .expect("the mock cluster creates topics");
        topic
    }

    /// A producer configuration built like the stages build theirs, with extra properties.
    fn producer(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let passthrough = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config::producer(&self.brokers(), &passthrough).expect("valid producer properties")
    }

    fn go_down(&self) {
        self.mock.broker_down(1).expect("broker 1 goes down");
    }

    fn come_back(&self) {
        self.mock.broker_up(1).expect("broker 1 comes back");
    }

    /// The next `count` produce requests fail with `error`.
    fn fail_next_produce_requests(&self, error: RDKafkaRespErr, count: usize) {
        self.mock
            .request_errors(RDKafkaApiKey::Produce, &vec![error; count]);
    }

    /// Writes `records` to `topic` and waits for them to be there.
    async fn fill(&self, topic: &str, records: &[Input]) {
        let producer: FutureProducer = self.producer(&[]).create().expect("the producer starts");
        for record in records {
            let mut out = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(record.partition)
                .payload(record.payload.as_bytes())
                .key(record.key.as_bytes());
            if let Some((key, value)) = record.header {
                out = out.headers(OwnedHeaders::new().insert(Header {
                    key,
                    value: Some(value),
                }));
            }
            producer
                .send(out, Duration::from_secs(5))
                .await
                .expect("the input record is written");
        }
    }

    /// Reads `topic` from the beginning until `expected` records arrived (or patience ran
    /// out), plus whatever else arrives within a short grace period.
    async fn read(&self, topic: &str, partitions: i32, expected: usize) -> Vec<OwnedMessage> {
        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("the reader starts");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
        reader.assign(&assignment).unwrap();
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let wait = if records.len() >= expected {
                Duration::from_millis(500)
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            match tokio::time::timeout(wait, reader.recv()).await {
                Ok(Ok(message)) => records.push(message.detach()),
                Ok(Err(error)) => panic!("reading {topic} failed: {error}"),
                Err(_elapsed) => break,
            }
        }
        records
    }

    /// The offsets `group` committed on `topic`, per partition (-1 when none).
    async fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", group)
            .create()
            .expect("the offset reader starts");
        let mut tpl = TopicPartitionList::new();
        for partition in 0..partitions {
            tpl.add_partition(topic, partition);
        }
        tokio::task::spawn_blocking(move || {
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .expect("committed offsets are readable");
            committed
                .elements()
                .iter()
                .map(|elem| match elem.offset() {
                    Offset::Offset(offset) => offset,
                    _ => -1,
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// One past the last offset of each partition of `topic`.
    async fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("the watermark reader starts");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|partition| {
                    consumer
                        .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                        .expect("watermarks are readable")
                        .1
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

/// One input record.
struct Input {
    partition: i32,
    key: String,
    payload: String,
    header: Option<(&'static str, &'static str)>,
}

impl Input {
    fn new(partition: i32, key: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            partition,
            key: key.into(),
            payload: payload.into(),
            header: None,
        }
    }
}

/// Numbered records spread over `partitions` partitions, in round robin.
fn numbered(count: usize, partitions: i32) -> Vec<Input> {
    (0..count)
        .map(|i| {
            let partition = i32::try_from(i).unwrap() % partitions;
            Input::new(partition, format!("customer-{i}"), format!("event-{i}"))
        })
        .collect()
}

/// Forwards every record with the payload prefixed and a key derived from it.
fn forward_all() -> Arc<dyn Processor> {
    Arc::new(|_key: Option<&[u8]>, payload: Option<&[u8]>| {
        let payload = payload.unwrap_or_default();
        Decision::Forward {
            key: Some([b"tok-", payload].concat()),
            payload: [b"pseudo:", payload].concat(),
        }
    })
}

/// A relay running in the background.
struct Running {
    shutdown: Shutdown,
    metrics: StageMetrics,
    registry: Registry,
    /// Taken by [`stop`](Self::stop).
    task: Option<JoinHandle<Result<RelayReport, Error>>>,
}

/// A test that fails before stopping its relays stops them here: the runtime waits for
/// the relay's blocking thread when the test ends, so a relay left running would turn the
/// failure into a hang.
impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Running {
    fn start(
        cluster: &Cluster,
        group: &str,
        settings: RelaySettings,
        output: ClientConfig,
        processor: Arc<dyn Processor>,
    ) -> Self {
        Self::start_with(cluster, group, &[], settings, output, processor)
    }

    /// Starts a relay whose consumer has extra librdkafka properties.
    fn start_with(
        cluster: &Cluster,
        group: &str,
        consumer_properties: &[(&str, &str)],
        settings: RelaySettings,
        output: ClientConfig,
        processor: Arc<dyn Processor>,
    ) -> Self {
        let passthrough = consumer_properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let consumer = config::consumer(&cluster.brokers(), group, &passthrough).unwrap();
        let registry = Registry::new();
        let metrics = StageMetrics::new(&registry, settings.stage).unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(plumbing::run(
            settings,
            consumer,
            plumbing::DeliveryMode::AtLeastOnce {
                output: output.clone(),
                quarantine: output,
            },
            processor,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self {
            shutdown,
            metrics,
            registry,
            task: Some(task),
        }
    }

    /// Records delivered, to the output or to quarantine.
    fn settled(&self) -> u64 {
        let quarantined: u64 = self
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == "pseudopipe_events_quarantined_total")
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum();
        self.metrics.produced.get() + quarantined
    }

    /// Partitions assigned to the relay (each has a `partition_stalled` series).
    fn assigned_partitions(&self) -> usize {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == "pseudopipe_partition_stalled")
            .map(|family| family.get_metric().len())
            .sum()
    }

    /// Whether lag is measured on `partitions` partitions and is zero on each.
    fn caught_up(&self, partitions: usize) -> bool {
        self.registry
            .gather()
            .iter()
            .find(|family| family.name() == "pseudopipe_consumer_lag")
            .is_some_and(|family| {
                family.get_metric().len() == partitions
                    && family
                        .get_metric()
                        .iter()
                        .all(|metric| metric.get_gauge().get_value() == 0.0)
            })
            && self.metrics.in_flight.get() == 0
    }

    /// Stops the relay and returns its report.
    async fn stop(mut self) -> RelayReport {
        self.shutdown.trigger();
        let task = self.task.take().expect("a relay is stopped once");
        let stopped = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the relay stops in time")
            .expect("the relay task does not panic");
        stopped.unwrap_or_else(|error| {
            eprintln!("--- logs ---\n{}", logged());
            panic!("the relay did not stop cleanly: {error:?}")
        })
    }
}

/// Polls `condition` every 50 ms until it holds; fails the test after `PATIENCE`.
async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_within(PATIENCE, what, condition).await;
}

/// [`wait_until`] with another bound.
async fn wait_within(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            eprintln!("--- logs ---\n{}", logged());
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settings(input: &str, output: &str, quarantine: &str) -> RelaySettings {
    let mut settings = RelaySettings::new("ingest", input, output, quarantine);
    settings.commit_interval = Duration::from_millis(200);
    settings.lag_interval = Duration::from_millis(200);
    settings.drain_timeout = Duration::from_secs(5);
    settings
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| std::str::from_utf8(header.value?).ok())
}

fn payloads(records: &[OwnedMessage]) -> BTreeSet<String> {
    records
        .iter()
        .map(|record| String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned())
        .collect()
}

/// Everything logged by this test binary (all tests share one global subscriber).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(buffer))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// The lines of `log` that mention any of `words` (the log of every test in this binary).
fn lines_about(log: &str, words: &[&str]) -> String {
    log.lines()
        .filter(|line| words.iter().any(|word| line.contains(word)))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_quarantines_with_headers_then_commits_the_end() {
    let cluster = Cluster::start();
    let input = cluster.topic("raw", 3);
    let output = cluster.topic("pseudonymized", 1);
    let quarantine = cluster.topic("quarantine", 1);
    let records: Vec<Input> = (0..30)
        .map(|i| {
            let payload = if i % 5 == 0 {
                format!("bad-{i}")
            } else {
                format!("event-{i}")
            };
            Input {
                header: Some(("x-customer-email", "jane@example.com")),
                ..Input::new(i % 3, format!("customer-{i}"), payload)
            }
        })
        .collect();
    cluster.fill(&input, &records).await;
    cluster
        .fill(&input, &[Input::new(0, "customer-30", "boom")])
        .await;

    let processor: Arc<dyn Processor> = Arc::new(|_key: Option<&[u8]>, payload: Option<&[u8]>| {
        let payload = payload.unwrap_or_default();
        assert!(!payload.starts_with(b"boom"), "the test panics on purpose");
        if payload.starts_with(b"bad") {
            Decision::Quarantine {
                reason: Reason::new("invalid_event"),
                message: "the test says so".into(),
                finding: Some(Finding {
                    field: "basket.items[].sku".into(),
                    detector: "card",
                }),
            }
        } else {
            Decision::Forward {
                key: Some([b"tok-", payload].concat()),
                payload: [b"pseudo:", payload].concat(),
            }
        }
    });
    let relay = Running::start(
        &cluster,
        "routing",
        settings(&input, &output, &quarantine),
        cluster.producer(&[]),
        processor,
    );
    wait_until("31 records are delivered", || relay.settled() >= 31).await;
    // Lag is measured on every partition, and is zero once everything is consumed.
    wait_until("lag is zero on 3 partitions", || relay.caught_up(3)).await;
    let metrics = relay.metrics.clone();
    let report = relay.stop().await;

    assert!(report.uncommitted.is_empty());
    assert_eq!(report.consumed, 31);
    assert_eq!(report.forwarded, 24);
    assert_eq!(report.quarantined.get("invalid_event"), Some(&6));
    assert_eq!(report.quarantined.get(&PROCESSOR_PANIC), Some(&1));
    assert!(report.stalled.is_empty());
    assert_eq!(metrics.produced.get(), 24);
    assert_eq!(metrics.in_flight.get(), 0);
    assert_eq!(
        metrics
            .detector_quarantined
            .with_label_values(&["basket.items[].sku", "card"])
            .get(),
        6,
        "each detector finding counted by field and detector"
    );

    let forwarded = cluster.read(&output, 1, 24).await;
    assert_eq!(forwarded.len(), 24);
    for record in &forwarded {
        let payload = std::str::from_utf8(record.payload().unwrap()).unwrap();
        let original = payload
            .strip_prefix("pseudo:")
            .expect("the decided payload");
        assert_eq!(record.key(), Some(format!("tok-{original}").as_bytes()));
        assert!(
            record.headers().is_none_or(|headers| headers.count() == 0),
            "input headers are never forwarded"
        );
    }

    let mut quarantined = cluster.read(&quarantine, 1, 7).await;
    assert_eq!(quarantined.len(), 7);
    let panicked = quarantined
        .iter()
        .position(|record| record.payload() == Some(b"boom"))
        .expect("the record the processor panicked on is quarantined");
    let panicked = quarantined.remove(panicked);
    assert_eq!(
        header(&panicked, headers::REASON),
        Some(PROCESSOR_PANIC.code())
    );
    assert_eq!(header(&panicked, headers::SOURCE_OFFSET), Some("10"));
    assert_eq!(
        header(&panicked, headers::FIELD),
        None,
        "no finding, no field"
    );
    for record in &quarantined {
        let payload = std::str::from_utf8(record.payload().unwrap()).unwrap();
        let i: i32 = payload.strip_prefix("bad-").unwrap().parse().unwrap();
        assert_eq!(record.key(), Some(format!("customer-{i}").as_bytes()));
        assert_eq!(header(record, headers::REASON), Some("invalid_event"));
        assert_eq!(header(record, headers::MESSAGE), Some("the test says so"));
        assert_eq!(header(record, headers::SOURCE_TOPIC), Some(input.as_str()));
        assert_eq!(
            header(record, headers::SOURCE_PARTITION),
            Some((i % 3).to_string().as_str())
        );
        assert_eq!(
            header(record, headers::SOURCE_OFFSET),
            Some((i / 3).to_string().as_str())
        );
        assert_eq!(header(record, headers::STAGE), Some("ingest"));
        assert_eq!(header(record, headers::FIELD), Some("basket.items[].sku"));
        assert_eq!(header(record, headers::DETECTOR), Some("card"));
        assert_eq!(
            header(record, "x-customer-email"),
            Some("jane@example.com"),
            "quarantine keeps the record as it was"
        );
    }

    assert_eq!(
        cluster.committed("routing", &input, 3).await,
        cluster.end_offsets(&input, 3).await,
        "a clean shutdown commits the end of every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_cluster_down_is_retried_with_bounded_memory_and_nothing_lost() {
    let source = Cluster::start();
    let target = Cluster::start();
    let input = source.topic("raw", 2);
    let output = target.topic("pseudonymized", 1);
    let quarantine = target.topic("quarantine", 1);
    let records = numbered(40, 2);
    source.fill(&input, &records).await;

    target.go_down();
    let mut settings = settings(&input, &output, &quarantine);
    settings.max_in_flight = 8;
    // Records time out quickly while the output is down, so the relay's retries run.
    let producer = target.producer(&[("message.timeout.ms", "1000")]);
    let relay = Running::start(&source, "broker-down", settings, producer, forward_all());

    let mut most_in_flight = 0;
    wait_until("deliveries are retried", || {
        most_in_flight = most_in_flight.max(relay.metrics.in_flight.get());
        relay.metrics.delivery_retries.get() >= 3
    })
    .await;
    assert!(
        most_in_flight <= 8,
        "{most_in_flight} in flight, at most 8 allowed"
    );
    assert!(
        relay.metrics.consumed.get() <= 8,
        "consumption pauses at max_in_flight"
    );
    assert_eq!(relay.metrics.produced.get(), 0);

    target.come_back();
    wait_until("all 40 records are delivered", || relay.settled() >= 40).await;
    let report = relay.stop().await;
    assert!(report.retries >= 3);

    let delivered = target.read(&output, 1, 40).await;
    let expected: BTreeSet<String> = (0..40).map(|i| format!("pseudo:event-{i}")).collect();
    assert_eq!(payloads(&delivered), expected, "every record arrived");
    assert_eq!(
        source.committed("broker-down", &input, 2).await,
        source.end_offsets(&input, 2).await
    );
}

/// librdkafka reports every reconnection attempt to a cluster that is down (a `FAIL` line
/// and an error event per attempt, then "all brokers are down"); a stage writes one line
/// when the cluster is lost and one when it answers again, never one per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_writes_one_line_when_the_cluster_is_lost_and_one_when_it_answers() {
    const STAGE: &str = "outage-lines";
    let source = Cluster::start();
    let target = Cluster::start();
    let input = source.topic("raw", 1);
    let output = target.topic("pseudonymized", 1);
    let quarantine = target.topic("quarantine", 1);
    let records = numbered(10, 1);
    source.fill(&input, &records).await;

    target.go_down();
    let mut settings = settings(&input, &output, &quarantine);
    settings.stage = STAGE;
    let relay = Running::start(
        &source,
        "outage-lines",
        settings,
        target.producer(&[("reconnect.backoff.max.ms", "500")]),
        forward_all(),
    );
    // At most 500 ms between attempts: some twenty attempts in ten seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    target.come_back();
    wait_until("all 10 records are delivered", || relay.settled() >= 10).await;
    let stage = format!("stage=\"{STAGE}\"");
    wait_until("the stage sees its cluster back", || {
        logged()
            .lines()
            .any(|line| line.contains(&stage) && line.contains("Cluster answers again"))
    })
    .await;
    relay.stop().await;

    let log = logged();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&stage) && !line.contains(" DEBUG "))
        .collect();
    let about_the_connection: Vec<&&str> = lines
        .iter()
        .filter(|line| {
            [
                "Connection refused",
                "brokers are down",
                "Kafka client error",
                "Cluster ",
            ]
            .iter()
            .any(|word| line.contains(word))
        })
        .collect();
    let count = |needle: &str| lines.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("Cluster unreachable"), 1, "{lines:#?}");
    assert_eq!(count("Cluster answers again"), 1, "{lines:#?}");
    assert!(
        about_the_connection.len() <= 4,
        "{} lines about the connection: {about_the_connection:#?}",
        about_the_connection.len()
    );
    let back = lines
        .iter()
        .find(|line| line.contains("Cluster answers again"))
        .unwrap();
    let held_back: u64 = back
        .split("held_back=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no held_back count in {back}"));
    assert!(held_back >= 10, "{back}");
    eprintln!(
        "{held_back} lines held back; written:\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_produce_errors_are_retried_and_nothing_is_lost() {
    let source = Cluster::start();
    let target = Cluster::start();
    let input = source.topic("raw", 2);
    let output = target.topic("pseudonymized", 2);
    let quarantine = target.topic("quarantine", 1);
    source.fill(&input, &numbered(50, 2)).await;

    // Enough failing produce requests to outlast librdkafka's own retries.
    target.fail_next_produce_requests(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 12);
    let producer = target.producer(&[("message.timeout.ms", "500")]);
    let relay = Running::start(
        &source,
        "transient",
        settings(&input, &output, &quarantine),
        producer,
        forward_all(),
    );
    wait_until("all 50 records are delivered", || relay.settled() >= 50).await;
    let report = relay.stop().await;
    assert!(report.retries > 0, "the relay retried: {report:?}");
    assert!(report.stalled.is_empty());

    let delivered = target.read(&output, 2, 50).await;
    assert_eq!(
        payloads(&delivered).len(),
        50,
        "50 distinct records arrived"
    );
    assert_eq!(
        source.committed("transient", &input, 2).await,
        source.end_offsets(&input, 2).await
    );
}

/// The value of `name{cluster="output"}` (a gauge or a counter), 0 when absent.
fn output_series(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|pair| pair.name() == "cluster" && pair.value() == "output")
        })
        .map(|metric| metric.get_gauge().get_value() + metric.get_counter().get_value())
        .sum()
}

/// Settings whose liveness bound is `seconds`.
fn stall_settings(input: &str, output: &str, quarantine: &str, seconds: u64) -> RelaySettings {
    let mut settings = settings(input, output, quarantine);
    settings.stall_timeout = Duration::from_secs(seconds);
    settings.drain_timeout = Duration::from_secs(1);
    settings
}

/// Produce requests refused far longer than the test, so that the producer holds its
/// records without a delivery report while the cluster answers metadata requests: the
/// stuck producer of issue 17, as the relay sees it.
const REFUSALS: usize = 100_000;

/// A source of 30 records over two partitions, and a target whose produce requests are
/// refused ([`REFUSALS`]) while it answers metadata: (source, target, input, output,
/// quarantine).
async fn stuck_output() -> (Cluster, Cluster, String, String, String) {
    let source = Cluster::start();
    let target = Cluster::start();
    let input = source.topic("raw", 2);
    let output = target.topic("pseudonymized", 2);
    let quarantine = target.topic("quarantine", 1);
    source.fill(&input, &numbered(30, 2)).await;
    target.fail_next_produce_requests(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        REFUSALS,
    );
    (source, target, input, output, quarantine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_stuck_while_its_cluster_answers_is_replaced_then_the_stage_exits() {
    let (source, target, input, output, quarantine) = stuck_output().await;
    let bound = 2;
    let mut relay = Running::start(
        &source,
        "stuck",
        stall_settings(&input, &output, &quarantine, bound),
        target.producer(&[]),
        forward_all(),
    );
    wait_until("the relay consumed every record", || {
        relay.metrics.consumed.get() >= 30
    })
    .await;
    let consumed_at = std::time::Instant::now();
    let stopped = tokio::time::timeout(PATIENCE, relay.task.take().expect("the relay runs"))
        .await
        .expect("the relay stops by itself")
        .expect("the relay task does not panic");
    let waited = consumed_at.elapsed();
    let error = stopped.expect_err("a producer that never delivers stops the stage");
    assert!(
        matches!(
            error,
            Error::Stalled {
                cluster: "output",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("new producer did not deliver either"),
        "{error}"
    );
    // Replaced once after one bound, stopped after the second; each check runs once a
    // second and the drain takes one more.
    assert!(
        waited < Duration::from_secs(2 * bound + 6),
        "stopped after {waited:?}"
    );
    assert_eq!(
        output_series(&relay.registry, "pseudopipe_producer_restarts_total"),
        1.0
    );
    assert_eq!(
        output_series(&relay.registry, "pseudopipe_delivery_stalled"),
        1.0
    );
    let log = logged();
    assert!(
        log.contains("the producer is replaced and its records are sent again"),
        "{}",
        lines_about(&log, &["stall"])
    );
    // Nothing was committed past what was not delivered: a restart delivers it all.
    let committed = source.committed("stuck", &input, 2).await;
    assert!(
        committed.iter().all(|offset| *offset <= 0),
        "committed {committed:?}"
    );
    target.mock.clear_request_errors(RDKafkaApiKey::Produce);
    // Nothing was committed (asserted above), so a new group starts where the stopped
    // member's would, without waiting for the mock cluster to expire that member.
    let restarted = Running::start(
        &source,
        "stuck-restarted",
        stall_settings(&input, &output, &quarantine, bound),
        target.producer(&[]),
        forward_all(),
    );
    wait_until("all 30 records are delivered after the restart", || {
        restarted.settled() >= 30
    })
    .await;
    restarted.stop().await;
    assert_eq!(payloads(&target.read(&output, 2, 30).await).len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_producer_that_delivers_keeps_the_stage_running_and_nothing_is_lost() {
    let (source, target, input, output, quarantine) = stuck_output().await;
    let relay = Running::start(
        &source,
        "unstuck",
        stall_settings(&input, &output, &quarantine, 3),
        target.producer(&[]),
        forward_all(),
    );
    wait_until("the stuck producer is replaced", || {
        output_series(&relay.registry, "pseudopipe_producer_restarts_total") >= 1.0
    })
    .await;
    assert_eq!(relay.settled(), 0, "nothing was acknowledged before");
    assert_eq!(
        output_series(&relay.registry, "pseudopipe_delivery_stalled"),
        1.0
    );
    // The cause goes away: the new producer delivers within its bound.
    target.mock.clear_request_errors(RDKafkaApiKey::Produce);
    wait_until("all 30 records are delivered", || relay.settled() >= 30).await;
    assert_eq!(
        output_series(&relay.registry, "pseudopipe_delivery_stalled"),
        0.0,
        "the stall is over once records are acknowledged"
    );
    assert!(
        relay.task.as_ref().is_some_and(|task| !task.is_finished()),
        "the stage keeps running"
    );
    assert_eq!(
        output_series(&relay.registry, "pseudopipe_producer_restarts_total"),
        1.0
    );
    let report = relay.stop().await;
    assert!(report.retries > 0, "the purged records were sent again");
    let delivered = target.read(&output, 2, 30).await;
    assert_eq!(
        payloads(&delivered).len(),
        30,
        "30 distinct records arrived"
    );
    assert_eq!(
        source.committed("unstuck", &input, 2).await,
        source.end_offsets(&input, 2).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_stalls_its_partition_without_logging_content() {
    let cluster = Cluster::start();
    let input = cluster.topic("raw", 1);
    let output = cluster.topic("pseudonymized", 1);
    let quarantine = cluster.topic("quarantine", 1);
    let mut records = numbered(3, 1);
    records.push(Input::new(0, "SECRET-KEY", "SECRET-PAYLOAD".repeat(200)));
    records.extend(numbered(3, 1).into_iter().map(|record| Input {
        payload: format!("late-{}", record.payload),
        ..record
    }));
    cluster.fill(&input, &records).await;

    // librdkafka refuses a record above message.max.bytes before sending it: permanent.
    let producer = cluster.producer(&[("message.max.bytes", "1000")]);
    let relay = Running::start(
        &cluster,
        "stall",
        settings(&input, &output, &quarantine),
        producer,
        forward_all(),
    );
    let stalled = relay
        .metrics
        .partition_stalled
        .with_label_values(&[input.as_str(), "0"]);
    wait_until("the partition stalls", || stalled.get() == 1).await;
    wait_until("the records before it are delivered", || {
        relay.metrics.produced.get() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // a few commit intervals
    let report = relay.stop().await;

    assert_eq!(
        report.stalled,
        vec![(TopicPartition::new(input.clone(), 0), 3)]
    );
    assert_eq!(
        cluster.committed("stall", &input, 1).await,
        vec![3],
        "never committed past the failed record"
    );
    let delivered = payloads(&cluster.read(&output, 1, 3).await);
    assert!(delivered.contains("pseudo:event-2"));
    assert!(delivered.iter().all(|payload| !payload.contains("SECRET")));

    let logged = logged();
    assert!(
        logged.contains("Delivery failed permanently"),
        "the failure is logged"
    );
    assert!(
        !logged.contains("SECRET"),
        "no key or payload in any log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_nothing_left_to_read_lags_by_zero() {
    let cluster = Cluster::start();
    let input = cluster.topic("raw", 2);
    let output = cluster.topic("pseudonymized", 1);
    let quarantine = cluster.topic("quarantine", 1);
    cluster.fill(&input, &numbered(20, 2)).await;
    let settings = settings(&input, &output, &quarantine);
    let first = Running::start_with(
        &cluster,
        "idle",
        &[("session.timeout.ms", "6000")],
        settings.clone(),
        cluster.producer(&[]),
        forward_all(),
    );
    wait_until("20 records are delivered", || first.settled() >= 20).await;
    assert!(first.stop().await.uncommitted.is_empty());
    // The group's offsets stand at the end: the next relay reads nothing, so librdkafka
    // gives it no position; its lag comes from the committed offsets.
    // The mock coordinator waits a session timeout (less 1 s) for the first to rejoin.
    let second = Running::start_with(
        &cluster,
        "idle",
        &[("session.timeout.ms", "6000")],
        settings,
        cluster.producer(&[]),
        forward_all(),
    );
    wait_until("lag is zero on 2 partitions", || second.caught_up(2)).await;
    assert_eq!(second.stop().await.consumed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_to_a_second_relay_loses_nothing() {
    let cluster = Cluster::start();
    let target = Cluster::start();
    let input = cluster.topic("raw", 4);
    let output = target.topic("pseudonymized", 1);
    let quarantine = target.topic("quarantine", 1);
    // Slow deliveries, so that some are in flight when partitions are revoked.
    target
        .mock
        .broker_round_trip_time(1, Duration::from_millis(100))
        .unwrap();
    let first_half = numbered(100, 4);
    cluster.fill(&input, &first_half).await;

    let mut settings = settings(&input, &output, &quarantine);
    // The mock coordinator waits a session timeout (less 1 s) for members to rejoin.
    let consumer = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ];
    settings.rebalance_drain_timeout = Duration::from_secs(2);
    let first = Running::start_with(
        &cluster,
        "rebalance",
        &consumer,
        settings.clone(),
        target.producer(&[]),
        forward_all(),
    );
    wait_until("the first relay works", || first.metrics.produced.get() > 0).await;
    // The second relay commits only when partitions change hands and at the end. The
    // mock coordinator refuses a commit while the group rebalances, so the commit on the
    // revocation the first relay's departure causes is refused: the second must commit
    // those watermarks once its partitions come back, or deliver them all again.
    settings.commit_interval = Duration::from_secs(3600);
    let second = Running::start_with(
        &cluster,
        "rebalance",
        &consumer,
        settings,
        target.producer(&[]),
        forward_all(),
    );
    let second_half: Vec<Input> = (100..200)
        .map(|i| Input::new(i % 4, format!("customer-{i}"), format!("event-{i}")))
        .collect();
    cluster.fill(&input, &second_half).await;
    wait_until("the second relay gets partitions", || {
        second.metrics.consumed.get() > 0
    })
    .await;
    wait_until("all 200 records are delivered", || {
        first.settled() + second.settled() >= 200
    })
    .await;
    let first_report = first.stop().await;
    // The group rebalances once the first relay left: the second commits once it owns
    // all four partitions (a commit during the rebalance would be refused).
    wait_until("the second relay owns every partition", || {
        second.assigned_partitions() == 4
    })
    .await;
    // The count above includes records delivered twice (a refused commit on revocation
    // hands them over again), so wait until the second relay read every partition to
    // its end.
    // Under CPU pressure the mock coordinator's rebalances (6-s sessions) and the slow
    // output (100 ms a round trip) take longer than the other waits allow.
    wait_within(3 * PATIENCE, "the second relay caught up", || {
        second.caught_up(4)
    })
    .await;
    let second_report = second.stop().await;
    assert!(first_report.consumed + second_report.consumed >= 200);
    assert!(
        second_report.uncommitted.is_empty(),
        "{second_report:?}\n{}",
        lines_about(&logged(), &["ommit", "assigned", "revoked"])
    );

    assert!(
        logged().contains("Committed the offsets refused when these partitions were released."),
        "{}",
        lines_about(&logged(), &["ommit", "assigned", "revoked"])
    );

    let delivered = target.read(&output, 1, 200).await;
    let expected: BTreeSet<String> = (0..200).map(|i| format!("pseudo:event-{i}")).collect();
    let arrived = payloads(&delivered);
    assert_eq!(
        expected.difference(&arrived).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "every record arrived\n{}",
        lines_about(&logged(), &["ommit", "assigned", "revoked", "Relay"])
    );
    assert_eq!(
        cluster.committed("rebalance", &input, 4).await,
        cluster.end_offsets(&input, 4).await,
        "{}",
        lines_about(&logged(), &["ommit", "assigned", "revoked", "Relay"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_authorization_stops_the_relay_with_what_to_grant() {
    let source = Cluster::start();
    let target = Cluster::start();
    let input = source.topic("raw", 1);
    let output = target.topic("pseudonymized", 1);
    let quarantine = target.topic("quarantine", 1);
    source.fill(&input, &numbered(5, 1)).await;

    // The output cluster refuses every write: an ACL missing, not a passing fault.
    target.fail_next_produce_requests(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        50,
    );
    let mut relay = Running::start(
        &source,
        "unauthorized",
        settings(&input, &output, &quarantine),
        target.producer(&[]),
        forward_all(),
    );
    let stopped = tokio::time::timeout(PATIENCE, relay.task.take().expect("the relay runs"))
        .await
        .expect("the relay stops on its own")
        .expect("the relay task does not panic");
    let error = stopped.expect_err("a refused authorization is fatal");
    let message = error.to_string();
    assert!(matches!(error, Error::Fatal { .. }), "{error:?}");
    assert!(
        message.contains("fatal Kafka error on the output cluster"),
        "{message}"
    );
    assert!(message.contains("WRITE to produce"), "{message}");
    assert_eq!(
        source.committed("unauthorized", &input, 1).await,
        vec![-1],
        "nothing is committed past records that were not delivered"
    );
}

/// Drops `skip-*` records, forwards the others, and remembers where each record was read
/// and how often it was asked between two batches.
struct Dropping {
    origins: Mutex<Vec<plumbing::Origin>>,
    boundaries: AtomicUsize,
}

impl Processor for Dropping {
    fn process(&self, _key: Option<&[u8]>, _payload: Option<&[u8]>) -> Decision {
        unreachable!("the relay calls process_at")
    }

    fn process_at(
        &self,
        origin: plumbing::Origin,
        _key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Decision {
        self.origins.lock().unwrap().push(origin);
        let payload = payload.unwrap_or_default();
        if payload.starts_with(b"skip") {
            Decision::Drop {
                reason: Reason::new("no_consent"),
            }
        } else {
            Decision::Forward {
                key: None,
                payload: payload.to_vec(),
            }
        }
    }

    fn between_batches(&self) -> Result<(), ProcessorError> {
        self.boundaries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_records_are_counted_and_committed_past_and_the_processor_sees_origins() {
    let cluster = Cluster::start();
    let input = cluster.topic("raw", 2);
    let output = cluster.topic("pseudonymized", 1);
    let quarantine = cluster.topic("quarantine", 1);
    let records: Vec<Input> = (0..20)
        .map(|i| {
            let payload = if i % 4 == 0 {
                format!("skip-{i}")
            } else {
                format!("event-{i}")
            };
            Input::new(i % 2, format!("customer-{i}"), payload)
        })
        .collect();
    cluster.fill(&input, &records).await;
    let processor = Arc::new(Dropping {
        origins: Mutex::new(Vec::new()),
        boundaries: AtomicUsize::new(0),
    });
    let relay = Running::start(
        &cluster,
        "dropping",
        settings(&input, &output, &quarantine),
        cluster.producer(&[]),
        Arc::clone(&processor) as Arc<dyn Processor>,
    );
    wait_until("15 records are forwarded", || {
        relay.metrics.produced.get() >= 15
    })
    .await;
    wait_until("lag is zero on 2 partitions", || relay.caught_up(2)).await;
    let metrics = relay.metrics.clone();
    let report = relay.stop().await;

    assert_eq!(report.consumed, 20);
    assert_eq!(report.forwarded, 15);
    assert_eq!(report.dropped.get("no_consent"), Some(&5));
    assert_eq!(report.quarantined_total(), 0);
    assert_eq!(
        metrics.dropped.with_label_values(&["no_consent"]).get(),
        5,
        "pseudopipe_events_dropped_total counts them"
    );
    let forwarded = cluster.read(&output, 1, 15).await;
    assert!(forwarded
        .iter()
        .all(|record| record.payload().is_some_and(|p| p.starts_with(b"event"))));
    assert_eq!(
        cluster.committed("dropping", &input, 2).await,
        cluster.end_offsets(&input, 2).await,
        "dropped records are committed past like the others"
    );
    let mut origins = processor.origins.lock().unwrap().clone();
    origins.sort_by_key(|origin| (origin.partition, origin.offset));
    let expected: Vec<_> = (0..2)
        .flat_map(|partition| (0..10).map(move |offset| plumbing::Origin { partition, offset }))
        .collect();
    assert_eq!(origins, expected, "each record's partition and offset");
    assert!(
        processor.boundaries.load(Ordering::Relaxed) > 0,
        "the processor is asked between batches"
    );
}
