//! Prometheus metrics of one relay stage.
//!
//! Every metric carries a constant `stage` label (`ingest` or `sink`). Registering the
//! stages separately into one registry therefore yields one metric family per name with
//! one series per stage, as `run` mode (both stages in one process) needs. Labels are few
//! and bounded: stage, topic, partition, reason — never a value of an event.

use crate::health::Health;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The metrics of one stage, registered in a [`Registry`]. Cheap to clone (all handles
/// share their series).
#[derive(Clone, Debug)]
pub struct StageMetrics {
    /// `pseudopipe_events_consumed_total`: records read from the input topic.
    pub consumed: IntCounter,
    /// `pseudopipe_events_produced_total`: records delivered to the output topic.
    pub produced: IntCounter,
    /// `pseudopipe_events_quarantined_total{reason}`: records delivered to quarantine.
    pub quarantined: IntCounterVec,
    /// `pseudopipe_detector_quarantined_total{field,detector}`: records quarantined because
    /// a detector found personal data in a field the policy keeps, by the field's policy
    /// path and the detector, counted when decided (a record consumed again after a
    /// restart counts again, as it does in `pseudopipe_events_consumed_total`).
    pub detector_quarantined: IntCounterVec,
    /// `pseudopipe_events_dropped_total{reason}`: records neither forwarded nor
    /// quarantined, on purpose (e.g. `no_consent`).
    pub dropped: IntCounterVec,
    /// `pseudopipe_consumer_lag{topic,partition}`: high watermark minus position.
    pub consumer_lag: IntGaugeVec,
    /// `pseudopipe_processing_latency_seconds`: from consumption to delivery report.
    pub processing_latency: Histogram,
    /// `pseudopipe_in_flight`: records consumed whose delivery is not settled yet.
    pub in_flight: IntGauge,
    /// `pseudopipe_partition_stalled{topic,partition}`: 1 while a permanently failed
    /// record holds the partition back (an alert), 0 otherwise.
    pub partition_stalled: IntGaugeVec,
    /// `pseudopipe_delivery_retries_total`: deliveries tried again after a retriable error.
    pub delivery_retries: IntCounter,
    /// `pseudopipe_input_offsets_skipped_total{topic,partition}`: input offsets the
    /// consumer jumped over (never received): an alert on a plain topic.
    pub offsets_skipped: IntCounterVec,
    /// `pseudopipe_cluster_reachable{cluster}`: 0 while a client of the stage has lost
    /// every broker of that cluster (`input`, `output`, `quarantine`), 1 otherwise.
    pub cluster_reachable: IntGaugeVec,
    /// `pseudopipe_delivery_stalled{cluster}`: 1 while a producer of the stage holds
    /// records and has had none acknowledged for the stall bound (`stall_timeout`), 0
    /// once one is acknowledged or none waits.
    pub delivery_stalled: IntGaugeVec,
    /// `pseudopipe_producer_restarts_total{cluster}`: producers replaced by a new one
    /// because they stalled while their cluster answered.
    pub producer_restarts: IntCounterVec,
    /// What the stage's clients report about their clusters and fatal errors.
    pub(crate) health: Health,
}

impl StageMetrics {
    /// Creates the metrics of `stage` and registers them in `registry`.
    ///
    /// Fails when `stage` is already registered there, or when another collector uses
    /// one of these names with other labels.
    pub fn new(registry: &Registry, stage: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("stage", stage);
        let cluster_reachable = IntGaugeVec::new(
            opts(
                "pseudopipe_cluster_reachable",
                "0 while a Kafka client of the stage has lost every broker of this cluster, 1 otherwise.",
            ),
            &["cluster"],
        )?;
        let metrics = Self {
            consumed: IntCounter::with_opts(opts(
                "pseudopipe_events_consumed_total",
                "Records read from the input topic.",
            ))?,
            produced: IntCounter::with_opts(opts(
                "pseudopipe_events_produced_total",
                "Records delivered to the output topic.",
            ))?,
            quarantined: IntCounterVec::new(
                opts(
                    "pseudopipe_events_quarantined_total",
                    "Records delivered to the quarantine topic, by reason.",
                ),
                &["reason"],
            )?,
            detector_quarantined: IntCounterVec::new(
                opts(
                    "pseudopipe_detector_quarantined_total",
                    "Records quarantined because a detector found personal data in a field the policy keeps, by the field's policy path and the detector.",
                ),
                &["field", "detector"],
            )?,
            dropped: IntCounterVec::new(
                opts(
                    "pseudopipe_events_dropped_total",
                    "Records neither forwarded nor quarantined, on purpose, by reason (e.g. no_consent: the event's subject withheld consent to analytics).",
                ),
                &["reason"],
            )?,
            consumer_lag: IntGaugeVec::new(
                opts(
                    "pseudopipe_consumer_lag",
                    "Records in the input partition not consumed yet (high watermark - position).",
                ),
                &["topic", "partition"],
            )?,
            processing_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "pseudopipe_processing_latency_seconds",
                    "Time from consuming a record to its delivery report.",
                )
                .const_label("stage", stage)
                // 1 ms to about 33 s: a broker that is down shows in the top buckets.
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            in_flight: IntGauge::with_opts(opts(
                "pseudopipe_in_flight",
                "Records consumed whose delivery is not settled yet.",
            ))?,
            partition_stalled: IntGaugeVec::new(
                opts(
                    "pseudopipe_partition_stalled",
                    "1 while a permanently failed record holds the input partition back.",
                ),
                &["topic", "partition"],
            )?,
            delivery_retries: IntCounter::with_opts(opts(
                "pseudopipe_delivery_retries_total",
                "Deliveries tried again after a retriable error.",
            ))?,
            offsets_skipped: IntCounterVec::new(
                opts(
                    "pseudopipe_input_offsets_skipped_total",
                    "Input offsets never received: expired by retention before they were read, compacted away, transaction markers, or a broker fault.",
                ),
                &["topic", "partition"],
            )?,
            delivery_stalled: IntGaugeVec::new(
                opts(
                    "pseudopipe_delivery_stalled",
                    "1 while a producer of the stage holds records and has had none acknowledged for the stall bound, 0 otherwise.",
                ),
                &["cluster"],
            )?,
            producer_restarts: IntCounterVec::new(
                opts(
                    "pseudopipe_producer_restarts_total",
                    "Producers replaced by a new one because they stalled while their cluster answered.",
                ),
                &["cluster"],
            )?,
            health: Health::new(stage, cluster_reachable.clone()),
            cluster_reachable,
        };
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.produced.clone()))?;
        registry.register(Box::new(metrics.quarantined.clone()))?;
        registry.register(Box::new(metrics.detector_quarantined.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.processing_latency.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.partition_stalled.clone()))?;
        registry.register(Box::new(metrics.delivery_retries.clone()))?;
        registry.register(Box::new(metrics.offsets_skipped.clone()))?;
        registry.register(Box::new(metrics.cluster_reachable.clone()))?;
        registry.register(Box::new(metrics.delivery_stalled.clone()))?;
        registry.register(Box::new(metrics.producer_restarts.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere, for tests and tools that do not export them.
    pub fn unregistered(stage: &str) -> Self {
        Self::new(&Registry::new(), stage).expect("a fresh registry accepts every metric")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn both_stages_share_one_registry() {
        let registry = Registry::new();
        let ingest = StageMetrics::new(&registry, "ingest").unwrap();
        let sink = StageMetrics::new(&registry, "sink").unwrap();
        ingest.consumed.inc_by(3);
        sink.consumed.inc();
        ingest
            .quarantined
            .with_label_values(&["invalid_json"])
            .inc();
        sink.partition_stalled
            .with_label_values(&["redemptions.pseudonymized", "2"])
            .set(1);

        let families = registry.gather();
        let consumed = families
            .iter()
            .find(|family| family.name() == "pseudopipe_events_consumed_total")
            .expect("one family for both stages");
        assert_eq!(consumed.get_metric().len(), 2);

        let mut text = Vec::new();
        TextEncoder::new().encode(&families, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(r#"pseudopipe_events_consumed_total{stage="ingest"} 3"#));
        assert!(text.contains(r#"pseudopipe_events_consumed_total{stage="sink"} 1"#));
        assert!(text.contains(
            r#"pseudopipe_events_quarantined_total{reason="invalid_json",stage="ingest"} 1"#
        ));
        assert!(text.contains(
            r#"pseudopipe_partition_stalled{partition="2",stage="sink",topic="redemptions.pseudonymized"} 1"#
        ));
        assert_eq!(text.matches("# TYPE pseudopipe_in_flight gauge").count(), 1);
    }

    #[test]
    fn same_stage_twice_is_refused() {
        let registry = Registry::new();
        StageMetrics::new(&registry, "ingest").unwrap();
        assert!(matches!(
            StageMetrics::new(&registry, "ingest"),
            Err(prometheus::Error::AlreadyReg)
        ));
    }
}
