//! Avro records in Confluent's wire format, with their writer schemas fetched from the
//! registry by id. Ingest ([`IngestAvro`]) judges each writer schema once against the policy,
//! registers the schema derived from it, and pseudonymizes each datum directly under the
//! plan compiled for it ([`pseudonymize::avro_walk`], ADR 0024); a schema the direct walk
//! does not read (a uuid field) goes through the JSON record path instead (the datum
//! rendered as its JSON event, [`Output`] writing the result back). The sink
//! ([`SinkAvro`]) judges each datum as the JSON event it renders, and forwards it unchanged,
//! under the cloud registry's id when there is one ([`with_schema_id`]).
//!
//! A registry that does not answer is waited for a while (the record is not judged
//! meanwhile); if it stays silent, the record is quarantined with that reason and the
//! stage stops at its next batch boundary ([`AvroInput::failure`]), so that a supervisor
//! restarts it once the registry is back, and nothing is judged without its schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use pseudonymize::avro::{split_wire, to_json, write_header, AvroError, AvroWriter};
use pseudonymize::avro_schema::{self, SchemaProblem};
use pseudonymize::avro_walk::AvroPlan;
use pseudonymize::{
    BridgePairs, LeakGuard, Outcome, Policy, Pseudonymizer, QuasiValues, Reason, Rejection,
};
use tracing::warn;

use crate::registry::{Registry, RegistryError};

/// How long a record waits for a registry that does not answer.
const PATIENCE: Duration = Duration::from_secs(30);
/// Between two attempts.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Why a record is refused: a quarantine reason and a message naming no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The quarantine reason.
    pub reason: Reason,
    /// What is wrong, naming field paths and schema ids only.
    pub message: String,
}

impl Refusal {
    /// A refusal for `reason` saying `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Rejection::new(refusal.reason, refusal.message)
    }
}

impl From<AvroError> for Refusal {
    fn from(error: AvroError) -> Self {
        let reason = match error {
            AvroError::DoesNotFit { .. } => Reason::WrongType,
            _ => Reason::UndecodableFormat,
        };
        Self::new(reason, error.to_string())
    }
}

/// A registry failed while the stage ran: the records it could not judge went to
/// quarantine, and the stage stops so that a supervisor restarts it once the registry is
/// back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; restart the stage once the registry answers, and replay the records quarantined as `undecodable_format` meanwhile")]
pub struct RegistryFailed(pub RegistryError);

/// Reads Avro records with the writer schemas of a registry.
#[derive(Debug)]
pub struct AvroInput {
    registry: Arc<Registry>,
    /// What stopped the registry from answering, for the stage to stop on.
    failure: Mutex<Option<RegistryError>>,
}

impl AvroInput {
    /// Reads records with the schemas of `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            failure: Mutex::default(),
        }
    }

    /// The registry the schemas come from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The schema of `id`, waiting a while for a registry that does not answer.
    pub fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, Refusal> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.registry.schema(id) {
                Ok(schema) => return Ok(schema),
                Err(error @ RegistryError::UnknownId(_)) => {
                    return Err(Refusal::new(Reason::UnknownSchema, error.to_string()))
                }
                Err(error @ RegistryError::Invalid { .. }) => {
                    return Err(Refusal::new(Reason::UndecodableFormat, error.to_string()))
                }
                Err(error) if Instant::now() < deadline => {
                    warn!(%error, "The schema registry does not answer: trying again.");
                    std::thread::sleep(RETRY_EVERY);
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
    }

    /// Remembers `error` for the stage to stop on; the record goes to quarantine.
    pub fn fail(&self, error: RegistryError) -> Refusal {
        let refusal = Refusal::new(
            Reason::UndecodableFormat,
            format!("{error}: the record could not be judged, and the stage stops"),
        );
        self.lock().get_or_insert(error);
        refusal
    }

    /// Why the registry failed, if it did: the stage stops on it between two batches.
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        match self.lock().as_ref() {
            Some(error) => Err(RegistryFailed(error.clone())),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RegistryError>> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ingest's Avro: per writer schema, judged once, the derived schema's id and the plan its
/// datums are pseudonymized with.
#[derive(Debug)]
pub struct IngestAvro {
    input: AvroInput,
    policy: Policy,
    subject: String,
    schemas: Mutex<HashMap<u32, Result<Arc<Judged>, Refusal>>>,
}

/// A writer schema the policy accepts.
#[derive(Debug)]
struct Judged {
    /// The derived schema's id, in the output records' header.
    output_id: u32,
    /// How its datums are pseudonymized.
    path: Path,
}

/// The direct walk, or the JSON record path for a schema it does not read.
#[derive(Debug)]
enum Path {
    Direct(AvroPlan),
    ThroughJson(ThroughJson),
}

/// A writer schema's datums rendered as JSON, pseudonymized on the JSON record path and
/// written back with the derived schema.
#[derive(Debug)]
struct ThroughJson {
    writer: Arc<Schema>,
    output: AvroWriter,
}

impl IngestAvro {
    /// Reads with `input`'s registry, pseudonymizes with `policy`, registers derived
    /// schemas under `OUTPUT_TOPIC-value`.
    pub fn new(input: AvroInput, policy: Policy, output_topic: &str) -> Self {
        Self {
            input,
            policy,
            subject: format!("{output_topic}-value"),
            schemas: Mutex::default(),
        }
    }

    /// Pseudonymizes the wire-format record `payload` with `engine` (whose policy is the
    /// one given to [`IngestAvro::new`]), appending the output record to `out` (untouched
    /// on refusal); with `pairs`, as [`Pseudonymizer::pseudonymize_bridged`] does.
    pub fn pseudonymize<'e>(
        &self,
        engine: &'e Pseudonymizer,
        payload: &[u8],
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'e>, Rejection> {
        // The schema is judged before the datum is read: a record of a schema the policy
        // does not accept is refused for that, whatever its bytes.
        let (id, datum) = split_wire(payload).map_err(Refusal::from)?;
        let judged = self.judged(id)?;
        let mark = out.len();
        write_header(judged.output_id, out);
        let outcome = match &judged.path {
            Path::Direct(plan) => plan.pseudonymize_into(engine, datum, out, pairs, quasi),
            Path::ThroughJson(json) => json.pseudonymize(engine, id, datum, out, pairs, quasi),
        };
        if outcome.is_err() {
            out.truncate(mark);
        }
        outcome
    }

    /// Why the registry failed, if it did (the stage stops on it).
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        self.input.failure()
    }

    fn judged(&self, id: u32) -> Result<Arc<Judged>, Refusal> {
        if let Some(known) = self.lock().get(&id) {
            return known.clone();
        }
        let judged = self.judge(id);
        // A registry that did not answer is not an answer about this schema.
        if judged.as_ref().is_err_and(|refusal| {
            refusal.reason == Reason::UndecodableFormat && self.failure().is_err()
        }) {
            return judged;
        }
        self.lock().insert(id, judged.clone());
        judged
    }

    fn judge(&self, id: u32) -> Result<Arc<Judged>, Refusal> {
        let writer = self.input.writer_schema(id)?;
        // Once per schema id: a rule naming no field may be a typo for one that has none.
        for path in avro_schema::rules_without_field(&self.policy, &writer) {
            warn!(
                path,
                schema_id = id,
                "Policy rule names no field of the writer schema (a typo leaves the field it meant without a rule, and its records quarantined as unknown_field): check the policy with `pseudopipe schema check --policy POLICY --schema SCHEMA`."
            );
        }
        let derived = avro_schema::derive(&self.policy, &writer)
            .map_err(|problems| refusal_of(id, &problems))?;
        let output_id = self
            .input
            .registry()
            .register(&self.subject, &derived)
            .map_err(|error| self.input.fail(error))?;
        let path = match AvroPlan::compile(&self.policy, &writer, id) {
            Ok(plan) => Path::Direct(plan),
            Err(not_planned) => {
                warn!(schema_id = id, %not_planned, "Records of this writer schema go through the JSON record path, which is slower.");
                Path::ThroughJson(ThroughJson {
                    writer,
                    output: AvroWriter::new(derived),
                })
            }
        };
        Ok(Arc::new(Judged { output_id, path }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Result<Arc<Judged>, Refusal>>> {
        self.schemas.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ThroughJson {
    /// The JSON record path for one datum: rendered as its JSON event, pseudonymized,
    /// written back as a datum of the derived schema; the record key found again in the
    /// output.
    fn pseudonymize<'e>(
        &self,
        engine: &'e Pseudonymizer,
        id: u32,
        datum: &[u8],
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'e>, Rejection> {
        let json = to_json(&self.writer, id, datum).map_err(Refusal::from)?;
        let mut pseudonymized = Vec::with_capacity(json.len());
        let outcome = match (pairs, quasi) {
            (pairs, Some(quasi)) => {
                let outcome =
                    engine.pseudonymize_observed(&json, &mut pseudonymized, pairs, quasi)?;
                // The monitor groups this schema's records by their JSON rendering.
                quasi.hold(&pseudonymized);
                outcome
            }
            (Some(pairs), None) => engine.pseudonymize_bridged(&json, &mut pseudonymized, pairs)?,
            (None, None) => engine.pseudonymize_into(&json, &mut pseudonymized)?,
        };
        let start = out.len();
        self.output
            .write(&pseudonymized, out)
            .map_err(|error| Rejection::from(Refusal::from(error)))?;
        // The token is written whole in the datum, as a string's bytes.
        let record_key = outcome.record_key(&pseudonymized).and_then(|token| {
            out[start..]
                .windows(token.len())
                .position(|window| window == token)
                .map(|at| start + at..start + at + token.len())
        });
        Ok(Outcome {
            record_key,
            ..outcome
        })
    }
}

/// The quarantine reason and message of a writer schema the policy does not accept: an
/// unclassified field is `unknown_field`, as in a JSON event.
fn refusal_of(id: u32, problems: &[SchemaProblem]) -> Refusal {
    let reason = match problems.first() {
        Some(SchemaProblem::Unclassified { .. }) => Reason::UnknownField,
        _ => Reason::WrongType,
    };
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Refusal::new(
        reason,
        format!(
            "the writer schema (id {id}) does not fit the policy: {}",
            listed.join("; ")
        ),
    )
}

/// The sink's Avro: the on-prem registry the records name, and the cloud one, if any:
/// each datum is judged in one pass under the guard's plan for its schema (or, for a
/// schema that plan does not read, as the JSON event it renders); with a cloud registry,
/// the writer schema (the derived one) is registered there under the cloud topic's subject
/// (`TOPIC-value`) and the record's schema id rewritten to the cloud's, so that analysts
/// resolve it where they are. The datum itself crosses as it came.
#[derive(Debug)]
pub struct SinkAvro {
    input: AvroInput,
    cloud: Option<Cloud>,
    /// Per schema id: the schema, and the guard's plan for it if it has one.
    plans: Mutex<HashMap<u32, Arc<GuardPlan>>>,
}

/// How the records of one schema are judged.
#[derive(Debug)]
struct GuardPlan {
    schema: Arc<Schema>,
    plan: Option<AvroPlan>,
}

#[derive(Debug)]
struct Cloud {
    registry: Registry,
    subject: String,
    /// Cloud ids by on-prem id.
    ids: Mutex<HashMap<u32, u32>>,
}

impl SinkAvro {
    /// Judges with `input`'s schemas; with `cloud`, registers them there under
    /// `CLOUD_TOPIC-value` and rewrites the ids.
    pub fn new(input: AvroInput, cloud: Option<Registry>, cloud_topic: &str) -> Self {
        Self {
            input,
            cloud: cloud.map(|registry| Cloud {
                registry,
                subject: format!("{cloud_topic}-value"),
                ids: Mutex::default(),
            }),
            plans: Mutex::default(),
        }
    }

    /// The schema of `id` and the guard's plan for it, compiled once.
    fn plan(&self, guard: &LeakGuard, id: u32) -> Result<Arc<GuardPlan>, Refusal> {
        let known = self.lock().get(&id).cloned();
        if let Some(known) = known {
            return Ok(known);
        }
        let schema = self.input.writer_schema(id)?;
        let plan = AvroPlan::for_guard(guard.policy(), &schema, id).ok();
        let judged = Arc::new(GuardPlan { schema, plan });
        self.lock().insert(id, judged.clone());
        Ok(judged)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<GuardPlan>>> {
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Judges the record `payload` with `guard`; the record to forward if it passes.
    pub fn judge(
        &self,
        guard: &LeakGuard,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<Vec<u8>, Rejection> {
        // The guard judges the whole datum: every byte of it is read, or nothing passes.
        let (id, datum) = split_wire(payload).map_err(Refusal::from)?;
        let judged = self.plan(guard, id)?;
        match &judged.plan {
            Some(plan) => plan.judge(guard, key, datum)?,
            None => guard.check(
                key,
                &to_json(&judged.schema, id, datum).map_err(Refusal::from)?,
            )?,
        }
        let Some(cloud) = &self.cloud else {
            return Ok(payload.to_vec());
        };
        let known = cloud.lock().get(&id).copied();
        let cloud_id = match known {
            Some(cloud_id) => cloud_id,
            None => {
                let cloud_id = cloud
                    .registry
                    .register(&cloud.subject, &judged.schema)
                    .map_err(|error| self.input.fail(error))?;
                cloud.lock().insert(id, cloud_id);
                cloud_id
            }
        };
        Ok(with_schema_id(payload, cloud_id)?)
    }

    /// Why a registry failed, if one did (the stage stops on it).
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        self.input.failure()
    }
}

impl Cloud {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u32>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The wire-format record `payload` with its datum unchanged under schema id `id`.
pub fn with_schema_id(payload: &[u8], id: u32) -> Result<Vec<u8>, Refusal> {
    let (_, datum) = split_wire(payload)?;
    let mut record = Vec::with_capacity(payload.len());
    write_header(id, &mut record);
    record.extend_from_slice(datum);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_datum_under_another_id() {
        let record = [0, 0, 0, 0, 7, 2, 0x61];
        assert_eq!(
            with_schema_id(&record, 258).unwrap(),
            [0, 0, 0, 1, 2, 2, 0x61]
        );
        assert_eq!(
            with_schema_id(b"{}", 1).unwrap_err().reason,
            Reason::UndecodableFormat
        );
    }
}
