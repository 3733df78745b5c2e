//! Hardening of the stages (issue 9, items 3 to 5), black-box: each process reads only
//! its own sections of a shared config file, secrets come from files, input headers
//! never cross, and `/readyz` follows a cloud outage (503 while the cloud broker is
//! down, 200 once it is back) and a stalled partition.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{free_port, shared_brokers, wait_until, Broker, NewRecord, StageConfig};

use crate::harness::{get, stage_command, Pipeline, Stage, Zone};

/// The example event of the schema: one valid raw redemption.
const EVENT: &str = include_str!("../schemas/coupon_redemption.json");

/// Waits until `/readyz` of `stage` answers `status`; returns the body.
fn wait_for_readyz(stage: &Stage, status: u16, timeout: Duration) -> String {
    let mut last = (0, String::new());
    let reached = wait_until(timeout, || {
        last = get(stage.metrics_port, "/readyz");
        last.0 == status
    });
    assert!(
        reached,
        "/readyz of {} never answered {status}; last {last:?}\n{}",
        stage.command,
        stage.process.log_tail(40)
    );
    last.1
}

/// Writes `text` next to the pipeline's configs.
fn write_config(p: &Pipeline, name: &str, text: &str) -> PathBuf {
    let path = p.scratch.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `pseudopipe COMMAND --config FILE` until it is started, or until it exits.
fn start(command: &'static str, config: PathBuf, logs: &Path) -> Stage {
    let port = metrics_port(&config);
    Stage::start(command, config, port, logs.join(format!("{command}.log")))
}

/// The port of `[metrics] listen` in a config file.
fn metrics_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|line| line.strip_prefix("listen = \"127.0.0.1:"))
        .expect("the config has a metrics section");
    listen.trim_end_matches('"').parse().unwrap()
}

/// One file for both stages, each of which must ignore the other's section, however
/// broken: ingest starts with a `[sink]` that names a secret file that does not exist and
/// an unknown key; the sink starts with a `[keys]` whose keyring and KEK do not exist,
/// and reads its TLS private key from a file as `ssl.key.pem_file` (the cloud refuses a
/// client without it, so the secret reached librdkafka).
#[test]
fn each_stage_reads_only_its_sections_and_secrets_come_from_files() {
    let p = Pipeline::new();
    let logs = tempfile::tempdir().unwrap();
    let ingest = std::fs::read_to_string(p.ingest_config(free_port())).unwrap();
    let broken_sink = StageConfig::new().set("sink", "not_an_option", 1).set(
        "sink.kafka",
        "sasl.password_file",
        "/nonexistent/cloud-password",
    );
    let ingest = start(
        "ingest",
        write_config(
            &p,
            "ingest-and-broken-sink.toml",
            &format!("{ingest}\n{broken_sink}"),
        ),
        logs.path(),
    );

    let sink = std::fs::read_to_string(p.sink_config(free_port(), true)).unwrap();
    let key = p
        .cloud
        .client_properties()
        .remove("ssl.key.location")
        .expect("the cloud broker demands a client key");
    let sink = sink.replace(
        &format!("\"ssl.key.location\" = {key:?}"),
        &format!("\"ssl.key.pem_file\" = {key:?}"),
    );
    assert!(sink.contains("ssl.key.pem_file"), "{sink}");
    let missing_keys = StageConfig::new().keys(
        Path::new("/nonexistent/keyring.json"),
        Path::new("/nonexistent/kek"),
    );
    let sink = start(
        "sink",
        write_config(
            &p,
            "sink-and-missing-keys.toml",
            &format!("{sink}\n{missing_keys}"),
        ),
        logs.path(),
    );

    p.onprem.produce(&p.raw, [EVENT]);
    let cloud = p.cloud.read_all(&p.cloud_topic, 1, Duration::from_secs(60));
    assert_eq!(
        cloud.len(),
        1,
        "the event crossed with the key read from a file"
    );
    drop((ingest, sink));
}

/// A missing secret file, or a secret given twice, stops the stage at start-up with the
/// property and the file named, never the secret.
#[test]
fn a_missing_or_doubled_secret_stops_the_stage_without_quoting_it() {
    let p = Pipeline::new();
    let sink = std::fs::read_to_string(p.sink_config(free_port(), true)).unwrap();
    let secret = p.scratch.path("cloud-password");
    std::fs::write(&secret, "s3cret-in-a-file\n").unwrap();
    for (extra, expected) in [
        (
            "\"sasl.password_file\" = \"/run/secrets/not-mounted\"\n".to_owned(),
            "`sasl.password_file` = /run/secrets/not-mounted: cannot read it",
        ),
        (
            format!("\"sasl.password\" = \"s3cret-inline\"\n\"sasl.password_file\" = {secret:?}\n"),
            "`sasl.password` is given as `sasl.password` and `sasl.password_file`",
        ),
    ] {
        let text = sink.replace("[sink.kafka]\n", &format!("[sink.kafka]\n{extra}"));
        let config = write_config(&p, "sink-secret.toml", &text);
        let output = stage_command("sink", &config).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

/// Headers a retail producer puts on a raw record (which may be personal) reach neither
/// the pseudonymized topic nor the cloud; nor do headers on a record written straight
/// into the pseudonymized topic. Neither stage logs them.
#[test]
fn input_headers_reach_neither_the_pseudonymized_topic_nor_the_cloud() {
    let p = Pipeline::new();
    let logs = tempfile::tempdir().unwrap();
    let (ingest, sink) = p.start_stages(logs.path());
    let personal = "jane.doe@example.com";
    p.onprem.produce(
        &p.raw,
        [NewRecord::new(EVENT)
            .key("6280 0012 3456 7890")
            .header("x-customer-email", personal)
            .header("pseudopipe-stage", "forged")],
    );
    let pseudonymized = p
        .onprem
        .read_all(&p.pseudonymized, 1, Duration::from_secs(60));
    assert_eq!(pseudonymized.len(), 1);
    assert!(
        pseudonymized[0].headers.is_empty(),
        "{:?}",
        pseudonymized[0].headers
    );

    // The same pseudonymized record, written straight into the sink's input with headers.
    let forwarded = pseudonymized[0].payload.clone().unwrap();
    p.onprem.produce(
        &p.pseudonymized,
        [NewRecord::new(forwarded.clone())
            .key(pseudonymized[0].key.clone().unwrap())
            .header("x-customer-email", personal)],
    );
    let cloud = p.cloud.read_all(&p.cloud_topic, 2, Duration::from_secs(60));
    assert_eq!(cloud.len(), 2);
    for record in &cloud {
        assert!(record.headers.is_empty(), "{:?}", record.headers);
        assert_eq!(record.payload.as_deref(), Some(forwarded.as_slice()));
    }
    for stage in [&ingest, &sink] {
        let log = stage.process.log();
        assert!(
            !log.contains(personal),
            "{} logged a header: {log}",
            stage.command
        );
    }
}

/// `/readyz` of the sink answers 503 naming the cloud cluster while the cloud broker is
/// down, and 200 once it is back; ingest stays ready throughout.
#[test]
fn readyz_is_503_while_the_cloud_is_down_and_200_once_it_is_back() {
    let cloud = Broker::start_with_client_certificates("readyz-cloud");
    let mut p = Pipeline::start(
        Zone::Shared(&shared_brokers().onprem),
        Zone::Own(Box::new(cloud)),
    );
    let logs = tempfile::tempdir().unwrap();
    let (ingest, sink) = p.start_stages(logs.path());
    wait_for_readyz(&sink, 200, Duration::from_secs(30));
    p.onprem.produce(&p.raw, [EVENT]);
    assert_eq!(
        p.cloud
            .read_all(&p.cloud_topic, 1, Duration::from_secs(60))
            .len(),
        1
    );

    p.own_cloud().kill();
    let down = Instant::now();
    let body = wait_for_readyz(&sink, 503, Duration::from_secs(60));
    eprintln!(
        "/readyz 503 {:.1} s after the cloud broker was killed",
        down.elapsed().as_secs_f64()
    );
    assert!(
        body.contains("sink: the cloud cluster (`sink.brokers`) is unreachable"),
        "{body}"
    );
    let reachable = sink
        .metrics()
        .value("pseudopipe_cluster_reachable", &[("cluster", "output")]);
    assert_eq!(reachable, 0.0);
    assert_eq!(
        get(ingest.metrics_port, "/readyz").0,
        200,
        "ingest does not need the cloud"
    );

    p.own_cloud().restart();
    let back = Instant::now();
    wait_for_readyz(&sink, 200, Duration::from_secs(90));
    eprintln!(
        "/readyz 200 {:.1} s after the cloud broker was running again",
        back.elapsed().as_secs_f64()
    );
    let reachable = sink
        .metrics()
        .value("pseudopipe_cluster_reachable", &[("cluster", "output")]);
    assert_eq!(reachable, 1.0);
    drop(ingest);
}

/// A record the cloud refuses for good stalls its partition: `/readyz` answers 503 naming
/// it. Restarted with the cause fixed, the sink delivers it and is ready again.
#[test]
fn readyz_names_a_stalled_partition_until_the_stage_restarts_fixed() {
    let p = Pipeline::new();
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let fixed = p.sink_config(port, true);
    let text = std::fs::read_to_string(&fixed).unwrap();
    // librdkafka refuses a record above message.max.bytes before sending it: permanent.
    let broken = write_config(
        &p,
        "sink-small-messages.toml",
        &text.replace(
            "[sink.kafka]\n",
            "[sink.kafka]\n\"message.max.bytes\" = 1000\n",
        ),
    );
    let mut sink = Stage::start("sink", broken, port, logs.path().join("sink.log"));
    let ingest = start("ingest", p.ingest_config(free_port()), logs.path());
    // A valid event whose basket makes it larger than 1000 bytes.
    let mut event: serde_json::Value = serde_json::from_str(EVENT).unwrap();
    let items = event["basket"]["items"].as_array().unwrap().clone();
    let basket = event["basket"]["items"].as_array_mut().unwrap();
    for _ in 0..20 {
        basket.extend(items.iter().cloned());
    }
    p.onprem.produce(&p.raw, [&event]);

    let body = wait_for_readyz(&sink, 503, Duration::from_secs(60));
    assert!(
        body.contains(&format!("sink: partition {}/", p.pseudonymized))
            && body.contains("is stalled"),
        "{body}"
    );
    sink.process.terminate(Duration::from_secs(30));
    sink.config = fixed;
    sink.restart();
    wait_for_readyz(&sink, 200, Duration::from_secs(30));
    assert_eq!(
        p.cloud
            .read_all(&p.cloud_topic, 1, Duration::from_secs(60))
            .len(),
        1
    );
    drop(ingest);
}
