//! Kafka client construction: safe defaults, then the user's librdkafka properties.
//!
//! Users keep the librdkafka property names they know: a passthrough table is applied on
//! top of the defaults below and wins over them, with two exceptions. `enable.auto.commit`
//! cannot be turned on (it would commit offsets of records not yet delivered), and
//! `bootstrap.servers` / `group.id` come from the stage's own options only.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::Error;

/// Consumer defaults, each with why.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    // Offsets are committed by the relay, only up to the delivered watermark.
    ("enable.auto.commit", "false"),
    // librdkafka would otherwise store the offset of every record handed to the
    // application, delivered or not.
    ("enable.auto.offset.store", "false"),
    // A new group starts from the beginning: nothing already in the topic is skipped.
    ("auto.offset.reset", "earliest"),
    // Statistics tell when a cluster lost entirely answers again (`/readyz`, see health).
    ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
];

/// Producer defaults, each with why.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // Retries of librdkafka never duplicate or reorder records within a partition.
    ("enable.idempotence", "true"),
    // A record counts as delivered only once every in-sync replica has it.
    ("acks", "all"),
    // Pseudonymized JSON and Avro compress well; zstd is the best ratio per CPU.
    ("compression.type", "zstd"),
    // A few milliseconds of batching buy much throughput for little latency.
    ("linger.ms", "5"),
    // Statistics tell when a cluster lost entirely answers again (`/readyz`, see health).
    ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
];

/// How often librdkafka reports statistics: how late at most `/readyz` sees a lost
/// cluster back. `0` turns them off (then a lost cluster stays "unreachable" until a
/// restart).
const STATISTICS_INTERVAL_MS: &str = "2000";

/// Properties that come from pseudopipe's own options, and which option that is.
const RESERVED: &[(&str, &str)] = &[("bootstrap.servers", "brokers"), ("group.id", "group_id")];

/// A consumer configuration for `brokers` in consumer group `group_id`.
///
/// Defaults: `enable.auto.commit=false`, `enable.auto.offset.store=false`,
/// `auto.offset.reset=earliest`, `statistics.interval.ms=2000`; `passthrough` wins over them, except that
/// `enable.auto.commit` may only be `false`.
pub fn consumer(
    brokers: &str,
    group_id: &str,
    passthrough: &BTreeMap<String, String>,
) -> Result<ClientConfig, Error> {
    let mut config = build(CONSUMER_DEFAULTS, passthrough)?;
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id);
    Ok(config)
}

/// A producer configuration for `brokers`.
///
/// Defaults: `enable.idempotence=true`, `acks=all`, `compression.type=zstd`,
/// `linger.ms=5`, `statistics.interval.ms=2000`; `passthrough` wins over them.
pub fn producer(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
) -> Result<ClientConfig, Error> {
    let mut config = build(PRODUCER_DEFAULTS, passthrough)?;
    config.set("bootstrap.servers", brokers);
    Ok(config)
}

/// Refuses a consumer configuration that would commit offsets on its own.
///
/// librdkafka's own default for `enable.auto.commit` is `true`, so an absent property is
/// set to `false` here rather than refused; `enable.auto.offset.store` likewise.
pub(crate) fn ensure_manual_commit(config: &ClientConfig) -> Result<ClientConfig, Error> {
    let mut config = config.clone();
    match config.get("enable.auto.commit") {
        Some(value) => check_auto_commit(value)?,
        None => {
            config.set("enable.auto.commit", "false");
        }
    }
    if config.get("enable.auto.offset.store").is_none() {
        config.set("enable.auto.offset.store", "false");
    }
    Ok(config)
}

fn build(
    defaults: &[(&str, &str)],
    passthrough: &BTreeMap<String, String>,
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in passthrough {
        let key = key.trim();
        if let Some((_, setting)) = RESERVED.iter().find(|(reserved, _)| *reserved == key) {
            return Err(Error::ReservedProperty {
                key: key.to_owned(),
                setting,
            });
        }
        if key == "enable.auto.commit" {
            check_auto_commit(value)?;
        }
        config.set(key, value);
    }
    Ok(config)
}

/// librdkafka reads `true`, `t` and `1` as true; only an explicit false is accepted.
fn check_auto_commit(value: &str) -> Result<(), Error> {
    let normalized = value.trim().to_ascii_lowercase();
    if matches!(normalized.as_str(), "false" | "f" | "0") {
        Ok(())
    } else {
        Err(Error::UnsafeProperty {
            key: "enable.auto.commit".to_owned(),
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A property table from pairs, as a stage's config section gives one.
    pub(crate) fn table(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn consumer_defaults_never_commit_on_their_own() {
        let config = consumer("localhost:9092", "pseudopipe-ingest", &table(&[])).unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(config.get("group.id"), Some("pseudopipe-ingest"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn producer_defaults_are_durable() {
        let config = producer("localhost:9092", &table(&[])).unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("compression.type"), Some("zstd"));
        assert_eq!(config.get("linger.ms"), Some("5"));
    }

    #[test]
    fn passthrough_wins_over_defaults() {
        let config = consumer(
            "b:9092",
            "g",
            &table(&[
                ("auto.offset.reset", "latest"),
                ("security.protocol", "ssl"),
            ]),
        )
        .unwrap();
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
        assert_eq!(config.get("security.protocol"), Some("ssl"));

        let config = producer("b:9092", &table(&[("linger.ms", "50")])).unwrap();
        assert_eq!(config.get("linger.ms"), Some("50"));
    }

    #[test]
    fn auto_commit_is_refused() {
        for value in ["true", "TRUE", " t ", "1", "yes"] {
            let error = consumer("b", "g", &table(&[("enable.auto.commit", value)]))
                .expect_err("auto commit must be refused");
            assert!(matches!(error, Error::UnsafeProperty { .. }), "{value}");
            assert!(error.to_string().contains("enable.auto.commit"));
        }
        let config = consumer("b", "g", &table(&[("enable.auto.commit", "False")])).unwrap();
        assert_eq!(config.get("enable.auto.commit"), Some("False"));
    }

    #[test]
    fn brokers_and_group_come_from_our_own_options() {
        let error = consumer("b", "g", &table(&[("group.id", "other")])).unwrap_err();
        assert!(error.to_string().contains("`group_id`"), "{error}");
        let error = producer("b", &table(&[("bootstrap.servers", "x")])).unwrap_err();
        assert!(error.to_string().contains("`brokers`"), "{error}");
    }

    #[test]
    fn hand_made_consumer_config_is_made_safe_or_refused() {
        let mut bare = ClientConfig::new();
        bare.set("group.id", "g");
        let safe = ensure_manual_commit(&bare).unwrap();
        assert_eq!(safe.get("enable.auto.commit"), Some("false"));
        assert_eq!(safe.get("enable.auto.offset.store"), Some("false"));

        bare.set("enable.auto.commit", "true");
        assert!(matches!(
            ensure_manual_commit(&bare),
            Err(Error::UnsafeProperty { .. })
        ));
    }
}
