//! [`TlsFiles`]: a throw-away PKI for a broker that demands client certificates, the way
//! the private link to the cloud cluster does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::kafka::path_text;

/// A throw-away certificate authority with one server certificate (for `127.0.0.1` and
/// `localhost`) and one client certificate, as PEM files in a temporary directory that
/// is removed on drop. Each call to [`TlsFiles::generate`] makes a new, unrelated CA.
///
/// The server certificate is also valid as a client certificate: a broker talks to
/// itself over its SSL listener (transaction markers, for one) and must pass its own
/// `ssl.client.auth=required`.
#[derive(Debug)]
pub struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    /// Generates the CA and both certificates (ECDSA P-256) in a new temporary directory.
    pub fn generate() -> TlsFiles {
        TlsFiles::generate_in(&std::env::temp_dir())
    }

    /// Generates them in a new directory inside `parent` (a broker's own directory).
    pub(crate) fn generate_in(parent: &Path) -> TlsFiles {
        let dir = tempfile::Builder::new()
            .prefix("testkit-tls-")
            .tempdir_in(parent)
            .expect("the temporary directory is writable");
        let files = TlsFiles { dir };
        files
            .write_all()
            .expect("rcgen generates certificates from valid parameters");
        files
    }

    fn write_all(&self) -> Result<(), rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "testkit throw-away CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "pseudopipe-sink");
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;

        for (path, pem) in [
            (self.ca(), ca_cert.pem()),
            (self.server_cert(), server_cert.pem()),
            (self.server_key(), server_key.serialize_pem()),
            (self.client_cert(), client_cert.pem()),
            (self.client_key(), client_key.serialize_pem()),
        ] {
            fs::write(&path, pem)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        }
        Ok(())
    }

    /// The CA certificate (`ssl.ca.location`, the broker's trust store).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate, for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The client certificate (`ssl.certificate.location`).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client's private key, PKCS#8 (`ssl.key.location`).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// Writes the server key followed by its certificate into `path`: a Kafka key store
    /// of type PEM (`ssl.keystore.type=PEM`).
    pub fn write_server_keystore(&self, path: &Path) {
        let read = |path: PathBuf| {
            fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
        };
        let keystore = format!("{}{}", read(self.server_key()), read(self.server_cert()));
        fs::write(path, keystore)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    }

    /// The librdkafka properties of a client that presents the client certificate:
    /// `security.protocol`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        [
            ("security.protocol", "ssl".to_owned()),
            ("ssl.ca.location", path_text(&self.ca())),
            ("ssl.certificate.location", path_text(&self.client_cert())),
            ("ssl.key.location", path_text(&self.client_key())),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}
