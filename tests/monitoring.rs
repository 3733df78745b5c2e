//! The monitoring files of `deploy/` against what the stages really export: every metric
//! the Grafana dashboard and the Prometheus alerts query, with the `stage` label they give
//! it, is on the `/metrics` of ingest or sink after a small run on the real brokers.
//!
//! Labelled series only exist once something happened to them (a quarantine reason, a
//! key switch, offsets jumped over), so the run makes each of them happen: malformed
//! input, a detector's finding in a kept field, events without consent, a gap in the raw
//! topic, a rotation with a bridge, and a hostile record in the pseudonymized topic for the
//! sink's leak guard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use simulator::Generator;
use testkit::{wait_until, NewRecord};

use crate::harness::*;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/pseudopipe.json"
);
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");

#[test]
fn the_dashboard_and_the_alerts_query_only_metrics_the_stages_export() {
    // The queries, by file.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut queries: Vec<(&str, String)> = Vec::new();
    dashboard_exprs(&dashboard, &mut queries);
    let dashboard_queries = queries.len();
    assert!(dashboard_queries > 10, "the dashboard's queries are found");
    for expr in alert_exprs(&std::fs::read_to_string(ALERTS).unwrap()) {
        queries.push(("alerts.yml", expr));
    }
    assert!(
        queries.len() - dashboard_queries >= 9,
        "the alerts' queries are found"
    );

    // A run in which every labelled series gets born.
    let policy = std::fs::read_to_string(POLICY)
        .unwrap()
        .replace("# consent_field = ", "consent_field = ")
        // Risk windows that close within the run, and k enforced, for the risk metrics.
        .replace("window = 100000", "window = 20")
        .replace("enforce_k = false", "enforce_k = true");
    let p = Pipeline::new()
        .with_policy(&policy)
        .with_keys_line(r#"check_interval = "200ms""#)
        .with_keys_line(r#"bridge_overlap = "1h""#);
    // Offsets 50 to 59 of partition 0 deleted under the group's committed offset, as
    // retention would: ingest jumps over them.
    let mut generator = Generator::new(3).with_tenants(vec![TENANT.to_owned()]);
    p.onprem.produce(
        &p.raw,
        (0..100).map(|_| NewRecord::new(generator.next_record().payload).partition(0)),
    );
    p.onprem
        .client()
        .commit_offset(&p.ingest_group, &p.raw, 0, 50)
        .unwrap();
    assert_eq!(p.onprem.delete_records_before(&p.raw, 0, 60), 60);
    p.onprem.produce(&p.raw, [NewRecord::new("not json")]);
    // A valid event whose kept `coupon.currency` holds an e-mail address: a detector's
    // finding, counted by field and detector.
    let mut finding: Value =
        serde_json::from_str(include_str!("../schemas/coupon_redemption.json")).unwrap();
    finding["coupon"]["currency"] = "jane.doe@example.com".into();
    p.onprem
        .produce(&p.raw, [NewRecord::new(finding.to_string())]);
    p.produce(300, 0.02, 5);

    let logs = tempfile::tempdir().unwrap();
    let (ingest, sink) = p.start_stages(logs.path());
    assert!(
        wait_until(Duration::from_secs(120), || ingest
            .metrics()
            .value("pseudopipe_events_consumed_total", &[])
            >= 342.0),
        "{}",
        ingest.process.failure("consuming the raw topic")
    );
    p.scratch.keys(&["rotate", "--tenant", TENANT]).ok();
    assert!(
        wait_until(Duration::from_secs(60), || ingest
            .metrics()
            .value("pseudopipe_key_active_version", &[("tenant", TENANT)])
            == 2.0),
        "{}",
        ingest.process.failure("switching to v2")
    );
    p.produce(100, 0.0, 6);
    p.onprem
        .produce(&p.pseudonymized, [NewRecord::new(r#"{"hostile":true}"#)]);
    // Lag is measured every 5 s, once a partition has a position.
    let has_lag = |stage: &Stage| stage.metrics().0.contains("\npseudopipe_consumer_lag{");
    assert!(
        wait_until(Duration::from_secs(60), || {
            ingest.metrics().value("pseudopipe_bridge_pairs_total", &[]) > 0.0
                && sink
                    .metrics()
                    .value("pseudopipe_events_quarantined_total", &[])
                    >= 1.0
                && has_lag(&ingest)
                && has_lag(&sink)
        }),
        "{}\n{}",
        ingest.process.failure("bridging and measuring lag"),
        sink.process
            .failure("quarantining the hostile record and measuring lag")
    );

    // What the stages export: each sample name with the stages it has a series in.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for stage in [&ingest, &sink] {
        for (name, labels) in samples(&stage.metrics().0) {
            let stage = label(&labels, "stage").unwrap_or_default();
            exported.entry(name).or_default().insert(stage);
        }
    }
    let stages: BTreeSet<&String> = exported.values().flatten().collect();
    assert_eq!(
        stages.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["ingest", "sink"]
    );

    let mut missing = BTreeSet::new();
    for (file, expr) in &queries {
        for (name, stage) in metric_uses(expr) {
            match (exported.get(&name), &stage) {
                (None, _) => {
                    missing.insert(format!("{name} ({file})"));
                }
                (Some(of), Some(stage)) if !of.contains(stage) => {
                    missing.insert(format!("{name}{{stage=\"{stage}\"}} ({file})"));
                }
                _ => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported by ingest or sink:\n  {}\nexported: {:?}",
        missing.into_iter().collect::<Vec<_>>().join("\n  "),
        exported.keys().collect::<Vec<_>>()
    );
}

/// Every `expr` of the dashboard's panels, at any depth (rows hold panels too).
fn dashboard_exprs(value: &Value, out: &mut Vec<(&'static str, String)>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(("pseudopipe.json", expr.clone())),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The `expr:` of each rule in a Prometheus rules file: on its line, or the block scalar
/// (`|`, `>`) indented below it.
fn alert_exprs(text: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() {
            continue;
        }
        let rest = rest.trim();
        if !rest.starts_with(['|', '>']) {
            exprs.push(rest.to_owned());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.next_if(|next| {
            next.trim().is_empty() || next.len() - next.trim_start().len() > indent.len()
        }) {
            block.push_str(next.trim());
            block.push('\n');
        }
        exprs.push(block);
    }
    exprs
}

/// The `pseudopipe_*` metric names in a PromQL expression, each with the `stage` of its
/// selector when it names one literally (`stage="sink"`; not a Grafana variable).
fn metric_uses(expr: &str) -> Vec<(String, Option<String>)> {
    let mut uses = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pseudopipe_") {
        // Not the tail of a longer identifier.
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let after = &tail[end..];
        let stage = after
            .strip_prefix('{')
            .and_then(|selector| selector.split_once('}'))
            .and_then(|(selector, _)| label(selector, "stage"))
            .filter(|stage| !stage.contains('$'));
        if !preceded {
            uses.push((name.to_owned(), stage));
        }
        rest = after;
    }
    uses
}

/// The sample lines of a Prometheus text exposition: name and label text.
fn samples(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            (name.to_owned(), labels.trim_end_matches('}').to_owned())
        })
}

/// The value of `name="value"` (or `name=~"value"`) in a label list.
fn label(labels: &str, name: &str) -> Option<String> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| {
            value
                .trim_start_matches('~')
                .trim()
                .trim_matches('"')
                .to_owned()
        })
    })
}

#[test]
fn metric_uses_reads_names_and_literal_stages() {
    assert_eq!(
        metric_uses(
            r#"sum(increase(pseudopipe_events_quarantined_total{stage="sink", instance=~"$instance"}[1h])) or x_pseudopipe_no"#
        ),
        [(
            "pseudopipe_events_quarantined_total".to_owned(),
            Some("sink".to_owned())
        )]
    );
    assert_eq!(
        metric_uses(
            r#"rate(pseudopipe_in_flight{stage=~"$stage"}[5m]) / pseudopipe_keyring_loads"#
        ),
        [
            ("pseudopipe_in_flight".to_owned(), None),
            ("pseudopipe_keyring_loads".to_owned(), None)
        ]
    );
    let exprs = alert_exprs(
        "      - alert: A\n        expr: up == 0\n        for: 2m\n      - alert: B\n        expr: |\n          a > 1\n          and\n          b\n        labels:\n",
    );
    assert_eq!(exprs, ["up == 0", "a > 1\nand\nb\n"]);
}
