//! Avro datums pseudonymized directly (ADR 0024): no apache-avro `Value`, no JSON.
//!
//! An [`AvroPlan`] is compiled once per writer schema (and policy): every place of the
//! writer schema is tied to the node of the policy's tree it falls under, with how it is
//! read and how its pseudonymized form is written in the derived schema
//! ([`crate::avro_schema::derive`]). A datum is then read once, field by field, into a list
//! of decoded scalars (spans of the datum for strings); once the tenant is known the output
//! datum is written straight into the caller's buffer, tokens, ciphertexts and generalized
//! values in their place, dropped fields left out. Scratch space is per thread and per
//! policy: in the steady state a record costs no allocation (an `encrypt` rule excepted).
//!
//! What comes out, and what is refused with which reason, is what the JSON record path
//! does with the datum's JSON rendering ([`crate::avro`], kept as the oracle of a
//! differential test), with two deliberate differences: a datum cut short is refused
//! (apache-avro reads a string, a boolean or a union index missing at the end as null),
//! and `limits.max_event_bytes` bounds the datum rather than its JSON rendering.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;

use apache_avro::Schema;

use crate::avro::{write_bytes, write_long, AvroError};
use crate::error::{Reason, Rejection};
use crate::generalize::{parse_date, Failure, Generalization, Scalar};
use crate::guard::{leaf_ok, not_its_shape, LeakGuard};
use crate::json::{unescape, Kind, Number, MAX_DEPTH};
use crate::policy::{is_valid_tenant, Limits, Policy, Rule};
use crate::token::is_token;
use crate::transform::{
    consent_wrong_type, no_consent, personal_rejection, rule_rejection, BridgePairs, Kept, Outcome,
    PreviousKeys, Pseudonymizer, QuasiValues, TenantKeys,
};
use crate::tree::{NodeId, Shape, ROOT};
use crate::walk::Limit;

/// Index of a node of a plan.
type PlanId = u32;

/// apache-avro's bound on one length (its default `max_allocation_bytes`).
const MAX_LEN: usize = 512 * 1024 * 1024;

/// Where a place of the writer schema sits in the policy's tree.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    /// A record of an object node.
    Object(NodeId),
    /// An array of an array node.
    Array(NodeId),
    /// The value of a leaf (its union branches included).
    Leaf(NodeId),
    /// Inside a leaf's value (a dropped record or array): read, never written.
    Inside,
}

/// How a value is read.
#[derive(Debug, Clone)]
enum Ty {
    Null,
    Boolean,
    /// `int`, `date`, `time-millis`.
    Int,
    /// `long` and the timestamps.
    Long,
    Float,
    Double,
    String,
    Enum(Box<[Box<str>]>),
    Record(Box<[PlanId]>),
    Array(PlanId),
    Map(PlanId),
    Union(Box<[PlanId]>),
    /// Bytes, plain or a decimal (what it is, for the refusal).
    Bytes(&'static str),
    /// A fixed of so many bytes: plain, a decimal or a duration.
    Fixed(usize, &'static str),
}

/// The derived type of a rewritten leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    String,
    Long,
    Double,
}

/// One place of the writer schema.
#[derive(Debug, Clone)]
struct PlanNode {
    ty: Ty,
    at: At,
    /// The path, as the policy and the messages write it.
    path: Box<str>,
    /// Whether the derived schema has it (a dropped leaf, or a record whose every field is
    /// dropped, vanishes).
    written: bool,
    /// A union of null and one type written as `["null", T]` (at an object, an array or a
    /// rewritten leaf); a kept union keeps its branches.
    nullable: bool,
    /// For a rewritten leaf, the derived type.
    out: Out,
}

/// Why a writer schema is not walked directly; its records then go through the JSON
/// record path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the writer schema holds {what} at `{path}`, which the direct Avro walk does not read")]
pub struct NotPlanned {
    /// What it holds.
    pub what: &'static str,
    /// Where, policy notation.
    pub path: String,
}

/// A writer schema compiled under a policy: how its datums are read, judged and written
/// as datums of the derived schema.
#[derive(Debug, Clone)]
pub struct AvroPlan {
    /// The policy compiled in ([`Policy`]'s id).
    policy: u64,
    /// The writer schema's id, for messages.
    id: u32,
    nodes: Vec<PlanNode>,
    /// A plan for the leak guard: every place of the schema is read and judged, dropped
    /// fields included.
    guard: bool,
}

/// The root record is the first node.
const PLAN_ROOT: PlanId = 0;

impl AvroPlan {
    /// Compiles the plan of writer schema `writer` (registry id `id`) under `policy`. Call
    /// it for a writer schema the policy accepts ([`crate::avro_schema::derive`] gave its
    /// derived schema); a schema with a type the walk does not read (uuid, big-decimal, a
    /// reference it does not define) is [`NotPlanned`].
    pub fn compile(policy: &Policy, writer: &Schema, id: u32) -> Result<Self, NotPlanned> {
        Self::compile_with(policy, writer, id, false)
    }

    /// Compiles the plan with which the leak guard judges datums of `schema` (registry id
    /// `id`, the schema derived under `policy` when ingest wrote them) in one pass
    /// ([`AvroPlan::judge`]). A schema with a field the policy does not emit, or a
    /// structure it does not have, is [`NotPlanned`]: its records are judged through their
    /// JSON rendering, which refuses them.
    pub fn for_guard(policy: &Policy, schema: &Schema, id: u32) -> Result<Self, NotPlanned> {
        Self::compile_with(policy, schema, id, true)
    }

    fn compile_with(
        policy: &Policy,
        writer: &Schema,
        id: u32,
        guard: bool,
    ) -> Result<Self, NotPlanned> {
        let mut named = HashMap::new();
        collect_named(writer, &mut named);
        let mut compiler = Compiler {
            policy,
            named,
            nodes: Vec::new(),
            inside: HashMap::new(),
            guard,
        };
        let root = compiler.compile(writer, At::Object(ROOT), "")?;
        debug_assert_eq!(root, PLAN_ROOT);
        if !matches!(compiler.nodes[PLAN_ROOT as usize].ty, Ty::Record(_)) {
            return Err(NotPlanned {
                what: "a top-level type that is not a record",
                path: String::new(),
            });
        }
        Ok(Self {
            policy: policy.id,
            id,
            nodes: compiler.nodes,
            guard,
        })
    }

    /// Judges the datum `datum` (without its wire-format header) and the record key `key`
    /// with `guard`, in one pass, as [`LeakGuard::check`] judges the datum's JSON
    /// rendering: the same verdict, reason and message. The plan must come from
    /// [`AvroPlan::for_guard`] with the guard's policy.
    pub fn judge(
        &self,
        guard: &LeakGuard,
        key: Option<&[u8]>,
        datum: &[u8],
    ) -> Result<(), Rejection> {
        let policy = guard.policy();
        if policy.id != self.policy || !self.guard {
            return Err(Rejection::new(
                Reason::LeakGuard,
                format!(
                    "the Avro plan of schema {} was not compiled for this guard",
                    self.id
                ),
            ));
        }
        if let Some(key) = key {
            if !std::str::from_utf8(key).is_ok_and(is_token) {
                return Err(Rejection::new(
                    Reason::LeakGuard,
                    "the record key is not a token",
                ));
            }
        }
        SCRATCH.with_borrow_mut(|slot| {
            let scratch = match slot {
                Some(scratch) if scratch.policy == policy.id => scratch,
                _ => slot.insert(Scratch::new(policy)),
            };
            self.read(datum, policy, scratch)?;
            let mut judge = Judge {
                plan: self,
                policy,
                datum,
                steps: &scratch.steps,
                next: 0,
                text: &mut scratch.text,
                number: &mut scratch.number,
            };
            judge.value(PLAN_ROOT)
        })
    }

    fn node(&self, id: PlanId) -> &PlanNode {
        &self.nodes[id as usize]
    }

    /// Pseudonymizes the datum `datum` (without its wire-format header) with `engine`,
    /// appending the datum of the derived schema to `out` (left untouched on rejection).
    /// With `pairs`, does what [`Pseudonymizer::pseudonymize_bridged`] does.
    pub fn pseudonymize_into<'e>(
        &self,
        engine: &'e Pseudonymizer,
        datum: &[u8],
        out: &mut Vec<u8>,
        mut pairs: Option<&mut BridgePairs>,
        mut quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'e>, Rejection> {
        if let Some(pairs) = pairs.as_deref_mut() {
            pairs.clear();
        }
        let policy = engine.policy();
        if let Some(quasi) = quasi.as_deref_mut() {
            quasi.reset_for(policy);
        }
        if policy.id != self.policy {
            return Err(Rejection::new(
                Reason::UndecodableFormat,
                format!(
                    "the Avro plan of writer schema {} was compiled for another policy",
                    self.id
                ),
            ));
        }
        let limit = policy.limits.max_event_bytes;
        if datum.len() > limit {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "event of {} bytes exceeds the limit of {limit} bytes",
                    datum.len()
                ),
            ));
        }
        SCRATCH.with_borrow_mut(|slot| {
            let scratch = match slot {
                Some(scratch) if scratch.policy == policy.id => scratch,
                _ => slot.insert(Scratch::new(policy)),
            };
            let mark = out.len();
            let outcome = self.run(engine, datum, scratch, out, pairs.as_deref_mut(), quasi);
            if outcome.is_err() {
                out.truncate(mark);
                if let Some(pairs) = pairs {
                    pairs.clear();
                }
            }
            outcome
        })
    }

    fn run<'e>(
        &self,
        engine: &'e Pseudonymizer,
        datum: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'e>, Rejection> {
        let policy = engine.policy();
        self.read(datum, policy, scratch)?;
        let Scratch {
            steps,
            captured,
            text,
            normalized,
            rewritten,
            number,
            generated,
            ..
        } = scratch;
        let captured = |node: NodeId| captured[node as usize];
        for (path, node) in &policy.required {
            if matches!(captured(*node), None | Some(Datum::Null)) {
                return Err(Rejection::new(
                    Reason::MissingField,
                    format!("required field `{path}` is missing or null"),
                ));
            }
        }
        let tenant = policy.tenant_field.and_then(captured);
        let name = match tenant {
            None | Some(Datum::Null) => policy.default_tenant.as_str(),
            Some(value @ (Datum::Str(..) | Datum::Symbol { .. })) => {
                let name = self.text_of(value, datum);
                if !is_valid_tenant(name) {
                    return Err(Rejection::new(
                        Reason::InvalidTenant,
                        "the tenant field is not a valid tenant name ([a-z0-9_-]{1,64})",
                    ));
                }
                name
            }
            Some(value) => {
                return Err(Rejection::new(
                    Reason::InvalidTenant,
                    format!(
                        "the tenant field holds {}, not a string",
                        kind_of(value).with_article()
                    ),
                ))
            }
        };
        let (tenant, keys) = engine.keys_of(name)?;
        if let Some(node) = policy.consent_field {
            let path = &policy.tree.node(node).path;
            match captured(node) {
                Some(Datum::Bool(true)) => {}
                Some(Datum::Bool(false)) => return Err(no_consent(path, "false")),
                Some(Datum::Null) => return Err(no_consent(path, "null")),
                None => return Err(no_consent(path, "absent")),
                Some(value) => return Err(consent_wrong_type(path, kind_of(value).with_article())),
            }
        }
        let event_date = match policy.event_time_field.and_then(captured) {
            Some(value @ (Datum::Str(..) | Datum::Symbol { .. })) if policy.needs_event_date => {
                parse_date(self.text_of(value, datum))
            }
            _ => None,
        };
        let bridge = match (pairs, &keys.previous) {
            (Some(pairs), Some(previous)) => Some((pairs, previous)),
            _ => None,
        };
        let mut writer = Writer {
            plan: self,
            policy,
            keys,
            datum,
            steps: &steps[..],
            next: 0,
            out,
            event_date,
            record_key: None,
            bridge,
            quasi,
            text,
            normalized,
            rewritten,
            number,
            generated,
        };
        writer.value(PLAN_ROOT)?;
        let record_key = writer.record_key.take();
        let bridged_from = writer
            .bridge
            .filter(|(pairs, _)| !pairs.is_empty())
            .map(|(_, previous)| previous.version);
        Ok(Outcome {
            tenant,
            key_version: keys.version,
            record_key,
            bridged_from,
        })
    }

    /// The text of a string or an enum symbol.
    fn text_of<'a>(&'a self, value: Datum, datum: &'a [u8]) -> &'a str {
        match value {
            Datum::Str(start, end) => str_at(datum, start, end),
            Datum::Symbol { plan, index } => symbol(self, plan, index),
            _ => "",
        }
    }

    /// Reads the whole datum into the scratch's steps and captured values; refuses what
    /// does not decode, what the JSON rendering refuses, and an exceeded limit.
    fn read(&self, datum: &[u8], policy: &Policy, scratch: &mut Scratch) -> Result<(), Rejection> {
        let limits = &policy.limits;
        scratch.steps.clear();
        for &node in &scratch.watched {
            scratch.captured[node as usize] = None;
        }
        let mut reading = Reading {
            plan: self,
            limits,
            input: Input { datum, pos: 0 },
            steps: &mut scratch.steps,
            captured: &mut scratch.captured,
            is_watched: &scratch.is_watched,
            fault: None,
            unsupported: None,
            deepest: 0,
        };
        let read = reading.value(PLAN_ROOT, 0);
        let (fault, unsupported, pos) = (reading.fault, reading.unsupported, reading.input.pos);
        let undecodable =
            |error: AvroError| Rejection::new(Reason::UndecodableFormat, error.to_string());
        match read {
            Err(Stop::Undecodable) => return Err(undecodable(AvroError::DoesNotDecode(self.id))),
            Err(Stop::TooDeep) => {
                return Err(Rejection::new(
                    Reason::TooDeep,
                    Limit::Depth.describe(limits, ""),
                ))
            }
            Ok(()) => {}
        }
        if pos != datum.len() {
            return Err(undecodable(AvroError::TrailingBytes(self.id)));
        }
        if let Some((plan, kind)) = unsupported {
            return Err(undecodable(AvroError::Unsupported {
                path: self.node(plan).path.to_string(),
                kind,
            }));
        }
        match fault {
            Some((limit, node)) => Err(Rejection::new(
                limit.reason(),
                limit.describe(limits, &policy.tree.node(node).path),
            )),
            None => Ok(()),
        }
    }
}

/// One value read, in datum order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Datum {
    Null,
    Bool(bool),
    /// An `int` or a `long`.
    Int(i64),
    Float(f32),
    Double(f64),
    /// A string's bytes in the datum.
    Str(usize, usize),
    /// An enum symbol: the plan node of the enum and the index.
    Symbol {
        plan: PlanId,
        index: u32,
    },
    /// The branch a union took.
    Branch(u32),
    /// How many items an array holds.
    Items(usize),
    /// A record (`false`) or an array (`true`) held by a leaf.
    Container(bool),
}

/// The kind of the JSON rendering of a value, for messages and the rules.
fn kind_of(value: Datum) -> Kind {
    match value {
        Datum::Null | Datum::Branch(_) | Datum::Items(_) => Kind::Null,
        Datum::Bool(_) => Kind::Bool,
        Datum::Int(n) => Kind::Number(number(n)),
        Datum::Float(x) => Kind::Number(Number::F64(f64::from(x))),
        Datum::Double(x) => Kind::Number(Number::F64(x)),
        Datum::Str(..) | Datum::Symbol { .. } => Kind::String { escaped: false },
        Datum::Container(true) => Kind::Array,
        Datum::Container(false) => Kind::Object,
    }
}

/// An integer as the JSON reader classifies it.
fn number(n: i64) -> Number {
    match u64::try_from(n) {
        Ok(n) => Number::U64(n),
        Err(_) => Number::I64(n),
    }
}

fn str_at(datum: &[u8], start: usize, end: usize) -> &str {
    // Checked when read.
    std::str::from_utf8(&datum[start..end]).unwrap_or_default()
}

fn symbol(plan: &AvroPlan, id: PlanId, index: u32) -> &str {
    match &plan.node(id).ty {
        Ty::Enum(symbols) => symbols.get(index as usize).map_or("", |s| s),
        _ => "",
    }
}

/// Builds a plan.
struct Compiler<'s> {
    policy: &'s Policy,
    named: HashMap<String, &'s Schema>,
    nodes: Vec<PlanNode>,
    /// Records compiled inside a leaf, by full name: a recursive one closes on itself.
    inside: HashMap<String, PlanId>,
    /// Compiling for the guard: every place outside a leaf's value is judged.
    guard: bool,
}

impl<'s> Compiler<'s> {
    /// Where a policy node's values sit.
    fn at_node(&self, node: NodeId) -> At {
        match &self.policy.tree.node(node).shape {
            Shape::Leaf(_) => At::Leaf(node),
            Shape::Object(_) => At::Object(node),
            Shape::Array(_) => At::Array(node),
        }
    }

    fn compile(&mut self, schema: &'s Schema, at: At, path: &str) -> Result<PlanId, NotPlanned> {
        let not_planned = |what| NotPlanned {
            what,
            path: path.to_owned(),
        };
        let schema = match schema {
            Schema::Ref { name } => *self
                .named
                .get(&name.fullname(None))
                .ok_or_else(|| not_planned("a reference to a type it does not define"))?,
            other => other,
        };
        let recursive_name = match (schema, at) {
            (Schema::Record(record), At::Inside) => Some(record.name.fullname(None)),
            _ => None,
        };
        if let Some(id) = recursive_name
            .as_ref()
            .and_then(|name| self.inside.get(name))
        {
            return Ok(*id);
        }
        let id = PlanId::try_from(self.nodes.len())
            .map_err(|_| not_planned("more types than a plan holds"))?;
        let rule = match at {
            At::Leaf(node) => self.policy.tree.rule(node),
            _ => None,
        };
        let out = rule.map_or(Out::String, |rule| out_of(rule, schema));
        self.nodes.push(PlanNode {
            ty: Ty::Null,
            at,
            path: path.into(),
            written: false,
            nullable: false,
            out,
        });
        if let Some(name) = recursive_name {
            self.inside.insert(name, id);
        }
        let join = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        let scalar = matches!(at, At::Leaf(_) | At::Inside);
        let ty = match schema {
            Schema::Record(record) => {
                let mut fields = Vec::with_capacity(record.fields.len());
                for field in &record.fields {
                    let field_at = match at {
                        At::Object(node) => {
                            let child = self
                                .policy
                                .tree
                                .child(node, field.name.as_bytes())
                                .ok_or_else(|| {
                                    not_planned("a field the policy does not classify")
                                })?;
                            self.at_node(child)
                        }
                        At::Array(_) => return Err(not_planned("a record where an array goes")),
                        _ => At::Inside,
                    };
                    fields.push(self.compile(&field.schema, field_at, &join(&field.name))?);
                }
                Ty::Record(fields.into())
            }
            Schema::Array(array) => {
                let item_at = match at {
                    At::Array(node) => match &self.policy.tree.node(node).shape {
                        Shape::Array(item) => self.at_node(*item),
                        _ => return Err(not_planned("an array where the policy has none")),
                    },
                    At::Object(_) => return Err(not_planned("an array where a record goes")),
                    _ => At::Inside,
                };
                Ty::Array(self.compile(&array.items, item_at, &format!("{path}[]"))?)
            }
            Schema::Union(union) => {
                let variants = union.variants();
                let null_and_one = variants.len() == 2
                    && variants.iter().filter(|v| **v == Schema::Null).count() == 1;
                let rewritten =
                    rule.is_some_and(|rule| !matches!(rule, Rule::Keep { .. } | Rule::Drop));
                let wrapper = matches!(at, At::Object(_) | At::Array(_)) || rewritten;
                if wrapper && !null_and_one {
                    return Err(not_planned("a union other than of null and one type"));
                }
                self.nodes[id as usize].nullable = wrapper;
                let mut branches = Vec::with_capacity(variants.len());
                for variant in variants {
                    branches.push(self.compile(variant, at, path)?);
                }
                Ty::Union(branches.into())
            }
            Schema::Map(map) if scalar => Ty::Map(self.compile(&map.types, At::Inside, path)?),
            Schema::Null => Ty::Null,
            Schema::Boolean if scalar => Ty::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis if scalar => Ty::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
                if scalar =>
            {
                Ty::Long
            }
            Schema::Float if scalar => Ty::Float,
            Schema::Double if scalar => Ty::Double,
            Schema::String if scalar => Ty::String,
            Schema::Enum(schema) if scalar => {
                Ty::Enum(schema.symbols.iter().map(|s| s.as_str().into()).collect())
            }
            Schema::Bytes if scalar => Ty::Bytes("bytes"),
            Schema::Fixed(fixed) if scalar => Ty::Fixed(fixed.size, "a fixed"),
            Schema::Decimal(decimal) if scalar => match &*decimal.inner {
                Schema::Fixed(fixed) => Ty::Fixed(fixed.size, "a decimal"),
                _ => Ty::Bytes("a decimal"),
            },
            Schema::Duration if scalar => Ty::Fixed(12, "a duration"),
            Schema::Uuid => return Err(not_planned("a uuid")),
            Schema::BigDecimal => return Err(not_planned("a big-decimal")),
            _ => return Err(not_planned("a type where the policy expects fields")),
        };
        let written = match (&ty, at) {
            (_, At::Inside) => false,
            _ if self.guard => true,
            (Ty::Union(branches), _) => {
                let written = branches.iter().any(|b| {
                    let node = &self.nodes[*b as usize];
                    !matches!(node.ty, Ty::Null) && node.written
                });
                for b in branches.iter() {
                    if matches!(self.nodes[*b as usize].ty, Ty::Null) {
                        self.nodes[*b as usize].written = written;
                    }
                }
                written
            }
            (_, At::Leaf(_)) => !matches!(rule, Some(Rule::Drop)),
            (Ty::Record(fields), At::Object(_)) => {
                fields.iter().any(|f| self.nodes[*f as usize].written)
            }
            (Ty::Array(item), At::Array(_)) => self.nodes[*item as usize].written,
            (Ty::Null, _) => true,
            _ => false,
        };
        let node = &mut self.nodes[id as usize];
        node.ty = ty;
        node.written = written;
        Ok(id)
    }
}

/// The derived type of a leaf of `rule` holding `schema` (what `avro_schema` derives).
fn out_of(rule: &Rule, schema: &Schema) -> Out {
    let integer = |schema: &Schema| matches!(schema, Schema::Int | Schema::Long);
    let inner_integer = match schema {
        Schema::Union(union) => union.variants().iter().any(integer),
        other => integer(other),
    };
    match rule {
        Rule::Generalize(Generalization::Round { step }) => {
            let integral_step = step.fract() == 0.0 && *step <= i64::MAX as f64;
            if inner_integer && integral_step {
                Out::Long
            } else {
                Out::Double
            }
        }
        _ => Out::String,
    }
}

/// Every named type of `schema`, by full name.
fn collect_named<'s>(schema: &'s Schema, named: &mut HashMap<String, &'s Schema>) {
    match schema {
        Schema::Record(record) => {
            named.insert(record.name.fullname(None), schema);
            for field in &record.fields {
                collect_named(&field.schema, named);
            }
        }
        Schema::Enum(inner) => {
            named.insert(inner.name.fullname(None), schema);
        }
        Schema::Fixed(inner) => {
            named.insert(inner.name.fullname(None), schema);
        }
        Schema::Decimal(decimal) => {
            if let Schema::Fixed(inner) = &*decimal.inner {
                named.insert(inner.name.fullname(None), schema);
            }
        }
        Schema::Array(array) => collect_named(&array.items, named),
        Schema::Map(map) => collect_named(&map.types, named),
        Schema::Union(union) => union
            .variants()
            .iter()
            .for_each(|branch| collect_named(branch, named)),
        _ => {}
    }
}

/// Buffers reused from one record to the next on a thread.
struct Scratch {
    /// The policy they were made for.
    policy: u64,
    steps: Vec<Datum>,
    /// Per policy node: its value, if watched and met.
    captured: Vec<Option<Datum>>,
    watched: Vec<NodeId>,
    is_watched: Vec<bool>,
    /// A string's text.
    text: String,
    /// A normalized value.
    normalized: String,
    /// A masked or generalized value.
    rewritten: String,
    /// An integer's or a float's decimal form.
    number: String,
    /// A token, or a generalized value as JSON.
    generated: Vec<u8>,
}

impl Scratch {
    fn new(policy: &Policy) -> Self {
        let watched = policy.watched();
        let mut is_watched = vec![false; policy.tree.len()];
        for &node in &watched {
            is_watched[node as usize] = true;
        }
        Self {
            policy: policy.id,
            steps: Vec::with_capacity(64),
            captured: vec![None; policy.tree.len()],
            watched,
            is_watched,
            text: String::new(),
            normalized: String::new(),
            rewritten: String::new(),
            number: String::new(),
            generated: Vec::new(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    /// Not a datum of the writer schema.
    Undecodable,
    /// Nested deeper than the JSON reader's bound.
    TooDeep,
}

/// A cursor over a datum.
struct Input<'d> {
    datum: &'d [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let byte = *self.datum.get(self.pos).ok_or(Stop::Undecodable)?;
        self.pos += 1;
        Ok(byte)
    }

    /// A zig-zag varint of at most ten bytes, as apache-avro reads it.
    fn long(&mut self) -> Result<i64, Stop> {
        let mut z = 0u64;
        for shift in 0..10 {
            let byte = self.byte()?;
            z |= u64::from(byte & 0x7f) << (shift * 7);
            if byte & 0x80 == 0 {
                return Ok(if z & 1 == 0 {
                    (z >> 1) as i64
                } else {
                    !(z >> 1) as i64
                });
            }
        }
        Err(Stop::Undecodable)
    }

    fn int(&mut self) -> Result<i64, Stop> {
        let n = self.long()?;
        i32::try_from(n)
            .map(i64::from)
            .map_err(|_| Stop::Undecodable)
    }

    /// A length, then that many bytes: their span.
    fn sized(&mut self) -> Result<Range<usize>, Stop> {
        let len = usize::try_from(self.long()?).map_err(|_| Stop::Undecodable)?;
        if len > MAX_LEN {
            return Err(Stop::Undecodable);
        }
        self.take(len)
    }

    fn take(&mut self, len: usize) -> Result<Range<usize>, Stop> {
        let start = self.pos;
        let end = start.checked_add(len).ok_or(Stop::Undecodable)?;
        if end > self.datum.len() {
            return Err(Stop::Undecodable);
        }
        self.pos = end;
        Ok(start..end)
    }

    /// A string: its span, checked UTF-8.
    fn string(&mut self) -> Result<Range<usize>, Stop> {
        let span = self.sized()?;
        std::str::from_utf8(&self.datum[span.clone()]).map_err(|_| Stop::Undecodable)?;
        Ok(span)
    }

    /// The count of an array's or a map's next block (0 at the end).
    fn block(&mut self) -> Result<usize, Stop> {
        let count = self.long()?;
        let count = if count < 0 {
            self.long()?;
            count.checked_neg().ok_or(Stop::Undecodable)?
        } else {
            count
        };
        let count = usize::try_from(count).map_err(|_| Stop::Undecodable)?;
        if count > MAX_LEN {
            return Err(Stop::Undecodable);
        }
        Ok(count)
    }
}

/// The first pass: the datum read alongside the plan.
struct Reading<'a, 'd> {
    plan: &'a AvroPlan,
    limits: &'a Limits,
    input: Input<'d>,
    steps: &'a mut Vec<Datum>,
    captured: &'a mut Vec<Option<Datum>>,
    is_watched: &'a [bool],
    /// The first limit exceeded, in datum order, and where.
    fault: Option<(Limit, NodeId)>,
    /// The first value the JSON rendering refuses, in datum order.
    unsupported: Option<(PlanId, &'static str)>,
    /// The deepest level met inside a leaf's container.
    deepest: usize,
}

impl Reading<'_, '_> {
    fn exceeded(&mut self, limit: Limit, node: NodeId) {
        self.fault.get_or_insert((limit, node));
    }

    fn unsupported(&mut self, id: PlanId, kind: &'static str) {
        self.unsupported.get_or_insert((id, kind));
    }

    /// A value of plan node `id`, in a container at level `depth` (the root record's
    /// container is level 0).
    fn value(&mut self, id: PlanId, depth: usize) -> Result<(), Stop> {
        let plan = self.plan;
        let node = plan.node(id);
        let value = match &node.ty {
            Ty::Record(fields) => {
                let level = self.open(node, depth)?;
                if let At::Object(object) = node.at {
                    for (index, field) in fields.iter().enumerate() {
                        if index == self.limits.max_object_fields {
                            self.exceeded(Limit::ObjectFields, object);
                        }
                        self.value(*field, level)?;
                    }
                    return Ok(());
                }
                for field in fields.iter() {
                    self.value(*field, level)?;
                }
                self.close(node);
                Datum::Container(false)
            }
            Ty::Array(item) => {
                let level = self.open(node, depth)?;
                let step = self.steps.len();
                if node.written {
                    self.steps.push(Datum::Items(0));
                }
                let mut items = 0;
                loop {
                    let count = self.input.block()?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        items += 1;
                        if let At::Array(array) = node.at {
                            if items > self.limits.max_array_len {
                                self.exceeded(Limit::ArrayLen, array);
                            }
                        }
                        self.value(*item, level)?;
                    }
                }
                if node.written {
                    self.steps[step] = Datum::Items(items);
                }
                if let At::Array(_) = node.at {
                    return Ok(());
                }
                self.close(node);
                Datum::Container(true)
            }
            Ty::Union(branches) => {
                let index = self.input.long()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|index| branches.get(index))
                    .ok_or(Stop::Undecodable)?;
                if node.written {
                    self.steps.push(Datum::Branch(
                        u32::try_from(index).map_err(|_| Stop::Undecodable)?,
                    ));
                }
                return self.value(*branch, depth);
            }
            Ty::Map(values) => {
                self.unsupported(id, "a map");
                let level = self.open(node, depth)?;
                loop {
                    let count = self.input.block()?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        self.input.string()?;
                        self.value(*values, level)?;
                    }
                }
                self.close(node);
                Datum::Container(false)
            }
            Ty::Null => Datum::Null,
            Ty::Boolean => match self.input.byte()? {
                0 => Datum::Bool(false),
                1 => Datum::Bool(true),
                _ => return Err(Stop::Undecodable),
            },
            Ty::Int => Datum::Int(self.input.int()?),
            Ty::Long => Datum::Int(self.input.long()?),
            Ty::Float => {
                let span = self.input.take(4)?;
                let x = f32::from_le_bytes(
                    self.input.datum[span]
                        .try_into()
                        .map_err(|_| Stop::Undecodable)?,
                );
                if !x.is_finite() {
                    self.unsupported(id, "a non-finite number");
                }
                Datum::Float(x)
            }
            Ty::Double => {
                let span = self.input.take(8)?;
                let x = f64::from_le_bytes(
                    self.input.datum[span]
                        .try_into()
                        .map_err(|_| Stop::Undecodable)?,
                );
                if !x.is_finite() {
                    self.unsupported(id, "a non-finite number");
                }
                Datum::Double(x)
            }
            Ty::String => {
                let span = self.input.string()?;
                Datum::Str(span.start, span.end)
            }
            Ty::Enum(symbols) => {
                let index = self.input.int()?;
                let index = usize::try_from(index)
                    .ok()
                    .filter(|index| *index < symbols.len())
                    .ok_or(Stop::Undecodable)?;
                Datum::Symbol {
                    plan: id,
                    index: u32::try_from(index).map_err(|_| Stop::Undecodable)?,
                }
            }
            Ty::Bytes(kind) => {
                self.input.sized()?;
                self.unsupported(id, kind);
                Datum::Null
            }
            Ty::Fixed(size, kind) => {
                self.input.take(*size)?;
                self.unsupported(id, kind);
                Datum::Null
            }
        };
        match node.at {
            At::Leaf(leaf) => self.leaf(node, leaf, value),
            // A null where the policy has an object or an array is judged as a leaf is.
            At::Object(object) | At::Array(object) => self.leaf(node, object, value),
            At::Inside => {}
        }
        Ok(())
    }

    /// A record, an array or a map opens at `depth + 1`.
    fn open(&mut self, node: &PlanNode, depth: usize) -> Result<usize, Stop> {
        let level = depth + 1;
        if level > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        match node.at {
            At::Object(object) | At::Array(object) if level > self.limits.max_depth => {
                self.exceeded(Limit::Depth, object);
            }
            At::Leaf(_) => self.deepest = level,
            At::Inside => self.deepest = self.deepest.max(level),
            _ => {}
        }
        Ok(level)
    }

    /// After a container of a leaf: its depth judged (what is inside a leaf holds no
    /// leaf, so the deepest level is the leaf's own).
    fn close(&mut self, node: &PlanNode) {
        if let At::Leaf(leaf) = node.at {
            if self.deepest > self.limits.max_depth {
                self.exceeded(Limit::Depth, leaf);
            }
        }
    }

    /// A value of policy node `node` (a leaf's, or a null of an object or array node).
    fn leaf(&mut self, plan: &PlanNode, node: NodeId, value: Datum) {
        if let Datum::Str(start, end) = value {
            if end - start > self.limits.max_string_bytes {
                self.exceeded(Limit::StringBytes, node);
            }
        }
        if let Datum::Symbol { plan, index } = value {
            if symbol(self.plan, plan, index).len() > self.limits.max_string_bytes {
                self.exceeded(Limit::StringBytes, node);
            }
        }
        if self.is_watched[node as usize] {
            self.captured[node as usize] = Some(value);
        }
        if plan.written {
            self.steps.push(value);
        }
    }
}

/// The second pass: the output datum written from the steps.
struct Writer<'a, 'p> {
    plan: &'a AvroPlan,
    policy: &'a Policy,
    keys: &'a TenantKeys,
    datum: &'a [u8],
    steps: &'a [Datum],
    next: usize,
    out: &'a mut Vec<u8>,
    event_date: Option<time::Date>,
    record_key: Option<Range<usize>>,
    bridge: Option<(&'p mut BridgePairs, &'a PreviousKeys)>,
    /// Where the quasi-identifiers' output values are, when the risk monitor asks.
    quasi: Option<&'p mut QuasiValues>,
    text: &'a mut String,
    normalized: &'a mut String,
    rewritten: &'a mut String,
    number: &'a mut String,
    generated: &'a mut Vec<u8>,
}

impl Writer<'_, '_> {
    fn step(&mut self) -> Datum {
        let step = self.steps.get(self.next).copied().unwrap_or(Datum::Null);
        self.next += 1;
        step
    }

    /// Writes the value of plan node `id` (which the derived schema has).
    fn value(&mut self, id: PlanId) -> Result<(), Rejection> {
        let plan = self.plan;
        let node = plan.node(id);
        match (&node.ty, node.at) {
            (Ty::Record(fields), At::Object(_)) => {
                for field in fields.iter() {
                    if plan.node(*field).written {
                        self.value(*field)?;
                    }
                }
            }
            (Ty::Array(item), At::Array(_)) => {
                let Datum::Items(count) = self.step() else {
                    return Err(self.misfit(node, "an array the walk did not read"));
                };
                if count > 0 {
                    write_long(i64::try_from(count).unwrap_or(i64::MAX), self.out);
                    for _ in 0..count {
                        self.value(*item)?;
                    }
                }
                write_long(0, self.out);
            }
            (Ty::Union(branches), _) => {
                let Datum::Branch(index) = self.step() else {
                    return Err(self.misfit(node, "a union the walk did not read"));
                };
                let branch = branches[index as usize];
                if node.nullable {
                    if let Ty::Null = plan.node(branch).ty {
                        self.step();
                        write_long(0, self.out);
                    } else {
                        write_long(1, self.out);
                        self.value(branch)?;
                    }
                } else {
                    let value = self.step();
                    self.kept_in_union(node, branches, value)?;
                }
            }
            (_, At::Leaf(leaf)) => {
                let value = self.step();
                self.leaf(node, leaf, value)?;
            }
            (Ty::Null, _) => {
                self.step();
            }
            _ => return Err(self.misfit(node, "a value of another type")),
        }
        Ok(())
    }

    fn misfit(&self, node: &PlanNode, what: &'static str) -> Rejection {
        let error = AvroError::DoesNotFit {
            path: node.path.to_string(),
            what,
        };
        Rejection::new(Reason::WrongType, error.to_string())
    }

    /// Checks a kept value with the leaf's detectors.
    fn detect(
        &mut self,
        node: &PlanNode,
        detect: crate::Detectors,
        value: Datum,
    ) -> Result<(), Rejection> {
        let found = match value {
            Datum::Int(_) => detect.in_integer(text_of(value, self.plan, self.datum, self.number)),
            Datum::Str(..) | Datum::Symbol { .. } => {
                detect.in_text(text_of(value, self.plan, self.datum, self.number))
            }
            Datum::Container(_) => return Err(Kept::NotAScalar.at(&node.path, kind_of(value))),
            _ => None,
        };
        match found {
            Some(detector) => Err(Kept::Personal(detector).at(&node.path, kind_of(value))),
            None => Ok(()),
        }
    }

    /// A leaf's value (not a kept union's).
    fn leaf(&mut self, node: &PlanNode, leaf: NodeId, value: Datum) -> Result<(), Rejection> {
        let policy = self.policy;
        let Some(rule) = policy.tree.rule(leaf) else {
            return Err(self.misfit(node, "a value where the policy expects fields"));
        };
        let start = self.out.len();
        match rule {
            Rule::Drop => return Ok(()),
            Rule::Keep { detect } => {
                self.detect(node, *detect, value)?;
                self.kept(value);
            }
            _ if value == Datum::Null => return Ok(()),
            rule => self.rewritten(node, leaf, rule, value)?,
        }
        // A quasi-identifier's output value, as the risk monitor groups it (a null one
        // has none, as on the JSON path).
        if let (Some(quasi), false) = (self.quasi.as_deref_mut(), value == Datum::Null) {
            quasi.set(policy.quasi_of.get(leaf as usize), start..self.out.len());
        }
        Ok(())
    }

    /// A token, a ciphertext, a masked or a generalized value in place of `value`.
    fn rewritten(
        &mut self,
        node: &PlanNode,
        leaf: NodeId,
        rule: &Rule,
        value: Datum,
    ) -> Result<(), Rejection> {
        let failed = |failure| rule_rejection(&node.path, kind_of(value), failure);
        let not_text = || failed(Failure::WrongType("a string or an integer"));
        let keys = self.keys;
        let is_text = matches!(value, Datum::Str(..) | Datum::Symbol { .. } | Datum::Int(_));
        match rule {
            Rule::Token { domain, normalizer } => {
                if !is_text {
                    return Err(not_text());
                }
                let raw = text_of(value, self.plan, self.datum, self.text);
                let normalized = normalizer.normalize(raw, self.normalized);
                self.generated.clear();
                keys.tokens[*domain].write_token(normalized.as_bytes(), self.generated);
                write_long(len_of(self.generated), self.out);
                let start = self.out.len();
                self.out.extend_from_slice(self.generated);
                if self.policy.record_key == Some(leaf) {
                    self.record_key = Some(start..self.out.len());
                }
                if let Some((pairs, previous)) = &mut self.bridge {
                    pairs.push(
                        &node.path,
                        &self.policy.token_domains()[*domain],
                        &previous.tokens[*domain],
                        normalized.as_bytes(),
                        self.generated,
                    );
                }
                Ok(())
            }
            Rule::Encrypt { domain } => {
                if !is_text {
                    return Err(not_text());
                }
                let raw = text_of(value, self.plan, self.datum, self.text);
                let sealed = keys.encrypts[*domain].encrypt(raw.as_bytes());
                write_bytes(sealed.as_bytes(), self.out);
                Ok(())
            }
            Rule::Mask { keep_last } => {
                if !is_text {
                    return Err(not_text());
                }
                let raw = text_of(value, self.plan, self.datum, self.text);
                let total = raw.chars().count();
                self.rewritten.clear();
                self.rewritten.extend(raw.chars().enumerate().map(|(i, c)| {
                    if i + keep_last < total {
                        '*'
                    } else {
                        c
                    }
                }));
                write_bytes(self.rewritten.as_bytes(), self.out);
                Ok(())
            }
            Rule::Generalize(generalization) => {
                let x = match value {
                    Datum::Float(x) => Some(f64::from(x)),
                    Datum::Double(x) => Some(x),
                    _ => None,
                };
                let scalar = match (value, x) {
                    (Datum::Int(n), _) => Scalar::Number(
                        number(n),
                        text_of(value, self.plan, self.datum, self.number),
                    ),
                    (_, Some(x)) => {
                        // The text the JSON rendering gives the number.
                        self.number.clear();
                        if let Some(rendered) = serde_json::Number::from_f64(x) {
                            let _ = write!(self.number, "{rendered}");
                        }
                        Scalar::Number(Number::F64(x), self.number)
                    }
                    (Datum::Str(..) | Datum::Symbol { .. }, _) => {
                        Scalar::Str(text_of(value, self.plan, self.datum, self.number))
                    }
                    _ => Scalar::Other,
                };
                self.generated.clear();
                generalization
                    .apply(scalar, self.event_date, self.rewritten, self.generated)
                    .map_err(failed)?;
                self.generalized(node)
            }
            Rule::Keep { .. } | Rule::Drop => Ok(()),
        }
    }

    /// Writes the generalized value (JSON in `generated`) as the derived type.
    fn generalized(&mut self, node: &PlanNode) -> Result<(), Rejection> {
        let json = &self.generated[..];
        let text = std::str::from_utf8(json).unwrap_or_default();
        match node.out {
            Out::String => {
                let Some(raw) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
                    return Err(self.misfit(node, "a value of another type"));
                };
                let text = unescape(raw, self.text);
                write_bytes(text.as_bytes(), self.out);
            }
            Out::Long => {
                let n = text
                    .parse::<i64>()
                    .map_err(|_| self.misfit(node, "not a 64-bit integer"))?;
                write_long(n, self.out);
            }
            Out::Double => {
                // Parsed as the JSON path's writer parses it (serde_json, which may differ
                // from a correctly rounded parse by an ulp), so that a record comes out as
                // it did before.
                let x = serde_json::from_str::<f64>(text)
                    .map_err(|_| self.misfit(node, "not a number"))?;
                self.out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Writes a kept value as its own type.
    fn kept(&mut self, value: Datum) {
        match value {
            Datum::Bool(b) => self.out.push(u8::from(b)),
            Datum::Int(n) => write_long(n, self.out),
            Datum::Float(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Datum::Double(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Datum::Str(start, end) => write_bytes(&self.datum[start..end], self.out),
            Datum::Symbol { index, .. } => write_long(i64::from(index), self.out),
            Datum::Null | Datum::Branch(_) | Datum::Items(_) | Datum::Container(_) => {}
        }
    }

    /// A kept union's value: written in the first branch that may hold its JSON
    /// rendering, as the JSON path's writer chooses it.
    fn kept_in_union(
        &mut self,
        node: &PlanNode,
        branches: &[PlanId],
        value: Datum,
    ) -> Result<(), Rejection> {
        let At::Leaf(leaf) = node.at else {
            return Err(self.misfit(node, "a union where the policy expects fields"));
        };
        if let Some(Rule::Keep { detect }) = self.policy.tree.rule(leaf) {
            self.detect(node, *detect, value)?;
        }
        let plan = self.plan;
        let text = match value {
            Datum::Str(start, end) => Some(str_at(self.datum, start, end)),
            Datum::Symbol { plan: p, index } => Some(symbol(plan, p, index)),
            _ => None,
        };
        let chosen = branches.iter().enumerate().find(|(_, branch)| {
            let ty = &plan.node(**branch).ty;
            match (ty, value) {
                (Ty::Null, Datum::Null) | (Ty::Boolean, Datum::Bool(_)) => true,
                (Ty::Float | Ty::Double, Datum::Int(_) | Datum::Float(_) | Datum::Double(_)) => {
                    true
                }
                (Ty::Int, Datum::Int(n)) => i32::try_from(n).is_ok(),
                (Ty::Long, Datum::Int(_)) => true,
                (Ty::String, Datum::Str(..) | Datum::Symbol { .. }) => true,
                (Ty::Enum(symbols), Datum::Str(..) | Datum::Symbol { .. }) => {
                    text.is_some_and(|text| symbols.iter().any(|s| &**s == text))
                }
                _ => false,
            }
        });
        let Some((index, branch)) = chosen else {
            return Err(self.misfit(node, "a value of no type of the union"));
        };
        write_long(i64::try_from(index).unwrap_or(i64::MAX), self.out);
        let as_f64 = match value {
            Datum::Int(n) => n as f64,
            Datum::Float(x) => f64::from(x),
            Datum::Double(x) => x,
            _ => 0.0,
        };
        match (&plan.node(*branch).ty, value) {
            (Ty::Float, _) => self.out.extend_from_slice(&(as_f64 as f32).to_le_bytes()),
            (Ty::Double, _) => self.out.extend_from_slice(&as_f64.to_le_bytes()),
            (Ty::String, _) => write_bytes(text.unwrap_or_default().as_bytes(), self.out),
            (Ty::Enum(symbols), _) => {
                let text = text.unwrap_or_default();
                let index = symbols.iter().position(|s| &**s == text).unwrap_or(0);
                write_long(i64::try_from(index).unwrap_or(i64::MAX), self.out);
            }
            (_, value) => self.kept(value),
        }
        Ok(())
    }
}

/// The leak guard's pass: every value read judged against its rule's output shape.
struct Judge<'a> {
    plan: &'a AvroPlan,
    policy: &'a Policy,
    datum: &'a [u8],
    steps: &'a [Datum],
    next: usize,
    text: &'a mut String,
    number: &'a mut String,
}

impl Judge<'_> {
    fn step(&mut self) -> Datum {
        let step = self.steps.get(self.next).copied().unwrap_or(Datum::Null);
        self.next += 1;
        step
    }

    fn value(&mut self, id: PlanId) -> Result<(), Rejection> {
        let plan = self.plan;
        let node = plan.node(id);
        match (&node.ty, node.at) {
            (Ty::Record(fields), At::Object(_)) => {
                for field in fields.iter() {
                    self.value(*field)?;
                }
            }
            (Ty::Array(item), At::Array(_)) => {
                let Datum::Items(count) = self.step() else {
                    return Err(not_its_shape(&node.path));
                };
                for _ in 0..count {
                    self.value(*item)?;
                }
            }
            (Ty::Union(branches), _) => {
                let Datum::Branch(index) = self.step() else {
                    return Err(not_its_shape(&node.path));
                };
                self.value(branches[index as usize])?;
            }
            (_, At::Leaf(leaf)) => {
                let value = self.step();
                self.leaf(node, leaf, value)?;
            }
            _ => {
                self.step();
            }
        }
        Ok(())
    }

    /// What the JSON guard checks of a leaf's value.
    fn leaf(&mut self, node: &PlanNode, leaf: NodeId, value: Datum) -> Result<(), Rejection> {
        let path = &node.path;
        let rule = match self.policy.tree.rule(leaf) {
            Some(Rule::Drop) => {
                return Err(Rejection::new(
                    Reason::LeakGuard,
                    format!("field `{path}` must have been dropped"),
                ))
            }
            Some(Rule::Keep { detect }) => {
                let found = match value {
                    Datum::Container(_) => return Err(not_its_shape(path)),
                    Datum::Int(_) => {
                        detect.in_integer(text_of(value, self.plan, self.datum, self.number))
                    }
                    Datum::Str(..) | Datum::Symbol { .. } => {
                        detect.in_text(text_of(value, self.plan, self.datum, self.number))
                    }
                    _ => None,
                };
                return match found {
                    Some(detector) => Err(personal_rejection(path, detector)),
                    None => Ok(()),
                };
            }
            Some(_) if value == Datum::Null => return Ok(()),
            Some(rule) => rule,
            None => return Ok(()),
        };
        let x = match value {
            Datum::Float(x) => Some(f64::from(x)),
            Datum::Double(x) => Some(x),
            _ => None,
        };
        let scalar = match (value, x) {
            (Datum::Container(_), _) => return Err(not_its_shape(path)),
            (Datum::Int(n), _) => Scalar::Number(
                number(n),
                text_of(value, self.plan, self.datum, self.number),
            ),
            (_, Some(x)) => {
                self.number.clear();
                if let Some(rendered) = serde_json::Number::from_f64(x) {
                    let _ = write!(self.number, "{rendered}");
                }
                Scalar::Number(Number::F64(x), self.number)
            }
            (Datum::Str(..) | Datum::Symbol { .. }, _) => {
                Scalar::Str(text_of(value, self.plan, self.datum, self.text))
            }
            _ => Scalar::Other,
        };
        if leaf_ok(rule, scalar) {
            Ok(())
        } else {
            Err(not_its_shape(path))
        }
    }
}

/// A length as Avro writes it.
fn len_of(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).unwrap_or(i64::MAX)
}

/// The text of a string or an enum symbol, or the decimal form of an integer (written
/// into `scratch`).
fn text_of<'a>(
    value: Datum,
    plan: &'a AvroPlan,
    datum: &'a [u8],
    scratch: &'a mut String,
) -> &'a str {
    match value {
        Datum::Str(start, end) => str_at(datum, start, end),
        Datum::Symbol { plan: id, index } => symbol(plan, id, index),
        Datum::Int(n) => {
            scratch.clear();
            let _ = write!(scratch, "{n}");
            scratch
        }
        _ => "",
    }
}
