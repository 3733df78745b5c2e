//! The configuration file of `ingest`, `sink` and `run`: one TOML file, unknown sections
//! and keys refused, validated once at start-up with messages that say what to fix.
//! `config/pseudopipe.example.toml` shows every option and is parsed by a test so it
//! cannot rot.
//!
//! Each stage owns its section ([`ingest::Settings`] is `[ingest]`, [`sink::Settings`]
//! is `[sink]`, ADR 0022); this file owns what is about the file: reading it, its
//! sections, `[keys]` (ingest's and the compliance commands'), `[metrics]`, and which
//! command reads which section. `ingest` reads `[keys]` and `[ingest]` and never looks at
//! `[sink]` (nor reads its secret files); `sink` reads `[sink]` and never looks at
//! `[keys]`, so one file can configure both stages while each process sees only its own
//! secrets. Secret librdkafka properties can come from a file or an environment variable
//! (`"sasl.password_file" = "/run/secrets/..."`, `"sasl.password_env" = "VAR"`; see
//! [`plumbing::secrets`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use plumbing::settings::{duration, optional_duration, require, require_file};
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use plumbing::settings::parse_duration;

/// What to do when `[ingest]` is missing.
const NO_INGEST: &str = "`[ingest]` is missing: set brokers, topics and policy";

/// The top-level sections a config file may have.
const SECTIONS: [&str; 4] = ["keys", "ingest", "sink", "metrics"];

/// A config file, read and checked for unknown sections, but each section interpreted
/// only when a command asks for it. No `Debug`: the file may hold inline secrets.
pub struct Config {
    /// Where it was read from, for messages.
    origin: String,
    /// The top-level sections, as TOML.
    sections: toml::Table,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The keyring file (`pseudopipe keys init` creates it).
    pub keyring: PathBuf,
    /// The key-encryption key file (32 raw bytes or their base64), e.g. a Kubernetes secret mount.
    pub kek_file: PathBuf,
    /// The audit log; defaults to the keyring path plus `.audit.jsonl`.
    pub audit_log: Option<PathBuf>,
    /// How often a running ingest looks at the keyring file for changes (`"5s"`).
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: std::time::Duration,
    /// Rotate each tenant's active version once it is this old (`"90d"`); none by default.
    #[serde(default, deserialize_with = "optional_duration")]
    pub rotate_every: Option<std::time::Duration>,
    /// After a rotation, pair old and new tokens on `bridge_topic` for this long (`"7d"`);
    /// no bridge by default.
    #[serde(default, deserialize_with = "optional_duration")]
    pub bridge_overlap: Option<std::time::Duration>,
    /// The on-prem topic of the rotation bridge.
    #[serde(default = "default_bridge_topic")]
    pub bridge_topic: String,
    /// The on-prem topic the audit log is mirrored to; `""` turns mirroring off.
    #[serde(default = "default_audit_topic")]
    pub audit_topic: String,
    /// Whether `lookup` and `subject` need `--ticket` (the reference of the request they
    /// answer); `false` makes it optional for a site without tickets. `reidentify` always
    /// needs one.
    #[serde(default = "default_require_ticket")]
    pub require_ticket: bool,
}

fn default_require_ticket() -> bool {
    true
}

fn default_check_interval() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_bridge_topic() -> String {
    "pseudopipe.bridge".to_owned()
}

fn default_audit_topic() -> String {
    "pseudopipe.audit".to_owned()
}

/// The metrics port registered for Prometheus exporters in the 94xx range.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long a failed process keeps serving `/metrics` (and `/readyz`, 503) before it
    /// exits, so that Prometheus scrapes what made it fail (`pseudopipe_audit_verified`
    /// 0, say). Default: no wait.
    #[serde(default, deserialize_with = "duration")]
    pub linger_after_failure: std::time::Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            linger_after_failure: std::time::Duration::ZERO,
        }
    }
}

impl Config {
    /// Reads the file and parses it as TOML; a top-level section other than `[keys]`,
    /// `[ingest]`, `[sink]` and `[metrics]` is an error. The sections themselves are
    /// checked by [`Config::for_ingest`], [`Config::for_sink`] and [`Config::metrics`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text, &format!("config file {}", path.display()))
    }

    /// Parses `text`; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let sections: toml::Table = toml::from_str(text).with_context(|| origin.to_owned())?;
        if let Some(unknown) = sections
            .keys()
            .find(|key| !SECTIONS.contains(&key.as_str()))
        {
            bail!(
                "{origin}: unknown section `[{unknown}]`: the sections are `[{}]`",
                SECTIONS.join("]`, `[")
            );
        }
        Ok(Self {
            origin: origin.to_owned(),
            sections,
        })
    }

    /// Interprets one section, if present; unknown keys in it are errors.
    fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.sections
            .get(name)
            .map(|value| {
                T::deserialize(value.clone())
                    .with_context(|| format!("{}: section `[{name}]`", self.origin))
            })
            .transpose()
    }

    /// `[keys] require_ticket`, checked with the rest of `[keys]` (not its files); `true`
    /// without a `[keys]` section.
    pub fn require_ticket(&self) -> Result<bool> {
        Ok(self
            .section::<KeysConfig>("keys")?
            .is_none_or(|keys| keys.require_ticket))
    }

    /// The `[metrics]` section, or its defaults.
    pub fn metrics(&self) -> Result<MetricsConfig> {
        Ok(self.section("metrics")?.unwrap_or_default())
    }

    /// The `[keys]` and `[ingest]` sections, validated (secret files included). `[sink]`
    /// is not looked at.
    pub fn for_ingest(&self) -> Result<(KeysConfig, ingest::Settings)> {
        let keys: KeysConfig = self
            .section("keys")?
            .context("`[keys]` is missing: ingest needs `keyring` and `kek_file`")?;
        let ingest: ingest::Settings = self.section("ingest")?.context(NO_INGEST)?;
        require_file(&keys.keyring, "keys.keyring")?;
        require_file(&keys.kek_file, "keys.kek_file")?;
        for (name, value) in [
            ("keys.rotate_every", keys.rotate_every),
            ("keys.bridge_overlap", keys.bridge_overlap),
        ] {
            if value.is_some_and(|value| value.is_zero()) {
                bail!("`{name}` is zero: give a duration such as \"90d\", or remove it");
            }
        }
        if keys.bridge_overlap.is_some() {
            require(
                &keys.bridge_topic,
                "keys.bridge_topic",
                "the on-prem topic of the rotation bridge",
            )?;
        }
        Ok((keys, ingest.validate()?))
    }

    /// The `[ingest]` section alone, validated (secret files included).
    pub fn ingest(&self) -> Result<ingest::Settings> {
        let ingest: ingest::Settings = self.section("ingest")?.context(NO_INGEST)?;
        Ok(ingest.validate()?)
    }

    /// The `[sink]` section, validated (secret files included). `[keys]` and `[ingest]`
    /// are not looked at: the sink holds no keys.
    pub fn for_sink(&self) -> Result<sink::Settings> {
        let sink: sink::Settings = self
            .section("sink")?
            .context("`[sink]` is missing: set source and cloud brokers, topics and policy")?;
        Ok(sink.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::settings::{Format, SchemaRegistry};
    use plumbing::secrets::KafkaProperties;
    use plumbing::settings::Delivery;
    use std::io::Write as _;

    const EXAMPLE: &str = include_str!("../config/pseudopipe.example.toml");
    const POLICY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/coupon_redemption.policy.toml"
    );

    fn parse(text: &str) -> Config {
        Config::parse(text, "test config").expect("valid TOML with known sections")
    }

    /// A temporary file holding `content`.
    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        file
    }

    /// A config whose `[keys]` and `[ingest]` pass validation (files that exist), then `rest`.
    fn ingest_config(keyring: &Path, rest: &str) -> String {
        format!(
            "[keys]\nkeyring = {keyring:?}\nkek_file = {keyring:?}\n\n\
             [ingest]\nbrokers = \"b:9092\"\ninput_topic = \"raw\"\noutput_topic = \"out\"\n\
             quarantine_topic = \"q\"\npolicy = {POLICY:?}\n{rest}"
        )
    }

    /// A config whose `[sink]` passes validation, then `rest`.
    fn sink_config(rest: &str) -> String {
        format!(
            "[sink]\nsource_brokers = \"b:9092\"\nsource_topic = \"out\"\nbrokers = \"c:9093\"\n\
             topic = \"cloud\"\nquarantine_topic = \"q\"\npolicy = {POLICY:?}\n{rest}"
        )
    }

    #[test]
    fn the_example_parses_with_every_section() {
        let config = parse(EXAMPLE);
        let ingest: ingest::Settings = config.section("ingest").unwrap().unwrap();
        assert_eq!(ingest.format, Format::Json);
        assert_eq!(ingest.delivery, Delivery::AtLeastOnce);
        assert!(!ingest.kafka.is_empty());
        let sink: sink::Settings = config.section("sink").unwrap().unwrap();
        // The example's key password comes from a file that exists only in production.
        let mut cloud = (*sink.kafka).clone();
        assert!(cloud.remove("ssl.key.password_file").is_some());
        assert_eq!(
            KafkaProperties::from(cloud).resolve().unwrap()["security.protocol"],
            "ssl"
        );
        assert!(!sink.source_kafka.is_empty());
        assert_eq!(config.metrics().unwrap().listen.port(), 9464);
        let keys: KeysConfig = config.section("keys").unwrap().unwrap();
        assert!(keys.audit_log.is_some());
    }

    /// The stage configs of the Compose stack and the Kubernetes manifests parse: every
    /// section they hold deserializes (the files they name exist only in the containers).
    #[test]
    fn the_deployment_configs_parse() {
        // Read at run time: deploy/ is not in the image's build context.
        let configs = [
            "deploy/compose/ingest.toml",
            "deploy/compose/sink.toml",
            "deploy/k8s/base/config/ingest.toml",
            "deploy/k8s/base/config/sink.toml",
            "deploy/k8s/overlays/example/config/ingest.toml",
            "deploy/k8s/overlays/example/config/sink.toml",
        ];
        for file in configs {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = &std::fs::read_to_string(&path).expect("the deployment config exists");
            let config = parse(text);
            let keys: Option<KeysConfig> = config.section("keys").unwrap();
            let ingest: Option<ingest::Settings> = config.section("ingest").unwrap();
            let sink: Option<sink::Settings> = config.section("sink").unwrap();
            assert_eq!(keys.is_some(), ingest.is_some(), "{text}");
            assert!(
                ingest.is_some() != sink.is_some(),
                "one stage per file: {text}"
            );
            assert!(config.metrics().is_ok(), "{text}");
        }
    }

    #[test]
    fn an_avro_registry_needs_one_source_and_one_password() {
        let registry = |text: &str| -> SchemaRegistry { toml::from_str(text).unwrap() };
        let none = registry("");
        assert!(none.clone().resolve(Format::Json, "x").is_ok());
        assert!(none.settings(Format::Json).is_none());
        let error = none
            .resolve(Format::Avro, "ingest.schema_registry")
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs either `url`"), "{error}");
        let both = registry("url = \"http://r\"\ndirectory = \"/s\"");
        assert!(both.resolve(Format::Avro, "x").is_err());
        let twice = registry(
            "url = \"http://r\"\nusername = \"u\"\npassword = \"hunter2\"\npassword_env = \"PATH\"",
        );
        assert!(!format!("{twice:?}").contains("hunter2"));
        let error = twice.resolve(Format::Avro, "x").unwrap_err().to_string();
        assert!(error.contains("give the password once"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let secret = file(b"s3cret\n");
        let from_file = registry(&format!(
            "url = \"http://r\"\nusername = \"u\"\npassword_file = {:?}\ntimeout = \"2s\"",
            secret.path()
        ))
        .resolve(Format::Avro, "x")
        .unwrap();
        assert!(!format!("{from_file:?}").contains("s3cret"));
        let settings = from_file.settings(Format::Avro).unwrap();
        assert_eq!(settings.password.as_deref(), Some("s3cret"));
        assert_eq!(settings.timeout, std::time::Duration::from_secs(2));
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = EXAMPLE.replace(
            "group_id = \"pseudopipe-ingest\"",
            "group_id = \"pseudopipe-ingest\"\ngroup = \"x\"",
        );
        let error = format!("{:#}", parse(&text).for_ingest().err().unwrap());
        assert!(error.contains("unknown field `group`"), "{error}");
        assert!(error.contains("section `[ingest]`"), "{error}");
    }

    #[test]
    fn unknown_sections_are_refused_whatever_the_command() {
        let text = format!("{EXAMPLE}\n[sinks]\ntopic = \"x\"\n");
        let error = Config::parse(&text, "test config")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown section `[sinks]`"), "{error}");
    }

    #[test]
    fn ingest_never_interprets_the_sink_section() {
        let keyring = file(b"exists");
        // A sink section that is wrong in every way: unknown key, wrong type, a secret
        // file that does not exist.
        let text = ingest_config(
            keyring.path(),
            "[sink]\nbogus = 1\nbrokers = 3\n[sink.kafka]\n\"sasl.password_file\" = \"/nonexistent/cloud-secret\"\n",
        );
        let config = parse(&text);
        let (_keys, ingest) = config.for_ingest().expect("ingest does not look at [sink]");
        assert_eq!(ingest.input_topic, "raw");
        assert!(config.for_sink().is_err(), "the sink section is invalid");
    }

    #[test]
    fn the_sink_never_interprets_the_keys_section() {
        let text = sink_config(
            "[keys]\nkeyring = \"/nonexistent/keyring.json\"\nkek_file = \"/nonexistent/kek\"\nunknown = true\n",
        );
        let config = parse(&text);
        let sink = config.for_sink().expect("the sink does not look at [keys]");
        assert_eq!(sink.topic, "cloud");
        assert!(config.for_ingest().is_err(), "the keys do not exist");
    }

    #[test]
    fn secrets_from_files_and_variables_reach_the_client_properties() {
        let secret = file(b"cloud-s3cret-from-file\n");
        std::env::set_var("PSEUDOPIPE_CONFIG_TEST_KEY_PASSWORD", "key-s3cret-from-env");
        let text = sink_config(&format!(
            "[sink.kafka]\n\"security.protocol\" = \"sasl_ssl\"\n\
             \"sasl.password_file\" = {:?}\n\
             \"ssl.key.password_env\" = \"PSEUDOPIPE_CONFIG_TEST_KEY_PASSWORD\"\n",
            secret.path()
        ));
        let sink = parse(&text).for_sink().unwrap();
        let properties = &sink.kafka;
        assert!(!format!("{sink:?}").contains("s3cret"));
        assert_eq!(properties["sasl.password"], "cloud-s3cret-from-file");
        assert_eq!(properties["ssl.key.password"], "key-s3cret-from-env");
        assert_eq!(properties["security.protocol"], "sasl_ssl");
        assert!(!properties.contains_key("sasl.password_file"));
    }

    #[test]
    fn secret_errors_say_what_to_fix_and_never_quote_the_secret() {
        let secret = file(b"s3cret-in-a-file");
        let cases = [
            (
                format!(
                    "[sink.kafka]\n\"sasl.password\" = \"s3cret-inline\"\n\"sasl.password_file\" = {:?}\n",
                    secret.path()
                ),
                "`sasl.password` is given as `sasl.password` and `sasl.password_file`",
            ),
            (
                "[sink.kafka]\n\"sasl.password_file\" = \"/run/secrets/missing\"\n".to_owned(),
                "`sasl.password_file` = /run/secrets/missing: cannot read it",
            ),
            (
                "[sink.source_kafka]\n\"ssl.keystore.password_env\" = \"PSEUDOPIPE_CONFIG_TEST_UNSET\"\n"
                    .to_owned(),
                "`ssl.keystore.password_env` = PSEUDOPIPE_CONFIG_TEST_UNSET: the environment variable is not set",
            ),
        ];
        for (rest, expected) in cases {
            let error = format!("{:#}", parse(&sink_config(&rest)).for_sink().err().unwrap());
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn empty_topics_say_what_to_set() {
        let text = sink_config("").replace("topic = \"cloud\"", "topic = \"\"");
        let error = parse(&text).for_sink().err().unwrap().to_string();
        assert!(
            error.contains("`sink.topic` is empty: set it to the cloud topic analysts read"),
            "{error}"
        );
    }
}
