//! Live key rotation through two real brokers: a compliance officer rotates the tenant's
//! key three times while events flow (exactly once); the running ingest applies
//! each rotation between two transactions and records it. Counted from the topics:
//! nothing lost, every cloud token's version is the one the audit log's switch offsets
//! give for its input record, the bridge topic pairs old and new tokens of the same
//! customer, and the audit log is mirrored to its topic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Record;

use crate::harness::*;

/// Seconds each quarter of the events takes to produce.
const QUARTER_SECONDS: u64 = 3;
const SEED: u64 = 31;
/// A known person (the schema's example event), who redeems once per key version.
const PERSON: &str = include_str!("../schemas/coupon_redemption.json");

/// The known person's e-mail, on a domain the simulator never draws: the example's own
/// (`Emilie.Dupont@example.fr`) is one it can draw, and a simulated customer who had it
/// would be found by the data-subject request too.
const PERSON_EMAIL: &str = "Emilie.Dupont@known-person.test";

/// The known person's `n`-th redemption, with its own `event_id`.
fn person_event(n: u64) -> Value {
    let mut event: Value = serde_json::from_str(PERSON).unwrap();
    event["event_id"] = format!("00000000-0000-4000-8000-{n:012}").into();
    event["customer"]["email"] = PERSON_EMAIL.into();
    event
}

/// Per input partition, from which offset on each version was used: the `key_switch`
/// entries of the audit log (an instance's first version starts at offset 0).
struct Switches {
    /// (version, per partition the first offset processed with it)
    steps: Vec<(u64, BTreeMap<i32, i64>)>,
}

impl Switches {
    fn from_log(entries: &[Value]) -> Switches {
        let mut steps = Vec::new();
        for entry in entries {
            let version = entry["key_version"].as_u64();
            match (entry["action"].as_str(), version) {
                (Some("ingest_start"), Some(version)) => steps.push((version, BTreeMap::new())),
                (Some("key_switch"), Some(version)) => {
                    let details = entry["details"].as_str().unwrap();
                    let offsets = detail(details, "offsets").unwrap();
                    let firsts = if offsets == "none" {
                        BTreeMap::new()
                    } else {
                        offsets
                            .split(',')
                            .map(|pair| {
                                let (partition, offset) = pair.split_once(':').unwrap();
                                (partition.parse().unwrap(), offset.parse().unwrap())
                            })
                            .collect()
                    };
                    steps.push((version, firsts));
                }
                _ => {}
            }
        }
        Switches { steps }
    }

    /// The version the audit log says the record at `partition`/`offset` was tokenized
    /// with: the last switch whose first offset for that partition is at most `offset`
    /// (a partition the instance had not read yet at a switch starts with it).
    fn version_at(&self, partition: i32, offset: i64) -> u64 {
        self.steps
            .iter()
            .filter(|(_, firsts)| firsts.get(&partition).is_none_or(|first| *first <= offset))
            .map(|(version, _)| *version)
            .next_back()
            .expect("ingest_start names the first version")
    }
}

/// The value of `key=value` in an audit entry's details.
fn detail<'a>(details: &'a str, key: &str) -> Option<&'a str> {
    details
        .split(' ')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The key version of a token `v3.…`.
fn version_of(token: &str) -> u64 {
    token[1..token.find('.').unwrap()].parse().unwrap()
}

fn audit_entries(p: &Pipeline) -> Vec<Value> {
    std::fs::read_to_string(p.scratch.audit_log())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn three_rotations_while_events_flow_apply_between_transactions_and_are_audited() {
    let p = Pipeline::new()
        .with_delivery(Delivery::ExactlyOnce)
        .with_keys_line(r#"check_interval = "200ms""#)
        .with_keys_line(r#"bridge_overlap = "1h""#);
    let logs = tempfile::tempdir().unwrap();
    let (mut ingest, mut sink) = p.start_stages(logs.path());
    let consumed = |ingest: &Stage| {
        ingest
            .metrics()
            .value("pseudopipe_events_consumed_total", &[])
    };

    // Retail systems produce four quarters of the events, each with another seed; the
    // compliance officer rotates while the first three flow. Once ingest uses the new
    // version and has caught up, the known person redeems again (so that each of their
    // redemptions is tokenized with the next version).
    let chunk = volume() / 4;
    let mut expected = expected(chunk, 0.0, SEED);
    let mut produced = 0.0;
    let person = |n: u64, expected: &mut Expected| {
        let event = person_event(n);
        expected.valid.insert(
            event["event_id"].as_str().unwrap().to_owned(),
            event.clone(),
        );
        p.onprem.produce(&p.raw, [event]);
    };
    person(1, &mut expected);
    produced += 1.0;
    let started = Instant::now();
    for quarter in 0..4 {
        let seed = SEED + quarter;
        if quarter > 0 {
            expected
                .valid
                .extend(crate::harness::expected(chunk, 0.0, seed).valid);
        }
        let mut producer =
            p.produce_in_background(chunk, 0.0, seed, chunk.div_ceil(QUARTER_SECONDS));
        produced += chunk as f64;
        if quarter < 3 {
            let threshold = produced - chunk as f64 / 2.0;
            assert!(
                testkit::wait_until(Duration::from_secs(120), || consumed(&ingest) >= threshold),
                "ingest consumes {threshold} events"
            );
            p.scratch.keys(&["rotate", "--tenant", TENANT]).ok();
            let version = quarter as f64 + 2.0;
            assert!(
                testkit::wait_until(Duration::from_secs(60), || ingest
                    .metrics()
                    .value("pseudopipe_key_active_version", &[("tenant", TENANT)])
                    == version),
                "the running ingest switches to v{version}"
            );
            eprintln!(
                "{:5.1} s: rotated after {threshold} events; ingest uses v{version}",
                started.elapsed().as_secs_f64()
            );
        }
        assert!(producer
            .wait_for_exit(Duration::from_secs(120))
            .is_some_and(|status| status.success()));
        if quarter < 3 {
            assert!(
                testkit::wait_until(Duration::from_secs(120), || consumed(&ingest) >= produced),
                "ingest catches up"
            );
            person(quarter + 2, &mut expected);
            produced += 1.0;
        }
    }
    let expected = expected;

    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(300),
    );
    let duplicates = check_cloud_events(&expected, &cloud);
    let ingest_metrics = ingest.metrics();
    assert_eq!(
        ingest_metrics.value("pseudopipe_key_switches_total", &[("tenant", TENANT)]),
        3.0
    );
    assert_eq!(duplicates, 0, "exactly once");
    let bridged = ingest_metrics.value("pseudopipe_bridge_pairs_total", &[]) as usize;
    // Ingest ends its run cleanly: flushes the bridge, records its stop.
    assert!(
        ingest
            .process
            .terminate(Duration::from_secs(60))
            .is_some_and(|status| status.success()),
        "ingest stops cleanly on SIGTERM"
    );
    sink.process.terminate(Duration::from_secs(60));

    // Every cloud token's version is the one the audit log gives for its input record.
    let entries = audit_entries(&p);
    let switches = Switches::from_log(&entries);
    let versions: Vec<u64> = switches.steps.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        [1, 2, 3, 4],
        "one start and three switches: {versions:?}"
    );
    let raw = p
        .onprem
        .read_all(&p.raw, 4 * chunk as usize, Duration::from_secs(120));
    let origin: HashMap<String, (i32, i64)> = raw
        .iter()
        .map(|r| {
            let id = r.json()["event_id"].as_str().unwrap().to_owned();
            (id, (r.partition, r.offset))
        })
        .collect();
    let mut per_version = BTreeMap::<u64, usize>::new();
    for record in &cloud {
        let event = record.json();
        let id = event["event_id"].as_str().unwrap();
        let (partition, offset) = origin[id];
        let card = event["customer"]["loyalty_card"].as_str().unwrap();
        let expected_version = switches.version_at(partition, offset);
        assert_eq!(
            version_of(card),
            expected_version,
            "event at {partition}/{offset}: tokenized with v{} where the audit log says v{expected_version}",
            version_of(card)
        );
        for field in ["email", "phone"] {
            if let Some(token) = event["customer"][field].as_str() {
                assert_eq!(version_of(token), expected_version, "{field}");
            }
        }
        *per_version.entry(expected_version).or_default() += 1;
    }
    eprintln!("cloud records per key version: {per_version:?}");
    assert_eq!(
        per_version.len(),
        4,
        "every version tokenized events: {per_version:?}"
    );

    // The bridge pairs a customer's tokens across each rotation.
    let bridge = p
        .onprem
        .read_all(&p.bridge_topic, bridged, Duration::from_secs(120));
    assert_eq!(
        bridge.len(),
        bridged,
        "every pair handed to the bridge topic is there"
    );
    let pairs: HashSet<(String, String)> = bridge
        .iter()
        .map(Record::json)
        .filter(|pair| pair["field"] == "customer.loyalty_card")
        .map(|pair| {
            (
                pair["old"].as_str().unwrap().to_owned(),
                pair["new"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (old, new) in &pairs {
        assert_eq!(version_of(old) + 1, version_of(new), "{old} -> {new}");
    }
    let mut tokens_of_card: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    for record in &cloud {
        let event = record.json();
        let id = event["event_id"].as_str().unwrap();
        let card = expected.valid[id]["customer"]["loyalty_card"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = event["customer"]["loyalty_card"]
            .as_str()
            .unwrap()
            .to_owned();
        tokens_of_card
            .entry(card)
            .or_default()
            .insert(version_of(&token), token);
    }
    let known = tokens_of_card
        .get("6280 0012 3456 7890")
        .expect("the known person's records are in the cloud");
    assert_eq!(
        known.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "the known person redeemed under every version"
    );
    let mut linked = 0;
    for tokens in tokens_of_card.values() {
        for (version, token) in tokens {
            if let Some(next) = tokens.get(&(version + 1)) {
                assert!(
                    pairs.contains(&(token.clone(), next.clone())),
                    "a customer seen with v{version} and v{} is linked by the bridge",
                    version + 1
                );
                linked += 1;
            }
        }
    }
    eprintln!(
        "bridge: {} card pairs; {linked} times a customer was seen on both sides of a rotation, all linked",
        pairs.len()
    );
    assert!(
        linked >= 3,
        "the known person is linked across the three rotations"
    );

    // A data-subject request finds the known person's records in the cloud under every
    // version, and its own audit entry is mirrored too.
    let bootstrap = p.cloud.bootstrap();
    let properties = scan_properties(&p.cloud);
    let mut args = vec![
        "--json",
        "--scan-brokers",
        &bootstrap,
        "--scan-topic",
        &p.cloud_topic,
    ];
    for property in &properties {
        args.extend(["--scan-property", property]);
    }
    let answer: Value = serde_json::from_str(&subject(&p, "DSR-2026-12", &args).ok()).unwrap();
    let mut found: Vec<(String, u64)> = answer["scan"]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let version = m["fields"][0]["version"].as_u64().unwrap();
            (m["event_id"].as_str().unwrap().to_owned(), version)
        })
        .collect();
    found.sort();
    let wanted: Vec<(String, u64)> = (1..=4)
        .map(|n| (person_event(n)["event_id"].as_str().unwrap().to_owned(), n))
        .collect();
    assert_eq!(found, wanted, "subject finds the person under each version");

    // The audit log is mirrored to its topic, switches and bridges included.
    let mirrored = p
        .onprem
        .read_all(&p.audit_topic, entries.len(), Duration::from_secs(30));
    let actions: HashSet<String> = mirrored
        .iter()
        .map(|r| r.json()["action"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "ingest_start",
        "rotate",
        "key_switch",
        "bridge_start",
        "bridge_end",
    ] {
        assert!(actions.contains(action), "{action} mirrored: {actions:?}");
    }
    // An auditor verifies the whole trail with the public key alone; editing any entry is
    // detected and named.
    verify_with_the_public_key_alone(&p);
    // The report for people shows the three switches with their offsets.
    let report =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rotation-audit-report.html");
    let markdown = p.scratch.path("report.md");
    for (format, out) in [("html", &report), ("md", &markdown)] {
        p.scratch.audit_report(format, out).ok();
    }
    let markdown = std::fs::read_to_string(&markdown).unwrap();
    for switch in entries
        .iter()
        .filter(|entry| entry["action"] == "key_switch")
    {
        let offsets = detail(switch["details"].as_str().unwrap(), "offsets")
            .unwrap()
            .split(',')
            .map(|pair| {
                let (partition, offset) = pair.split_once(':').unwrap();
                format!("p{partition}: {offset}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        assert!(markdown.contains(&offsets), "the report shows {offsets}");
    }
    eprintln!("audit report of the run: {}", report.display());

    let stop = entries
        .iter()
        .find(|entry| entry["action"] == "ingest_stop")
        .expect("the stop of the run is recorded");
    let counted: usize = detail(stop["details"].as_str().unwrap(), "events")
        .unwrap()
        .split(',')
        .map(|pair| pair.split_once(':').unwrap().1.parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, expected.valid.len(), "events per version add up");
    assert_eq!(per_version.values().sum::<usize>(), expected.valid.len());

    // The report counts, per version, the events the cloud holds tokens of that version
    // for: by ingest, none by batch runs.
    let section = &markdown[markdown
        .find(&format!("## Tenant {TENANT}"))
        .expect("the tenant's section")..];
    let table = &section[section.find("### Key versions").unwrap()..];
    let shown: BTreeMap<u64, (String, String, String)> = table
        .lines()
        .skip_while(|line| !line.starts_with("| Version"))
        .skip(2)
        .take_while(|line| line.starts_with("| "))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim_start_matches("| ")
                .trim_end_matches(" |")
                .split(" | ")
                .collect();
            let [version, .., ingest, batch, total] = cells[..] else {
                panic!("a versions row: {line}")
            };
            (
                version.parse().unwrap(),
                (ingest.into(), batch.into(), total.into()),
            )
        })
        .collect();
    let grouped = |n: usize| {
        let digits = n.to_string();
        let mut out = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        out
    };
    let wanted: BTreeMap<u64, (String, String, String)> = per_version
        .iter()
        .map(|(version, n)| (*version, (grouped(*n), "—".into(), grouped(*n))))
        .collect();
    assert_eq!(shown, wanted, "the report's events by ingest per version");
}

/// Every valid event in the cloud, nothing else; returns the duplicates.
fn check_cloud_events(expected: &Expected, cloud: &[Record]) -> usize {
    let ids: Vec<String> = cloud
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    let lost = expected
        .valid
        .keys()
        .filter(|id| !distinct.contains(id))
        .count();
    assert_eq!(lost, 0, "{lost} events lost");
    assert!(distinct.iter().all(|id| expected.valid.contains_key(*id)));
    ids.len() - distinct.len()
}

/// Crypto-shredding while ingest runs: once the active version is retired, the running
/// ingest quarantines the tenant's events (`tenant_suspended`); once it is destroyed,
/// `lookup` and `subject` can no longer compute its tokens and the keyring no longer holds
/// its material; after `keys rotate`, events flow again under the new version.
#[test]
fn a_destroyed_version_is_refused_by_a_running_ingest_lookup_and_subject() {
    let p = Pipeline::new().with_keys_line(r#"check_interval = "200ms""#);
    let logs = tempfile::tempdir().unwrap();
    let (ingest, _sink) = p.start_stages(logs.path());
    let suspended = || {
        ingest
            .metrics()
            .value("pseudopipe_tenant_suspended", &[("tenant", TENANT)])
    };

    p.onprem.produce(&p.raw, [person_event(1)]);
    let first = p.cloud.read_all(&p.cloud_topic, 1, Duration::from_secs(60));
    assert_eq!(first.len(), 1);
    let wrapped_before = std::fs::read_to_string(&p.scratch.keyring).unwrap();

    p.scratch
        .keys(&["retire", "--tenant", TENANT, "--version", "1"])
        .ok();
    p.scratch
        .keys(&["destroy", "--tenant", TENANT, "--version", "1"])
        .ok();
    assert!(
        testkit::wait_until(Duration::from_secs(30), || suspended() == 1.0),
        "the running ingest suspends the tenant"
    );
    p.onprem.produce(&p.raw, [person_event(2)]);
    let quarantined = p.onprem.read_all(&p.quarantine, 1, Duration::from_secs(60));
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        quarantined[0].header("pseudopipe-reason"),
        Some("tenant_suspended")
    );

    // The material is gone from the keyring file; lookup and subject say so.
    let keyring: Value =
        serde_json::from_str(&std::fs::read_to_string(&p.scratch.keyring).unwrap()).unwrap();
    let v1 = &keyring["body"]["tenants"][TENANT][0];
    assert_eq!(v1["state"], "destroyed");
    assert!(v1.get("wrapped").is_none(), "{v1}");
    let before: Value = serde_json::from_str(&wrapped_before).unwrap();
    let old_wrapped = before["body"]["tenants"][TENANT][0]["wrapped"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!std::fs::read_to_string(&p.scratch.keyring)
        .unwrap()
        .contains(&old_wrapped));
    let lookup = p.scratch.run_with_stdin(
        &[
            "lookup",
            "--keyring",
            p.scratch.keyring.to_str().unwrap(),
            "--kek-file",
            p.scratch.kek.to_str().unwrap(),
            "--tenant",
            TENANT,
            "--domain",
            "email",
            "--normalizer",
            "email",
            "--ticket",
            "DSR-9",
            "-",
        ],
        Some(PERSON_EMAIL.as_bytes()),
    );
    let lookup_out = lookup.ok();
    assert!(!lookup_out.contains("v1."), "no v1 token: {lookup_out}");
    assert!(lookup.stderr().contains("destroyed"), "{}", lookup.stderr());
    let subject = subject(&p, "DSR-9", &[]);
    let answer = subject.stdout() + &subject.stderr();
    assert!(
        answer.contains("destroyed") && !answer.contains("v1."),
        "{answer}"
    );

    // A new version resumes the tenant.
    p.scratch.keys(&["rotate", "--tenant", TENANT]).ok();
    assert!(
        testkit::wait_until(Duration::from_secs(30), || suspended() == 0.0),
        "the running ingest resumes the tenant"
    );
    p.onprem.produce(&p.raw, [person_event(3)]);
    let cloud = p.cloud.read_all(&p.cloud_topic, 2, Duration::from_secs(60));
    // The record key is the card's token, which changes with the version: the two records
    // may sit in different partitions, so their order is not the cloud's to keep.
    let mut versions: Vec<u64> = cloud
        .iter()
        .map(|r| version_of(r.json()["customer"]["loyalty_card"].as_str().unwrap()))
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        [1, 2],
        "before the retirement and after the rotation"
    );
    // The audit mirror's clients log nothing a newcomer cannot act on (rdkafka's default
    // context would dump each statistics report).
    let log = std::fs::read_to_string(logs.path().join("ingest.log")).unwrap();
    assert!(!log.contains("Client stats"), "{log}");
}

/// `audit verify --public-key` passes on the trail as written, and fails, naming the line,
/// on a copy with any one entry edited.
fn verify_with_the_public_key_alone(p: &Pipeline) {
    let public = p.scratch.path("audit.pub");
    p.scratch
        .run(&[
            "audit",
            "export-key",
            "--keyring",
            p.scratch.keyring.to_str().unwrap(),
            "--kek-file",
            p.scratch.kek.to_str().unwrap(),
            "--out",
            public.to_str().unwrap(),
        ])
        .ok();
    let log = p.scratch.audit_log();
    let head = p.scratch.path("keyring.json.audit.jsonl.head");
    let verify = |log: &std::path::Path| {
        p.scratch.run(&[
            "audit",
            "verify",
            "--audit-log",
            log.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
            "--head",
            head.to_str().unwrap(),
        ])
    };
    let intact = verify(&log).ok();
    assert!(intact.starts_with("OK"), "{intact}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let tampered = p.scratch.path("tampered.jsonl");
    for (index, line) in lines.iter().enumerate() {
        let mut entry: Value = serde_json::from_str(line).unwrap();
        let details = entry["details"].as_str().unwrap_or("").to_owned();
        entry["details"] = format!("{details} edited").into();
        let mut copy = lines.clone();
        copy[index] = serde_json::to_string(&entry).unwrap();
        std::fs::write(&tampered, copy.join("\n") + "\n").unwrap();
        let run = verify(&tampered);
        assert!(
            !run.output.status.success(),
            "an edit of line {} is detected",
            index + 1
        );
        assert!(
            run.stdout().contains(&format!("line {}", index + 1)),
            "the edited line is named: {}",
            run.stdout()
        );
    }
    eprintln!(
        "audit verify --public-key: {} entries intact; each one edited, detected",
        lines.len()
    );
}

/// `pseudopipe subject` for the known person's e-mail address, with `extra` options.
fn subject(p: &Pipeline, ticket: &str, extra: &[&str]) -> crate::util::Run {
    let mut args = vec![
        "subject",
        "--policy",
        POLICY,
        "--keyring",
        p.scratch.keyring.to_str().unwrap(),
        "--kek-file",
        p.scratch.kek.to_str().unwrap(),
        "--tenant",
        TENANT,
        "--email",
        PERSON_EMAIL,
        "--ticket",
        ticket,
    ];
    args.extend(extra);
    p.scratch.run(&args)
}

/// A keyring that no longer opens (or whose audit log no longer verifies) stops a running
/// ingest, fail closed; with `linger_after_failure` it first keeps serving `/metrics`, so
/// Prometheus sees `pseudopipe_audit_verified` 0 (the alert `PseudopipeAuditVerificationFailed`)
/// and `/readyz` 503.
#[test]
fn a_keyring_that_no_longer_verifies_stops_ingest_and_is_scraped_first() {
    let p = Pipeline::new()
        .with_keys_line(r#"check_interval = "200ms""#)
        .with_metrics_line(r#"linger_after_failure = "30s""#);
    let logs = tempfile::tempdir().unwrap();
    let (mut ingest, _sink) = p.start_stages(logs.path());
    let verified = |ingest: &Stage| {
        ingest
            .metrics()
            .value("pseudopipe_audit_verified", &[("stage", "ingest")])
    };
    assert_eq!(verified(&ingest), 1.0);

    // Tampered at rest: one byte of the authenticated body changed.
    let text = std::fs::read_to_string(&p.scratch.keyring).unwrap();
    let tampered = text.replacen("\"active\"", "\"retired\"", 1);
    assert_ne!(
        text, tampered,
        "the keyring has an active version to tamper with"
    );
    std::fs::write(&p.scratch.keyring, tampered).unwrap();

    assert!(
        testkit::wait_until(Duration::from_secs(20), || verified(&ingest) == 0.0),
        "{}",
        ingest
            .process
            .failure("waiting for pseudopipe_audit_verified 0")
    );
    assert!(
        testkit::wait_until(Duration::from_secs(20), || get(
            ingest.metrics_port,
            "/readyz"
        )
        .0 == 503),
        "/readyz turns 503 while the failed ingest lingers"
    );
    // Still scraped while it lingers.
    assert_eq!(verified(&ingest), 0.0);
    let status = ingest.process.wait_for_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|status| !status.success()),
        "ingest stops on a keyring that no longer verifies: {}",
        ingest.process.failure("waiting for the exit")
    );
    assert!(
        ingest.process.log().contains("Stage failed."),
        "{}",
        ingest.process.log_tail(20)
    );
}
