//! The loop both stages run: consume → decide → produce → commit when safe.
//!
//! One engine ([`engine`]) consumes the input topic in batches on a thread of its own and
//! asks a [`Processor`] about each record in offset order (forward, quarantine or drop);
//! a delivery strategy behind one seam ([`engine::Strategy`], ADR 0020) says how decided
//! records reach their topics and when input offsets move: [`at_least_once`] or
//! [`exactly_once`]. Both share the counters and report ([`tally`]), Kafka's partition
//! lists ([`partitions`]) and one client context ([`context`]). The processor runs on the
//! relay's thread: no measurement has shown that a pool of transform threads would pay on
//! the 2-core machine the end-to-end bench runs on (ADR 0009).

mod at_least_once;
mod context;
mod engine;
mod exactly_once;
mod partitions;
mod tally;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientConfig, Message};
use tracing::info;
use tracing::level_filters::LevelFilter;

use self::at_least_once::AtLeastOnce;
pub(crate) use self::context::log_to_tracing;
use self::exactly_once::ExactlyOnce;
pub use self::exactly_once::{Layout, TransactionSettings};
use self::partitions::list_offsets;
use crate::metrics::StageMetrics;
use crate::offsets::TopicPartition;
use crate::{Error, Shutdown};

/// Header names on a quarantined record.
pub mod headers {
    /// The reason code, e.g. `invalid_json` (also the metric label).
    pub const REASON: &str = "pseudopipe-reason";
    /// A human-readable explanation from the processor.
    pub const MESSAGE: &str = "pseudopipe-message";
    /// The input topic the record was read from.
    pub const SOURCE_TOPIC: &str = "pseudopipe-source-topic";
    /// The input partition, in decimal.
    pub const SOURCE_PARTITION: &str = "pseudopipe-source-partition";
    /// The input offset, in decimal.
    pub const SOURCE_OFFSET: &str = "pseudopipe-source-offset";
    /// The stage that quarantined it (`ingest` or `sink`).
    pub const STAGE: &str = "pseudopipe-stage";
    /// The field the reason is about, as the policy writes its path (e.g.
    /// `basket.items[].sku`), where the processor names one.
    pub const FIELD: &str = "pseudopipe-field";
    /// The detector that found personal data in a kept field (e.g. `card`).
    pub const DETECTOR: &str = "pseudopipe-detector";
    /// The prefix of every header above.
    pub const PREFIX: &str = "pseudopipe-";
}

/// The quarantine reason of a record on which the [`Processor`] panicked.
pub const PROCESSOR_PANIC: Reason = Reason::new("processor_panic");

/// Why a record was quarantined or dropped: a short, fixed code from the stage's bounded
/// set (e.g. `malformed_json`), used as a metric label, the `pseudopipe-reason` header and
/// a key of the report. A type of its own, not a string, so that nothing but such a code
/// (never an explanation or a value of the event) can reach a label; a stage turns its
/// own reason enum into one with [`Reason::new`]. Plumbing knows no stage's reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reason(&'static str);

impl Reason {
    /// The reason with this code (a `'static` word: codes are a fixed set, not data).
    pub const fn new(code: &'static str) -> Self {
        Self(code)
    }

    /// The code, e.g. `malformed_json`.
    pub const fn code(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// So that a decision's reason reads as its code in a comparison: `reason == "too_deep"`.
impl PartialEq<&str> for Reason {
    fn eq(&self, code: &&str) -> bool {
        self.0 == *code
    }
}

/// So that a report's counts are looked up by code: `report.quarantined.get("too_deep")`.
impl std::borrow::Borrow<str> for Reason {
    fn borrow(&self) -> &str {
        self.0
    }
}

/// Why a [`Processor`] stops its stage between two batches: the stage's own typed error,
/// kept whole (with its `source()` chain) inside [`Error::Processor`].
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// What to do with one input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Produce to the output topic with exactly this key and payload; the input key,
    /// headers and timestamp are never forwarded (they may be personal).
    Forward {
        /// The output key (e.g. a token), or none.
        key: Option<Vec<u8>>,
        /// The output payload.
        payload: Vec<u8>,
    },
    /// Produce the record unchanged to the quarantine topic.
    Quarantine {
        /// A metric label and the `pseudopipe-reason` header.
        reason: Reason,
        /// An explanation for the operator (`pseudopipe-message` header). It stays
        /// on-prem with the record, but should not quote values of the event anyway.
        message: String,
        /// Where a detector found personal data in a field the policy keeps: the
        /// field's policy path and the detector's name (`pseudopipe-field` and
        /// `pseudopipe-detector` headers, and the labels of
        /// `pseudopipe_detector_quarantined_total`). Both are the policy's words, from a
        /// bounded set; never a value of the event.
        finding: Option<Finding>,
    },
    /// Produce nothing: the record is settled as it is (its offset moves on) and counted
    /// in `pseudopipe_events_dropped_total{reason}`. For records the stage must not pass
    /// on and must not keep either, e.g. events whose subject withheld consent.
    Drop {
        /// The metric label.
        reason: Reason,
    },
}

/// A detector's finding in a kept field, see [`Decision::Quarantine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The field's policy path, e.g. `basket.items[].sku`.
    pub field: String,
    /// The detector, e.g. `card`.
    pub detector: &'static str,
}

impl Decision {
    /// A quarantine with no detector finding.
    pub fn quarantine(reason: Reason, message: impl Into<String>) -> Self {
        Self::Quarantine {
            reason,
            message: message.into(),
            finding: None,
        }
    }
}

/// Where a record was read: its input partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The input partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
}

/// Decides what becomes of each record. Called on the relay's loop, in offset order
/// within a partition: keep it quick and never block. A panic quarantines the record
/// with reason [`PROCESSOR_PANIC`].
pub trait Processor: Send + Sync + 'static {
    /// Decides for one record. `key` and `payload` are `None` when the record has none.
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision;

    /// Decides for one record read at `origin`; what the relays call. By default
    /// [`Processor::process`], for processors that do not care where a record was read.
    fn process_at(&self, origin: Origin, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        let _ = origin;
        self.process(key, payload)
    }

    /// Called between two batches, when every record decided so far is settled for the
    /// relay's purposes: exactly once, after a transaction committed (or while none is
    /// open after one did); at least once, before each polled batch is decided. What a
    /// processor changes here (e.g. its keys) applies to whole batches. An error stops
    /// the stage ([`crate::Error::Processor`]): what was not committed is consumed again
    /// after the restart. Never called concurrently with [`Processor::process_at`].
    fn between_batches(&self) -> Result<(), ProcessorError> {
        Ok(())
    }

    /// Called once when the relay stops, after its last commit.
    fn stopped(&self) {}
}

impl<F> Processor for F
where
    F: Fn(Option<&[u8]>, Option<&[u8]>) -> Decision + Send + Sync + 'static,
{
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        self(key, payload)
    }
}

/// The liveness bound by default ([`RelaySettings::stall_timeout`]): longer than a broker
/// takes to restart, well under the producers' `message.timeout.ms`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a relay reads and writes, and its limits.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// `ingest` or `sink`: a log field, the `pseudopipe-stage` header.
    pub stage: &'static str,
    /// The topic consumed.
    pub input_topic: String,
    /// Where forwarded records go.
    pub output_topic: String,
    /// Where quarantined records go (see [`DeliveryMode`]).
    pub quarantine_topic: String,
    /// Records consumed and not yet settled, at most; consumption pauses above it, which
    /// bounds memory while the output cluster is down. Default 10 000.
    pub max_in_flight: usize,
    /// How often delivered offsets are committed. Default 1 s.
    pub commit_interval: Duration,
    /// How long in-flight deliveries may take to finish at shutdown. Default 10 s.
    pub drain_timeout: Duration,
    /// How long a revoked partition's deliveries may take to finish before its offsets
    /// are committed; keep it well under the consumer's `session.timeout.ms` (45 s by
    /// default). Default 5 s.
    pub rebalance_drain_timeout: Duration,
    /// How often consumer lag is measured. Default 5 s.
    pub lag_interval: Duration,
    /// The liveness bound: a producer that holds records and has had none acknowledged
    /// for this long, while its cluster answers, is replaced; if its replacement stalls
    /// as long, the stage stops ([`Error::Stalled`]). Exactly once, a transaction that
    /// cannot commit within it is aborted, and a second one in a row stops the stage.
    /// Default [`DEFAULT_STALL_TIMEOUT`], well under the producers' `message.timeout.ms`
    /// (120 s unless set).
    pub stall_timeout: Duration,
}

impl RelaySettings {
    /// Settings for a relay from `input_topic` to `output_topic`, with the defaults.
    pub fn new(
        stage: &'static str,
        input_topic: impl Into<String>,
        output_topic: impl Into<String>,
        quarantine_topic: impl Into<String>,
    ) -> Self {
        Self {
            stage,
            input_topic: input_topic.into(),
            output_topic: output_topic.into(),
            quarantine_topic: quarantine_topic.into(),
            max_in_flight: 10_000,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            rebalance_drain_timeout: Duration::from_secs(5),
            lag_interval: Duration::from_secs(5),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidSettings(message));
        for (name, topic) in [
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("quarantine_topic", &self.quarantine_topic),
        ] {
            if topic.trim().is_empty() || topic.contains('\0') {
                return invalid(format!("`{name}` must name a topic"));
            }
        }
        if self.input_topic == self.output_topic || self.input_topic == self.quarantine_topic {
            return invalid(format!(
                "`input_topic` `{}` is also an output: the relay would consume its own records",
                self.input_topic
            ));
        }
        if self.stage.is_empty() {
            return invalid("`stage` must not be empty".to_owned());
        }
        if self.max_in_flight == 0 {
            return invalid("`max_in_flight` must be at least 1".to_owned());
        }
        if self.commit_interval.is_zero() || self.lag_interval.is_zero() {
            return invalid("`commit_interval` and `lag_interval` must be positive".to_owned());
        }
        if self.stall_timeout < Duration::from_secs(1) {
            return invalid("`stall_timeout` must be at least 1 s".to_owned());
        }
        Ok(())
    }
}

/// What a relay did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Records consumed from the input topic.
    pub consumed: u64,
    /// Records delivered to the output topic.
    pub forwarded: u64,
    /// Records delivered to the quarantine topic, by reason.
    pub quarantined: BTreeMap<Reason, u64>,
    /// Records dropped by the processor ([`Decision::Drop`]), by reason.
    pub dropped: BTreeMap<Reason, u64>,
    /// Deliveries tried again after a retriable error.
    pub retries: u64,
    /// Exactly once: input partitions whose transaction was aborted and whose records
    /// were consumed again (one per partition and abort).
    pub aborted_transactions: u64,
    /// Partitions stopped by a permanent failure, with the first offset that failed.
    pub stalled: Vec<(TopicPartition, i64)>,
    /// Watermarks that could not be committed when their partition was released (at
    /// shutdown or on revocation, e.g. because the group was rebalancing) and that the
    /// group's committed offsets did not cover at the end: the records between the
    /// group's committed offset and these will be delivered again (duplicates, never loss).
    pub uncommitted: Vec<(TopicPartition, i64)>,
}

impl RelayReport {
    /// Records delivered to the quarantine topic, all reasons together.
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// One line for people: `consumed 10000, forwarded 9903, quarantined 97 (malformed_json 8,
/// ...)`, then retries, aborted transactions, stalled and uncommitted partitions when any.
impl fmt::Display for RelayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consumed {}, forwarded {}, quarantined {}",
            self.consumed,
            self.forwarded,
            self.quarantined_total()
        )?;
        if !self.quarantined.is_empty() {
            let reasons: Vec<String> = self
                .quarantined
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        if self.retries > 0 {
            write!(f, ", {} deliveries retried", self.retries)?;
        }
        if self.aborted_transactions > 0 {
            write!(f, ", {} transactions aborted", self.aborted_transactions)?;
        }
        if !self.stalled.is_empty() {
            write!(f, ", stalled at {}", list_offsets(&self.stalled))?;
        }
        if !self.uncommitted.is_empty() {
            write!(f, ", not committed {}", list_offsets(&self.uncommitted))?;
        }
        Ok(())
    }
}

/// How decided records reach their topics, and when input offsets move: the relay's
/// delivery strategy (ADR 0020).
#[derive(Clone, Debug)]
pub enum DeliveryMode {
    /// Acknowledged deliveries, contiguous watermarks committed every
    /// `commit_interval`, retries, stalled partitions, the liveness guard.
    AtLeastOnce {
        /// Producer configuration of the output, such as [`crate::config::producer`]
        /// builds.
        output: ClientConfig,
        /// Producer configuration of the quarantine; when it is the output's, one
        /// producer serves both topics.
        quarantine: ClientConfig,
    },
    /// Kafka transactions: the consumer reads with `isolation.level=read_committed`; the
    /// relay settings' `max_in_flight` and `commit_interval` do not apply (a transaction
    /// bounds both).
    ExactlyOnce {
        /// How transactions are cut.
        transactions: TransactionSettings,
        /// Where the transactional producers write and where the input offsets are kept.
        layout: Layout,
    },
}

/// Runs a relay until `shutdown` fires, then drains, commits, leaves the group and
/// returns what it did.
///
/// `consumer` is a consumer configuration such as [`crate::config::consumer`] builds
/// (automatic commits are refused; absent, they are turned off); `delivery` chooses the
/// strategy and its producers.
///
/// Errors are those of setting up (settings, client creation, subscription), and
/// [`Error::Fatal`]: a client met an error that no retry can fix (fenced, idempotence
/// lost, authorization or SASL credentials refused, a transaction that cannot even be
/// aborted); the relay then commits what it may and stops. At least once, delivery
/// failures are otherwise retried or stall their partition, and offsets that could not be
/// committed at the end are listed in the report.
pub async fn run(
    settings: RelaySettings,
    consumer: ClientConfig,
    delivery: DeliveryMode,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, Error> {
    let strategy_metrics = metrics.clone();
    match delivery {
        DeliveryMode::AtLeastOnce { output, quarantine } => {
            let make = move |settings: &RelaySettings| {
                AtLeastOnce::new(settings, output, quarantine, strategy_metrics)
            };
            engine::run(settings, consumer, make, processor, metrics, shutdown).await
        }
        DeliveryMode::ExactlyOnce {
            transactions,
            layout,
        } => {
            transactions.validate()?;
            let mut consumer = consumer;
            consumer.set("isolation.level", "read_committed");
            info!(
                stage = settings.stage,
                max_records = transactions.max_records,
                max_duration_ms = transactions.max_duration.as_millis(),
                "Delivery exactly once, in transactions."
            );
            let make = move |settings: &RelaySettings| {
                ExactlyOnce::new(settings, transactions, layout, strategy_metrics)
            };
            engine::run(settings, consumer, make, processor, metrics, shutdown).await
        }
    }
}

/// The librdkafka log level matching what `tracing` lets through.
pub(crate) fn librdkafka_log_level() -> RDKafkaLogLevel {
    match LevelFilter::current() {
        LevelFilter::TRACE | LevelFilter::DEBUG => RDKafkaLogLevel::Debug,
        LevelFilter::INFO => RDKafkaLogLevel::Info,
        LevelFilter::WARN => RDKafkaLogLevel::Warning,
        _ => RDKafkaLogLevel::Error,
    }
}

/// Asks `processor` about one record. A processor that panics on one record would
/// otherwise crash the stage on that record forever (it is consumed again after every
/// restart): the record is quarantined instead. The panic message is not logged, it may
/// quote the record.
pub(crate) fn decide(processor: &dyn Processor, message: &BorrowedMessage<'_>) -> Decision {
    let origin = Origin {
        partition: message.partition(),
        offset: message.offset(),
    };
    panic::catch_unwind(AssertUnwindSafe(|| {
        processor.process_at(origin, message.key(), message.payload())
    }))
    .unwrap_or_else(|_panic| {
        // Logged (rate-limited) with the other quarantined records, see `Tally`.
        Decision::quarantine(PROCESSOR_PANIC, "the processor panicked on this record")
    })
}

/// The record `decision` makes of `message`, to `topic` with `opaque`: the processor's key
/// and payload (the input's key, headers and timestamp are never forwarded), or the
/// message unchanged with the quarantine headers. A dropped record is never produced:
/// its strategy settles it without one.
pub(crate) fn outgoing<'a, O: IntoOpaque>(
    topic: &'a str,
    decision: &'a Decision,
    message: &'a BorrowedMessage<'_>,
    stage: &str,
    opaque: O,
) -> BaseRecord<'a, [u8], [u8], O> {
    let mut record = BaseRecord::with_opaque_to(topic, opaque);
    match decision {
        Decision::Forward { key, payload } => {
            record.key = key.as_deref();
            record.payload = Some(payload.as_slice());
        }
        Decision::Quarantine {
            reason,
            message: explanation,
            finding,
        } => {
            // The original headers (less any `pseudopipe-*` of an earlier quarantine), then
            // ours.
            let mut out = OwnedHeaders::new();
            let original = message
                .headers()
                .into_iter()
                .flat_map(|original| original.iter());
            for header in original.filter(|header| !header.key.starts_with(headers::PREFIX)) {
                out = out.insert(header);
            }
            let partition = message.partition().to_string();
            let offset = message.offset().to_string();
            let found = finding.as_ref().map(|finding| {
                [
                    (headers::FIELD, finding.field.as_str()),
                    (headers::DETECTOR, finding.detector),
                ]
            });
            let ours = [
                (headers::REASON, reason.code()),
                (headers::MESSAGE, explanation),
                (headers::SOURCE_TOPIC, message.topic()),
                (headers::SOURCE_PARTITION, partition.as_str()),
                (headers::SOURCE_OFFSET, offset.as_str()),
                (headers::STAGE, stage),
            ];
            for (key, value) in ours.into_iter().chain(found.into_iter().flatten()) {
                out = out.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            record.headers = Some(out);
            record.timestamp = message.timestamp().to_millis();
            record.key = message.key();
            record.payload = message.payload();
        }
        Decision::Drop { .. } => {}
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid() {
        let settings = RelaySettings::new("ingest", "raw", "pseudonymized", "quarantine");
        assert!(settings.validate().is_ok());
        assert_eq!(settings.max_in_flight, 10_000);
        assert_eq!(settings.commit_interval, Duration::from_secs(1));
        assert_eq!(settings.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_name() {
        let base = RelaySettings::new("ingest", "raw", "pseudonymized", "quarantine");
        type Breakage = fn(&mut RelaySettings);
        let cases: [(&str, Breakage); 4] = [
            ("output_topic", |s| s.output_topic.clear()),
            ("input_topic", |s| s.quarantine_topic = "raw".into()),
            ("max_in_flight", |s| s.max_in_flight = 0),
            ("commit_interval", |s| s.commit_interval = Duration::ZERO),
        ];
        for (field, break_it) in cases {
            let mut settings = base.clone();
            break_it(&mut settings);
            let error = settings.validate().expect_err(field).to_string();
            assert!(error.contains(field), "{error}");
        }
    }

    #[test]
    fn a_report_reads_as_one_line() {
        let report = RelayReport {
            consumed: 10,
            forwarded: 7,
            quarantined: BTreeMap::from([
                (Reason::new("malformed_json"), 2),
                (Reason::new("too_deep"), 1),
            ]),
            aborted_transactions: 1,
            ..RelayReport::default()
        };
        assert_eq!(
            report.to_string(),
            "consumed 10, forwarded 7, quarantined 3 (malformed_json 2, too_deep 1), 1 transactions aborted"
        );
    }

    #[test]
    fn closures_are_processors() {
        let processor: Arc<dyn Processor> = Arc::new(
            |_key: Option<&[u8]>, payload: Option<&[u8]>| Decision::Forward {
                key: None,
                payload: payload.unwrap_or_default().to_vec(),
            },
        );
        assert_eq!(
            processor.process(Some(b"k"), Some(b"p")),
            Decision::Forward {
                key: None,
                payload: b"p".to_vec()
            }
        );
    }
}
