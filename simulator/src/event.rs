//! One nominative coupon-redemption event, drawn from the tables of `data` and written
//! straight into a payload buffer, in the field order of the example event.
//!
//! [`Events`] owns the random generator, the clock, a product catalogue and the stores of
//! every retailer, and reuses its scratch buffers from one event to the next. A [`Tamper`]
//! lets a malformation change exactly one field while the rest of the event stays valid.

use std::collections::HashMap;
use std::io::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{days_from_civil, days_in_month, push_date, push_rfc3339_ms, DAY_MS};
use crate::data::{
    Country, Name, Retailer, StoreStyle, StreetStyle, ANDROID_MODELS, CAMPAIGNS, COUNTRIES,
    COUPON_ALPHABET, EAN_PREFIXES, GLOBAL_PROVIDERS, IPHONE_MODELS, ORIGINS, RETAILERS,
};
use crate::json::{push_padded, push_u64, Json};

use crate::population::{self, Customer, Population, Zipf};

/// Products in the catalogue shared by all stores: the size of a supermarket's range, so
/// that a run sees many product codes of every shape, not a few hundred.
const CATALOGUE_SIZE: usize = 20_000;
/// Stores per retailer.
const STORES_PER_RETAILER: usize = 24;
/// Room for nearly every event (about 950 bytes on average), so a payload is allocated once.
pub(crate) const PAYLOAD_CAPACITY: usize = 1536;
/// Capital letters used in postal-code templates (`@`).
const POSTAL_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

/// A field of the event, as a target for a [`Tamper`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Root,
    EventId,
    EventTime,
    Tenant,
    Retailer,
    RetailerId,
    StoreId,
    Channel,
    Coupon,
    CampaignId,
    CouponCode,
    FaceValue,
    Currency,
    Basket,
    TotalCents,
    Items,
    /// The first element of `basket.items`.
    Item,
    /// `sku` of the first item.
    Sku,
    /// `quantity` of the first item.
    Quantity,
    UnitPrice,
    Customer,
    LoyaltyCard,
    FirstName,
    LastName,
    Email,
    Phone,
    BirthDate,
    Address,
    Street,
    PostalCode,
    City,
    Country,
    Device,
    Ip,
    UserAgent,
    Consent,
    Analytics,
    Marketing,
}

impl Field {
    /// The member's key, quoted and followed by `:`, so that it is written in one copy.
    fn quoted_key(self) -> &'static str {
        match self {
            Field::Root | Field::Item => "",
            Field::EventId => r#""event_id":"#,
            Field::EventTime => r#""event_time":"#,
            Field::Tenant => r#""tenant":"#,
            Field::Retailer => r#""retailer":"#,
            Field::RetailerId => r#""id":"#,
            Field::StoreId => r#""store_id":"#,
            Field::Channel => r#""channel":"#,
            Field::Coupon => r#""coupon":"#,
            Field::CampaignId => r#""campaign_id":"#,
            Field::CouponCode => r#""coupon_code":"#,
            Field::FaceValue => r#""face_value_cents":"#,
            Field::Currency => r#""currency":"#,
            Field::Basket => r#""basket":"#,
            Field::TotalCents => r#""total_cents":"#,
            Field::Items => r#""items":"#,
            Field::Sku => r#""sku":"#,
            Field::Quantity => r#""quantity":"#,
            Field::UnitPrice => r#""unit_price_cents":"#,
            Field::Customer => r#""customer":"#,
            Field::LoyaltyCard => r#""loyalty_card":"#,
            Field::FirstName => r#""first_name":"#,
            Field::LastName => r#""last_name":"#,
            Field::Email => r#""email":"#,
            Field::Phone => r#""phone":"#,
            Field::BirthDate => r#""birth_date":"#,
            Field::Address => r#""address":"#,
            Field::Street => r#""street":"#,
            Field::PostalCode => r#""postal_code":"#,
            Field::City => r#""city":"#,
            Field::Country => r#""country":"#,
            Field::Device => r#""device":"#,
            Field::Ip => r#""ip":"#,
            Field::UserAgent => r#""user_agent":"#,
            Field::Consent => r#""consent":"#,
            Field::Analytics => r#""analytics":"#,
            Field::Marketing => r#""marketing":"#,
        }
    }
}

/// One change to an otherwise valid event. A targeted optional field is always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tamper {
    /// The valid event.
    None,
    /// The field is left out.
    Omit(Field),
    /// The field holds this JSON text instead of its value.
    Replace(Field, &'static str),
    /// The object gets one more member, last: key and JSON text.
    Extra(Field, &'static str, &'static str),
    /// These bytes are appended inside the field's string.
    Corrupt(Field, &'static [u8]),
}

/// What the writer does with one field.
enum Slot {
    Omit,
    Replace(&'static str),
    Write,
}

impl Tamper {
    fn slot(&self, field: Field) -> Slot {
        match *self {
            Tamper::Omit(target) if target == field => Slot::Omit,
            Tamper::Replace(target, json) if target == field => Slot::Replace(json),
            _ => Slot::Write,
        }
    }

    fn corruption(&self, field: Field) -> &'static [u8] {
        match *self {
            Tamper::Corrupt(target, bytes) if target == field => bytes,
            _ => b"",
        }
    }

    fn extra(&self, field: Field) -> Option<(&'static str, &'static str)> {
        match *self {
            Tamper::Extra(target, key, json) if target == field => Some((key, json)),
            _ => None,
        }
    }

    /// Whether this tamper changes `field`, or adds a member to it.
    fn targets(&self, field: Field) -> bool {
        match *self {
            Tamper::None => false,
            Tamper::Omit(target)
            | Tamper::Replace(target, _)
            | Tamper::Extra(target, _, _)
            | Tamper::Corrupt(target, _) => target == field,
        }
    }
}

struct Product {
    sku: Vec<u8>,
    unit_price_cents: u64,
}

/// Buffers of the current event's generated values, reused across events.
#[derive(Default)]
struct Scratch {
    event_id: Vec<u8>,
    event_time: Vec<u8>,
    coupon_code: Vec<u8>,
    card: Vec<u8>,
    email: Vec<u8>,
    phone: Vec<u8>,
    birth_date: Vec<u8>,
    street: Vec<u8>,
    postal_code: Vec<u8>,
    ip: Vec<u8>,
    user_agent: Vec<u8>,
}

/// The source of events: random state, clock, catalogue and stores.
pub(crate) struct Events {
    /// Also drawn from by malformations, so that one seed fixes the whole stream.
    pub(crate) rng: StdRng,
    /// `event_time` of the last event, in Unix milliseconds.
    now_ms: i64,
    products: Vec<Product>,
    /// `retailer.store_id`s, per retailer.
    stores: Vec<Vec<Vec<u8>>>,
    /// Customers who come back, when set ([`Events::with_population`]): the seed and
    /// size, and each tenant's own customers, drawn at its first event. A new person per
    /// event otherwise.
    population: Option<(u64, usize, HashMap<String, Population>)>,
    scratch: Scratch,
}

impl Events {
    /// The catalogue, the stores and a clock early in November 2026, all from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let products = (0..CATALOGUE_SIZE).map(|_| product(&mut rng)).collect();
        let stores = RETAILERS
            .iter()
            .map(|retailer| {
                let country = &COUNTRIES[retailer.country];
                (0..STORES_PER_RETAILER)
                    .map(|_| store_id(&mut rng, country, retailer.store_style))
                    .collect()
            })
            .collect();
        let start = days_from_civil(2026, 11, 1) * DAY_MS + 6 * 3_600_000;
        let now_ms = start + rng.gen_range(0..3 * DAY_MS);
        Self {
            rng,
            now_ms,
            products,
            stores,
            population: None,
            scratch: Scratch::default(),
        }
    }

    /// From now on, every event is redeemed by one of `size` customers of its tenant,
    /// each tenant's drawn once from `seed` and its name (see [`crate::population`]).
    pub(crate) fn with_population(&mut self, seed: u64, size: usize) {
        // Another stream than the events': the population does not shift their draws.
        self.population = Some((seed ^ 0x9e37_79b9_7f4a_7c15, size, HashMap::new()));
    }

    /// `size` customers drawn from `seed`.
    fn population(seed: u64, size: usize) -> Population {
        let stores = Zipf::new(STORES_PER_RETAILER);
        let mut village = String::new();
        Population::new(seed, size, |rng| {
            let retailer_index = rng.gen_range(0..RETAILERS.len());
            let store = stores.sample(rng);
            let mut s = Scratch::default();
            let person = draw_person(
                rng,
                &RETAILERS[retailer_index],
                Tamper::None,
                Skew::Population(&mut village),
                &mut s,
            );
            push_ip(&mut s.ip, rng);
            Customer {
                retailer: retailer_index,
                store,
                home: person.home,
                first: person.first,
                last: person.last,
                city: person.city,
                card: s.card,
                email: s.email,
                phone: s.phone,
                birth_date: s.birth_date,
                street: s.street,
                postal_code: s.postal_code,
                ip: s.ip,
                has_email: person.has_email,
                has_phone: person.has_phone,
                birth: person.birth,
            }
        })
    }

    /// The `customer.loyalty_card` of the last event written.
    pub(crate) fn card(&self) -> &[u8] {
        &self.scratch.card
    }

    /// A valid event for `tenant`, in a fresh buffer.
    pub(crate) fn valid(&mut self, tenant: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_CAPACITY);
        self.write(tenant, Tamper::None, &mut out);
        out
    }

    /// Appends one event for `tenant` to `out`, changed by `tamper`.
    pub(crate) fn write(&mut self, tenant: &str, tamper: Tamper, out: &mut Vec<u8>) {
        let Self {
            rng,
            now_ms,
            products,
            stores,
            population,
            scratch: s,
        } = self;
        *now_ms += rng.gen_range(1..=800);

        // Who redeems what, where: drawn first, as the e-mail follows the names.
        push_uuid_v4(&mut s.event_id, rng);
        s.event_time.clear();
        push_rfc3339_ms(&mut s.event_time, *now_ms);
        let regular = population.as_mut().map(|(seed, size, tenants)| {
            if !tenants.contains_key(tenant) {
                // FNV-1a of the name: the same tenant, the same customers, on any build.
                let name = tenant.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                tenants.insert(tenant.to_owned(), Self::population(*seed ^ name, *size));
            }
            tenants[tenant].visitor(rng)
        });
        let retailer_index = match regular {
            Some(customer) => customer.retailer,
            None => rng.gen_range(0..RETAILERS.len()),
        };
        let retailer = &RETAILERS[retailer_index];
        let store = match regular {
            Some(customer) if rng.gen_bool(0.85) => &stores[retailer_index][customer.store],
            _ => pick(rng, &stores[retailer_index]),
        };
        let channel = match rng.gen_range(0..100) {
            0..=54 => "in_store",
            55..=79 => "e_shop",
            _ => "app",
        };
        let campaign = pick(rng, &CAMPAIGNS);
        let face_value = draw(rng, campaign.face_values);
        push_coupon_code(&mut s.coupon_code, rng, campaign.code_prefix);

        // Mostly one to three items, sometimes a full trolley.
        let count = 1 + rng.gen_range(0..8).min(rng.gen_range(0..8));
        let mut items = [(0usize, 0u64); 8];
        let mut total = 0;
        for item in &mut items[..count] {
            let product = rng.gen_range(0..products.len());
            let quantity = match rng.gen_range(0..100) {
                0..=69 => 1,
                70..=94 => rng.gen_range(2..=6),
                _ => draw(rng, &[8, 10, 12, 24]),
            };
            total += quantity * products[product].unit_price_cents;
            *item = (product, quantity);
        }

        let person = match regular {
            Some(customer) => customer.person(tamper, s),
            None => draw_person(rng, retailer, tamper, Skew::None, s),
        };
        let Person {
            home,
            first,
            last,
            city,
            has_email,
            has_phone,
            birth,
        } = person;

        // Points of sale seldom send a device; the e-shop and the app almost always do.
        let device_odds = if channel == "in_store" { 0.65 } else { 0.97 };
        let has_device = [Field::Device, Field::Ip, Field::UserAgent]
            .iter()
            .any(|&field| tamper.targets(field))
            || rng.gen_bool(device_odds);
        let has_user_agent = tamper.targets(Field::UserAgent) || rng.gen_bool(0.95);
        if has_device {
            match regular {
                Some(customer) => {
                    s.ip.clear();
                    s.ip.extend_from_slice(&customer.ip);
                }
                None => push_ip(&mut s.ip, rng),
            }
            push_user_agent(&mut s.user_agent, rng, channel);
        }
        let analytics = rng.gen_bool(0.8);
        let marketing = rng.gen_bool(0.45);

        let mut json = Json::new(out);
        let json = &mut json;
        json.begin_object();
        text(json, tamper, Field::EventId, &s.event_id);
        text(json, tamper, Field::EventTime, &s.event_time);
        text(json, tamper, Field::Tenant, tenant.as_bytes());
        if open(json, tamper, Field::Retailer) {
            text(json, tamper, Field::RetailerId, retailer.id.as_bytes());
            text(json, tamper, Field::StoreId, store);
            text(json, tamper, Field::Channel, channel.as_bytes());
            close(json, tamper, Field::Retailer);
        }
        if open(json, tamper, Field::Coupon) {
            text(json, tamper, Field::CampaignId, campaign.id.as_bytes());
            text(json, tamper, Field::CouponCode, &s.coupon_code);
            number(json, tamper, Field::FaceValue, face_value);
            text(json, tamper, Field::Currency, retailer.currency.as_bytes());
            close(json, tamper, Field::Coupon);
        }
        if open(json, tamper, Field::Basket) {
            number(json, tamper, Field::TotalCents, total);
            if member(json, tamper, Field::Items) {
                json.begin_array();
                for (i, &(product, quantity)) in items[..count].iter().enumerate() {
                    // Item tampers touch the first item only.
                    let tamper = if i == 0 { tamper } else { Tamper::None };
                    let product = &products[product];
                    json.begin_object();
                    text(json, tamper, Field::Sku, &product.sku);
                    number(json, tamper, Field::Quantity, quantity);
                    number(json, tamper, Field::UnitPrice, product.unit_price_cents);
                    close(json, tamper, Field::Item);
                }
                json.end_array();
            }
            close(json, tamper, Field::Basket);
        }
        if open(json, tamper, Field::Customer) {
            text(json, tamper, Field::LoyaltyCard, &s.card);
            text(json, tamper, Field::FirstName, first.0.as_bytes());
            text(json, tamper, Field::LastName, last.0.as_bytes());
            nullable(json, tamper, Field::Email, has_email.then_some(&s.email));
            nullable(json, tamper, Field::Phone, has_phone.then_some(&s.phone));
            if let Some(given) = birth {
                let value = given.then_some(&s.birth_date);
                nullable(json, tamper, Field::BirthDate, value);
            }
            if open(json, tamper, Field::Address) {
                text(json, tamper, Field::Street, &s.street);
                text(json, tamper, Field::PostalCode, &s.postal_code);
                text(json, tamper, Field::City, city.as_bytes());
                text(json, tamper, Field::Country, home.code.as_bytes());
                close(json, tamper, Field::Address);
            }
            close(json, tamper, Field::Customer);
        }
        if has_device && open(json, tamper, Field::Device) {
            text(json, tamper, Field::Ip, &s.ip);
            if has_user_agent {
                text(json, tamper, Field::UserAgent, &s.user_agent);
            }
            close(json, tamper, Field::Device);
        }
        if open(json, tamper, Field::Consent) {
            boolean(json, tamper, Field::Analytics, analytics);
            boolean(json, tamper, Field::Marketing, marketing);
            close(json, tamper, Field::Consent);
        }
        close(json, tamper, Field::Root);
    }
}

/// Who redeems, as an event shows them: drawn for the event, or a regular customer.
struct Person {
    home: &'static Country,
    first: Name,
    last: Name,
    city: &'static str,
    has_email: bool,
    has_phone: bool,
    /// Given, null (`Some(false)`) or absent.
    birth: Option<bool>,
}

/// How a person's age and home are drawn.
enum Skew<'a> {
    /// Uniform birth years from 1940 to 2008, uniform cities (the default stream).
    None,
    /// The pyramid and the cities and villages of [`crate::population`]; the village's
    /// postal-code template is written into the buffer.
    Population(&'a mut String),
}

/// Draws a person for `retailer`, writing their card, birth date, e-mail, phone, street
/// and postal code into `s`.
fn draw_person(
    rng: &mut StdRng,
    retailer: &Retailer,
    tamper: Tamper,
    skew: Skew<'_>,
    s: &mut Scratch,
) -> Person {
    let home = &COUNTRIES[if rng.gen_bool(0.85) {
        retailer.country
    } else {
        rng.gen_range(0..COUNTRIES.len())
    }];
    let origin = &ORIGINS[if rng.gen_bool(0.7) {
        draw(rng, home.origins)
    } else {
        rng.gen_range(0..ORIGINS.len())
    }];
    let first: Name = draw(rng, origin.first);
    let last: Name = draw(rng, origin.last);
    push_card(&mut s.card, rng, retailer.card_prefix);
    let birth_year = match skew {
        Skew::None => rng.gen_range(1940..=2008),
        Skew::Population(_) => population::birth_year(rng),
    };
    let birth_month = rng.gen_range(1..=12);
    let birth_day = rng.gen_range(1..=days_in_month(birth_year, birth_month));
    s.birth_date.clear();
    push_date(&mut s.birth_date, birth_year, birth_month, birth_day);
    push_email(&mut s.email, rng, first.1, last.1, birth_year, home);
    s.phone.clear();
    let phone_template = draw(rng, home.phones);
    fill(&mut s.phone, rng, phone_template);
    push_street(&mut s.street, rng, home);
    s.postal_code.clear();
    let city = match skew {
        Skew::None => {
            let (city, postal_template) = draw(rng, home.cities);
            fill(&mut s.postal_code, rng, postal_template);
            city
        }
        Skew::Population(template) => {
            let city = population::home_city(rng, home.cities, template);
            fill(&mut s.postal_code, rng, template);
            city
        }
    };
    let has_email = tamper.targets(Field::Email) || rng.gen_bool(0.96);
    let has_phone = tamper.targets(Field::Phone) || rng.gen_bool(0.9);
    // Birth dates: 94% given, 3% null, 3% absent.
    let birth = match rng.gen_range(0..100) {
        _ if tamper.targets(Field::BirthDate) => Some(true),
        0..=93 => Some(true),
        94..=96 => Some(false),
        _ => None,
    };
    Person {
        home,
        first,
        last,
        city,
        has_email,
        has_phone,
        birth,
    }
}

impl Customer {
    /// The customer as this event shows them, changed by `tamper`; their card, birth
    /// date, e-mail, phone, street and postal code copied into `s`.
    fn person(&self, tamper: Tamper, s: &mut Scratch) -> Person {
        for (to, from) in [
            (&mut s.card, &self.card),
            (&mut s.birth_date, &self.birth_date),
            (&mut s.email, &self.email),
            (&mut s.phone, &self.phone),
            (&mut s.street, &self.street),
            (&mut s.postal_code, &self.postal_code),
        ] {
            to.clear();
            to.extend_from_slice(from);
        }
        Person {
            home: self.home,
            first: self.first,
            last: self.last,
            city: self.city,
            has_email: tamper.targets(Field::Email) || self.has_email,
            has_phone: tamper.targets(Field::Phone) || self.has_phone,
            birth: if tamper.targets(Field::BirthDate) {
                Some(true)
            } else {
                self.birth
            },
        }
    }
}

/// Writes the key of `field` unless it is omitted or replaced (then writes the
/// replacement); returns whether the caller writes the value.
fn member(json: &mut Json<'_>, tamper: Tamper, field: Field) -> bool {
    match tamper.slot(field) {
        Slot::Omit => false,
        Slot::Replace(replacement) => {
            json.quoted_key(field.quoted_key());
            json.raw(replacement);
            false
        }
        Slot::Write => {
            json.quoted_key(field.quoted_key());
            true
        }
    }
}

fn text(json: &mut Json<'_>, tamper: Tamper, field: Field, value: &[u8]) {
    if member(json, tamper, field) {
        json.string_with(value, tamper.corruption(field));
    }
}

fn nullable(json: &mut Json<'_>, tamper: Tamper, field: Field, value: Option<&Vec<u8>>) {
    if member(json, tamper, field) {
        match value {
            Some(value) => json.string_with(value, tamper.corruption(field)),
            None => json.null(),
        }
    }
}

fn number(json: &mut Json<'_>, tamper: Tamper, field: Field, value: u64) {
    if member(json, tamper, field) {
        json.number(value);
    }
}

fn boolean(json: &mut Json<'_>, tamper: Tamper, field: Field, value: bool) {
    if member(json, tamper, field) {
        json.boolean(value);
    }
}

fn open(json: &mut Json<'_>, tamper: Tamper, field: Field) -> bool {
    let write = member(json, tamper, field);
    if write {
        json.begin_object();
    }
    write
}

/// Closes an object, adding the tamper's extra member first if it targets this object.
fn close(json: &mut Json<'_>, tamper: Tamper, field: Field) {
    if let Some((key, value)) = tamper.extra(field) {
        json.key(key);
        json.raw(value);
    }
    json.end_object();
}

/// One of `items`, uniformly.
pub(crate) fn pick<'t, T>(rng: &mut StdRng, items: &'t [T]) -> &'t T {
    &items[rng.gen_range(0..items.len())]
}

/// A copy of one of `items`, uniformly.
pub(crate) fn draw<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    *pick(rng, items)
}

/// Random decimal digits, eighteen from each number drawn: phone numbers and cards need
/// a dozen each, and one draw is much cheaper than twelve.
#[derive(Default)]
struct Digits {
    pool: u64,
    left: u32,
}

impl Digits {
    fn next(&mut self, rng: &mut StdRng) -> u8 {
        if self.left == 0 {
            self.pool = rng.gen_range(0..1_000_000_000_000_000_000);
            self.left = 18;
        }
        let digit = (self.pool % 10) as u8;
        self.pool /= 10;
        self.left -= 1;
        b'0' + digit
    }
}

/// Appends `template` with `#` replaced by random digits and `@` by random capitals.
pub(crate) fn fill(out: &mut Vec<u8>, rng: &mut StdRng, template: &str) {
    let mut digits = Digits::default();
    for &b in template.as_bytes() {
        out.push(match b {
            b'#' => digits.next(rng),
            b'@' => draw(rng, POSTAL_LETTERS),
            other => other,
        });
    }
}

/// A product with a price and a code of one of the shapes retailers send (see
/// [`push_product_code`]).
fn product(rng: &mut StdRng) -> Product {
    let mut sku = Vec::with_capacity(14);
    push_product_code(&mut sku, rng);
    let unit_price_cents = match rng.gen_range(0..10) {
        0..=5 => rng.gen_range(49..500),
        6..=8 => rng.gen_range(500..2000),
        _ => rng.gen_range(2000..9000),
    };
    Product {
        sku,
        unit_price_cents,
    }
}

/// The product code shapes of a retail catalogue, in percent: GS1 codes with their check
/// digit, the in-store codes of the restricted prefixes 20–29, and retailers' internal
/// codes, which have no check digit at all (issue 18: a retailer whose SKUs are 13-digit
/// internal codes).
const PRODUCT_SHAPES: [(ProductShape, u32); 7] = [
    (ProductShape::Ean13, 40),
    (ProductShape::Ean8, 5),
    (ProductShape::Upc12, 10),
    (ProductShape::Gtin14, 5),
    (ProductShape::InStore, 10),
    (ProductShape::Internal13, 22),
    (ProductShape::InternalShort, 8),
];

/// One shape of product code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProductShape {
    /// EAN-13: a GS1 prefix of the catalogue's countries, item reference, check digit.
    Ean13,
    /// EAN-8: a GS1 prefix, item reference, check digit.
    Ean8,
    /// UPC-A (GTIN-12), most with the number system digit 0.
    Upc12,
    /// GTIN-14: a packaging indicator, an EAN-13's digits, check digit.
    Gtin14,
    /// EAN-13 of the restricted prefixes 20–29: in-store and variable-measure codes.
    InStore,
    /// Thirteen digits without any check digit: a retailer's own numbering.
    Internal13,
    /// A short internal code: an article number of 4 to 8 digits, or letters and digits.
    InternalShort,
}

/// Appends a product code of a shape drawn with the weights of [`PRODUCT_SHAPES`].
pub(crate) fn push_product_code(out: &mut Vec<u8>, rng: &mut StdRng) {
    let total = PRODUCT_SHAPES.iter().map(|&(_, weight)| weight).sum();
    let mut draw = rng.gen_range(0..total);
    let shape = PRODUCT_SHAPES
        .iter()
        .find(|&&(_, weight)| {
            let found = draw < weight;
            draw = draw.saturating_sub(weight);
            found
        })
        .map_or(ProductShape::Ean13, |&(shape, _)| shape);
    push_product_code_of(out, rng, shape);
}

/// Appends a product code of `shape`.
pub(crate) fn push_product_code_of(out: &mut Vec<u8>, rng: &mut StdRng, shape: ProductShape) {
    let start = out.len();
    match shape {
        ProductShape::Ean13 => {
            out.extend_from_slice(pick(rng, EAN_PREFIXES).as_bytes());
            push_digits(out, rng, 12 - (out.len() - start));
            push_gs1_check(out, start);
        }
        ProductShape::Ean8 => {
            out.extend_from_slice(pick(rng, EAN_PREFIXES).as_bytes());
            push_digits(out, rng, 7 - (out.len() - start));
            push_gs1_check(out, start);
        }
        ProductShape::Upc12 => {
            out.push(draw(rng, b"0000000178"));
            push_digits(out, rng, 10);
            push_gs1_check(out, start);
        }
        ProductShape::Gtin14 => {
            out.push(b'1' + rng.gen_range(0..8u8));
            out.extend_from_slice(pick(rng, EAN_PREFIXES).as_bytes());
            push_digits(out, rng, 13 - (out.len() - start));
            push_gs1_check(out, start);
        }
        ProductShape::InStore => {
            out.push(b'2');
            push_digits(out, rng, 11);
            push_gs1_check(out, start);
        }
        ProductShape::Internal13 => push_digits(out, rng, 13),
        ProductShape::InternalShort => match rng.gen_range(0..4) {
            0 => {
                let width = rng.gen_range(4..=8);
                push_digits(out, rng, width);
            }
            1 => {
                out.extend_from_slice(draw(rng, &[&b"ART-"[..], b"MDSE", b"SKU-", b"P"]));
                let width = rng.gen_range(4..=7);
                push_digits(out, rng, width);
            }
            2 => {
                let width = rng.gen_range(4..=6);
                push_digits(out, rng, width);
                out.push(b'-');
                out.extend_from_slice(draw(rng, &[&b"XS"[..], b"M", b"XL", b"42", b"500G"]));
            }
            _ => {
                for _ in 0..rng.gen_range(2..=3) {
                    out.push(draw(rng, POSTAL_LETTERS));
                }
                let width = rng.gen_range(3..=6);
                push_digits(out, rng, width);
            }
        },
    }
}

/// Appends `count` random digits.
pub(crate) fn push_digits(out: &mut Vec<u8>, rng: &mut StdRng, count: usize) {
    let mut digits = Digits::default();
    for _ in 0..count {
        out.push(digits.next(rng));
    }
}

/// Appends the GS1 check digit of the digits from `start` on: from the right, weights 3,
/// 1, 3...
pub(crate) fn push_gs1_check(out: &mut Vec<u8>, start: usize) {
    let weighted: u32 = out[start..]
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    out.push(b'0' + ((10 - weighted % 10) % 10) as u8);
}

/// A store id in the retailer's own style.
fn store_id(rng: &mut StdRng, country: &Country, style: StoreStyle) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    match style {
        StoreStyle::Postal => return postal_store_id(rng, country),
        StoreStyle::Gln => {
            // A GS1 Global Location Number: the retailer's company prefix, the location.
            push_gln(&mut id, rng);
        }
        StoreStyle::Number => push_padded(&mut id, rng.gen_range(1..2000), 4),
        StoreStyle::Letter => {
            id.push(b'S');
            push_padded(&mut id, rng.gen_range(1..1000), 4);
        }
    }
    id
}

/// A GS1 Global Location Number.
pub(crate) fn push_gln(out: &mut Vec<u8>, rng: &mut StdRng) {
    let start = out.len();
    out.extend_from_slice(pick(rng, EAN_PREFIXES).as_bytes());
    push_digits(out, rng, 12 - (out.len() - start));
    push_gs1_check(out, start);
}

/// `FR-75011-042`: country, the store's postal code, store number.
pub(crate) fn postal_store_id(rng: &mut StdRng, country: &Country) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(country.code.as_bytes());
    id.push(b'-');
    let (_, template) = draw(rng, country.cities);
    let mut postal_code = Vec::with_capacity(template.len());
    fill(&mut postal_code, rng, template);
    id.extend(postal_code.iter().filter(|b| b.is_ascii_alphanumeric()));
    id.push(b'-');
    push_padded(&mut id, rng.gen_range(1..200), 3);
    id
}

/// A version-4, variant-1 UUID from 122 random bits, in lowercase hex.
pub(crate) fn push_uuid_v4(out: &mut Vec<u8>, rng: &mut StdRng) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = rng.gen::<u128>().to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    out.clear();
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// `SPR-8F3K-22QX`.
pub(crate) fn push_coupon_code(out: &mut Vec<u8>, rng: &mut StdRng, prefix: &str) {
    out.clear();
    out.extend_from_slice(prefix.as_bytes());
    // Eight characters of a 32-letter alphabet: five bits each from one draw.
    let bits: u64 = rng.gen();
    for i in 0..8 {
        if i % 4 == 0 {
            out.push(b'-');
        }
        out.push(COUPON_ALPHABET[((bits >> (5 * i)) & 31) as usize]);
    }
}

/// Sixteen digits with a Luhn check digit, grouped by four with spaces (most cards),
/// without separators, or with dashes.
fn push_card(out: &mut Vec<u8>, rng: &mut StdRng, prefix: &str) {
    let mut digits = [0u8; 16];
    digits[..4].copy_from_slice(prefix.as_bytes());
    let mut random = Digits::default();
    for d in &mut digits[4..15] {
        *d = random.next(rng);
    }
    // Doubling every second digit from the right, starting left of the check digit.
    let sum: u32 = digits[..15]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            match i % 2 {
                0 if d * 2 > 9 => d * 2 - 9,
                0 => d * 2,
                _ => d,
            }
        })
        .sum();
    digits[15] = b'0' + ((10 - sum % 10) % 10) as u8;
    let separator = match rng.gen_range(0..100) {
        0..=59 => Some(b' '),
        60..=94 => None,
        _ => Some(b'-'),
    };
    out.clear();
    for (i, chunk) in digits.chunks(4).enumerate() {
        if i > 0 {
            out.extend(separator);
        }
        out.extend_from_slice(chunk);
    }
}

/// An address derived from the names, as people type them: odd case, several patterns,
/// local and global providers, now and then a stray space around it.
pub(crate) fn push_email(
    out: &mut Vec<u8>,
    rng: &mut StdRng,
    first: &str,
    last: &str,
    birth_year: i64,
    home: &Country,
) {
    out.clear();
    let spaces = rng.gen_range(0..100);
    if spaces < 3 {
        out.push(b' ');
    }
    let start = out.len();
    match rng.gen_range(0..8) {
        0 | 1 => {
            out.extend_from_slice(first.as_bytes());
            out.push(b'.');
            out.extend_from_slice(last.as_bytes());
        }
        2 => {
            out.extend_from_slice(first.as_bytes());
            out.extend_from_slice(last.as_bytes());
        }
        3 => {
            out.push(first.as_bytes()[0]);
            out.push(b'.');
            out.extend_from_slice(last.as_bytes());
        }
        4 => {
            out.extend_from_slice(first.as_bytes());
            out.push(b'.');
            out.extend_from_slice(last.as_bytes());
            push_padded(out, rng.gen_range(1..100), 2);
        }
        5 => {
            out.extend_from_slice(last.as_bytes());
            out.push(b'.');
            out.extend_from_slice(first.as_bytes());
        }
        6 => {
            out.extend_from_slice(first.as_bytes());
            out.push(b'_');
            out.extend_from_slice(last.as_bytes());
            push_padded(out, birth_year.rem_euclid(100) as u64, 2);
        }
        _ => {
            out.extend_from_slice(first.as_bytes());
            push_u64(out, rng.gen_range(1..1000));
        }
    }
    let at = out.len();
    out.push(b'@');
    let provider = if rng.gen_bool(0.5) {
        pick(rng, GLOBAL_PROVIDERS)
    } else {
        pick(rng, home.providers)
    };
    out.extend_from_slice(provider.as_bytes());
    match rng.gen_range(0..100) {
        0..=69 => {}
        70..=84 => capitalize_words(&mut out[start..at]),
        85..=91 => {
            capitalize_words(&mut out[start..at]);
            // `Example.FR`: a capital domain and an upper-case top-level domain.
            out[at + 1] = out[at + 1].to_ascii_uppercase();
            let tld = out.iter().rposition(|&b| b == b'.').unwrap_or(at) + 1;
            out[tld..].make_ascii_uppercase();
        }
        _ => out[start..].make_ascii_uppercase(),
    }
    if (2..5).contains(&spaces) {
        out.push(b' ');
    }
}

/// Upper-cases the first letter of each part of `Emilie.Dupont`, `jean-baptiste_x`.
fn capitalize_words(text: &mut [u8]) {
    let mut at_start = true;
    for b in text {
        if at_start {
            b.make_ascii_uppercase();
        }
        at_start = matches!(*b, b'.' | b'_' | b'-');
    }
}

fn push_street(out: &mut Vec<u8>, rng: &mut StdRng, home: &Country) {
    out.clear();
    let street = pick(rng, home.streets).as_bytes();
    let number = if rng.gen_bool(0.7) {
        rng.gen_range(1..40)
    } else {
        rng.gen_range(1..200)
    };
    match home.street_style {
        StreetStyle::French => {
            push_u64(out, number);
            match rng.gen_range(0..100) {
                0..=4 => out.extend_from_slice(b" bis"),
                5..=6 => out.extend_from_slice(b" ter"),
                _ => {}
            }
            out.push(b' ');
            out.extend_from_slice(street);
        }
        StreetStyle::German => {
            out.extend_from_slice(street);
            out.push(b' ');
            push_u64(out, number);
            if rng.gen_bool(0.1) {
                out.push(draw(rng, b"abc"));
            }
        }
        StreetStyle::British => {
            if rng.gen_bool(0.2) {
                out.extend_from_slice(b"Flat ");
                push_u64(out, rng.gen_range(1..30));
                out.extend_from_slice(b", ");
            }
            push_u64(out, number);
            out.push(b' ');
            out.extend_from_slice(street);
        }
        StreetStyle::Spanish => {
            out.extend_from_slice(street);
            out.extend_from_slice(b", ");
            push_u64(out, number);
            if rng.gen_bool(0.5) {
                out.extend_from_slice(b", ");
                push_u64(out, rng.gen_range(1..10));
                out.extend_from_slice("º ".as_bytes());
                out.push(draw(rng, b"ABCD"));
            }
        }
        StreetStyle::Polish => {
            out.extend_from_slice(street);
            out.push(b' ');
            push_u64(out, number);
            if rng.gen_bool(0.5) {
                out.push(b'/');
                push_u64(out, rng.gen_range(1..120));
            }
        }
        StreetStyle::American => {
            push_u64(out, number * rng.gen_range(1..60));
            out.push(b' ');
            out.extend_from_slice(street);
            if rng.gen_bool(0.25) {
                out.extend_from_slice(b" Apt ");
                push_u64(out, rng.gen_range(1..30));
                out.push(draw(rng, b"ABCD"));
            }
        }
        StreetStyle::Dutch => {
            out.extend_from_slice(street);
            out.push(b' ');
            push_u64(out, number);
            if rng.gen_bool(0.2) {
                out.push(b'-');
                push_u64(out, rng.gen_range(1..5));
            }
        }
        StreetStyle::Quebec => {
            push_u64(out, number * rng.gen_range(1..120));
            out.push(b' ');
            out.extend_from_slice(street);
            if rng.gen_bool(0.3) {
                out.extend_from_slice(b", app. ");
                push_u64(out, rng.gen_range(1..40));
            }
        }
    }
}

/// Mostly public IPv4 (never a network or broadcast address), sometimes a documentation
/// range, 15% IPv6 from a few access providers, full or with `::`.
pub(crate) fn push_ip(out: &mut Vec<u8>, rng: &mut StdRng) {
    const V6_PREFIXES: &[&str] = &[
        "2a01:cb1d",
        "2a02:8108",
        "2a00:23c7",
        "2600:1700",
        "2001:db8",
    ];
    out.clear();
    if rng.gen_bool(0.15) {
        out.extend_from_slice(pick(rng, V6_PREFIXES).as_bytes());
        let compressed = rng.gen_bool(0.3);
        for group in 2..8 {
            if compressed && (3..6).contains(&group) {
                if group == 3 {
                    out.push(b':');
                }
                continue;
            }
            out.push(b':');
            push_hex(out, rng.gen_range(1..=0xffff));
        }
        return;
    }
    if rng.gen_bool(0.1) {
        out.extend_from_slice(pick(rng, &["192.0.2.", "198.51.100.", "203.0.113."]).as_bytes());
    } else {
        let first = loop {
            let octet = rng.gen_range(2..224);
            if !matches!(octet, 10 | 100 | 127 | 169 | 172 | 192) {
                break octet;
            }
        };
        push_u64(out, first);
        out.push(b'.');
        push_u64(out, rng.gen_range(0..256));
        out.push(b'.');
        push_u64(out, rng.gen_range(0..256));
        out.push(b'.');
    }
    push_u64(out, rng.gen_range(1..255));
}

/// Lowercase hex without leading zeros.
fn push_hex(out: &mut Vec<u8>, value: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let nibble = usize::from((value >> shift) & 0xf);
        if nibble != 0 || started || shift == 0 {
            out.push(HEX[nibble]);
            started = true;
        }
    }
}

/// The loyalty app on phones at the till and in the app, browsers on the e-shop.
pub(crate) fn push_user_agent(out: &mut Vec<u8>, rng: &mut StdRng, channel: &str) {
    out.clear();
    let written = if channel == "e_shop" || rng.gen_bool(0.1) {
        let chrome = rng.gen_range(120..132);
        match rng.gen_range(0..6) {
            0 => write!(
                out,
                "Mozilla/5.0 (Linux; Android {}; {}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.{}.{} Mobile Safari/537.36",
                rng.gen_range(13..16),
                pick(rng, ANDROID_MODELS),
                rng.gen_range(6000..7000),
                rng.gen_range(10..200),
            ),
            1 => {
                let ios = rng.gen_range(16..19);
                let minor = rng.gen_range(0..7);
                write!(
                    out,
                    "Mozilla/5.0 (iPhone; CPU iPhone OS {ios}_{minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{ios}.{minor} Mobile/15E148 Safari/604.1"
                )
            }
            2 => write!(
                out,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36"
            ),
            3 => write!(
                out,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36 Edg/{chrome}.0.{}.{}",
                rng.gen_range(2000..3000),
                rng.gen_range(10..100),
            ),
            4 => write!(
                out,
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{} Safari/605.1.15",
                rng.gen_range(0..7),
            ),
            _ => {
                let firefox = rng.gen_range(115..134);
                write!(
                    out,
                    "Mozilla/5.0 (X11; Linux x86_64; rv:{firefox}.0) Gecko/20100101 Firefox/{firefox}.0"
                )
            }
        }
    } else {
        let (major, minor) = (5, rng.gen_range(0..10));
        match rng.gen_range(0..4) {
            // Newer builds name their build and the full OS version.
            3 => write!(
                out,
                "LoyaltyApp/{}.{}.{} (build 2026.{}.{}.{}; iOS {}.{}.{})",
                rng.gen_range(4..6),
                rng.gen_range(0..13),
                rng.gen_range(0..10),
                rng.gen_range(1..12),
                rng.gen_range(1..29),
                rng.gen_range(1000..2000),
                rng.gen_range(17..19),
                rng.gen_range(0..7),
                rng.gen_range(0..4),
            ),
            0 => write!(
                out,
                "Mozilla/5.0 (Linux; Android {}) LoyaltyApp/{major}.{minor}",
                rng.gen_range(13..16),
            ),
            1 => write!(
                out,
                "LoyaltyApp/{major}.{minor}.{} (iPhone; iOS {}.{}; {}; Scale/3.00)",
                rng.gen_range(0..10),
                rng.gen_range(17..19),
                rng.gen_range(0..6),
                pick(rng, IPHONE_MODELS),
            ),
            _ => write!(
                out,
                "LoyaltyApp/{major}.{minor} (Android {}; {})",
                rng.gen_range(13..16),
                pick(rng, ANDROID_MODELS),
            ),
        }
    };
    written.expect("writing into a Vec cannot fail");
}
