//! The Avro schema, the example event and the default policy agree with each other.

use std::collections::BTreeSet;

use apache_avro::Schema;
use serde_json::Value;

const AVSC: &str = include_str!("../schemas/coupon_redemption.avsc");
const EXAMPLE: &str = include_str!("../schemas/coupon_redemption.json");
const POLICY: &str = include_str!("../schemas/coupon_redemption.policy.toml");

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
