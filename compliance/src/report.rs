//! The audit trail rendered for people (`pseudopipe audit report`).
//!
//! [`Trail::read`] verifies the log first (chain, MACs, and the head recorded in the
//! keyring); a log that fails is still rendered, from the entries that can be read, with the failure at
//! the top. [`Trail::render`] builds the report once as a `Document` (sections of tables, one per
//! tenant, plus keyring-wide entries) and written as one self-contained HTML page or as
//! Markdown. Every text that comes from the log or the keyring is escaped for the
//! format, since an actor name or a detail is whatever an operator typed.
//!
//! Entry `details` are space-separated `key=value` pairs (the shared audit vocabulary);
//! the tables show the known keys in columns and every other key as-is.
//!
//! Events tokenized are counted per tenant and key version, apart for ingest and for batch
//! runs (`events_per_version`). A batch run records one entry per tenant with its
//! counts; older logs have one entry for every tenant (`*`) whose counts, when it names
//! several tenants, cannot be split and are shown apart as such. When the log fails
//! verification, every entry table has a column saying which entry is the first bad one
//! and which come after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use pseudonymize::audit::{AuditEntry, AuditRecord};
use pseudonymize::policy::is_valid_tenant;
use pseudonymize::{KeyState, Keyring};

use crate::Error;

/// The page's style sheet, inlined: the page loads nothing.
pub(crate) const STYLE: &str = include_str!("report/style.css");

/// How a report is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One self-contained HTML page.
    Html,
    /// Markdown, e.g. for a ticket or a wiki.
    Markdown,
}

/// What a report covers: the files it names in its header, and optionally one tenant.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The keyring file, as the operator named it.
    pub keyring: &'a Path,
    /// The audit log, as the operator named it.
    pub audit_log: &'a Path,
    /// Only this tenant's sections (keyring-wide entries are always shown).
    pub tenant: Option<&'a str>,
}

/// An audit log read for a report: verified against `keyring`, or, when verification
/// fails, read entry by entry with the failure recorded (a failed log is still shown).
pub struct Trail {
    status: Status,
    entries: Vec<Read>,
}

impl Trail {
    /// Verifies the log at `audit_log` with `keyring` and reads its entries. Only a log
    /// that cannot be read at all is an error; one that fails verification is a trail
    /// whose [`verified`](Self::verified) is false.
    pub fn read(keyring: &Keyring, audit_log: &Path) -> Result<Self, Error> {
        if !audit_log.exists() {
            return Err(Error::NoAuditLog(audit_log.to_path_buf()));
        }
        match keyring.verify_audit(audit_log) {
            Ok(verified) => Ok(Self {
                status: Status::verified(&verified),
                entries: verified
                    .entries
                    .into_iter()
                    .map(|record| Read {
                        record,
                        check: Check::Intact,
                    })
                    .collect(),
            }),
            Err(error) => {
                let bad_line = match &error {
                    pseudonymize::Error::AuditTampered { line, .. } => Some(*line),
                    _ => None,
                };
                let (entries, unreadable) = read_unverified(audit_log, bad_line)?;
                let marked = entries.iter().any(|e| e.check == Check::FirstBad);
                Ok(Self {
                    status: Status::Failed {
                        reason: error.to_string(),
                        unreadable,
                        marked,
                    },
                    entries,
                })
            }
        }
    }

    /// Whether the log verified.
    pub fn verified(&self) -> bool {
        matches!(self.status, Status::Verified { .. })
    }

    /// Checks that `tenant` is in the keyring or in the log, so that a typo is an error
    /// rather than an empty report.
    pub fn check_tenant(&self, keyring: &Keyring, tenant: &str) -> Result<(), Error> {
        if keyring.tenants().any(|t| t == tenant)
            || self.entries.iter().any(|e| e.record.tenant == tenant)
        {
            Ok(())
        } else {
            Err(Error::UnknownTenant(tenant.to_owned()))
        }
    }

    /// The report, written in `format`.
    pub fn render(&self, keyring: &Keyring, scope: &Scope<'_>, format: Format) -> String {
        let document = build(scope, keyring, &self.status, &self.entries);
        match format {
            Format::Html => html(&document),
            Format::Markdown => markdown(&document),
        }
    }
}

/// An entry of the log and what verification says of it.
struct Read {
    record: AuditRecord,
    check: Check,
}

/// What verification says of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Verified, or before the first bad entry of a log that failed (the chain holds up
    /// to there).
    Intact,
    /// The first entry that fails verification.
    FirstBad,
    /// After the first bad entry: nothing vouches for it.
    AfterBad,
}

/// The entries of a log that failed verification, as far as they parse, each checked
/// against the first bad line (1-based, as the verifier counts them), and how many lines
/// did not parse.
fn read_unverified(path: &Path, bad_line: Option<usize>) -> Result<(Vec<Read>, usize), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadAuditLog {
        path: path.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    let mut unreadable = 0;
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let check = match bad_line {
            Some(bad) if index + 1 == bad => Check::FirstBad,
            Some(bad) if index + 1 > bad => Check::AfterBad,
            _ => Check::Intact,
        };
        match serde_json::from_slice::<AuditEntry>(line) {
            Ok(entry) => entries.push(Read {
                record: entry.record,
                check,
            }),
            Err(_) => unreadable += 1,
        }
    }
    Ok((entries, unreadable))
}

/// The verification status shown at the top.
enum Status {
    /// The log verified; its length and head.
    Verified {
        entries: usize,
        head: Option<(u64, String)>,
    },
    /// The log failed; why, how many lines could not even be read, and whether the first
    /// bad line is an entry the tables mark.
    Failed {
        reason: String,
        unreadable: usize,
        marked: bool,
    },
}

impl Status {
    fn verified(verified: &pseudonymize::audit::Verified) -> Self {
        Self::Verified {
            entries: verified.entries.len(),
            head: verified.head.as_ref().map(|h| (h.seq, h.hash.clone())),
        }
    }

    fn banner(&self) -> Banner {
        match self {
            Self::Verified { head: None, .. } => Banner {
                ok: true,
                text: "Verified: the log is empty, as the keyring expects.".into(),
            },
            Self::Verified {
                entries,
                head: Some((seq, hash)),
            } => Banner {
                ok: true,
                text: format!(
                    "Verified: {entries} entries, the chain is intact up to sequence {seq} (hash {}) and reaches the head recorded in the keyring.",
                    &hash[..hash.len().min(16)]
                ),
            },
            Self::Failed {
                reason,
                unreadable,
                marked,
            } => Banner {
                ok: false,
                text: format!(
                    "Verification FAILED: {reason}. The entries below were read without verification: they may have been altered, removed, reordered or added.{}{}",
                    if *marked {
                        " The first bad entry is marked FAILS VERIFICATION in every table it appears in, and the entries after it unverified."
                    } else {
                        ""
                    },
                    if *unreadable > 0 {
                        format!(" {unreadable} lines could not be read at all.")
                    } else {
                        String::new()
                    }
                ),
            },
        }
    }
}

/// A rendered report, independent of its format.
struct Document {
    title: String,
    meta: String,
    banner: Banner,
    sections: Vec<Section>,
}

/// The verification status line.
struct Banner {
    ok: bool,
    text: String,
}

/// One tenant, or the keyring-wide entries.
struct Section {
    heading: String,
    tables: Vec<Table>,
}

/// A table with a heading, an optional note under it and a text for when it is empty.
struct Table {
    heading: String,
    columns: Vec<String>,
    rows: Vec<Row>,
    note: Option<String>,
    empty: String,
}

/// One row, and whether its entry failed verification.
struct Row {
    cells: Vec<Cell>,
    check: Check,
}

impl Row {
    fn intact(cells: Vec<Cell>) -> Self {
        Self {
            cells,
            check: Check::Intact,
        }
    }
}

/// One cell, with how it should stand out.
struct Cell {
    text: String,
    tone: Tone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tone {
    Plain,
    Good,
    /// An error or a failure: a suspended tenant, an entry that fails verification.
    Bad,
    /// Key material erased on purpose (crypto-shredding): not an error, and not drawn as one.
    Destroyed,
    Muted,
    /// A date and time, kept on one line.
    Time,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self::toned(text, Tone::Plain)
    }

    fn time(text: impl Into<String>) -> Self {
        Self::toned(text, Tone::Time)
    }

    fn toned(text: impl Into<String>, tone: Tone) -> Self {
        let text = text.into();
        if text.is_empty() {
            Self {
                text: "—".into(),
                tone: Tone::Muted,
            }
        } else {
            Self { text, tone }
        }
    }
}

/// What a column of an entry table shows.
#[derive(Clone, Copy)]
enum Col {
    Seq,
    Time,
    Actor,
    Action,
    Version,
    Fingerprint,
    /// The value of one `details` key.
    Detail(&'static str),
    /// `offsets=0:1200,1:1187`: the first input offset per partition.
    Offsets(&'static str),
    /// `events=v1:52000,v2:48000`: events per key version.
    Events(&'static str),
    /// The `details` keys no other column of the table shows, as written.
    Other,
    /// The whole `details`, as written.
    Details,
}

/// A table of the entries with some actions.
struct View {
    heading: &'static str,
    /// The actions shown; every action when empty.
    actions: &'static [&'static str],
    columns: &'static [(&'static str, Col)],
    empty: &'static str,
}

/// The entry tables of a tenant, in the order shown.
const VIEWS: &[View] = &[
    View {
        heading: "Key switches of running ingests",
        actions: &["key_switch", "tenant_suspended"],
        columns: &[
            ("Time", Col::Time),
            ("Event", Col::Action),
            ("Instance", Col::Detail("instance")),
            ("Topic", Col::Detail("topic")),
            ("From version", Col::Detail("previous")),
            ("To version", Col::Version),
            ("Fingerprint", Col::Fingerprint),
            ("First offset per partition", Col::Offsets("offsets")),
            (
                "Events with the previous version",
                Col::Detail("events_previous"),
            ),
            ("Other details", Col::Other),
        ],
        empty: "No running ingest recorded a key switch.",
    },
    View {
        heading: "Ingest runs and batch runs",
        actions: &["ingest_start", "ingest_stop", "batch"],
        columns: &[
            ("Seq", Col::Seq),
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Event", Col::Action),
            ("Phase", Col::Detail("phase")),
            ("Batch run", Col::Detail("run")),
            ("Input", Col::Detail("input")),
            ("Instance", Col::Detail("instance")),
            ("Topic", Col::Detail("topic")),
            ("Events per version", Col::Events("events")),
            ("Other details", Col::Other),
        ],
        empty: "No ingest or batch run is recorded.",
    },
    View {
        heading: "Data-subject requests and token lookups",
        actions: &["subject", "lookup"],
        columns: &[
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Request", Col::Action),
            ("Ticket", Col::Detail("ticket")),
            ("Fields", Col::Detail("fields")),
            ("Versions", Col::Detail("versions")),
            ("Scanned topic", Col::Detail("scan_topic")),
            ("Matches", Col::Detail("matches")),
            ("Other details", Col::Other),
        ],
        empty: "No data-subject request or lookup is recorded.",
    },
    View {
        heading: "Re-identifications",
        actions: &["reidentify"],
        columns: &[
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Ticket", Col::Detail("ticket")),
            ("Reason", Col::Detail("reason")),
            ("Field", Col::Detail("field")),
            ("Domain", Col::Detail("domain")),
            ("Versions", Col::Detail("versions")),
            ("Values", Col::Detail("values")),
            ("Other details", Col::Other),
        ],
        empty: "No value was re-identified.",
    },
    View {
        heading: "Quarantine replays and values shown",
        actions: &["quarantine_replay", "quarantine_show"],
        columns: &[
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Event", Col::Action),
            ("Ticket", Col::Detail("ticket")),
            ("Phase", Col::Detail("phase")),
            ("Quarantine topic", Col::Detail("topic")),
            ("Replayed to", Col::Detail("to")),
            ("Records", Col::Detail("records")),
            ("Other details", Col::Other),
        ],
        empty: "No quarantined record was replayed or shown.",
    },
    View {
        heading: "Cross-version bridges",
        actions: &["bridge_start", "bridge_end"],
        columns: &[
            ("Time", Col::Time),
            ("Event", Col::Action),
            ("Instance", Col::Detail("instance")),
            ("Topic", Col::Detail("topic")),
            ("From version", Col::Detail("from")),
            ("To version", Col::Detail("to")),
            ("Overlap", Col::Detail("overlap")),
            ("Pairs", Col::Detail("pairs")),
            ("Other details", Col::Other),
        ],
        empty: "No bridge between key versions is recorded.",
    },
    View {
        heading: "KEK rewraps",
        actions: &["rewrap"],
        columns: &[
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Version", Col::Version),
            ("Details", Col::Details),
        ],
        empty: "No rewrap is recorded here.",
    },
    View {
        heading: "Every entry",
        actions: &[],
        columns: &[
            ("Seq", Col::Seq),
            ("Time", Col::Time),
            ("Actor", Col::Actor),
            ("Action", Col::Action),
            ("Version", Col::Version),
            ("Fingerprint", Col::Fingerprint),
            ("Details", Col::Details),
        ],
        empty: "No entry.",
    },
];

/// The tenants an older `batch` entry for every tenant (`*`) counted events of, from its
/// `tenants=` detail; `None` for any other entry. Such entries added the tenants' counts
/// per version together.
fn shared_batch_tenants(entry: &AuditRecord) -> Option<Vec<&str>> {
    if entry.action != "batch" || entry.tenant != "*" {
        return None;
    }
    let details = Details::parse(entry.details.as_deref());
    details.get("events").filter(|events| *events != "none")?;
    Some(
        details
            .get("tenants")
            .unwrap_or_default()
            .split(',')
            .filter(|t| is_valid_tenant(t))
            .collect(),
    )
}

/// Builds the document: the tenants of the keyring and the log (or `--tenant`), then the
/// entries that name no tenant.
fn build(scope: &Scope<'_>, keyring: &Keyring, status: &Status, entries: &[Read]) -> Document {
    let failed = matches!(status, Status::Failed { .. });
    let mut tenants: BTreeSet<&str> = keyring.tenants().collect();
    tenants.extend(
        entries
            .iter()
            .map(|e| e.record.tenant.as_str())
            .filter(|t| is_valid_tenant(t)),
    );
    if let Some(only) = scope.tenant {
        tenants.retain(|t| *t == only);
    }
    let mut sections = Vec::new();
    for tenant in tenants {
        let own: Vec<&Read> = entries
            .iter()
            .filter(|e| e.record.tenant == tenant)
            .collect();
        // Older batch entries for every tenant that name this one: its runs, shown with
        // its own (their counts are shared, see `versions_table`).
        let runs: Vec<&Read> = entries
            .iter()
            .filter(|e| {
                e.record.tenant == tenant
                    || shared_batch_tenants(&e.record).is_some_and(|t| t.contains(&tenant))
            })
            .collect();
        let mut tables = vec![versions_table(keyring, tenant, &runs, failed)];
        tables.extend(VIEWS.iter().map(|view| {
            let shown = if view.actions.contains(&"batch") {
                &runs
            } else {
                &own
            };
            entry_table(view, shown, failed)
        }));
        sections.push(Section {
            heading: format!("Tenant {tenant}"),
            tables,
        });
    }
    let wide: Vec<&Read> = entries
        .iter()
        .filter(|e| !is_valid_tenant(&e.record.tenant))
        .collect();
    if !wide.is_empty() {
        sections.push(Section {
            heading: "Keyring-wide entries".into(),
            tables: VIEWS
                .iter()
                .map(|view| entry_table(view, &wide, failed))
                .collect(),
        });
    }
    let generated = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats as RFC 3339");
    Document {
        title: "pseudopipe audit report".into(),
        meta: format!(
            "Keyring {}, audit log {}, generated {generated} by pseudopipe {}.",
            scope.keyring.display(),
            scope.audit_log.display(),
            env!("CARGO_PKG_VERSION")
        ),
        banner: status.banner(),
        sections,
    }
}

/// The key versions of `tenant` with their life cycle and the events tokenized with each,
/// by ingest and by batch runs. `entries` are the tenant's own and the older shared batch
/// entries that name it.
fn versions_table(keyring: &Keyring, tenant: &str, entries: &[&Read], failed: bool) -> Table {
    let counted = events_per_version(tenant, entries);
    let events = &counted.per_version;
    let counts = |version: u32| -> [Cell; 3] {
        let totals = events.get(&version).copied().unwrap_or_default();
        let cell = |count: Option<Count>| count.map_or_else(|| Cell::plain(""), |c| c.cell());
        [
            cell(totals.ingest),
            cell(totals.batch),
            cell(totals.total()),
        ]
    };
    let mut rows = Vec::new();
    let mut numbers = BTreeSet::new();
    for v in keyring.versions(tenant).unwrap_or_default() {
        numbers.insert(v.version);
        let tone = match v.state {
            KeyState::Active => Tone::Good,
            KeyState::Retired => Tone::Plain,
            KeyState::Destroyed => Tone::Destroyed,
        };
        let date = |d: &Option<String>| Cell::time(d.clone().unwrap_or_default());
        let mut cells = vec![
            Cell::plain(v.version.to_string()),
            Cell::toned(v.state.name(), tone),
            Cell::plain(&v.fingerprint),
            Cell::time(&v.created_at),
            date(&v.activated_at),
            date(&v.retired_at),
            Cell::toned(v.destroyed_at.clone().unwrap_or_default(), Tone::Time),
        ];
        cells.extend(counts(v.version));
        rows.push(Row::intact(cells));
    }
    // Versions the log counts events for but the keyring does not hold (another keyring,
    // or one restored from an older backup).
    for version in events.keys().filter(|v| !numbers.contains(v)) {
        let mut cells = vec![
            Cell::plain(version.to_string()),
            Cell::toned("not in the keyring", Tone::Bad),
        ];
        cells.extend((0..5).map(|_| Cell::plain("")));
        cells.extend(counts(*version));
        rows.push(Row::intact(cells));
    }
    let mut note = String::from(
        "Events are added up from the tenant's ingest_stop entries (by ingest) and from the \
         end entries of completed batch runs, which record their counts per tenant and \
         version (by batch runs); a failed batch run wrote no output file and counts nothing. \
         ≥ marks a lower bound taken from the key switches of an ingest run that recorded no \
         stop (still running, or killed).",
    );
    if counted.legacy_exact > 0 {
        let _ = write!(
            note,
            " {} older batch run(s) recorded their counts for every tenant (*) but wrote \
             events of {tenant} only: they are counted here as they are exact.",
            counted.legacy_exact
        );
    }
    for shared in &counted.shared {
        let _ = write!(
            note,
            " NOT COUNTED ABOVE: the batch run ending at sequence {} (an older entry) \
             recorded {} for tenants {} together; those counts cannot be split by tenant.",
            shared.seq,
            shared
                .events
                .iter()
                .map(|(v, n)| format!("v{v}: {}", Count::exact(*n).display()))
                .collect::<Vec<_>>()
                .join(", "),
            shared.tenants.join(", ")
        );
    }
    if failed {
        note.push_str(
            " The log does not verify: these counts come from entries read without \
             verification.",
        );
    }
    Table {
        heading: "Key versions".into(),
        columns: [
            "Version",
            "State",
            "Fingerprint",
            "Created",
            "Activated",
            "Retired",
            "Destroyed",
            "Events by ingest",
            "Events by batch runs",
            "Events tokenized",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        note: Some(note),
        empty: format!("Tenant {tenant} is not in the keyring."),
    }
}

/// Events tokenized with one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    events: u64,
    /// Part of it comes from an ingest run that recorded no stop: at least this many.
    lower_bound: bool,
    /// Part of it comes from an entry that fails verification or follows one.
    unverified: bool,
}

impl Count {
    fn exact(events: u64) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }

    fn add(&mut self, other: Count) {
        self.events += other.events;
        self.lower_bound |= other.lower_bound;
        self.unverified |= other.unverified;
    }

    /// The count in a cell: red, and saying so, when an unverified entry is part of it.
    fn cell(&self) -> Cell {
        if self.unverified {
            Cell::toned(format!("{} (unverified)", self.display()), Tone::Bad)
        } else {
            Cell::plain(self.display())
        }
    }

    fn display(&self) -> String {
        let digits = self.events.to_string();
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if self.lower_bound {
            format!("≥ {grouped}")
        } else {
            grouped
        }
    }
}

/// The events of one version of a tenant: by ingest and by batch runs, each `None` when
/// no entry counts any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    ingest: Option<Count>,
    batch: Option<Count>,
}

impl Totals {
    fn total(&self) -> Option<Count> {
        match (self.ingest, self.batch) {
            (None, None) => None,
            (ingest, batch) => {
                let mut total = ingest.unwrap_or_default();
                total.add(batch.unwrap_or_default());
                Some(total)
            }
        }
    }
}

/// An older batch entry that counted several tenants together.
#[derive(Debug, PartialEq, Eq)]
struct Shared {
    seq: u64,
    tenants: Vec<String>,
    events: BTreeMap<u32, u64>,
}

/// What the entries of one tenant count.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counted {
    per_version: BTreeMap<u32, Totals>,
    /// Older entries for every tenant that named only this one: counted.
    legacy_exact: usize,
    /// Older entries for every tenant that named several: not counted.
    shared: Vec<Shared>,
}

/// Events tokenized per version for `tenant`: its `ingest_stop` entries count exactly for
/// ingest (a run's stop gives its totals), and the `events_previous` of its key switches
/// only for a run that recorded no stop, as a lower bound; its `batch` end entries count
/// for batch runs (a `batch` entry with `phase=start` or `phase=failed` counts nothing).
/// An older `batch` entry for every tenant counts when it names `tenant` alone, and is
/// set apart when it names several.
fn events_per_version(tenant: &str, entries: &[&Read]) -> Counted {
    /// Adds `counts` to the batch or ingest totals; `like` says whether they are a lower
    /// bound and whether they are unverified.
    fn add(
        totals: &mut BTreeMap<u32, Totals>,
        counts: &BTreeMap<u32, u64>,
        batch: bool,
        like: Count,
    ) {
        for (version, events) in counts {
            let total = totals.entry(*version).or_default();
            let count = if batch {
                &mut total.batch
            } else {
                &mut total.ingest
            };
            count.get_or_insert_default().add(Count {
                events: *events,
                ..like
            });
        }
    }
    fn lower_bound(unverified: bool) -> Count {
        Count {
            lower_bound: true,
            unverified,
            ..Count::default()
        }
    }
    let mut counted = Counted::default();
    let totals = &mut counted.per_version;
    // Per ingest instance, what its current run's key switches counted so far, and
    // whether one of them is unverified.
    let mut running: BTreeMap<String, (BTreeMap<u32, u64>, bool)> = BTreeMap::new();
    for read in entries {
        let entry = &read.record;
        let exact = Count {
            unverified: read.check != Check::Intact,
            ..Count::default()
        };
        let details = Details::parse(entry.details.as_deref());
        if let Some(tenants) = shared_batch_tenants(entry) {
            let events = parse_events(details.get("events"));
            if tenants == [tenant] {
                add(totals, &events, true, exact);
                counted.legacy_exact += 1;
            } else if tenants.contains(&tenant) && !events.is_empty() {
                counted.shared.push(Shared {
                    seq: entry.seq,
                    tenants: tenants.iter().map(|t| t.to_string()).collect(),
                    events,
                });
            }
            continue;
        }
        if entry.tenant != tenant {
            continue;
        }
        let instance = details.get("instance").unwrap_or_default().to_string();
        match entry.action.as_str() {
            "batch" if matches!(details.get("phase"), None | Some("end")) => {
                add(totals, &parse_events(details.get("events")), true, exact);
            }
            "ingest_stop" => {
                add(totals, &parse_events(details.get("events")), false, exact);
                running.remove(&instance);
            }
            "ingest_start" => {
                if let Some((previous_run, unverified)) = running.remove(&instance) {
                    add(totals, &previous_run, false, lower_bound(unverified));
                }
            }
            "key_switch" => {
                let previous: Option<u32> = details.get("previous").and_then(|v| v.parse().ok());
                let events: Option<u64> =
                    details.get("events_previous").and_then(|v| v.parse().ok());
                if let (Some(previous), Some(events)) = (previous, events) {
                    let (run, unverified) = running.entry(instance).or_default();
                    *run.entry(previous).or_default() += events;
                    *unverified |= exact.unverified;
                }
            }
            _ => {}
        }
    }
    for (run, unverified) in running.values() {
        add(totals, run, false, lower_bound(*unverified));
    }
    counted
}

/// `v1:52000,v2:48000` as version → events; malformed items are skipped.
fn parse_events(value: Option<&str>) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for item in value.unwrap_or_default().split(',') {
        let Some((version, events)) = item.split_once(':') else {
            continue;
        };
        let version = version.strip_prefix('v').unwrap_or(version).parse();
        if let (Ok(version), Ok(events)) = (version, events.parse::<u64>()) {
            *counts.entry(version).or_default() += events;
        }
    }
    counts
}

/// An entry's `details`: space-separated `key=value` pairs, in order; a word without
/// `=` is kept as a key with no value.
struct Details<'a> {
    pairs: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Details<'a> {
    fn parse(details: Option<&'a str>) -> Self {
        let pairs = details
            .unwrap_or_default()
            .split_whitespace()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word, None),
            })
            .collect();
        Self { pairs }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, value)| *value)
    }

    /// The pairs whose key is not in `shown`, as written.
    fn others(&self, shown: &[&str]) -> String {
        self.pairs
            .iter()
            .filter(|(key, _)| !shown.contains(key))
            .map(|(key, value)| match value {
                Some(value) => format!("{key}={value}"),
                None => (*key).to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A list value (`a,b,c`) with room to wrap.
fn spaced(value: &str) -> String {
    value.replace(',', ", ")
}

/// The table of `view` over `entries`; when the log `failed` verification, with a column
/// saying which entry is the first bad one and which come after it.
fn entry_table(view: &View, entries: &[&Read], failed: bool) -> Table {
    let shown: Vec<&str> = view
        .columns
        .iter()
        .filter_map(|(_, col)| match col {
            Col::Detail(key) | Col::Offsets(key) | Col::Events(key) => Some(*key),
            _ => None,
        })
        .collect();
    let rows = entries
        .iter()
        .filter(|e| view.actions.is_empty() || view.actions.contains(&e.record.action.as_str()))
        .map(|read| {
            let entry = &read.record;
            let details = Details::parse(entry.details.as_deref());
            let mut cells: Vec<Cell> = view
                .columns
                .iter()
                .map(|(_, col)| match col {
                    Col::Seq => Cell::plain(entry.seq.to_string()),
                    Col::Time => Cell::time(&entry.time),
                    Col::Actor => Cell::plain(&entry.actor),
                    Col::Action if shared_batch_tenants(entry).is_some() => {
                        Cell::toned("batch (older entry for every tenant)", Tone::Muted)
                    }
                    Col::Action => Cell::toned(
                        &entry.action,
                        match entry.action.as_str() {
                            "tenant_suspended" => Tone::Bad,
                            "destroy" => Tone::Destroyed,
                            _ => Tone::Plain,
                        },
                    ),
                    Col::Version => {
                        Cell::plain(entry.key_version.map(|v| v.to_string()).unwrap_or_default())
                    }
                    Col::Fingerprint => Cell::plain(entry.fingerprint.clone().unwrap_or_default()),
                    Col::Detail(key) => {
                        Cell::plain(details.get(key).map(spaced).unwrap_or_default())
                    }
                    Col::Offsets(key) => Cell::plain(
                        details
                            .get(key)
                            .unwrap_or_default()
                            .split(',')
                            .filter_map(|item| item.split_once(':'))
                            .map(|(partition, offset)| format!("p{partition}: {offset}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Col::Events(key) => Cell::plain(
                        parse_events(details.get(key))
                            .iter()
                            .map(|(version, events)| {
                                format!("v{version}: {}", Count::exact(*events).display())
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Col::Other => Cell::plain(details.others(&shown)),
                    Col::Details => Cell::plain(entry.details.clone().unwrap_or_default()),
                })
                .collect();
            if failed {
                cells.insert(0, verification_cell(read.check));
            }
            Row {
                cells,
                check: read.check,
            }
        })
        .collect();
    let mut columns: Vec<String> = view
        .columns
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    if failed {
        columns.insert(0, "Verification".into());
    }
    Table {
        heading: view.heading.into(),
        columns,
        rows,
        note: None,
        empty: view.empty.into(),
    }
}

/// What verification says of an entry, in a log that failed.
fn verification_cell(check: Check) -> Cell {
    match check {
        Check::Intact => Cell::toned("chain intact", Tone::Good),
        Check::FirstBad => Cell::toned("✗ FAILS VERIFICATION (first bad entry)", Tone::Bad),
        Check::AfterBad => Cell::toned("unverified (after the bad entry)", Tone::Bad),
    }
}

/// `text` escaped for HTML text and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The document as one HTML page: inline style, no script, no external resource (the
/// content security policy forbids both, should anything slip through).
fn html(document: &Document) -> String {
    let mut page = String::new();
    let title = escape_html(&document.title);
    // Writing to a String cannot fail.
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{title}</h1><p class=\"meta\">{}</p></header>\n\
         <div class=\"status {}\" role=\"status\">{}</div>\n",
        escape_html(&document.meta),
        if document.banner.ok { "ok" } else { "failed" },
        escape_html(&document.banner.text),
    );
    for section in &document.sections {
        let _ = writeln!(
            page,
            "<section>\n<h2>{}</h2>",
            escape_html(&section.heading)
        );
        for table in &section.tables {
            let _ = writeln!(page, "<h3>{}</h3>", escape_html(&table.heading));
            if table.rows.is_empty() {
                let _ = writeln!(page, "<p class=\"empty\">{}</p>", escape_html(&table.empty));
            } else {
                page.push_str("<table>\n<thead><tr>");
                for column in &table.columns {
                    let _ = write!(page, "<th>{}</th>", escape_html(column));
                }
                page.push_str("</tr></thead>\n<tbody>\n");
                for row in &table.rows {
                    page.push_str(match row.check {
                        Check::Intact => "<tr>",
                        Check::FirstBad => "<tr class=\"tampered\">",
                        Check::AfterBad => "<tr class=\"unverified\">",
                    });
                    for cell in &row.cells {
                        let class = match cell.tone {
                            Tone::Plain => "",
                            Tone::Good => " class=\"good\"",
                            Tone::Bad => " class=\"bad\"",
                            Tone::Destroyed => " class=\"destroyed\"",
                            Tone::Muted => " class=\"muted\"",
                            Tone::Time => " class=\"time\"",
                        };
                        let _ = write!(page, "<td{class}>{}</td>", escape_html(&cell.text));
                    }
                    page.push_str("</tr>\n");
                }
                page.push_str("</tbody>\n</table>\n");
            }
            if let Some(note) = &table.note {
                let _ = writeln!(page, "<p class=\"note\">{}</p>", escape_html(note));
            }
        }
        page.push_str("</section>\n");
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// `text` as inert Markdown: no markup, no HTML, no table break.
fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The document as Markdown: headings, the status as a quote, tables.
fn markdown(document: &Document) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "# {}\n\n{}\n\n> **{}** {}\n",
        escape_markdown(&document.title),
        escape_markdown(&document.meta),
        if document.banner.ok { "OK" } else { "FAILED" },
        escape_markdown(&document.banner.text)
    );
    for section in &document.sections {
        let _ = write!(text, "\n## {}\n", escape_markdown(&section.heading));
        for table in &section.tables {
            let _ = write!(text, "\n### {}\n\n", escape_markdown(&table.heading));
            if table.rows.is_empty() {
                let _ = writeln!(text, "_{}_", escape_markdown(&table.empty));
            } else {
                let header: Vec<String> =
                    table.columns.iter().map(|c| escape_markdown(c)).collect();
                let _ = writeln!(text, "| {} |", header.join(" | "));
                let _ = writeln!(text, "|{}", " --- |".repeat(table.columns.len()));
                for row in &table.rows {
                    let cells: Vec<String> = row
                        .cells
                        .iter()
                        .map(|cell| match cell.tone {
                            Tone::Good | Tone::Bad => {
                                format!("**{}**", escape_markdown(&cell.text))
                            }
                            // Emphasized, unlike an error.
                            Tone::Destroyed => format!("*{}*", escape_markdown(&cell.text)),
                            Tone::Plain | Tone::Muted | Tone::Time => escape_markdown(&cell.text),
                        })
                        .collect();
                    let _ = writeln!(text, "| {} |", cells.join(" | "));
                }
            }
            if let Some(note) = &table.note {
                let _ = write!(text, "\n{}\n", escape_markdown(note));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, action: &str, version: Option<u32>, details: &str) -> AuditRecord {
        AuditRecord {
            seq,
            time: "2026-05-01T10:00:00Z".into(),
            actor: "ops".into(),
            action: action.into(),
            tenant: "brand-a".into(),
            key_version: version,
            fingerprint: None,
            details: (!details.is_empty()).then(|| details.into()),
            prev: String::new(),
        }
    }

    fn of(tenant: &str, mut record: AuditRecord) -> AuditRecord {
        record.tenant = tenant.into();
        record
    }

    fn intact(entries: &[AuditRecord]) -> Vec<Read> {
        entries
            .iter()
            .map(|record| Read {
                record: record.clone(),
                check: Check::Intact,
            })
            .collect()
    }

    fn count(events: u64, lower_bound: bool) -> Count {
        Count {
            events,
            lower_bound,
            unverified: false,
        }
    }

    fn ingest(events: u64, lower_bound: bool) -> Totals {
        Totals {
            ingest: Some(count(events, lower_bound)),
            batch: None,
        }
    }

    #[test]
    fn events_add_up_from_batches_and_stops_and_switches_of_unstopped_runs() {
        let entries = [
            entry(1, "batch", None, "phase=end run=0 input=- events=v1:1000"),
            entry(2, "ingest_start", None, "instance=a topic=raw"),
            entry(3, "ingest_start", None, "instance=b topic=raw"),
            entry(
                4,
                "key_switch",
                Some(2),
                "instance=a topic=raw offsets=0:10 previous=1 events_previous=500",
            ),
            entry(
                5,
                "key_switch",
                Some(2),
                "instance=b topic=raw offsets=1:7 previous=1 events_previous=300",
            ),
            // a stops cleanly: its stop gives the run's totals, its switch is not added again.
            entry(6, "ingest_stop", None, "instance=a events=v1:500,v2:250"),
            // b is killed and restarted: its switch counts, as a lower bound.
            entry(7, "ingest_start", None, "instance=b topic=raw"),
            entry(
                8,
                "key_switch",
                Some(3),
                "instance=b offsets=1:90 previous=2 events_previous=40",
            ),
            // Another tenant's entries count for it only.
            of(
                "brand-b",
                entry(9, "batch", None, "phase=end run=0 events=v1:7"),
            ),
        ];
        let read = intact(&entries);
        let refs: Vec<&Read> = read.iter().collect();
        let counted = events_per_version("brand-a", &refs);
        assert_eq!(
            counted.per_version,
            BTreeMap::from([
                (
                    1,
                    Totals {
                        ingest: Some(count(800, true)),
                        batch: Some(count(1000, false)),
                    }
                ),
                (2, ingest(290, true)),
            ])
        );
        assert_eq!(counted.per_version[&1].total(), Some(count(1800, true)));
        assert_eq!(count(1_234_567, false).display(), "1,234,567");
        assert_eq!(count(1800, true).display(), "≥ 1,800");
        assert_eq!(count(999, false).display(), "999");
    }

    /// Each tenant's end entry counts for it; the start, the failed and the closing `*`
    /// entries count nothing; an older `*` entry counts for a tenant it names alone and is
    /// set apart when it names several.
    #[test]
    fn batch_runs_count_per_tenant_and_older_shared_entries_are_set_apart() {
        let entries = [
            of("*", entry(1, "batch", None, "phase=start input=a.jsonl policy=x")),
            entry(2, "batch", Some(2), "phase=end run=1 input=a.jsonl events=v2:300"),
            of("brand-b", entry(3, "batch", Some(2), "phase=end run=1 input=a.jsonl events=v2:200")),
            of("*", entry(4, "batch", None, "phase=end run=1 written=500 tenants=brand-a,brand-b quarantined=0 dropped_no_consent=0")),
            of("*", entry(5, "batch", None, "phase=failed run=5 read=10 written=4 quarantined=0")),
            // Older entries: one for brand-a alone, one for both.
            of("*", entry(6, "batch", None, "phase=end events=v1:40 tenants=brand-a quarantined=0 dropped_no_consent=0")),
            of("*", entry(7, "batch", None, "phase=end events=v1:9,v2:60 tenants=brand-a,brand-b quarantined=0 dropped_no_consent=0")),
            of("*", entry(8, "batch", None, "phase=end events=none tenants=none quarantined=3 dropped_no_consent=0")),
        ];
        let read = intact(&entries);
        let refs: Vec<&Read> = read.iter().collect();
        let a = events_per_version("brand-a", &refs);
        let batch = |events| Totals {
            ingest: None,
            batch: Some(count(events, false)),
        };
        assert_eq!(
            a.per_version,
            BTreeMap::from([(1, batch(40)), (2, batch(300))])
        );
        assert_eq!(a.legacy_exact, 1);
        assert_eq!(
            a.shared,
            [Shared {
                seq: 7,
                tenants: vec!["brand-a".into(), "brand-b".into()],
                events: BTreeMap::from([(1, 9), (2, 60)]),
            }]
        );
        let b = events_per_version("brand-b", &refs);
        assert_eq!(b.per_version, BTreeMap::from([(2, batch(200))]));
        assert_eq!((b.legacy_exact, b.shared.len()), (0, 1));
        assert_eq!(events_per_version("none", &refs), Counted::default());
    }

    /// A count an unverified entry is part of is unverified, whichever way it is counted.
    #[test]
    fn counts_from_unverified_entries_say_so() {
        let entries = [
            entry(1, "ingest_stop", None, "instance=a events=v1:10"),
            entry(2, "batch", Some(1), "phase=end run=0 events=v1:5"),
            entry(
                3,
                "key_switch",
                Some(2),
                "instance=b offsets=0:1 previous=1 events_previous=7",
            ),
        ];
        let read: Vec<Read> = entries
            .iter()
            .zip([Check::Intact, Check::FirstBad, Check::AfterBad])
            .map(|(record, check)| Read {
                record: record.clone(),
                check,
            })
            .collect();
        let refs: Vec<&Read> = read.iter().collect();
        let totals = events_per_version("brand-a", &refs).per_version[&1];
        let unverified = |events, lower_bound| Count {
            events,
            lower_bound,
            unverified: true,
        };
        assert_eq!(totals.ingest, Some(unverified(17, true)));
        assert_eq!(totals.batch, Some(unverified(5, false)));
        assert_eq!(totals.total().unwrap().cell().text, "≥ 22 (unverified)");
        assert_eq!(totals.total().unwrap().cell().tone, Tone::Bad);
        assert_eq!(Count::exact(10).cell().tone, Tone::Plain);
    }

    /// In a log that failed, every entry table says which entry is the first bad one and
    /// which come after it, and the HTML marks their rows.
    #[test]
    fn the_first_bad_entry_is_marked_in_the_tables() {
        let entries = [
            entry(1, "batch", Some(1), "phase=end run=0 events=v1:5"),
            entry(2, "lookup", None, "ticket=DSR-1 domain=email"),
            entry(3, "lookup", None, "ticket=DSR-2 domain=email"),
        ];
        let read: Vec<Read> = entries
            .iter()
            .zip([Check::Intact, Check::FirstBad, Check::AfterBad])
            .map(|(record, check)| Read {
                record: record.clone(),
                check,
            })
            .collect();
        let refs: Vec<&Read> = read.iter().collect();
        let table = entry_table(&VIEWS[VIEWS.len() - 1], &refs, true);
        assert_eq!(table.columns[0], "Verification");
        let marks: Vec<(&str, Tone)> = table
            .rows
            .iter()
            .map(|row| (row.cells[0].text.as_str(), row.cells[0].tone))
            .collect();
        assert_eq!(
            marks,
            [
                ("chain intact", Tone::Good),
                ("✗ FAILS VERIFICATION (first bad entry)", Tone::Bad),
                ("unverified (after the bad entry)", Tone::Bad),
            ]
        );
        let page = html(&Document {
            title: "t".into(),
            meta: "m".into(),
            banner: Banner {
                ok: false,
                text: "failed".into(),
            },
            sections: vec![Section {
                heading: "Tenant brand-a".into(),
                tables: vec![table],
            }],
        });
        assert!(page.contains("<tr class=\"tampered\"><td class=\"bad\">✗ FAILS VERIFICATION (first bad entry)</td><td>2</td><td class=\"time\">2026-05-01T10:00:00Z</td>"), "{page}");
        assert!(page.contains("<tr class=\"unverified\">"));
        // A verified log has no such column.
        let table = entry_table(&VIEWS[VIEWS.len() - 1], &refs, false);
        assert_eq!(table.columns[0], "Seq");
    }

    #[test]
    fn details_are_pairs_with_unknown_keys_kept_as_written() {
        let details = Details::parse(Some("ticket=DSR-42 fields=a.b,c lone colour=red"));
        assert_eq!(details.get("ticket"), Some("DSR-42"));
        assert_eq!(details.get("lone"), None);
        assert_eq!(details.others(&["ticket", "fields"]), "lone colour=red");
        assert_eq!(
            parse_events(Some("v1:52000,2:48000,bad,v3:x")),
            BTreeMap::from([(1, 52000), (2, 48000)])
        );
    }

    #[test]
    fn key_switches_show_offsets_per_partition_and_other_keys_as_is() {
        let entries = [entry(
            1,
            "key_switch",
            Some(2),
            "instance=ingest-a topic=redemptions.raw offsets=0:1200,1:1187 previous=1 events_previous=52000 shard=x",
        )];
        let read = intact(&entries);
        let refs: Vec<&Read> = read.iter().collect();
        let table = entry_table(&VIEWS[0], &refs, false);
        let row: Vec<&str> = table.rows[0]
            .cells
            .iter()
            .map(|c| c.text.as_str())
            .collect();
        assert_eq!(
            row,
            [
                "2026-05-01T10:00:00Z",
                "key_switch",
                "ingest-a",
                "redemptions.raw",
                "1",
                "2",
                "—",
                "p0: 1200, p1: 1187",
                "52000",
                "shard=x"
            ]
        );
    }

    #[test]
    fn html_and_markdown_escape_what_operators_typed() {
        let hostile = "<script>alert('x')</script> & \"quoted\" | **bold** [link](http://e)";
        let document = Document {
            title: "t".into(),
            meta: "m".into(),
            banner: Banner {
                ok: false,
                text: "FAILED <b>".into(),
            },
            sections: vec![Section {
                heading: "Tenant <i>".into(),
                tables: vec![Table {
                    heading: "h".into(),
                    columns: vec!["Actor".into()],
                    rows: vec![Row::intact(vec![Cell::plain(hostile)])],
                    note: None,
                    empty: String::new(),
                }],
            }],
        };
        let page = html(&document);
        assert!(!page.contains("<script") && !page.contains("<b>") && !page.contains("<i>"));
        assert!(page
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"));
        assert!(page.contains("class=\"status failed\""));
        let md = markdown(&document);
        assert!(!md.contains("<script") && !md.contains("**bold**"), "{md}");
        assert!(
            md.contains("\\| \\*\\*bold\\*\\* \\[link\\](http://e)"),
            "{md}"
        );
        assert!(md.contains("> **FAILED** FAILED &lt;b&gt;"), "{md}");
    }
}
