//! `pseudopipe produce --input FILE`: a history export (JSON lines, `-` for standard input)
//! replayed into the raw topic, at `--rate` lines per second or as fast as the cluster takes
//! them, so that a backfill goes through the cluster and scales with ingest's instances
//! instead of running on one machine in batch mode.
//!
//! Each line that is not blank becomes one record: its bytes as they are, the line end
//! removed. A line that is not valid UTF-8 or not a JSON document is forwarded all the
//! same, since it is what ingest quarantines (`invalid_utf8`, `malformed_json`, with the
//! raw line kept on the on-prem quarantine topic): the export's bad lines then stand where
//! operators look for bad events. It is counted and named by its line number, never
//! shown. Blank lines are skipped and counted, as batch mode does. A line larger than the producer's
//! `message.max.bytes` cannot be produced: it is skipped, named by its line number, the
//! rest goes on, and the command exits 1 at the end. An input with no line to produce is
//! an error: most likely the wrong file.
//!
//! With `--key-field PATH`, the value of that field (text, or a number as written) is the
//! record key, as a point of sale keys by loyalty card; otherwise records have no key and
//! librdkafka spreads them over the partitions.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plumbing::rdkafka::error::RDKafkaErrorCode;
use plumbing::rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use serde_json::Value;

/// Records handed to librdkafka before waiting for their delivery reports.
const WINDOW: usize = 10_000;

/// How often progress is printed when standard error is not a terminal (a log file).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Line numbers of invalid lines quoted in the summary, at most.
const QUOTED_LINES: usize = 10;

/// What to replay, and how.
pub struct Replay<'a> {
    /// The input, opened.
    pub input: Input,
    /// The topic to write to.
    pub topic: &'a str,
    /// Lines per second, or as fast as possible.
    pub rate: Option<f64>,
    /// The field whose value keys the records.
    pub key_field: Option<&'a str>,
}

/// What a replay did.
#[derive(Default)]
struct Counts {
    lines: u64,
    records: u64,
    bytes: u64,
    blank: u64,
    /// Lines that are not valid UTF-8 or not JSON, forwarded as they are.
    invalid: u64,
    /// The first of them, by line number.
    invalid_lines: Vec<u64>,
    /// Valid lines without the key field.
    unkeyed: u64,
    /// Lines too large for the producer, not produced.
    too_large: u64,
    /// The first of them, by line number.
    too_large_lines: Vec<u64>,
}

/// `1 line is` or `N lines are`, in messages.
fn lines_are(count: u64) -> String {
    if count == 1 {
        "1 line is".into()
    } else {
        format!("{count} lines are")
    }
}

/// `count` line numbers, the first of which are `lines`: `11, 102` or `11, 102, …`.
fn line_list(count: u64, lines: &[u64]) -> String {
    let mut list: Vec<String> = lines.iter().map(u64::to_string).collect();
    if count > lines.len() as u64 {
        list.push("…".into());
    }
    list.join(", ")
}

/// The export to replay, opened before anything connects to the cluster.
pub struct Input {
    reader: Box<dyn BufRead>,
    /// Its size when it is a file, for the progress bar.
    size: Option<u64>,
    /// As messages name it.
    name: String,
}

impl Input {
    /// Opens `path` (`-`: standard input) and refuses an input with nothing in it.
    pub fn open(path: &str) -> Result<Self> {
        let mut input = if path == "-" {
            Self {
                reader: Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock())),
                size: None,
                name: "standard input".into(),
            }
        } else {
            let file = File::open(path).with_context(|| format!("cannot open the input {path}"))?;
            let meta = file
                .metadata()
                .with_context(|| format!("cannot read the input {path}"))?;
            if meta.is_dir() {
                bail!(
                    "the input {path} is a folder; give a JSON lines file, or - for standard input"
                );
            }
            Self {
                reader: Box::new(BufReader::with_capacity(1 << 16, file)),
                size: meta.is_file().then_some(meta.len()),
                name: path.into(),
            }
        };
        let empty = input
            .reader
            .fill_buf()
            .with_context(|| format!("cannot read the input {}", input.name))?
            .is_empty();
        if empty {
            bail!(
                "the input {} is empty: nothing to produce (give the history export, JSON lines)",
                input.name
            );
        }
        Ok(input)
    }
}

/// The key of a JSON document: the text of the field at the dotted `path`, or a number as
/// written; `None` when the field is absent or holds anything else.
fn key_of(document: &Value, path: &str) -> Option<Vec<u8>> {
    let value = path
        .split('.')
        .try_fold(document, |value, name| value.get(name))?;
    match value {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        Value::Number(number) => Some(number.to_string().into_bytes()),
        _ => None,
    }
}

/// The progress bar of a file: bytes read of its size.
const FILE_PROGRESS: &str = "{spinner} {bytes}/{total_bytes} [{bar:40}] {msg} eta {eta}";

/// The progress of standard input, whose size is unknown.
const STREAM_PROGRESS: &str = "{spinner} {msg}";

/// Progress on standard error: a bar on a terminal, a line every [`PROGRESS_EVERY`]
/// otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    size: Option<u64>,
    last: Instant,
}

impl Progress {
    fn new(size: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| match size {
            Some(size) => ProgressBar::new(size).with_style(
                ProgressStyle::with_template(FILE_PROGRESS)
                    .expect("the template is valid (a unit test parses it)")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(STREAM_PROGRESS)
                    .expect("the template is valid (a unit test parses it)"),
            ),
        });
        Self {
            bar,
            size,
            last: Instant::now(),
        }
    }

    fn update(&mut self, read: u64, counts: &Counts, started: Instant) {
        if let Some(bar) = &self.bar {
            bar.set_position(read);
            bar.set_message(format!("{} records", counts.records));
            return;
        }
        if self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let share = self
            .size
            .filter(|size| *size > 0)
            .map(|size| format!(" ({:.0}% of the input)", read as f64 * 100.0 / size as f64))
            .unwrap_or_default();
        eprintln!(
            "produced {} records so far{share}, {:.0} records/s",
            counts.records,
            counts.records as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Waits for the delivery of the record of line `line`.
async fn delivered(line: u64, delivery: DeliveryFuture) -> Result<()> {
    delivery
        .await
        .with_context(|| format!("the producer was dropped before line {line} was delivered"))?
        .map_err(|(error, _)| error)
        .with_context(|| format!("the record of line {line} was not delivered"))?;
    Ok(())
}

/// Replays `replay.input` into `replay.topic` with `producer`.
pub async fn run(producer: &FutureProducer, replay: Replay<'_>) -> Result<ExitCode> {
    let Input {
        reader: mut input,
        size,
        name,
    } = replay.input;
    let mut progress = Progress::new(size);
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::with_capacity(WINDOW);
    let mut line = Vec::new();
    let mut read = 0u64;
    loop {
        line.clear();
        let length = input
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read the input {name}"))?;
        if length == 0 {
            break;
        }
        read += length as u64;
        counts.lines += 1;
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
        if payload.iter().all(u8::is_ascii_whitespace) {
            counts.blank += 1;
            continue;
        }
        let key = match serde_json::from_slice::<Value>(payload) {
            Ok(document) => {
                let key = replay.key_field.and_then(|path| key_of(&document, path));
                if replay.key_field.is_some() && key.is_none() {
                    counts.unkeyed += 1;
                }
                key
            }
            Err(_) => {
                counts.invalid += 1;
                if counts.invalid_lines.len() < QUOTED_LINES {
                    counts.invalid_lines.push(counts.lines);
                }
                None
            }
        };
        if let Some(rate) = replay.rate {
            let due = Duration::from_secs_f64(counts.records as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(replay.topic).payload(payload);
        if let Some(key) = &key {
            record = record.key(key);
        }
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((error, _))
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                counts.too_large += 1;
                if counts.too_large_lines.len() < QUOTED_LINES {
                    counts.too_large_lines.push(counts.lines);
                }
                continue;
            }
            Err((error, _)) => {
                return Err(error)
                    .with_context(|| format!("cannot queue the record of line {}", counts.lines))
            }
        };
        pending.push_back((counts.lines, delivery));
        counts.records += 1;
        counts.bytes += payload.len() as u64;
        if pending.len() >= WINDOW {
            let (line, delivery) = pending.pop_front().expect("the window is full");
            delivered(line, delivery).await?;
        }
        progress.update(read, &counts, started);
    }
    for (line, delivery) in pending {
        delivered(line, delivery).await?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("cannot flush the producer")?;
    progress.finish();
    if counts.records == 0 && counts.too_large == 0 {
        bail!(
            "the input {name} holds only blank lines ({}): nothing was sent to {}",
            counts.blank,
            replay.topic
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records ({} bytes) from {name} to {} in {seconds:.2} s ({:.0} records/s); blank lines skipped: {}",
        counts.records,
        counts.bytes,
        replay.topic,
        counts.records as f64 / seconds.max(1e-9),
        counts.blank
    );
    if counts.invalid > 0 {
        eprintln!(
            "{} not valid UTF-8 JSON: forwarded unchanged, for ingest to quarantine (line numbers: {})",
            lines_are(counts.invalid),
            line_list(counts.invalid, &counts.invalid_lines)
        );
    }
    if let (Some(field), true) = (replay.key_field, counts.unkeyed > 0) {
        eprintln!(
            "JSON lines without a text or number at {field}, produced without a key: {}",
            counts.unkeyed
        );
    }
    if counts.too_large > 0 {
        bail!(
            "{} larger than the producer's message.max.bytes: not produced (line numbers: {}); the others were: produce those lines apart, or raise message.max.bytes with --property if the broker and the policy's max_event_bytes allow it",
            lines_are(counts.too_large),
            line_list(counts.too_large, &counts.too_large_lines)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_text_or_number_at_the_path() {
        let document: Value = serde_json::from_str(
            r#"{"customer":{"loyalty_card":"6280 0012","id":42,"tags":["a"]},"x":null}"#,
        )
        .unwrap();
        assert_eq!(
            key_of(&document, "customer.loyalty_card"),
            Some(b"6280 0012".to_vec())
        );
        assert_eq!(key_of(&document, "customer.id"), Some(b"42".to_vec()));
        assert_eq!(key_of(&document, "customer.tags"), None);
        assert_eq!(key_of(&document, "x"), None);
        assert_eq!(key_of(&document, "customer.missing"), None);
    }

    #[test]
    fn progress_templates_are_valid() {
        assert!(ProgressStyle::with_template(FILE_PROGRESS).is_ok());
        assert!(ProgressStyle::with_template(STREAM_PROGRESS).is_ok());
    }

    #[test]
    fn line_lists_say_when_there_are_more() {
        assert_eq!(lines_are(1), "1 line is");
        assert_eq!(lines_are(3), "3 lines are");
        assert_eq!(line_list(2, &[11, 102]), "11, 102");
        assert_eq!(line_list(12, &[1, 2]), "1, 2, …");
    }
}
