//! The one relay loop, and the [`Strategy`] seam its two strategies implement (ADR 0020
//! lists what each side owns). Consumer lag is measured on a small thread of its own:
//! fetching watermarks waits for the brokers.

use std::panic;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::context::{Locked, Rebalancing, RelayConsumer, Watched};
use super::partitions::list_offsets;
use super::tally::Tally;
use super::{decide, librdkafka_log_level, Decision, Processor, RelayReport, RelaySettings};
use crate::health::Cluster;
use crate::metrics::StageMetrics;
use crate::{config, Error, Shutdown};

/// Records decided and handed on per batch, at most.
const MAX_BATCH: usize = 1024;
/// How long a poll waits for records while deliveries are under way: their reports are
/// settled (and a transaction's age looked at) at most this late.
const BUSY_POLL: Duration = Duration::from_millis(5);
/// How long a poll waits for records when nothing is under way (shutdown is noticed
/// within it).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long closing the consumer may take at shutdown, after the strategy's last commit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the next batch may be polled, as a strategy says between two batches.
pub(super) struct Pace {
    /// Records the next batch may hold (at least one is polled, to serve rebalances).
    pub(super) room: usize,
    /// Whether deliveries are under way (the poll then waits less).
    pub(super) busy: bool,
    /// Whether every record decided so far is settled, so that the processor may change
    /// what it does ([`Processor::between_batches`]).
    pub(super) settled: bool,
}

/// What a delivery strategy owns; the engine owns the rest. The engine keeps the
/// strategy behind one lock, taken on the relay's thread by the loop between two polls
/// and by the rebalance callbacks that librdkafka runs inside the consumer's poll: never
/// contended, and never held across a poll.
pub(super) trait Strategy: Send + Sized + 'static {
    /// Partitions are about to be assigned: may set where each starts (by default, where
    /// the group committed). `false` leaves them untaken (a stage stopping on a fatal
    /// error).
    fn assigning(
        &mut self,
        consumer: &RelayConsumer<Self>,
        partitions: &mut TopicPartitionList,
    ) -> bool {
        let _ = (consumer, partitions);
        true
    }

    /// Partitions were assigned.
    fn assigned(&mut self, consumer: &RelayConsumer<Self>, partitions: &TopicPartitionList) {
        let _ = (consumer, partitions);
    }

    /// Partitions are about to be released: settle and commit what can be for them.
    fn revoking(&mut self, consumer: &RelayConsumer<Self>, partitions: &TopicPartitionList);

    /// An asynchronous commit of input offsets failed (called without the lock, from
    /// whatever librdkafka call serves the commit's result).
    fn commit_failed(stage: &'static str, error: &KafkaError) {
        warn!(stage, %error, "Failed to commit offsets.");
    }

    /// Between two batches: settle what came back, commit what is due. An error stops
    /// the stage.
    fn between(&mut self, consumer: &RelayConsumer<Self>) -> Result<Pace, Error>;

    /// The strategy's counters, which the engine feeds with what it consumes and decides.
    fn tally(&mut self) -> &mut Tally;

    /// Whether the rest of this batch's records of `partition` are taken: not once the
    /// partition was rewound within the batch (they are consumed again).
    fn takes(&self, partition: i32) -> bool {
        let _ = partition;
        true
    }

    /// Hands on one record of the current assignment, consumed at `received`, as
    /// `decision` says, in offset order within its partition.
    fn hand_on(
        &mut self,
        consumer: &RelayConsumer<Self>,
        message: &BorrowedMessage<'_>,
        decision: Decision,
        received: Instant,
    ) -> Result<(), Error>;

    /// The relay stops (`fatal` when on an error): drains and commits what it may, then
    /// returns the report, or an error met while committing.
    fn finish(
        &mut self,
        consumer: &RelayConsumer<Self>,
        fatal: Option<&Error>,
    ) -> Result<RelayReport, Error>;
}

/// Starts a relay whose delivery `make` builds, on a thread of its own, and runs it until
/// `shutdown` or a fatal error.
pub(super) async fn run<D: Strategy>(
    settings: RelaySettings,
    consumer: ClientConfig,
    make: impl FnOnce(&RelaySettings) -> Result<D, Error> + Send + 'static,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, Error> {
    settings.validate()?;
    let mut consumer = config::ensure_manual_commit(&consumer)?;
    // rdkafka takes its log level from the `log` crate; these clients log to `tracing`.
    consumer.set_log_level(librdkafka_log_level());
    // Setting up may block (transactional producers): on the relay's thread too.
    let relay = move || {
        let strategy = make(&settings)?;
        let consumer: RelayConsumer<D> = consumer
            .create_with_context(Watched::new(
                settings.stage,
                &metrics.health,
                Cluster::Input,
                Rebalancing::new(strategy, &settings, metrics.consumer_lag.clone()),
            ))
            .map_err(Error::create_consumer)?;
        let topic = settings.input_topic.clone();
        consumer
            .subscribe(&[topic.as_str()])
            .map_err(|source| Error::Subscribe { topic, source })?;
        info!(
            stage = settings.stage,
            input_topic = %settings.input_topic,
            output_topic = %settings.output_topic,
            quarantine_topic = %settings.quarantine_topic,
            "Relay started."
        );
        let engine = Engine {
            settings,
            consumer: Arc::new(consumer),
            processor,
            metrics,
        };
        engine.run(&shutdown)
    };
    match tokio::task::spawn_blocking(relay).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => panic::resume_unwind(error.into_panic()),
        Err(_cancelled) => Err(Error::Interrupted),
    }
}

/// The running relay, owned by its thread.
struct Engine<D: Strategy> {
    settings: RelaySettings,
    consumer: Arc<RelayConsumer<D>>,
    processor: Arc<dyn Processor>,
    metrics: StageMetrics,
}

impl<D: Strategy> Engine<D> {
    /// Relays until `shutdown` or a fatal error, then lets the strategy drain and commit,
    /// leaves the group and reports (or returns the fatal error).
    fn run(self, shutdown: &Shutdown) -> Result<RelayReport, Error> {
        let stage = self.settings.stage;
        let stop_lag = measure_lag_every(
            Arc::clone(&self.consumer),
            self.metrics.clone(),
            stage,
            self.settings.lag_interval,
        );
        let fatal = self.relay_until(shutdown).err();
        if let Some(error) = &fatal {
            error!(stage, %error, "The stage stops: what was not committed is consumed again after a restart.");
        }
        let finished = self.lock().strategy.finish(&self.consumer, fatal.as_ref());
        close(self.consumer, stop_lag, stage);
        let report = match (fatal, finished) {
            (Some(error), _) | (None, Err(error)) => {
                self.processor.stopped();
                return Err(error);
            }
            (None, Ok(report)) => report,
        };
        if report.uncommitted.is_empty() {
            info!(
                stage,
                consumed = report.consumed,
                forwarded = report.forwarded,
                quarantined = report.quarantined_total(),
                retries = report.retries,
                aborted_transactions = report.aborted_transactions,
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
        // After the last line of the relay, as before the engine: what the processor
        // records when it stops (ingest's audit entry and mirror) is the stage's, and a
        // slow one is then told apart from a relay that did not stop.
        self.processor.stopped();
        Ok(report)
    }

    /// The relay's state, locked until the guard goes: never across a poll.
    fn lock(&self) -> MutexGuard<'_, Locked<D>> {
        self.consumer.context().hooks.lock()
    }

    /// Relays until `shutdown`; returns early with the first fatal error.
    fn relay_until(&self, shutdown: &Shutdown) -> Result<(), Error> {
        let consumer = self.consumer.as_ref();
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(MAX_BATCH);
        while !shutdown.is_triggered() {
            if let Some(error) = self.metrics.health.take_fatal() {
                return Err(error);
            }
            let pace = self.lock().strategy.between(consumer)?;
            // Whatever the processor changes now applies from the next batch on.
            if pace.settled {
                self.processor.between_batches().map_err(Error::Processor)?;
            }
            let wait = if pace.busy { BUSY_POLL } else { IDLE_POLL };
            // At least one poll, to serve rebalances while paused; a record that comes
            // anyway is relayed (it cannot be given back).
            let generation = self.poll_batch(wait, pace.room.clamp(1, MAX_BATCH), &mut batch);
            let dispatched = self.dispatch(&batch, generation);
            batch.clear();
            dispatched?;
        }
        Ok(())
    }

    /// Decides for a batch polled in rebalance `generation`, in order, and hands each
    /// record on. A record of a partition revoked or assigned anew since is left out (not
    /// counted, not committed): the partition's owner consumes it again from the
    /// committed offset.
    fn dispatch(&self, batch: &[BorrowedMessage<'_>], generation: u64) -> Result<(), Error> {
        let received = Instant::now();
        let mut relay = self.lock();
        let Locked { strategy, assigned } = &mut *relay;
        let mut consumed = 0;
        let mut dispatched = Ok(());
        for message in batch {
            let partition = message.partition();
            if assigned
                .get(&partition)
                .is_none_or(|since| *since > generation)
            {
                debug!(
                    stage = self.settings.stage,
                    partition, "A record of an earlier assignment is left to be consumed again."
                );
                continue;
            }
            if !strategy.takes(partition) {
                continue;
            }
            consumed += 1;
            let decision = decide(self.processor.as_ref(), message);
            if let Decision::Quarantine {
                reason, finding, ..
            } = &decision
            {
                strategy
                    .tally()
                    .note_quarantine(message, *reason, finding.as_ref());
            }
            dispatched = strategy.hand_on(&self.consumer, message, decision, received);
            if dispatched.is_err() {
                break;
            }
        }
        strategy.tally().consumed(consumed);
        dispatched
    }

    /// Polls up to `limit` records: waits `wait` for the first, then takes what is ready.
    /// Returns the rebalance generation after the first poll. A poll that serves a
    /// rebalance returns nothing and ends the batch, so every record of the batch was
    /// polled in that generation.
    fn poll_batch<'c>(
        &'c self,
        wait: Duration,
        limit: usize,
        batch: &mut Vec<BorrowedMessage<'c>>,
    ) -> u64 {
        let stage = self.settings.stage;
        let hooks = &self.consumer.context().hooks;
        let mut timeout = wait;
        let mut generation = None;
        while batch.len() < limit {
            let polled = self.consumer.poll(timeout);
            let generation = *generation.get_or_insert_with(|| hooks.generation());
            timeout = Duration::ZERO;
            match polled {
                None => break,
                Some(Ok(message)) => batch.push(message),
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    debug!(
                        stage,
                        partition, generation, "Reached the end of a partition."
                    );
                }
                Some(Err(error)) => {
                    warn!(stage, %error, "Consumer error.");
                    self.consumer.context().watch.on_error(&error, "");
                    break;
                }
            }
        }
        generation.unwrap_or_else(|| hooks.generation())
    }
}

/// Stops measuring lag and closes the consumer, which leaves the group (its revocation
/// commits once more), on a thread of their own, waited for at most [`CLOSE_TIMEOUT`]:
/// librdkafka's close waits for a rebalance under way to end, which can outlast a
/// supervisor's grace. Past the bound the stage stops all the same; the group notices
/// its absence within its session timeout, as after a crash.
fn close<D: Strategy>(
    consumer: Arc<RelayConsumer<D>>,
    stop_lag: impl FnOnce() + Send + 'static,
    stage: &'static str,
) {
    let (closed, done) = mpsc::channel::<()>();
    let closing = spawn(stage, "close", move || {
        stop_lag();
        drop(consumer);
        let _ = closed.send(());
    });
    if closing.is_none() {
        return; // the consumer was dropped with the closure: closed unbounded
    }
    if let Err(RecvTimeoutError::Timeout) = done.recv_timeout(CLOSE_TIMEOUT) {
        warn!(
            stage,
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "The consumer did not close in time (a rebalance under way?): stopping without it."
        );
    }
}

/// Starts `work` on a thread of its own, `{stage}-{name}`; one that cannot start is said.
fn spawn(
    stage: &'static str,
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> Option<JoinHandle<()>> {
    let spawned = thread::Builder::new()
        .name(format!("{stage}-{name}"))
        .spawn(work);
    spawned
        .map_err(|error| warn!(stage, %error, thread = name, "Cannot start a thread of the relay."))
        .ok()
}

/// Measures consumer lag every `interval` on a thread of its own; returns what stops it,
/// which returns once the thread let go of the consumer.
fn measure_lag_every<D: Strategy>(
    consumer: Arc<RelayConsumer<D>>,
    metrics: StageMetrics,
    stage: &'static str,
    interval: Duration,
) -> impl FnOnce() + Send + 'static {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = spawn(stage, "lag", move || loop {
        measure_lag(consumer.as_ref(), &metrics, stage);
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    });
    move || {
        drop(stop);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Lag of every assigned partition: high watermark - position, or - the group's committed
/// offset for a partition nothing was read from since it was assigned (librdkafka has no
/// position for it, and an idle partition at its end still lags by 0).
/// Fetching watermarks waits for the brokers: call it off the async workers.
fn measure_lag<C: ConsumerContext>(
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
    let mut unread = TopicPartitionList::new();
    for elem in positions.elements() {
        match elem.offset() {
            Offset::Offset(position) => set_lag(consumer, metrics, stage, &elem, position),
            _ => {
                unread.add_partition(elem.topic(), elem.partition());
            }
        }
    }
    if unread.count() == 0 {
        return;
    }
    match consumer.committed_offsets(unread, LAG_CALL_TIMEOUT) {
        Ok(committed) => {
            for elem in committed.elements() {
                if let Offset::Offset(at) = elem.offset() {
                    set_lag(consumer, metrics, stage, &elem, at);
                }
            }
        }
        Err(error) => debug!(stage, %error, "Cannot read committed offsets to measure lag."),
    }
}

/// How long one broker call of the lag probe waits.
const LAG_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the lag of `elem`'s partition to its high watermark - `position`, unless it was
/// revoked meanwhile (no stale series is left behind).
fn set_lag<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    metrics: &StageMetrics,
    stage: &'static str,
    elem: &TopicPartitionListElem<'_>,
    position: i64,
) {
    let (topic, partition) = (elem.topic(), elem.partition());
    match consumer.fetch_watermarks(topic, partition, LAG_CALL_TIMEOUT) {
        Ok((_low, high)) => {
            let still_assigned = consumer
                .assignment()
                .is_ok_and(|assignment| assignment.find_partition(topic, partition).is_some());
            if still_assigned {
                metrics
                    .consumer_lag
                    .with_label_values(&[topic, &partition.to_string()])
                    .set((high - position).max(0));
            }
        }
        Err(error) => {
            debug!(stage, topic, partition, %error, "Cannot fetch watermarks to measure lag.")
        }
    }
}
