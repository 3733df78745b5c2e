//! `produce --input`: a history export replayed into the raw topic of a real broker, from a
//! file and from standard input, at a chosen rate; bad lines forwarded as they are, blank
//! ones skipped, an empty input refused; no event content in what it prints. And a backfill
//! through the pipeline: the replayed export reaches the cloud as batch mode writes it, its
//! bad lines the quarantine.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::shared_brokers;

use crate::harness::{batch_mode, expected, Pipeline};
use crate::util::Scratch;

/// `n` example events with distinct ids and loyalty cards, as JSON lines.
fn export(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let example: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.json"
    )))
    .unwrap();
    (0..n)
        .map(|i| {
            let mut event = example.clone();
            event["event_id"] = format!("{prefix}-{i}").into();
            event["customer"]["loyalty_card"] = format!("6280 0012 {i:08}").into();
            serde_json::to_vec(&event).unwrap()
        })
        .collect()
}

/// `produce --brokers ONPREM --topic TOPIC ARGS`.
fn produce(s: &Scratch, topic: &str, args: &[&str], stdin: Option<&[u8]>) -> crate::util::Run {
    let brokers = shared_brokers().onprem.bootstrap();
    let mut all = vec!["produce", "--brokers", &brokers, "--topic", topic];
    all.extend_from_slice(args);
    s.run_with_stdin(&all, stdin)
}

/// The payloads of the topic's records, sorted, and the sum of their sizes.
fn payloads(topic: &str, expected: usize) -> (Vec<Vec<u8>>, usize) {
    let records = shared_brokers()
        .onprem
        .read_all(topic, expected, Duration::from_secs(60));
    let mut payloads: Vec<Vec<u8>> = records
        .into_iter()
        .map(|r| r.payload.unwrap_or_default())
        .collect();
    payloads.sort();
    let bytes = payloads.iter().map(Vec::len).sum();
    (payloads, bytes)
}

/// A file of 300 events with two bad lines (not UTF-8, not JSON) and a blank one, at 100
/// lines per second: every non-blank line is one record, byte for byte (keyed by loyalty
/// card with --key-field), the replay takes about 3 s, and the summary counts without
/// quoting a line.
#[test]
fn a_history_file_reaches_the_raw_topic_at_the_rate_asked_bad_lines_as_they_are() {
    let s = Scratch::new();
    let onprem = &shared_brokers().onprem;
    let topic = onprem.random_topic("redemptions.raw", 3);
    let mut lines = export("replay", 300);
    lines.insert(10, b"{\"event_id\":\"cut-\xff\xfe\"".to_vec());
    lines.insert(100, b"{not json, alice@example.com".to_vec());
    let mut file = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        file.extend_from_slice(line);
        // Windows line ends on some lines: removed like the Unix ones.
        file.extend_from_slice(if index % 7 == 0 { b"\r\n" } else { b"\n" });
        if index == 50 {
            file.extend_from_slice(b"   \n");
        }
    }
    std::fs::write(s.path("export.jsonl"), &file).unwrap();

    let started = Instant::now();
    let run = produce(
        &s,
        &topic,
        &[
            "--input",
            "export.jsonl",
            "--rate",
            "100",
            "--key-field",
            "customer.loyalty_card",
        ],
        None,
    );
    let elapsed = started.elapsed();
    run.ok();
    let stderr = run.stderr();
    println!("{} (wall {elapsed:?})", stderr.trim_end());
    let bytes: usize = lines.iter().map(Vec::len).sum();
    assert!(
        stderr.contains(&format!(
            "produced 302 records ({bytes} bytes) from export.jsonl to {topic} in "
        )) && stderr.contains("; blank lines skipped: 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "2 lines are not valid UTF-8 JSON: forwarded unchanged, for ingest to quarantine (line numbers: 11, 102)"
        ),
        "{stderr}"
    );
    for secret in ["alice@example.com", "replay-", "6280 0012", "cut-"] {
        assert!(!stderr.contains(secret), "{secret} printed: {stderr}");
    }
    // 301 intervals of 10 ms after the first record; the upper bound leaves room for a
    // loaded CI runner but not for a rate ignored by a factor of two.
    assert!(
        elapsed >= Duration::from_millis(3000),
        "302 lines at 100/s in {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "302 lines at 100/s in {elapsed:?}"
    );

    let (got, got_bytes) = payloads(&topic, 302);
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got.len(), 302, "one record per non-blank line");
    assert_eq!(got_bytes, bytes);
    assert!(got == want, "the records are the lines, byte for byte");
    let records = onprem.read_all(&topic, 302, Duration::from_secs(60));
    let keyed: Vec<&testkit::Record> = records.iter().filter(|r| r.key.is_some()).collect();
    assert_eq!(keyed.len(), 300, "the bad lines have no key");
    for record in keyed {
        assert_eq!(
            record.key_str().unwrap(),
            record.json()["customer"]["loyalty_card"].as_str().unwrap()
        );
    }
}

/// Standard input (`-`) as fast as the cluster takes it; an empty input or one of blank
/// lines is refused in one line, and nothing reaches the topic.
#[test]
fn standard_input_is_replayed_and_an_empty_input_refused() {
    let s = Scratch::new();
    let topic = shared_brokers().onprem.random_topic("redemptions.raw", 2);
    let lines = export("stdin", 500);
    let input: Vec<u8> = lines
        .iter()
        .flat_map(|l| [&l[..], b"\n"].concat())
        .collect();
    let run = produce(&s, &topic, &["--input", "-"], Some(&input));
    run.ok();
    assert!(
        run.stderr().contains(&format!(
            "produced 500 records ({} bytes) from standard input to {topic}",
            input.len() - 500
        )),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("not valid"), "{}", run.stderr());
    let (got, _) = payloads(&topic, 500);
    let mut want = lines;
    want.sort();
    assert!(got == want, "the records are the lines, byte for byte");

    let empty = shared_brokers().onprem.random_topic("redemptions.raw", 1);
    let message = produce(&s, &empty, &["--input", "-"], Some(b"")).fails();
    assert!(
        message.contains(
            "error: the input standard input is empty: nothing to produce (give the history export, JSON lines)"
        ),
        "{message}"
    );
    std::fs::write(s.path("blank.jsonl"), "\n \n\r\n").unwrap();
    let message = produce(&s, &empty, &["--input", "blank.jsonl"], None).fails();
    assert!(
        message.contains(&format!(
            "error: the input blank.jsonl holds only blank lines (3): nothing was sent to {empty}"
        )),
        "{message}"
    );
    let message = produce(&s, &empty, &["--input", "missing.jsonl"], None).fails();
    assert!(
        message.contains("error: cannot open the input missing.jsonl"),
        "{message}"
    );
    assert_eq!(
        shared_brokers().onprem.watermarks(&empty),
        [(0, 0)],
        "nothing produced"
    );
}

/// A line larger than the producer's `message.max.bytes` (1,000,000 by default) is named
/// and skipped; the others are produced, and the command exits 1.
#[test]
fn a_line_too_large_for_the_producer_is_named_and_the_rest_produced() {
    let s = Scratch::new();
    let topic = shared_brokers().onprem.random_topic("redemptions.raw", 1);
    let mut lines = export("large", 3);
    let big = format!(r#"{{"event_id":"big","note":"{}"}}"#, "x".repeat(1_200_000));
    lines.insert(1, big.into_bytes());
    let input: Vec<u8> = lines
        .iter()
        .flat_map(|l| [&l[..], b"\n"].concat())
        .collect();
    let message = produce(&s, &topic, &["--input", "-"], Some(&input)).fails();
    assert!(
        message.contains("produced 3 records")
            && message.contains(
                "error: 1 line is larger than the producer's message.max.bytes: not produced (line numbers: 2); the others were"
            ),
        "{message}"
    );
    assert!(!message.contains("xxxx"), "no content printed");
    lines.remove(1);
    let (got, _) = payloads(&topic, 3);
    lines.sort();
    assert!(got == lines, "the other lines, byte for byte");
}

/// A backfill through the cluster: an export of 2,000 simulated events and two bad lines,
/// replayed with `produce --input` into the pipeline's raw topic, reaches the cloud through
/// ingest and sink byte for byte as batch mode pseudonymizes the same export; the bad
/// lines are in the on-prem quarantine, unchanged, with their reason.
#[test]
fn a_replayed_export_reaches_the_cloud_as_batch_mode_writes_it() {
    let p = Pipeline::new();
    let expected = expected(2_000, 0.0, 41);
    let events: Vec<&Value> = expected.valid.values().collect();
    let bad: [&[u8]; 2] = [b"{\"event_id\":\"cut", b"\xff\xfe not UTF-8"];
    let mut export = Vec::new();
    for (index, event) in events.iter().enumerate() {
        export.extend_from_slice(format!("{event}\n").as_bytes());
        if index % 1000 == 500 {
            export.extend_from_slice(bad[index / 1000]);
            export.push(b'\n');
        }
    }
    let path = p.scratch.path("history.jsonl");
    std::fs::write(&path, &export).unwrap();
    let run = p.scratch.run(&[
        "produce",
        "--brokers",
        &p.onprem.bootstrap(),
        "--topic",
        &p.raw,
        "--input",
        path.to_str().unwrap(),
        "--key-field",
        "customer.loyalty_card",
    ]);
    run.ok();
    println!("{}", run.stderr().trim_end());

    let logs = tempfile::tempdir().unwrap();
    let (_ingest, _sink) = p.start_stages(logs.path());
    let cloud = p
        .cloud
        .read_all(&p.cloud_topic, events.len(), Duration::from_secs(180));
    let mut delivered: Vec<String> = cloud
        .iter()
        .map(|r| r.payload_str().unwrap().to_string())
        .collect();
    delivered.sort();
    let mut batch: Vec<String> = batch_mode(&p, events.iter().copied())
        .lines()
        .map(String::from)
        .collect();
    batch.sort();
    assert_eq!(delivered.len(), events.len(), "every event, once");
    assert!(delivered == batch, "as batch mode writes them");

    let quarantined = p.onprem.read_all(&p.quarantine, 2, Duration::from_secs(60));
    let mut payloads: Vec<(Vec<u8>, String)> = quarantined
        .iter()
        .map(|r| {
            (
                r.payload.clone().unwrap_or_default(),
                r.header("pseudopipe-reason").unwrap().to_string(),
            )
        })
        .collect();
    payloads.sort();
    println!(
        "quarantined: {:?}",
        payloads
            .iter()
            .map(|(_, reason)| reason)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        payloads
            .iter()
            .map(|(payload, _)| payload.as_slice())
            .collect::<Vec<_>>(),
        [bad[0], bad[1]],
        "the bad lines, unchanged"
    );
    assert_eq!(payloads[0].1, "malformed_json");
    assert_eq!(payloads[1].1, "invalid_utf8");
}
