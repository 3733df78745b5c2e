//! `pseudopipe reidentify`: decrypts values of an `encrypt` field, on-prem only.
//!
//! [`compliance::reidentify`] checks and decrypts every value in memory first; then the
//! `reidentify` audit entry (ticket, reason, field, versions, count; never a value) is
//! written; only then are the plaintexts printed, so a disclosure that is not on the
//! trail never happens.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use compliance::reidentify::{decrypt, encrypt_domain, Field, Place};
use compliance::subject::check_reference;
use pseudonymize::Policy;
use zeroize::Zeroizing;

use crate::cli::ReidentifyArgs;
use crate::keys::Session;
use crate::subject::read_stdin;

/// Runs `reidentify`.
pub fn run(args: ReidentifyArgs) -> Result<ExitCode> {
    check_reference("--reason", &args.reason)?;
    check_reference("--ticket", &args.ticket)?;
    let policy = Policy::from_file(&args.policy)?;
    let domain = encrypt_domain(&policy, &args.field)?;

    let stdin = if args.value == "-" {
        read_stdin()?
    } else {
        Zeroizing::new(String::new())
    };
    let values: Vec<(Place, &str)> = if args.value == "-" {
        stdin
            .lines()
            .enumerate()
            .map(|(index, line)| (Place::Line(index + 1), line))
            .collect()
    } else {
        vec![(Place::Argument, args.value.as_str())]
    };
    if values.is_empty() {
        bail!("no value to decrypt: give one as an argument, or one per line on standard input");
    }

    let mut s = Session::open(&args.keyring, false)?;
    let tenant = args.keyring.tenant.as_str();
    let field = Field {
        tenant,
        path: &args.field,
        domain: &domain,
    };
    let decrypted = decrypt(&s.keyring, field, &values)?;
    let versions: Vec<String> = decrypted.versions.iter().map(u32::to_string).collect();
    s.keyring.record(
        &mut s.log,
        &s.actor,
        "reidentify",
        tenant,
        format!(
            "ticket={} reason={} field={} domain={domain} versions={} values={}",
            args.ticket,
            args.reason,
            args.field,
            versions.join(","),
            decrypted.plaintexts.len()
        ),
    )?;
    drop(s);

    let mut out = std::io::stdout().lock();
    for plain in &decrypted.plaintexts {
        writeln!(out, "{}", plain.as_str()).context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
