//! `Sidecar`: one running sidecar, shared by every connection, the admin endpoint and the
//! background tasks: the configuration it started with, the current routing table (swapped
//! whole on SIGHUP), local serving, the metrics and the draining flag. The listeners, signals
//! and the drain itself are [`crate::server`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::health;
use crate::http::canned;
use crate::local::{LocalServer, Relay};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::router::Routing;
use crate::scheme::BuildError;

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
    draining: Arc<AtomicBool>,
}

impl Sidecar {
    /// The sidecar for `config`: its routing table (a pool per member) and local serving.
    pub fn new(config: Config, metrics: Metrics) -> Result<Self, BuildError> {
        let routing = Routing::build(&config.membership, None, |name, addr| {
            Pool::configured(&config, &metrics, name, addr)
        })?;
        let local = LocalServer::new(&config.local, &config, &metrics);
        let max_object = match config.local {
            crate::config::Local::Cache { max_object, .. } => max_object,
            _ => u64::MAX,
        };
        let relay = config.relay.map(|r| Relay::new(&r, max_object));
        Ok(Self {
            config,
            routing: ArcSwap::from_pointee(routing),
            local,
            relay,
            metrics,
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

    /// Applies the membership of a re-read configuration.
    pub fn reload(&self, new: Config) {
        let restart = self.config.needs_restart(&new);
        if !restart.is_empty() {
            log::warn!(
                "reload: changes to {} need a restart and are ignored",
                restart.join(", ")
            );
        }
        let current = self.routing.load_full();
        if *current.membership() == new.membership {
            log::info!("reload: membership unchanged");
            self.metrics.reload(true);
            return;
        }
        match Routing::build(&new.membership, Some(&current), |name, addr| {
            Pool::configured(&self.config, &self.metrics, name, addr)
        }) {
            Ok(routing) => {
                for gone in current.pools() {
                    if !routing.pools().iter().any(|p| p.name() == gone.name()) {
                        self.metrics.forget_pool(gone.name());
                    }
                }
                log::info!(
                    "reload: {} members, scheme {}",
                    routing.membership().members.len(),
                    routing.membership().scheme
                );
                self.routing.store(Arc::new(routing));
                self.metrics.reload(true);
            }
            Err(e) => {
                log::error!("reload refused: --members: {e}");
                self.metrics.reload(false);
            }
        }
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
                    checks.spawn(async move {
                        let passed = health::check(pool.addr(), &settings).await;
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
