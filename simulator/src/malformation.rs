//! Broken payloads, each made so that exactly one check of the pseudonymizer fails and
//! its reason code is never in doubt.
//!
//! The pseudonymizer checks, in order: size, UTF-8, JSON syntax and depth, that the
//! document is an object, required fields, the tenant, then every field against its rule
//! (unknown field, type, value), stopping at the first failure. A malformation therefore
//! starts from a valid event and changes one thing, and only in a field whose rule looks
//! at it: a wrong type in a dropped field (`first_name`) is not an error, it is dropped.

use rand::Rng;

use crate::data::{
    UNKNOWN_ADDRESS, UNKNOWN_BASKET, UNKNOWN_CONSENT, UNKNOWN_COUPON, UNKNOWN_CUSTOMER,
    UNKNOWN_DEVICE, UNKNOWN_ITEM, UNKNOWN_RETAILER, UNKNOWN_ROOT,
};
use crate::event::{draw, Events, Field, Tamper, PAYLOAD_CAPACITY};
use crate::json::push_string;

/// The default `limits.max_event_bytes` of the policy (`schemas/coupon_redemption.policy.toml`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1_048_576;

/// Deeper than this, a payload is rejected as `too_deep` whatever the policy says: the JSON
/// reader's hard limit (serde_json's); the policy's `limits.max_depth` (default 32) is lower.
pub const MAX_JSON_DEPTH: usize = 128;

/// One way a payload is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformation {
    /// A valid event cut short at a character boundary (`{"event_id":"7f1c`).
    TruncatedJson,
    /// Invalid UTF-8 bytes inside a name, street or city string.
    InvalidUtf8,
    /// A JSON array: of the event, of two events, or empty.
    JsonArray,
    /// A JSON scalar: a number, `null`, `true`, a string, or the event encoded twice
    /// (a JSON string holding the event).
    JsonScalar,
    /// Nothing but nesting, 129 to 5,000 levels of `[` or `{"a":`, properly closed.
    DeepNesting,
    /// One member the policy does not list, at the top or in a nested object.
    UnknownField,
    /// One required field (`event_id`, `event_time`, `retailer.id`,
    /// `coupon.campaign_id`) missing or null, alone or with its parent object.
    MissingRequired,
    /// A float (`12.5`) in a tokenized field: card, e-mail, phone or coupon code.
    FloatInTokenField,
    /// A boolean in a tokenized field.
    BoolInTokenField,
    /// An object or an array where the rule takes a scalar: a kept, tokenized or
    /// generalized field.
    WrongTypeObject,
    /// A scalar, or an object instead of the `items` array, where the policy expects
    /// nested fields (`"customer": "Émilie Dupont"`).
    ScalarForObject,
    /// A `customer.birth_date` that is no date (`not a date`, `1987-02-30`, `12/04/1987`).
    InvalidDate,
    /// A `device.ip` that is no IP address (`999.1.1.1`, `fe80::1%eth0`).
    InvalidIp,
    /// A tenant outside `[a-z0-9_-]{1,64}` (`Brand A!`, empty, 65 characters) or not a string.
    InvalidTenant,
    /// A valid event followed by whitespace up to just over [`DEFAULT_MAX_EVENT_BYTES`].
    /// Not in [`Malformation::DEFAULT`]: Kafka refuses records over about 1 MB.
    TooLarge,
    /// A payload of zero bytes. Not in [`Malformation::DEFAULT`]: line-oriented inputs
    /// skip blank lines, and some producers treat an empty value as a tombstone.
    Empty,
}

impl Malformation {
    /// Every malformation.
    pub const ALL: [Malformation; 16] = [
        Self::TruncatedJson,
        Self::InvalidUtf8,
        Self::JsonArray,
        Self::JsonScalar,
        Self::DeepNesting,
        Self::UnknownField,
        Self::MissingRequired,
        Self::FloatInTokenField,
        Self::BoolInTokenField,
        Self::WrongTypeObject,
        Self::ScalarForObject,
        Self::InvalidDate,
        Self::InvalidIp,
        Self::InvalidTenant,
        Self::TooLarge,
        Self::Empty,
    ];

    /// The malformations a [`Generator`](crate::Generator) makes unless told otherwise:
    /// all but [`TooLarge`](Self::TooLarge) and [`Empty`](Self::Empty), so that every
    /// record can go through Kafka and through a JSON-lines file.
    pub const DEFAULT: [Malformation; 14] = [
        Self::TruncatedJson,
        Self::InvalidUtf8,
        Self::JsonArray,
        Self::JsonScalar,
        Self::DeepNesting,
        Self::UnknownField,
        Self::MissingRequired,
        Self::FloatInTokenField,
        Self::BoolInTokenField,
        Self::WrongTypeObject,
        Self::ScalarForObject,
        Self::InvalidDate,
        Self::InvalidIp,
        Self::InvalidTenant,
    ];

    /// The reason code the pseudonymizer must quarantine this payload with.
    pub fn expected_reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::TruncatedJson | Self::Empty => "malformed_json",
            Self::DeepNesting => "too_deep",
            Self::JsonArray | Self::JsonScalar => "not_an_object",
            Self::UnknownField => "unknown_field",
            Self::MissingRequired => "missing_field",
            Self::FloatInTokenField
            | Self::BoolInTokenField
            | Self::WrongTypeObject
            | Self::ScalarForObject => "wrong_type",
            Self::InvalidDate | Self::InvalidIp => "invalid_value",
            Self::InvalidTenant => "invalid_tenant",
        }
    }

    /// A snake_case name, for command lines and test messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TruncatedJson => "truncated_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::JsonArray => "json_array",
            Self::JsonScalar => "json_scalar",
            Self::DeepNesting => "deep_nesting",
            Self::UnknownField => "unknown_field",
            Self::MissingRequired => "missing_required",
            Self::FloatInTokenField => "float_in_token_field",
            Self::BoolInTokenField => "bool_in_token_field",
            Self::WrongTypeObject => "wrong_type_object",
            Self::ScalarForObject => "scalar_for_object",
            Self::InvalidDate => "invalid_date",
            Self::InvalidIp => "invalid_ip",
            Self::InvalidTenant => "invalid_tenant",
            Self::TooLarge => "too_large",
            Self::Empty => "empty",
        }
    }

    /// Parses a name written by [`Malformation::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The broken payload, drawn from `events`; those made from an event advance its clock.
    pub(crate) fn payload(self, events: &mut Events, tenant: &str) -> Vec<u8> {
        let rng = &mut events.rng;
        let tamper = match self {
            Self::TruncatedJson => {
                let mut payload = events.valid(tenant);
                // Any proper prefix of an object is invalid; cutting inside a character
                // would make it invalid UTF-8 instead.
                let mut cut = events.rng.gen_range(1..payload.len());
                while payload[cut] & 0xc0 == 0x80 {
                    cut -= 1;
                }
                payload.truncate(cut);
                return payload;
            }
            Self::JsonArray => {
                let shape = rng.gen_range(0..3);
                let mut payload = vec![b'['];
                if shape > 0 {
                    payload.extend_from_slice(&events.valid(tenant));
                }
                if shape > 1 {
                    payload.push(b',');
                    payload.extend_from_slice(&events.valid(tenant));
                }
                payload.push(b']');
                return payload;
            }
            Self::JsonScalar => {
                const SCALARS: [&str; 5] = ["42", "-3.5", "null", "true", "\"coupon_redemption\""];
                // One time in six, the event encoded twice: a JSON string holding it.
                let Some(scalar) = SCALARS.get(rng.gen_range(0..SCALARS.len() + 1)) else {
                    let event = events.valid(tenant);
                    let mut payload = Vec::with_capacity(event.len() + 64);
                    push_string(&mut payload, &event);
                    return payload;
                };
                return scalar.as_bytes().to_vec();
            }
            Self::DeepNesting => {
                let depth = rng.gen_range(MAX_JSON_DEPTH + 1..=5_000);
                return if rng.gen_bool(0.5) {
                    let mut payload = vec![b'['; depth];
                    payload.resize(2 * depth, b']');
                    payload
                } else {
                    let mut payload = br#"{"a":"#.repeat(depth - 1);
                    payload.extend_from_slice(b"{}");
                    payload.resize(payload.len() + depth - 1, b'}');
                    payload
                };
            }
            Self::TooLarge => {
                let mut payload = events.valid(tenant);
                let size = DEFAULT_MAX_EVENT_BYTES + 1 + events.rng.gen_range(0..1024);
                payload.resize(size, b' ');
                return payload;
            }
            Self::Empty => return Vec::new(),
            Self::InvalidUtf8 => {
                const BAD: &[&[u8]] = &[
                    b"\xff",
                    b"\xc3\x28",
                    b"\xe2\x82",
                    b"\xed\xa0\x80",
                    b"\xc0\xaf",
                    b"\x80",
                ];
                let field = draw(
                    rng,
                    &[
                        Field::FirstName,
                        Field::LastName,
                        Field::Street,
                        Field::City,
                    ],
                );
                Tamper::Corrupt(field, draw(rng, BAD))
            }
            Self::UnknownField => {
                let (parent, keys) = draw(
                    rng,
                    &[
                        (Field::Root, UNKNOWN_ROOT),
                        (Field::Retailer, UNKNOWN_RETAILER),
                        (Field::Coupon, UNKNOWN_COUPON),
                        (Field::Basket, UNKNOWN_BASKET),
                        (Field::Item, UNKNOWN_ITEM),
                        (Field::Customer, UNKNOWN_CUSTOMER),
                        (Field::Address, UNKNOWN_ADDRESS),
                        (Field::Device, UNKNOWN_DEVICE),
                        (Field::Consent, UNKNOWN_CONSENT),
                    ],
                );
                let value = draw(rng, &["\"Mimi\"", "2", "true", "null", "{\"x\":1}", "[]"]);
                Tamper::Extra(parent, draw(rng, keys), value)
            }
            Self::MissingRequired => {
                let field = draw(
                    rng,
                    &[
                        Field::EventId,
                        Field::EventTime,
                        Field::RetailerId,
                        Field::CampaignId,
                        Field::Retailer,
                        Field::Coupon,
                    ],
                );
                if rng.gen_bool(0.5) {
                    Tamper::Omit(field)
                } else {
                    Tamper::Replace(field, "null")
                }
            }
            Self::FloatInTokenField => Tamper::Replace(
                draw(rng, &TOKEN_FIELDS),
                draw(
                    rng,
                    &[
                        "12.5",
                        "6.280001234567890e15",
                        "33612345678.0",
                        "-0.5",
                        "1e3",
                    ],
                ),
            ),
            Self::BoolInTokenField => {
                Tamper::Replace(draw(rng, &TOKEN_FIELDS), draw(rng, &["true", "false"]))
            }
            Self::WrongTypeObject => {
                let (field, json) = draw(rng, WRONG_TYPE_OBJECTS);
                Tamper::Replace(field, json)
            }
            Self::ScalarForObject => {
                let (field, json) = draw(rng, SCALARS_FOR_OBJECTS);
                Tamper::Replace(field, json)
            }
            Self::InvalidDate => Tamper::Replace(
                Field::BirthDate,
                draw(
                    rng,
                    &[
                        "\"not a date\"",
                        "\"1987-02-30\"",
                        "\"12/04/1987\"",
                        "\"1987-13-01\"",
                        "\"31.12.1985\"",
                        "\"19870412\"",
                        "\"\"",
                    ],
                ),
            ),
            Self::InvalidIp => Tamper::Replace(
                Field::Ip,
                draw(
                    rng,
                    &[
                        "\"999.1.1.1\"",
                        "\"192.168.1\"",
                        "\"not-an-ip\"",
                        "\"2001:db8:::1\"",
                        "\"10.0.0.256\"",
                        "\"fe80::1%eth0\"",
                        "\"1.2.3.4.5\"",
                        "\"\"",
                    ],
                ),
            ),
            Self::InvalidTenant => Tamper::Replace(
                Field::Tenant,
                draw(
                    rng,
                    &[
                        "\"Brand A!\"",
                        "\"BRAND-A\"",
                        "\"brand a\"",
                        "\"\"",
                        "\"brand.a\"",
                        "\"marque-é\"",
                        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
                        "42",
                        "[\"brand-a\"]",
                        "{\"id\":\"brand-a\"}",
                        "true",
                    ],
                ),
            ),
        };
        let mut payload = Vec::with_capacity(PAYLOAD_CAPACITY);
        events.write(tenant, tamper, &mut payload);
        payload
    }
}

/// The tokenized fields: their rule takes a string or an integer, nothing else.
const TOKEN_FIELDS: [Field; 4] = [
    Field::LoyaltyCard,
    Field::Email,
    Field::Phone,
    Field::CouponCode,
];

/// Objects and arrays in fields whose rule (keep, token, generalize) takes a scalar.
const WRONG_TYPE_OBJECTS: &[(Field, &str)] = &[
    (Field::StoreId, r#"{"code":"FR-75011-042"}"#),
    (Field::Channel, r#"{"name":"in_store"}"#),
    (Field::FaceValue, r#"{"amount":150,"currency":"EUR"}"#),
    (Field::FaceValue, "[150]"),
    (Field::Currency, r#"{"iso":"EUR"}"#),
    (Field::TotalCents, r#"{"gross":4520,"net":4370}"#),
    (Field::Sku, r#"{"ean":"3017620422003"}"#),
    (Field::Quantity, "[1,2]"),
    (Field::Country, r#"{"iso2":"FR"}"#),
    (Field::Analytics, r#"{"granted":true}"#),
    (Field::LoyaltyCard, r#"{"number":"6280 0012 3456 7890"}"#),
    (Field::Email, r#"{"address":"emilie.dupont@example.fr"}"#),
    (Field::Phone, r#"["+33 6 12 34 56 78"]"#),
    (Field::CouponCode, r#"{"code":"SPR-8F3K-22QX"}"#),
    (Field::BirthDate, r#"{"year":1987,"month":4,"day":12}"#),
    (Field::PostalCode, r#"{"code":"75011"}"#),
    (Field::Ip, r#"{"v4":"192.0.2.44"}"#),
];

/// Scalars where the policy has nested fields, and an object where it has an array.
/// Never `retailer` or `coupon`: without them a required field is missing, which is
/// checked first.
const SCALARS_FOR_OBJECTS: &[(Field, &str)] = &[
    (Field::Customer, "\"Émilie Dupont\""),
    (Field::Customer, "\"6280 0012 3456 7890\""),
    (Field::Address, "\"12 rue de la Roquette, 75011 Paris\""),
    (Field::Device, "\"192.0.2.44\""),
    (Field::Consent, "true"),
    (Field::Consent, "\"granted\""),
    (Field::Basket, "4520"),
    (
        Field::Items,
        r#"{"sku":"3017620422003","quantity":1,"unit_price_cents":399}"#,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_default_leaves_out_what_kafka_or_files_refuse() {
        for malformation in Malformation::ALL {
            assert_eq!(
                Malformation::from_name(malformation.name()),
                Some(malformation)
            );
        }
        assert!(!Malformation::DEFAULT.contains(&Malformation::TooLarge));
        assert!(!Malformation::DEFAULT.contains(&Malformation::Empty));
        assert_eq!(Malformation::DEFAULT.len() + 2, Malformation::ALL.len());
    }

    #[test]
    fn deep_nesting_is_pure_and_balanced() {
        let mut events = Events::new(3);
        for _ in 0..40 {
            let payload = Malformation::DeepNesting.payload(&mut events, "brand-a");
            assert!(payload.iter().all(|b| b"[]{}\"a:".contains(b)));
            let opened = payload.iter().filter(|&&b| b == b'[' || b == b'{').count();
            let closed = payload.iter().filter(|&&b| b == b']' || b == b'}').count();
            assert_eq!(opened, closed);
            assert!(opened > MAX_JSON_DEPTH);
            let error = serde_json::from_slice::<serde_json::Value>(&payload).unwrap_err();
            assert!(
                error.to_string().starts_with("recursion limit exceeded"),
                "{error}"
            );
        }
    }

    #[test]
    fn truncated_json_is_valid_utf8_and_never_valid_json() {
        let mut events = Events::new(4);
        for _ in 0..500 {
            let payload = Malformation::TruncatedJson.payload(&mut events, "brand-a");
            assert!(std::str::from_utf8(&payload).is_ok());
            assert!(serde_json::from_slice::<serde_json::Value>(&payload).is_err());
        }
    }

    #[test]
    fn too_large_is_a_valid_event_padded_past_the_limit() {
        let mut events = Events::new(5);
        let payload = Malformation::TooLarge.payload(&mut events, "brand-a");
        assert!(payload.len() > DEFAULT_MAX_EVENT_BYTES);
        assert!(serde_json::from_slice::<serde_json::Value>(&payload).is_ok_and(|v| v.is_object()));
    }
}
