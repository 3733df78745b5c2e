//! `pseudopipe schema check` and `schema derive`: an Avro writer schema under a policy
//! (`pseudonymize::avro_schema`). `check` says whether the policy classifies every field
//! with a rule that fits; `derive` writes the schema of the pseudonymized records, which
//! is what analysts read the cloud topic with.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use pseudonymize::avro_schema::{self, FieldCounts, Schema, SchemaProblem};
use pseudonymize::Policy;

use crate::cli::{SchemaArgs, SchemaCommand};

/// Runs a `schema` subcommand.
pub fn run(command: SchemaCommand) -> Result<ExitCode> {
    match command {
        SchemaCommand::Check(args) => check(&args),
        SchemaCommand::Derive { schema, output } => derive(&schema, output.as_deref()),
    }
}

/// `schema check`: exit 0 with the counts, or 1 with every problem.
fn check(args: &SchemaArgs) -> Result<ExitCode> {
    let (policy, writer) = load(args)?;
    // Not a failure (one policy may cover several versions of a schema), but a typo.
    for path in avro_schema::rules_without_field(&policy, &writer) {
        eprintln!("note: the policy's rule `{path}` names no field of the schema");
    }
    match avro_schema::count(&policy, &writer) {
        Ok(counts) => {
            println!(
                "schema {} fits policy {}: {}",
                args.schema.display(),
                args.policy.display(),
                summary(&counts)
            );
            if let Some(risk) = policy.risk() {
                println!(
                    "quasi-identifiers (k = {}): {}; `pseudopipe risk` counts the events in classes below k",
                    risk.default_k(),
                    risk.quasi_identifiers().join(", ")
                );
                let settings = |risk: pseudonymize::risk::TenantRisk| {
                    format!(
                        "k = {}, window = {} offsets, enforce_k = {}",
                        risk.k, risk.window, risk.enforce_k
                    )
                };
                println!("  every tenant: {}", settings(risk.defaults()));
                for (tenant, own) in risk.tenants() {
                    println!("  tenant {tenant}: {}", settings(own));
                }
                if risk.enforces_any() {
                    println!(
                        "  enforce_order: {}; at most {} classes per partition, tenant and window",
                        risk.enforce_order().join(", "),
                        risk.max_classes()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            report(args, &problems);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `schema derive`: the derived schema to a file or standard output.
fn derive(args: &SchemaArgs, output: Option<&Path>) -> Result<ExitCode> {
    let (policy, writer) = load(args)?;
    let text = match avro_schema::derive_text(&policy, &writer) {
        Ok(text) => text,
        Err(problems) => {
            report(args, &problems);
            return Ok(ExitCode::FAILURE);
        }
    };
    match output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| {
                format!("cannot write the derived schema to {}", path.display())
            })?;
            eprintln!(
                "wrote the schema of the pseudonymized records to {}",
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy and the writer schema, or an error naming the file and what is wrong.
fn load(args: &SchemaArgs) -> Result<(Policy, Schema)> {
    let policy = Policy::from_file(&args.policy)?;
    let path = args.schema.display();
    let text = std::fs::read_to_string(&args.schema)
        .with_context(|| format!("cannot read the schema {path}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("the schema {path} is not JSON"))?;
    let writer = Schema::parse(&json)
        .with_context(|| format!("the schema {path} is not a valid Avro schema"))?;
    Ok((policy, writer))
}

/// "12 fields (7 kept, 3 tokenized, 2 dropped)", only the actions used.
fn summary(counts: &FieldCounts) -> String {
    let parts: Vec<String> = [
        (counts.kept, "kept"),
        (counts.tokenized, "tokenized"),
        (counts.encrypted, "encrypted"),
        (counts.masked, "masked"),
        (counts.generalized, "generalized"),
        (counts.dropped, "dropped"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let total = counts.total();
    let fields = if total == 1 { "field" } else { "fields" };
    format!("{total} {fields} ({})", parts.join(", "))
}

/// Every problem on standard error, one per line.
fn report(args: &SchemaArgs, problems: &[SchemaProblem]) {
    let mut text = format!(
        "schema {} does not fit policy {}: {} problem{}\n",
        args.schema.display(),
        args.policy.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        let _ = writeln!(text, "  {problem}");
    }
    eprint!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_only_the_actions_used() {
        let counts = FieldCounts {
            kept: 3,
            tokenized: 1,
            dropped: 2,
            ..FieldCounts::default()
        };
        assert_eq!(
            summary(&counts),
            "6 fields (3 kept, 1 tokenized, 2 dropped)"
        );
    }
}
