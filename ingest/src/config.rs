//! What ingest needs to run, already validated by the binary's configuration loader.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use formats::RegistrySettings;
use plumbing::secrets::Redacted;
use plumbing::TransactionSettings;

/// Settings of one ingest instance. `Debug` redacts the secret librdkafka properties.
#[derive(Clone)]
pub struct Settings {
    /// On-prem bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// The raw topic.
    pub input_topic: String,
    /// The pseudonymized topic.
    pub output_topic: String,
    /// The on-prem quarantine topic.
    pub quarantine_topic: String,
    /// Most records in flight.
    pub max_in_flight: usize,
    /// The liveness bound (plumbing's `RelaySettings::stall_timeout`).
    pub stall_timeout: Duration,
    /// librdkafka properties for the consumer and the producer.
    pub kafka: BTreeMap<String, String>,
    /// Exactly once when set (Kafka transactions), at least once otherwise.
    pub exactly_once: Option<ExactlyOnce>,
    /// Avro in the Confluent wire format, with the schemas of this registry, when set;
    /// JSON otherwise.
    pub avro: Option<RegistrySettings>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("input_topic", &self.input_topic)
            .field("output_topic", &self.output_topic)
            .field("quarantine_topic", &self.quarantine_topic)
            .field("max_in_flight", &self.max_in_flight)
            .field("stall_timeout", &self.stall_timeout)
            .field("kafka", &Redacted(&self.kafka))
            .field("exactly_once", &self.exactly_once)
            .field("avro", &self.avro)
            .finish()
    }
}

/// How ingest delivers exactly once.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    /// This instance's `transactional.id`: unique among live instances, stable across restarts.
    pub transactional_id: String,
    /// How transactions are cut.
    pub transactions: TransactionSettings,
}
