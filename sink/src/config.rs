//! `[sink]`: what one sink instance needs, as the config file says it. Each field's doc
//! is what `config/pseudopipe.example.toml` tells users; [`Settings::validate`] checks the
//! section once at start-up and reads its secrets, and the stage takes it as it is.

use std::path::PathBuf;
use std::time::Duration;

use formats::settings::{Format, SchemaRegistry};
use formats::RegistrySettings;
use plumbing::secrets::KafkaProperties;
use plumbing::settings::{
    self, default_connect_timeout, default_max_in_flight, default_stall_timeout_ms,
    default_transaction_interval_ms, default_transaction_max_records, require, require_file,
    Delivery, SettingsError,
};
use plumbing::TransactionSettings;
use serde::Deserialize;

/// `[sink]`. `Debug` shows no secret: the librdkafka tables redact them, the registries'
/// passwords are [`Secret`](plumbing::secrets::Secret)s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Bootstrap servers of the on-prem cluster (where the pseudonymized topic lives).
    pub source_brokers: String,
    /// The pseudonymized topic.
    pub source_topic: String,
    /// Consumer group on the on-prem cluster.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Bootstrap servers of the cloud cluster.
    pub brokers: String,
    /// The cloud topic analysts read.
    pub topic: String,
    /// The policy whose output shape the leak guard enforces (the one ingest applies).
    pub policy: PathBuf,
    /// On-prem topic for records that fail the leak guard.
    pub quarantine_topic: String,
    /// Payload format of the pseudonymized topic (ingest's `format`).
    #[serde(default)]
    pub format: Format,
    /// Where Avro writer schemas come from (the registry ingest registers with).
    #[serde(default)]
    pub schema_registry: SchemaRegistry,
    /// Avro: the cloud's schema registry, reached through the link; the derived schemas
    /// are registered there under `topic`'s subject and the records carry its ids. Without
    /// it, the on-prem ids cross unchanged.
    pub cloud_schema_registry: Option<SchemaRegistry>,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight towards the cloud.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long each cluster may take to answer at start-up before the command gives up
    /// with one line naming it (`"15s"`).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "settings::duration"
    )]
    pub connect_timeout: Duration,
    /// The liveness bound, in milliseconds (see `ingest.stall_timeout_ms`).
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
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
    pub source_kafka: KafkaProperties,
    /// librdkafka properties of the cloud producer: TLS, mTLS, SASL (`security.protocol`,
    /// `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, `sasl.*`).
    #[serde(default)]
    pub kafka: KafkaProperties,
}

/// Consumer group of the sink by default.
fn default_group_id() -> String {
    "pseudopipe-sink".into()
}

/// The cloud topic that stores the sink's source offsets by default (exactly once).
fn default_offsets_topic() -> String {
    "pseudopipe.sink-offsets".into()
}

/// How the sink delivers exactly once.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    /// The cloud topic whose partition P stores, as the committed offset of the cloud
    /// group `group_id`, the next offset of source partition P. At least as many
    /// partitions as the source topic; it holds no records.
    pub offsets_topic: String,
    /// How transactions are cut.
    pub transactions: TransactionSettings,
}

impl Settings {
    /// The section checked, with its secrets read (the librdkafka tables' `PROPERTY_file`
    /// and `PROPERTY_env`, the registries' passwords); errors name the setting and say
    /// what to set, never a secret.
    pub fn validate(mut self) -> Result<Self, SettingsError> {
        require(
            &self.source_brokers,
            "sink.source_brokers",
            "the on-prem bootstrap servers",
        )?;
        require(
            &self.source_topic,
            "sink.source_topic",
            "the pseudonymized topic ingest writes",
        )?;
        require(&self.group_id, "sink.group_id", "a consumer group name")?;
        require(
            &self.brokers,
            "sink.brokers",
            "the cloud bootstrap servers (through the private link)",
        )?;
        require(&self.topic, "sink.topic", "the cloud topic analysts read")?;
        require(
            &self.quarantine_topic,
            "sink.quarantine_topic",
            "an on-prem topic for records that fail the leak guard",
        )?;
        require_file(&self.policy, "sink.policy")?;
        if self.source_topic == self.quarantine_topic {
            return Err(SettingsError::Invalid(
                "`sink.source_topic` and `sink.quarantine_topic` must differ".into(),
            ));
        }
        if self.delivery == Delivery::ExactlyOnce {
            require(
                &self.offsets_topic,
                "sink.offsets_topic",
                "a cloud topic with as many partitions as the source topic, where the source offsets are stored",
            )?;
        }
        settings::require_relay_limits(
            "sink",
            self.max_in_flight,
            self.stall_timeout_ms,
            self.transaction_max_records,
            self.transaction_interval_ms,
        )?;
        self.source_kafka = settings::resolve_properties(self.source_kafka, "sink.source_kafka")?;
        self.kafka = settings::resolve_properties(self.kafka, "sink.kafka")?;
        self.schema_registry = self
            .schema_registry
            .resolve(self.format, "sink.schema_registry")?;
        self.cloud_schema_registry = self
            .cloud_schema_registry
            .map(|cloud| cloud.resolve(self.format, "sink.cloud_schema_registry"))
            .transpose()?;
        Ok(self)
    }

    /// The relay's liveness bound.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// Avro in the Confluent wire format, judged with the schemas of this registry;
    /// `None` for JSON.
    pub fn registry(&self) -> Option<RegistrySettings> {
        self.schema_registry.settings(self.format)
    }

    /// Avro: the cloud's registry, where the derived schemas are registered under
    /// `topic`'s subject and whose ids the forwarded records carry; without it the
    /// on-prem ids cross unchanged.
    pub fn cloud_registry(&self) -> Option<RegistrySettings> {
        self.cloud_schema_registry
            .as_ref()
            .and_then(|cloud| cloud.settings(self.format))
    }

    /// Exactly once (Kafka transactions on the cloud cluster, the source offsets stored
    /// there under `group_id`) when `delivery` says so; at least once otherwise.
    pub fn exactly_once(&self) -> Option<ExactlyOnce> {
        (self.delivery == Delivery::ExactlyOnce).then(|| ExactlyOnce {
            offsets_topic: self.offsets_topic.clone(),
            transactions: TransactionSettings {
                max_records: self.transaction_max_records,
                max_duration: Duration::from_millis(self.transaction_interval_ms),
                ..TransactionSettings::default()
            },
        })
    }
}
