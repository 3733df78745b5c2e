//! What the sink needs to run, already validated by the binary's configuration loader.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use formats::RegistrySettings;
use plumbing::secrets::Redacted;
use plumbing::TransactionSettings;

/// Settings of one sink instance. `Debug` redacts the secret librdkafka properties.
#[derive(Clone)]
pub struct Settings {
    /// On-prem bootstrap servers (the pseudonymized topic and the quarantine topic).
    pub source_brokers: String,
    /// The pseudonymized topic.
    pub source_topic: String,
    /// Consumer group on the on-prem cluster.
    pub group_id: String,
    /// Cloud bootstrap servers.
    pub brokers: String,
    /// The cloud topic.
    pub topic: String,
    /// On-prem topic for records that fail the leak guard.
    pub quarantine_topic: String,
    /// Most records in flight towards the cloud.
    pub max_in_flight: usize,
    /// The liveness bound (plumbing's `RelaySettings::stall_timeout`).
    pub stall_timeout: Duration,
    /// librdkafka properties of the on-prem consumer and quarantine producer.
    pub source_kafka: BTreeMap<String, String>,
    /// librdkafka properties of the cloud producer (TLS, SASL...).
    pub kafka: BTreeMap<String, String>,
    /// Exactly once when set (Kafka transactions on the cloud cluster, the source offsets
    /// stored there under `group_id`), at least once otherwise.
    pub exactly_once: Option<ExactlyOnce>,
    /// Avro in the Confluent wire format, judged with the schemas of this registry, when
    /// set; JSON otherwise.
    pub avro: Option<RegistrySettings>,
    /// Avro: the cloud's schema registry, where the derived schemas are registered under
    /// `topic`'s subject and whose ids the forwarded records carry; without it the
    /// on-prem ids cross unchanged.
    pub cloud_registry: Option<RegistrySettings>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("source_brokers", &self.source_brokers)
            .field("source_topic", &self.source_topic)
            .field("group_id", &self.group_id)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("quarantine_topic", &self.quarantine_topic)
            .field("max_in_flight", &self.max_in_flight)
            .field("stall_timeout", &self.stall_timeout)
            .field("source_kafka", &Redacted(&self.source_kafka))
            .field("kafka", &Redacted(&self.kafka))
            .field("exactly_once", &self.exactly_once)
            .field("avro", &self.avro)
            .field("cloud_registry", &self.cloud_registry)
            .finish()
    }
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
