//! `pseudopipe pseudonymize`: JSON lines in, pseudonymized JSON lines out, rejected lines
//! to a quarantine file with their reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use pseudonymize::{Keyring, Policy, Pseudonymizer, Reason, Rejection};

use crate::cli::BatchArgs;
use crate::keys::read_kek;

/// Counts of one batch run.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    written: u64,
    blank: u64,
    quarantined: BTreeMap<Reason, u64>,
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

fn open_output(path: &str) -> Result<Box<dyn Write>> {
    Ok(if path == "-" {
        Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path).with_context(|| format!("cannot create the output {path}"))?,
        ))
    })
}

/// Runs the batch command.
pub fn run(args: BatchArgs) -> Result<ExitCode> {
    let policy = Policy::from_file(&args.policy)?;
    let kek = read_kek(&args.kek_file)?;
    let keyring = Keyring::open(&args.keyring, &kek)?;
    let engine = Pseudonymizer::new(policy, keyring.active());
    drop(keyring);

    let mut input = open_input(&args.input)?;
    let mut output = open_output(&args.output)?;
    let mut quarantine = match &args.quarantine {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| {
            format!("cannot create the quarantine file {}", path.display())
        })?)),
        None => None,
    };

    let started = Instant::now();
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read the input {}", args.input))?;
        if n == 0 {
            break;
        }
        summary.read += 1;
        let payload = trim_line_end(&line);
        if payload.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        out.clear();
        match engine.pseudonymize_into(payload, &mut out) {
            Ok(_) => {
                out.push(b'\n');
                output
                    .write_all(&out)
                    .with_context(|| format!("cannot write the output {}", args.output))?;
                summary.written += 1;
            }
            Err(rejection) => {
                *summary.quarantined.entry(rejection.reason).or_default() += 1;
                quarantine_line(quarantine.as_mut(), summary.read, payload, &rejection)?;
            }
        }
    }
    output
        .flush()
        .with_context(|| format!("cannot write the output {}", args.output))?;
    if let Some(file) = quarantine.as_mut() {
        file.flush().context("cannot write the quarantine file")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total_quarantined: u64 = summary.quarantined.values().sum();
    let reasons: Vec<String> = summary
        .quarantined
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    eprintln!(
        "read {} lines, wrote {} events, quarantined {}{}, skipped {} blank lines, in {:.3} s ({:.0} events/s)",
        summary.read,
        summary.written,
        total_quarantined,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        summary.blank,
        elapsed,
        (summary.written + total_quarantined) as f64 / elapsed.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn quarantine_line(
    file: Option<&mut BufWriter<File>>,
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
