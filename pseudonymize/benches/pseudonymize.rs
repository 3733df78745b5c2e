//! Criterion benches of the record path: one token, one encryption, one whole event.
//!
//! `cargo bench -p pseudonymize` prints time per operation; events/s per core is
//! 1 / (time per event). The `event` group also times the first phase alone (decode and
//! walk) and the sink's leak guard on the pseudonymized event.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pseudonymize::{
    EncryptKey, LeakGuard, MasterSecret, Normalizer, Policy, Pseudonymizer, TokenKey,
};

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

fn event(c: &mut Criterion) {
    let policy = Policy::from_toml(POLICY).expect("default policy is valid");
    let secret = secret();
    let guard = LeakGuard::new(policy.clone());
    let engine = Pseudonymizer::new(policy, [("brand-a".to_string(), 1, &secret)]);
    // The example event, compacted to one line as it travels on Kafka.
    let payload =
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(EVENT).unwrap()).unwrap();
    let mut out = Vec::with_capacity(2048);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("pseudonymize {} bytes", payload.len()), |b| {
        b.iter(|| {
            out.clear();
            engine
                .pseudonymize_into(black_box(&payload), &mut out)
                .expect("the example event is valid");
            black_box(&out);
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
    group.finish();
}

criterion_group!(benches, token, encrypt, event);
criterion_main!(benches);
