//! Avro schemas under a policy: whether a writer schema fits a policy ([`check`]), and the
//! schema of the records the policy makes out of it ([`derive`], [`derive_text`]), which
//! is what analysts read the cloud topic with.
//!
//! The writer's record structure is walked alongside the policy's tree, in schema order,
//! with paths in the policy's notation (`customer.email`, `basket.items[].sku`):
//! - A leaf with no rule is [`SchemaProblem::Unclassified`]: a field a producer adds is
//!   quarantined until the policy classifies it. A rule whose path the schema lacks is
//!   fine: one policy may cover several versions of a schema.
//! - A rule must fit the type ([`SchemaProblem::DoesNotFit`]), as the JSON record path
//!   takes values: `token`, `encrypt` and `mask` take strings, enums and integers
//!   (`int`, `long`; an integer is tokenized in decimal); `generalize` to `year`, `month`,
//!   `age_band`, `hour` and `ip_network` take strings, to `prefix` strings, enums and
//!   integers, to `round` numbers; `keep` takes scalars, enums and fixed (or a union of
//!   them, kept as is), never a record, an array or a map: their fields are classified one
//!   by one. Rules under a path need a record there; `[]` rules an array.
//! - A union of `null` and one type stands for that type, nullable. Other unions can only
//!   be kept as is (all their branches scalars) or dropped ([`SchemaProblem::Unsupported`]).
//! - A map can only be dropped whole: its keys are data, so no rule can name them, and the
//!   record path refuses to keep an object. A recursive record can only be dropped.
//!
//! What derivation makes: records keep their field order and names; named types move to
//! the namespace `io.pseudopipe.pseudonymized` (from `io.pseudopipe.raw`; any other
//! namespace gets `.pseudonymized` appended, none becomes `pseudonymized`), and record docs
//! say what they are the pseudonymized form of. A dropped field disappears, and so does a
//! record left with no field, or an array whose elements all vanish, with its field.
//! Tokens, ciphertexts and masked values are `"string"`; generalized values are strings,
//! except `round`, a `long` when the input is an integer and the step integral, else a
//! `double`; each of these fields says in its `doc` what it holds, and is
//! `["null", ...]` with default null when the writer's type was nullable. Kept fields keep
//! their type, default and doc. Aliases and custom attributes are not carried over (they
//! would name the raw types).

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordField, RecordSchema};
/// The Avro schema type of this module's API, for callers without their own `apache-avro`
/// dependency (the binary).
pub use apache_avro::Schema;
use serde_json::{json, Map, Value};

use crate::generalize::Generalization;
use crate::policy::{Policy, Rule};
use crate::tree::{NodeId, Shape, ROOT};

/// One problem of a writer schema under a policy; Display names the field path in the
/// policy's notation (`customer.email`, `basket.items[].sku`) and never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaProblem {
    /// A leaf field no rule covers.
    #[error("{}: no rule in the policy covers it; classify it in [fields] (keep, drop, token, encrypt, mask or generalize)", at(path))]
    Unclassified {
        /// The field's path.
        path: String,
    },
    /// A rule that does not fit the field's type (a token on a record, round on a string,
    /// keep on a map).
    #[error("{}: {found} in the schema, but the policy says {action}", at(path))]
    DoesNotFit {
        /// The field's path.
        path: String,
        /// What the policy does there (`` `token` ``, `` `generalize` to `round` ``...).
        action: String,
        /// The writer's type there (`a record`, `a string`...).
        found: String,
    },
    /// An Avro construct the policy cannot classify field by field (a map, a union of
    /// several types, a recursive record) where only `drop` would do.
    #[error("{}: {found} is not supported there", at(path))]
    Unsupported {
        /// The field's path.
        path: String,
        /// What the writer has there, and why it cannot be mapped.
        found: String,
    },
}

/// A path as messages show it.
fn at(path: &str) -> String {
    if path.is_empty() {
        "the schema's top level".into()
    } else {
        format!("`{path}`")
    }
}

/// How many leaf fields of a writer schema each action covers (every leaf inside a
/// dropped record counts as dropped; a dropped map or union counts once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldCounts {
    /// Forwarded unchanged.
    pub kept: usize,
    /// Replaced by their token.
    pub tokenized: usize,
    /// Replaced by their ciphertext.
    pub encrypted: usize,
    /// Masked.
    pub masked: usize,
    /// Generalized.
    pub generalized: usize,
    /// Removed.
    pub dropped: usize,
}

impl FieldCounts {
    /// Every leaf field counted.
    pub fn total(&self) -> usize {
        self.kept + self.tokenized + self.encrypted + self.masked + self.generalized + self.dropped
    }
}

/// Every problem of `writer` under `policy`, in schema order; empty when it fits.
pub fn check(policy: &Policy, writer: &apache_avro::Schema) -> Vec<SchemaProblem> {
    match walk(policy, writer) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

/// How many fields of `writer` each action of `policy` covers, or the problems of
/// `writer` under `policy`.
pub fn count(
    policy: &Policy,
    writer: &apache_avro::Schema,
) -> Result<FieldCounts, Vec<SchemaProblem>> {
    walk(policy, writer).map(|(_, counts)| counts)
}

/// The paths of `policy`'s rules that name no field of `writer`, in path order: fine for
/// `check` (one policy may cover several versions of a schema), but a typo
/// (`customer.emial`) is one of them, and the real field it meant then has no rule.
pub fn rules_without_field(policy: &Policy, writer: &apache_avro::Schema) -> Vec<String> {
    let mut named = HashMap::new();
    collect_named(writer, &mut named);
    let mut paths = std::collections::HashSet::new();
    field_paths(writer, "", &named, &mut Vec::new(), &mut paths);
    policy
        .rules()
        .iter()
        .map(|(path, _)| path)
        .filter(|path| !paths.contains(path.as_str()))
        .cloned()
        .collect()
}

/// Every field path of `schema` under `prefix`, in the policy's notation (records'
/// fields joined by `.`, an array's items as `[]`), through unions and references (each
/// named record once per branch: `open` holds the records being walked).
fn field_paths<'a>(
    schema: &'a Schema,
    prefix: &str,
    named: &HashMap<String, &'a Schema>,
    open: &mut Vec<String>,
    paths: &mut std::collections::HashSet<String>,
) {
    match schema {
        Schema::Record(record) => {
            let name = record.name.fullname(None);
            if open.contains(&name) {
                return;
            }
            open.push(name);
            for field in &record.fields {
                let path = if prefix.is_empty() {
                    field.name.clone()
                } else {
                    format!("{prefix}.{}", field.name)
                };
                field_paths(&field.schema, &path, named, open, paths);
                paths.insert(path);
            }
            open.pop();
        }
        Schema::Array(array) => {
            let path = format!("{prefix}[]");
            field_paths(&array.items, &path, named, open, paths);
            paths.insert(path);
        }
        Schema::Union(union) => {
            for variant in union.variants() {
                field_paths(variant, prefix, named, open, paths);
            }
        }
        Schema::Ref { name } => {
            if let Some(schema) = named.get(&name.fullname(None)) {
                field_paths(schema, prefix, named, open, paths);
            }
        }
        _ => {}
    }
}

/// The schema of the pseudonymized records that `policy` makes out of records written with
/// `writer`, or the problems that prevent it.
pub fn derive(
    policy: &Policy,
    writer: &apache_avro::Schema,
) -> Result<apache_avro::Schema, Vec<SchemaProblem>> {
    let (json, _) = walk(policy, writer)?;
    Ok(parse_derived(&json))
}

/// `derive`'s result as pretty JSON text (the .avsc file content, ending with a newline).
pub fn derive_text(
    policy: &Policy,
    writer: &apache_avro::Schema,
) -> Result<String, Vec<SchemaProblem>> {
    let (json, _) = walk(policy, writer)?;
    // Parsed first, so that text is only ever handed out for a valid schema.
    parse_derived(&json);
    let mut text = String::new();
    pretty(&json, 0, &mut text);
    text.push('\n');
    Ok(text)
}

/// Indented JSON, except that an array of scalars stays on one line (`["null", "string"]`,
/// enum symbols): a schema reads like the hand-written ones.
fn pretty(value: &Value, indent: usize, out: &mut String) {
    let scalar = |v: &Value| serde_json::to_string(v).expect("a JSON value serializes");
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (index, (key, value)) in map.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(&scalar(&Value::String(key.clone())));
                out.push_str(": ");
                pretty(value, indent + 2, out);
                out.push_str(if index + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                pretty(item, indent + 2, out);
                out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        other => out.push_str(&scalar(other)),
    }
}

/// The derived JSON as a schema. It is built from a valid writer schema by renaming named
/// types and replacing leaf types with primitive ones, so it always parses.
fn parse_derived(json: &Value) -> Schema {
    Schema::parse(json).expect("a derived schema is valid Avro")
}

/// The derived schema as JSON (kept in order: apache-avro's own serialization loses field
/// docs), with the counts; or the problems.
fn walk(policy: &Policy, writer: &Schema) -> Result<(Value, FieldCounts), Vec<SchemaProblem>> {
    let mut walker = Walker {
        policy,
        named: HashMap::new(),
        open: Vec::new(),
        emitted: HashMap::new(),
        problems: Vec::new(),
        counts: FieldCounts::default(),
    };
    collect_named(writer, &mut walker.named);
    let derived = match writer {
        Schema::Record(record) => walker.record(record, ROOT, "", None),
        other => {
            walker.problems.push(SchemaProblem::Unsupported {
                path: String::new(),
                found: format!("{} (events are records)", describe(other)),
            });
            None
        }
    };
    match derived {
        Some(json) if walker.problems.is_empty() => Ok((json, walker.counts)),
        _ if !walker.problems.is_empty() => Err(walker.problems),
        // Every field dropped: nothing would be left to send.
        _ => Err(vec![SchemaProblem::DoesNotFit {
            path: String::new(),
            action: "to drop every field".into(),
            found: "a record".into(),
        }]),
    }
}

/// The writer's named types by full name: what a `Ref` stands for.
fn collect_named<'a>(schema: &'a Schema, named: &mut HashMap<String, &'a Schema>) {
    match schema {
        Schema::Record(record) => {
            named.insert(record.name.fullname(None), schema);
            for field in &record.fields {
                collect_named(&field.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            named.insert(f.name.fullname(None), schema);
        }
        Schema::Decimal(d) => {
            if let Schema::Fixed(f) = &*d.inner {
                named.insert(f.name.fullname(None), schema);
            }
        }
        Schema::Array(a) => collect_named(&a.items, named),
        Schema::Map(m) => collect_named(&m.types, named),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, named)),
        _ => {}
    }
}

/// The derived namespace of a writer namespace.
fn derived_namespace(namespace: Option<&str>) -> String {
    match namespace {
        Some("io.pseudopipe.raw") => "io.pseudopipe.pseudonymized".into(),
        Some(ns) if !ns.is_empty() => format!("{ns}.pseudonymized"),
        _ => "pseudonymized".into(),
    }
}

/// A writer type as messages name it.
fn describe(schema: &Schema) -> String {
    let named = |kind: &str, name: &Name| format!("{kind} `{}`", name.name);
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "a boolean".into(),
        Schema::Int => "an int".into(),
        Schema::Long => "a long".into(),
        Schema::Float => "a float".into(),
        Schema::Double => "a double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "a string".into(),
        Schema::Array(_) => "an array".into(),
        Schema::Map(_) => "a map".into(),
        Schema::Union(u) => {
            let branches: Vec<String> = u.variants().iter().map(describe).collect();
            format!("a union of {}", branches.join(", "))
        }
        Schema::Record(r) => named("a record", &r.name),
        Schema::Enum(e) => named("an enum", &e.name),
        Schema::Fixed(f) => named("a fixed", &f.name),
        Schema::Decimal(_) | Schema::BigDecimal => "a decimal".into(),
        Schema::Uuid => "a uuid".into(),
        Schema::Date => "a date (days)".into(),
        Schema::TimeMillis | Schema::TimeMicros => "a time of day".into(),
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "a numeric timestamp".into(),
        Schema::Duration => "a duration".into(),
        Schema::Ref { name } => format!("a reference to `{}`", name.name),
    }
}

/// Whether a `keep` rule takes values of this (resolved, non-union) type as they are.
fn is_scalar(schema: &Schema) -> bool {
    !matches!(
        schema,
        Schema::Record(_)
            | Schema::Array(_)
            | Schema::Map(_)
            | Schema::Union(_)
            | Schema::Ref { .. }
    )
}

/// Strings and what the record path sees as strings.
fn is_stringish(schema: &Schema) -> bool {
    matches!(schema, Schema::String | Schema::Uuid | Schema::Enum(_))
}

/// Integers, which the record path writes in decimal where it wants text.
fn is_integer(schema: &Schema) -> bool {
    matches!(schema, Schema::Int | Schema::Long)
}

/// A derived type with what its field gets.
struct Derived {
    schema: Value,
    /// The field's doc; `None` keeps the writer's.
    doc: Option<String>,
    default: DefaultRule,
}

/// What default a derived field gets.
enum DefaultRule {
    /// The writer's (a kept type).
    Writer,
    /// Null: the type became `["null", ...]`.
    Null,
    /// The writer's if it is an empty array (an array of derived elements), else none.
    EmptyArray,
    /// None (a non-null rewritten value: the writer's default would not fit).
    None,
}

struct Walker<'a> {
    policy: &'a Policy,
    /// Writer definitions of named types, by full name.
    named: HashMap<String, &'a Schema>,
    /// Writer records being walked, by full name: a reference to one is recursion.
    open: Vec<String>,
    /// Derived named types written so far, by full name, with their definition (nested
    /// named types by name, see [`canonical`]).
    emitted: HashMap<String, Value>,
    problems: Vec<SchemaProblem>,
    counts: FieldCounts,
}

impl<'a> Walker<'a> {
    /// What a reference stands for (itself if unknown, which then fits nothing).
    fn resolve(&self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => self
                .named
                .get(&name.fullname(None))
                .copied()
                .unwrap_or(schema),
            other => other,
        }
    }

    /// The type a value has when it is not null, and whether it may be null: a union of
    /// null and one type stands for that type.
    fn unwrap(&self, schema: &'a Schema) -> (&'a Schema, bool) {
        if let Schema::Union(union) = schema {
            if let [a, b] = union.variants() {
                match (a, b) {
                    (Schema::Null, other) | (other, Schema::Null) if *other != Schema::Null => {
                        return (self.resolve(other), true)
                    }
                    _ => {}
                }
            }
        }
        (self.resolve(schema), false)
    }

    fn problem(&mut self, problem: SchemaProblem) -> Option<Derived> {
        self.problems.push(problem);
        None
    }

    fn does_not_fit(&mut self, path: &str, action: &str, found: &Schema) -> Option<Derived> {
        self.problem(SchemaProblem::DoesNotFit {
            path: path.into(),
            action: action.into(),
            found: describe(found),
        })
    }

    /// The derived record for `record` at `path`, under the policy's object node `node`,
    /// in the derived namespace `enclosing`; `None` when no field is left.
    fn record(
        &mut self,
        record: &'a RecordSchema,
        node: NodeId,
        path: &str,
        enclosing: Option<&str>,
    ) -> Option<Value> {
        let fullname = record.name.fullname(None);
        if self.open.contains(&fullname) {
            self.problems.push(SchemaProblem::Unsupported {
                path: path.into(),
                found: format!(
                    "a recursive reference to the record `{}` (only `drop` applies to it)",
                    record.name.name
                ),
            });
            return None;
        }
        self.open.push(fullname);
        let namespace = derived_namespace(record.name.namespace.as_deref());
        let mut fields = Vec::new();
        for field in &record.fields {
            let child = self.policy.tree.child(node, field.name.as_bytes());
            let field_path = if path.is_empty() {
                field.name.clone()
            } else {
                format!("{path}.{}", field.name)
            };
            if let Some(derived) = self.value(&field.schema, child, &field_path, &namespace) {
                fields.push(derived_field(field, derived));
            }
        }
        self.open.pop();
        if fields.is_empty() {
            return None;
        }
        let mut definition = Map::new();
        definition.insert("type".into(), "record".into());
        definition.insert("name".into(), record.name.name.clone().into());
        definition.insert("namespace".into(), namespace.into());
        let what = if path.is_empty() {
            "made by pseudopipe under its policy: personal fields are tokenized, encrypted, masked, generalized or dropped, and no field holds personal data in clear"
        } else {
            "under the same policy"
        };
        definition.insert(
            "doc".into(),
            format!(
                "Pseudonymized form of `{}`, {what}.",
                record.name.fullname(None)
            )
            .into(),
        );
        definition.insert("fields".into(), fields.into());
        Some(self.emit(definition, enclosing))
    }

    /// A named type's definition, or a reference to it when an identical one was written
    /// before (a writer type used at several paths). One that differs gets a new name.
    fn emit(&mut self, mut definition: Map<String, Value>, enclosing: Option<&str>) -> Value {
        let name = definition["name"]
            .as_str()
            .expect("named types have a name")
            .to_string();
        let namespace = definition["namespace"]
            .as_str()
            .expect("derived types have a namespace")
            .to_string();
        let mut candidate = name.clone();
        for suffix in 2.. {
            let fullname = format!("{namespace}.{candidate}");
            definition.insert("name".into(), candidate.clone().into());
            let value = canonical(&Value::Object(definition.clone()), &namespace, true);
            match self.emitted.get(&fullname) {
                Some(previous) if *previous == value => return fullname.into(),
                Some(_) => candidate = format!("{name}_{suffix}"),
                None => {
                    self.emitted.insert(fullname, value);
                    break;
                }
            }
        }
        if enclosing == Some(namespace.as_str()) {
            // Inherited from the enclosing type: the text stays short.
            definition.shift_remove("namespace");
        }
        Value::Object(definition)
    }

    /// The derived type of the value at `path`, of writer type `schema`, under policy node
    /// `node`; `None` when it vanishes or has a problem (then recorded).
    fn value(
        &mut self,
        schema: &'a Schema,
        node: Option<NodeId>,
        path: &str,
        enclosing: &str,
    ) -> Option<Derived> {
        let Some(node) = node else {
            self.unclassified(schema, path);
            return None;
        };
        let shape = &self.policy.tree.node(node).shape;
        match shape {
            Shape::Leaf(Rule::Drop) => {
                self.counts.dropped += self.leaves(schema, &mut Vec::new());
                None
            }
            Shape::Leaf(Rule::Keep { .. }) => {
                let kept = self.kept(schema, path, enclosing)?;
                self.counts.kept += 1;
                Some(Derived {
                    schema: kept,
                    doc: None,
                    default: DefaultRule::Writer,
                })
            }
            Shape::Leaf(rule) => self.rewritten(rule, schema, path),
            Shape::Object(_) => {
                let (inner, nullable) = self.unwrap(schema);
                match inner {
                    Schema::Record(record) => {
                        let derived = self.record(record, node, path, Some(enclosing))?;
                        Some(nullable_or(derived, nullable, None, DefaultRule::None))
                    }
                    Schema::Map(_) => self.problem(SchemaProblem::Unsupported {
                        path: path.into(),
                        found: "a map whose fields the policy classifies (map keys are data: only `drop` applies to a whole map)".into(),
                    }),
                    Schema::Union(_) => self.problem(SchemaProblem::Unsupported {
                        path: path.into(),
                        found: format!("{} (only a union of null and one type can be classified field by field)", describe(inner)),
                    }),
                    other => {
                        self.does_not_fit(path, &format!("it has fields (`{path}.…`)"), other)
                    }
                }
            }
            Shape::Array(item) => {
                let item = *item;
                let (inner, nullable) = self.unwrap(schema);
                match inner {
                    Schema::Array(array) => {
                        let items = self.value(&array.items, Some(item), &format!("{path}[]"), enclosing)?;
                        let derived = json!({ "type": "array", "items": items.schema });
                        Some(nullable_or(derived, nullable, None, DefaultRule::EmptyArray))
                    }
                    Schema::Union(_) => self.problem(SchemaProblem::Unsupported {
                        path: path.into(),
                        found: format!("{} (only a union of null and one type can be classified field by field)", describe(inner)),
                    }),
                    other => self.does_not_fit(path, &format!("it is an array (`{path}[]`)"), other),
                }
            }
        }
    }

    /// Records every leaf under a path no rule covers.
    fn unclassified(&mut self, schema: &'a Schema, path: &str) {
        let (inner, _) = self.unwrap(schema);
        match inner {
            Schema::Record(record) if !record.fields.is_empty() => {
                let fullname = record.name.fullname(None);
                if self.open.contains(&fullname) {
                    self.problems
                        .push(SchemaProblem::Unclassified { path: path.into() });
                    return;
                }
                self.open.push(fullname);
                for field in &record.fields {
                    self.unclassified(&field.schema, &format!("{path}.{}", field.name));
                }
                self.open.pop();
            }
            Schema::Array(array) => self.unclassified(&array.items, &format!("{path}[]")),
            _ => self
                .problems
                .push(SchemaProblem::Unclassified { path: path.into() }),
        }
    }

    /// How many leaves a dropped value holds (a map, a union or a recursion counts once).
    fn leaves(&self, schema: &'a Schema, open: &mut Vec<String>) -> usize {
        let (inner, _) = self.unwrap(schema);
        match inner {
            Schema::Record(record) if !record.fields.is_empty() => {
                let fullname = record.name.fullname(None);
                if open.contains(&fullname) {
                    return 1;
                }
                open.push(fullname);
                let count = record
                    .fields
                    .iter()
                    .map(|f| self.leaves(&f.schema, open))
                    .sum();
                open.pop();
                count
            }
            Schema::Array(array) => self.leaves(&array.items, open),
            _ => 1,
        }
    }

    /// A kept type, its named types renamed into the derived namespace.
    fn kept(&mut self, schema: &'a Schema, path: &str, enclosing: &str) -> Option<Value> {
        let resolved = self.resolve(schema);
        if let Schema::Union(union) = resolved {
            let branches: Vec<&'a Schema> =
                union.variants().iter().map(|v| self.resolve(v)).collect();
            if !branches.iter().all(|b| is_scalar(b)) {
                let (found, _) = self.unwrap(resolved);
                self.does_not_fit(path, "`keep`", found);
                return None;
            }
            let derived = branches
                .into_iter()
                .map(|b| self.kept_scalar(b, enclosing))
                .collect();
            return Some(Value::Array(derived));
        }
        if !is_scalar(resolved) {
            self.does_not_fit(path, "`keep`", resolved);
            return None;
        }
        Some(self.kept_scalar(resolved, enclosing))
    }

    /// A kept scalar type (named ones renamed).
    fn kept_scalar(&mut self, schema: &Schema, enclosing: &str) -> Value {
        let rename = |name: &Name, value: Value, doc: Option<&String>| -> Map<String, Value> {
            // Rebuilt in apache-avro's key order, the namespace replaced, the doc (which its
            // serialization of enums loses) and the aliases (raw names) handled.
            let Value::Object(written) = value else {
                unreachable!("named types serialize to objects")
            };
            let mut definition = Map::new();
            for (key, value) in written {
                match key.as_str() {
                    "namespace" | "aliases" | "doc" => {}
                    "name" => {
                        definition.insert("name".into(), name.name.clone().into());
                        definition.insert(
                            "namespace".into(),
                            derived_namespace(name.namespace.as_deref()).into(),
                        );
                        if let Some(doc) = doc {
                            definition.insert("doc".into(), doc.clone().into());
                        }
                    }
                    _ => {
                        definition.insert(key, value);
                    }
                }
            }
            definition
        };
        let written = serde_json::to_value(schema).expect("an Avro schema serializes");
        let definition = match schema {
            Schema::Enum(e) => rename(&e.name, written, e.doc.as_ref()),
            Schema::Fixed(f) => rename(&f.name, written, f.doc.as_ref()),
            Schema::Decimal(d) => match &*d.inner {
                Schema::Fixed(f) => rename(&f.name, written, f.doc.as_ref()),
                _ => return written,
            },
            _ => return written,
        };
        self.emit(definition, Some(enclosing))
    }

    /// A tokenized, encrypted, masked or generalized value.
    fn rewritten(&mut self, rule: &Rule, schema: &'a Schema, path: &str) -> Option<Derived> {
        let (inner, nullable) = self.unwrap(schema);
        if let Schema::Union(_) = inner {
            return self.problem(SchemaProblem::Unsupported {
                path: path.into(),
                found: format!(
                    "{} (only a union of null and one type can be rewritten; keep it as is or drop it)",
                    describe(inner)
                ),
            });
        }
        let text_like = is_stringish(inner) || is_integer(inner);
        let (action, fits, derived, doc) = match rule {
            Rule::Token { domain, normalizer } => (
                "`token`".to_string(),
                text_like,
                "string",
                format!(
                    "Token (TOKEN-SPEC v1) of the value in domain `{}`, normalizer `{}`, under the tenant's key version named in the token: equal values give equal tokens within one key version; tokens of different versions do not join.",
                    self.policy.token_domains()[*domain],
                    normalizer.name()
                ),
            ),
            Rule::Encrypt { domain } => (
                "`encrypt`".to_string(),
                text_like,
                "string",
                format!(
                    "AES-256-GCM ciphertext (TOKEN-SPEC v1) of the value in domain `{}`, under the tenant's key version named in the value: decryptable on-prem only (`pseudopipe reidentify`); equal values give different ciphertexts.",
                    self.policy.encrypt_domains()[*domain]
                ),
            ),
            Rule::Mask { keep_last } => (
                "`mask`".to_string(),
                text_like,
                "string",
                format!(
                    "Masked: the last {keep_last} characters of the value are visible, every other one is `*`."
                ),
            ),
            Rule::Generalize(generalization) => {
                let (to, fits, doc) = match generalization {
                    Generalization::Year => (
                        "year",
                        *inner == Schema::String,
                        "Generalized: the year of the date (`YYYY`).".to_string(),
                    ),
                    Generalization::Month => (
                        "month",
                        *inner == Schema::String,
                        "Generalized: the month of the date (`YYYY-MM`).".to_string(),
                    ),
                    Generalization::AgeBand { width } => (
                        "age_band",
                        *inner == Schema::String,
                        format!(
                            "Generalized: the age in years at the event's time, as a band {width} years wide (`0-{}`).",
                            width - 1
                        ),
                    ),
                    Generalization::Hour => (
                        "hour",
                        *inner == Schema::String,
                        "Generalized: the hour of the timestamp, in UTC (`YYYY-MM-DDTHH:00:00Z`).".to_string(),
                    ),
                    Generalization::IpNetwork { bits_v4, bits_v6 } => (
                        "ip_network",
                        *inner == Schema::String,
                        format!(
                            "Generalized: the network of the IP address in CIDR notation (/{bits_v4} for IPv4, /{bits_v6} for IPv6)."
                        ),
                    ),
                    Generalization::Prefix { length } => (
                        "prefix",
                        text_like,
                        format!("Generalized: the first {length} characters of the value."),
                    ),
                    Generalization::Round { step } => (
                        "round",
                        is_integer(inner) || matches!(inner, Schema::Float | Schema::Double),
                        format!("Generalized: the value rounded to the nearest multiple of {step}."),
                    ),
                };
                let derived = match generalization {
                    // Mirrors `generalize::round`: integers stay integers when the step is
                    // integral (as a long: rounding up may leave an int's range).
                    Generalization::Round { step } => {
                        let integral_step = step.fract() == 0.0 && *step <= i64::MAX as f64;
                        if is_integer(inner) && integral_step {
                            "long"
                        } else {
                            "double"
                        }
                    }
                    _ => "string",
                };
                (format!("`generalize` to `{to}`"), fits, derived, doc)
            }
            Rule::Keep { .. } | Rule::Drop => unreachable!("`value` handles keep and drop"),
        };
        if !fits {
            return self.does_not_fit(path, &action, inner);
        }
        match rule {
            Rule::Token { .. } => self.counts.tokenized += 1,
            Rule::Encrypt { .. } => self.counts.encrypted += 1,
            Rule::Mask { .. } => self.counts.masked += 1,
            _ => self.counts.generalized += 1,
        }
        Some(nullable_or(
            derived.into(),
            nullable,
            Some(doc),
            DefaultRule::None,
        ))
    }
}

/// A named type's definition with the named types nested in it replaced by their full
/// names: the same definition whether they were written inline or referred to.
fn canonical(value: &Value, namespace: &str, top: bool) -> Value {
    match value {
        Value::Object(map) => {
            let named = matches!(
                map.get("type").and_then(Value::as_str),
                Some("record" | "enum" | "fixed")
            ) && map.contains_key("name");
            let own = map
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|_| named)
                .unwrap_or(namespace);
            if named && !top {
                return format!("{own}.{}", map["name"].as_str().unwrap_or_default()).into();
            }
            Value::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), canonical(value, own, false)))
                    .collect(),
            )
        }
        Value::Array(items) => items
            .iter()
            .map(|v| canonical(v, namespace, false))
            .collect(),
        other => other.clone(),
    }
}

/// A derived type, as `["null", type]` with default null when the writer's was nullable.
fn nullable_or(
    schema: Value,
    nullable: bool,
    doc: Option<String>,
    otherwise: DefaultRule,
) -> Derived {
    if nullable {
        Derived {
            schema: json!(["null", schema]),
            doc,
            default: DefaultRule::Null,
        }
    } else {
        Derived {
            schema,
            doc,
            default: otherwise,
        }
    }
}

/// The derived field for the writer's `field`.
fn derived_field(field: &RecordField, derived: Derived) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), field.name.clone().into());
    out.insert("type".into(), derived.schema);
    let default = match derived.default {
        DefaultRule::Writer => field.default.clone(),
        DefaultRule::Null => Some(Value::Null),
        DefaultRule::EmptyArray => field
            .default
            .clone()
            .filter(|d| d.as_array().is_some_and(Vec::is_empty)),
        DefaultRule::None => None,
    };
    if let Some(default) = default {
        out.insert("default".into(), default);
    }
    if let Some(doc) = derived.doc.or_else(|| field.doc.clone()) {
        out.insert("doc".into(), doc.into());
    }
    Value::Object(out)
}
