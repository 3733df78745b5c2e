//! Labelled values for measuring the content detectors of `pseudonymize::detect`:
//! [`NonPersonal`], the identifiers that sit in the kept fields of retail events and that
//! no detector may flag, and [`Personal`], values of every kind a detector must find.
//!
//! Both are endless, seeded streams that go round their classes in turn, so that every
//! class gets the same share of any prefix of the stream. Each [`Sample`] names its class,
//! so that a report can say which kind of identifier a detector mistook.
//!
//! ```
//! use simulator::corpus::{NonPersonal, Personal};
//!
//! let classes = NonPersonal::CLASSES.len();
//! let first: Vec<_> = NonPersonal::new(1).take(classes).collect();
//! assert!(first.iter().all(|sample| sample.detector.is_none()));
//! assert_eq!(first[0].class, NonPersonal::CLASSES[0]);
//! assert_eq!(NonPersonal::new(1).next(), first.first().cloned());
//!
//! let card = Personal::new(1).find(|sample| sample.class == "card_amex").unwrap();
//! assert_eq!(card.detector, Some("card"));
//! assert_eq!(card.value.chars().filter(char::is_ascii_digit).count(), 15);
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{days_from_civil, push_rfc3339_ms, DAY_MS};
use crate::data::{Name, CAMPAIGNS, COUNTRIES, ORIGINS};
use crate::event::{
    draw, fill, pick, postal_store_id, push_coupon_code, push_digits, push_email, push_gln,
    push_gs1_check, push_ip, push_product_code_of, push_user_agent, push_uuid_v4, ProductShape,
};
use crate::json::{push_padded, push_u64};

/// One generated value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// What the value is: `ean13`, `receipt`, `card_visa`, `phone_FR`...
    pub class: &'static str,
    /// The detector that must find a personal value (`card`, `phone`, `iban`, `email`,
    /// `ip`, the names of a policy's `allow` list); `None` for a non-personal one.
    pub detector: Option<&'static str>,
    /// The value, as a retail system would write it in a string field.
    pub value: String,
}

/// Seeded stream of non-personal values of the shapes found in kept fields of retail
/// events: product codes, receipt, order, terminal and coupon numbers, store ids,
/// campaign ids, amounts, timestamps, versions, builds, user agents and UUIDs.
pub struct NonPersonal {
    rng: StdRng,
    next: usize,
    buffer: Vec<u8>,
}

impl NonPersonal {
    /// The classes, in the order the stream goes round them.
    pub const CLASSES: [&'static str; 22] = [
        "ean13",
        "ean8",
        "upc12",
        "gtin14",
        "in_store",
        "internal13",
        "internal_short",
        "gln",
        "store_id",
        "campaign_id",
        "receipt",
        "order",
        "terminal",
        "coupon_serial",
        "amount",
        "timestamp",
        "app_version",
        "os_version",
        "build",
        "user_agent",
        "uuid",
        "epoch",
    ];

    /// The stream fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next: 0,
            buffer: Vec::with_capacity(256),
        }
    }

    fn write(&mut self, class: &str) {
        let (rng, out) = (&mut self.rng, &mut self.buffer);
        out.clear();
        match class {
            "ean13" => push_product_code_of(out, rng, ProductShape::Ean13),
            "ean8" => push_product_code_of(out, rng, ProductShape::Ean8),
            "upc12" => push_product_code_of(out, rng, ProductShape::Upc12),
            "gtin14" => push_product_code_of(out, rng, ProductShape::Gtin14),
            "in_store" => push_product_code_of(out, rng, ProductShape::InStore),
            "internal13" => push_product_code_of(out, rng, ProductShape::Internal13),
            "internal_short" => push_product_code_of(out, rng, ProductShape::InternalShort),
            "gln" => push_gln(out, rng),
            "store_id" => match rng.gen_range(0..3) {
                0 => {
                    let country = pick(rng, &COUNTRIES);
                    out.extend(postal_store_id(rng, country));
                }
                1 => push_padded(out, rng.gen_range(1..10_000), 4),
                _ => {
                    out.push(b'S');
                    push_padded(out, rng.gen_range(1..10_000), 4);
                }
            },
            "campaign_id" => {
                if rng.gen_bool(0.5) {
                    out.extend_from_slice(pick(rng, &CAMPAIGNS).id.as_bytes());
                } else {
                    out.extend_from_slice(b"CPN-2026-");
                    push_padded(out, rng.gen_range(0..1_000_000), 6);
                }
            }
            "receipt" => push_receipt(out, rng),
            "order" => push_order(out, rng),
            "terminal" => push_terminal(out, rng),
            "coupon_serial" => match rng.gen_range(0..3) {
                0 => {
                    let prefix = pick(rng, &CAMPAIGNS).code_prefix;
                    push_coupon_code(out, rng, prefix);
                }
                // A manufacturer's coupon as a UPC-A of number system 5.
                1 => {
                    out.push(b'5');
                    push_digits(out, rng, 10);
                    push_gs1_check(out, 0);
                }
                _ => {
                    out.extend_from_slice(b"99");
                    push_digits(out, rng, 10);
                }
            },
            "amount" => push_amount(out, rng),
            "timestamp" => push_timestamp(out, rng),
            "app_version" => push_version(out, rng),
            "os_version" => push_os_version(out, rng),
            "build" => push_build(out, rng),
            "user_agent" => {
                let channel = draw(rng, &["in_store", "e_shop", "app"]);
                push_user_agent(out, rng, channel);
            }
            "uuid" => push_uuid_v4(out, rng),
            _ => push_epoch(out, rng),
        }
    }
}

impl Iterator for NonPersonal {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        let class = Self::CLASSES[self.next % Self::CLASSES.len()];
        self.next += 1;
        self.write(class);
        Some(Sample {
            class,
            detector: None,
            value: String::from_utf8_lossy(&self.buffer).into_owned(),
        })
    }
}

/// A range of issuer identification numbers to draw a card from: the prefix between
/// `low` and `high` (of as many digits as `high` has), the lengths issued there.
struct Scheme {
    class: &'static str,
    ranges: &'static [(u64, u64)],
    lengths: &'static [usize],
}

/// The schemes' published ranges (see `pseudonymize::detect`), and the simulator's
/// loyalty cards.
const SCHEMES: [Scheme; 13] = [
    Scheme {
        class: "card_visa",
        ranges: &[(4, 4)],
        lengths: &[16, 19],
    },
    // Visa's 13-digit numbers, written in groups as they were printed.
    Scheme {
        class: "card_visa13",
        ranges: &[(4, 4)],
        lengths: &[13],
    },
    Scheme {
        class: "card_mastercard",
        ranges: &[(51, 55), (2221, 2720)],
        lengths: &[16],
    },
    Scheme {
        class: "card_amex",
        ranges: &[(34, 34), (37, 37)],
        lengths: &[15],
    },
    Scheme {
        class: "card_discover",
        ranges: &[(6011, 6011), (644, 649), (65, 65), (622_126, 622_925)],
        lengths: &[16, 17, 18, 19],
    },
    Scheme {
        class: "card_jcb",
        ranges: &[(3528, 3589)],
        lengths: &[16, 17, 18, 19],
    },
    // Diners Club International's 14 digits, written in groups as printed.
    Scheme {
        class: "card_diners14",
        ranges: &[(300, 305), (36, 36), (38, 39)],
        lengths: &[14],
    },
    Scheme {
        class: "card_diners16",
        ranges: &[(300, 305), (36, 36), (38, 39)],
        lengths: &[15, 16],
    },
    Scheme {
        class: "card_unionpay",
        ranges: &[(62, 62)],
        lengths: &[16, 17, 18, 19],
    },
    Scheme {
        class: "card_maestro",
        ranges: &[
            (5018, 5018),
            (5020, 5020),
            (5038, 5038),
            (5893, 5893),
            (6304, 6304),
            (6759, 6759),
            (6761, 6763),
        ],
        lengths: &[16, 17, 18, 19],
    },
    Scheme {
        class: "card_mir",
        ranges: &[(2200, 2204)],
        lengths: &[16, 17, 18, 19],
    },
    // The retailers' loyalty cards of the simulated events (MII 6, 16 digits).
    Scheme {
        class: "card_loyalty",
        ranges: &[
            (6010, 6010),
            (6020, 6020),
            (6280, 6281),
            (6290, 6290),
            (6330, 6360),
        ],
        lengths: &[16],
    },
    // Private-label and gift cards of MII 6 at 19 digits.
    Scheme {
        class: "card_gift",
        ranges: &[(600_000, 699_999)],
        lengths: &[19],
    },
];

/// Countries whose IBANs the corpus holds: code, then the BBAN as a template (`#` a
/// digit, `@` a capital letter).
const IBANS: [(&str, &str); 10] = [
    ("FR", "#######################"),
    ("DE", "##################"),
    ("GB", "@@@@##############"),
    ("ES", "####################"),
    ("NL", "@@@@##########"),
    ("PL", "########################"),
    ("IT", "@######################"),
    ("BE", "############"),
    ("CH", "#################"),
    ("PT", "#####################"),
];

/// Seeded stream of personal values: cards of every scheme with a valid Luhn digit, the
/// phone numbers of every simulated country in every format the simulator writes them,
/// IBANs of several countries, e-mail addresses, IPv4 and IPv6 addresses.
///
/// Two kinds of value are left out, because the detectors leave them alone by design
/// (`docs/detectors.md`): a national phone number written as a bare run of digits without
/// a trunk `0` (`612345678`: any identifier), and a card of 13 or 14 digits written bare
/// (the length of EAN-13 and GTIN-14 product codes).
pub struct Personal {
    rng: StdRng,
    next: usize,
    buffer: Vec<u8>,
}

impl Personal {
    /// The classes, in the order the stream goes round them.
    pub const CLASSES: [&'static str; 30] = [
        "card_visa",
        "card_visa13",
        "card_mastercard",
        "card_amex",
        "card_discover",
        "card_jcb",
        "card_diners14",
        "card_diners16",
        "card_unionpay",
        "card_maestro",
        "card_mir",
        "card_loyalty",
        "card_gift",
        "phone_FR",
        "phone_DE",
        "phone_GB",
        "phone_ES",
        "phone_PL",
        "phone_US",
        "phone_NL",
        "phone_CA",
        "iban_compact",
        "iban_grouped",
        "email",
        "email_in_text",
        "ipv4",
        "ipv6",
        "phone_in_text",
        "card_in_text",
        "iban_in_text",
    ];

    /// The stream fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next: 0,
            buffer: Vec::with_capacity(128),
        }
    }

    /// Writes a value of `class`; returns the detector that must find it.
    fn write(&mut self, class: &'static str) -> &'static str {
        let (rng, out) = (&mut self.rng, &mut self.buffer);
        out.clear();
        if let Some(country) = class.strip_prefix("phone_").and_then(country_index) {
            push_phone(out, rng, country);
            return "phone";
        }
        if let Some(scheme) = SCHEMES.iter().find(|scheme| scheme.class == class) {
            push_scheme_card(out, rng, scheme);
            return "card";
        }
        match class {
            "iban_compact" => push_iban(out, rng, false),
            "iban_grouped" => push_iban(out, rng, true),
            "email" | "email_in_text" => {
                if class == "email_in_text" {
                    out.extend_from_slice(b"please write to ");
                }
                let home = pick(rng, &COUNTRIES);
                let origin = pick(rng, &ORIGINS);
                let first: Name = draw(rng, origin.first);
                let last: Name = draw(rng, origin.last);
                let mut email = Vec::new();
                let birth_year = rng.gen_range(1940..2009);
                push_email(&mut email, rng, first.1, last.1, birth_year, home);
                out.extend_from_slice(&email);
                if class == "email_in_text" {
                    out.extend_from_slice(b" after 6pm.");
                }
                return "email";
            }
            "ipv4" | "ipv6" => {
                // The simulator's addresses: 15% IPv6; drawn until of the class's family.
                loop {
                    out.clear();
                    push_ip(out, rng);
                    if out.contains(&b':') == (class == "ipv6") {
                        break;
                    }
                }
                return "ip";
            }
            "phone_in_text" => {
                out.extend_from_slice(b"call me on ");
                let country = rng.gen_range(0..COUNTRIES.len());
                push_phone(out, rng, country);
                out.extend_from_slice(b", thanks");
                return "phone";
            }
            "card_in_text" => {
                out.extend_from_slice(b"paid with ");
                let scheme = pick(rng, &SCHEMES);
                push_scheme_card(out, rng, scheme);
                out.extend_from_slice(b" yesterday");
                return "card";
            }
            _ => {
                out.extend_from_slice(b"refund to ");
                let grouped = rng.gen_bool(0.5);
                push_iban(out, rng, grouped);
                out.push(b'.');
            }
        }
        "iban"
    }
}

impl Iterator for Personal {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        let class = Self::CLASSES[self.next % Self::CLASSES.len()];
        self.next += 1;
        let detector = self.write(class);
        Some(Sample {
            class,
            detector: Some(detector),
            value: String::from_utf8_lossy(&self.buffer).into_owned(),
        })
    }
}

fn country_index(code: &str) -> Option<usize> {
    COUNTRIES.iter().position(|country| country.code == code)
}

/// A phone number of `COUNTRIES[country]` from one of its templates, bare national
/// numbers without a trunk `0` left out (see [`Personal`]).
fn push_phone(out: &mut Vec<u8>, rng: &mut StdRng, country: usize) {
    let templates: Vec<&str> = COUNTRIES[country]
        .phones
        .iter()
        .copied()
        .filter(|template| {
            let bare = template.bytes().all(|b| b.is_ascii_digit() || b == b'#');
            !bare || template.starts_with('0')
        })
        .collect();
    let template = draw(rng, &templates);
    fill(out, rng, template);
}

/// A card of `scheme`: a prefix of one of its ranges, random digits, the Luhn digit; bare,
/// or in the groups cards are printed in.
fn push_scheme_card(out: &mut Vec<u8>, rng: &mut StdRng, scheme: &Scheme) {
    let (low, high) = draw(rng, scheme.ranges);
    let length = draw(rng, scheme.lengths);
    let mut digits = Vec::with_capacity(19);
    push_u64(&mut digits, rng.gen_range(low..=high));
    let random = length - 1 - digits.len();
    push_digits(&mut digits, rng, random);
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            // Doubling from the right, starting left of the check digit to come.
            let d = u32::from(b - b'0');
            match i % 2 {
                0 if d * 2 > 9 => d * 2 - 9,
                0 => d * 2,
                _ => d,
            }
        })
        .sum();
    digits.push(b'0' + ((10 - sum % 10) % 10) as u8);
    let groups: &[usize] = match length {
        13 => &[4, 3, 3, 3],
        14 => &[4, 6, 4],
        15 => &[4, 6, 5],
        _ => &[4, 4, 4, 4, 4],
    };
    // 13 and 14 digits only in groups: bare, they are product codes (see `Personal`).
    let separator = match rng.gen_range(0..10) {
        _ if length <= 14 => Some(draw(rng, b"  -")),
        0..=3 => None,
        4..=8 => Some(b' '),
        _ => Some(b'-'),
    };
    let mut rest = &digits[..];
    for (i, &group) in groups.iter().enumerate() {
        if rest.is_empty() {
            break;
        }
        if i > 0 {
            out.extend(separator);
        }
        let (head, tail) = rest.split_at(group.min(rest.len()));
        out.extend_from_slice(head);
        rest = tail;
    }
    out.extend_from_slice(rest);
}

/// An IBAN of one of [`IBANS`]' countries with valid check digits, compact or in groups
/// of four.
fn push_iban(out: &mut Vec<u8>, rng: &mut StdRng, grouped: bool) {
    let (country, template) = draw(rng, &IBANS);
    let mut bban = Vec::with_capacity(32);
    fill(&mut bban, rng, template);
    // ISO 13616: the BBAN, the country code and `00` as a number, mod 97.
    let remainder =
        bban.iter()
            .chain(country.as_bytes())
            .chain(b"00")
            .fold(0u32, |remainder, &b| {
                let value = if b.is_ascii_digit() {
                    u32::from(b - b'0')
                } else {
                    u32::from(b - b'A') + 10
                };
                if value >= 10 {
                    (remainder * 100 + value) % 97
                } else {
                    (remainder * 10 + value) % 97
                }
            });
    let mut iban = Vec::with_capacity(40);
    iban.extend_from_slice(country.as_bytes());
    push_padded(&mut iban, u64::from(98 - remainder), 2);
    iban.extend_from_slice(&bban);
    for (i, chunk) in iban.chunks(4).enumerate() {
        if grouped && i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(chunk);
    }
}

/// A receipt number: store, lane, date and sequence in one of the shapes tills print.
fn push_receipt(out: &mut Vec<u8>, rng: &mut StdRng) {
    let (store, lane, seq) = (
        rng.gen_range(1..10_000),
        rng.gen_range(1..40),
        rng.gen_range(1..10_000),
    );
    let day = rng.gen_range(1..=28);
    match rng.gen_range(0..4) {
        // `0042-03-261121-0123`
        0 => {
            push_padded(out, store, 4);
            out.push(b'-');
            push_padded(out, lane, 2);
            out.extend_from_slice(b"-2611");
            push_padded(out, day, 2);
            out.push(b'-');
            push_padded(out, seq, 4);
        }
        // `202611210042030123`: date, store, lane, sequence.
        1 => {
            out.extend_from_slice(b"202611");
            push_padded(out, day, 2);
            push_padded(out, store, 4);
            push_padded(out, lane, 2);
            push_padded(out, seq, 4);
        }
        // `R0042-000123`
        2 => {
            out.push(b'R');
            push_padded(out, store, 4);
            out.push(b'-');
            push_padded(out, seq, 6);
        }
        // `004203000123`: store, lane, sequence.
        _ => {
            push_padded(out, store, 4);
            push_padded(out, lane, 2);
            push_padded(out, seq, 6);
        }
    }
}

/// An order number of an e-shop or a marketplace.
fn push_order(out: &mut Vec<u8>, rng: &mut StdRng) {
    match rng.gen_range(0..5) {
        0 => {
            out.extend_from_slice(b"ORD-2026-");
            push_padded(out, rng.gen_range(0..1_000_000), 6);
        }
        1 => push_u64(out, rng.gen_range(1_000_000_000..10_000_000_000)),
        // `302-1234567-1234567`
        2 => {
            push_u64(out, rng.gen_range(100..1000));
            out.push(b'-');
            push_padded(out, rng.gen_range(0..10_000_000), 7);
            out.push(b'-');
            push_padded(out, rng.gen_range(0..10_000_000), 7);
        }
        3 => {
            out.push(b'#');
            push_u64(out, rng.gen_range(1001..1_000_000));
        }
        _ => {
            out.extend_from_slice(b"WEB");
            push_padded(out, rng.gen_range(0..100_000_000), 8);
        }
    }
}

/// A payment terminal or till: an id, or a serial number as vendors print them.
fn push_terminal(out: &mut Vec<u8>, rng: &mut StdRng) {
    match rng.gen_range(0..4) {
        0 => {
            out.extend_from_slice(b"POS-");
            push_padded(out, rng.gen_range(1..10_000), 4);
            out.push(b'-');
            push_padded(out, rng.gen_range(1..40), 2);
        }
        // An acquirer's terminal id: eight digits.
        1 => push_padded(out, rng.gen_range(0..100_000_000), 8),
        2 => {
            out.extend_from_slice(b"T");
            push_padded(out, rng.gen_range(1..10_000), 4);
            out.push(b'L');
            push_padded(out, rng.gen_range(1..40), 2);
        }
        // A serial number printed in groups of three, as some vendors do.
        _ => fill(out, rng, "SN-###-###-###"),
    }
}

/// Cents as an integer, or an amount as written in a currency.
fn push_amount(out: &mut Vec<u8>, rng: &mut StdRng) {
    let cents = rng.gen_range(1..10_000_000u64);
    match rng.gen_range(0..4) {
        0 => push_u64(out, cents),
        1 => {
            push_u64(out, cents / 100);
            out.push(b'.');
            push_padded(out, cents % 100, 2);
        }
        // `1 234,50`
        2 => {
            push_grouped_thousands(out, cents / 100, b' ');
            out.push(b',');
            push_padded(out, cents % 100, 2);
        }
        _ => {
            push_grouped_thousands(out, cents / 100, b',');
            out.push(b'.');
            push_padded(out, cents % 100, 2);
        }
    }
}

fn push_grouped_thousands(out: &mut Vec<u8>, value: u64, separator: u8) {
    if value >= 1000 {
        push_grouped_thousands(out, value / 1000, separator);
        out.push(separator);
        push_padded(out, value % 1000, 3);
    } else {
        push_u64(out, value);
    }
}

/// A time in November 2026, in one of the forms systems write.
fn push_timestamp(out: &mut Vec<u8>, rng: &mut StdRng) {
    let ms = days_from_civil(2026, 11, 1) * DAY_MS + rng.gen_range(0..30 * DAY_MS);
    let mut rfc = Vec::with_capacity(24);
    push_rfc3339_ms(&mut rfc, ms);
    match rng.gen_range(0..5) {
        0 => out.extend_from_slice(&rfc),
        // `2026-11-21T14:03:22+01:00`
        1 => {
            out.extend_from_slice(&rfc[..19]);
            out.extend_from_slice(b"+01:00");
        }
        // `2026-11-21 14:03:22`
        2 => {
            out.extend_from_slice(&rfc[..10]);
            out.push(b' ');
            out.extend_from_slice(&rfc[11..19]);
        }
        // `21/11/2026 14:03`
        3 => {
            out.extend_from_slice(&rfc[8..10]);
            out.push(b'/');
            out.extend_from_slice(&rfc[5..7]);
            out.push(b'/');
            out.extend_from_slice(&rfc[..4]);
            out.push(b' ');
            out.extend_from_slice(&rfc[11..16]);
        }
        // `20261121140322`
        _ => out.extend(rfc[..19].iter().filter(|b| b.is_ascii_digit())),
    }
}

/// Unix time in seconds, milliseconds or microseconds.
fn push_epoch(out: &mut Vec<u8>, rng: &mut StdRng) {
    let ms = days_from_civil(2026, 11, 1) * DAY_MS + rng.gen_range(0..30 * DAY_MS);
    let ms = u64::try_from(ms).unwrap_or(0);
    match rng.gen_range(0..3) {
        0 => push_u64(out, ms / 1000),
        1 => push_u64(out, ms),
        _ => push_u64(out, ms * 1000 + rng.gen_range(0..1000)),
    }
}

/// `4.12.1`, `5.2`, or four parts (`4.12.1.1507`).
fn push_version(out: &mut Vec<u8>, rng: &mut StdRng) {
    push_u64(out, rng.gen_range(0..30));
    out.push(b'.');
    push_u64(out, rng.gen_range(0..30));
    match rng.gen_range(0..3) {
        0 => {}
        1 => {
            out.push(b'.');
            push_u64(out, rng.gen_range(0..30));
        }
        _ => {
            out.push(b'.');
            push_u64(out, rng.gen_range(0..30));
            out.push(b'.');
            push_u64(out, rng.gen_range(0..3000));
        }
    }
}

/// `17.2.1`, `iOS 17.2.1`, `Android 14`, `10.0.22631.2861`.
fn push_os_version(out: &mut Vec<u8>, rng: &mut StdRng) {
    match rng.gen_range(0..4) {
        0 => {
            push_u64(out, rng.gen_range(15..19));
            out.push(b'.');
            push_u64(out, rng.gen_range(0..8));
            out.push(b'.');
            push_u64(out, rng.gen_range(0..4));
        }
        1 => {
            out.extend_from_slice(b"iOS ");
            push_u64(out, rng.gen_range(15..19));
            out.push(b'.');
            push_u64(out, rng.gen_range(0..8));
        }
        2 => {
            out.extend_from_slice(b"Android ");
            push_u64(out, rng.gen_range(10..16));
        }
        _ => {
            out.extend_from_slice(b"10.0.");
            push_u64(out, rng.gen_range(19_041..26_100));
            out.push(b'.');
            push_u64(out, rng.gen_range(1..5000));
        }
    }
}

/// `2024.11.3.1507`, `24B83`, `UP1A.231005.007`, `131.0.6778.86`.
fn push_build(out: &mut Vec<u8>, rng: &mut StdRng) {
    match rng.gen_range(0..4) {
        0 => {
            push_u64(out, rng.gen_range(2020..2027));
            out.push(b'.');
            push_u64(out, rng.gen_range(1..13));
            out.push(b'.');
            push_u64(out, rng.gen_range(1..29));
            out.push(b'.');
            push_u64(out, rng.gen_range(1..10_000));
        }
        1 => {
            let template = draw(rng, &["2#@##", "2#@###", "2#@####@"]);
            fill(out, rng, template);
        }
        2 => {
            out.extend_from_slice(draw(rng, &[&b"UP1A"[..], b"AP2A", b"TQ3A"]));
            fill(out, rng, ".2#####.0##");
        }
        _ => {
            push_u64(out, rng.gen_range(110..135));
            out.extend_from_slice(b".0.");
            push_u64(out, rng.gen_range(5000..7000));
            out.push(b'.');
            push_u64(out, rng.gen_range(1..300));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::RETAILERS;

    #[test]
    fn the_same_seed_gives_the_same_values_and_every_class_comes_in_turn() {
        let first: Vec<Sample> = NonPersonal::new(3).take(500).collect();
        assert_eq!(first, NonPersonal::new(3).take(500).collect::<Vec<_>>());
        for (i, sample) in first.iter().enumerate() {
            assert_eq!(
                sample.class,
                NonPersonal::CLASSES[i % NonPersonal::CLASSES.len()]
            );
            assert!(!sample.value.is_empty());
        }
        let personal: Vec<Sample> = Personal::new(3).take(300).collect();
        assert_eq!(personal, Personal::new(3).take(300).collect::<Vec<_>>());
        for (i, sample) in personal.iter().enumerate() {
            assert_eq!(sample.class, Personal::CLASSES[i % Personal::CLASSES.len()]);
        }
    }

    fn luhn(digits: &[u32]) -> bool {
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| match (i % 2 == 1, d * 2) {
                (true, doubled) if doubled > 9 => doubled - 9,
                (true, doubled) => doubled,
                (false, _) => d,
            })
            .sum();
        sum.is_multiple_of(10)
    }

    #[test]
    fn cards_pass_luhn_and_ibans_mod_97() {
        for sample in Personal::new(5).take(30_000) {
            let value = sample.value.as_str();
            if sample.class.starts_with("card_") && sample.class != "card_in_text" {
                let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
                assert!(luhn(&digits), "{value}");
                assert!((13..=19).contains(&digits.len()), "{value}");
            }
            if sample.class.starts_with("iban_") && sample.class != "iban_in_text" {
                let compact: String = value.chars().filter(|c| *c != ' ').collect();
                let moved = format!("{}{}", &compact[4..], &compact[..4]);
                let remainder = moved.chars().fold(0u32, |r, c| {
                    let v = c.to_digit(36).unwrap();
                    if v >= 10 {
                        (r * 100 + v) % 97
                    } else {
                        (r * 10 + v) % 97
                    }
                });
                assert_eq!(remainder, 1, "{value}");
            }
        }
    }

    #[test]
    fn product_codes_of_gs1_shapes_carry_their_check_digit() {
        for sample in NonPersonal::new(8).take(22 * 500) {
            let gs1 = ["ean13", "ean8", "upc12", "gtin14", "in_store", "gln"];
            if !gs1.contains(&sample.class) {
                continue;
            }
            let sum: u32 = sample
                .value
                .chars()
                .rev()
                .enumerate()
                .map(|(i, c)| c.to_digit(10).unwrap() * if i % 2 == 1 { 3 } else { 1 })
                .sum();
            assert_eq!(sum % 10, 0, "{sample:?}");
            let length = match sample.class {
                "ean8" => 8,
                "upc12" => 12,
                "gtin14" => 14,
                _ => 13,
            };
            assert_eq!(sample.value.len(), length, "{sample:?}");
        }
    }

    #[test]
    fn the_simulators_retailers_cards_are_in_the_loyalty_class() {
        let Scheme { ranges, .. } = &SCHEMES[11];
        for retailer in &RETAILERS {
            let prefix: u64 = retailer.card_prefix.parse().unwrap();
            assert!(ranges
                .iter()
                .any(|&(low, high)| (low..=high).contains(&prefix)));
        }
    }
}
