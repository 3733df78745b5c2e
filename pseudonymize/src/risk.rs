//! Quasi-identifiers: the fields a policy keeps or generalizes whose output values,
//! combined, could still single a person out (the only 1931-born customer of a village
//! store), and the smallest group `k` a person should hide in.
//!
//! ```toml
//! [risk]
//! quasi_identifiers = ["customer.birth_date", "customer.address.postal_code", "retailer.store_id"]
//! k = 5
//!
//! [risk.tenants.brand-b]
//! k = 10
//! ```
//!
//! A quasi-identifier names a field whose rule is `keep` or `generalize`, outside arrays:
//! its output value is what an analyst sees. A token is an identifier, not a
//! quasi-identifier (it is how a subject is told apart: the policy's `record_key`), and a
//! dropped, masked or encrypted field shows nothing to group by. What the declaration is
//! used for: `pseudopipe risk` counts, per tenant, the events and subjects in classes
//! (events equal on every quasi-identifier) holding fewer than `k` subjects.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::{is_valid_tenant, Rule};

/// The `[risk]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RiskSpec {
    quasi_identifiers: Vec<String>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default)]
    tenants: BTreeMap<String, TenantSpec>,
}

/// `[risk.tenants.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSpec {
    k: u32,
}

/// k = 5: the smallest group the usual guidance for releasing person-level data names.
fn default_k() -> u32 {
    5
}

/// A policy's quasi-identifiers and the `k` of each tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    quasi_identifiers: Vec<String>,
    k: u32,
    tenant_k: BTreeMap<String, u32>,
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
        self.tenant_k.get(tenant).copied().unwrap_or(self.k)
    }

    /// The `k` of tenants without one of their own.
    pub fn default_k(&self) -> u32 {
        self.k
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
        let k = check_k(self.k, "risk.k")?;
        let mut tenant_k = BTreeMap::new();
        for (tenant, spec) in self.tenants {
            if !is_valid_tenant(&tenant) {
                return Err(format!(
                    "`risk.tenants.{tenant}`: not a valid tenant name ([a-z0-9_-]{{1,64}})"
                ));
            }
            let k = check_k(spec.k, &format!("risk.tenants.{tenant}.k"))?;
            tenant_k.insert(tenant, k);
        }
        let kept = |path: &str| {
            rules
                .iter()
                .any(|(p, rule)| p == path && matches!(rule, Rule::Keep { .. }))
        };
        Ok(Risk {
            quasi_identifiers: self.quasi_identifiers,
            k,
            tenant_k,
            tenant_field: tenant_field.filter(|path| kept(path)).map(str::to_owned),
            subject_field: record_key.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
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
        ] {
            let error = policy(&format!("[risk]\n{risk}\n")).unwrap_err();
            assert!(error.contains(expected), "{risk}: {error}");
        }
    }
}
