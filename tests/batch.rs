//! `pseudonymize` over a simulated history export with malformed lines.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use simulator::{Generator, Kind};

use crate::util::{Run, Scratch};

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);

/// `pseudopipe pseudonymize` of `input` into `output` and `quarantine`, plus `extra` options.
fn pseudonymize_file(
    s: &Scratch,
    input: &Path,
    output: &Path,
    quarantine: &Path,
    extra: &[&str],
) -> Run {
    let mut args = vec![
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--quarantine",
        quarantine.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    s.run(&args)
}

/// Malformed lines the simulator does not make, with the reason they must get.
fn extra_bad_lines() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            b"{\"event_id\": \"a\", \"customer\": {\"email\": \"trunc".to_vec(),
            "malformed_json",
        ),
        (b"{\"event_id\": \"\xc3\x28\"}".to_vec(), "invalid_utf8"),
        (b"[{\"event_id\": \"x\"}]".to_vec(), "not_an_object"),
        (
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            "too_deep",
        ),
    ]
}

#[test]
fn a_history_export_is_pseudonymized_and_every_bad_line_quarantined() {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    let mut generator = Generator::new(42)
        .with_tenants(vec!["brand-a".into(), "brand-b".into()])
        .with_malformed_ratio(0.02);
    let mut input = Vec::new();
    let mut expected_good = Vec::new();
    let mut expected_bad: BTreeMap<u64, String> = BTreeMap::new();
    let mut inputs: BTreeMap<String, Value> = BTreeMap::new();
    let mut line = 0u64;
    let extra = extra_bad_lines();
    for i in 0..5000 {
        let record = generator.next_record();
        line += 1;
        input.extend_from_slice(&record.payload);
        input.push(b'\n');
        match record.kind {
            Kind::Valid => {
                let event: Value = serde_json::from_slice(&record.payload).unwrap();
                let id = event["event_id"].as_str().unwrap().to_string();
                expected_good.push(id.clone());
                inputs.insert(id, event);
            }
            Kind::Malformed(m) => {
                expected_bad.insert(line, m.expected_reason().to_string());
            }
        }
        if i % 1000 == 500 {
            let (payload, reason) = &extra[(i / 1000) % extra.len()];
            line += 1;
            input.extend_from_slice(payload);
            input.push(b'\n');
            expected_bad.insert(line, reason.to_string());
        }
    }
    assert!(
        expected_bad.len() > 50,
        "the export has malformed lines: {}",
        expected_bad.len()
    );
    let input_path = s.path("export.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let (output, quarantine) = (s.path("out.jsonl"), s.path("quarantine.jsonl"));
    // An existing, world-readable file is tightened, not kept as it was.
    std::fs::write(&quarantine, "stale").unwrap();
    std::fs::set_permissions(
        &quarantine,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let run = pseudonymize_file(&s, &input_path, &output, &quarantine, &[]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&quarantine).unwrap().permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the quarantine holds raw personal data"
    );
    run.ok();
    let summary = run.stderr();
    assert!(
        summary.contains(&format!(
            "read {line} lines, wrote {} events, quarantined {}",
            expected_good.len(),
            expected_bad.len()
        )),
        "{summary}"
    );

    // Every good event, in input order.
    let out = std::fs::read_to_string(&output).unwrap();
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, expected_good);

    // Every bad line, with its reason and its raw content kept on-prem.
    let got_bad: BTreeMap<u64, String> = std::fs::read_to_string(&quarantine)
        .unwrap()
        .lines()
        .map(|l| {
            let q: Value = serde_json::from_str(l).unwrap();
            assert!(q["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(
                q.get("raw").is_some() || q.get("raw_base64").is_some(),
                "nothing is lost: {l}"
            );
            (
                q["line"].as_u64().unwrap(),
                q["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got_bad, expected_bad);

    // Nothing personal of an event reaches its pseudonymized form.
    for line in out.lines() {
        let output: Value = serde_json::from_str(line).unwrap();
        let input = &inputs[output["event_id"].as_str().unwrap()];
        let leaked = simulator::leaked_fields(input, &output, None);
        assert!(leaked.is_empty(), "personal fields leaked: {leaked:?}");
    }
}

#[test]
fn standard_input_to_standard_output_without_quarantine_file() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let event = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.json"
    ))
    .unwrap();
    let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(&event).unwrap()).unwrap();
    let mut with_nickname: Value = serde_json::from_slice(&event).unwrap();
    with_nickname["customer"]["nickname"] = "Mimi".into();
    let mut input = compact.clone();
    input.extend_from_slice(b"\r\n\n");
    input.extend_from_slice(&serde_json::to_vec(&with_nickname).unwrap());
    input.push(b'\n');
    input.extend_from_slice(&compact);
    let run = s.run_with_stdin(
        &[
            "pseudonymize",
            "--policy",
            POLICY,
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
        ],
        Some(&input),
    );
    let out = run.ok();
    assert_eq!(out.lines().count(), 2);
    let stderr = run.stderr();
    assert!(
        stderr.contains("line 3: rejected (unknown_field)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Mimi"),
        "rejections on stderr carry no content: {stderr}"
    );
    assert!(stderr.contains("skipped 1 blank lines"), "{stderr}");
}

#[test]
fn a_bad_policy_is_explained() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let policy = s.path("policy.toml");
    std::fs::write(&policy, "[fields]\n\"customer.email\" = { action = \"token\", domain = \"email\", normaliser = \"email\" }\n").unwrap();
    let message = s
        .run(&[
            "pseudonymize",
            "--policy",
            policy.to_str().unwrap(),
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
        ])
        .fails();
    assert!(
        message.contains("customer.email") && message.contains("unknown field `normaliser`"),
        "{message}"
    );
}

/// Every core works and the order stays: an export of several blocks, with blank and bad
/// lines, gives byte-identical output and quarantine files on one thread and on three.
#[test]
fn more_threads_give_the_same_files_in_the_same_order() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let mut generator = Generator::new(9)
        .with_tenants(vec!["brand-a".into()])
        .with_malformed_ratio(0.02);
    let mut input = Vec::new();
    for i in 0..40_000 {
        input.extend_from_slice(&generator.next_record().payload);
        input.extend_from_slice(if i % 997 == 0 { b"\n\n" } else { b"\n" });
    }
    let input_path = s.path("export.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let files = |threads: &str| {
        let (output, quarantine) = (
            s.path(&format!("out-{threads}.jsonl")),
            s.path(&format!("quarantine-{threads}.jsonl")),
        );
        let run = pseudonymize_file(
            &s,
            &input_path,
            &output,
            &quarantine,
            &["--threads", threads],
        );
        run.ok();
        assert!(
            run.stderr().contains(&format!("on {threads} threads")),
            "{}",
            run.stderr()
        );
        (
            std::fs::read(output).unwrap(),
            std::fs::read(quarantine).unwrap(),
        )
    };
    let (one_output, one_quarantine) = files("1");
    let (three_output, three_quarantine) = files("3");
    assert_eq!(
        String::from_utf8(one_output.clone())
            .unwrap()
            .lines()
            .count()
            + String::from_utf8(one_quarantine.clone())
                .unwrap()
                .lines()
                .count(),
        40_000
    );
    assert!(one_output == three_output, "the outputs differ");
    assert!(one_quarantine == three_quarantine, "the quarantines differ");
}

/// The `batch` entries of the audit log, as (details) in order.
fn batch_entries(s: &Scratch) -> Vec<String> {
    std::fs::read_to_string(s.audit_log())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry["action"] == "batch")
        .map(|entry| {
            assert_eq!(entry["tenant"], "*", "a run concerns every tenant");
            assert_eq!(entry["actor"], "test-officer");
            entry["details"].as_str().unwrap().to_string()
        })
        .collect()
}

/// With `consent_field` set, a line whose flag is false, null or absent is neither written
/// nor quarantined, only counted; a flag that is not a boolean, or a malformed line
/// whatever its flag, is quarantined. The run is audited at its start and its end.
#[test]
fn lines_without_consent_are_dropped_counted_and_audited() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let policy = s.path("consent.policy.toml");
    std::fs::write(
        &policy,
        format!(
            "consent_field = \"consent.analytics\"\n{}",
            std::fs::read_to_string(POLICY).unwrap()
        ),
    )
    .unwrap();
    let mut generator = Generator::new(5)
        .with_tenants(vec!["brand-a".into()])
        .with_malformed_ratio(0.0);
    let mut input = Vec::new();
    let (mut kept, mut refused) = (Vec::new(), 0);
    for _ in 0..500 {
        let payload = generator.next_record().payload;
        let event: Value = serde_json::from_slice(&payload).unwrap();
        match event["consent"]["analytics"].as_bool() {
            Some(true) => kept.push(event["event_id"].as_str().unwrap().to_string()),
            _ => refused += 1,
        }
        input.extend_from_slice(&payload);
        input.push(b'\n');
    }
    assert!(
        refused > 50,
        "the simulator refuses consent now and then: {refused}"
    );
    let example: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.json"
    )))
    .unwrap();
    let with_flag = |flag: Value| {
        let mut event = example.clone();
        event["consent"]["analytics"] = flag;
        serde_json::to_vec(&event).unwrap()
    };
    let mut absent = example.clone();
    absent["consent"]
        .as_object_mut()
        .unwrap()
        .remove("analytics");
    let mut malformed = with_flag(json!(false));
    malformed.truncate(malformed.len() - 1);
    // Dropped, quarantined (`wrong_type`), dropped, quarantined (`malformed_json`).
    for payload in [
        with_flag(Value::Null),
        with_flag(json!("yes")),
        serde_json::to_vec(&absent).unwrap(),
        malformed,
    ] {
        input.extend_from_slice(&payload);
        input.push(b'\n');
    }
    refused += 2;
    let input_path = s.path("my export.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let (output, quarantine) = (s.path("out.jsonl"), s.path("quarantine.jsonl"));
    let run = s.run(&[
        "pseudonymize",
        "--policy",
        policy.to_str().unwrap(),
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--quarantine",
        quarantine.to_str().unwrap(),
    ]);
    run.ok();
    let summary = run.stderr();
    assert!(
        summary.contains(&format!(
            "read 504 lines, wrote {} events, quarantined 2 (malformed_json=1, wrong_type=1), dropped {refused} without consent,",
            kept.len()
        )),
        "{summary}"
    );
    let ids: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, kept, "exactly the consenting events, in order");
    let reasons: Vec<String> = std::fs::read_to_string(&quarantine)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        ["wrong_type", "malformed_json"],
        "no dropped line is kept"
    );

    let digest = pseudonymize::Policy::from_file(&policy)
        .unwrap()
        .digest()
        .to_string();
    assert_eq!(
        batch_entries(&s),
        [
            format!("phase=start input=my_export.jsonl policy={digest}"),
            format!(
                "phase=end events=v1:{} tenants=brand-a quarantined=2 dropped_no_consent={refused}",
                kept.len()
            ),
        ]
    );
    s.audit_verify().ok();
}

/// A tenant whose active version was retired has its lines quarantined as suspended, and
/// says how to resume it; a run from standard input is audited as such.
#[test]
fn a_retired_tenants_lines_are_quarantined_as_suspended() {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    s.keys(&["retire", "--tenant", "brand-b", "--version", "1"])
        .ok();
    let example: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.json"
    )))
    .unwrap();
    let mut input = Vec::new();
    for tenant in ["brand-b", "brand-a"] {
        let mut event = example.clone();
        event["tenant"] = tenant.into();
        input.extend_from_slice(&serde_json::to_vec(&event).unwrap());
        input.push(b'\n');
    }
    let run = s.run_with_stdin(
        &[
            "pseudonymize",
            "--policy",
            POLICY,
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
        ],
        Some(&input),
    );
    assert_eq!(run.ok().lines().count(), 1, "brand-a's line");
    let stderr = run.stderr();
    assert!(
        stderr.contains("line 1: rejected (tenant_suspended): tenant `brand-b` has no active key version (suspended); `pseudopipe keys rotate` or `keys import --activate` resumes it"),
        "{stderr}"
    );
    let entries = batch_entries(&s);
    assert!(
        entries[0].starts_with("phase=start input=stdin policy="),
        "{entries:?}"
    );
    assert_eq!(
        entries[1],
        "phase=end events=v1:1 tenants=brand-a quarantined=1 dropped_no_consent=0"
    );
}
