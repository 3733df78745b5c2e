//! Re-identification risk of pseudonymized events (`pseudopipe risk`): how many events
//! and subjects sit in equivalence classes smaller than `k`.
//!
//! A class is the set of a tenant's events equal on every quasi-identifier of the policy
//! (`[risk]`, [`pseudonymize::risk`]), compared as their output JSON text, an absent or
//! null field being a value of its own. Its size is the number of distinct subjects in
//! it, a subject being the token of the policy's `record_key` (the customer); an event
//! without one counts as a subject of its own. A class smaller than `k` lets anyone who
//! knows those few attributes of a person (birth year, postal area, store...) single
//! their events out without any key. Reads pseudonymized events only; needs no key.
//!
//! Memory grows with the classes and the subjects per class: about 100 bytes per class
//! and per (class, subject) pair, for a topic or file read once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};

use pseudonymize::risk::Risk;
use pseudonymize::Policy;
use serde::Serialize;
use serde_json::Value;

use crate::report::{escape_html, STYLE};
use crate::Error;

/// The tenant label of events whose tenant the output does not show.
const UNNAMED_TENANT: &str = "(no tenant field)";

/// Class sizes grouped for the histogram: `(from, to)` subjects, `to` inclusive.
const BUCKETS: [(u64, u64); 7] = [
    (1, 1),
    (2, 2),
    (3, 4),
    (5, 9),
    (10, 49),
    (50, 999),
    (1000, u64::MAX),
];

/// Counts the classes of events as they are read.
pub struct Classes {
    risk: Risk,
    tenant_field: Option<Vec<String>>,
    subject_field: Option<Vec<String>>,
    quasi_identifiers: Vec<Vec<String>>,
    tenants: BTreeMap<String, HashMap<Vec<String>, Class>>,
    /// Payloads that are not a JSON object.
    not_json: u64,
}

#[derive(Default)]
struct Class {
    events: u64,
    subjects: HashSet<String>,
    /// Events without a subject token, each a subject of its own.
    anonymous: u64,
}

impl Class {
    fn size(&self) -> u64 {
        self.subjects.len() as u64 + self.anonymous
    }
}

impl Classes {
    /// Counts under `policy`'s quasi-identifiers (`[risk]`), with tenants and subjects
    /// where its `tenant_field` and `record_key` put them.
    pub fn new(policy: &Policy) -> Result<Self, Error> {
        let risk = policy.risk().cloned().ok_or(Error::NoQuasiIdentifiers)?;
        let split = |path: &str| path.split('.').map(str::to_owned).collect::<Vec<_>>();
        Ok(Self {
            quasi_identifiers: risk.quasi_identifiers().iter().map(|p| split(p)).collect(),
            tenant_field: risk.tenant_field().map(split),
            subject_field: risk.subject_field().map(split),
            risk,
            tenants: BTreeMap::new(),
            not_json: 0,
        })
    }

    /// Counts one pseudonymized event, as its payload.
    pub fn add(&mut self, payload: &[u8]) {
        match serde_json::from_slice::<Value>(payload) {
            Ok(event @ Value::Object(_)) => self.add_event(&event),
            _ => self.not_json += 1,
        }
    }

    /// Counts one pseudonymized event.
    pub fn add_event(&mut self, event: &Value) {
        let tenant = self
            .tenant_field
            .as_deref()
            .and_then(|path| at(event, path))
            .and_then(Value::as_str)
            .unwrap_or(UNNAMED_TENANT);
        let key: Vec<String> = self
            .quasi_identifiers
            .iter()
            .map(|path| match at(event, path) {
                Some(value) => value.to_string(),
                None => String::new(),
            })
            .collect();
        let subject = self
            .subject_field
            .as_deref()
            .and_then(|path| at(event, path))
            .and_then(Value::as_str);
        let classes = match self.tenants.get_mut(tenant) {
            Some(classes) => classes,
            None => self.tenants.entry(tenant.to_owned()).or_default(),
        };
        let class = classes.entry(key).or_default();
        class.events += 1;
        match subject {
            Some(token) => {
                if !class.subjects.contains(token) {
                    class.subjects.insert(token.to_owned());
                }
            }
            None => class.anonymous += 1,
        }
    }

    /// What was counted, per tenant.
    pub fn summary(&self) -> Summary {
        let tenants = self
            .tenants
            .iter()
            .map(|(tenant, classes)| {
                let k = u64::from(self.risk.k(tenant));
                let mut summary = TenantRisk {
                    tenant: tenant.clone(),
                    k,
                    events: 0,
                    subjects: 0,
                    classes: classes.len() as u64,
                    classes_below_k: 0,
                    events_below_k: 0,
                    subjects_below_k: 0,
                    histogram: BUCKETS
                        .iter()
                        .map(|&(from, to)| Bucket {
                            from,
                            to: (to != u64::MAX).then_some(to),
                            classes: 0,
                            events: 0,
                        })
                        .collect(),
                };
                let mut subjects: HashSet<&str> = HashSet::new();
                let mut exposed: HashSet<&str> = HashSet::new();
                let mut anonymous_exposed = 0;
                for class in classes.values() {
                    let size = class.size();
                    summary.events += class.events;
                    subjects.extend(class.subjects.iter().map(String::as_str));
                    summary.subjects += class.anonymous;
                    if size < k {
                        summary.classes_below_k += 1;
                        summary.events_below_k += class.events;
                        exposed.extend(class.subjects.iter().map(String::as_str));
                        anonymous_exposed += class.anonymous;
                    }
                    if let Some(bucket) = summary
                        .histogram
                        .iter_mut()
                        .find(|b| size >= b.from && b.to.is_none_or(|to| size <= to))
                    {
                        bucket.classes += 1;
                        bucket.events += class.events;
                    }
                }
                summary.subjects += subjects.len() as u64;
                summary.subjects_below_k = exposed.len() as u64 + anonymous_exposed;
                summary
            })
            .collect();
        Summary {
            quasi_identifiers: self.risk.quasi_identifiers().to_vec(),
            tenants,
            not_json: self.not_json,
        }
    }
}

/// The value at an object path, if every step is an object holding the next key and the
/// value is not null.
fn at<'v>(event: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut value = event;
    for key in path {
        value = value.as_object()?.get(key)?;
    }
    (!value.is_null()).then_some(value)
}

/// The risk of what was read, as printed by `--format json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The quasi-identifiers, as the policy names them.
    pub quasi_identifiers: Vec<String>,
    /// One entry per tenant seen, by name.
    pub tenants: Vec<TenantRisk>,
    /// Payloads that were not a JSON object, hence not counted.
    pub not_json: u64,
}

/// One tenant's classes.
#[derive(Debug, Serialize)]
pub struct TenantRisk {
    /// The tenant, as the events name it.
    pub tenant: String,
    /// Its k.
    pub k: u64,
    /// Events counted.
    pub events: u64,
    /// Distinct subjects.
    pub subjects: u64,
    /// Classes (distinct quasi-identifier combinations).
    pub classes: u64,
    /// Classes with fewer than k subjects.
    pub classes_below_k: u64,
    /// Events in those classes.
    pub events_below_k: u64,
    /// Subjects with at least one event in such a class.
    pub subjects_below_k: u64,
    /// Classes and events by class size.
    pub histogram: Vec<Bucket>,
}

impl TenantRisk {
    /// The share of events in classes below k, 0 when there are none.
    pub fn events_below_k_share(&self) -> f64 {
        share(self.events_below_k, self.events)
    }

    /// The share of subjects with an event in a class below k.
    pub fn subjects_below_k_share(&self) -> f64 {
        share(self.subjects_below_k, self.subjects)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Classes whose size (distinct subjects) is within `from..=to`.
#[derive(Debug, Serialize)]
pub struct Bucket {
    /// Smallest size.
    pub from: u64,
    /// Largest size; none for the last bucket.
    pub to: Option<u64>,
    /// Classes of such a size.
    pub classes: u64,
    /// Events in them.
    pub events: u64,
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to {
            Some(to) if to == self.from => write!(f, "{to}"),
            Some(to) => write!(f, "{}-{to}", self.from),
            None => write!(f, "{}+", self.from),
        }
    }
}

impl Summary {
    /// One self-contained HTML page (the audit report's style, no script, no external
    /// resource): per tenant the figures and a bar chart of events by class size, the
    /// sizes below k in the failure colour. `source` says what was read.
    pub fn html(&self, source: &str) -> String {
        let mut page = String::new();
        let title = "pseudopipe re-identification risk";
        // Writing to a String cannot fail.
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
             <title>{title}</title>\n<style>\n{STYLE}{CHART_STYLE}</style>\n</head>\n<body>\n\
             <header><h1>{title}</h1><p class=\"meta\">{} — quasi-identifiers: {}.</p></header>\n",
            escape_html(source),
            escape_html(&self.quasi_identifiers.join(", ")),
        );
        for tenant in &self.tenants {
            let _ = write!(
                page,
                "<section>\n<h2>Tenant {}</h2>\n<p>k = {}: {} of {} events ({:.1} %) and {} of {} subjects ({:.1} %) sit in classes of fewer than k subjects; {} classes in all, {} of them below k.</p>\n",
                escape_html(&tenant.tenant),
                tenant.k,
                tenant.events_below_k,
                tenant.events,
                100.0 * tenant.events_below_k_share(),
                tenant.subjects_below_k,
                tenant.subjects,
                100.0 * tenant.subjects_below_k_share(),
                tenant.classes,
                tenant.classes_below_k,
            );
            page.push_str(&chart(tenant));
            page.push_str("</section>\n");
        }
        if self.not_json > 0 {
            let _ = writeln!(
                page,
                "<p class=\"empty\">{} records are not JSON objects and were not counted.</p>",
                self.not_json
            );
        }
        page.push_str("</body>\n</html>\n");
        page
    }
}

/// The chart's own style, after the report's.
const CHART_STYLE: &str = "svg.sizes { max-width: 46rem; margin: 0.5rem 0 1.5rem; }\n\
svg.sizes rect.below { fill: #b3261e; }\nsvg.sizes rect.above { fill: #1f5f99; }\n\
svg.sizes text { font-size: 11px; fill: #1d2430; }\n";

/// Events by class size as an inline SVG bar chart, one bar per histogram bucket.
fn chart(tenant: &TenantRisk) -> String {
    const WIDTH: u64 = 640;
    const HEIGHT: u64 = 220;
    const BASE: u64 = 180;
    let most = tenant
        .histogram
        .iter()
        .map(|b| b.events)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = WIDTH / tenant.histogram.len().max(1) as u64;
    let mut svg = format!(
        "<svg class=\"sizes\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"events by class size\">\n"
    );
    for (index, bucket) in tenant.histogram.iter().enumerate() {
        let x = index as u64 * slot + 8;
        let height = bucket.events * (BASE - 30) / most;
        let class = if bucket.from < tenant.k {
            "below"
        } else {
            "above"
        };
        let _ = writeln!(
            svg,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{height}\"><title>{} events in {} classes of size {bucket}</title></rect>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{bucket}</text>",
            BASE - height,
            slot - 16,
            bucket.events,
            bucket.classes,
            x + (slot - 16) / 2,
            BASE - height - 4,
            bucket.events,
            x + (slot - 16) / 2,
            BASE + 16,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">events by class size (distinct subjects); red: below k = {}</text>\n</svg>\n",
        WIDTH / 2,
        HEIGHT - 4,
        tenant.k
    );
    svg
}

/// Tables for a terminal.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "quasi-identifiers: {}",
            self.quasi_identifiers.join(", ")
        )?;
        writeln!(
            f,
            "{:<20} {:>3} {:>10} {:>10} {:>9} {:>20} {:>20}",
            "TENANT", "K", "EVENTS", "SUBJECTS", "CLASSES", "EVENTS BELOW K", "SUBJECTS BELOW K"
        )?;
        for tenant in &self.tenants {
            writeln!(
                f,
                "{:<20} {:>3} {:>10} {:>10} {:>9} {:>11} ({:>5.1} %) {:>11} ({:>5.1} %)",
                tenant.tenant,
                tenant.k,
                tenant.events,
                tenant.subjects,
                tenant.classes,
                tenant.events_below_k,
                100.0 * tenant.events_below_k_share(),
                tenant.subjects_below_k,
                100.0 * tenant.subjects_below_k_share(),
            )?;
        }
        for tenant in &self.tenants {
            writeln!(f)?;
            writeln!(f, "{}: classes by size (distinct subjects)", tenant.tenant)?;
            writeln!(f, "{:>10} {:>9} {:>10}", "SIZE", "CLASSES", "EVENTS")?;
            for bucket in &tenant.histogram {
                let marker = if bucket.from < tenant.k { "  < k" } else { "" };
                writeln!(
                    f,
                    "{:>10} {:>9} {:>10}{marker}",
                    bucket.to_string(),
                    bucket.classes,
                    bucket.events
                )?;
            }
        }
        if self.not_json > 0 {
            writeln!(
                f,
                "\n{} records are not JSON objects and were not counted",
                self.not_json
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(k: u32) -> Policy {
        Policy::from_toml(&format!(
            "tenant_field = \"tenant\"\nrecord_key = \"card\"\n[fields]\ntenant = \"keep\"\ncard = {{ action = \"token\", domain = \"customer\" }}\nyear = {{ action = \"generalize\", to = \"year\" }}\nstore = \"keep\"\n[risk]\nquasi_identifiers = [\"year\", \"store\"]\nk = {k}\n"
        ))
        .unwrap()
    }

    fn event(tenant: &str, card: &str, year: &str, store: i64) -> Vec<u8> {
        serde_json::json!({"tenant": tenant, "card": card, "year": year, "store": store})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classes_count_distinct_subjects_and_small_ones_are_exposed() {
        let mut classes = Classes::new(&policy(3)).unwrap();
        // (1980, 1): three subjects, one of them twice: size 3, not below k = 3.
        for card in ["a", "b", "c", "a"] {
            classes.add(&event("t", card, "1980", 1));
        }
        // (1931, 1): one subject with two events: size 1, exposed.
        classes.add(&event("t", "d", "1931", 1));
        classes.add(&event("t", "d", "1931", 1));
        // (1980, 2): subject a again, and b: size 2, exposed; a is exposed by it too.
        classes.add(&event("t", "a", "1980", 2));
        classes.add(&event("t", "b", "1980", 2));
        // Another tenant's identical values are another population.
        classes.add(&event("u", "a", "1931", 1));
        classes.add(b"not json");

        let summary = classes.summary();
        assert_eq!(summary.not_json, 1);
        let t = &summary.tenants[0];
        assert_eq!(
            (t.tenant.as_str(), t.events, t.subjects, t.classes),
            ("t", 8, 4, 3)
        );
        assert_eq!(
            (t.classes_below_k, t.events_below_k, t.subjects_below_k),
            (2, 4, 3)
        );
        let sizes: Vec<(String, u64, u64)> = t
            .histogram
            .iter()
            .map(|b| (b.to_string(), b.classes, b.events))
            .filter(|(_, classes, _)| *classes > 0)
            .collect();
        assert_eq!(
            sizes,
            [
                ("1".to_owned(), 1, 2),
                ("2".to_owned(), 1, 2),
                ("3-4".to_owned(), 1, 4)
            ]
        );
        let u = &summary.tenants[1];
        assert_eq!((u.events, u.events_below_k, u.subjects_below_k), (1, 1, 1));
        assert!(summary.to_string().contains("50.0 %"), "{summary}");
    }

    #[test]
    fn absent_and_null_values_are_a_value_and_events_without_a_subject_count_alone() {
        let mut classes = Classes::new(&policy(2)).unwrap();
        classes.add(br#"{"tenant":"t","year":null,"store":1}"#);
        classes.add(br#"{"tenant":"t","store":1}"#);
        let t = &classes.summary().tenants[0];
        // One class (null = absent), two anonymous events: two subjects, size 2 = k.
        assert_eq!((t.classes, t.subjects, t.events_below_k), (1, 2, 0));
    }

    #[test]
    fn the_page_draws_a_bar_per_size_and_escapes_what_events_hold() {
        let mut classes = Classes::new(&policy(2)).unwrap();
        classes.add(&event("<b>t", "a", "1980", 1));
        let page = classes.summary().html("events.jsonl");
        assert!(
            page.contains("Tenant &lt;b&gt;t") && !page.contains("<b>t"),
            "{page}"
        );
        assert_eq!(page.matches("<rect ").count(), BUCKETS.len());
        assert_eq!(
            page.matches("<rect class=\"below\"").count(),
            1,
            "only size 1 < k = 2"
        );
        assert!(!page.contains("<script"));
    }

    #[test]
    fn a_policy_without_quasi_identifiers_is_refused() {
        let policy = Policy::from_toml("[fields]\na = \"keep\"").unwrap();
        let error = Classes::new(&policy).err().unwrap();
        assert!(error.to_string().contains("[risk]"), "{error}");
    }
}
