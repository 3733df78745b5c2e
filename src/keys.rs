//! The key-management commands: `keys`, `audit` and `lookup`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use pseudonymize::audit::{verify_log, verify_signed, AuditPublicKey, SignedHead, Verified};
use pseudonymize::keyring::sibling;
use pseudonymize::{
    Error, Kek, KeyVersion, Keyring, KeyringLock, MasterSecret, Normalizer, TokenKey,
};
use zeroize::Zeroizing;

use crate::cli::{AuditArgs, AuditCommand, KeyringArgs, KeysCommand, LookupArgs};
use crate::private_file;

/// Reads the KEK, warning when the file is readable by others.
pub fn read_kek(path: &Path) -> Result<Kek> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "The KEK file is readable by group or others; chmod 600 it.");
        }
    }
    Ok(Kek::from_file(path)?)
}

/// The audit log of a keyring: `--audit-log`, or the keyring path plus `.audit.jsonl`.
pub fn audit_path(keyring: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit
        .cloned()
        .unwrap_or_else(|| sibling(keyring, ".audit.jsonl"))
}

/// Who runs a command, as the audit log names them: `--actor` (or `PSEUDOPIPE_ACTOR`, which
/// clap reads into it), else the login name behind `sudo`, else the login name (`USER`,
/// then `LOGNAME`). With none of them, the command is refused: an entry must name a person.
pub(crate) fn actor(explicit: Option<&String>) -> Result<String> {
    let named = |name: String| (!name.trim().is_empty()).then_some(name);
    explicit
        .cloned()
        .and_then(named)
        .or_else(|| {
            ["SUDO_USER", "USER", "LOGNAME"]
                .into_iter()
                .find_map(|variable| std::env::var(variable).ok().and_then(named))
        })
        .context(
            "no one to name in the audit log: pass --actor NAME (or set PSEUDOPIPE_ACTOR or USER); neither SUDO_USER, USER nor LOGNAME is set",
        )
}

/// A keyring opened under its lock with its audit log, ready for one operation.
pub(crate) struct Session {
    _lock: KeyringLock,
    pub(crate) keyring: Keyring,
    pub(crate) log: pseudonymize::audit::AuditLog,
    pub(crate) actor: String,
}

impl Session {
    pub(crate) fn open(args: &KeyringArgs, create: bool) -> Result<Self> {
        Self::open_with(
            &args.keyring,
            &read_kek(&args.kek_file)?,
            args.audit_log.as_ref(),
            args.actor.as_ref(),
            create,
        )
    }

    pub(crate) fn open_with(
        path: &Path,
        kek: &Kek,
        audit_log: Option<&PathBuf>,
        actor_name: Option<&String>,
        create: bool,
    ) -> Result<Self> {
        let actor = actor(actor_name)?;
        if !create && !path.exists() {
            bail!(
                "the keyring {} does not exist; create it with `pseudopipe keys init`",
                path.display()
            );
        }
        let lock = KeyringLock::acquire(path)?;
        let keyring = if create {
            Keyring::open_or_new(path, kek)?
        } else {
            Keyring::open(path, kek)?
        };
        let log_path = audit_path(path, audit_log);
        let log = keyring.audit_log(&log_path).with_context(|| {
            format!(
                "refusing to change keys while the audit log {} does not verify",
                log_path.display()
            )
        })?;
        Ok(Self {
            _lock: lock,
            keyring,
            log,
            actor,
        })
    }
}

fn describe(tenant: &str, what: &str, version: &KeyVersion) {
    println!(
        "{what} {tenant} v{} ({}, fingerprint {})",
        version.version,
        version.state.name(),
        version.fingerprint
    );
}

/// Runs a `keys` subcommand.
pub fn run_keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::NewKek { out } => {
            let kek = Kek::generate();
            let mut file = private_file::options()
                .create_new(true)
                .open(&out)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing KEK is never overwritten)",
                        out.display()
                    )
                })?;
            file.write_all(kek.expose())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote a new 32-byte KEK to {} (mode 0600); store it apart from the keyring and its backups", out.display());
        }
        KeysCommand::Init(args) => {
            let mut s = Session::open(&args, true)?;
            let version = s.keyring.init(&mut s.log, &s.actor, &args.tenant)?;
            describe(&args.tenant, "created", &version);
        }
        KeysCommand::Rotate(args) => {
            let mut s = Session::open(&args, false)?;
            let version = s.keyring.rotate(&mut s.log, &s.actor, &args.tenant)?;
            describe(&args.tenant, "rotated to", &version);
        }
        KeysCommand::Retire { keyring, version } => {
            let mut s = Session::open(&keyring, false)?;
            let retired = s
                .keyring
                .retire(&mut s.log, &s.actor, &keyring.tenant, version)?;
            describe(&keyring.tenant, "retired", &retired);
            eprintln!("note: tenant {} now has no active key; its events are quarantined until `keys rotate`", keyring.tenant);
        }
        KeysCommand::Destroy { keyring, version } => {
            let mut s = Session::open(&keyring, false)?;
            let destroyed = s
                .keyring
                .destroy(&mut s.log, &s.actor, &keyring.tenant, version)?;
            describe(&keyring.tenant, "destroyed", &destroyed);
        }
        KeysCommand::Import {
            keyring,
            version,
            secret_file,
            activate,
        } => {
            let secret = MasterSecret::from_file(&secret_file)?;
            let mut s = Session::open(&keyring, true)?;
            let imported = s.keyring.import(
                &mut s.log,
                &s.actor,
                &keyring.tenant,
                version,
                secret,
                activate,
            )?;
            describe(&keyring.tenant, "imported", &imported);
        }
        KeysCommand::List {
            keyring: args,
            json,
        } => {
            let kek = read_kek(&args.kek_file)?;
            let keyring = Keyring::open(&args.keyring, &kek)?;
            let versions = keyring.versions(&args.tenant)?;
            if json {
                // Named fields only: a key version also holds its wrapped secret, which is
                // key material and is never printed.
                let rows: Vec<_> = versions
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "tenant": args.tenant,
                            "version": v.version,
                            "state": v.state.name(),
                            "fingerprint": v.fingerprint,
                            "created_at": v.created_at,
                            "activated_at": v.activated_at,
                            "retired_at": v.retired_at,
                            "destroyed_at": v.destroyed_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("tenant {} in {}", args.tenant, args.keyring.display());
                println!(
                    "{:<8} {:<10} {:<17} {:<21} {:<21} {:<21} {:<21}",
                    "VERSION",
                    "STATE",
                    "FINGERPRINT",
                    "CREATED",
                    "ACTIVATED",
                    "RETIRED",
                    "DESTROYED"
                );
                let dash = |d: &Option<String>| d.clone().unwrap_or_else(|| "-".into());
                for v in versions {
                    println!(
                        "{:<8} {:<10} {:<17} {:<21} {:<21} {:<21} {:<21}",
                        v.version,
                        v.state.name(),
                        v.fingerprint,
                        v.created_at,
                        dash(&v.activated_at),
                        dash(&v.retired_at),
                        dash(&v.destroyed_at)
                    );
                }
            }
        }
        KeysCommand::Rewrap {
            keyring,
            kek_file,
            new_kek_file,
            audit_log,
            actor,
        } => {
            let old = read_kek(&kek_file)?;
            let new = read_kek(&new_kek_file)?;
            let mut s = match Session::open_with(
                &keyring,
                &old,
                audit_log.as_ref(),
                actor.as_ref(),
                false,
            ) {
                Err(error)
                    if matches!(error.downcast_ref(), Some(Error::WrongKek { .. }))
                        && Keyring::open(&keyring, &new).is_ok() =>
                {
                    let new_path = new_kek_file.display();
                    bail!(
                        "the keyring {} is already wrapped under the new KEK {new_path} (an earlier `keys rewrap` completed); use --kek-file {new_path} from now on",
                        keyring.display()
                    )
                }
                opened => opened?,
            };
            let done = s.keyring.rewrap(&mut s.log, &s.actor, &new)?;
            println!(
                "re-wrapped {} key versions and the audit keys of {} under the KEK {} (fingerprint {}, was {}); give every process --kek-file {} from now on, and keep the old KEK until no backup of the keyring needs it",
                done.versions,
                keyring.display(),
                new_kek_file.display(),
                done.new_kek,
                done.old_kek,
                new_kek_file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `audit` subcommand.
pub fn run_audit(command: AuditCommand) -> Result<ExitCode> {
    let (args, show, json) = match &command {
        AuditCommand::Verify(args) => (args, false, false),
        AuditCommand::Show { audit, json } => (audit, true, *json),
        AuditCommand::Report(args) => return crate::report::run(args.clone()),
        AuditCommand::ExportKey {
            keyring,
            kek_file,
            out,
        } => return export_key(keyring, kek_file, out),
    };
    if !args.audit_log.exists() {
        bail!("the audit log {} does not exist", args.audit_log.display());
    }
    let with = VerifyWith::load(args)?;
    let verified = match with.verify(&args.audit_log) {
        Ok(verified) => verified,
        Err(error) => {
            println!("FAILED: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if show {
        print_entries(&verified, json)?;
    }
    let mut anchored = with.anchored(&args.audit_log);
    if verified.unsigned > 0 {
        anchored.push_str(&format!(
            "; entries 1 to {} predate signatures and are vouched for by the chain",
            verified.unsigned
        ));
    }
    let summary = match &verified.head {
        Some(head) => format!(
            "OK: {} entries, chain intact up to sequence {} (hash {}){anchored}",
            verified.entries.len(),
            head.seq,
            &head.hash[..16]
        ),
        None => "OK: the log is empty".to_string(),
    };
    if show {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an audit log is verified with, loaded before the verdict so that an unusable key
/// file is an error of the command, not a verdict on the log.
enum VerifyWith {
    /// The exported public key and the signed head file (no key custody).
    PublicKey {
        key: AuditPublicKey,
        head: Option<PathBuf>,
    },
    /// The keyring: its audit keys and recorded head (boxed: it is the largest by far).
    Keyring(Box<Keyring>),
    /// The KEK alone: MACs of a log whose KEK was never changed.
    Kek(Kek),
}

impl VerifyWith {
    fn load(args: &AuditArgs) -> Result<Self> {
        Ok(match (&args.public_key, &args.kek_file, &args.keyring) {
            (Some(path), _, _) => Self::PublicKey {
                key: AuditPublicKey::from_file(path)?,
                head: args.head.clone(),
            },
            (None, Some(kek_file), Some(keyring)) => {
                Self::Keyring(Box::new(Keyring::open(keyring, &read_kek(kek_file)?)?))
            }
            (None, Some(kek_file), None) => Self::Kek(read_kek(kek_file)?),
            (None, None, _) => {
                bail!("pass --public-key FILE (from `audit export-key`) or --kek-file FILE")
            }
        })
    }

    fn verify(&self, log: &Path) -> Result<Verified, Error> {
        match self {
            Self::PublicKey { key, head } => verify_signed(log, key, head.as_deref()),
            Self::Keyring(keyring) => keyring.verify_audit(log),
            Self::Kek(kek) => verify_log(log, kek, None),
        }
    }

    /// How the end of the log was checked, for the summary line.
    fn anchored(&self, log: &Path) -> String {
        match self {
            Self::PublicKey { key, head } => format!(
                ", every signature valid under audit key {}, and it reaches the signed head {}",
                key.fingerprint(),
                head.clone()
                    .unwrap_or_else(|| SignedHead::default_path(log))
                    .display()
            ),
            Self::Keyring(_) => ", and it reaches the head recorded in the keyring".into(),
            Self::Kek(_) => " (pass --keyring to also detect a log cut short)".into(),
        }
    }
}

fn print_entries(verified: &Verified, json: bool) -> Result<()> {
    if json {
        for entry in &verified.entries {
            println!("{}", serde_json::to_string(entry)?);
        }
        return Ok(());
    }
    println!(
        "{:<6} {:<21} {:<14} {:<10} {:<16} {:<8} {:<17} DETAILS",
        "SEQ", "TIME", "ACTOR", "ACTION", "TENANT", "VERSION", "FINGERPRINT"
    );
    for e in &verified.entries {
        println!(
            "{:<6} {:<21} {:<14} {:<10} {:<16} {:<8} {:<17} {}",
            e.seq,
            e.time,
            e.actor,
            e.action,
            e.tenant,
            e.key_version.map_or("-".into(), |v| v.to_string()),
            e.fingerprint.as_deref().unwrap_or("-"),
            e.details.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `audit export-key`.
fn export_key(keyring: &Path, kek_file: &Path, out: &Path) -> Result<ExitCode> {
    let kek = read_kek(kek_file)?;
    let key = Keyring::open(keyring, &kek)?.audit_public_key();
    key.to_file(out)?;
    println!(
        "wrote the audit public key of {} to {} (fingerprint {}); auditors verify the log with `pseudopipe audit verify --audit-log LOG --public-key {}`, no KEK and no keyring needed",
        keyring.display(),
        out.display(),
        key.fingerprint(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `lookup`.
pub fn run_lookup(args: LookupArgs) -> Result<ExitCode> {
    let normalizer = Normalizer::from_name(&args.normalizer).with_context(|| {
        format!(
            "unknown normalizer `{}`; expected exact, trim, lower, email, digits or name",
            args.normalizer
        )
    })?;
    if !pseudonymize::policy::is_valid_domain(&args.domain) {
        bail!(
            "`{}` is not a valid domain ([a-z0-9_.-]{{1,64}})",
            args.domain
        );
    }
    let ticket = crate::subject::check_ticket(&args.request)?;
    // Exactly one value. It and its normal form are personal data: erased when dropped,
    // never echoed in a message.
    let value = if args.value == "-" {
        let buffer = crate::subject::read_stdin()?;
        let lines = buffer.lines().count();
        if lines > 1 {
            bail!(
                "standard input holds {lines} lines, but lookup takes exactly one value: run one lookup per value"
            );
        }
        Zeroizing::new(buffer.lines().next().unwrap_or_default().to_string())
    } else {
        Zeroizing::new(args.value.clone())
    };
    if value.trim().is_empty() {
        bail!("the value to look up is empty: give it as the argument, or `-` and one line on standard input");
    }
    let normalized = Zeroizing::new(normalizer.apply(&value).into_owned());
    drop(value);
    if normalized.is_empty() {
        bail!(
            "the value to look up is empty once normalized with `{}`: nothing to look up",
            normalizer.name()
        );
    }
    let mut s = Session::open(&args.keyring, false)?;
    let tenant = &args.keyring.tenant;
    let mut lines = Vec::new();
    let mut destroyed = Vec::new();
    for version in s.keyring.versions(tenant)? {
        match s.keyring.secret(tenant, version.version) {
            Some(secret) => {
                let token = TokenKey::derive(secret, version.version, tenant, &args.domain)
                    .token(normalized.as_bytes());
                lines.push(format!("{} {token}", version.version));
            }
            None => destroyed.push(version.version),
        }
    }
    drop(normalized);
    let ticket = ticket.map(|t| format!("ticket={t} ")).unwrap_or_default();
    s.keyring.record(
        &mut s.log,
        &s.actor,
        "lookup",
        tenant,
        format!(
            "{ticket}domain={} normalizer={}",
            args.domain,
            normalizer.name()
        ),
    )?;
    for line in lines {
        println!("{line}");
    }
    if !destroyed.is_empty() {
        eprintln!(
            "note: versions {destroyed:?} are destroyed; their tokens can no longer be computed"
        );
    }
    Ok(ExitCode::SUCCESS)
}
