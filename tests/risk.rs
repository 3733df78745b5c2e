//! `risk` over a pseudonymized history export: its counts equal those computed here from
//! the output file by the definition (docs/compliance.md), per tenant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;
use simulator::{Generator, Kind};

use crate::util::Scratch;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);

/// The default policy's quasi-identifiers, as docs/compliance.md lists them.
const QUASI_IDENTIFIERS: [&str; 6] = [
    "customer.birth_date",
    "customer.address.postal_code",
    "customer.address.country",
    "retailer.store_id",
    "retailer.channel",
    "device.ip",
];

/// Per tenant: (events, subjects, classes, events below k, subjects below k), by the
/// definition: a class is the events equal on every quasi-identifier (absent = null), its
/// size the distinct `customer.loyalty_card` tokens in it.
fn by_definition(
    output: &str,
    quasi_identifiers: &[&str],
    k: usize,
) -> BTreeMap<String, (u64, u64, u64, u64, u64)> {
    type Class = (u64, HashSet<String>);
    let mut tenants: BTreeMap<String, HashMap<Vec<String>, Class>> = BTreeMap::new();
    for line in output.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let key = quasi_identifiers
            .iter()
            .map(|path| {
                let pointer = format!("/{}", path.replace('.', "/"));
                match event.pointer(&pointer) {
                    None | Some(Value::Null) => String::new(),
                    Some(value) => value.to_string(),
                }
            })
            .collect();
        let tenant = event["tenant"].as_str().unwrap().to_owned();
        let class = tenants.entry(tenant).or_default().entry(key).or_default();
        class.0 += 1;
        class.1.insert(
            event["customer"]["loyalty_card"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    tenants
        .into_iter()
        .map(|(tenant, classes)| {
            let mut subjects = HashSet::new();
            let mut exposed = HashSet::new();
            let (mut events, mut events_below) = (0, 0);
            for (count, members) in classes.values() {
                events += count;
                subjects.extend(members.iter().cloned());
                if members.len() < k {
                    events_below += count;
                    exposed.extend(members.iter().cloned());
                }
            }
            let figures = (
                events,
                subjects.len() as u64,
                classes.len() as u64,
                events_below,
                exposed.len() as u64,
            );
            (tenant, figures)
        })
        .collect()
}

#[test]
fn risk_counts_classes_below_k_per_tenant_as_defined() {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    // Regulars who come back, from cities and villages, young and old: classes of every
    // size, not only the singletons of a stream of strangers.
    let mut generator = Generator::new(7)
        .with_tenants(vec!["brand-a".into(), "brand-b".into()])
        .with_population(1500);
    let mut input = Vec::new();
    let mut valid = 0;
    for _ in 0..4000 {
        let record = generator.next_record();
        if record.kind == Kind::Valid {
            valid += 1;
            input.extend_from_slice(&record.payload);
            input.push(b'\n');
        }
    }
    let (raw, output) = (s.path("events.jsonl"), s.path("out.jsonl"));
    std::fs::write(&raw, &input).unwrap();
    let str = |path: &Path| path.to_str().unwrap().to_owned();
    s.run(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        &str(&s.keyring),
        "--kek-file",
        &str(&s.kek),
        "--input",
        &str(&raw),
        "--output",
        &str(&output),
        "--quarantine",
        &str(&s.path("quarantine.jsonl")),
    ])
    .ok();

    // The default policy's quasi-identifiers, where the home network singles nearly
    // every customer out, and a coarser set that leaves large classes too.
    let coarse_identifiers = [
        "customer.birth_date",
        "customer.address.country",
        "retailer.channel",
    ];
    let coarse = s.path("coarse.toml");
    let default_policy = std::fs::read_to_string(POLICY).unwrap();
    let (fields, _) = default_policy.split_once("\n[risk]").unwrap();
    let list: Vec<String> = coarse_identifiers
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    std::fs::write(
        &coarse,
        format!(
            "{fields}\n[risk]\nquasi_identifiers = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let fine = check_against_definition(&s, POLICY, &QUASI_IDENTIFIERS, &output, valid);
    let coarse = check_against_definition(&s, &str(&coarse), &coarse_identifiers, &output, valid);
    assert_eq!(sizes_seen(&fine), [1], "home networks single customers out");
    let sizes = sizes_seen(&coarse);
    assert!(
        sizes.contains(&1) && sizes.iter().any(|&from| from >= 5),
        "classes on both sides of k: {sizes:?}"
    );

    let table = s
        .run(&["risk", "--policy", POLICY, "--input", &str(&output)])
        .ok();
    assert!(
        table.contains("EVENTS BELOW K") && table.contains("brand-b"),
        "{table}"
    );
    assert!(!table.contains("v1."), "no token is printed: {table}");

    // The page a compliance officer opens: a bar per class size, those below k marked.
    let page = s.path("risk.html");
    s.run(&[
        "risk",
        "--policy",
        POLICY,
        "--input",
        &str(&output),
        "--format",
        "html",
        "--out",
        &str(&page),
    ])
    .ok();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("<svg class=\"sizes\"").count(),
        2,
        "one chart per tenant"
    );
    assert!(html.contains("<rect class=\"below\"") && !html.contains("v1."));
}

/// The smallest size of each histogram bucket holding a class, of the first tenant.
fn sizes_seen(json: &Value) -> Vec<u64> {
    json["tenants"][0]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|bucket| bucket["classes"].as_u64().unwrap() > 0)
        .map(|bucket| bucket["from"].as_u64().unwrap())
        .collect()
}

/// `risk --json` under `policy` over `output`: it names `quasi_identifiers`, gives per
/// tenant the figures of [`by_definition`] and counts every event once, in its histogram
/// too.
fn check_against_definition(
    s: &Scratch,
    policy: &str,
    quasi_identifiers: &[&str],
    output: &Path,
    valid: u64,
) -> Value {
    let run = s.run(&[
        "risk",
        "--policy",
        policy,
        "--input",
        output.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let json: Value = serde_json::from_str(&run.ok()).unwrap();
    assert_eq!(
        json["quasi_identifiers"],
        serde_json::json!(quasi_identifiers)
    );
    assert_eq!(json["not_json"], 0);
    let tenants = json["tenants"].as_array().unwrap();
    let reported: BTreeMap<String, (u64, u64, u64, u64, u64)> = tenants
        .iter()
        .map(|t| {
            assert_eq!(t["k"], 5);
            let n = |name: &str| t[name].as_u64().unwrap();
            let figures = (
                n("events"),
                n("subjects"),
                n("classes"),
                n("events_below_k"),
                n("subjects_below_k"),
            );
            (t["tenant"].as_str().unwrap().to_owned(), figures)
        })
        .collect();
    let written = std::fs::read_to_string(output).unwrap();
    assert_eq!(reported, by_definition(&written, quasi_identifiers, 5));
    let events: u64 = reported.values().map(|figures| figures.0).sum();
    assert_eq!(events, valid, "every pseudonymized event is counted once");
    let histogram_events: u64 = tenants
        .iter()
        .flat_map(|t| t["histogram"].as_array().unwrap())
        .map(|bucket| bucket["events"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_events, valid, "the histogram holds every event");
    json
}

#[test]
fn risk_says_what_is_missing_instead_of_guessing() {
    let s = Scratch::new();
    let policy = s.path("policy.toml");
    std::fs::write(&policy, "[fields]\nid = \"keep\"\n").unwrap();
    let events = s.path("events.jsonl");
    std::fs::write(&events, "{\"id\": 1}\n").unwrap();
    let error = s
        .run(&[
            "risk",
            "--policy",
            policy.to_str().unwrap(),
            "--input",
            events.to_str().unwrap(),
        ])
        .fails();
    assert!(error.contains("declares no quasi-identifiers"), "{error}");
    let usage = s.run(&["risk", "--policy", POLICY]);
    assert_eq!(usage.output.status.code(), Some(2), "a usage error");
    let error = usage.stderr();
    assert!(
        error.contains("--input") && error.contains("--topic"),
        "{error}"
    );
    let error = s
        .run(&["risk", "--policy", POLICY, "--input", "missing.jsonl"])
        .fails();
    assert!(
        error.contains("cannot open the input missing.jsonl"),
        "{error}"
    );
}
