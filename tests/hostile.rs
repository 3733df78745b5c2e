//! Hostile records written straight into the pseudonymized topic, as a misconfigured
//! on-prem producer, a replayed backup or a compromised service would write them: the
//! sink forwards the genuine records only, quarantines each hostile one on-prem with its
//! reason, and nothing personal reaches the cloud topic, the quarantine's messages or the
//! sink's log.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{free_port, NewRecord, Record};

use crate::harness::*;

/// Personal values the hostile records carry; none may cross the link or reach a log.
const PERSONAL: [&str; 8] = [
    "alice.martin@example.com",
    "+33 6 12 34 56 78",
    "4111 1111 1111 1111",
    "4111111111111111",
    "FR7630006000011234567890189",
    "192.168.17.42",
    "Martin-Dupont",
    "2001:db8::7334",
];

/// Genuine pseudonymized records around the hostile ones.
const GENUINE: usize = 200;

#[test]
fn hostile_records_in_the_pseudonymized_topic_are_quarantined_and_nothing_personal_crosses_at_least_once(
) {
    hostile_records_never_cross(Delivery::AtLeastOnce);
}

#[test]
fn hostile_records_in_the_pseudonymized_topic_are_quarantined_and_nothing_personal_crosses_exactly_once(
) {
    hostile_records_never_cross(Delivery::ExactlyOnce);
}

/// One record an attacker (or a mistake) wrote, and the reason the sink must give.
struct Hostile {
    what: &'static str,
    key: Option<String>,
    payload: Vec<u8>,
    reason: &'static str,
}

fn hostile_records_never_cross(delivery: Delivery) {
    let p = Pipeline::new().with_delivery(delivery);
    let genuine = genuine_records(&p, GENUINE);
    let (key, line) = genuine
        .iter()
        .find(|(_, line)| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["customer"]["email"].is_string() && event["customer"]["phone"].is_string()
        })
        .expect("a simulated customer with an e-mail address and a phone");
    let hostile = hostile_records(key, line);

    // The genuine records, with a header a retail system might have set, then the hostile
    // ones in the middle, then the rest: the sink must keep going past each.
    let record = |(key, line): &(String, String)| {
        NewRecord::new(line.as_str())
            .key(key.as_str())
            .header("customer-email", PERSONAL[0])
    };
    let half = genuine.len() / 2;
    p.onprem
        .produce(&p.pseudonymized, genuine[..half].iter().map(record));
    p.onprem.produce(
        &p.pseudonymized,
        hostile.iter().map(|h| {
            let record = NewRecord::new(h.payload.clone());
            match &h.key {
                Some(key) => record.key(key.as_str()),
                None => record,
            }
        }),
    );
    p.onprem
        .produce(&p.pseudonymized, genuine[half..].iter().map(record));

    let logs = p.scratch.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let mut sink = Stage::start(
        "sink",
        p.sink_config(port, true),
        port,
        logs.join("sink.log"),
    );
    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        genuine.len(),
        Duration::from_secs(120),
    );
    let quarantined = p
        .onprem
        .read_all(&p.quarantine, hostile.len(), Duration::from_secs(60));
    sink.process.terminate(Duration::from_secs(30));

    // The cloud holds the genuine records, byte for byte, and nothing else.
    let genuine_lines: HashSet<&str> = genuine.iter().map(|(_, line)| line.as_str()).collect();
    for record in &cloud {
        let payload = record.payload_str().expect("a UTF-8 payload");
        assert!(
            genuine_lines.contains(payload),
            "a record that is not a genuine one reached the cloud ({} bytes)",
            payload.len()
        );
        assert!(
            record.headers.is_empty(),
            "headers crossed the link: {:?}",
            record
                .headers
                .iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        );
        assert_no_personal_value("a cloud record", &record_text(record));
    }
    assert_eq!(
        distinct_events(&cloud),
        genuine.len(),
        "every genuine record reaches the cloud"
    );
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(cloud.len(), genuine.len(), "each once");
    }

    // Each hostile record is in the on-prem quarantine, unchanged, with its reason.
    let mut reasons: BTreeMap<&[u8], Vec<String>> = BTreeMap::new();
    for record in &quarantined {
        assert_eq!(
            record.header("pseudopipe-source-topic"),
            Some(p.pseudonymized.as_str())
        );
        let message = record.header("pseudopipe-message").unwrap_or_default();
        assert_no_personal_value("a quarantine message", message);
        reasons
            .entry(record.payload.as_deref().unwrap_or_default())
            .or_default()
            .push(
                record
                    .header("pseudopipe-reason")
                    .unwrap_or_default()
                    .to_owned(),
            );
    }
    for h in &hostile {
        let got = reasons.get(h.payload.as_slice());
        assert!(
            got.is_some_and(|got| got.iter().all(|reason| reason == h.reason)),
            "{}: expected reason `{}`, quarantined with {got:?}",
            h.what,
            h.reason
        );
    }

    let log = std::fs::read_to_string(logs.join("sink.log")).unwrap();
    assert_no_personal_value("the sink's log", &log);
}

/// `count` simulated events of the test's tenant, pseudonymized by batch mode with the
/// test's keyring: what ingest would have written, as (record key, payload).
fn genuine_records(p: &Pipeline, count: usize) -> Vec<(String, String)> {
    let expected = expected(count as u64, 0.0, 77);
    batch_mode(p, expected.valid.values())
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            let key = event["customer"]["loyalty_card"]
                .as_str()
                .expect("a loyalty-card token")
                .to_owned();
            (key, line.to_owned())
        })
        .collect()
}

/// The attacks of issue 9, each built from one genuine record `line` keyed by `key`.
fn hostile_records(key: &str, line: &str) -> Vec<Hostile> {
    let genuine: Value = serde_json::from_str(line).unwrap();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut event = genuine.clone();
        edit(&mut event);
        event.to_string()
    };
    let without_email = edited(&|event| {
        event["customer"].as_object_mut().unwrap().remove("email");
    });
    let spliced = |text: &str, member: &str| {
        let spliced = text.replacen(r#""customer":{"#, &format!(r#""customer":{{{member},"#), 1);
        assert_ne!(spliced, text, "the genuine record has a customer object");
        spliced
    };
    let keyed = |what, payload: String, reason| Hostile {
        what,
        key: Some(key.to_owned()),
        payload: payload.into_bytes(),
        reason,
    };
    let email = PERSONAL[0];
    let mut hostile = vec![
        keyed(
            "the raw e-mail address, then the token, under one key",
            spliced(line, &format!(r#""email":"{email}""#)),
            "leak_guard",
        ),
        keyed(
            "an escaped spelling of a token field holding the raw address",
            spliced(&without_email, &format!(r#""em\u0061il":"{email}""#)),
            "leak_guard",
        ),
        keyed(
            "an escaped spelling beside the genuine token",
            spliced(line, &format!(r#""\u0065mail":"{email}""#)),
            "leak_guard",
        ),
        keyed(
            "a second object after the record",
            format!(r#"{line} {{"customer":{{"email":"{email}"}}}}"#),
            "leak_guard",
        ),
        keyed(
            "a raw phone number in a token field",
            edited(&|event| event["customer"]["phone"] = json!(PERSONAL[1])),
            "leak_guard",
        ),
        keyed(
            "a card number as a number in a token field",
            edited(&|event| event["customer"]["loyalty_card"] = json!(4111111111111111u64)),
            "leak_guard",
        ),
        keyed(
            "an object in a token field",
            edited(&|event| event["customer"]["email"] = json!({ "address": email })),
            "leak_guard",
        ),
        keyed(
            "a dropped field present",
            edited(&|event| event["customer"]["last_name"] = json!(PERSONAL[6])),
            "leak_guard",
        ),
        keyed(
            "an unknown field named by an e-mail address",
            edited(&|event| event["customer"][email] = json!(1)),
            "leak_guard",
        ),
        keyed(
            "an e-mail address in a kept field",
            edited(&|event| event["retailer"]["store_id"] = json!(email)),
            "personal_value_in_kept_field",
        ),
        keyed(
            "a phone number in a kept field",
            edited(&|event| event["retailer"]["store_id"] = json!(PERSONAL[1])),
            "personal_value_in_kept_field",
        ),
        keyed(
            "a card number in a kept field",
            edited(&|event| event["coupon"]["campaign_id"] = json!(PERSONAL[2])),
            "personal_value_in_kept_field",
        ),
        keyed(
            "an IBAN in a kept field",
            edited(&|event| event["retailer"]["id"] = json!(PERSONAL[4])),
            "personal_value_in_kept_field",
        ),
        keyed(
            "an IPv4 address in a kept field",
            edited(&|event| event["retailer"]["channel"] = json!(PERSONAL[5])),
            "personal_value_in_kept_field",
        ),
        keyed(
            "an IPv6 address in a kept field",
            edited(&|event| event["retailer"]["channel"] = json!(PERSONAL[7])),
            "personal_value_in_kept_field",
        ),
    ];
    let mut invalid_utf8 = spliced(line, r#""email":"alice.martin@example.com""#).into_bytes();
    let at = invalid_utf8.iter().position(|&b| b == b'@').unwrap();
    invalid_utf8[at] = 0xff;
    hostile.push(Hostile {
        what: "invalid UTF-8 in a raw address",
        key: Some(key.to_owned()),
        payload: invalid_utf8,
        reason: "leak_guard",
    });
    hostile.push(Hostile {
        what: "a raw card number as the record key",
        key: Some(PERSONAL[3].to_owned()),
        payload: line.as_bytes().to_vec(),
        reason: "leak_guard",
    });
    hostile
}

/// The key, payload and headers of `record` as text, for a search.
fn record_text(record: &Record) -> String {
    let mut text =
        String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(
        record.key.as_deref().unwrap_or_default(),
    ));
    for (name, value) in &record.headers {
        text.push_str(name);
        text.push_str(&String::from_utf8_lossy(
            value.as_deref().unwrap_or_default(),
        ));
    }
    text
}

fn assert_no_personal_value(place: &str, text: &str) {
    for value in PERSONAL {
        assert!(
            !text.contains(value) && !text.contains("alice.martin"),
            "{place} holds a personal value (the one at index {})",
            PERSONAL.iter().position(|v| *v == value).unwrap()
        );
    }
}
