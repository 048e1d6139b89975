//! `serve`: binds the listeners, accepts connections under a cap, and handles the signals.
//!
//! - Each listener (client side, peer side) has its own connection cap: a connection above
//!   it gets a `503` and is closed at once; connections already open are unaffected. The
//!   peer side has its own cap so that a flood of clients cannot starve forwarded requests.
//! - SIGHUP re-reads the configuration (the file named by `--config` plus the flags given at
//!   start) and swaps in the new members and scheme atomically. Requests in flight finish
//!   with the table they started with; pools of members that stayed keep their connections.
//!   Other changed settings are reported as needing a restart and ignored.
//! - SIGTERM (or SIGINT) stops accepting, closes idle keep-alive connections, lets requests
//!   in flight finish (their responses carry `Connection: close`) and returns when all
//!   connections are gone or the drain timeout has passed. `/healthz` answers 503 meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::admin;
use crate::config::{Config, ConfigError};
use crate::connection::{self, Listener};
use crate::health;
use crate::http::canned;
use crate::local::LocalServer;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::router::Routing;
use crate::scheme::BuildError;

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 4096;
/// How often idle pooled connections are checked for expiry.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("--{field} {addr}: {source}")]
    Bind {
        /// The flag naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The scheme refused the members.
    #[error("--members: {0}")]
    Scheme(#[from] BuildError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Reads the configuration again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration at start.
    pub config: Config,
    /// The current routing table.
    pub routing: ArcSwap<Routing>,
    /// Local serving (distributed mode).
    pub local: Option<LocalServer>,
    /// Metrics.
    pub metrics: Metrics,
    draining: Arc<AtomicBool>,
}

impl Shared {
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
    fn for_each_pool(&self, mut f: impl FnMut(&Pool)) {
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
            self.metrics.cache_objects.set(objects as i64);
            self.metrics
                .cache_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Applies the membership of a re-read configuration.
    fn reload(&self, new: Config) {
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
}

/// Binds `addr` with address reuse and a deep backlog.
fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let err = |source| ServeError::Bind {
        field,
        addr,
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

/// Runs the sidecar until SIGTERM/SIGINT and the drain that follows.
pub async fn run(config: Config, reload: Reload) -> Result<(), ServeError> {
    let metrics = Metrics::new()?;
    let routing = Routing::build(&config.membership, None, |name, addr| {
        Pool::configured(&config, &metrics, name, addr)
    })?;
    let local = LocalServer::new(&config.local, &config, &metrics);
    let client = bind("listen", config.listen)?;
    let peer = config
        .peer_listen
        .map(|a| bind("peer-listen", a))
        .transpose()?;
    let admin = config.metrics.map(|a| bind("metrics", a)).transpose()?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;

    let max = config.max_connections;
    let shared = Arc::new(Shared {
        config,
        routing: ArcSwap::from_pointee(routing),
        local,
        metrics,
        draining: Arc::new(AtomicBool::new(false)),
    });
    let (stop, stopped) = watch::channel(false);
    let mut caps = Vec::new();
    let mut accepting = tokio::task::JoinSet::new();
    for (listener, kind) in
        std::iter::once((client, Listener::Client)).chain(peer.map(|p| (p, Listener::Peer)))
    {
        let cap = Arc::new(Semaphore::new(max));
        caps.push(cap.clone());
        accepting.spawn(accept(listener, shared.clone(), kind, cap, stopped.clone()));
    }
    // Dropped (and so stopped) when `run` returns; the admin endpoint keeps answering
    // (`/healthz`: 503) while connections drain.
    let mut background = tokio::task::JoinSet::new();
    if let Some(admin) = admin {
        background.spawn(admin::serve(admin, shared.clone()));
    }
    let pools = shared.clone();
    background.spawn(async move {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            // Woken by the tick, or by any idle pooled connection becoming readable.
            let watch = std::future::poll_fn(|cx| {
                pools.for_each_pool(|pool| pool.watch(cx));
                std::task::Poll::<()>::Pending
            });
            tokio::select! {
                _ = tick.tick() => pools.refresh_gauges(),
                () = watch => {}
            }
        }
    });
    background.spawn(health::run(shared.clone()));

    let reload = Arc::new(reload);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let load = reload.clone();
                match tokio::task::spawn_blocking(move || load()).await {
                    Ok(Ok(new)) => shared.reload(new),
                    Ok(Err(e)) => {
                        log::error!("reload refused: {e}");
                        shared.metrics.reload(false);
                    }
                    Err(e) => log::error!("reload failed: {e}"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    log::info!("draining: no new connections, in-flight requests finish");
    shared.draining.store(true, Ordering::Relaxed);
    // Accept loops end (their listeners close); idle connections see `stop` and close.
    accepting.abort_all();
    let _ = stop.send(true);
    let drained = async {
        for cap in &caps {
            let _ = cap.acquire_many(max as u32).await;
        }
    };
    if tokio::time::timeout(shared.config.timeouts.drain, drained)
        .await
        .is_err()
    {
        log::warn!("drain timeout: closing the connections still open");
    }
    Ok(())
}

/// Accepts connections on one listener until aborted.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    kind: Listener,
    cap: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
) {
    let metrics = shared.metrics.listener(kind.name());
    if let Ok(addr) = listener.local_addr() {
        log::info!("{} listener on {addr}", kind.name());
    }
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("{} listener: accept: {e}", kind.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            metrics.refused.inc();
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        metrics.open.inc();
        tokio::spawn(connection::serve(
            stream,
            addr,
            shared.clone(),
            kind,
            stopped.clone(),
            permit,
            metrics.open.clone(),
        ));
    }
}

/// Answers a connection above the cap with a 503 (if the socket takes it at once) and
/// closes it.
fn refuse(stream: TcpStream) {
    let mut out = bytes::BytesMut::new();
    canned::error(&mut out, 503, true);
    let _ = stream.try_write(&out);
}
