//! testkit's schema registry (Apicurio, Confluent API) and the Python cross-check producer
//! (`scripts/produce-avro.py`, Confluent's Avro serializer) against a real broker: what
//! the black-box tests of Avro input rely on, proven once here.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{shared_brokers, shared_registry};

const RAW_SCHEMA: &str = include_str!("../../schemas/coupon_redemption.avsc");
const EXAMPLE_EVENT: &str = include_str!("../../schemas/coupon_redemption.json");

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

#[test]
fn a_registered_schema_is_read_back_by_id_and_registering_it_again_keeps_the_id() {
    let registry = shared_registry();
    let subject = testkit::random_name("redemptions.raw") + "-value";

    let id = registry.register(&subject, RAW_SCHEMA);

    assert_eq!(parse(&registry.schema(id)), parse(RAW_SCHEMA));
    assert_eq!(registry.latest_id(&subject), id);
    assert_eq!(registry.register(&subject, RAW_SCHEMA), id, "same text");
    // What a serializer that re-serializes the schema sends: other whitespace, same schema.
    let compact = parse(RAW_SCHEMA).to_string();
    assert_eq!(registry.register(&subject, &compact), id, "same schema");
}

#[test]
fn different_schemas_get_different_ids() {
    let registry = shared_registry();
    let subject = testkit::random_name("ids") + "-value";

    let first = registry.register(&subject, r#"{"type": "record", "name": "A", "fields": []}"#);
    let second = registry.register(
        &subject,
        r#"{"type": "record", "name": "A", "fields": [{"name": "x", "type": ["null", "string"], "default": null}]}"#,
    );

    assert_ne!(first, second);
    assert_eq!(registry.latest_id(&subject), second);
    assert_eq!(parse(&registry.schema(first))["fields"], json!([]));
}

/// Three raw events: the complete example, one without the optional tenant and basket
/// items, one without customer and device.
fn three_events() -> Vec<Value> {
    let complete = parse(EXAMPLE_EVENT);
    let mut without_tenant = complete.clone();
    without_tenant["event_id"] = json!("e-without-tenant");
    let object = without_tenant
        .as_object_mut()
        .expect("an event is an object");
    object.remove("tenant");
    object["basket"]
        .as_object_mut()
        .expect("the example has a basket")
        .remove("items");
    let mut anonymous = complete.clone();
    anonymous["event_id"] = json!("e-anonymous");
    let object = anonymous.as_object_mut().expect("an event is an object");
    object.remove("customer");
    object.remove("device");
    vec![complete, without_tenant, anonymous]
}

#[test]
fn events_from_confluents_avro_serializer_are_framed_with_the_registry_id_and_decode() {
    let broker = &shared_brokers().onprem;
    let registry = shared_registry();
    let topic = broker.random_topic("redemptions.raw", 3);
    let events = three_events();

    let id = registry.produce_avro(broker, &topic, &events);

    assert_eq!(registry.latest_id(&format!("{topic}-value")), id);
    let schema = apache_avro::Schema::parse_str(&registry.schema(id))
        .expect("the registry returns the schema the producer registered");
    let records = broker.read_all(&topic, 3, Duration::from_secs(30));
    assert_eq!(records.len(), 3, "{records:?}");
    for record in &records {
        let payload = record.payload.as_deref().expect("every record has a value");
        assert_eq!(payload[0], 0, "Confluent's magic byte");
        let framed_id = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes"));
        assert_eq!(framed_id, id, "the id is big-endian after the magic byte");
        let mut datum = &payload[5..];
        let decoded = apache_avro::from_avro_datum(&schema, &mut datum, None)
            .expect("the rest is an Avro datum of the schema");
        assert!(datum.is_empty(), "{} bytes after the datum", datum.len());
        let decoded = Value::try_from(decoded).expect("the raw schema has no float or bytes");
        let event_id = decoded["event_id"].as_str().expect("event_id is a string");
        assert_eq!(record.key_str(), Some(event_id), "keyed by event_id");
        let sent = events
            .iter()
            .find(|event| event["event_id"] == event_id)
            .expect("an event that was sent");
        match event_id {
            "e-without-tenant" => {
                assert_eq!(decoded["tenant"], Value::Null);
                assert_eq!(decoded["basket"]["items"], json!([]), "the default");
                assert_eq!(decoded["customer"], sent["customer"]);
            }
            "e-anonymous" => {
                assert_eq!(decoded["customer"], Value::Null);
                assert_eq!(decoded["device"], Value::Null);
                assert_eq!(decoded["basket"], sent["basket"]);
            }
            _ => assert_eq!(&decoded, sent, "the complete event comes back whole"),
        }
    }
}

#[test]
fn an_event_the_schema_does_not_describe_fails_the_producer_without_quoting_it() {
    let broker = &shared_brokers().onprem;
    let registry = shared_registry();
    let topic = broker.random_topic("redemptions.raw", 1);
    let mut event = parse(EXAMPLE_EVENT);
    event["coupon"]["face_value_cents"] = json!("SECRET-VALUE");

    let failure = std::panic::catch_unwind(AssertUnwindSafe(|| {
        registry.produce_avro(broker, &topic, [&event])
    }))
    .expect_err("the script refuses the event");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted panic message");

    assert!(message.contains("on field face_value_cents"), "{message}");
    assert!(!message.contains("SECRET-VALUE"), "{message}");
    assert!(broker
        .read_all(&topic, 0, Duration::from_secs(2))
        .is_empty());
}
