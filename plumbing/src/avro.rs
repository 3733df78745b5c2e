//! Avro records as both stages read them: a record in Confluent's wire format becomes the
//! JSON event the policy (ingest) or the leak guard (sink) judges, with its writer schema
//! fetched from the registry by id.
//!
//! A registry that does not answer is waited for a while (the record is not judged
//! meanwhile); if it stays silent, the record is quarantined with that reason and the
//! stage stops at its next batch boundary ([`AvroInput::failure`]), so that a supervisor
//! restarts it once the registry is back, and nothing is judged without its schema.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use pseudonymize::avro::{split_wire, to_json, AvroError};
use pseudonymize::Reason;
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

impl From<AvroError> for Refusal {
    fn from(error: AvroError) -> Self {
        let reason = match error {
            AvroError::DoesNotFit { .. } => Reason::WrongType,
            _ => Reason::UndecodableFormat,
        };
        Self::new(reason, error.to_string())
    }
}

/// A record read: its writer schema id and schema, and its JSON event.
#[derive(Debug)]
pub struct Decoded {
    /// The writer schema's id.
    pub id: u32,
    /// The writer schema.
    pub writer: Arc<Schema>,
    /// The event, as JSON.
    pub json: Vec<u8>,
}

/// Reads Avro records with the writer schemas of a registry.
#[derive(Debug)]
pub struct AvroInput {
    registry: Arc<Registry>,
    /// What stopped the registry from answering, for the stage to stop on.
    failure: Mutex<Option<String>>,
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

    /// The writer schema and JSON event of the wire-format record `payload`.
    pub fn decode(&self, payload: &[u8]) -> Result<Decoded, Refusal> {
        let (id, datum) = split_wire(payload)?;
        let writer = self.writer_schema(id)?;
        let json = to_json(&writer, id, datum)?;
        Ok(Decoded { id, writer, json })
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
        let message = error.to_string();
        self.lock().get_or_insert_with(|| message.clone());
        Refusal::new(
            Reason::UndecodableFormat,
            format!("{message}: the record could not be judged, and the stage stops"),
        )
    }

    /// Why the registry failed, if it did: the stage stops on it between two batches.
    pub fn failure(&self) -> Result<(), String> {
        match self.lock().as_ref() {
            Some(message) => Err(format!(
                "{message}; restart the stage once the registry answers, and replay the records quarantined as `undecodable_format` meanwhile"
            )),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
