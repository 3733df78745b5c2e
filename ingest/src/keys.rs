//! Live keys: a running ingest follows its keyring.
//!
//! Between two batches (exactly once: between two committed transactions) ingest looks
//! at its keyring file, at most every `check_every`. When it changed (`keys rotate`,
//! `retire`, `destroy`, `import --activate`, `rewrap`, or another instance's scheduled
//! rotation), the keyring is opened and its audit log verified again, and a new engine
//! replaces the old one before the next record: no record is tokenized with a version
//! that is no longer active, and a tenant left without an active version is suspended
//! (its events are quarantined as `tenant_suspended`) until one is active again.
//!
//! Each change is an audit entry written by this instance: `key_switch` (the version, its
//! fingerprint, and per input partition the first offset this instance processes with
//! it), `tenant_suspended`, and, with a bridge overlap, `bridge_start` and `bridge_end`.
//! `ingest_start` and `ingest_stop` frame a run, with the events tokenized per version.
//! A keyring that no longer opens, or an audit log that no longer verifies, stops the
//! stage: it must never go on with keys nobody can account for.
//!
//! The time comes from a [`Clock`] the caller gives ([`SystemClock`] in production), so
//! that what is due when (a scheduled rotation, the end of an overlap) is tested without
//! waiting for it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plumbing::prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};
use pseudonymize::{
    Kek, KeyState, KeyVersion, Keyring, KeyringLock, MasterSecret, Policy, Pseudonymizer,
};
use time::OffsetDateTime;
use tracing::info;

use crate::Error;

/// Where live keys take the time from.
pub trait Clock: Send {
    /// Now, by the wall clock: compared with the keyring's timestamps (when a version
    /// became active, when an overlap ends).
    fn now_utc(&self) -> OffsetDateTime;
    /// Now, by a monotonic clock: the interval between two looks at the keyring, which a
    /// change of the wall clock must not stretch or shorten.
    fn now(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Where ingest's keys come from, and what it does about them.
#[derive(Debug)]
pub struct KeySettings {
    /// The keyring file.
    pub keyring: PathBuf,
    /// Its audit log.
    pub audit_log: PathBuf,
    /// How often the keyring file is looked at (between batches).
    pub check_every: Duration,
    /// Rotate a tenant's active version once it has been active this long.
    pub rotate_every: Option<Duration>,
    /// After a rotation, how long to pair old and new tokens on the bridge topic.
    pub bridge_overlap: Option<Duration>,
    /// This instance, as audit entries name it (its `transactional.id`, or group and host).
    pub instance: String,
    /// The input topic, named with the offsets of a switch.
    pub input_topic: String,
}

/// The active version of a tenant, as the running engine uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Active {
    version: u32,
    fingerprint: String,
    /// When it became active (its creation, if the keyring does not say).
    since: Option<OffsetDateTime>,
}

/// An overlap after a rotation: tokens of `from` are paired with tokens of `to` until `until`.
#[derive(Debug, Clone, Copy)]
struct Overlap {
    from: u32,
    to: u32,
    until: OffsetDateTime,
}

/// Identifies a version of the keyring file: a rename (every keyring write) changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &std::path::Path) -> Result<Self, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::KeyringUnreadable {
            path: path.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// One audit entry this instance writes.
struct Entry {
    action: &'static str,
    tenant: String,
    version: Option<(u32, String)>,
    details: String,
}

/// The metrics of live keys.
#[derive(Debug, Clone)]
struct KeyMetrics {
    active: IntGaugeVec,
    switches: IntCounterVec,
    suspended: IntGaugeVec,
    tokenized: IntCounterVec,
    bridging: IntGaugeVec,
    reloads: IntGauge,
    verified: IntGauge,
}

impl KeyMetrics {
    fn new(registry: &Registry) -> Result<Self, plumbing::prometheus::Error> {
        let metrics = Self {
            active: IntGaugeVec::new(
                crate::metric_opts(
                    "pseudopipe_key_active_version",
                    "The key version used for new tokens, per tenant (fingerprint as a label).",
                ),
                &["tenant", "fingerprint"],
            )?,
            switches: IntCounterVec::new(
                crate::metric_opts(
                    "pseudopipe_key_switches_total",
                    "Key changes a running ingest applied (rotation, activation, suspension), per tenant.",
                ),
                &["tenant"],
            )?,
            suspended: IntGaugeVec::new(
                crate::metric_opts(
                    "pseudopipe_tenant_suspended",
                    "1 while a tenant of the keyring has no active version: its events are quarantined (tenant_suspended).",
                ),
                &["tenant"],
            )?,
            tokenized: IntCounterVec::new(
                crate::metric_opts(
                    "pseudopipe_events_tokenized_total",
                    "Events pseudonymized, per tenant and key version.",
                ),
                &["tenant", "key_version"],
            )?,
            bridging: IntGaugeVec::new(
                crate::metric_opts(
                    "pseudopipe_bridge_active",
                    "1 while old and new tokens of a tenant are paired on the bridge topic after a rotation.",
                ),
                &["tenant"],
            )?,
            verified: IntGauge::with_opts(crate::metric_opts(
                "pseudopipe_audit_verified",
                "1 when the keyring opened and its audit log verified at the last check, 0 when it did not (ingest then stops).",
            ))?,
            reloads: IntGauge::with_opts(crate::metric_opts(
                "pseudopipe_keyring_loads",
                "Times the running ingest opened its keyring (at start and after each change of the file).",
            ))?,
        };
        registry.register(Box::new(metrics.active.clone()))?;
        registry.register(Box::new(metrics.switches.clone()))?;
        registry.register(Box::new(metrics.suspended.clone()))?;
        registry.register(Box::new(metrics.tokenized.clone()))?;
        registry.register(Box::new(metrics.bridging.clone()))?;
        registry.register(Box::new(metrics.reloads.clone()))?;
        registry.register(Box::new(metrics.verified.clone()))?;
        Ok(metrics)
    }
}

/// Events tokenized per tenant and version, since the last export to the metrics and
/// since the start.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    since_start: HashMap<String, BTreeMap<u32, u64>>,
    unexported: HashMap<String, BTreeMap<u32, u64>>,
}

impl Counts {
    /// One event of `tenant` tokenized with `version`.
    pub(crate) fn add(&mut self, tenant: &str, version: u32) {
        match self.unexported.get_mut(tenant) {
            Some(versions) => *versions.entry(version).or_default() += 1,
            None => {
                self.unexported
                    .insert(tenant.to_owned(), BTreeMap::from([(version, 1)]));
            }
        }
    }

    fn export(&mut self, metrics: &KeyMetrics) {
        for (tenant, versions) in &mut self.unexported {
            for (version, count) in versions.iter_mut().filter(|(_, count)| **count > 0) {
                metrics
                    .tokenized
                    .with_label_values(&[tenant.as_str(), &version.to_string()])
                    .inc_by(*count);
                *self
                    .since_start
                    .entry(tenant.clone())
                    .or_default()
                    .entry(*version)
                    .or_default() += *count;
                *count = 0;
            }
        }
    }

    fn of(&self, tenant: &str, version: u32) -> u64 {
        self.since_start
            .get(tenant)
            .and_then(|versions| versions.get(&version))
            .copied()
            .unwrap_or(0)
    }

    /// `v1:52000,v2:48000`, or `none`.
    fn summary(&self, tenant: &str) -> String {
        let list: Vec<String> = self
            .since_start
            .get(tenant)
            .into_iter()
            .flatten()
            .map(|(version, count)| format!("v{version}:{count}"))
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(",")
        }
    }
}

/// The keys of a running ingest, following its keyring.
pub struct LiveKeys {
    settings: KeySettings,
    kek: Kek,
    policy: Policy,
    engine: Pseudonymizer,
    active: BTreeMap<String, Option<Active>>,
    overlaps: BTreeMap<String, Overlap>,
    stamp: Stamp,
    next_check: Instant,
    metrics: KeyMetrics,
    clock: Box<dyn Clock>,
}

impl std::fmt::Debug for LiveKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKeys")
            .field("keyring", &self.settings.keyring)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl LiveKeys {
    /// Opens the keyring, verifies its audit log and builds the first engine, on the
    /// system's clocks. Fails when no tenant has an active version.
    pub fn open(
        settings: KeySettings,
        kek: Kek,
        policy: Policy,
        registry: &Registry,
    ) -> Result<Self, Error> {
        Self::open_with_clock(settings, kek, policy, registry, SystemClock)
    }

    /// [`LiveKeys::open`], with the time taken from `clock`.
    pub fn open_with_clock(
        settings: KeySettings,
        kek: Kek,
        policy: Policy,
        registry: &Registry,
        clock: impl Clock + 'static,
    ) -> Result<Self, Error> {
        let stamp = Stamp::of(&settings.keyring)?;
        let keyring = open_verified(&settings, &kek)?;
        let active = actives(&keyring);
        if !active.values().any(Option::is_some) {
            return Err(Error::NoActiveKey {
                path: settings.keyring.clone(),
            });
        }
        let overlaps = BTreeMap::new();
        let engine = engine_of(&policy, &keyring, &overlaps);
        let metrics = KeyMetrics::new(registry)?;
        let keys = Self {
            settings,
            kek,
            policy,
            engine,
            active,
            overlaps,
            stamp,
            next_check: clock.now(),
            metrics,
            clock: Box::new(clock),
        };
        keys.metrics.reloads.inc();
        keys.metrics.verified.set(1);
        keys.export_state();
        Ok(keys)
    }

    /// The engine to pseudonymize with until the next [`LiveKeys::refresh`].
    pub fn engine(&self) -> &Pseudonymizer {
        &self.engine
    }

    /// Records the start of this instance: one `ingest_start` entry per tenant.
    pub fn started(&mut self) -> Result<(), Error> {
        let entries = self
            .active
            .iter()
            .map(|(tenant, active)| Entry {
                action: "ingest_start",
                tenant: tenant.clone(),
                version: active.as_ref().map(|a| (a.version, a.fingerprint.clone())),
                details: format!(
                    "instance={} topic={} state={}",
                    self.settings.instance,
                    self.settings.input_topic,
                    if active.is_some() {
                        "active"
                    } else {
                        "suspended"
                    }
                ),
            })
            .collect();
        self.write(entries)
    }

    /// Records the end of this instance: one `ingest_stop` entry per tenant, with the
    /// events it tokenized per version.
    pub(crate) fn stopped(&mut self, counts: &mut Counts) -> Result<(), Error> {
        counts.export(&self.metrics);
        let entries = self
            .active
            .keys()
            .map(|tenant| Entry {
                action: "ingest_stop",
                tenant: tenant.clone(),
                version: None,
                details: format!(
                    "instance={} topic={} events={}",
                    self.settings.instance,
                    self.settings.input_topic,
                    counts.summary(tenant)
                ),
            })
            .collect();
        self.write(entries)
    }

    /// Between two batches: exports the counts and, at most every `check_every`, rotates
    /// what is due, ends overlaps that are over and, when the keyring file changed,
    /// applies the change; whether it looked. `next` holds, per input partition, the next
    /// offset this instance will process.
    pub(crate) fn refresh(
        &mut self,
        next: &BTreeMap<i32, i64>,
        counts: &mut Counts,
    ) -> Result<bool, Error> {
        counts.export(&self.metrics);
        let now = self.clock.now();
        if now < self.next_check {
            return Ok(false);
        }
        self.next_check = now + self.settings.check_every;
        self.rotate_what_is_due()?;
        let ended = self.end_overlaps()?;
        let stamp = Stamp::of(&self.settings.keyring)?;
        if stamp == self.stamp && !ended {
            return Ok(true);
        }
        let keyring = open_verified(&self.settings, &self.kek).inspect_err(|_| {
            self.metrics.verified.set(0);
        })?;
        self.metrics.reloads.inc();
        let active = actives(&keyring);
        let mut entries = Vec::new();
        let offsets = offsets_detail(next);
        let today = self.clock.now_utc();
        for (tenant, now_active) in &active {
            let before = self.active.get(tenant).cloned().flatten();
            match (&before, now_active) {
                (Some(old), Some(new)) if old == new => {}
                (_, Some(new)) => {
                    let previous = before.as_ref().map_or_else(
                        || "none".to_owned(),
                        |old| {
                            format!(
                                "{} events_previous={}",
                                old.version,
                                counts.of(tenant, old.version)
                            )
                        },
                    );
                    entries.push(Entry {
                        action: "key_switch",
                        tenant: tenant.clone(),
                        version: Some((new.version, new.fingerprint.clone())),
                        details: format!(
                            "instance={} topic={} offsets={offsets} previous={previous}",
                            self.settings.instance, self.settings.input_topic
                        ),
                    });
                    self.metrics.switches.with_label_values(&[tenant]).inc();
                    let old_usable = before
                        .as_ref()
                        .filter(|old| keyring.secret(tenant, old.version).is_some());
                    if let (Some(old), Some(overlap)) = (old_usable, self.settings.bridge_overlap) {
                        let until = today + overlap;
                        let superseded = self.overlaps.insert(
                            tenant.clone(),
                            Overlap {
                                from: old.version,
                                to: new.version,
                                until,
                            },
                        );
                        if let Some(superseded) = superseded {
                            entries.push(self.bridge_end(tenant, superseded, "superseded"));
                        }
                        entries.push(Entry {
                            action: "bridge_start",
                            tenant: tenant.clone(),
                            version: Some((new.version, new.fingerprint.clone())),
                            details: format!(
                                "instance={} from={} to={} overlap={}s until={}",
                                self.settings.instance,
                                old.version,
                                new.version,
                                overlap.as_secs(),
                                rfc3339(until)
                            ),
                        });
                    }
                }
                (Some(old), None) => {
                    entries.push(Entry {
                        action: "tenant_suspended",
                        tenant: tenant.clone(),
                        version: Some((old.version, old.fingerprint.clone())),
                        details: format!(
                            "instance={} topic={} offsets={offsets} events_previous={}",
                            self.settings.instance,
                            self.settings.input_topic,
                            counts.of(tenant, old.version)
                        ),
                    });
                    self.metrics.switches.with_label_values(&[tenant]).inc();
                }
                (None, None) => {}
            }
        }
        // An overlap whose old version can no longer be used (destroyed) ends now.
        let gone: Vec<String> = self
            .overlaps
            .iter()
            .filter(|(tenant, overlap)| {
                keyring.secret(tenant, overlap.from).is_none()
                    || active.get(*tenant).cloned().flatten().map(|a| a.version) != Some(overlap.to)
            })
            .map(|(tenant, _)| tenant.clone())
            .collect();
        for tenant in gone {
            if let Some(overlap) = self.overlaps.remove(&tenant) {
                entries.push(self.bridge_end(&tenant, overlap, "key_changed"));
            }
        }
        self.engine = engine_of(&self.policy, &keyring, &self.overlaps);
        drop(keyring);
        for entry in &entries {
            info!(
                tenant = entry.tenant,
                action = entry.action,
                version = entry.version.as_ref().map(|v| v.0),
                "Key change applied between two batches."
            );
        }
        self.active = active;
        self.export_state();
        self.write(entries)?;
        // The file as it was opened: when our own entries (or anyone's change meanwhile)
        // rewrote it, the next check opens it again and applies what is new, if anything.
        self.stamp = stamp;
        Ok(true)
    }

    /// Rotates the active version of every tenant whose version is older than
    /// `rotate_every` (under the keyring's lock, checked again there: another instance
    /// may have done it).
    fn rotate_what_is_due(&mut self) -> Result<(), Error> {
        let Some(every) = self.settings.rotate_every else {
            return Ok(());
        };
        // Decided from what this instance knows, so that a check costs no keyring read
        // until a rotation is due.
        let now = self.clock.now_utc();
        let due = self
            .active
            .values()
            .flatten()
            .any(|active| active.since.is_some_and(|since| since + every <= now));
        if !due {
            return Ok(());
        }
        let _lock = KeyringLock::acquire(&self.settings.keyring)?;
        let mut keyring = Keyring::open(&self.settings.keyring, &self.kek)?;
        let mut log = keyring.audit_log(&self.settings.audit_log)?;
        let actor = format!(
            "{} (rotate_every={}s)",
            self.settings.instance,
            every.as_secs()
        );
        for tenant in due_for_rotation(&keyring, every, now) {
            let version = keyring.rotate(&mut log, &actor, &tenant)?;
            info!(
                tenant,
                version = version.version,
                "Scheduled rotation: a new version is active."
            );
        }
        Ok(())
    }

    /// Ends the overlaps whose time is over; whether any did.
    fn end_overlaps(&mut self) -> Result<bool, Error> {
        let now = self.clock.now_utc();
        let over: Vec<String> = self
            .overlaps
            .iter()
            .filter(|(_, overlap)| overlap.until <= now)
            .map(|(tenant, _)| tenant.clone())
            .collect();
        let entries: Vec<Entry> = over
            .iter()
            .filter_map(|tenant| {
                let overlap = self.overlaps.remove(tenant)?;
                Some(self.bridge_end(tenant, overlap, "overlap_over"))
            })
            .collect();
        let ended = !entries.is_empty();
        self.write(entries)?;
        Ok(ended)
    }

    fn bridge_end(&self, tenant: &str, overlap: Overlap, why: &str) -> Entry {
        Entry {
            action: "bridge_end",
            tenant: tenant.to_owned(),
            version: None,
            details: format!(
                "instance={} from={} to={} why={why}",
                self.settings.instance, overlap.from, overlap.to
            ),
        }
    }

    /// Writes `entries` to the audit log, under the keyring's lock (the keyring records
    /// the new head).
    fn write(&self, entries: Vec<Entry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let fail = Error::AuditWrite;
        let _lock = KeyringLock::acquire(&self.settings.keyring).map_err(fail)?;
        let mut keyring = Keyring::open(&self.settings.keyring, &self.kek).map_err(fail)?;
        let mut log = keyring.audit_log(&self.settings.audit_log).map_err(fail)?;
        for entry in entries {
            keyring
                .record_version(
                    &mut log,
                    &self.settings.instance,
                    entry.action,
                    &entry.tenant,
                    entry.version,
                    entry.details,
                )
                .map_err(fail)?;
        }
        Ok(())
    }

    fn export_state(&self) {
        self.metrics.active.reset();
        for (tenant, active) in &self.active {
            match active {
                Some(active) => {
                    self.metrics
                        .active
                        .with_label_values(&[tenant.as_str(), &active.fingerprint])
                        .set(i64::from(active.version));
                    self.metrics.suspended.with_label_values(&[tenant]).set(0);
                }
                None => self.metrics.suspended.with_label_values(&[tenant]).set(1),
            }
            self.metrics
                .bridging
                .with_label_values(&[tenant])
                .set(i64::from(self.overlaps.contains_key(tenant)));
        }
    }
}

/// Opens the keyring and verifies its audit log against it.
fn open_verified(settings: &KeySettings, kek: &Kek) -> Result<Keyring, Error> {
    let keyring = Keyring::open(&settings.keyring, kek)?;
    keyring
        .verify_audit(&settings.audit_log)
        .map_err(|source| Error::AuditUnverified {
            path: settings.audit_log.clone(),
            source,
        })?;
    Ok(keyring)
}

/// Every tenant of the keyring with its active version, if it has one.
fn actives(keyring: &Keyring) -> BTreeMap<String, Option<Active>> {
    keyring
        .tenants()
        .map(|tenant| {
            let active = keyring.versions(tenant).ok().and_then(|versions| {
                versions
                    .iter()
                    .find(|v| v.state == KeyState::Active)
                    .map(|v| Active {
                        version: v.version,
                        fingerprint: v.fingerprint.clone(),
                        since: activation(v),
                    })
            });
            (tenant.to_owned(), active)
        })
        .collect()
}

/// The engine for the keyring's active versions, its suspended tenants, and the previous
/// versions of the tenants in an overlap.
fn engine_of(
    policy: &Policy,
    keyring: &Keyring,
    overlaps: &BTreeMap<String, Overlap>,
) -> Pseudonymizer {
    let suspended: Vec<String> = actives(keyring)
        .into_iter()
        .filter(|(_, active)| active.is_none())
        .map(|(tenant, _)| tenant)
        .collect();
    let previous: Vec<(String, u32, &MasterSecret)> = overlaps
        .iter()
        .filter_map(|(tenant, overlap)| {
            Some((
                tenant.clone(),
                overlap.from,
                keyring.secret(tenant, overlap.from)?,
            ))
        })
        .collect();
    Pseudonymizer::new(policy.clone(), keyring.active())
        .suspending(suspended)
        .bridging(previous)
}

/// Tenants whose active version has been active for `every` or longer at `now`.
fn due_for_rotation(keyring: &Keyring, every: Duration, now: OffsetDateTime) -> Vec<String> {
    keyring
        .tenants()
        .filter(|tenant| {
            keyring.versions(tenant).is_ok_and(|versions| {
                versions.iter().any(|v| {
                    v.state == KeyState::Active
                        && activation(v).is_some_and(|since| since + every <= now)
                })
            })
        })
        .map(str::to_owned)
        .collect()
}

/// When a version became active: its activation, or its creation if the keyring does not
/// record an activation.
fn activation(version: &KeyVersion) -> Option<OffsetDateTime> {
    let text = version
        .activated_at
        .as_deref()
        .unwrap_or(&version.created_at);
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `0:1200,1:1187`: per partition, the next offset; `none` before any record.
fn offsets_detail(next: &BTreeMap<i32, i64>) -> String {
    if next.is_empty() {
        return "none".to_owned();
    }
    let mut out = String::new();
    for (partition, offset) in next {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{partition}:{offset}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_listed_by_partition() {
        assert_eq!(offsets_detail(&BTreeMap::new()), "none");
        assert_eq!(
            offsets_detail(&BTreeMap::from([(1, 7), (0, 12)])),
            "0:12,1:7"
        );
    }

    #[test]
    fn counts_are_summed_per_version_once_exported() {
        let registry = Registry::new();
        let metrics = KeyMetrics::new(&registry).unwrap();
        let mut counts = Counts::default();
        for _ in 0..3 {
            counts.add("brand-a", 1);
        }
        counts.add("brand-a", 2);
        assert_eq!(counts.of("brand-a", 1), 0, "not exported yet");
        counts.export(&metrics);
        counts.add("brand-a", 2);
        counts.export(&metrics);
        assert_eq!(counts.of("brand-a", 1), 3);
        assert_eq!(counts.summary("brand-a"), "v1:3,v2:2");
        assert_eq!(counts.summary("brand-b"), "none");
        assert_eq!(
            metrics.tokenized.with_label_values(&["brand-a", "2"]).get(),
            2
        );
    }
}
