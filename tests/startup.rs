//! What an operator sees when a command starts: an unreachable cluster is one line naming
//! the option, the address, the bound and the cause, within the bound (`produce`,
//! `subject --scan-brokers`, `ingest`, `sink`, `run`); no librdkafka `CONFWARN`; no colour codes
//! in a log file; JSON log lines that parse; a policy rule with a typo named at start-up.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::free_port;

use crate::harness::{Delivery, Pipeline, Stage, POLICY};
use crate::util::{Run, Scratch};

/// The bound every case sets, and how much later than it the command may exit (a debug
/// binary's start, a keyring opened and its audit log verified).
const BOUND: Duration = Duration::from_secs(3);
const SLACK: Duration = Duration::from_secs(5);

/// `args` run with the default log level (`info`), as an operator runs them.
fn run_at_info(scratch: &Scratch, args: &[&str], stdin: Option<&[u8]>) -> (Run, Duration) {
    let mut command = scratch.command(args);
    command.env("RUST_LOG", "info").env_remove("NO_COLOR");
    if stdin.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let started = Instant::now();
    let run = Scratch::finish(command, stdin);
    (run, started.elapsed())
}

/// Checks that `run` failed within the bound with one line naming `option`, `address`,
/// `timeout_option` and the cause, and at most `lines` lines in all.
fn gave_up_in_one_line(
    case: &str,
    (run, waited): (Run, Duration),
    option: &str,
    address: &str,
    timeout_option: &str,
    lines: usize,
) {
    let all = run.fails();
    let written: Vec<&str> = all.lines().collect();
    eprintln!(
        "{case}: exit 1 after {waited:.1?}, {} lines:\n{all}",
        written.len()
    );
    assert!(
        waited >= BOUND && waited < BOUND + SLACK,
        "{case}: waited {waited:?}"
    );
    assert!(
        written.len() <= lines,
        "{case}: {} lines:\n{all}",
        written.len()
    );
    let reason = written
        .iter()
        .find(|line| line.starts_with("error: cannot reach"))
        .unwrap_or_else(|| panic!("{case}: no `error: cannot reach` line:\n{all}"));
    for part in [
        format!("`{option}` = \"{address}\""),
        format!("within 3s (`{timeout_option}`)"),
        "Connection refused".to_owned(),
    ] {
        assert!(reason.contains(&part), "{case}: {part} not in {reason}");
    }
    assert_eq!(
        all.matches("Connection refused").count(),
        1,
        "{case}: the cause is said once:\n{all}"
    );
}

#[test]
fn every_network_command_gives_up_on_an_unreachable_cluster_in_one_line_within_its_bound() {
    let p = Pipeline::new();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let s = &p.scratch;

    let produce = [
        "produce",
        "--brokers",
        &nowhere,
        "--topic",
        "redemptions.raw",
        "--events",
        "10",
        "--connect-timeout",
        "3s",
    ];
    gave_up_in_one_line(
        "produce",
        run_at_info(s, &produce, None),
        "--brokers",
        &nowhere,
        "--connect-timeout",
        1,
    );

    let subject = [
        "subject",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--ticket",
        "DSR-19",
        "--email",
        "-",
        "--scan-brokers",
        &nowhere,
        "--scan-topic",
        "redemptions",
        "--connect-timeout",
        "3s",
    ];
    gave_up_in_one_line(
        "subject --scan-brokers",
        run_at_info(s, &subject, Some(b"someone@example.org\n")),
        "--scan-brokers",
        &nowhere,
        "--connect-timeout",
        1,
    );

    for command in ["list", "replay"] {
        let quarantine = [
            "quarantine",
            command,
            "--brokers",
            &nowhere,
            "--topic",
            "redemptions.quarantine",
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
            "--ticket",
            "CHG-19",
            "--connect-timeout",
            "3s",
        ];
        gave_up_in_one_line(
            &format!("quarantine {command}"),
            run_at_info(s, &quarantine, None),
            "--brokers",
            &nowhere,
            "--connect-timeout",
            1,
        );
    }

    // The stages log a few lines before (the metrics server, the keyring opened).
    let with_bound = |text: String, section: &str| {
        text.replace(
            &format!("[{section}]\n"),
            &format!("[{section}]\nconnect_timeout = \"3s\"\n"),
        )
    };
    let ingest = with_bound(
        std::fs::read_to_string(p.ingest_config(free_port())).unwrap(),
        "ingest",
    )
    .replace(&p.onprem.bootstrap(), &nowhere);
    let path = s.path("ingest-nowhere.toml");
    std::fs::write(&path, ingest).unwrap();
    gave_up_in_one_line(
        "ingest",
        run_at_info(s, &["ingest", "--config", path.to_str().unwrap()], None),
        "ingest.brokers",
        &nowhere,
        "ingest.connect_timeout",
        4,
    );

    let sink = with_bound(
        std::fs::read_to_string(p.sink_config(free_port(), true)).unwrap(),
        "sink",
    );

    // `run`: both stages' sections in one file (one `[metrics]`).
    let (sink_sections, _) = sink.split_once("[metrics]").unwrap();
    let path = s.path("run-nowhere.toml");
    std::fs::write(
        &path,
        format!(
            "{sink_sections}\n{}",
            std::fs::read_to_string(s.path("ingest-nowhere.toml")).unwrap()
        ),
    )
    .unwrap();
    gave_up_in_one_line(
        "run",
        run_at_info(s, &["run", "--config", path.to_str().unwrap()], None),
        "ingest.brokers",
        &nowhere,
        "ingest.connect_timeout",
        4,
    );

    let path = s.path("sink-nowhere.toml");
    std::fs::write(&path, sink.replace(&p.sink_cloud_bootstrap(), &nowhere)).unwrap();
    gave_up_in_one_line(
        "sink (cloud)",
        run_at_info(s, &["sink", "--config", path.to_str().unwrap()], None),
        "sink.brokers",
        &nowhere,
        "sink.connect_timeout",
        3,
    );
    std::fs::write(&path, sink.replace(&p.onprem.bootstrap(), &nowhere)).unwrap();
    gave_up_in_one_line(
        "sink (on-prem)",
        run_at_info(s, &["sink", "--config", path.to_str().unwrap()], None),
        "sink.source_brokers",
        &nowhere,
        "sink.connect_timeout",
        3,
    );
}

#[test]
fn json_log_lines_parse_and_text_ones_carry_no_colour_when_not_a_terminal() {
    let p = Pipeline::new();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let config = std::fs::read_to_string(p.sink_config(free_port(), true))
        .unwrap()
        .replace("[sink]\n", "[sink]\nconnect_timeout = \"1s\"\n")
        .replace(&p.sink_cloud_bootstrap(), &nowhere);
    let path = p.scratch.path("sink-json.toml");
    std::fs::write(&path, config).unwrap();
    let args = ["sink", "--config", path.to_str().unwrap()];

    let mut command = p.scratch.command(&args);
    command
        .env("RUST_LOG", "info")
        .env("PSEUDOPIPE_LOG_FORMAT", "json");
    let all = Scratch::finish(command, None).fails();
    let objects: Vec<Value> = all
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(objects.len() >= 2, "{all}");
    let last = objects.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    let error = last["fields"]["error"].as_str().unwrap();
    assert!(error.contains("cannot reach `sink.brokers`"), "{error}");

    // Piped, not a terminal: plain text, whatever NO_COLOR says.
    let (run, _) = run_at_info(&p.scratch, &args, None);
    let all = run.fails();
    assert!(all.contains(" INFO "), "{all}");
    assert!(!all.contains('\u{1b}'), "colour codes in a pipe: {all:?}");
}

/// Every librdkafka client a stage starts (consumers, producers, transactional ones, the
/// audit mirror's, the start-up check's) takes only the properties of its scope.
#[test]
fn no_stage_start_logs_a_confwarn_in_either_delivery_mode() {
    for delivery in [Delivery::AtLeastOnce, Delivery::ExactlyOnce] {
        let p = Pipeline::new().with_delivery(delivery);
        p.produce(100, 0.0, 19);
        let logs = tempfile::tempdir().unwrap();
        let (ingest, sink) = p.start_stages(logs.path());
        p.cloud
            .read_all(&p.cloud_topic, 100, Duration::from_secs(60));
        drop((ingest, sink));
        for stage in ["ingest", "sink"] {
            let log = std::fs::read_to_string(logs.path().join(format!("{stage}.log"))).unwrap();
            assert!(log.contains("Pipeline started."), "{stage}: {log}");
            assert!(
                !log.contains("CONFWARN"),
                "{delivery:?} {stage}: {}",
                log.lines()
                    .filter(|l| l.contains("CONFWARN"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert!(!log.contains('\u{1b}'), "{stage}: colour codes in a file");
        }
    }
}

/// The demo starts both stages on librdkafka's mock clusters, with a consumer property
/// (`session.timeout.ms`) in the stages' tables.
#[test]
fn the_demo_runs_without_a_confwarn() {
    let scratch = Scratch::new();
    let (run, _) = run_at_info(&scratch, &["demo", "--events", "1000"], None);
    let out = run.ok();
    assert!(out.contains("verdict: OK"), "{out}");
    let log = run.stderr();
    assert!(
        log.contains("Pipeline started") || log.contains("Relay started"),
        "{log}"
    );
    assert!(!log.contains("CONFWARN"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe");
}

/// The typo: `customer.emial` quarantines every event (their `customer.email` has
/// no rule); ingest names the rule at start-up against `[ingest] schema`, and after its
/// first events without one.
#[test]
fn a_policy_rule_with_a_typo_is_named_at_start_up_and_after_the_first_events() {
    let typo = std::fs::read_to_string(POLICY)
        .unwrap()
        .replace("\"customer.email\"", "\"customer.emial\"");
    let p = Pipeline::new().with_policy(&typo);
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.avsc"
    );
    let port = free_port();
    let config = std::fs::read_to_string(p.ingest_config(port))
        .unwrap()
        .replace("[ingest]\n", &format!("[ingest]\nschema = {schema:?}\n"));
    let path = p.scratch.path("ingest-typo.toml");
    std::fs::write(&path, config).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let ingest = Stage::start("ingest", path, port, logs.path().join("ingest.log"));
    let log = std::fs::read_to_string(&ingest.log).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("names no field of the schema"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("path=\"customer.emial\""),
        "{}",
        warned[0]
    );
    assert!(
        warned[0].contains(&format!(
            "pseudopipe schema check --policy {} --schema {schema}",
            p.policy.display()
        )),
        "{}",
        warned[0]
    );

    // Without a schema, the first 1000 events tell.
    p.produce(1000, 0.0, 19);
    assert!(
        ingest.process.wait_for_log(
            "matched no field of the first events",
            Duration::from_secs(60)
        ),
        "{}",
        ingest
            .process
            .failure("the typo named after the first events")
    );
    let log = std::fs::read_to_string(&ingest.log).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("matched no field of the first events"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("path=\"customer.emial\""),
        "{}",
        warned[0]
    );
    assert!(warned[0].contains("events=1000"), "{}", warned[0]);
}
