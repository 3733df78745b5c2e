//! Test helpers for pseudopipe's black-box tests (`tests/`), which run the built
//! `pseudopipe` binary against real brokers: a tansu broker per zone on a free port,
//! random topics, records produced and read back, and the cloud broker behind an mTLS
//! gateway as the private link would put it. Every process a test starts is killed when
//! its handle is dropped, and a failure quotes the tail of the broker's log.
//!
//! Needs `tansu` 0.6.0 (with the `dynostore` and `libsql` features) and `socat`:
//! `scripts/install-test-deps.sh` installs both.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::Broker;
//!
//! let onprem = Broker::start("onprem");
//! let cloud = Broker::start_behind_tls_gateway("cloud");
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
//! - `broker`: [`Broker`] and [`BrokerBuilder`], a tansu broker (memory or SQLite
//!   storage) that can be stopped, restarted on its port, and put behind a gateway.
//! - `client`: [`Client`], librdkafka properties plus produce / read back / metadata.
//! - `records`: [`NewRecord`] to produce, [`Record`] read back.
//! - `tls`: [`TlsFiles`], a throw-away CA with server and client certificates, and
//!   [`TlsGateway`], socat demanding a client certificate in front of a broker.
//! - `process`: [`Process`], a child process logging to a file, killed on drop.
//! - here: [`free_port`], [`wait_until`].

#![warn(missing_docs)]

mod broker;
mod client;
mod process;
mod records;
mod tls;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use broker::{Broker, BrokerBuilder};
pub use client::Client;
pub use process::Process;
pub use records::{NewRecord, Record};
pub use tls::{TlsFiles, TlsGateway};

/// librdkafka producer properties for anything that writes to a tansu broker which a
/// consumer may later read from the middle of (a committed offset, a resume after a pause).
///
/// tansu 0.6.0 answers a Fetch at offset X with the first record batch whose *base* offset
/// is at least X, where Kafka answers with the batch that *contains* X: a consumer that
/// resumes inside a batch silently skips the rest of that batch (proven by
/// `tansu_skips_the_rest_of_a_batch_when_a_fetch_starts_inside_it` in `tests/brokers.rs`).
/// One record per batch leaves no inside to start from, so the brokers of the tests
/// behave as Kafka does. Pass these to every producer whose topic is consumed by a stage.
pub const TANSU_SAFE_PRODUCER: &[(&str, &str)] = &[("batch.num.messages", "1")];

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

/// Eight hex digits that differ between calls and between test processes.
pub(crate) fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter separates calls.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
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
