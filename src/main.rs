//! The `pseudopipe` binary: parses the command line and runs one command.

mod batch;
mod cli;
mod keys;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Keys(command) => keys::run_keys(command),
        Command::Audit(command) => keys::run_audit(command),
        Command::Lookup(args) => keys::run_lookup(args),
        Command::Pseudonymize(args) => batch::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
