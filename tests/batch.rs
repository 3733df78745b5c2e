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

/// The `batch` entries of the audit log, as `SEQ TENANT DETAILS` in order.
fn batch_entries(s: &Scratch) -> Vec<String> {
    std::fs::read_to_string(s.audit_log())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry["action"] == "batch")
        .map(|entry| {
            assert_eq!(entry["actor"], "test-officer");
            format!(
                "{} {} {}",
                entry["seq"],
                entry["tenant"].as_str().unwrap(),
                entry["details"].as_str().unwrap()
            )
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
    // The start (seq 2, after `keys init`), brand-a's counts, the run's other counts.
    assert_eq!(
        batch_entries(&s),
        [
            format!("2 * phase=start input=my_export.jsonl policy={digest}"),
            format!(
                "3 brand-a phase=end run=2 input=my_export.jsonl events=v1:{}",
                kept.len()
            ),
            format!(
                "4 * phase=end run=2 written={} tenants=brand-a quarantined=2 dropped_no_consent={refused}",
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
    // After two `keys init` and a `retire`, the run starts at seq 4.
    let entries = batch_entries(&s);
    assert!(
        entries[0].starts_with("4 * phase=start input=stdin policy="),
        "{entries:?}"
    );
    assert_eq!(
        entries[1..],
        [
            "5 brand-a phase=end run=4 input=stdin events=v1:1",
            "6 * phase=end run=4 written=1 tenants=brand-a quarantined=1 dropped_no_consent=0"
        ]
    );
}

/// The example event as one JSON line.
fn example_line() -> Vec<u8> {
    let event: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.json"
    )))
    .unwrap();
    let mut line = serde_json::to_vec(&event).unwrap();
    line.push(b'\n');
    line
}

/// Files of the scratch directory whose name ends with `.partial`.
fn partial_files(s: &Scratch) -> Vec<String> {
    std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect()
}

/// An output or quarantine that is the input, or each other, by any spelling (the same
/// string, `./`, `dir/../`, a symlink, a dangling symlink, a hard link, standard input
/// redirected from it) is refused in one line naming both options: nothing read, written,
/// truncated or audited.
#[test]
fn an_output_or_quarantine_that_is_the_input_or_each_other_is_refused() {
    let s = Scratch::with_tenants(&["brand-a"]);
    std::fs::create_dir(s.path("sub")).unwrap();
    let export = s.path("export.jsonl");
    let content = [example_line(), b"not json\n".to_vec()].concat();
    std::fs::write(&export, &content).unwrap();
    std::os::unix::fs::symlink(&export, s.path("link.jsonl")).unwrap();
    std::fs::hard_link(&export, s.path("hard.jsonl")).unwrap();
    std::os::unix::fs::symlink(s.path("quarantine.jsonl"), s.path("dangling.jsonl")).unwrap();
    let log_before = std::fs::read(s.audit_log()).unwrap();
    let e = export.to_str().unwrap();
    // (input, output, quarantine, the options the message names)
    let cases: [(&str, &str, Option<&str>, [&str; 2]); 10] = [
        (e, e, None, ["--output", "--input"]),
        (e, "./export.jsonl", None, ["--output", "--input"]),
        (e, "sub/../export.jsonl", None, ["--output", "--input"]),
        (e, "link.jsonl", None, ["--output", "--input"]),
        (e, "hard.jsonl", None, ["--output", "--input"]),
        (e, "out.jsonl", Some(e), ["--quarantine", "--input"]),
        (
            e,
            "out.jsonl",
            Some("./link.jsonl"),
            ["--quarantine", "--input"],
        ),
        (
            "link.jsonl",
            "-",
            Some("hard.jsonl"),
            ["--quarantine", "--input"],
        ),
        (
            e,
            "q.jsonl",
            Some("sub/../q.jsonl"),
            ["--quarantine", "--output"],
        ),
        (
            e,
            "dangling.jsonl",
            Some("quarantine.jsonl"),
            ["--quarantine", "--output"],
        ),
    ];
    for (input, output, quarantine, options) in cases {
        let mut args = vec![
            "pseudonymize",
            "--policy",
            POLICY,
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
            "--input",
            input,
            "--output",
            output,
        ];
        if let Some(quarantine) = quarantine {
            args.extend(["--quarantine", quarantine]);
        }
        let message = s.run(&args).fails();
        let case = format!("{input} {output} {quarantine:?}");
        assert_eq!(message.lines().count(), 1, "{case}: one line: {message}");
        assert!(
            message.contains(&format!("{} ", options[0]))
                && message.contains(&format!("{} ", options[1]))
                && message.contains("is the same file as"),
            "{case}: {message}"
        );
        assert_eq!(
            std::fs::read(&export).unwrap(),
            content,
            "{case}: input intact"
        );
        for never in ["out.jsonl", "q.jsonl", "quarantine.jsonl"] {
            assert!(!s.path(never).exists(), "{case}: {never} was created");
        }
        assert_eq!(partial_files(&s), Vec::<String>::new(), "{case}");
    }
    // Standard input redirected from the file named as the output.
    let mut command = s.command(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--output",
        "hard.jsonl",
    ]);
    command.stdin(std::fs::File::open(&export).unwrap());
    let message = Scratch::finish(command, None).fails();
    assert!(
        message.contains("--output hard.jsonl is the same file as --input - (standard input)"),
        "{message}"
    );
    assert_eq!(std::fs::read(&export).unwrap(), content);
    assert_eq!(
        std::fs::read(s.audit_log()).unwrap(),
        log_before,
        "a run that never started is not audited"
    );
    // `/dev/null` may be named twice: it keeps nothing.
    s.run(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--input",
        e,
        "--output",
        "/dev/null",
        "--quarantine",
        "/dev/null",
    ])
    .ok();
}

/// A run that cannot open its input never starts (no audit entry); one that fails after
/// its start leaves the output as it was, no temporary file, and a `phase=failed` entry.
#[test]
fn a_run_that_never_started_is_not_audited_and_a_failed_one_is() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let (output, quarantine) = (s.path("out.jsonl"), s.path("quarantine.jsonl"));
    std::fs::write(&output, "previous run\n").unwrap();
    let message =
        pseudonymize_file(&s, &s.path("missing.jsonl"), &output, &quarantine, &[]).fails();
    assert!(
        message.contains("cannot open the input") && message.lines().count() == 1,
        "{message}"
    );
    assert_eq!(batch_entries(&s), Vec::<String>::new(), "never started");

    // A folder opens, then fails at the first read.
    let folder = s.path("folder.jsonl");
    std::fs::create_dir(&folder).unwrap();
    let message = pseudonymize_file(&s, &folder, &output, &quarantine, &[]).fails();
    assert!(message.contains("cannot read the input"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "previous run\n",
        "a failed run leaves the output as it was"
    );
    assert!(!quarantine.exists());
    assert_eq!(partial_files(&s), Vec::<String>::new());
    let entries = batch_entries(&s);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].starts_with("2 * phase=start input=folder.jsonl"));
    assert_eq!(
        entries[1],
        "3 * phase=failed run=2 read=0 written=0 quarantined=0"
    );

    // A full disk while writing.
    let input = s.path("export.jsonl");
    std::fs::write(&input, example_line().repeat(2000)).unwrap();
    let message = pseudonymize_file(&s, &input, Path::new("/dev/full"), &quarantine, &[]).fails();
    assert!(
        message.contains("cannot write the output /dev/full"),
        "{message}"
    );
    assert!(batch_entries(&s)[3].starts_with("5 * phase=failed run=4 read="));
    assert!(!quarantine.exists());
    s.audit_verify().ok();
}

/// A run killed midway leaves the previous output under its name, untouched: the new one
/// was being written to a temporary file beside it.
#[test]
fn a_killed_run_never_leaves_a_half_file_under_the_final_name() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let output = s.path("out.jsonl");
    std::fs::write(&output, "previous run\n").unwrap();
    let mut command = s.command(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    command.stdin(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // More than one block of lines: the first is pseudonymized and written while the
    // input stays open.
    use std::io::Write as _;
    stdin.write_all(&example_line().repeat(20_000)).unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let written = loop {
        let partial: Vec<_> = partial_files(&s);
        if let Some(name) = partial.first() {
            if std::fs::metadata(s.path(name)).unwrap().len() > 0 {
                break name.clone();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no output written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(written.starts_with(".out.jsonl.") && written.ends_with(".partial"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "previous run\n",
        "the final name holds the previous output, whole"
    );
}
