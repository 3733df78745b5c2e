//! [`shared_brokers`]: one pair of brokers for all the tests of a test binary.

use std::sync::OnceLock;

use crate::Broker;

/// The two clusters of the pipeline: on-prem (plaintext) and cloud (mTLS).
#[derive(Debug)]
pub struct Brokers {
    /// The on-prem cluster: plaintext, where ingest reads and writes.
    pub onprem: Broker,
    /// The cloud cluster: SSL with client certificates required, where sink writes.
    pub cloud: Broker,
}

/// The on-prem and cloud brokers shared by the tests of this test binary, started (in
/// parallel) by the first call. A broker costs a JVM and seconds of start-up, so tests
/// that do not kill, pause or restart a broker use these, kept apart by
/// [`Broker::random_topic`] and [`random_name`](crate::random_name) for groups and
/// transactional ids. Tests that stop a broker start their own [`Broker`].
///
/// Statics are never dropped: a watchdog next to each JVM kills it and removes its
/// directory once the test process has exited.
///
/// ```no_run
/// let brokers = testkit::shared_brokers();
/// let topic = brokers.cloud.random_topic("redemptions", 3);
/// let group = testkit::random_name("sink");
/// # let _ = (topic, group);
/// ```
pub fn shared_brokers() -> &'static Brokers {
    static SHARED: OnceLock<Brokers> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::scope(|scope| {
            let cloud = scope.spawn(|| Broker::start_with_client_certificates("shared-cloud"));
            let onprem = Broker::start("shared-onprem");
            let cloud = cloud
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Brokers { onprem, cloud }
        })
    })
}
