//! The metrics and health endpoint: `/metrics` (Prometheus text format), `/healthz`
//! (the process is up) and `/readyz`: 200 once every cluster the process needs has
//! answered at start-up, 503 naming why while one is unreachable since
//! (`pseudopipe_cluster_reachable` 0) or a partition is stalled
//! (`pseudopipe_partition_stalled` 1), and 200 again once that is over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder as _, Registry, TextEncoder};

/// A dependency's name and whether it has answered.
type Check = (&'static str, Arc<AtomicBool>);

/// Readiness: one flag per cluster the process depends on.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<std::sync::Mutex<Vec<Check>>>,
}

impl Readiness {
    /// Registers a dependency (a cluster checked at start-up), not ready until its flag is set.
    pub fn dependency(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks
            .lock()
            .expect("readiness lock is never poisoned: no panic while held")
            .push((name, flag.clone()));
        flag
    }

    /// The dependencies that have not answered yet.
    pub fn pending(&self) -> Vec<&'static str> {
        let checks = self
            .checks
            .lock()
            .expect("readiness lock is never poisoned: no panic while held");
        checks
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {error}"),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let reasons = unready(&state.registry, &state.readiness);
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n- {}\n", reasons.join("\n- ")),
        )
    }
}

/// Why the process is not ready, one line per reason; empty when it is. The stages'
/// gauges are the source: what `/readyz` says, the metrics say too.
fn unready(registry: &Registry, readiness: &Readiness) -> Vec<String> {
    let mut reasons: Vec<String> = readiness
        .pending()
        .into_iter()
        .map(|name| format!("waiting for the {name} to answer"))
        .collect();
    for family in registry.gather() {
        let stalled = family.name() == "pseudopipe_partition_stalled";
        let reachable = family.name() == "pseudopipe_cluster_reachable";
        let delivering = family.name() == "pseudopipe_delivery_stalled";
        if !stalled && !reachable && !delivering {
            continue;
        }
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|pair| pair.name() == name)
                    .map_or("", |pair| pair.value())
            };
            let value = metric.get_gauge().get_value();
            if stalled && value != 0.0 {
                reasons.push(format!(
                    "{}: partition {}/{} is stalled: a record failed permanently (see the log line \"Delivery failed permanently\"); fix the cause and restart the stage",
                    label("stage"),
                    label("topic"),
                    label("partition")
                ));
            }
            if delivering && value != 0.0 {
                reasons.push(format!(
                    "{}: deliveries to the {} have stalled: records wait and none was acknowledged within `stall_timeout_ms`; the stage replaces its producer, then exits if that does not help",
                    label("stage"),
                    cluster_name(label("stage"), label("cluster"))
                ));
            }
            if reachable && value == 0.0 {
                reasons.push(format!(
                    "{}: the {} is unreachable (all brokers down); it is ready again once a broker answers",
                    label("stage"),
                    cluster_name(label("stage"), label("cluster"))
                ));
            }
        }
    }
    reasons
}

/// A stage's cluster in the operator's words, with the setting that names it.
fn cluster_name(stage: &str, cluster: &str) -> String {
    match (stage, cluster) {
        ("sink", "output") => "cloud cluster (`sink.brokers`)".to_owned(),
        ("sink", _) => "on-prem cluster (`sink.source_brokers`)".to_owned(),
        ("ingest", _) => "on-prem cluster (`ingest.brokers`)".to_owned(),
        (_, cluster) => format!("{cluster} cluster"),
    }
}

/// Binds `listen` and serves until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on `metrics.listen` = {listen}: is another process using it?")
        })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry,
            readiness,
        });
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "The metrics server stopped.");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumbing::StageMetrics;

    #[test]
    fn ready_once_started_unready_while_a_partition_stalls_or_a_cluster_is_lost() {
        let registry = Registry::new();
        let readiness = Readiness::default();
        let sink = StageMetrics::new(&registry, "sink").unwrap();
        let started = readiness.dependency("cloud cluster");
        assert_eq!(
            unready(&registry, &readiness),
            ["waiting for the cloud cluster to answer"]
        );
        started.store(true, Ordering::Relaxed);
        assert!(unready(&registry, &readiness).is_empty());

        let stalled = sink
            .partition_stalled
            .with_label_values(&["redemptions.pseudonymized", "2"]);
        stalled.set(1);
        let lost = sink.cluster_reachable.with_label_values(&["output"]);
        lost.set(0);
        let reasons = unready(&registry, &readiness);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].starts_with("sink: the cloud cluster (`sink.brokers`) is unreachable"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].starts_with("sink: partition redemptions.pseudonymized/2 is stalled"),
            "{reasons:?}"
        );

        stalled.set(0);
        lost.set(1);
        assert!(unready(&registry, &readiness).is_empty());
    }
}
