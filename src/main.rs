//! The `pseudopipe` binary: parses the command line, sets up logging, runs one command.
//! The work is in the crates (`pseudonymize` the core, `ingest` and `sink` the stages,
//! `plumbing` the relay, `compliance` the answers to auditors); the modules here read
//! files, keys and topics for them and print what they return.
//!
//! # Map
//!
//! - [`cli`]: every command and option (clap); `--help` text lives there.
//! - [`config`]: the configuration file of `ingest`, `sink` and `run`.
//! - Streaming: [`pipeline`] (`ingest`, `sink`, `run`: start-up checks, the stages until
//!   a signal), [`server`] (metrics, `/healthz`, `/readyz`), [`demo`] (both stages on an
//!   embedded mock cluster), [`produce`] (simulated events into a topic).
//! - Batch: [`batch`] (`pseudonymize` of files), [`batch_files`] (its input and output
//!   files), [`bench`] (`bench transform`).
//! - Keys and audit: [`keys`] (`keys`, `audit`, `lookup`), [`report`] (`audit report`),
//!   [`subject`] (`subject`), [`reidentify`] (`reidentify`), [`risk`] (`risk`),
//!   [`private_file`] (0600 files).
//! - Operations on topics: [`quarantine`] (`quarantine list|replay`), [`replay`]
//!   (`produce --input`), [`topic_read`] (a topic read to its end offsets at start),
//!   [`schema`] (`schema check|derive`).

mod batch;
mod batch_files;
mod bench;
mod cli;
mod config;
mod demo;
mod keys;
mod pipeline;
mod private_file;
mod produce;
mod quarantine;
mod reidentify;
mod replay;
mod report;
mod risk;
mod schema;
mod server;
mod subject;
mod topic_read;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{BenchCommand, Cli, Command, LogFormat};

/// Counts allocations for `bench transform`.
#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// The default policy, embedded so that `demo` and `bench` need no file.
pub const DEFAULT_POLICY: &str = include_str!("../schemas/coupon_redemption.policy.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {error:#}"),
                // A log shipper reads one JSON object per line, the last one too.
                LogFormat::Json => tracing::error!(error = format!("{error:#}"), "Command failed."),
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys(command) => keys::run_keys(command),
        Command::Audit(command) => keys::run_audit(command),
        Command::Lookup(args) => keys::run_lookup(args),
        Command::Pseudonymize(args) => batch::run(args),
        Command::Bench(BenchCommand::Transform(args)) => bench::transform(args),
        Command::Ingest(args) => {
            runtime()?.block_on(pipeline::run(&args.config, pipeline::Stages::Ingest))
        }
        Command::Sink(args) => {
            runtime()?.block_on(pipeline::run(&args.config, pipeline::Stages::Sink))
        }
        Command::Run(args) => {
            runtime()?.block_on(pipeline::run(&args.config, pipeline::Stages::Both))
        }
        Command::Produce(args) => runtime()?.block_on(produce::run(args)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Subject(args) => subject::run(args),
        Command::Reidentify(args) => reidentify::run(args),
        Command::Schema(command) => schema::run(command),
        Command::Quarantine(command) => quarantine::run(command),
        Command::Risk(args) => risk::run(args),
    }
}

/// Log lines to standard error, filtered by `RUST_LOG` (default `info`): text, coloured
/// only on a terminal and without `NO_COLOR` (<https://no-color.org>), or JSON.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The multi-threaded runtime the relay expects (a revocation blocks one worker).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
