//! [`Registry`]: a schema registry with the Confluent API (Apicurio Registry, in memory) on
//! a free port, killed on drop; [`shared_registry`], the one the tests of a binary share;
//! [`python`], the interpreter of the test venv that runs `scripts/produce-avro.py`, the
//! Avro producer written with Confluent's client that cross-checks pseudopipe's decoding.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::kafka::java_program;
use crate::{free_port, Broker, Process};

/// The pom that pins the registry: the one place its version is written.
const POM: &str = include_str!("../registry/pom.xml");

/// The environment variable naming the folder the registry is unpacked in (the same one
/// `scripts/install-test-deps.sh` fills).
pub const REGISTRY_HOME_VARIABLE: &str = "PSEUDOPIPE_REGISTRY_HOME";

/// The environment variable naming the Python venv of the tests (the same one
/// `scripts/install-test-deps.sh` makes).
pub const PYTHON_VENV_VARIABLE: &str = "PSEUDOPIPE_PYTHON_VENV";

/// Where the Confluent-compatible API is served.
const CCOMPAT_PATH: &str = "/apis/ccompat/v7";

/// The content type of the Confluent Schema Registry API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How long the registry gets to answer its API (about 3 s on an idle machine; the
/// brokers may be starting on the same two cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The JVM options of the registry: a bounded heap (it idles at about 220 MB resident
/// next to two brokers and the pipeline), the serial collector, C1 only for start-up.
const JVM_OPTIONS: &[&str] = &[
    "-Xmx256m",
    "-Xms32m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// Quarkus properties besides the port. Apicurio's ccompat API gives an id per exact
/// schema text by default; with the canonical hash, a schema registered again under a
/// subject with other whitespace gets its existing id, as Confluent's registry does.
const REGISTRY_PROPERTIES: &[(&str, &str)] = &[
    ("quarkus.http.host", "127.0.0.1"),
    ("registry.ccompat.use-canonical-hash", "true"),
];

/// The Apicurio Registry version the tests run, as pinned in `testkit/registry/pom.xml`.
pub fn registry_version() -> &'static str {
    let start = POM
        .find("<registry.version>")
        .expect("testkit/registry/pom.xml sets <registry.version>")
        + "<registry.version>".len();
    let length = POM[start..]
        .find("</registry.version>")
        .expect("<registry.version> is closed");
    POM[start..start + length].trim()
}

/// The folder the registry is unpacked in: `$PSEUDOPIPE_REGISTRY_HOME`, else
/// `~/.cache/pseudopipe/apicurio-registry-VERSION`, as `scripts/install-test-deps.sh` fills it.
pub fn registry_home() -> PathBuf {
    if let Some(home) = std::env::var_os(REGISTRY_HOME_VARIABLE) {
        return PathBuf::from(home);
    }
    cache_folder().join(format!("apicurio-registry-{}", registry_version()))
}

/// The Python interpreter of the tests' venv, which has the packages of
/// `scripts/requirements-test.txt` (`confluent-kafka[avro]`):
/// `$PSEUDOPIPE_PYTHON_VENV/bin/python`, default `~/.cache/pseudopipe/venv/bin/python`.
///
/// Panics saying how to make the venv when it is missing.
pub fn python() -> PathBuf {
    let venv = std::env::var_os(PYTHON_VENV_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_folder().join("venv"));
    let python = venv.join("bin/python");
    if !python.is_file() {
        panic!(
            "the tests' Python venv is missing: {} does not exist. Run \
             scripts/install-test-deps.sh (it installs scripts/requirements-test.txt into \
             ${PYTHON_VENV_VARIABLE}, default ~/.cache/pseudopipe/venv)",
            python.display()
        );
    }
    python
}

/// `~/.cache/pseudopipe`, where the install script puts what the tests run.
fn cache_folder() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/pseudopipe")
}

/// The registry's runnable jar, checked: panics saying how to install it when missing.
fn installed_runner_jar() -> PathBuf {
    let home = registry_home();
    let jar = home.join(format!(
        "apicurio-registry-app-{}-runner.jar",
        registry_version()
    ));
    if !jar.is_file() {
        panic!(
            "Apicurio Registry {} is not installed: {} is missing. Run \
             scripts/install-test-deps.sh (it unpacks testkit/registry/pom.xml's artifact \
             with Maven into ${REGISTRY_HOME_VARIABLE}, default \
             ~/.cache/pseudopipe/apicurio-registry-{})",
            registry_version(),
            jar.display(),
            registry_version(),
        );
    }
    jar
}

/// The workspace's `scripts/produce-avro.py`.
fn produce_avro_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/produce-avro.py")
}

/// The Avro schema of the raw events, `schemas/coupon_redemption.avsc`.
fn raw_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/coupon_redemption.avsc")
}

/// An Apicurio Registry on `127.0.0.1` (storage in memory), serving the Confluent Schema
/// Registry API at [`url`](Self::url): what a producer with Confluent's Avro serializer
/// and pseudopipe's Avro decoding talk to. Started for one test and killed when dropped;
/// a JVM of about 220 MB that starts in about 3 s, so tests share one through
/// [`shared_registry`] and keep apart by subject.
///
/// ```no_run
/// let registry = testkit::shared_registry();
/// let subject = testkit::random_name("redemptions.raw") + "-value";
/// let id = registry.register(&subject, r#"{"type": "string"}"#);
/// assert_eq!(registry.schema(id), r#"{"type": "string"}"#);
/// ```
///
/// Apicurio's ids are its content ids: not consecutive, shared by every subject that
/// registers the same text, and `/schemas/ids/{id}` returns the text as registered
/// (whitespace kept), without needing a subject.
#[derive(Debug)]
pub struct Registry {
    name: String,
    port: u16,
    agent: ureq::Agent,
    /// The JVM; dropped (killed) before its watchdog and its directory.
    process: Option<Process>,
    /// Kills the JVM once the test process is gone (see [`Process::watchdog`]).
    watchdog: Option<Process>,
    /// `registry.log`, `watchdog.log`, the JVM's working directory.
    dir: TempDir,
}

impl Registry {
    /// Starts a registry on a free port and waits until its Confluent API answers (up to
    /// 60 s).
    ///
    /// Panics with the registry's log if it does not start.
    pub fn start(name: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-registry-{name}-"))
            .tempdir()
            .expect("the temporary directory is writable");
        let agent = ureq::Agent::config_builder()
            // A 404 or a 409 is an answer the helpers read, not a transport error.
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        let mut registry = Registry {
            name: name.to_owned(),
            port: free_port(),
            agent,
            process: None,
            watchdog: None,
            dir,
        };
        // A free port can be taken by someone else before the JVM binds it: try others.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match registry.spawn_and_wait() {
                Ok(()) => return registry,
                // Quarkus logs "Port N seems to be in use by another process" and exits.
                Err(failure) if attempt < ATTEMPTS && failure.contains("seems to be in use") => {
                    eprintln!("testkit: registry {name} found its port taken, trying another");
                    registry.kill();
                    registry.port = free_port();
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The name given at start (used in messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL of the Confluent-compatible API,
    /// `http://127.0.0.1:PORT/apis/ccompat/v7`: give it to a Confluent serializer or to
    /// pseudopipe as the schema registry URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{CCOMPAT_PATH}", self.port)
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Registers `schema_json` (an Avro schema) under `subject`, as a producer with
    /// auto-registration does (`POST /subjects/{subject}/versions`), and returns its id:
    /// the existing one when the subject already has this schema.
    ///
    /// Panics with the registry's log if the registry refuses it.
    pub fn register(&self, subject: &str, schema_json: &str) -> u32 {
        let body = serde_json::json!({ "schema": schema_json }).to_string();
        let path = format!("/subjects/{}/versions", encode_path_segment(subject));
        let answer = self.expect_ok("POST", &path, Some(&body));
        self.id_in(&answer, &format!("POST {path}"))
    }

    /// The `id` of a registry's answer to `request`; panics with its log if there is none.
    fn id_in(&self, answer: &serde_json::Value, request: &str) -> u32 {
        answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .unwrap_or_else(|| panic!("{}", self.failure(&format!("{request}: no id in {answer}"))))
    }

    /// The schema text with id `id` (`GET /schemas/ids/{id}`), as it was registered.
    ///
    /// Panics with the registry's log if there is none.
    pub fn schema(&self, id: u32) -> String {
        let path = format!("/schemas/ids/{id}");
        let answer = self.expect_ok("GET", &path, None);
        answer["schema"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                panic!(
                    "{}",
                    self.failure(&format!("GET {path}: no schema in {answer}"))
                )
            })
    }

    /// The id of the latest schema version of `subject`
    /// (`GET /subjects/{subject}/versions/latest`): what a serializer registering under
    /// that subject writes into its records.
    ///
    /// Panics with the registry's log if the subject has no version.
    pub fn latest_id(&self, subject: &str) -> u32 {
        let path = format!("/subjects/{}/versions/latest", encode_path_segment(subject));
        let answer = self.expect_ok("GET", &path, None);
        self.id_in(&answer, &format!("GET {path}"))
    }

    /// Produces `events` (raw events as JSON, see `schemas/coupon_redemption.json`) to
    /// `topic` on `broker` as Avro in the Confluent wire format, with Confluent's own
    /// Python client (`scripts/produce-avro.py` in the [`python`] venv): the schema
    /// `schemas/coupon_redemption.avsc` registered under `TOPIC-value`, each record keyed
    /// by its `event_id`. Returns the schema id written into the records.
    ///
    /// Panics with the script's message (and the registry's log) if it fails.
    pub fn produce_avro<'a>(
        &self,
        broker: &Broker,
        topic: &str,
        events: impl IntoIterator<Item = &'a Value>,
    ) -> u32 {
        let mut command = Command::new(python());
        command
            .arg(produce_avro_script())
            .args(["--brokers", &broker.bootstrap(), "--topic", topic])
            .args(["--registry", &self.url()])
            .arg("--schema")
            .arg(raw_schema());
        // The TLS settings of a broker that wants client certificates.
        for (key, value) in broker.client_properties() {
            if key != "bootstrap.servers" {
                command.arg("-X").arg(format!("{key}={value}"));
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", python().display()));
        {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            for event in events {
                writeln!(stdin, "{event}").expect("produce-avro.py reads its stdin");
            }
            // Dropping stdin closes it: the script produces what it read and flushes.
        }
        let output = child
            .wait_with_output()
            .expect("produce-avro.py can be waited for");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            panic!(
                "{}",
                self.failure(&format!(
                    "scripts/produce-avro.py failed ({}):\n{stdout}{stderr}",
                    output.status
                ))
            );
        }
        stdout
            .lines()
            .find_map(|line| line.split_once("schema id ")?.1.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("scripts/produce-avro.py printed no schema id:\n{stdout}{stderr}")
            })
    }

    /// The last `lines` lines of the registry's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A panic message: what failed, then the tail of the registry's log.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "registry {} (port {}): {what}\n--- last lines of its log ({}) ---\n{}\n---",
            self.name,
            self.port,
            self.log_path().display(),
            self.log_tail(crate::process::LOG_TAIL_LINES)
        )
    }

    /// Kills the JVM and its watchdog (the directory stays until drop).
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.kill();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// A request to the Confluent API whose answer must be 200 with a JSON body.
    fn expect_ok(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        match self.request(method, path, body) {
            Ok((200, text)) => serde_json::from_str(&text).unwrap_or_else(|error| {
                panic!(
                    "{}",
                    self.failure(&format!("{method} {path}: {error} in {text}"))
                )
            }),
            Ok((status, text)) => {
                panic!(
                    "{}",
                    self.failure(&format!("{method} {path}: HTTP {status}: {text}"))
                )
            }
            Err(error) => panic!("{}", self.failure(&format!("{method} {path}: {error}"))),
        }
    }

    /// `method` on `CCOMPAT_PATH` + `path`: the status and the body, or a transport error.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.url());
        let response = match (method, body) {
            ("GET", None) => self.agent.get(&url).header("Accept", CONTENT_TYPE).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Accept", CONTENT_TYPE)
                .header("Content-Type", CONTENT_TYPE)
                .send(body),
            _ => unreachable!("the helpers GET without a body and POST with one"),
        };
        let response = response.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|error| error.to_string())?;
        Ok((status, text))
    }

    /// Starts the JVM (and its watchdog) and waits until `GET /subjects` answers 200.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let jar = installed_runner_jar();
        let mut command = Command::new(java_program());
        command
            .args(JVM_OPTIONS)
            .arg(format!("-Dquarkus.http.port={}", self.port))
            .args(
                REGISTRY_PROPERTIES
                    .iter()
                    .map(|(key, value)| format!("-D{key}={value}")),
            )
            // The runner jar's manifest names lib/*.jar relative to itself.
            .arg("-jar")
            .arg(&jar)
            .current_dir(self.dir.path());
        let process = Process::start_logging_to(
            &format!("registry {}", self.name),
            command,
            &self.log_path(),
        );
        self.watchdog = Some(process.watchdog(&format!("registry {}", self.name), self.dir.path()));
        self.process = Some(process);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.process.as_mut().is_some_and(Process::is_running) {
                return Err(self.failure("the registry exited while starting"));
            }
            let last_error = match self.request("GET", "/subjects", None) {
                Ok((200, _)) => return Ok(()),
                Ok((status, text)) => format!("GET /subjects: HTTP {status}: {text}"),
                Err(error) => format!("GET /subjects: {error}"),
            };
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "the registry did not answer within {START_TIMEOUT:?} ({last_error})"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The registry shared by the tests of this test binary, started by the first call.
/// Tests keep apart by subject (`random_name(...) + "-value"`, or a random topic's
/// `TOPIC-value`). A watchdog kills its JVM once the test process has exited.
pub fn shared_registry() -> &'static Registry {
    static SHARED: OnceLock<Registry> = OnceLock::new();
    SHARED.get_or_init(|| Registry::start("shared"))
}

/// `text` as one URL path segment: unreserved characters kept, the rest percent-encoded
/// (a subject may hold anything a topic name does, and more).
fn encode_path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_pom() {
        assert!(
            registry_version().ends_with(".Final"),
            "{}",
            registry_version()
        );
        assert!(POM.contains("<version>${registry.version}</version>"));
    }

    #[test]
    fn subjects_are_encoded_as_one_path_segment() {
        assert_eq!(
            encode_path_segment("redemptions.raw-0a1b_c~-value"),
            "redemptions.raw-0a1b_c~-value"
        );
        assert_eq!(encode_path_segment("a/b c%"), "a%2Fb%20c%25");
    }
}
