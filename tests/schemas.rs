//! The Avro schemas, the example event and the default policy agree with each other.

use std::collections::BTreeSet;

use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::Schema;
use pseudonymize::{avro_schema, MasterSecret, Policy, Pseudonymizer};
use serde_json::Value;

const AVSC: &str = include_str!("../schemas/coupon_redemption.avsc");
const EXAMPLE: &str = include_str!("../schemas/coupon_redemption.json");
const POLICY: &str = include_str!("../schemas/coupon_redemption.policy.toml");
const DERIVED: &str = include_str!("../schemas/coupon_redemption.pseudonymized.avsc");

/// Leaf paths of an Avro schema in the policy's notation (`basket.items[].sku`).
fn leaf_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match schema {
        Value::Array(branches) => branches.iter().for_each(|b| leaf_paths(b, prefix, out)),
        Value::Object(o) if o["type"] == "record" => {
            for field in o["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                leaf_paths(&field["type"], &path, out);
            }
        }
        Value::Object(o) if o["type"] == "array" => {
            leaf_paths(&o["items"], &format!("{prefix}[]"), out)
        }
        Value::String(s) if s == "null" => {}
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn the_avro_schema_parses_and_the_example_conforms() {
    let schema = Schema::parse_str(AVSC).expect("coupon_redemption.avsc is a valid Avro schema");
    let example: Value = serde_json::from_str(EXAMPLE).unwrap();
    let value = apache_avro::types::Value::from(example);
    assert!(
        value.resolve(&schema).is_ok(),
        "the example event conforms to the schema"
    );
}

#[test]
fn the_policy_classifies_exactly_the_schema_fields() {
    let mut schema_paths = BTreeSet::new();
    leaf_paths(&serde_json::from_str(AVSC).unwrap(), "", &mut schema_paths);
    let policy: toml::Value = toml::from_str(POLICY).unwrap();
    let policy_paths: BTreeSet<String> = policy["fields"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        schema_paths, policy_paths,
        "every schema field has a rule and every rule a schema field"
    );
}

#[test]
fn the_pseudonymized_schema_is_derived_from_the_schema_and_the_policy() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let writer = Schema::parse_str(AVSC).unwrap();
    let derived = avro_schema::derive_text(&policy, &writer).expect("the schema fits the policy");
    assert!(
        derived == DERIVED,
        "schemas/coupon_redemption.pseudonymized.avsc is out of date: run `cargo run -- schema derive --policy schemas/coupon_redemption.policy.toml --schema schemas/coupon_redemption.avsc --output schemas/coupon_redemption.pseudonymized.avsc`"
    );
}

#[test]
fn the_pseudonymized_example_conforms_to_the_derived_schema() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let schema = Schema::parse_str(DERIVED).expect("the derived schema is valid Avro");
    let secret = MasterSecret::from_bytes(std::array::from_fn(|i| i as u8));
    let engine = Pseudonymizer::new(policy, [("brand-a".to_string(), 1, &secret)]);
    let (out, _) = engine
        .pseudonymize(EXAMPLE.as_bytes())
        .expect("the example event passes the default policy");
    let out: Value = serde_json::from_slice(&out).unwrap();

    let names = ResolvedSchema::try_from(&schema).unwrap();
    if let Err(problem) = conforms(&out, &schema, names.get_names(), "") {
        panic!("the pseudonymized example does not match the derived schema: {problem}");
    }
    let value = apache_avro::types::Value::from(out);
    assert!(
        value.resolve(&schema).is_ok(),
        "the pseudonymized example resolves against the derived schema"
    );
}

/// Whether `json` is a value of `schema`, strictly: unlike `resolve`, a member the record
/// does not have is an error, so the derived schema must describe the whole output.
fn conforms(
    json: &Value,
    schema: &Schema,
    names: &std::collections::HashMap<Name, &Schema>,
    path: &str,
) -> Result<(), String> {
    let wrong = || {
        let kind = apache_avro::schema::SchemaKind::from(schema);
        Err(format!(
            "`{path}`: the output holds a value the schema's {kind:?} does not take"
        ))
    };
    match (schema, json) {
        (Schema::Ref { name }, _) => conforms(json, names[name], names, path),
        (Schema::Null, Value::Null)
        | (Schema::Boolean, Value::Bool(_))
        | (Schema::String, Value::String(_)) => Ok(()),
        (Schema::Long | Schema::Int, Value::Number(n)) if n.is_i64() => Ok(()),
        (Schema::Double | Schema::Float, Value::Number(_)) => Ok(()),
        (Schema::Enum(e), Value::String(s)) if e.symbols.contains(s) => Ok(()),
        (Schema::Union(union), _) => {
            // The error worth reading is the non-null branch's.
            let mut first_error = None;
            for branch in union.variants() {
                match conforms(json, branch, names, path) {
                    Ok(()) => return Ok(()),
                    Err(error) if *branch != Schema::Null => {
                        first_error.get_or_insert(error);
                    }
                    Err(_) => {}
                }
            }
            first_error.map_or_else(wrong, Err)
        }
        (Schema::Array(array), Value::Array(items)) => items
            .iter()
            .try_for_each(|item| conforms(item, &array.items, names, &format!("{path}[]"))),
        (Schema::Record(record), Value::Object(members)) => {
            if let Some(extra) = members.keys().find(|k| !record.lookup.contains_key(*k)) {
                return Err(format!(
                    "`{path}`: member `{extra}` is not in the derived schema"
                ));
            }
            record.fields.iter().try_for_each(|field| {
                let field_path = if path.is_empty() {
                    field.name.clone()
                } else {
                    format!("{path}.{}", field.name)
                };
                match members.get(&field.name) {
                    Some(value) => conforms(value, &field.schema, names, &field_path),
                    None if field.default.is_some() => Ok(()),
                    None => Err(format!("`{field_path}` is missing and has no default")),
                }
            })
        }
        _ => wrong(),
    }
}

/// The raw schema as a producer might widen it: a new optional field `customer.nickname`
/// that no rule of the default policy classifies.
pub(crate) fn with_a_new_optional_field() -> Value {
    let mut widened: Value = serde_json::from_str(AVSC).unwrap();
    let customer = widened["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|field| field["name"] == "customer")
        .unwrap();
    customer["type"][1]["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "nickname", "type": ["null", "string"], "default": null}));
    widened
}

/// `schema check` on the command line: the default policy fits the raw schema; a producer's
/// new optional field that no rule classifies fails the check, naming the field; `schema
/// derive` refuses it too and writes nothing.
#[test]
fn schema_check_names_the_field_the_policy_leaves_unclassified() {
    let s = crate::util::Scratch::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let policy = format!("{root}/schemas/coupon_redemption.policy.toml");
    let fits = s
        .run(&[
            "schema",
            "check",
            "--policy",
            &policy,
            "--schema",
            &format!("{root}/schemas/coupon_redemption.avsc"),
        ])
        .ok();
    assert!(fits.contains("fits policy"), "{fits}");
    assert!(
        fits.contains(
            "quasi-identifiers (k = 5): customer.birth_date, customer.address.postal_code"
        ),
        "the policy's quasi-identifiers are named: {fits}"
    );

    let widened = with_a_new_optional_field();
    let schema = s.path("widened.avsc");
    std::fs::write(&schema, widened.to_string()).unwrap();
    let refused = s
        .run(&[
            "schema",
            "check",
            "--policy",
            &policy,
            "--schema",
            schema.to_str().unwrap(),
        ])
        .fails();
    assert!(
        refused.contains("`customer.nickname`: no rule in the policy covers it"),
        "{refused}"
    );
    let output = s.path("derived.avsc");
    s.run(&[
        "schema",
        "derive",
        "--policy",
        &policy,
        "--schema",
        schema.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .fails();
    assert!(
        !output.exists(),
        "nothing derived from a schema that does not fit"
    );
}
