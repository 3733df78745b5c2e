//! One record on its way out: the produce request, its retries, and how it settles.
//!
//! Nothing here ever logs or formats a key, a payload or a header value: log lines carry
//! the topic, partition, offset and librdkafka's error only.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::offsets::{Epoch, TopicPartition};

/// First pause before a retriable failure is tried again.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between tries; librdkafka's own `message.timeout.ms` comes on top.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where a record goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    /// To the output topic, with the processor's key and payload.
    Forward,
    /// To the quarantine topic, unchanged, with the reason code.
    Quarantine(&'static str),
}

/// Everything needed to produce (and re-produce) one record.
pub(super) struct Outgoing {
    pub(super) route: Route,
    pub(super) topic: Arc<str>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) timestamp: Option<i64>,
}

impl Outgoing {
    /// Hands the record to librdkafka's queue; the future resolves with the delivery report.
    pub(super) fn send(&self, producer: &FutureProducer) -> Result<DeliveryFuture, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
        if let Some(key) = &self.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &self.payload {
            record = record.payload(payload.as_slice());
        }
        if let Some(headers) = &self.headers {
            record = record.headers(headers.clone());
        }
        if let Some(timestamp) = self.timestamp {
            record = record.timestamp(timestamp);
        }
        // The rejected record carries the content: drop it, keep the error.
        producer
            .send_result(record)
            .map_err(|(error, _record)| error)
    }
}

/// Whether a failed delivery may succeed if tried again.
///
/// Anything that depends on the state of the brokers or the network (timeouts, leader
/// changes, a full local queue, brokers down) is retriable. What will fail the same way
/// every time — the record itself or the permissions are wrong — is permanent: retrying it
/// forever would hide the problem, skipping it would lose the record, so it stalls its
/// partition instead. An error not listed is treated as retriable.
pub(crate) fn is_retriable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    let Some(code) = error.rdkafka_error_code() else {
        // Canceled: the producer went away underneath; nothing about the record.
        return true;
    };
    !matches!(
        code,
        Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::MessageBatchTooLarge
            | Code::InvalidRecord
            | Code::InvalidTimestamp
            | Code::InvalidTopic
            | Code::UnknownTopic
            | Code::UnknownPartition
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::InvalidRequiredAcks
            | Code::UnsupportedForMessageFormat
            | Code::UnsupportedCompressionType
            | Code::UnsupportedVersion
            | Code::PolicyViolation
            | Code::InvalidRequest
            | Code::InvalidArgument
            | Code::BadMessage
            | Code::InvalidType
            | Code::InvalidDifferentRecord
            | Code::ProducerFenced
            | Code::Fenced
            | Code::Fatal
    )
}

/// A permanent failure: the relay pauses the partition.
#[derive(Debug)]
pub(super) struct Stall {
    pub(super) tp: TopicPartition,
    pub(super) epoch: Epoch,
}

/// The delivery of one consumed record, run as its own task.
pub(super) struct Delivery {
    pub(super) shared: Arc<Shared>,
    pub(super) producer: FutureProducer,
    pub(super) outgoing: Outgoing,
    pub(super) tp: TopicPartition,
    pub(super) epoch: Epoch,
    pub(super) offset: i64,
    pub(super) received_at: Instant,
    /// Fired when the partition is revoked or the drain at shutdown times out.
    pub(super) cancel: CancellationToken,
    pub(super) stalls: UnboundedSender<Stall>,
}

impl Delivery {
    /// Waits for the delivery report of `first` and retries until the record is delivered,
    /// fails permanently, or the delivery is cancelled.
    pub(super) async fn run(self, first: Result<DeliveryFuture, KafkaError>) {
        let mut guard = InFlight {
            shared: &self.shared,
            tp: &self.tp,
            epoch: self.epoch,
            offset: self.offset,
            settled: false,
        };
        let mut attempt = first;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let outcome = match attempt {
                Ok(report) => tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return,
                    report = report => match report {
                        Ok(Ok(_delivery)) => Ok(()),
                        // The returned message holds the content: never looked at.
                        Ok(Err((error, _message))) => Err(error),
                        Err(_canceled) => Err(KafkaError::Canceled),
                    },
                },
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(()) => {
                    guard.delivered(self.outgoing.route, self.received_at);
                    return;
                }
                Err(error) => error,
            };
            if !is_retriable(&error) {
                guard.stalled(&error);
                // The relay may be gone already at shutdown: the watermark holds anyway.
                let _ = self.stalls.send(Stall {
                    tp: self.tp.clone(),
                    epoch: self.epoch,
                });
                return;
            }
            self.shared
                .record_retry(&self.tp, self.offset, &error, backoff);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            attempt = self.outgoing.send(&self.producer);
        }
    }
}

/// Settles one offset exactly once: delivered, stalled, or (when dropped unsettled, on
/// cancellation or abort) abandoned.
struct InFlight<'a> {
    shared: &'a Shared,
    tp: &'a TopicPartition,
    epoch: Epoch,
    offset: i64,
    settled: bool,
}

impl InFlight<'_> {
    fn delivered(&mut self, route: Route, received_at: Instant) {
        self.shared
            .record_delivered(self.tp, self.epoch, self.offset, route, received_at);
        self.settled = true;
    }

    fn stalled(&mut self, error: &KafkaError) {
        self.shared
            .record_stalled(self.tp, self.epoch, self.offset, error);
        self.settled = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared
                .record_abandoned(self.tp, self.epoch, self.offset);
        }
        self.shared.settle_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_trouble_is_retriable() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::NetworkException,
        ] {
            assert!(
                is_retriable(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        assert!(is_retriable(&KafkaError::Canceled));
    }

    #[test]
    fn bad_records_and_permissions_are_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::Fatal,
        ] {
            assert!(
                !is_retriable(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
    }
}
