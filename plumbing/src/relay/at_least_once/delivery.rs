//! One record on its way out: where it goes, how its delivery report finds its way back,
//! and what a retry needs.
//!
//! A record is handed to librdkafka with a [`Token`] as its delivery opaque: a plain
//! `usize` packing its input partition and its [`Ticket`], so a delivery report costs no
//! allocation and no lookup beyond the partition's ring. The producers' delivery
//! callbacks only pass reports on ([`Report`]); the relay's thread settles them in bulk.
//!
//! Nothing here ever logs or formats a key, a payload or a header value: log lines carry
//! the topic, partition, offset and librdkafka's error only.

use std::sync::mpsc::Sender;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;

use crate::offsets::Ticket;
use crate::relay::context::Watched;

/// The producer type of a relay.
pub(super) type RelayProducer = ThreadedProducer<Watched<Sender<Report>>>;

/// A record as the relay hands it to librdkafka: its token is the delivery opaque.
pub(super) type Record<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// First pause before a retriable failure is tried again.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between tries; librdkafka's own `message.timeout.ms` comes on top.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The pause before try number `attempts + 1`: doubling from 100 ms, at most 10 s.
pub(super) fn backoff(attempts: u8) -> Duration {
    RETRY_BACKOFF_MIN
        .saturating_mul(1 << attempts.min(16))
        .min(RETRY_BACKOFF_MAX)
}

// Tokens pack a partition and a ticket into a usize.
const _: () = assert!(usize::BITS >= 64, "delivery tokens need a 64-bit usize");
/// Bits of a token that hold the ticket: 1.7e13 records per partition and process.
const TICKET_BITS: u32 = 44;
/// Partitions a token can name: 0 to 2^20 - 1.
const PARTITION_LIMIT: i32 = 1 << (64 - TICKET_BITS);

/// The delivery opaque of one record: its input partition and its ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) partition: i32,
    pub(super) ticket: Ticket,
}

impl Token {
    /// Whether a token can name records of `partition`.
    pub(super) fn fits(partition: i32) -> bool {
        (0..PARTITION_LIMIT).contains(&partition)
    }

    /// Packs the token; `None` for a partition that does not fit, or a ticket past 2^44.
    pub(super) fn pack(self) -> Option<usize> {
        let partition = u64::try_from(self.partition).ok()?;
        if !Self::fits(self.partition) || self.ticket.0 >> TICKET_BITS != 0 {
            return None;
        }
        usize::try_from(partition << TICKET_BITS | self.ticket.0).ok()
    }

    /// Unpacks what [`Token::pack`] packed.
    pub(super) fn unpack(packed: usize) -> Self {
        let packed = packed as u64;
        Self {
            // Below 2^20 by construction.
            partition: i32::try_from(packed >> TICKET_BITS).unwrap_or(i32::MAX),
            ticket: Ticket(packed & ((1 << TICKET_BITS) - 1)),
        }
    }
}

/// What a delivery callback passes on to the relay's thread.
pub(super) enum Report {
    /// The record of this token is acknowledged by its cluster.
    Delivered(usize),
    /// Its delivery failed; the record comes back for a retry.
    Failed(Box<Failure>),
}

/// A failed delivery.
pub(super) struct Failure {
    pub(super) token: usize,
    pub(super) error: KafkaError,
    pub(super) record: Outgoing,
}

/// A record to produce again after a failure (the rare path: it owns copies).
pub(super) struct Outgoing {
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) timestamp: Option<i64>,
}

impl Outgoing {
    /// The record a failed delivery report hands back.
    pub(super) fn from_report(message: &BorrowedMessage<'_>) -> Self {
        Self {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message.headers().map(|headers| headers.detach()),
            timestamp: message.timestamp().to_millis(),
        }
    }

    /// The record librdkafka refused to enqueue.
    pub(super) fn from_refused(record: Record<'_>) -> Self {
        Self {
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec),
            headers: record.headers,
            timestamp: record.timestamp,
        }
    }

    /// Hands the record to librdkafka's queue again, in the caller's order (which
    /// librdkafka keeps per output partition); a refusal hands it back.
    #[allow(clippy::result_large_err)] // the rare path, and the record must come back
    pub(super) fn send(
        self,
        producer: &RelayProducer,
        topic: &str,
        token: usize,
    ) -> Result<(), (KafkaError, Self)> {
        let mut record: Record<'_> = BaseRecord::with_opaque_to(topic, token);
        record.key = self.key.as_deref();
        record.payload = self.payload.as_deref();
        record.headers = self.headers;
        record.timestamp = self.timestamp;
        producer
            .send(record)
            .map_err(|(error, record)| (error, Self::from_refused(record)))
    }
}

/// An at-least-once producer passes its delivery reports on to the relay's thread, which
/// settles them in bulk: a report costs a channel send here, no lock.
impl ProducerContext for Watched<Sender<Report>> {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let report = match result {
            Ok(_) => Report::Delivered(token),
            // The record comes back for a retry; its content is never logged.
            Err((error, message)) => Report::Failed(Box::new(Failure {
                token,
                error: error.clone(),
                record: Outgoing::from_report(message),
            })),
        };
        // The relay is gone only once it stopped caring (after its drain).
        let _ = self.hooks.send(report);
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

    #[test]
    fn tokens_round_trip() {
        for (partition, ticket) in [
            (0, 0),
            (7, 123_456),
            (PARTITION_LIMIT - 1, (1 << TICKET_BITS) - 1),
        ] {
            let token = Token {
                partition,
                ticket: Ticket(ticket),
            };
            assert_eq!(Token::unpack(token.pack().unwrap()), token);
        }
        for (partition, ticket) in [(-1, 0), (PARTITION_LIMIT, 0), (0, 1 << TICKET_BITS)] {
            assert_eq!(
                Token {
                    partition,
                    ticket: Ticket(ticket)
                }
                .pack(),
                None
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(7), Duration::from_secs(10));
        assert_eq!(backoff(u8::MAX), Duration::from_secs(10));
    }
}
