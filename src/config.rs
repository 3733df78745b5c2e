//! The configuration file of `ingest`, `sink` and `run`: one TOML file, every key
//! documented here, unknown keys refused, validated once at start-up with messages that
//! say what to fix. `config/pseudopipe.example.toml` shows every option and is parsed by
//! a test so it cannot rot.
//!
//! Each command interprets only the sections it needs: `ingest` reads `[keys]` and
//! `[ingest]` and never looks at `[sink]` (nor reads its secret files); `sink` reads
//! `[sink]` and never looks at `[keys]`, so one file can configure both stages while each
//! process sees only its own secrets. Secret librdkafka properties can come from a file
//! or an environment variable (`"sasl.password_file" = "/run/secrets/..."`,
//! `"sasl.password_env" = "VAR"`; see [`plumbing::secrets`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The top-level sections a config file may have.
const SECTIONS: [&str; 4] = ["keys", "ingest", "sink", "metrics"];

/// A config file, read and checked for unknown sections, but each section interpreted
/// only when a command asks for it. No `Debug`: the file may hold inline secrets.
pub struct Config {
    /// Where it was read from, for messages.
    origin: String,
    /// The top-level sections, as TOML.
    sections: toml::Table,
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
    /// How often a running ingest looks at the keyring file for changes (`"5s"`).
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: std::time::Duration,
    /// Rotate each tenant's active version once it is this old (`"90d"`); none by default.
    #[serde(default, deserialize_with = "optional_duration")]
    pub rotate_every: Option<std::time::Duration>,
    /// After a rotation, pair old and new tokens on `bridge_topic` for this long (`"7d"`);
    /// no bridge by default.
    #[serde(default, deserialize_with = "optional_duration")]
    pub bridge_overlap: Option<std::time::Duration>,
    /// The on-prem topic of the rotation bridge.
    #[serde(default = "default_bridge_topic")]
    pub bridge_topic: String,
    /// The on-prem topic the audit log is mirrored to; `""` turns mirroring off.
    #[serde(default = "default_audit_topic")]
    pub audit_topic: String,
    /// Whether `lookup` and `subject` need `--ticket` (the reference of the request they
    /// answer); `false` makes it optional for a site without tickets. `reidentify` always
    /// needs one.
    #[serde(default = "default_require_ticket")]
    pub require_ticket: bool,
}

fn default_require_ticket() -> bool {
    true
}

fn default_check_interval() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

/// Long enough for a cluster that is starting (a KRaft broker elects its controller in a
/// few seconds), short enough that a wrong address fails before an operator wonders.
fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(15)
}

fn default_bridge_topic() -> String {
    "pseudopipe.bridge".to_owned()
}

fn default_audit_topic() -> String {
    "pseudopipe.audit".to_owned()
}

/// `"500ms"`, `"5s"`, `"30m"`, `"12h"`, `"90d"`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. \"90d\""))?;
    let seconds = |factor: u64| std::time::Duration::from_secs(number.saturating_mul(factor));
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(number)),
        "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!(
            "`{text}` has no known unit: use ms, s, m, h or d, e.g. \"90d\""
        )),
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<std::time::Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Payload formats of the raw topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro in Confluent's wire format (magic byte 0, 4-byte schema id, binary datum),
    /// with the writer schemas of `schema_registry`.
    Avro,
}

/// `[ingest.schema_registry]` / `[sink.schema_registry]`: where Avro writer schemas come
/// from (no `Debug`: it may hold a password).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// The registry's Confluent-compatible base URL (Apicurio: `.../apis/ccompat/v7`).
    pub url: Option<String>,
    /// Offline instead: a directory of `ID.avsc` files.
    pub directory: Option<PathBuf>,
    /// HTTP basic authentication.
    pub username: Option<String>,
    /// Its password, inline (prefer `password_file` or `password_env`).
    pub password: Option<String>,
    /// A file holding the password (one trailing newline trimmed).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM certificate authorities for an `https` registry (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// How long one request may take.
    #[serde(default = "default_registry_timeout", deserialize_with = "duration")]
    pub timeout: std::time::Duration,
}

fn default_registry_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl SchemaRegistryConfig {
    /// The registry settings of `format` (none for JSON); `section` names the table in
    /// errors.
    pub fn settings(
        &self,
        format: Format,
        section: &str,
    ) -> Result<Option<formats::RegistrySettings>> {
        if format == Format::Json {
            return Ok(None);
        }
        if self.url.is_some() == self.directory.is_some() {
            bail!("`[{section}]`: format = \"avro\" needs either `url` (a schema registry) or `directory` (offline `ID.avsc` files)");
        }
        let password = match (&self.password, &self.password_file, &self.password_env) {
            (None, None, None) => None,
            (Some(password), None, None) => Some(password.clone()),
            (None, Some(file), None) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| {
                        format!(
                            "`[{section}]` password_file = {}: cannot read it",
                            file.display()
                        )
                    })?
                    .trim_end_matches('\n')
                    .to_owned(),
            ),
            (None, None, Some(variable)) => Some(std::env::var(variable).with_context(|| {
                format!("`[{section}]` password_env = {variable:?}: the variable is not set")
            })?),
            _ => bail!(
                "`[{section}]`: give the password once (password, password_file or password_env)"
            ),
        };
        Ok(Some(formats::RegistrySettings {
            url: self.url.clone(),
            directory: self.directory.clone(),
            username: self.username.clone(),
            password,
            ca_file: self.ca_file.clone(),
            timeout: self.timeout,
        }))
    }
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
    /// `isolation.level=read_committed` (docs/architecture.md, ADR 0007).
    ExactlyOnce,
}

/// Records in flight per stage by default: enough to keep a remote link busy
/// (10,000 × ~1 KB = ~10 MB of memory at most).
fn default_max_in_flight() -> usize {
    10_000
}

/// The liveness bound by default, in milliseconds: a producer that holds records and has
/// had none acknowledged for this long while its cluster answers is replaced (plumbing's
/// `RelaySettings::stall_timeout`); well under the producers' two-minute
/// `message.timeout.ms`, and longer than a broker's restart.
fn default_stall_timeout_ms() -> u64 {
    u64::try_from(plumbing::relay::DEFAULT_STALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
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

/// `[ingest]` (no `Debug`: `kafka` may hold inline secrets)
#[derive(Deserialize)]
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
    /// The Avro schema of the raw events (e.g. `schemas/coupon_redemption.avsc`), whatever
    /// `format`: at start-up, every policy rule that names no field of it is warned about
    /// by name (a typo such as `customer.emial`). None by default.
    pub schema: Option<PathBuf>,
    /// Payload format of the raw topic (and of the pseudonymized one).
    #[serde(default)]
    pub format: Format,
    /// Where Avro writer schemas come from, and where the derived ones are registered.
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight (consumed, not yet acknowledged by the output cluster).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long each cluster may take to answer at start-up before the command gives up
    /// with one line naming it (`"15s"`).
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: std::time::Duration,
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
    pub kafka: BTreeMap<String, toml::Value>,
}

/// `[sink]` (no `Debug`: the librdkafka tables may hold inline secrets)
#[derive(Deserialize)]
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
    /// Payload format of the pseudonymized topic (ingest's `format`).
    #[serde(default)]
    pub format: Format,
    /// Where Avro writer schemas come from (the registry ingest registers with).
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    /// Avro: the cloud's schema registry, reached through the link; the derived schemas
    /// are registered there under `topic`'s subject and the records carry its ids. Without
    /// it, the on-prem ids cross unchanged.
    pub cloud_schema_registry: Option<SchemaRegistryConfig>,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Most records in flight towards the cloud.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long each cluster may take to answer at start-up before the command gives up
    /// with one line naming it (`"15s"`).
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: std::time::Duration,
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
    /// How long a failed process keeps serving `/metrics` (and `/readyz`, 503) before it
    /// exits, so that Prometheus scrapes what made it fail (`pseudopipe_audit_verified`
    /// 0, say). Default: no wait.
    #[serde(default, deserialize_with = "duration")]
    pub linger_after_failure: std::time::Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            linger_after_failure: std::time::Duration::ZERO,
        }
    }
}

/// librdkafka properties as strings (TOML strings, integers, floats and booleans are
/// accepted), with every `PROPERTY_file` / `PROPERTY_env` of a secret property replaced by
/// the secret it names. Errors name the property and the file or variable, never a value.
pub fn kafka_properties(
    section: &str,
    table: &BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, String>> {
    let properties = table
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
        .collect::<Result<_>>()?;
    plumbing::secrets::resolve(properties).with_context(|| format!("`[{section}]`"))
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

fn require_stall_timeout(section: &str, stall_timeout_ms: u64) -> Result<()> {
    if stall_timeout_ms < 1_000 {
        bail!("`{section}.stall_timeout_ms` is {stall_timeout_ms}: set it to at least 1000 (default 30000), longer than a broker's restart takes");
    }
    Ok(())
}

impl Config {
    /// Reads the file and parses it as TOML; a top-level section other than `[keys]`,
    /// `[ingest]`, `[sink]` and `[metrics]` is an error. The sections themselves are
    /// checked by [`Config::for_ingest`], [`Config::for_sink`] and [`Config::metrics`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text, &format!("config file {}", path.display()))
    }

    /// Parses `text`; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let sections: toml::Table = toml::from_str(text).with_context(|| origin.to_owned())?;
        if let Some(unknown) = sections
            .keys()
            .find(|key| !SECTIONS.contains(&key.as_str()))
        {
            bail!(
                "{origin}: unknown section `[{unknown}]`: the sections are `[{}]`",
                SECTIONS.join("]`, `[")
            );
        }
        Ok(Self {
            origin: origin.to_owned(),
            sections,
        })
    }

    /// Interprets one section, if present; unknown keys in it are errors.
    fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.sections
            .get(name)
            .map(|value| {
                T::deserialize(value.clone())
                    .with_context(|| format!("{}: section `[{name}]`", self.origin))
            })
            .transpose()
    }

    /// `[keys] require_ticket`, checked with the rest of `[keys]` (not its files); `true`
    /// without a `[keys]` section.
    pub fn require_ticket(&self) -> Result<bool> {
        Ok(self
            .section::<KeysConfig>("keys")?
            .is_none_or(|keys| keys.require_ticket))
    }

    /// The `[metrics]` section, or its defaults.
    pub fn metrics(&self) -> Result<MetricsConfig> {
        Ok(self.section("metrics")?.unwrap_or_default())
    }

    /// The `[keys]` and `[ingest]` sections, validated (secret files included). `[sink]`
    /// is not looked at.
    pub fn for_ingest(&self) -> Result<(KeysConfig, IngestConfig)> {
        let keys: KeysConfig = self
            .section("keys")?
            .context("`[keys]` is missing: ingest needs `keyring` and `kek_file`")?;
        let ingest: IngestConfig = self
            .section("ingest")?
            .context("`[ingest]` is missing: set brokers, topics and policy")?;
        require_file(&keys.keyring, "keys.keyring")?;
        require_file(&keys.kek_file, "keys.kek_file")?;
        for (name, value) in [
            ("keys.rotate_every", keys.rotate_every),
            ("keys.bridge_overlap", keys.bridge_overlap),
        ] {
            if value.is_some_and(|value| value.is_zero()) {
                bail!("`{name}` is zero: give a duration such as \"90d\", or remove it");
            }
        }
        if keys.bridge_overlap.is_some() {
            require(
                &keys.bridge_topic,
                "keys.bridge_topic",
                "the on-prem topic of the rotation bridge",
            )?;
        }
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
        require_stall_timeout("ingest", ingest.stall_timeout_ms)?;
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

    /// The `[sink]` section, validated (secret files included). `[keys]` and `[ingest]`
    /// are not looked at: the sink holds no keys.
    pub fn for_sink(&self) -> Result<SinkConfig> {
        let sink: SinkConfig = self
            .section("sink")?
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
        require_stall_timeout("sink", sink.stall_timeout_ms)?;
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
    #[test]
    fn durations_read_with_their_unit() {
        use std::time::Duration;
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("30m", Duration::from_secs(1800)),
            ("12h", Duration::from_secs(43_200)),
            ("90d", Duration::from_secs(90 * 86_400)),
        ] {
            assert_eq!(super::parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "d", "90", "90 days", "-1d", "1.5h"] {
            let error = super::parse_duration(bad).unwrap_err();
            assert!(
                error.contains("unit") || error.contains("duration"),
                "{bad}: {error}"
            );
        }
    }

    use super::*;
    use std::io::Write as _;

    const EXAMPLE: &str = include_str!("../config/pseudopipe.example.toml");
    const POLICY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.policy.toml"
    );

    fn parse(text: &str) -> Config {
        Config::parse(text, "test config").expect("valid TOML with known sections")
    }

    /// A temporary file holding `content`.
    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        file
    }

    /// A config whose `[keys]` and `[ingest]` pass validation (files that exist), then `rest`.
    fn ingest_config(keyring: &Path, rest: &str) -> String {
        format!(
            "[keys]\nkeyring = {keyring:?}\nkek_file = {keyring:?}\n\n\
             [ingest]\nbrokers = \"b:9092\"\ninput_topic = \"raw\"\noutput_topic = \"out\"\n\
             quarantine_topic = \"q\"\npolicy = {POLICY:?}\n{rest}"
        )
    }

    /// A config whose `[sink]` passes validation, then `rest`.
    fn sink_config(rest: &str) -> String {
        format!(
            "[sink]\nsource_brokers = \"b:9092\"\nsource_topic = \"out\"\nbrokers = \"c:9093\"\n\
             topic = \"cloud\"\nquarantine_topic = \"q\"\npolicy = {POLICY:?}\n{rest}"
        )
    }

    #[test]
    fn the_example_parses_with_every_section() {
        let config = parse(EXAMPLE);
        let ingest: IngestConfig = config.section("ingest").unwrap().unwrap();
        assert_eq!(ingest.format, Format::Json);
        assert_eq!(ingest.delivery, Delivery::AtLeastOnce);
        assert!(!ingest.kafka.is_empty());
        let mut sink: SinkConfig = config.section("sink").unwrap().unwrap();
        // The example's key password comes from a file that exists only in production.
        assert!(sink.kafka.remove("ssl.key.password_file").is_some());
        assert_eq!(
            kafka_properties("sink.kafka", &sink.kafka).unwrap()["security.protocol"],
            "ssl"
        );
        assert!(!sink.source_kafka.is_empty());
        assert_eq!(config.metrics().unwrap().listen.port(), 9464);
        let keys: KeysConfig = config.section("keys").unwrap().unwrap();
        assert!(keys.audit_log.is_some());
    }

    /// The stage configs of the Compose stack and the Kubernetes manifests parse: every
    /// section they hold deserializes (the files they name exist only in the containers).
    #[test]
    fn the_deployment_configs_parse() {
        // Read at run time: deploy/ is not in the image's build context.
        let configs = [
            "deploy/compose/ingest.toml",
            "deploy/compose/sink.toml",
            "deploy/k8s/base/config/ingest.toml",
            "deploy/k8s/base/config/sink.toml",
            "deploy/k8s/overlays/example/config/ingest.toml",
            "deploy/k8s/overlays/example/config/sink.toml",
        ];
        for file in configs {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = &std::fs::read_to_string(&path).expect("the deployment config exists");
            let config = parse(text);
            let keys: Option<KeysConfig> = config.section("keys").unwrap();
            let ingest: Option<IngestConfig> = config.section("ingest").unwrap();
            let sink: Option<SinkConfig> = config.section("sink").unwrap();
            assert_eq!(keys.is_some(), ingest.is_some(), "{text}");
            assert!(
                ingest.is_some() != sink.is_some(),
                "one stage per file: {text}"
            );
            assert!(config.metrics().is_ok(), "{text}");
        }
    }

    #[test]
    fn an_avro_registry_needs_one_source_and_one_password() {
        let registry = |text: &str| -> SchemaRegistryConfig { toml::from_str(text).unwrap() };
        let none = registry("");
        assert!(none
            .settings(Format::Json, "ingest.schema_registry")
            .unwrap()
            .is_none());
        let error = none
            .settings(Format::Avro, "ingest.schema_registry")
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs either `url`"), "{error}");
        let both = registry("url = \"http://r\"\ndirectory = \"/s\"");
        assert!(both.settings(Format::Avro, "x").is_err());
        let twice = registry(
            "url = \"http://r\"\nusername = \"u\"\npassword = \"hunter2\"\npassword_env = \"P\"",
        );
        let error = twice.settings(Format::Avro, "x").unwrap_err().to_string();
        assert!(error.contains("give the password once"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let secret = file(b"s3cret\n");
        let from_file = registry(&format!(
            "url = \"http://r\"\nusername = \"u\"\npassword_file = {:?}\ntimeout = \"2s\"",
            secret.path()
        ));
        let settings = from_file.settings(Format::Avro, "x").unwrap().unwrap();
        assert_eq!(settings.password.as_deref(), Some("s3cret"));
        assert_eq!(settings.timeout, std::time::Duration::from_secs(2));
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = EXAMPLE.replace(
            "group_id = \"pseudopipe-ingest\"",
            "group_id = \"pseudopipe-ingest\"\ngroup = \"x\"",
        );
        let error = format!("{:#}", parse(&text).for_ingest().err().unwrap());
        assert!(error.contains("unknown field `group`"), "{error}");
        assert!(error.contains("section `[ingest]`"), "{error}");
    }

    #[test]
    fn unknown_sections_are_refused_whatever_the_command() {
        let text = format!("{EXAMPLE}\n[sinks]\ntopic = \"x\"\n");
        let error = Config::parse(&text, "test config")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown section `[sinks]`"), "{error}");
    }

    #[test]
    fn ingest_never_interprets_the_sink_section() {
        let keyring = file(b"exists");
        // A sink section that is wrong in every way: unknown key, wrong type, a secret
        // file that does not exist.
        let text = ingest_config(
            keyring.path(),
            "[sink]\nbogus = 1\nbrokers = 3\n[sink.kafka]\n\"sasl.password_file\" = \"/nonexistent/cloud-secret\"\n",
        );
        let config = parse(&text);
        let (_keys, ingest) = config.for_ingest().expect("ingest does not look at [sink]");
        assert_eq!(ingest.input_topic, "raw");
        assert!(config.for_sink().is_err(), "the sink section is invalid");
    }

    #[test]
    fn the_sink_never_interprets_the_keys_section() {
        let text = sink_config(
            "[keys]\nkeyring = \"/nonexistent/keyring.json\"\nkek_file = \"/nonexistent/kek\"\nunknown = true\n",
        );
        let config = parse(&text);
        let sink = config.for_sink().expect("the sink does not look at [keys]");
        assert_eq!(sink.topic, "cloud");
        assert!(config.for_ingest().is_err(), "the keys do not exist");
    }

    #[test]
    fn secrets_from_files_and_variables_reach_the_client_properties() {
        let secret = file(b"cloud-s3cret-from-file\n");
        std::env::set_var("PSEUDOPIPE_CONFIG_TEST_KEY_PASSWORD", "key-s3cret-from-env");
        let text = sink_config(&format!(
            "[sink.kafka]\n\"security.protocol\" = \"sasl_ssl\"\n\
             \"sasl.password_file\" = {:?}\n\
             \"ssl.key.password_env\" = \"PSEUDOPIPE_CONFIG_TEST_KEY_PASSWORD\"\n",
            secret.path()
        ));
        let sink = parse(&text).for_sink().unwrap();
        let properties = kafka_properties("sink.kafka", &sink.kafka).unwrap();
        assert_eq!(properties["sasl.password"], "cloud-s3cret-from-file");
        assert_eq!(properties["ssl.key.password"], "key-s3cret-from-env");
        assert_eq!(properties["security.protocol"], "sasl_ssl");
        assert!(!properties.contains_key("sasl.password_file"));
    }

    #[test]
    fn secret_errors_say_what_to_fix_and_never_quote_the_secret() {
        let secret = file(b"s3cret-in-a-file");
        let cases = [
            (
                format!(
                    "[sink.kafka]\n\"sasl.password\" = \"s3cret-inline\"\n\"sasl.password_file\" = {:?}\n",
                    secret.path()
                ),
                "`sasl.password` is given as `sasl.password` and `sasl.password_file`",
            ),
            (
                "[sink.kafka]\n\"sasl.password_file\" = \"/run/secrets/missing\"\n".to_owned(),
                "`sasl.password_file` = /run/secrets/missing: cannot read it",
            ),
            (
                "[sink.source_kafka]\n\"ssl.keystore.password_env\" = \"PSEUDOPIPE_CONFIG_TEST_UNSET\"\n"
                    .to_owned(),
                "`ssl.keystore.password_env` = PSEUDOPIPE_CONFIG_TEST_UNSET: the environment variable is not set",
            ),
        ];
        for (rest, expected) in cases {
            let error = format!("{:#}", parse(&sink_config(&rest)).for_sink().err().unwrap());
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
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
        let text = sink_config("").replace("topic = \"cloud\"", "topic = \"\"");
        let error = parse(&text).for_sink().err().unwrap().to_string();
        assert!(
            error.contains("`sink.topic` is empty: set it to the cloud topic analysts read"),
            "{error}"
        );
    }
}
