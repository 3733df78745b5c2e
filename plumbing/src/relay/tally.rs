//! What both strategies count, written once: the report's counters, the metrics they
//! feed, and the rate-limited lines about single records.
//!
//! A strategy says when a record is consumed and when it is settled (at least once: its
//! delivery is acknowledged or it was dropped; exactly once: its transaction committed),
//! and exports now and then: the counters reach Prometheus in bulk, not per record.

use std::time::Instant;

use prometheus::local::LocalHistogram;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tracing::{error, warn};

use super::{Decision, Finding, Reason, RelayReport, PROCESSOR_PANIC};
use crate::health::Cluster;
use crate::log_limit::LogLimiter;
use crate::metrics::StageMetrics;
use crate::offsets::TopicPartition;

/// Where a decided record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// To the output topic, with the processor's key and payload.
    Forward,
    /// To the quarantine topic, unchanged, with the reason code.
    Quarantine(Reason),
    /// Nowhere: settled as it is.
    Drop(Reason),
}

impl Route {
    /// Where `decision` sends its record.
    pub(super) fn of(decision: &Decision) -> Self {
        match decision {
            Decision::Forward { .. } => Self::Forward,
            Decision::Quarantine { reason, .. } => Self::Quarantine(*reason),
            Decision::Drop { reason } => Self::Drop(*reason),
        }
    }
}

/// Exports whether deliveries through `cluster` stall (`pseudopipe_delivery_stalled`), as
/// either strategy's liveness bound sees it.
pub(super) fn set_stalled(metrics: &StageMetrics, cluster: Cluster, stalled: bool) {
    let gauge = metrics
        .delivery_stalled
        .with_label_values(&[cluster.label()]);
    gauge.set(i64::from(stalled));
}

/// A relay's counters and the metrics they feed.
pub(super) struct Tally {
    pub(super) stage: &'static str,
    pub(super) metrics: StageMetrics,
    /// Per-record lines (quarantine, delivery failures): one per reason per 10 s; an
    /// output cluster that is down fails every record in flight at once.
    pub(super) log: LogLimiter,
    latency: LocalHistogram,
    /// The counts so far; `stalled` and `uncommitted` are the strategy's to say.
    counts: RelayReport,
    /// What the settled counts had when they were last added to the metrics.
    exported: RelayReport,
}

impl Tally {
    pub(super) fn new(stage: &'static str, metrics: StageMetrics) -> Self {
        Self {
            stage,
            latency: metrics.processing_latency.local(),
            metrics,
            log: LogLimiter::default(),
            counts: RelayReport::default(),
            exported: RelayReport::default(),
        }
    }

    /// Records consumed and handed to the strategy (counted again when consumed again).
    pub(super) fn consumed(&mut self, records: u64) {
        self.counts.consumed += records;
        self.metrics.consumed.inc_by(records);
    }

    /// A record consumed at `received` is settled by `now`: delivered where `route`
    /// says, or dropped.
    pub(super) fn settled(&mut self, route: Route, received: Instant, now: Instant) {
        let count = match route {
            Route::Forward => &mut self.counts.forwarded,
            Route::Quarantine(reason) => self.counts.quarantined.entry(reason).or_default(),
            // No delivery report to wait for: not a latency.
            Route::Drop(reason) => {
                *self.counts.dropped.entry(reason).or_default() += 1;
                return;
            }
        };
        *count += 1;
        self.latency
            .observe(now.saturating_duration_since(received).as_secs_f64());
    }

    /// A delivery is tried again; returns how many were so far.
    pub(super) fn retried(&mut self) -> u64 {
        self.metrics.delivery_retries.inc();
        self.counts.retries += 1;
        self.counts.retries
    }

    /// A transaction of one input partition was aborted; its records are consumed again.
    pub(super) fn aborted(&mut self) {
        self.counts.aborted_transactions += 1;
    }

    /// Brings the metrics up to date, with `in_flight` records not settled yet.
    pub(super) fn export(&mut self, in_flight: usize) {
        let (counts, exported) = (&self.counts, &mut self.exported);
        self.metrics
            .produced
            .inc_by(counts.forwarded - exported.forwarded);
        exported.forwarded = counts.forwarded;
        for (family, now, before) in [
            (
                &self.metrics.quarantined,
                &counts.quarantined,
                &mut exported.quarantined,
            ),
            (
                &self.metrics.dropped,
                &counts.dropped,
                &mut exported.dropped,
            ),
        ] {
            for (reason, count) in now {
                let before = before.entry(*reason).or_default();
                if *count > *before {
                    family
                        .with_label_values(&[reason.code()])
                        .inc_by(*count - *before);
                    *before = *count;
                }
            }
        }
        self.latency.flush();
        self.metrics
            .in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    }

    /// The report: the counts, with the strategy's `stalled` and `uncommitted` offsets.
    pub(super) fn report(
        &self,
        stalled: Vec<(TopicPartition, i64)>,
        uncommitted: Vec<(TopicPartition, i64)>,
    ) -> RelayReport {
        RelayReport {
            stalled,
            uncommitted,
            ..self.counts.clone()
        }
    }

    /// Takes note of a record the processor quarantines: a detector's finding is counted
    /// by field and detector (a ratio against `pseudopipe_events_consumed_total`, which
    /// also counts a record consumed again), and a line is logged, at most one per reason
    /// per 10 s: where the record was read (topic, partition, offset), its reason code,
    /// field and detector. Never its content, nor the processor's explanation: that stays
    /// on-prem, in the quarantined record's headers.
    pub(super) fn note_quarantine(
        &mut self,
        message: &BorrowedMessage<'_>,
        reason: Reason,
        finding: Option<&Finding>,
    ) {
        if let Some(finding) = finding {
            self.metrics
                .detector_quarantined
                .with_label_values(&[finding.field.as_str(), finding.detector])
                .inc();
        }
        let Some(held_back) = self.log.admit(reason.code(), Instant::now()) else {
            return;
        };
        let stage = self.stage;
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let reason = reason.code();
        if let Some(Finding { field, detector }) = finding {
            warn!(
                stage,
                topic,
                partition,
                offset,
                reason,
                field = field.as_str(),
                detector,
                held_back,
                "A record was quarantined: a detector found personal data in a field the policy keeps."
            );
        } else if reason == PROCESSOR_PANIC.code() {
            error!(
                stage,
                topic,
                partition,
                offset,
                reason,
                held_back,
                "The processor panicked on a record; it is quarantined."
            );
        } else {
            warn!(
                stage,
                topic, partition, offset, reason, held_back, "A record was quarantined."
            );
        }
    }
}
