//! Avro records in Confluent's wire format, for the JSON record path: a datum is read
//! with its writer schema and rendered as the JSON event the policy applies to; the
//! pseudonymized JSON is written back as a datum of the derived schema
//! ([`crate::avro_schema::derive`]).
//!
//! The wire format is Confluent's: byte 0 is 0 (the magic byte), bytes 1–4 the schema id
//! (big-endian), then the Avro binary encoding of one datum. A datum must be consumed
//! exactly: trailing bytes are refused, so that what is judged is all there is.
//!
//! Unions render as their value (the JSON the retail systems and the policy use, not
//! Avro's JSON encoding with type names), enums as their symbol. Bytes, fixed, decimals
//! and durations have no JSON rendering the policy could judge: a record holding one is
//! refused. Errors name a field path at most, never a value.

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Number, Value as Json};

/// The first byte of a record in Confluent's wire format.
pub const MAGIC_BYTE: u8 = 0;
/// The magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// Why a record could not be read or written as Avro. The messages name what is wrong
/// and where, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvroError {
    /// Not magic byte 0 followed by a 4-byte schema id.
    #[error(
        "the record is not in the Confluent wire format (magic byte 0, then a 4-byte schema id)"
    )]
    NotWireFormat,
    /// The bytes are not a datum of the writer schema.
    #[error("the record does not decode with its writer schema (id {0})")]
    DoesNotDecode(u32),
    /// Bytes left after the datum.
    #[error("the record has bytes after its Avro datum (writer schema id {0})")]
    TrailingBytes(u32),
    /// A type the JSON record path cannot judge.
    #[error("the record holds {kind} at `{path}`, which pseudopipe does not pseudonymize: classify the field out of the schema or drop it upstream")]
    Unsupported {
        /// The field path, policy notation.
        path: String,
        /// What it holds ("bytes", "a fixed", ...).
        kind: &'static str,
    },
    /// The pseudonymized event does not fit the derived schema.
    #[error("the pseudonymized event does not fit the derived schema at `{path}`: {what}")]
    DoesNotFit {
        /// The field path, policy notation.
        path: String,
        /// What did not fit.
        what: &'static str,
    },
}

/// The schema id and the datum of a record in the wire format.
pub fn split_wire(payload: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    match payload {
        [MAGIC_BYTE, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(AvroError::NotWireFormat),
    }
}

/// Appends the wire-format header for `id` to `out`.
pub fn write_header(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
}

/// The JSON event of a datum written with `writer` (schema id `id`, for messages).
pub fn to_json(writer: &Schema, id: u32, datum: &[u8]) -> Result<Vec<u8>, AvroError> {
    let mut rest = datum;
    let value = apache_avro::from_avro_datum(writer, &mut rest, None)
        .map_err(|_| AvroError::DoesNotDecode(id))?;
    if !rest.is_empty() {
        return Err(AvroError::TrailingBytes(id));
    }
    let mut path = String::new();
    let json = json_of(value, &mut path)?;
    Ok(serde_json::to_vec(&json).expect("a JSON value of strings and finite numbers serializes"))
}

fn json_of(value: Avro, path: &mut String) -> Result<Json, AvroError> {
    let unsupported = |path: &String, kind| AvroError::Unsupported {
        path: path.clone(),
        kind,
    };
    Ok(match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(b),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => Json::from(n),
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => Json::from(n),
        Avro::Float(x) => {
            finite(f64::from(x)).ok_or_else(|| unsupported(path, "a non-finite number"))?
        }
        Avro::Double(x) => finite(x).ok_or_else(|| unsupported(path, "a non-finite number"))?,
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s),
        Avro::Uuid(uuid) => Json::String(uuid.to_string()),
        Avro::Union(_, inner) => json_of(*inner, path)?,
        Avro::Array(items) => {
            let len = path.len();
            path.push_str("[]");
            let items = items
                .into_iter()
                .map(|item| json_of(item, path))
                .collect::<Result<Vec<_>, _>>()?;
            path.truncate(len);
            Json::Array(items)
        }
        Avro::Record(fields) => {
            let mut object = Map::with_capacity(fields.len());
            for (name, field) in fields {
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(&name);
                let json = json_of(field, path)?;
                path.truncate(len);
                object.insert(name, json);
            }
            Json::Object(object)
        }
        Avro::Map(_) => return Err(unsupported(path, "a map")),
        Avro::Bytes(_) => return Err(unsupported(path, "bytes")),
        Avro::Fixed(..) => return Err(unsupported(path, "a fixed")),
        Avro::Decimal(_) | Avro::BigDecimal(_) => return Err(unsupported(path, "a decimal")),
        Avro::Duration(_) => return Err(unsupported(path, "a duration")),
    })
}

fn finite(x: f64) -> Option<Json> {
    Number::from_f64(x).map(Json::Number)
}

/// Writes pseudonymized JSON events as datums of one (derived) schema.
#[derive(Debug)]
pub struct AvroWriter {
    schema: Schema,
    /// The named types of the schema, for its references.
    names: HashMap<Name, Schema>,
}

impl AvroWriter {
    /// A writer for `schema`.
    pub fn new(schema: Schema) -> Self {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        Self { schema, names }
    }

    /// The schema datums are written with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends the datum of the JSON event `json` to `out`.
    pub fn write(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), AvroError> {
        let json: Json = serde_json::from_slice(json).map_err(|_| AvroError::DoesNotFit {
            path: String::new(),
            what: "not a JSON event",
        })?;
        let mut path = String::new();
        let value = self.avro_of(&self.schema, json, &mut path)?;
        let datum =
            apache_avro::to_avro_datum(&self.schema, value).map_err(|_| AvroError::DoesNotFit {
                path: String::new(),
                what: "the datum does not validate",
            })?;
        out.extend_from_slice(&datum);
        Ok(())
    }

    fn avro_of(&self, schema: &Schema, json: Json, path: &mut String) -> Result<Avro, AvroError> {
        let misfit = |path: &String, what| AvroError::DoesNotFit {
            path: path.clone(),
            what,
        };
        Ok(match (schema, json) {
            (Schema::Ref { name }, json) => {
                let named = self.named(name, path)?;
                return self.avro_of(named, json, path);
            }
            (Schema::Union(union), json) => return self.union_of(union, json, path),
            (Schema::Null, Json::Null) => Avro::Null,
            (Schema::Boolean, Json::Bool(b)) => Avro::Boolean(b),
            (Schema::Int, Json::Number(n)) => Avro::Int(
                n.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| misfit(path, "not a 32-bit integer"))?,
            ),
            (Schema::Long, Json::Number(n)) => Avro::Long(
                n.as_i64()
                    .ok_or_else(|| misfit(path, "not a 64-bit integer"))?,
            ),
            (Schema::Float, Json::Number(n)) => {
                Avro::Float(n.as_f64().ok_or_else(|| misfit(path, "not a number"))? as f32)
            }
            (Schema::Double, Json::Number(n)) => {
                Avro::Double(n.as_f64().ok_or_else(|| misfit(path, "not a number"))?)
            }
            (Schema::String, Json::String(s)) => Avro::String(s),
            (Schema::Enum(schema), Json::String(s)) => {
                let index = schema
                    .symbols
                    .iter()
                    .position(|symbol| *symbol == s)
                    .ok_or_else(|| misfit(path, "not a symbol of the enum"))?;
                Avro::Enum(
                    u32::try_from(index).expect("an enum has fewer than 2^32 symbols"),
                    s,
                )
            }
            (Schema::Array(array), Json::Array(items)) => {
                let len = path.len();
                path.push_str("[]");
                let items = items
                    .into_iter()
                    .map(|item| self.avro_of(&array.items, item, path))
                    .collect::<Result<Vec<_>, _>>()?;
                path.truncate(len);
                Avro::Array(items)
            }
            (Schema::Record(record), Json::Object(object)) => {
                return self.record_of(record, object, path)
            }
            _ => return Err(misfit(path, "a value of another type")),
        })
    }

    fn named(&self, name: &Name, path: &str) -> Result<&Schema, AvroError> {
        self.names.get(name).ok_or_else(|| AvroError::DoesNotFit {
            path: path.to_owned(),
            what: "a named type the schema does not define",
        })
    }

    fn union_of(
        &self,
        union: &UnionSchema,
        json: Json,
        path: &mut String,
    ) -> Result<Avro, AvroError> {
        // The first branch the value fits, as Avro's own JSON resolution does.
        let mut last = None;
        for (index, branch) in union.variants().iter().enumerate() {
            let index = u32::try_from(index).expect("a union has fewer than 2^32 branches");
            match self.avro_of(branch, json.clone(), path) {
                Ok(value) => return Ok(Avro::Union(index, Box::new(value))),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(AvroError::DoesNotFit {
            path: path.clone(),
            what: "an empty union",
        }))
    }

    fn record_of(
        &self,
        record: &RecordSchema,
        mut object: Map<String, Json>,
        path: &mut String,
    ) -> Result<Avro, AvroError> {
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let len = path.len();
            if len > 0 {
                path.push('.');
            }
            path.push_str(&field.name);
            let json = match object.remove(&field.name) {
                Some(json) => json,
                // Absent: the field's default, or null where the schema allows it.
                None => field.default.clone().unwrap_or(Json::Null),
            };
            let value = self.avro_of(&field.schema, json, path)?;
            path.truncate(len);
            fields.push((field.name.clone(), value));
        }
        if !object.is_empty() {
            return Err(AvroError::DoesNotFit {
                path: path.clone(),
                what: "a field the derived schema does not have",
            });
        }
        Ok(Avro::Record(fields))
    }
}

/// Every named type of `schema` (records, enums, fixed), by full name.
fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema.clone());
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(inner) => {
            names.insert(inner.name.clone(), schema.clone());
        }
        Schema::Fixed(inner) => {
            names.insert(inner.name.clone(), schema.clone());
        }
        Schema::Array(array) => collect_names(&array.items, names),
        Schema::Map(map) => collect_names(&map.types, names),
        Schema::Union(union) => union
            .variants()
            .iter()
            .for_each(|branch| collect_names(branch, names)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"string"},
        {"name":"n","type":["null","long"],"default":null},
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["a","b"]}},
        {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"sku","type":"string"}]}}}
    ]}"#;

    fn schema() -> Schema {
        Schema::parse_str(SCHEMA).unwrap()
    }

    #[test]
    fn a_datum_round_trips_through_json() {
        let writer = AvroWriter::new(schema());
        let mut datum = Vec::new();
        writer
            .write(
                br#"{"id":"x","n":5,"kind":"b","items":[{"sku":"1"},{"sku":"2"}]}"#,
                &mut datum,
            )
            .unwrap();
        let json: Json = serde_json::from_slice(&to_json(&schema(), 7, &datum).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":"x","n":5,"kind":"b","items":[{"sku":"1"},{"sku":"2"}]})
        );
        // An absent nullable field is written as null.
        let mut datum = Vec::new();
        writer
            .write(br#"{"id":"x","kind":"a","items":[]}"#, &mut datum)
            .unwrap();
        let json: Json = serde_json::from_slice(&to_json(&schema(), 7, &datum).unwrap()).unwrap();
        assert_eq!(json["n"], Json::Null);
    }

    #[test]
    fn the_wire_format_is_checked_and_trailing_bytes_refused() {
        let mut record = Vec::new();
        write_header(258, &mut record);
        record.extend_from_slice(b"\x02x\x00\x00\x00");
        let (id, datum) = split_wire(&record).unwrap();
        assert_eq!(id, 258);
        assert!(to_json(&schema(), id, datum).is_ok());
        assert_eq!(split_wire(b"{\"a\":1}"), Err(AvroError::NotWireFormat));
        assert_eq!(split_wire(&[0, 0, 1]), Err(AvroError::NotWireFormat));
        let mut longer = datum.to_vec();
        longer.push(0);
        assert_eq!(
            to_json(&schema(), 258, &longer),
            Err(AvroError::TrailingBytes(258))
        );
        assert_eq!(
            to_json(&schema(), 258, b"\x02"),
            Err(AvroError::DoesNotDecode(258))
        );
    }

    #[test]
    fn misfits_and_unsupported_types_name_the_field_only() {
        let writer = AvroWriter::new(schema());
        let error = writer
            .write(br#"{"id":"x","kind":"c","items":[]}"#, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the pseudonymized event does not fit the derived schema at `kind`: not a symbol of the enum"
        );
        let error = writer
            .write(
                br#"{"id":"x","kind":"a","items":[],"secret@example.com":1}"#,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(!error.to_string().contains("example"), "{error}");
        let bytes = Schema::parse_str(
            r#"{"type":"record","name":"B","fields":[{"name":"blob","type":"bytes"}]}"#,
        )
        .unwrap();
        let datum = apache_avro::to_avro_datum(
            &bytes,
            Avro::Record(vec![("blob".into(), Avro::Bytes(b"alice".to_vec()))]),
        )
        .unwrap();
        let error = to_json(&bytes, 1, &datum).unwrap_err();
        assert!(error.to_string().contains("bytes at `blob`"), "{error}");
        assert!(!error.to_string().contains("alice"));
    }
}
