//! The command line: every subcommand and its options, with the help text users read.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pseudopipe pseudonymizes nominative coupon-redemption events so that they can leave
/// the premises: every personal field is tokenized (keyed HMAC), encrypted, generalized or
/// dropped according to a policy, under keys that stay on-prem with an audit trail.
#[derive(Debug, Parser)]
#[command(name = "pseudopipe", version, about, long_about = None)]
pub struct Cli {
    /// How log lines are written to standard error: `text` for people (coloured only on a
    /// terminal, and never with `NO_COLOR` set), `json` for log shippers (one object per
    /// line).
    #[arg(long, global = true, env = "PSEUDOPIPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The forms of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, `fields`.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage key-encryption keys and keyrings (create, rotate, retire, destroy, import,
    /// list, rewrap).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check, print or report the audit log of key operations, or export its public key
    /// for auditors.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compute the tokens of one value under every non-destroyed key version of a tenant,
    /// to answer a data-subject request ("which tokens belong to this person?"). Needs the
    /// request's --ticket. The lookup is recorded in the audit log (the ticket, never the
    /// value).
    Lookup(LookupArgs),
    /// Pseudonymize a file of JSON lines (a history export, a backfill) with a policy.
    Pseudonymize(BatchArgs),
    /// Stage 1, on-prem: consume raw events, pseudonymize, produce to the pseudonymized
    /// topic; rejected records go to quarantine. Holds the keys.
    Ingest(ConfigArgs),
    /// Stage 2, the on-prem end of the private link: consume the pseudonymized topic, check
    /// every record with the leak guard, produce to the cloud cluster. Holds no key.
    Sink(ConfigArgs),
    /// Both stages in one process (small sites).
    Run(ConfigArgs),
    /// Retail simulator: write realistic nominative redemptions to a topic; or, with
    /// --input, replay a history export (JSON lines) into the raw topic, so that a backfill
    /// goes through ingest.
    Produce(ProduceArgs),
    /// Run the whole pipeline on two in-process Kafka clusters (no external service),
    /// then check that nothing was lost or leaked. Exits 0 only if so.
    Demo(DemoArgs),
    /// Measure pseudopipe with simulated events and a throw-away key.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Answer a data subject's access or erasure request: the token each of the person's
    /// identifiers maps to, per tokenized field of the policy and per key version whose
    /// material still exists; with --scan-brokers and --scan-topic, the records of a
    /// pseudonymized (or cloud) topic that hold one of them. Needs the request's --ticket.
    /// Recorded in the audit log (the ticket, the fields and the match count; never a
    /// value or a token).
    Subject(SubjectArgs),
    /// Decrypt values of an `encrypt` field on-prem (e.g. for a fraud investigation), one
    /// per line. Needs a reason and a ticket, and is recorded in the audit log before
    /// anything is printed. Destroyed versions cannot be decrypted (crypto-shredding).
    Reidentify(ReidentifyArgs),
    /// Check an Avro writer schema against a policy (every field classified, every rule
    /// fitting its field's type), or derive the schema of the pseudonymized records that
    /// analysts read.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// On-prem, for the operator: count the quarantined records by stage, reason, field
    /// and detector (`list`), or write selected ones back to the topic they were read from
    /// once the policy or the registry is fixed (`replay`: each record at most once,
    /// recorded in the audit log).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Re-identification risk of pseudonymized events: per tenant, how many events and
    /// subjects sit in classes (events equal on the policy's quasi-identifiers, `[risk]`)
    /// of fewer than k subjects, and the class sizes. Reads a topic or a file of JSON
    /// lines (a `pseudonymize` output); needs no key.
    Risk(RiskArgs),
}

/// `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Count the quarantined records by stage, reason, field and detector, with their
    /// time range and how many were replayed already. Never prints a value, unless
    /// --show-values is given: then the selected records are printed as JSON lines
    /// (personal data), after the audit log has recorded it (--keyring, --kek-file,
    /// --ticket).
    List(ListArgs),
    /// Write the selected quarantined records back to the topic each was read from (its
    /// `pseudopipe-source-topic` header; --to-topic overrides), unchanged, so that a
    /// fixed policy or a restored registry handles them. Each record goes with a marker in
    /// the quarantine topic, in one Kafka transaction: a record is replayed at most once,
    /// even if the command is interrupted and run again. Recorded in the audit log
    /// (selection and count) before the first record is written and at the end.
    Replay(ReplayArgs),
}

/// The quarantine topic and its cluster.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// Bootstrap servers of the on-prem cluster that holds the quarantine topic (and the
    /// topics its records are replayed to).
    #[arg(long)]
    pub brokers: String,
    /// The quarantine topic (ingest's or the sink's).
    #[arg(long)]
    pub topic: String,
    /// Extra librdkafka property for the command's clients, KEY=VALUE (e.g.
    /// `security.protocol=ssl`); secrets as `sasl.password_file=PATH` or
    /// `sasl.password_env=VAR`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub property: Vec<String>,
    /// Give up when the topic has not been read to its end offsets (as they were when the
    /// command started) after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Give up when no broker of `--brokers` answered within this long (`500ms`, `15s`,
    /// `2m`), saying why.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::config::parse_duration)]
    pub connect_timeout: std::time::Duration,
}

/// Which quarantined records a command concerns: all of them, or those matching every
/// option given.
#[derive(Debug, Args)]
pub struct Selection {
    /// Only records quarantined for this reason (e.g. personal_value_in_kept_field).
    /// Repeatable: any of them.
    #[arg(long, value_name = "REASON")]
    pub reason: Vec<String>,
    /// Only records whose reason concerns this field, as the policy writes its path
    /// (e.g. `basket.items[].sku`).
    #[arg(long, value_name = "PATH")]
    pub field: Option<String>,
    /// Only records a detector quarantined: email, phone, card, iban or ip.
    #[arg(long)]
    pub detector: Option<String>,
    /// Only records this stage quarantined: ingest or sink.
    #[arg(long)]
    pub stage: Option<String>,
    /// Only records timestamped at or after this time (RFC 3339, e.g.
    /// 2026-12-07T04:00:00Z): the time of the input record.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records timestamped before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only records of this partition of the quarantine topic.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only records at or after this offset of the quarantine topic.
    #[arg(long, value_name = "OFFSET")]
    pub from_offset: Option<i64>,
    /// Only records at or before this offset of the quarantine topic.
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
}

/// The audit log that records what is done with the quarantine, through its keyring.
#[derive(Debug, Args)]
pub struct AuditTrailArgs {
    /// The keyring whose audit log records the command (its lock is held only while the
    /// entry is written).
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// The key-encryption key of the keyring.
    #[arg(long)]
    pub kek_file: Option<PathBuf>,
    /// The audit log; defaults to the keyring path plus `.audit.jsonl`.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Who performs the operation, as written to the audit log; defaults to the login name
    /// (SUDO_USER, USER, then LOGNAME). Required when none is set.
    #[arg(long, env = "PSEUDOPIPE_ACTOR")]
    pub actor: Option<String>,
}

/// Options of `quarantine list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub quarantine: QuarantineArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Print the counts as JSON.
    #[arg(long, conflicts_with = "show_values")]
    pub json: bool,
    /// Print the selected records themselves (raw personal data) as JSON lines, after
    /// recording it in the audit log: needs --keyring, --kek-file and --ticket.
    #[arg(long)]
    pub show_values: bool,
    #[command(flatten)]
    pub audit: AuditTrailArgs,
    #[command(flatten)]
    pub ticket: TicketArgs,
}

/// Options of `quarantine replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub quarantine: QuarantineArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Write the records to this topic instead of the one each was read from.
    #[arg(long, value_name = "TOPIC")]
    pub to_topic: Option<String>,
    #[command(flatten)]
    pub audit: AuditTrailArgs,
    #[command(flatten)]
    pub ticket: TicketArgs,
}

/// `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Check that the policy classifies every field of the schema with a rule that fits
    /// the field's type. Exits 0 and prints how many fields each action covers when it
    /// does; otherwise lists each problem, naming the field, and exits 1. A producer's new
    /// field fails here until the policy classifies it (ingest quarantines such events).
    Check(SchemaArgs),
    /// Write the Avro schema of the pseudonymized records the policy makes out of events
    /// written with the schema: dropped fields gone, tokens, ciphertexts and masked values
    /// as strings, generalized values with their output type, each documented. Exits 1,
    /// listing the problems, when the schema does not fit the policy.
    Derive {
        #[command(flatten)]
        schema: SchemaArgs,
        /// Where to write the derived schema (.avsc, replaced if it exists); default:
        /// standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Options of the `schema` commands.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The pseudonymization policy (TOML), e.g. schemas/coupon_redemption.policy.toml.
    #[arg(long)]
    pub policy: PathBuf,
    /// The Avro writer schema of the raw events (.avsc, JSON), e.g.
    /// schemas/coupon_redemption.avsc.
    #[arg(long)]
    pub schema: PathBuf,
}

/// Options of `ingest`, `sink` and `run`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML); see config/pseudopipe.example.toml.
    #[arg(long)]
    pub config: PathBuf,
}

/// Options of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Bootstrap servers.
    #[arg(long)]
    pub brokers: String,
    /// Topic to write to.
    #[arg(long)]
    pub topic: String,
    /// Number of simulated events.
    #[arg(long, required_unless_present = "input")]
    pub events: Option<u64>,
    /// Replay this history export instead of simulating: JSON lines, one record each, as
    /// they are (`-`: standard input). Lines that are not JSON are forwarded too (ingest
    /// quarantines them) and counted by line number; blank lines are skipped.
    #[arg(long, conflicts_with_all = ["events", "malformed_ratio", "seed", "tenant"])]
    pub input: Option<String>,
    /// With --input: the field whose value (text or number) keys each record, e.g.
    /// `customer.loyalty_card` as a point of sale does; no key by default.
    #[arg(long, requires = "input")]
    pub key_field: Option<String>,
    /// Events (or lines of --input) per second (default: as fast as possible).
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Share of malformed events, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_ratio: f64,
    /// Seed of the simulator: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tenant of the simulated events; repeat for several.
    #[arg(long, default_values_t = ["brand-a".to_string()])]
    pub tenant: Vec<String>,
    /// Extra librdkafka producer property, KEY=VALUE; repeatable.
    #[arg(long)]
    pub property: Vec<String>,
    /// Give up when no broker answered within this long (`500ms`, `15s`, `2m`), saying why.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::config::parse_duration)]
    pub connect_timeout: std::time::Duration,
}

/// A `--rate`: a finite number above 0.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: give events per second, above 0 (or leave --rate out for as fast as possible)"
        )),
    }
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated events.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Share of malformed events.
    #[arg(long, default_value_t = 0.01)]
    pub malformed_ratio: f64,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new random key-encryption key (32 bytes, file mode 0600). Refuses to
    /// overwrite an existing file. Keep the KEK apart from the keyring and its backups.
    NewKek {
        /// Where to write the KEK.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a tenant in the keyring (the file is created if needed) with version 1 active.
    Init(KeyringArgs),
    /// Create a new active version for a tenant; the previous active version is retired
    /// (kept for lookups, no longer used for new tokens).
    Rotate(KeyringArgs),
    /// List a tenant's key versions: state, fingerprint and dates (with --json, the fields
    /// tenant, version, state, fingerprint, created_at, activated_at, retired_at,
    /// destroyed_at). Never prints key material.
    List {
        #[command(flatten)]
        keyring: KeyringArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Retire a version. Retiring the active version suspends the tenant: its events are
    /// quarantined until `keys rotate` creates a new active version.
    Retire {
        #[command(flatten)]
        keyring: KeyringArgs,
        /// The version to retire.
        #[arg(long)]
        version: u32,
    },
    /// Erase the material of a retired version (crypto-shredding): its tokens can never be
    /// recomputed or looked up again. Refuses the active version. Irreversible unless the
    /// secret was escrowed.
    Destroy {
        #[command(flatten)]
        keyring: KeyringArgs,
        /// The version to destroy.
        #[arg(long)]
        version: u32,
    },
    /// Restore a version's master secret from escrow (e.g. to rebuild a lost keyring).
    /// The version becomes active if the tenant has none (or with --activate), retired
    /// otherwise. Destroyed versions are never restored.
    Import {
        #[command(flatten)]
        keyring: KeyringArgs,
        /// The version number the secret belongs to.
        #[arg(long)]
        version: u32,
        /// File holding the 32-byte secret: raw, 64 hex digits, or base64.
        #[arg(long)]
        secret_file: PathBuf,
        /// Make the imported version the active one.
        #[arg(long)]
        activate: bool,
    },
    /// Re-wrap every key of the keyring (all tenants, every version not destroyed, and the
    /// audit log's keys) under a new key-encryption key: KEK rotation. The keyring file is
    /// replaced in one step; if anything fails it is left as it was, still opened by the
    /// old KEK. The audit log keeps verifying. Afterwards give every process (ingest,
    /// `pseudonymize`, operators) the new KEK file.
    Rewrap {
        /// The keyring file.
        #[arg(long)]
        keyring: PathBuf,
        /// The current key-encryption key.
        #[arg(long)]
        kek_file: PathBuf,
        /// The new key-encryption key (create it with `keys new-kek`); must differ from the
        /// current one.
        #[arg(long)]
        new_kek_file: PathBuf,
        /// The audit log; defaults to the keyring path plus `.audit.jsonl`.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Who performs the operation, as written to the audit log; defaults to the login
        /// name (SUDO_USER, USER, then LOGNAME). Required when none is set.
        #[arg(long, env = "PSEUDOPIPE_ACTOR")]
        actor: Option<String>,
    },
}

/// Options shared by the keyring commands.
#[derive(Debug, Args)]
pub struct KeyringArgs {
    /// The keyring file.
    #[arg(long)]
    pub keyring: PathBuf,
    /// The key-encryption key: 32 raw bytes or their base64.
    #[arg(long)]
    pub kek_file: PathBuf,
    /// The tenant (loyalty programme): [a-z0-9_-]{1,64}.
    #[arg(long)]
    pub tenant: String,
    /// The audit log; defaults to the keyring path plus `.audit.jsonl`.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Who performs the operation, as written to the audit log; defaults to the login name
    /// (SUDO_USER, USER, then LOGNAME). Required when none is set.
    #[arg(long, env = "PSEUDOPIPE_ACTOR")]
    pub actor: Option<String>,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole chain: sequence, hashes, and the signature (--public-key) or MAC
    /// (--kek-file; with --keyring, both) of every entry. Exits 0 only when the log is
    /// intact; otherwise names the first bad entry and exits 1. An auditor needs only the
    /// public key: the log must then also reach its signed head file, so a log cut short
    /// is detected. With --kek-file, --keyring detects a log cut short.
    Verify(AuditArgs),
    /// Print the entries, oldest first, after verifying them.
    Show {
        #[command(flatten)]
        audit: AuditArgs,
        /// Print the JSON entries instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Render the audit trail for people: per tenant, the key versions and their
    /// timeline, key switches of running ingests, events tokenized per version, subject
    /// requests, re-identifications, bridges and rewraps, with the verification status at
    /// the top. HTML is one self-contained page (no script, no external resource); md is
    /// Markdown tables. A log that fails verification is still rendered, the failure
    /// first, and the command exits 1.
    Report(ReportArgs),
    /// Write the public key that verifies the audit log's signatures, for auditors: with
    /// it, `audit verify --public-key` needs no KEK and no keyring. Prints its fingerprint,
    /// to give auditors by another channel.
    ExportKey {
        /// The keyring file.
        #[arg(long)]
        keyring: PathBuf,
        /// The key-encryption key of the keyring.
        #[arg(long)]
        kek_file: PathBuf,
        /// Where to write the public key (a small text file, mode 0600 whatever the umask;
        /// replaced if it exists, keeping its mode within 0640).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Options of the audit commands: the log, and either the public key (no key custody)
/// or the KEK.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("verify_with").required(true).args(["public_key", "kek_file"])))]
pub struct AuditArgs {
    /// The audit log file.
    #[arg(long)]
    pub audit_log: PathBuf,
    /// The public key written by `audit export-key`: verifies signatures without the KEK
    /// or the keyring.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// The signed head the log must reach (with --public-key); defaults to the log's path
    /// plus `.head`.
    #[arg(long, conflicts_with = "kek_file")]
    pub head: Option<PathBuf>,
    /// The key-encryption key of the keyring that writes the log (verifies MACs).
    #[arg(long)]
    pub kek_file: Option<PathBuf>,
    /// The keyring (with --kek-file): holds the log's keys, needed once its KEK was
    /// changed by `keys rewrap`, and the head the log must reach.
    #[arg(long, conflicts_with = "public_key")]
    pub keyring: Option<PathBuf>,
}

/// Options of `lookup`.
#[derive(Debug, Args)]
pub struct LookupArgs {
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// The linkability domain of the field (as in the policy: customer, email, phone...).
    #[arg(long)]
    pub domain: String,
    /// The normalizer of the field: exact, trim, lower, email, digits or name.
    #[arg(long)]
    pub normalizer: String,
    #[command(flatten)]
    pub request: TicketArgs,
    /// Exactly one value to look up; `-` reads it from standard input (keeps it out of
    /// `ps`), which must then hold one line (a final newline is allowed). An empty value,
    /// or one the normalizer leaves empty, is refused; so is a second line: run one lookup
    /// per value.
    #[arg(value_name = "VALUE|-")]
    pub value: String,
}

/// The request a command answers (`lookup`, `subject`, `quarantine`).
#[derive(Debug, Args)]
pub struct TicketArgs {
    /// The reference of the request this answers (e.g. DSR-42), written to the audit log:
    /// letters, digits and `._:/#+-`, at most 64. Required, unless the --config file says
    /// `require_ticket = false` in `[keys]`.
    #[arg(long)]
    pub ticket: Option<String>,
    /// A configuration file (as for ingest) whose `[keys] require_ticket = false` makes
    /// --ticket optional for `lookup` and `subject` (never for `reidentify`); nothing else
    /// of it is used here.
    #[arg(long, env = "PSEUDOPIPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `pseudonymize`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The policy file (TOML).
    #[arg(long)]
    pub policy: PathBuf,
    /// The keyring file.
    #[arg(long)]
    pub keyring: PathBuf,
    /// The key-encryption key.
    #[arg(long)]
    pub kek_file: PathBuf,
    /// JSON lines to read; `-` for standard input.
    #[arg(long, default_value = "-")]
    pub input: String,
    /// Where to write pseudonymized JSON lines (same order); `-` for standard output. A
    /// file is written to a hidden temporary file beside it (`.NAME.PID.partial`) and
    /// renamed over NAME once the run completed: a failed run leaves NAME as it was.
    /// Refused when it is the input or the quarantine file (compared as files: links and
    /// other spellings of a path included).
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Where to write rejected lines as JSON objects (`line`, `reason`, `message`, and the
    /// raw line). The file holds personal data: keep it on-prem (mode 0600). Written and
    /// put in place like --output; refused when it is the input or the output. Without it,
    /// rejections are reported on stderr without their content.
    #[arg(long)]
    pub quarantine: Option<PathBuf>,
    /// Who runs the batch, as written to the audit log; defaults to the login name
    /// (SUDO_USER, USER, then LOGNAME). Required when none is set.
    #[arg(long, env = "PSEUDOPIPE_ACTOR")]
    pub actor: Option<String>,
    /// Worker threads (default: every core). The output keeps the input's order.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// Options of `subject`.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// The policy file (TOML): which fields are tokenized, in which domain, how normalized.
    #[arg(long)]
    pub policy: PathBuf,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// The person's e-mail address, for every field tokenized in domain `email`; `-` reads
    /// it from standard input (keeps it out of `ps`).
    #[arg(long, value_name = "EMAIL|-")]
    pub email: Option<String>,
    /// The person's phone number, for every field tokenized in domain `phone`; `-` reads
    /// it from standard input.
    #[arg(long, value_name = "PHONE|-")]
    pub phone: Option<String>,
    /// The person's loyalty card number, for every field tokenized in domain `customer`;
    /// `-` reads it from standard input.
    #[arg(long, value_name = "CARD|-")]
    pub loyalty_card: Option<String>,
    /// A value for one tokenized field of the policy, named by its path (e.g.
    /// `coupon.coupon_code=SPR-8F3K`); `FIELD=-` reads it from standard input. Repeatable.
    #[arg(long = "value", value_name = "FIELD=VALUE")]
    pub values: Vec<String>,
    #[command(flatten)]
    pub request: TicketArgs,
    /// Print a JSON document (described in docs/compliance.md) instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scan: ScanArgs,
}

/// Where `subject` looks for the person's records.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Bootstrap servers of the cluster to scan (on-prem, or the cloud one).
    #[arg(long, value_name = "BROKERS", requires = "scan_topic")]
    pub scan_brokers: Option<String>,
    /// The topic to scan (pseudonymized or cloud), read from the beginning up to its end
    /// offsets when the scan starts, `read_committed`, in a throw-away group that commits
    /// nothing.
    #[arg(long, value_name = "TOPIC", requires = "scan_brokers")]
    pub scan_topic: Option<String>,
    /// Extra librdkafka consumer property for the scan, KEY=VALUE (e.g.
    /// `security.protocol=ssl`); secrets as `sasl.password_file=PATH` or
    /// `sasl.password_env=VAR`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "scan_topic")]
    pub scan_property: Vec<String>,
    /// Give up the scan when it has not reached the end offsets after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub scan_timeout: u64,
    /// Give up when no broker of `--scan-brokers` answered within this long (`500ms`,
    /// `15s`, `2m`), saying why.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::config::parse_duration)]
    pub connect_timeout: std::time::Duration,
}

/// Options of `reidentify`.
#[derive(Debug, Args)]
pub struct ReidentifyArgs {
    /// The policy file (TOML); the field must have the action `encrypt`.
    #[arg(long)]
    pub policy: PathBuf,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// The path of the encrypted field in the policy (e.g. `customer.birth_date`).
    #[arg(long)]
    pub field: String,
    /// Why the values are decrypted, as a short code written to the audit log (e.g.
    /// fraud-investigation): letters, digits and `._:/#+-`, at most 64.
    #[arg(long)]
    pub reason: String,
    /// The case or ticket reference (e.g. INC-7), written to the audit log: letters,
    /// digits and `._:/#+-`, at most 64. Always required (`[keys] require_ticket` does not
    /// apply: a decryption discloses values).
    #[arg(long)]
    pub ticket: String,
    /// One encrypted value (`e<version>.<base64url>`); `-` reads one per line from
    /// standard input. Plaintexts are printed in the same order, one per line.
    #[arg(default_value = "-", value_name = "VALUE|-")]
    pub value: String,
}

/// Options of `audit report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The audit log file.
    #[arg(long)]
    pub audit_log: PathBuf,
    /// The keyring: its versions, and the head the log must reach.
    #[arg(long)]
    pub keyring: PathBuf,
    /// The key-encryption key the keyring and the log were written with.
    #[arg(long)]
    pub kek_file: PathBuf,
    /// Only this tenant (default: every tenant of the keyring and the log).
    #[arg(long)]
    pub tenant: Option<String>,
    /// html: one self-contained page; md: Markdown tables.
    #[arg(long, value_enum)]
    pub format: ReportFormat,
    /// Where to write the report (default: standard output); created with mode 0600
    /// whatever the umask (a report it replaces keeps its mode within 0640).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The formats of `audit report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One HTML page with inline CSS.
    Html,
    /// Markdown.
    Md,
}

/// What `bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The record path in process, no Kafka: events/s per core, MB/s, nanoseconds per
    /// event by phase, allocations per event (counted when built with
    /// `--features count-allocations`). End to end through Kafka: scripts/bench-pipeline.sh.
    Transform(BenchArgs),
}

/// Options of `bench transform`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Simulated events per round.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Rounds (the first warms caches up); the best round is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Threads, each on its share of the events (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Policy to apply (default: the embedded default policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// `avro` also times, in the same run, the same events as Avro datums of
    /// schemas/coupon_redemption.avsc (ingest's direct walk, and the sink's guard) beside
    /// JSON, per event on one thread.
    #[arg(long, value_enum, default_value_t = BenchFormat::Json)]
    pub format: BenchFormat,
}

/// The record formats `bench transform` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    /// JSON events.
    Json,
    /// JSON events, and the same events as Avro datums.
    Avro,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks every subcommand's definition (unique names, valid defaults) here,
    /// rather than at the first run of a subcommand in the field.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

/// `risk`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "topic"])))]
pub struct RiskArgs {
    /// The policy the events were pseudonymized with; its `[risk]` table names the
    /// quasi-identifiers and k.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Pseudonymized events as JSON lines (a `pseudonymize` output), `-` for standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "topic")]
    pub input: Option<PathBuf>,
    /// Bootstrap servers of the cluster holding --topic.
    #[arg(long, value_name = "BROKERS", requires = "topic")]
    pub brokers: Option<String>,
    /// A pseudonymized (or cloud) topic, read from the beginning up to its end offsets at
    /// start, `read_committed`, in a throw-away group that commits nothing.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub topic: Option<String>,
    /// Extra librdkafka consumer property, KEY=VALUE (e.g. `security.protocol=ssl`);
    /// secrets as `sasl.password_file=PATH` or `sasl.password_env=VAR`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "topic")]
    pub property: Vec<String>,
    /// Give up when the topic's end offsets are not reached after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Give up when no broker of --brokers answered within this long (`500ms`, `15s`).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::config::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// `text`: tables for a terminal; `json`: for a program; `html`: one self-contained
    /// page with a bar chart of events by class size per tenant.
    #[arg(long, value_enum, default_value_t = RiskFormat::Text)]
    pub format: RiskFormat,
    /// Where to write it (default: standard output); created with mode 0600 whatever the
    /// umask.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The formats of `risk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RiskFormat {
    /// Tables.
    Text,
    /// One JSON document.
    Json,
    /// One HTML page with inline CSS and SVG.
    Html,
}
