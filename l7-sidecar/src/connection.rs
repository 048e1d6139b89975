//! One client connection, top to bottom: read a request head (within the idle and header
//! timeouts and the size limits), route it, answer it, and go on with the next one while the
//! connection may stay open.
//!
//! Requests are answered one at a time in arrival order; pipelined requests simply wait in
//! the read buffer until the previous response has been written, which is what keeps
//! pipelined responses in order. After an error that closes the connection the sidecar stops
//! writing (FIN) but keeps reading and discarding for a moment ("lingering close", as nginx
//! does), so that the error response is not destroyed by a reset caused by unread input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use prometheus::IntGauge;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::cache::{self, key::Scheme};
use crate::client::{ClientIo, Outcome};
use crate::config::{Config, KeyMode, Mode};
use crate::context::Ctx;
use crate::http::request::{self, BodyKind, HeadError, Method, RequestHead};
use crate::http::wire;
use crate::local::{self, LocalServer, Request, Upstream};
use crate::metrics::Route;
use crate::proxy::{self, Failure};
use crate::router::{self, CENTRAL_ATTEMPTS, Failover, PEER_ATTEMPTS, Target};
use crate::sidecar::Sidecar;
use crate::stream::ClientStream;

/// How long, and how many bytes, a closing connection is read and discarded.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// Free space made in the read buffer before reading a head.
const HEAD_READ: usize = 4096;

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Client side (VIP traffic).
    Client,
    /// Client side over TLS (`listen-tls`): the same requests, HTTPS.
    ClientTls,
    /// Peer side: every request on it came from another sidecar.
    Peer,
}

impl Listener {
    /// The name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Client => "client",
            Listener::ClientTls => "client-tls",
            Listener::Peer => "peer",
        }
    }

    /// The `X-Forwarded-Proto` sent on for requests from this listener: the scheme clients
    /// connected with; `None` on the peer listener, whose peers' values are trusted and kept.
    pub fn forwarded_proto(self) -> Option<&'static [u8]> {
        match self {
            Listener::Client => Some(b"http"),
            Listener::ClientTls => Some(b"https"),
            Listener::Peer => None,
        }
    }
}

/// Decrements the open-connections gauge when the connection ends.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Per-connection scratch space, reused by every request on the connection.
#[derive(Default)]
struct Scratch {
    head: RequestHead,
    buf: Vec<u8>,
    key: Vec<u8>,
    order: Vec<usize>,
    local: LocalScratch,
}

/// Scratch space of serving locally or forwarding: the head sent on, and the cache key.
#[derive(Default)]
struct LocalScratch {
    upstream_head: BytesMut,
    cache_key: Vec<u8>,
}

/// Serves one accepted connection until it closes. `permit` holds its place under the
/// listener's connection cap; `open` is the listener's gauge, already incremented.
pub async fn serve(
    stream: ClientStream,
    addr: std::net::SocketAddr,
    sidecar: Arc<Sidecar>,
    listener: Listener,
    mut shutdown: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
    open: IntGauge,
) {
    let _open = Open(open);
    let _permit = permit;
    let config = &sidecar.config;
    let mut io = ClientIo::new(
        stream,
        addr,
        listener.forwarded_proto(),
        sidecar.draining_flag(),
        config.timeouts.client,
        config.max_body,
    );
    let mut s = Scratch::default();
    let mut first = true;
    loop {
        match read_head(&mut io, &mut s.head, config, first, &mut shutdown).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                sidecar.metrics.client_error(e.reason());
                let outcome = io.error(e.status(), true).await;
                sidecar
                    .metrics
                    .request(Route::Rejected, outcome.status, Duration::ZERO);
                linger(&mut io).await;
                return;
            }
        }
        first = false;
        s.buf.clear();
        s.buf.extend_from_slice(&io.rbuf[..s.head.len]);
        io.rbuf.advance(s.head.len);
        let started = Instant::now();
        // A request from a peer (it carries the hop field) is waited for with a first-byte
        // timeout: keep that peer informed while the response head is not ready.
        let heartbeat =
            (config.mode == Mode::Distributed && s.head.hop.is_some() && s.head.minor == 1)
                .then(|| config.timeouts.peer_first_byte / 3);
        io.start(&s.head, heartbeat);
        let outcome = if listener == Listener::Peer
            && s.head.hop.is_none()
            && s.head.method != Method::Other
            && s.head.body == BodyKind::None
            && s.head.target(&s.buf) == config.health.path.as_bytes()
        {
            // A peer's health check (forwarded requests always carry the hop field),
            // counted by the checker, not as a request.
            health(&mut io, &sidecar).await
        } else {
            let (route, outcome) = answer(&mut io, &mut s, &sidecar, listener).await;
            sidecar
                .metrics
                .request(route, outcome.status, started.elapsed());
            outcome
        };
        if outcome.close {
            if outcome.status >= 400 {
                linger(&mut io).await;
            }
            return;
        }
        if sidecar.draining() {
            return;
        }
    }
}

/// Reads the next request head into `head` (its bytes stay at the start of `io.rbuf`).
/// `Ok(false)`: the connection ends quietly (closed by the client, idle timeout, nothing
/// sent on a new connection, or draining while idle).
async fn read_head(
    io: &mut ClientIo,
    head: &mut RequestHead,
    config: &Config,
    first: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, HeadError> {
    // A new connection has the header timeout from the start; a kept-alive one may idle.
    let mut deadline = first.then(|| tokio::time::Instant::now() + config.timeouts.header);
    loop {
        if !io.rbuf.is_empty() {
            if request::parse(&io.rbuf, &config.head, head)? {
                return Ok(true);
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.timeouts.header);
        }
        let read = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(tokio::time::Instant::now());
                wire::read_up_to(&mut io.stream, &mut io.rbuf, HEAD_READ, left).await
            }
            None => {
                if *shutdown.borrow() {
                    return Ok(false);
                }
                tokio::select! {
                    read = wire::read_up_to(&mut io.stream, &mut io.rbuf, HEAD_READ, config.timeouts.idle) => read,
                    _ = shutdown.changed() => return Ok(false),
                }
            }
        };
        match read {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !io.rbuf.is_empty() => {
                return Err(HeadError::Timeout);
            }
            Err(_) => return Ok(false),
        }
    }
}

/// Routes and answers the request in `s.head`.
async fn answer(
    io: &mut ClientIo,
    s: &mut Scratch,
    sidecar: &Sidecar,
    listener: Listener,
) -> (Route, Outcome) {
    let config = &sidecar.config;
    if let BodyKind::Length(n) = s.head.body
        && n > config.max_body
    {
        sidecar.metrics.client_error("body_too_large");
        return (Route::Rejected, io.error(413, true).await);
    }
    let hops = s.head.hop.unwrap_or(0);
    // PURGE is checked where it enters, on the client listener; peers carry it on to the
    // owner like any request.
    if listener != Listener::Peer && s.head.method_bytes(&s.buf) == b"PURGE" {
        let client = std::str::from_utf8(&io.addr)
            .ok()
            .and_then(|a| a.parse().ok());
        if !client.is_some_and(|ip| config.purge_allow.contains(ip)) {
            sidecar.metrics.purge("refused");
            return (Route::Rejected, io.error(405, false).await);
        }
    }
    let key = router::key(config.key, &s.head, &s.buf, &mut s.key);
    // The routing key until the request is served locally (see `serve_local`).
    let req = Request {
        head: &s.head,
        buf: &s.buf,
        key,
        hops,
    };
    let routing = sidecar.routing.load_full();
    let cx = Ctx {
        config,
        metrics: &sidecar.metrics,
        routing: &routing,
    };
    let local = sidecar.local.as_ref();
    let owner = routing.scheme().pick(key);
    let (attempts, local_last, route) = match config.mode {
        Mode::Central if hops >= config.hop_limit => {
            sidecar.metrics.client_error("hop_limit");
            return (Route::Rejected, io.error(508, false).await);
        }
        Mode::Central => (CENTRAL_ATTEMPTS, false, Route::Central),
        Mode::Distributed => {
            let from_peer = listener == Listener::Peer || hops > 0;
            if from_peer || routing.is_self(owner) {
                // Load-aware schemes count this server's own requests too.
                let own = routing.is_self(owner);
                if own {
                    routing.scheme().begin(owner);
                }
                let outcome = serve_local(&cx, local, req, io, &mut s.local).await;
                if own {
                    routing.scheme().end(owner);
                }
                return (Route::Local, outcome);
            }
            if let Some(relay) = &sidecar.relay {
                // The relay cache's key is the cache key, as at the owner.
                let key = cache_key(config, req, io, &mut s.local.cache_key);
                let relayed = Request { key, ..req };
                let owner_pool = &routing.pools()[owner];
                let scratch = &mut s.local.upstream_head;
                let outcome =
                    local::serve_relayed(&cx, relay, owner_pool, relayed, io, scratch).await;
                if let Some(outcome) = outcome {
                    return (Route::Relay, outcome);
                }
            }
            (PEER_ATTEMPTS, true, Route::Peer)
        }
    };
    let walk = Failover::new(&routing, key, owner, &mut s.order, attempts, local_last);
    forward(&cx, walk, local, req, io, &mut s.local, route).await
}

/// Answers a health check on the peer listener as the admin endpoint's `/healthz` would.
async fn health(io: &mut ClientIo, sidecar: &Sidecar) -> Outcome {
    io.out.clear();
    let close = io.closing();
    let status = sidecar.health(&mut io.out, close, io.method == Method::Head);
    let sent = wire::write_one(&mut io.stream, &io.out, io.timeout).await;
    Outcome {
        status,
        close: close || sent.is_err(),
    }
}

/// Forwards along the failover walk; the request ends up served locally when the walk says
/// so.
async fn forward(
    cx: &Ctx<'_>,
    mut walk: Failover<'_>,
    local: Option<&LocalServer>,
    req: Request<'_>,
    io: &mut ClientIo,
    scratch: &mut LocalScratch,
    route: Route,
) -> (Route, Outcome) {
    let (config, routing) = (cx.config, cx.routing);
    local::upstream_head(
        cx,
        &mut scratch.upstream_head,
        req,
        io,
        false,
        Upstream::Peer,
    );
    // Peers are sidecars, which beat while they wait; central-mode backends may be any HTTP
    // server, so only the response timeout applies to them.
    let first_byte = (config.mode == Mode::Distributed).then_some(config.timeouts.peer_first_byte);
    let mut status = 502;
    loop {
        match walk.next() {
            Target::Member(i) => {
                routing.scheme().begin(i);
                let pool = &routing.pools()[i];
                let head = &scratch.upstream_head;
                let result = proxy::exchange(cx, pool, head, io, first_byte).await;
                routing.scheme().end(i);
                match result {
                    Ok(outcome) | Err(Failure::Done(outcome)) => return (route, outcome),
                    Err(Failure::Gone) => return (route, Failure::GONE),
                    Err(Failure::Retry(s)) => status = s,
                }
            }
            Target::Local => {
                return (Route::Local, serve_local(cx, local, req, io, scratch).await);
            }
            Target::Exhausted => return (route, io.error(status, false).await),
        }
    }
}

/// Serves `req` (whose key is the routing key) on this server, under its cache key
/// ([`cache_key`]), built here only, since forwarded requests never need it.
async fn serve_local(
    cx: &Ctx<'_>,
    local: Option<&LocalServer>,
    req: Request<'_>,
    io: &mut ClientIo,
    scratch: &mut LocalScratch,
) -> Outcome {
    let Some(local) = local else {
        return io.error(502, false).await;
    };
    let key = cache_key(cx.config, req, io, &mut scratch.cache_key);
    let req = Request { key, ..req };
    local.serve(cx, req, io, &mut scratch.upstream_head).await
}

/// The cache key of `req` (whose key is the routing key), the same in the embedded and the
/// relay cache: the host-path form (the routing key itself with `--key host-path`), after the
/// scheme the client used with `cache-key-scheme` ([`cache::key`]); built in `scratch` when it
/// is not the routing key.
fn cache_key<'a>(
    config: &Config,
    req: Request<'a>,
    io: &ClientIo,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    let scheme = config
        .cache_key_scheme
        .then(|| Scheme::of(io.proto, req.head, req.buf));
    match (config.key, scheme) {
        (KeyMode::HostPath, None) => req.key,
        _ => cache::key::build(req.head, req.buf, scheme, scratch),
    }
}

/// Lingering close: FIN, then read and discard for a moment.
async fn linger(io: &mut ClientIo) {
    let _ = io.stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        io.rbuf.clear();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match wire::read_up_to(&mut io.stream, &mut io.rbuf, HEAD_READ, left).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}
