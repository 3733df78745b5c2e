//! Criterion benches of the record path: one token, one encryption, one whole event.
//!
//! `cargo bench -p pseudonymize` prints time per operation; events/s per core is
//! 1 / (time per event). The `event` group also times the first phase alone (decode and
//! walk) and the sink's leak guard on the pseudonymized event, each with the content
//! detectors on (the default) and off (every kind allowed on every kept field): the
//! difference is what the detectors cost per event. `event bridged` is the whole event
//! during a rotation's overlap: each token also computed under the previous version and
//! paired with the new one; the difference is what the bridge costs per event. The `avro`
//! group is the same event in Avro: the datum read into the JSON event, pseudonymized,
//! written as a datum of the derived schema (what ingest did with `format = "avro"` before
//! ADR 0024, the oracle), the direct walk that replaced it (`ingest direct`), the JSON
//! event's whole path beside them in the same run (`json ingest`), and the sink's side: the
//! guard on the JSON output (`json guard`), on the datum in one pass (`sink guard direct`)
//! and through the datum's JSON rendering (as before ADR 0024). The bench counts allocations with a counting global
//! allocator and prints them per event for each ingest path.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pseudonymize::policy::Rule;
use pseudonymize::{
    BridgePairs, Detector, Detectors, EncryptKey, LeakGuard, MasterSecret, Normalizer, Policy,
    Pseudonymizer, TokenKey,
};
use serde_json::Value;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts allocations, for the per-event figures the `avro` group prints.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");
const EVENT: &str = include_str!("../../schemas/coupon_redemption.json");

fn secret() -> MasterSecret {
    MasterSecret::from_bytes(std::array::from_fn(|i| i as u8))
}

fn token(c: &mut Criterion) {
    let key = TokenKey::derive(&secret(), 1, "brand-a", "email");
    let mut out = Vec::with_capacity(32);
    c.bench_function("token/email normalized+hmac", |b| {
        b.iter(|| {
            out.clear();
            key.write_token(
                Normalizer::Email
                    .apply(black_box("  Emilie.Dupont@Example.fr "))
                    .as_bytes(),
                &mut out,
            );
            black_box(&out);
        })
    });
    c.bench_function("token/digits already clean", |b| {
        b.iter(|| {
            out.clear();
            key.write_token(
                Normalizer::Digits
                    .apply(black_box("6280001234567890"))
                    .as_bytes(),
                &mut out,
            );
            black_box(&out);
        })
    });
}

fn encrypt(c: &mut Criterion) {
    let key = EncryptKey::derive(&secret(), 1, "brand-a", "email");
    c.bench_function("encrypt/aes-256-gcm 24 bytes", |b| {
        b.iter(|| black_box(key.encrypt(black_box(b"Emilie.Dupont@example.fr"))))
    });
}

/// The default policy with every detector allowed on every kept field.
fn without_detectors() -> String {
    let names: Vec<String> = Detector::ALL.iter().map(|d| format!("\"{d}\"")).collect();
    let allow = format!("{{ action = \"keep\", allow = [{}] }}", names.join(", "));
    POLICY
        .lines()
        .map(|line| match line.strip_suffix(" = \"keep\"") {
            Some(path) => format!("{path} = {allow}"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn event(c: &mut Criterion) {
    let policy = Policy::from_toml(POLICY).expect("default policy is valid");
    let secret = secret();
    let guard = LeakGuard::new(policy.clone());
    let engine = Pseudonymizer::new(policy.clone(), [("brand-a".to_string(), 1, &secret)]);
    let previous = MasterSecret::from_bytes([9; 32]);
    let bridged_engine = Pseudonymizer::new(policy, [("brand-a".to_string(), 2, &secret)])
        .bridging([("brand-a".to_string(), 1, &previous)]);
    let mut pairs = BridgePairs::new();
    let unchecked =
        Policy::from_toml(&without_detectors()).expect("the policy without detectors is valid");
    let unchecked_guard = LeakGuard::new(unchecked.clone());
    let unchecked_engine = Pseudonymizer::new(unchecked, [("brand-a".to_string(), 1, &secret)]);
    // The example event, compacted to one line as it travels on Kafka.
    let payload =
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(EVENT).unwrap()).unwrap();
    let mut out = Vec::with_capacity(2048);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        format!("pseudonymize {} bytes, detectors off", payload.len()),
        |b| {
            b.iter(|| {
                out.clear();
                unchecked_engine
                    .pseudonymize_into(black_box(&payload), &mut out)
                    .expect("the example event is valid");
                black_box(&out);
            })
        },
    );
    group.bench_function(format!("pseudonymize {} bytes", payload.len()), |b| {
        b.iter(|| {
            out.clear();
            engine
                .pseudonymize_into(black_box(&payload), &mut out)
                .expect("the example event is valid");
            black_box(&out);
        })
    });
    group.bench_function("event bridged", |b| {
        b.iter(|| {
            out.clear();
            bridged_engine
                .pseudonymize_bridged(black_box(&payload), &mut out, &mut pairs)
                .expect("the example event is valid");
            black_box((&out, &pairs));
        })
    });
    group.bench_function("decode and walk only", |b| {
        b.iter(|| {
            engine
                .decode_and_walk(black_box(&payload))
                .expect("the example event is valid")
        })
    });
    out.clear();
    let outcome = engine.pseudonymize_into(&payload, &mut out).unwrap();
    let key = outcome.record_key(&out).map(<[u8]>::to_vec);
    group.bench_function(format!("leak guard {} bytes", out.len()), |b| {
        b.iter(|| {
            guard
                .check(key.as_deref(), black_box(&out))
                .expect("pseudonymized output passes")
        })
    });
    group.bench_function(
        format!("leak guard {} bytes, detectors off", out.len()),
        |b| {
            b.iter(|| {
                unchecked_guard
                    .check(key.as_deref(), black_box(&out))
                    .expect("pseudonymized output passes")
            })
        },
    );
    group.finish();
}

/// The values at a policy path (`basket.items[].sku`) of `event`.
fn values_at<'v>(event: &'v Value, path: &str, found: &mut Vec<&'v Value>) {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let (name, elements) = match head.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (head, false),
    };
    let Some(value) = event.get(name) else {
        return;
    };
    let values: Vec<&Value> = match value {
        Value::Array(items) if elements => items.iter().collect(),
        _ => vec![value],
    };
    for value in values {
        if rest.is_empty() {
            found.push(value);
        } else {
            values_at(value, rest, found);
        }
    }
}

fn detectors(c: &mut Criterion) {
    let policy = Policy::from_toml(POLICY).expect("default policy is valid");
    let example: Value = serde_json::from_str(EVENT).unwrap();
    let mut kept = Vec::new();
    for (path, rule) in policy.rules() {
        if matches!(rule, Rule::Keep { .. }) {
            values_at(&example, path, &mut kept);
        }
    }
    let texts: Vec<String> = kept
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let integers: Vec<String> = kept
        .iter()
        .filter(|v| v.is_u64())
        .map(|v| v.to_string())
        .collect();
    c.bench_function(
        &format!(
            "detect/the example's kept values ({} strings, {} integers)",
            texts.len(),
            integers.len()
        ),
        |b| {
            b.iter(|| {
                for text in &texts {
                    assert!(Detectors::ALL.in_text(black_box(text)).is_none());
                }
                for integer in &integers {
                    assert!(Detectors::ALL.in_integer(black_box(integer)).is_none());
                }
            })
        },
    );
}

fn avro(c: &mut Criterion) {
    use pseudonymize::avro::{to_json, AvroWriter};
    use pseudonymize::avro_schema::{derive, Schema};
    use pseudonymize::avro_walk::AvroPlan;
    let policy = Policy::from_toml(POLICY).expect("default policy is valid");
    let secret = secret();
    let engine = Pseudonymizer::new(policy.clone(), [("brand-a".to_string(), 1, &secret)]);
    let guard = LeakGuard::new(policy.clone());
    let raw = Schema::parse_str(include_str!("../../schemas/coupon_redemption.avsc")).unwrap();
    let derived = derive(&policy, &raw).expect("the default policy fits the raw schema");
    let event: Value = serde_json::from_str(EVENT).unwrap();
    let datum = apache_avro::to_avro_datum(
        &raw,
        apache_avro::types::Value::from(event)
            .resolve(&raw)
            .unwrap(),
    )
    .unwrap();
    let writer = AvroWriter::new(derived.clone());
    let plan = AvroPlan::compile(&policy, &raw, 1).expect("the raw schema is planned");
    let payload = serde_json::to_vec(&serde_json::from_str::<Value>(EVENT).unwrap()).unwrap();
    let mut json_out = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    let mut direct_out = Vec::with_capacity(2048);
    let oracle = |out: &mut Vec<u8>, json_out: &mut Vec<u8>| {
        let json = to_json(&raw, 1, black_box(&datum)).expect("the datum decodes");
        json_out.clear();
        engine
            .pseudonymize_into(&json, json_out)
            .expect("the example event is valid");
        out.clear();
        writer.write(json_out, out).expect("the output fits");
    };
    oracle(&mut out, &mut json_out);
    plan.pseudonymize_into(&engine, &datum, &mut direct_out, None, None)
        .expect("the example event is valid");
    assert_eq!(
        direct_out, out,
        "the direct walk writes what the JSON path writes"
    );
    // Allocations per event in the steady state (after one event has grown the buffers).
    let per_event = |f: &mut dyn FnMut()| {
        f();
        let region = Region::new(ALLOCATOR);
        for _ in 0..1000 {
            f();
        }
        region.change().allocations as f64 / 1000.0
    };
    let json_allocations = per_event(&mut || {
        json_out.clear();
        engine.pseudonymize_into(&payload, &mut json_out).unwrap();
    });
    let direct_allocations = per_event(&mut || {
        direct_out.clear();
        plan.pseudonymize_into(&engine, &datum, &mut direct_out, None, None)
            .unwrap();
    });
    let oracle_allocations = per_event(&mut || oracle(&mut out, &mut json_out));
    println!(
        "allocations per event: json ingest {json_allocations}, avro ingest direct {direct_allocations}, avro ingest through JSON {oracle_allocations}"
    );
    let mut group = c.benchmark_group("avro");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("json ingest {} bytes", payload.len()), |b| {
        b.iter(|| {
            json_out.clear();
            engine
                .pseudonymize_into(black_box(&payload), &mut json_out)
                .expect("the example event is valid");
            black_box(&json_out);
        })
    });
    group.bench_function(format!("ingest direct {} bytes", datum.len()), |b| {
        b.iter(|| {
            direct_out.clear();
            plan.pseudonymize_into(&engine, black_box(&datum), &mut direct_out, None, None)
                .expect("the example event is valid");
            black_box(&direct_out);
        })
    });
    group.bench_function(format!("ingest through JSON {} bytes", datum.len()), |b| {
        b.iter(|| {
            let json = to_json(&raw, 1, black_box(&datum)).expect("the datum decodes");
            json_out.clear();
            engine
                .pseudonymize_into(&json, &mut json_out)
                .expect("the example event is valid");
            out.clear();
            writer.write(&json_out, &mut out).expect("the output fits");
            black_box(&out);
        })
    });
    group.bench_function("datum to JSON only", |b| {
        b.iter(|| black_box(to_json(&raw, 1, black_box(&datum)).expect("the datum decodes")))
    });
    let output_datum = out.clone();
    let guard_plan =
        AvroPlan::for_guard(&policy, &derived, 2).expect("the derived schema is planned");
    json_out.clear();
    let json_key = engine
        .pseudonymize_into(&payload, &mut json_out)
        .map(|outcome| outcome.record_key(&json_out).map(<[u8]>::to_vec))
        .expect("the example event is valid");
    let json_output = json_out.clone();
    group.bench_function(format!("json guard {} bytes", json_output.len()), |b| {
        b.iter(|| {
            guard
                .check(json_key.as_deref(), black_box(&json_output))
                .expect("pseudonymized output passes")
        })
    });
    group.bench_function(
        format!("sink guard direct {} bytes", output_datum.len()),
        |b| {
            b.iter(|| {
                guard_plan
                    .judge(&guard, json_key.as_deref(), black_box(&output_datum))
                    .expect("pseudonymized output passes")
            })
        },
    );
    group.bench_function(
        format!("sink guard through JSON {} bytes", output_datum.len()),
        |b| {
            b.iter(|| {
                let json =
                    to_json(&derived, 2, black_box(&output_datum)).expect("the datum decodes");
                guard
                    .check(None, &json)
                    .expect("pseudonymized output passes");
            })
        },
    );
    group.finish();
}

criterion_group!(benches, token, encrypt, event, detectors, avro);
criterion_main!(benches);
