//! Secret-bearing librdkafka properties: read from a file or an environment variable
//! instead of the config file, and never printed.
//!
//! A passthrough table may name a secret property's value indirectly:
//! `"sasl.password_file" = "/run/secrets/cloud-sasl"` (a Kubernetes secret mount; one
//! trailing newline is trimmed) or `"sasl.password_env" = "CLOUD_SASL_PASSWORD"`.
//! [`resolve`] replaces those entries by the property itself. Its errors name the property
//! and the file or variable, never the value. The properties are the ones librdkafka
//! itself redacts in its logs ([`SENSITIVE`]). Settings hold them as [`KafkaProperties`]
//! (and other secrets as [`Secret`]), whose `Debug` redacts by type.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::Error;

/// The librdkafka properties whose value is a secret (those librdkafka marks
/// `_RK_SENSITIVE` that hold a value rather than a path, librdkafka 2.12).
pub const SENSITIVE: &[&str] = &[
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "ssl.ca.pem",
];

/// Suffix of a property whose value is read from the file it names.
pub const FILE_SUFFIX: &str = "_file";
/// Suffix of a property whose value is read from the environment variable it names.
pub const ENV_SUFFIX: &str = "_env";

/// Whether `property`'s value is a secret: never logged, printed or put in an error.
pub fn is_sensitive(property: &str) -> bool {
    SENSITIVE.contains(&property.trim())
}

/// Where a secret's value comes from.
enum Source {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl Source {
    fn form(&self, property: &str) -> String {
        match self {
            Self::Inline(_) => format!("`{property}`"),
            Self::File(_) => format!("`{property}{FILE_SUFFIX}`"),
            Self::Env(_) => format!("`{property}{ENV_SUFFIX}`"),
        }
    }

    fn read(self, property: &str) -> Result<String, Error> {
        let (value, origin) = match self {
            Self::Inline(value) => return Ok(value),
            Self::File(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::SecretFile {
                    property: property.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                (text, format!("file {}", path.display()))
            }
            Self::Env(variable) => {
                let value = std::env::var(&variable).map_err(|_| Error::SecretEnv {
                    property: property.to_owned(),
                    variable: variable.clone(),
                })?;
                (value, format!("environment variable {variable}"))
            }
        };
        // Secret files end with the newline editors and `echo` add; a value never does.
        let value = match value.strip_suffix('\n') {
            Some(line) => line.strip_suffix('\r').unwrap_or(line).to_owned(),
            None => value,
        };
        if value.is_empty() {
            return Err(Error::SecretEmpty {
                property: property.to_owned(),
                origin,
            });
        }
        Ok(value)
    }
}

/// Replaces every `PROPERTY_file` and `PROPERTY_env` of `properties` by `PROPERTY` with
/// the value read from that file or variable; other properties pass unchanged.
///
/// Fails when a secret is given in two forms at once, when its file or variable is
/// missing or empty, or when the suffix is put on a property that is not a secret.
pub fn resolve(properties: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Error> {
    let mut plain = BTreeMap::new();
    let mut secrets: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    for (key, value) in properties {
        let (property, source) = if let Some(property) = key.strip_suffix(FILE_SUFFIX) {
            (property.to_owned(), Source::File(PathBuf::from(value)))
        } else if let Some(property) = key.strip_suffix(ENV_SUFFIX) {
            (property.to_owned(), Source::Env(value))
        } else if is_sensitive(&key) {
            secrets.entry(key).or_default().push(Source::Inline(value));
            continue;
        } else {
            plain.insert(key, value);
            continue;
        };
        if !is_sensitive(&property) {
            return Err(Error::NotASecret {
                given: key,
                property,
            });
        }
        secrets.entry(property).or_default().push(source);
    }
    for (property, mut sources) in secrets {
        let source = match sources.len() {
            1 => sources.remove(0),
            _ => {
                let forms: Vec<String> = sources.iter().map(|s| s.form(&property)).collect();
                return Err(Error::SecretAmbiguous {
                    forms: format!("as {}", forms.join(" and ")),
                    property,
                });
            }
        };
        let value = source.read(&property)?;
        plain.insert(property, value);
    }
    Ok(plain)
}

/// `error` with the value it quotes redacted when it belongs to a secret property:
/// librdkafka's configuration errors (`KafkaError::ClientConfig`) carry the refused value,
/// and its description quotes it too.
pub fn redact_error(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, key, value) if is_sensitive(&key) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, "**REDACTED**")
            };
            KafkaError::ClientConfig(code, description, key, "**REDACTED**".to_owned())
        }
        other => other,
    }
}

/// A table of librdkafka properties as a config file gives it (TOML strings, numbers and
/// booleans, read as text), whose `Debug` shows every secret value as `**REDACTED**`: a
/// settings struct that holds one derives `Debug` and prints no secret. It derefs to the
/// map the client configurations take.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(BTreeMap<String, String>);

impl KafkaProperties {
    /// The same properties with every `PROPERTY_file` and `PROPERTY_env` replaced by the
    /// secret it names ([`resolve`]).
    pub fn resolve(self) -> Result<Self, Error> {
        resolve(self.0).map(Self)
    }
}

impl From<BTreeMap<String, String>> for KafkaProperties {
    fn from(properties: BTreeMap<String, String>) -> Self {
        Self(properties)
    }
}

impl std::ops::Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        redacted_map(f, self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for KafkaProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = BTreeMap::<String, PropertyValue>::deserialize(deserializer)?;
        Ok(Self(
            table
                .into_iter()
                .map(|(key, PropertyValue(value))| (key, value))
                .collect(),
        ))
    }
}

/// One property's value: librdkafka takes text, so a TOML number or boolean is read as
/// the text it would be written as (`6000`, `true`).
struct PropertyValue(String);

impl<'de> serde::Deserialize<'de> for PropertyValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PropertyVisitor)
    }
}

struct PropertyVisitor;

impl serde::de::Visitor<'_> for PropertyVisitor {
    type Value = PropertyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a librdkafka property: a string, number or boolean")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<PropertyValue, E> {
        Ok(PropertyValue(value.to_owned()))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<PropertyValue, E> {
        Ok(PropertyValue(value.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<PropertyValue, E> {
        Ok(PropertyValue(value.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<PropertyValue, E> {
        Ok(PropertyValue(value.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<PropertyValue, E> {
        Ok(PropertyValue(value.to_string()))
    }
}

/// A secret setting that is not a librdkafka property (a schema registry's user name or
/// password): `Debug` prints `**REDACTED**`, and it has no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// Shows a client configuration like [`KafkaProperties`] (rdkafka's own `Debug` of a
/// `ClientConfig` prints every value), sorted by property.
pub struct RedactedConfig<'a>(pub &'a ClientConfig);

impl fmt::Debug for RedactedConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted: BTreeMap<&String, &String> = self.0.config_map().iter().collect();
        redacted_map(f, sorted.into_iter())
    }
}

fn redacted_map<'a>(
    f: &mut fmt::Formatter<'_>,
    properties: impl Iterator<Item = (&'a String, &'a String)>,
) -> fmt::Result {
    f.debug_map()
        .entries(properties.map(|(key, value)| {
            let shown: &dyn fmt::Debug = if is_sensitive(key) {
                &"**REDACTED**"
            } else {
                value
            };
            (key, shown)
        }))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    use rdkafka::types::RDKafkaConfRes;

    use crate::config::tests::table;

    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    #[test]
    fn a_secret_file_becomes_the_property_with_one_newline_trimmed() {
        let file = secret_file("s3cret-from-file\n\n");
        let path = file.path().to_str().unwrap();
        let resolved = resolve(table(&[
            ("sasl.password_file", path),
            ("security.protocol", "sasl_ssl"),
        ]))
        .unwrap();
        assert_eq!(
            resolved,
            table(&[
                ("sasl.password", "s3cret-from-file\n"),
                ("security.protocol", "sasl_ssl")
            ])
        );
        let file = secret_file("windows\r\n");
        let resolved = resolve(table(&[(
            "ssl.key.password_file",
            file.path().to_str().unwrap(),
        )]))
        .unwrap();
        assert_eq!(resolved["ssl.key.password"], "windows");
    }

    #[test]
    fn a_secret_variable_becomes_the_property() {
        // A variable name no other test uses: tests run in threads of one process.
        std::env::set_var("PLUMBING_TEST_SECRET_VARIABLE", "s3cret-from-env");
        let resolved = resolve(table(&[(
            "sasl.oauthbearer.client.secret_env",
            "PLUMBING_TEST_SECRET_VARIABLE",
        )]))
        .unwrap();
        assert_eq!(
            resolved,
            table(&[("sasl.oauthbearer.client.secret", "s3cret-from-env")])
        );
    }

    #[test]
    fn errors_name_the_property_and_the_source_never_the_value() {
        let file = secret_file("s3cret-inline-too");
        let path = file.path().to_str().unwrap();
        let empty = secret_file("\n");
        let cases = [
            (
                table(&[("sasl.password", "s3cret-inline"), ("sasl.password_file", path)]),
                "`sasl.password` is given as `sasl.password` and `sasl.password_file`",
            ),
            (
                table(&[("sasl.password_file", "/nonexistent/pseudopipe-secret")]),
                "`sasl.password_file` = /nonexistent/pseudopipe-secret: cannot read it",
            ),
            (
                table(&[("ssl.keystore.password_env", "PLUMBING_TEST_UNSET_VARIABLE")]),
                "`ssl.keystore.password_env` = PLUMBING_TEST_UNSET_VARIABLE: the environment variable is not set",
            ),
            (
                table(&[("ssl.key.pem_file", empty.path().to_str().unwrap())]),
                "`ssl.key.pem` comes from file",
            ),
            (
                table(&[("ssl.ca.location_file", path)]),
                "`ssl.ca.location` is not a secret librdkafka property",
            ),
        ];
        for (properties, expected) in cases {
            let error = resolve(properties).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn configuration_errors_of_secrets_do_not_quote_them() {
        let refused = |key: &str, value: &str| {
            KafkaError::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                format!("Invalid value \"{value}\" for configuration property \"{key}\""),
                key.to_owned(),
                value.to_owned(),
            )
        };
        for shown in [
            redact_error(refused("sasl.password", "s3cret")).to_string(),
            format!("{:?}", redact_error(refused("ssl.key.password", "s3cret"))),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("**REDACTED**"), "{shown}");
        }
        let shown = redact_error(refused("linger.ms", "soon")).to_string();
        assert!(shown.contains("soon"), "{shown}");
    }

    #[test]
    fn debug_of_a_table_redacts_secrets_only() {
        let properties = table(&[
            ("sasl.password", "s3cret"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("security.protocol", "sasl_ssl"),
        ]);
        let shown = format!("{:?}", KafkaProperties::from(properties.clone()));
        assert!(
            !shown.contains("s3cret") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(
            shown.contains("\"security.protocol\": \"sasl_ssl\""),
            "{shown}"
        );
        assert_eq!(shown.matches("**REDACTED**").count(), 2, "{shown}");

        let mut config = ClientConfig::new();
        for (key, value) in &properties {
            config.set(key, value);
        }
        assert_eq!(format!("{:?}", RedactedConfig(&config)), shown);
    }

    #[test]
    fn a_secret_setting_never_shows() {
        let secret = Secret::new("s3cret".to_owned());
        assert_eq!(format!("{secret:?}"), "**REDACTED**");
        assert_eq!(secret.expose(), "s3cret");
    }
}
