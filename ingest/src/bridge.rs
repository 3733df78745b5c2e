//! The rotation bridge: during an overlap after a rotation, the pairs (old-version token,
//! new-version token) of every token field ingest writes, to an on-prem topic.
//!
//! Tokens of two versions never join: that is what a rotation is for. An analyst who is
//! authorized to follow customers across the rotation reads the bridge topic and joins
//! through it. A pair holds the tenant, the field's policy path and domain, and the two
//! tokens: never a value. Each pair is keyed by its old token, so that a compacted topic
//! keeps one pair per old token; this instance also skips pairs it already sent (a
//! bounded memory of recent pairs). Pairs are produced outside the stage's transactions,
//! idempotently with `acks=all`, and flushed at every keyring check: a crash may lose
//! the pairs of the last seconds, which the next sighting of the same customer during
//! the overlap sends again.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, RandomState};
use std::time::Duration;

use plumbing::prometheus::{IntCounter, Registry};
use plumbing::rdkafka::error::KafkaError;
use plumbing::rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use plumbing::rdkafka::{ClientConfig, ClientContext};
use pseudonymize::BridgePairs;
use serde::Serialize;

use crate::Error;

/// Pairs remembered to skip repeats; the memory is cleared when it is full.
const REMEMBERED: usize = 500_000;
/// How long a flush waits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts what the bridge topic refused.
struct Counting {
    failed: IntCounter,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if result.is_err() {
            self.failed.inc();
        }
    }
}

/// One pair on the topic.
#[derive(Serialize)]
struct Pair<'a> {
    tenant: &'a str,
    field: &'a str,
    domain: &'a str,
    old: &'a str,
    new: &'a str,
}

/// The producer of bridge pairs.
pub struct Bridge {
    producer: ThreadedProducer<Counting>,
    topic: String,
    seen: HashSet<u64>,
    hasher: RandomState,
    sent: IntCounter,
    failed: IntCounter,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge producing to `topic` with the producer configuration `config`.
    pub fn new(config: &ClientConfig, topic: &str, registry: &Registry) -> Result<Self, Error> {
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::with_opts(crate::metric_opts(name, help))?;
            registry.register(Box::new(counter.clone()))?;
            Ok::<_, Error>(counter)
        };
        let sent = counter(
            "pseudopipe_bridge_pairs_total",
            "Pairs (old-version token, new-version token) handed to the bridge topic during rotation overlaps.",
        )?;
        let failed = counter(
            "pseudopipe_bridge_pairs_failed_total",
            "Bridge pairs that could not be queued or that the bridge topic did not acknowledge.",
        )?;
        let producer = config
            .create_with_context(Counting {
                failed: failed.clone(),
            })
            .map_err(|source: KafkaError| Error::BridgeProducer {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            seen: HashSet::new(),
            hasher: RandomState::new(),
            sent,
            failed,
            buffer: Vec::new(),
        })
    }

    /// Produces the pairs of one event of `tenant` that were not sent recently.
    pub(crate) fn send(&mut self, tenant: &str, pairs: &BridgePairs) {
        for pair in pairs.iter() {
            let id = self.hasher.hash_one((pair.domain, pair.old));
            if !self.seen.insert(id) {
                continue;
            }
            if self.seen.len() >= REMEMBERED {
                self.seen.clear();
            }
            self.buffer.clear();
            let record = Pair {
                tenant,
                field: pair.path,
                domain: pair.domain,
                old: pair.old,
                new: pair.new,
            };
            if serde_json::to_writer(&mut self.buffer, &record).is_err() {
                continue;
            }
            let sent = self.producer.send(
                BaseRecord::to(&self.topic)
                    .key(pair.old.as_bytes())
                    .payload(self.buffer.as_slice()),
            );
            match sent {
                Ok(()) => self.sent.inc(),
                // Counted, not logged: a full queue would refuse every pair at once.
                Err(_) => {
                    self.seen.remove(&id);
                    self.failed.inc();
                }
            }
        }
    }

    /// Waits for what was sent.
    pub(crate) fn flush(&self) {
        if let Err(error) =
            plumbing::rdkafka::producer::Producer::flush(&self.producer, FLUSH_TIMEOUT)
        {
            tracing::warn!(topic = self.topic, %error, "Bridge pairs are not all acknowledged yet.");
        }
    }
}
