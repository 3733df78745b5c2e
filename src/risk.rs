//! `pseudopipe risk`: reads pseudonymized events from a file or a topic and prints what
//! [`compliance::risk`] counts: per tenant, the events and subjects in classes smaller
//! than k. Needs no key and writes nothing.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use compliance::risk::Classes;
use plumbing::rdkafka::Message as _;
use pseudonymize::Policy;

use crate::cli::{RiskArgs, RiskFormat};
use crate::topic_read::{self, Source, TopicRead};

/// Runs `risk`.
pub fn run(args: RiskArgs) -> Result<ExitCode> {
    let policy = Policy::from_file(&args.policy)?;
    let mut classes = Classes::new(&policy)?;
    match (&args.input, &args.brokers, &args.topic) {
        (Some(path), _, _) => read_lines(path, &mut classes)?,
        (None, Some(brokers), Some(topic)) => read_topic(&args, brokers, topic, &mut classes)?,
        _ => bail!("give the events with --input FILE, or --brokers and --topic"),
    }
    let summary = classes.summary();
    let source = match (&args.input, &args.topic) {
        (Some(path), _) => format!("{}", path.display()),
        (None, Some(topic)) => format!("topic {topic}"),
        (None, None) => String::new(),
    };
    let text = match args.format {
        RiskFormat::Text => summary.to_string(),
        RiskFormat::Json => format!("{}\n", serde_json::to_string_pretty(&summary)?),
        RiskFormat::Html => summary.html(&source),
    };
    match &args.out {
        Some(path) => {
            pseudonymize::audit::write_atomically(path, text.as_bytes(), None)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote the risk report to {}", path.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write to standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Counts every line of `path` (`-`: standard input); a line that is not a JSON object
/// is counted as such, not refused.
fn read_lines(path: &std::path::Path, classes: &mut Classes) -> Result<()> {
    let reader: Box<dyn std::io::BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the input {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            classes.add(&line);
        }
    }
    Ok(())
}

fn read_topic(args: &RiskArgs, brokers: &str, topic: &str, classes: &mut Classes) -> Result<()> {
    let properties = topic_read::properties(
        "--property",
        &args.property,
        &[
            ("bootstrap.servers", "give the cluster with --brokers"),
            (
                "group.id",
                "the reading happens in a throw-away group of its own and commits nothing",
            ),
        ],
    )?;
    let read = TopicRead::open(Source {
        option: "--brokers",
        brokers,
        topic,
        properties: &properties,
        connect_timeout: args.connect_timeout,
        timeout_option: "--timeout",
        timeout: Duration::from_secs(args.timeout),
    })?;
    read.read(
        |_| None,
        |message| {
            classes.add(message.payload().unwrap_or_default());
            Ok(())
        },
    )
}
