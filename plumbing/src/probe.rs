//! Whether a cluster answers, asked once before a command starts, within a bound the user
//! sets: an unreachable cluster is one error naming the option that gives the address,
//! the option that bounds the wait, and librdkafka's last reason (connection refused, name
//! not resolved, TLS handshake failed...), instead of librdkafka's own error line for every
//! reconnection attempt.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use tracing::debug;

use crate::{config, Error};

/// Where a command expects a cluster, and how long it waits for it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The option that gives the address, as the user writes it (`ingest.brokers`,
    /// `--brokers`).
    pub option: &'a str,
    /// The bootstrap servers.
    pub brokers: &'a str,
    /// The option that bounds the wait (`ingest.connect_timeout`, `--connect-timeout`).
    pub timeout_option: &'a str,
    /// How long the cluster may take to answer.
    pub timeout: Duration,
}

/// The cluster's metadata (of `topic` only, or of every topic), asked by a client of its
/// own with the properties of `passthrough` a producer reads; an [`Error::Unreachable`]
/// when no broker answers within `target.timeout`. Blocks: call it off async workers.
pub fn metadata(
    target: Target<'_>,
    passthrough: &BTreeMap<String, String>,
    topic: Option<&str>,
) -> Result<Metadata, Error> {
    let mut config = config::producer_properties(passthrough);
    config
        .set("bootstrap.servers", target.brokers)
        // Nobody reads statistics here; a bare client acquires no producer id.
        .set("statistics.interval.ms", "0")
        .set("enable.idempotence", "false");
    let client: BaseProducer<Quiet> = config
        .create_with_context(Quiet::default())
        .map_err(crate::secrets::redact_error)?;
    let answer = client.client().fetch_metadata(topic, target.timeout);
    // librdkafka queues its error events and log lines; serving them now tells why it
    // failed.
    client.poll(Duration::from_millis(100));
    answer.map_err(|error| Error::Unreachable {
        option: target.option.to_owned(),
        brokers: target.brokers.to_owned(),
        timeout_option: target.timeout_option.to_owned(),
        timeout: target.timeout,
        cause: client
            .context()
            .cause()
            .unwrap_or_else(|| format!("no broker answered ({error})")),
    })
}

/// A probe's callbacks: librdkafka's lines go to `debug` only, and the last error is kept
/// as the reason the cluster did not answer.
#[derive(Default)]
struct Quiet {
    /// The last reason other than "all brokers are down", which only repeats the symptom.
    reason: Mutex<Option<String>>,
    /// "N/N brokers are down", when nothing more telling was said.
    all_down: Mutex<Option<String>>,
}

impl Quiet {
    fn cause(&self) -> Option<String> {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        reason.or_else(|| {
            self.all_down
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        debug!(?level, facility, "librdkafka: {message}");
        // A failed connection is a log line (`FAIL`) rather than an error event.
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if serious {
            let message = plain(message);
            *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "Kafka client error while probing the cluster.");
        let slot = if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            &self.all_down
        } else {
            &self.reason
        };
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(plain(reason).to_owned());
    }
}

/// librdkafka's reason without the thread that logged it (`[thrd:HOST:PORT/bootstrap]: `)
/// nor its trailer ("(after 0ms in state CONNECT, 1 identical error(s) suppressed)"),
/// which say nothing an operator acts on.
fn plain(message: &str) -> &str {
    let message = message
        .strip_prefix("[thrd:")
        .and_then(|rest| rest.split_once("]: "))
        .map_or(message, |(_, message)| message);
    message
        .rsplit_once(" (after ")
        .map_or(message, |(message, _)| message)
}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _report: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_unreachable_cluster_is_one_error_naming_both_options_and_the_cause() {
        // Port 1 on the loopback: nothing listens, every connection is refused at once.
        let target = Target {
            option: "ingest.brokers",
            brokers: "127.0.0.1:1",
            timeout_option: "ingest.connect_timeout",
            timeout: Duration::from_secs(2),
        };
        let started = Instant::now();
        let error = metadata(target, &BTreeMap::new(), None).expect_err("nothing listens");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        let message = error.to_string();
        for part in [
            "`ingest.brokers` = \"127.0.0.1:1\"",
            "`ingest.connect_timeout`",
            "Connection refused",
        ] {
            assert!(message.contains(part), "{part} in {message}");
        }
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_property_librdkafka_does_not_know_is_refused_before_any_wait() {
        let target = Target {
            option: "--brokers",
            brokers: "127.0.0.1:1",
            timeout_option: "--connect-timeout",
            timeout: Duration::from_secs(30),
        };
        let passthrough = BTreeMap::from([("no.such.property".to_owned(), "1".to_owned())]);
        let started = Instant::now();
        let error = metadata(target, &passthrough, None).expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(error, Error::Client(_)), "{error}");
    }
}
