//! TLS for the tests of `listen-tls` and `peer-tls`: a throwaway CA (rcgen with ring, so
//! ECDSA and Ed25519 keys only) that writes its certificates where a sidecar's
//! `CERT.pem:KEY.pem` entries point, and rustls clients that trust it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A TLS connection from a test, over a blocking socket.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// The crypto provider of the sidecar (and so of its tests): ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A throwaway CA.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new CA called `name` (its common name).
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).expect("CA"),
            key,
        }
    }

    /// The CA certificate, what clients trust.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Writes the CA certificate to `dir/NAME.pem`; its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).expect("write the CA");
        path
    }

    /// Issues a certificate for `san` (a DNS name, or an IP address) with an ECDSA P-256
    /// key and writes it (the chain: it, then the CA) and its key to `dir/FILE.pem` and
    /// `dir/FILE.key`: the `CERT:KEY` entry, and the certificate.
    pub fn issue(&self, dir: &Path, file: &str, san: &str) -> (String, CertificateDer<'static>) {
        self.issue_with(dir, file, san, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// [`issue`](Self::issue) with a key of `alg`.
    pub fn issue_with(
        &self,
        dir: &Path,
        file: &str,
        san: &str,
        alg: &'static SignatureAlgorithm,
    ) -> (String, CertificateDer<'static>) {
        let entry = format!(
            "{}:{}",
            dir.join(format!("{file}.pem")).display(),
            dir.join(format!("{file}.key")).display()
        );
        let der = self.write_over(&entry, san, alg, None);
        (entry, der)
    }

    /// Writes a new certificate for `san` with a key of `alg` (valid until the date
    /// `not_after`, year, month, day, when given) over the files of `entry` (`CERT:KEY`);
    /// the certificate.
    pub fn write_over(
        &self,
        entry: &str,
        san: &str,
        alg: &'static SignatureAlgorithm,
        not_after: Option<(i32, u8, u8)>,
    ) -> CertificateDer<'static> {
        let (cert, key) = entry.split_once(':').expect("CERT:KEY");
        let pair = KeyPair::generate_for(alg).expect("generate a key");
        let mut params = CertificateParams::new(vec![san.to_owned()]).expect("params");
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let signed = params
            .signed_by(&pair, &self.cert, &self.key)
            .expect("sign");
        std::fs::write(cert, format!("{}{}", signed.pem(), self.cert.pem()))
            .expect("write the chain");
        std::fs::write(key, pair.serialize_pem()).expect("write the key");
        signed.der().clone()
    }
}

/// A client configuration trusting `ca`, speaking the TLS `versions`, offering ALPN
/// `http/1.1`, presenting the certificate of `entry` (`CERT:KEY`) when given. It keeps
/// sessions (rustls's default store) for every connection made with it, to any server.
pub fn client(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    entry: Option<&str>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("add the CA");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match entry {
        None => builder.with_no_client_auth(),
        Some(entry) => {
            let (cert, key) = entry.split_once(':').expect("CERT:KEY");
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("read the chain")
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A connection to `addr` with `config` and the server name `name` (an IP address is sent
/// as no SNI); the handshake is done on return, or the error.
pub fn try_handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<Tls, String> {
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// [`try_handshake`], which must succeed.
pub fn handshake(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> Tls {
    try_handshake(addr, config, name).expect("TLS handshake")
}

/// The certificate the server of `tls` presented.
pub fn server_leaf(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().expect("a certificate")[0].clone()
}
