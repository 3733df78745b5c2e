//! `pseudopipe pseudonymize`: JSON lines in, pseudonymized JSON lines out, rejected lines
//! to a quarantine file with their reason (mode 0600: it holds the raw lines). Lines
//! without consent (the policy's `consent_field`) are dropped: neither written nor
//! quarantined, only counted. Each run is on the keyring's audit log: a `batch` entry for
//! every tenant (`*`) when it starts; when it ends, one `batch` entry per tenant it wrote
//! events of, with that tenant's events per key version, then one for every tenant with
//! the run's other counts (or `phase=failed` when it stops on an error after its start).
//! The end entries name their run by the sequence number of its start entry (`run=`).
//!
//! Before anything is read or written, the input, the output and the quarantine are
//! compared as files (device and inode, or the resolved path of one that does not exist
//! yet): one that is another is refused ([`paths`]). Output and quarantine files are
//! written to a hidden temporary sibling (`.NAME.PID.partial`) renamed over the final
//! name once the run completed, so a failed or interrupted run never leaves a half file
//! under that name.
//!
//! Lines are read in blocks; each block is cut into one contiguous slice per worker thread,
//! the workers pseudonymize their slices at the same time, and the results are written in
//! input order. Reading and writing stay on the calling thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use pseudonymize::{Kek, Keyring, KeyringLock, Policy, Pseudonymizer, Reason, Rejection};

use crate::batch_files::{check_distinct, Destination};
use crate::cli::BatchArgs;
use crate::keys::{audit_path, read_kek};

/// Counts of one batch run.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    written: u64,
    blank: u64,
    /// Events written, per tenant and key version.
    events: BTreeMap<String, BTreeMap<u32, u64>>,
    quarantined: BTreeMap<Reason, u64>,
    /// Events dropped for want of consent.
    dropped: u64,
}

impl Summary {
    /// The details of each tenant's `batch` entry at the end of the run: its events per
    /// key version, with the version when there is one (a run tokenizes each tenant with
    /// the version active when it started).
    fn tenant_entries(&self, run: u64, input: &str) -> Vec<TenantEntry> {
        self.events
            .iter()
            .map(|(tenant, versions)| {
                let events: Vec<String> = versions
                    .iter()
                    .map(|(version, count)| format!("v{version}:{count}"))
                    .collect();
                TenantEntry {
                    tenant: tenant.clone(),
                    version: match versions.keys().collect::<Vec<_>>()[..] {
                        [version] => Some(*version),
                        _ => None,
                    },
                    details: format!(
                        "phase=end run={run} input={input} events={}",
                        events.join(",")
                    ),
                }
            })
            .collect()
    }

    /// The details of the `*` entry that closes the run: what it wrote, for which tenants
    /// (their own entries hold the counts per version), what it quarantined and dropped.
    fn closing_details(&self, run: u64) -> String {
        let tenants: Vec<&str> = self.events.keys().map(String::as_str).collect();
        format!(
            "phase=end run={run} written={} tenants={} quarantined={} dropped_no_consent={}",
            self.written,
            or_none(&tenants.join(",")),
            self.quarantined.values().sum::<u64>(),
            self.dropped
        )
    }
}

/// The end entry of one tenant of a run.
struct TenantEntry {
    tenant: String,
    /// The run's only version for the tenant, recorded with its fingerprint.
    version: Option<u32>,
    details: String,
}

/// `none` for an empty list: a detail's value is never empty.
fn or_none(list: &str) -> &str {
    if list.is_empty() {
        "none"
    } else {
        list
    }
}

/// Appends `batch` entries to the keyring's audit log, under the keyring's lock, reading
/// the keyring afresh (a key operation may have happened during the run): one per tenant
/// in `tenants`, then `closing` for every tenant (`*`). Returns the sequence number of the
/// last entry.
fn record_batch(
    keyring: &Path,
    kek: &Kek,
    actor: &str,
    tenants: Vec<TenantEntry>,
    closing: String,
) -> Result<u64> {
    let _lock = KeyringLock::acquire(keyring)?;
    let mut keyring = Keyring::open(keyring, kek)?;
    let log_path = audit_path(keyring.path(), None);
    let mut log = keyring.audit_log(&log_path).with_context(|| {
        format!(
            "refusing to run while the audit log {} does not verify",
            log_path.display()
        )
    })?;
    for entry in tenants {
        let version = entry.version.and_then(|version| {
            keyring
                .version(&entry.tenant, version)
                .map(|v| (version, v.fingerprint.clone()))
        });
        keyring.record_version(
            &mut log,
            actor,
            "batch",
            &entry.tenant,
            version,
            entry.details,
        )?;
    }
    keyring.record(&mut log, actor, "batch", "*", closing)?;
    Ok(keyring
        .audit_head()
        .expect("an entry was just recorded")
        .seq)
}

/// The input as the audit entry names it: its file name, or `stdin`; whitespace replaced
/// so that the details stay `key=value` pairs.
fn input_name(input: &str) -> String {
    let name = match input {
        "-" => "stdin".into(),
        path => Path::new(path)
            .file_name()
            .map_or_else(|| path.into(), |name| name.to_string_lossy()),
    };
    name.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// One quarantine record: where the line was, why it was rejected, and the line itself so
/// that nothing is lost (as text when it is UTF-8, as base64 otherwise).
#[derive(serde::Serialize)]
struct QuarantineRecord<'a> {
    line: u64,
    reason: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
}

fn open_input(path: &str) -> Result<Box<dyn BufRead>> {
    Ok(if path == "-" {
        Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock()))
    } else {
        Box::new(BufReader::with_capacity(
            1 << 16,
            File::open(path).with_context(|| format!("cannot open the input {path}"))?,
        ))
    })
}

/// The threads asked for, or one per core.
pub fn worker_threads(requested: Option<u16>) -> usize {
    requested.map_or_else(
        || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        usize::from,
    )
}

/// Runs the batch command.
pub fn run(args: BatchArgs) -> Result<ExitCode> {
    // Nothing is opened, written or audited before these checks.
    check_distinct(&args.input, &args.output, args.quarantine.as_deref())?;
    let actor = crate::keys::actor(args.actor.as_ref())?;
    let policy = Policy::from_file(&args.policy)?;
    let kek = read_kek(&args.kek_file)?;
    let keyring = Keyring::open(&args.keyring, &kek)?;
    let active: BTreeSet<String> = keyring.active().map(|(tenant, ..)| tenant).collect();
    let suspended: Vec<String> = keyring
        .tenants()
        .filter(|tenant| !active.contains(*tenant))
        .map(str::to_owned)
        .collect();
    let details = format!(
        "phase=start input={} policy={}",
        input_name(&args.input),
        policy.digest()
    );
    let engine = Pseudonymizer::new(policy, keyring.active()).suspending(suspended);
    drop(keyring);

    // A run that cannot open its files never starts: no audit entry. The staged files are
    // removed when dropped uncommitted.
    let input = open_input(&args.input)?;
    let output = Destination::create(&args.output, "the output", false)?;
    let quarantine = match &args.quarantine {
        Some(path) => Some(Destination::create(
            &path.to_string_lossy(),
            "the quarantine file",
            true,
        )?),
        None => None,
    };
    let run = record_batch(&args.keyring, &kek, &actor, Vec::new(), details)?;

    let threads = worker_threads(args.threads);
    let started = Instant::now();
    let mut summary = Summary::default();
    let done = pseudonymize_all(
        &engine,
        &args,
        threads,
        input,
        output,
        quarantine,
        &mut summary,
    );
    if let Err(error) = done {
        // The staged files are gone; the trail says the run failed and how far it got.
        let failed = format!(
            "phase=failed run={run} read={} written={} quarantined={}",
            summary.read,
            summary.written,
            summary.quarantined.values().sum::<u64>()
        );
        if let Err(audit) = record_batch(&args.keyring, &kek, &actor, Vec::new(), failed) {
            tracing::error!("cannot record the failed run in the audit log: {audit:#}");
        }
        return Err(error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total_quarantined: u64 = summary.quarantined.values().sum();
    let reasons: Vec<String> = summary
        .quarantined
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    record_batch(
        &args.keyring,
        &kek,
        &actor,
        summary.tenant_entries(run, &input_name(&args.input)),
        summary.closing_details(run),
    )?;
    eprintln!(
        "read {} lines, wrote {} events, quarantined {}{}, dropped {} without consent, skipped {} blank lines, in {:.3} s ({:.0} events/s on {threads} threads)",
        summary.read,
        summary.written,
        total_quarantined,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        summary.dropped,
        summary.blank,
        elapsed,
        (summary.written + total_quarantined + summary.dropped) as f64 / elapsed.max(1e-9)
    );
    if !summary.events.is_empty() {
        // What the audit log records of the run, for the operator to compare with the
        // audit report.
        let per_tenant: Vec<String> = summary
            .events
            .iter()
            .flat_map(|(tenant, versions)| {
                versions
                    .iter()
                    .map(move |(version, count)| format!("{tenant} v{version}: {count}"))
            })
            .collect();
        eprintln!(
            "events per tenant and key version: {}",
            per_tenant.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the whole input, writes the outputs and puts them in place; `summary` counts
/// what was done, also when it fails midway.
fn pseudonymize_all(
    engine: &Pseudonymizer,
    args: &BatchArgs,
    threads: usize,
    mut input: Box<dyn BufRead>,
    mut output: Destination,
    mut quarantine: Option<Destination>,
    summary: &mut Summary,
) -> Result<()> {
    let mut block = Block::default();
    let mut workers: Vec<Worker> = (0..threads).map(|_| Worker::default()).collect();
    loop {
        let more = block
            .fill(&mut input)
            .with_context(|| format!("cannot read the input {}", args.input))?;
        if block.lines.is_empty() {
            break;
        }
        pseudonymize_block(engine, &block, &mut workers);
        for worker in &workers {
            for (line, outcome) in block.lines[worker.assigned.clone()]
                .iter()
                .zip(&worker.outcomes)
            {
                summary.read += 1;
                match outcome {
                    Outcome::Blank => summary.blank += 1,
                    Outcome::Written(range, tenant, version) => {
                        output
                            .writer()
                            .write_all(&worker.out[range.clone()])
                            .with_context(|| format!("cannot write the output {}", args.output))?;
                        summary.written += 1;
                        // Allocates only for a tenant not seen yet.
                        let versions = match summary.events.get_mut(*tenant) {
                            Some(versions) => versions,
                            None => summary.events.entry(tenant.to_string()).or_default(),
                        };
                        *versions.entry(*version).or_default() += 1;
                    }
                    Outcome::Rejected(rejection) if rejection.reason.is_drop() => {
                        summary.dropped += 1;
                    }
                    Outcome::Rejected(rejection) => {
                        *summary.quarantined.entry(rejection.reason).or_default() += 1;
                        let payload = trim_line_end(&block.bytes[line.clone()]);
                        quarantine_line(
                            quarantine.as_mut().map(Destination::writer),
                            summary.read,
                            payload,
                            rejection,
                        )?;
                    }
                }
            }
        }
        if !more {
            break;
        }
    }
    // The quarantine first: an output in place always has its rejects beside it.
    if let Some(file) = quarantine {
        file.commit().context("cannot write the quarantine file")?;
    }
    output
        .commit()
        .with_context(|| format!("cannot write the output {}", args.output))?;
    Ok(())
}

/// Lines read per block: enough to keep every worker busy for milliseconds, few enough
/// that a block of ~1 KB events stays around 16 MB.
const BLOCK_LINES: usize = 16_384;

/// A block of input lines: their bytes, one after the other, and where each line is.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    lines: Vec<Range<usize>>,
}

impl Block {
    /// Reads up to `BLOCK_LINES` lines; returns whether the input may have more.
    fn fill(&mut self, input: &mut dyn BufRead) -> std::io::Result<bool> {
        self.bytes.clear();
        self.lines.clear();
        while self.lines.len() < BLOCK_LINES {
            let start = self.bytes.len();
            if input.read_until(b'\n', &mut self.bytes)? == 0 {
                return Ok(false);
            }
            self.lines.push(start..self.bytes.len());
        }
        Ok(true)
    }
}

/// What became of one line.
enum Outcome<'e> {
    Blank,
    /// Its output line (newline included) in the worker's `out`, its tenant and key version.
    Written(Range<usize>, &'e str, u32),
    /// Quarantined, or dropped ([`Reason::is_drop`]).
    Rejected(Rejection),
}

/// One worker's share of a block and its results, reused from block to block.
#[derive(Default)]
struct Worker<'e> {
    /// The lines of the block it took.
    assigned: Range<usize>,
    outcomes: Vec<Outcome<'e>>,
    out: Vec<u8>,
}

impl<'e> Worker<'e> {
    fn pseudonymize(&mut self, engine: &'e Pseudonymizer, block: &Block) {
        self.outcomes.clear();
        self.out.clear();
        for line in &block.lines[self.assigned.clone()] {
            let payload = trim_line_end(&block.bytes[line.clone()]);
            if payload.iter().all(u8::is_ascii_whitespace) {
                self.outcomes.push(Outcome::Blank);
                continue;
            }
            let start = self.out.len();
            let outcome = match engine.pseudonymize_into(payload, &mut self.out) {
                Ok(outcome) => {
                    self.out.push(b'\n');
                    Outcome::Written(start..self.out.len(), outcome.tenant, outcome.key_version)
                }
                // `out` is left untouched on rejection.
                Err(rejection) => Outcome::Rejected(rejection),
            };
            self.outcomes.push(outcome);
        }
    }
}

/// Cuts `block` into one contiguous slice per worker and pseudonymizes the slices at once.
fn pseudonymize_block<'e>(engine: &'e Pseudonymizer, block: &Block, workers: &mut [Worker<'e>]) {
    let per_worker = block.lines.len().div_ceil(workers.len());
    for (index, worker) in workers.iter_mut().enumerate() {
        let start = (index * per_worker).min(block.lines.len());
        worker.assigned = start..(start + per_worker).min(block.lines.len());
    }
    if let [worker] = workers {
        worker.pseudonymize(engine, block);
        return;
    }
    std::thread::scope(|scope| {
        for worker in workers.iter_mut() {
            scope.spawn(|| worker.pseudonymize(engine, block));
        }
    });
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn quarantine_line(
    file: Option<&mut dyn Write>,
    number: u64,
    payload: &[u8],
    rejection: &Rejection,
) -> Result<()> {
    let Some(file) = file else {
        // No quarantine file: say where and why, never what (the input keeps the line).
        eprintln!(
            "line {number}: rejected ({}): {}",
            rejection.reason, rejection.message
        );
        return Ok(());
    };
    let text = std::str::from_utf8(payload).ok();
    let record = QuarantineRecord {
        line: number,
        reason: rejection.reason.code(),
        message: &rejection.message,
        raw: text,
        raw_base64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(payload)),
    };
    serde_json::to_writer(&mut *file, &record).context("cannot write the quarantine file")?;
    file.write_all(b"\n")
        .context("cannot write the quarantine file")?;
    Ok(())
}
