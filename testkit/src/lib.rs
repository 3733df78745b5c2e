//! Test helpers for pseudopipe's black-box tests (`tests/`), which run the built
//! `pseudopipe` binary against real Apache Kafka brokers: a single-node KRaft broker per
//! zone on free ports (the cloud one demanding client certificates, as the private link
//! does), random topics, records produced and read back (`read_committed`), brokers
//! killed, paused and restarted. Every process a test starts is killed when its handle is
//! dropped or, for the brokers the tests of a binary share, when the test process exits;
//! a failure quotes the tail of the broker's log.
//!
//! Needs a Java 17+ runtime and the Apache Kafka jars pinned in `testkit/kafka/pom.xml`:
//! `scripts/install-test-deps.sh` installs both (the jars into `$PSEUDOPIPE_KAFKA_LIBS`,
//! default `~/.cache/pseudopipe/kafka-VERSION/libs`). The schema registry and the Python
//! venv come from the same script (`$PSEUDOPIPE_REGISTRY_HOME`, `$PSEUDOPIPE_PYTHON_VENV`).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! // Shared by the tests of this binary; each test makes its own topics and groups.
//! let testkit::Brokers { onprem, cloud } = testkit::shared_brokers();
//! let raw = onprem.random_topic("redemptions.raw", 3);
//! let out = cloud.random_topic("redemptions", 3);
//! onprem.produce(&raw, [("e-1", r#"{"event_id":"e-1"}"#)]);
//! // ... run pseudopipe with onprem.client_properties() and cloud.client_properties() ...
//! let delivered = cloud.read_all(&out, 1, Duration::from_secs(30));
//! assert_eq!(delivered.len(), 1);
//! ```
//!
//! # Layout
//!
//! - `broker`: [`Broker`] and [`BrokerBuilder`], an Apache Kafka broker that can be
//!   killed, terminated, paused and restarted on its ports with its data.
//! - `shared`: [`shared_brokers`], the pair of brokers the tests of one binary share.
//! - `registry`: [`Registry`], a schema registry with the Confluent API (Apicurio, in
//!   memory), and [`shared_registry`]; [`python`], the venv that runs
//!   `scripts/produce-avro.py`, Confluent's Avro serializer as a cross-check.
//! - `kafka`: where the jars are ([`kafka_libs`], [`kafka_version`]), the broker's
//!   `server.properties` and log configuration.
//! - `client`: [`Client`], librdkafka properties plus produce / read back / metadata;
//!   [`TopicReader`], a consumer that keeps reading a topic while a test goes on.
//! - `records`: [`NewRecord`] to produce, [`Record`] read back.
//! - `tls`: [`TlsFiles`], a throw-away CA with server and client certificates.
//! - `link`: [`Link`], the network link between two sites, a TCP forwarder a test cuts.
//! - `process`: [`Process`], a child process logging to a file, killed on drop.
//! - `load`: [`CpuHogs`], busy threads that load the CPU while a test runs, as a busy CI
//!   runner's other jobs do.
//! - `stage_config`: [`StageConfig`], the pseudopipe config file the tests write.
//! - here: [`free_port`], [`wait_until`], [`random_name`].

#![warn(missing_docs)]

mod broker;
mod client;
mod kafka;
mod link;
mod load;
mod process;
mod records;
mod registry;
mod shared;
mod stage_config;
mod tls;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use broker::{Broker, BrokerBuilder};
pub use client::{Client, Error, TopicReader};
pub use kafka::{kafka_libs, kafka_version, KAFKA_LIBS_VARIABLE};
pub use link::Link;
pub use load::CpuHogs;
pub use process::{is_alive, Process};
pub use records::{NewRecord, Record};
pub use registry::{
    python, registry_home, registry_version, shared_registry, Registry, PYTHON_VENV_VARIABLE,
    REGISTRY_HOME_VARIABLE,
};
pub use shared::{shared_brokers, Brokers};
pub use stage_config::{ConfigValue, StageConfig};
pub use tls::TlsFiles;

/// A TCP port on `127.0.0.1` that was free a moment ago and that this test process has
/// not handed out before (so parallel tests do not pick the same one).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("the loopback interface has a free port")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Polls `condition` every 50 ms until it holds (`true`) or `timeout` has passed (`false`).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `PREFIX-` plus eight random hex digits: a consumer group, a `transactional.id` or a
/// topic name of one test, so that tests sharing a broker do not meet.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{}", random_suffix())
}

/// Eight hex digits that differ between calls and between test processes.
pub(crate) fn random_suffix() -> String {
    format!("{:08x}", random_u64() as u32)
}

/// 64 random bits that differ between calls and between test processes.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter separates calls.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The first `name` on `PATH` that is a file.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn random_suffixes_differ() {
        let suffixes: HashSet<String> = (0..100).map(|_| random_suffix()).collect();
        assert_eq!(suffixes.len(), 100);
    }
}
