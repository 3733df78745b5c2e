//! State shared by the relay loop, the delivery tasks and the rebalance callbacks.
//!
//! Rebalance callbacks run synchronously inside the consumer's poll, so they cannot wait
//! for the relay loop: delivery tasks settle their offsets here themselves, and signal a
//! condition variable that a revocation waits on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::delivery::Route;
use super::RelayReport;
use crate::metrics::StageMetrics;
use crate::offsets::{Epoch, OffsetTracker, TopicPartition};

/// How often at most a retry is logged at `warn` (the others at `debug`): an output
/// cluster that is down fails every record in flight at once.
const RETRY_WARNING_EVERY: Duration = Duration::from_secs(5);
/// How long a newly assigned partition's committed offset may take to read.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-partition control besides the offsets.
#[derive(Debug)]
struct PartitionControl {
    epoch: Epoch,
    /// Cancels the retries of this assignment's deliveries.
    cancel: CancellationToken,
    /// The first offset that failed permanently, if any.
    stalled_at: Option<i64>,
}

impl PartitionControl {
    fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            cancel: CancellationToken::new(),
            stalled_at: None,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) tracker: OffsetTracker,
    partitions: HashMap<TopicPartition, PartitionControl>,
    /// Whether consumption is paused because too many records are in flight.
    pub(super) backpressure: bool,
    forwarded: u64,
    quarantined: BTreeMap<&'static str, u64>,
    /// Watermarks that could not be committed when their partition was released.
    uncommitted: BTreeMap<TopicPartition, i64>,
}

impl State {
    /// Watermarks whose commit failed on release, to be checked against the group.
    pub(super) fn uncommitted(&self) -> Vec<(TopicPartition, i64)> {
        self.uncommitted
            .iter()
            .map(|(tp, offset)| (tp.clone(), *offset))
            .collect()
    }

    /// Forgets the failed commits that the group's committed offsets cover after all
    /// (a later commit went through).
    pub(super) fn forget_covered(&mut self, committed: &[(TopicPartition, i64)]) {
        for (tp, offset) in committed {
            if self
                .uncommitted
                .get(tp)
                .is_some_and(|failed| failed <= offset)
            {
                self.uncommitted.remove(tp);
            }
        }
    }

    /// Watermarks of `partitions` whose commit was refused when they were released and
    /// that the group's `committed` offsets still lie behind (the covered ones are
    /// forgotten). Every record before such a watermark was delivered by this process, so
    /// committing it again is safe whenever the partition is back.
    pub(super) fn refused_commits_behind(
        &mut self,
        partitions: &[TopicPartition],
        committed: &[(TopicPartition, i64)],
    ) -> Vec<(TopicPartition, i64)> {
        self.forget_covered(committed);
        partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), *self.uncommitted.get(tp)?)))
            .collect()
    }

    /// Remembers how a commit on release went, for the report.
    pub(super) fn record_release_commit(
        &mut self,
        offsets: &[(TopicPartition, i64)],
        committed: bool,
    ) {
        for (tp, offset) in offsets {
            if committed {
                self.uncommitted.remove(tp);
            } else {
                self.uncommitted.insert(tp.clone(), *offset);
            }
        }
    }

    /// Whether `tp` stopped on a permanent failure.
    pub(super) fn is_stalled(&self, tp: &TopicPartition) -> bool {
        self.partitions
            .get(tp)
            .is_some_and(|control| control.stalled_at.is_some())
    }
}

pub(super) struct Shared {
    pub(super) stage: &'static str,
    pub(super) metrics: StageMetrics,
    rebalance_drain_timeout: Duration,
    state: Mutex<State>,
    /// Signalled whenever a delivery settles.
    settled: Condvar,
    in_flight: AtomicUsize,
    retries: AtomicU64,
    last_retry_warning: Mutex<Option<Instant>>,
}

impl Shared {
    pub(super) fn new(
        stage: &'static str,
        metrics: StageMetrics,
        rebalance_drain_timeout: Duration,
    ) -> Self {
        Self {
            stage,
            metrics,
            rebalance_drain_timeout,
            state: Mutex::default(),
            settled: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            last_retry_warning: Mutex::new(None),
        }
    }

    /// The state; a panic elsewhere while holding the lock leaves it usable (every update
    /// under the lock is a single step).
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records currently in flight (their delivery is not settled).
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A consumed record starts its way: returns its epoch and its cancellation token.
    pub(super) fn begin(&self, tp: &TopicPartition, offset: i64) -> (Epoch, CancellationToken) {
        let mut state = self.lock();
        let (epoch, skipped) = state.tracker.hand_out(tp, offset);
        if let Some(skipped) = skipped {
            self.report_skipped(tp, &skipped);
        }
        let control = state
            .partitions
            .entry(tp.clone())
            .or_insert_with(|| PartitionControl::new(epoch));
        if control.epoch != epoch {
            *control = PartitionControl::new(epoch);
        }
        let cancel = control.cancel.clone();
        drop(state);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics.in_flight.inc();
        (epoch, cancel)
    }

    /// The broker never delivered `skipped`: counted, and logged unless it is the single
    /// offset a transaction marker takes.
    fn report_skipped(&self, tp: &TopicPartition, skipped: &std::ops::Range<i64>) {
        let count = u64::try_from(skipped.end - skipped.start).unwrap_or(0);
        self.metrics
            .offsets_skipped
            .with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()])
            .inc_by(count);
        if count > 1 {
            warn!(stage = self.stage, topic = %tp.topic, partition = tp.partition, from = skipped.start, to = skipped.end - 1, count, "Input offsets were jumped over and never received: expired by retention before they were read, compacted away, or a broker fault. Check the input topic; these records did not go through the pipeline.");
        } else {
            debug!(stage = self.stage, topic = %tp.topic, partition = tp.partition, offset = skipped.start, "One input offset never received (a transaction marker?).");
        }
    }

    pub(super) fn record_delivered(
        &self,
        tp: &TopicPartition,
        epoch: Epoch,
        offset: i64,
        route: Route,
        received_at: Instant,
    ) {
        let mut state = self.lock();
        state.tracker.mark_done(tp, epoch, offset);
        match route {
            Route::Forward => state.forwarded += 1,
            Route::Quarantine(reason) => *state.quarantined.entry(reason).or_default() += 1,
        }
        drop(state);
        match route {
            Route::Forward => self.metrics.produced.inc(),
            Route::Quarantine(reason) => {
                self.metrics.quarantined.with_label_values(&[reason]).inc()
            }
        }
        self.metrics
            .processing_latency
            .observe(received_at.elapsed().as_secs_f64());
    }

    pub(super) fn record_stalled(
        &self,
        tp: &TopicPartition,
        epoch: Epoch,
        offset: i64,
        error: &KafkaError,
    ) {
        error!(
            stage = self.stage,
            topic = %tp.topic,
            partition = tp.partition,
            offset,
            %error,
            "Delivery failed permanently: the partition stops here until this is fixed and the stage restarted."
        );
        let mut state = self.lock();
        state.tracker.mark_abandoned(tp, epoch, offset);
        if let Some(control) = state.partitions.get_mut(tp) {
            if control.epoch == epoch {
                control.stalled_at = Some(control.stalled_at.map_or(offset, |at| at.min(offset)));
                self.metrics
                    .partition_stalled
                    .with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()])
                    .set(1);
            }
        }
    }

    pub(super) fn record_abandoned(&self, tp: &TopicPartition, epoch: Epoch, offset: i64) {
        self.lock().tracker.mark_abandoned(tp, epoch, offset);
    }

    /// A delivery task is done with its record, whatever the outcome.
    pub(super) fn settle_one(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.metrics.in_flight.dec();
        self.settled.notify_all();
    }

    pub(super) fn record_retry(
        &self,
        tp: &TopicPartition,
        offset: i64,
        error: &KafkaError,
        backoff: Duration,
    ) {
        let retries = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.delivery_retries.inc();
        let now = Instant::now();
        let warn_now = {
            let mut last = self
                .last_retry_warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|at| now.duration_since(at) >= RETRY_WARNING_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        if warn_now {
            warn!(stage = self.stage, topic = %tp.topic, partition = tp.partition, offset, %error, backoff_ms, retries, "Delivery failed, retrying; the partition's offsets wait for it.");
        } else {
            debug!(stage = self.stage, topic = %tp.topic, partition = tp.partition, offset, %error, backoff_ms, "Delivery failed, retrying.");
        }
    }

    /// Cancels the retries of every delivery (the drain at shutdown timed out).
    pub(super) fn cancel_all(&self) {
        for control in self.lock().partitions.values() {
            control.cancel.cancel();
        }
    }

    /// The report so far.
    pub(super) fn report(&self, consumed: u64) -> RelayReport {
        let state = self.lock();
        let mut stalled: Vec<_> = state
            .partitions
            .iter()
            .filter_map(|(tp, control)| Some((tp.clone(), control.stalled_at?)))
            .collect();
        stalled.sort();
        RelayReport {
            consumed,
            forwarded: state.forwarded,
            quarantined: state.quarantined.clone(),
            retries: self.retries.load(Ordering::Relaxed),
            stalled,
            uncommitted: state.uncommitted(),
            aborted_transactions: 0,
        }
    }

    /// New partitions: fresh offsets, and fetching as the current back-pressure says.
    pub(super) fn on_assign<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() {
            return;
        }
        // Where the group stands, to notice a first record further on (offsets the broker
        // jumped over). librdkafka fetches the same offsets to start from; a failure here
        // only loses that check.
        let committed = match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed_offsets(&committed),
            Err(error) => {
                debug!(stage = self.stage, %error, "Cannot read the committed offsets of newly assigned partitions.");
                Vec::new()
            }
        };
        let committed = self.commit_refused_watermarks(consumer, &partitions, committed);
        let backpressure = {
            let mut state = self.lock();
            for tp in &partitions {
                let epoch = state.tracker.assign(tp.clone());
                state
                    .partitions
                    .insert(tp.clone(), PartitionControl::new(epoch));
                self.metrics
                    .partition_stalled
                    .with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()])
                    .set(0);
            }
            for (tp, offset) in &committed {
                state.tracker.expect_start(tp, *offset);
            }
            state.backpressure
        };
        // librdkafka keeps an application pause across assignments: a partition stalled
        // in an earlier assignment would otherwise stay paused.
        let result = if backpressure {
            consumer.pause(tpl)
        } else {
            consumer.resume(tpl)
        };
        if let Err(error) = result {
            warn!(stage = self.stage, %error, "Failed to pause or resume newly assigned partitions.");
        }
        info!(stage = self.stage, partitions = %list(&partitions), "Partitions assigned.");
    }

    /// A partition whose commit was refused when it was released (a rebalance already
    /// under way) and that comes back before anyone committed past it: commits the
    /// watermark now, under the new generation, so that its records are not delivered
    /// again. Returns the group's offsets as they stand afterwards.
    fn commit_refused_watermarks<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &[TopicPartition],
        mut committed: Vec<(TopicPartition, i64)>,
    ) -> Vec<(TopicPartition, i64)> {
        let refused = self.lock().refused_commits_behind(partitions, &committed);
        if refused.is_empty() {
            return committed;
        }
        match consumer.commit(&offsets_list(&refused), CommitMode::Sync) {
            Ok(()) => {
                info!(stage = self.stage, offsets = %list_offsets(&refused), "Committed the offsets refused when these partitions were released.");
                self.lock().record_release_commit(&refused, true);
                committed.retain(|(tp, _)| !refused.iter().any(|(ours, _)| ours == tp));
                committed.extend(refused);
            }
            Err(error) => {
                debug!(stage = self.stage, %error, offsets = %list_offsets(&refused), "Still cannot commit the offsets refused on release.");
            }
        }
        committed
    }

    /// Partitions taken away: stop fetching, wait (bounded) for their deliveries, commit
    /// their watermarks, then let them go.
    pub(super) fn on_revoke<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() {
            return;
        }
        if let Err(error) = consumer.pause(tpl) {
            debug!(stage = self.stage, %error, "Failed to pause revoked partitions.");
        }
        self.wait_for_deliveries(&partitions);

        let ready: Vec<(TopicPartition, i64)> = {
            let state = self.lock();
            partitions
                .iter()
                .filter_map(|tp| {
                    let offset = state.tracker.partition(tp)?.progress()?;
                    Some((tp.clone(), offset))
                })
                .collect()
        };
        let committed = if ready.is_empty() {
            true
        } else if consumer.assignment_lost() {
            warn!(stage = self.stage, offsets = %list_offsets(&ready), "Assignment lost: these offsets cannot be committed; records before them will be consumed again.");
            false
        } else {
            match consumer.commit(&offsets_list(&ready), CommitMode::Sync) {
                Ok(()) => {
                    debug!(stage = self.stage, offsets = %list_offsets(&ready), "Committed offsets of revoked partitions.");
                    true
                }
                Err(error) => {
                    warn!(stage = self.stage, %error, offsets = %list_offsets(&ready), "Failed to commit offsets of revoked partitions; records before them will be consumed again.");
                    false
                }
            }
        };

        let mut state = self.lock();
        state.record_release_commit(&ready, committed);
        for tp in &partitions {
            state.tracker.revoke(tp);
            if let Some(control) = state.partitions.remove(tp) {
                control.cancel.cancel();
            }
            let labels = [tp.topic.as_str(), &tp.partition.to_string()];
            // Absent labels are fine: nothing was measured for the partition yet.
            let _ = self.metrics.partition_stalled.remove_label_values(&labels);
            let _ = self.metrics.consumer_lag.remove_label_values(&labels);
        }
        drop(state);
        info!(stage = self.stage, partitions = %list(&partitions), "Partitions revoked.");
    }

    /// Blocks until no delivery of `partitions` is in flight, for at most the rebalance
    /// drain timeout.
    fn wait_for_deliveries(&self, partitions: &[TopicPartition]) {
        let deadline = std::time::Instant::now() + self.rebalance_drain_timeout;
        let wait = || {
            let mut state = self.lock();
            loop {
                let in_flight: usize = partitions
                    .iter()
                    .map(|tp| state.tracker.in_flight(tp))
                    .sum();
                if in_flight == 0 {
                    return;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    warn!(stage = self.stage, in_flight, "Revoked partitions still have deliveries in flight; committing what was delivered.");
                    return;
                }
                state = self
                    .settled
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        };
        match Handle::try_current() {
            // Delivery tasks run on the other workers meanwhile.
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait);
            }
            // On a single-threaded runtime the deliveries cannot progress while this
            // thread waits: commit what is delivered now (at-least-once holds either way).
            Ok(_) => debug!(
                stage = self.stage,
                "Single-threaded runtime: not waiting for in-flight deliveries on revoke."
            ),
            // Outside the runtime (e.g. closing the consumer on a plain thread).
            Err(_) => wait(),
        }
    }
}

/// The partitions of a list that carry an offset.
pub(super) fn committed_offsets(tpl: &TopicPartitionList) -> Vec<(TopicPartition, i64)> {
    tpl.elements()
        .iter()
        .filter_map(|elem| match elem.offset() {
            Offset::Offset(offset) => {
                Some((TopicPartition::new(elem.topic(), elem.partition()), offset))
            }
            _ => None,
        })
        .collect()
}

/// The partitions of a list.
pub(super) fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|elem| TopicPartition::new(elem.topic(), elem.partition()))
        .collect()
}

/// A list of offsets to commit.
pub(super) fn offsets_list(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (tp, offset) in offsets {
        // Watermarks are offsets of consumed records: never negative, so never refused.
        if let Err(error) =
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
        {
            warn!(topic = %tp.topic, partition = tp.partition, offset, %error, "Cannot commit this offset.");
        }
    }
    tpl
}

/// A list of partitions.
pub(super) fn partitions_list<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn list_offsets(offsets: &[(TopicPartition, i64)]) -> String {
    offsets
        .iter()
        .map(|(tp, offset)| format!("{tp}@{offset}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("raw", partition)
    }

    #[test]
    fn a_refused_commit_is_retried_only_where_the_group_lies_behind() {
        let mut state = State::default();
        state.record_release_commit(&[(tp(0), 50), (tp(1), 50), (tp(2), 50), (tp(3), 50)], false);
        let group = [(tp(0), 40), (tp(1), 50), (tp(2), 70)];
        let partitions = [tp(0), tp(1), tp(2), tp(3), tp(4)];
        // Behind (0) and never committed (3): ours to commit. Caught up (1) or further
        // (2, another member went on): never moved back. Nothing refused (4): nothing.
        assert_eq!(
            state.refused_commits_behind(&partitions, &group),
            vec![(tp(0), 50), (tp(3), 50)]
        );
        state.record_release_commit(&[(tp(0), 50)], true);
        assert_eq!(
            state.refused_commits_behind(&partitions, &group),
            vec![(tp(3), 50)]
        );
    }
}
