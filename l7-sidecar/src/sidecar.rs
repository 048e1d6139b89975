//! `Sidecar`: one running sidecar, shared by every connection, the admin endpoint and the
//! background tasks: the configuration it started with, the current routing table (swapped
//! whole on SIGHUP, or when the front's membership changes with `members-from`), the TLS
//! configuration of `listen-tls` (its certificates and ticket keys also swapped on SIGHUP)
//! and of `peer-tls` (both ways, also swapped on SIGHUP),
//! local serving, the metrics and the draining flag. The listeners, signals and the drain itself
//! are [`crate::server`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::{Config, Membership};
use crate::follow::{Follower, Routed, Target};
use crate::health;
use crate::http::canned;
use crate::local::{LocalServer, Relay};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::router::Routing;
use crate::scheme::BuildError;
use crate::tls::Terminator;
use crate::tls::peer::PeerTls;

/// A running sidecar: what every connection, the admin endpoint and the background tasks
/// share.
#[derive(Debug)]
pub struct Sidecar {
    /// The configuration at start.
    pub config: Config,
    /// The current routing table.
    pub routing: ArcSwap<Routing>,
    /// Local serving (distributed mode).
    pub local: Option<LocalServer>,
    /// The relay cache (distributed mode, `relay-cache-bytes` above 0).
    pub relay: Option<Relay>,
    /// Metrics.
    pub metrics: Metrics,
    /// Following the front's membership (`members-from`; idle without it).
    pub follower: Follower,
    /// The TLS configuration of `listen-tls` (none without it).
    pub tls: Option<Arc<Terminator>>,
    /// Mutual TLS with peers (`peer-tls`; none without it): `peer-listen`'s handshakes and
    /// every member's pool.
    pub peer_tls: Option<Arc<PeerTls>>,
    draining: Arc<AtomicBool>,
}

impl Sidecar {
    /// The sidecar for `config`: its routing table (a pool per member), local serving,
    /// `tls`, built from `config.tls`, and `peer_tls`, built from `config.peer_tls`.
    pub fn new(
        config: Config,
        metrics: Metrics,
        tls: Option<Arc<Terminator>>,
        peer_tls: Option<Arc<PeerTls>>,
    ) -> Result<Self, BuildError> {
        let routing = Routing::build(&config.membership, None, |name, addr| {
            Pool::member(&config, &metrics, peer_tls.as_ref(), name, addr)
        })?;
        let local = LocalServer::new(&config.local, &config, &metrics);
        let max_object = match config.local {
            crate::config::Local::Cache { max_object, .. } => max_object,
            _ => u64::MAX,
        };
        let relay = config.relay.map(|r| Relay::new(&r, max_object));
        let follower = Follower::new(&config, &metrics);
        metrics.members.set(routing.pools().len() as i64);
        Ok(Self {
            config,
            routing: ArcSwap::from_pointee(routing),
            local,
            relay,
            metrics,
            follower,
            tls,
            peer_tls,
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts draining (SIGTERM): responses close their connections from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once SIGTERM was received.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The flag behind [`draining`](Self::draining), for connections to watch.
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Writes the answer to a health check (`200 ok`, or `503 draining` once SIGTERM was
    /// received, so that checkers take the server out before it stops), without its body
    /// for `HEAD`, and returns its status.
    pub fn health(&self, out: &mut bytes::BytesMut, close: bool, head_only: bool) -> u16 {
        let (status, body): (u16, &[u8]) = if self.draining() {
            (503, b"draining\n")
        } else {
            (200, b"ok\n")
        };
        canned::head(out, status, "text/plain", body.len(), close);
        if !head_only {
            out.extend_from_slice(body);
        }
        status
    }

    /// Every pool: the members', then the origin's or upstream's.
    pub fn for_each_pool(&self, mut f: impl FnMut(&Pool)) {
        for pool in self.routing.load().pools() {
            f(pool);
        }
        if let Some(local) = &self.local {
            f(local.pool());
        }
    }

    /// Brings the gauges that are sampled rather than counted up to date.
    pub fn refresh_gauges(&self) {
        self.for_each_pool(Pool::reap);
        if let Some(age) = self.follower.age() {
            self.metrics.membership.age.set(age.as_secs_f64());
        }
        if let Some(cache) = self.local.as_ref().and_then(LocalServer::cache) {
            let (objects, bytes) = cache.usage();
            let m = &self.metrics;
            m.cache_objects.set(objects as i64);
            m.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            m.cache_capacity
                .set(i64::try_from(cache.capacity()).unwrap_or(i64::MAX));
            // A counter follows the cache's own count.
            m.cache_evictions
                .inc_by(cache.evictions().saturating_sub(m.cache_evictions.get()));
        }
        if let Some(relay) = &self.relay {
            let (objects, bytes) = relay.cache.usage();
            let m = &self.metrics;
            m.relay_objects.set(objects as i64);
            m.relay_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            m.relay_capacity
                .set(i64::try_from(relay.cache.capacity()).unwrap_or(i64::MAX));
            m.relay_evictions.inc_by(
                relay
                    .cache
                    .evictions()
                    .saturating_sub(m.relay_evictions.get()),
            );
        }
    }

    /// Logs the certificates and ticket keys of `listen-tls` and the certificate of
    /// `peer-tls` in `config`, and sets the expiry gauges.
    pub fn show_credentials(&self, config: &Config) {
        let mut expiries = Vec::new();
        // What runs: turning either on by a reload needs a restart and is ignored.
        let tls = config
            .tls
            .as_ref()
            .filter(|_| self.tls.is_some())
            .map(|t| &t.credentials);
        let peer = config
            .peer_tls
            .as_ref()
            .filter(|_| self.peer_tls.is_some())
            .map(|t| &t.credentials);
        let entries = tls.map(|c| c.certs.entries()).unwrap_or_default();
        for (entry, role) in entries
            .iter()
            .map(|e| (e, "TLS"))
            .chain(peer.map(|p| (&p.cert, "peer TLS")))
        {
            let name = entry.cert_path.display().to_string();
            if entry.names.is_empty() {
                log::info!("{role} certificate {name}");
            } else {
                log::info!("{role} certificate {name} for {:?}", entry.names);
            }
            if let Some(t) = entry.not_after {
                expiries.push((name, i64::try_from(t).unwrap_or(i64::MAX)));
            }
        }
        self.metrics.tls_certificate_expiries(&expiries);
        if let Some(peer) = peer {
            log::info!(
                "peer TLS: peers' certificates checked against {}",
                peer.ca_path.display()
            );
        }
        let Some(credentials) = tls else { return };
        match credentials.ticket_keys.split_first() {
            Some((sealing, opening)) => log::info!(
                "TLS session tickets: sealed with {} (name {}), opened also with {}",
                sealing.path.display(),
                sealing.name_hex(),
                opening.len()
            ),
            None => log::info!(
                "TLS session tickets: a key of this process (no tls-ticket-key): clients \
                 resume on this server only"
            ),
        }
    }

    /// Applies a re-read configuration: the certificates and ticket keys of `listen-tls`
    /// (for new handshakes), then the membership: its `members`, or with `members-from`
    /// what the front last answered under its settings ([`crate::follow`]).
    pub fn reload(&self, new: Config) {
        let restart = self.config.needs_restart(&new);
        if !restart.is_empty() {
            log::warn!(
                "reload: changes to {} need a restart and are ignored",
                restart.join(", ")
            );
        }
        // Both TLS configurations are built before either is installed: a bad TLS file
        // refuses the reload and changes nothing. (The membership comes after; its own
        // error is logged and counted, the TLS files stay applied.)
        let replaced = match (&self.tls, &new.tls) {
            (Some(terminator), Some(tls)) => match terminator.prepare(&tls.credentials) {
                Ok(config) => Some((terminator, config)),
                Err(e) => {
                    log::error!("reload refused: --tls-cert/--tls-ticket-key: {e}");
                    self.metrics.reload(false);
                    return;
                }
            },
            _ => None,
        };
        let peer_replaced = match (&self.peer_tls, &new.peer_tls) {
            (Some(peer_tls), Some(settings)) => match peer_tls.prepare(&settings.credentials) {
                Ok(configs) => Some((peer_tls, configs)),
                Err(e) => {
                    log::error!("reload refused: --peer-tls-cert/--peer-tls-ca: {e}");
                    self.metrics.reload(false);
                    return;
                }
            },
            _ => None,
        };
        if let Some((terminator, config)) = replaced {
            terminator.install(config);
        }
        if let Some((peer_tls, configs)) = peer_replaced {
            peer_tls.install(configs);
        }
        self.show_credentials(&new);
        let mut follower = self.follower.lock();
        let target = follower.reconfigure(&new, &self.metrics);
        let applied = target.map(|Target { membership, down }| {
            self.apply(&membership, down.as_deref())
                .map(|swapped| (swapped, membership))
        });
        drop(follower);
        match applied {
            None | Some(Ok((false, _))) => {
                log::info!("reload: membership unchanged");
                self.metrics.reload(true);
            }
            Some(Ok((true, membership))) => {
                log::info!(
                    "reload: {} members, scheme {}",
                    membership.members.len(),
                    membership.scheme
                );
                self.metrics.reload(true);
            }
            Some(Err(e)) => {
                log::error!("reload refused: --members: {e}");
                self.metrics.reload(false);
            }
        }
        if new.follow.is_some() {
            self.follower.wake();
        }
    }

    /// Swaps in the routing table for `membership` when it differs from the current one
    /// (pools of members whose name and address stay are kept, with their connections;
    /// requests in flight finish with the table they started with), its members marked down
    /// by the front as `down` says (a flag per member; `None` when not following: none).
    /// True when the table was swapped. The one way the routing table changes: SIGHUP and
    /// the follower both come here, under the follower's lock.
    pub fn apply(
        &self,
        membership: &Membership,
        down: Option<&[bool]>,
    ) -> Result<bool, BuildError> {
        let current = self.routing.load_full();
        let next = if *current.membership() == *membership {
            None
        } else {
            Some(Routing::build(membership, Some(&current), |name, addr| {
                Pool::member(
                    &self.config,
                    &self.metrics,
                    self.peer_tls.as_ref(),
                    name,
                    addr,
                )
            })?)
        };
        // Marked before the swap, so that no request sees a down member available; pools
        // are shared with the old table, which needs the same marks.
        let table = next.as_ref().unwrap_or(&current);
        for (i, pool) in table.pools().iter().enumerate() {
            let is_down = down.and_then(|d| d.get(i)).copied().unwrap_or(false);
            if pool.set_down_by_front(is_down) {
                if is_down {
                    log::warn!(
                        "{} ({}) is down at the front: routing skips it",
                        pool.name(),
                        pool.addr()
                    );
                } else {
                    log::warn!(
                        "{} ({}) is active at the front again",
                        pool.name(),
                        pool.addr()
                    );
                }
            }
            if down.is_some() {
                self.metrics.membership.front_down(pool.name(), is_down);
            }
        }
        let Some(routing) = next else {
            return Ok(false);
        };
        for gone in current.pools() {
            if !routing.pools().iter().any(|p| p.name() == gone.name()) {
                self.metrics.forget_pool(gone.name());
            }
        }
        self.metrics.members.set(routing.pools().len() as i64);
        self.routing.store(Arc::new(routing));
        Ok(true)
    }

    /// Checks every member other than this server every `health-interval`, until aborted
    /// ([`crate::health`]).
    pub async fn check_members(self: Arc<Self>) {
        let settings = &self.config.health;
        let Some(interval) = settings.interval else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let routing = self.routing.load_full();
            let mut checks = tokio::task::JoinSet::new();
            for (i, pool) in routing.pools().iter().enumerate() {
                if !routing.is_self(i) {
                    let pool = pool.clone();
                    let settings = settings.clone();
                    let tls = self.peer_tls.clone();
                    checks.spawn(async move {
                        let passed = health::check(pool.addr(), &settings, tls.as_deref()).await;
                        (pool, passed)
                    });
                }
            }
            while let Some(done) = checks.join_next().await {
                let Ok((pool, passed)) = done else { continue };
                let metrics = self.metrics.health(pool.name());
                if passed { &metrics.ok } else { &metrics.failed }.inc();
                match pool.health.record(passed, settings) {
                    Some(true) => log::warn!("{} ({}) is up again", pool.name(), pool.addr()),
                    Some(false) => log::warn!(
                        "{} ({}) is down: {} health checks failed in a row",
                        pool.name(),
                        pool.addr(),
                        settings.fall
                    ),
                    None => {}
                }
                metrics.up.set(i64::from(pool.health.is_up()));
            }
        }
    }
}

impl Routed for Sidecar {
    fn follower(&self) -> &Follower {
        &self.follower
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn members(&self) -> usize {
        self.routing.load().membership().members.len()
    }

    fn apply(&self, membership: &Membership, down: Option<&[bool]>) -> Result<bool, BuildError> {
        Sidecar::apply(self, membership, down)
    }
}
