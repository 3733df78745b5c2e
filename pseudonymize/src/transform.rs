//! The record path: one raw event in, one pseudonymized event (or a [`Rejection`]) out.
//!
//! [`Pseudonymizer`] holds a compiled [`Policy`] and, per tenant, the keys of the active
//! version already derived for every domain the policy uses (HMAC states keyed once).
//! An event is read once, byte by byte, alongside the policy's tree ([`crate::walk`]);
//! the output is then written straight into the caller's buffer: the structure in compact
//! form, kept values copied verbatim from the input, tokens and generalized values in
//! place of the others. No `serde_json::Value` is built, and once the per-thread scratch
//! buffers have grown, an event costs no allocation (an `encrypt` rule excepted).
//!
//! What is rejected, and in which order, is what a parser of the whole payload would
//! find first: size, UTF-8, syntax and nesting, a field twice in one object, a top-level
//! value that is not an object, then the required fields, the tenant (unknown, or
//! suspended: in the keyring without an active version), the consent flag, and the first
//! field in document order that the policy refuses. An event without consent is dropped,
//! not quarantined ([`Reason::is_drop`]); one that is malformed is quarantined whatever
//! its consent says, since what it says cannot be trusted.
//!
//! During a rotation's overlap a tenant may also hold the keys of its previous version
//! ([`Pseudonymizer::bridging`]): [`Pseudonymizer::pseudonymize_bridged`] then writes, for
//! every token of the event, the pair (previous-version token, new token) into
//! [`BridgePairs`], computed from the same normalized value in the same pass.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::detect::{Detector, Detectors};
use crate::error::{Finding, Reason, Rejection};
use crate::generalize::{parse_date, Failure, Scalar};
use crate::json::{unescape, write_string, Kind, SyntaxKind};
use crate::policy::{is_valid_tenant, Policy, Rule};
use crate::secret::MasterSecret;
use crate::token::{fingerprint, EncryptKey, TokenKey};
use crate::tree::{NodeId, Shape, Tree};
use crate::walk::{unknown_field_at, Limit, Malformed, Member, Problem, Step, Walk};

/// The keys of one tenant's active version, derived for every domain of the policy.
#[derive(Debug)]
pub struct TenantKeys {
    pub(crate) version: u32,
    fingerprint: String,
    pub(crate) tokens: Vec<TokenKey>,
    pub(crate) encrypts: Vec<EncryptKey>,
    /// The token keys of the version before, during a rotation's overlap.
    pub(crate) previous: Option<PreviousKeys>,
}

/// The token keys of a tenant's previous version, one per token domain of the policy.
#[derive(Debug)]
pub(crate) struct PreviousKeys {
    pub(crate) version: u32,
    pub(crate) tokens: Vec<TokenKey>,
}

impl TenantKeys {
    /// Derives the keys of `tenant` version `version` for the domains of `policy`.
    pub fn derive(policy: &Policy, tenant: &str, version: u32, secret: &MasterSecret) -> Self {
        Self {
            version,
            fingerprint: fingerprint(secret),
            tokens: policy
                .token_domains()
                .iter()
                .map(|d| TokenKey::derive(secret, version, tenant, d))
                .collect(),
            encrypts: policy
                .encrypt_domains()
                .iter()
                .map(|d| EncryptKey::derive(secret, version, tenant, d))
                .collect(),
            previous: None,
        }
    }

    /// The key version these keys belong to.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The fingerprint of the master secret.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The previous version whose tokens are paired with these during an overlap.
    pub fn bridged_from(&self) -> Option<u32> {
        self.previous.as_ref().map(|previous| previous.version)
    }

    /// The token key of domain number `domain` of the policy.
    #[cfg(test)]
    pub(crate) fn token_key(&self, domain: usize) -> &TokenKey {
        &self.tokens[domain]
    }

    /// The previous version's token key of domain number `domain`, during an overlap.
    #[cfg(test)]
    pub(crate) fn previous_token_key(&self, domain: usize) -> Option<&TokenKey> {
        self.previous
            .as_ref()
            .map(|previous| &previous.tokens[domain])
    }

    /// The encryption key of domain number `domain` of the policy.
    #[cfg(test)]
    pub(crate) fn encrypt_key(&self, domain: usize) -> &EncryptKey {
        &self.encrypts[domain]
    }
}

/// What came out of a successful [`Pseudonymizer::pseudonymize_into`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// The tenant the event belongs to.
    pub tenant: &'a str,
    /// The key version used for its tokens.
    pub key_version: u32,
    /// Where, in the output buffer, the token of the policy's `record_key` field is,
    /// when it has one and it is not null (see [`Outcome::record_key`]).
    pub record_key: Option<Range<usize>>,
    /// The previous version whose tokens were paired with this event's, when
    /// [`Pseudonymizer::pseudonymize_bridged`] wrote at least one pair.
    pub bridged_from: Option<u32>,
}

impl Outcome<'_> {
    /// The record key's token, read from the buffer the event was written into.
    pub fn record_key<'o>(&self, out: &'o [u8]) -> Option<&'o [u8]> {
        self.record_key.clone().map(|range| &out[range])
    }
}

/// Where the quasi-identifiers of the policy's `[risk]` are in an event's output, filled
/// by [`Pseudonymizer::pseudonymize_observed`] in the same pass that writes the output.
/// Reuse one from event to event: once sized, filling it allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct QuasiValues {
    /// Per quasi-identifier, in declared order: its value's span in the output (or in
    /// `held`), `None` when absent or null.
    spans: Vec<Option<Range<usize>>>,
    /// The values copied out of an intermediate rendering ([`QuasiValues::hold`]) when the
    /// output does not hold them as the walk wrote them.
    held: Vec<u8>,
    holding: bool,
}

impl QuasiValues {
    /// An empty set of spans.
    pub fn new() -> Self {
        Self::default()
    }

    /// The spans of the last event in its output, per quasi-identifier in declared order;
    /// empty when its values were held from another rendering ([`QuasiValues::hold`]).
    pub fn spans(&self) -> &[Option<Range<usize>>] {
        if self.holding {
            &[]
        } else {
            &self.spans
        }
    }

    /// The output value of quasi-identifier `index` of the last event written into
    /// `out` (or held for it).
    pub fn value<'a>(&'a self, index: usize, out: &'a [u8]) -> Option<&'a [u8]> {
        let source = if self.holding { &self.held[..] } else { out };
        self.spans
            .get(index)
            .and_then(Option::as_ref)
            .map(|span| &source[span.clone()])
    }

    /// Copies the values out of `rendering`, the buffer the spans were recorded in, for
    /// an output written from it in another encoding (an Avro datum written from the
    /// JSON record path): [`QuasiValues::value`] then answers from the copies.
    pub fn hold(&mut self, rendering: &[u8]) {
        self.held.clear();
        for span in self.spans.iter_mut().flatten() {
            let start = self.held.len();
            self.held.extend_from_slice(&rendering[span.clone()]);
            *span = start..self.held.len();
        }
        self.holding = true;
    }

    /// Empties the spans for the next event of `policy`.
    pub(crate) fn reset_for(&mut self, policy: &Policy) {
        self.reset(
            policy
                .risk()
                .map_or(0, |risk| risk.quasi_identifiers().len()),
        );
    }

    fn reset(&mut self, count: usize) {
        self.spans.clear();
        self.spans.resize(count, None);
        self.holding = false;
    }

    pub(crate) fn set(&mut self, index: Option<&Option<usize>>, span: Range<usize>) {
        if let Some(Some(index)) = index {
            self.spans[*index] = Some(span);
        }
    }
}

/// Applies a policy with a set of tenant keys.
#[derive(Debug)]
pub struct Pseudonymizer {
    policy: Policy,
    tenants: HashMap<String, TenantKeys>,
    /// Tenants of the keyring without an active version.
    suspended: HashSet<String>,
}

/// The token pairs of one event during a rotation's overlap, written by
/// [`Pseudonymizer::pseudonymize_bridged`]: per token, the field's policy path, its
/// domain, the previous version's token and the new one. Never a value. Reuse one buffer
/// from event to event: once it has grown, filling it allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct BridgePairs {
    /// The paths, domains and tokens, one after the other.
    text: Vec<u8>,
    /// Where each pair's four strings are in `text`.
    pairs: Vec<[Range<usize>; 4]>,
}

/// One pair of [`BridgePairs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgePair<'a> {
    /// The field's path in the policy (`customer.email`, `basket.items[].sku`).
    pub path: &'a str,
    /// The field's linkability domain.
    pub domain: &'a str,
    /// The token of the value under the previous version.
    pub old: &'a str,
    /// The token of the value under the active version, as written in the output.
    pub new: &'a str,
}

impl BridgePairs {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many pairs the last event gave.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the last event gave no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, in the event's document order.
    pub fn iter(&self) -> impl Iterator<Item = BridgePair<'_>> + '_ {
        let text = |range: &Range<usize>| {
            std::str::from_utf8(&self.text[range.clone()])
                .expect("paths, domains and tokens are written whole from UTF-8 strings")
        };
        self.pairs
            .iter()
            .map(move |[path, domain, old, new]| BridgePair {
                path: text(path),
                domain: text(domain),
                old: text(old),
                new: text(new),
            })
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.pairs.clear();
    }

    /// Appends a pair: `path` and `domain` copied, the old token computed by `old_key`
    /// from `normalized`, the new one copied from `new`.
    pub(crate) fn push(
        &mut self,
        path: &str,
        domain: &str,
        old_key: &TokenKey,
        normalized: &[u8],
        new: &[u8],
    ) {
        let text = &mut self.text;
        let path = appended(text, |text| text.extend_from_slice(path.as_bytes()));
        let domain = appended(text, |text| text.extend_from_slice(domain.as_bytes()));
        let old = appended(text, |text| old_key.write_token(normalized, text));
        let new = appended(text, |text| text.extend_from_slice(new));
        self.pairs.push([path, domain, old, new]);
    }
}

/// Where `write` appended to `text`.
fn appended(text: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
    let start = text.len();
    write(text);
    start..text.len()
}

/// Buffers reused from one event to the next on a thread.
struct Scratch {
    /// The policy they were made for.
    policy: u64,
    walk: Walk,
    /// An unescaped string.
    text: String,
    /// A normalized value.
    normalized: String,
    /// A masked or generalized value.
    rewritten: String,
}

impl Scratch {
    fn new(policy: &Policy) -> Self {
        let watched = policy.watched();
        Self {
            policy: policy.id,
            walk: Walk::new(&policy.tree, &policy.limits, &watched),
            text: String::new(),
            normalized: String::new(),
            rewritten: String::new(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl Pseudonymizer {
    /// A pseudonymizer with the given active keys, one entry per tenant.
    pub fn new<'s>(
        policy: Policy,
        active: impl IntoIterator<Item = (String, u32, &'s MasterSecret)>,
    ) -> Self {
        let tenants = active
            .into_iter()
            .map(|(tenant, version, secret)| {
                let keys = TenantKeys::derive(&policy, &tenant, version, secret);
                (tenant, keys)
            })
            .collect();
        Self {
            policy,
            tenants,
            suspended: HashSet::new(),
        }
    }

    /// Marks tenants of the keyring that have no active version (retired or destroyed):
    /// their events are rejected as `tenant_suspended` instead of `unknown_tenant`, which
    /// tells the operator that `keys rotate` or `keys import --activate` resumes them. A
    /// tenant given here is suspended even if it was also given active keys (fail closed).
    pub fn suspending(mut self, tenants: impl IntoIterator<Item = String>) -> Self {
        for tenant in tenants {
            self.tenants.remove(&tenant);
            self.suspended.insert(tenant);
        }
        self
    }

    /// Gives tenants the keys of their previous version, for a rotation's overlap: each
    /// entry is a tenant, the previous version and its master secret. A tenant without
    /// active keys here is skipped (it writes no tokens to pair). Then
    /// [`Pseudonymizer::pseudonymize_bridged`] pairs every token of their events.
    pub fn bridging<'s>(
        mut self,
        previous: impl IntoIterator<Item = (String, u32, &'s MasterSecret)>,
    ) -> Self {
        for (tenant, version, secret) in previous {
            if let Some(keys) = self.tenants.get_mut(&tenant) {
                keys.previous = Some(PreviousKeys {
                    version,
                    tokens: self
                        .policy
                        .token_domains()
                        .iter()
                        .map(|d| TokenKey::derive(secret, version, &tenant, d))
                        .collect(),
                });
            }
        }
        self
    }

    /// The tenants marked with [`Pseudonymizer::suspending`].
    pub fn suspended(&self) -> impl Iterator<Item = &str> {
        self.suspended.iter().map(String::as_str)
    }

    /// The policy applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The active keys of every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &TenantKeys)> {
        self.tenants
            .iter()
            .map(|(name, keys)| (name.as_str(), keys))
    }

    /// Pseudonymizes one event into a fresh buffer.
    pub fn pseudonymize(&self, payload: &[u8]) -> Result<(Vec<u8>, Option<String>), Rejection> {
        let mut out = Vec::with_capacity(payload.len());
        let outcome = self.pseudonymize_into(payload, &mut out)?;
        let key = outcome
            .record_key(&out)
            .map(|token| String::from_utf8_lossy(token).into_owned());
        Ok((out, key))
    }

    /// Pseudonymizes one event, appending the JSON result to `out` (left untouched on rejection).
    pub fn pseudonymize_into(
        &self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Outcome<'_>, Rejection> {
        self.pseudonymize_with(payload, out, None, None)
    }

    /// Does what [`Pseudonymizer::pseudonymize_into`] does and, when the event's tenant
    /// has previous keys ([`Pseudonymizer::bridging`]), writes into `pairs` (cleared
    /// first, and left empty on rejection) one pair per token written: computed from the
    /// same normalized value, in the same pass. [`Outcome::bridged_from`] says whether
    /// pairs were written.
    pub fn pseudonymize_bridged(
        &self,
        payload: &[u8],
        out: &mut Vec<u8>,
        pairs: &mut BridgePairs,
    ) -> Result<Outcome<'_>, Rejection> {
        pairs.clear();
        let outcome = self.pseudonymize_with(payload, out, Some(&mut *pairs), None);
        if outcome.is_err() {
            pairs.clear();
        }
        outcome
    }

    /// Does what [`Pseudonymizer::pseudonymize_into`] (or, given `pairs`,
    /// [`Pseudonymizer::pseudonymize_bridged`]) does, and records in `quasi` where each
    /// quasi-identifier of the policy's `[risk]` is in the output (none without `[risk]`).
    pub fn pseudonymize_observed(
        &self,
        payload: &[u8],
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: &mut QuasiValues,
    ) -> Result<Outcome<'_>, Rejection> {
        quasi.reset_for(&self.policy);
        match pairs {
            Some(pairs) => {
                pairs.clear();
                let outcome = self.pseudonymize_with(payload, out, Some(&mut *pairs), Some(quasi));
                if outcome.is_err() {
                    pairs.clear();
                }
                outcome
            }
            None => self.pseudonymize_with(payload, out, None, Some(quasi)),
        }
    }

    fn pseudonymize_with(
        &self,
        payload: &[u8],
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'_>, Rejection> {
        let text = self.check_bytes(payload)?;
        self.with_scratch(|scratch| {
            let mark = out.len();
            let outcome = self.run(text, scratch, out, pairs, quasi);
            if outcome.is_err() {
                out.truncate(mark);
            }
            outcome
        })
    }

    /// The first phase of the record path alone: reads the event alongside the policy
    /// and checks the required fields, the tenant and the consent, writing nothing. For
    /// benchmarks.
    #[doc(hidden)]
    pub fn decode_and_walk(&self, payload: &[u8]) -> Result<(), Rejection> {
        let text = self.check_bytes(payload)?;
        self.with_scratch(|scratch| self.walk(text, scratch).map(|_| ()))
    }

    /// Size and UTF-8 checks.
    fn check_bytes<'p>(&self, payload: &'p [u8]) -> Result<&'p str, Rejection> {
        let limit = self.policy.limits.max_event_bytes;
        if payload.len() > limit {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "event of {} bytes exceeds the limit of {limit} bytes",
                    payload.len()
                ),
            ));
        }
        std::str::from_utf8(payload).map_err(|error| {
            Rejection::new(
                Reason::InvalidUtf8,
                format!(
                    "payload is not valid UTF-8 (first bad byte at offset {})",
                    error.valid_up_to()
                ),
            )
        })
    }

    /// Runs `f` with this thread's scratch space for this policy.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        SCRATCH.with_borrow_mut(|slot| {
            let scratch = match slot {
                Some(scratch) if scratch.policy == self.policy.id => scratch,
                _ => slot.insert(Scratch::new(&self.policy)),
            };
            f(scratch)
        })
    }

    /// Walks the event, checks the required fields, finds the tenant's keys, checks the
    /// consent.
    fn walk(&self, payload: &str, scratch: &mut Scratch) -> Result<(&str, &TenantKeys), Rejection> {
        let tree = &self.policy.tree;
        scratch
            .walk
            .run(tree, payload)
            .map_err(|malformed| rejection_of(&self.policy, payload, malformed))?;
        for (path, node) in &self.policy.required {
            if matches!(scratch.walk.captured(*node), None | Some((Kind::Null, ..))) {
                return Err(Rejection::new(
                    Reason::MissingField,
                    format!("required field `{path}` is missing or null"),
                ));
            }
        }
        let tenant = self.tenant_of(payload, scratch)?;
        if let Some(node) = self.policy.consent_field {
            let path = &self.policy.tree.node(node).path;
            match scratch.walk.captured(node) {
                Some((Kind::Bool, start, _)) if payload.as_bytes()[start] == b't' => {}
                Some((Kind::Bool, ..)) => return Err(no_consent(path, "false")),
                Some((Kind::Null, ..)) => return Err(no_consent(path, "null")),
                None => return Err(no_consent(path, "absent")),
                Some((kind, ..)) => return Err(consent_wrong_type(path, kind.with_article())),
            }
        }
        Ok(tenant)
    }

    fn run(
        &self,
        payload: &str,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'_>, Rejection> {
        let (tenant, keys) = self.walk(payload, scratch)?;
        // Pairs only for a tenant in its overlap: for the others the path is unchanged.
        let mut bridge = match (pairs, &keys.previous) {
            (Some(pairs), Some(previous)) => Some((pairs, previous)),
            _ => None,
        };
        let record_key = self.emit(payload, scratch, keys, out, &mut bridge, quasi)?;
        Ok(Outcome {
            tenant,
            key_version: keys.version,
            record_key,
            bridged_from: bridge
                .filter(|(pairs, _)| !pairs.is_empty())
                .map(|(_, previous)| previous.version),
        })
    }

    fn tenant_of(
        &self,
        payload: &str,
        scratch: &mut Scratch,
    ) -> Result<(&str, &TenantKeys), Rejection> {
        let captured = self
            .policy
            .tenant_field
            .and_then(|node| scratch.walk.captured(node));
        let name = match captured {
            None | Some((Kind::Null, ..)) => self.policy.default_tenant.as_str(),
            Some((Kind::String { escaped }, start, end)) => {
                let name = string_text(payload, start, end, escaped, &mut scratch.text);
                if !is_valid_tenant(name) {
                    return Err(Rejection::new(
                        Reason::InvalidTenant,
                        "the tenant field is not a valid tenant name ([a-z0-9_-]{1,64})",
                    ));
                }
                name
            }
            Some((kind, ..)) => {
                return Err(Rejection::new(
                    Reason::InvalidTenant,
                    format!(
                        "the tenant field holds {}, not a string",
                        kind.with_article()
                    ),
                ))
            }
        };
        self.keys_of(name)
    }

    /// The active keys of tenant `name` (a valid tenant name), or the rejection of its
    /// events: unknown, or suspended.
    pub(crate) fn keys_of(&self, name: &str) -> Result<(&str, &TenantKeys), Rejection> {
        match self.tenants.get_key_value(name) {
            Some((name, keys)) => Ok((name.as_str(), keys)),
            // The tenant name passed the grammar check, is not personal, and tells the
            // operator which keys to create or reactivate.
            None if self.suspended.contains(name) => Err(suspended_rejection(name)),
            None => Err(unknown_tenant_rejection(name)),
        }
    }

    /// Writes the event from the walk's steps; returns where the record key's token is.
    fn emit(
        &self,
        payload: &str,
        scratch: &mut Scratch,
        keys: &TenantKeys,
        out: &mut Vec<u8>,
        bridge: &mut Option<(&mut BridgePairs, &PreviousKeys)>,
        mut quasi: Option<&mut QuasiValues>,
    ) -> Result<Option<Range<usize>>, Rejection> {
        let event_date = match self.policy.event_time_field {
            Some(node) if self.policy.needs_event_date => match scratch.walk.captured(node) {
                Some((Kind::String { escaped }, start, end)) => {
                    parse_date(string_text(payload, start, end, escaped, &mut scratch.text))
                }
                _ => None,
            },
            _ => None,
        };
        let tree = &self.policy.tree;
        // Quasi-identifiers are looked up only when asked for: the record path of a
        // policy without `[risk]`, or of a caller without a monitor, is unchanged.
        let quasi_of: &[Option<usize>] = match quasi {
            Some(_) => &self.policy.quasi_of,
            None => &[],
        };
        let Scratch {
            walk,
            text,
            normalized,
            rewritten,
            ..
        } = scratch;
        let (steps, problem) = match walk.problem {
            Some((at, problem)) => (&walk.steps[..at], Some(problem)),
            None => (&walk.steps[..], None),
        };
        let mut record_key = None;
        let mut splice = Splice::new(payload.as_bytes(), out);
        for step in steps {
            match *step {
                Step::Open {
                    node,
                    array: _,
                    member,
                    at,
                } => {
                    splice.member(member, &tree.node(node).key_json, at);
                    splice.verbatim(at..at + 1);
                    splice.first = true;
                }
                Step::Close { at, .. } => {
                    splice.verbatim(at..at + 1);
                    splice.first = false;
                }
                Step::Value {
                    node,
                    kind,
                    start,
                    end,
                    member,
                } => {
                    let rule = match &tree.node(node).shape {
                        Shape::Leaf(Rule::Drop) => continue,
                        Shape::Leaf(rule) => Some(rule),
                        _ => None,
                    };
                    let raw_start = Step::raw_start(kind, start);
                    let raw = raw_start..Step::raw_end(kind, end);
                    splice.member(member, &tree.node(node).key_json, raw_start);
                    splice.first = false;
                    let rule = match rule {
                        Some(Rule::Keep { detect }) => {
                            let value = Value {
                                payload,
                                kind,
                                start,
                                end,
                            };
                            value
                                .kept(*detect, text)
                                .map_err(|rejection| rejection.at(&tree.node(node).path, kind))?;
                            let len = raw.len();
                            splice.verbatim(raw);
                            if let (Some(quasi), false) = (quasi.as_deref_mut(), kind == Kind::Null)
                            {
                                // The value is the end of the run not yet copied.
                                let end = splice.written();
                                quasi.set(quasi_of.get(node as usize), end - len..end);
                            }
                            continue;
                        }
                        None => {
                            splice.verbatim(raw);
                            continue;
                        }
                        Some(_) if kind == Kind::Null => {
                            splice.verbatim(raw);
                            continue;
                        }
                        Some(rule) => rule,
                    };
                    let value = Value {
                        payload,
                        kind,
                        start,
                        end,
                    };
                    let out = splice.generated();
                    let applied = match rule {
                        Rule::Drop | Rule::Keep { .. } => unreachable!("handled above"),
                        Rule::Token { domain, normalizer } => value.text(text).map(|raw| {
                            let normalized = normalizer.normalize(raw, normalized);
                            out.push(b'"');
                            let token_start = out.len();
                            keys.tokens[*domain].write_token(normalized.as_bytes(), out);
                            if self.policy.record_key == Some(node) {
                                record_key = Some(token_start..out.len());
                            }
                            if let Some((pairs, previous)) = bridge {
                                pairs.push(
                                    &tree.node(node).path,
                                    &self.policy.token_domains()[*domain],
                                    &previous.tokens[*domain],
                                    normalized.as_bytes(),
                                    &out[token_start..],
                                );
                            }
                            out.push(b'"');
                        }),
                        Rule::Encrypt { domain } => value.text(text).map(|raw| {
                            let sealed = keys.encrypts[*domain].encrypt(raw.as_bytes());
                            out.push(b'"');
                            out.extend_from_slice(sealed.as_bytes());
                            out.push(b'"');
                        }),
                        Rule::Mask { keep_last } => value.text(text).map(|raw| {
                            let total = raw.chars().count();
                            rewritten.clear();
                            rewritten.extend(raw.chars().enumerate().map(|(i, c)| {
                                if i + keep_last < total {
                                    '*'
                                } else {
                                    c
                                }
                            }));
                            write_string(out, rewritten);
                        }),
                        Rule::Generalize(generalization) => {
                            let scalar = value.scalar(text);
                            let start = out.len();
                            let applied = generalization.apply(scalar, event_date, rewritten, out);
                            if let (Some(quasi), true) = (quasi.as_deref_mut(), applied.is_ok()) {
                                quasi.set(quasi_of.get(node as usize), start..out.len());
                            }
                            applied
                        }
                    };
                    applied
                        .map_err(|failure| rule_rejection(&tree.node(node).path, kind, failure))?;
                }
            }
        }
        splice.flush();
        match problem {
            Some(problem) => Err(problem_rejection(tree, problem)),
            None => Ok(record_key),
        }
    }
}

/// Writes the output as runs of input bytes copied whole, broken only where something
/// else is written (a token, a generalized value, a key that was not plain, a comma where
/// a dropped member left a gap). A clean event is a handful of copies.
struct Splice<'a> {
    input: &'a [u8],
    out: &'a mut Vec<u8>,
    /// Input bytes to copy, not copied yet.
    run: Range<usize>,
    /// Whether the next member opens its container (no comma before it).
    first: bool,
}

impl<'a> Splice<'a> {
    fn new(input: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        Self {
            input,
            out,
            run: 0..0,
            first: true,
        }
    }

    /// Adds input bytes to the output.
    fn verbatim(&mut self, range: Range<usize>) {
        if self.run.end != range.start || self.run.is_empty() {
            self.flush();
            self.run.start = range.start;
        }
        self.run.end = range.end;
    }

    /// Starts a member whose value begins at `value_start`: the comma if one is due, then
    /// its key and `:` (copied when plain, written from the policy otherwise; nothing for
    /// an array element, whose member starts at its value).
    fn member(&mut self, member: Member, key_json: &[u8], value_start: usize) {
        let comma = !self.first;
        if !member.plain {
            self.flush();
            if comma {
                self.out.push(b',');
            }
            self.out.extend_from_slice(key_json);
            return;
        }
        if comma {
            // The input's own comma joins the run when it sits right after it.
            let joins = !self.run.is_empty()
                && self.run.end + 1 == member.start
                && self.input[self.run.end] == b',';
            if joins {
                self.run.end += 1;
            } else {
                self.flush();
                self.out.push(b',');
            }
        }
        self.verbatim(member.start..value_start);
    }

    /// The length of the output once the pending run is copied.
    fn written(&self) -> usize {
        self.out.len() + self.run.len()
    }

    /// The output buffer, to write something that is not in the input.
    fn generated(&mut self) -> &mut Vec<u8> {
        self.flush();
        self.out
    }

    fn flush(&mut self) {
        if !self.run.is_empty() {
            self.out.extend_from_slice(&self.input[self.run.clone()]);
        }
        self.run = self.run.end..self.run.end;
    }
}

/// A leaf's value in the payload.
pub(crate) struct Value<'p> {
    pub(crate) payload: &'p str,
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Why a value cannot be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// An object or an array: a `keep` rule takes scalars only.
    NotAScalar,
    /// The detector found personal data in it.
    Personal(Detector),
}

impl Kept {
    /// The rejection, for the field at `path` holding a value of kind `kind`.
    pub(crate) fn at(self, path: &str, kind: Kind) -> Rejection {
        match self {
            Self::NotAScalar => rule_rejection(
                path,
                kind,
                Failure::WrongType("only a scalar (list the nested fields in the policy)"),
            ),
            Self::Personal(detector) => personal_rejection(path, detector),
        }
    }
}

/// The rejection of a kept value in which a detector found personal data: the field and
/// the kind, never the value.
pub(crate) fn personal_rejection(path: &str, detector: Detector) -> Rejection {
    Rejection {
        finding: Some(Finding {
            field: path.to_owned(),
            detector: detector.name(),
        }),
        ..Rejection::new(
            Reason::PersonalValueInKeptField,
            format!(
                "`{path}` holds what looks like {}; if the field may hold one, add \"{}\" to its `allow`",
                detector.describe(),
                detector.name()
            ),
        )
    }
}

impl<'p> Value<'p> {
    fn raw(&self) -> &'p str {
        &self.payload[self.start..self.end]
    }

    /// Checks a value of a `keep` field: a scalar in which `detect` finds nothing.
    pub(crate) fn kept(&self, detect: Detectors, scratch: &mut String) -> Result<(), Kept> {
        let found = match self.kind {
            Kind::Object | Kind::Array => return Err(Kept::NotAScalar),
            Kind::String { escaped } => detect.in_text(string_text(
                self.payload,
                self.start,
                self.end,
                escaped,
                scratch,
            )),
            Kind::Number(n) if n.is_integer() => detect.in_integer(self.raw()),
            Kind::Null | Kind::Bool | Kind::Number(_) => None,
        };
        found.map_or(Ok(()), |detector| Err(Kept::Personal(detector)))
    }

    /// The text of a string, or the decimal form of an integer.
    fn text<'s>(&self, scratch: &'s mut String) -> Result<&'s str, Failure>
    where
        'p: 's,
    {
        match self.kind {
            Kind::String { escaped } => Ok(string_text(
                self.payload,
                self.start,
                self.end,
                escaped,
                scratch,
            )),
            Kind::Number(n) if n.is_integer() => Ok(self.raw()),
            _ => Err(Failure::WrongType("a string or an integer")),
        }
    }

    /// The value as the generalization operators take it.
    fn scalar<'s>(&self, scratch: &'s mut String) -> Scalar<'s>
    where
        'p: 's,
    {
        match self.kind {
            Kind::String { escaped } => Scalar::Str(string_text(
                self.payload,
                self.start,
                self.end,
                escaped,
                scratch,
            )),
            Kind::Number(n) => Scalar::Number(n, self.raw()),
            _ => Scalar::Other,
        }
    }
}

/// The text of the string at `start..end` (quotes excluded), unescaped into `scratch` if
/// it holds escapes.
fn string_text<'a>(
    payload: &'a str,
    start: usize,
    end: usize,
    escaped: bool,
    scratch: &'a mut String,
) -> &'a str {
    let raw = &payload[start..end];
    if escaped {
        unescape(raw, scratch)
    } else {
        raw
    }
}

/// The rejection of an event of a tenant that is not in the keyring.
pub(crate) fn unknown_tenant_rejection(tenant: &str) -> Rejection {
    Rejection::new(
        Reason::UnknownTenant,
        format!("tenant `{tenant}` is not in the keyring; `pseudopipe keys init` creates its keys"),
    )
}

/// The rejection of an event of a tenant without an active key version.
pub(crate) fn suspended_rejection(tenant: &str) -> Rejection {
    Rejection::new(
        Reason::TenantSuspended,
        format!(
            "tenant `{tenant}` has no active key version (suspended); `pseudopipe keys rotate` or `keys import --activate` resumes it"
        ),
    )
}

/// The drop of an event whose consent field is `false`, `null` or `absent` (`what`).
pub(crate) fn no_consent(path: &str, what: &str) -> Rejection {
    Rejection::new(
        Reason::NoConsent,
        format!("the consent field `{path}` is {what}: the event is dropped"),
    )
}

/// The rejection of a consent field holding something else than a boolean (`held`, with
/// its article).
pub(crate) fn consent_wrong_type(path: &str, held: &str) -> Rejection {
    Rejection::new(
        Reason::WrongType,
        format!("field `{path}` holds {held}; the consent field takes true or false"),
    )
}

/// The rejection of a payload that could not be walked.
fn rejection_of(policy: &Policy, payload: &str, malformed: Malformed) -> Rejection {
    let tree = &policy.tree;
    match malformed {
        Malformed::Syntax(error) if error.kind == SyntaxKind::TooDeep => {
            Rejection::new(Reason::TooDeep, Limit::Depth.describe(&policy.limits, ""))
        }
        Malformed::Limit { limit, node } => Rejection::new(
            limit.reason(),
            limit.describe(&policy.limits, &tree.node(node).path),
        ),
        Malformed::Syntax(error) => Rejection::new(
            Reason::MalformedJson,
            format!(
                "payload is not valid JSON: {}",
                error.describe(payload.as_bytes())
            ),
        ),
        Malformed::NotAnObject(kind) => Rejection::new(
            Reason::NotAnObject,
            format!("payload is a JSON {}, not an object", kind.name()),
        ),
        Malformed::Duplicate(node) => Rejection::new(
            Reason::DuplicateField,
            format!(
                "field `{}` appears twice in one object",
                tree.node(node).path
            ),
        ),
    }
}

/// The rejection of a field the policy refuses, found by the walk.
fn problem_rejection(tree: &Tree, problem: Problem) -> Rejection {
    let expected = |node: NodeId, kind: Kind, what: &str| {
        Rejection::new(
            Reason::WrongType,
            format!(
                "field `{}` holds {}; the policy expects {what}",
                tree.node(node).path,
                kind.with_article()
            ),
        )
    };
    match problem {
        Problem::Unknown { parent } => {
            Rejection::new(Reason::UnknownField, unknown_field_at(tree, parent))
        }
        Problem::NotAnObject { node, kind } => expected(node, kind, "an object"),
        Problem::NotAnArray { node, kind } => expected(node, kind, "an array"),
    }
}

/// The rejection of a value its rule cannot take.
pub(crate) fn rule_rejection(path: &str, kind: Kind, failure: Failure) -> Rejection {
    match failure {
        Failure::WrongType(expected) => Rejection::new(
            Reason::WrongType,
            format!(
                "field `{path}` holds {}; its rule takes {expected}",
                kind.with_article()
            ),
        ),
        Failure::Invalid(expected) => Rejection::new(
            Reason::InvalidValue,
            format!("field `{path}` is not {expected}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

    fn engine() -> Pseudonymizer {
        let secret = MasterSecret::from_bytes([5; 32]);
        let policy = Policy::from_toml(POLICY).expect("the default policy is valid");
        Pseudonymizer::new(policy, [("default".to_string(), 1, &secret)])
    }

    /// A minimal valid event with `customer` members `customer`.
    fn event(customer: &str) -> String {
        format!(
            r#"{{"event_id":"e1","event_time":"2026-11-21T14:03:22Z","retailer":{{"id":"r"}},"coupon":{{"campaign_id":"c"}},"customer":{{{customer}}}}}"#
        )
    }

    #[test]
    fn the_decoder_reads_what_it_forwards_and_nothing_else() {
        let engine = engine();
        let raw = "alice@example.com";
        let cases: [(String, Reason, &str); 11] = [
            (
                event(&format!(r#""email":"{raw}","email":"v1.KxaYpQJkpd4SOvySjpg7xw""#)),
                Reason::DuplicateField,
                "field `customer.email` appears twice in one object",
            ),
            (
                event(&format!(r#""email":"{raw}","em\u0061il":"x""#)),
                Reason::DuplicateField,
                "field `customer.email` appears twice in one object",
            ),
            (
                format!("{} {{}}", event("")),
                Reason::MalformedJson,
                "payload is not valid JSON: trailing characters after the value at line 1 column 120",
            ),
            (
                event(&format!(r#""\u0061lice@example.com":"{raw}""#)),
                Reason::UnknownField,
                "an unknown field in `customer`",
            ),
            (
                event(r#""email":1.5"#),
                Reason::WrongType,
                "field `customer.email` holds a float; its rule takes a string or an integer",
            ),
            (
                event(r#""email":true"#),
                Reason::WrongType,
                "field `customer.email` holds a boolean; its rule takes a string or an integer",
            ),
            (
                event(&format!(r#""email":{{"a":"{raw}"}}"#)),
                Reason::WrongType,
                "field `customer.email` holds an object; its rule takes a string or an integer",
            ),
            (
                event(&format!(r#""email":["{raw}"]"#)),
                Reason::WrongType,
                "field `customer.email` holds an array; its rule takes a string or an integer",
            ),
            (
                event(&format!(r#""address":{{"country":"{raw}"}}"#)),
                Reason::PersonalValueInKeptField,
                "`customer.address.country` holds what looks like an e-mail address; if the field may hold one, add \"email\" to its `allow`",
            ),
            (
                event(&format!(r#""address":{{"country":{{"a":"{raw}"}}}}"#)),
                Reason::WrongType,
                "field `customer.address.country` holds an object; its rule takes only a scalar (list the nested fields in the policy)",
            ),
            (
                event(r#""address":{"country":4111111111111111}"#),
                Reason::PersonalValueInKeptField,
                "`customer.address.country` holds what looks like a payment card number; if the field may hold one, add \"card\" to its `allow`",
            ),
        ];
        for (payload, reason, message) in cases {
            let rejection = engine.pseudonymize(payload.as_bytes()).expect_err(&payload);
            assert_eq!(
                (rejection.reason, rejection.message.as_str()),
                (reason, message),
                "{payload}"
            );
            assert!(!rejection.message.contains("alice"), "{payload}");
        }
    }

    #[test]
    fn a_tenant_without_an_active_version_is_suspended_not_unknown() {
        let secret = MasterSecret::from_bytes([5; 32]);
        let policy = Policy::from_toml(POLICY).expect("the default policy is valid");
        let engine = Pseudonymizer::new(
            policy,
            [
                ("brand-a".to_string(), 1, &secret),
                ("brand-b".to_string(), 2, &secret),
            ],
        )
        // `default` has no active version; `brand-b` is given both and stays closed.
        .suspending(["default".to_string(), "brand-b".to_string()]);
        let with_tenant =
            |tenant: &str| event("").replacen('{', &format!(r#"{{"tenant":"{tenant}","#), 1);
        assert!(engine
            .pseudonymize(with_tenant("brand-a").as_bytes())
            .is_ok());
        for (payload, tenant) in [
            (with_tenant("brand-b"), "brand-b"),
            (with_tenant("default"), "default"),
            (event(""), "default"),
            (event("").replacen('{', r#"{"tenant":null,"#, 1), "default"),
        ] {
            let rejection = engine.pseudonymize(payload.as_bytes()).unwrap_err();
            assert_eq!(rejection.reason, Reason::TenantSuspended, "{payload}");
            assert_eq!(rejection.reason.code(), "tenant_suspended");
            assert!(!rejection.reason.is_drop(), "quarantined, to be replayed");
            assert_eq!(
                rejection.message,
                format!("tenant `{tenant}` has no active key version (suspended); `pseudopipe keys rotate` or `keys import --activate` resumes it")
            );
        }
        let unknown = engine
            .pseudonymize(with_tenant("brand-z").as_bytes())
            .unwrap_err();
        assert_eq!(
            (unknown.reason, unknown.message.as_str()),
            (
                Reason::UnknownTenant,
                "tenant `brand-z` is not in the keyring; `pseudopipe keys init` creates its keys"
            )
        );
        let mut suspended: Vec<&str> = engine.suspended().collect();
        suspended.sort_unstable();
        assert_eq!(suspended, ["brand-b", "default"]);
        assert_eq!(
            engine.tenants().map(|(name, _)| name).collect::<Vec<_>>(),
            ["brand-a"]
        );
    }

    /// The default policy with its consent option enabled.
    fn consenting() -> Pseudonymizer {
        let secret = MasterSecret::from_bytes([5; 32]);
        let policy = Policy::from_toml(&format!("consent_field = \"consent.analytics\"\n{POLICY}"))
            .expect("the default policy with consent is valid");
        Pseudonymizer::new(policy, [("default".to_string(), 1, &secret)])
            .suspending(["brand-s".to_string()])
    }

    #[test]
    fn an_event_without_consent_is_dropped_and_a_bad_flag_quarantined() {
        let engine = consenting();
        let guard = crate::LeakGuard::new(engine.policy().clone());
        let with = |consent: &str| format!("{},{consent}}}", event("").strip_suffix('}').unwrap());
        for consent in [
            r#""consent":{"analytics":true}"#,
            r#""consent":{"marketing":false,"analytics":true}"#,
        ] {
            let payload = with(consent);
            let (out, key) = engine.pseudonymize(payload.as_bytes()).expect(&payload);
            assert!(
                String::from_utf8_lossy(&out).contains(consent),
                "the flag travels, as kept"
            );
            guard
                .check(key.as_deref().map(str::as_bytes), &out)
                .expect("the leak guard accepts a consenting event's output");
        }
        let dropped = [
            (with(r#""consent":{"analytics":false}"#), "false"),
            (with(r#""consent":{"analytics":null}"#), "null"),
            (with(r#""consent":{"marketing":true}"#), "absent"),
            (with(r#""consent":null"#), "absent"),
            (event(""), "absent"),
        ];
        for (payload, what) in dropped {
            let rejection = engine.pseudonymize(payload.as_bytes()).unwrap_err();
            assert_eq!(
                (rejection.reason, rejection.message),
                (
                    Reason::NoConsent,
                    format!(
                        "the consent field `consent.analytics` is {what}: the event is dropped"
                    )
                ),
                "{payload}"
            );
            assert!(Reason::NoConsent.is_drop());
            assert_eq!(Reason::NoConsent.code(), "no_consent");
        }
        for (consent, held) in [
            (r#""consent":{"analytics":"yes"}"#, "a string"),
            (r#""consent":{"analytics":1}"#, "an integer"),
        ] {
            let rejection = engine.pseudonymize(with(consent).as_bytes()).unwrap_err();
            assert_eq!(
                (rejection.reason, rejection.message),
                (
                    Reason::WrongType,
                    format!("field `consent.analytics` holds {held}; the consent field takes true or false")
                )
            );
        }
    }

    /// A record that is malformed is quarantined whatever its flag says; a well-formed
    /// record without consent is dropped before the fields are classified.
    #[test]
    fn malformed_events_are_quarantined_before_consent_is_read() {
        let engine = consenting();
        let refused = r#""consent":{"analytics":false}"#;
        let cases = [
            (
                format!("{{{refused},\"event_id\":\"e\""),
                Reason::MalformedJson,
            ),
            (
                format!("{{{refused},\"event_id\":\"e\"}}"),
                Reason::MissingField,
            ),
            (
                format!("{{{refused},{}", &event("")[1..]).replacen(
                    '{',
                    r#"{"tenant":"Brand A","#,
                    1,
                ),
                Reason::InvalidTenant,
            ),
            (
                format!("{{{refused},{}", &event("")[1..]).replacen(
                    '{',
                    r#"{"tenant":"brand-z","#,
                    1,
                ),
                Reason::UnknownTenant,
            ),
            (
                format!("{{{refused},{}", &event("")[1..]).replacen(
                    '{',
                    r#"{"tenant":"brand-s","#,
                    1,
                ),
                Reason::TenantSuspended,
            ),
            (
                format!("{{{refused},{}", &event(r#""email":"a","email":"b""#)[1..]),
                Reason::DuplicateField,
            ),
            (
                format!("{{{refused},{}", &event(r#""nickname":"Mimi""#)[1..]),
                Reason::NoConsent,
            ),
            (
                format!("{{{refused},{}", &event(r#""email":true"#)[1..]),
                Reason::NoConsent,
            ),
        ];
        for (payload, reason) in cases {
            let rejection = engine.pseudonymize(payload.as_bytes()).unwrap_err();
            assert_eq!(rejection.reason, reason, "{payload}: {rejection}");
        }
    }

    #[test]
    fn quasi_identifiers_are_found_where_the_output_holds_them() {
        let engine = engine();
        let risk = engine
            .policy()
            .risk()
            .expect("the default policy has [risk]");
        let mut quasi = QuasiValues::new();
        for customer in [
            r#""birth_date":"1987-04-12","address":{"postal_code":"75011","country":"FR"}"#,
            r#""birth_date":null,"address":{"postal_c\u006fde":"75011","country":"FR"}"#,
            r#""address":{"country":"F\u0052","postal_code":"13001"}"#,
        ] {
            let payload = event(customer).replace(
                r#""retailer":{"id":"r"}"#,
                r#""retailer":{"id":"r","store_id":"S0042","channel":"web"},"device":{"ip":"10.1.2.3"}"#,
            );
            let mut out = b"before".to_vec();
            let mut pairs = BridgePairs::new();
            engine
                .pseudonymize_observed(payload.as_bytes(), &mut out, Some(&mut pairs), &mut quasi)
                .expect(&payload);
            let output: serde_json::Value = serde_json::from_slice(&out[6..]).unwrap();
            for (index, path) in risk.quasi_identifiers().iter().enumerate() {
                let pointer = format!("/{}", path.replace('.', "/"));
                let expected = match output.pointer(&pointer) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(value) => Some(value.clone()),
                };
                let found = quasi
                    .value(index, &out)
                    .map(|json| serde_json::from_slice::<serde_json::Value>(json).unwrap());
                assert_eq!(found, expected, "{path} in {payload}");
            }
        }
    }

    #[test]
    fn an_escaped_key_is_the_field_it_spells() {
        let engine = engine();
        let (plain, _) = engine
            .pseudonymize(event(r#""email":"alice@example.com""#).as_bytes())
            .unwrap();
        let (escaped, _) = engine
            .pseudonymize(event(r#""em\u0061il":"alice@example.com""#).as_bytes())
            .unwrap();
        assert_eq!(
            plain, escaped,
            "tokenized, the key spelled as the policy does"
        );
        let spaced = format!(" \n{}\r\n\t ", event(""));
        assert!(engine.pseudonymize(spaced.as_bytes()).is_ok());
    }
}
