//! The seam the stages call: what a record is made of depends on the topic's `format`, and
//! nothing else in a stage does. Ingest asks [`IngestFormat`] to pseudonymize a record
//! (decoded for the policy walk, pseudonymized, encoded), the sink asks [`SinkFormat`] to
//! judge one with the leak guard and give the record to forward.
//!
//! A format is a variant of each enum and a module of this crate. A Protobuf format would
//! add `formats/src/protobuf.rs`, a `Protobuf` variant here (two enums, their
//! constructors and four `match` arms), and a `protobuf` value of
//! [`Format`](crate::settings::Format) in `formats/src/settings.rs`; the stages do not change.

use std::borrow::Cow;
use std::sync::Arc;

use pseudonymize::{
    BridgePairs, LeakGuard, Outcome, Policy, Pseudonymizer, QuasiValues, Rejection,
};

use crate::avro::{AvroInput, IngestAvro, RegistryFailed, SinkAvro};
use crate::registry::{Registry, RegistryError, RegistrySettings};
use crate::settings::Format;

/// How ingest reads the raw topic's records and writes the pseudonymized ones.
#[derive(Debug)]
pub enum IngestFormat {
    /// One JSON object per record, in and out.
    Json,
    /// Avro in Confluent's wire format, in and out (boxed: the stage holds one for its
    /// lifetime, and JSON needs nothing).
    Avro(Box<IngestAvro>),
}

impl IngestFormat {
    /// The format `format`: `registry` is where Avro schemas come from (the settings give
    /// one for every format but JSON), `policy` the one the stage applies, derived schemas
    /// registered under `OUTPUT_TOPIC-value`.
    pub fn new(
        format: Format,
        registry: Option<&RegistrySettings>,
        policy: &Policy,
        output_topic: &str,
    ) -> Result<Self, RegistryError> {
        Ok(match format {
            Format::Json => Self::Json,
            Format::Avro => Self::Avro(Box::new(IngestAvro::new(
                AvroInput::new(Arc::new(registry_of(registry)?)),
                policy.clone(),
                output_topic,
            ))),
        })
    }

    /// Pseudonymizes the record `payload` with `engine`, appending the record to forward
    /// to `out` (untouched on rejection); with `pairs`, pairs the tokens of a rotation's
    /// overlap ([`Pseudonymizer::pseudonymize_bridged`]); with `quasi`, records where the
    /// policy's quasi-identifiers are ([`Pseudonymizer::pseudonymize_observed`]).
    pub fn pseudonymize<'e>(
        &self,
        engine: &'e Pseudonymizer,
        payload: &[u8],
        out: &mut Vec<u8>,
        pairs: Option<&mut BridgePairs>,
        quasi: Option<&mut QuasiValues>,
    ) -> Result<Outcome<'e>, Rejection> {
        match self {
            Self::Json => match (pairs, quasi) {
                (pairs, Some(quasi)) => engine.pseudonymize_observed(payload, out, pairs, quasi),
                (Some(pairs), None) => engine.pseudonymize_bridged(payload, out, pairs),
                (None, None) => engine.pseudonymize_into(payload, out),
            },
            Self::Avro(avro) => avro.pseudonymize(engine, payload, out, pairs, quasi),
        }
    }

    /// Whether records name their schema: then each schema is checked against the policy
    /// once (rules naming no field warned about), and the stage need not look at the first
    /// events for it.
    pub fn has_schemas(&self) -> bool {
        !matches!(self, Self::Json)
    }

    /// Why the format cannot go on (its registry failed), checked between two batches.
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        match self {
            Self::Json => Ok(()),
            Self::Avro(avro) => avro.failure(),
        }
    }
}

/// How the sink reads the pseudonymized topic's records for its leak guard.
#[derive(Debug)]
pub enum SinkFormat {
    /// One JSON object per record.
    Json,
    /// Avro in Confluent's wire format (boxed, as [`IngestFormat::Avro`]).
    Avro(Box<SinkAvro>),
}

impl SinkFormat {
    /// The format `format`: `registry` is where the records' schemas come from, `cloud`
    /// the registry of the cloud (derived schemas registered there under
    /// `CLOUD_TOPIC-value`), if any.
    pub fn new(
        format: Format,
        registry: Option<&RegistrySettings>,
        cloud: Option<&RegistrySettings>,
        cloud_topic: &str,
    ) -> Result<Self, RegistryError> {
        Ok(match format {
            Format::Json => Self::Json,
            Format::Avro => Self::Avro(Box::new(SinkAvro::new(
                AvroInput::new(Arc::new(registry_of(registry)?)),
                cloud.map(Registry::new).transpose()?,
                cloud_topic,
            ))),
        })
    }

    /// Judges the record `payload` (with `key`) with `guard`: the bytes to forward if it
    /// passes, which are the bytes judged (with, at most, another registry's schema id).
    pub fn judge<'p>(
        &self,
        guard: &LeakGuard,
        key: Option<&[u8]>,
        payload: &'p [u8],
    ) -> Result<Cow<'p, [u8]>, Rejection> {
        match self {
            Self::Json => guard.check(key, payload).map(|()| Cow::Borrowed(payload)),
            Self::Avro(avro) => avro.judge(guard, key, payload).map(Cow::Owned),
        }
    }

    /// Why the format cannot go on (a registry failed), checked between two batches.
    pub fn failure(&self) -> Result<(), RegistryFailed> {
        match self {
            Self::Json => Ok(()),
            Self::Avro(avro) => avro.failure(),
        }
    }
}

/// The registry of a format that needs one.
fn registry_of(settings: Option<&RegistrySettings>) -> Result<Registry, RegistryError> {
    let settings = settings.ok_or_else(|| {
        RegistryError::Settings(
            "the format needs a `schema_registry` (`url` or `directory`)".into(),
        )
    })?;
    Registry::new(settings)
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value as Avro;
    use apache_avro::Schema;
    use pseudonymize::avro_schema::derive_text;
    use pseudonymize::{MasterSecret, Reason};

    use super::*;

    const POLICY: &str = r#"
        record_key = "email"
        [fields]
        id = "keep"
        email = { action = "token", domain = "customer", normalizer = "email" }
        note = "drop"
    "#;

    fn writer(id: &str, extra: bool) -> String {
        let extra = if extra {
            r#",{"name":"extra","type":"string"}"#
        } else {
            ""
        };
        format!(
            r#"{{"type":"record","name":"E","namespace":"io.pseudopipe.raw","fields":[
                {{"name":"id","type":{id}}},
                {{"name":"email","type":"string"}},
                {{"name":"note","type":["null","string"]}}{extra}]}}"#
        )
    }

    /// Writer schemas 1 (fits), 2 (a field the policy does not classify), 3 (a uuid: the
    /// JSON record path), and the derived schemas of 1 and 3 as 11 and 13.
    fn site(policy: &Policy) -> (tempfile::TempDir, RegistrySettings) {
        let directory = tempfile::tempdir().unwrap();
        let uuid = r#"{"type":"string","logicalType":"uuid"}"#;
        for (id, text) in [
            (1, writer("\"string\"", false)),
            (2, writer("\"string\"", true)),
            (3, writer(uuid, false)),
        ] {
            std::fs::write(directory.path().join(format!("{id}.avsc")), &text).unwrap();
            if id != 2 {
                let derived = derive_text(policy, &Schema::parse_str(&text).unwrap()).unwrap();
                std::fs::write(directory.path().join(format!("1{id}.avsc")), derived).unwrap();
            }
        }
        let settings = RegistrySettings {
            directory: Some(directory.path().to_owned()),
            ..RegistrySettings::default()
        };
        (directory, settings)
    }

    fn record(id: u32, schema: &str, identifier: &str) -> Vec<u8> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut fields = vec![
            ("id".to_string(), Avro::String(identifier.into())),
            (
                "email".to_string(),
                Avro::String("Alice@Example.com".into()),
            ),
            (
                "note".to_string(),
                Avro::Union(1, Box::new(Avro::String("call her".into()))),
            ),
        ];
        if id == 2 {
            fields.push(("extra".to_string(), Avro::String("x".into())));
        }
        let value = Avro::Record(fields).resolve(&schema).unwrap();
        let mut record = vec![0];
        record.extend_from_slice(&id.to_be_bytes());
        record.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
        record
    }

    #[test]
    fn avro_records_go_through_the_seam_and_come_out_judged_by_the_guard() {
        let policy = Policy::from_toml(POLICY).unwrap();
        let (_directory, settings) = site(&policy);
        let secret = MasterSecret::from_bytes([4; 32]);
        let engine = Pseudonymizer::new(policy.clone(), [("default".to_string(), 1, &secret)]);
        let ingest = IngestFormat::new(Format::Avro, Some(&settings), &policy, "out").unwrap();
        let sink = SinkFormat::new(Format::Avro, Some(&settings), None, "cloud").unwrap();
        let guard = LeakGuard::new(policy.clone());
        assert!(ingest.has_schemas());

        let uuid = "0b8f2b4e-3f6a-4b59-9f2e-8d1e2f3a4b5c";
        for (id, schema, output_id) in [
            (1, writer("\"string\"", false), 11u32),
            (
                3,
                writer(r#"{"type":"string","logicalType":"uuid"}"#, false),
                13,
            ),
        ] {
            let mut out = Vec::new();
            let outcome = ingest
                .pseudonymize(&engine, &record(id, &schema, uuid), &mut out, None, None)
                .unwrap();
            assert_eq!(out[..5], [0, 0, 0, 0, output_id as u8], "schema {id}");
            let key = outcome.record_key(&out).unwrap().to_vec();
            assert!(pseudonymize::is_token(std::str::from_utf8(&key).unwrap()));
            // The output holds the id and the token, not the address nor the dropped note.
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(uuid) && !text.contains("Alice") && !text.contains("call"));
            assert_eq!(sink.judge(&guard, Some(&key), &out).unwrap(), out);
            // The raw record does not pass: its address is where a token goes.
            let raw = sink
                .judge(&guard, None, &record(id, &schema, uuid))
                .unwrap_err();
            assert_eq!(raw.reason, Reason::LeakGuard);
            assert_eq!(
                raw.message,
                "field `email` does not have the shape of its rule's output"
            );
        }
    }

    #[test]
    fn the_monitor_finds_the_quasi_identifiers_on_both_avro_paths() {
        let policy =
            Policy::from_toml(&format!("{POLICY}\n[risk]\nquasi_identifiers = [\"id\"]")).unwrap();
        let (_directory, settings) = site(&policy);
        let secret = MasterSecret::from_bytes([4; 32]);
        let engine = Pseudonymizer::new(policy.clone(), [("default".to_string(), 1, &secret)]);
        let ingest = IngestFormat::new(Format::Avro, Some(&settings), &policy, "out").unwrap();
        let mut quasi = QuasiValues::new();

        // Walked directly: the value as the output datum encodes it, in the output.
        let mut out = Vec::new();
        let direct = record(1, &writer("\"string\"", false), "store-7");
        ingest
            .pseudonymize(&engine, &direct, &mut out, None, Some(&mut quasi))
            .unwrap();
        let mut encoded = vec![14]; // the length 7, zigzag-encoded
        encoded.extend_from_slice(b"store-7");
        assert_eq!(quasi.value(0, &out), Some(&encoded[..]));
        assert_eq!(quasi.spans().len(), 1);

        // Through the JSON record path (a uuid): the JSON rendering, held.
        let uuid = "0b8f2b4e-3f6a-4b59-9f2e-8d1e2f3a4b5c";
        let schema = writer(r#"{"type":"string","logicalType":"uuid"}"#, false);
        let mut out = Vec::new();
        ingest
            .pseudonymize(
                &engine,
                &record(3, &schema, uuid),
                &mut out,
                None,
                Some(&mut quasi),
            )
            .unwrap();
        assert_eq!(quasi.value(0, &out), Some(format!("\"{uuid}\"").as_bytes()));
        assert!(
            quasi.spans().is_empty(),
            "held values are not spans of the output"
        );

        // The next event's spans are its own.
        let mut out = Vec::new();
        ingest
            .pseudonymize(&engine, &direct, &mut out, None, Some(&mut quasi))
            .unwrap();
        assert_eq!(quasi.value(0, &out), Some(&encoded[..]));
    }

    #[test]
    fn an_unknown_schema_id_and_an_unclassified_field_are_quarantined_as_before() {
        let policy = Policy::from_toml(POLICY).unwrap();
        let (_directory, settings) = site(&policy);
        let secret = MasterSecret::from_bytes([4; 32]);
        let engine = Pseudonymizer::new(policy.clone(), [("default".to_string(), 1, &secret)]);
        let ingest = IngestFormat::new(Format::Avro, Some(&settings), &policy, "out").unwrap();
        let mut out = Vec::new();

        let mut unknown = record(1, &writer("\"string\"", false), "a");
        unknown[4] = 99;
        let refused = ingest
            .pseudonymize(&engine, &unknown, &mut out, None, None)
            .unwrap_err();
        assert_eq!(refused.reason, Reason::UnknownSchema);
        assert_eq!(
            refused.message,
            "schema id 99 is not in the schema registry"
        );

        let unclassified = record(2, &writer("\"string\"", true), "a");
        let refused = ingest
            .pseudonymize(&engine, &unclassified, &mut out, None, None)
            .unwrap_err();
        assert_eq!(refused.reason, Reason::UnknownField);
        assert!(refused.message.contains("`extra`"), "{}", refused.message);
        assert!(out.is_empty());

        let refused = ingest
            .pseudonymize(&engine, b"{\"id\":\"a\"}", &mut out, None, None)
            .unwrap_err();
        assert_eq!(refused.reason, Reason::UndecodableFormat);
    }

    #[test]
    fn json_records_are_the_json_record_path() {
        let policy = Policy::from_toml(POLICY).unwrap();
        let secret = MasterSecret::from_bytes([4; 32]);
        let engine = Pseudonymizer::new(policy.clone(), [("default".to_string(), 1, &secret)]);
        let ingest = IngestFormat::new(Format::Json, None, &policy, "out").unwrap();
        assert!(!ingest.has_schemas());
        let event = br#"{"id":"a","email":"a@b.c","note":"x"}"#;
        let mut out = Vec::new();
        let mut expected = Vec::new();
        ingest
            .pseudonymize(&engine, event, &mut out, None, None)
            .unwrap();
        engine.pseudonymize_into(event, &mut expected).unwrap();
        assert_eq!(out, expected);
        let sink = SinkFormat::new(Format::Json, None, None, "cloud").unwrap();
        let guard = LeakGuard::new(policy);
        assert_eq!(&*sink.judge(&guard, None, &out).unwrap(), &out[..]);
        assert!(
            IngestFormat::new(Format::Avro, None, &Policy::from_toml(POLICY).unwrap(), "o")
                .is_err()
        );
    }
}
