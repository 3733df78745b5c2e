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

use apache_avro::schema::{Name, RecordSchema};
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

/// The timestamp types, written as a `long`.
macro_rules! timestamp {
    () => {
        Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    };
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

    /// Appends the datum of the JSON event `json` to `out`: Avro's binary encoding,
    /// written straight from the JSON value as the schema directs (no intermediate Avro
    /// value, no second validation pass: what does not fit is refused on the way).
    pub fn write(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), AvroError> {
        let json: Json = serde_json::from_slice(json).map_err(|_| AvroError::DoesNotFit {
            path: String::new(),
            what: "not a JSON event",
        })?;
        let start = out.len();
        let mut path = String::new();
        let written = self.encode(&self.schema, &json, &mut path, out);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    fn encode(
        &self,
        schema: &Schema,
        json: &Json,
        path: &mut String,
        out: &mut Vec<u8>,
    ) -> Result<(), AvroError> {
        let misfit = |path: &String, what| AvroError::DoesNotFit {
            path: path.clone(),
            what,
        };
        match (schema, json) {
            (Schema::Ref { name }, json) => {
                let named = self.named(name, path)?;
                self.encode(named, json, path, out)?;
            }
            (Schema::Union(union), json) => {
                let (index, branch) = union
                    .variants()
                    .iter()
                    .enumerate()
                    .find(|(_, branch)| self.may_hold(branch, json))
                    .ok_or_else(|| misfit(path, "a value of no type of the union"))?;
                write_long(i64::try_from(index).expect("a union has few branches"), out);
                self.encode(branch, json, path, out)?;
            }
            (Schema::Null, Json::Null) => {}
            (Schema::Boolean, Json::Bool(b)) => out.push(u8::from(*b)),
            (Schema::Int | Schema::Date | Schema::TimeMillis, Json::Number(n)) => write_long(
                n.as_i64()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .ok_or_else(|| misfit(path, "not a 32-bit integer"))?,
                out,
            ),
            (Schema::Long | Schema::TimeMicros, Json::Number(n))
            | (timestamp!(), Json::Number(n)) => write_long(
                n.as_i64()
                    .ok_or_else(|| misfit(path, "not a 64-bit integer"))?,
                out,
            ),
            (Schema::Float, Json::Number(n)) => {
                let x = n.as_f64().ok_or_else(|| misfit(path, "not a number"))?;
                out.extend_from_slice(&(x as f32).to_le_bytes());
            }
            (Schema::Double, Json::Number(n)) => {
                let x = n.as_f64().ok_or_else(|| misfit(path, "not a number"))?;
                out.extend_from_slice(&x.to_le_bytes());
            }
            // A uuid is written as its text, as read (`to_json` renders it hyphenated).
            (Schema::String | Schema::Uuid, Json::String(s)) => write_bytes(s.as_bytes(), out),
            (Schema::Enum(schema), Json::String(s)) => {
                let index = schema
                    .symbols
                    .iter()
                    .position(|symbol| symbol == s)
                    .ok_or_else(|| misfit(path, "not a symbol of the enum"))?;
                write_long(i64::try_from(index).expect("an enum has few symbols"), out);
            }
            (Schema::Array(array), Json::Array(items)) => {
                let len = path.len();
                path.push_str("[]");
                if !items.is_empty() {
                    // One block of every item, then the empty block that ends the array.
                    write_long(i64::try_from(items.len()).expect("a JSON array fits"), out);
                    for item in items {
                        self.encode(&array.items, item, path, out)?;
                    }
                }
                write_long(0, out);
                path.truncate(len);
            }
            (Schema::Record(record), Json::Object(object)) => {
                self.encode_record(record, object, path, out)?;
            }
            _ => return Err(misfit(path, "a value of another type")),
        }
        Ok(())
    }

    /// Whether `json` is of a kind `schema` takes: which branch of a union it goes to.
    fn may_hold(&self, schema: &Schema, json: &Json) -> bool {
        match (schema, json) {
            (Schema::Ref { name }, json) => self
                .names
                .get(name)
                .is_some_and(|named| self.may_hold(named, json)),
            (Schema::Null, Json::Null)
            | (Schema::Boolean, Json::Bool(_))
            | (Schema::Float | Schema::Double, Json::Number(_))
            | (Schema::String | Schema::Uuid, Json::String(_))
            | (Schema::Array(_), Json::Array(_))
            | (Schema::Record(_), Json::Object(_)) => true,
            (Schema::Int | Schema::Date | Schema::TimeMillis, Json::Number(n)) => {
                n.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            (Schema::Long | Schema::TimeMicros, Json::Number(n))
            | (timestamp!(), Json::Number(n)) => n.as_i64().is_some(),
            (Schema::Enum(schema), Json::String(s)) => schema.symbols.contains(s),
            _ => false,
        }
    }

    fn named(&self, name: &Name, path: &str) -> Result<&Schema, AvroError> {
        self.names.get(name).ok_or_else(|| AvroError::DoesNotFit {
            path: path.to_owned(),
            what: "a named type the schema does not define",
        })
    }

    fn encode_record(
        &self,
        record: &RecordSchema,
        object: &Map<String, Json>,
        path: &mut String,
        out: &mut Vec<u8>,
    ) -> Result<(), AvroError> {
        for field in &record.fields {
            let len = path.len();
            if len > 0 {
                path.push('.');
            }
            path.push_str(&field.name);
            // Absent: the field's default, or null where the schema allows it.
            let default;
            let json = match (object.get(&field.name), &field.default) {
                (Some(json), _) => json,
                (None, Some(value)) => value,
                (None, None) => {
                    default = Json::Null;
                    &default
                }
            };
            self.encode(&field.schema, json, path, out)?;
            path.truncate(len);
        }
        // What the derived schema left out because the policy drops all of it may remain
        // as an empty shell (`{}`, `[]`, null): nothing to write.
        let known = |key: &String| record.fields.iter().any(|field| field.name == *key);
        if !object
            .iter()
            .all(|(key, value)| known(key) || is_vacant(value))
        {
            return Err(AvroError::DoesNotFit {
                path: path.clone(),
                what: "a field the derived schema does not have",
            });
        }
        Ok(())
    }
}

/// Avro's `long` (and `int`): zig-zag, then variable length, 7 bits a byte.
pub(crate) fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Avro's `bytes` and `string`: the length, then the bytes.
pub(crate) fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(i64::try_from(bytes.len()).unwrap_or(i64::MAX), out);
    out.extend_from_slice(bytes);
}

/// Whether `json` holds no value: null, or objects and arrays of nothing else.
fn is_vacant(json: &Json) -> bool {
    match json {
        Json::Null => true,
        Json::Object(object) => object.values().all(is_vacant),
        Json::Array(items) => items.iter().all(is_vacant),
        _ => false,
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

    /// The hand-written encoder writes the bytes apache-avro's own encoder writes.
    #[test]
    fn the_encoding_is_apache_avros() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"N","fields":[
                {"name":"l","type":{"type":"array","items":"long"}},
                {"name":"i","type":"int"},
                {"name":"f","type":"float"},
                {"name":"d","type":["null","double"]},
                {"name":"b","type":"boolean"},
                {"name":"s","type":["null","string"],"default":null}
            ]}"#,
        )
        .unwrap();
        let longs = [0, -1, 1, 63, -64, 64, 8191, -8193, i64::MAX, i64::MIN];
        let json = serde_json::json!({"l": longs, "i": -2_147_483_648_i64, "f": 1.5, "d": -0.1, "b": true, "s": "é"});
        let mut mine = Vec::new();
        AvroWriter::new(schema.clone())
            .write(json.to_string().as_bytes(), &mut mine)
            .unwrap();
        let theirs = apache_avro::to_avro_datum(
            &schema,
            Avro::Record(vec![
                (
                    "l".into(),
                    Avro::Array(longs.iter().map(|n| Avro::Long(*n)).collect()),
                ),
                ("i".into(), Avro::Int(i32::MIN)),
                ("f".into(), Avro::Float(1.5)),
                ("d".into(), Avro::Union(1, Box::new(Avro::Double(-0.1)))),
                ("b".into(), Avro::Boolean(true)),
                (
                    "s".into(),
                    Avro::Union(1, Box::new(Avro::String("é".into()))),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(mine, theirs);
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
