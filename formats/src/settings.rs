//! The `format` of a stage's topics and the `schema_registry` tables of its config
//! section: what `ingest::Settings` and `sink::Settings` hold about wire formats, checked
//! once at start-up, and the [`RegistrySettings`] the client is built from.

use std::path::PathBuf;
use std::time::Duration;

use plumbing::secrets::Secret;
use plumbing::settings::{duration, SettingsError};
use serde::Deserialize;

use crate::registry::RegistrySettings;

/// Payload formats of the raw topic (and of the pseudonymized one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro in Confluent's wire format (magic byte 0, 4-byte schema id, binary datum),
    /// with the writer schemas of `schema_registry`.
    Avro,
}

/// `[ingest.schema_registry]`, `[sink.schema_registry]`, `[sink.cloud_schema_registry]`:
/// where Avro writer schemas come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistry {
    /// The registry's Confluent-compatible base URL (Apicurio: `.../apis/ccompat/v7`).
    pub url: Option<String>,
    /// Offline instead: a directory of `ID.avsc` files.
    pub directory: Option<PathBuf>,
    /// HTTP basic authentication.
    pub username: Option<Secret>,
    /// Its password, inline (prefer `password_file` or `password_env`).
    pub password: Option<Secret>,
    /// A file holding the password (one trailing newline trimmed).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM certificate authorities for an `https` registry (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// How long one request may take.
    #[serde(default = "default_registry_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// Long enough for a registry under load, short enough that a stage does not hang on one
/// that does not answer.
fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SchemaRegistry {
    /// Checks the table for `format` (nothing for JSON) and reads the password from its
    /// file or variable into `password`; `section` names the table in errors.
    pub fn resolve(mut self, format: Format, section: &str) -> Result<Self, SettingsError> {
        if format == Format::Json {
            return Ok(self);
        }
        if self.url.is_some() == self.directory.is_some() {
            return Err(SettingsError::Invalid(format!("`[{section}]`: format = \"avro\" needs either `url` (a schema registry) or `directory` (offline `ID.avsc` files)")));
        }
        let from_file = match self.password_file.take() {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| SettingsError::Unreadable {
                        setting: format!("{section}.password_file"),
                        path,
                        source,
                    })?
                    .trim_end_matches('\n')
                    .to_owned(),
            ),
            None => None,
        };
        let from_env = match self.password_env.take() {
            Some(variable) => Some(std::env::var(&variable).map_err(|_| {
                SettingsError::Invalid(format!(
                    "`[{section}]` password_env = {variable:?}: the variable is not set"
                ))
            })?),
            None => None,
        };
        match (self.password.is_some(), from_file, from_env) {
            (_, None, None) => {}
            (false, Some(password), None) | (false, None, Some(password)) => {
                self.password = Some(Secret::new(password));
            }
            _ => {
                return Err(SettingsError::Invalid(format!(
                "`[{section}]`: give the password once (password, password_file or password_env)"
            )))
            }
        }
        Ok(self)
    }

    /// The registry client's settings, for Avro (none for JSON); the password is the one
    /// [`resolve`](Self::resolve) read.
    pub fn settings(&self, format: Format) -> Option<RegistrySettings> {
        (format == Format::Avro).then(|| RegistrySettings {
            url: self.url.clone(),
            directory: self.directory.clone(),
            username: self.username.as_ref().map(|name| name.expose().to_owned()),
            password: self
                .password
                .as_ref()
                .map(|password| password.expose().to_owned()),
            ca_file: self.ca_file.clone(),
            timeout: self.timeout,
        })
    }
}
