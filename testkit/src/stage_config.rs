//! [`StageConfig`]: the pseudopipe config file of `ingest`, `sink` or `run`, written the
//! one way the tests and the benchmark write it, so that the file's shape lives here once
//! (its keys are documented in `config/pseudopipe.example.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A config file being built: tables in the order they were first named, each with its
/// lines in the order they were added.
///
/// ```
/// use std::path::Path;
///
/// let text = testkit::StageConfig::new()
///     .ingest("localhost:9092", ["raw", "out", "quarantine"], Path::new("policy.toml"))
///     .set("ingest", "max_in_flight", 100)
///     .set("ingest.kafka", "session.timeout.ms", 6000)
///     .metrics(9464)
///     .to_string();
/// assert!(text.starts_with("[ingest]\nbrokers = \"localhost:9092\"\n"));
/// assert!(text.contains("[ingest.kafka]\n\"session.timeout.ms\" = 6000\n"));
/// assert!(text.contains("[metrics]\nlisten = \"127.0.0.1:9464\"\n"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct StageConfig {
    tables: Vec<(String, Vec<String>)>,
}

/// A TOML value of a config file.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigValue {
    /// A string (paths included).
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
}

impl From<&str> for ConfigValue {
    fn from(text: &str) -> Self {
        ConfigValue::String(text.to_owned())
    }
}

impl From<String> for ConfigValue {
    fn from(text: String) -> Self {
        ConfigValue::String(text)
    }
}

impl From<&String> for ConfigValue {
    fn from(text: &String) -> Self {
        ConfigValue::String(text.clone())
    }
}

impl From<&Path> for ConfigValue {
    fn from(path: &Path) -> Self {
        ConfigValue::String(path.to_str().expect("test paths are UTF-8").to_owned())
    }
}

impl From<&PathBuf> for ConfigValue {
    fn from(path: &PathBuf) -> Self {
        ConfigValue::from(path.as_path())
    }
}

impl From<i32> for ConfigValue {
    fn from(number: i32) -> Self {
        ConfigValue::Integer(number.into())
    }
}

impl From<usize> for ConfigValue {
    fn from(number: usize) -> Self {
        ConfigValue::Integer(i64::try_from(number).expect("a config number fits in a TOML integer"))
    }
}

impl From<bool> for ConfigValue {
    fn from(flag: bool) -> Self {
        ConfigValue::Boolean(flag)
    }
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::String(text) => write!(f, "{}", quoted(text)),
            ConfigValue::Integer(number) => write!(f, "{number}"),
            ConfigValue::Boolean(flag) => write!(f, "{flag}"),
        }
    }
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key` bare when TOML allows it, quoted otherwise (`"session.timeout.ms"`).
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        quoted(name)
    }
}

impl StageConfig {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// `[keys]` with the keyring and its key-encryption key.
    pub fn keys(self, keyring: &Path, kek_file: &Path) -> Self {
        self.set("keys", "keyring", keyring)
            .set("keys", "kek_file", kek_file)
    }

    /// `[ingest]` on the on-prem cluster at `brokers`: `[input, output, quarantine]`
    /// topics, applying the policy at `policy`.
    pub fn ingest(self, brokers: &str, topics: [&str; 3], policy: &Path) -> Self {
        let [input, output, quarantine] = topics;
        self.set("ingest", "brokers", brokers)
            .set("ingest", "input_topic", input)
            .set("ingest", "output_topic", output)
            .set("ingest", "quarantine_topic", quarantine)
            .set("ingest", "policy", policy)
    }

    /// `[sink]` from `source` (on-prem brokers and pseudonymized topic) to `cloud` (cloud
    /// brokers and topic), quarantining on-prem to `quarantine`, guarding with `policy`.
    pub fn sink(
        self,
        source: (&str, &str),
        cloud: (&str, &str),
        quarantine: &str,
        policy: &Path,
    ) -> Self {
        self.set("sink", "source_brokers", source.0)
            .set("sink", "source_topic", source.1)
            .set("sink", "brokers", cloud.0)
            .set("sink", "topic", cloud.1)
            .set("sink", "quarantine_topic", quarantine)
            .set("sink", "policy", policy)
    }

    /// `[metrics] listen` on `127.0.0.1:port`.
    pub fn metrics(self, port: u16) -> Self {
        self.set("metrics", "listen", format!("127.0.0.1:{port}"))
    }

    /// `name = value` in `table` (`"ingest"`, `"sink.kafka"`, …), after what it holds.
    pub fn set(self, table: &str, name: &str, value: impl Into<ConfigValue>) -> Self {
        let line = format!("{} = {}", key(name), value.into());
        self.line(table, &line)
    }

    /// Every `(property, value)` of `properties` in `table`, as librdkafka properties.
    pub fn properties<'a>(
        self,
        table: &str,
        properties: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        properties
            .into_iter()
            .fold(self, |config, (name, value)| config.set(table, name, value))
    }

    /// `line` in `table` as it is written: a comment, a setting a test spells by hand, or
    /// something deliberately wrong. An empty `line` only makes sure the table exists.
    pub fn line(mut self, table: &str, line: &str) -> Self {
        let index = match self.tables.iter().position(|(name, _)| name == table) {
            Some(index) => index,
            None => {
                self.tables.push((table.to_owned(), Vec::new()));
                self.tables.len() - 1
            }
        };
        let lines = &mut self.tables[index].1;
        lines.extend(line.lines().map(str::to_owned));
        self
    }

    /// Writes the file at `path` and returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.to_string())
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path.to_owned()
    }
}

impl fmt::Display for StageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (table, lines)) in self.tables.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            writeln!(f, "[{table}]")?;
            for line in lines {
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_their_order_and_values_are_quoted_as_toml() {
        let text = StageConfig::new()
            .set("sink", "topic", "cloud \"quoted\" \\ path")
            .set("sink.kafka", "compression.type", "zstd")
            .set("sink", "max_in_flight", 10_usize)
            .line("sink", "# a comment")
            .set("keys", "require_ticket", false)
            .to_string();
        assert_eq!(
            text,
            "[sink]\ntopic = \"cloud \\\"quoted\\\" \\\\ path\"\nmax_in_flight = 10\n# a comment\n\n\
             [sink.kafka]\n\"compression.type\" = \"zstd\"\n\n[keys]\nrequire_ticket = false\n"
        );
    }
}
