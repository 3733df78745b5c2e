//! At least once: acknowledged deliveries and contiguous commits (`docs/architecture.md`
//! says what is committed when, and what becomes of failures and of `max_in_flight`).
//!
//! Each decided record goes to a librdkafka producer with a [`Token`] as its delivery
//! opaque ([`delivery`]); the reports come back through a channel and are settled in bulk
//! between two batches, under the engine's one lock, in a ring per partition
//! ([`crate::offsets`]). A retried record may land after records that followed it
//! (librdkafka's own retries keep order). A stuck producer is replaced ([`liveness`]).

mod delivery;
mod liveness;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer as _;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use tracing::{debug, error, info, warn};

use self::delivery::{backoff, is_retriable, Outgoing, RelayProducer, Report, Token};
use self::liveness::{Liveness, ProducerFactory};
use super::context::RelayConsumer;
use super::engine::{Pace, Strategy};
use super::partitions::{
    committed_offsets, list, list_offsets, offsets_list, partitions_list, partitions_of,
};
use super::tally::{Route, Tally};
use super::{outgoing, Decision, RelayReport, RelaySettings};
use crate::health::{stops_the_stage, Cluster};
use crate::metrics::StageMetrics;
use crate::offsets::{PartitionOffsets, Ticket, TopicPartition};

/// How long a newly assigned partition's committed offset may take to read.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a wait for deliveries sleeps at most between two looks at its deadline.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// What the ring keeps of each record besides its offset.
#[derive(Clone, Copy, Debug)]
struct Tag {
    route: Route,
    /// When its batch was consumed (the latency histogram's start).
    received: Instant,
    /// Failed deliveries so far (the retry backoff).
    attempts: u8,
}

/// One assigned partition.
#[derive(Debug)]
struct Partition {
    offsets: PartitionOffsets<Tag>,
    /// The first offset that failed permanently, if any.
    stalled_at: Option<i64>,
}

/// A failed record waiting for its next try.
struct Retry {
    due: Instant,
    token: Token,
    route: Route,
    record: Outgoing,
}

/// The producers and topics a relay writes to, and how to make them anew.
struct Outputs {
    /// The output's producer and topic, then the quarantine's (the same producer when
    /// the factory makes one for both).
    to: [(RelayProducer, String); 2],
    factory: ProducerFactory,
}

impl Outputs {
    /// The producers `factory` makes, writing to these topics.
    fn new(
        factory: ProducerFactory,
        output_topic: String,
        quarantine_topic: String,
    ) -> Result<Self, crate::Error> {
        let output = factory.create(Cluster::Output)?;
        let quarantine = if factory.shared() {
            output.clone()
        } else {
            factory.create(Cluster::Quarantine)?
        };
        let to = [(output, output_topic), (quarantine, quarantine_topic)];
        Ok(Self { to, factory })
    }

    /// The producer and topic of `cluster` (`Output` or `Quarantine`).
    fn to(&self, cluster: Cluster) -> (&RelayProducer, &str) {
        let (producer, topic) = &self.to[usize::from(cluster == Cluster::Quarantine)];
        (producer, topic)
    }

    /// The producer and topic of a record of `route` (a dropped record is never produced).
    fn of(&self, route: Route) -> (&RelayProducer, &str) {
        match route {
            Route::Quarantine(_) => self.to(Cluster::Quarantine),
            Route::Forward | Route::Drop(_) => self.to(Cluster::Output),
        }
    }

    /// Which producer (named by its cluster) writes records of `route`.
    fn cluster_of(&self, route: Route) -> Cluster {
        match route {
            Route::Quarantine(_) if !self.factory.shared() => Cluster::Quarantine,
            _ => Cluster::Output,
        }
    }

    /// Replaces `cluster`'s producer with a new one. Dropping the old one purges what it
    /// still holds: those records come back as failed deliveries and are sent again.
    fn replace(&mut self, cluster: Cluster) -> Result<(), crate::Error> {
        let fresh = self.factory.create(cluster)?;
        let replaced = usize::from(cluster == Cluster::Quarantine);
        for (index, (producer, _)) in self.to.iter_mut().enumerate() {
            if self.factory.shared() || index == replaced {
                *producer = fresh.clone();
            }
        }
        Ok(())
    }
}

/// The at-least-once strategy: its producers, the rings of its partitions, its limits.
pub(super) struct AtLeastOnce {
    stage: &'static str,
    settings: RelaySettings,
    tally: Tally,
    outputs: Outputs,
    reports: Receiver<Report>,
    /// When watermarks are committed next.
    next_commit: Instant,
    partitions: HashMap<i32, Partition>,
    /// Where the tickets of a partition continue when it is assigned again.
    next_tickets: HashMap<i32, Ticket>,
    retries: Vec<Retry>,
    /// Whether consumption is paused because too many records are in flight.
    backpressure: bool,
    /// Watermarks that could not be committed when their partition was released.
    uncommitted: BTreeMap<TopicPartition, i64>,
    /// Whether each producer still delivers.
    liveness: Liveness,
    /// Whether the stage finished: the consumer closes next.
    closing: bool,
}

impl AtLeastOnce {
    /// The strategy for `settings`, writing with producers of `output` and `quarantine`
    /// (one producer when they are the same).
    pub(super) fn new(
        settings: &RelaySettings,
        output: ClientConfig,
        quarantine: ClientConfig,
        metrics: StageMetrics,
    ) -> Result<Self, crate::Error> {
        let (reports, settle) = mpsc::channel::<Report>();
        let (mut output, mut quarantine) = (output, quarantine);
        for config in [&mut output, &mut quarantine] {
            if config.get("message.timeout.ms").is_none() {
                config.set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
            }
        }
        let factory = ProducerFactory::new(
            settings.stage,
            reports,
            metrics.health.clone(),
            &output,
            &quarantine,
        );
        let outputs = Outputs::new(
            factory,
            settings.output_topic.clone(),
            settings.quarantine_topic.clone(),
        )?;
        Ok(Self {
            liveness: Liveness::new(
                settings.stage,
                settings.stall_timeout,
                outputs.factory.shared(),
                metrics.clone(),
            ),
            stage: settings.stage,
            settings: settings.clone(),
            tally: Tally::new(settings.stage, metrics),
            outputs,
            reports: settle,
            next_commit: Instant::now() + settings.commit_interval,
            partitions: HashMap::new(),
            next_tickets: HashMap::new(),
            retries: Vec::new(),
            backpressure: false,
            uncommitted: BTreeMap::new(),
            closing: false,
        })
    }

    fn tp(&self, partition: i32) -> TopicPartition {
        TopicPartition::new(self.settings.input_topic.as_str(), partition)
    }

    /// Records consumed whose delivery is not settled yet.
    fn in_flight(&self) -> usize {
        self.in_flight_of(self.partitions.keys())
    }

    fn in_flight_of<'a>(&self, partitions: impl IntoIterator<Item = &'a i32>) -> usize {
        partitions
            .into_iter()
            .filter_map(|partition| self.partitions.get(partition))
            .map(|partition| partition.offsets.in_flight())
            .sum()
    }

    /// Settles every delivery report that arrived, sends the retries that are due, and
    /// brings the metrics up to date.
    fn service<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let now = Instant::now();
        while let Ok(report) = self.reports.try_recv() {
            self.settle(consumer, report, now);
        }
        self.send_due_retries(consumer, now);
        self.tally.export(self.in_flight());
    }

    /// Replaces a producer that stopped delivering while its cluster answers (see
    /// [`super::liveness`]). Returns the error the stage must stop on when its
    /// replacement stalled too, or when no new producer can be made.
    fn guard_liveness(&mut self) -> Result<(), crate::Error> {
        let (outputs, retries) = (&self.outputs, &self.retries);
        let stuck = self.liveness.check(Instant::now(), outputs, |cluster| {
            outputs.to(cluster).0.in_flight_count() > 0
                || retries
                    .iter()
                    .any(|retry| outputs.cluster_of(retry.route) == cluster)
        })?;
        match stuck {
            Some(cluster) => self.outputs.replace(cluster),
            None => Ok(()),
        }
    }

    fn settle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        report: Report,
        now: Instant,
    ) {
        match report {
            Report::Delivered(packed) => {
                let token = Token::unpack(packed);
                let Some(tag) = self
                    .partitions
                    .get_mut(&token.partition)
                    .and_then(|assigned| assigned.offsets.mark_done(token.ticket))
                else {
                    return; // revoked since, or abandoned and settled already
                };
                self.liveness
                    .acknowledged(self.outputs.cluster_of(tag.route), now);
                self.tally.settled(tag.route, tag.received, now);
            }
            Report::Failed(failure) => {
                let token = Token::unpack(failure.token);
                self.failed(consumer, token, failure.error, Some(failure.record));
            }
        }
    }

    /// A delivery failed: schedules a retry, or stalls the partition when the failure is
    /// permanent (or the record cannot be tried again).
    fn failed<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        token: Token,
        error: KafkaError,
        record: Option<Outgoing>,
    ) {
        let stage = self.stage;
        let Some(assigned) = self.partitions.get_mut(&token.partition) else {
            return; // revoked since
        };
        let Some(offset) = assigned.offsets.offset(token.ticket) else {
            return;
        };
        let Some(tag) = assigned.offsets.tag_mut(token.ticket) else {
            return; // abandoned already
        };
        if stops_the_stage(&error, "") {
            // The relay stops on it; the record is never committed past.
            let (producer, _) = self.outputs.of(tag.route);
            assigned.offsets.mark_abandoned(token.ticket);
            let (error, reason) =
                match (error.rdkafka_error_code(), producer.client().fatal_error()) {
                    // librdkafka's fatal error: what made it fatal says more than `_FATAL`.
                    (Some(RDKafkaErrorCode::Fatal), Some((code, reason))) => {
                        (KafkaError::MessageProduction(code), reason)
                    }
                    _ => (
                        error,
                        format!(
                            "delivery of the record at {}/{}@{offset}",
                            self.settings.input_topic, token.partition
                        ),
                    ),
                };
            producer.context().watch.fail(error, &reason);
            return;
        }
        match record {
            Some(record) if is_retriable(&error) => {
                let pause = backoff(tag.attempts);
                tag.attempts = tag.attempts.saturating_add(1);
                let route = tag.route;
                self.retries.push(Retry {
                    due: Instant::now() + pause,
                    token,
                    route,
                    record,
                });
                let retries = self.tally.retried();
                let backoff_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
                let (topic, partition) = (self.settings.input_topic.as_str(), token.partition);
                if let Some(held_back) = self.tally.log.admit("delivery_retry", Instant::now()) {
                    warn!(stage, topic, partition, offset, %error, backoff_ms, retries, held_back, "Delivery failed, retrying; the partition's offsets wait for it.");
                } else {
                    debug!(stage, topic, partition, offset, %error, backoff_ms, "Delivery failed, retrying.");
                }
            }
            _ => {
                if let Some(held_back) = self.tally.log.admit("delivery_failed", Instant::now()) {
                    error!(
                        stage,
                        topic = %self.settings.input_topic,
                        partition = token.partition,
                        offset,
                        %error,
                        held_back,
                        "Delivery failed permanently: the partition stops here until this is fixed and the stage restarted."
                    );
                }
                assigned.offsets.mark_abandoned(token.ticket);
                assigned.stalled_at = Some(assigned.stalled_at.map_or(offset, |at| at.min(offset)));
                let tp = self.tp(token.partition);
                self.stall_gauge(&tp).set(1);
                if let Err(error) = consumer.pause(&partitions_list([&tp])) {
                    warn!(stage, topic = %tp.topic, partition = tp.partition, %error, "Failed to pause a stalled partition.");
                }
            }
        }
    }

    fn send_due_retries<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, now: Instant) {
        if self.retries.iter().all(|retry| retry.due > now) {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition::<Vec<_>, _>(|retry| retry.due <= now);
        self.retries = waiting;
        for retry in due {
            let waits = self
                .partitions
                .get_mut(&retry.token.partition)
                .and_then(|assigned| assigned.offsets.tag_mut(retry.token.ticket))
                .is_some();
            if !waits {
                continue; // revoked or abandoned meanwhile
            }
            let Some(packed) = retry.token.pack() else {
                continue;
            };
            let (producer, topic) = self.outputs.of(retry.route);
            if let Err((error, record)) = retry.record.send(producer, topic, packed) {
                self.failed(consumer, retry.token, error, Some(record));
            }
        }
    }

    /// Settles reports and retries until no delivery of `partitions` (all of them when
    /// `None`) is under way, or `deadline`. Returns whether they all settled.
    fn wait_for<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: Option<&[i32]>,
        deadline: Instant,
    ) -> bool {
        loop {
            self.service(consumer);
            let in_flight =
                partitions.map_or_else(|| self.in_flight(), |some| self.in_flight_of(some));
            if in_flight == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let next_retry = self.retries.iter().map(|retry| retry.due).min();
            let wake = next_retry
                .map_or(deadline, |due| due.min(deadline))
                .min(now + WAIT_STEP);
            match self
                .reports
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(report) => self.settle(consumer, report, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                // The producers live as long as this state: not before the end.
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Gives up on every delivery still under way (the drain at shutdown timed out):
    /// their offsets hold the watermarks back.
    fn abandon_all(&mut self) {
        self.retries.clear();
        for assigned in self.partitions.values_mut() {
            assigned.offsets.abandon_all();
        }
        self.tally.export(self.in_flight());
    }

    /// Pauses the whole assignment above `max_in_flight`, resumes it (less the stalled
    /// partitions) once a quarter of the room is free again. The consumer keeps being
    /// polled meanwhile, so the group membership and rebalances are served.
    fn apply_backpressure<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let (max_in_flight, in_flight) = (self.settings.max_in_flight, self.in_flight());
        let resume_below = (max_in_flight - max_in_flight / 4).max(1);
        let pause = !self.backpressure && in_flight >= max_in_flight;
        let resume = self.backpressure && in_flight < resume_below;
        if !pause && !resume {
            return;
        }
        self.backpressure = pause;
        let changed = consumer.assignment().and_then(|assignment| {
            if pause {
                return consumer.pause(&assignment);
            }
            let partitions = partitions_of(&assignment);
            let stalled = |tp: &TopicPartition| {
                tp.topic == self.settings.input_topic
                    && self
                        .partitions
                        .get(&tp.partition)
                        .is_some_and(|assigned| assigned.stalled_at.is_some())
            };
            consumer.resume(&partitions_list(
                partitions.iter().filter(|tp| !stalled(tp)),
            ))
        });
        if let Err(error) = changed {
            warn!(stage = self.stage, %error, pause, "Failed to pause or resume consumption.");
        }
        debug!(stage = self.stage, in_flight, paused = pause, "Back-pressure: consumption paused above `max_in_flight`, resumed below three quarters of it.");
    }

    /// `pseudopipe_partition_stalled` of `tp`.
    fn stall_gauge(&self, tp: &TopicPartition) -> prometheus::IntGauge {
        let labels = [tp.topic.as_str(), &tp.partition.to_string()];
        self.tally
            .metrics
            .partition_stalled
            .with_label_values(&labels)
    }

    /// Every partition's offset as `pick` reads it (a watermark past its last commit or
    /// since it was assigned, where it stalled), where it has one, sorted.
    fn watermarks(&self, pick: fn(&Partition) -> Option<i64>) -> Vec<(TopicPartition, i64)> {
        let mut ready: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(partition, assigned)| Some((self.tp(*partition), pick(assigned)?)))
            .collect();
        ready.sort();
        ready
    }

    /// Records that these offsets were committed.
    fn mark_committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, offset) in offsets {
            if let Some(assigned) = self.partitions.get_mut(&tp.partition) {
                assigned.offsets.mark_committed(*offset);
            }
        }
    }

    /// Commits the watermarks that moved, without waiting for the broker.
    fn commit_periodically<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let ready = self.watermarks(|assigned| assigned.offsets.committable());
        if ready.is_empty() {
            return;
        }
        match consumer.commit(&offsets_list(&ready), CommitMode::Async) {
            Ok(()) => {
                debug!(stage = self.stage, offsets = %list_offsets(&ready), "Committing offsets.");
                self.mark_committed(&ready);
            }
            Err(error) => warn!(stage = self.stage, %error, "Failed to commit offsets."),
        }
    }

    /// Forgets the failed commits that the group's committed offsets cover after all
    /// (a later commit went through).
    fn forget_covered(&mut self, committed: &[(TopicPartition, i64)]) {
        let covered = |tp: &TopicPartition, failed: &i64| {
            committed
                .iter()
                .any(|(group, at)| group == tp && failed <= at)
        };
        self.uncommitted.retain(|tp, failed| !covered(tp, failed));
    }

    /// Watermarks of `partitions` whose commit was refused when they were released and
    /// that the group's `committed` offsets still lie behind (the covered ones are
    /// forgotten). Every record before such a watermark was delivered by this process, so
    /// committing it again is safe whenever the partition is back.
    fn refused_commits_behind(
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
    fn record_release_commit(&mut self, offsets: &[(TopicPartition, i64)], committed: bool) {
        for (tp, offset) in offsets {
            if committed {
                self.uncommitted.remove(tp);
            } else {
                self.uncommitted.insert(tp.clone(), *offset);
            }
        }
    }

    /// A partition whose commit was refused when it was released (a rebalance already
    /// under way) and that comes back before anyone committed past it: commits the
    /// watermark now, under the new generation, so that its records are not delivered
    /// again. Returns the group's offsets as they stand afterwards.
    fn commit_refused_watermarks<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[TopicPartition],
        mut committed: Vec<(TopicPartition, i64)>,
    ) -> Vec<(TopicPartition, i64)> {
        let refused = self.refused_commits_behind(partitions, &committed);
        if refused.is_empty() {
            return committed;
        }
        match self.commit_released(consumer, &refused) {
            Ok(()) => {
                info!(stage = self.stage, offsets = %list_offsets(&refused), "Committed the offsets refused when these partitions were released.");
                committed.retain(|(tp, _)| !refused.iter().any(|(ours, _)| ours == tp));
                committed.extend(refused);
            }
            Err(error) => {
                debug!(stage = self.stage, %error, offsets = %list_offsets(&refused), "Still cannot commit the offsets refused on release.");
            }
        }
        committed
    }

    /// Commits `offsets` as their partitions are released (or come back, or the stage
    /// stops), and remembers whether that went through, for the report. A synchronous
    /// commit waits without a bound in librdkafka (seen hanging while a group rebalanced),
    /// so the commit is sent without waiting and then confirmed by reading the group's
    /// offsets back, which is bounded: the coordinator answers one connection's requests
    /// in order. Not confirmed in time counts as refused, which costs at most duplicates.
    /// On the revocation of the close, the commit is only sent: librdkafka's close waits
    /// for it, and reads of the group's offsets wait for a coordinator until they time out.
    fn commit_released<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &[(TopicPartition, i64)],
    ) -> KafkaResult<()> {
        let sent = consumer.commit(&offsets_list(offsets), CommitMode::Async);
        if self.closing {
            return sent;
        }
        let commit = sent
            .and_then(|()| {
                let partitions = partitions_list(offsets.iter().map(|(tp, _)| tp));
                consumer.committed_offsets(partitions, COMMITTED_TIMEOUT)
            })
            .and_then(|committed| {
                let committed = committed_offsets(&committed);
                let confirmed = offsets.iter().all(|(tp, offset)| {
                    committed
                        .iter()
                        .any(|(group, at)| group == tp && at >= offset)
                });
                if confirmed {
                    Ok(())
                } else {
                    Err(KafkaError::ConsumerCommit(
                        RDKafkaErrorCode::OperationTimedOut,
                    ))
                }
            });
        self.record_release_commit(offsets, commit.is_ok());
        commit
    }
}

impl Strategy for AtLeastOnce {
    /// New partitions: fresh rings, and fetching as the current back-pressure says.
    fn assigned(&mut self, consumer: &RelayConsumer<Self>, tpl: &TopicPartitionList) {
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
        for tp in &partitions {
            if tp.topic != self.settings.input_topic {
                continue;
            }
            if !Token::fits(tp.partition) {
                error!(stage = self.stage, topic = %tp.topic, partition = tp.partition, "Partition numbers above 2^20 are not supported: this partition is not consumed.");
                if let Err(error) = consumer.pause(&partitions_list([tp])) {
                    warn!(stage = self.stage, %error, "Failed to pause a partition.");
                }
                continue;
            }
            let first = self
                .next_tickets
                .get(&tp.partition)
                .copied()
                .unwrap_or(Ticket(0));
            let mut offsets = PartitionOffsets::starting_at(first);
            if let Some((_, offset)) = committed.iter().find(|(committed, _)| committed == tp) {
                offsets.expect_start(*offset);
            }
            self.partitions.insert(
                tp.partition,
                Partition {
                    offsets,
                    stalled_at: None,
                },
            );
            self.stall_gauge(tp).set(0);
        }
        // librdkafka keeps an application pause across assignments: a partition stalled
        // in an earlier assignment would otherwise stay paused.
        let result = if self.backpressure {
            consumer.pause(tpl)
        } else {
            consumer.resume(tpl)
        };
        if let Err(error) = result {
            warn!(stage = self.stage, %error, "Failed to pause or resume newly assigned partitions.");
        }
        info!(stage = self.stage, partitions = %list(&partitions), "Partitions assigned.");
    }

    /// Partitions taken away: stop fetching, wait (bounded) for their deliveries, commit
    /// their watermarks, then let them go.
    fn revoking(&mut self, consumer: &RelayConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() {
            return;
        }
        if let Err(error) = consumer.pause(tpl) {
            debug!(stage = self.stage, %error, "Failed to pause revoked partitions.");
        }
        let numbers: Vec<i32> = partitions
            .iter()
            .filter(|tp| tp.topic == self.settings.input_topic)
            .map(|tp| tp.partition)
            .collect();
        let deadline = Instant::now() + self.settings.rebalance_drain_timeout;
        if !self.wait_for(consumer, Some(&numbers), deadline) {
            warn!(stage = self.stage, in_flight = self.in_flight_of(&numbers), "Revoked partitions still have deliveries in flight; committing what was delivered.");
        }
        let ready: Vec<_> = self
            .watermarks(|assigned| assigned.offsets.progress())
            .into_iter()
            .filter(|(tp, _)| numbers.contains(&tp.partition))
            .collect();
        let offsets = list_offsets(&ready);
        if !ready.is_empty() && consumer.assignment_lost() {
            warn!(stage = self.stage, %offsets, "Assignment lost: these offsets cannot be committed; records before them will be consumed again.");
            self.record_release_commit(&ready, false);
        } else if !ready.is_empty() {
            match self.commit_released(consumer, &ready) {
                Ok(()) => debug!(
                    stage = self.stage,
                    %offsets, "Committed offsets of revoked partitions."
                ),
                Err(error) => {
                    warn!(stage = self.stage, %error, %offsets, "Failed to commit offsets of revoked partitions; records before them will be consumed again.")
                }
            }
        }
        for partition in &numbers {
            if let Some(assigned) = self.partitions.remove(partition) {
                self.next_tickets
                    .insert(*partition, assigned.offsets.next_ticket());
            }
            self.retries
                .retain(|retry| retry.token.partition != *partition);
            let labels = [self.settings.input_topic.as_str(), &partition.to_string()];
            // An absent series is fine: the partition never stalled.
            let _ = self
                .tally
                .metrics
                .partition_stalled
                .remove_label_values(&labels);
        }
        self.tally.export(self.in_flight());
        info!(stage = self.stage, partitions = %list(&partitions), "Partitions revoked.");
    }

    fn between(&mut self, consumer: &RelayConsumer<Self>) -> Result<Pace, crate::Error> {
        self.service(consumer);
        self.guard_liveness()?;
        self.apply_backpressure(consumer);
        if Instant::now() >= self.next_commit {
            self.commit_periodically(consumer);
            self.next_commit = Instant::now() + self.settings.commit_interval;
        }
        Ok(Pace {
            room: self.settings.max_in_flight.saturating_sub(self.in_flight()),
            busy: !self.retries.is_empty() || self.in_flight() > 0,
            // Each record is settled for this strategy once handed to its producer.
            settled: true,
        })
    }

    fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Hands one decided record to its producer, or settles it at once when dropped.
    fn hand_on(
        &mut self,
        consumer: &RelayConsumer<Self>,
        message: &BorrowedMessage<'_>,
        decision: Decision,
        received: Instant,
    ) -> Result<(), crate::Error> {
        let partition = message.partition();
        let route = Route::of(&decision);
        let tag = Tag {
            route,
            received,
            attempts: 0,
        };
        let Some(assigned) = self.partitions.get_mut(&partition) else {
            return Ok(()); // not taken: its number does not fit a token
        };
        let (ticket, skipped) = assigned.offsets.hand_out(message.offset(), tag);
        // The broker never delivered `skipped`: counted, and logged unless it is the
        // single offset a transaction marker takes.
        if let Some(skipped) = skipped {
            let (stage, topic) = (self.stage, self.settings.input_topic.as_str());
            let count = u64::try_from(skipped.end - skipped.start).unwrap_or(0);
            self.tally
                .metrics
                .offsets_skipped
                .with_label_values(&[topic, &partition.to_string()])
                .inc_by(count);
            if count > 1 {
                warn!(stage, topic = %topic, partition, from = skipped.start, to = skipped.end - 1, count, "Input offsets were jumped over and never received: expired by retention before they were read, compacted away, or a broker fault. Check the input topic; these records did not go through the pipeline.");
            } else {
                debug!(
                    stage,
                    topic = %topic,
                    partition,
                    offset = skipped.start,
                    "One input offset never received (a transaction marker?)."
                );
            }
        }
        let token = Token { partition, ticket };
        if let Route::Drop(_) = route {
            // Done at once, in its partition's ring, so that the watermark moves past it
            // in order with its neighbours.
            if let Some(assigned) = self.partitions.get_mut(&partition) {
                assigned.offsets.mark_done(token.ticket);
            }
            self.tally.settled(route, received, received);
            return Ok(());
        }
        let Some(packed) = token.pack() else {
            // Past 2^20 partitions or 2^44 records of one partition: never in practice.
            let error = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidPartitions);
            self.failed(consumer, token, error, None);
            return Ok(());
        };
        let (producer, topic) = self.outputs.of(route);
        // Enqueued in offset order, so that librdkafka keeps the input order.
        let sent = producer
            .send(outgoing(topic, &decision, message, self.stage, packed))
            .map_err(|(error, record)| (error, Outgoing::from_refused(record)));
        if let Err((error, record)) = sent {
            self.failed(consumer, token, error, Some(record));
        }
        Ok(())
    }

    /// Drains deliveries (even on a fatal error: what was delivered is committed), commits.
    fn finish(
        &mut self,
        consumer: &RelayConsumer<Self>,
        _fatal: Option<&crate::Error>,
    ) -> Result<RelayReport, crate::Error> {
        let stage = self.stage;
        info!(
            stage,
            in_flight = self.in_flight(),
            "Shutting down: draining in-flight deliveries."
        );
        let deadline = Instant::now() + self.settings.drain_timeout;
        if !self.wait_for(consumer, None, deadline) {
            warn!(stage, in_flight = self.in_flight(), "Drain timed out: records not delivered yet will be consumed again after a restart.");
            self.abandon_all();
        }
        let ready = self.watermarks(|assigned| assigned.offsets.progress());
        if !ready.is_empty() {
            match self.commit_released(consumer, &ready) {
                Ok(()) => {
                    self.mark_committed(&ready);
                    info!(stage, offsets = %list_offsets(&ready), "Committed final offsets.");
                }
                // Closing the consumer tries once more, on revocation.
                Err(error) => {
                    warn!(stage, %error, offsets = %list_offsets(&ready), "Failed to commit final offsets.");
                }
            }
        }
        // A commit that failed on release may have been made good by a later one (or by
        // another member): the group is asked, so that the report lists only real gaps.
        if !self.uncommitted.is_empty() {
            let partitions = partitions_list(self.uncommitted.keys());
            match consumer.committed_offsets(partitions, COMMITTED_TIMEOUT) {
                Ok(committed) => self.forget_covered(&committed_offsets(&committed)),
                Err(error) => debug!(stage, %error, "Cannot read committed offsets."),
            }
        }
        self.closing = true;
        // Before closing: the revocation on close forgets the stalled partitions.
        let stalled = self.watermarks(|assigned| assigned.stalled_at);
        let uncommitted = self.uncommitted.clone().into_iter().collect();
        Ok(self.tally.report(stalled, uncommitted))
    }
}

/// How long librdkafka tries to deliver a record before it reports it failed (and the
/// relay sends it again), unless `message.timeout.ms` is set: two minutes, where
/// librdkafka's own five would leave a record unaccounted for longer than any alert
/// waits. The liveness guard ([`RelaySettings::stall_timeout`]) acts well before.
const MESSAGE_TIMEOUT_MS: &str = "120000";

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("raw", partition)
    }

    /// A state with nothing assigned, whose producers point nowhere.
    fn core() -> AtLeastOnce {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", "localhost:1");
        AtLeastOnce::new(
            &RelaySettings::new("ingest", "raw", "out", "quarantine"),
            config.clone(),
            config,
            StageMetrics::unregistered("ingest"),
        )
        .unwrap()
    }

    #[test]
    fn a_refused_commit_is_retried_only_where_the_group_lies_behind() {
        let mut state = core();
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
