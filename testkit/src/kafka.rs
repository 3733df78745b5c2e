//! Where Apache Kafka's jars are, which `java` runs them, and the files a broker reads:
//! `server.properties` and the log4j2 configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::find_program;

/// The pom that pins the broker: the one place its version is written.
const POM: &str = include_str!("../kafka/pom.xml");

/// The environment variable naming the folder of Kafka's jars (the same one
/// `scripts/install-test-deps.sh` fills).
pub const KAFKA_LIBS_VARIABLE: &str = "PSEUDOPIPE_KAFKA_LIBS";

/// The Apache Kafka version the tests run, as pinned in `testkit/kafka/pom.xml`.
pub fn kafka_version() -> &'static str {
    let start = POM
        .find("<kafka.version>")
        .expect("testkit/kafka/pom.xml sets <kafka.version>")
        + "<kafka.version>".len();
    let length = POM[start..]
        .find("</kafka.version>")
        .expect("<kafka.version> is closed");
    POM[start..start + length].trim()
}

/// The folder of Kafka's jars: `$PSEUDOPIPE_KAFKA_LIBS`, else
/// `~/.cache/pseudopipe/kafka-VERSION/libs`, as `scripts/install-test-deps.sh` fills it.
pub fn kafka_libs() -> PathBuf {
    if let Some(libs) = std::env::var_os(KAFKA_LIBS_VARIABLE) {
        return PathBuf::from(libs);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home)
        .join(".cache/pseudopipe")
        .join(format!("kafka-{}", kafka_version()))
        .join("libs")
}

/// [`kafka_libs`], checked: panics saying how to install them when the broker jar is missing.
pub(crate) fn installed_kafka_libs() -> PathBuf {
    let libs = kafka_libs();
    let broker_jar = libs.join(format!("kafka_2.13-{}.jar", kafka_version()));
    if !broker_jar.is_file() {
        panic!(
            "Apache Kafka {} is not installed: {} is missing. Run scripts/install-test-deps.sh \
             (it resolves testkit/kafka/pom.xml with Maven into ${KAFKA_LIBS_VARIABLE}, \
             default ~/.cache/pseudopipe/kafka-{}/libs)",
            kafka_version(),
            broker_jar.display(),
            kafka_version(),
        );
    }
    libs
}

/// `$JAVA_HOME/bin/java`, else `java` on `PATH`.
pub(crate) fn java_program() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| Path::new(&home).join("bin/java"))
        .filter(|java| java.is_file())
        .or_else(|| find_program("java"))
        .unwrap_or_else(|| {
            panic!("java is not installed: run scripts/install-test-deps.sh (a Java 17+ runtime)")
        })
}

/// The JVM options of a broker: a bounded heap (two brokers and the pipeline share two
/// cores and a few GB in CI), the serial collector, and C1 only, which halves start-up.
pub(crate) const JVM_OPTIONS: &[&str] = &[
    "-Xmx512m",
    "-Xms64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// What a single node needs besides its listeners: replication factor 1 and min ISR 1
/// for the internal topics (else transactions and groups wait for replicas that never
/// come), no rebalance delay, a short broker session (quick restarts), no topic created
/// by asking for it, and few partitions in the internal topics so that the first group
/// or transaction does not wait for 50.
const SINGLE_NODE: &[(&str, &str)] = &[
    ("process.roles", "broker,controller"),
    ("node.id", "1"),
    ("controller.listener.names", "CONTROLLER"),
    ("offsets.topic.replication.factor", "1"),
    ("offsets.topic.num.partitions", "5"),
    ("transaction.state.log.replication.factor", "1"),
    ("transaction.state.log.min.isr", "1"),
    ("transaction.state.log.num.partitions", "5"),
    ("share.coordinator.state.topic.replication.factor", "1"),
    ("share.coordinator.state.topic.min.isr", "1"),
    ("group.initial.rebalance.delay.ms", "0"),
    // A broker restarted after a kill -9 cannot register until the controller (restarted
    // with it) has let the dead incarnation's session expire: 9 s by default.
    ("broker.session.timeout.ms", "2000"),
    ("broker.heartbeat.interval.ms", "500"),
    ("auto.create.topics.enable", "false"),
    ("num.partitions", "1"),
];

/// The TLS files a broker with an SSL listener reads.
pub(crate) struct BrokerTls {
    /// The server key (PKCS#8) followed by its certificate.
    pub keystore: PathBuf,
    /// The CA that signs client certificates.
    pub ca: PathBuf,
}

/// A second client listener reached over a [`Link`](crate::Link): bound on `port`, it
/// advertises the link's port, so clients that bootstrap through the link stay on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkListener {
    /// The port the broker binds for it (the link's target).
    pub port: u16,
    /// The link's own port, which the broker advertises on this listener.
    pub advertised: u16,
}

/// The `server.properties` of a single-node KRaft broker on `127.0.0.1`: clients on
/// `port` (SSL with required client certificates when `tls` is given, else PLAINTEXT),
/// clients behind a link on `link` (same security), the controller on
/// `controller_port`, then `overrides`.
pub(crate) fn server_properties(
    port: u16,
    controller_port: u16,
    link: Option<LinkListener>,
    data: &Path,
    tls: Option<BrokerTls>,
    overrides: &BTreeMap<String, String>,
) -> String {
    let mut properties: BTreeMap<String, String> = SINGLE_NODE
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let listener = if tls.is_some() { "SSL" } else { "PLAINTEXT" };
    let mut set = |key: &str, value: String| {
        properties.insert(key.to_owned(), value);
    };
    set(
        "controller.quorum.voters",
        format!("1@127.0.0.1:{controller_port}"),
    );
    // Metadata names the addresses of the listener a request came in on: the LINK one
    // sends clients back through the link, the other one straight to the broker.
    let (link_bound, link_advertised, link_protocol) = match link {
        Some(link) => (
            format!(",LINK://127.0.0.1:{}", link.port),
            format!(",LINK://127.0.0.1:{}", link.advertised),
            format!(",LINK:{listener}"),
        ),
        None => Default::default(),
    };
    set(
        "listeners",
        format!(
            "{listener}://127.0.0.1:{port}{link_bound},CONTROLLER://127.0.0.1:{controller_port}"
        ),
    );
    set(
        "advertised.listeners",
        format!("{listener}://127.0.0.1:{port}{link_advertised}"),
    );
    // The broker talks to itself (transaction markers, ...) over its client listener:
    // with TLS, its certificate serves as a client certificate too.
    set("inter.broker.listener.name", listener.to_owned());
    set(
        "listener.security.protocol.map",
        format!("CONTROLLER:PLAINTEXT,{listener}:{listener}{link_protocol}"),
    );
    set("log.dirs", path_text(data));
    if let Some(tls) = tls {
        set("ssl.client.auth", "required".to_owned());
        set("ssl.keystore.type", "PEM".to_owned());
        set("ssl.keystore.location", path_text(&tls.keystore));
        set("ssl.truststore.type", "PEM".to_owned());
        set("ssl.truststore.location", path_text(&tls.ca));
    }
    for (key, value) in overrides {
        set(key, value.clone());
    }
    properties
        .iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect()
}

/// A log4j2 configuration: everything at `level` (`warn` unless `TESTKIT_KAFKA_LOG` says
/// otherwise) on stdout, plus the few INFO lines that say where the broker is in its life:
/// `Transitioning from RECOVERY to RUNNING` (ready) and the shutdown steps. log4j's own
/// shutdown hook is off, so that the broker's shutdown after SIGTERM is logged too.
pub(crate) fn log4j2_properties() -> String {
    let level = std::env::var("TESTKIT_KAFKA_LOG").unwrap_or_else(|_| "warn".to_owned());
    format!(
        "status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.lifecycle.name = org.apache.kafka.server.BrokerLifecycleManager
logger.lifecycle.level = info
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"
    )
}

/// A new cluster id: 16 random bytes in URL-safe base64 without padding, as
/// `kafka-storage random-uuid` prints (without starting a JVM for it). Like Kafka's
/// `Uuid.randomUuid`, never one that starts with `-`, which the command line would take
/// for an option.
pub(crate) fn random_cluster_id() -> String {
    loop {
        let id = random_base64_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// 16 random bytes in URL-safe base64 without padding (22 characters).
fn random_base64_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&crate::random_u64().to_be_bytes());
    }
    let mut bits = 0u32;
    let mut held = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            id.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    id
}

pub(crate) fn path_text(path: &Path) -> String {
    path.to_str()
        .expect("temporary directories have UTF-8 paths")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_pom() {
        let version = kafka_version();
        assert!(
            version.split('.').count() == 3
                && version.split('.').all(|part| part.parse::<u32>().is_ok()),
            "{version}"
        );
        assert!(POM.contains("<version>${kafka.version}</version>"));
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = random_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, random_cluster_id());
        assert!((0..1000).all(|_| !random_cluster_id().starts_with('-')));
    }

    #[test]
    fn overrides_win_over_the_single_node_defaults() {
        let overrides = BTreeMap::from([("num.partitions".to_owned(), "3".to_owned())]);
        let text = server_properties(9092, 9093, None, Path::new("/data"), None, &overrides);
        assert!(text.contains("num.partitions=3\n"), "{text}");
        assert!(!text.contains("num.partitions=1"), "{text}");
        assert!(text.contains("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n"));
    }

    #[test]
    fn a_link_listener_advertises_the_link_port() {
        let link = LinkListener {
            port: 9094,
            advertised: 9095,
        };
        let text = server_properties(
            9092,
            9093,
            Some(link),
            Path::new("/data"),
            None,
            &BTreeMap::new(),
        );
        assert!(
            text.contains("\nlisteners=PLAINTEXT://127.0.0.1:9092,LINK://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "advertised.listeners=PLAINTEXT://127.0.0.1:9092,LINK://127.0.0.1:9095\n"
            ),
            "{text}"
        );
        assert!(text.contains("listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,LINK:PLAINTEXT\n"), "{text}");
    }
}
