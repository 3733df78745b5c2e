//! The audit log, mirrored to an on-prem topic (`pseudopipe.audit` by default).
//!
//! The file stays the record of truth (it is verified before anything is mirrored); the
//! topic lets the site's SIEM or an auditor's consumer follow key operations as they
//! happen. Each entry is produced as written in the file (MAC and signature included, so
//! it can be verified from the topic), keyed by its sequence number, to partition 0.
//! Ingest mirrors what the file holds beyond the last entry the topic has, at start and
//! whenever its keyring changes: entries written by `keys`, `subject` or `reidentify`
//! reach the topic at the next keyring check of a running ingest. Several instances may
//! mirror the same entry: readers keep one per `seq` (a compacted topic does too).

use std::path::PathBuf;
use std::time::Duration;

use plumbing::prometheus::{IntGauge, Registry};
use plumbing::rdkafka::consumer::{BaseConsumer, Consumer as _};
use plumbing::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use plumbing::rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use crate::Error;

/// How long a mirror may take to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Mirrors an audit log to a topic.
pub struct AuditMirror {
    producer: BaseProducer,
    topic: String,
    log: PathBuf,
    mirrored: u64,
    /// The log's size when it was last read: an unchanged log is not read again.
    read_len: Option<u64>,
    gauge: IntGauge,
}

impl std::fmt::Debug for AuditMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditMirror")
            .field("topic", &self.topic)
            .field("mirrored", &self.mirrored)
            .finish_non_exhaustive()
    }
}

impl AuditMirror {
    /// Finds the last entry the topic holds (its partition 0's last record), ready to
    /// mirror what follows it.
    pub fn start(
        producer: &ClientConfig,
        consumer: &ClientConfig,
        topic: &str,
        log: PathBuf,
        registry: &Registry,
    ) -> Result<Self, Error> {
        let fail =
            |what: &'static str, source: plumbing::rdkafka::error::KafkaError| Error::AuditTopic {
                topic: topic.to_owned(),
                what,
                source,
            };
        let reader: BaseConsumer = consumer
            .clone()
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| fail("cannot create a reader", e))?;
        let (_, high) = reader
            .fetch_watermarks(topic, 0, FLUSH_TIMEOUT)
            .map_err(|e| fail("cannot read its end offset", e))?;
        let mut mirrored = 0;
        if high > 0 {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, 0, Offset::Offset(high - 1))
                .map_err(|e| fail("cannot seek to its last record", e))?;
            reader
                .assign(&list)
                .map_err(|e| fail("cannot seek to its last record", e))?;
            let deadline = std::time::Instant::now() + FLUSH_TIMEOUT;
            while std::time::Instant::now() < deadline {
                match reader.poll(Duration::from_millis(200)) {
                    Some(Ok(message)) => {
                        mirrored = message
                            .key()
                            .and_then(|key| std::str::from_utf8(key).ok())
                            .and_then(|key| key.parse().ok())
                            .unwrap_or(0);
                        break;
                    }
                    Some(Err(error)) => return Err(fail("cannot read its last record", error)),
                    // A transaction marker ends the partition: nothing more to read.
                    None if reader.position().is_ok_and(|p| {
                        p.elements()
                            .first()
                            .is_some_and(|e| e.offset() == Offset::Offset(high))
                    }) =>
                    {
                        break
                    }
                    None => {}
                }
            }
        }
        let gauge = IntGauge::with_opts(crate::metric_opts(
            "pseudopipe_audit_mirrored_seq",
            "The last audit entry this ingest knows to be on the audit topic.",
        ))?;
        registry.register(Box::new(gauge.clone()))?;
        gauge.set(i64::try_from(mirrored).unwrap_or(i64::MAX));
        Ok(Self {
            producer: producer
                .create()
                .map_err(|e| fail("cannot create a producer", e))?,
            topic: topic.to_owned(),
            log,
            mirrored,
            read_len: None,
            gauge,
        })
    }

    /// Produces the entries of the log beyond the last one mirrored, and waits for them.
    pub fn sync(&mut self) -> Result<(), Error> {
        let len = std::fs::metadata(&self.log).map(|meta| meta.len()).ok();
        if len.is_some() && len == self.read_len {
            return Ok(());
        }
        let text = std::fs::read(&self.log).map_err(|source| Error::AuditLogUnreadable {
            path: self.log.clone(),
            source,
        })?;
        let mut last = self.mirrored;
        for line in text.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            let Some(seq) = sequence_of(line) else {
                continue;
            };
            if seq <= self.mirrored {
                continue;
            }
            let key = seq.to_string();
            let record = BaseRecord::to(&self.topic)
                .partition(0)
                .key(key.as_bytes())
                .payload(line);
            self.producer
                .send(record)
                .map_err(|(source, _)| Error::AuditNotMirrored {
                    seq,
                    topic: self.topic.clone(),
                    source,
                })?;
            last = seq;
        }
        if last == self.mirrored {
            self.read_len = len;
            return Ok(());
        }
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|source| Error::AuditUnacknowledged {
                last,
                topic: self.topic.clone(),
                source,
            })?;
        self.mirrored = last;
        self.read_len = len;
        self.gauge.set(i64::try_from(last).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// The `seq` of an audit line.
fn sequence_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_read_from_a_line() {
        assert_eq!(sequence_of(br#"{"seq":42,"time":"x"}"#), Some(42));
        assert_eq!(sequence_of(b"not json"), None);
    }
}
