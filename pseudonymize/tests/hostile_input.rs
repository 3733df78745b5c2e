//! Hostile input at scale, without cargo-fuzz: arbitrary JSON documents, near-valid events
//! and arbitrary bytes through ingest's transform and the sink's leak guard (proptest),
//! and the replay of every input in `fuzz/regressions/`, so that CI checks each past
//! finding of `scripts/fuzz.sh` on every run.
//!
//! The invariants are the fuzz target's own (`fuzz/src/invariants.rs`, included below):
//! no panic; the same input, the same outcome; no input string in a rejection's message
//! unless it is part of a field path of the policy; an accepted input's output passes the
//! leak guard and no token holds the value it replaced.

#[path = "../../fuzz/src/invariants.rs"]
mod invariants;

use std::path::Path;
use std::sync::LazyLock;

use invariants::Subject;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use pseudonymize::policy::Rule;
use pseudonymize::{Policy, Reason};
use serde_json::Value;

const EVENT: &str = include_str!("../../schemas/coupon_redemption.json");
const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

/// Built once: the policy compiles and the keys derive only once per test binary.
static SUBJECT: LazyLock<Subject> = LazyLock::new(Subject::default);

/// Every field name of the default policy, so that arbitrary objects reach its rules.
const NAMES: [&str; 36] = [
    "event_id",
    "event_time",
    "tenant",
    "retailer",
    "id",
    "store_id",
    "channel",
    "coupon",
    "campaign_id",
    "coupon_code",
    "face_value_cents",
    "currency",
    "basket",
    "total_cents",
    "items",
    "sku",
    "quantity",
    "unit_price_cents",
    "customer",
    "loyalty_card",
    "email",
    "phone",
    "first_name",
    "last_name",
    "birth_date",
    "address",
    "street",
    "postal_code",
    "city",
    "country",
    "device",
    "ip",
    "user_agent",
    "consent",
    "analytics",
    "marketing",
];

/// A JSON document as written: numbers as their text, strings with their escapes.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(Text),
    Array(Vec<Json>),
    Object(Vec<(Text, Json)>),
}

/// A string and how its characters are spelled: each takes the spelling at its index
/// (cyclically) in `spellings`: 0 as is, 1 a `\u` escape, 2 a short escape (`\n`, `\/`)
/// where one exists. Characters JSON requires escaped are always escaped.
#[derive(Debug, Clone)]
struct Text {
    value: String,
    spellings: Vec<u8>,
}

impl Text {
    fn plain(value: &str) -> Self {
        Self {
            value: value.to_owned(),
            spellings: Vec::new(),
        }
    }

    fn write(&self, out: &mut String) {
        out.push('"');
        for (i, c) in self.value.chars().enumerate() {
            let spelling = match self.spellings.len() {
                0 => 0,
                n => self.spellings[i % n],
            };
            let short = match c {
                '"' => Some('"'),
                '\\' => Some('\\'),
                '/' => Some('/'),
                '\u{8}' => Some('b'),
                '\u{c}' => Some('f'),
                '\n' => Some('n'),
                '\r' => Some('r'),
                '\t' => Some('t'),
                _ => None,
            };
            let must_escape = c == '"' || c == '\\' || c < ' ';
            match (spelling, short) {
                (2, Some(short)) => {
                    out.push('\\');
                    out.push(short);
                }
                (1, _) => push_unicode_escape(out, c),
                _ if must_escape => push_unicode_escape(out, c),
                _ => out.push(c),
            }
        }
        out.push('"');
    }
}

/// `\uXXXX`, or a surrogate pair outside the basic plane.
fn push_unicode_escape(out: &mut String, c: char) {
    let mut units = [0; 2];
    for unit in c.encode_utf16(&mut units) {
        out.push_str(&format!("\\u{unit:04X}"));
    }
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Json::Number(text) => out.push_str(text),
            Json::String(text) => text.write(out),
            Json::Array(elements) => {
                out.push('[');
                for (i, element) in elements.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    element.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, member)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    key.write(out);
                    out.push(':');
                    member.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// A parsed document, as written (numbers keep their text).
    fn from_value(value: &Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Number(number) => Json::Number(number.to_string()),
            Value::String(text) => Json::String(Text::plain(text)),
            Value::Array(elements) => Json::Array(elements.iter().map(Json::from_value).collect()),
            Value::Object(members) => Json::Object(
                members
                    .iter()
                    .map(|(key, member)| (Text::plain(key), Json::from_value(member)))
                    .collect(),
            ),
        }
    }

    /// The values at a policy path (`basket.items[].sku`) that the document has.
    fn at_path(&mut self, path: &str) -> Vec<&mut Json> {
        let mut places = vec![self];
        for (name, each) in invariants::segments(path) {
            places = places
                .into_iter()
                .filter_map(|place| match place {
                    Json::Object(members) => members
                        .iter_mut()
                        .find(|(key, _)| key.value == name)
                        .map(|(_, member)| member),
                    _ => None,
                })
                .flat_map(|member| match (each, member) {
                    (false, member) => vec![member],
                    (true, Json::Array(elements)) => elements.iter_mut().collect(),
                    (true, _) => Vec::new(),
                })
                .collect();
        }
        places
    }

    /// Applies `edit`: a [`Edit::Field`] at its path, any other where `route` leads.
    fn edit(&mut self, route: &[u16], edit: &Edit) {
        match edit {
            Edit::Field(path, value) => {
                for place in self.at_path(path) {
                    *place = value.clone();
                }
            }
            edit => self.apply(route, edit),
        }
    }

    /// Applies `edit` at the place `route` leads to: at each container, the child at
    /// index `route[i] % len`, until the route ends or a scalar or empty container is met.
    fn apply(&mut self, route: &[u16], edit: &Edit) {
        let children = match self {
            Json::Array(elements) if !elements.is_empty() => elements.len(),
            Json::Object(members) if !members.is_empty() => members.len(),
            _ => 0,
        };
        match route.split_first() {
            Some((&step, rest)) if children > 0 && !(rest.is_empty() && edit.on_member()) => {
                let index = usize::from(step) % children;
                match self {
                    Json::Array(elements) => elements[index].apply(rest, edit),
                    Json::Object(members) => members[index].1.apply(rest, edit),
                    _ => unreachable!("only containers have children"),
                }
            }
            step => {
                let index = step.map_or(0, |(&step, _)| usize::from(step));
                edit.apply_here(self, index);
            }
        }
    }
}

/// One change to a valid event.
#[derive(Debug, Clone)]
enum Edit {
    /// The value there becomes another.
    Replace(Json),
    /// A member added to the object there (a policy name or not).
    Insert(Text, Json),
    /// A member of the object there removed.
    Remove,
    /// A member of the object there written twice, the copy with another value.
    Duplicate(Json),
    /// The value of a policy field (every element's, under `[]`) becomes another; made
    /// by path, not by route (see [`Json::edit`]).
    Field(String, Json),
}

impl Edit {
    /// Whether the edit works on one member of the object reached, not on the value.
    fn on_member(&self) -> bool {
        matches!(self, Edit::Remove | Edit::Duplicate(_))
    }

    fn apply_here(&self, target: &mut Json, index: usize) {
        match (self, target) {
            (Edit::Replace(value), target) => *target = value.clone(),
            (Edit::Insert(key, value), Json::Object(members)) => {
                let at = index % (members.len() + 1);
                members.insert(at, (key.clone(), value.clone()));
            }
            (Edit::Remove, Json::Object(members)) if !members.is_empty() => {
                members.remove(index % members.len());
            }
            (Edit::Duplicate(value), Json::Object(members)) if !members.is_empty() => {
                let key = members[index % members.len()].0.clone();
                members.push((key, value.clone()));
            }
            _ => {}
        }
    }
}

/// Strings: any Unicode, personal-looking ASCII, control characters, policy names.
fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,16}",
        2 => "[a-zA-Z0-9@.+ _-]{0,24}",
        1 => "[a-z]{1,8}\\.[a-z]{1,8}@[a-z]{2,8}\\.(fr|com)",
        1 => "\\+?[0-9][0-9 .-]{5,18}",
        1 => "[\\x00-\\x1f\"\\\\/]{1,4}",
        1 => "[\\x{10000}-\\x{10FFFF}]{1,3}",
        1 => pseudonymized_looking(),
        1 => prop::sample::select(&NAMES[..]).prop_map(String::from),
    ]
}

/// Already pseudonymized, or looking so: a token, a ciphertext.
fn pseudonymized_looking() -> impl Strategy<Value = String> {
    prop_oneof![
        "v[1-3]\\.[A-Za-z0-9_-]{22}",
        "e[1-3]\\.[A-Za-z0-9_-]{40,64}"
    ]
}

fn text(strings: impl Strategy<Value = String>) -> impl Strategy<Value = Text> {
    (strings, prop::collection::vec(0u8..3, 0..4))
        .prop_map(|(value, spellings)| Text { value, spellings })
}

/// Keys: mostly the policy's names, so that documents get past the first unknown field,
/// sometimes spelled with escapes.
fn key() -> impl Strategy<Value = Text> {
    text(prop_oneof![
        3 => prop::sample::select(&NAMES[..]).prop_map(String::from),
        1 => any_string(),
    ])
}

/// Numbers of every shape, as written: 64-bit bounds and beyond, fractions, exponents
/// far out of range, negative zero.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |n| n.is_finite())
            .prop_map(|n| format!("{n:e}")),
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?",
    ]
}

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        1 => number().prop_map(Json::Number),
        3 => text(any_string()).prop_map(Json::String),
    ]
}

/// Any document, nested a few levels.
fn document() -> impl Strategy<Value = Json> {
    scalar().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            3 => prop::collection::vec((key(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

/// The field paths of the default policy, or only those it tokenizes or encrypts.
fn policy_paths(tokenized_only: bool) -> Vec<String> {
    let policy = Policy::from_toml(POLICY).expect("the default policy is valid");
    policy
        .rules()
        .iter()
        .filter(|(_, rule)| {
            !tokenized_only || matches!(rule, Rule::Token { .. } | Rule::Encrypt { .. })
        })
        .map(|(path, _)| path.clone())
        .collect()
}

/// The example event with one to three edits anywhere in it, most often to a policy field.
fn near_valid_event() -> impl Strategy<Value = Json> {
    let field = (
        prop::sample::select(policy_paths(false)),
        prop_oneof![3 => scalar(), 1 => document()],
    );
    let edit = prop_oneof![
        4 => field.prop_map(|(path, value)| Edit::Field(path, value)),
        3 => document().prop_map(Edit::Replace),
        2 => (key(), document()).prop_map(|(key, value)| Edit::Insert(key, value)),
        1 => Just(Edit::Remove),
        1 => document().prop_map(Edit::Duplicate),
    ];
    let route = prop::collection::vec(any::<u16>(), 1..5);
    prop::collection::vec((route, edit), 1..4).prop_map(|edits| {
        let mut event = example();
        for (route, edit) in &edits {
            event.edit(route, edit);
        }
        event
    })
}

fn example() -> Json {
    Json::from_value(&serde_json::from_str(EVENT).expect("the example event is JSON"))
}

/// What may happen to a written document on its way: nothing, or the bytes cut short,
/// followed by something, or one byte inserted.
#[derive(Debug, Clone)]
enum Mangle {
    Intact,
    Truncate(usize),
    Trailing(Vec<u8>),
    Insert(usize, u8),
}

fn mangle() -> impl Strategy<Value = Mangle> {
    prop_oneof![
        6 => Just(Mangle::Intact),
        1 => any::<usize>().prop_map(Mangle::Truncate),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 1..8),
            Just(b" {}".to_vec()),
            Just(b"\n{\"customer\":{\"email\":\"x@y.z\"}}".to_vec()),
        ]
        .prop_map(Mangle::Trailing),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mangle::Insert(at, byte)),
    ]
}

fn mangled(text: String, mangle: &Mangle) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    match mangle {
        Mangle::Intact => {}
        Mangle::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
        Mangle::Trailing(tail) => bytes.extend_from_slice(tail),
        Mangle::Insert(at, byte) => bytes.insert(at % (bytes.len() + 1), *byte),
    }
    bytes
}

fn holds(input: &[u8]) -> Result<(), TestCaseError> {
    match SUBJECT.check(input) {
        Ok(_) => Ok(()),
        Err(violation) => Err(TestCaseError::fail(violation)),
    }
}

proptest! {
    // Sized so that the whole file runs in about 20 s in a debug build.
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_documents_hold(document in document(), mangle in mangle()) {
        holds(&mangled(document.text(), &mangle))?;
    }

    #[test]
    fn near_valid_events_hold(event in near_valid_event(), mangle in mangle()) {
        holds(&mangled(event.text(), &mangle))?;
    }

    #[test]
    fn tokenized_fields_holding_anything_hold(
        path in prop::sample::select(policy_paths(true)),
        value in prop_oneof![pseudonymized_looking(), any_string()],
        spellings in prop::collection::vec(0u8..3, 0..4),
    ) {
        let mut event = example();
        event.edit(&[], &Edit::Field(path, Json::String(Text { value, spellings })));
        holds(event.text().as_bytes())?;
    }

    #[test]
    fn arbitrary_bytes_hold(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        holds(&bytes)?;
    }

    #[test]
    fn an_event_with_flipped_bytes_holds(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = EVENT.as_bytes().to_vec();
        for (at, byte) in flips {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        holds(&bytes)?;
    }

    #[test]
    fn nesting_around_the_depth_limit_holds(
        depth in 120usize..136,
        keys in prop::collection::vec(prop::sample::select(&NAMES[..]), 1..4),
        arrays in any::<bool>(),
    ) {
        let (mut open, mut close) = (String::new(), String::new());
        for level in 0..depth {
            if arrays && level % 2 == 1 {
                open.push('[');
                close.insert(0, ']');
            } else {
                open.push_str(&format!("{{\"{}\":", keys[level % keys.len()]));
                close.insert(0, '}');
            }
        }
        holds(format!("{open}{EVENT}{close}").as_bytes())?;
    }
}

/// Without this, the properties could hold because every input is rejected early: a fair
/// share of near-valid events must get through ingest (and so through the guard check).
#[test]
fn near_valid_events_are_often_accepted() {
    let mut runner = TestRunner::deterministic();
    let strategy = near_valid_event();
    let (mut accepted, mut reasons) = (0, std::collections::BTreeSet::new());
    for _ in 0..200 {
        let event = strategy
            .new_tree(&mut runner)
            .expect("the strategy rejects no case")
            .current();
        match SUBJECT.check(event.text().as_bytes()) {
            Ok(None) => accepted += 1,
            Ok(Some(rejection)) => {
                reasons.insert(rejection.reason);
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    assert!(
        accepted >= 30,
        "only {accepted} of 200 near-valid events accepted"
    );
    for reason in [
        Reason::UnknownField,
        Reason::WrongType,
        Reason::DuplicateField,
    ] {
        assert!(
            reasons.contains(&reason),
            "no rejection as {reason}: {reasons:?}"
        );
    }
}

#[test]
fn events_at_the_size_limit() {
    let limit = Policy::from_toml(POLICY)
        .expect("the default policy is valid")
        .limits()
        .max_event_bytes;
    let padded = |size: usize| {
        let mut bytes = EVENT.as_bytes().to_vec();
        bytes.resize(size, b' ');
        bytes
    };
    let at_limit = SUBJECT.check(&padded(limit)).expect("invariants hold");
    assert_eq!(at_limit, None, "an event of exactly the limit passes");
    let over = SUBJECT.check(&padded(limit + 1)).expect("invariants hold");
    assert_eq!(
        over.map(|rejection| rejection.reason),
        Some(Reason::TooLarge)
    );
}

/// Every input `scripts/fuzz.sh` ever failed on, named after what broke (see the README
/// there): the invariants hold on each.
#[test]
fn every_fuzz_regression_holds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|extension| extension == "md") {
            continue;
        }
        let input = std::fs::read(&path).expect("a regression input is readable");
        if let Err(violation) = SUBJECT.check(&input) {
            panic!("{}: {violation}", path.display());
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no regression input in {}", dir.display());
}
