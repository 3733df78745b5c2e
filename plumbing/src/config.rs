//! Kafka client construction: safe defaults, then the user's librdkafka properties.
//!
//! Users keep the librdkafka property names they know: a passthrough table is applied on
//! top of the defaults below and wins over them, with two exceptions. `enable.auto.commit`
//! cannot be turned on (it would commit offsets of records not yet delivered), and
//! `bootstrap.servers` / `group.id` come from the stage's own options only.
//!
//! One table configures every client of a stage, consumers and producers alike; a
//! property that librdkafka documents for consumers only (`C` in its CONFIGURATION.md)
//! reaches only the consumers, and a producer-only one (`P`) only the producers, so that
//! no client starts with a `CONFWARN` about a property it ignores
//! ([ADR 0018](../../docs/adr/0018-properties-by-librdkafka-scope.md)). Any other name,
//! unknown ones included, reaches every client, and librdkafka refuses an unknown one when
//! the client is created.

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

/// The properties librdkafka's CONFIGURATION.md (2.12.1, the version rdkafka-sys bundles)
/// marks `C`: a producer ignores them, with a `CONFWARN`. Global and topic properties
/// alike (a topic property in the global table sets the default topic's).
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "consume_cb",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "offset_commit_cb",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "rebalance_cb",
    "session.timeout.ms",
];

/// The properties librdkafka's CONFIGURATION.md (2.12.1) marks `P`: a consumer ignores
/// them, with a `CONFWARN`.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "dr_cb",
    "dr_msg_cb",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "msg_order_cmp",
    "partitioner",
    "partitioner_cb",
    "produce.offset.report",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// Which kind of client a configuration is for: each takes the properties of its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

impl Role {
    /// Whether librdkafka reads `key` in a client of this role (unknown names count as
    /// read, so that librdkafka refuses them).
    fn takes(self, key: &str) -> bool {
        let other = match self {
            Self::Consumer => PRODUCER_ONLY,
            Self::Producer => CONSUMER_ONLY,
        };
        !other.contains(&key)
    }
}

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
    let mut config = build(Role::Consumer, CONSUMER_DEFAULTS, passthrough)?;
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
    let mut config = build(Role::Producer, PRODUCER_DEFAULTS, passthrough)?;
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

/// The consumer properties of `passthrough` (those librdkafka reads in a consumer), for
/// a consumer configured by hand (`group.id` and `bootstrap.servers` as given).
pub fn consumer_properties(passthrough: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in passthrough {
        if Role::Consumer.takes(key.trim()) {
            config.set(key.trim(), value);
        }
    }
    config
}

/// The producer properties of `passthrough` (those librdkafka reads in a producer), with
/// none of the stages' defaults: for a tool's own producer, such as the simulator's.
pub fn producer_properties(passthrough: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in passthrough {
        if Role::Producer.takes(key.trim()) {
            config.set(key.trim(), value);
        }
    }
    config
}

fn build(
    role: Role,
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
        if role.takes(key) {
            config.set(key, value);
        }
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

    /// Collects the facilities of librdkafka's log lines at client creation.
    #[derive(Default)]
    struct Facilities(std::sync::Mutex<Vec<String>>);

    impl rdkafka::ClientContext for Facilities {
        fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{facility}: {message}"));
        }
    }

    impl rdkafka::consumer::ConsumerContext for Facilities {}

    impl rdkafka::producer::ProducerContext for Facilities {
        type DeliveryOpaque = ();

        fn delivery(&self, _report: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
    }

    fn warnings_of_consumer(config: &ClientConfig) -> Vec<String> {
        let consumer: rdkafka::consumer::BaseConsumer<Facilities> = config
            .create_with_context(Facilities::default())
            .expect("the consumer starts");
        // librdkafka queues its log lines; a poll serves them.
        let _ = consumer.poll(std::time::Duration::from_millis(200));
        let lines = rdkafka::consumer::Consumer::context(&consumer)
            .0
            .lock()
            .unwrap()
            .clone();
        lines
            .into_iter()
            .filter(|l| l.starts_with("CONFWARN"))
            .collect()
    }

    fn warnings_of_producer(config: &ClientConfig) -> Vec<String> {
        let producer: rdkafka::producer::BaseProducer<Facilities> = config
            .create_with_context(Facilities::default())
            .expect("the producer starts");
        // librdkafka queues its log lines; a poll serves them.
        producer.poll(std::time::Duration::from_millis(200));
        let lines = rdkafka::producer::Producer::context(&producer)
            .0
            .lock()
            .unwrap()
            .clone();
        lines
            .into_iter()
            .filter(|l| l.starts_with("CONFWARN"))
            .collect()
    }

    /// What the test harness and a tuned deployment put in one stage table.
    fn mixed_table() -> BTreeMap<String, String> {
        table(&[
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "2000"),
            ("max.poll.interval.ms", "60000"),
            ("isolation.level", "read_committed"),
            ("fetch.min.bytes", "1"),
            ("auto.offset.reset", "latest"),
            ("linger.ms", "20"),
            ("acks", "all"),
            ("message.timeout.ms", "30000"),
            ("batch.size", "100000"),
            ("socket.timeout.ms", "10000"),
            ("statistics.interval.ms", "0"),
        ])
    }

    #[test]
    fn each_client_takes_only_the_properties_of_its_scope() {
        let passthrough = mixed_table();
        let consumer = consumer("127.0.0.1:1", "g", &passthrough).unwrap();
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(warnings_of_consumer(&consumer), Vec::<String>::new());

        let producer = producer("127.0.0.1:1", &passthrough).unwrap();
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(warnings_of_producer(&producer), Vec::<String>::new());

        // The same table given whole to both, as before: librdkafka warns.
        let mut whole = ClientConfig::new();
        for (key, value) in &passthrough {
            whole.set(key, value);
        }
        whole.set("bootstrap.servers", "127.0.0.1:1");
        let warnings = warnings_of_producer(&whole);
        assert!(
            warnings.iter().any(|l| l.contains("session.timeout.ms")),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_unknown_property_is_still_refused_by_every_client() {
        let passthrough = table(&[("sesion.timeout.ms", "6000")]);
        let consumer = consumer("127.0.0.1:1", "g", &passthrough).unwrap();
        let error = consumer
            .create::<rdkafka::consumer::BaseConsumer>()
            .err()
            .expect("an unknown property is refused");
        assert!(error.to_string().contains("sesion.timeout.ms"), "{error}");
        let producer = producer("127.0.0.1:1", &passthrough).unwrap();
        assert!(producer
            .create::<rdkafka::producer::BaseProducer>()
            .is_err());
    }

    #[test]
    fn the_scope_tables_do_not_overlap() {
        for key in CONSUMER_ONLY {
            assert!(!PRODUCER_ONLY.contains(key), "{key}");
            assert!(Role::Consumer.takes(key) && !Role::Producer.takes(key));
        }
        for key in PRODUCER_ONLY {
            assert!(Role::Producer.takes(key) && !Role::Consumer.takes(key));
        }
    }
}
