//! Quasi-identifiers: the fields a policy keeps or generalizes whose output values,
//! combined, could still single a person out (the only 1931-born customer of a village
//! store), and the smallest group `k` a person should hide in.
//!
//! ```toml
//! [risk]
//! quasi_identifiers = ["customer.birth_date", "customer.address.postal_code", "retailer.store_id"]
//! k = 5
//!
//! window = 100000          # events (input offsets) per window, per partition
//! enforce_k = false         # generalize further what would leave in a class below k
//! enforce_order = ["device.ip", "retailer.store_id", "customer.birth_date"]
//!
//! [risk.tenants.brand-b]
//! k = 10
//! enforce_k = true
//! ```
//!
//! A quasi-identifier names a field whose rule is `keep` or `generalize`, outside arrays:
//! its output value is what an analyst sees. A token is an identifier, not a
//! quasi-identifier (it is how a subject is told apart: the policy's `record_key`), and a
//! dropped, masked or encrypted field shows nothing to group by. What the declaration is
//! used for: `pseudopipe risk` counts, per tenant, the events and subjects in classes
//! (events equal on every quasi-identifier) holding fewer than `k` subjects, and ingest
//! counts them per window to watch the stream and, where `enforce_k` is set, to generalize
//! further an event whose class is too small ([`Risk::coarsen`], ADR 0025).
//!
//! Each quasi-identifier has a hierarchy of coarser values, derived from its rule and
//! bounded by what the leak guard accepts as the rule's output: a `prefix` shortens by one
//! character at a time, a `year` becomes its decade, an `ip_network` loses a byte, then
//! each is suppressed (null); every other rule goes straight to null. Level `l` applies
//! the first `l` steps of the enforcement schedule: each quasi-identifier through its whole
//! hierarchy, in `enforce_order` (by default the declared order), then the next.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;

use serde::Deserialize;

use crate::generalize::{network, Generalization};
use crate::policy::{is_valid_tenant, Rule};

/// The `[risk]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RiskSpec {
    quasi_identifiers: Vec<String>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default = "default_window")]
    window: u64,
    #[serde(default)]
    enforce_k: bool,
    enforce_order: Option<Vec<String>>,
    #[serde(default = "default_max_classes")]
    max_classes: usize,
    #[serde(default)]
    tenants: BTreeMap<String, TenantSpec>,
}

/// `[risk.tenants.NAME]`: what differs from `[risk]` for one tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSpec {
    k: Option<u32>,
    window: Option<u64>,
    enforce_k: Option<bool>,
}

/// k = 5: the smallest group the usual guidance for releasing person-level data names.
fn default_k() -> u32 {
    5
}

/// 100,000 input offsets: a few seconds of a busy partition, large enough that villages
/// and rare birth years gather k customers (ADR 0025).
fn default_window() -> u64 {
    100_000
}

/// 100,000 classes per partition, tenant and window: about 10 MB at k = 5 (ADR 0025).
fn default_max_classes() -> usize {
    100_000
}

/// What a tenant's windows are judged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRisk {
    /// The smallest class size, in distinct subjects.
    pub k: u32,
    /// Input offsets per window.
    pub window: u64,
    /// Whether events in classes below k are generalized further.
    pub enforce_k: bool,
}

/// One step coarser for a quasi-identifier, by its rule. Every step is a shape the leak
/// guard accepts for that rule ([`crate::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    /// A `prefix` of `length` characters: one character shorter per step, then null.
    Prefix { length: usize },
    /// A `year`: its decade (`"1980-1989"`), then null.
    Year,
    /// An `ip_network`: 8 bits shorter (IPv4) or 16 (IPv6) per step, then null.
    IpNetwork { bits_v4: u8, bits_v6: u8 },
    /// Anything else: null at the first step.
    Suppress,
}

/// Bits an IPv4 network loses per step of [`Hierarchy::IpNetwork`]; IPv6 loses twice as many.
const IP_STEP_BITS: u8 = 8;

impl Hierarchy {
    fn of(rule: &Rule) -> Self {
        match rule {
            Rule::Generalize(Generalization::Prefix { length }) if *length > 1 => {
                Self::Prefix { length: *length }
            }
            Rule::Generalize(Generalization::Year) => Self::Year,
            Rule::Generalize(Generalization::IpNetwork { bits_v4, bits_v6 }) => Self::IpNetwork {
                bits_v4: *bits_v4,
                bits_v6: *bits_v6,
            },
            _ => Self::Suppress,
        }
    }

    /// Steps until the value is null.
    fn depth(self) -> usize {
        match self {
            Self::Prefix { length } => length,
            Self::Year => 2,
            Self::IpNetwork { bits_v4, bits_v6 } => usize::from(bits_v4.div_ceil(IP_STEP_BITS))
                .max(usize::from(bits_v6.div_ceil(2 * IP_STEP_BITS))),
            Self::Suppress => 1,
        }
    }

    /// Appends to `out` `text` (the rule's output, unquoted) made `steps` steps coarser,
    /// `steps` below [`depth`](Self::depth), as a JSON string; appends nothing and
    /// returns false when `text` does not have the rule's shape.
    fn write_coarser(self, text: &str, steps: usize, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.push(b'"');
        let written = match self {
            Self::Prefix { length } => {
                let keep = length - steps;
                let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
                out.extend_from_slice(&text.as_bytes()[..end]);
                true
            }
            Self::Year => match text.parse::<u32>() {
                Ok(year) if text.len() == 4 => {
                    let decade = year - year % 10;
                    let mut digits = itoa::Buffer::new();
                    out.extend_from_slice(digits.format(decade).as_bytes());
                    out.push(b'-');
                    out.extend_from_slice(digits.format(decade + 9).as_bytes());
                    true
                }
                _ => false,
            },
            Self::IpNetwork { .. } => {
                coarser_network(text, steps).is_some_and(|(network, bits)| {
                    let mut digits = itoa::Buffer::new();
                    let written = match network {
                        // Dotted decimal as `Ipv4Addr` displays it, without core::fmt.
                        IpAddr::V4(v4) => {
                            for (i, octet) in v4.octets().into_iter().enumerate() {
                                if i > 0 {
                                    out.push(b'.');
                                }
                                out.extend_from_slice(digits.format(octet).as_bytes());
                            }
                            true
                        }
                        IpAddr::V6(v6) => write!(out, "{v6}").is_ok(),
                    };
                    out.push(b'/');
                    out.extend_from_slice(digits.format(bits).as_bytes());
                    written
                })
            }
            Self::Suppress => false,
        };
        if written {
            out.push(b'"');
        } else {
            out.truncate(start);
        }
        written
    }
}

/// The network of `text` (`address/bits`) with [`IP_STEP_BITS`] per step fewer bits
/// (twice as many for IPv6), while some remain.
fn coarser_network(text: &str, steps: usize) -> Option<(IpAddr, u8)> {
    let (address, bits) = text.split_once('/')?;
    let bits: u8 = bits.parse().ok()?;
    let ip: IpAddr = address.parse().ok()?;
    let per_step = if ip.is_ipv4() {
        IP_STEP_BITS
    } else {
        2 * IP_STEP_BITS
    };
    let cut = u8::try_from(steps).ok()?.checked_mul(per_step)?;
    let kept = bits.checked_sub(cut).filter(|&kept| kept > 0)?;
    Some((network(ip, kept), kept))
}

/// A policy's quasi-identifiers and the `k` of each tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    quasi_identifiers: Vec<String>,
    default: TenantRisk,
    tenants: BTreeMap<String, TenantRisk>,
    max_classes: usize,
    hierarchies: Vec<Hierarchy>,
    /// Per level from 1: the quasi-identifier (declared index) generalized one step more.
    schedule: Vec<usize>,
    tenant_field: Option<String>,
    subject_field: Option<String>,
}

impl Risk {
    /// The quasi-identifier paths, as the policy writes them, in the order given.
    pub fn quasi_identifiers(&self) -> &[String] {
        &self.quasi_identifiers
    }

    /// The `k` of `tenant`: its own, else the policy's.
    pub fn k(&self, tenant: &str) -> u32 {
        self.tenant(tenant).k
    }

    /// The `k` of tenants without one of their own.
    pub fn default_k(&self) -> u32 {
        self.default.k
    }

    /// What `tenant`'s windows are judged with: its own settings, else the policy's.
    pub fn tenant(&self, tenant: &str) -> TenantRisk {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// The settings of tenants without their own.
    pub fn defaults(&self) -> TenantRisk {
        self.default
    }

    /// The tenants with settings of their own, by name.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, TenantRisk)> {
        self.tenants
            .iter()
            .map(|(name, risk)| (name.as_str(), *risk))
    }

    /// Whether any tenant (or the default) enforces k.
    pub fn enforces_any(&self) -> bool {
        self.default.enforce_k || self.tenants.values().any(|t| t.enforce_k)
    }

    /// The most classes one window of one partition and tenant counts; the events of
    /// further classes count as below k and add no subject anywhere (ADR 0025).
    pub fn max_classes(&self) -> usize {
        self.max_classes
    }

    /// The highest generalization level: every hierarchy has ended, every
    /// quasi-identifier is null.
    pub fn max_level(&self) -> usize {
        self.schedule.len()
    }

    /// The quasi-identifiers in the order enforcement generalizes them.
    pub fn enforce_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::with_capacity(self.quasi_identifiers.len());
        for &qi in &self.schedule {
            let path = self.quasi_identifiers[qi].as_str();
            if !order.contains(&path) {
                order.push(path);
            }
        }
        order
    }

    /// How many steps quasi-identifier `qi` (declared index) is generalized at `level`.
    pub fn steps_at(&self, qi: usize, level: usize) -> usize {
        self.schedule[..level.min(self.schedule.len())]
            .iter()
            .filter(|&&q| q == qi)
            .count()
    }

    /// Appends to `out` the JSON value of quasi-identifier `qi` (declared index) made
    /// `steps` steps coarser than `value`, its output JSON (`None`: absent or null, which
    /// stays null). Writes `null` when the hierarchy has ended.
    pub fn coarsen(&self, qi: usize, value: Option<&[u8]>, steps: usize, out: &mut Vec<u8>) {
        let Some(value) = value.filter(|_| steps > 0) else {
            out.extend_from_slice(value.unwrap_or(b"null"));
            return;
        };
        let hierarchy = self.hierarchies[qi];
        // The rule's outputs coarsened are JSON strings; one with escapes is suppressed
        // rather than cut inside an escape.
        let text = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .filter(|text| !text.contains(&b'\\'))
            .and_then(|text| std::str::from_utf8(text).ok());
        let written = steps < hierarchy.depth()
            && text.is_some_and(|text| hierarchy.write_coarser(text, steps, out));
        if !written {
            out.extend_from_slice(b"null");
        }
    }

    /// Where an output event names its tenant: the policy's `tenant_field` when it is
    /// kept (a dropped one leaves the tenants indistinguishable downstream).
    pub fn tenant_field(&self) -> Option<&str> {
        self.tenant_field.as_deref()
    }

    /// Where an output event holds its subject's token: the policy's `record_key`.
    pub fn subject_field(&self) -> Option<&str> {
        self.subject_field.as_deref()
    }
}

impl RiskSpec {
    /// Checks the table against the policy's rules; the error says what to fix.
    /// `tenant_field` and `record_key` are the policy's.
    pub(crate) fn validate(
        self,
        rules: &[(String, Rule)],
        tenant_field: Option<&str>,
        record_key: Option<&str>,
    ) -> Result<Risk, String> {
        if self.quasi_identifiers.is_empty() {
            return Err("`risk.quasi_identifiers` is empty: name the fields whose output could single a person out, or remove [risk]".into());
        }
        let mut seen = Vec::with_capacity(self.quasi_identifiers.len());
        for path in &self.quasi_identifiers {
            if seen.contains(&path) {
                return Err(format!("`risk.quasi_identifiers` names `{path}` twice"));
            }
            seen.push(path);
            if path.contains("[]") {
                return Err(format!(
                    "`risk.quasi_identifiers`: `{path}` is inside an array; a quasi-identifier has one value per event"
                ));
            }
            match rules.iter().find(|(p, _)| p == path).map(|(_, rule)| rule) {
                Some(Rule::Keep { .. } | Rule::Generalize(_)) => {}
                Some(Rule::Token { .. }) => return Err(format!(
                    "`risk.quasi_identifiers`: `{path}` is tokenized; a token identifies a subject, it is not a quasi-identifier"
                )),
                Some(_) => return Err(format!(
                    "`risk.quasi_identifiers`: `{path}` is dropped, masked or encrypted, so its output groups nobody; name fields that are kept or generalized"
                )),
                None => return Err(format!(
                    "`risk.quasi_identifiers`: `{path}` has no rule in [fields]"
                )),
            }
        }
        let check_k = |k: u32, option: &str| {
            if k < 2 {
                Err(format!(
                    "`{option}` = {k}: k must be at least 2 (a class of one is a single person)"
                ))
            } else {
                Ok(k)
            }
        };
        let check_window = |window: u64, option: &str| {
            if window == 0 {
                Err(format!(
                    "`{option}` = 0: a window holds at least one input offset; 100000 is a few seconds of a busy partition"
                ))
            } else {
                Ok(window)
            }
        };
        let default = TenantRisk {
            k: check_k(self.k, "risk.k")?,
            window: check_window(self.window, "risk.window")?,
            enforce_k: self.enforce_k,
        };
        if self.max_classes == 0 {
            return Err(
                "`risk.max_classes` = 0: at least one class per window must be counted".into(),
            );
        }
        let mut tenants = BTreeMap::new();
        for (tenant, spec) in self.tenants {
            if !is_valid_tenant(&tenant) {
                return Err(format!(
                    "`risk.tenants.{tenant}`: not a valid tenant name ([a-z0-9_-]{{1,64}})"
                ));
            }
            let settings = TenantRisk {
                k: match spec.k {
                    Some(k) => check_k(k, &format!("risk.tenants.{tenant}.k"))?,
                    None => default.k,
                },
                window: match spec.window {
                    Some(window) => check_window(window, &format!("risk.tenants.{tenant}.window"))?,
                    None => default.window,
                },
                enforce_k: spec.enforce_k.unwrap_or(default.enforce_k),
            };
            tenants.insert(tenant, settings);
        }
        let hierarchies: Vec<Hierarchy> = self
            .quasi_identifiers
            .iter()
            .map(|path| {
                rules
                    .iter()
                    .find(|(p, _)| p == path)
                    .map_or(Hierarchy::Suppress, |(_, rule)| Hierarchy::of(rule))
            })
            .collect();
        let order: Vec<usize> = match &self.enforce_order {
            None => (0..self.quasi_identifiers.len()).collect(),
            Some(order) => {
                let mut indices = Vec::with_capacity(order.len());
                for path in order {
                    match self.quasi_identifiers.iter().position(|p| p == path) {
                        Some(i) if !indices.contains(&i) => indices.push(i),
                        Some(_) => {
                            return Err(format!("`risk.enforce_order` names `{path}` twice"))
                        }
                        None => {
                            return Err(format!(
                                "`risk.enforce_order`: `{path}` is not in `risk.quasi_identifiers`"
                            ))
                        }
                    }
                }
                if indices.len() != self.quasi_identifiers.len() {
                    return Err("`risk.enforce_order` must list every quasi-identifier once, the first generalized first".into());
                }
                indices
            }
        };
        // Each quasi-identifier through its whole hierarchy, in order, then the next.
        let schedule: Vec<usize> = order
            .iter()
            .flat_map(|&qi| std::iter::repeat_n(qi, hierarchies[qi].depth()))
            .collect();
        let kept = |path: &str| {
            rules
                .iter()
                .any(|(p, rule)| p == path && matches!(rule, Rule::Keep { .. }))
        };
        Ok(Risk {
            quasi_identifiers: self.quasi_identifiers,
            default,
            tenants,
            max_classes: self.max_classes,
            hierarchies,
            schedule,
            tenant_field: tenant_field.filter(|path| kept(path)).map(str::to_owned),
            subject_field: record_key.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TenantRisk;
    use crate::Policy;

    const FIELDS: &str = "[fields]\nid = \"keep\"\nstore = \"keep\"\nbirth = { action = \"generalize\", to = \"year\" }\nmail = { action = \"token\", domain = \"email\" }\nname = \"drop\"\n\"items[].sku\" = \"keep\"\n";

    fn policy(risk: &str) -> Result<Policy, String> {
        Policy::from_toml(&format!("{FIELDS}{risk}")).map_err(|e| e.to_string())
    }

    #[test]
    fn kept_and_generalized_fields_are_quasi_identifiers_with_k_per_tenant() {
        let policy = policy(
            "[risk]\nquasi_identifiers = [\"store\", \"birth\"]\n[risk.tenants.brand-b]\nk = 10\n",
        )
        .unwrap();
        let risk = policy.risk().unwrap();
        assert_eq!(risk.quasi_identifiers(), ["store", "birth"]);
        assert_eq!((risk.k("brand-a"), risk.k("brand-b")), (5, 10));
        assert!(
            self::policy("").unwrap().risk().is_none(),
            "no [risk], nothing declared"
        );
    }

    #[test]
    fn tenants_inherit_what_they_do_not_set() {
        let policy = policy(
            "[risk]\nquasi_identifiers = [\"store\", \"birth\"]\nwindow = 50\n[risk.tenants.b]\nenforce_k = true\n",
        )
        .unwrap();
        let risk = policy.risk().unwrap();
        let (k, window) = (5, 50);
        assert_eq!(
            risk.tenant("a"),
            TenantRisk {
                k,
                window,
                enforce_k: false
            }
        );
        assert_eq!(
            risk.tenant("b"),
            TenantRisk {
                k,
                window,
                enforce_k: true
            }
        );
        assert!(risk.enforces_any());
    }

    #[test]
    fn levels_coarsen_one_quasi_identifier_a_step_at_a_time_in_order() {
        let fields = "[fields]\nstore = \"keep\"\nzip = { action = \"generalize\", to = \"prefix\", length = 3 }\nbirth = { action = \"generalize\", to = \"year\" }\n";
        let policy = Policy::from_toml(&format!(
            "{fields}[risk]\nquasi_identifiers = [\"birth\", \"zip\", \"store\"]\nenforce_order = [\"zip\", \"store\", \"birth\"]\n"
        ))
        .unwrap();
        let risk = policy.risk().unwrap();
        let values: [&[u8]; 3] = [b"\"1987\"", b"\"750\"", b"\"s1\""];
        let at = |level: usize| {
            let mut out = Vec::new();
            for (qi, value) in values.iter().enumerate() {
                risk.coarsen(qi, Some(value), risk.steps_at(qi, level), &mut out);
                out.push(b' ');
            }
            String::from_utf8(out).unwrap()
        };
        // zip through its hierarchy, then store, then birth.
        assert_eq!(risk.max_level(), 6);
        assert_eq!(risk.enforce_order(), ["zip", "store", "birth"]);
        assert_eq!(
            (0..=6).map(at).collect::<Vec<_>>(),
            [
                "\"1987\" \"750\" \"s1\" ",
                "\"1987\" \"75\" \"s1\" ",
                "\"1987\" \"7\" \"s1\" ",
                "\"1987\" null \"s1\" ",
                "\"1987\" null null ",
                "\"1980-1989\" null null ",
                "null null null ",
            ]
        );
        let mut out = Vec::new();
        risk.coarsen(1, Some(b"\"7\\u00e9\""), 1, &mut out);
        assert_eq!(out, b"null", "an escaped prefix is suppressed, not cut");
    }

    #[test]
    fn networks_lose_a_byte_per_step_and_every_step_passes_the_leak_guard() {
        let policy = Policy::from_toml(
            "[fields]\nip = { action = \"generalize\", to = \"ip_network\" }\nbirth = { action = \"generalize\", to = \"year\" }\n[risk]\nquasi_identifiers = [\"ip\", \"birth\"]\n",
        )
        .unwrap();
        let risk = policy.risk().unwrap();
        let steps = |qi: usize, value: &str| {
            (0..=3)
                .map(|steps| {
                    let mut out = Vec::new();
                    risk.coarsen(qi, Some(format!("\"{value}\"").as_bytes()), steps, &mut out);
                    String::from_utf8(out).unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            steps(0, "10.1.2.0/24"),
            [
                "\"10.1.2.0/24\"",
                "\"10.1.0.0/16\"",
                "\"10.0.0.0/8\"",
                "null"
            ]
        );
        assert_eq!(
            steps(0, "2001:db8:7::/48"),
            [
                "\"2001:db8:7::/48\"",
                "\"2001:db8::/32\"",
                "\"2001::/16\"",
                "null"
            ]
        );
        assert_eq!(
            steps(1, "1987"),
            ["\"1987\"", "\"1980-1989\"", "null", "null"]
        );
        assert_eq!(
            steps(0, "not a network"),
            ["\"not a network\"", "null", "null", "null"]
        );
        // What the sink's guard makes of each step, in a record of that policy.
        let guard = crate::LeakGuard::new(policy.clone());
        for (ip, birth, passes) in [
            ("10.1.0.0/16", "1980-1989", true),
            ("10.0.0.0/8", "1987", true),
            ("10.1.2.0/25", "1987", false),
            ("10.1.2.0/16", "1987", false),
            ("10.1.0.0/16", "1981-1990", false),
            ("10.1.0.0/16", "1980-1990", false),
        ] {
            let record = format!("{{\"ip\":\"{ip}\",\"birth\":\"{birth}\"}}");
            assert_eq!(
                guard.check(None, record.as_bytes()).is_ok(),
                passes,
                "{record}"
            );
        }
    }

    #[test]
    fn what_cannot_be_a_quasi_identifier_is_refused_saying_why() {
        for (risk, expected) in [
            ("quasi_identifiers = []", "is empty"),
            ("quasi_identifiers = [\"mail\"]", "is tokenized"),
            ("quasi_identifiers = [\"name\"]", "groups nobody"),
            ("quasi_identifiers = [\"nope\"]", "has no rule"),
            ("quasi_identifiers = [\"items[].sku\"]", "inside an array"),
            ("quasi_identifiers = [\"store\", \"store\"]", "twice"),
            ("quasi_identifiers = [\"store\"]\nk = 1", "at least 2"),
            (
                "quasi_identifiers = [\"store\"]\n[risk.tenants.BAD]\nk = 5",
                "not a valid tenant",
            ),
            (
                "quasi_identifiers = [\"store\"]\nl = 5",
                "unknown field `l`",
            ),
            (
                "quasi_identifiers = [\"store\"]\nwindow = 0",
                "`risk.window` = 0",
            ),
            (
                "quasi_identifiers = [\"store\"]\n[risk.tenants.b]\nwindow = 0",
                "`risk.tenants.b.window` = 0",
            ),
            (
                "quasi_identifiers = [\"store\"]\nmax_classes = 0",
                "`risk.max_classes` = 0",
            ),
            (
                "quasi_identifiers = [\"store\", \"birth\"]\nenforce_order = [\"store\"]",
                "every quasi-identifier once",
            ),
            (
                "quasi_identifiers = [\"store\"]\nenforce_order = [\"birth\"]",
                "is not in `risk.quasi_identifiers`",
            ),
        ] {
            let error = policy(&format!("[risk]\n{risk}\n")).unwrap_err();
            assert!(error.contains(expected), "{risk}: {error}");
        }
    }
}
