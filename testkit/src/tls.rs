//! [`TlsFiles`], a throw-away PKI, and [`TlsGateway`], an mTLS front for a plaintext
//! broker, the way the private link to the cloud cluster looks.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::{find_program, Client, Process};

/// A throw-away certificate authority with one server certificate (for `127.0.0.1` and
/// `localhost`) and one client certificate, as PEM files in a temporary directory that
/// is removed on drop. Each call to [`TlsFiles::generate`] makes a new, unrelated CA.
#[derive(Debug)]
pub struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    /// Generates the CA and both certificates (ECDSA P-256).
    pub fn generate() -> TlsFiles {
        let dir = tempfile::Builder::new()
            .prefix("testkit-tls-")
            .tempdir()
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
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
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

    /// The CA certificate (`ssl.ca.location`).
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

/// An mTLS gateway (socat) on `127.0.0.1:port` in front of a plaintext broker: it
/// demands a client certificate signed by its CA and forwards each connection to the
/// broker. The broker must advertise the gateway's port, see
/// [`BrokerBuilder::behind_tls_gateway`](crate::BrokerBuilder::behind_tls_gateway),
/// which wires both.
#[derive(Debug)]
pub struct TlsGateway {
    port: u16,
    backend_port: u16,
    files: TlsFiles,
    process: Option<Process>,
    log_dir: TempDir,
}

impl TlsGateway {
    /// Starts a gateway on a free port in front of `127.0.0.1:backend_port`, with new
    /// certificates.
    pub fn start(backend_port: u16) -> TlsGateway {
        TlsGateway::start_on(crate::free_port(), backend_port)
    }

    /// Starts a gateway on `port` in front of `127.0.0.1:backend_port`, with new certificates.
    pub fn start_on(port: u16, backend_port: u16) -> TlsGateway {
        let mut gateway = TlsGateway {
            port,
            backend_port,
            files: TlsFiles::generate(),
            process: None,
            log_dir: tempfile::Builder::new()
                .prefix("testkit-gateway-")
                .tempdir()
                .expect("the temporary directory is writable"),
        };
        gateway.restart();
        gateway
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker port it forwards to.
    pub fn backend_port(&self) -> u16 {
        self.backend_port
    }

    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The certificates: the CA, the server's and the client's.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The librdkafka properties of a client that goes through the gateway with the
    /// client certificate, `bootstrap.servers` included.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut properties = self.files.client_properties();
        properties.insert("bootstrap.servers".to_owned(), self.bootstrap());
        properties
    }

    /// A [`Client`] with [`client_properties`](Self::client_properties).
    pub fn client(&self) -> Client {
        Client::new(self.client_properties())
    }

    /// Cuts the link: the gateway and every connection through it are killed.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the gateway again on the same port with the same certificates (stopping it
    /// first if it runs), and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let socat = find_program("socat").unwrap_or_else(|| {
            panic!(
                "socat is not installed: run scripts/install-test-deps.sh (Debian package `socat`)"
            )
        });
        let files = &self.files;
        let mut command = Command::new(socat);
        command
            // -d -d logs "listening on", which tells us it is ready.
            .args(["-d", "-d"])
            .arg(format!(
                "openssl-listen:{},bind=127.0.0.1,fork,reuseaddr,cert={},key={},cafile={},verify=1",
                self.port,
                path_text(&files.server_cert()),
                path_text(&files.server_key()),
                path_text(&files.ca()),
            ))
            .arg(format!("tcp:127.0.0.1:{}", self.backend_port));
        let log = self.log_dir.path().join("socat.log");
        // Only new lines count when waiting for "listening on".
        let _ = fs::remove_file(&log);
        let mut process = Process::start_logging_to("tls-gateway", command, &log);
        let listening = crate::wait_until(Duration::from_secs(10), || {
            process.log().contains("listening on") || !process.is_running()
        });
        if !listening || !process.is_running() {
            panic!(
                "{}",
                process.failure(&format!(
                    "the TLS gateway did not listen on port {}",
                    self.port
                ))
            );
        }
        self.process = Some(process);
    }

    /// Whether the gateway process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// The last `lines` lines of socat's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|process| process.log_tail(lines))
            .unwrap_or_default()
    }
}

fn path_text(path: &Path) -> String {
    path.to_str()
        .expect("temporary directories have UTF-8 paths")
        .to_owned()
}
