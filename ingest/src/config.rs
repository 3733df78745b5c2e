//! `[ingest]`: what one ingest instance needs, as the config file says it. Each field's
//! doc is what `config/pseudopipe.example.toml` tells users; [`Settings::validate`] checks
//! the section once at start-up and reads its secrets, and the stage takes it as it is.

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

/// `[ingest]`. `Debug` shows no secret: `kafka` redacts them, the registry's password is a
/// [`Secret`](plumbing::secrets::Secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Bootstrap servers of the on-prem cluster, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group; more instances in the same group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// The raw topic retail systems produce to.
    pub input_topic: String,
    /// The pseudonymized topic the sink reads.
    pub output_topic: String,
    /// Where rejected records go, unchanged, with the reason in headers (on-prem only).
    pub quarantine_topic: String,
    /// The pseudonymization policy (TOML).
    pub policy: PathBuf,
    /// The Avro schema of the raw events (e.g. `schemas/coupon_redemption.avsc`), whatever
    /// `format`: at start-up, every policy rule that names no field of it is warned about
    /// by name (a typo such as `customer.emial`). None by default.
    pub schema: Option<PathBuf>,
    /// Payload format of the raw topic (and of the pseudonymized one).
    #[serde(default)]
    pub format: Format,
    /// Where Avro writer schemas come from, and where the derived ones are registered.
    #[serde(default)]
    pub schema_registry: SchemaRegistry,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight (consumed, not yet acknowledged by the output cluster).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long each cluster may take to answer at start-up before the command gives up
    /// with one line naming it (`"15s"`).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "settings::duration"
    )]
    pub connect_timeout: Duration,
    /// The liveness bound, in milliseconds: a producer that holds records and has had none
    /// acknowledged for this long, while its cluster answers, is replaced; if the new one
    /// stalls as long, the stage exits non-zero (exactly once: a transaction that cannot
    /// commit within it is aborted; a second one in a row stops the stage).
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
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
    pub kafka: KafkaProperties,
}

/// Consumer group of ingest by default.
fn default_group_id() -> String {
    "pseudopipe-ingest".into()
}

/// How ingest delivers exactly once.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    /// This instance's `transactional.id`: unique among live instances, stable across restarts.
    pub transactional_id: String,
    /// How transactions are cut.
    pub transactions: TransactionSettings,
}

impl Settings {
    /// The section checked, with its secrets read (`kafka`'s `PROPERTY_file` and
    /// `PROPERTY_env`, the registry's password); errors name the setting and say what to
    /// set, never a secret.
    pub fn validate(mut self) -> Result<Self, SettingsError> {
        require(
            &self.brokers,
            "ingest.brokers",
            "the on-prem bootstrap servers, e.g. \"kafka-1:9092\"",
        )?;
        require(&self.group_id, "ingest.group_id", "a consumer group name")?;
        require(
            &self.input_topic,
            "ingest.input_topic",
            "the raw topic retail systems produce to",
        )?;
        require(
            &self.output_topic,
            "ingest.output_topic",
            "the pseudonymized topic the sink reads",
        )?;
        require(
            &self.quarantine_topic,
            "ingest.quarantine_topic",
            "an on-prem topic for rejected records",
        )?;
        require_file(&self.policy, "ingest.policy")?;
        let topics = [
            &self.input_topic,
            &self.output_topic,
            &self.quarantine_topic,
        ];
        if topics[0] == topics[1] || topics[0] == topics[2] || topics[1] == topics[2] {
            return Err(SettingsError::Invalid("`ingest.input_topic`, `output_topic` and `quarantine_topic` must be three different topics".into()));
        }
        settings::require_relay_limits(
            "ingest",
            self.max_in_flight,
            self.stall_timeout_ms,
            self.transaction_max_records,
            self.transaction_interval_ms,
        )?;
        if self
            .transactional_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(SettingsError::Invalid("`ingest.transactional_id` is empty: remove it (default GROUP_ID.HOSTNAME) or name this instance".into()));
        }
        self.kafka = settings::resolve_properties(self.kafka, "ingest.kafka")?;
        self.schema_registry = self
            .schema_registry
            .resolve(self.format, "ingest.schema_registry")?;
        Ok(self)
    }

    /// The relay's liveness bound.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// Avro in the Confluent wire format with the schemas of this registry; `None` for JSON.
    pub fn registry(&self) -> Option<RegistrySettings> {
        self.schema_registry.settings(self.format)
    }

    /// Exactly once (Kafka transactions) when `delivery` says so; at least once otherwise.
    pub fn exactly_once(&self) -> Option<ExactlyOnce> {
        (self.delivery == Delivery::ExactlyOnce).then(|| ExactlyOnce {
            transactional_id: self.instance(),
            transactions: TransactionSettings {
                max_records: self.transaction_max_records,
                max_duration: Duration::from_millis(self.transaction_interval_ms),
                ..TransactionSettings::default()
            },
        })
    }

    /// How audit entries name this instance: its `transactional.id` (exactly once), or
    /// its group and host.
    pub fn instance(&self) -> String {
        match (&self.transactional_id, self.delivery) {
            (Some(id), Delivery::ExactlyOnce) => id.clone(),
            _ => format!("{}.{}", self.group_id, hostname()),
        }
    }
}

/// This machine's name (a Kubernetes pod's name), for a default `transactional.id`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
