//! Avro through both stages and a real schema registry (Apicurio Registry, its
//! Confluent-compatible API): retail events serialized by Confluent's own Python client,
//! read by ingest with their writer schema, written with the derived schema; the sink
//! judges each datum and forwards it; what reaches the cloud is what batch mode makes of
//! the same JSON events, under the id the derived schema has under the cloud topic's
//! subject. A record naming a schema id the registry does not know, and one
//! written with a schema that has a field the policy does not classify, go to quarantine.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pseudonymize::avro::{split_wire, to_json, write_header};
use pseudonymize::avro_schema::Schema;
use serde_json::Value;
use testkit::NewRecord;

use crate::harness::*;

const DERIVED_SCHEMA: &str = include_str!("../schemas/coupon_redemption.pseudonymized.avsc");

/// `json` without null members and the objects they leave empty: Avro writes an absent
/// optional field as null, JSON leaves it out.
fn without_nulls(json: &Value) -> Value {
    match json {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| (key.clone(), without_nulls(value)))
                .filter(|(_, value)| {
                    !value.is_null() && value.as_object().is_none_or(|o| !o.is_empty())
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn avro_events_reach_the_cloud_exactly_once() {
    let events = volume();
    const SEED: u64 = 11;
    let registry = testkit::shared_registry();
    let p = Pipeline::new()
        .with_delivery(Delivery::ExactlyOnce)
        .with_avro(&registry.url());
    let expected = expected(events, 0.0, SEED);
    let started = Instant::now();
    let writer_id = registry.produce_avro(&p.onprem, &p.raw, expected.valid.values());
    eprintln!(
        "produced {events} events as Avro with Confluent's Python serializer (schema id {writer_id}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // An id the registry never gave, and a schema with a field no rule classifies.
    let mut unknown = Vec::new();
    write_header(2_000_000_000, &mut unknown);
    unknown.extend_from_slice(b"\x02x");
    let widened = crate::schemas::with_a_new_optional_field();
    let widened_id = registry.register(&format!("{}-value", p.raw), &widened.to_string());
    let widened_schema = Schema::parse_str(&widened.to_string()).unwrap();
    let mut event: Value =
        serde_json::from_str(include_str!("../schemas/coupon_redemption.json")).unwrap();
    event["customer"]["nickname"] = Value::from("Mimi");
    let datum = apache_avro::to_avro_datum(
        &widened_schema,
        apache_avro::types::Value::from(event)
            .resolve(&widened_schema)
            .unwrap(),
    )
    .unwrap();
    let mut nickname = Vec::new();
    write_header(widened_id, &mut nickname);
    nickname.extend_from_slice(&datum);
    p.onprem.produce(
        &p.raw,
        [
            NewRecord::new(unknown).key("unknown-id"),
            NewRecord::new(nickname).key("nickname"),
        ],
    );

    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ingest, sink) = p.start_stages(logs.path());
    // Exactly once: as many records as events, no duplicate to wait past.
    let cloud = p.cloud.read_all(
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(600),
    );
    eprintln!(
        "end to end, Avro, exactly once: {events} events through ingest and sink in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The batch-mode output of the same JSON events is what the cloud must hold.
    let batch: HashMap<String, Value> = batch_mode(&p, expected.valid.values())
        .lines()
        .map(|line| {
            let json: Value = serde_json::from_str(line).unwrap();
            (json["event_id"].as_str().unwrap().to_owned(), json)
        })
        .collect();
    let derived = Schema::parse_str(DERIVED_SCHEMA).unwrap();
    // The sink registered the derived schema under the cloud topic's subject, and the cloud
    // records carry that id.
    let cloud_id = registry.latest_id(&format!("{}-value", p.cloud_topic));
    let mut schemas: HashMap<u32, Schema> = HashMap::new();
    let mut seen = HashSet::new();
    for record in &cloud {
        let payload = record.payload.as_deref().expect("a payload");
        let (id, datum) = split_wire(payload).expect("the cloud record is in the wire format");
        assert_eq!(
            id, cloud_id,
            "the cloud record names the cloud registry's id"
        );
        let schema = schemas.entry(id).or_insert_with(|| {
            Schema::parse_str(&registry.schema(id)).expect("the registry's schema parses")
        });
        assert_eq!(
            schema.canonical_form(),
            derived.canonical_form(),
            "the cloud records are written with the derived schema (schemas/coupon_redemption.pseudonymized.avsc)"
        );
        let output: Value = serde_json::from_slice(&to_json(schema, id, datum).unwrap()).unwrap();
        let id = output["event_id"].as_str().unwrap().to_owned();
        assert_eq!(
            without_nulls(&output),
            without_nulls(&batch[&id]),
            "cloud record {id} differs from batch mode"
        );
        assert_eq!(
            record.key_str(),
            output["customer"]["loyalty_card"].as_str(),
            "the Kafka key is the loyalty-card token"
        );
        let leaked = simulator::leaked_fields(&expected.valid[&id], &output, record.key.as_deref());
        assert!(
            leaked.is_empty(),
            "{id}: personal fields reached the cloud: {leaked:?}"
        );
        assert!(seen.insert(id.clone()), "{id} reached the cloud twice");
    }
    assert_eq!(
        seen.len(),
        expected.valid.len(),
        "every event reached the cloud"
    );

    let quarantined = p.onprem.read_all(&p.quarantine, 2, Duration::from_secs(60));
    let reasons: HashMap<&str, &str> = quarantined
        .iter()
        .map(|record| {
            (
                record.key_str().unwrap(),
                record.header("pseudopipe-reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        HashMap::from([
            ("unknown-id", "unknown_schema"),
            ("nickname", "unknown_field")
        ])
    );
    let nickname = quarantined
        .iter()
        .find(|record| record.key_str() == Some("nickname"))
        .unwrap();
    let message = nickname.header("pseudopipe-message").unwrap_or_default();
    assert!(message.contains("`customer.nickname`"), "{message}");
    assert!(!message.contains("Mimi"), "{message}");

    assert_eq!(
        ingest.metrics().value(
            "pseudopipe_events_quarantined_total",
            &[("reason", "unknown_schema")]
        ),
        1.0
    );
    assert_eq!(
        sink.metrics()
            .value("pseudopipe_events_quarantined_total", &[]),
        0.0,
        "the sink's guard passes every datum ingest wrote"
    );
}
