//! The liveness guard: a producer that holds records and has had none acknowledged for
//! the stall bound, while its cluster answers, is stuck; it is replaced by a new one,
//! and if that one does not deliver either, the stage stops.
//!
//! librdkafka never says it has given up before `message.timeout.ms`, and after a broker
//! restart an idempotent producer can stay without a usable connection although the
//! broker answers everyone else (issue 17, ADR 0016). So the guard watches, per producer,
//! the last acknowledgement and whether records wait (in librdkafka's queues or the
//! relay's retries); past [`RelaySettings::stall_timeout`](crate::RelaySettings) it asks
//! the cluster for metadata with a client of its own (same TLS and SASL). No answer: an
//! outage, exported (`pseudopipe_delivery_stalled`) while the clock starts again. An
//! answer: the producer is replaced; a replacement that stalls too stops the stage with
//! [`Error::Stalled`]. Checked once a second: a clock read and a queue length per
//! producer; the probe runs only when a stall is suspected.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use rdkafka::ClientConfig;
use tracing::{debug, info, warn};

use super::delivery::{RelayProducer, Report};
use super::Outputs;
use crate::health::{Cluster, Health};
use crate::metrics::StageMetrics;
use crate::relay::context::{log_to_tracing, Watched};
use crate::relay::librdkafka_log_level;
use crate::relay::tally::set_stalled;
use crate::Error;

/// How often producers are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Builds a relay's producers, at start and when one is replaced.
pub(super) struct ProducerFactory {
    stage: &'static str,
    reports: Sender<Report>,
    health: Health,
    output: ClientConfig,
    /// `None` when the output producer writes the quarantine too.
    quarantine: Option<ClientConfig>,
}

impl ProducerFactory {
    /// A factory of producers whose delivery reports go to `reports`. `quarantine` equal
    /// to `output` means one producer serves both topics.
    pub(super) fn new(
        stage: &'static str,
        reports: Sender<Report>,
        health: Health,
        output: &ClientConfig,
        quarantine: &ClientConfig,
    ) -> Self {
        let shared = quarantine.config_map() == output.config_map();
        Self {
            stage,
            reports,
            health,
            output: output.clone(),
            quarantine: (!shared).then(|| quarantine.clone()),
        }
    }

    /// Whether one producer writes both the output and the quarantine.
    pub(super) fn shared(&self) -> bool {
        self.quarantine.is_none()
    }

    /// The configuration of `cluster`'s producer.
    fn config(&self, cluster: Cluster) -> &ClientConfig {
        match (cluster, &self.quarantine) {
            (Cluster::Quarantine, Some(quarantine)) => quarantine,
            _ => &self.output,
        }
    }

    /// A new producer for `cluster` (`Output` or `Quarantine`).
    pub(super) fn create(&self, cluster: Cluster) -> Result<RelayProducer, Error> {
        let mut config = self.config(cluster).clone();
        config.set_log_level(librdkafka_log_level());
        Ok(RelayProducer::from_config_and_context(
            &config,
            Watched::new(self.stage, &self.health, cluster, self.reports.clone()),
        )?)
    }

    /// Whether `cluster` answers a metadata request for `topic` with a leader for every
    /// partition, asked by a client of its own within `timeout`.
    fn answers(&self, cluster: Cluster, topic: &str, timeout: Duration) -> bool {
        let mut config = self.config(cluster).clone();
        // A bare client: no producer id to acquire, no statistics to report.
        config
            .set("enable.idempotence", "false")
            .set("statistics.interval.ms", "0")
            .set_log_level(librdkafka_log_level());
        let probe: BaseProducer<Probe> = match config
            .create_with_context(Probe { stage: self.stage })
        {
            Ok(probe) => probe,
            Err(error) => {
                debug!(stage = self.stage, %error, "Cannot create a client to probe the cluster.");
                return false;
            }
        };
        match probe.client().fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => metadata.topics().iter().any(|found| {
                found.error().is_none()
                    && !found.partitions().is_empty()
                    && found
                        .partitions()
                        .iter()
                        .all(|partition| partition.error().is_none() && partition.leader() >= 0)
            }),
            Err(error) => {
                debug!(stage = self.stage, cluster = cluster.label(), %error, "The cluster does not answer a metadata request.");
                false
            }
        }
    }
}

/// The probe's callbacks: its lines at debug level only (it is expected to fail while
/// a cluster is down).
struct Probe {
    stage: &'static str,
}

impl ClientContext for Probe {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(self.stage, RDKafkaLogLevel::Debug, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(stage = self.stage, %error, reason, "Probe client error.");
    }
}

impl ProducerContext for Probe {
    type DeliveryOpaque = ();

    fn delivery(&self, _report: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
}

/// One producer's watch.
#[derive(Debug)]
struct Watch {
    cluster: Cluster,
    /// The last acknowledgement, or the last moment nothing waited, or when the clock
    /// started again after a probe found the cluster down.
    progress: Instant,
    /// Since when nothing was acknowledged, for the stop message.
    silent_since: Instant,
    /// Whether the stall is exported.
    stalled: bool,
    /// Whether this producer replaced a stuck one and has delivered nothing yet.
    replacement: bool,
}

/// The guard of a relay's producers.
pub(super) struct Liveness {
    stage: &'static str,
    stall_timeout: Duration,
    next_check: Instant,
    /// The output's, then the quarantine's when another producer writes it.
    watches: Vec<Watch>,
    metrics: StageMetrics,
}

impl Liveness {
    pub(super) fn new(
        stage: &'static str,
        stall_timeout: Duration,
        shared: bool,
        metrics: StageMetrics,
    ) -> Self {
        let now = Instant::now();
        let clusters = [Cluster::Output, Cluster::Quarantine];
        let watches = clusters
            .into_iter()
            .take(if shared { 1 } else { 2 })
            .map(|cluster| {
                set_stalled(&metrics, cluster, false);
                Watch {
                    cluster,
                    progress: now,
                    silent_since: now,
                    stalled: false,
                    replacement: false,
                }
            })
            .collect();
        Self {
            stage,
            stall_timeout,
            next_check: now + CHECK_INTERVAL,
            watches,
            metrics,
        }
    }

    fn watch_mut(&mut self, cluster: Cluster) -> &mut Watch {
        let index = usize::from(cluster == Cluster::Quarantine && self.watches.len() > 1);
        &mut self.watches[index]
    }

    /// A record written by `cluster`'s producer was acknowledged (or none waits): the
    /// producer is fine, and a stall it was in is over.
    pub(super) fn acknowledged(&mut self, cluster: Cluster, now: Instant) {
        let watch = self.watch_mut(cluster);
        watch.progress = now;
        watch.silent_since = now;
        watch.replacement = false;
        if std::mem::take(&mut watch.stalled) {
            set_stalled(&self.metrics, cluster, false);
            info!(
                stage = self.stage,
                cluster = cluster.label(),
                "Deliveries go on again: records are acknowledged."
            );
        }
    }

    /// Looks at each producer of `outputs` once a second. `waiting(cluster)` says whether
    /// records of `cluster`'s producer wait for an acknowledgement. Returns the cluster
    /// whose producer is stuck while the cluster answers (to replace), or the error to
    /// stop on when a replacement is stuck too.
    pub(super) fn check(
        &mut self,
        now: Instant,
        outputs: &Outputs,
        waiting: impl Fn(Cluster) -> bool,
    ) -> Result<Option<Cluster>, Error> {
        if now < self.next_check {
            return Ok(None);
        }
        self.next_check = now + CHECK_INTERVAL;
        for index in 0..self.watches.len() {
            let cluster = self.watches[index].cluster;
            if !waiting(cluster) {
                self.acknowledged(cluster, now);
                continue;
            }
            if now.saturating_duration_since(self.watches[index].progress) < self.stall_timeout {
                continue;
            }
            let stuck = self.stalled(index, now, outputs.to(cluster).1, &outputs.factory)?;
            if stuck.is_some() {
                return Ok(stuck);
            }
        }
        Ok(None)
    }

    /// `watches[index]`'s producer has had nothing acknowledged for the stall bound.
    fn stalled(
        &mut self,
        index: usize,
        now: Instant,
        topic: &str,
        factory: &ProducerFactory,
    ) -> Result<Option<Cluster>, Error> {
        let stage = self.stage;
        let cluster = self.watches[index].cluster;
        let timeout_ms = u64::try_from(self.stall_timeout.as_millis()).unwrap_or(u64::MAX);
        if !self.watches[index].stalled {
            self.watches[index].stalled = true;
            set_stalled(&self.metrics, cluster, true);
        }
        // The probe waits at most the bound itself (it is on the relay's thread).
        let answers = factory.answers(cluster, topic, self.stall_timeout.min(PROBE_TIMEOUT));
        let watch = &mut self.watches[index];
        let silent = now.saturating_duration_since(watch.silent_since);
        watch.progress = Instant::now();
        if !answers {
            warn!(
                stage,
                cluster = cluster.label(),
                stall_timeout_ms = timeout_ms,
                silent_s = silent.as_secs(),
                "No record acknowledged within the stall bound, and the cluster does not answer either: waiting for it."
            );
            return Ok(None);
        }
        if watch.replacement {
            return Err(Error::Stalled {
                cluster: cluster.label(),
                stalled_for: silent,
            });
        }
        warn!(
            stage,
            cluster = cluster.label(),
            stall_timeout_ms = timeout_ms,
            silent_s = silent.as_secs(),
            "No record acknowledged within the stall bound although the cluster answers: the producer is replaced and its records are sent again."
        );
        watch.replacement = true;
        self.metrics
            .producer_restarts
            .with_label_values(&[cluster.label()])
            .inc();
        Ok(Some(cluster))
    }
}

/// How long a probe's metadata request may take at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
