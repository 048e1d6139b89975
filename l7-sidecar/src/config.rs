//! `serve`'s configuration: one list of settings that are both command-line flags and keys of
//! a TOML file with the same names (`--peer-listen` is `peer-listen = "..."`), validated once
//! into a [`Config`] whose errors name the field and the bad value. Flags override the file.
//!
//! ```
//! use l7_sidecar::config::{Mode, Settings};
//!
//! let file: Settings = toml::from_str(r#"
//!     listen = "127.0.0.1:8080"
//!     members = "a=127.0.0.1:9001,b=127.0.0.1:9002"
//!     mode = "central"
//! "#).unwrap();
//! let flags = Settings { scheme: Some("maglev".into()), ..Settings::default() };
//! let config = flags.over(file).validate().unwrap();
//! assert_eq!(config.mode, Mode::Central);
//! assert_eq!(config.membership.scheme, "maglev");
//!
//! let bad = Settings { listen: Some("nowhere".into()), ..Settings::default() };
//! assert!(bad.validate().unwrap_err().to_string().starts_with("--listen: \"nowhere\""));
//! ```
//!
//! Host names in addresses are resolved when the configuration is validated (at start and on
//! every reload), never per connection.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::request::{Limits as HeadLimits, MAX_HEADERS_CAP};
use crate::members::{self, MembersError};
use crate::scheme::{self, BuildError, Member};
use crate::tls::peer::PeerCredentials;
use crate::tls::ticket::TicketKey;
use crate::tls::{CertEntry, Certificates, Credentials};

/// Why the configuration was refused. Every message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("--{field}: {value:?} {problem}")]
    Invalid {
        /// The flag / key.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A required field is missing.
    #[error("--{field} is required {when}")]
    Missing {
        /// The flag / key.
        field: &'static str,
        /// In which case it is required.
        when: &'static str,
    },
    /// A field that makes no sense with another setting.
    #[error("--{field} cannot be used {why}")]
    NotAllowed {
        /// The flag / key.
        field: &'static str,
        /// The conflicting setting.
        why: &'static str,
    },
    /// Bad `--members` / `--weights`.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// The scheme refused the member list.
    #[error("--members: {0}")]
    Scheme(BuildError),
    /// The configuration file could not be read.
    #[error("--config: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for these settings.
    #[error("--config: {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error on one line.
        message: String,
    },
}

macro_rules! settings {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty, )*) => {
        /// Every setting of `serve`, as given (flags, or keys of the TOML file); all optional
        /// here, defaults and checks come with [`Settings::validate`].
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct Settings {
            $( $(#[$attr])* pub $field: Option<$ty>, )*
        }

        impl Settings {
            /// These settings where given, else those of `under` (flags over the file).
            pub fn over(self, under: Settings) -> Settings {
                Settings { $( $field: self.$field.or(under.$field), )* }
            }
        }
    };
}

settings! {
    /// TOML file with any of these settings (keys are the flag names); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: PathBuf,
    /// Client side (VIP traffic), ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: String,
    /// HTTPS client side, ADDR:PORT (TLS 1.2 and 1.3, ALPN http/1.1; with --tls-cert); runs
    /// beside --listen, with its own connection cap of --max-connections. Requests that
    /// arrive on it are sent on with `X-Forwarded-Proto: https` (default: none).
    #[arg(long, value_name = "ADDR:PORT")]
    listen_tls: String,
    /// With --listen-tls: a certificate, CERT.pem:KEY.pem (the PEM chain, leaf first, and
    /// its PEM private key: RSA, ECDSA P-256/P-384 or Ed25519); repeat the flag (in the file
    /// an array) for more. Chosen by SNI among the certificates' DNS names; the first is
    /// the default for clients that send no SNI or an unknown name.
    #[arg(long, value_name = "CERT:KEY")]
    tls_cert: Vec<String>,
    /// With --listen-tls: a session-ticket key file, 80 random bytes (`openssl rand 80`, as
    /// nginx's ssl_session_ticket_key); repeat the flag or separate with commas (in the file
    /// an array). The first seals new tickets, every one opens them: the same files on every
    /// sidecar let a client resume on any server. Unset: a key of this process only.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    tls_ticket_key: Vec<String>,
    /// With --listen-tls: how long clients may resume with a ticket sealed by
    /// --tls-ticket-key, at most 24h (default 1h).
    #[arg(long, value_name = "DURATION")]
    tls_ticket_lifetime: String,
    /// With --listen-tls or --peer-tls: time from accept to a completed TLS handshake;
    /// slower clients are closed (default 10s).
    #[arg(long, value_name = "DURATION")]
    tls_handshake_timeout: String,
    /// With --listen-tls or --peer-tls: TLS handshakes in progress at once, on each of the
    /// two listeners; connections beyond are closed at once and counted (default 1024).
    #[arg(long, value_name = "N")]
    tls_max_handshakes: usize,
    /// A request field that carries the server name (SNI) a client on --listen-tls asked
    /// for to peers, the origin and upstreams, e.g. X-TLS-SNI; left out when the client sent
    /// none. Clients' own fields of that name are removed on both client listeners, also
    /// without --listen-tls (set it on every sidecar: peers' pass through) (default: none).
    #[arg(long, value_name = "NAME")]
    tls_sni_header: String,
    /// A request field that carries the TLS version a client on --listen-tls agreed
    /// (TLSv1.2, TLSv1.3, as nginx's $ssl_protocol), e.g. X-TLS-Protocol; removed from
    /// clients' requests and kept from peers as --tls-sni-header (default: none).
    #[arg(long, value_name = "NAME")]
    tls_protocol_header: String,
    /// Peer side (requests forwarded by other sidecars), ADDR:PORT. Distributed mode only.
    #[arg(long, value_name = "ADDR:PORT")]
    peer_listen: String,
    /// Mutual TLS between sidecars (for a peer network that is not trusted), with
    /// --peer-tls-cert and --peer-tls-ca: --peer-listen takes only TLS 1.3 connections whose
    /// client certificate the cluster CA signed, and this sidecar connects to peers (requests
    /// and health checks) over TLS, checking that their certificates name their addresses.
    /// Every member must set it alike. Distributed mode only (default false: plain HTTP).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    peer_tls: bool,
    /// With --peer-tls: this sidecar's certificate, CERT.pem:KEY.pem, signed by the cluster
    /// CA, with the IP address of --peer-listen (as the members list it) in its
    /// subjectAltName; presented as server on --peer-listen and as client to peers.
    #[arg(long, value_name = "CERT:KEY")]
    peer_tls_cert: String,
    /// With --peer-tls: a PEM file with the cluster CA certificate(s); peers' certificates
    /// must chain to one.
    #[arg(long, value_name = "FILE")]
    peer_tls_ca: String,
    /// This server's member name. Distributed mode only. With --members-from: this
    /// server's address as the front lists it (default: the address of --peer-listen).
    #[arg(long = "self", value_name = "NAME")]
    #[serde(rename = "self")]
    self_name: String,
    /// NAME=ADDR:PORT,.. (names are hashed; the address is the member's peer port, or in
    /// central mode the backend). A bare ADDR:PORT is its own name.
    #[arg(long, value_name = "NAME=ADDR:PORT,..")]
    members: String,
    /// Comma-separated weights, one per member (default: all 1). Not with --members-from.
    #[arg(long, value_name = "W,..")]
    weights: String,
    /// Follow the membership the front serves (`l4-ctl daemon`, GET /members) instead of a
    /// fixed list: one http://HOST:PORT/PATH per front, comma-separated or repeated (in the
    /// file an array); the first that answers is followed. Members are then the VIP's reals
    /// that are active or down, named by their addresses, at ADDR:--members-peer-port, with
    /// the front's weights; a real the front reports down is skipped like a member down by
    /// health checks. --members (bare ADDRs allowed) is the list until a front first
    /// answers, else this server alone. Distributed mode only.
    #[arg(long, value_name = "URL,..", value_delimiter = ',')]
    members_from: Vec<String>,
    /// With --members-from: the VIP whose reals are the members, as the front writes it
    /// (10.0.0.100:80/tcp); needed when the front serves more than one VIP.
    #[arg(long, value_name = "ADDR:PORT/PROTO")]
    members_vip: String,
    /// With --members-from: the sidecars' peer port on every real (default: the port of
    /// --peer-listen).
    #[arg(long, value_name = "PORT")]
    members_peer_port: u16,
    /// With --members-from: how often the fronts are asked; each answer is awaited half of
    /// it at most, 1s at most (default 1s, at least 100ms).
    #[arg(long, value_name = "DURATION")]
    members_interval: String,
    /// Hashing scheme (see `route --help`; default ketama).
    #[arg(long, value_name = "NAME")]
    scheme: String,
    /// distributed (serve what this server owns, forward the rest) or central (the
    /// conventional single L7 balancer: forward everything) (default distributed).
    #[arg(long, value_name = "MODE")]
    mode: String,
    /// What is hashed: url (the request target as sent) or host-path (Host plus path)
    /// (default url).
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Embedded-cache mode: fetch misses from this origin, http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    origin: String,
    /// Upstream mode: serve locally through this HTTP server (Squid, Varnish, nginx), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Embedded cache size in bytes (default 268435456, 256 MiB).
    #[arg(long, value_name = "N")]
    cache_bytes: u64,
    /// Largest object the cache stores; larger ones stream through (default 8388608, 8 MiB).
    #[arg(long, value_name = "N")]
    max_object_bytes: u64,
    /// Freshness of cached responses the origin gives none (no s-maxage, max-age or
    /// Expires), in place of the heuristic; never makes a response storable that forbids
    /// storing; `off` (default off).
    #[arg(long, value_name = "DURATION|off")]
    cache_ttl: String,
    /// Keep http and https apart in the cache (and the relay cache): the key starts with the
    /// scheme the client used (https on --listen-tls, http on --listen, from a peer its
    /// X-Forwarded-Proto); routing is unchanged. A PURGE or an invalidating request drops
    /// both schemes' entries. `--cache-key-scheme` alone is true (default false).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    cache_key_scheme: bool,
    /// Prometheus /metrics and /healthz, ADDR:PORT (default: none).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: String,
    /// Tokio worker threads (default: number of CPUs).
    #[arg(long, value_name = "N")]
    threads: usize,
    /// Concurrent client connections; more are answered 503 and closed (default 10000).
    /// The peer listener has its own cap of the same size.
    #[arg(long, value_name = "N")]
    max_connections: usize,
    /// Request head size limit, 431 above (default 16384).
    #[arg(long, value_name = "N")]
    max_head_bytes: usize,
    /// Request header field count limit, 431 above (default 100).
    #[arg(long, value_name = "N")]
    max_headers: usize,
    /// Request target length limit, 414 above (default 8192).
    #[arg(long, value_name = "N")]
    max_uri_bytes: usize,
    /// Request body size limit, 413 above (default 104857600).
    #[arg(long, value_name = "N")]
    max_body_bytes: u64,
    /// Time to receive a whole request head, 408 after (default 10s).
    #[arg(long, value_name = "DURATION")]
    header_timeout: String,
    /// Idle keep-alive connections are closed after this (default 60s).
    #[arg(long, value_name = "DURATION")]
    idle_timeout: String,
    /// Longest wait for a client to send body bytes or accept response bytes (default 30s).
    #[arg(long, value_name = "DURATION")]
    client_timeout: String,
    /// Time a client may spend in all sending a request body (time the upstream takes to
    /// accept it is not counted), 408 after; stops bodies that trickle in (default 60s).
    #[arg(long, value_name = "DURATION")]
    body_timeout: String,
    /// Connecting to a peer, backend, origin or upstream (default 2s).
    #[arg(long, value_name = "DURATION")]
    connect_timeout: String,
    /// Waiting for a response head (interim 1xx responses included) or the next body bytes
    /// from upstream, 504 after (default 30s).
    #[arg(long, value_name = "DURATION")]
    response_timeout: String,
    /// Distributed mode: a GET or HEAD forwarded to a peer that sends no byte for this long
    /// goes to the next candidate. An owner waiting on its origin sends `102 Processing`
    /// every third of it, so only a hung peer trips it; use the same value on every sidecar
    /// (default 1s, at least 300ms).
    #[arg(long, value_name = "DURATION")]
    peer_first_byte_timeout: String,
    /// Active health checks of the members: how often (default 1s; `off` disables).
    #[arg(long, value_name = "DURATION")]
    health_interval: String,
    /// Time a health check may take (default 500ms; at most --health-interval).
    #[arg(long, value_name = "DURATION")]
    health_timeout: String,
    /// Failed checks in a row that take a member out of routing (default 2).
    #[arg(long, value_name = "N")]
    health_fall: u32,
    /// Passed checks in a row that bring it back (default 2).
    #[arg(long, value_name = "N")]
    health_rise: u32,
    /// The path checked, with `GET`; a status below 500 is healthy (default /healthz, which
    /// a sidecar answers on its peer port too).
    #[arg(long, value_name = "PATH")]
    health_path: String,
    /// On SIGTERM, how long in-flight requests may take to finish (default 10s).
    #[arg(long, value_name = "DURATION")]
    drain_timeout: String,
    /// Idle connections kept per peer / backend / upstream (default 64).
    #[arg(long, value_name = "N")]
    pool_max_idle: usize,
    /// Idle pooled connections are closed after this (default 60s).
    #[arg(long, value_name = "DURATION")]
    pool_idle_timeout: String,
    /// Consecutive failures that eject a peer (default 3).
    #[arg(long, value_name = "N")]
    eject_after: u32,
    /// First ejection time; it doubles with each ejection in a row (default 1s).
    #[arg(long, value_name = "DURATION")]
    eject_time: String,
    /// Longest ejection time (default 30s).
    #[arg(long, value_name = "DURATION")]
    eject_max: String,
    /// Hops after which a request is never forwarded again (default 2).
    #[arg(long, value_name = "N")]
    hop_limit: u8,
    /// Client networks that may send `PURGE`, comma-separated CIDRs (10.0.0.0/8, ::1/128),
    /// or none; checked where the request enters, on the client listener (default none).
    #[arg(long, value_name = "CIDR,..|none")]
    purge_allow: String,
    /// Distributed mode: bytes of the relay cache, which keeps copies of the hot objects this
    /// server forwards to their owners and answers them itself; 0 turns it off, auto is a
    /// thirty-second of --cache-bytes (off in central mode) (default auto).
    #[arg(long, value_name = "N|auto")]
    relay_cache_bytes: RelayBytes,
    /// The longest a relay copy answers without asking its owner again: how long it can
    /// outlive a PURGE or an invalidation at the owner (default 5s).
    #[arg(long, value_name = "DURATION")]
    relay_max_age: String,
}

/// Every default of `serve`, written once, as an operator would write the value:
/// [`Settings::validate`] reads a missing setting's value from here through the same parsing
/// as a given one, and a test checks the help text, the README and
/// `deploy/sidecar.example.toml` against this table.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("mode", "distributed"),
    ("key", "url"),
    ("scheme", "ketama"),
    ("cache-bytes", "268435456"),
    ("max-object-bytes", "8388608"),
    ("cache-ttl", "off"),
    ("cache-key-scheme", "false"),
    ("max-connections", "10000"),
    ("max-head-bytes", "16384"),
    ("max-headers", "100"),
    ("max-uri-bytes", "8192"),
    ("max-body-bytes", "104857600"),
    ("header-timeout", "10s"),
    ("idle-timeout", "60s"),
    ("client-timeout", "30s"),
    ("body-timeout", "60s"),
    ("connect-timeout", "2s"),
    ("response-timeout", "30s"),
    ("peer-first-byte-timeout", "1s"),
    ("drain-timeout", "10s"),
    ("pool-max-idle", "64"),
    ("pool-idle-timeout", "60s"),
    ("eject-after", "3"),
    ("eject-time", "1s"),
    ("eject-max", "30s"),
    ("health-interval", "1s"),
    ("health-timeout", "500ms"),
    ("health-fall", "2"),
    ("health-rise", "2"),
    ("health-path", "/healthz"),
    ("members-interval", "1s"),
    ("hop-limit", "2"),
    ("purge-allow", "none"),
    ("relay-cache-bytes", "auto"),
    ("relay-max-age", "5s"),
    ("tls-handshake-timeout", "10s"),
    ("tls-max-handshakes", "1024"),
    ("tls-ticket-lifetime", "1h"),
];

/// The default of `field` as written in [`DEFAULTS`] (empty for a field without one, which
/// then fails its parsing with an error naming the field).
fn default_text(field: &str) -> &'static str {
    DEFAULTS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or("", |(_, text)| text)
}

/// Where requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every server runs a sidecar; each serves what it owns and forwards the rest.
    Distributed,
    /// One balancer in front of the servers; it forwards everything to the owner.
    Central,
}

/// What the scheme hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// The request target exactly as sent (like nginx's `$request_uri`).
    Url,
    /// `Host` plus the path and query (for a reverse proxy of several sites).
    HostPath,
}

/// The members, their addresses, the scheme and who this server is: what SIGHUP reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Scheme name (from the registry).
    pub scheme: String,
    /// Members as hashed.
    pub members: Vec<Member>,
    /// Each member's address, same order.
    pub addrs: Vec<SocketAddr>,
    /// This server's position in `members` (distributed mode).
    pub self_index: Option<usize>,
}

/// One front's membership endpoint, a `members-from` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Front {
    /// The URL as configured (the `url` label of `dl7_l7_membership_source`).
    pub url: String,
    /// Where it is asked (resolved when the configuration is validated).
    pub addr: SocketAddr,
    /// `HOST[:PORT]` as written: the `Host` sent.
    pub authority: String,
    /// The path (and query) asked for.
    pub path: String,
}

/// Following the fronts' membership (`members-from`, [`crate::follow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowSettings {
    /// The fronts, in the order they are asked.
    pub fronts: Vec<Front>,
    /// The VIP whose reals are the members, written as [`canonical_vip`] writes it; `None`:
    /// the front's only VIP.
    pub vip: Option<String>,
    /// The sidecars' peer port on every real.
    pub peer_port: u16,
    /// How often the fronts are asked.
    pub interval: Duration,
    /// This server's address: its member name is this address as text.
    pub self_ip: IpAddr,
}

impl FollowSettings {
    /// How long one front's answer is awaited: half the interval, a second at most, so that
    /// a front that does not answer leaves time to ask the next.
    pub fn timeout(&self) -> Duration {
        (self.interval / 2).min(Duration::from_secs(1))
    }
}

/// A VIP as the front writes it (`10.0.0.100:80/tcp`, `[2001:db8::1]:80/udp`), from any
/// spelling of it (`TCP`, spaces around it); `None` when it is not `ADDR:PORT/tcp|udp`.
///
/// ```
/// assert_eq!(
///     l7_sidecar::config::canonical_vip(" 10.0.0.100:80/TCP").as_deref(),
///     Some("10.0.0.100:80/tcp")
/// );
/// assert_eq!(l7_sidecar::config::canonical_vip("10.0.0.100/tcp"), None);
/// ```
pub fn canonical_vip(text: &str) -> Option<String> {
    let (addr, proto) = text.trim().rsplit_once('/')?;
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return None;
    }
    let addr: SocketAddr = addr.parse().ok()?;
    Some(format!("{addr}/{proto}"))
}

/// How requests this server owns are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Central mode: never locally.
    None,
    /// From the embedded cache, filled from the origin.
    Cache {
        /// The origin's address.
        origin: SocketAddr,
        /// The origin's authority as configured (`HOST:PORT`), the `Host` sent for a request
        /// that has none.
        host: String,
        /// Cache size in bytes.
        bytes: u64,
        /// Largest object stored.
        max_object: u64,
        /// Freshness when the origin gives none (`cache-ttl`), else the heuristic.
        default_ttl: Option<Duration>,
    },
    /// Through a local upstream server.
    Upstream(SocketAddr),
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request head.
    pub header: Duration,
    /// Idle keep-alive client connection.
    pub idle: Duration,
    /// Each client body read and each write to the client.
    pub client: Duration,
    /// A whole request body.
    pub body: Duration,
    /// Upstream connect.
    pub connect: Duration,
    /// Upstream response head and each upstream body read.
    pub response: Duration,
    /// First response byte from a peer (distributed mode).
    pub peer_first_byte: Duration,
    /// Draining on SIGTERM.
    pub drain: Duration,
}

/// Connection pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per destination.
    pub max_idle: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// Active health checks of the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often; `None`: no active checks.
    pub interval: Option<Duration>,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failures in a row that mark a member down.
    pub fall: u32,
    /// Successes in a row that mark it up again.
    pub rise: u32,
    /// The path requested.
    pub path: String,
}

/// Passive outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Consecutive failures that eject.
    pub failures: u32,
    /// First ejection time.
    pub base: Duration,
    /// Longest ejection time.
    pub max: Duration,
}

/// The HTTPS listener (`listen-tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The certificates and ticket keys, loaded and checked (reloaded on SIGHUP).
    pub credentials: Credentials,
    /// Accept to handshake done.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
}

/// Mutual TLS between sidecars (`peer-tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsSettings {
    /// This sidecar's certificate and the cluster CA (reloaded on SIGHUP).
    pub credentials: PeerCredentials,
    /// Accept to handshake done, on `peer-listen`.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once on `peer-listen`.
    pub max_handshakes: usize,
}

/// The request fields that carry a TLS client's facts on (`tls-sni-header`,
/// `tls-protocol-header`), checked: HTTP field names that the sidecar does not read or write
/// for itself, and two different ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsHeaders {
    /// The field for the SNI the client sent.
    pub sni: Option<Box<str>>,
    /// The field for the TLS version agreed.
    pub protocol: Option<Box<str>>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Client-side listener.
    pub listen: SocketAddr,
    /// The HTTPS client-side listener.
    pub tls: Option<TlsSettings>,
    /// The fields that carry the TLS facts of `listen-tls` clients on (also without
    /// `listen-tls`: clients' own fields of those names are removed all the same).
    pub tls_headers: TlsHeaders,
    /// Peer-side listener (distributed mode).
    pub peer_listen: Option<SocketAddr>,
    /// Mutual TLS between sidecars.
    pub peer_tls: Option<PeerTlsSettings>,
    /// Admin listener for /metrics and /healthz.
    pub metrics: Option<SocketAddr>,
    /// Distributed or central.
    pub mode: Mode,
    /// What is hashed.
    pub key: KeyMode,
    /// Tokio worker threads.
    pub threads: usize,
    /// Members and scheme (with `members-from`, the membership until a front answers).
    pub membership: Membership,
    /// Following the fronts' membership (`members-from`); `None`: the members are fixed.
    pub follow: Option<FollowSettings>,
    /// Local serving.
    pub local: Local,
    /// The cache keys (embedded and relay cache) start with the scheme the client used
    /// (`cache-key-scheme`), see [`crate::cache::key`].
    pub cache_key_scheme: bool,
    /// Request head limits.
    pub head: HeadLimits,
    /// Request body limit.
    pub max_body: u64,
    /// Connection cap per listener.
    pub max_connections: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Pools.
    pub pool: PoolSettings,
    /// Outlier detection.
    pub outlier: OutlierSettings,
    /// Active health checks.
    pub health: HealthSettings,
    /// Hop limit.
    pub hop_limit: u8,
    /// Who may send `PURGE`.
    pub purge_allow: Networks,
    /// The relay cache (distributed mode, when `relay-cache-bytes` is above 0).
    pub relay: Option<RelaySettings>,
}

/// `relay-cache-bytes = "auto"` is this share of `cache-bytes`: a 256 MiB cache gets an
/// 8 MiB relay cache. In `bench paper` (32 MiB caches, 8 servers holding a 161 MB catalogue)
/// that keeps the copies within 5 % of what the caches store once.
pub const RELAY_SHARE_OF_CACHE: u64 = 32;

/// `relay-cache-bytes` as given: a size, or `auto` ([`RELAY_SHARE_OF_CACHE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayBytes {
    Auto,
    Bytes(u64),
}

impl std::str::FromStr for RelayBytes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(RelayBytes::Auto),
            _ => text
                .parse()
                .map(RelayBytes::Bytes)
                .map_err(|_| format!("{text:?} is not a number of bytes or auto")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RelayBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            Bytes(u64),
            Text(String),
        }
        match Given::deserialize(d)? {
            Given::Bytes(b) => Ok(RelayBytes::Bytes(b)),
            Given::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The relay cache's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// Its size in bytes.
    pub bytes: u64,
    /// The longest a copy answers without asking its owner again.
    pub max_age: Duration,
}

impl Config {
    /// The fields (other than the membership) in which `other` differs: they need a restart.
    pub fn needs_restart(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("listen", self.listen != other.listen);
        check("peer-listen", self.peer_listen != other.peer_listen);
        let peer_tls_fixed = |c: &Config| {
            c.peer_tls
                .as_ref()
                .map(|t| (t.handshake_timeout, t.max_handshakes))
        };
        check(
            "peer-tls/tls-handshake-timeout/tls-max-handshakes",
            peer_tls_fixed(self) != peer_tls_fixed(other),
        );
        let tls_fixed = |c: &Config| {
            c.tls
                .as_ref()
                .map(|t| (t.listen, t.handshake_timeout, t.max_handshakes))
        };
        check(
            "listen-tls/tls-handshake-timeout/tls-max-handshakes",
            tls_fixed(self) != tls_fixed(other),
        );
        check("metrics", self.metrics != other.metrics);
        check("mode", self.mode != other.mode);
        check("key", self.key != other.key);
        check("threads", self.threads != other.threads);
        check("origin/upstream/cache", self.local != other.local);
        check(
            "cache-key-scheme",
            self.cache_key_scheme != other.cache_key_scheme,
        );
        check(
            "tls-sni-header/tls-protocol-header",
            self.tls_headers != other.tls_headers,
        );
        check(
            "limits",
            self.head != other.head || self.max_body != other.max_body,
        );
        check(
            "max-connections",
            self.max_connections != other.max_connections,
        );
        check("timeouts", self.timeouts != other.timeouts);
        check("pool", self.pool != other.pool);
        check("eject", self.outlier != other.outlier);
        check("health", self.health != other.health);
        check("hop-limit", self.hop_limit != other.hop_limit);
        check("purge-allow", self.purge_allow != other.purge_allow);
        check("relay-cache-bytes", self.relay != other.relay);
        changed
    }
}

impl Settings {
    /// Reads settings from a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// These settings over the file named by `--config`, if any, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let merged = match &self.config {
            Some(path) => self.clone().over(Settings::from_file(path)?),
            None => self.clone(),
        };
        merged.validate()
    }

    /// Checks everything and fills in defaults.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mode = match self.mode.as_deref().unwrap_or(default_text("mode")) {
            "distributed" => Mode::Distributed,
            "central" => Mode::Central,
            other => return Err(invalid("mode", other, "is not distributed or central")),
        };
        let key = match self.key.as_deref().unwrap_or(default_text("key")) {
            "url" => KeyMode::Url,
            "host-path" => KeyMode::HostPath,
            other => return Err(invalid("key", other, "is not url or host-path")),
        };
        let listen = address(
            "listen",
            self.listen.as_deref().ok_or(ConfigError::Missing {
                field: "listen",
                when: "(the client-side ADDR:PORT)",
            })?,
        )?;
        let metrics = self
            .metrics
            .as_deref()
            .map(|a| address("metrics", a))
            .transpose()?;
        let peer_listen = match (mode, self.peer_listen.as_deref()) {
            (Mode::Distributed, Some(a)) => Some(address("peer-listen", a)?),
            (Mode::Distributed, None) => {
                return Err(ConfigError::Missing {
                    field: "peer-listen",
                    when: "in distributed mode (where peers send this server's requests)",
                });
            }
            (Mode::Central, None) => None,
            (Mode::Central, Some(_)) => {
                return Err(ConfigError::NotAllowed {
                    field: "peer-listen",
                    why: "in central mode (the central balancer has no peers)",
                });
            }
        };
        let tls = self.tls()?;
        let peer_tls = self.peer_tls(mode, peer_listen)?;
        let tls_headers = self.tls_headers()?;
        let follow = self.follow(mode, peer_listen)?;
        let membership = self.membership(mode, follow.as_ref())?;
        let local = self.local(mode)?;
        let field = "cache-key-scheme";
        let cache_key_scheme = switch(field, self.cache_key_scheme)?;
        if cache_key_scheme && mode == Mode::Central {
            return Err(ConfigError::NotAllowed {
                field,
                why: "in central mode (it caches nothing)",
            });
        }
        let threads = match self.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) => in_range("threads", n, 1, 1024)?,
        };
        let head = HeadLimits {
            head_bytes: in_range(
                "max-head-bytes",
                number("max-head-bytes", self.max_head_bytes)?,
                256,
                1 << 20,
            )?,
            headers: in_range(
                "max-headers",
                number("max-headers", self.max_headers)?,
                1,
                MAX_HEADERS_CAP,
            )?,
            uri_bytes: in_range(
                "max-uri-bytes",
                number("max-uri-bytes", self.max_uri_bytes)?,
                16,
                1 << 20,
            )?,
        };
        let timeouts = Timeouts {
            header: self.duration("header-timeout", &self.header_timeout)?,
            idle: self.duration("idle-timeout", &self.idle_timeout)?,
            client: self.duration("client-timeout", &self.client_timeout)?,
            body: self.duration("body-timeout", &self.body_timeout)?,
            connect: self.duration("connect-timeout", &self.connect_timeout)?,
            response: self.duration("response-timeout", &self.response_timeout)?,
            peer_first_byte: self.peer_first_byte()?,
            drain: self.duration("drain-timeout", &self.drain_timeout)?,
        };
        let health = self.health()?;
        Ok(Config {
            listen,
            tls,
            tls_headers,
            peer_listen,
            peer_tls,
            metrics,
            mode,
            key,
            threads,
            membership,
            follow,
            local,
            cache_key_scheme,
            head,
            max_body: number("max-body-bytes", self.max_body_bytes)?,
            max_connections: in_range(
                "max-connections",
                number("max-connections", self.max_connections)?,
                1,
                1 << 20,
            )?,
            timeouts,
            pool: PoolSettings {
                max_idle: in_range(
                    "pool-max-idle",
                    number("pool-max-idle", self.pool_max_idle)?,
                    0,
                    1 << 16,
                )?,
                idle_timeout: self.duration("pool-idle-timeout", &self.pool_idle_timeout)?,
                connect_timeout: timeouts.connect,
            },
            outlier: OutlierSettings {
                failures: in_range(
                    "eject-after",
                    number("eject-after", self.eject_after)?,
                    1,
                    1000,
                )?,
                base: self.duration("eject-time", &self.eject_time)?,
                max: self.duration("eject-max", &self.eject_max)?,
            },
            health,
            hop_limit: in_range("hop-limit", number("hop-limit", self.hop_limit)?, 1, 100)?,
            purge_allow: {
                let text = self
                    .purge_allow
                    .as_deref()
                    .unwrap_or(default_text("purge-allow"));
                Networks::parse(text).map_err(|why| invalid("purge-allow", text, why))?
            },
            relay: self.relay(mode)?,
        })
    }

    /// The HTTPS listener: `listen-tls` with its certificates and ticket keys; the other TLS
    /// settings only with it. An expired certificate is served all the same (with a warning),
    /// at start and on reload, as nginx does: refusing it would take the plain listener down
    /// with it at start, and keep the older (also expiring) one on reload.
    fn tls(&self) -> Result<Option<TlsSettings>, ConfigError> {
        let Some(listen) = self.listen_tls.as_deref() else {
            let peer_tls = self.peer_tls == Some(true);
            let only_with = [
                ("tls-cert", self.tls_cert.is_some()),
                (
                    "tls-handshake-timeout",
                    self.tls_handshake_timeout.is_some() && !peer_tls,
                ),
                (
                    "tls-max-handshakes",
                    self.tls_max_handshakes.is_some() && !peer_tls,
                ),
                ("tls-ticket-key", self.tls_ticket_key.is_some()),
                ("tls-ticket-lifetime", self.tls_ticket_lifetime.is_some()),
            ];
            return given_without(&only_with, "without --listen-tls").map(|()| None);
        };
        let listen = address("listen-tls", listen)?;
        let given = self.tls_cert.as_deref().unwrap_or_default();
        if given.is_empty() {
            return Err(ConfigError::Missing {
                field: "tls-cert",
                when: "with --listen-tls (CERT.pem:KEY.pem, at least one)",
            });
        }
        let mut entries = Vec::with_capacity(given.len());
        for entry in given {
            let (cert, key) = cert_and_key("tls-cert", entry)?;
            let loaded = CertEntry::load(cert, key)
                .map_err(|e| invalid("tls-cert", entry, &format!("cannot be loaded: {e}")))?;
            if loaded
                .not_after
                .is_some_and(|t| t < crate::http::date::now())
            {
                log::warn!("--tls-cert {entry}: the certificate has expired");
            }
            entries.push(loaded);
        }
        let (handshake_timeout, max_handshakes) = self.handshake_limits()?;
        Ok(Some(TlsSettings {
            listen,
            credentials: Credentials {
                certs: Certificates::new(entries).ok_or(ConfigError::Missing {
                    field: "tls-cert",
                    when: "with --listen-tls",
                })?,
                ticket_keys: self.ticket_keys()?,
                ticket_lifetime: self.ticket_lifetime()?,
            },
            handshake_timeout,
            max_handshakes,
        }))
    }

    /// `tls-handshake-timeout` and `tls-max-handshakes`, for either TLS listener.
    fn handshake_limits(&self) -> Result<(Duration, usize), ConfigError> {
        let field = "tls-max-handshakes";
        Ok((
            self.duration("tls-handshake-timeout", &self.tls_handshake_timeout)?,
            in_range(field, number(field, self.tls_max_handshakes)?, 1, 1 << 20)?,
        ))
    }

    /// Mutual TLS between sidecars: `peer-tls` with `peer-tls-cert` and `peer-tls-ca`, in
    /// distributed mode. The certificate must be valid now under the CA, as client and as
    /// server, and name the address of `peer-listen` (when that is not 0.0.0.0 or ::): its
    /// peers would refuse it otherwise (unlike an expired certificate on `listen-tls`, which
    /// clients may accept).
    fn peer_tls(
        &self,
        mode: Mode,
        peer_listen: Option<SocketAddr>,
    ) -> Result<Option<PeerTlsSettings>, ConfigError> {
        if self.peer_tls != Some(true) {
            let only_with = [
                ("peer-tls-cert", self.peer_tls_cert.is_some()),
                ("peer-tls-ca", self.peer_tls_ca.is_some()),
            ];
            return given_without(&only_with, "without --peer-tls").map(|()| None);
        }
        if mode == Mode::Central {
            return Err(ConfigError::NotAllowed {
                field: "peer-tls",
                why: "in central mode (the central balancer has no peers)",
            });
        }
        let (Some(entry), Some(ca)) = (self.peer_tls_cert.as_deref(), self.peer_tls_ca.as_deref())
        else {
            return Err(ConfigError::Missing {
                field: if self.peer_tls_cert.is_none() {
                    "peer-tls-cert"
                } else {
                    "peer-tls-ca"
                },
                when: "with --peer-tls",
            });
        };
        let (cert, key) = cert_and_key("peer-tls-cert", entry)?;
        let own = peer_listen
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let credentials = PeerCredentials::load(cert, key, Path::new(ca.trim()), own).map_err(
            |(field, why)| {
                let value = if field == "peer-tls-ca" { ca } else { entry };
                invalid(field, value, &format!("cannot be used: {why}"))
            },
        )?;
        let (handshake_timeout, max_handshakes) = self.handshake_limits()?;
        Ok(Some(PeerTlsSettings {
            credentials,
            handshake_timeout,
            max_handshakes,
        }))
    }

    /// `tls-sni-header` and `tls-protocol-header`. Allowed without `listen-tls`: a sidecar
    /// then only removes clients' fields of those names, which keeps a cluster where some
    /// sidecars terminate no TLS from letting clients forge them.
    fn tls_headers(&self) -> Result<TlsHeaders, ConfigError> {
        let sni = header_name("tls-sni-header", self.tls_sni_header.as_deref())?;
        let protocol = header_name("tls-protocol-header", self.tls_protocol_header.as_deref())?;
        if let (Some(a), Some(b)) = (&sni, &protocol)
            && crate::http::fields::same_name(a.as_bytes(), b.as_bytes())
        {
            return Err(invalid(
                "tls-protocol-header",
                b,
                "is the field of --tls-sni-header",
            ));
        }
        Ok(TlsHeaders { sni, protocol })
    }

    /// The `tls-ticket-key` files, read; their names distinct.
    fn ticket_keys(&self) -> Result<Vec<TicketKey>, ConfigError> {
        let field = "tls-ticket-key";
        let mut keys: Vec<TicketKey> = Vec::new();
        for entry in self.tls_ticket_key.as_deref().unwrap_or_default() {
            let key = TicketKey::load(Path::new(entry.trim()))
                .map_err(|e| invalid(field, entry, &format!("cannot be used: {e}")))?;
            if let Some(twin) = keys.iter().find(|k| k.name == key.name) {
                return Err(invalid(
                    field,
                    entry,
                    &format!(
                        "has the key name {} (bytes 0..16) of {} already",
                        key.name_hex(),
                        twin.path.display()
                    ),
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// `tls-ticket-lifetime`: a duration, or whole hours up to 24h.
    fn ticket_lifetime(&self) -> Result<Duration, ConfigError> {
        let field = "tls-ticket-lifetime";
        let text = self
            .tls_ticket_lifetime
            .as_deref()
            .unwrap_or(default_text(field));
        text.trim()
            .strip_suffix('h')
            .and_then(|hours| hours.parse::<u64>().ok())
            .filter(|hours| (1..=24).contains(hours))
            .map(|hours| Duration::from_secs(hours * 3600))
            .or_else(|| parse_duration(text))
            .ok_or_else(|| {
                invalid(
                    field,
                    text,
                    "is not a duration like 30m, 1h or 24h (at most 24h)",
                )
            })
    }

    /// The relay cache: distributed mode only, off at 0 bytes.
    fn relay(&self, mode: Mode) -> Result<Option<RelaySettings>, ConfigError> {
        let given = match self.relay_cache_bytes {
            Some(given) => given,
            None => default_text("relay-cache-bytes")
                .parse()
                .map_err(|why: String| invalid("relay-cache-bytes", "auto", &why))?,
        };
        let bytes = match (given, mode) {
            (RelayBytes::Bytes(b), _) => b,
            (RelayBytes::Auto, Mode::Central) => 0,
            (RelayBytes::Auto, Mode::Distributed) => {
                number("cache-bytes", self.cache_bytes)? / RELAY_SHARE_OF_CACHE
            }
        };
        let max_age = self.duration("relay-max-age", &self.relay_max_age)?;
        match (bytes, mode) {
            (0, _) => Ok(None),
            (_, Mode::Central) => Err(ConfigError::NotAllowed {
                field: "relay-cache-bytes",
                why: "in central mode (it keeps copies of what peers own)",
            }),
            (_, Mode::Distributed) if max_age.is_zero() => Err(invalid(
                "relay-max-age",
                "0s",
                "is zero: a copy could never answer",
            )),
            (_, Mode::Distributed) => Ok(Some(RelaySettings { bytes, max_age })),
        }
    }

    /// `members-from` and the settings that go with it; `None` without it.
    fn follow(
        &self,
        mode: Mode,
        peer_listen: Option<SocketAddr>,
    ) -> Result<Option<FollowSettings>, ConfigError> {
        let Some(urls) = &self.members_from else {
            let only_with = [
                ("members-vip", self.members_vip.is_some()),
                ("members-peer-port", self.members_peer_port.is_some()),
                ("members-interval", self.members_interval.is_some()),
            ];
            return given_without(&only_with, "without --members-from").map(|()| None);
        };
        let Some(peer_listen) = peer_listen.filter(|_| mode == Mode::Distributed) else {
            return Err(ConfigError::NotAllowed {
                field: "members-from",
                why: "in central mode (list the backends in --members)",
            });
        };
        if self.weights.is_some() {
            return Err(ConfigError::NotAllowed {
                field: "weights",
                why: "with --members-from (the front gives the weights)",
            });
        }
        if urls.is_empty() {
            return Err(invalid(
                "members-from",
                "",
                "is empty (one http://HOST:PORT/PATH per front)",
            ));
        }
        let fronts = urls
            .iter()
            .map(|url| front(url))
            .collect::<Result<Vec<_>, _>>()?;
        let vip = self
            .members_vip
            .as_deref()
            .map(|v| {
                canonical_vip(v).ok_or_else(|| {
                    invalid(
                        "members-vip",
                        v,
                        "is not a VIP as the front writes it (ADDR:PORT/tcp or ADDR:PORT/udp)",
                    )
                })
            })
            .transpose()?;
        let peer_port = match self.members_peer_port {
            Some(0) => return Err(invalid("members-peer-port", "0", "is not a port")),
            Some(port) => port,
            None => peer_listen.port(),
        };
        let field = "members-interval";
        let interval = self.duration(field, &self.members_interval)?;
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                field,
                self.members_interval
                    .as_deref()
                    .unwrap_or(default_text(field)),
                "is shorter than 100ms",
            ));
        }
        let self_ip = match self.self_name.as_deref() {
            Some(me) => me.trim().parse().map_err(|_| {
                invalid(
                    "self",
                    me,
                    "is not an IP address (with --members-from, members are named by their \
                     addresses as the front lists them)",
                )
            })?,
            None if peer_listen.ip().is_unspecified() => {
                return Err(ConfigError::Missing {
                    field: "self",
                    when: "with --members-from when --peer-listen is 0.0.0.0 or :: (this \
                           server's address as the front lists it)",
                });
            }
            None => peer_listen.ip(),
        };
        Ok(Some(FollowSettings {
            fronts,
            vip,
            peer_port,
            interval,
            self_ip,
        }))
    }

    /// The membership at start: `members`, or with `members-from` and no `members` this
    /// server alone (until a front answers).
    fn membership(
        &self,
        mode: Mode,
        follow: Option<&FollowSettings>,
    ) -> Result<Membership, ConfigError> {
        let mut names = Vec::new();
        let mut addrs = Vec::new();
        match (self.members.as_deref(), follow) {
            (None, None) => {
                return Err(ConfigError::Missing {
                    field: "members",
                    when: "(NAME=ADDR:PORT,..)",
                });
            }
            (None, Some(f)) => {
                names.push(f.self_ip.to_string());
                addrs.push(SocketAddr::new(f.self_ip, f.peer_port));
            }
            (Some(list), _) => {
                for entry in list.split(',') {
                    // With members-from, a bare ADDR is the real as the front names it.
                    if let (Some(f), Ok(ip)) = (follow, entry.trim().parse::<IpAddr>()) {
                        names.push(ip.to_string());
                        addrs.push(SocketAddr::new(ip, f.peer_port));
                        continue;
                    }
                    let (name, addr) = members::split_entry(entry);
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                        return Err(invalid(
                            "members",
                            entry,
                            "needs a name of visible ASCII characters (NAME=ADDR:PORT)",
                        ));
                    }
                    names.push(name.to_owned());
                    addrs.push(address("members", addr)?);
                }
            }
        }
        let members = members::with_weights(names, self.weights.as_deref())?;
        let scheme = self
            .scheme
            .clone()
            .unwrap_or_else(|| default_text("scheme").to_owned());
        let info =
            scheme::lookup(&scheme).map_err(|e| invalid("scheme", &scheme, &e.to_string()))?;
        info.build(&members).map_err(ConfigError::Scheme)?;
        let me = match follow {
            Some(f) => Some(f.self_ip.to_string()),
            None => self.self_name.clone(),
        };
        let self_index = match (mode, me) {
            (Mode::Distributed, None) => {
                return Err(ConfigError::Missing {
                    field: "self",
                    when: "in distributed mode (this server's member name)",
                });
            }
            (Mode::Distributed, Some(me)) => Some(
                members
                    .iter()
                    .position(|m| m.name == me)
                    .ok_or_else(|| match follow {
                        Some(_) => invalid(
                            "self",
                            &me,
                            "is not one of --members (with --members-from, members are named \
                             by their addresses: list them as ADDR or ADDR=ADDR:PORT)",
                        ),
                        None => invalid("self", &me, "is not one of --members"),
                    })?,
            ),
            (Mode::Central, None) => None,
            (Mode::Central, Some(_)) => {
                return Err(ConfigError::NotAllowed {
                    field: "self",
                    why: "in central mode (the central balancer is not a member)",
                });
            }
        };
        Ok(Membership {
            scheme,
            members,
            addrs,
            self_index,
        })
    }

    fn local(&self, mode: Mode) -> Result<Local, ConfigError> {
        let origin = self.origin.as_deref();
        let upstream = self.upstream.as_deref();
        match (mode, origin, upstream) {
            (Mode::Central, None, None) => Ok(Local::None),
            (Mode::Central, Some(_), _) => Err(ConfigError::NotAllowed {
                field: "origin",
                why: "in central mode (it never serves locally)",
            }),
            (Mode::Central, None, Some(_)) => Err(ConfigError::NotAllowed {
                field: "upstream",
                why: "in central mode (it never serves locally)",
            }),
            (Mode::Distributed, Some(_), Some(_)) => Err(ConfigError::NotAllowed {
                field: "upstream",
                why: "together with --origin (choose the embedded cache or an upstream)",
            }),
            (Mode::Distributed, None, None) => Err(ConfigError::Missing {
                field: "origin",
                when: "or --upstream in distributed mode (how owned requests are served)",
            }),
            (Mode::Distributed, None, Some(u)) => Ok(Local::Upstream(address("upstream", u)?)),
            (Mode::Distributed, Some(o), None) => {
                let authority = o
                    .strip_prefix("http://")
                    .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
                    .filter(|a| !a.is_empty() && !a.contains('/'))
                    .ok_or_else(|| invalid("origin", o, "is not http://HOST:PORT"))?;
                let with_port = with_default_port(authority);
                let bytes = number("cache-bytes", self.cache_bytes)?;
                let max_object = number("max-object-bytes", self.max_object_bytes)?;
                if max_object > bytes {
                    return Err(invalid(
                        "max-object-bytes",
                        &max_object.to_string(),
                        "is larger than --cache-bytes",
                    ));
                }
                Ok(Local::Cache {
                    origin: address("origin", &with_port)
                        .map_err(|_| invalid("origin", o, "does not resolve to an address"))?,
                    host: with_port,
                    bytes,
                    max_object,
                    default_ttl: match self
                        .cache_ttl
                        .as_deref()
                        .unwrap_or(default_text("cache-ttl"))
                    {
                        "off" => None,
                        _ => Some(self.duration("cache-ttl", &self.cache_ttl)?),
                    },
                })
            }
        }
    }

    /// At least 300 ms: owners beat at a third of it, and a waiting peer takes a beat every
    /// 100 ms at most before it calls interim responses a flood.
    fn peer_first_byte(&self) -> Result<Duration, ConfigError> {
        let field = "peer-first-byte-timeout";
        let value = &self.peer_first_byte_timeout;
        let timeout = self.duration(field, value)?;
        if timeout < Duration::from_millis(300) {
            return Err(invalid(
                field,
                value.as_deref().unwrap_or(default_text(field)),
                "is shorter than 300ms",
            ));
        }
        Ok(timeout)
    }

    fn health(&self) -> Result<HealthSettings, ConfigError> {
        let interval = match self.health_interval.as_deref() {
            Some("off") => None,
            _ => Some(self.duration("health-interval", &self.health_interval)?),
        };
        let timeout = self.duration("health-timeout", &self.health_timeout)?;
        if let Some(interval) = interval
            && timeout > interval
        {
            return Err(invalid(
                "health-timeout",
                self.health_timeout
                    .as_deref()
                    .unwrap_or(default_text("health-timeout")),
                "is longer than --health-interval",
            ));
        }
        let path = self
            .health_path
            .clone()
            .unwrap_or_else(|| default_text("health-path").to_owned());
        if !path.starts_with('/')
            || !path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'%')
        {
            return Err(invalid(
                "health-path",
                &path,
                "is not an absolute path of visible ASCII characters",
            ));
        }
        Ok(HealthSettings {
            interval,
            timeout,
            fall: in_range(
                "health-fall",
                number("health-fall", self.health_fall)?,
                1,
                100,
            )?,
            rise: in_range(
                "health-rise",
                number("health-rise", self.health_rise)?,
                1,
                100,
            )?,
            path,
        })
    }

    /// The duration given for `field`, else its default.
    fn duration(
        &self,
        field: &'static str,
        value: &Option<String>,
    ) -> Result<Duration, ConfigError> {
        let v = value.as_deref().unwrap_or(default_text(field));
        parse_duration(v).ok_or_else(|| {
            invalid(
                field,
                v,
                "is not a duration like 500ms, 10s or 2m (at most 1h)",
            )
        })
    }
}

/// The number given for `field`, else its default.
fn number<T: std::str::FromStr>(field: &'static str, value: Option<T>) -> Result<T, ConfigError> {
    match value {
        Some(v) => Ok(v),
        None => {
            let text = default_text(field);
            text.parse()
                .map_err(|_| invalid(field, text, "is not a number (the default)"))
        }
    }
}

/// A field name given for `field` (`tls-sni-header`, `tls-protocol-header`): an HTTP token
/// (RFC 9110 5.1) that is not a field the sidecar reads or writes itself, also when `_` is
/// read as `-` (CGI-style back ends do): `Host`, `Via`, `X-Forwarded-For`,
/// `X-Forwarded-Proto`, framing, hop-by-hop and caching fields, dl7's hop field,
/// `Surrogate-Capability`.
fn header_name(field: &'static str, given: Option<&str>) -> Result<Option<Box<str>>, ConfigError> {
    use crate::http::fields::{self, Kind};
    let Some(name) = given else {
        return Ok(None);
    };
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(invalid(
            field,
            name,
            "is not a header field name (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    let dashed = name.replace('_', "-");
    if fields::classify(dashed.as_bytes()) != Kind::Other
        || fields::same_name(name.as_bytes(), b"Surrogate-Capability")
    {
        return Err(invalid(
            field,
            name,
            "is a field the sidecar reads or writes itself",
        ));
    }
    Ok(Some(name.into()))
}

/// The switch given for `field`, else its default.
fn switch(field: &'static str, value: Option<bool>) -> Result<bool, ConfigError> {
    match value {
        Some(v) => Ok(v),
        None => {
            let text = default_text(field);
            text.parse()
                .map_err(|_| invalid(field, text, "is not true or false (the default)"))
        }
    }
}

/// A list of IP networks (CIDR prefixes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// `none`, or comma-separated `ADDR/BITS` (a bare address is one host).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.trim() == "none" {
            return Ok(Networks::default());
        }
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| "is not none or a list of CIDRs like 10.0.0.0/8,::1/128")?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or("has a prefix length beyond the address's bits")?,
            };
            nets.push((addr, bits));
        }
        Ok(Networks(nets))
    }

    /// True when `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

/// The first of `fields` (name, given) that was given, as the error that it cannot be used
/// `why` (the setting it needs is absent).
/// `authority` of an `http://` URL with its port, 80 when it names none.
fn with_default_port(authority: &str) -> String {
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    }
}

/// The two files of a `CERT.pem:KEY.pem` entry of `field`.
fn cert_and_key<'a>(
    field: &'static str,
    entry: &'a str,
) -> Result<(&'a Path, &'a Path), ConfigError> {
    entry
        .split_once(':')
        .map(|(c, k)| (c.trim(), k.trim()))
        .filter(|(c, k)| !c.is_empty() && !k.is_empty())
        .map(|(c, k)| (Path::new(c), Path::new(k)))
        .ok_or_else(|| invalid(field, entry, "is not CERT.pem:KEY.pem (two file names)"))
}

fn given_without(fields: &[(&'static str, bool)], why: &'static str) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, given)| *given) {
        Some(&(field, _)) => Err(ConfigError::NotAllowed { field, why }),
        None => Ok(()),
    }
}

fn invalid(field: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &'static str,
    v: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if v < min || v > max {
        return Err(invalid(
            field,
            &v.to_string(),
            &format!("is not between {min} and {max}"),
        ));
    }
    Ok(v)
}

/// `ADDR:PORT`, or `HOST:PORT` resolved now (the first address).
fn address(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Ok(a) = value.parse() {
        return Ok(a);
    }
    match value.to_socket_addrs() {
        Ok(mut found) => found
            .next()
            .ok_or_else(|| invalid(field, value, "resolves to no address")),
        Err(e) => Err(invalid(field, value, &format!("is not ADDR:PORT ({e})"))),
    }
}

/// A `members-from` URL: `http://HOST[:PORT]/PATH` (port 80 when none), the host resolved
/// now.
fn front(url: &str) -> Result<Front, ConfigError> {
    let url = url.trim();
    let bad = |why: &str| invalid("members-from", url, why);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not http://HOST:PORT/PATH"))?;
    let (authority, path) = rest
        .find('/')
        .map(|at| rest.split_at(at))
        .ok_or_else(|| bad("has no path (http://HOST:PORT/PATH, e.g. /members)"))?;
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("is not http://HOST:PORT/PATH"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(bad("has a path that is not visible ASCII without #"));
    }
    let with_port = with_default_port(authority);
    let addr =
        address("members-from", &with_port).map_err(|_| bad("does not resolve to an address"))?;
    Ok(Front {
        url: url.to_owned(),
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// `500ms`, `10s`, `2m`, or a bare number of seconds; positive, at most an hour.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (d > Duration::ZERO && d <= Duration::from_secs(3600)).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &str) -> Settings {
        toml::from_str(pairs).unwrap()
    }

    const CENTRAL: &str =
        "listen = \"127.0.0.1:1\"\nmode = \"central\"\nmembers = \"127.0.0.1:2,b=127.0.0.1:3\"\n";

    #[test]
    fn the_relay_cache_is_a_share_of_the_cache_by_default_and_only_for_distributed_mode() {
        let distributed = "listen = \"127.0.0.1:1\"\npeer-listen = \"127.0.0.1:4\"\nself = \"a\"\n\
                           members = \"a=127.0.0.1:2,b=127.0.0.1:3\"\norigin = \"http://127.0.0.1:5\"\n";
        let relay_bytes = |text: &str| settings(text).validate().unwrap().relay.map(|r| r.bytes);
        // auto: a thirty-second of cache-bytes (256 MiB by default).
        assert_eq!(relay_bytes(distributed), Some(8 << 20));
        let sized = format!("{distributed}cache-bytes = 32000000\n");
        assert_eq!(relay_bytes(&sized), Some(1_000_000));
        let auto = format!("{distributed}relay-cache-bytes = \"auto\"\n");
        assert_eq!(relay_bytes(&auto), Some(8 << 20));
        let off = format!("{distributed}relay-cache-bytes = 0\n");
        assert_eq!(relay_bytes(&off), None);
        assert_eq!(relay_bytes(CENTRAL), None, "auto is off in central mode");
        let on = settings(&format!("{distributed}relay-cache-bytes = 1000000\n"))
            .validate()
            .unwrap();
        assert_eq!(
            on.relay,
            Some(RelaySettings {
                bytes: 1_000_000,
                max_age: Duration::from_secs(5)
            })
        );
        let err = |text: &str| settings(text).validate().unwrap_err().to_string();
        let zero = format!("{distributed}relay-cache-bytes = 1000\nrelay-max-age = \"0s\"\n");
        assert!(err(&zero).contains("--relay-max-age"), "{}", err(&zero));
        let bogus = format!("{distributed}relay-cache-bytes = \"lots\"\n");
        let parsed: Result<Settings, _> = toml::from_str(&bogus);
        let why = parsed.unwrap_err().to_string();
        assert!(why.contains("not a number of bytes or auto"), "{why}");
        let central = format!("{CENTRAL}relay-cache-bytes = 1000\n");
        assert!(
            err(&central).contains("--relay-cache-bytes"),
            "{}",
            err(&central)
        );
    }

    #[test]
    fn central_needs_neither_self_nor_peer_listen() {
        let c = settings(CENTRAL).validate().unwrap();
        assert_eq!(c.membership.members[0].name, "127.0.0.1:2");
        assert_eq!(c.membership.addrs[1], "127.0.0.1:3".parse().unwrap());
        assert_eq!(c.local, Local::None);
        assert_eq!(c.membership.self_index, None);
    }

    #[test]
    fn distributed_needs_self_peer_listen_and_a_local_server() {
        let base = "listen = \"127.0.0.1:1\"\nmembers = \"a=127.0.0.1:2,b=127.0.0.1:3\"\n";
        let err = |extra: &str| {
            settings(&format!("{base}{extra}"))
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("--peer-listen is required"));
        assert!(err("peer-listen = \"127.0.0.1:4\"\n").contains("--self is required"));
        assert!(err("peer-listen = \"127.0.0.1:4\"\nself = \"c\"\n").contains("--self: \"c\""));
        assert!(
            err("peer-listen = \"127.0.0.1:4\"\nself = \"a\"\n").contains("--origin is required")
        );
        assert!(
            err("peer-listen = \"127.0.0.1:4\"\nself = \"a\"\norigin = \"https://x\"\n")
                .contains("--origin: \"https://x\"")
        );
        let ok = settings(&format!(
            "{base}peer-listen = \"127.0.0.1:4\"\nself = \"b\"\norigin = \"http://127.0.0.1:9/\"\n"
        ))
        .validate()
        .unwrap();
        assert_eq!(ok.membership.self_index, Some(1));
        assert!(matches!(ok.local, Local::Cache { origin, .. } if origin.port() == 9));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let err = |extra: &str| {
            settings(&format!("{CENTRAL}{extra}"))
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("scheme = \"nope\"\n").split(':').next(),
            Some("--scheme")
        );
        assert!(err("weights = \"1\"\n").contains("--weights"));
        assert!(err("threads = 0\n").starts_with("--threads: \"0\""));
        assert!(err("header-timeout = \"5 days\"\n").starts_with("--header-timeout: \"5 days\""));
        assert!(
            err("peer-first-byte-timeout = \"100ms\"\n")
                .starts_with("--peer-first-byte-timeout: \"100ms\" is shorter than 300ms")
        );
        assert!(err("health-timeout = \"2s\"\n").starts_with("--health-timeout: \"2s\""));
        assert!(err("health-path = \"healthz\"\n").starts_with("--health-path: \"healthz\""));
        assert!(err("self = \"a\"\n").contains("--self cannot be used in central mode"));
        assert!(err("origin = \"http://a:1\"\n").contains("--origin cannot"));
        assert!(toml::from_str::<Settings>("listn = \"x\"").is_err());
    }

    #[test]
    fn defaults_come_from_the_table() {
        let mut names: Vec<&str> = DEFAULTS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DEFAULTS.len(), "a setting has two defaults");
        let c = settings(CENTRAL).validate().unwrap();
        assert_eq!(c.mode, Mode::Central);
        assert_eq!(c.key, KeyMode::Url);
        assert_eq!(c.membership.scheme, "ketama");
        assert_eq!(c.head, HeadLimits::default());
        assert_eq!(c.max_body, 100 << 20);
        assert_eq!(c.timeouts.header, Duration::from_secs(10));
        assert_eq!(c.timeouts.peer_first_byte, Duration::from_secs(1));
        assert_eq!(c.health.timeout, Duration::from_millis(500));
        assert_eq!(c.health.path, "/healthz");
        assert_eq!(
            (c.pool.max_idle, c.outlier.failures, c.hop_limit),
            (64, 3, 2)
        );
    }

    const FOLLOWER: &str = "listen = \"127.0.0.1:1\"\npeer-listen = \"127.0.0.7:8081\"\n\
                            origin = \"http://127.0.0.1:9\"\n\
                            members-from = [\"http://127.0.0.1:9400/members\", \"http://[::1]/m?x\"]\n";

    #[test]
    fn members_from_alone_starts_with_this_server_only() {
        let c = settings(FOLLOWER).validate().unwrap();
        let f = c.follow.expect("following");
        let urls: Vec<(&str, String, &str)> = f
            .fronts
            .iter()
            .map(|f| (f.authority.as_str(), f.addr.to_string(), f.path.as_str()))
            .collect();
        assert_eq!(
            urls,
            [
                ("127.0.0.1:9400", "127.0.0.1:9400".to_owned(), "/members"),
                ("[::1]", "[::1]:80".to_owned(), "/m?x")
            ]
        );
        assert_eq!(f.fronts[0].url, "http://127.0.0.1:9400/members");
        assert_eq!((f.vip.as_deref(), f.peer_port), (None, 8081));
        assert_eq!(f.interval, Duration::from_secs(1));
        assert_eq!(f.timeout(), Duration::from_millis(500));
        assert_eq!(f.self_ip, "127.0.0.7".parse::<IpAddr>().unwrap());
        let m = c.membership;
        assert_eq!(m.members, [Member::new("127.0.0.7", 1)]);
        assert_eq!(m.addrs, ["127.0.0.7:8081".parse().unwrap()]);
        assert_eq!(m.self_index, Some(0));
    }

    #[test]
    fn members_from_with_members_and_its_own_settings() {
        let c = settings(&format!(
            "{FOLLOWER}members = \"127.0.0.5, 127.0.0.7, b=127.0.0.8:99\"\n\
             members-vip = \"10.0.0.100:80/TCP\"\nmembers-peer-port = 7000\n\
             members-interval = \"250ms\"\nscheme = \"maglev\"\n"
        ))
        .validate()
        .unwrap();
        let f = c.follow.expect("following");
        assert_eq!(f.vip.as_deref(), Some("10.0.0.100:80/tcp"));
        assert_eq!(f.peer_port, 7000);
        assert_eq!(f.timeout(), Duration::from_millis(125));
        let names: Vec<&str> = c
            .membership
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["127.0.0.5", "127.0.0.7", "b"]);
        let addrs: Vec<String> = c.membership.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["127.0.0.5:7000", "127.0.0.7:7000", "127.0.0.8:99"]);
        assert_eq!(c.membership.self_index, Some(1));
        assert_eq!(c.membership.scheme, "maglev");
        // An unspecified peer-listen address needs self, which must be an address.
        let any = FOLLOWER.replace("127.0.0.7:8081", "0.0.0.0:8081");
        let c = settings(&format!("{any}self = \"127.0.0.9\"\n"))
            .validate()
            .unwrap();
        assert_eq!(c.membership.members[0].name, "127.0.0.9");
        assert_eq!(c.membership.addrs[0].to_string(), "127.0.0.9:8081");
        // Static members stay as they were.
        let c = settings(CENTRAL).validate().unwrap();
        assert_eq!(c.follow, None);
    }

    #[test]
    fn members_from_errors_name_the_field_and_value() {
        let err = |text: &str| settings(text).validate().unwrap_err().to_string();
        let with = |extra: &str| err(&format!("{FOLLOWER}{extra}"));
        let urls = |list: &str| {
            err(&FOLLOWER.replace(
                "[\"http://127.0.0.1:9400/members\", \"http://[::1]/m?x\"]",
                list,
            ))
        };
        assert_eq!(
            urls("[\"https://127.0.0.1:9400/members\"]"),
            "--members-from: \"https://127.0.0.1:9400/members\" is not http://HOST:PORT/PATH"
        );
        assert!(
            urls("[\"http://127.0.0.1:9400\"]")
                .starts_with("--members-from: \"http://127.0.0.1:9400\" has no path"),
            "{}",
            urls("[\"http://127.0.0.1:9400\"]")
        );
        assert!(
            urls("[\"http://nowhere.invalid:9400/members\"]").starts_with(
                "--members-from: \"http://nowhere.invalid:9400/members\" does not resolve"
            )
        );
        assert!(urls("[\"http://u@127.0.0.1/m\"]").starts_with("--members-from: \"http://u@"));
        assert!(urls("[\"http://127.0.0.1/a b\"]").starts_with("--members-from: "));
        assert!(urls("[]").starts_with("--members-from: \"\" is empty"));
        assert!(
            toml::from_str::<Settings>("members-from = 7").is_err(),
            "not a list of URLs"
        );
        assert_eq!(
            with("weights = \"1\"\n"),
            "--weights cannot be used with --members-from (the front gives the weights)"
        );
        assert!(
            with("members-vip = \"10.0.0.100:80\"\n")
                .starts_with("--members-vip: \"10.0.0.100:80\" is not a VIP")
        );
        assert!(
            with("members-interval = \"50ms\"\n")
                .starts_with("--members-interval: \"50ms\" is shorter than 100ms")
        );
        assert!(with("members-interval = \"soon\"\n").starts_with("--members-interval: \"soon\""));
        assert!(with("members-peer-port = 0\n").starts_with("--members-peer-port: \"0\""));
        assert!(
            with("self = \"s1\"\n").starts_with("--self: \"s1\" is not an IP address"),
            "{}",
            with("self = \"s1\"\n")
        );
        assert!(
            with("members = \"s1=127.0.0.7:8081\"\n")
                .starts_with("--self: \"127.0.0.7\" is not one of --members (with --members-from")
        );
        let any = FOLLOWER.replace("127.0.0.7:8081", "[::]:8081");
        assert!(err(&any).starts_with("--self is required with --members-from"));
        let central = format!("{CENTRAL}members-from = [\"http://127.0.0.1:9400/members\"]\n");
        assert!(err(&central).starts_with("--members-from cannot be used in central mode"));
        for (field, line) in [
            ("members-vip", "members-vip = \"10.0.0.100:80/tcp\"\n"),
            ("members-peer-port", "members-peer-port = 8081\n"),
            ("members-interval", "members-interval = \"2s\"\n"),
        ] {
            assert_eq!(
                err(&format!("{CENTRAL}{line}")),
                format!("--{field} cannot be used without --members-from")
            );
        }
    }

    #[test]
    fn members_from_flags_are_comma_separated_or_repeated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let parsed = Serve::try_parse_from([
            "serve",
            "--members-from",
            "http://127.0.0.1:1/a,http://127.0.0.1:2/b",
            "--members-from",
            "http://127.0.0.1:3/c",
        ])
        .unwrap();
        assert_eq!(
            parsed.settings.members_from.unwrap(),
            [
                "http://127.0.0.1:1/a",
                "http://127.0.0.1:2/b",
                "http://127.0.0.1:3/c"
            ]
        );
    }

    #[test]
    fn cache_key_scheme_is_a_switch_in_the_file_and_on_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let distributed = "listen = \"127.0.0.1:1\"\npeer-listen = \"127.0.0.1:4\"\nself = \"a\"\n\
                           members = \"a=127.0.0.1:2\"\norigin = \"http://127.0.0.1:5\"\n";
        let on = |text: &str| settings(text).validate().unwrap().cache_key_scheme;
        assert!(!on(distributed), "off by default");
        assert!(on(&format!("{distributed}cache-key-scheme = true\n")));
        assert!(!on(&format!("{distributed}cache-key-scheme = false\n")));
        let flags = |args: &[&str]| {
            let mut all = vec!["serve"];
            all.extend_from_slice(args);
            Serve::try_parse_from(all).map(|s| s.settings.cache_key_scheme)
        };
        assert_eq!(flags(&["--cache-key-scheme"]).unwrap(), Some(true));
        assert_eq!(flags(&["--cache-key-scheme=false"]).unwrap(), Some(false));
        assert_eq!(flags(&["--cache-key-scheme", "true"]).unwrap(), Some(true));
        assert_eq!(flags(&[]).unwrap(), None);
        assert!(flags(&["--cache-key-scheme=yes"]).is_err());
        // The flag overrides the file, both ways.
        let file = settings(&format!("{distributed}cache-key-scheme = true\n"));
        let off = Settings {
            cache_key_scheme: Some(false),
            ..Settings::default()
        };
        assert!(!off.over(file.clone()).validate().unwrap().cache_key_scheme);
        let with = file.validate().unwrap();
        let without = settings(distributed).validate().unwrap();
        assert_eq!(with.needs_restart(&without), ["cache-key-scheme"]);
        assert!(toml::from_str::<Settings>("cache-key-scheme = \"yes\"").is_err());
        let err = settings(&format!("{CENTRAL}cache-key-scheme = true\n"))
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--cache-key-scheme cannot be used in central mode (it caches nothing)"
        );
        assert!(
            !settings(&format!("{CENTRAL}cache-key-scheme = false\n"))
                .validate()
                .unwrap()
                .cache_key_scheme
        );
    }

    #[test]
    fn tls_fact_headers_are_field_names_the_sidecar_leaves_alone() {
        let with = |extra: &str| settings(&format!("{CENTRAL}{extra}")).validate();
        let c = with("tls-sni-header = \"X-TLS-SNI\"\ntls-protocol-header = \"X-TLS-Protocol\"\n")
            .unwrap();
        assert_eq!(c.tls_headers.sni.as_deref(), Some("X-TLS-SNI"));
        assert_eq!(c.tls_headers.protocol.as_deref(), Some("X-TLS-Protocol"));
        assert_eq!(
            settings(CENTRAL).validate().unwrap().tls_headers,
            TlsHeaders::default()
        );
        // Without listen-tls they only remove clients' fields: allowed.
        assert!(c.tls.is_none());
        assert_eq!(
            c.needs_restart(&settings(CENTRAL).validate().unwrap()),
            ["tls-sni-header/tls-protocol-header"]
        );
        let err = |extra: &str| with(extra).unwrap_err().to_string();
        assert_eq!(
            err("tls-sni-header = \"X TLS\"\n"),
            "--tls-sni-header: \"X TLS\" is not a header field name (letters, digits and \
             !#$%&'*+-.^_`|~)"
        );
        assert!(err("tls-sni-header = \"\"\n").starts_with("--tls-sni-header: \"\" is not"));
        assert!(err("tls-sni-header = \"X-SNI:\"\n").starts_with("--tls-sni-header: \"X-SNI:\""));
        for managed in [
            "Host",
            "via",
            "X-Forwarded-For",
            "X_Forwarded_For",
            "x-forwarded-proto",
            "X_FORWARDED_PROTO",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "X-Dl7-Hop",
            "Cache-Control",
            "Surrogate-Capability",
        ] {
            for field in ["tls-sni-header", "tls-protocol-header"] {
                assert_eq!(
                    err(&format!("{field} = \"{managed}\"\n")),
                    format!(
                        "--{field}: \"{managed}\" is a field the sidecar reads or writes itself"
                    )
                );
            }
        }
        assert_eq!(
            err("tls-sni-header = \"X-TLS\"\ntls-protocol-header = \"x_tls\"\n"),
            "--tls-protocol-header: \"x_tls\" is the field of --tls-sni-header"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = settings(CENTRAL);
        let flags = Settings {
            listen: Some("127.0.0.1:7".into()),
            ..Settings::default()
        };
        assert_eq!(flags.over(file).validate().unwrap().listen.port(), 7);
    }

    #[test]
    fn purge_networks() {
        let n = Networks::parse("10.0.0.0/8, 192.0.2.7, ::1/128").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(n.contains(ip("10.200.1.2")) && n.contains(ip("192.0.2.7")));
        assert!(n.contains(ip("::1")) && n.contains(ip("::ffff:10.0.0.1")));
        assert!(!n.contains(ip("11.0.0.1")) && !n.contains(ip("192.0.2.8")));
        assert!(!Networks::parse("none").unwrap().contains(ip("127.0.0.1")));
        assert!(
            Networks::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
        for bad in ["", "10.0.0.0/33", "::1/129", "localhost", "10.0.0.0/8,"] {
            assert!(Networks::parse(bad).is_err(), "{bad}");
        }
    }

    /// A self-signed certificate for `name` and its key in `dir`: `CERT:KEY`.
    fn cert_pair(dir: &Path, name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        format!("{}:{}", c.display(), k.display())
    }

    #[test]
    fn ticket_keys_and_lifetime_are_checked_and_reload_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = cert_pair(dir.path(), "a.test");
        let key = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        };
        let (k1, k2, twin) = (key("1.key", &[1; 80]), key("2.key", &[2; 80]), {
            let mut same_name = [1u8; 80];
            same_name[40] = 9;
            key("twin.key", &same_name)
        });
        let short = key("short.key", &[1; 79]);
        let with = |extra: &str| {
            settings(&format!(
                "{CENTRAL}listen-tls = \"127.0.0.1:6\"\ntls-cert = [\"{a}\"]\n{extra}"
            ))
            .validate()
        };
        let c = with(&format!("tls-ticket-key = [\"{k2}\", \"{k1}\"]\n")).unwrap();
        let credentials = &c.tls.as_ref().unwrap().credentials;
        assert_eq!(credentials.ticket_keys.len(), 2);
        assert_eq!(credentials.ticket_keys[0].name, [2; 16]);
        assert_eq!(credentials.ticket_lifetime, Duration::from_secs(3600));
        let plain = with("").unwrap();
        assert!(
            plain
                .tls
                .as_ref()
                .unwrap()
                .credentials
                .ticket_keys
                .is_empty()
        );
        assert!(c.needs_restart(&plain).is_empty(), "ticket keys reload");
        let later = with("tls-ticket-lifetime = \"24h\"\n").unwrap();
        assert_eq!(
            later.tls.as_ref().unwrap().credentials.ticket_lifetime,
            Duration::from_secs(86_400)
        );
        assert!(later.needs_restart(&plain).is_empty());
        assert_eq!(
            with("tls-ticket-lifetime = \"90s\"\n")
                .unwrap()
                .tls
                .unwrap()
                .credentials
                .ticket_lifetime,
            Duration::from_secs(90)
        );

        let err = |extra: &str| with(extra).unwrap_err().to_string();
        let e = err(&format!("tls-ticket-key = [\"{short}\"]\n"));
        assert!(
            e.starts_with(&format!("--tls-ticket-key: \"{short}\" cannot be used: "))
                && e.contains("holds 79 bytes, not 80"),
            "{e}"
        );
        let missing = dir.path().join("missing.key").display().to_string();
        let e = err(&format!("tls-ticket-key = [\"{missing}\"]\n"));
        assert!(e.contains("cannot read"), "{e}");
        let e = err(&format!("tls-ticket-key = [\"{k1}\", \"{twin}\"]\n"));
        assert!(
            e.starts_with(&format!(
                "--tls-ticket-key: \"{twin}\" has the key name 0101"
            )),
            "{e}"
        );
        for bad in ["25h", "0h", "2d", "x"] {
            let e = err(&format!("tls-ticket-lifetime = \"{bad}\"\n"));
            assert!(
                e.starts_with(&format!("--tls-ticket-lifetime: \"{bad}\"")),
                "{e}"
            );
        }
        let e = settings(&format!("{CENTRAL}tls-ticket-key = [\"{k1}\"]\n"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tls-ticket-key cannot be used without --listen-tls"),
            "{e}"
        );
    }

    #[test]
    fn tls_settings_load_the_certificates_and_name_field_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            cert_pair(dir.path(), "a.test"),
            cert_pair(dir.path(), "b.test"),
        );
        let with = |extra: &str| settings(&format!("{CENTRAL}{extra}")).validate();
        let c = with(&format!(
            "listen-tls = \"127.0.0.1:6\"\ntls-cert = [\"{a}\", \"{b}\"]\n"
        ))
        .unwrap();
        let tls = c.tls.clone().expect("TLS on");
        assert_eq!(tls.listen, "127.0.0.1:6".parse().unwrap());
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(tls.max_handshakes, 1024);
        let names: Vec<&[String]> = tls
            .credentials
            .certs
            .entries()
            .iter()
            .map(|e| &e.names[..])
            .collect();
        assert_eq!(names, [["a.test".to_owned()], ["b.test".to_owned()]]);
        assert_eq!(settings(CENTRAL).validate().unwrap().tls, None);
        let other = with(&format!(
            "listen-tls = \"127.0.0.1:6\"\ntls-cert = [\"{a}\"]\ntls-max-handshakes = 8\n"
        ))
        .unwrap();
        assert!(
            c.needs_restart(&other)
                .iter()
                .any(|f| f.starts_with("listen-tls"))
        );

        let err = |extra: &str| with(extra).unwrap_err().to_string();
        assert!(err("listen-tls = \"127.0.0.1:6\"\n").starts_with("--tls-cert is required"));
        assert!(
            err(&format!("tls-cert = [\"{a}\"]\n"))
                .starts_with("--tls-cert cannot be used without --listen-tls")
        );
        assert!(
            err("tls-handshake-timeout = \"1s\"\n").starts_with("--tls-handshake-timeout cannot")
        );
        let listen = "listen-tls = \"127.0.0.1:6\"\n";
        let e = err(&format!("{listen}tls-cert = [\"nocolon\"]\n"));
        assert!(
            e.starts_with("--tls-cert: \"nocolon\" is not CERT.pem:KEY.pem"),
            "{e}"
        );
        let missing = format!(
            "{}/missing.pem:{}/missing.key",
            dir.path().display(),
            dir.path().display()
        );
        let e = err(&format!("{listen}tls-cert = [\"{missing}\"]\n"));
        assert!(
            e.starts_with(&format!(
                "--tls-cert: \"{missing}\" cannot be loaded: cannot read"
            )),
            "{e}"
        );
        let (a_cert, _) = a.split_once(':').unwrap();
        let (_, b_key) = b.split_once(':').unwrap();
        let e = err(&format!("{listen}tls-cert = [\"{a_cert}:{b_key}\"]\n"));
        assert!(e.contains("does not match the certificate"), "{e}");
        let e = err(&format!("{listen}tls-cert = [\"{b_key}:{b_key}\"]\n"));
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = err(&format!(
            "{listen}tls-cert = [\"{a}\"]\ntls-max-handshakes = 0\n"
        ));
        assert!(e.starts_with("--tls-max-handshakes: \"0\""), "{e}");
        let e = err(&format!(
            "{listen}tls-cert = [\"{a}\"]\ntls-handshake-timeout = \"x\"\n"
        ));
        assert!(e.starts_with("--tls-handshake-timeout: \"x\""), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "0s", "1h", "-1s", "1.5s", "61m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
