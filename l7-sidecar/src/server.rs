//! `serve`: binds the listeners, accepts connections under a cap, and handles the signals.
//!
//! - Each listener (client side, HTTPS client side, peer side) has its own connection cap
//!   (`max-connections` each): a connection above it gets a `503` and is closed at once (on
//!   the HTTPS listener it is closed without an answer, which would not be TLS); connections
//!   already open are unaffected. The peer side has its own cap so that a flood of clients
//!   cannot starve forwarded requests; the HTTPS side its own so that either kind of client
//!   keeps its share.
//! - On the HTTPS listener (`listen-tls`) each connection first completes its handshake
//!   ([`crate::tls::handshake`]) within `tls-handshake-timeout`, at most
//!   `tls-max-handshakes` at once (beyond, a new connection is closed and counted as
//!   `cap`); then it is served like any client connection. With `peer-tls` the peer
//!   listener does the same with the peer configuration ([`crate::tls::peer`]: mutual TLS,
//!   under its own `tls-max-handshakes`).
//! - SIGHUP re-reads the configuration (the file named by `--config` plus the flags given at
//!   start) and swaps in the new members and scheme atomically, and on `listen-tls` the
//!   certificates and ticket keys, with `peer-tls` the peer certificate and CA (re-read
//!   from their files), for new handshakes; a bad file refuses the whole reload. Requests in flight finish
//!   with the table they started with; pools of members that stayed keep their connections.
//!   Other changed settings are reported as needing a restart and ignored. With
//!   `members-from` the members come from the front ([`crate::follow`], a background task
//!   started here): the reload applies the file's scheme and follower settings to the
//!   front's last answer and asks the fronts again at once.
//! - SIGTERM (or SIGINT) stops accepting, closes idle keep-alive connections, lets requests
//!   in flight finish (their responses carry `Connection: close`) and returns when all
//!   connections are gone or the drain timeout has passed. `/healthz` answers 503 meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::admin;
use crate::config::{Config, ConfigError};
use crate::connection::{self, Listener};
use crate::follow;
use crate::http::canned;
use crate::metrics::Metrics;
use crate::scheme::BuildError;
use crate::sidecar::Sidecar;
use crate::stream::ClientStream;
use crate::tls::handshake::Side;
use crate::tls::peer::PeerTls;
use crate::tls::{Terminator, handshake};

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
    /// The TLS configuration could not be built.
    #[error("--listen-tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer TLS configuration could not be built.
    #[error("--peer-tls: {0}")]
    PeerTls(rustls::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Reads the configuration again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

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
    let max = config.max_connections;
    let terminator = match &config.tls {
        Some(settings) => Some(Arc::new(Terminator::new(&settings.credentials)?)),
        None => None,
    };
    let metrics = Metrics::new()?;
    let peer_tls = match &config.peer_tls {
        Some(settings) => Some(Arc::new(
            PeerTls::new(&settings.credentials, &metrics).map_err(ServeError::PeerTls)?,
        )),
        None => None,
    };
    let sidecar = Arc::new(Sidecar::new(
        config,
        metrics,
        terminator.clone(),
        peer_tls.clone(),
    )?);
    let config = &sidecar.config;
    sidecar.show_credentials(config);
    let client = bind("listen", config.listen)?;
    let https = match (&config.tls, terminator) {
        (Some(settings), Some(terminator)) => {
            let listener = bind("listen-tls", settings.listen)?;
            let handshakes = Handshakes {
                configs: Configs::Clients(terminator),
                timeout: settings.handshake_timeout,
                slots: Arc::new(Semaphore::new(settings.max_handshakes)),
            };
            Some((listener, handshakes))
        }
        _ => None,
    };
    let peer_handshakes = match (&config.peer_tls, peer_tls) {
        (Some(settings), Some(peer_tls)) => Some(Handshakes {
            configs: Configs::Peers(peer_tls),
            timeout: settings.handshake_timeout,
            slots: Arc::new(Semaphore::new(settings.max_handshakes)),
        }),
        _ => None,
    };
    let peer = config
        .peer_listen
        .map(|a| bind("peer-listen", a))
        .transpose()?;
    let admin = config.metrics.map(|a| bind("metrics", a)).transpose()?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;

    let (stop, stopped) = watch::channel(false);
    let mut caps = Vec::new();
    let mut accepting = tokio::task::JoinSet::new();
    let (https, handshakes) = match https {
        Some((listener, handshakes)) => (Some(listener), Some(handshakes)),
        None => (None, None),
    };
    let listeners = std::iter::once((client, Listener::Client))
        .chain(https.map(|l| (l, Listener::ClientTls)))
        .chain(peer.map(|p| (p, Listener::Peer)));
    for (listener, kind) in listeners {
        let cap = Arc::new(Semaphore::new(max));
        caps.push(cap.clone());
        let tls = match kind {
            Listener::Client => None,
            Listener::ClientTls => handshakes.clone(),
            Listener::Peer => peer_handshakes.clone(),
        };
        accepting.spawn(accept(
            listener,
            sidecar.clone(),
            kind,
            cap,
            tls,
            stopped.clone(),
        ));
    }
    // Dropped (and so stopped) when `run` returns; the admin endpoint keeps answering
    // (`/healthz`: 503) while connections drain.
    let mut background = tokio::task::JoinSet::new();
    if let Some(admin) = admin {
        background.spawn(admin::serve(admin, sidecar.clone()));
    }
    let pools = sidecar.clone();
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
    background.spawn(sidecar.clone().check_members());
    background.spawn(follow::run(sidecar.clone()));

    let reload = Arc::new(reload);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let load = reload.clone();
                match tokio::task::spawn_blocking(move || load()).await {
                    Ok(Ok(new)) => sidecar.reload(new),
                    Ok(Err(e)) => {
                        log::error!("reload refused: {e}");
                        sidecar.metrics.reload(false);
                    }
                    Err(e) => log::error!("reload failed: {e}"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    log::info!("draining: no new connections, in-flight requests finish");
    sidecar.start_draining();
    // Accept loops end (their listeners close); idle connections see `stop` and close.
    accepting.abort_all();
    let _ = stop.send(true);
    let drained = async {
        for cap in &caps {
            let _ = cap.acquire_many(max as u32).await;
        }
    };
    if tokio::time::timeout(sidecar.config.timeouts.drain, drained)
        .await
        .is_err()
    {
        log::warn!("drain timeout: closing the connections still open");
    }
    Ok(())
}

/// Where a TLS listener takes the rustls configuration of each handshake from (SIGHUP
/// replaces it).
#[derive(Clone)]
enum Configs {
    /// `listen-tls`.
    Clients(Arc<Terminator>),
    /// `peer-listen` with `peer-tls`.
    Peers(Arc<PeerTls>),
}

impl Configs {
    fn load(&self) -> (Arc<rustls::ServerConfig>, Side<'_>) {
        match self {
            Configs::Clients(t) => (t.config(), Side::Clients),
            Configs::Peers(p) => (p.server_config(), Side::Peers(p)),
        }
    }
}

/// What a TLS listener needs for its handshakes.
#[derive(Clone)]
struct Handshakes {
    /// The rustls configuration, loaded per connection.
    configs: Configs,
    timeout: Duration,
    /// A permit per handshake in progress (`tls-max-handshakes`).
    slots: Arc<Semaphore>,
}

/// Accepts connections on one listener until aborted; with `tls`, each one completes a TLS
/// handshake before it is served.
async fn accept(
    listener: TcpListener,
    sidecar: Arc<Sidecar>,
    kind: Listener,
    cap: Arc<Semaphore>,
    tls: Option<Handshakes>,
    stopped: watch::Receiver<bool>,
) {
    let metrics = sidecar.metrics.listener(kind.name());
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
        let accepted = Instant::now();
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            metrics.refused.inc();
            if tls.is_none() {
                refuse(stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &tls else {
            metrics.open.inc();
            tokio::spawn(connection::serve(
                ClientStream::Plain(stream),
                addr,
                sidecar.clone(),
                kind,
                stopped.clone(),
                permit,
                metrics.open.clone(),
            ));
            continue;
        };
        let Ok(slot) = tls.slots.clone().try_acquire_owned() else {
            match tls.configs {
                Configs::Clients(_) => sidecar.metrics.tls_handshake("cap", "none"),
                Configs::Peers(_) => sidecar.metrics.peer_tls_handshake("accepted", "cap"),
            }
            continue;
        };
        let (configs, timeout) = (tls.configs.clone(), tls.timeout);
        let (sidecar, stopped, open) = (sidecar.clone(), stopped.clone(), metrics.open.clone());
        tokio::spawn(async move {
            let (config, side) = configs.load();
            let shaken =
                handshake::accept(stream, config, accepted, timeout, &sidecar.metrics, side);
            let Some(stream) = shaken.await else {
                return;
            };
            drop(slot);
            open.inc();
            let stream = ClientStream::Tls(Box::new(stream));
            connection::serve(stream, addr, sidecar, kind, stopped, permit, open).await;
        });
    }
}

/// Answers a connection above the cap with a 503 (if the socket takes it at once) and
/// closes it.
fn refuse(stream: TcpStream) {
    let mut out = bytes::BytesMut::new();
    canned::error(&mut out, 503, true);
    let _ = stream.try_write(&out);
}
