//! Black-box tests of the `pseudopipe` binary, run as a user would run it.
//!
//! - `util`: a scratch directory with a KEK and a keyring, and a runner for the binary.
//! - `keys`: KEK creation, the keyring life cycle, wrong KEKs and corrupted keyrings.
//! - `audit`: `audit verify` and `audit show` on intact and tampered logs.
//! - `batch`: `pseudonymize` over simulated exports with malformed lines.
//! - `harness`: two real Apache Kafka brokers (the cloud one demanding the sink's client
//!   certificate), shared by the tests that do not stop them; a test's topics, groups and
//!   stage configs in either delivery mode; the stages as processes; checks of the cloud
//!   and the quarantine.
//! - `pipeline`: ingest, sink and produce end to end in both delivery modes, restarts,
//!   skipped offsets, a cloud outage, bad configs.
//! - `exactly_once`: kill -9 of both stages during a run, counted (0 lost, 0 duplicated;
//!   0 lost at least once), and a paused sink fenced by the one that took its partitions.
//! - `chaos`: six fault scenarios in both delivery modes (SIGKILL, SIGTERM rolling restarts,
//!   ingests killed and added, the cloud broker down, the on-prem broker restarted, the link
//!   cut), counted from the cloud topic:
//!   lost, stalled (still waiting upstream past a stage's committed offset), duplicated, out
//!   of order, leaked, quarantined; `scripts/chaos.sh` runs them at scale under CPU pressure
//!   (busy threads beside the stages), with several seeds.
//! - `hardening`: each stage reads only its config sections, secrets from files and
//!   variables never quoted, input headers never forwarded, `/readyz` around an outage and
//!   a stalled partition.
//! - `hostile`: records written straight into the pseudonymized topic by an attacker or a
//!   mistake are quarantined by the sink, and nothing personal crosses.
//! - `quarantine`: a wrong policy quarantines valid events (a detector names the field),
//!   `quarantine list` counts them, the policy is fixed, `quarantine replay` brings each
//!   event to the cloud exactly once, recorded in the audit log; a second replay adds none.
//! - `risk`: `risk` over a pseudonymized export gives, per tenant, the counts of classes
//!   below k that the definition gives when computed here from the same file; ingest's
//!   monitor agrees with it; `enforce_k` leaves no class below k when a window repeats the
//!   one before; an ingest restarted mid-window writes what a straight run writes.
//! - `rotation`: three key rotations while events flow: each applied between two
//!   transactions, token versions matching the audit log's switch offsets, the bridge
//!   linking customers across rotations, the audit log mirrored to its topic.
//! - `schemas`: the Avro schemas, the example event and the default policy agree; the derived
//!   schema is up to date and the pseudonymized example conforms to it.
//! - `avro`: Avro events (Confluent's Python serializer) through a real schema
//!   registry and both stages; unknown schema ids and unclassified fields quarantined.
//! - `monitoring`: every metric and stage the Grafana dashboard and the Prometheus alerts
//!   (deploy/) query is exported by a real run.
//! - `compliance`: `subject` (a person's tokens, and their records found on a real broker),
//!   `reidentify` and what it refuses, `audit report` in Markdown and HTML, and the HTML
//!   page as headless Chromium draws it (`target/audit-report.png`), its counts per tenant
//!   and version against the batch runs that made them.
//! - `replay`: `produce --input`, a history export replayed into a real broker's raw topic
//!   (file and stdin, rate, bad and blank lines, empty input), and through both stages to
//!   the cloud as batch mode writes it.
//! - `startup`: what a command says when it starts: an unreachable cluster in one line
//!   within its bound (`produce`, `subject --scan-brokers`, `ingest`, `sink`), no
//!   librdkafka `CONFWARN`, no colour in a file, JSON log lines, a policy typo named.
//!
//! The volume tests (end to end in both modes, Avro, kill -9, rotations) send 20,000 events
//! each at CI's scale; `PSEUDOPIPE_TEST_EVENTS=100000` runs them at the scale of the
//! README's figures.

mod harness;
mod util;

mod audit;
mod avro;
mod batch;
mod chaos;
mod compliance;
mod exactly_once;
mod hardening;
mod hostile;
mod keys;
mod monitoring;
mod pipeline;
mod quarantine;
mod replay;
mod risk;
mod rotation;
mod schemas;
mod startup;
