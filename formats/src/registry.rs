//! Writer schemas by id, and ids of the schemas pseudopipe writes: through a schema
//! registry's Confluent-compatible REST API (Confluent Schema Registry, Apicurio's
//! `/apis/ccompat/v7`, Karapace), cached for the life of the process; or, offline, from a
//! directory of `ID.avsc` files.
//!
//! Schemas under an id never change in a registry, so a schema once fetched is kept; an
//! id the registry does not know is an answer too (the record goes to quarantine), while a
//! registry that does not answer is an error the stage stops on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use apache_avro::Schema;
use base64::Engine as _;

/// Where schemas come from, and how to reach them.
#[derive(Clone, Default)]
pub struct RegistrySettings {
    /// The registry's base URL (`http(s)://host:port[/apis/ccompat/v7]`).
    pub url: Option<String>,
    /// Offline: a directory of `ID.avsc` files instead of a registry.
    pub directory: Option<PathBuf>,
    /// HTTP basic authentication: the user name.
    pub username: Option<String>,
    /// HTTP basic authentication: the password (already read from its file or variable).
    pub password: Option<String>,
    /// PEM file of the certificate authorities that sign the registry's certificate
    /// (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field("directory", &self.directory)
            .field("username", &self.username.as_ref().map(|_| "[redacted]"))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a schema could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry (or directory) has no schema under this id.
    #[error("schema id {0} is not in the schema registry")]
    UnknownId(u32),
    /// The schema under this id is not a valid Avro schema.
    #[error("schema id {id} is not a valid Avro schema: {reason}")]
    Invalid {
        /// The id.
        id: u32,
        /// What the parser said.
        reason: String,
    },
    /// The registry did not answer, or answered with an error.
    #[error("the schema registry at {url} {what}")]
    Unavailable {
        /// The registry's URL (it holds no credentials: they go in headers).
        url: String,
        /// What happened.
        what: String,
    },
    /// Offline, the schema to write has no file in the directory.
    #[error("no file of {directory} holds the schema to register under `{subject}`: write it there as ID.avsc (`pseudopipe schema derive`)")]
    NotInDirectory {
        /// The directory.
        directory: String,
        /// The subject it was to be registered under.
        subject: String,
    },
    /// The settings cannot be used (unreadable CA file, no URL and no directory...).
    #[error("schema registry settings: {0}")]
    Settings(String),
}

/// A cached view of a schema registry (or of a directory of schemas).
#[derive(Debug)]
pub struct Registry {
    source: Source,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    /// Ids of the schemas registered by this process, by subject and canonical form.
    registered: Mutex<HashMap<(String, String), u32>>,
}

enum Source {
    Http {
        agent: ureq::Agent,
        base: String,
        authorization: Option<String>,
    },
    Directory(PathBuf),
}

/// Names the registry, never its credentials.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http { base, .. } => f.debug_tuple("Http").field(base).finish(),
            Source::Directory(directory) => f.debug_tuple("Directory").field(directory).finish(),
        }
    }
}

/// The content type of the Confluent-compatible API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Registry {
    /// A registry client for `settings`.
    pub fn new(settings: &RegistrySettings) -> Result<Self, RegistryError> {
        let source = match (&settings.url, &settings.directory) {
            (Some(url), None) => Source::Http {
                agent: agent(settings)?,
                base: url.trim_end_matches('/').to_owned(),
                authorization: settings.username.as_ref().map(|user| {
                    let password = settings.password.as_deref().unwrap_or_default();
                    let pair = format!("{user}:{password}");
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                }),
            },
            (None, Some(directory)) => Source::Directory(directory.clone()),
            _ => return Err(RegistryError::Settings(
                "give either `url` (a schema registry) or `directory` (offline schemas), not both"
                    .to_owned(),
            )),
        };
        Ok(Self {
            source,
            by_id: Mutex::default(),
            registered: Mutex::default(),
        })
    }

    /// The schema registered under `id`.
    pub fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.lock_ids().get(&id) {
            return Ok(schema.clone());
        }
        let text = match &self.source {
            Source::Http { .. } => {
                let body = self.get(&format!("/schemas/ids/{id}"), id)?;
                let answer: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|_| self.unavailable("answered with something that is not JSON"))?;
                answer["schema"]
                    .as_str()
                    .ok_or_else(|| self.unavailable("answered without a `schema`"))?
                    .to_owned()
            }
            Source::Directory(directory) => {
                std::fs::read_to_string(directory.join(format!("{id}.avsc")))
                    .map_err(|_| RegistryError::UnknownId(id))?
            }
        };
        let schema =
            Arc::new(
                Schema::parse_str(&text).map_err(|error| RegistryError::Invalid {
                    id,
                    reason: error.to_string(),
                })?,
            );
        self.lock_ids().insert(id, schema.clone());
        Ok(schema)
    }

    /// The id of `schema` under `subject`, registering it there if needed (offline: the
    /// id of the directory's file holding it).
    pub fn register(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        let canonical = schema.canonical_form();
        let key = (subject.to_owned(), canonical.clone());
        if let Some(id) = self.lock_registered().get(&key) {
            return Ok(*id);
        }
        let id = match &self.source {
            Source::Http {
                agent,
                base,
                authorization,
            } => {
                let body = serde_json::json!({ "schema": schema.canonical_form() }).to_string();
                let mut request = agent
                    .post(format!("{base}/subjects/{}/versions", encode(subject)))
                    .header("Content-Type", CONTENT_TYPE)
                    .header("Accept", CONTENT_TYPE);
                if let Some(authorization) = authorization {
                    request = request.header("Authorization", authorization);
                }
                let mut response = request
                    .send(body)
                    .map_err(|error| self.unavailable(&describe(&error)))?;
                let text = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|error| self.unavailable(&describe(&error)))?;
                let answer: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                    self.unavailable("answered a registration with something that is not JSON")
                })?;
                answer["id"]
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| self.unavailable("answered a registration without an `id`"))?
            }
            Source::Directory(directory) => {
                self.find_in_directory(directory, subject, &canonical)?
            }
        };
        self.lock_registered().insert(key, id);
        Ok(id)
    }

    fn find_in_directory(
        &self,
        directory: &std::path::Path,
        subject: &str,
        canonical: &str,
    ) -> Result<u32, RegistryError> {
        let not_there = || RegistryError::NotInDirectory {
            directory: directory.display().to_string(),
            subject: subject.to_owned(),
        };
        let entries = std::fs::read_dir(directory).map_err(|_| not_there())?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".avsc"))
                .and_then(|id| id.parse::<u32>().ok())
            else {
                continue;
            };
            if self
                .schema(id)
                .is_ok_and(|schema| schema.canonical_form() == canonical)
            {
                return Ok(id);
            }
        }
        Err(not_there())
    }

    fn get(&self, path: &str, id: u32) -> Result<String, RegistryError> {
        let Source::Http {
            agent,
            base,
            authorization,
        } = &self.source
        else {
            unreachable!("only a registry is asked over HTTP");
        };
        let mut request = agent
            .get(format!("{base}{path}"))
            .header("Accept", CONTENT_TYPE);
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        match request.call() {
            Ok(mut response) => response
                .body_mut()
                .read_to_string()
                .map_err(|error| self.unavailable(&describe(&error))),
            Err(ureq::Error::StatusCode(404)) => Err(RegistryError::UnknownId(id)),
            Err(error) => Err(self.unavailable(&describe(&error))),
        }
    }

    fn unavailable(&self, what: &str) -> RegistryError {
        let url = match &self.source {
            Source::Http { base, .. } => base.clone(),
            Source::Directory(directory) => directory.display().to_string(),
        };
        RegistryError::Unavailable {
            url,
            what: what.to_owned(),
        }
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Schema>>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_registered(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An HTTP agent with the settings' timeout and certificate authorities.
fn agent(settings: &RegistrySettings) -> Result<ureq::Agent, RegistryError> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder().provider(TlsProvider::NativeTls);
    if let Some(ca_file) = &settings.ca_file {
        let pem = std::fs::read(ca_file).map_err(|error| {
            RegistryError::Settings(format!(
                "cannot read `ca_file` {}: {error}",
                ca_file.display()
            ))
        })?;
        let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(certificate)) => Some(certificate.to_owned()),
                _ => None,
            })
            .collect();
        if certificates.is_empty() {
            return Err(RegistryError::Settings(format!(
                "`ca_file` {} holds no PEM certificate",
                ca_file.display()
            )));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certificates));
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .tls_config(tls.build())
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// What went wrong with a request, without its URL's query or any header.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::StatusCode(code) => format!("answered HTTP {code}"),
        ureq::Error::Timeout(_) => "did not answer in time".to_owned(),
        ureq::Error::Io(error) => format!("cannot be reached ({error})"),
        ureq::Error::HostNotFound => "cannot be reached (host not found)".to_owned(),
        ureq::Error::ConnectionFailed => "cannot be reached (connection failed)".to_owned(),
        other => format!("failed ({other})"),
    }
}

/// `subject` as one URL path segment.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"}]}"#;

    #[test]
    fn offline_schemas_come_from_id_files() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("7.avsc"), SCHEMA).unwrap();
        std::fs::write(directory.path().join("8.avsc"), "not a schema").unwrap();
        let registry = Registry::new(&RegistrySettings {
            directory: Some(directory.path().to_owned()),
            ..RegistrySettings::default()
        })
        .unwrap();
        let schema = registry.schema(7).unwrap();
        assert_eq!(registry.register("t-value", &schema).unwrap(), 7);
        assert_eq!(registry.schema(9).unwrap_err(), RegistryError::UnknownId(9));
        assert!(matches!(
            registry.schema(8).unwrap_err(),
            RegistryError::Invalid { id: 8, .. }
        ));
        let other = Schema::parse_str(r#"{"type":"record","name":"F","fields":[]}"#).unwrap();
        assert!(matches!(
            registry.register("t-value", &other).unwrap_err(),
            RegistryError::NotInDirectory { .. }
        ));
    }

    #[test]
    fn an_unreachable_registry_is_named_without_credentials() {
        let registry = Registry::new(&RegistrySettings {
            url: Some("http://127.0.0.1:9/apis/ccompat/v7".to_owned()),
            username: Some("u".to_owned()),
            password: Some("hunter2".to_owned()),
            timeout: Duration::from_secs(2),
            ..RegistrySettings::default()
        })
        .unwrap();
        let error = registry.schema(1).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "the schema registry at http://127.0.0.1:9/apis/ccompat/v7 cannot be reached"
            ),
            "{error}"
        );
        assert!(!error.contains("hunter2"));
        assert!(!format!("{registry:?}").contains("hunter2"));
    }

    #[test]
    fn subjects_are_escaped() {
        assert_eq!(
            encode("redemptions.pseudonymized-value"),
            "redemptions.pseudonymized-value"
        );
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
