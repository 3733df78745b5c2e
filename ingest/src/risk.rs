//! Re-identification risk watched in the stream, and k enforced where the policy asks
//! (ADR 0025).
//!
//! Windows are cut per input partition and tenant by offset: window `j` holds offsets
//! `[jW, (j+1)W)`, `W` the tenant's `window`. A window counts its classes (events equal on
//! every quasi-identifier's output value) with the distinct subjects in each, a subject
//! being the hash of the record key's token (an event without one is a subject of its
//! own). Sets make a record seen twice (a rewind, a redelivery) count once. When a window
//! closes, the share of its events in classes below k goes to
//! `pseudopipe_risk_events_below_k_ratio{tenant}`.
//!
//! Where `enforce_k` is set, an event of window `j` is judged on what window `j - 1` of its
//! partition released: at each level of generalization (see [`pseudonymize::risk`]), the
//! classes that gathered k subjects among the events not released at a lower level. The
//! event leaves at the lowest level whose class was released, its quasi-identifiers
//! rewritten in its output; past the last level they are all null (suppressed). The
//! decision depends on the input alone when this instance holds window `j - 1` whole. When
//! it meets a partition whose windows it lacks (its first record after a start or a
//! takeover, or an offset past a gap), it rebuilds them first from the raw topic itself
//! through its [`History`]: the records from the start of window `j - 1` up to the one at
//! hand, classified as the stage classifies them, counted, never emitted. A window the log
//! no longer holds whole (retention), or a rebuild that fails or overruns its time, leaves
//! the windows it could not rebuild suppressed: fail closed.
//!
//! Memory: at most `max_classes` classes per partition, tenant and window, each with at
//! most k subject hashes; the events of further classes count as below k and add no
//! subject, so they are generalized more, never less.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Range;
use std::time::{Duration, Instant};

use plumbing::prometheus::{GaugeVec, IntCounter, IntCounterVec, Registry};
use plumbing::Origin;
use pseudonymize::risk::{Risk, TenantRisk};
use pseudonymize::{Policy, QuasiValues};
use tracing::{info, warn};

use crate::Error;

/// Separates the quasi-identifier values in a class key: a JSON text holds no NUL byte.
const SEPARATOR: u8 = 0;

/// Seeds the subject hash: a fixed seed, so that a subject hashes the same in every run.
const SUBJECT_SEED: u64 = 0x7073_6575_646f_7069;

/// A map keyed by values that are already hashes or small: foldhash (already in the
/// dependency tree through hashbrown) instead of SipHash on the record path.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A class (or a group of classes at a coarser level): the 128-bit keyed hash of its key
/// bytes. Two keys that collide merge into one class; see [`ClassIds`].
type ClassId = u128;

/// What enforcement did to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Left as the policy wrote it (its class held k subjects, or the tenant does not
    /// enforce k).
    Kept,
    /// Its quasi-identifiers were generalized to this level.
    Generalized(usize),
    /// Every quasi-identifier was set to null.
    Suppressed,
}

/// The monitor and, for tenants with `enforce_k`, the enforcement state of one ingest.
#[derive(Debug)]
pub struct RiskWatch {
    risk: Risk,
    ids: ClassIds,
    metrics: RiskMetrics,
    partitions: Map<i32, PartitionState>,
    /// Per tenant, per partition: (events, events below k) of its last closed window.
    closed: HashMap<String, BTreeMap<i32, (u64, u64)>>,
    key: Vec<u8>,
    rewritten: Vec<u8>,
    spans: Vec<(usize, Range<usize>)>,
    /// Where windows this instance did not see are read back from, and how long a rebuild
    /// may take; none: they leave suppressed.
    history: Option<(Box<dyn History>, Duration)>,
}

/// The raw input as it was: what a rebuild reads (ADR 0025). A narrow seam, so that the
/// counting here knows nothing of Kafka (`risk_replay` reads the raw topic).
pub trait History: Send + std::fmt::Debug {
    /// The first offset of `partition` the log still holds (its low watermark).
    fn first_held(&mut self, partition: i32, deadline: Instant) -> Result<i64, Error>;

    /// Calls `each(offset, payload)` for every record of `partition` in `offsets`, in
    /// offset order (`None` for a record without a payload). Fails past `deadline`.
    fn replay(
        &mut self,
        partition: i32,
        offsets: Range<i64>,
        deadline: Instant,
        each: &mut dyn FnMut(i64, Option<&[u8]>),
    ) -> Result<(), Error>;
}

/// How a rebuild classifies a raw payload: as the stage does, writing the output into the
/// buffer and the quasi-identifiers' spans; the tenant and the subject's span in the
/// output, or `None` for a record the stage does not count (quarantined, dropped).
pub type Classify<'e> = dyn FnMut(&[u8], &mut Vec<u8>, &mut QuasiValues) -> Option<(&'e str, Option<Range<usize>>)>
    + 'e;

/// Class ids: SipHash-1-3 under two keys drawn at random per watch, 128 bits in all. A
/// collision merges two classes and can only overcount one, the unsafe direction (ADR
/// 0025): random keys keep a producer from choosing values that collide, and 128 bits
/// make a chance collision negligible.
#[derive(Debug)]
struct ClassIds(RandomState, RandomState);

impl ClassIds {
    fn new() -> Self {
        Self(RandomState::new(), RandomState::new())
    }

    fn of(&self, key: &[u8]) -> ClassId {
        (u128::from(self.0.hash_one(key)) << 64) | u128::from(self.1.hash_one(key))
    }
}

#[derive(Debug)]
struct PartitionState {
    /// The first offset this instance processed.
    first: i64,
    /// The offset after the highest counted.
    next: i64,
    /// The offset after the highest shown to [`RiskWatch::catch_up`] (a record the stage
    /// quarantines is shown, not counted): past it lies a gap.
    seen: i64,
    tenants: Map<String, TenantWindows>,
}

impl PartitionState {
    /// A partition this instance holds from `first` on.
    fn from(first: i64) -> Self {
        Self {
            first,
            next: first,
            seen: first,
            tenants: Map::default(),
        }
    }
}

#[derive(Debug)]
struct TenantWindows {
    settings: TenantRisk,
    /// The open window's index.
    index: u64,
    open: Window,
    /// What window `index - 1` released, if this instance saw it whole.
    previous: Option<Released>,
    /// What window `index - 2` released, for a rewind into window `index - 1`.
    before: Option<Released>,
    /// The tenant's `outcome="generalized"` and `outcome="suppressed"` counters.
    generalized: IntCounter,
    suppressed: IntCounter,
}

/// One window's classes, in buffers kept from window to window: no allocation per event.
#[derive(Debug, Default)]
struct Window {
    /// Each class's index in `counted`.
    classes: Map<ClassId, usize>,
    /// Per class: its id, its events and how many distinct subjects it holds (at most k).
    counted: Vec<(ClassId, u64, usize)>,
    /// k slots per class: its distinct subject hashes.
    subjects: Vec<u64>,
    /// The classes' key bytes, one after the other, kept where the tenant enforces k (its
    /// coarser groups are made from them when the window closes), and where each ends.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    events: u64,
    /// Events of classes past the cap.
    uncounted: u64,
    /// Whether this instance saw the window from its first offset.
    whole: bool,
}

/// What a window released, settled when it closed.
#[derive(Debug, Default)]
struct Released {
    /// Each class the window counted, with the lowest level it was released at (the last
    /// level, suppressed, for a class never released): one lookup per event. Classes it
    /// did not count join once their level was searched (at most `max_classes` of them),
    /// so that a class seen again searches no more.
    classes: Map<ClassId, usize>,
    /// Classes searched and remembered in `classes`.
    searched: usize,
    /// Per level, the groups released at that level, for an event whose class the window
    /// did not count (new, or past the cap).
    groups: Vec<HashSet<ClassId, foldhash::fast::FixedState>>,
}

impl RiskWatch {
    /// A watch over `policy`'s quasi-identifiers, its metrics in `registry`; none when the
    /// policy has no `[risk]`.
    pub fn for_policy(
        policy: &Policy,
        registry: &Registry,
    ) -> Result<Option<Self>, plumbing::prometheus::Error> {
        let Some(risk) = policy.risk() else {
            return Ok(None);
        };
        Ok(Some(Self {
            risk: risk.clone(),
            ids: ClassIds::new(),
            metrics: RiskMetrics::new(registry)?,
            partitions: Map::default(),
            closed: HashMap::new(),
            key: Vec::new(),
            rewritten: Vec::new(),
            spans: Vec::new(),
            history: None,
        }))
    }

    /// Rebuilds the windows this instance did not see from `history`, each rebuild within
    /// `budget`.
    pub fn read_back_from(&mut self, history: Box<dyn History>, budget: Duration) {
        self.history = Some((history, budget));
    }

    /// Whether some tenant enforces k.
    pub fn enforces(&self) -> bool {
        self.risk.enforces_any()
    }

    /// Before the record at `origin` is decided: when the watch lacks the windows its
    /// decision needs (the partition's first record here, or an offset past a gap), reads
    /// them back from its [`History`] and counts each record `classify` accepts, as
    /// [`RiskWatch::observe`] would have, without enforcing anything. Nothing to do without
    /// a history.
    pub fn catch_up<'e>(&mut self, origin: Origin, classify: &mut Classify<'e>) {
        let Origin { partition, offset } = origin;
        if partition < 0 || offset < 0 || self.history.is_none() {
            return;
        }
        let seen = self
            .partitions
            .get_mut(&partition)
            .map(|state| &mut state.seen);
        if let Some(seen) = seen {
            if offset <= *seen {
                // Seen, or next in line: a rewind, or the record after the last.
                *seen = (*seen).max(offset + 1);
                return;
            }
        }
        let needed = self.needed_from(offset);
        let from = match self.partitions.get(&partition).map(|state| state.seen) {
            // A gap: only it is missing.
            Some(seen) if seen >= needed => seen,
            // Far past what this instance holds (the partition was elsewhere meanwhile).
            Some(_) => {
                self.partitions.remove(&partition);
                needed
            }
            None => needed,
        };
        if from < offset {
            if let Some((mut history, budget)) = self.history.take() {
                let started = Instant::now();
                let read =
                    self.rebuild(history.as_mut(), budget, partition, from..offset, classify);
                self.history = Some((history, budget));
                match read {
                    Ok(records) => {
                        self.metrics.rebuild_records.inc_by(records);
                        info!(
                            partition,
                            from,
                            to = offset,
                            records,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "Risk windows rebuilt from the raw topic."
                        );
                    }
                    Err(error) => {
                        // What was half counted goes: the partition starts afresh at this
                        // record, and the windows it lacks leave suppressed.
                        self.partitions.remove(&partition);
                        warn!(%error, partition, from, to = offset, "Risk windows could not be rebuilt from the raw topic: the windows they decide leave suppressed.");
                    }
                }
            }
        }
        let state = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::from(offset));
        state.seen = state.seen.max(offset + 1);
    }

    /// The earliest offset a decision at `offset` rests on: the start of the window before
    /// its own, for the tenant that enforces k whose window reaches back furthest.
    fn needed_from(&self, offset: i64) -> i64 {
        std::iter::once(self.risk.defaults())
            .chain(self.risk.tenants().map(|(_, settings)| settings))
            .filter(|settings| settings.enforce_k)
            .map(|settings| {
                let window = settings.window as i64;
                (offset / window - 1).max(0) * window
            })
            .min()
            .unwrap_or(offset)
    }

    /// Reads `offsets` of `partition` back into the windows; the records read.
    fn rebuild(
        &mut self,
        history: &mut dyn History,
        budget: Duration,
        partition: i32,
        offsets: Range<i64>,
        classify: &mut Classify<'_>,
    ) -> Result<u64, Error> {
        let deadline = Instant::now() + budget;
        let held = history.first_held(partition, deadline)?;
        let mut from = offsets.start;
        if held > from {
            // Retention took records this instance did not count: what is held here
            // cannot be completed, so the partition starts afresh where the log does.
            warn!(
                partition,
                needed_from = from,
                held_from = held,
                "The raw topic no longer holds every record the risk windows need: the windows it lacks leave suppressed."
            );
            self.partitions.remove(&partition);
            from = held.min(offsets.end);
        }
        self.partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::from(from));
        let mut out = Vec::new();
        let mut quasi = QuasiValues::new();
        let mut records = 0;
        history.replay(
            partition,
            from..offsets.end,
            deadline,
            &mut |offset, payload| {
                records += 1;
                let Some(payload) = payload else {
                    return; // quarantined by the stage: not counted
                };
                out.clear();
                if let Some((tenant, subject)) = classify(payload, &mut out, &mut quasi) {
                    let origin = Origin { partition, offset };
                    self.step(origin, tenant, subject, &quasi, &mut out, false);
                }
            },
        )?;
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.seen = state.seen.max(offsets.end);
        }
        Ok(records)
    }

    /// Counts one pseudonymized event of `tenant` read at `origin`, whose output is `out`
    /// with its quasi-identifiers at `quasi` and its subject's token at `subject`; where
    /// the tenant enforces k, rewrites `out` as the verdict says.
    pub fn observe(
        &mut self,
        origin: Origin,
        tenant: &str,
        subject: Option<Range<usize>>,
        quasi: &QuasiValues,
        out: &mut Vec<u8>,
    ) -> Verdict {
        self.step(origin, tenant, subject, quasi, out, true)
    }

    /// [`RiskWatch::observe`]; a rebuild counts only (`decide` false).
    fn step(
        &mut self,
        origin: Origin,
        tenant: &str,
        subject: Option<Range<usize>>,
        quasi: &QuasiValues,
        out: &mut Vec<u8>,
        decide: bool,
    ) -> Verdict {
        let Origin { partition, offset } = origin;
        if partition < 0 || offset < 0 {
            return Verdict::Kept;
        }
        let offset = offset as u64;
        let partition_state = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::from(origin.offset));
        let fresh = origin.offset >= partition_state.next;
        if fresh {
            partition_state.next = origin.offset + 1;
        }
        let first = partition_state.first.max(0) as u64;
        let windows = match partition_state.tenants.get_mut(tenant) {
            Some(windows) => windows,
            None => {
                let settings = self.risk.tenant(tenant);
                let index = offset / settings.window;
                partition_state
                    .tenants
                    .entry(tenant.to_owned())
                    .or_insert(TenantWindows {
                        settings,
                        index,
                        open: Window {
                            whole: first <= index * settings.window,
                            ..Window::default()
                        },
                        previous: (index == 0).then(Released::default),
                        before: None,
                        generalized: self.metrics.enforced(tenant, "generalized"),
                        suppressed: self.metrics.enforced(tenant, "suppressed"),
                    })
            }
        };
        let settings = windows.settings;
        let k = settings.k as usize;
        let index = offset / settings.window;
        if index > windows.index {
            let summary = windows.advance(index, first, &self.risk, &self.ids);
            record(&mut self.closed, &self.metrics, tenant, partition, summary);
        }
        encode(&self.risk, quasi, out, 0, &mut self.key);
        let id = self.ids.of(&self.key);
        if fresh && index == windows.index {
            let subject = subject_hash(subject.map(|span| &out[span]), partition, offset);
            let max_classes = self.risk.max_classes();
            let key = settings.enforce_k.then_some(self.key.as_slice());
            windows.open.count(id, key, subject, k, max_classes);
        }
        let verdict = if settings.enforce_k && decide {
            let released = if index == windows.index {
                windows.previous.as_mut()
            } else if index + 1 == windows.index {
                windows.before.as_mut()
            } else {
                None
            };
            let max = self.risk.max_level();
            let level = released.map_or(max, |released| {
                released.level(&self.risk, &self.ids, id, quasi, out, &mut self.key)
            });
            enforce(
                &self.risk,
                level,
                quasi,
                out,
                &mut self.rewritten,
                &mut self.spans,
            )
        } else {
            Verdict::Kept
        };
        if fresh && index == windows.index && offset + 1 >= (index + 1) * settings.window {
            // The window's last offset: close it now, so that the gauge does not wait for
            // the next window's first event.
            let summary = windows.advance(index + 1, first, &self.risk, &self.ids);
            record(&mut self.closed, &self.metrics, tenant, partition, summary);
        }
        match verdict {
            Verdict::Kept => {}
            Verdict::Generalized(_) => windows.generalized.inc(),
            Verdict::Suppressed => windows.suppressed.inc(),
        }
        verdict
    }
}

impl Released {
    /// The lowest level at which the event's class (id `id`) was released.
    fn level(
        &mut self,
        risk: &Risk,
        ids: &ClassIds,
        id: ClassId,
        quasi: &QuasiValues,
        out: &[u8],
        key: &mut Vec<u8>,
    ) -> usize {
        let max = risk.max_level();
        if let Some(&level) = self.classes.get(&id) {
            return level;
        }
        // A class the window did not count can only join a coarser group it released.
        let level = (1..=max)
            .find(|&level| {
                self.groups.get(level).is_some_and(|groups| {
                    !groups.is_empty() && {
                        encode(risk, quasi, out, level, key);
                        groups.contains(&ids.of(key))
                    }
                })
            })
            .unwrap_or(max);
        if self.searched < risk.max_classes() {
            self.searched += 1;
            self.classes.insert(id, level);
        }
        level
    }
}

/// `out` rewritten at `level`, and the verdict that says so.
fn enforce(
    risk: &Risk,
    level: usize,
    quasi: &QuasiValues,
    out: &mut Vec<u8>,
    rewritten: &mut Vec<u8>,
    spans: &mut Vec<(usize, Range<usize>)>,
) -> Verdict {
    if level == 0 {
        return Verdict::Kept;
    }
    rewrite(risk, quasi, out, level, rewritten, spans);
    std::mem::swap(out, rewritten);
    if level == risk.max_level() {
        Verdict::Suppressed
    } else {
        Verdict::Generalized(level)
    }
}

/// Stores a closed window's (events, events below k) and sets the tenant's gauge to the
/// share over the last closed window of every partition.
fn record(
    closed: &mut HashMap<String, BTreeMap<i32, (u64, u64)>>,
    metrics: &RiskMetrics,
    tenant: &str,
    partition: i32,
    summary: (u64, u64),
) {
    let partitions = closed.entry(tenant.to_owned()).or_default();
    partitions.insert(partition, summary);
    let (events, below) = partitions
        .values()
        .fold((0, 0), |(e, b), &(events, below)| (e + events, b + below));
    let ratio = if events == 0 {
        0.0
    } else {
        below as f64 / events as f64
    };
    metrics.below_k.with_label_values(&[tenant]).set(ratio);
    metrics.windows.with_label_values(&[tenant]).inc();
}

impl TenantWindows {
    /// Closes the open window and opens window `index`; returns the closed window's
    /// (events, events below k).
    fn advance(&mut self, index: u64, first: u64, risk: &Risk, ids: &ClassIds) -> (u64, u64) {
        let k = self.settings.k as usize;
        let summary = self.open.summary(k);
        let released =
            (self.open.whole && self.settings.enforce_k).then(|| self.open.release(risk, ids, k));
        let next = index == self.index + 1;
        self.before = if next { self.previous.take() } else { None };
        self.previous = if next {
            released
        } else if first <= (index - 1) * self.settings.window {
            // The windows in between held no event of this tenant, and were seen.
            Some(Released::default())
        } else {
            None
        };
        self.index = index;
        self.open.clear(first <= index * self.settings.window);
        summary
    }
}

impl Window {
    /// Counts an event of class `id` (its key bytes `key`, where they are kept).
    fn count(
        &mut self,
        id: ClassId,
        key: Option<&[u8]>,
        subject: u64,
        k: usize,
        max_classes: usize,
    ) {
        self.events += 1;
        let class = match self.classes.get(&id) {
            Some(&class) => class,
            None if self.counted.len() >= max_classes => {
                self.uncounted += 1;
                return;
            }
            None => {
                let class = self.counted.len();
                self.classes.insert(id, class);
                self.counted.push((id, 0, 0));
                self.subjects.resize(self.subjects.len() + k, 0);
                if let Some(key) = key {
                    self.keys.extend_from_slice(key);
                    self.key_ends.push(self.keys.len());
                }
                class
            }
        };
        let (_, events, held) = &mut self.counted[class];
        *events += 1;
        let slots = &mut self.subjects[class * k..(class + 1) * k];
        if *held < k && !slots[..*held].contains(&subject) {
            slots[*held] = subject;
            *held += 1;
        }
    }

    fn summary(&self, k: usize) -> (u64, u64) {
        let below: u64 = self
            .counted
            .iter()
            .filter(|(_, _, held)| *held < k)
            .map(|(_, events, _)| events)
            .sum();
        (self.events, below + self.uncounted)
    }

    /// Empties the window for the next one, keeping its buffers.
    fn clear(&mut self, whole: bool) {
        self.classes.clear();
        self.counted.clear();
        self.subjects.clear();
        self.keys.clear();
        self.key_ends.clear();
        self.events = 0;
        self.uncounted = 0;
        self.whole = whole;
    }

    /// The key bytes of class `class` (kept where the tenant enforces k).
    fn key(&self, class: usize) -> &[u8] {
        let start = class
            .checked_sub(1)
            .map_or(0, |before| self.key_ends[before]);
        &self.keys[start..self.key_ends[class]]
    }

    /// Level by level, the classes that gather k subjects among those no lower level
    /// released.
    fn release(&self, risk: &Risk, ids: &ClassIds, k: usize) -> Released {
        let max = risk.max_level();
        let mut released = Released {
            classes: Map::with_capacity_and_hasher(self.counted.len(), Default::default()),
            searched: 0,
            groups: Vec::with_capacity(max + 1),
        };
        // The classes not released yet, by index.
        let mut residual: Vec<usize> = (0..self.counted.len()).collect();
        // The groups of one level: their indices, sizes and k subject slots each, and
        // each residual class's group.
        let mut groups: Map<ClassId, usize> = Map::default();
        let mut sizes: Vec<usize> = Vec::new();
        let mut subjects: Vec<u64> = Vec::new();
        let mut group_of: Vec<usize> = Vec::with_capacity(residual.len());
        // Each class's group key at the level before: a level coarsens one quasi-identifier
        // one step further (`steps_at` counts its turns in the schedule), so only that
        // value is coarsened again and spliced in.
        let mut group_keys: Vec<Vec<u8>> = Vec::new();
        let mut value = Vec::new();
        for level in 0..=max {
            groups.clear();
            sizes.clear();
            subjects.clear();
            group_of.clear();
            let changed = (level > 0)
                .then(|| {
                    (0..risk.quasi_identifiers().len())
                        .find(|&qi| risk.steps_at(qi, level) != risk.steps_at(qi, level - 1))
                })
                .flatten();
            if level == 1 {
                group_keys = (0..self.counted.len())
                    .map(|class| self.key(class).to_vec())
                    .collect();
            }
            for &class in &residual {
                let id = match changed {
                    None if level == 0 => self.counted[class].0,
                    None => ids.of(&group_keys[class]),
                    Some(qi) => {
                        let original = &self.key(class)[segment(self.key(class), qi)];
                        value.clear();
                        let present = (original != b"null").then_some(original);
                        risk.coarsen(qi, present, risk.steps_at(qi, level), &mut value);
                        let key = &mut group_keys[class];
                        let range = segment(key, qi);
                        key.splice(range, value.iter().copied());
                        ids.of(key)
                    }
                };
                let next = sizes.len();
                let group = *groups.entry(id).or_insert(next);
                if group == next {
                    sizes.push(0);
                    subjects.resize(subjects.len() + k, 0);
                }
                let held = self.counted[class].2;
                for &subject in &self.subjects[class * k..class * k + held] {
                    let size = &mut sizes[group];
                    let slots = &mut subjects[group * k..(group + 1) * k];
                    if *size < k && !slots[..*size].contains(&subject) {
                        slots[*size] = subject;
                        *size += 1;
                    }
                }
                group_of.push(group);
            }
            released.groups.push(
                groups
                    .iter()
                    .filter(|&(_, &group)| sizes[group] >= k)
                    .map(|(&id, _)| id)
                    .collect(),
            );
            let mut position = 0;
            residual.retain(|&class| {
                let gone = sizes[group_of[position]] >= k;
                position += 1;
                if gone {
                    released.classes.insert(self.counted[class].0, level);
                }
                !gone
            });
        }
        for class in residual {
            released.classes.insert(self.counted[class].0, max);
        }
        released
    }
}

/// The class key of the event at `level`: each quasi-identifier's value, coarsened.
fn encode(risk: &Risk, quasi: &QuasiValues, out: &[u8], level: usize, key: &mut Vec<u8>) {
    key.clear();
    for qi in 0..risk.quasi_identifiers().len() {
        risk.coarsen(qi, quasi.value(qi, out), risk.steps_at(qi, level), key);
        key.push(SEPARATOR);
    }
}

/// Where quasi-identifier `qi`'s value lies in a class key (values each followed by the
/// separator).
fn segment(key: &[u8], qi: usize) -> Range<usize> {
    let mut start = 0;
    for _ in 0..qi {
        start += key[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(key.len() - start, |at| at + 1);
    }
    let end = key[start..]
        .iter()
        .position(|&b| b == SEPARATOR)
        .map_or(key.len(), |at| start + at);
    start..end
}

/// `out` with each quasi-identifier present rewritten at `level`, into `into`; `spans` is
/// scratch.
fn rewrite(
    risk: &Risk,
    quasi: &QuasiValues,
    out: &[u8],
    level: usize,
    into: &mut Vec<u8>,
    spans: &mut Vec<(usize, Range<usize>)>,
) {
    spans.clear();
    spans.extend(
        quasi
            .spans()
            .iter()
            .enumerate()
            .filter_map(|(qi, span)| span.clone().map(|span| (qi, span))),
    );
    spans.sort_unstable_by_key(|(_, span)| span.start);
    into.clear();
    let mut copied = 0;
    for (qi, span) in spans.iter() {
        into.extend_from_slice(&out[copied..span.start]);
        risk.coarsen(
            *qi,
            Some(&out[span.clone()]),
            risk.steps_at(*qi, level),
            into,
        );
        copied = span.end;
    }
    into.extend_from_slice(&out[copied..]);
}

/// A subject: the hash of its token, or of where the event was read when it has none. A
/// collision merges two subjects and can only undercount a class.
fn subject_hash(token: Option<&[u8]>, partition: i32, offset: u64) -> u64 {
    let state = foldhash::quality::FixedState::with_seed(SUBJECT_SEED);
    match token {
        Some(token) => state.hash_one(token),
        None => state.hash_one((partition, offset)),
    }
}

/// The metrics of the watch; the tenant is the only label.
#[derive(Debug, Clone)]
struct RiskMetrics {
    below_k: GaugeVec,
    windows: IntCounterVec,
    enforced: IntCounterVec,
    rebuild_records: IntCounter,
}

impl RiskMetrics {
    fn new(registry: &Registry) -> Result<Self, plumbing::prometheus::Error> {
        let metrics = Self {
            below_k: GaugeVec::new(
                crate::metric_opts(
                    "pseudopipe_risk_events_below_k_ratio",
                    "Share of a tenant's events in classes below k, as the policy writes them (before enforcement), over the last closed window of each partition.",
                ),
                &["tenant"],
            )?,
            windows: IntCounterVec::new(
                crate::metric_opts(
                    "pseudopipe_risk_windows_closed_total",
                    "Risk windows closed, per tenant.",
                ),
                &["tenant"],
            )?,
            enforced: IntCounterVec::new(
                crate::metric_opts(
                    "pseudopipe_risk_events_enforced_total",
                    "Events whose quasi-identifiers enforce_k generalized further (outcome=generalized) or set to null (outcome=suppressed), per tenant.",
                ),
                &["tenant", "outcome"],
            )?,
            rebuild_records: IntCounter::with_opts(crate::metric_opts(
                "pseudopipe_risk_rebuild_records_total",
                "Raw records read back to rebuild the risk windows of a partition this instance had not seen (at start, on a takeover, past a gap).",
            ))?,
        };
        registry.register(Box::new(metrics.below_k.clone()))?;
        registry.register(Box::new(metrics.rebuild_records.clone()))?;
        registry.register(Box::new(metrics.windows.clone()))?;
        registry.register(Box::new(metrics.enforced.clone()))?;
        Ok(metrics)
    }

    /// The tenant's counter of enforced events with `outcome`.
    fn enforced(&self, tenant: &str, outcome: &str) -> IntCounter {
        self.enforced.with_label_values(&[tenant, outcome])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pseudonymize::{MasterSecret, Pseudonymizer};
    use std::sync::{Arc, Mutex};

    /// The ranges a watch asked for, as (start, end).
    type Asked = Arc<Mutex<Vec<(i64, i64)>>>;

    const POLICY: &str = r#"
tenant_field = "tenant"
record_key = "card"
[fields]
tenant = "keep"
card = { action = "token", domain = "customer", normalizer = "exact" }
zip = { action = "generalize", to = "prefix", length = 2 }
store = "keep"
[risk]
quasi_identifiers = ["zip", "store"]
k = 2
window = 4
enforce_k = true
enforce_order = ["store", "zip"]
"#;

    struct Run {
        engine: Pseudonymizer,
        watch: RiskWatch,
        registry: Registry,
    }

    impl Run {
        fn new() -> Self {
            Self::with_policy(POLICY)
        }

        /// A run of `policy`, with keys for tenants `t` and `u`.
        fn with_policy(policy: &str) -> Self {
            let policy = Policy::from_toml(policy).unwrap();
            let registry = Registry::new();
            let watch = RiskWatch::for_policy(&policy, &registry).unwrap().unwrap();
            let secret = MasterSecret::from_bytes([7; 32]);
            let engine = Pseudonymizer::new(
                policy,
                [("t".to_string(), 1, &secret), ("u".to_string(), 1, &secret)],
            );
            Self {
                engine,
                watch,
                registry,
            }
        }

        /// The output of the event `(card, zip, store)` read at `offset` of partition 0.
        fn event(&mut self, offset: i64, event: (&str, &str, &str)) -> String {
            let (_, out) = self.decide(offset, payload(event).as_bytes()).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            format!("{} {}", value["zip"], value["store"])
        }

        /// What the stage does with `payload` read at `offset` of partition 0: the
        /// watch catches up, then the verdict and output bytes of the event, `None` for a
        /// record it quarantines.
        fn decide(&mut self, offset: i64, payload: &[u8]) -> Option<(Verdict, Vec<u8>)> {
            let origin = Origin {
                partition: 0,
                offset,
            };
            let engine = &self.engine;
            self.watch.catch_up(origin, &mut |payload, out, quasi| {
                let outcome = engine.pseudonymize_observed(payload, out, None, quasi);
                outcome
                    .ok()
                    .map(|outcome| (outcome.tenant, outcome.record_key))
            });
            let mut quasi = QuasiValues::new();
            let mut out = Vec::new();
            let outcome = self
                .engine
                .pseudonymize_observed(payload, &mut out, None, &mut quasi)
                .ok()?;
            let subject = outcome.record_key.clone();
            let verdict = self
                .watch
                .observe(origin, outcome.tenant, subject, &quasi, &mut out);
            Some((verdict, out))
        }

        fn ratio(&self) -> f64 {
            self.watch.metrics.below_k.with_label_values(&["t"]).get()
        }
    }

    /// The raw payload of tenant `t`'s event `(card, zip, store)`.
    fn payload(event: (&str, &str, &str)) -> String {
        payload_of("t", event)
    }

    /// The raw payload of `tenant`'s event `(card, zip, store)`.
    fn payload_of(tenant: &str, (card, zip, store): (&str, &str, &str)) -> String {
        format!(r#"{{"tenant":"{tenant}","card":"{card}","zip":"{zip}","store":"{store}"}}"#)
    }

    /// A raw partition held from `low` on, and the ranges a watch asked it for.
    #[derive(Debug)]
    struct Held {
        payloads: Vec<Vec<u8>>,
        low: i64,
        asked: Asked,
    }

    impl History for Held {
        fn first_held(&mut self, _: i32, _: Instant) -> Result<i64, Error> {
            Ok(self.low)
        }

        fn replay(
            &mut self,
            _: i32,
            offsets: Range<i64>,
            _: Instant,
            each: &mut dyn FnMut(i64, Option<&[u8]>),
        ) -> Result<(), Error> {
            self.asked
                .lock()
                .unwrap()
                .push((offsets.start, offsets.end));
            for offset in offsets.start.max(self.low)..offsets.end {
                each(offset, Some(&self.payloads[offset as usize]));
            }
            Ok(())
        }
    }

    /// 24 raw records over six windows of four, each window two pairs of customers of one
    /// class each, one pair shared with the window before; a record the stage quarantines
    /// at offset 9.
    fn raw_input() -> Vec<Vec<u8>> {
        let pairs = [
            [("a", "75011", "s1"), ("b", "75002", "s1")],
            [("c", "75011", "s2"), ("f", "75011", "s2")],
            [("d", "13001", "s3"), ("e", "13002", "s3")],
        ];
        (0..24)
            .map(|i| {
                if i == 9 {
                    return br#"{"tenant":"t","card":"x","zip":"75011","store":"s1","extra":1}"#
                        .to_vec();
                }
                let (window, position) = (i / 4, i % 4);
                payload(pairs[(window + position % 2) % 3][position / 2]).into_bytes()
            })
            .collect()
    }

    /// The decisions of a run over `input` from offset `from`, after `before` (offsets
    /// decided first, as a previous owner's last records), reading back from `held`.
    fn decisions(
        input: &[Vec<u8>],
        before: Range<i64>,
        from: i64,
        held: Option<Held>,
    ) -> Vec<Option<(Verdict, Vec<u8>)>> {
        decisions_under(POLICY, input, before, from, held)
    }

    /// [`decisions`] under `policy`.
    fn decisions_under(
        policy: &str,
        input: &[Vec<u8>],
        before: Range<i64>,
        from: i64,
        held: Option<Held>,
    ) -> Vec<Option<(Verdict, Vec<u8>)>> {
        let mut run = Run::with_policy(policy);
        if let Some(held) = held {
            run.watch
                .read_back_from(Box::new(held), Duration::from_secs(5));
        }
        for offset in before {
            run.decide(offset, &input[offset as usize]);
        }
        (from..input.len() as i64)
            .map(|offset| run.decide(offset, &input[offset as usize]))
            .collect()
    }

    fn held(input: &[Vec<u8>], low: i64) -> (Held, Asked) {
        let asked = Arc::default();
        let held = Held {
            payloads: input.to_vec(),
            low,
            asked: Arc::clone(&asked),
        };
        (held, asked)
    }

    #[test]
    fn a_start_anywhere_rebuilt_from_the_log_writes_what_an_uninterrupted_run_writes() {
        let input = raw_input();
        assert!(
            Run::new().decide(9, &input[9]).is_none(),
            "offset 9 is quarantined"
        );
        let straight = decisions(&input, 0..0, 0, None);
        assert!(
            straight[8..]
                .iter()
                .flatten()
                .any(|(verdict, _)| *verdict == Verdict::Kept),
            "the comparison holds released events"
        );
        // Mid-window, at a window's first offset, in window 0 and 1, next to the
        // quarantined record.
        let mut same_without_the_log = Vec::new();
        for start in [1, 3, 4, 6, 8, 9, 10, 12, 13, 19] {
            let (history, asked) = held(&input, 0);
            let rebuilt = decisions(&input, 0..0, start, Some(history));
            assert_eq!(
                rebuilt,
                straight[start as usize..],
                "started at offset {start}"
            );
            let window_before = (start / 4 - 1).max(0) * 4;
            assert_eq!(
                *asked.lock().unwrap(),
                [(window_before, start)],
                "started at offset {start}"
            );
            if decisions(&input, 0..0, start, None) == rebuilt {
                same_without_the_log.push(start);
            }
        }
        // Without the log, the start's window and the next are suppressed: only a start at
        // window 3's first offset writes the same, window 3 releasing nothing here anyway.
        assert_eq!(same_without_the_log, [12]);
    }

    #[test]
    fn each_tenant_is_rebuilt_in_its_own_windows() {
        // Tenant u's windows are of 6 offsets, t's of 4; every third record is u's, two
        // customers of one class taking turns in each tenant, so that each window of
        // either releases its class to the next.
        let policy = format!("{POLICY}[risk.tenants.u]\nwindow = 6\n");
        let input: Vec<Vec<u8>> = (0..36)
            .map(|i| {
                let (tenant, event) = match (i % 3, i / 3 % 2, i % 2) {
                    (2, 0, _) => ("u", ("a", "75011", "s1")),
                    (2, _, _) => ("u", ("b", "75002", "s1")),
                    (_, _, 0) => ("t", ("c", "75011", "s2")),
                    _ => ("t", ("f", "75011", "s2")),
                };
                payload_of(tenant, event).into_bytes()
            })
            .collect();
        let straight = decisions_under(&policy, &input, 0..0, 0, None);
        let kept_of = |tenant: &str| {
            straight.iter().zip(&input).any(|(decision, raw)| {
                matches!(decision, Some((Verdict::Kept, _)))
                    && raw.starts_with(format!(r#"{{"tenant":"{tenant}""#).as_bytes())
            })
        };
        assert!(kept_of("t") && kept_of("u"), "both tenants release some");
        for start in [5, 7, 13, 20, 27] {
            let (history, asked) = held(&input, 0);
            let rebuilt = decisions_under(&policy, &input, 0..0, start, Some(history));
            assert_eq!(rebuilt, straight[start as usize..], "started at {start}");
            // From the window before, of whichever tenant's reaches back further.
            let needed = [4, 6]
                .map(|window| (start / window - 1).max(0) * window)
                .into_iter()
                .min()
                .unwrap();
            assert_eq!(
                *asked.lock().unwrap(),
                [(needed, start)],
                "started at {start}"
            );
        }
    }

    #[test]
    fn a_gap_or_a_partition_taken_back_later_is_read_back_too() {
        let input = raw_input();
        let straight = decisions(&input, 0..0, 0, None);
        // Offsets 0..10 here, 10..14 elsewhere (a gap within reach of what is held), then
        // 0..5 here and 5..17 elsewhere (too far: rebuilt from window 3, the one before).
        for (before, resume, asked_for) in [(0..10, 14, (10, 14)), (0..5, 17, (12, 17))] {
            let (history, asked) = held(&input, 0);
            let resumed = decisions(&input, before, resume, Some(history));
            assert_eq!(resumed, straight[resume as usize..], "resumed at {resume}");
            assert_eq!(*asked.lock().unwrap(), [asked_for]);
        }
    }

    #[test]
    fn a_window_the_log_no_longer_holds_whole_leaves_the_next_one_suppressed() {
        let input = raw_input();
        let straight = decisions(&input, 0..0, 0, None);
        // Started at 17 (window 4): window 3 is needed from 12, the log holds from 14.
        let (history, asked) = held(&input, 14);
        let rebuilt = decisions(&input, 0..0, 17, Some(history));
        assert_eq!(*asked.lock().unwrap(), [(14, 17)]);
        let window_4 = &rebuilt[..3];
        assert!(
            window_4
                .iter()
                .flatten()
                .all(|(verdict, _)| *verdict == Verdict::Suppressed),
            "{window_4:?}"
        );
        assert_ne!(
            window_4,
            &straight[17..20],
            "the uninterrupted run released some"
        );
        assert_eq!(
            rebuilt[3..],
            straight[20..],
            "window 4 was read whole: window 5 is decided as usual"
        );
    }

    /// Two windows of four events: a class of two customers, a class of one whose store
    /// is shared at zip level "7", and a loner.
    const WINDOW: [(&str, &str, &str); 4] = [
        ("a", "75011", "s1"),
        ("b", "75002", "s1"),
        ("c", "75011", "s2"),
        ("d", "13001", "s3"),
    ];

    #[test]
    fn the_gauge_is_the_share_of_a_closed_window_in_classes_below_k() {
        let mut run = Run::new();
        for (offset, event) in WINDOW.iter().enumerate().take(3) {
            run.event(offset as i64, *event);
        }
        assert_eq!(run.ratio(), 0.0, "no window closed yet");
        run.event(3, WINDOW[3]);
        // Classes ("75","s1") of a and b, ("75","s2") of c, ("13","s3") of d.
        assert_eq!(run.ratio(), 0.5);
        let text = {
            use plumbing::prometheus::Encoder as _;
            let mut body = Vec::new();
            plumbing::prometheus::TextEncoder::new()
                .encode(&run.registry.gather(), &mut body)
                .unwrap();
            String::from_utf8(body).unwrap()
        };
        assert!(
            text.contains(r#"pseudopipe_risk_events_below_k_ratio{stage="ingest",tenant="t"} 0.5"#),
            "{text}"
        );
    }

    #[test]
    fn enforcement_releases_the_lowest_level_the_previous_window_gathered_k_at() {
        let mut run = Run::new();
        let first: Vec<String> = (0..4).map(|i| run.event(i, WINDOW[i as usize])).collect();
        assert_eq!(
            first, ["null null"; 4],
            "window 0 has no window before it: suppressed"
        );
        let second: Vec<String> = (4..8)
            .map(|i| run.event(i, WINDOW[i as usize - 4]))
            .collect();
        assert_eq!(
            second,
            [
                r#""75" "s1""#,
                r#""75" "s1""#,
                // Level 1 (store null): ("75", null) gathers only c; level 2 ("7", null)
                // gathers c alone too (a and b left at level 0); then suppressed.
                "null null",
                "null null",
            ]
        );
        assert_eq!(
            run.ratio(),
            0.5,
            "the gauge counts classes before enforcement"
        );
    }

    #[test]
    fn a_class_released_at_a_coarser_level_holds_k_subjects_of_that_level() {
        let mut run = Run::new();
        let window = [
            ("a", "75011", "s1"),
            ("b", "75002", "s2"),
            ("c", "75011", "s3"),
            ("d", "13001", "s4"),
        ];
        for i in 0..4 {
            run.event(i, window[i as usize]);
        }
        let second: Vec<String> = (4..8)
            .map(|i| run.event(i, window[i as usize - 4]))
            .collect();
        assert_eq!(
            second,
            [r#""75" null"#, r#""75" null"#, r#""75" null"#, "null null"]
        );
    }

    #[test]
    fn the_same_input_gives_the_same_output_after_a_rewind_or_a_restart() {
        let input: Vec<(&str, &str, &str)> = (0..24)
            .map(|i| {
                [
                    ("a", "75011", "s1"),
                    ("b", "75002", "s1"),
                    ("c", "75011", "s2"),
                    ("d", "13001", "s3"),
                    ("e", "13002", "s3"),
                    ("f", "75011", "s2"),
                ][(i * 5 + i / 3) % 6]
            })
            .collect();
        let straight: Vec<String> = {
            let mut run = Run::new();
            (0..24).map(|i| run.event(i, input[i as usize])).collect()
        };
        // An aborted transaction: offsets 9..14 decided, then decided again.
        let rewound: Vec<String> = {
            let mut run = Run::new();
            let mut out: Vec<String> = (0..14).map(|i| run.event(i, input[i as usize])).collect();
            out.truncate(9);
            out.extend((9..24).map(|i| run.event(i, input[i as usize])));
            out
        };
        assert_eq!(rewound, straight);
        // A restart at offset 6 (mid-window 1) with nothing to read back from: windows 1
        // and 2 leave suppressed, then the output is the uninterrupted run's.
        let restarted: Vec<String> = {
            let mut run = Run::new();
            (6..24).map(|i| run.event(i, input[i as usize])).collect()
        };
        assert!(restarted[..6].iter().all(|event| event == "null null"));
        assert_eq!(restarted[6..], straight[12..]);
        assert!(
            straight[12..].iter().any(|event| event != "null null"),
            "the comparison holds released events"
        );
    }

    #[test]
    fn the_leak_guard_forwards_what_enforcement_writes() {
        let policy = Policy::from_toml(
            &include_str!("../../schemas/coupon_redemption.policy.toml")
                .replace("enforce_k = false", "enforce_k = true")
                .replace("k = 5\n", "k = 2\n")
                .replace("window = 100000", "window = 2"),
        )
        .unwrap();
        let guard = pseudonymize::LeakGuard::new(policy.clone());
        let mut watch = RiskWatch::for_policy(&policy, &Registry::new())
            .unwrap()
            .unwrap();
        let secret = MasterSecret::from_bytes([7; 32]);
        let engine = Pseudonymizer::new(policy, [("brand-a".to_string(), 1, &secret)]);
        let event: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/coupon_redemption.json")).unwrap();
        let mut verdicts = Vec::new();
        for (offset, card) in ["4970100000000001", "4970100000000002"]
            .iter()
            .cycle()
            .take(4)
            .enumerate()
        {
            let mut event = event.clone();
            event["tenant"] = "brand-a".into();
            event["customer"]["loyalty_card"] = (*card).into();
            event["device"]["ip"] = format!("10.0.{offset}.1").into();
            let mut quasi = QuasiValues::new();
            let mut out = Vec::new();
            let outcome = engine
                .pseudonymize_observed(event.to_string().as_bytes(), &mut out, None, &mut quasi)
                .unwrap();
            let key = outcome.record_key(&out).map(<[u8]>::to_vec);
            let origin = Origin {
                partition: 0,
                offset: offset as i64,
            };
            verdicts.push(watch.observe(
                origin,
                "brand-a",
                outcome.record_key.clone(),
                &quasi,
                &mut out,
            ));
            guard
                .check(key.as_deref(), &out)
                .unwrap_or_else(|rejection| {
                    panic!("{rejection}: {}", String::from_utf8_lossy(&out))
                });
        }
        assert_eq!(verdicts[..2], [Verdict::Suppressed, Verdict::Suppressed]);
        assert_eq!(
            verdicts[2..],
            [Verdict::Generalized(1), Verdict::Generalized(1)],
            "the networks differ, the rest is shared"
        );
    }

    #[test]
    fn classes_past_the_cap_count_below_k_and_release_nothing() {
        let policy =
            Policy::from_toml(&POLICY.replace("window = 4", "window = 4\nmax_classes = 1"))
                .unwrap();
        let registry = Registry::new();
        let mut run = Run {
            watch: RiskWatch::for_policy(&policy, &registry).unwrap().unwrap(),
            engine: Pseudonymizer::new(
                policy,
                [("t".to_string(), 1, &MasterSecret::from_bytes([7; 32]))],
            ),
            registry,
        };
        for i in 0..4 {
            run.event(
                i,
                [
                    ("a", "75011", "s1"),
                    ("b", "75011", "s1"),
                    ("c", "75011", "s2"),
                    ("d", "75011", "s2"),
                ][i as usize],
            );
        }
        assert_eq!(
            run.ratio(),
            0.5,
            "the second class was not counted: below k"
        );
        assert_eq!(run.event(4, ("a", "75011", "s1")), r#""75" "s1""#);
        assert_eq!(
            run.event(5, ("c", "75011", "s2")),
            "null null",
            "its class was not counted: it released nothing"
        );
    }
}
