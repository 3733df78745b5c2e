//! The relay's thread: poll a batch, decide, produce, settle delivery reports, commit.
//!
//! It runs on a thread of its own (librdkafka's consumer poll blocks), alongside
//! librdkafka's threads and the producers' delivery-report threads. Consumer lag is
//! measured on another small thread, since fetching watermarks waits for the brokers.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use tracing::{debug, error, info, warn};

use super::context::RelayContext;
use super::state::{committed_offsets, list_offsets, offsets_list, partitions_list, Shared};
use super::{measure_lag, Processor, RelayReport, RelaySettings};
use crate::metrics::StageMetrics;
use crate::{Error, Shutdown};

/// The consumer type of a relay.
pub(super) type RelayConsumer = BaseConsumer<RelayContext>;

/// Records decided and handed to the producers per batch, at most.
const MAX_BATCH: usize = 1024;
/// How long a poll waits for records while deliveries are under way: their reports are
/// settled (and the latency measured) at most this late.
const BUSY_POLL: Duration = Duration::from_millis(5);
/// How long a poll waits for records when nothing is under way (shutdown is noticed
/// within it).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The running relay, owned by its thread.
pub(super) struct Pump {
    pub(super) settings: RelaySettings,
    pub(super) shared: Arc<Shared>,
    pub(super) consumer: Arc<RelayConsumer>,
    pub(super) processor: Arc<dyn Processor>,
    pub(super) metrics: StageMetrics,
}

impl Pump {
    /// Relays until `shutdown` or a fatal client error, then drains, commits, leaves the
    /// group and reports (or returns the fatal error).
    pub(super) fn run(self, shutdown: &Shutdown) -> Result<RelayReport, Error> {
        let lag = LagProbe::start(
            Arc::clone(&self.consumer),
            self.metrics.clone(),
            self.settings.stage,
            self.settings.lag_interval,
        );
        let fatal = self.relay_until(shutdown);
        let stage = self.settings.stage;
        if let Some(error) = &fatal {
            error!(stage, %error, "The stage stops: it drains what it can, commits what was delivered and exits.");
        }
        let processor = Arc::clone(&self.processor);
        let report = self.finish(lag);
        processor.stopped();
        match fatal {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Relays until `shutdown`; returns early with the first fatal client error.
    fn relay_until(&self, shutdown: &Shutdown) -> Option<Error> {
        let consumer = self.consumer.as_ref();
        let max = self.settings.max_in_flight;
        let mut next_commit = Instant::now() + self.settings.commit_interval;
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(MAX_BATCH);
        while !shutdown.is_triggered() {
            if let Some(error) = self.metrics.health.take_fatal() {
                return Some(error);
            }
            let (room, busy) = {
                let mut core = self.shared.lock();
                core.service(consumer);
                if let Some(error) = core.guard_liveness() {
                    return Some(error);
                }
                core.apply_backpressure(consumer, max);
                if Instant::now() >= next_commit {
                    core.commit_periodically(consumer);
                    next_commit = Instant::now() + self.settings.commit_interval;
                }
                (max.saturating_sub(core.in_flight()), core.busy())
            };
            // Whatever the processor changes now applies from the next batch on.
            if let Err(error) = self.processor.between_batches() {
                return Some(Error::Processor(error));
            }
            let wait = if busy { BUSY_POLL } else { IDLE_POLL };
            // At least one poll, to serve rebalances while paused; a record that comes
            // anyway is relayed (it cannot be given back).
            let generation = self.poll_batch(wait, room.clamp(1, MAX_BATCH), &mut batch);
            if !batch.is_empty() {
                self.shared
                    .lock()
                    .dispatch(consumer, &batch, generation, self.processor.as_ref());
                batch.clear();
            }
        }
        None
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
        let mut timeout = wait;
        let mut generation = None;
        while batch.len() < limit {
            let polled = self.consumer.poll(timeout);
            let generation = *generation.get_or_insert_with(|| self.shared.generation());
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
        generation.unwrap_or_else(|| self.shared.generation())
    }

    /// Stops: drains deliveries, commits, leaves the group, reports.
    fn finish(self, lag: LagProbe) -> RelayReport {
        let stage = self.settings.stage;
        let consumer = self.consumer.as_ref();
        let ready = {
            let mut core = self.shared.lock();
            info!(
                stage,
                in_flight = core.in_flight(),
                "Shutting down: draining in-flight deliveries."
            );
            let deadline = Instant::now() + self.settings.drain_timeout;
            if !core.wait_for(consumer, None, deadline) {
                warn!(stage, in_flight = core.in_flight(), "Drain timed out: records not delivered yet will be consumed again after a restart.");
                core.abandon_all();
            }
            core.all_progress()
        };
        if !ready.is_empty() {
            let commit = consumer.commit(&offsets_list(&ready), CommitMode::Sync);
            let mut core = self.shared.lock();
            core.record_release_commit(&ready, commit.is_ok());
            match commit {
                Ok(()) => {
                    core.mark_committed(&ready);
                    drop(core);
                    info!(stage, offsets = %list_offsets(&ready), "Committed final offsets.");
                }
                // Closing the consumer below tries once more, on revocation.
                Err(error) => {
                    drop(core);
                    warn!(stage, %error, offsets = %list_offsets(&ready), "Failed to commit final offsets.");
                }
            }
        }
        lag.stop();
        self.forget_covered_commits();
        // Before closing: the revocation on close forgets the stalled partitions.
        let report = self.shared.lock().report();
        // Closing leaves the group (its revocation commits once more).
        drop(self.consumer);
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
        report
    }

    /// A commit that failed on release may have been made good by a later one (or by
    /// another member): asks the group, so that the report lists only real gaps.
    fn forget_covered_commits(&self) {
        let failed = self.shared.lock().uncommitted();
        if failed.is_empty() {
            return;
        }
        let partitions = partitions_list(failed.iter().map(|(tp, _)| tp));
        match self
            .consumer
            .committed_offsets(partitions, Duration::from_secs(5))
        {
            Ok(committed) => {
                let committed = committed_offsets(&committed);
                self.shared.lock().forget_covered(&committed);
            }
            Err(error) => {
                debug!(stage = self.settings.stage, %error, "Cannot read committed offsets.");
            }
        }
    }
}

/// Measures consumer lag every `lag_interval` on its own thread.
struct LagProbe {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl LagProbe {
    fn start(
        consumer: Arc<RelayConsumer>,
        metrics: StageMetrics,
        stage: &'static str,
        interval: Duration,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("{stage}-lag"))
            .spawn(move || loop {
                measure_lag(consumer.as_ref(), &metrics, stage);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                warn!(stage, %error, "Cannot start the thread that measures consumer lag.");
                None
            }
        };
        Self { stop, thread }
    }

    /// Stops measuring; returns once the thread let go of the consumer.
    fn stop(self) {
        drop(self.stop);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
    }
}
