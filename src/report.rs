//! `pseudopipe audit report`: opens the keyring, has [`compliance::report`] verify and
//! render the audit log, and writes the page; exits 1 when the log fails verification
//! (the report still shows it, with the failure at its top).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use compliance::report::{Format, Scope, Trail};
use pseudonymize::Keyring;

use crate::cli::{ReportArgs, ReportFormat};
use crate::keys::read_kek;

/// Runs `audit report`.
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let kek = read_kek(&args.kek_file)?;
    if !args.audit_log.exists() {
        return Err(compliance::Error::NoAuditLog(args.audit_log.clone()).into());
    }
    let keyring = Keyring::open(&args.keyring, &kek)?;
    let trail = Trail::read(&keyring, &args.audit_log)?;
    if let Some(tenant) = &args.tenant {
        trail.check_tenant(&keyring, tenant)?;
    }
    let scope = Scope {
        keyring: &args.keyring,
        audit_log: &args.audit_log,
        tenant: args.tenant.as_deref(),
    };
    let format = match args.format {
        ReportFormat::Html => Format::Html,
        ReportFormat::Md => Format::Markdown,
    };
    let text = trail.render(&keyring, &scope, format);
    match &args.out {
        Some(path) => {
            // A trail file: mode 0600 (or the 0640 of the report it replaces), whatever
            // the umask.
            pseudonymize::audit::write_atomically(path, text.as_bytes(), None)
                .with_context(|| format!("cannot write the report {}", path.display()))?;
            eprintln!("wrote the audit report to {}", path.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the report to standard output")?;
        }
    }
    if !trail.verified() {
        eprintln!(
            "error: the audit log {} does not verify; the report shows the failure at its top",
            args.audit_log.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
