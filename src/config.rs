//! The configuration file of `ingest`, `sink` and `run`: one TOML file, every key
//! documented here, unknown keys refused, validated once at start-up with messages that
//! say what to fix. `config/pseudopipe.example.toml` shows every option and is parsed by
//! a test so it cannot rot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where ingest finds its keys. Only ingest reads it; the sink never needs keys.
    pub keys: Option<KeysConfig>,
    /// Stage 1 (on-prem): raw topic → pseudonymized topic.
    pub ingest: Option<IngestConfig>,
    /// Stage 2 (private link): pseudonymized topic → cloud topic.
    pub sink: Option<SinkConfig>,
    /// The metrics and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The keyring file (`pseudopipe keys init` creates it).
    pub keyring: PathBuf,
    /// The key-encryption key file (32 raw bytes or their base64), e.g. a Kubernetes secret mount.
    pub kek_file: PathBuf,
    /// The audit log; defaults to the keyring path plus `.audit.jsonl`.
    pub audit_log: Option<PathBuf>,
}

/// Payload formats of the raw topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
}

/// Delivery guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// No loss; after a crash, a bounded number of records may be delivered twice
    /// (byte-identical, same `event_id`).
    #[default]
    AtLeastOnce,
    /// Kafka transactions: each record reaches the output exactly once for readers with
    /// `isolation.level=read_committed` (ARCHITECTURE.md, ADR 0007).
    ExactlyOnce,
}

/// Records in flight per stage by default: enough to keep a remote link busy
/// (10,000 × ~1 KB = ~10 MB of memory at most).
fn default_max_in_flight() -> usize {
    10_000
}

/// Consumer group of ingest by default.
fn default_ingest_group() -> String {
    "pseudopipe-ingest".into()
}

/// Consumer group of the sink by default.
fn default_sink_group() -> String {
    "pseudopipe-sink".into()
}

/// Records per transaction by default (exactly once): the commit's few round trips are
/// a small share of the time, and an aborted batch is quick to do again.
fn default_transaction_max_records() -> usize {
    5_000
}

/// How long a transaction stays open by default (exactly once), in milliseconds: Kafka
/// Streams' commit interval under exactly-once.
fn default_transaction_interval_ms() -> u64 {
    100
}

/// The cloud topic that stores the sink's source offsets by default (exactly once).
fn default_offsets_topic() -> String {
    "pseudopipe.sink-offsets".into()
}

/// The metrics port registered for Prometheus exporters in the 94xx range.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Bootstrap servers of the on-prem cluster, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group; more instances in the same group share the partitions.
    #[serde(default = "default_ingest_group")]
    pub group_id: String,
    /// The raw topic retail systems produce to.
    pub input_topic: String,
    /// The pseudonymized topic the sink reads.
    pub output_topic: String,
    /// Where rejected records go, unchanged, with the reason in headers (on-prem only).
    pub quarantine_topic: String,
    /// The pseudonymization policy (TOML).
    pub policy: PathBuf,
    /// Payload format of the raw topic.
    #[serde(default)]
    pub format: Format,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight (consumed, not yet acknowledged by the output cluster).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Exactly once: most records in one transaction.
    #[serde(default = "default_transaction_max_records")]
    pub transaction_max_records: usize,
    /// Exactly once: longest a transaction stays open, in milliseconds; also how late at
    /// most a record becomes visible to `read_committed` readers.
    #[serde(default = "default_transaction_interval_ms")]
    pub transaction_interval_ms: u64,
    /// Exactly once: this instance's `transactional.id`, unique among the live instances
    /// of the group and the same across its restarts (a StatefulSet pod name), so that a
    /// restarted instance aborts at once what its previous life left open. Default
    /// `GROUP_ID.HOSTNAME`.
    pub transactional_id: Option<String>,
    /// librdkafka properties for both the consumer and the producer, passed through.
    #[serde(default)]
    pub kafka: BTreeMap<String, toml::Value>,
}

/// `[sink]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Bootstrap servers of the on-prem cluster (where the pseudonymized topic lives).
    pub source_brokers: String,
    /// The pseudonymized topic.
    pub source_topic: String,
    /// Consumer group on the on-prem cluster.
    #[serde(default = "default_sink_group")]
    pub group_id: String,
    /// Bootstrap servers of the cloud cluster.
    pub brokers: String,
    /// The cloud topic analysts read.
    pub topic: String,
    /// The policy whose output shape the leak guard enforces (the one ingest applies).
    pub policy: PathBuf,
    /// On-prem topic for records that fail the leak guard.
    pub quarantine_topic: String,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight towards the cloud.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Exactly once: a cloud topic with at least as many partitions as `source_topic`; its
    /// partition P stores, as the committed offset of the cloud group `group_id`, the next
    /// offset of source partition P, in the same transaction as the records. It holds no
    /// records; create it once (`cleanup.policy=compact`, 1 KB segments are plenty).
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// Exactly once: most records in one transaction.
    #[serde(default = "default_transaction_max_records")]
    pub transaction_max_records: usize,
    /// Exactly once: longest a transaction stays open, in milliseconds; also how late at
    /// most a record becomes visible to `read_committed` readers.
    #[serde(default = "default_transaction_interval_ms")]
    pub transaction_interval_ms: u64,
    /// librdkafka properties of the on-prem consumer (and of the quarantine producer).
    #[serde(default)]
    pub source_kafka: BTreeMap<String, toml::Value>,
    /// librdkafka properties of the cloud producer: TLS, mTLS, SASL (`security.protocol`,
    /// `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, `sasl.*`).
    #[serde(default)]
    pub kafka: BTreeMap<String, toml::Value>,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

/// librdkafka properties as strings; TOML strings, integers, floats and booleans are accepted.
pub fn kafka_properties(
    section: &str,
    table: &BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, String>> {
    table
        .iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!("`{section}.\"{key}\"` is a {}; librdkafka properties are strings, numbers or booleans", other.type_str()),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

fn require(value: &str, name: &str, hint: &str) -> Result<()> {
    if value.trim().is_empty() {
        bail!("`{name}` is empty: set it to {hint}");
    }
    Ok(())
}

fn require_file(path: &Path, name: &str) -> Result<()> {
    std::fs::metadata(path)
        .with_context(|| format!("`{name}` = {}: cannot read it", path.display()))?;
    Ok(())
}

fn require_transaction_limits(section: &str, max_records: usize, interval_ms: u64) -> Result<()> {
    if max_records == 0 {
        bail!("`{section}.transaction_max_records` is 0: set it to at least 1 (default 5000)");
    }
    if interval_ms == 0 {
        bail!("`{section}.transaction_interval_ms` is 0: set it to at least 1 (default 100)");
    }
    Ok(())
}

impl Config {
    /// Reads and parses the file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// The `[keys]` and `[ingest]` sections, validated.
    pub fn for_ingest(&self) -> Result<(&KeysConfig, &IngestConfig)> {
        let keys = self
            .keys
            .as_ref()
            .context("`[keys]` is missing: ingest needs `keyring` and `kek_file`")?;
        let ingest = self
            .ingest
            .as_ref()
            .context("`[ingest]` is missing: set brokers, topics and policy")?;
        require_file(&keys.keyring, "keys.keyring")?;
        require_file(&keys.kek_file, "keys.kek_file")?;
        require(
            &ingest.brokers,
            "ingest.brokers",
            "the on-prem bootstrap servers, e.g. \"kafka-1:9092\"",
        )?;
        require(&ingest.group_id, "ingest.group_id", "a consumer group name")?;
        require(
            &ingest.input_topic,
            "ingest.input_topic",
            "the raw topic retail systems produce to",
        )?;
        require(
            &ingest.output_topic,
            "ingest.output_topic",
            "the pseudonymized topic the sink reads",
        )?;
        require(
            &ingest.quarantine_topic,
            "ingest.quarantine_topic",
            "an on-prem topic for rejected records",
        )?;
        require_file(&ingest.policy, "ingest.policy")?;
        let topics = [
            &ingest.input_topic,
            &ingest.output_topic,
            &ingest.quarantine_topic,
        ];
        if topics[0] == topics[1] || topics[0] == topics[2] || topics[1] == topics[2] {
            bail!("`ingest.input_topic`, `output_topic` and `quarantine_topic` must be three different topics");
        }
        if ingest.max_in_flight == 0 {
            bail!("`ingest.max_in_flight` is 0: set it to at least 1 (default 10000)");
        }
        require_transaction_limits(
            "ingest",
            ingest.transaction_max_records,
            ingest.transaction_interval_ms,
        )?;
        if ingest
            .transactional_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            bail!("`ingest.transactional_id` is empty: remove it (default GROUP_ID.HOSTNAME) or name this instance");
        }
        kafka_properties("ingest.kafka", &ingest.kafka)?;
        Ok((keys, ingest))
    }

    /// The `[sink]` section, validated.
    pub fn for_sink(&self) -> Result<&SinkConfig> {
        let sink = self
            .sink
            .as_ref()
            .context("`[sink]` is missing: set source and cloud brokers, topics and policy")?;
        require(
            &sink.source_brokers,
            "sink.source_brokers",
            "the on-prem bootstrap servers",
        )?;
        require(
            &sink.source_topic,
            "sink.source_topic",
            "the pseudonymized topic ingest writes",
        )?;
        require(&sink.group_id, "sink.group_id", "a consumer group name")?;
        require(
            &sink.brokers,
            "sink.brokers",
            "the cloud bootstrap servers (through the private link)",
        )?;
        require(&sink.topic, "sink.topic", "the cloud topic analysts read")?;
        require(
            &sink.quarantine_topic,
            "sink.quarantine_topic",
            "an on-prem topic for records that fail the leak guard",
        )?;
        require_file(&sink.policy, "sink.policy")?;
        if sink.source_topic == sink.quarantine_topic {
            bail!("`sink.source_topic` and `sink.quarantine_topic` must differ");
        }
        if sink.max_in_flight == 0 {
            bail!("`sink.max_in_flight` is 0: set it to at least 1 (default 10000)");
        }
        if sink.delivery == Delivery::ExactlyOnce {
            require(
                &sink.offsets_topic,
                "sink.offsets_topic",
                "a cloud topic with as many partitions as the source topic, where the source offsets are stored",
            )?;
        }
        require_transaction_limits(
            "sink",
            sink.transaction_max_records,
            sink.transaction_interval_ms,
        )?;
        kafka_properties("sink.source_kafka", &sink.source_kafka)?;
        kafka_properties("sink.kafka", &sink.kafka)?;
        Ok(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/pseudopipe.example.toml");

    #[test]
    fn the_example_parses_with_every_section() {
        let config: Config = toml::from_str(EXAMPLE).expect("the example config parses");
        let ingest = config.ingest.unwrap();
        assert_eq!(ingest.format, Format::Json);
        assert_eq!(ingest.delivery, Delivery::AtLeastOnce);
        assert!(!ingest.kafka.is_empty());
        let sink = config.sink.unwrap();
        assert_eq!(
            kafka_properties("sink.kafka", &sink.kafka).unwrap()["security.protocol"],
            "ssl"
        );
        assert!(!sink.source_kafka.is_empty());
        assert_eq!(config.metrics.listen.port(), 9464);
        assert!(config.keys.unwrap().audit_log.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = EXAMPLE.replace(
            "group_id = \"pseudopipe-ingest\"",
            "group_id = \"pseudopipe-ingest\"\ngroup = \"x\"",
        );
        let error = toml::from_str::<Config>(&text).unwrap_err().to_string();
        assert!(error.contains("unknown field `group`"), "{error}");
    }

    #[test]
    fn empty_transactions_are_refused_with_the_setting_to_change() {
        let error = require_transaction_limits("sink", 0, 100)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`sink.transaction_max_records` is 0"),
            "{error}"
        );
        let error = require_transaction_limits("ingest", 10, 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`ingest.transaction_interval_ms` is 0"),
            "{error}"
        );
    }

    #[test]
    fn empty_topics_say_what_to_set() {
        let mut config: Config = toml::from_str(EXAMPLE).unwrap();
        config.sink.as_mut().unwrap().topic = String::new();
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/coupon_redemption.policy.toml"
        );
        config.sink.as_mut().unwrap().policy = policy.into();
        let error = config.for_sink().unwrap_err().to_string();
        assert!(
            error.contains("`sink.topic` is empty: set it to the cloud topic analysts read"),
            "{error}"
        );
    }
}
