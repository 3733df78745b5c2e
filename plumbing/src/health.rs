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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::IntGaugeVec;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Statistics;

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
    reachable: IntGaugeVec,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Live clients, by id: their cluster and whether they lost every broker.
    clients: BTreeMap<u64, (Cluster, bool)>,
    fatal: Option<Error>,
}

impl Health {
    /// Health whose reachability is exported in `reachable` (labels: `cluster`).
    pub(crate) fn new(reachable: IntGaugeVec) -> Self {
        Self {
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

    fn set_down(&self, id: u64, down: bool) {
        let cluster = {
            let mut state = self.lock();
            let Some((cluster, was_down)) = state.clients.get_mut(&id) else {
                return;
            };
            if *was_down == down {
                return;
            }
            *was_down = down;
            *cluster
        };
        self.export(cluster);
    }

    fn export(&self, cluster: Cluster) {
        self.reachable
            .with_label_values(&[cluster.label()])
            .set(i64::from(self.is_reachable(cluster)));
    }

    /// Whether no client of `cluster` lost every broker.
    fn is_reachable(&self, cluster: Cluster) -> bool {
        !self
            .lock()
            .clients
            .values()
            .any(|(of, down)| *of == cluster && *down)
    }

    /// Keeps `error` as the reason the stage must stop (the first one wins).
    pub(crate) fn fail(&self, error: Error) {
        self.lock().fatal.get_or_insert(error);
    }

    /// The error the stage must stop on, once.
    pub(crate) fn take_fatal(&self) -> Option<Error> {
        self.lock().fatal.take()
    }
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
            self.health.set_down(self.id, true);
        }
        if stops_the_stage(error, reason) {
            self.fail(underlying(error, reason), reason);
        }
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
            self.health.set_down(self.id, false);
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
        Health::new(IntGaugeVec::new(Opts::new("reachable", "test"), &["cluster"]).unwrap())
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
        producer.health.set_down(producer.id, false);
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
}
