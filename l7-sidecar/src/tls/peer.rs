//! Mutual TLS between sidecars (`peer-tls`), for clusters whose peer network is not trusted.
//!
//! - Every sidecar has a certificate issued by the cluster CA (`peer-tls-cert`, the CA in
//!   `peer-tls-ca`). It presents it as the server on `peer-listen` and as the client on its
//!   connections to peers (forwarded requests and health checks).
//! - On `peer-listen`, a client must present a certificate that chains to the cluster CA;
//!   any other connection fails its handshake (counted, logged at most once per 10 s,
//!   closed). Whoever holds a certificate the cluster CA signed is taken for a member and
//!   may send requests there, which the peer listener trusts (`X-Forwarded-Proto`, the hop
//!   count): the cluster CA must sign for sidecars only. There is no revocation list; a
//!   member's certificate stays good until it expires or the CA is replaced.
//! - Connecting to a peer, the sidecar checks that the peer's certificate chains to the
//!   cluster CA and names the address it connects to (an IP address in subjectAltName), as
//!   a browser checks a host name: a machine that takes over a peer's address without its
//!   key gets no request.
//! - TLS 1.3 only (both sides are dl7), ALPN `http/1.1`; sessions resume (rustls' in-memory
//!   stores), so a new pooled connection to a peer usually costs no signature.
//! - SIGHUP re-reads the three files; new connections use them, connections already open
//!   keep theirs. A file that does not load, or a certificate the CA does not sign, refuses
//!   the reload.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::metrics::Metrics;

use super::{ALPN, CertEntry, provider};

/// This sidecar's certificate and the cluster CA, loaded and checked.
#[derive(Debug, Clone)]
pub struct PeerCredentials {
    /// This sidecar's certificate (`peer-tls-cert`).
    pub cert: CertEntry,
    /// The CA file (`peer-tls-ca`).
    pub ca_path: PathBuf,
    cas: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl PartialEq for PeerCredentials {
    /// The same files with the same certificates (a changed key alone is not seen).
    fn eq(&self, other: &Self) -> bool {
        self.cert.cert_path == other.cert.cert_path
            && self.cert.key_path == other.cert.key_path
            && self.cert.key.cert == other.cert.key.cert
            && self.ca_path == other.ca_path
            && self.cas == other.cas
    }
}

impl Eq for PeerCredentials {}

impl PeerCredentials {
    /// Loads the certificate `cert` with its key `key` and the CA certificates in `ca`, and
    /// checks that the CA signs the certificate for both ends of a peer connection, valid
    /// now, and, given `own` (this sidecar's peer address), that it names that address: a
    /// sidecar whose certificate its peers would refuse must not start. An error names the
    /// setting at fault: `peer-tls-ca` or `peer-tls-cert`.
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: &Path,
        own: Option<IpAddr>,
    ) -> Result<Self, (&'static str, String)> {
        let ca_error = |why: String| ("peer-tls-ca", why);
        let cert_error = |why: String| ("peer-tls-cert", why);
        let cas = CertificateDer::pem_file_iter(ca)
            .map_err(|e| ca_error(format!("cannot read {}: {e}", ca.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(format!("{}: bad PEM: {e}", ca.display())))?;
        if cas.is_empty() {
            return Err(ca_error(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ca.display()
            )));
        }
        let mut roots = RootCertStore::empty();
        for der in &cas {
            roots.add(der.clone()).map_err(|e| {
                ca_error(format!(
                    "{}: not a usable CA certificate: {e}",
                    ca.display()
                ))
            })?;
        }
        let roots = Arc::new(roots);
        let entry = CertEntry::load(cert, key).map_err(|e| cert_error(e.to_string()))?;
        let (leaf, intermediates) = entry
            .key
            .cert
            .split_first()
            .ok_or_else(|| cert_error(format!("{} holds no certificate", cert.display())))?;
        let refused = |side: &str, e: rustls::Error| {
            cert_error(format!(
                "the certificate in {} is not valid {side} under the CA in {}: {e}",
                cert.display(),
                ca.display()
            ))
        };
        let now = UnixTime::now();
        client_verifier(&roots)
            .map_err(|e| cert_error(e.to_string()))?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| refused("as a client", e))?;
        if let Some(ip) = own {
            server_verifier(&roots)
                .map_err(|e| cert_error(e.to_string()))?
                .verify_server_cert(leaf, intermediates, &ServerName::from(ip), &[], now)
                .map_err(|e| refused(&format!("as the server of {ip}"), e))?;
        }
        Ok(Self {
            cert: entry,
            ca_path: ca.to_owned(),
            cas,
            roots,
        })
    }
}

/// The verifier of peers' server certificates: they must chain to the cluster CA (and name
/// the address connected to, checked per connection).
fn server_verifier(roots: &Arc<RootCertStore>) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(roots.clone(), Arc::new(provider()))
        .build()
        .map_err(|e| rustls::Error::General(format!("server certificate verifier: {e}")))
}

/// The verifier of peers' client certificates: they must chain to the cluster CA.
fn client_verifier(
    roots: &Arc<RootCertStore>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    WebPkiClientVerifier::builder_with_provider(roots.clone(), Arc::new(provider()))
        .build()
        .map_err(|e| rustls::Error::General(format!("client certificate verifier: {e}")))
}

/// Both sides of peer TLS: the configuration of `peer-listen`'s handshakes and of
/// connections to peers, each replaced whole on SIGHUP.
#[derive(Debug)]
pub struct PeerTls {
    server: ArcSwap<ServerConfig>,
    client: ArcSwap<ClientConfig>,
    /// Handshakes with peers that succeeded, failed, timed out.
    connected: [IntCounter; 3],
    /// When a failed handshake was last logged (ms since `started`), for the rate limit.
    warned: AtomicU64,
    started: Instant,
}

/// A failed handshake with a peer is logged at most this often (health checks retry every
/// second).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl PeerTls {
    /// Both configurations for `credentials`; handshakes with peers counted in `metrics`.
    pub fn new(credentials: &PeerCredentials, metrics: &Metrics) -> Result<Self, rustls::Error> {
        Ok(Self {
            server: ArcSwap::new(server(credentials)?),
            client: ArcSwap::new(client(credentials)?),
            connected: metrics.peer_tls_connected(),
            warned: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        })
    }

    /// Logs a failed handshake with the peer at `addr` (`accepted`: on `peer-listen`, else
    /// connecting to it), at most once per [`WARN_EVERY`] for both kinds together: a
    /// certificate refused by either side is a configuration error that cuts peers off, and
    /// must show in the log, not only in a counter.
    pub fn failed(&self, addr: SocketAddr, error: &dyn std::fmt::Display, accepted: bool) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.warned.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if accepted {
                log::warn!(
                    "peer TLS handshake from {addr} refused: {error} (logged once per 10 s)"
                );
            } else {
                log::warn!("peer TLS handshake with {addr} failed: {error} (logged once per 10 s)");
            }
        }
    }

    /// Counts a handshake with a peer that ended with `result` (`ok`, `error`, `timeout`).
    pub fn counted(&self, result: &str) {
        let i = match result {
            "ok" => 0,
            "error" => 1,
            _ => 2,
        };
        self.connected[i].inc();
    }

    /// Both configurations for `credentials`, built but not in use yet (see
    /// [`install`](Self::install)).
    pub fn prepare(&self, credentials: &PeerCredentials) -> Result<PeerConfigs, rustls::Error> {
        Ok(PeerConfigs {
            server: server(credentials)?,
            client: client(credentials)?,
        })
    }

    /// New connections use `configs` (from [`prepare`](Self::prepare)) from now on.
    pub fn install(&self, configs: PeerConfigs) {
        self.server.store(configs.server);
        self.client.store(configs.client);
    }

    /// The configuration for a handshake on `peer-listen`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.load_full()
    }

    /// The client side of a handshake with the peer at `addr` over `tcp`: the peer's
    /// certificate must chain to the cluster CA and name `addr`'s IP address.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let connector = TlsConnector::from(self.client.load_full());
        connector.connect(ServerName::from(addr.ip()), tcp).await
    }
}

/// Both sides' configurations, built for a reload.
#[derive(Debug)]
pub struct PeerConfigs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// `peer-listen`'s side: TLS 1.3, client certificates required and verified.
fn server(credentials: &PeerCredentials) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier(&credentials.roots)?)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            credentials.cert.key.clone(),
        )));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The connecting side: TLS 1.3, the peer's certificate verified, this sidecar's presented.
fn client(credentials: &PeerCredentials) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = server_verifier(&credentials.roots)?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            credentials.cert.key.clone(),
        )));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}
