//! testkit against real Apache Kafka brokers: what the pipeline's black-box tests rely
//! on, proven once here. Tests that leave the brokers alone use the shared pair; those
//! that kill, terminate or drop a broker start their own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde_json::json;
use testkit::{is_alive, shared_brokers, Broker, Client, NewRecord, TlsFiles};

const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_broker_reads_back_what_was_produced() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("roundtrip", 3);

    let produced = broker.produce(
        &topic,
        [
            NewRecord::json(&json!({"event_id": "e-0"}))
                .key("e-0")
                .header("reason", "schema")
                .partition(2),
            NewRecord::from(("e-1", "plain text")).partition(0),
            NewRecord::from("no key").partition(1),
        ],
    );
    assert_eq!(produced, 3);

    let records = broker.read_all(&topic, 3, READ_TIMEOUT);
    assert_eq!(records.len(), 3, "{records:?}");
    let by_partition: Vec<_> = records.iter().map(|record| record.partition).collect();
    assert_eq!(by_partition, [0, 1, 2], "sorted by partition and offset");
    assert_eq!(records[0].key_str(), Some("e-1"));
    assert_eq!(records[0].payload_str(), Some("plain text"));
    assert_eq!(records[1].key, None);
    assert_eq!(records[2].json()["event_id"], "e-0");
    assert_eq!(records[2].header("reason"), Some("schema"));
}

#[test]
fn many_records_spread_over_partitions_are_all_read_back_once() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("many", 4);
    let events: Vec<_> = (0..500)
        .map(|i| (format!("key-{i}"), json!({"event_id": format!("e-{i}")})))
        .collect();
    broker.produce(&topic, events);

    let records = broker.read_all(&topic, 500, READ_TIMEOUT);
    let ids: BTreeSet<String> = records
        .iter()
        .map(|record| record.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(records.len(), 500);
    assert_eq!(ids.len(), 500);
    let partitions: BTreeSet<i32> = records.iter().map(|record| record.partition).collect();
    assert_eq!(partitions.len(), 4, "keys spread over all partitions");
}

#[test]
fn read_all_returns_what_it_found_when_the_timeout_passes() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("short", 1);
    broker.produce(&topic, ["only one"]);

    let started = Instant::now();
    let records = broker.read_all(&topic, 2, Duration::from_secs(3));
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(broker
        .read_all(&broker.random_topic("empty", 2), 0, READ_TIMEOUT)
        .is_empty());
}

#[test]
fn topics_have_the_partitions_asked_for() {
    let broker = &shared_brokers().onprem;
    let one = broker.random_topic("one", 1);
    let twelve = broker.random_topic("twelve", 12);
    let client = broker.client();
    assert_eq!(client.partition_count(&one, READ_TIMEOUT).unwrap(), Some(1));
    assert_eq!(
        client.partition_count(&twelve, READ_TIMEOUT).unwrap(),
        Some(12)
    );
    assert_eq!(
        client
            .partition_count("never-created", READ_TIMEOUT)
            .unwrap(),
        None,
        "asking about a topic does not create it"
    );
}

#[test]
#[should_panic(expected = "TopicAlreadyExists")]
fn creating_a_topic_twice_fails_loudly() {
    let broker = &shared_brokers().onprem;
    let topic = testkit::random_name("twice");
    broker.create_topic(&topic, 1);
    broker.create_topic(&topic, 1);
}

/// Acknowledged records are in the page cache when the JVM dies: a kill -9 loses
/// nothing, and the restarted broker (same ports, same data) recovers its log.
#[test]
fn a_broker_keeps_its_records_across_a_kill_and_a_restart() {
    let mut broker = Broker::start("killed");
    let topic = broker.random_topic("durable", 2);
    broker.produce(&topic, (0..20).map(|i| format!("before-{i}")));
    let (port, pid) = (broker.port(), broker.pid().unwrap());

    broker.kill();
    assert!(!broker.is_running());
    assert!(!is_alive(pid), "the JVM is gone");
    assert!(Client::new([("bootstrap.servers", broker.bootstrap())])
        .metadata(Duration::from_secs(1))
        .is_err());
    let started = Instant::now();
    broker.restart();
    eprintln!(
        "restart after kill -9: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(broker.port(), port, "a restart keeps the port");
    broker.produce(&topic, ["after"]);
    assert_eq!(broker.read_all(&topic, 21, READ_TIMEOUT).len(), 21);
}

#[test]
fn a_broker_keeps_its_records_across_a_sigterm_and_a_restart() {
    let mut broker = Broker::start("terminated");
    let topic = broker.random_topic("durable", 1);
    broker.produce(&topic, ["one"]);

    let status = broker.terminate();
    assert!(status.is_some(), "{}", broker.failure("SIGTERM"));
    assert!(
        broker
            .log_tail(200)
            .contains("Transitioning from PENDING_CONTROLLED_SHUTDOWN to SHUTTING_DOWN"),
        "{}",
        broker.failure("a controlled shutdown")
    );
    broker.restart();
    broker.produce(&topic, ["two"]);
    let payloads: Vec<_> = broker
        .read_all(&topic, 2, READ_TIMEOUT)
        .iter()
        .map(|record| record.payload_str().unwrap().to_owned())
        .collect();
    assert_eq!(payloads, ["one", "two"]);
}

#[test]
fn a_dropped_broker_stops_answering_and_leaves_no_process() {
    let started = Instant::now();
    let broker = Broker::start("dropped");
    eprintln!("format and start: {:.1} s", started.elapsed().as_secs_f64());
    let client = broker.client();
    client
        .metadata(READ_TIMEOUT)
        .expect("it answers while alive");
    let pid = broker.pid().unwrap();
    drop(broker);
    assert!(!is_alive(pid), "the JVM is gone");
    assert!(client.metadata(Duration::from_secs(1)).is_err());
}

#[test]
fn a_failure_quotes_the_broker_log() {
    let broker = &shared_brokers().onprem;
    let message = broker.failure("something broke");
    assert!(message.contains("something broke"), "{message}");
    assert!(
        message.contains("Transitioning from RECOVERY to RUNNING"),
        "{message}"
    );
}

#[test]
fn a_client_with_the_certificate_reads_and_writes_over_tls() {
    let cloud = &shared_brokers().cloud;
    let properties = cloud.client_properties();
    assert_eq!(properties["security.protocol"], "ssl");
    assert_eq!(properties["bootstrap.servers"], cloud.bootstrap());

    let topic = cloud.random_topic("redemptions", 2);
    cloud.produce(&topic, (0..50).map(|i| (format!("k{i}"), json!({"i": i}))));
    assert_eq!(cloud.read_all(&topic, 50, READ_TIMEOUT).len(), 50);

    let metadata = cloud.client().metadata(READ_TIMEOUT).unwrap();
    assert!(
        metadata
            .brokers()
            .iter()
            .all(|broker| broker.port() == i32::from(cloud.port())),
        "the broker advertises its SSL listener only"
    );
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let cloud = &shared_brokers().cloud;
    let refused = Duration::from_secs(3);

    let anonymous = cloud
        .client()
        .without("ssl.certificate.location")
        .without("ssl.key.location");
    assert!(
        anonymous.metadata(refused).is_err(),
        "no client certificate"
    );

    let plaintext = Client::new([("bootstrap.servers", cloud.bootstrap())]);
    assert!(plaintext.metadata(refused).is_err(), "no TLS at all");

    let stranger = TlsFiles::generate();
    let foreign = cloud
        .client()
        .with(
            "ssl.certificate.location",
            stranger.client_cert().to_str().unwrap(),
        )
        .with("ssl.key.location", stranger.client_key().to_str().unwrap());
    assert!(
        foreign.metadata(refused).is_err(),
        "a certificate from another CA"
    );

    cloud
        .client()
        .metadata(READ_TIMEOUT)
        .expect("the real client still gets in");
}

/// A TLS broker behind a link: a client that bootstraps through the link is sent back
/// through it (metadata advertises the link's port) and is cut off with it, while the
/// test's own client on the direct listener is not; once restored, the link carries again.
#[test]
fn a_client_behind_a_cut_link_is_cut_off_and_the_direct_one_is_not() {
    let mut cloud = Broker::builder("behind-link")
        .with_client_certificates()
        .behind_link()
        .start();
    let link = cloud.link().expect("started behind a link");
    let through_link = cloud.client().with("bootstrap.servers", link.bootstrap());
    let metadata = through_link.metadata(READ_TIMEOUT).unwrap();
    assert!(
        metadata
            .brokers()
            .iter()
            .all(|broker| broker.port() == i32::from(link.port())),
        "over the link, the broker advertises the link"
    );
    let topic = cloud.random_topic("redemptions", 2);
    through_link
        .produce(&topic, [("k", "over the link")], READ_TIMEOUT)
        .unwrap();
    let accepted = link.connections_accepted();
    assert!(accepted > 0);

    cloud.link_mut().expect("behind a link").cut();
    assert!(
        through_link.metadata(Duration::from_secs(3)).is_err(),
        "the link is cut"
    );
    assert_eq!(
        cloud.read_all(&topic, 1, READ_TIMEOUT).len(),
        1,
        "the direct listener is not"
    );

    cloud.link_mut().expect("behind a link").restore();
    through_link
        .produce(&topic, [("k", "over the restored link")], READ_TIMEOUT)
        .unwrap();
    assert_eq!(cloud.read_all(&topic, 2, READ_TIMEOUT).len(), 2);
    assert!(cloud.link().expect("behind a link").connections_accepted() > accepted);
}

/// What the pipeline's at-least-once delivery relies on: a group's committed offsets are
/// kept per partition, and a new member of the group reads them back as they were.
#[test]
fn committed_offsets_are_kept_per_partition() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};

    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("offsets", 3);
    broker.produce(
        &topic,
        (0..200).map(|i| NewRecord::new(format!("r{i}")).partition(2)),
    );
    let group = testkit::random_name("offsets");
    broker
        .client()
        .commit_offset(&group, &topic, 2, 173)
        .unwrap();
    let consumer: BaseConsumer = broker
        .client()
        .config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ask = TopicPartitionList::new();
    for partition in 0..3 {
        ask.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(ask, Duration::from_secs(10))
        .unwrap();
    let offsets: Vec<Offset> = (0..3)
        .map(|p| committed.find_partition(&topic, p).unwrap().offset())
        .collect();
    assert_eq!(
        offsets,
        [Offset::Invalid, Offset::Invalid, Offset::Offset(173)]
    );
}

/// Every process that restarts gets a new idempotent producer: the records of the second
/// one must land even though its sequence numbers start again at 0.
#[test]
fn idempotent_producers_one_after_the_other_all_land() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("producers", 1);
    for round in 0..3 {
        let records = (0..10).map(|i| format!("round {round} record {i}"));
        assert_eq!(broker.produce(&topic, records), 10);
    }
    let records = broker.read_all(&topic, 30, READ_TIMEOUT);
    let payloads: BTreeSet<_> = records.iter().filter_map(|r| r.payload_str()).collect();
    assert_eq!(payloads.len(), 30, "{payloads:?}");
}

/// Kafka returns the whole batch that holds the offset asked for, and librdkafka skips
/// what comes before it: a consumer starts exactly where it asks, even inside a batch
/// (the broker the tests ran on before skipped to the next batch: ADR 0005 and 0006).
#[test]
fn a_fetch_inside_a_record_batch_starts_where_it_asks() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message as _;
    use rdkafka::{Offset, TopicPartitionList};

    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("midbatch", 1);
    // Produced at once: librdkafka sends them as one batch.
    let records = (0..100).map(|i| NewRecord::new(format!("record {i}")).partition(0));
    assert_eq!(broker.produce(&topic, records), 100);
    for start in [0, 1, 50, 99] {
        let consumer: BaseConsumer = broker
            .client()
            .config()
            .set("group.id", testkit::random_name("first-offset"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Offset(start))
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                break Some(message.offset());
            }
            if Instant::now() >= deadline {
                break None;
            }
        };
        assert_eq!(first, Some(start));
    }
}

/// Why the tests moved to Apache Kafka: a committed transaction shows in `read_all`
/// (`read_committed`), an aborted one never does, and the offsets of both (records and
/// markers) are taken in the partition.
#[test]
fn a_committed_transaction_is_read_and_an_aborted_one_is_not() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("transactions", 1);
    let timeout = Duration::from_secs(30);
    let producer = transactional_producer(broker, timeout);
    let send_in_a_transaction = |payloads: &[&str]| {
        producer.begin_transaction().unwrap();
        for payload in payloads {
            producer
                .send(BaseRecord::<(), str>::to(&topic).payload(*payload))
                .unwrap();
        }
        producer.flush(timeout).unwrap();
    };

    send_in_a_transaction(&["committed 1", "committed 2"]);
    producer.commit_transaction(timeout).unwrap();
    send_in_a_transaction(&["aborted 1", "aborted 2", "aborted 3"]);
    producer.abort_transaction(timeout).unwrap();
    send_in_a_transaction(&["committed 3"]);
    producer.commit_transaction(timeout).unwrap();

    let payloads: Vec<_> = broker
        .read_all(&topic, 3, READ_TIMEOUT)
        .iter()
        .map(|record| record.payload_str().unwrap().to_owned())
        .collect();
    assert_eq!(payloads, ["committed 1", "committed 2", "committed 3"]);
    // 6 records and 3 markers (commit, abort, commit).
    assert_eq!(broker.watermarks(&topic), [(0, 9)]);
}

/// A transaction left open is invisible to `read_committed` until it commits.
#[test]
fn an_open_transaction_is_not_read_until_it_commits() {
    let cloud = &shared_brokers().cloud;
    let topic = cloud.random_topic("open", 1);
    let timeout = Duration::from_secs(30);
    let producer = transactional_producer(cloud, timeout);
    producer.begin_transaction().unwrap();
    producer
        .send(BaseRecord::<(), str>::to(&topic).payload("pending"))
        .unwrap();
    producer.flush(timeout).unwrap();
    assert!(
        cloud.read_all(&topic, 1, Duration::from_secs(3)).is_empty(),
        "an open transaction is not read"
    );
    producer.commit_transaction(timeout).unwrap();
    assert_eq!(cloud.read_all(&topic, 1, READ_TIMEOUT).len(), 1);
}

/// DeleteRecords moves the low watermark, as retention does: what the skipped-offsets
/// test of the pipeline builds its gap with.
#[test]
fn deleting_records_moves_the_low_watermark() {
    let broker = &shared_brokers().onprem;
    let topic = broker.random_topic("deleted", 1);
    broker.produce(&topic, (0..10).map(|i| format!("r{i}")));
    assert_eq!(broker.delete_records_before(&topic, 0, 6), 6);
    assert_eq!(broker.watermarks(&topic), [(6, 10)]);
    let offsets: Vec<i64> = broker
        .read_all(&topic, 4, READ_TIMEOUT)
        .iter()
        .map(|record| record.offset)
        .collect();
    assert_eq!(offsets, [6, 7, 8, 9]);
}

/// A paused broker answers nothing; resumed, it carries on with its connections.
#[test]
fn a_paused_broker_answers_once_resumed() {
    let mut broker = Broker::start("paused");
    let topic = broker.random_topic("paused", 1);
    broker.pause();
    assert!(broker.is_running());
    assert!(broker.client().metadata(Duration::from_secs(2)).is_err());
    broker.resume();
    broker.produce(&topic, ["after the pause"]);
    assert_eq!(broker.read_all(&topic, 1, READ_TIMEOUT).len(), 1);
}

/// A producer of `broker` with a fresh `transactional.id`, transactions initialized.
fn transactional_producer(broker: &Broker, timeout: Duration) -> BaseProducer {
    let producer: BaseProducer = broker
        .client()
        .config()
        .set("transactional.id", testkit::random_name("testkit"))
        .create()
        .unwrap();
    producer.init_transactions(timeout).unwrap();
    producer
}
