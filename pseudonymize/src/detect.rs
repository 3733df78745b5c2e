//! Content detectors: whether a value the policy keeps looks like personal data (an e-mail
//! address, a phone number, a payment card number, an IBAN, an IP address).
//!
//! The schema says what a field is; these catch the human error no schema check sees: a
//! note that holds a phone number, a store id typed where the card number goes. They run
//! on every value of a `keep` field, in ingest and in the leak guard, never on what
//! pseudopipe itself wrote (tokens, ciphertexts, masks, generalized values), and a field
//! that legitimately holds one kind lists it in `allow`.
//!
//! A detector that fires quarantines a valid event, so each one is built to be precise
//! against what sits in the kept fields of retail events: product codes of every shape
//! (EAN-8/13, UPC-12, GTIN-14, in-store codes of the prefixes 20–29, internal codes
//! without a check digit), receipt, order, terminal and coupon numbers, store ids and
//! GLNs, amounts, timestamps, versions, builds and user agents. `docs/detectors.md` has
//! the measured false positives and recall, and the command that measures them.
//!
//! Each detector is one pass over the bytes, without allocation, and looks for the thing
//! anywhere in the value, as a whole word: a number glued to letters by `-`, `.` or `/`
//! (`US-701204901-020`, `SKU/3017620422003`) is part of an identifier, not a phone or a
//! card.
//!
//! - **card**: 13 to 19 digits (spaces or dashes between them), in a range of issuer
//!   identification numbers a scheme publishes and at a length it issues there, then
//!   Luhn-valid: Visa `4` (13, 16, 19 digits), Mastercard `51`–`55` and `2221`–`2720`
//!   (16), American Express `34`, `37` (15), Discover `6011`, `644`–`649`, `65`,
//!   `622126`–`622925` (16–19), JCB `3528`–`3589` (16–19), Diners Club `300`–`305`, `36`,
//!   `38`–`39` (14–16), UnionPay `62` (16–19), Maestro `5018`, `5020`, `5038`, `5893`,
//!   `6304`, `6759`, `6761`–`6763` (16–19, the lengths issued in practice; the scheme
//!   allows 12–19), Mir `2200`–`2204` (16–19), and any number of MII 6 at 16–19 digits:
//!   private-label, gift and loyalty cards, as personal as a payment card.
//!   *Not*: a number no scheme issues at its length (a 13-digit `5…`, a 16-digit `20…` or
//!   `7…`); **a bare run of 13 or 14 digits**, whatever its check digits: those are the
//!   lengths of EAN-13, GTIN-14 and internal product codes, which are written bare, while
//!   the cards of those lengths (Visa's 13-digit numbers, no longer issued, and Diners
//!   Club's 14) are written in groups of 3 to 6 digits (`4222 222 222 222`,
//!   `3056 930902 5904`), and only then taken for cards. So a value that is a valid GTIN,
//!   Luhn-valid and carries a card prefix is a product code when bare and a card when
//!   grouped: the form decides, not the check digits. Integers are checked too (only a
//!   card survives being written as a number), so a 13- or 14-digit integer is never one.
//! - **phone**: `+` then 8 to 15 digits (E.164); `00`, a country code and the number,
//!   written in groups, 11 to 17 digits; a trunk `0` or `(` then 9 to 12 digits in all; or
//!   9 to 11 digits in three or more groups of two to four (`206-555-0142`,
//!   `612 345 678`). Separators are spaces, parentheses and one of `-`, `.`, `/`.
//!   *Not*: a bare run of digits without `+` or a leading `0` (any identifier: a receipt
//!   number, an order number, a GLN, an epoch time), nor an integer (it has lost its `+`
//!   or `0`); a bare run starting with `00` (zero padding) or `000`; a bare 12- to
//!   14-digit run with a GS1 check digit (UPC-A, EAN-13 and GTIN-14 of North American
//!   products start with `0`); dotted numbers with a one-digit group (versions and builds:
//!   `131.0.6778.86`, `2024.11.3.1507`); an IPv4 address; dates and times (two joiners,
//!   or glued to `:`). *Known ambiguity*: a bare 9- to 12-digit number with one leading
//!   zero is a national number as people type it (`0612345678`), and is flagged even when
//!   a retailer meant an internal code; such a field lists `phone` in `allow`.
//! - **iban**: two capital letters of a country of the ISO 13616 registry, two check
//!   digits, then letters and digits (single spaces allowed), exactly that country's IBAN
//!   length, mod-97 valid. *Not*: a country outside the registry, another length (a
//!   product or batch code with a capital prefix is mod-97 valid one time in 97, at the
//!   right length far more seldom), lowercase country codes.
//! - **email**: `local@domain.tld`, a top-level domain of two letters or more. *Not*:
//!   `user@localhost`, `@handle`, a domain whose last label holds a digit
//!   (`build@2024.11`).
//! - **ip**: an IPv4 or IPv6 address as `std` parses it. *Not*: a network
//!   (`192.0.2.0/24`), `0.x.x.x` ("this network", and the shape of `0.9.12.3`), a MAC
//!   address, a time, a three-part version. *Known ambiguity*: a four-part version whose
//!   parts are all at most 255 (`5.2.0.118`) is an IPv4 address as far as any parser can
//!   tell.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A kind of personal value a detector finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number.
    Card,
    /// An IBAN.
    Iban,
    /// An IPv4 or IPv6 address.
    Ip,
}

impl Detector {
    /// Every detector, in the order they are tried.
    pub const ALL: [Detector; 5] = [Self::Email, Self::Card, Self::Phone, Self::Iban, Self::Ip];

    /// The name used in a policy's `allow` list.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
            Self::Iban => "iban",
            Self::Ip => "ip",
        }
    }

    /// The detector named `name` in a policy's `allow` list.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// What it found, for messages: "an e-mail address".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Email => "an e-mail address",
            Self::Phone => "a phone number",
            Self::Card => "a payment card number",
            Self::Iban => "an IBAN",
            Self::Ip => "an IP address",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The detectors applied to one field (all of them unless the policy allows some).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detectors(u8);

impl Default for Detectors {
    fn default() -> Self {
        Self::ALL
    }
}

impl Detectors {
    /// Every detector: the default of a `keep` field.
    pub const ALL: Self = Self(0b1_1111);

    /// No detector.
    pub const NONE: Self = Self(0);

    /// These detectors but `detector` (a kind the field may hold).
    pub fn without(self, detector: Detector) -> Self {
        Self(self.0 & !detector.bit())
    }

    /// Whether `detector` is applied.
    pub fn contains(self, detector: Detector) -> bool {
        self.0 & detector.bit() != 0
    }

    /// The first detector of the set that finds something in the string `text`.
    pub fn in_text(self, text: &str) -> Option<Detector> {
        if self == Self::NONE {
            return None;
        }
        let text = text.as_bytes();
        // The census rules out most values before any scan: too few digits in a row for
        // a number, no `@`, not enough dots or colons for an address.
        let census = Census::of(text);
        if self.contains(Detector::Email) && census.at && has_email(text) {
            return Some(Detector::Email);
        }
        // An IBAN before cards and phones: the digit groups of a Dutch or British IBAN
        // (`NL91 ABNA 0417 1643 00`) stand alone, and would otherwise be named a phone.
        let iban = census.digits >= 2 && census.upper >= 2 && text.len() >= 15;
        if self.contains(Detector::Iban) && iban && has_iban(text) {
            return Some(Detector::Iban);
        }
        let card = self.contains(Detector::Card) && census.number_digits >= 13;
        let phone = self.contains(Detector::Phone) && census.number_digits >= 8;
        if card || phone {
            let (mut card_found, mut phone_found) = (false, false);
            for number in numbers(text) {
                card_found |= card && is_card(number);
                phone_found |= phone && is_phone(number);
            }
            if card_found {
                return Some(Detector::Card);
            }
            if phone_found {
                return Some(Detector::Phone);
            }
        }
        let ip = (census.dots >= 3 && census.number_digits >= 4) || census.colons >= 2;
        (self.contains(Detector::Ip) && ip && has_ip(text)).then_some(Detector::Ip)
    }

    /// The first detector of the set that finds something in an integer, given as its
    /// JSON text: only a card number survives being written as a number.
    pub fn in_integer(self, text: &str) -> Option<Detector> {
        let card = self.contains(Detector::Card)
            && text.bytes().all(|b| b.is_ascii_digit())
            && is_card(text.as_bytes());
        card.then_some(Detector::Card)
    }
}

/// What one pass over a value counts, to skip the detectors that cannot find anything.
struct Census {
    digits: usize,
    upper: usize,
    colons: usize,
    dots: usize,
    at: bool,
    /// The most digits in one run of digits and number separators (see [`numbers`]).
    number_digits: usize,
}

const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const COLON: u8 = 4;
const DOT: u8 = 8;
const AT: u8 = 16;
const NUMBER: u8 = 32;

/// The classes of each byte, for the census.
const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if byte.is_ascii_digit() {
            class |= DIGIT | NUMBER;
        }
        if byte.is_ascii_uppercase() {
            class |= UPPER;
        }
        if matches!(byte, b' ' | b'-' | b'.' | b'/' | b'(' | b')' | b'+') {
            class |= NUMBER;
        }
        if byte == b':' {
            class |= COLON;
        }
        if byte == b'.' {
            class |= DOT;
        }
        if byte == b'@' {
            class |= AT;
        }
        table[b] = class;
        b += 1;
    }
    table
}
static CLASSES: [u8; 256] = classes();

/// Per byte, what it adds to the four counts of the census, packed 32 bits each (digits,
/// capitals, colons, dots), so that counting costs one addition a byte.
const fn increments() -> [u128; 256] {
    let mut table = [0u128; 256];
    let mut b = 0;
    while b < 256 {
        let class = CLASSES[b];
        let mut increment = 0;
        let mut field = 0;
        while field < 4 {
            if class & (1 << field) != 0 {
                increment |= 1 << (32 * field);
            }
            field += 1;
        }
        table[b] = increment;
        b += 1;
    }
    table
}
static INCREMENTS: [u128; 256] = increments();

impl Census {
    fn of(text: &[u8]) -> Self {
        // A string holds fewer than 2^32 bytes (a Kafka record is far smaller): no count
        // overflows into the next.
        let mut counts = 0u128;
        let mut seen = 0u8;
        let mut run_digits = 0;
        let mut number_digits = 0;
        for &b in text {
            let class = CLASSES[usize::from(b)];
            counts += INCREMENTS[usize::from(b)];
            seen |= class;
            // Digits in a row, number separators allowed between them.
            run_digits = if class & NUMBER != 0 {
                run_digits + usize::from(class & DIGIT)
            } else {
                0
            };
            number_digits = number_digits.max(run_digits);
        }
        let count = |field: u32| (counts >> (32 * field)) as u32 as usize;
        Self {
            digits: count(0),
            upper: count(1),
            colons: count(2),
            dots: count(3),
            at: seen & AT != 0,
            number_digits,
        }
    }
}

/// Whether `b` may be part of a phone or card number.
fn in_number(b: u8) -> bool {
    CLASSES[usize::from(b)] & NUMBER != 0
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Whether the span `start..end` of `text` stands as a word: not glued to a letter or a
/// digit directly, nor through one joiner (`-`, `.`, `/`, `_`; `:` when a digit is on its
/// other side, as in a time).
fn stands_alone(text: &[u8], start: usize, end: usize) -> bool {
    let glued = |near: Option<&u8>, far: Option<&u8>| match near {
        Some(&b) if is_word(b) => true,
        Some(b'-' | b'.' | b'/' | b'_') => far.is_some_and(|&b| is_word(b)),
        Some(b':') => far.is_some_and(u8::is_ascii_digit),
        _ => false,
    };
    let before = start.checked_sub(1).and_then(|i| text.get(i));
    let before_that = start.checked_sub(2).and_then(|i| text.get(i));
    !glued(before, before_that) && !glued(text.get(end), text.get(end + 1))
}

/// The numbers of `text` that stand alone: maximal runs of digits and phone or card
/// separators, trimmed to start at a digit, `+` or `(` and end at a digit or `)`.
fn numbers(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < text.len() {
            let run_start = pos;
            while pos < text.len() && in_number(text[pos]) {
                pos += 1;
            }
            let run_end = pos;
            if run_end == run_start {
                pos += 1;
                continue;
            }
            let run = &text[run_start..run_end];
            let Some(first) = run
                .iter()
                .position(|&b| b.is_ascii_digit() || b == b'+' || b == b'(')
            else {
                continue;
            };
            let Some(last) = run.iter().rposition(|&b| b.is_ascii_digit() || b == b')') else {
                continue;
            };
            if first <= last
                && run[first..=last].iter().any(u8::is_ascii_digit)
                && stands_alone(text, run_start + first, run_start + last + 1)
            {
                return Some(&run[first..=last]);
            }
        }
        None
    })
}

/// The digit groups of a number: how many digits, how many groups, the longest and the
/// shortest group.
struct Groups {
    digits: usize,
    count: usize,
    longest: usize,
    shortest: usize,
}

fn groups(number: &[u8]) -> Groups {
    let (mut digits, mut count, mut longest, mut shortest, mut current) = (0, 0, 0, usize::MAX, 0);
    for &b in number.iter().chain([&b' ']) {
        if b.is_ascii_digit() {
            digits += 1;
            current += 1;
        } else if current > 0 {
            count += 1;
            longest = longest.max(current);
            shortest = shortest.min(current);
            current = 0;
        }
    }
    Groups {
        digits,
        count,
        longest,
        shortest: shortest.min(longest),
    }
}

/// The value of the digits of `number`, most significant first.
fn digit_values(number: &[u8]) -> impl DoubleEndedIterator<Item = u32> + Clone + '_ {
    number
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
}

/// Whether the digits of `number` end with a valid GS1 check digit (GTIN-8, -12, -13,
/// -14, GLN, SSCC: from the right, the check digit, then weights 3, 1, 3...).
fn gtin_valid(number: &[u8]) -> bool {
    let sum: u32 = digit_values(number)
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 1 { 3 * d } else { d })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the digits of `number` pass the Luhn test (ISO/IEC 7812-1): from the right,
/// every second digit doubled, the digits of the product summed.
fn luhn_valid(number: &[u8]) -> bool {
    let sum: u32 = digit_values(number)
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_phone(number: &[u8]) -> bool {
    // One kind of joiner at most: `192.0.2.0/24` or `2026-11.3` are not phone numbers.
    let joiners = [b'-', b'.', b'/']
        .iter()
        .filter(|j| number.contains(j))
        .count();
    if number[1..].contains(&b'+') || joiners > 1 || (number.contains(&b'.') && is_ipv4(number)) {
        return false;
    }
    let Groups {
        digits,
        count,
        longest,
        shortest,
    } = groups(number);
    // Nine to eleven digits in three or more groups of two to four, the way national
    // numbers without a trunk prefix are written (`612 345 678`, `206-555-0142`): a group
    // of one digit is a version or a build (`131.0.6778.86`, `2024.11.3.1507`), a group
    // of five or more an identifier.
    let grouped = (9..=11).contains(&digits) && longest <= 4 && shortest >= 2;
    // With dots, only the three groups of `646.555.0142`: four dotted parts are a version
    // (`12.25.17.1507`), and the trunk forms (`06.12.34.56.78`) are caught below.
    let grouped = grouped && (!number.contains(&b'.') || (count == 3 && shortest >= 3));
    // A bare run of 12 to 14 digits with a GS1 check digit is a UPC-A, an EAN-13 or a
    // GTIN-14, most of them starting with `0` (North American products): not a number to
    // dial. Written in groups, it is taken for what it looks like.
    let product = count == 1 && (12..=14).contains(&digits) && gtin_valid(number);
    let zeros = digit_values(number).take_while(|&d| d == 0).count();
    match number[0] {
        b'+' => (8..=15).contains(&digits),
        b'(' => (9..=12).contains(&digits) || grouped,
        // `00` then a country code (never `0`): the international access prefix, the
        // country code and a national number, written in groups (`00 33 6 12 34 56 78`).
        // Bare, `00` is the zero padding of an identifier (`0045127000013`).
        b'0' if zeros == 2 => count >= 2 && (11..=17).contains(&digits),
        // A trunk `0`, then a national number, in groups of two digits or more:
        // `0.12.25.1507` is a version, `0 12345 67890 5` a UPC as printed under its bars.
        b'0' if zeros == 1 => {
            ((9..=12).contains(&digits) && !product && (count == 1 || shortest >= 2)) || grouped
        }
        // Zero padding (`000123456789`): no number is dialled starting with `000`.
        b'0' => false,
        _ => grouped,
    }
}

/// The ranges of issuer identification numbers (ISO/IEC 7812) that the card detector
/// knows: the first `digits` digits of the number between `low` and `high`, and the
/// lengths of the numbers issued there (bit `n` set for `n` digits).
struct Iin {
    digits: u32,
    low: u32,
    high: u32,
    lengths: u32,
}

const fn lengths(from: u32, to: u32) -> u32 {
    (1 << (to + 1)) - (1 << from)
}

/// Published ranges and lengths of the payment schemes (and the private-label range of
/// MII 6); see the module documentation for what is left out and why.
const IINS: [Iin; 23] = {
    const fn iin(digits: u32, low: u32, high: u32, lengths: u32) -> Iin {
        Iin {
            digits,
            low,
            high,
            lengths,
        }
    }
    let sixteen_up = lengths(16, 19);
    [
        // Visa: 13 (no longer issued, see `is_card`), 16 and 19 digits.
        iin(1, 4, 4, (1 << 13) | (1 << 16) | (1 << 19)),
        // Mastercard: 51–55 and the 2-series 2221–2720, 16 digits.
        iin(2, 51, 55, 1 << 16),
        iin(4, 2221, 2720, 1 << 16),
        // American Express: 34 and 37, 15 digits.
        iin(2, 34, 34, 1 << 15),
        iin(2, 37, 37, 1 << 15),
        // Discover: 6011, 644–649, 65 and the UnionPay co-branded 622126–622925.
        iin(4, 6011, 6011, sixteen_up),
        iin(3, 644, 649, sixteen_up),
        iin(2, 65, 65, sixteen_up),
        iin(6, 622_126, 622_925, sixteen_up),
        // JCB: 3528–3589, 16 to 19 digits.
        iin(4, 3528, 3589, sixteen_up),
        // Diners Club: 300–305, 36, 38–39, 14 to 16 digits.
        iin(3, 300, 305, lengths(14, 16)),
        iin(2, 36, 36, lengths(14, 16)),
        iin(2, 38, 39, lengths(14, 16)),
        // UnionPay: 62, 16 to 19 digits.
        iin(2, 62, 62, sixteen_up),
        // Maestro: its published ranges, at the 16 to 19 digits it issues in practice.
        iin(4, 5018, 5018, sixteen_up),
        iin(4, 5020, 5020, sixteen_up),
        iin(4, 5038, 5038, sixteen_up),
        iin(4, 5893, 5893, sixteen_up),
        iin(4, 6304, 6304, sixteen_up),
        iin(4, 6759, 6759, sixteen_up),
        iin(4, 6761, 6763, sixteen_up),
        // Mir: 2200–2204, 16 to 19 digits.
        iin(4, 2200, 2204, sixteen_up),
        // Private-label, gift and loyalty cards (MII 6, merchandising and banking) at 16
        // to 19 digits: personal identifiers as much as payment cards (the default policy
        // tokenizes `customer.loyalty_card`).
        iin(1, 6, 6, sixteen_up),
    ]
};

/// Whether the digit groups of `number` are those of a card: three to six digits each,
/// the last one to six.
fn card_groups(number: &[u8]) -> bool {
    let mut sizes = number
        .split(|b| !b.is_ascii_digit())
        .filter(|group| !group.is_empty())
        .map(<[u8]>::len)
        .peekable();
    while let Some(size) = sizes.next() {
        let last = sizes.peek().is_none();
        if size > 6 || (size < 3 && !last) {
            return false;
        }
    }
    true
}

fn is_card(number: &[u8]) -> bool {
    if number.len() < 13
        || !number
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return false;
    }
    let Groups {
        digits,
        count,
        longest,
        shortest,
    } = groups(number);
    if !(13..=19).contains(&digits) {
        return false;
    }
    // 13 and 14 digits are also the lengths of EAN-13 and GTIN-14 product codes and of
    // the internal codes retailers number their goods with, which are written bare; the
    // cards of those lengths (Visa's old 13-digit numbers, Diners Club's 14) are printed
    // in groups (`4222 222 222 222`, `3056 930902 5904`). A bare run of 13 or 14 digits
    // is a product code, whatever its check digits say.
    if digits <= 14 && !(count >= 3 && shortest >= 3 && longest <= 6) {
        return false;
    }
    // Cards are written bare or in groups of three to six digits, the last group
    // shorter for 17 and 18 digits (`4111 1111 1111 1111`, `3782 822463 10005`,
    // `6759 6498 2643 8453 12`); other groupings are receipts and orders
    // (`4123-03-261121-0123`, `353-1234567-1234567`).
    if count > 1 && !card_groups(number) {
        return false;
    }
    let prefix = |n: u32| {
        digit_values(number)
            .take(n as usize)
            .fold(0, |p, d| p * 10 + d)
    };
    let issued = IINS.iter().any(|iin| {
        (iin.low..=iin.high).contains(&prefix(iin.digits)) && iin.lengths & (1 << digits) != 0
    });
    issued && luhn_valid(number)
}

fn has_email(text: &[u8]) -> bool {
    let local = |b: u8| is_word(b) || b"!#$%&'*+/=?^_`{|}~.-".contains(&b);
    text.iter().enumerate().any(|(at, &b)| {
        if b != b'@' || at == 0 || !local(text[at - 1]) {
            return false;
        }
        // Labels of letters, digits and `-`, separated by single dots; the last one is a
        // top-level domain of at least two letters.
        let mut labels = 0;
        let mut label_len = 0;
        let mut letters_only = true;
        let mut last_ok = false;
        for &c in &text[at + 1..] {
            if is_word(c) || c == b'-' {
                label_len += 1;
                letters_only &= c.is_ascii_alphabetic() || c >= 0x80;
            } else if c == b'.' && label_len > 0 {
                labels += 1;
                label_len = 0;
                letters_only = true;
                continue;
            } else {
                break;
            }
            last_ok = labels >= 1 && label_len >= 2 && letters_only;
        }
        last_ok
    })
}

/// The length of the IBANs of each country of the ISO 13616 registry (SWIFT's IBAN
/// registry), sorted by country code for a binary search. Territories that use another
/// country's IBANs (the French overseas departments use `FR`) are not listed apart.
const IBAN_LENGTHS: [(&[u8; 2], usize); 89] = [
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The length of an IBAN of `country`, if the registry has the country.
fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .binary_search_by(|(code, _)| code.as_slice().cmp(country))
        .ok()
        .map(|i| IBAN_LENGTHS[i].1)
}

fn has_iban(text: &[u8]) -> bool {
    let value = |b: u8| match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 10),
        _ => None,
    };
    // Appends a character's value (one or two decimal digits) to a remainder mod 97.
    let feed = |remainder: u32, v: u32| {
        if v >= 10 {
            (remainder * 100 + v) % 97
        } else {
            (remainder * 10 + v) % 97
        }
    };
    (0..text.len().saturating_sub(3)).any(|start| {
        let head = &text[start..start + 4];
        let starts = head[0].is_ascii_uppercase()
            && head[1].is_ascii_uppercase()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit()
            && (start == 0 || !is_word(text[start - 1]));
        // Only a country of the registry, at its length: a product or batch code that
        // happens to start with two capitals and two digits seldom has both.
        let Some(expected) = starts.then(|| iban_length(&head[..2])).flatten() else {
            return false;
        };
        // ISO 13616: the country code and check digits move behind the BBAN.
        let close = |remainder: u32| head.iter().filter_map(|&b| value(b)).fold(remainder, feed);
        let mut remainder = 0;
        let mut length = 4;
        let mut pos = start + 4;
        while pos < text.len() && length < expected {
            let b = text[pos];
            let Some(v) = value(b) else {
                let single_space = b == b' '
                    && text.get(pos + 1).is_some_and(u8::is_ascii_alphanumeric)
                    && text[pos - 1] != b' ';
                if single_space {
                    pos += 1;
                    continue;
                }
                break;
            };
            remainder = feed(remainder, v);
            length += 1;
            pos += 1;
            let ends_here = text.get(pos).is_none_or(|&next| !is_word(next));
            if ends_here && length == expected && close(remainder) == 1 {
                return true;
            }
        }
        false
    })
}

fn is_ipv4(number: &[u8]) -> bool {
    std::str::from_utf8(number).is_ok_and(|s| s.parse::<Ipv4Addr>().is_ok())
}

fn has_ip(text: &[u8]) -> bool {
    let mut pos = 0;
    while pos < text.len() {
        let start = pos;
        while pos < text.len()
            && (text[pos].is_ascii_hexdigit() || matches!(text[pos], b'.' | b':'))
        {
            pos += 1;
        }
        if pos == start {
            pos += 1;
            continue;
        }
        // A sentence may end right after an address.
        let mut end = pos;
        while end > start && text[end - 1] == b'.' {
            end -= 1;
        }
        let run = &text[start..end];
        let network =
            text.get(pos) == Some(&b'/') && text.get(pos + 1).is_some_and(u8::is_ascii_digit);
        // As a word: `Chrome/120.0.0.0` is a version of a product, not an address.
        let alone = stands_alone(text, start, pos);
        if !alone || network {
            continue;
        }
        let count = |byte: u8| run.iter().filter(|&&b| b == byte).count();
        // Only runs of an address's shape are worth parsing.
        let v4 = count(b'.') == 3 && run.iter().all(|&b| b.is_ascii_digit() || b == b'.');
        let v6 = count(b':') >= 2;
        if v4 || v6 {
            // Hex digits, dots and colons: ASCII, so UTF-8.
            let run = std::str::from_utf8(run).unwrap_or_default();
            // `0.x.x.x` is "this network", never a host's address, and the shape of
            // many versions (`0.9.12.3`).
            let v4_host = v4 && run.parse::<Ipv4Addr>().is_ok_and(|ip| ip.octets()[0] != 0);
            if v4_host || (v6 && run.parse::<Ipv6Addr>().is_ok()) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Option<Detector> {
        Detectors::ALL.in_text(text)
    }

    #[test]
    fn finds_each_kind_alone_and_inside_text() {
        let cases = [
            ("Emilie.Dupont@example.fr", Detector::Email),
            ("write to émilie@exemple.fr please", Detector::Email),
            ("a+b@mail.co.uk", Detector::Email),
            ("+33 6 12 34 56 78", Detector::Phone),
            ("+336 12345678", Detector::Phone),
            ("call 06 12 34 56 78 after 6pm", Detector::Phone),
            ("0612345678", Detector::Phone),
            ("06.12.34.56.78", Detector::Phone),
            ("(312) 555-0142", Detector::Phone),
            ("206-555-0142", Detector::Phone),
            ("+1-202-555-0142", Detector::Phone),
            ("612 345 678", Detector::Phone),
            ("0151 12345678", Detector::Phone),
            ("+49 (0)40 123456", Detector::Phone),
            ("Tel: 07700 900123.", Detector::Phone),
            ("4111 1111 1111 1111", Detector::Card),
            ("4111-1111-1111-1111", Detector::Card),
            ("5500005555555559", Detector::Card),
            ("378282246310005", Detector::Card),
            ("card 6280 0012 3456 7895 expired", Detector::Card),
            ("4222 222 222 222", Detector::Card),
            ("4000 0000 0000 0000 006", Detector::Card),
            ("2223 0000 4841 0010", Detector::Card),
            ("3530111333300000", Detector::Card),
            ("6011-1111-1111-1117", Detector::Card),
            ("6200000000000005", Detector::Card),
            ("3056 930902 5904", Detector::Card),
            ("6759649826438453", Detector::Card),
            ("2200000000000004", Detector::Card),
            ("6759 6498 2643 8453 18", Detector::Card),
            ("00 33 6 12 34 56 78", Detector::Phone),
            ("646.555.0142", Detector::Phone),
            ("FR76 3000 6000 0112 3456 7890 189", Detector::Iban),
            ("FR7630006000011234567890189", Detector::Iban),
            ("iban: DE89 3704 0044 0532 0130 00.", Detector::Iban),
            ("GB82WEST12345698765432", Detector::Iban),
            ("192.0.2.44", Detector::Ip),
            ("from 10.1.2.3, twice", Detector::Ip),
            ("2001:db8::1", Detector::Ip),
            ("fe80::1%eth0", Detector::Ip),
            ("::1", Detector::Ip),
            (
                "host 2001:0db8:0000:0000:0000:ff00:0042:8329.",
                Detector::Ip,
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(found(text), Some(kind), "{text:?}");
        }
    }

    #[test]
    fn leaves_identifiers_times_and_amounts_alone() {
        for text in [
            "",
            "in_store",
            "EUR",
            "FR",
            "hyper-fr",
            "US-701204901-020",
            "US-021341234-020",
            "FR-75011-042",
            "PL-02123-020",
            "7f1c2b9e-4d3a-4c55-9a0e-2b8f61d0c3a4",
            "01234567-8901-4555-9a0e-2b8f61d0c3a4",
            "2026-11-21T14:03:22.512Z",
            "2026-11-21 14:03:22",
            "2026-11-21",
            "21/11/2026",
            "14:03:22",
            "00:1a:2b:3c:4d:5e",
            "3017620422003",
            "SKU-4006381333931",
            "40063813339314",
            "3017620422072",
            "SPRING26",
            "SPR-8F3K-22QX",
            "4520",
            "45.20",
            "123456789",
            "2026-000123",
            "1732197802512",
            "192.0.2.0/24",
            "2001:db8::/48",
            "LoyaltyApp/5.2",
            "user@localhost",
            "@handle",
            "FR76 is not an IBAN",
            "FR7630006000011234567890188",
            // Issue 18: bare 13- and 14-digit codes, Luhn-valid with a card's prefix
            // (Visa 13, Diners 14), are product or internal codes.
            "4222222222222",
            "4878310122283",
            "36494383354118",
            "30569309025904",
            // Luhn-valid, 16 digits, but no scheme issues 20xx or 70xx numbers.
            "2000000000000006",
            "7012345678901232",
            // UPC-A, EAN-13 and GTIN-14 of a North American product, and zero padding.
            "012000161155",
            "0012000161155",
            "00012000161155",
            "0000123456",
            // Bare, `00` is zero padding, not the international prefix.
            "0045127000013",
            "0033612345678",
            // Versions and builds.
            "4.12.1",
            "17.2.1",
            "2024.11.3.1507",
            "131.0.6778.86",
            "120.0.6099.144",
            "0.9.12.3",
            "0.12.25.1507",
            "12.25.17.1507",
            "0 12345 67890 5",
            // Receipt and order numbers, grouped otherwise than cards.
            "4123-03-261121-0102",
            "353-1234567-1234563",
            // Mod-97 valid, but 20 characters where German IBANs have 22, and a country
            // code that is not in the registry.
            "DE863704004405320130",
            "XX81ABC12345678901234",
        ] {
            assert_eq!(found(text), None, "{text:?}");
        }
    }

    #[test]
    fn integers_are_checked_for_cards_only() {
        let all = Detectors::ALL;
        assert_eq!(all.in_integer("4111111111111111"), Some(Detector::Card));
        for text in [
            "4111111111111112",
            "3017620422003",
            "1732197802512",
            "33612345678",
            "-4111111111111111",
            "0",
        ] {
            assert_eq!(all.in_integer(text), None, "{text}");
        }
        assert_eq!(
            all.without(Detector::Card).in_integer("4111111111111111"),
            None
        );
    }

    #[test]
    fn an_allowed_kind_is_not_reported() {
        let note = "call +33 6 12 34 56 78 or write to a@b.fr";
        assert_eq!(found(note), Some(Detector::Email));
        let phone_ok = Detectors::ALL.without(Detector::Phone);
        assert_eq!(phone_ok.in_text(note), Some(Detector::Email));
        assert_eq!(phone_ok.without(Detector::Email).in_text(note), None);
        assert_eq!(
            Detectors::ALL.without(Detector::Ip).in_text("192.0.2.44"),
            None,
            "an allowed IP is not taken for a phone number either"
        );
    }

    #[test]
    fn names_round_trip() {
        for detector in Detector::ALL {
            assert_eq!(Detector::from_name(detector.name()), Some(detector));
        }
        assert_eq!(Detector::from_name("phones"), None);
    }
}
