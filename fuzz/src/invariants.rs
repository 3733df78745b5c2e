//! What must hold on the record path for any input bytes, under the default policy
//! (`schemas/coupon_redemption.policy.toml`) and a fixed test key.
//!
//! [`Subject::check`] runs one input through ingest's transform (decode, policy) and the
//! sink's leak guard and returns the first broken invariant:
//! - the guard, given the raw bytes as if they had been written straight into the
//!   pseudonymized topic, decides without panicking (what it decides is its own tests'
//!   business);
//! - the same input gives the same outcome twice (the default policy encrypts nothing, so
//!   the output is deterministic), also after other inputs went through the per-thread
//!   scratch buffers;
//! - a rejection's message quotes no input string (key or value, as `serde_json` reads
//!   it) of `MESSAGE_MIN_CHARS` characters or more, unless it is part of a field path of
//!   the policy, or is a valid tenant name (quoted on purpose in `unknown_tenant`: it
//!   passed the tenant grammar and names the keyring the operator must create), or the
//!   message's own wording: a string the message still holds once it is changed in the
//!   input (`not a date`, in "is not a date") was not taken from the input;
//! - an accepted input is JSON to `serde_json` too, and so is the output (a parser
//!   differential is how values slip past a check);
//! - the leak guard accepts the output with its record key;
//! - no value of a dropped field is in the output; no token (or ciphertext) holds the
//!   value it replaced: the same text, or, when it has `OUTPUT_MIN_CHARS` characters or
//!   more, the text, its lowercase or its digits inside it (a value is compared with its
//!   own token only: any *other* field may hold a copy of a token, put there on purpose);
//!   the record key is one of the tokens.
//!
//! Panics, hangs and unbounded allocation are caught by whoever runs the check: libFuzzer
//! (`-timeout`, `-rss_limit_mb`, `-malloc_limit_mb`) or the test harness.
//!
//! The file is shared by the fuzz target and by `pseudonymize/tests/hostile_input.rs`
//! (with `#[path]`), so it uses nothing but `pseudonymize`, `serde_json` and `std`.

use pseudonymize::policy::{is_valid_tenant, Rule};
use pseudonymize::{LeakGuard, MasterSecret, Policy, Pseudonymizer, Rejection};
use serde_json::Value;

/// The policy ingest ships with.
const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

/// Shorter input strings may occur in a message by chance (`null`, `field`, a digit of a
/// line number); from this length on, one in a message is a leak.
const MESSAGE_MIN_CHARS: usize = 6;

/// Shorter input strings may occur inside a token by chance (the `v1.` prefix plus a few
/// base64url characters); from this length on, five characters of an HMAC at least must
/// match by chance (2^-30).
const OUTPUT_MIN_CHARS: usize = 8;

/// The field holding the tenant in the default policy.
const TENANT_FIELD: &str = "tenant";

/// What the policy does with the value of a field whose value must not reach the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Tokenized or encrypted: something else is written in its place.
    Replaced,
    /// Dropped: nothing is written.
    Dropped,
}

/// Ingest's transform and the sink's leak guard under the default policy, with the key
/// of `docs/token-spec.md`'s test vectors (`M_1`, the bytes 0 to 31) as version 1 of the
/// tenants `default` and `brand-a` (the simulator's).
#[derive(Debug)]
pub struct Subject {
    engine: Pseudonymizer,
    guard: LeakGuard,
    /// Paths of the policy whose input values must not reach the cloud.
    hidden: Vec<(String, Fate)>,
    /// Every field path of the policy: a message may name them.
    paths: Vec<String>,
}

impl Default for Subject {
    fn default() -> Self {
        let policy = Policy::from_toml(POLICY).expect("the shipped default policy is valid");
        let secret = MasterSecret::from_bytes(std::array::from_fn(|i| i as u8));
        let engine = Pseudonymizer::new(
            policy.clone(),
            ["default", "brand-a"].map(|tenant| (tenant.to_owned(), 1, &secret)),
        );
        let hidden = policy
            .rules()
            .iter()
            .filter_map(|(path, rule)| match rule {
                Rule::Drop => Some((path.clone(), Fate::Dropped)),
                Rule::Token { .. } | Rule::Encrypt { .. } => Some((path.clone(), Fate::Replaced)),
                _ => None,
            })
            .collect();
        let paths = policy
            .rules()
            .iter()
            .map(|(path, _)| path.clone())
            .collect();
        Self {
            engine,
            guard: LeakGuard::new(policy),
            hidden,
            paths,
        }
    }
}

impl Subject {
    /// Runs `input` through the record path and checks every invariant of the module.
    ///
    /// Returns ingest's rejection (`None` when it accepted the input), or the first broken
    /// invariant, described by field paths and lengths only, never by a value.
    pub fn check(&self, input: &[u8]) -> Result<Option<Rejection>, String> {
        // Any verdict will do on raw bytes; reaching one is the invariant.
        let _raw_verdict = self.guard.check(None, input);
        let first = self.engine.pseudonymize(input);
        if self.engine.pseudonymize(input) != first {
            return Err("the same input gave two different outcomes".into());
        }
        match first {
            Err(rejection) => {
                self.check_message(input, &rejection)?;
                Ok(Some(rejection))
            }
            Ok((output, key)) => {
                if let Err(rejection) = self.guard.check(key.as_deref().map(str::as_bytes), &output)
                {
                    return Err(format!(
                        "the leak guard refused ingest's output: {rejection}"
                    ));
                }
                self.check_output(input, &output, key.as_deref())?;
                Ok(None)
            }
        }
    }

    /// No input string, unless part of a field path or the tenant, in the message.
    fn check_message(&self, input: &[u8], rejection: &Rejection) -> Result<(), String> {
        // Input `serde_json` cannot read has no strings it could agree on; its messages
        // are positions and grammar.
        let Ok(input) = serde_json::from_slice::<Value>(input) else {
            return Ok(());
        };
        let tenant = input
            .get(TENANT_FIELD)
            .and_then(Value::as_str)
            .filter(|name| is_valid_tenant(name));
        let mut strings = Vec::new();
        strings_in(&input, &mut strings);
        let quoted = strings.into_iter().find(|s| {
            s.chars().count() >= MESSAGE_MIN_CHARS
                && Some(*s) != tenant
                && !self.paths.iter().any(|path| path.contains(*s))
                && rejection.message.contains(*s)
                && !self.is_message_text(&input, s)
        });
        match quoted {
            Some(s) => Err(format!(
                "the `{}` message quotes an input string of {} characters that is no field path",
                rejection.reason,
                s.chars().count()
            )),
            None => Ok(()),
        }
    }

    /// Whether `text`, found in the message about `input`, is the message's own wording
    /// (`not a date` in "is not a date") rather than taken from the input: the message
    /// about the input with `text` rotated (`a`→`b`, `9`→`0`) still holds it.
    fn is_message_text(&self, input: &Value, text: &str) -> bool {
        let rotated: String = text.chars().map(rotate).collect();
        if rotated == text {
            return false;
        }
        let changed = replace_strings(input, text, &rotated).to_string();
        match self.engine.pseudonymize(changed.as_bytes()) {
            Err(rejection) => rejection.message.contains(text),
            Ok(_) => false,
        }
    }

    /// The output of an accepted input holds no value of a dropped field, and no value of
    /// a tokenized field in the token that replaced it; the record key is one of those tokens.
    fn check_output(&self, input: &[u8], output: &[u8], key: Option<&str>) -> Result<(), String> {
        let input: Value = serde_json::from_slice(input)
            .map_err(|_| "ingest accepted a payload serde_json does not read as JSON")?;
        let output: Value = serde_json::from_slice(output)
            .map_err(|_| "ingest wrote a payload serde_json does not read as JSON")?;
        let mut tokens = Vec::new();
        for (path, fate) in &self.hidden {
            let (before, after) = (values_at(&input, path), values_at(&output, path));
            match fate {
                Fate::Dropped if !after.is_empty() => {
                    return Err(format!("dropped field `{path}` is in the output"));
                }
                Fate::Dropped => {}
                Fate::Replaced if before.len() != after.len() => {
                    return Err(format!("the output has another number of `{path}` values"));
                }
                Fate::Replaced => {
                    for (before, after) in before.iter().zip(after) {
                        let Some(token) = after.as_str() else {
                            continue;
                        };
                        if shows_in(before, token) {
                            return Err(format!(
                                "the token of `{path}` holds the value it replaced"
                            ));
                        }
                        tokens.push(token);
                    }
                }
            }
        }
        match key {
            Some(key) if !tokens.contains(&key) => {
                Err("the record key is none of the tokens in the output".into())
            }
            _ => Ok(()),
        }
    }
}

/// Whether the input value `value` (a string, or an integer tokenized as its decimal form)
/// shows in `token`: the same text, or, when long enough not to be there by chance, the
/// text inside it, as written, lowercased (the `lower`, `email` and `name` normalizers)
/// or as its digits (the `digits` normalizer).
fn shows_in(value: &Value, token: &str) -> bool {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return false,
    };
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let lowercase = token.to_lowercase();
    token == text
        || (text.chars().count() >= OUTPUT_MIN_CHARS
            && (token.contains(&text) || lowercase.contains(&text.to_lowercase())))
        || (digits.len() >= OUTPUT_MIN_CHARS && token.contains(&digits))
}

/// Every key and string value of `value`, depth first.
fn strings_in<'v>(value: &'v Value, strings: &mut Vec<&'v str>) {
    match value {
        Value::String(text) => strings.push(text),
        Value::Array(elements) => elements
            .iter()
            .for_each(|element| strings_in(element, strings)),
        Value::Object(members) => {
            for (key, member) in members {
                strings.push(key);
                strings_in(member, strings);
            }
        }
        _ => {}
    }
}

/// `value` with every key and string equal to `from` replaced by `to`.
fn replace_strings(value: &Value, from: &str, to: &str) -> Value {
    let swap = |text: &String| {
        if text == from {
            to.to_owned()
        } else {
            text.clone()
        }
    };
    match value {
        Value::String(text) => Value::String(swap(text)),
        Value::Array(elements) => Value::Array(
            elements
                .iter()
                .map(|element| replace_strings(element, from, to))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (swap(key), replace_strings(member, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The next ASCII letter or digit, cyclically (`z`→`a`, `9`→`0`); other characters as they are.
fn rotate(c: char) -> char {
    let next = |first: u8, last: u8| {
        let byte = c as u8;
        char::from(if byte == last { first } else { byte + 1 })
    };
    match c {
        'a'..='z' => next(b'a', b'z'),
        'A'..='Z' => next(b'A', b'Z'),
        '0'..='9' => next(b'0', b'9'),
        other => other,
    }
}

/// The values at a policy path (`customer.email`, `basket.items[].sku`): `[]` goes into
/// every element of an array.
fn values_at<'v>(root: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut current = vec![root];
    for (name, each) in segments(path) {
        current = current
            .into_iter()
            .filter_map(|value| value.get(name))
            .flat_map(|value| match (each, value) {
                (false, _) => vec![value],
                (true, Value::Array(elements)) => elements.iter().collect(),
                (true, _) => Vec::new(),
            })
            .collect();
    }
    current
}

/// The segments of a policy path: each member name, and whether `[]` follows it (the
/// path goes on in every element of the array it holds).
pub fn segments(path: &str) -> impl Iterator<Item = (&str, bool)> {
    path.split('.')
        .map(|segment| match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        })
}
