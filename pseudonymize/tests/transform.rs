//! The record path against the default policy: what passes, what is rejected and why,
//! and the invariants of tokens (property tests).

use proptest::prelude::*;
use pseudonymize::{
    is_token, BridgePairs, MasterSecret, Normalizer, Policy, Pseudonymizer, Reason, TokenKey,
};
use serde_json::{json, Value};

const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");
const EVENT: &str = include_str!("../../schemas/coupon_redemption.json");

fn secret(start: u8) -> MasterSecret {
    MasterSecret::from_bytes(std::array::from_fn(|i| start.wrapping_add(i as u8)))
}

fn engine() -> Pseudonymizer {
    let s = secret(7);
    Pseudonymizer::new(
        Policy::from_toml(POLICY).unwrap(),
        [
            ("brand-a".to_string(), 3, &s),
            ("default".to_string(), 1, &s),
        ],
    )
}

fn example() -> Value {
    serde_json::from_str(EVENT).unwrap()
}

fn run(engine: &Pseudonymizer, event: &Value) -> Result<Value, (Reason, String)> {
    engine
        .pseudonymize(&serde_json::to_vec(event).unwrap())
        .map(|(out, _)| serde_json::from_slice(&out).unwrap())
        .map_err(|r| (r.reason, r.message))
}

fn reason_of(payload: &[u8]) -> Reason {
    engine()
        .pseudonymize(payload)
        .expect_err("payload must be rejected")
        .reason
}

#[test]
fn the_example_event_comes_out_pseudonymized() {
    let engine = engine();
    let (bytes, key) = engine.pseudonymize(EVENT.as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    let customer = &out["customer"];
    assert_eq!(customer.get("first_name"), None);
    assert_eq!(customer.get("last_name"), None);
    assert_eq!(customer["address"].get("street"), None);
    assert_eq!(customer["address"].get("city"), None);
    assert_eq!(customer["address"]["postal_code"], "75");
    assert_eq!(customer["address"]["country"], "FR");
    assert_eq!(customer["birth_date"], "1987");
    assert_eq!(out["device"], json!({ "ip": "192.0.2.0/24" }));
    for field in ["loyalty_card", "email", "phone"] {
        assert!(is_token(customer[field].as_str().unwrap()), "{field}");
        assert!(
            customer[field].as_str().unwrap().starts_with("v3."),
            "brand-a's active version is 3"
        );
    }
    assert!(is_token(out["coupon"]["coupon_code"].as_str().unwrap()));
    assert_eq!(
        key.as_deref(),
        customer["loyalty_card"].as_str(),
        "the record key is the card token"
    );
    // Kept fields are byte-identical, field order preserved.
    assert_eq!(out["basket"], example()["basket"]);
    assert_eq!(out["consent"], example()["consent"]);
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "event_id",
            "event_time",
            "tenant",
            "retailer",
            "coupon",
            "basket",
            "customer",
            "device",
            "consent"
        ]
    );
    // The card token is the spec's token of the normalized card.
    let expected = TokenKey::derive(&secret(7), 3, "brand-a", "customer")
        .token(Normalizer::Digits.apply("6280 0012 3456 7890").as_bytes());
    assert_eq!(customer["loyalty_card"], expected);
    // Nothing personal survives.
    let text = String::from_utf8(bytes).unwrap();
    for personal in [
        "Émilie",
        "Dupont",
        "Emilie.Dupont",
        "+33",
        "6280",
        "Roquette",
        "Paris",
        "1987-04-12",
        "192.0.2.44",
        "Mozilla",
        "SPR-8F3K",
        "\"75011\"",
    ] {
        assert!(!text.contains(personal), "{personal} leaked: {text}");
    }
}

/// During an overlap, each token of an event comes with the token its value had under
/// the previous version: the one `docs/token-spec.md` gives for the old key, next to the one
/// in the output. Nothing else of the value.
#[test]
fn a_bridge_pair_is_the_old_versions_token_and_the_output_token() {
    let (active, old) = (secret(7), secret(40));
    let engine = Pseudonymizer::new(
        Policy::from_toml(POLICY).unwrap(),
        [
            ("brand-a".to_string(), 3, &active),
            ("default".to_string(), 1, &active),
        ],
    )
    .bridging([
        ("brand-a".to_string(), 2, &old),
        // No active keys: nothing to pair, skipped.
        ("brand-z".to_string(), 1, &old),
    ]);
    let mut out = Vec::new();
    let mut pairs = BridgePairs::new();
    let outcome = engine
        .pseudonymize_bridged(EVENT.as_bytes(), &mut out, &mut pairs)
        .unwrap();
    assert_eq!((outcome.key_version, outcome.bridged_from), (3, Some(2)));
    let output: Value = serde_json::from_slice(&out).unwrap();
    let input = example();
    let expected = [
        ("coupon.coupon_code", "coupon", Normalizer::Exact),
        ("customer.loyalty_card", "customer", Normalizer::Digits),
        ("customer.email", "email", Normalizer::Email),
        ("customer.phone", "phone", Normalizer::Digits),
    ];
    assert_eq!(
        pairs.len(),
        expected.len(),
        "one pair per token, in document order"
    );
    for (pair, (path, domain, normalizer)) in pairs.iter().zip(expected) {
        assert_eq!((pair.path, pair.domain), (path, domain));
        let pointer = format!("/{}", path.replace('.', "/"));
        let value = input.pointer(&pointer).unwrap().as_str().unwrap();
        let normalized = normalizer.apply(value);
        assert_eq!(
            pair.old,
            TokenKey::derive(&old, 2, "brand-a", domain).token(normalized.as_bytes()),
            "{path}"
        );
        assert_eq!(
            pair.new,
            output.pointer(&pointer).unwrap().as_str().unwrap()
        );
        assert!(pair.old.starts_with("v2.") && pair.new.starts_with("v3."));
    }
    let mut plain = Vec::new();
    engine
        .pseudonymize_into(EVENT.as_bytes(), &mut plain)
        .unwrap();
    assert_eq!(out, plain, "pairing changes nothing in the output");

    // The buffer is cleared by every call: an event outside an overlap, one whose tokens
    // are all null, a rejected one.
    let mut other = example();
    other["tenant"] = json!("default");
    let outcome = engine
        .pseudonymize_bridged(&serde_json::to_vec(&other).unwrap(), &mut out, &mut pairs)
        .unwrap();
    assert_eq!((outcome.bridged_from, pairs.len()), (None, 0));
    let mut nulls = example();
    nulls["coupon"]["coupon_code"] = Value::Null;
    for field in ["loyalty_card", "email", "phone"] {
        nulls["customer"][field] = Value::Null;
    }
    engine
        .pseudonymize_bridged(EVENT.as_bytes(), &mut out, &mut pairs)
        .unwrap();
    let outcome = engine
        .pseudonymize_bridged(&serde_json::to_vec(&nulls).unwrap(), &mut out, &mut pairs)
        .unwrap();
    assert_eq!((outcome.bridged_from, pairs.len()), (None, 0));
    engine
        .pseudonymize_bridged(EVENT.as_bytes(), &mut out, &mut pairs)
        .unwrap();
    let mut bad = example();
    bad["customer"]["nickname"] = json!("Mimi");
    engine
        .pseudonymize_bridged(&serde_json::to_vec(&bad).unwrap(), &mut out, &mut pairs)
        .unwrap_err();
    assert!(pairs.is_empty(), "a rejected event leaves no pair");
}

#[test]
fn reason_codes_round_trip_and_only_no_consent_is_a_drop() {
    for reason in Reason::ALL {
        assert_eq!(Reason::from_code(reason.code()), Some(reason));
        assert_eq!(reason.is_drop(), reason == Reason::NoConsent, "{reason}");
    }
    assert_eq!(
        Reason::from_code("tenant_suspended"),
        Some(Reason::TenantSuspended)
    );
    assert_eq!(Reason::from_code("no_consent"), Some(Reason::NoConsent));
}

#[test]
fn tokens_are_joinable_across_typing_variants() {
    let engine = engine();
    let mut a = example();
    let mut b = example();
    a["customer"]["email"] = json!("Emilie.Dupont@example.fr");
    b["customer"]["email"] = json!("  EMILIE.DUPONT@EXAMPLE.FR ");
    b["customer"]["phone"] = json!("+33 (6) 12-34-56-78");
    b["customer"]["loyalty_card"] = json!("6280001234567890");
    let (a, b) = (run(&engine, &a).unwrap(), run(&engine, &b).unwrap());
    assert_eq!(a["customer"]["email"], b["customer"]["email"]);
    assert_eq!(a["customer"]["phone"], b["customer"]["phone"]);
    assert_eq!(a["customer"]["loyalty_card"], b["customer"]["loyalty_card"]);
}

#[test]
fn nulls_and_absent_optional_fields_pass() {
    let engine = engine();
    let mut event = example();
    event["customer"]["phone"] = Value::Null;
    event.as_object_mut().unwrap().remove("device");
    let out = run(&engine, &event).unwrap();
    assert_eq!(out["customer"]["phone"], Value::Null);
    assert_eq!(out.get("device"), None);
}

#[test]
fn every_bad_input_is_rejected_with_its_reason() {
    let mut cases: Vec<(Vec<u8>, Reason)> = vec![
        (
            EVENT.as_bytes()[..EVENT.len() / 2].to_vec(),
            Reason::MalformedJson,
        ),
        (
            b"{\"event_id\": \"\xff\xfe\"}".to_vec(),
            Reason::InvalidUtf8,
        ),
        (b"[1, 2, 3]".to_vec(), Reason::NotAnObject),
        (b"42".to_vec(), Reason::NotAnObject),
        (b"".to_vec(), Reason::MalformedJson),
        (
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            Reason::TooDeep,
        ),
        (
            format!(
                "{{\"event_id\": {}1{}}}",
                "{\"a\":".repeat(5000),
                "}".repeat(5000)
            )
            .into_bytes(),
            Reason::TooDeep,
        ),
        (vec![b' '; 2 * 1024 * 1024], Reason::TooLarge),
    ];
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut event = example();
        f(&mut event);
        serde_json::to_vec(&event).unwrap()
    };
    cases.extend([
        (
            mutate(&|e| e["customer"]["loyalty_card"] = json!(6.28e15)),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["customer"]["email"] = json!(true)),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["customer"]["phone"] = json!({"number": "+33 6"})),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["customer"]["nickname"] = json!("Mimi")),
            Reason::UnknownField,
        ),
        (
            mutate(&|e| e["loyalty_tier"] = json!("gold")),
            Reason::UnknownField,
        ),
        (
            mutate(&|e| e["basket"]["items"][1]["gift_message"] = json!("Pour Émilie")),
            Reason::UnknownField,
        ),
        (
            mutate(&|e| e["consent"]["analytics"] = json!({"at": "2026"})),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["basket"]["items"] = json!("sku list")),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["customer"] = json!("Émilie Dupont")),
            Reason::WrongType,
        ),
        (
            mutate(&|e| e["customer"]["birth_date"] = json!("Dupont Emilie")),
            Reason::InvalidValue,
        ),
        (
            mutate(&|e| e["device"]["ip"] = json!("999.1.2.3")),
            Reason::InvalidValue,
        ),
        (
            mutate(&|e| {
                e.as_object_mut().unwrap().remove("event_id");
            }),
            Reason::MissingField,
        ),
        (
            mutate(&|e| e["retailer"]["id"] = Value::Null),
            Reason::MissingField,
        ),
        (
            mutate(&|e| e["tenant"] = json!("Brand A!")),
            Reason::InvalidTenant,
        ),
        (mutate(&|e| e["tenant"] = json!(7)), Reason::InvalidTenant),
        (
            mutate(&|e| e["tenant"] = json!("brand-z")),
            Reason::UnknownTenant,
        ),
    ]);
    for (payload, expected) in cases {
        let rejection = engine()
            .pseudonymize(&payload)
            .expect_err("must be rejected");
        assert_eq!(rejection.reason, expected, "{}", rejection.message);
        // Messages name fields, never values.
        for personal in [
            "Mimi",
            "Émilie",
            "Dupont",
            "999.1.2.3",
            "6280",
            "Brand A!",
            "gold",
        ] {
            assert!(
                !rejection.message.contains(personal),
                "message leaks {personal}: {}",
                rejection.message
            );
        }
    }
}

#[test]
fn rejection_messages_name_the_field() {
    let mut event = example();
    event["basket"]["items"][0]["colour"] = json!("red");
    let (_, message) = run(&engine(), &event).unwrap_err();
    // The object is named; the unknown key is not (a key can be personal data too).
    assert_eq!(message, "an unknown field in `basket.items[]`");
    event["basket"]["items"][0]
        .as_object_mut()
        .unwrap()
        .remove("colour");
    event["customer"]["alice@example.com"] = json!(1);
    let (_, message) = run(&engine(), &event).unwrap_err();
    assert!(!message.contains("alice"), "{message}");
    assert_eq!(reason_of(b"{\"event_id\":\"x\",\"event_time\":\"t\",\"retailer\":{\"id\":\"r\"},\"coupon\":{\"campaign_id\":\"c\"},\"x\":1}"), Reason::UnknownField);
}

#[test]
fn events_without_a_tenant_use_the_default_tenant() {
    let mut event = example();
    event.as_object_mut().unwrap().remove("tenant");
    let out = run(&engine(), &event).unwrap();
    assert!(
        out["customer"]["email"]
            .as_str()
            .unwrap()
            .starts_with("v1."),
        "default tenant's version 1"
    );
}

#[test]
fn other_actions_mask_encrypt_and_generalize() {
    let policy = Policy::from_toml(
        r#"
        [fields]
        card = { action = "mask", keep_last = 4 }
        email = { action = "encrypt", domain = "email" }
        born = { action = "generalize", to = "age_band", width = 10 }
        event_time = { action = "generalize", to = "hour" }
        total = { action = "generalize", to = "round", step = 100 }
        "tags[]" = "keep"
        "#,
    )
    .unwrap();
    let s = secret(1);
    let engine = Pseudonymizer::new(policy, [("default".to_string(), 4, &s)]);
    let event = json!({"card": "6280 0012 3456 7890", "email": "a@b.fr", "born": "1987-04-12",
                       "event_time": "2026-11-21T14:03:22.512Z", "total": 4520, "tags": ["x", 2]});
    let out = run(&engine, &event).unwrap();
    assert_eq!(out["card"], "***************7890");
    assert!(pseudonymize::is_encrypted(out["email"].as_str().unwrap()));
    assert!(out["email"].as_str().unwrap().starts_with("e4."));
    let key = pseudonymize::EncryptKey::derive(&s, 4, "default", "email");
    assert_eq!(
        key.decrypt(out["email"].as_str().unwrap()).unwrap(),
        b"a@b.fr"
    );
    assert_eq!(
        out["born"], "30-39",
        "age at the event's time, before the hour is generalized"
    );
    assert_eq!(out["event_time"], "2026-11-21T14:00:00Z");
    assert_eq!(out["total"], 4500);
    assert_eq!(out["tags"], json!(["x", 2]));
}

proptest! {
    #[test]
    fn tokens_are_deterministic(value in "\\PC{0,40}", which in 0usize..6) {
        let n = Normalizer::ALL[which];
        let key = TokenKey::derive(&secret(3), 1, "t", "d");
        let a = key.token(n.apply(&value).as_bytes());
        let b = TokenKey::derive(&secret(3), 1, "t", "d").token(n.apply(&value).as_bytes());
        prop_assert!(is_token(&a));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn tokens_differ_across_tenants_domains_and_versions(value in "\\PC{1,40}") {
        let s = secret(9);
        let base = TokenKey::derive(&s, 1, "brand-a", "email").token(value.as_bytes());
        let tag = |t: &str| t.split_once('.').unwrap().1.to_string();
        prop_assert_ne!(tag(&base), tag(&TokenKey::derive(&s, 1, "brand-b", "email").token(value.as_bytes())));
        prop_assert_ne!(tag(&base), tag(&TokenKey::derive(&s, 1, "brand-a", "phone").token(value.as_bytes())));
        prop_assert_ne!(&base, &TokenKey::derive(&s, 2, "brand-a", "email").token(value.as_bytes()));
        // A new version has a new master secret: the tag itself changes, not just the prefix.
        prop_assert_ne!(tag(&base), tag(&TokenKey::derive(&secret(10), 2, "brand-a", "email").token(value.as_bytes())));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_echo(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(rejection) = engine().pseudonymize(&payload) {
            prop_assert!(!rejection.message.is_empty());
        }
    }
}
