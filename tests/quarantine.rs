//! `pseudopipe quarantine` against real brokers: an operator's wrong policy quarantines
//! valid events (a detector finds the e-mail addresses the policy keeps by mistake; events
//! without one pass), the quarantine records name the field and the detector, `quarantine
//! list` counts them, the policy is fixed, and `quarantine replay` brings every event to the
//! cloud exactly once, recorded in the audit log; the same replay run again replays
//! nothing. The sink's quarantine replays the same way.

use std::time::Duration;

use serde_json::Value;
use testkit::wait_until;

use crate::harness::*;

const EVENTS: u64 = 300;
const SEED: u64 = 41;

#[test]
fn a_wrong_policy_quarantines_then_a_replay_brings_every_event_to_the_cloud_exactly_once() {
    let fixed = std::fs::read_to_string(POLICY).unwrap();
    let wrong = keep_email(&fixed);
    assert_ne!(wrong, fixed, "the policy tokenizes customer.email");
    let p = Pipeline::new()
        .with_delivery(Delivery::ExactlyOnce)
        .with_policy(&wrong);
    let expected = expected(EVENTS, 0.0, SEED);
    p.produce(EVENTS, 0.0, SEED);
    let logs = tempfile::tempdir().unwrap();
    let (mut ingest, mut sink) = p.start_stages(logs.path());

    // Every event with an e-mail address quarantined, counted by field and detector.
    let with_email = expected
        .valid
        .values()
        .filter(|event| event["customer"]["email"].is_string())
        .count();
    assert!(
        with_email > EVENTS as usize / 2,
        "{with_email} events have an e-mail"
    );
    let finding = [("field", "customer.email"), ("detector", "email")];
    assert!(
        wait_until(Duration::from_secs(120), || ingest
            .metrics()
            .value("pseudopipe_detector_quarantined_total", &finding)
            >= with_email as f64),
        "{}",
        ingest
            .process
            .failure("quarantining every event with an e-mail address")
    );
    let quarantined = p
        .onprem
        .read_all(&p.quarantine, with_email, Duration::from_secs(60));
    assert_eq!(quarantined.len(), with_email);
    for record in &quarantined {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_deref())
                .map(|value| std::str::from_utf8(value).unwrap())
        };
        assert_eq!(
            header("pseudopipe-reason"),
            Some("personal_value_in_kept_field")
        );
        assert_eq!(header("pseudopipe-field"), Some("customer.email"));
        assert_eq!(header("pseudopipe-detector"), Some("email"));
    }

    // The operator's view: counts, no value.
    let listed = run(&p, "list", &["--json"]).ok();
    let listing: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listing["quarantined"], with_email);
    let groups = listing["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{listing}");
    assert_eq!(groups[0]["stage"], "ingest");
    assert_eq!(groups[0]["reason"], "personal_value_in_kept_field");
    assert_eq!(groups[0]["field"], "customer.email");
    assert_eq!(groups[0]["detector"], "email");
    assert_eq!(groups[0]["records"], with_email);
    assert_eq!(groups[0]["replayed"], 0);
    let some_email = expected
        .valid
        .values()
        .find_map(|event| event["customer"]["email"].as_str())
        .unwrap()
        .to_owned();
    assert!(!listed.contains(&some_email), "list prints no value");
    let table = run(&p, "list", &[]).ok();
    assert!(table.contains("customer.email"), "{table}");
    assert!(!table.contains(&some_email), "list prints no value");
    // Values only with a ticket, recorded before they are printed.
    let refused = run(&p, "list", &["--show-values", "--to-offset", "4"]).fails();
    assert!(refused.contains("--ticket is required"), "{refused}");
    let shown = run(
        &p,
        "list",
        &["--show-values", "--to-offset", "4", "--ticket", "INC-3"],
    )
    .ok();
    let shown: Vec<Value> = shown
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(shown.len(), 5, "offsets 0 to 4 of the quarantine");
    assert!(shown
        .iter()
        .all(|record| record["field"] == "customer.email"
            && record["payload"].as_str().is_some_and(|p| p.contains("@"))));
    let log = std::fs::read_to_string(p.scratch.audit_log()).unwrap();
    assert!(
        log.lines().any(|line| line.contains("quarantine_show")
            && line.contains("ticket=INC-3")
            && line.contains("records=5")),
        "the audit log records what was shown"
    );

    // The policy is fixed and both stages restarted with it.
    std::fs::write(&p.policy, &fixed).unwrap();
    for stage in [&mut ingest, &mut sink] {
        assert!(stage
            .process
            .terminate(Duration::from_secs(60))
            .is_some_and(|status| status.success()));
        stage.restart();
    }

    // Replay, then the same command again.
    let selection = [
        "--reason",
        "personal_value_in_kept_field",
        "--ticket",
        "CHG-7",
    ];
    let first = run(&p, "replay", &selection).ok();
    assert!(
        first.contains(&format!("replayed {with_email} records")),
        "{first}"
    );
    let again = run(&p, "replay", &selection).ok();
    assert!(
        again.contains(&format!(
            "nothing to replay: {with_email} records selected, {with_email} of them replayed already"
        )),
        "{again}"
    );

    let cloud = read_until_complete(
        &p.cloud,
        &p.cloud_topic,
        expected.valid.len(),
        Duration::from_secs(120),
    );
    assert_eq!(check_cloud(&p, &expected, &cloud), 0, "exactly once");
    assert_eq!(cloud.len(), EVENTS as usize);

    // The audit log records the replay: its selection and count, at its start and end.
    p.scratch.audit_verify().ok();
    let log = std::fs::read_to_string(p.scratch.audit_log()).unwrap();
    let replays: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["action"] == "quarantine_replay")
        .map(|entry| entry["details"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(replays.len(), 2, "start and end: {replays:?}");
    assert!(replays[0].contains("phase=start"), "{replays:?}");
    assert!(
        replays[0].contains(&format!("records={with_email}")),
        "{replays:?}"
    );
    assert!(replays[0].contains("ticket=CHG-7"), "{replays:?}");
    assert!(replays[0].contains("reason=personal_value_in_kept_field"));
    assert!(replays[1].contains("phase=end"), "{replays:?}");
    assert!(
        replays[1].contains(&format!("records={with_email}")),
        "{replays:?}"
    );
    assert!(
        replays.iter().all(|details| !details.contains(&some_email)),
        "no value on the trail"
    );
    // The compliance report shows the replay among the keyring-wide entries.
    let markdown = p.scratch.path("report.md");
    p.scratch.audit_report("md", &markdown).ok();
    let report = std::fs::read_to_string(&markdown).unwrap();
    let section = report
        .split("Quarantine replays and values shown")
        .last()
        .unwrap();
    assert!(
        section.contains("CHG-7") && section.contains("INC-3"),
        "{report}"
    );

    // The sink's quarantine replays the same way: a record that is not the policy's output,
    // written to the pseudonymized topic, goes back there and is refused again.
    p.onprem.produce(
        &p.pseudonymized,
        [testkit::NewRecord::new(r#"{"hostile":true}"#)],
    );
    let sink_records = |p: &Pipeline| -> Value {
        serde_json::from_str(&run(p, "list", &["--json", "--stage", "sink"]).ok()).unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(60), || sink_records(&p)["selected"]
            == 1),
        "{}",
        sink.process.failure("quarantining the hostile record")
    );
    let selection = ["--stage", "sink", "--ticket", "CHG-8"];
    let replayed = run(&p, "replay", &selection).ok();
    assert!(
        replayed.contains("replayed 1 records (1 to redemptions.pseudonymized"),
        "{replayed}"
    );
    assert!(
        wait_until(Duration::from_secs(60), || sink_records(&p)["selected"]
            == 2),
        "{}",
        sink.process
            .failure("quarantining the replayed record again")
    );
    let listing = sink_records(&p);
    assert_eq!(listing["groups"][0]["reason"], "leak_guard", "{listing}");
    assert_eq!(
        listing["replayed"], 1,
        "the record refused again is a new quarantine record: {listing}"
    );
}

/// The default policy with `customer.email` kept instead of tokenized: an operator's
/// mistake the e-mail detector catches.
fn keep_email(policy: &str) -> String {
    policy
        .lines()
        .map(|line| {
            if line.starts_with("\"customer.email\"") {
                "\"customer.email\" = \"keep\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pseudopipe quarantine COMMAND` on the test's quarantine topic, with the keyring
/// that records it, and `extra`.
fn run(p: &Pipeline, command: &str, extra: &[&str]) -> crate::util::Run {
    let brokers = p.onprem.bootstrap();
    let mut args = vec![
        "quarantine",
        command,
        "--brokers",
        &brokers,
        "--topic",
        &p.quarantine,
        "--keyring",
        p.scratch.keyring.to_str().unwrap(),
        "--kek-file",
        p.scratch.kek.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    p.scratch.run(&args)
}
