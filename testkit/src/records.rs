//! [`NewRecord`], what a test produces, and [`Record`], what it reads back.

use serde_json::Value;

/// A record to produce: a payload, and optionally a key, headers and a partition.
///
/// Anything that converts into one can be handed to [`Broker::produce`](crate::Broker::produce):
/// a `&str`, a `String`, bytes, a `serde_json::Value` (serialized), or a `(key, payload)` pair.
///
/// ```
/// use testkit::NewRecord;
/// let record = NewRecord::json(&serde_json::json!({"event_id": "e-1"}))
///     .key("e-1")
///     .header("source", "pos")
///     .partition(2);
/// assert_eq!(record.payload, br#"{"event_id":"e-1"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The record key; `None` lets the partitioner spread records.
    pub key: Option<Vec<u8>>,
    /// The record value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// A fixed partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
}

impl NewRecord {
    /// A record with this payload, no key, no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> NewRecord {
        NewRecord {
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// A record whose payload is `value` serialized as JSON.
    pub fn json(value: &Value) -> NewRecord {
        NewRecord::new(value.to_string())
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> NewRecord {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> NewRecord {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sends the record to this partition.
    pub fn partition(mut self, partition: i32) -> NewRecord {
        self.partition = Some(partition);
        self
    }
}

impl From<&str> for NewRecord {
    fn from(payload: &str) -> NewRecord {
        NewRecord::new(payload)
    }
}

impl From<String> for NewRecord {
    fn from(payload: String) -> NewRecord {
        NewRecord::new(payload)
    }
}

impl From<Vec<u8>> for NewRecord {
    fn from(payload: Vec<u8>) -> NewRecord {
        NewRecord::new(payload)
    }
}

impl From<&[u8]> for NewRecord {
    fn from(payload: &[u8]) -> NewRecord {
        NewRecord::new(payload)
    }
}

impl From<Value> for NewRecord {
    fn from(value: Value) -> NewRecord {
        NewRecord::json(&value)
    }
}

impl From<&Value> for NewRecord {
    fn from(value: &Value) -> NewRecord {
        NewRecord::json(value)
    }
}

impl<K: Into<Vec<u8>>> From<(K, &str)> for NewRecord {
    fn from((key, payload): (K, &str)) -> NewRecord {
        NewRecord::new(payload).key(key)
    }
}

impl<K: Into<Vec<u8>>> From<(K, Value)> for NewRecord {
    fn from((key, value): (K, Value)) -> NewRecord {
        NewRecord::json(&value).key(key)
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The record value, if any (`None` is a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers, in order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

impl Record {
    /// The key as UTF-8 text (`None` when absent or not UTF-8).
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
    }

    /// The payload as UTF-8 text (`None` when absent or not UTF-8).
    pub fn payload_str(&self) -> Option<&str> {
        self.payload
            .as_deref()
            .and_then(|payload| std::str::from_utf8(payload).ok())
    }

    /// The payload parsed as JSON. Panics, quoting the record, if it is not JSON.
    pub fn json(&self) -> Value {
        let payload = self.payload.as_deref().unwrap_or_default();
        serde_json::from_slice(payload).unwrap_or_else(|error| {
            panic!(
                "record at partition {} offset {} is not JSON ({error}): {}",
                self.partition,
                self.offset,
                String::from_utf8_lossy(payload)
            )
        })
    }

    /// The value of the first header called `name`, as UTF-8 text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The value of the first header called `name`, as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions_set_key_and_payload() {
        let record = NewRecord::from(("k1", "v1"));
        assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(record.payload, b"v1");
        let record = NewRecord::from(("k2", json!({"a": 1})));
        assert_eq!(record.payload, br#"{"a":1}"#);
        assert_eq!(NewRecord::from("plain").key, None);
    }

    #[test]
    fn a_record_reads_its_headers_and_json() {
        let record = Record {
            key: Some(b"k".to_vec()),
            payload: Some(br#"{"a":1}"#.to_vec()),
            headers: vec![
                ("reason".into(), Some(b"schema".to_vec())),
                ("empty".into(), None),
            ],
            partition: 0,
            offset: 7,
        };
        assert_eq!(record.header("reason"), Some("schema"));
        assert_eq!(record.header("empty"), None);
        assert_eq!(record.header("missing"), None);
        assert_eq!(record.json()["a"], 1);
        assert_eq!(record.key_str(), Some("k"));
    }
}
