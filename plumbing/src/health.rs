//! A stage's health as its own Kafka clients see it: whether each cluster it talks to
//! answers, and whether a client met an error that no retry can fix.
//!
//! - **Reachability.** librdkafka raises `_ALL_BROKERS_DOWN` when it has lost every broker
//!   of a cluster; from then until its statistics show a broker `UP` again, the client's
//!   cluster counts as unreachable: `pseudopipe_cluster_reachable{cluster}` is 0 and the
//!   process's `/readyz` answers 503. Statistics come every `statistics.interval.ms`
//!   (see [`crate::config`]).
//! - **Fatal errors.** A fenced producer, librdkafka's fatal error (idempotence
//!   guarantees lost), an authorization refusal (topic, cluster, transactional id,
//!   group) or SASL credentials the broker refuses: retrying would fail the same way
//!   forever, so the first one is kept and the relay stops on it (the process exits
//!   non-zero and its supervisor restarts it, or an operator fixes the ACLs).
//! - **Connection lines.** librdkafka reports every failed reconnection (an error event
//!   and a `FAIL` line per broker and attempt): while a cluster is unreachable they are
//!   held back, so that an outage writes one line when the cluster is lost and one when it
//!   answers again (with the count held back); while it answers, at most one per
//!   [`LOG_INTERVAL`] per cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use prometheus::IntGaugeVec;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Statistics;
use tracing::{info, warn};

use crate::log_limit::LOG_INTERVAL;
use crate::relay::log_to_tracing;
use crate::Error;

/// Which cluster a client talks to, as a stage sees it (the `cluster` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cluster {
    /// Where the input topic is consumed.
    Input,
    /// Where forwarded records go.
    Output,
    /// Where quarantined records go, when another client than the output's writes them.
    Quarantine,
}

impl Cluster {
    /// The metric label and the name in messages.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::Quarantine => "quarantine",
        }
    }
}

/// The health of one stage, shared by its clients' callbacks and its relay loop. Cheap
/// to clone (the clones share their state).
#[derive(Clone, Debug)]
pub(crate) struct Health {
    /// The stage, for log lines.
    stage: Arc<str>,
    reachable: IntGaugeVec,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Live clients, by id: their cluster and whether they lost every broker.
    clients: BTreeMap<u64, (Cluster, bool)>,
    /// Per cluster, the connection lines held back and when the last one was written.
    lines: BTreeMap<Cluster, Lines>,
    fatal: Option<Error>,
}

#[derive(Debug, Default)]
struct Lines {
    held_back: u64,
    written_at: Option<Instant>,
}

impl State {
    /// Whether no client of `cluster` lost every broker.
    fn is_reachable(&self, cluster: Cluster) -> bool {
        !self
            .clients
            .values()
            .any(|(of, down)| *of == cluster && *down)
    }
}

impl Health {
    /// Health of `stage` whose reachability is exported in `reachable` (labels: `cluster`).
    pub(crate) fn new(stage: &str, reachable: IntGaugeVec) -> Self {
        Self {
            stage: stage.into(),
            reachable,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A watch for one new client of `cluster`, to hand to its librdkafka callbacks;
    /// dropping it (with the client) forgets the client.
    pub(crate) fn watch(&self, cluster: Cluster) -> ClientWatch {
        let id = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            state.clients.insert(id, (cluster, false));
            id
        };
        self.export(cluster);
        ClientWatch {
            id,
            cluster,
            health: self.clone(),
        }
    }

    /// Notes whether client `id` lost every broker; writes one line when its cluster
    /// becomes unreachable (with librdkafka's `reason`) and one when it answers again.
    fn set_down(&self, id: u64, down: bool, reason: &str) {
        let (cluster, change) = {
            let mut state = self.lock();
            let Some(&(cluster, was_down)) = state.clients.get(&id) else {
                return;
            };
            if was_down == down {
                return;
            }
            let before = state.is_reachable(cluster);
            state.clients.insert(id, (cluster, down));
            let after = state.is_reachable(cluster);
            let lines = state.lines.entry(cluster).or_default();
            let change = match (before, after) {
                (true, false) => Some(Change::Lost),
                (false, true) => Some(Change::Back {
                    held_back: std::mem::take(&mut lines.held_back),
                }),
                _ => None,
            };
            (cluster, change)
        };
        self.export(cluster);
        let stage = &*self.stage;
        match change {
            Some(Change::Lost) => warn!(
                stage,
                cluster = cluster.label(),
                reason,
                "Cluster unreachable: every broker lost; its connection errors are held back until it answers again."
            ),
            Some(Change::Back { held_back }) => info!(
                stage,
                cluster = cluster.label(),
                held_back,
                "Cluster answers again."
            ),
            None => {}
        }
    }

    /// Whether a line about the connection to `cluster` may be written now: `Some(n)`
    /// with the lines held back since the last one, or `None` (held back, counted) while
    /// the cluster is unreachable or one was written less than [`LOG_INTERVAL`] ago.
    fn admit_connection_line(&self, cluster: Cluster, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        let reachable = state.is_reachable(cluster);
        let lines = state.lines.entry(cluster).or_default();
        let recent = lines
            .written_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_INTERVAL);
        if !reachable || recent {
            lines.held_back += 1;
            None
        } else {
            lines.written_at = Some(now);
            Some(std::mem::take(&mut lines.held_back))
        }
    }

    fn export(&self, cluster: Cluster) {
        self.reachable
            .with_label_values(&[cluster.label()])
            .set(i64::from(self.is_reachable(cluster)));
    }

    /// Whether no client of `cluster` lost every broker.
    fn is_reachable(&self, cluster: Cluster) -> bool {
        self.lock().is_reachable(cluster)
    }

    /// Keeps `error` as the reason the stage must stop (the first one wins).
    pub(crate) fn fail(&self, error: Error) {
        self.lock().fatal.get_or_insert(error);
    }

    /// Whether an error the stage must stop on waits to be taken.
    pub(crate) fn has_failed(&self) -> bool {
        self.lock().fatal.is_some()
    }

    /// The error the stage must stop on, once.
    pub(crate) fn take_fatal(&self) -> Option<Error> {
        self.lock().fatal.take()
    }
}

/// A change of a cluster's reachability, written as one line.
enum Change {
    Lost,
    Back { held_back: u64 },
}

/// One client's window on its stage's [`Health`], held by its librdkafka context.
#[derive(Debug)]
pub(crate) struct ClientWatch {
    id: u64,
    cluster: Cluster,
    health: Health,
}

impl ClientWatch {
    /// An error librdkafka reported on this client (its error callback, or a consumer's
    /// poll): notes a cluster lost, and keeps the error when it must stop the stage.
    pub(crate) fn on_error(&self, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_down(self.id, true, reason);
        }
        if stops_the_stage(error, reason) {
            self.fail(underlying(error, reason), reason);
        }
    }

    /// An error callback of this client: noted (see [`Self::on_error`]) and written,
    /// unless it is about the connection and held back (the module's "Connection lines").
    pub(crate) fn error(&self, stage: &'static str, error: &KafkaError, reason: &str) {
        self.on_error(error, reason);
        if is_about_the_connection(error) {
            if let Some(held_back) = self
                .health
                .admit_connection_line(self.cluster, Instant::now())
            {
                warn!(stage, cluster = self.cluster.label(), %error, reason, held_back, "Kafka client error.");
            }
        } else {
            warn!(stage, cluster = self.cluster.label(), %error, reason, "Kafka client error.");
        }
    }

    /// A librdkafka log line of this client into `tracing`, unless it reports a failed
    /// connection that is held back.
    pub(crate) fn log(
        &self,
        stage: &'static str,
        level: RDKafkaLogLevel,
        facility: &str,
        message: &str,
    ) {
        if facility == "FAIL"
            && self
                .health
                .admit_connection_line(self.cluster, Instant::now())
                .is_none()
        {
            return;
        }
        log_to_tracing(stage, level, facility, message);
    }

    /// Keeps `error` as the reason the stage must stop.
    pub(crate) fn fail(&self, error: KafkaError, reason: &str) {
        self.health.fail(Error::Fatal {
            cluster: self.cluster.label(),
            source: error,
            reason: reason.to_owned(),
        });
    }

    /// The client's statistics: a broker `UP` means the cluster answers again.
    pub(crate) fn on_stats(&self, statistics: &Statistics) {
        if statistics
            .brokers
            .values()
            .any(|broker| broker.state == "UP")
        {
            self.health.set_down(self.id, false, "");
        }
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        let removed = self.health.lock().clients.remove(&self.id);
        if let Some((cluster, _)) = removed {
            self.health.export(cluster);
        }
    }
}

/// Whether `error` says a broker cannot be reached (refused, unresolved, cut, all
/// down): librdkafka repeats it at every reconnection attempt.
fn is_about_the_connection(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
        )
    )
}

/// The error behind librdkafka's `_FATAL` when its reason names a fencing (the error
/// callback gives the reason, "Fatal error: Broker: There is a newer producer with the
/// same transactionalId which fences the current one: ...", not the client to ask), so
/// that the stage says it was fenced; any other error as it is.
fn underlying(error: &KafkaError, reason: &str) -> KafkaError {
    let fenced =
        reason.contains("fences the current one") || reason.contains("operation with an old epoch");
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) && fenced {
        KafkaError::Global(RDKafkaErrorCode::ProducerFenced)
    } else {
        error.clone()
    }
}

/// Whether `error` will fail the same way however often it is retried, so that the stage
/// must stop rather than retry or stall: fatal and fencing errors, authorization
/// refusals, and SASL credentials the broker refused. A SASL handshake cut by the network
/// (`SaslAuthenticateRequest failed: ...`) is transient and does not count.
pub(crate) fn stops_the_stage(error: &KafkaError, reason: &str) -> bool {
    use RDKafkaErrorCode as Code;
    if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
        return true;
    }
    match error.rdkafka_error_code() {
        Some(
            Code::Fatal
            | Code::ProducerFenced
            | Code::Fenced
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::SaslAuthenticationFailed,
        ) => true,
        Some(Code::Authentication) => {
            reason.contains("SASL authentication error") && !reason.contains("SaslAuthenticate")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn health() -> Health {
        Health::new(
            "test",
            IntGaugeVec::new(Opts::new("reachable", "test"), &["cluster"]).unwrap(),
        )
    }

    fn gauge(health: &Health, cluster: Cluster) -> i64 {
        health.reachable.with_label_values(&[cluster.label()]).get()
    }

    fn all_brokers_down() -> KafkaError {
        KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)
    }

    #[test]
    fn a_cluster_is_unreachable_while_one_of_its_clients_lost_every_broker() {
        let health = health();
        let consumer = health.watch(Cluster::Input);
        let producer = health.watch(Cluster::Output);
        let other = health.watch(Cluster::Output);
        assert_eq!(gauge(&health, Cluster::Output), 1);

        producer.on_error(&all_brokers_down(), "2/2 brokers are down");
        other.on_error(&all_brokers_down(), "2/2 brokers are down");
        assert!(!health.is_reachable(Cluster::Output));
        assert!(health.is_reachable(Cluster::Input));
        assert_eq!(gauge(&health, Cluster::Output), 0);
        assert_eq!(gauge(&health, Cluster::Input), 1);

        // One client back is not enough; the other one dropped (revoked) is.
        producer.health.set_down(producer.id, false, "");
        assert_eq!(gauge(&health, Cluster::Output), 0);
        drop(other);
        assert_eq!(gauge(&health, Cluster::Output), 1);
        drop(consumer);
        assert!(health.take_fatal().is_none(), "brokers down is not fatal");
    }

    #[test]
    fn fatal_authorization_and_refused_credentials_stop_the_stage() {
        for code in [
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ] {
            assert!(
                stops_the_stage(&KafkaError::MessageProduction(code), ""),
                "{code:?}"
            );
        }
        let sasl = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(stops_the_stage(
            &sasl,
            "sasl_ssl://cloud:9093/1: SASL authentication error: Authentication failed: Invalid username or password"
        ));
        assert!(!stops_the_stage(
            &sasl,
            "sasl_ssl://cloud:9093/1: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker transport failure"
        ));
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::MessageSizeTooLarge,
        ] {
            assert!(
                !stops_the_stage(&KafkaError::MessageProduction(code), ""),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_first_fatal_error_is_kept_once() {
        let health = health();
        let watch = health.watch(Cluster::Output);
        watch.on_error(
            &KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
            "no WRITE on redemptions",
        );
        watch.on_error(&KafkaError::Global(RDKafkaErrorCode::Fatal), "later");
        let error = health.take_fatal().expect("kept").to_string();
        assert!(error.contains("output cluster"), "{error}");
        assert!(error.contains("no WRITE on redemptions"), "{error}");
        assert!(health.take_fatal().is_none());

        // librdkafka's fatal error of a fenced producer says it was fenced.
        watch.on_error(
            &KafkaError::Global(RDKafkaErrorCode::Fatal),
            "Fatal error: Broker: There is a newer producer with the same transactionalId which fences the current one: Failed to produce",
        );
        let error = health.take_fatal().expect("kept").to_string();
        assert!(error.contains("this one was fenced"), "{error}");
    }

    /// Log lines written in this thread while `run` runs.
    fn lines_logged(run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer(Arc::default());
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn an_outage_writes_one_line_when_lost_and_one_when_back_not_one_per_attempt() {
        let health = health();
        let consumer = health.watch(Cluster::Input);
        let producer = health.watch(Cluster::Input);
        let refused = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let lines = lines_logged(|| {
            // What librdkafka reports for two minutes of reconnection attempts.
            for _ in 0..300 {
                for client in [&consumer, &producer] {
                    client.error("ingest", &refused, "onprem:9092/1: Connection refused");
                    client.log(
                        "ingest",
                        RDKafkaLogLevel::Error,
                        "FAIL",
                        "onprem:9092/1: Connect to ipv4#10.0.0.1:9092 failed: Connection refused",
                    );
                    client.error("ingest", &all_brokers_down(), "1/1 brokers are down");
                }
            }
            consumer.health.set_down(consumer.id, false, "");
            producer.health.set_down(producer.id, false, "");
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("Connection refused"), "{}", lines[0]);
        assert!(lines[1].contains("Cluster unreachable"), "{}", lines[1]);
        assert!(lines[1].contains("cluster=\"input\""), "{}", lines[1]);
        assert!(lines[2].contains("Cluster answers again"), "{}", lines[2]);
        assert!(lines[2].contains("held_back=1799"), "{}", lines[2]);

        // Other errors are written as they come.
        let lines = lines_logged(|| {
            let denied = KafkaError::Global(RDKafkaErrorCode::GroupAuthorizationFailed);
            consumer.error("ingest", &denied, "no READ on the group");
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
}
