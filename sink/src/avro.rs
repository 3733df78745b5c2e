//! Avro through the sink: each datum is judged as the JSON event it renders
//! ([`AvroInput`]); with a cloud schema registry, the writer schema (the derived one) is
//! registered there under the cloud topic's subject (`TOPIC-value`), and the record's schema
//! id rewritten to the cloud's, so that analysts resolve it where they are. The datum itself
//! crosses as it came.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use formats::avro::{with_schema_id, AvroInput, Refusal, RegistryFailed};
use formats::Registry;

/// The sink's Avro: the on-prem registry the records name, and the cloud one, if any.
#[derive(Debug)]
pub struct SinkAvro {
    input: AvroInput,
    cloud: Option<Cloud>,
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
        }
    }

    /// The JSON event the guard judges, and the record to forward if it passes.
    pub fn read(&self, payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
        let decoded = self.input.decode(payload)?;
        let Some(cloud) = &self.cloud else {
            return Ok((decoded.json, payload.to_vec()));
        };
        let known = cloud.lock().get(&decoded.id).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let id = cloud
                    .registry
                    .register(&cloud.subject, &decoded.writer)
                    .map_err(|error| self.input.fail(error))?;
                cloud.lock().insert(decoded.id, id);
                id
            }
        };
        Ok((decoded.json, with_schema_id(payload, id)?))
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
