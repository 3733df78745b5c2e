//! The loop both stages run: consume → decide → produce → commit when safe.
//!
//! [`run`] consumes the input topic in a consumer group and asks a [`Processor`] what to
//! do with each record: forward it to the output topic with a new key and payload, or
//! quarantine it unchanged with a reason. Records are produced without waiting for each
//! other (up to `max_in_flight` at once), each delivery report is awaited by its own task,
//! and an input offset is committed only once every record before it in its partition is
//! delivered (see [`crate::offsets`]).
//!
//! - Retriable delivery failures are retried with backoff, holding the partition's
//!   offsets back; a permanent failure stalls the partition (paused, never committed past,
//!   `pseudopipe_partition_stalled` set to 1, logged without content).
//! - On revocation the partition's deliveries get a bounded time to finish, then its
//!   watermark is committed synchronously before the partition is released.
//! - On shutdown consumption stops, in-flight deliveries get `drain_timeout`, and the
//!   watermarks are committed synchronously.
//!
//! A retried record may land after records that followed it in its input partition;
//! librdkafka's own retries (idempotent producer) keep order.
//!
//! `run` should be called on tokio's multi-threaded runtime: a revocation blocks the
//! consumer's thread while deliveries finish on the other workers. On a single-threaded
//! runtime revocations commit what is delivered without waiting (still at-least-once).

mod context;
mod delivery;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::level_filters::LevelFilter;
use tracing::{debug, error, info, warn};

pub(crate) use self::context::log_to_tracing;
use self::context::RelayContext;
use self::delivery::{Delivery, Outgoing, Route, Stall};
use self::state::{
    committed_offsets, list_offsets, offsets_list, partitions_list, partitions_of, Shared,
};
use crate::metrics::StageMetrics;
use crate::offsets::TopicPartition;
use crate::{config, Error, Shutdown};

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
    /// The prefix of every header above.
    pub const PREFIX: &str = "pseudopipe-";
}

/// The quarantine reason of a record on which the [`Processor`] panicked.
pub const PROCESSOR_PANIC: &str = "processor_panic";

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
        /// A short, fixed reason code: a metric label and the `pseudopipe-reason` header.
        reason: &'static str,
        /// An explanation for the operator (`pseudopipe-message` header). It stays
        /// on-prem with the record, but should not quote values of the event anyway.
        message: String,
    },
}

/// Decides what becomes of each record. Called on the relay's loop, in offset order
/// within a partition: keep it quick and never block. A panic quarantines the record
/// with reason [`PROCESSOR_PANIC`].
pub trait Processor: Send + Sync + 'static {
    /// Decides for one record. `key` and `payload` are `None` when the record has none.
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision;
}

impl<F> Processor for F
where
    F: Fn(Option<&[u8]>, Option<&[u8]>) -> Decision + Send + Sync + 'static,
{
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        self(key, payload)
    }
}

/// Where a relay reads and writes, and its limits.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// `ingest` or `sink`: a log field, the `pseudopipe-stage` header.
    pub stage: &'static str,
    /// The topic consumed.
    pub input_topic: String,
    /// Where forwarded records go.
    pub output_topic: String,
    /// Where quarantined records go (on the output producer's twin, see [`run`]).
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
        }
    }

    /// Subscribes `consumer` to the input topic.
    pub(crate) fn subscribe<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
    ) -> Result<(), Error> {
        consumer
            .subscribe(&[self.input_topic.as_str()])
            .map_err(|source| Error::Subscribe {
                topic: self.input_topic.clone(),
                source,
            })
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
    pub quarantined: BTreeMap<&'static str, u64>,
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

/// The consumer type of a relay.
type RelayConsumer = StreamConsumer<RelayContext>;

/// Runs a relay until `shutdown` fires, then drains, commits, leaves the group and
/// returns what it did.
///
/// `consumer` is a consumer configuration such as [`config::consumer`] builds (automatic
/// commits are refused; absent, they are turned off). `output` and `quarantine` may be
/// clones of one producer when both topics live on the same cluster.
///
/// Errors are those of setting up (settings, consumer creation, subscription). Once
/// running, nothing is an error: delivery failures are retried or stall their partition,
/// and offsets that could not be committed at the end are listed in the report.
pub async fn run(
    settings: RelaySettings,
    consumer: ClientConfig,
    output: FutureProducer,
    quarantine: FutureProducer,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, Error> {
    settings.validate()?;
    let mut consumer_config = config::ensure_manual_commit(&consumer)?;
    // rdkafka takes its log level from the `log` crate; this consumer logs to `tracing`.
    consumer_config.set_log_level(librdkafka_log_level());
    let shared = Arc::new(Shared::new(
        settings.stage,
        metrics,
        settings.rebalance_drain_timeout,
    ));
    let consumer: RelayConsumer = consumer_config
        .create_with_context(RelayContext {
            shared: Arc::clone(&shared),
        })
        .map_err(Error::CreateConsumer)?;
    settings.subscribe(&consumer)?;
    info!(
        stage = settings.stage,
        input_topic = %settings.input_topic,
        output_topic = %settings.output_topic,
        quarantine_topic = %settings.quarantine_topic,
        "Relay started."
    );

    let (stall_sender, stalls) = mpsc::unbounded_channel();
    let mut relay = Relay {
        output_topic: Arc::from(settings.output_topic.as_str()),
        quarantine_topic: Arc::from(settings.quarantine_topic.as_str()),
        settings,
        shared,
        consumer: Arc::new(consumer),
        output,
        quarantine,
        processor,
        deliveries: JoinSet::new(),
        stall_sender,
        lag_task: None,
        consumed: 0,
    };
    relay.relay_until(&shutdown, stalls).await;
    relay.finish().await
}

/// The running relay, owned by its loop.
struct Relay {
    settings: RelaySettings,
    output_topic: Arc<str>,
    quarantine_topic: Arc<str>,
    shared: Arc<Shared>,
    consumer: Arc<RelayConsumer>,
    output: FutureProducer,
    quarantine: FutureProducer,
    processor: Arc<dyn Processor>,
    deliveries: JoinSet<()>,
    stall_sender: mpsc::UnboundedSender<Stall>,
    lag_task: Option<JoinHandle<()>>,
    consumed: u64,
}

impl Relay {
    async fn relay_until(
        &mut self,
        shutdown: &Shutdown,
        mut stalls: mpsc::UnboundedReceiver<Stall>,
    ) {
        // A local handle, so that a received message borrows it and not `self`.
        let consumer = Arc::clone(&self.consumer);
        let mut commit_tick = tokio::time::interval_at(
            Instant::now() + self.settings.commit_interval,
            self.settings.commit_interval,
        );
        commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut lag_tick = tokio::time::interval(self.settings.lag_interval);
        lag_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            self.apply_backpressure();
            // Biased: shutdown first, and neither commits nor reaping may starve behind a
            // busy input topic.
            tokio::select! {
                biased;
                () = shutdown.triggered() => break,
                Some(stall) = stalls.recv() => self.pause_stalled(&stall),
                _ = commit_tick.tick() => self.commit_periodically(),
                _ = lag_tick.tick() => self.measure_lag(),
                Some(joined) = self.deliveries.join_next() => log_join_error(joined),
                received = consumer.recv() => match received {
                    Ok(message) => self.dispatch(&message),
                    Err(KafkaError::PartitionEOF(partition)) => {
                        debug!(stage = self.settings.stage, partition, "Reached the end of a partition.");
                    }
                    Err(error) => warn!(stage = self.settings.stage, %error, "Consumer error."),
                },
            }
        }
    }

    /// Decides for one record, hands it to its producer, and lets a task await the report.
    fn dispatch(&mut self, message: &BorrowedMessage<'_>) {
        let received_at = Instant::now();
        self.consumed += 1;
        self.shared.metrics.consumed.inc();
        let tp = TopicPartition::new(message.topic(), message.partition());
        let offset = message.offset();
        let (epoch, cancel) = self.shared.begin(&tp, offset);

        let decision = decide(self.processor.as_ref(), self.settings.stage, message);
        let outgoing = match decision {
            Decision::Forward { key, payload } => Outgoing {
                route: Route::Forward,
                topic: Arc::clone(&self.output_topic),
                key,
                payload: Some(payload),
                headers: None,
                timestamp: None,
            },
            Decision::Quarantine {
                reason,
                message: explanation,
            } => Outgoing {
                route: Route::Quarantine(reason),
                topic: Arc::clone(&self.quarantine_topic),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers: Some(quarantine_headers(
                    message,
                    reason,
                    &explanation,
                    self.settings.stage,
                )),
                timestamp: message.timestamp().to_millis(),
            },
        };
        let producer = match outgoing.route {
            Route::Forward => self.output.clone(),
            Route::Quarantine(_) => self.quarantine.clone(),
        };
        // Enqueued here, in offset order, so that librdkafka keeps the input order.
        let first = outgoing.send(&producer);
        let delivery = Delivery {
            shared: Arc::clone(&self.shared),
            producer,
            outgoing,
            tp,
            epoch,
            offset,
            received_at,
            cancel,
            stalls: self.stall_sender.clone(),
        };
        self.deliveries.spawn(delivery.run(first));
    }

    /// Pauses the whole assignment above `max_in_flight`, resumes it (less the stalled
    /// partitions) once a quarter of the room is free again. The consumer keeps being
    /// polled meanwhile, so the group membership and rebalances are served.
    fn apply_backpressure(&self) {
        let in_flight = self.shared.in_flight();
        let max = self.settings.max_in_flight;
        let resume_below = max - max / 4;
        let mut state = self.shared.lock();
        if !state.backpressure && in_flight >= max {
            state.backpressure = true;
            match self.consumer.assignment() {
                Ok(assignment) => {
                    if let Err(error) = self.consumer.pause(&assignment) {
                        warn!(stage = self.settings.stage, %error, "Failed to pause consumption.");
                    }
                }
                Err(error) => {
                    warn!(stage = self.settings.stage, %error, "Failed to read the assignment.")
                }
            }
            debug!(
                stage = self.settings.stage,
                in_flight, "Too many records in flight: consumption paused."
            );
        } else if state.backpressure && in_flight < resume_below.max(1) {
            state.backpressure = false;
            match self.consumer.assignment() {
                Ok(assignment) => {
                    let partitions = partitions_of(&assignment);
                    let resumable =
                        partitions_list(partitions.iter().filter(|tp| !state.is_stalled(tp)));
                    if let Err(error) = self.consumer.resume(&resumable) {
                        warn!(stage = self.settings.stage, %error, "Failed to resume consumption.");
                    }
                }
                Err(error) => {
                    warn!(stage = self.settings.stage, %error, "Failed to read the assignment.")
                }
            }
            debug!(
                stage = self.settings.stage,
                in_flight, "Consumption resumed."
            );
        }
    }

    /// Stops fetching a partition whose delivery failed permanently.
    fn pause_stalled(&self, stall: &Stall) {
        let state = self.shared.lock();
        if state.tracker.epoch(&stall.tp) != Some(stall.epoch) {
            return; // revoked since: no longer ours to pause
        }
        if let Err(error) = self.consumer.pause(&partitions_list([&stall.tp])) {
            warn!(stage = self.settings.stage, topic = %stall.tp.topic, partition = stall.tp.partition, %error, "Failed to pause a stalled partition.");
        }
    }

    /// Commits the watermarks that moved, without waiting for the broker.
    fn commit_periodically(&self) {
        let ready = self.shared.lock().tracker.all_committable();
        if ready.is_empty() {
            return;
        }
        match self
            .consumer
            .commit(&offsets_list(&ready), CommitMode::Async)
        {
            Ok(()) => {
                debug!(stage = self.settings.stage, offsets = %list_offsets(&ready), "Committing offsets.");
                let mut state = self.shared.lock();
                for (tp, offset) in &ready {
                    state.tracker.mark_committed(tp, *offset);
                }
            }
            Err(error) => warn!(stage = self.settings.stage, %error, "Failed to commit offsets."),
        }
    }

    /// Measures consumer lag on a blocking thread (fetching watermarks waits for brokers).
    fn measure_lag(&mut self) {
        if self
            .lag_task
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let shared = Arc::clone(&self.shared);
        self.lag_task = Some(tokio::task::spawn_blocking(move || {
            measure_lag(consumer.as_ref(), &shared.metrics, shared.stage);
        }));
    }

    /// A commit that failed on release may have been made good by a later one (or by
    /// another member): asks the group, so that the report lists only real gaps.
    async fn forget_covered_commits(&self) {
        let failed = self.shared.lock().uncommitted();
        if failed.is_empty() {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let partitions = partitions_list(failed.iter().map(|(tp, _)| tp));
        let committed = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(partitions, Duration::from_secs(5))
        })
        .await;
        match committed {
            Ok(Ok(committed)) => {
                let committed = committed_offsets(&committed);
                self.shared.lock().forget_covered(&committed);
            }
            Ok(Err(error)) => {
                debug!(stage = self.settings.stage, %error, "Cannot read committed offsets.");
            }
            Err(error) => {
                debug!(stage = self.settings.stage, %error, "Cannot read committed offsets.");
            }
        }
    }

    /// Stops: drains deliveries, commits, leaves the group, reports.
    async fn finish(mut self) -> Result<RelayReport, Error> {
        let stage = self.settings.stage;
        info!(
            stage,
            in_flight = self.shared.in_flight(),
            "Shutting down: draining in-flight deliveries."
        );
        let drained = tokio::time::timeout(self.settings.drain_timeout, async {
            while let Some(joined) = self.deliveries.join_next().await {
                log_join_error(joined);
            }
        })
        .await
        .is_ok();
        if !drained {
            warn!(stage, in_flight = self.shared.in_flight(), "Drain timed out: records not delivered yet will be consumed again after a restart.");
            self.shared.cancel_all();
            self.deliveries.abort_all();
            while let Some(joined) = self.deliveries.join_next().await {
                if let Err(error) = joined {
                    if error.is_panic() {
                        log_join_error(Err(error));
                    }
                }
            }
        }

        let ready = self.shared.lock().tracker.all_progress();
        if !ready.is_empty() {
            let consumer = Arc::clone(&self.consumer);
            let tpl = offsets_list(&ready);
            let commit =
                tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                    .await
                    .unwrap_or(Err(KafkaError::Canceled));
            let mut state = self.shared.lock();
            state.record_release_commit(&ready, commit.is_ok());
            match commit {
                Ok(()) => {
                    for (tp, offset) in &ready {
                        state.tracker.mark_committed(tp, *offset);
                    }
                    drop(state);
                    info!(stage, offsets = %list_offsets(&ready), "Committed final offsets.");
                }
                // Closing the consumer below tries once more, on revocation.
                Err(error) => {
                    drop(state);
                    warn!(stage, %error, offsets = %list_offsets(&ready), "Failed to commit final offsets.");
                }
            }
        }

        if let Some(task) = self.lag_task.take() {
            let _ = task.await;
        }
        self.forget_covered_commits().await;
        // Before closing: the revocation on close forgets the stalled partitions.
        let report = self.shared.report(self.consumed);
        // Closing leaves the group (its revocation commits once more) and blocks until
        // done: not on a runtime worker.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        if report.uncommitted.is_empty() {
            info!(
                stage,
                consumed = report.consumed,
                forwarded = report.forwarded,
                quarantined = report.quarantined_total(),
                retries = report.retries,
                stalled = report.stalled.len(),
                "Relay stopped."
            );
        } else {
            warn!(
                stage,
                consumed = report.consumed,
                forwarded = report.forwarded,
                quarantined = report.quarantined_total(),
                retries = report.retries,
                stalled = report.stalled.len(),
                uncommitted = %list_offsets(&report.uncommitted),
                "Relay stopped; some offsets could not be committed: their records will be delivered again."
            );
        }
        Ok(report)
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

/// Lag of every assigned partition that has a position: high watermark - position.
/// Fetching watermarks waits for the brokers: call it off the async workers.
pub(crate) fn measure_lag<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    metrics: &StageMetrics,
    stage: &'static str,
) {
    let positions = match consumer.position() {
        Ok(positions) => positions,
        Err(error) => {
            debug!(stage, %error, "Cannot read positions to measure lag.");
            return;
        }
    };
    for elem in positions.elements() {
        let Offset::Offset(position) = elem.offset() else {
            continue; // nothing consumed yet
        };
        match consumer.fetch_watermarks(elem.topic(), elem.partition(), Duration::from_secs(2)) {
            Ok((_low, high)) => {
                // Skip partitions revoked meanwhile, so no stale series is left behind.
                let still_assigned = consumer.assignment().is_ok_and(|assignment| {
                    assignment
                        .find_partition(elem.topic(), elem.partition())
                        .is_some()
                });
                if still_assigned {
                    metrics
                        .consumer_lag
                        .with_label_values(&[elem.topic(), &elem.partition().to_string()])
                        .set((high - position).max(0));
                }
            }
            Err(error) => {
                debug!(stage, topic = elem.topic(), partition = elem.partition(), %error, "Cannot fetch watermarks to measure lag.")
            }
        }
    }
}

/// Asks `processor` about one record. A processor that panics on one record would
/// otherwise crash the stage on that record forever (it is consumed again after every
/// restart): the record is quarantined instead. The panic message is not logged, it may
/// quote the record.
pub(crate) fn decide(
    processor: &dyn Processor,
    stage: &'static str,
    message: &BorrowedMessage<'_>,
) -> Decision {
    panic::catch_unwind(AssertUnwindSafe(|| {
        processor.process(message.key(), message.payload())
    }))
    .unwrap_or_else(|_panic| {
        error!(
            stage,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "The processor panicked; the record is quarantined."
        );
        Decision::Quarantine {
            reason: PROCESSOR_PANIC,
            message: "the processor panicked on this record".to_owned(),
        }
    })
}

/// The original headers (less any `pseudopipe-*` of an earlier quarantine), then ours.
pub(crate) fn quarantine_headers(
    message: &BorrowedMessage<'_>,
    reason: &str,
    explanation: &str,
    stage: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            if !header.key.starts_with(headers::PREFIX) {
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    for (key, value) in [
        (headers::REASON, reason),
        (headers::MESSAGE, explanation),
        (headers::SOURCE_TOPIC, message.topic()),
        (headers::SOURCE_PARTITION, partition.as_str()),
        (headers::SOURCE_OFFSET, offset.as_str()),
        (headers::STAGE, stage),
    ] {
        out = out.insert(Header {
            key,
            value: Some(value),
        });
    }
    out
}

fn log_join_error(joined: Result<(), JoinError>) {
    if let Err(error) = joined {
        if error.is_panic() {
            error!(%error, "A delivery task panicked; its offset holds the partition back.");
        }
    }
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
            quarantined: BTreeMap::from([("malformed_json", 2), ("too_deep", 1)]),
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
