//! TLS termination on `listen-tls`. With direct server return the replies never pass the
//! front, so the sidecar is the only place where HTTPS can end.
//!
//! - [`Certificates`]: the `tls-cert` entries (a PEM file with the full chain, a PEM private
//!   key: RSA, ECDSA P-256/P-384 or Ed25519), loaded and checked once when the configuration
//!   is validated. The certificate for a handshake is chosen by SNI among the DNS names of
//!   the certificates' subjectAltName (an exact name first, then a wildcard `*.example.com`
//!   for one label); a client that sends no SNI or an unknown name gets the first entry.
//! - [`ticket`]: session tickets sealed with the `tls-ticket-key` files, so that a client
//!   resumes on any sidecar of the cluster (without them, rustls's ticketer with a key of
//!   this process: resumption only on the server that issued the ticket).
//! - [`Terminator`]: the rustls configuration (the `ring` provider, TLS 1.2 and 1.3 only,
//!   ALPN `http/1.1`) that each new handshake takes, replaced whole when SIGHUP brings new
//!   [`Credentials`]; connections already established keep their own state.
//! - [`handshake`]: what happens between accept and the first request (timeout, plain HTTP
//!   sent to the HTTPS port, malformed ClientHellos), counted in metrics.
//! - [`facts`]: what the handshake settled (SNI, protocol version), kept per connection and
//!   sent on to the origin when `tls-sni-header` / `tls-protocol-header` ask for it.

pub mod facts;
pub mod handshake;
pub mod peer;
pub mod ticket;
mod validity;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol offered: the sidecar speaks HTTP/1.1 only.
pub const ALPN: &[u8] = b"http/1.1";

/// Why a `tls-cert` entry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate does not parse as X.509.
    #[error("{path}: the first certificate is not valid X.509: {why}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The key file holds no PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is not one rustls signs with.
    #[error("{path}: the private key cannot be used: {why}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// One loaded `tls-cert` entry.
#[derive(Debug, Clone)]
pub struct CertEntry {
    /// The certificate file (the `name` label of its expiry metric).
    pub cert_path: PathBuf,
    /// The key file.
    pub key_path: PathBuf,
    /// The DNS names of its subjectAltName, lowercase (wildcards as `*.example.com`).
    pub names: Vec<String>,
    /// Its notAfter, Unix time (`None` when it could not be read).
    pub not_after: Option<u64>,
    key: Arc<CertifiedKey>,
}

impl CertEntry {
    /// Loads and checks the chain in `cert` and the key in `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |path: &Path, e: rustls_pki_types::pem::Error| match e {
            rustls_pki_types::pem::Error::Io(e) => CertError::Read {
                path: path.to_owned(),
                why: e.to_string(),
            },
            e => CertError::Read {
                path: path.to_owned(),
                why: format!("bad PEM: {e}"),
            },
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(cert, e))?;
        let Some(first) = chain.first() else {
            return Err(CertError::NoCertificate {
                path: cert.to_owned(),
            });
        };
        let parsed =
            webpki::EndEntityCert::try_from(first).map_err(|e| CertError::BadCertificate {
                path: cert.to_owned(),
                why: format!("{e:?}"),
            })?;
        let names = parsed
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        let not_after = validity::not_after(first);
        let private = match PrivateKeyDer::from_pem_file(key) {
            Ok(k) => k,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(CertError::NoKey {
                    path: key.to_owned(),
                });
            }
            Err(e) => return Err(read(key, e)),
        };
        let signing = provider()
            .key_provider
            .load_private_key(private)
            .map_err(|e| CertError::BadKey {
                path: key.to_owned(),
                why: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(CertError::Mismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                });
            }
        }
        Ok(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            names,
            not_after,
            key: Arc::new(certified),
        })
    }

    /// True when this entry's certificate is for `sni` (lowercase): one of its names, or a
    /// wildcard name covering its first label.
    fn exactly_for(&self, sni: &str) -> bool {
        self.names.iter().any(|n| n == sni)
    }

    fn wildcard_for(&self, sni: &str) -> bool {
        let Some((first, rest)) = sni.split_once('.') else {
            return false;
        };
        !first.is_empty()
            && self
                .names
                .iter()
                .any(|n| n.strip_prefix("*.").is_some_and(|base| base == rest))
    }
}

/// Every `tls-cert` entry, the first the default.
#[derive(Debug, Clone)]
pub struct Certificates {
    entries: Arc<[CertEntry]>,
}

impl PartialEq for Certificates {
    /// The same files with the same chains (a changed key alone is not seen).
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(other.entries.iter()).all(|(a, b)| {
                a.cert_path == b.cert_path && a.key_path == b.key_path && a.key.cert == b.key.cert
            })
    }
}

impl Eq for Certificates {}

impl Certificates {
    /// The loaded entries, in order; `None` when there are none.
    pub fn new(entries: Vec<CertEntry>) -> Option<Self> {
        (!entries.is_empty()).then(|| Self {
            entries: entries.into(),
        })
    }

    /// The entries, the default first.
    pub fn entries(&self) -> &[CertEntry] {
        &self.entries
    }

    /// The entry a ClientHello naming `sni` gets: exact names first, then wildcards, else
    /// the first entry.
    pub fn pick(&self, sni: Option<&str>) -> &CertEntry {
        let sni = sni.map(str::to_ascii_lowercase);
        let found = sni.as_deref().and_then(|sni| {
            self.entries
                .iter()
                .find(|e| e.exactly_for(sni))
                .or_else(|| self.entries.iter().find(|e| e.wildcard_for(sni)))
        });
        found.unwrap_or(&self.entries[0])
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).key.clone())
    }
}

/// The crypto provider: `ring` (builds with a C compiler alone; aws-lc-rs needs cmake).
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// TLS 1.2 sessions remembered by ID (clients that do not take tickets), on this server.
const SESSION_CACHE: usize = 256;

/// What SIGHUP may change on the HTTPS listener: files, read and checked with the
/// configuration (`tls-cert`, `tls-ticket-key`) and the ticket lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The certificates.
    pub certs: Certificates,
    /// The ticket keys, the sealing one first; empty: this process's own ticketer.
    pub ticket_keys: Vec<ticket::TicketKey>,
    /// The lifetime of tickets sealed with `ticket_keys`.
    pub ticket_lifetime: Duration,
}

/// The TLS side of `listen-tls`: the rustls configuration each new handshake loads, and
/// what outlives a reload (this process's own ticketer and the TLS 1.2 session cache, so
/// that sessions issued before a reload still resume on this server).
#[derive(Debug)]
pub struct Terminator {
    current: ArcSwap<ServerConfig>,
    own_tickets: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl Terminator {
    /// The configuration for `credentials`.
    pub fn new(credentials: &Credentials) -> Result<Self, rustls::Error> {
        let own_tickets = rustls::crypto::ring::Ticketer::new()?;
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let config = build(credentials, &own_tickets, &sessions)?;
        Ok(Self {
            current: ArcSwap::new(config),
            own_tickets,
            sessions,
        })
    }

    /// The configuration for a new handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// New handshakes use `credentials` from now on; on an error the current ones stay.
    pub fn replace(&self, credentials: &Credentials) -> Result<(), rustls::Error> {
        self.install(self.prepare(credentials)?);
        Ok(())
    }

    /// The configuration for `credentials`, built but not in use yet (see
    /// [`install`](Self::install)).
    pub fn prepare(&self, credentials: &Credentials) -> Result<Arc<ServerConfig>, rustls::Error> {
        build(credentials, &self.own_tickets, &self.sessions)
    }

    /// New handshakes use `config` (from [`prepare`](Self::prepare)) from now on.
    pub fn install(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }
}

/// The server side's TLS configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, the certificate
/// chosen by SNI, tickets sealed with the shared keys when there are some, else with
/// `own_tickets`.
fn build(
    credentials: &Credentials,
    own_tickets: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(credentials.certs.clone()));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = sessions.clone();
    config.ticketer = if credentials.ticket_keys.is_empty() {
        own_tickets.clone()
    } else {
        let lifetime = u32::try_from(credentials.ticket_lifetime.as_secs()).unwrap_or(u32::MAX);
        Arc::new(ticket::SharedTickets::new(
            credentials.ticket_keys.clone(),
            lifetime,
        ))
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its key, written to `dir`.
    fn write_pair(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{tag}.pem")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn sni_picks_by_name_and_wildcard_else_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ak) = write_pair(dir.path(), "a", &["a.test", "www.a.test"]);
        let (b, bk) = write_pair(dir.path(), "b", &["*.b.test"]);
        let (c, ck) = write_pair(dir.path(), "c", &["exact.b.test"]);
        let certs = Certificates::new(vec![
            CertEntry::load(&a, &ak).unwrap(),
            CertEntry::load(&b, &bk).unwrap(),
            CertEntry::load(&c, &ck).unwrap(),
        ])
        .unwrap();
        let picked = |sni| certs.pick(sni).cert_path.clone();
        assert_eq!(picked(Some("WWW.A.test")), a);
        assert_eq!(picked(Some("x.b.test")), b);
        assert_eq!(picked(Some("exact.b.test")), c);
        assert_eq!(picked(Some("b.test")), a);
        assert_eq!(picked(Some("y.x.b.test")), a);
        assert_eq!(picked(Some("unknown.test")), a);
        assert_eq!(picked(None), a);
        assert!(certs.entries()[0].not_after.is_some());
        let credentials = Credentials {
            certs,
            ticket_keys: Vec::new(),
            ticket_lifetime: Duration::from_secs(3600),
        };
        let terminator = Terminator::new(&credentials).unwrap();
        assert!(terminator.config().ticketer.enabled());
        let first = terminator.config();
        terminator.replace(&credentials).unwrap();
        assert!(!Arc::ptr_eq(&first, &terminator.config()));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ak) = write_pair(dir.path(), "a", &["a.test"]);
        let (_, bk) = write_pair(dir.path(), "b", &["b.test"]);
        let missing = dir.path().join("missing.pem");
        let err = |c: &Path, k: &Path| CertEntry::load(c, k).unwrap_err().to_string();
        assert!(err(&missing, &ak).starts_with(&format!("cannot read {}", missing.display())));
        assert!(err(&ak, &ak).contains("holds no PEM certificate"));
        assert!(err(&a, &a).contains("holds no PEM private key"));
        let mismatch = err(&a, &bk);
        assert!(mismatch.contains("does not match"), "{mismatch}");
        assert!(mismatch.contains(&a.display().to_string()), "{mismatch}");
    }
}
