//! What the config sections of both stages share, written once: durations (`"15s"`), the
//! [`Delivery`] guarantee, the relay's
//! limits with their defaults, and the checks whose messages say what to fix
//! ([`SettingsError`]). `ingest::Settings` (`[ingest]`) and `sink::Settings` (`[sink]`)
//! are built of these (with `formats::settings` for the payload format and its schema
//! registry); librdkafka tables are [`KafkaProperties`](crate::secrets::KafkaProperties).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secrets::KafkaProperties;

/// A setting that cannot work, with what to do about it. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A setting is empty, out of range or in conflict with another; the message names it
    /// and says what to set.
    #[error("{0}")]
    Invalid(String),
    /// A file a setting names cannot be read.
    #[error("`{setting}` = {}: cannot read it", path.display())]
    Unreadable {
        /// The setting, e.g. `ingest.policy`.
        setting: String,
        /// The file it names.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// A secret of a librdkafka table cannot be had from its file or variable.
    #[error("`[{table}]`")]
    Secret {
        /// The table, e.g. `sink.kafka`.
        table: String,
        /// What is wrong with the secret (it names the property, never the value).
        #[source]
        source: Box<crate::Error>,
    },
}

/// A duration that [`parse_duration`] cannot read; the message shows how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text does not start with a whole number.
    #[error(
        "`{0}` is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. \"90d\""
    )]
    NotANumber(String),
    /// The number has no unit, or one that is not known.
    #[error("`{0}` has no known unit: use ms, s, m, h or d, e.g. \"90d\"")]
    UnknownUnit(String),
}

/// `"500ms"`, `"5s"`, `"30m"`, `"12h"`, `"90d"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
    let seconds = |factor: u64| Duration::from_secs(number.saturating_mul(factor));
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(DurationError::UnknownUnit(text.to_owned())),
    }
}

/// Reads a duration written as [`parse_duration`] reads it (`deserialize_with`).
pub fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// [`duration`] for an optional setting (with `#[serde(default)]`).
pub fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
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
pub fn default_max_in_flight() -> usize {
    10_000
}

/// Long enough for a cluster that is starting (a KRaft broker elects its controller in a
/// few seconds), short enough that a wrong address fails before an operator wonders.
pub fn default_connect_timeout() -> Duration {
    Duration::from_secs(15)
}

/// The liveness bound by default, in milliseconds: a producer that holds records and has
/// had none acknowledged for this long while its cluster answers is replaced (the relay's
/// `stall_timeout`); well under the producers' two-minute `message.timeout.ms`, and
/// longer than a broker's restart.
pub fn default_stall_timeout_ms() -> u64 {
    u64::try_from(crate::relay::DEFAULT_STALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}

/// Records per transaction by default (exactly once): the commit's few round trips are
/// a small share of the time, and an aborted batch is quick to do again.
pub fn default_transaction_max_records() -> usize {
    5_000
}

/// How long a transaction stays open by default (exactly once), in milliseconds: Kafka
/// Streams' commit interval under exactly-once.
pub fn default_transaction_interval_ms() -> u64 {
    100
}

/// `properties` (the table `table`, e.g. `sink.kafka`) with their secrets read from their
/// files and variables.
pub fn resolve_properties(
    properties: KafkaProperties,
    table: &str,
) -> Result<KafkaProperties, SettingsError> {
    properties
        .resolve()
        .map_err(|source| SettingsError::Secret {
            table: table.to_owned(),
            source: Box::new(source),
        })
}

/// `value` is not blank; else "`name` is empty: set it to `hint`".
pub fn require(value: &str, name: &str, hint: &str) -> Result<(), SettingsError> {
    if value.trim().is_empty() {
        return Err(SettingsError::Invalid(format!(
            "`{name}` is empty: set it to {hint}"
        )));
    }
    Ok(())
}

/// The file `path` of setting `name` can be read.
pub fn require_file(path: &Path, name: &str) -> Result<(), SettingsError> {
    std::fs::metadata(path).map_err(|source| SettingsError::Unreadable {
        setting: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

/// `[section] max_in_flight`, `stall_timeout_ms`, `transaction_max_records` and
/// `transaction_interval_ms` are in range.
pub fn require_relay_limits(
    section: &str,
    max_in_flight: usize,
    stall_timeout_ms: u64,
    transaction_max_records: usize,
    transaction_interval_ms: u64,
) -> Result<(), SettingsError> {
    let invalid = |message: String| Err(SettingsError::Invalid(message));
    if max_in_flight == 0 {
        return invalid(format!(
            "`{section}.max_in_flight` is 0: set it to at least 1 (default 10000)"
        ));
    }
    if stall_timeout_ms < 1_000 {
        return invalid(format!("`{section}.stall_timeout_ms` is {stall_timeout_ms}: set it to at least 1000 (default 30000), longer than a broker's restart takes"));
    }
    if transaction_max_records == 0 {
        return invalid(format!(
            "`{section}.transaction_max_records` is 0: set it to at least 1 (default 5000)"
        ));
    }
    if transaction_interval_ms == 0 {
        return invalid(format!(
            "`{section}.transaction_interval_ms` is 0: set it to at least 1 (default 100)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("30m", Duration::from_secs(1800)),
            ("12h", Duration::from_secs(43_200)),
            ("90d", Duration::from_secs(90 * 86_400)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "d", "90", "90 days", "-1d", "1.5h"] {
            let error = parse_duration(bad).unwrap_err().to_string();
            assert!(
                error.contains("unit") || error.contains("duration"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn out_of_range_limits_name_the_setting_to_change() {
        let error = require_relay_limits("sink", 10, 30_000, 0, 100)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`sink.transaction_max_records` is 0"),
            "{error}"
        );
        let error = require_relay_limits("ingest", 10, 30_000, 10, 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`ingest.transaction_interval_ms` is 0"),
            "{error}"
        );
        let error = require_relay_limits("ingest", 10, 999, 10, 10)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`ingest.stall_timeout_ms` is 999"),
            "{error}"
        );
    }
}
