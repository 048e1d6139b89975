//! Every metric the sidecar exports, in one place (names prefixed `dl7_l7_`, Prometheus
//! conventions). Hot-path updates are plain atomic operations on handles resolved once:
//! per-route histograms at start, per-pool handles when a pool is created, and one lazily
//! created counter per (route, status) pair, so no request looks up a label set.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `dl7_l7_requests_total` | route, status | requests answered; route is `local`, `peer`, `relay` (from the relay cache), `central` or `rejected` (refused before routing) |
//! | `dl7_l7_request_duration_seconds` | route | head received to response sent |
//! | `dl7_l7_cache_hits_total`, `dl7_l7_cache_misses_total` | | embedded cache lookups (a request that waited for another one's fill counts as a hit) |
//! | `dl7_l7_cache_bytes`, `dl7_l7_cache_objects` | | embedded cache contents |
//! | `dl7_l7_cache_capacity_bytes` | | the embedded cache's size (`cache-bytes`) |
//! | `dl7_l7_cache_evictions_total` | | entries evicted to make room for others |
//! | `dl7_l7_cache_answers_total` | status (`304`, `206`, `412`, `416`) | conditional and range requests answered from a stored response without its whole body |
//! | `dl7_l7_origin_fetches_total` | | requests sent to the origin (fills and pass-through) |
//! | `dl7_l7_relay_hits_total`, `dl7_l7_relay_fills_total` | | the relay cache: requests answered from a copy of a peer's object, and copies made (fills from the owner of a hot key) |
//! | `dl7_l7_relay_bytes`, `dl7_l7_relay_objects`, `dl7_l7_relay_evictions_total` | | the relay cache's contents and evictions |
//! | `dl7_l7_relay_capacity_bytes` | | the relay cache's size (`relay-cache-bytes`, 0 when off) |
//! | `dl7_l7_peer_forwards_total`, `dl7_l7_peer_errors_total`, `dl7_l7_peer_ejections_total` | peer | forwarding to a member (peer or central backend) |
//! | `dl7_l7_peer_stalls_total` | peer | forwards whose first response byte did not come within `peer-first-byte-timeout` |
//! | `dl7_l7_peer_up` | peer | 1 while the member passes its active health checks, 0 while it is down |
//! | `dl7_l7_peer_checks_total` | peer, result (`ok`, `fail`) | active health checks of members |
//! | `dl7_l7_pool_connections` | pool, state (`open`, `idle`) | pooled upstream connections |
//! | `dl7_l7_pool_connects_total` | pool | new upstream connections |
//! | `dl7_l7_pool_retired_total` | pool, reason (`unsolicited`, `closed`) | pooled connections dropped because bytes nobody asked for arrived, or the other side closed |
//! | `dl7_l7_client_errors_total` | reason | bad requests and client-side failures |
//! | `dl7_l7_cache_stale_served_total` | reason (`error`, `revalidating`) | stale entries served: the origin failed (`stale-if-error`), or a revalidation in the background was started (`stale-while-revalidate`) |
//! | `dl7_l7_cache_revalidations_total` | result (`not_modified`, `modified`) | stale entries checked with the origin: a 304 refreshed the entry, or a full response replaced it |
//! | `dl7_l7_cache_purges_total` | result (`purged`, `absent`, `refused`) | `PURGE` requests: an entry removed, none there, or a client outside `purge-allow` |
//! | `dl7_l7_connections` | listener (`client`, `client-tls`, `peer`) | open client connections (on `client-tls`: handshake done) |
//! | `dl7_l7_connections_refused_total` | listener | connections refused at the cap |
//! | `dl7_l7_tls_handshakes_total` | result (`ok`, `timeout`, `plain_http`, `bad_client_hello`, `cap`, `error`), protocol (`TLSv1.2`, `TLSv1.3` for `ok`, else `none`) | TLS handshakes on `listen-tls`: done, not done within `tls-handshake-timeout`, plain HTTP sent to the HTTPS port (answered 400), a first record that is no ClientHello, refused above `tls-max-handshakes`, failed (no common version or cipher, bad ALPN, alerts) |
//! | `dl7_l7_tls_resumptions_total` | protocol (`TLSv1.2`, `TLSv1.3`) | handshakes counted `ok` above that resumed a session (a ticket, or a TLS 1.2 session ID) instead of a full handshake |
//! | `dl7_l7_tls_handshake_seconds` | | accept to handshake done, handshakes that succeeded |
//! | `dl7_l7_tls_certificate_expiry_seconds` | name (the certificate file of a `tls-cert` entry or of `peer-tls-cert`) | its certificate's notAfter, Unix time |
//! | `dl7_l7_peer_tls_handshakes_total` | side (`accepted` on `peer-listen`, `connected` to a peer), result (`accepted`: as `dl7_l7_tls_handshakes_total`; `connected`: `ok`, `error`, `timeout`) | mutual TLS handshakes between sidecars (`peer-tls`). `connected`/`error`: this sidecar refused the peer's certificate (or the handshake failed); a peer that refuses this sidecar's certificate counts `accepted`/`error` there, while here the handshake completes first (TLS 1.3 clients finish before the server checks them) and the first request fails. `accepted`/`plain_http` is closed without an answer. Failed handshakes are also logged, once per 10 s |
//! | `dl7_l7_reloads_total` | result | SIGHUP reloads |
//! | `dl7_l7_members` | | members in the routing table (this server included when it is one) |
//!
//! Only while the sidecar follows a front's membership (`members-from`):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `dl7_l7_membership_generation` | | the generation of the membership last applied, as numbered by the front it came from (fronts number theirs independently) |
//! | `dl7_l7_membership_age_seconds` | | seconds since a front last answered with a membership (since following began, until one does) |
//! | `dl7_l7_membership_source` | url | 1 for the front whose membership is followed, 0 for the others |
//! | `dl7_l7_membership_updates_total` | | routing tables swapped in from a front's answer |
//! | `dl7_l7_membership_errors_total` | reason | fronts asked whose answer was not followed: `unreachable` (no connection or no answer in time), `bad_status` (not 200), `bad_answer` (not the front's JSON, over 1 MiB), `no_vip` (not the `members-vip`, or no VIP), `vip_ambiguous` (several VIPs and no `members-vip`), `no_members` (no real active or down), `scheme` (the scheme refused the members) |
//! | `dl7_l7_peer_front_down` | peer | 1 while the front reports the member down (skipped by routing), else 0 |

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a request was answered, for the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Served by this server (cache, origin or local upstream).
    Local,
    /// Forwarded to the owning peer.
    Peer,
    /// Answered from the relay cache (a copy of a peer's object).
    Relay,
    /// Forwarded by the central balancer.
    Central,
    /// Refused before routing (bad request, limits).
    Rejected,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Local,
        Route::Peer,
        Route::Relay,
        Route::Central,
        Route::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Peer => "peer",
            Route::Relay => "relay",
            Route::Central => "central",
            Route::Rejected => "rejected",
        }
    }
}

/// The `reason` labels of `dl7_l7_membership_errors_total`, each exported from the start of
/// following so that the first error is an increase.
pub const MEMBERSHIP_ERRORS: [&str; 7] = [
    "unreachable",
    "bad_status",
    "bad_answer",
    "no_vip",
    "vip_ambiguous",
    "no_members",
    "scheme",
];

/// The status codes a request counter exists for (100 to 599).
const STATUSES: usize = 500;
/// The statuses of `dl7_l7_cache_answers_total`.
const CACHE_ANSWERS: [&str; 4] = ["304", "206", "412", "416"];

/// The sidecar's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests_vec: IntCounterVec,
    requests: Box<[OnceLock<IntCounter>]>,
    durations: Vec<Histogram>,
    /// Cache hits.
    pub cache_hits: IntCounter,
    /// Cache misses.
    pub cache_misses: IntCounter,
    /// Bytes in the cache.
    pub cache_bytes: IntGauge,
    /// Objects in the cache.
    pub cache_objects: IntGauge,
    /// The cache's size.
    pub cache_capacity: IntGauge,
    /// Entries evicted.
    pub cache_evictions: IntCounter,
    /// Answers from stored responses by status: 304, 206, 412, 416.
    cache_answers: [IntCounter; 4],
    /// Requests sent to the origin.
    pub origin_fetches: IntCounter,
    /// Relay cache hits.
    pub relay_hits: IntCounter,
    /// Relay cache fills from owners.
    pub relay_fills: IntCounter,
    /// Bytes in the relay cache.
    pub relay_bytes: IntGauge,
    /// Objects in the relay cache.
    pub relay_objects: IntGauge,
    /// The relay cache's size (`relay-cache-bytes`; 0 when off).
    pub relay_capacity: IntGauge,
    /// Relay cache evictions.
    pub relay_evictions: IntCounter,
    peer_forwards: IntCounterVec,
    peer_errors: IntCounterVec,
    peer_ejections: IntCounterVec,
    peer_stalls: IntCounterVec,
    peer_up: IntGaugeVec,
    peer_checks: IntCounterVec,
    pool_connections: IntGaugeVec,
    pool_connects: IntCounterVec,
    pool_retired: IntCounterVec,
    client_errors: IntCounterVec,
    cache_purges: IntCounterVec,
    cache_revalidations: IntCounterVec,
    /// Stale entries served because the origin failed, and while one revalidates.
    pub stale_served: [IntCounter; 2],
    connections: IntGaugeVec,
    refused: IntCounterVec,
    reloads: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_resumptions: IntCounterVec,
    /// TLS handshakes that succeeded: accept to handshake done.
    pub tls_handshake_seconds: Histogram,
    tls_certificate_expiry: IntGaugeVec,
    peer_tls_handshakes: IntCounterVec,
    /// Members in the routing table.
    pub members: IntGauge,
    /// Following a front's membership.
    pub membership: MembershipMetrics,
}

/// The metrics of following a front's membership (`members-from`): registered, and so
/// exported, only while the sidecar follows one ([`Metrics::following`]), so that alerts
/// about them apply to those sidecars alone.
#[derive(Debug)]
pub struct MembershipMetrics {
    /// The generation of the membership last applied, as numbered by its front.
    pub generation: IntGauge,
    /// Seconds since a front last answered with a membership (set when metrics are
    /// gathered).
    pub age: Gauge,
    /// Routing tables swapped in from a front's answer.
    pub updates: IntCounter,
    source: IntGaugeVec,
    errors: IntCounterVec,
    front_down: IntGaugeVec,
    /// True while registered.
    exported: Mutex<bool>,
}

impl MembershipMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "dl7_l7_membership_errors_total",
                "Fronts asked for the membership whose answer was not followed, by reason.",
            ),
            &["reason"],
        )?;
        for reason in MEMBERSHIP_ERRORS {
            errors.with_label_values(&[reason]);
        }
        Ok(Self {
            generation: IntGauge::new(
                "dl7_l7_membership_generation",
                "The generation of the membership last applied, as numbered by the front it \
                 came from.",
            )?,
            age: Gauge::new(
                "dl7_l7_membership_age_seconds",
                "Seconds since a front last answered with a membership.",
            )?,
            updates: IntCounter::new(
                "dl7_l7_membership_updates_total",
                "Routing tables swapped in from a front's membership.",
            )?,
            source: IntGaugeVec::new(
                Opts::new(
                    "dl7_l7_membership_source",
                    "1 for the front whose membership is followed, 0 for the others.",
                ),
                &["url"],
            )?,
            errors,
            front_down: IntGaugeVec::new(
                Opts::new(
                    "dl7_l7_peer_front_down",
                    "1 while the front reports the member down (routing skips it), else 0.",
                ),
                &["peer"],
            )?,
            exported: Mutex::new(false),
        })
    }

    fn collectors(&self) -> [Box<dyn Collector>; 6] {
        [
            Box::new(self.generation.clone()),
            Box::new(self.age.clone()),
            Box::new(self.updates.clone()),
            Box::new(self.source.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.front_down.clone()),
        ]
    }

    /// Counts a front's answer that was not followed; `reason` is one of
    /// [`MEMBERSHIP_ERRORS`].
    pub fn error(&self, reason: &str) {
        self.errors.with_label_values(&[reason]).inc();
    }

    /// Exports `dl7_l7_membership_source` for exactly `urls`: 1 for `followed`, 0 for the
    /// others.
    pub fn source(&self, urls: &[&str], followed: Option<&str>) {
        for stale in self.source.collect().iter().flat_map(|f| f.get_metric()) {
            if let Some(url) = stale.get_label().first().map(|l| l.value())
                && !urls.contains(&url)
            {
                let _ = self.source.remove_label_values(&[url]);
            }
        }
        for url in urls {
            self.source
                .with_label_values(&[url])
                .set(i64::from(Some(*url) == followed));
        }
    }

    /// Exports whether the front reports the member called `name` down.
    pub fn front_down(&self, name: &str, down: bool) {
        self.front_down
            .with_label_values(&[name])
            .set(i64::from(down));
    }
}

/// The handles of one pool (a member, the origin or the local upstream).
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// New connections.
    pub connects: IntCounter,
    /// Open connections.
    pub open: IntGauge,
    /// Idle connections (set when metrics are gathered).
    pub idle: IntGauge,
    /// Requests forwarded.
    pub forwards: IntCounter,
    /// Failed attempts.
    pub errors: IntCounter,
    /// Ejections by outlier detection.
    pub ejections: IntCounter,
    /// First-byte timeouts.
    pub stalls: IntCounter,
    /// Connections retired because unsolicited bytes arrived.
    pub retired_unsolicited: IntCounter,
    /// Connections retired because the other side closed them.
    pub retired_closed: IntCounter,
}

/// The active health check handles of one member.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    /// 1 up, 0 down.
    pub up: IntGauge,
    /// Checks passed.
    pub ok: IntCounter,
    /// Checks failed.
    pub failed: IntCounter,
}

/// The handles of one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    /// Open connections.
    pub open: IntGauge,
    /// Connections refused at the cap.
    pub refused: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counters =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauges =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let durations_vec = HistogramVec::new(
            HistogramOpts::new(
                "dl7_l7_request_duration_seconds",
                "Time from a complete request head to the end of the response.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(durations_vec.clone()))?;
        let durations = Route::ALL
            .iter()
            .map(|r| durations_vec.get_metric_with_label_values(&[r.label()]))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            requests_vec: counters(
                "dl7_l7_requests_total",
                "Requests answered, by route (local, peer, central, rejected) and status.",
                &["route", "status"],
            )?,
            requests: (0..Route::ALL.len() * STATUSES)
                .map(|_| OnceLock::new())
                .collect(),
            durations,
            cache_hits: counter("dl7_l7_cache_hits_total", "Embedded cache hits.")?,
            cache_misses: counter("dl7_l7_cache_misses_total", "Embedded cache misses.")?,
            cache_bytes: gauge("dl7_l7_cache_bytes", "Bytes held by the embedded cache.")?,
            cache_objects: gauge(
                "dl7_l7_cache_objects",
                "Objects held by the embedded cache.",
            )?,
            cache_capacity: gauge(
                "dl7_l7_cache_capacity_bytes",
                "The embedded cache's size in bytes (cache-bytes).",
            )?,
            cache_evictions: counter(
                "dl7_l7_cache_evictions_total",
                "Entries the embedded cache evicted to make room.",
            )?,
            cache_answers: {
                let answers = counters(
                    "dl7_l7_cache_answers_total",
                    "Conditional and range requests answered from a stored response, by status \
                     (304, 206, 412, 416).",
                    &["status"],
                )?;
                CACHE_ANSWERS.map(|status| answers.with_label_values(&[status]))
            },
            origin_fetches: counter(
                "dl7_l7_origin_fetches_total",
                "Requests sent to the origin.",
            )?,
            relay_hits: counter(
                "dl7_l7_relay_hits_total",
                "Requests answered from the relay cache (copies of peers' hot objects).",
            )?,
            relay_fills: counter(
                "dl7_l7_relay_fills_total",
                "Relay cache fills from the owner of a hot key.",
            )?,
            relay_bytes: gauge("dl7_l7_relay_bytes", "Bytes held by the relay cache.")?,
            relay_objects: gauge("dl7_l7_relay_objects", "Objects held by the relay cache.")?,
            relay_capacity: gauge(
                "dl7_l7_relay_capacity_bytes",
                "The relay cache's size (relay-cache-bytes; 0 when it is off).",
            )?,
            relay_evictions: counter(
                "dl7_l7_relay_evictions_total",
                "Entries the relay cache evicted to make room.",
            )?,
            peer_forwards: counters(
                "dl7_l7_peer_forwards_total",
                "Requests forwarded to a member.",
                &["peer"],
            )?,
            peer_errors: counters(
                "dl7_l7_peer_errors_total",
                "Failed attempts to get a response from a member.",
                &["peer"],
            )?,
            peer_ejections: counters(
                "dl7_l7_peer_ejections_total",
                "Times a member was ejected by outlier detection.",
                &["peer"],
            )?,
            peer_stalls: counters(
                "dl7_l7_peer_stalls_total",
                "Forwards to a member whose first response byte did not arrive in time.",
                &["peer"],
            )?,
            peer_up: gauges(
                "dl7_l7_peer_up",
                "1 while a member passes its active health checks, 0 while it is down.",
                &["peer"],
            )?,
            peer_checks: counters(
                "dl7_l7_peer_checks_total",
                "Active health checks of members, by result (ok, fail).",
                &["peer", "result"],
            )?,
            pool_connections: gauges(
                "dl7_l7_pool_connections",
                "Pooled upstream connections by state (open, idle).",
                &["pool", "state"],
            )?,
            pool_connects: counters(
                "dl7_l7_pool_connects_total",
                "New upstream connections.",
                &["pool"],
            )?,
            pool_retired: counters(
                "dl7_l7_pool_retired_total",
                "Pooled connections dropped because unsolicited bytes arrived or the other \
                 side closed them, by reason (unsolicited, closed).",
                &["pool", "reason"],
            )?,
            client_errors: counters(
                "dl7_l7_client_errors_total",
                "Bad requests and client-side failures, by reason.",
                &["reason"],
            )?,
            stale_served: {
                let stale = counters(
                    "dl7_l7_cache_stale_served_total",
                    "Stale entries served, by reason: the origin failed (error, \
                     stale-if-error) or a background revalidation started (revalidating, \
                     stale-while-revalidate).",
                    &["reason"],
                )?;
                ["error", "revalidating"].map(|reason| stale.with_label_values(&[reason]))
            },
            cache_revalidations: {
                let revalidations = counters(
                    "dl7_l7_cache_revalidations_total",
                    "Stale entries checked with the origin: refreshed by a 304, or replaced.",
                    &["result"],
                )?;
                for result in ["not_modified", "modified"] {
                    revalidations.with_label_values(&[result]);
                }
                revalidations
            },
            cache_purges: {
                let purges = counters(
                    "dl7_l7_cache_purges_total",
                    "PURGE requests: an entry removed, none there, or the client not allowed.",
                    &["result"],
                )?;
                // Every series from the start, so that the first refusal is an increase.
                for result in ["purged", "absent", "refused"] {
                    purges.with_label_values(&[result]);
                }
                purges
            },
            connections: gauges(
                "dl7_l7_connections",
                "Open client connections.",
                &["listener"],
            )?,
            refused: counters(
                "dl7_l7_connections_refused_total",
                "Connections refused because the listener was at its cap.",
                &["listener"],
            )?,
            reloads: counters(
                "dl7_l7_reloads_total",
                "SIGHUP reloads by result.",
                &["result"],
            )?,
            tls_handshakes: counters(
                "dl7_l7_tls_handshakes_total",
                "TLS handshakes on listen-tls by result and protocol version.",
                &["result", "protocol"],
            )?,
            tls_resumptions: counters(
                "dl7_l7_tls_resumptions_total",
                "TLS handshakes on listen-tls that resumed a session, by protocol version.",
                &["protocol"],
            )?,
            tls_handshake_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "dl7_l7_tls_handshake_seconds",
                        "Time from accept to a completed TLS handshake.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            tls_certificate_expiry: gauges(
                "dl7_l7_tls_certificate_expiry_seconds",
                "notAfter of each tls-cert entry's certificate and of peer-tls-cert, Unix time.",
                &["name"],
            )?,
            peer_tls_handshakes: counters(
                "dl7_l7_peer_tls_handshakes_total",
                "Mutual TLS handshakes between sidecars (peer-tls) by side and result.",
                &["side", "result"],
            )?,
            members: gauge(
                "dl7_l7_members",
                "Members in the routing table, this server included when it is one.",
            )?,
            membership: MembershipMetrics::new()?,
            registry,
        })
    }

    /// Counts one answered request.
    pub fn request(&self, route: Route, status: u16, elapsed: Duration) {
        let status = status.clamp(100, 599);
        let slot = route as usize * STATUSES + usize::from(status - 100);
        self.requests[slot]
            .get_or_init(|| {
                let mut n = itoa::Buffer::new();
                self.requests_vec
                    .with_label_values(&[route.label(), n.format(status)])
            })
            .inc();
        self.durations[route as usize].observe(elapsed.as_secs_f64());
    }

    /// Counts a client error.
    pub fn client_error(&self, reason: &str) {
        self.client_errors.with_label_values(&[reason]).inc();
    }

    /// Counts an answer from a stored response with this status (304, 206, 412 or 416; other
    /// statuses are not counted here).
    pub fn cache_answer(&self, status: u16) {
        let mut n = itoa::Buffer::new();
        let status = n.format(status);
        if let Some(i) = CACHE_ANSWERS.iter().position(|s| *s == status) {
            self.cache_answers[i].inc();
        }
    }

    /// Counts a revalidation by its result.
    pub fn revalidation(&self, result: &str) {
        self.cache_revalidations.with_label_values(&[result]).inc();
    }

    /// Counts a `PURGE` by its result.
    pub fn purge(&self, result: &str) {
        self.cache_purges.with_label_values(&[result]).inc();
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The handles of the pool called `name`.
    pub fn pool(&self, name: &str) -> PoolMetrics {
        PoolMetrics {
            connects: self.pool_connects.with_label_values(&[name]),
            open: self.pool_connections.with_label_values(&[name, "open"]),
            idle: self.pool_connections.with_label_values(&[name, "idle"]),
            forwards: self.peer_forwards.with_label_values(&[name]),
            errors: self.peer_errors.with_label_values(&[name]),
            ejections: self.peer_ejections.with_label_values(&[name]),
            stalls: self.peer_stalls.with_label_values(&[name]),
            retired_unsolicited: self.pool_retired.with_label_values(&[name, "unsolicited"]),
            retired_closed: self.pool_retired.with_label_values(&[name, "closed"]),
        }
    }

    /// The active health check handles of the member called `name`.
    pub fn health(&self, name: &str) -> HealthMetrics {
        HealthMetrics {
            up: self.peer_up.with_label_values(&[name]),
            ok: self.peer_checks.with_label_values(&[name, "ok"]),
            failed: self.peer_checks.with_label_values(&[name, "fail"]),
        }
    }

    /// Stops exporting the gauges of a pool that no longer exists.
    pub fn forget_pool(&self, name: &str) {
        for state in ["open", "idle"] {
            let _ = self.pool_connections.remove_label_values(&[name, state]);
        }
        let _ = self.peer_up.remove_label_values(&[name]);
        let _ = self.membership.front_down.remove_label_values(&[name]);
    }

    /// Exports the membership metrics (`members-from` is set) or stops exporting them; the
    /// counters keep their values in between.
    pub fn following(&self, on: bool) {
        let m = &self.membership;
        let mut exported = m.exported.lock().unwrap_or_else(PoisonError::into_inner);
        if *exported == on {
            return;
        }
        for collector in m.collectors() {
            let done = if on {
                self.registry.register(collector)
            } else {
                self.registry.unregister(collector)
            };
            if let Err(e) = done {
                log::error!("metrics: membership metrics: {e}");
            }
        }
        if !on {
            m.source.reset();
            m.front_down.reset();
        }
        *exported = on;
    }

    /// Counts a TLS handshake on `listen-tls` that ended with `result`; `protocol` is the
    /// version agreed (`TLSv1.2`, `TLSv1.3`), `none` when the handshake did not finish.
    pub fn tls_handshake(&self, result: &str, protocol: &str) {
        self.tls_handshakes
            .with_label_values(&[result, protocol])
            .inc();
    }

    /// Counts a TLS handshake that resumed a session, `protocol` as in
    /// [`tls_handshake`](Self::tls_handshake).
    pub fn tls_resumption(&self, protocol: &str) {
        self.tls_resumptions.with_label_values(&[protocol]).inc();
    }

    /// Counts a mutual TLS handshake on `peer-listen` (`side` `accepted`) or with a peer
    /// (`connected`) that ended with `result`.
    pub fn peer_tls_handshake(&self, side: &str, result: &str) {
        self.peer_tls_handshakes
            .with_label_values(&[side, result])
            .inc();
    }

    /// The counters of handshakes with peers (`side` `connected`): `ok`, `error`, `timeout`.
    pub fn peer_tls_connected(&self) -> [IntCounter; 3] {
        ["ok", "error", "timeout"].map(|result| {
            self.peer_tls_handshakes
                .with_label_values(&["connected", result])
        })
    }

    /// Sets the notAfter (Unix time) of the certificates of the `tls-cert` entries, each
    /// `(name, notAfter)`, forgetting those no longer listed (after a reload).
    pub fn tls_certificate_expiries(&self, certificates: &[(String, i64)]) {
        self.tls_certificate_expiry.reset();
        for (name, not_after) in certificates {
            self.tls_certificate_expiry
                .with_label_values(&[name])
                .set(*not_after);
        }
    }

    /// The handles of the listener called `name`.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections.with_label_values(&[name]),
            refused: self.refused.with_label_values(&[name]),
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics; a failure leaves a
        // partial page, which the scraper reports.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text() {
        let m = Metrics::new().unwrap();
        m.request(Route::Peer, 200, Duration::from_millis(3));
        m.request(Route::Peer, 200, Duration::from_millis(3));
        m.request(Route::Rejected, 431, Duration::ZERO);
        m.pool("b").connects.inc();
        m.client_error("bare_lf");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("dl7_l7_requests_total{route=\"peer\",status=\"200\"} 2"));
        assert!(text.contains("dl7_l7_requests_total{route=\"rejected\",status=\"431\"} 1"));
        assert!(text.contains("dl7_l7_pool_connects_total{pool=\"b\"} 1"));
        assert!(text.contains("dl7_l7_client_errors_total{reason=\"bare_lf\"} 1"));
        assert!(
            text.contains("dl7_l7_request_duration_seconds_bucket{route=\"peer\",le=\"0.005\"} 2")
        );
    }
}
