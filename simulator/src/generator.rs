//! [`Generator`], the seeded stream of [`Record`]s: valid events, and now and then a
//! malformed payload of a chosen [`Malformation`].

use std::fmt;

use rand::Rng;

use crate::event::Events;
use crate::malformation::Malformation;

/// Deterministic source of coupon-redemption records.
///
/// The same seed and settings give the same records, byte for byte (with `rand` 0.8's
/// `StdRng`). Each record draws its tenant from [`with_tenants`](Self::with_tenants)
/// and is malformed with probability [`with_malformed_ratio`](Self::with_malformed_ratio),
/// its kind drawn uniformly from [`with_malformations`](Self::with_malformations).
///
/// ```
/// use simulator::{Generator, Kind};
///
/// let mut generator = Generator::new(7).with_tenants(vec!["brand-a".into(), "brand-b".into()]);
/// let record = generator.next_record();
/// assert_eq!(record.kind, Kind::Valid);
/// let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
/// assert_eq!(record.key.as_deref(), event["customer"]["loyalty_card"].as_str().map(str::as_bytes));
/// assert_eq!(Generator::new(7).with_tenants(vec!["brand-a".into(), "brand-b".into()]).next_record(), record);
/// ```
pub struct Generator {
    seed: u64,
    events: Events,
    tenants: Vec<String>,
    malformed_ratio: f64,
    malformations: Vec<Malformation>,
}

/// One payload to produce, with its key and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event: compact JSON on one line for valid events; any bytes for malformed ones
    /// (never a newline, so records can be written as JSON lines).
    pub payload: Vec<u8>,
    /// The `customer.loyalty_card` as written in the event, as a retail system would key
    /// it; `None` for malformed payloads.
    pub key: Option<Vec<u8>>,
    /// Valid, or how it is malformed.
    pub kind: Kind,
}

/// Whether a record is a valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A valid event: the pseudonymizer must accept it under the default policy.
    Valid,
    /// A broken payload: the pseudonymizer must quarantine it with
    /// [`Malformation::expected_reason`].
    Malformed(Malformation),
}

impl Kind {
    /// Whether this is a valid event.
    pub fn is_valid(&self) -> bool {
        *self == Kind::Valid
    }

    /// The reason code the pseudonymizer must reject the record with, `None` if valid.
    pub fn expected_reason(&self) -> Option<&'static str> {
        match self {
            Kind::Valid => None,
            Kind::Malformed(malformation) => Some(malformation.expected_reason()),
        }
    }
}

impl Record {
    /// Whether the record is a valid event.
    pub fn is_valid(&self) -> bool {
        self.kind.is_valid()
    }

    /// The reason code the pseudonymizer must reject the record with, `None` if valid.
    pub fn expected_reason(&self) -> Option<&'static str> {
        self.kind.expected_reason()
    }
}

impl Generator {
    /// A generator of valid events for tenant `brand-a`, fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            events: Events::new(seed),
            tenants: vec!["brand-a".to_owned()],
            malformed_ratio: 0.0,
            malformations: Malformation::DEFAULT.to_vec(),
        }
    }

    /// Draws each event's `tenant` from `tenants` (default `["brand-a"]`). Names should
    /// match `[a-z0-9_-]{1,64}` and have keys, or valid events will be rejected.
    ///
    /// # Panics
    /// If `tenants` is empty.
    pub fn with_tenants(mut self, tenants: Vec<String>) -> Self {
        assert!(
            !tenants.is_empty(),
            "the simulator needs at least one tenant"
        );
        self.tenants = tenants;
        self
    }

    /// Every event redeemed by one of `customers` regulars who come back, with the skews
    /// of real populations (visits, cities and villages, ages, home stores): see
    /// `population.rs`. Without it, every event is a new person drawn uniformly. The
    /// customers are drawn from the seed, apart from the stream: the same seed and size
    /// give the same customers. Each tenant has `customers` of its own, drawn from the seed
    /// and its name: no customer is shared by two tenants.
    ///
    /// ```
    /// use simulator::Generator;
    ///
    /// let mut regulars = Generator::new(7).with_population(100);
    /// let cards: std::collections::HashSet<_> =
    ///     (0..1000).map(|_| regulars.valid_record().key).collect();
    /// assert!(cards.len() <= 100);
    /// ```
    pub fn with_population(mut self, customers: usize) -> Self {
        self.events.with_population(self.seed, customers.max(1));
        self
    }

    /// The share of malformed records, from 0.0 (default) to 1.0.
    ///
    /// # Panics
    /// If `ratio` is not within `0.0..=1.0`.
    pub fn with_malformed_ratio(mut self, ratio: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&ratio),
            "the malformed ratio must be within 0.0..=1.0, got {ratio}"
        );
        self.malformed_ratio = ratio;
        self
    }

    /// The malformations drawn from (default [`Malformation::DEFAULT`]); a kind listed
    /// twice is drawn twice as often.
    ///
    /// # Panics
    /// If `malformations` is empty.
    pub fn with_malformations(mut self, malformations: &[Malformation]) -> Self {
        assert!(
            !malformations.is_empty(),
            "the simulator needs at least one malformation to draw from"
        );
        self.malformations = malformations.to_vec();
        self
    }

    /// Next payload. Deterministic for a seed.
    pub fn next_record(&mut self) -> Record {
        if self.malformed_ratio > 0.0 && self.events.rng.gen_bool(self.malformed_ratio) {
            let index = self.events.rng.gen_range(0..self.malformations.len());
            self.malformed_record(self.malformations[index])
        } else {
            self.valid_record()
        }
    }

    /// A valid event, whatever the malformed ratio.
    pub fn valid_record(&mut self) -> Record {
        let tenant = self.draw_tenant();
        let payload = self.events.valid(&self.tenants[tenant]);
        Record {
            payload,
            key: Some(self.events.card().to_vec()),
            kind: Kind::Valid,
        }
    }

    /// A payload broken in the way of `malformation`.
    pub fn malformed_record(&mut self, malformation: Malformation) -> Record {
        let tenant = self.draw_tenant();
        Record {
            payload: malformation.payload(&mut self.events, &self.tenants[tenant]),
            key: None,
            kind: Kind::Malformed(malformation),
        }
    }

    fn draw_tenant(&mut self) -> usize {
        match self.tenants.len() {
            1 => 0,
            n => self.events.rng.gen_range(0..n),
        }
    }
}

/// An endless stream: `generator.take(n)`.
impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        Some(self.next_record())
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("tenants", &self.tenants)
            .field("malformed_ratio", &self.malformed_ratio)
            .field("malformations", &self.malformations)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use pseudonymize::{MasterSecret, Policy, Pseudonymizer};
    use serde_json::Value;

    use super::*;
    use crate::{leaked_fields, personal_values};

    #[test]
    fn each_tenant_has_customers_of_its_own() {
        let mut generator = Generator::new(5)
            .with_tenants(vec!["brand-a".into(), "brand-b".into()])
            .with_population(40);
        let mut cards: [std::collections::HashSet<Vec<u8>>; 2] = Default::default();
        for _ in 0..2000 {
            let record = generator.valid_record();
            let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            let tenant = usize::from(event["tenant"] == "brand-b");
            cards[tenant].insert(record.key.unwrap());
        }
        assert!(
            cards.iter().all(|c| (2..=40).contains(&c.len())),
            "{cards:?}"
        );
        assert!(
            cards[0].is_disjoint(&cards[1]),
            "no customer shared by the tenants"
        );
    }

    const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");
    const REQUIRED: [&str; 4] = [
        "event_id",
        "event_time",
        "retailer.id",
        "coupon.campaign_id",
    ];

    fn tenants() -> Vec<String> {
        vec!["brand-a".into(), "brand-b".into()]
    }

    /// The keys of the policy's `[fields]` table.
    fn policy_fields() -> BTreeSet<String> {
        let policy: toml::Table = toml::from_str(POLICY).unwrap();
        policy["fields"]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Paths of every scalar or null in `value`, with `.` and `[]` as in the policy.
    fn leaf_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaf_paths(value, &path, paths);
                }
            }
            Value::Array(items) => {
                for item in items {
                    leaf_paths(item, &format!("{prefix}[]"), paths);
                }
            }
            _ => {
                paths.insert(prefix.to_owned());
            }
        }
    }

    fn at<'v>(event: &'v Value, path: &str) -> &'v Value {
        path.split('.').fold(event, |value, key| &value[key])
    }

    #[test]
    fn the_same_seed_gives_the_same_records_and_another_seed_others() {
        let make = |seed| {
            Generator::new(seed)
                .with_tenants(tenants())
                .with_malformed_ratio(0.3)
        };
        let first: Vec<Record> = make(11).take(500).collect();
        assert_eq!(first, make(11).take(500).collect::<Vec<_>>());
        let other: Vec<Record> = make(12).take(500).collect();
        assert!(first
            .iter()
            .zip(&other)
            .all(|(a, b)| a.payload != b.payload));
    }

    #[test]
    fn valid_events_have_the_example_shape_and_only_policy_fields() {
        let fields = policy_fields();
        let mut seen_paths = BTreeSet::new();
        let mut last_time = String::new();
        let (mut phone_null, mut no_device, mut spaced_email, mut ipv6, mut accented) =
            (0, 0, 0, 0, 0);
        let mut countries = BTreeSet::new();
        // Product codes by (digits, GS1 check digit valid); (0, false) for the others.
        let mut sku_shapes: BTreeMap<(usize, bool), usize> = BTreeMap::new();
        let events = 4000;
        for record in Generator::new(5).with_tenants(tenants()).take(events) {
            assert!(record.is_valid());
            assert!(!record.payload.contains(&b'\n'));
            let event: Value = serde_json::from_slice(&record.payload).unwrap();
            let mut paths = BTreeSet::new();
            leaf_paths(&event, "", &mut paths);
            for path in &paths {
                assert!(fields.contains(path), "`{path}` is not in the policy");
            }
            seen_paths.extend(paths);
            for path in REQUIRED {
                assert!(at(&event, path).is_string(), "required `{path}` in {event}");
            }
            assert!(tenants().iter().any(|t| event["tenant"] == t.as_str()));
            let card = event["customer"]["loyalty_card"].as_str().unwrap();
            assert_eq!(record.key.as_deref(), Some(card.as_bytes()));
            assert_eq!(card.chars().filter(char::is_ascii_digit).count(), 16);

            let id = event["event_id"].as_str().unwrap().as_bytes();
            assert_eq!((id.len(), id[8], id[14], id[23]), (36, b'-', b'4', b'-'));
            assert!(b"89ab".contains(&id[19]));
            let time = event["event_time"].as_str().unwrap().to_owned();
            assert!(
                time.starts_with("2026-11-") && time.ends_with('Z') && time.len() == 24,
                "{time}"
            );
            assert!(time > last_time, "event times increase");
            last_time = time;

            let items = event["basket"]["items"].as_array().unwrap();
            assert!((1..=8).contains(&items.len()));
            let total: u64 = items
                .iter()
                .map(|item| {
                    item["quantity"].as_u64().unwrap() * item["unit_price_cents"].as_u64().unwrap()
                })
                .sum();
            assert_eq!(event["basket"]["total_cents"].as_u64(), Some(total));
            for item in items {
                let sku = item["sku"].as_str().unwrap().as_bytes();
                assert!(
                    (4..=14).contains(&sku.len())
                        && sku.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-'),
                    "{sku:?}"
                );
                if sku.iter().all(u8::is_ascii_digit) {
                    // GS1: from the right, the check digit, then weights 3, 1, 3...
                    let weighted: u32 = sku
                        .iter()
                        .rev()
                        .enumerate()
                        .map(|(i, d)| u32::from(d - b'0') * [1, 3][i % 2])
                        .sum();
                    let gs1 = weighted.is_multiple_of(10);
                    *sku_shapes.entry((sku.len(), gs1)).or_default() += 1;
                } else {
                    *sku_shapes.entry((0, false)).or_default() += 1;
                }
            }
            if let Some(birth) = event["customer"]["birth_date"].as_str() {
                let year: u32 = birth[..4].parse().unwrap();
                assert!(
                    birth.len() == 10 && (1940..=2008).contains(&year),
                    "{birth}"
                );
            }

            let customer = &event["customer"];
            phone_null += usize::from(customer["phone"].is_null());
            no_device += usize::from(event.get("device").is_none());
            spaced_email += usize::from(customer["email"].as_str().is_some_and(|e| e.trim() != e));
            ipv6 += usize::from(
                event["device"]["ip"]
                    .as_str()
                    .is_some_and(|ip| ip.contains(':')),
            );
            accented += usize::from(!customer["first_name"].as_str().unwrap().is_ascii());
            countries.insert(customer["address"]["country"].as_str().unwrap().to_owned());
        }
        // Every field of the policy shows up, optional ones at their rough rates.
        assert_eq!(seen_paths, fields);
        let share = |n: usize| n as f64 / events as f64;
        assert!(
            (0.07..0.13).contains(&share(phone_null)),
            "phone null {}",
            share(phone_null)
        );
        assert!(
            (0.16..0.25).contains(&share(no_device)),
            "device absent {}",
            share(no_device)
        );
        assert!(spaced_email > 0 && ipv6 > 0 && accented > events / 5);
        // Every shape of product code: EAN-8, UPC-12, EAN-13 (GS1 and in-store), GTIN-14,
        // internal 13-digit codes without a check digit (one in ten passes it by chance),
        // and the short or lettered internal codes.
        for shape in [
            (8, true),
            (12, true),
            (13, true),
            (13, false),
            (14, true),
            (0, false),
        ] {
            assert!(
                sku_shapes.get(&shape).copied().unwrap_or(0) > 50,
                "{sku_shapes:?}"
            );
        }
        assert_eq!(countries.len(), 8);
    }

    #[test]
    fn each_malformation_comes_at_its_share_of_the_ratio() {
        let (records, ratio) = (28_000, 0.5);
        let mut counts: BTreeMap<Option<Malformation>, usize> = BTreeMap::new();
        for record in Generator::new(9).with_malformed_ratio(ratio).take(records) {
            let malformation = match record.kind {
                Kind::Valid => None,
                Kind::Malformed(m) => Some(m),
            };
            assert_eq!(record.key.is_some(), malformation.is_none());
            assert!(!record.payload.contains(&b'\n'));
            *counts.entry(malformation).or_default() += 1;
        }
        let valid = counts.remove(&None).unwrap_or(0) as f64;
        assert!(
            (valid / records as f64 - (1.0 - ratio)).abs() < 0.02,
            "valid share {valid}"
        );
        let expected = records as f64 * ratio / Malformation::DEFAULT.len() as f64;
        for malformation in Malformation::DEFAULT {
            let count = counts.get(&Some(malformation)).copied().unwrap_or(0) as f64;
            assert!(
                (count / expected - 1.0).abs() < 0.15,
                "{}: {count} for {expected}",
                malformation.name()
            );
        }
        assert_eq!(
            counts.len(),
            Malformation::DEFAULT.len(),
            "only default kinds: {counts:?}"
        );

        let only = Generator::new(9)
            .with_malformed_ratio(1.0)
            .with_malformations(&[Malformation::Empty]);
        assert!(only
            .take(10)
            .all(|r| r.payload.is_empty() && r.kind == Kind::Malformed(Malformation::Empty)));
    }

    #[test]
    fn personal_values_are_in_the_raw_payload() {
        // Card and phone digits are searched for as the `digits` normalizer writes them.
        let squeeze = |text: &str| text.replace([' ', '.', '-', '(', ')', '"'], "");
        for record in Generator::new(21).take(2000) {
            let payload = std::str::from_utf8(&record.payload).unwrap();
            let (lower, squeezed) = (payload.to_lowercase(), squeeze(payload));
            let event: Value = serde_json::from_str(payload).unwrap();
            let values = personal_values(&event);
            assert!(values.len() >= 10, "{values:?}");
            for value in &values {
                assert!(value.chars().count() >= crate::MIN_CHARS);
                assert!(
                    payload.contains(value.as_str())
                        || lower.contains(value.as_str())
                        || squeezed.contains(&squeeze(value)),
                    "{value} is not in {payload}"
                );
            }
        }
    }

    fn pseudonymizer() -> Pseudonymizer {
        let secret = MasterSecret::from_bytes([7; 32]);
        let policy = Policy::from_toml(POLICY).unwrap();
        Pseudonymizer::new(policy, tenants().into_iter().map(|t| (t, 1, &secret)))
    }

    #[test]
    fn the_pseudonymizer_gives_every_malformation_its_expected_reason() {
        let engine = pseudonymizer();
        let mut generator = Generator::new(33).with_tenants(tenants());
        for malformation in Malformation::ALL {
            let rounds = if malformation == Malformation::TooLarge {
                3
            } else {
                150
            };
            for _ in 0..rounds {
                let record = generator.malformed_record(malformation);
                let rejection = engine
                    .pseudonymize(&record.payload)
                    .map(|_| ())
                    .unwrap_err();
                assert_eq!(
                    rejection.reason.code(),
                    malformation.expected_reason(),
                    "{}: {rejection} for {}",
                    malformation.name(),
                    String::from_utf8_lossy(&record.payload[..record.payload.len().min(2000)])
                );
            }
        }
    }

    #[test]
    fn the_pseudonymizer_accepts_valid_events_and_leaves_nothing_personal() {
        let engine = pseudonymizer();
        let mut outputs = String::new();
        let mut sample = Vec::new();
        for (i, record) in Generator::new(34)
            .with_tenants(tenants())
            .take(3000)
            .enumerate()
        {
            let (output, key) = engine.pseudonymize(&record.payload).unwrap();
            let key = key.expect("the card token keys the record");
            let event: Value = serde_json::from_slice(&record.payload).unwrap();
            let pseudonymized: Value = serde_json::from_slice(&output).unwrap();
            let leaked = leaked_fields(&event, &pseudonymized, Some(key.as_bytes()));
            assert!(leaked.is_empty(), "{leaked:?} leaked");
            let output = String::from_utf8(output).unwrap().to_lowercase();
            let values = personal_values(&event);
            for value in &values {
                assert!(
                    !output.contains(&value.to_lowercase()),
                    "{value} leaked into {output}"
                );
            }
            if i % 150 == 0 {
                sample.extend(values);
            }
            outputs.push_str(&output);
            outputs.push('\n');
        }
        // What a leak check over a whole run does: no value of one event turns up by
        // chance in the tokens, SKUs or ids of another. Values with a character no
        // machine-made part has (space, accent, `@`) cannot, so only the others are searched.
        let machine_like = |v: &String| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/\"+".contains(c))
        };
        for value in sample.iter().filter(|v| machine_like(v)) {
            assert!(
                !outputs.contains(&value.to_lowercase()),
                "{value} found in the output by chance"
            );
        }
    }
}
