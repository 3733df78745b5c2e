//! `pseudopipe ingest|sink|run --config FILE`: load and validate the configuration, check
//! that the clusters answer and the topics exist, start the metrics server, run the
//! stage(s) until SIGTERM/SIGINT, and drain and commit before exiting.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context as _, Result};
use ingest::{AuditMirror, Bridge, IngestKeys, KeySettings, LiveKeys};
use plumbing::probe::Target;
use plumbing::prometheus::Registry;
use plumbing::{Shutdown, StageMetrics};
use pseudonymize::{LeakGuard, Policy};

use crate::config::{Config, KeysConfig};
use crate::keys::read_kek;
use crate::server::{self, Readiness};

/// Which stages a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// `ingest`
    Ingest,
    /// `sink`
    Sink,
    /// `run`: both.
    Both,
}

/// Checks that the cluster of `target` answers and every topic exists, with a message
/// that says what to fix.
pub async fn check_cluster(
    target: plumbing::probe::Target<'_>,
    properties: &BTreeMap<String, String>,
    topics: &[&str],
) -> Result<Vec<usize>> {
    let (option, brokers) = (target.option, target.brokers);
    let (timeout_option, timeout) = (target.timeout_option.to_owned(), target.timeout);
    let (option_owned, brokers_owned) = (option.to_owned(), brokers.to_owned());
    let properties = properties.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        let target = plumbing::probe::Target {
            option: &option_owned,
            brokers: &brokers_owned,
            timeout_option: &timeout_option,
            timeout,
        };
        plumbing::probe::metadata(target, &properties, None)
    })
    .await
    .expect("the metadata task does not panic")?;
    topics
        .iter()
        .map(|topic| {
            let found = metadata.topics().iter().find(|t| t.name() == *topic);
            match found {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
                _ => bail!("topic `{topic}` does not exist on `{option}` = \"{brokers}\": create it, or fix the topic name in the config"),
            }
        })
        .collect()
}

/// Warns, by path, about every rule of the policy at `policy` that names no field of the
/// Avro schema at `schema` (`[ingest] schema`): a typo leaves the field it meant without
/// a rule, and every event carrying it is quarantined as `unknown_field`.
fn check_policy_against(policy: &Path, schema: &Path) -> Result<()> {
    let rules = Policy::from_file(policy)?;
    let text = std::fs::read_to_string(schema)
        .with_context(|| format!("`ingest.schema` = {}: cannot read it", schema.display()))?;
    let writer = pseudonymize::avro_schema::Schema::parse_str(&text).with_context(|| {
        format!(
            "`ingest.schema` = {}: not a valid Avro schema",
            schema.display()
        )
    })?;
    let command = format!(
        "pseudopipe schema check --policy {} --schema {}",
        policy.display(),
        schema.display()
    );
    for path in pseudonymize::avro_schema::rules_without_field(&rules, &writer) {
        tracing::warn!(
            path,
            schema = %schema.display(),
            "Policy rule names no field of the schema (a typo leaves the field it meant without a rule, and its events quarantined as unknown_field): check with `{command}`."
        );
    }
    Ok(())
}

/// Opens the keyring with its KEK, verifies its audit log and builds the live keys of an
/// ingest instance named `instance`.
pub fn open_keys(
    keys: &KeysConfig,
    policy: &Path,
    input_topic: &str,
    instance: &str,
    registry: &Registry,
) -> Result<LiveKeys> {
    let policy = Policy::from_file(policy)?;
    let kek = read_kek(&keys.kek_file)?;
    // The keys in use must have an intact audit trail behind them: a tampered or truncated
    // log stops ingest before it produces a single token.
    let settings = KeySettings {
        keyring: keys.keyring.clone(),
        audit_log: crate::keys::audit_path(&keys.keyring, keys.audit_log.as_ref()),
        check_every: keys.check_interval,
        rotate_every: keys.rotate_every,
        bridge_overlap: keys.bridge_overlap,
        instance: instance.to_owned(),
        input_topic: input_topic.to_owned(),
    };
    let live = LiveKeys::open(settings, kek, policy, registry).map_err(anyhow::Error::msg)?;
    tracing::info!(keyring = %keys.keyring.display(), "Keyring opened and its audit log verified.");
    Ok(live)
}

/// The on-prem topics ingest writes about its keys, besides its own: the audit mirror's
/// and, with an overlap, the bridge's.
fn side_topics(keys: &KeysConfig) -> Vec<&str> {
    let mut topics = Vec::new();
    if !keys.audit_topic.is_empty() {
        topics.push(keys.audit_topic.as_str());
    }
    if keys.bridge_overlap.is_some() {
        topics.push(keys.bridge_topic.as_str());
    }
    topics
}

/// The bridge and the audit mirror of an ingest, once its cluster answers.
fn side_outputs(
    keys: &KeysConfig,
    settings: &ingest::Settings,
    registry: &Registry,
) -> Result<(Option<Bridge>, Option<AuditMirror>)> {
    // The side clients serve no health or lag metric: without statistics, their contexts
    // have nothing to log (rdkafka's default context logs each statistics report whole).
    let quiet = |mut config: plumbing::rdkafka::ClientConfig| {
        config.set("statistics.interval.ms", "0");
        config
    };
    let producer = quiet(plumbing::config::producer(
        &settings.brokers,
        &settings.kafka,
    )?);
    let bridge = match keys.bridge_overlap {
        Some(_) => {
            Some(Bridge::new(&producer, &keys.bridge_topic, registry).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let mirror = if keys.audit_topic.is_empty() {
        None
    } else {
        let reader = quiet(plumbing::config::consumer(
            &settings.brokers,
            &format!("{}.audit-mirror", settings.group_id),
            &settings.kafka,
        )?);
        Some(
            AuditMirror::start(
                &producer,
                &reader,
                &keys.audit_topic,
                crate::keys::audit_path(&keys.keyring, keys.audit_log.as_ref()),
                registry,
            )
            .map_err(anyhow::Error::msg)?,
        )
    };
    Ok((bridge, mirror))
}

/// Runs the stages of `stages` from the config file at `path` until a signal.
pub async fn run(path: &Path, stages: Stages) -> Result<ExitCode> {
    let config = Config::from_file(path)?;
    let metrics_config = config.metrics()?;
    let (listen, linger) = (metrics_config.listen, metrics_config.linger_after_failure);
    let registry = Registry::new();
    let readiness = Readiness::default();
    let shutdown = Shutdown::on_signals();

    // Validate everything before touching a cluster: a bad config fails in milliseconds.
    let ingest_part = match stages {
        Stages::Ingest | Stages::Both => {
            let (keys, settings) = config.for_ingest()?;
            if let Some(schema) = &settings.schema {
                check_policy_against(&settings.policy, schema)?;
            }
            let live = open_keys(
                &keys,
                &settings.policy,
                &settings.input_topic,
                &settings.instance(),
                &registry,
            )?;
            Some((settings, keys, live))
        }
        Stages::Sink => None,
    };
    let sink_part = match stages {
        Stages::Sink | Stages::Both => {
            let settings = config.for_sink()?;
            let guard = LeakGuard::new(Policy::from_file(&settings.policy)?);
            Some((settings, guard))
        }
        Stages::Ingest => None,
    };

    // The server outlives the stages by `linger_after_failure` when one fails.
    let server_stop = Shutdown::new();
    let server_shutdown = server_stop.clone();
    let server = server::serve(listen, registry.clone(), readiness.clone(), async move {
        server_shutdown.triggered().await
    })
    .await?;
    tracing::info!(listen = %listen, "Serving /metrics, /healthz and /readyz.");

    let ingest_part = match ingest_part {
        Some((settings, keys, live)) => {
            let ready = readiness.dependency("on-prem cluster (ingest)");
            let mut topics = vec![
                settings.input_topic.as_str(),
                &settings.output_topic,
                &settings.quarantine_topic,
            ];
            topics.extend(side_topics(&keys));
            let target = Target {
                option: "ingest.brokers",
                brokers: &settings.brokers,
                timeout_option: "ingest.connect_timeout",
                timeout: settings.connect_timeout,
            };
            check_cluster(target, &settings.kafka, &topics).await?;
            let (bridge, mirror) = side_outputs(&keys, &settings, &registry)?;
            ready.store(true, Ordering::Relaxed);
            let risk = ingest::RiskWatch::for_policy(live.engine().policy(), &registry)?;
            Some((
                settings,
                IngestKeys {
                    live,
                    bridge,
                    mirror,
                    risk,
                },
            ))
        }
        None => None,
    };
    if let Some((settings, _)) = &sink_part {
        let ready = readiness.dependency("on-prem cluster (sink)");
        let target = |option, brokers| Target {
            option,
            brokers,
            timeout_option: "sink.connect_timeout",
            timeout: settings.connect_timeout,
        };
        let source = check_cluster(
            target("sink.source_brokers", &settings.source_brokers),
            &settings.source_kafka,
            &[&settings.source_topic, &settings.quarantine_topic],
        )
        .await?;
        ready.store(true, Ordering::Relaxed);
        let ready = readiness.dependency("cloud cluster");
        let mut cloud_topics = vec![settings.topic.as_str()];
        let exactly_once = settings.exactly_once();
        cloud_topics.extend(exactly_once.as_ref().map(|e| e.offsets_topic.as_str()));
        let cloud = check_cluster(
            target("sink.brokers", &settings.brokers),
            &settings.kafka,
            &cloud_topics,
        )
        .await?;
        if let (Some(exactly_once), Some(&offsets_partitions)) = (&exactly_once, cloud.get(1)) {
            if offsets_partitions < source[0] {
                bail!(
                    "`sink.offsets_topic` `{}` has {offsets_partitions} partitions on the cloud cluster and `sink.source_topic` has {}: \
                     add partitions to the offsets topic (it stores one source offset per partition)",
                    exactly_once.offsets_topic,
                    source[0]
                );
            }
        }
        ready.store(true, Ordering::Relaxed);
    }

    let mut tasks = tokio::task::JoinSet::new();
    if let Some((settings, keys)) = ingest_part {
        let metrics = StageMetrics::new(&registry, "ingest")?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            (
                "ingest",
                ingest::run(settings, keys, metrics, shutdown).await,
            )
        });
    }
    if let Some((settings, guard)) = sink_part {
        let metrics = StageMetrics::new(&registry, "sink")?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { ("sink", sink::run(settings, guard, metrics, shutdown).await) });
    }
    tracing::info!(?stages, "Pipeline started.");

    let mut failed = false;
    while let Some(joined) = tasks.join_next().await {
        let (stage, result) = joined.context("a stage task panicked")?;
        match result {
            Ok(report) => tracing::info!(
                stage,
                %report,
                "Stage stopped after draining and committing."
            ),
            Err(error) => {
                tracing::error!(stage, %error, "Stage failed.");
                failed = true;
            }
        }
        // One stage ending (by error or shutdown) stops the other: never run half a pipeline silently.
        shutdown.trigger();
    }
    shutdown.trigger();
    if failed && !linger.is_zero() {
        // Not ready any more; still scraped, so that what made it fail is seen.
        readiness.dependency("a stage that did not fail");
        tracing::info!(
            linger_seconds = linger.as_secs(),
            "Serving /metrics a while longer before exiting ([metrics] linger_after_failure)."
        );
        tokio::time::sleep(linger).await;
    }
    server_stop.trigger();
    let _ = server.await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
