//! Avro records as both stages read them: a record in Confluent's wire format becomes the
//! JSON event the policy (ingest) or the leak guard (sink) judges, with its writer schema
//! fetched from the registry by id. On the way out, a pseudonymized event is written as a
//! datum of the schema derived for it ([`Output`]), or a record keeps its datum under
//! another registry's id ([`with_schema_id`]).
//!
//! A registry that does not answer is waited for a while (the record is not judged
//! meanwhile); if it stays silent, the record is quarantined with that reason and the
//! stage stops at its next batch boundary ([`AvroInput::failure`]), so that a supervisor
//! restarts it once the registry is back, and nothing is judged without its schema.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use pseudonymize::avro::{split_wire, to_json, write_header, AvroError, AvroWriter};
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

/// How the records of one writer schema are written out: as datums of the schema derived
/// from it, under that schema's id.
#[derive(Debug)]
pub struct Output {
    writer: AvroWriter,
    id: u32,
}

impl Output {
    /// Writes datums of `schema`, registered under `id`.
    pub fn new(schema: Schema, id: u32) -> Self {
        Self {
            writer: AvroWriter::new(schema),
            id,
        }
    }

    /// Appends the wire-format record of the pseudonymized JSON event `json` to `out`.
    pub fn write(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        write_header(self.id, out);
        self.writer.write(json, out).map_err(Refusal::from)
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
