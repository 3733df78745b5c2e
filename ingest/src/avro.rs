//! Avro in and out: a raw record in Confluent's wire format is read with its writer
//! schema, pseudonymized as its JSON event, and written with the schema the policy derives
//! from the writer's ([`pseudonymize::avro_schema::derive`]), registered under the output
//! topic's subject (`TOPIC-value`).
//!
//! A writer schema is judged once per id: one with a field the policy does not classify,
//! or whose rule does not fit its type, sends every record written with it to quarantine,
//! naming the field; so does a record that does not decode with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use formats::avro::{AvroInput, Output, Refusal, RegistryFailed};
use pseudonymize::avro_schema::{self, SchemaProblem};
use pseudonymize::{Policy, Reason};

/// Ingest's Avro: the input side shared with the sink, and per writer schema the derived
/// output.
#[derive(Debug)]
pub struct AvroFormat {
    input: AvroInput,
    policy: Policy,
    subject: String,
    outputs: Mutex<HashMap<u32, Result<Arc<Output>, Refusal>>>,
}

impl AvroFormat {
    /// Reads with `input`'s registry, pseudonymizes with `policy`, registers derived
    /// schemas under `OUTPUT_TOPIC-value`.
    pub fn new(input: AvroInput, policy: Policy, output_topic: &str) -> Self {
        Self {
            input,
            policy,
            subject: format!("{output_topic}-value"),
            outputs: Mutex::default(),
        }
    }

    /// The JSON event of `payload` and how to write its pseudonymized form.
    pub fn read(&self, payload: &[u8]) -> Result<(Vec<u8>, Arc<Output>), Refusal> {
        // The schema is judged before the datum is read: a record of a schema the policy
        // does not accept is refused for that, whatever its bytes.
        let (id, _) = pseudonymize::avro::split_wire(payload)?;
        let output = self.output(id)?;
        Ok((self.input.decode(payload)?.json, output))
    }

    /// Why the registry failed, if it did (the stage stops on it).
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        self.input.failure()
    }

    fn output(&self, id: u32) -> Result<Arc<Output>, Refusal> {
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

    fn judge(&self, id: u32) -> Result<Arc<Output>, Refusal> {
        let writer = self.input.writer_schema(id)?;
        // Once per schema id: a rule naming no field may be a typo for one that has none.
        for path in avro_schema::rules_without_field(&self.policy, &writer) {
            tracing::warn!(
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
        Ok(Arc::new(Output::new(derived, output_id)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Result<Arc<Output>, Refusal>>> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
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
