//! Avro writer schemas under a policy: the fit check and the derived schema.

use apache_avro::Schema;
use pseudonymize::avro_schema::{
    check, count, derive, derive_text, rules_without_field, FieldCounts, SchemaProblem,
};
use pseudonymize::Policy;
use serde_json::{json, Value};

const AVSC: &str = include_str!("../../schemas/coupon_redemption.avsc");
const POLICY: &str = include_str!("../../schemas/coupon_redemption.policy.toml");

fn policy(fields: &str) -> Policy {
    Policy::from_toml(&format!("[fields]\n{fields}")).expect("test policy is valid")
}

/// A record schema `Event` in namespace `io.pseudopipe.raw` with these fields.
fn record(fields: Value) -> Schema {
    Schema::parse(&json!({
        "type": "record", "name": "Event", "namespace": "io.pseudopipe.raw", "fields": fields
    }))
    .expect("test schema is valid")
}

/// The derived schema as JSON, through its text.
fn derived(policy: &Policy, writer: &Schema) -> Value {
    let text = derive_text(policy, writer).expect("the schema fits");
    serde_json::from_str(&text).expect("derive_text writes JSON")
}

/// The derived field `name` of a derived record.
fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {record:#}"))
}

fn names(record: &Value) -> Vec<&str> {
    record["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

#[test]
fn the_default_schema_fits_the_default_policy() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let writer = Schema::parse_str(AVSC).unwrap();
    assert_eq!(check(&policy, &writer), []);
    assert_eq!(
        count(&policy, &writer).unwrap(),
        FieldCounts {
            kept: 16,
            tokenized: 4,
            encrypted: 0,
            masked: 0,
            generalized: 3,
            dropped: 5,
        }
    );
}

#[test]
fn a_policy_path_no_field_matches_is_named_and_the_default_policy_has_none() {
    let writer = Schema::parse_str(AVSC).unwrap();
    let default = Policy::from_toml(POLICY).unwrap();
    assert_eq!(rules_without_field(&default, &writer), Vec::<String>::new());

    // The typo the issue found: every event then quarantined, and nothing said why.
    let typo = POLICY.replace("\"customer.email\"", "\"customer.emial\"");
    assert_ne!(
        typo, POLICY,
        "the default policy has a rule for customer.email"
    );
    let typo = Policy::from_toml(&typo).unwrap();
    assert_eq!(rules_without_field(&typo, &writer), ["customer.emial"]);

    // Through unions, arrays and references to a named record.
    let writer = record(json!([
        {"name": "home", "type": ["null", {"type": "record", "name": "Address", "fields": [
            {"name": "city", "type": "string"}]}]},
        {"name": "work", "type": "Address"},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item",
            "fields": [{"name": "sku", "type": "string"}]}}}
    ]));
    let nested = policy(
        r#"
"home.city" = "keep"
"work.city" = "keep"
"work.zip" = "keep"
"items[].sku" = "keep"
"items[].qty" = "keep"
"#,
    );
    assert_eq!(
        rules_without_field(&nested, &writer),
        ["items[].qty", "work.zip"]
    );
}

#[test]
fn a_field_without_a_rule_is_named() {
    let mut avsc: Value = serde_json::from_str(AVSC).unwrap();
    let customer = avsc["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "customer")
        .unwrap();
    customer["type"][1]["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "nickname", "type": ["null", "string"], "default": null }));
    let writer = Schema::parse(&avsc).unwrap();
    let policy = Policy::from_toml(POLICY).unwrap();
    let problems = check(&policy, &writer);
    assert_eq!(
        problems,
        [SchemaProblem::Unclassified {
            path: "customer.nickname".into()
        }]
    );
    let message = problems[0].to_string();
    assert!(
        message.starts_with("`customer.nickname`: no rule"),
        "{message}"
    );
    assert_eq!(derive(&policy, &writer).unwrap_err(), problems);
}

#[test]
fn every_leaf_of_an_unknown_record_is_named_in_schema_order() {
    let writer = record(json!([
        { "name": "id", "type": "string" },
        { "name": "extra", "type": ["null", { "type": "record", "name": "Extra", "fields": [
            { "name": "a", "type": "string" },
            { "name": "tags", "type": { "type": "array", "items": "string" } }
        ] }] },
        { "name": "z", "type": "long" }
    ]));
    let problems = check(&policy("id = \"keep\"\n\"other.x\" = \"keep\""), &writer);
    let paths: Vec<String> = problems
        .iter()
        .map(|p| match p {
            SchemaProblem::Unclassified { path } => path.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(paths, ["extra.a", "extra.tags[]", "z"]);
}

#[test]
fn a_token_on_a_record_is_refused() {
    let writer = record(json!([
        { "name": "customer", "type": ["null", { "type": "record", "name": "Customer", "fields": [
            { "name": "email", "type": "string" }
        ] }], "default": null }
    ]));
    let problems = check(
        &policy("customer = { action = \"token\", domain = \"customer\" }"),
        &writer,
    );
    assert_eq!(
        problems,
        [SchemaProblem::DoesNotFit {
            path: "customer".into(),
            action: "`token`".into(),
            found: "a record `Customer`".into(),
        }]
    );
    assert_eq!(
        problems[0].to_string(),
        "`customer`: a record `Customer` in the schema, but the policy says `token`"
    );
}

#[test]
fn round_on_a_string_is_refused_and_fits_numbers() {
    let writer = record(json!([
        { "name": "amount", "type": "string" },
        { "name": "cents", "type": "long" },
        { "name": "ratio", "type": ["null", "float"], "default": null },
        { "name": "half", "type": "int" }
    ]));
    let round = "{ action = \"generalize\", to = \"round\", step = 10 }";
    let problems = check(
        &policy(&format!(
            "amount = {round}\ncents = {round}\nratio = {round}\nhalf = {{ action = \"generalize\", to = \"round\", step = 0.5 }}"
        )),
        &writer,
    );
    assert_eq!(
        problems,
        [SchemaProblem::DoesNotFit {
            path: "amount".into(),
            action: "`generalize` to `round`".into(),
            found: "a string".into(),
        }]
    );
    let out = derived(
        &policy(&format!(
            "amount = \"drop\"\ncents = {round}\nratio = {round}\nhalf = {{ action = \"generalize\", to = \"round\", step = 0.5 }}"
        )),
        &writer,
    );
    // As `generalize::round` writes them: integers stay integral only with an integral step.
    assert_eq!(field(&out, "cents")["type"], "long");
    assert_eq!(field(&out, "ratio")["type"], json!(["null", "double"]));
    assert_eq!(field(&out, "half")["type"], "double");
}

#[test]
fn rules_take_the_types_the_record_path_takes() {
    let writer = record(json!([
        { "name": "s", "type": "string" },
        { "name": "n", "type": "long" },
        { "name": "f", "type": "double" },
        { "name": "b", "type": "boolean" },
        { "name": "e", "type": { "type": "enum", "name": "E", "symbols": ["x", "y"] } }
    ]));
    let fits = |rule: &str, field: &str| {
        let fields = ["s", "n", "f", "b", "e"]
            .iter()
            .map(|f| {
                if *f == field {
                    format!("{f} = {rule}")
                } else {
                    format!("{f} = \"drop\"")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        check(&policy(&fields), &writer).is_empty()
    };
    let token = "{ action = \"token\", domain = \"d\", normalizer = \"digits\" }";
    let year = "{ action = \"generalize\", to = \"year\" }";
    let prefix = "{ action = \"generalize\", to = \"prefix\", length = 2 }";
    let table = [
        (token, [true, true, false, false, true]),
        (
            "{ action = \"encrypt\", domain = \"d\" }",
            [true, true, false, false, true],
        ),
        (
            "{ action = \"mask\", keep_last = 2 }",
            [true, true, false, false, true],
        ),
        (year, [true, false, false, false, false]),
        (prefix, [true, true, false, false, true]),
        ("\"keep\"", [true, true, true, true, true]),
    ];
    for (rule, expected) in table {
        for (field, expected) in ["s", "n", "f", "b", "e"].iter().zip(expected) {
            assert_eq!(fits(rule, field), expected, "{rule} on {field}");
        }
    }
}

#[test]
fn dropped_fields_and_emptied_records_vanish() {
    let writer = record(json!([
        { "name": "id", "type": "string" },
        { "name": "customer", "type": ["null", { "type": "record", "name": "Customer", "fields": [
            { "name": "first_name", "type": "string" },
            { "name": "address", "type": { "type": "record", "name": "Address", "fields": [
                { "name": "street", "type": "string" }
            ] } }
        ] }], "default": null },
        { "name": "device", "type": { "type": "record", "name": "Device", "fields": [
            { "name": "ip", "type": "string" }
        ] } },
        { "name": "lines", "type": { "type": "array", "items": "string" } }
    ]));
    let policy = policy(
        "id = \"keep\"\n\"customer.first_name\" = \"drop\"\n\"customer.address.street\" = \"drop\"\ndevice = \"drop\"\n\"lines[]\" = \"drop\"",
    );
    let out = derived(&policy, &writer);
    assert_eq!(names(&out), ["id"]);
    assert_eq!(
        count(&policy, &writer).unwrap(),
        FieldCounts {
            kept: 1,
            dropped: 4,
            ..FieldCounts::default()
        }
    );
}

#[test]
fn nullable_fields_stay_nullable() {
    let writer = record(json!([
        { "name": "email", "type": ["null", "string"], "default": null },
        { "name": "phone", "type": ["string", "null"], "default": "none" },
        { "name": "card", "type": "string", "default": "0000" },
        { "name": "note", "type": ["string", "null"], "default": "-", "doc": "Free text." }
    ]));
    let policy = policy(
        "email = { action = \"token\", domain = \"email\", normalizer = \"email\" }\nphone = { action = \"encrypt\", domain = \"phone\" }\ncard = { action = \"mask\", keep_last = 4 }\nnote = \"keep\"",
    );
    let out = derived(&policy, &writer);
    let email = field(&out, "email");
    assert_eq!(email["type"], json!(["null", "string"]));
    assert_eq!(email["default"], Value::Null);
    assert!(email["doc"]
        .as_str()
        .unwrap()
        .starts_with("Token (TOKEN-SPEC v1) of the value in domain `email`, normalizer `email`"));
    let phone = field(&out, "phone");
    assert_eq!(phone["type"], json!(["null", "string"]));
    assert_eq!(
        phone["default"],
        Value::Null,
        "a ciphertext default cannot be written"
    );
    assert!(phone["doc"]
        .as_str()
        .unwrap()
        .contains("decryptable on-prem only"));
    let card = field(&out, "card");
    assert_eq!(card["type"], "string");
    assert!(card.get("default").is_none(), "the raw default would leak");
    assert!(card["doc"].as_str().unwrap().contains("last 4 characters"));
    // Kept as is: type, default and doc.
    assert_eq!(
        field(&out, "note"),
        &json!({ "name": "note", "type": ["string", "null"], "default": "-", "doc": "Free text." })
    );
}

#[test]
fn the_derived_schema_parses_and_renames_named_types() {
    let writer = Schema::parse_str(AVSC).unwrap();
    let policy = Policy::from_toml(POLICY).unwrap();
    let schema = derive(&policy, &writer).unwrap();
    let text = derive_text(&policy, &writer).unwrap();
    assert!(text.ends_with("}\n"));
    let parsed = Schema::parse_str(&text).expect("derive_text is a valid Avro schema");
    assert_eq!(parsed, schema);
    let Schema::Record(top) = &schema else {
        panic!("a record")
    };
    assert_eq!(
        top.name.fullname(None),
        "io.pseudopipe.pseudonymized.CouponRedemption"
    );
    assert!(top
        .doc
        .as_deref()
        .unwrap()
        .starts_with("Pseudonymized form of"));
    assert!(
        !text.contains("io.pseudopipe.raw\""),
        "no type stays in the raw namespace"
    );
    let names: Vec<&str> = top.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "event_time",
            "tenant",
            "retailer",
            "coupon",
            "basket",
            "customer",
            "device",
            "consent"
        ],
        "the writer's order"
    );
    // The enum of a kept field moved with its record.
    let json: Value = serde_json::from_str(&text).unwrap();
    let channel = field(&field(&json, "retailer")["type"], "channel");
    assert_eq!(channel["type"][1]["name"], "Channel");
    let resolved = apache_avro::schema::ResolvedSchema::try_from(&schema).unwrap();
    assert!(resolved
        .get_names()
        .keys()
        .any(|n| n.fullname(None) == "io.pseudopipe.pseudonymized.Channel"));
}

#[test]
fn other_namespaces_get_a_suffix() {
    let writer = Schema::parse(&json!({
        "type": "record", "name": "Sale", "namespace": "com.shop",
        "fields": [{ "name": "id", "type": "string" }]
    }))
    .unwrap();
    let out = derived(&policy("id = \"keep\""), &writer);
    assert_eq!(out["namespace"], "com.shop.pseudonymized");
}

#[test]
fn maps_can_only_be_dropped() {
    let writer = record(json!([
        { "name": "attributes", "type": { "type": "map", "values": "string" } }
    ]));
    let keep = check(&policy("attributes = \"keep\""), &writer);
    assert!(
        matches!(&keep[..], [SchemaProblem::DoesNotFit { path, found, .. }] if path == "attributes" && found == "a map"),
        "{keep:?}"
    );
    let nested = check(&policy("\"attributes.colour\" = \"keep\""), &writer);
    assert!(
        matches!(&nested[..], [SchemaProblem::Unsupported { path, .. }] if path == "attributes"),
        "{nested:?}"
    );
    let unclassified = check(&policy("other = \"keep\""), &writer);
    assert_eq!(
        unclassified,
        [SchemaProblem::Unclassified {
            path: "attributes".into()
        }]
    );
    let both = record(json!([
        { "name": "id", "type": "string" },
        { "name": "attributes", "type": { "type": "map", "values": "string" } }
    ]));
    assert_eq!(
        names(&derived(
            &policy("id = \"keep\"\nattributes = \"drop\""),
            &both
        )),
        ["id"]
    );
}

#[test]
fn unions_of_several_types_are_kept_as_is_or_refused() {
    let writer = record(json!([
        { "name": "code", "type": ["null", "string", "long"], "default": null }
    ]));
    let out = derived(&policy("code = \"keep\""), &writer);
    assert_eq!(
        field(&out, "code")["type"],
        json!(["null", "string", "long"])
    );
    let token = check(
        &policy("code = { action = \"token\", domain = \"coupon\" }"),
        &writer,
    );
    assert!(
        matches!(&token[..], [SchemaProblem::Unsupported { path, .. }] if path == "code"),
        "{token:?}"
    );
}

#[test]
fn a_recursive_record_can_only_be_dropped() {
    let writer = record(json!([
        { "name": "id", "type": "string" },
        { "name": "node", "type": { "type": "record", "name": "Node", "fields": [
            { "name": "label", "type": "string" },
            { "name": "next", "type": ["null", "Node"], "default": null }
        ] } }
    ]));
    let problems = check(
        &policy("id = \"keep\"\n\"node.label\" = \"keep\"\n\"node.next.label\" = \"keep\""),
        &writer,
    );
    assert!(
        matches!(&problems[..], [SchemaProblem::Unsupported { path, .. }] if path == "node.next"),
        "{problems:?}"
    );
    let dropped = policy("id = \"keep\"\n\"node.label\" = \"keep\"\n\"node.next\" = \"drop\"");
    let out = derived(&dropped, &writer);
    assert_eq!(names(&field(&out, "node")["type"]), ["label"]);
}

#[test]
fn a_record_type_used_twice_is_written_once_unless_the_policy_differs() {
    let writer = record(json!([
        { "name": "billing", "type": { "type": "record", "name": "Address", "fields": [
            { "name": "city", "type": "string" },
            { "name": "country", "type": { "type": "enum", "name": "Country", "symbols": ["FR", "DE"] } }
        ] } },
        { "name": "shipping", "type": "Address" }
    ]));
    let same = policy(
        "\"billing.city\" = \"drop\"\n\"billing.country\" = \"keep\"\n\"shipping.city\" = \"drop\"\n\"shipping.country\" = \"keep\"",
    );
    let out = derived(&same, &writer);
    assert_eq!(
        field(&out, "shipping")["type"],
        "io.pseudopipe.pseudonymized.Address"
    );
    let different = policy(
        "\"billing.city\" = \"drop\"\n\"billing.country\" = \"keep\"\n\"shipping.city\" = { action = \"generalize\", to = \"prefix\", length = 1 }\n\"shipping.country\" = \"keep\"",
    );
    let out = derived(&different, &writer);
    let shipping = &field(&out, "shipping")["type"];
    assert_eq!(shipping["name"], "Address_2");
    assert_eq!(
        field(shipping, "country")["type"],
        "io.pseudopipe.pseudonymized.Country"
    );
    derive(&different, &writer).expect("parses");
}

#[test]
fn rules_for_paths_the_schema_lacks_are_fine() {
    let writer = record(json!([{ "name": "id", "type": "string" }]));
    assert_eq!(
        check(
            &policy("id = \"keep\"\n\"customer.email\" = \"drop\""),
            &writer
        ),
        []
    );
}

#[test]
fn nested_rules_on_a_scalar_do_not_fit() {
    let writer = record(json!([
        { "name": "device", "type": "string" },
        { "name": "tags", "type": "string" }
    ]));
    let problems = check(
        &policy("\"device.ip\" = \"drop\"\n\"tags[]\" = \"keep\""),
        &writer,
    );
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "`device`: a string in the schema, but the policy says it has fields (`device.…`)",
            "`tags`: a string in the schema, but the policy says it is an array (`tags[]`)",
        ]
    );
}
