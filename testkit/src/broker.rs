//! [`Broker`]: a single-node Apache Kafka broker (KRaft) on free ports, killed on drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::kafka::{self, BrokerTls, LinkListener};
use crate::{free_port, Client, Link, NewRecord, Process, Record, TlsFiles, TopicReader};

/// How long a broker gets to log that it runs and to answer a metadata request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a broker gets to shut down after SIGTERM before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(60);

/// How long `produce` and `create_topic` wait.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The line a broker logs once it serves clients.
const READY_LINE: &str = "Transitioning from RECOVERY to RUNNING";

/// A single-node Apache Kafka broker (broker and KRaft controller in one JVM) on
/// `127.0.0.1`, started for one test and killed when dropped. Its data lives in a
/// temporary directory, so it survives [`kill`](Self::kill) and
/// [`terminate`](Self::terminate) followed by [`restart`](Self::restart).
///
/// A broker costs a JVM (about 350 MB) and a few seconds to start: tests that do not
/// stop their brokers share one pair, see [`shared_brokers`](crate::shared_brokers).
///
/// ```no_run
/// use std::time::Duration;
/// use testkit::Broker;
///
/// let mut onprem = Broker::start("onprem");
/// let raw = onprem.random_topic("redemptions.raw", 3);
/// onprem.produce(&raw, [("e-1", r#"{"event_id":"e-1"}"#)]);
/// onprem.kill(); // kill -9
/// onprem.restart();
/// let records = onprem.read_all(&raw, 1, Duration::from_secs(10));
/// assert_eq!(records[0].json()["event_id"], "e-1");
/// ```
#[derive(Debug)]
pub struct Broker {
    name: String,
    /// The client listener (PLAINTEXT, or SSL with `tls`).
    port: u16,
    controller_port: u16,
    tls: Option<TlsFiles>,
    /// The listener behind a link, if any: the port it binds and the link to it.
    link: Option<(u16, Link)>,
    overrides: BTreeMap<String, String>,
    /// The JVM; dropped (killed) before its watchdog and its directory.
    process: Option<Process>,
    /// Kills the JVM once the test process is gone (see [`Process::watchdog`]).
    watchdog: Option<Process>,
    /// `server.properties`, `log4j2.properties`, `data/`, `broker.log`, the TLS files;
    /// kept after the test when `TESTKIT_KEEP_BROKERS` is set, for Kafka's tools to read.
    dir: TempDir,
}

/// Options for a [`Broker`] beyond [`Broker::start`]; [`start`](Self::start) starts it.
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct BrokerBuilder {
    name: String,
    tls: bool,
    behind_link: bool,
    overrides: BTreeMap<String, String>,
}

impl BrokerBuilder {
    /// Serves clients over an SSL listener with `ssl.client.auth=required`, with a
    /// throw-away CA and certificates ([`TlsFiles`]): the cloud cluster as the sink sees it.
    /// [`Broker::client_properties`] then hold the TLS settings and the client certificate;
    /// a client without that certificate is refused.
    pub fn with_client_certificates(mut self) -> BrokerBuilder {
        self.tls = true;
        self
    }

    /// Also serves clients behind a [`Link`] (a network link the test can cut): a second
    /// listener, with the same security, advertises the link's port, so a client that
    /// bootstraps from the link's address ([`Broker::link`]) keeps going through it. The
    /// test's own clients ([`Broker::client`], [`Broker::read_all`]...) stay on the direct
    /// listener and are not cut.
    pub fn behind_link(mut self) -> BrokerBuilder {
        self.behind_link = true;
        self
    }

    /// Sets a broker property in `server.properties` (over testkit's single-node
    /// defaults), e.g. `transaction.max.timeout.ms`.
    pub fn property(mut self, key: &str, value: impl Into<String>) -> BrokerBuilder {
        self.overrides.insert(key.to_owned(), value.into());
        self
    }

    /// Formats the storage, starts the broker on free ports and waits until it runs and
    /// answers a metadata request (up to 60 s).
    ///
    /// Panics with the broker's log if it does not start.
    pub fn start(self) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-kafka-{}-", self.name))
            .disable_cleanup(std::env::var_os("TESTKIT_KEEP_BROKERS").is_some())
            .tempdir()
            .expect("the temporary directory is writable");
        let tls = self.tls.then(|| TlsFiles::generate_in(dir.path()));
        let link = self.behind_link.then(|| {
            let port = free_port();
            (port, Link::open(port))
        });
        let mut broker = Broker {
            name: self.name,
            port: free_port(),
            controller_port: free_port(),
            tls,
            link,
            overrides: self.overrides,
            process: None,
            watchdog: None,
            dir,
        };
        std::fs::write(
            broker.dir.path().join("log4j2.properties"),
            kafka::log4j2_properties(),
        )
        .expect("the temporary directory is writable");
        broker.write_server_properties();
        broker.format_storage();
        // A free port can be taken by someone else before the broker binds it: try others.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(failure)
                    if attempt < ATTEMPTS && failure.contains("Address already in use") =>
                {
                    eprintln!(
                        "testkit: broker {} found a port taken, trying others",
                        broker.name
                    );
                    broker.kill();
                    broker.port = free_port();
                    broker.controller_port = free_port();
                    if let Some((port, link)) = &mut broker.link {
                        *port = free_port();
                        link.set_target(*port);
                    }
                    broker.write_server_properties();
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

impl Broker {
    /// Starts a plaintext broker on free ports.
    pub fn start(name: &str) -> Broker {
        Broker::builder(name).start()
    }

    /// Starts a broker that only serves clients presenting a certificate of its CA (mTLS):
    /// the cloud side.
    pub fn start_with_client_certificates(name: &str) -> Broker {
        Broker::builder(name).with_client_certificates().start()
    }

    /// A broker with more options: TLS, broker properties.
    pub fn builder(name: &str) -> BrokerBuilder {
        BrokerBuilder {
            name: name.to_owned(),
            tls: false,
            behind_link: false,
            overrides: BTreeMap::new(),
        }
    }

    /// The name given at start (used in logs and messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port clients connect to (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address clients bootstrap from: `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The link in front of the broker's second listener, if it was started
    /// [`behind_link`](BrokerBuilder::behind_link): give a client its
    /// [`bootstrap`](Link::bootstrap) address, then [`cut`](Link::cut) it.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref().map(|(_, link)| link)
    }

    /// The link, to cut and restore it.
    pub fn link_mut(&mut self) -> Option<&mut Link> {
        self.link.as_mut().map(|(_, link)| link)
    }

    /// The certificates, if the broker demands client certificates.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The librdkafka properties a client of this broker needs: `bootstrap.servers`,
    /// plus `security.protocol=ssl`, the CA and the client certificate and key when the
    /// broker demands client certificates. Write them into the pseudopipe config under test.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut properties = self
            .tls
            .as_ref()
            .map(TlsFiles::client_properties)
            .unwrap_or_default();
        properties.insert("bootstrap.servers".to_owned(), self.bootstrap());
        properties
    }

    /// A [`Client`] with [`client_properties`](Self::client_properties).
    pub fn client(&self) -> Client {
        Client::new(self.client_properties())
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Whether the broker process is running (a paused one is).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// Kills the broker with SIGKILL, as a crash would. What it acknowledged is in the
    /// page cache and survives: [`restart`](Self::restart) recovers it.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.kill();
        }
    }

    /// Stops the broker with SIGTERM (a controlled shutdown: logs flushed and closed)
    /// and waits up to 60 s before killing it. Returns its exit status if it stopped by
    /// itself (Kafka exits with 143 after a SIGTERM).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let status = self
            .process
            .as_mut()
            .and_then(|process| process.terminate(TERMINATE_GRACE));
        self.kill();
        status
    }

    /// Freezes the broker with SIGSTOP: connections stay open and nothing answers, as
    /// with a hung machine or a network partition. [`resume`](Self::resume) thaws it.
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            process.pause();
        }
    }

    /// Lets a [paused](Self::pause) broker run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(process) = &self.process {
            process.resume();
        }
    }

    /// Starts the broker again on the same ports with the same data, and waits until it
    /// runs and answers (after a graceful [`terminate`](Self::terminate) if it still runs).
    ///
    /// Panics with the broker's log if it does not come back.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.resume();
            self.terminate();
        }
        self.kill();
        if let Err(failure) = self.spawn_and_wait() {
            panic!("{failure}");
        }
    }

    /// The last `lines` lines of the broker's log, across restarts.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Creates `topic` with `partitions` partitions and waits until clients see it.
    ///
    /// Panics with the broker's log if that fails (the topic exists already, say).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.client()
            .create_topic(topic, partitions, OPERATION_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}", self.failure(&error.to_string())));
    }

    /// Creates a topic named `PREFIX-` plus random hex digits and returns the name, so
    /// that tests sharing a broker do not see each other's records.
    pub fn random_topic(&self, prefix: &str, partitions: u32) -> String {
        let topic = format!("{prefix}-{}", crate::random_suffix());
        self.create_topic(&topic, partitions);
        topic
    }

    /// Produces `records` to `topic` and waits until all are acknowledged; returns how
    /// many. Accepts anything that converts into a [`NewRecord`]: `"payload"`,
    /// `("key", "payload")`, a `serde_json::Value`, a `NewRecord` with headers...
    ///
    /// Panics with the broker's log if a record is not delivered within 30 s.
    pub fn produce<R: Into<NewRecord>>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = R>,
    ) -> usize {
        self.client()
            .produce(topic, records, OPERATION_TIMEOUT)
            .unwrap_or_else(|error| {
                panic!("{}", self.failure(&format!("producing failed: {error}")))
            })
    }

    /// Reads the committed records of `topic` (`read_committed`) from the beginning with
    /// a fresh consumer until `expected_count` records have arrived or `timeout` has
    /// passed, plus whatever is already there beyond that (so duplicates show); sorted
    /// by partition and offset. Returns what it read: compare its length with what you
    /// expected.
    ///
    /// Panics with the broker's log if the topic does not exist or the broker does not answer.
    pub fn read_all(&self, topic: &str, expected_count: usize, timeout: Duration) -> Vec<Record> {
        self.client()
            .read_all(topic, expected_count, timeout)
            .unwrap_or_else(|error| {
                panic!(
                    "{}",
                    self.failure(&format!("reading {topic} failed: {error}"))
                )
            })
    }

    /// A [`TopicReader`] of `topic` (`read_committed`, from the beginning), to read as a
    /// test goes on, over the broker's direct listener.
    ///
    /// Panics with the broker's log if the topic does not exist within 30 s.
    pub fn reader(&self, topic: &str) -> TopicReader {
        self.client()
            .reader(topic, OPERATION_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}", self.failure(&error.to_string())))
    }

    /// The low and high watermarks of every partition of `topic`, in partition order.
    ///
    /// Panics with the broker's log if the broker does not answer.
    pub fn watermarks(&self, topic: &str) -> Vec<(i64, i64)> {
        self.client()
            .watermarks(topic, Duration::from_secs(10))
            .unwrap_or_else(|error| panic!("{}", self.failure(&error.to_string())))
    }

    /// Deletes the records of `topic`/`partition` before `offset` (DeleteRecords, as
    /// retention would) and returns the new low watermark.
    ///
    /// Panics with the broker's log if the broker refuses.
    pub fn delete_records_before(&self, topic: &str, partition: i32, offset: i64) -> i64 {
        self.client()
            .delete_records_before(topic, partition, offset, OPERATION_TIMEOUT)
            .unwrap_or_else(|error| panic!("{}", self.failure(&error.to_string())))
    }

    /// A panic message: what failed, then the tail of the broker's log.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "broker {} (port {}): {what}\n--- last lines of its log ({}) ---\n{}\n---",
            self.name,
            self.port,
            self.log_path().display(),
            self.log_tail(crate::process::LOG_TAIL_LINES)
        )
    }

    /// How many times the broker has logged that it runs, across restarts.
    fn starts_logged(&self) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches(READY_LINE)
            .count()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    fn server_properties_path(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    fn write_server_properties(&self) {
        let keystore = self.dir.path().join("server-keystore.pem");
        let tls = self.tls.as_ref().map(|files| {
            files.write_server_keystore(&keystore);
            BrokerTls {
                keystore: keystore.clone(),
                ca: files.ca(),
            }
        });
        let link = self.link.as_ref().map(|(port, link)| LinkListener {
            port: *port,
            advertised: link.port(),
        });
        let text = kafka::server_properties(
            self.port,
            self.controller_port,
            link,
            &self.dir.path().join("data"),
            tls,
            &self.overrides,
        );
        std::fs::write(self.server_properties_path(), text)
            .expect("the temporary directory is writable");
    }

    /// `java` with the broker's JVM options, log4j2 configuration and class path.
    fn java(&self) -> Command {
        let libs = kafka::installed_kafka_libs();
        let mut command = Command::new(kafka::java_program());
        command
            .args(kafka::JVM_OPTIONS)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                kafka::path_text(&self.dir.path().join("log4j2.properties"))
            ))
            // java expands the `*` itself: no shell involved.
            .arg("-cp")
            .arg(format!("{}/*", kafka::path_text(&libs)))
            .current_dir(self.dir.path());
        command
    }

    /// `kafka-storage format`: a new cluster id, written into `data/`.
    fn format_storage(&self) {
        let output = self
            .java()
            .arg("kafka.tools.StorageTool")
            .args(["format", "-t", &kafka::random_cluster_id(), "-c"])
            .arg(self.server_properties_path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run java: {error}"));
        if !output.status.success() {
            panic!(
                "broker {}: formatting the storage failed ({}):\n{}{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts the JVM (and its watchdog) and waits until it logs that it runs and a client
    /// with [`client_properties`](Self::client_properties) gets metadata.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let starts_before = self.starts_logged();
        let mut command = self.java();
        command
            .arg("kafka.Kafka")
            .arg(self.server_properties_path());
        let process =
            Process::start_logging_to(&format!("kafka {}", self.name), command, &self.log_path());
        self.watchdog = Some(process.watchdog(&format!("kafka {}", self.name), self.dir.path()));
        self.process = Some(process);
        let client = self.client();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("it did not log that it runs");
        loop {
            if !self.is_running() {
                return Err(self.failure("the broker exited while starting"));
            }
            if self.starts_logged() > starts_before {
                match client.metadata(Duration::from_secs(2)) {
                    Ok(_) => return Ok(()),
                    Err(error) => last_error = format!("metadata request failed: {error}"),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "the broker did not start within {START_TIMEOUT:?} ({last_error})"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
