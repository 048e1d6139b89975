//! Serving a request on this server: from the embedded cache (filled from the origin, with
//! coalescing) or through the local upstream server. Both talk HTTP/1.1 over a keep-alive
//! pool; a failure here is final (there is nowhere else to go): 502, or 504 on a timeout.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::cache::conditional::{self, Answer, Validators};
use crate::cache::policy;
use crate::cache::range::{self, Ranges};
use crate::cache::sketch::Sketch;
use crate::cache::topk::{Hot, TopK};
use crate::cache::vary;
use crate::cache::{self, Cache, Entry, Fill, FillGuard, Lookup};
use crate::client::{self, ClientIo, Outcome};
use crate::config::{self, Config};
use crate::context::Ctx;
use crate::http::body::{BodyReader, Framing};
use crate::http::date;
use crate::http::fields::Kind;
use crate::http::forward::{self, Stamp, Vouched};
use crate::http::request::{BodyKind, Method, RequestHead};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::{self, Failure, Rest, VIA};

/// The relay cache (`relay-cache-bytes`): copies of the hot objects this server forwards to
/// their owners, answered here, so that a hot URL's load spreads over every server instead of
/// resting on its owner (Fan et al., "Small Cache, Big Effect", SoCC 2011).
/// - Admission: a frequency sketch over the keys this server would forward ([`Sketch`]; relay
///   hits count too, so that a copy that expires while its key is hot is made again at once);
///   a key is copied once its count reaches [`RELAY_HOT`] and, when the relay cache is
///   nearly full, it is hotter than the coldest of [`ADMISSION_SAMPLE`] copies drawn at
///   random (TinyLFU's comparison of a candidate with the entry it would push out, Einziger,
///   Friedman, Manes 2017, with a sample standing for that entry). Without the comparison, the
///   many lukewarm keys push the hot ones out of a small relay cache. Keys this server owns
///   never come here.
/// - Hot spots: the keys that reach [`RELAY_HOT`] feed a top-[`TOP_K`] table ([`TopK`]),
///   `GET /hot` on the admin listener.
/// - Rules: the embedded cache's ([`Cache`]), filled from the owner instead of the origin
///   (freshness, `Vary`, `no-store`, `private`, ranges, conditional requests).
/// - Coherence: a copy is fresh for at most `relay-max-age`, then revalidated with the owner
///   (which answers the conditional request from its own cache) and never served stale, so
///   no copy outlives a `PURGE` or an invalidation at the owner by more than `relay-max-age`.
///   (The owner does not fan invalidations out: a bound that holds when a member is
///   unreachable needs no delivery guarantees.)
#[derive(Debug)]
pub struct Relay {
    /// The copies.
    pub cache: Cache,
    sketch: Sketch,
    hottest: TopK,
    /// The keys copied, for the admission's sample, and those whose copy was refused.
    residents: Mutex<Residents>,
    /// How long a refused key is not tried again: `relay-max-age`.
    refusal: Duration,
}

/// Refused keys remembered at most; beyond, the expired ones are dropped, then all.
const MAX_REFUSED: usize = 4096;

/// Copies drawn for the admission's comparison.
pub const ADMISSION_SAMPLE: usize = 4;

/// The keys copied into the relay cache, drawn at random for the admission. A key the cache
/// evicted or dropped is forgotten lazily: when it is drawn, or when the list grows to twice
/// the cache's objects.
#[derive(Debug, Default)]
struct Residents {
    keys: Vec<Box<[u8]>>,
    listed: HashSet<Box<[u8]>>,
    /// xorshift64 state for the draws.
    draws: u64,
    /// Keys whose fill stored nothing (too large, or not storable), until when they are
    /// forwarded without trying again.
    refused: HashMap<Box<[u8]>, Instant>,
}

impl Residents {
    fn add(&mut self, key: &[u8], cache: &Cache) {
        if self.listed.contains(key) {
            return;
        }
        if self.keys.len() >= 2 * cache.usage().0 + 64 {
            self.keys.retain(|k| cache.holds(k));
            self.listed = self.keys.iter().cloned().collect();
        }
        self.keys.push(key.into());
        self.listed.insert(key.into());
    }

    /// The smallest estimate among `ADMISSION_SAMPLE` keys the cache holds, drawn at random
    /// (`None` when it holds none of the listed keys).
    fn coldest(&mut self, cache: &Cache, estimate: impl Fn(&[u8]) -> u8) -> Option<u8> {
        let mut coldest = None;
        let mut drawn = 0;
        // Bounded: every draw either counts or forgets a key.
        while drawn < ADMISSION_SAMPLE && !self.keys.is_empty() {
            self.draws ^= self.draws << 13;
            self.draws ^= self.draws >> 7;
            self.draws ^= self.draws << 17;
            let i = (self.draws % self.keys.len() as u64) as usize;
            if !cache.holds(&self.keys[i]) {
                let gone = self.keys.swap_remove(i);
                self.listed.remove(&gone);
                continue;
            }
            let e = estimate(&self.keys[i]);
            coldest = Some(coldest.map_or(e, |c: u8| c.min(e)));
            drawn += 1;
        }
        coldest
    }
}

/// Keys listed by `GET /hot`.
pub const TOP_K: usize = 32;

/// The estimated count at which a key is hot enough to copy.
pub const RELAY_HOT: u8 = 4;

impl Relay {
    /// The relay cache of `settings`, storing objects up to `max_object` bytes.
    pub fn new(settings: &config::RelaySettings, max_object: u64) -> Self {
        let cache = Cache::relay(settings.bytes, max_object, settings.max_age);
        // A key per 4 KiB of the cache (the sketch is about 8 bytes a key).
        let keys = usize::try_from(settings.bytes / 4096).unwrap_or(usize::MAX);
        Self {
            cache,
            sketch: Sketch::new(keys.clamp(1024, 1 << 20)),
            hottest: TopK::new(TOP_K),
            residents: Mutex::new(Residents {
                draws: 0x2545_f491_4f6c_dd1d,
                ..Residents::default()
            }),
            refusal: settings.max_age,
        }
    }

    /// Counts a request this server would forward for `key`; its estimated count lately.
    pub fn record(&self, key: &[u8]) -> u8 {
        let estimate = self.sketch.record(key);
        if estimate >= RELAY_HOT {
            self.hottest.record(key, self.sketch.generation());
        }
        estimate
    }

    /// Whether a copy of `key`, counted `estimate` lately, may be made now: it is hot, and
    /// when the cache is nearly full (less than its largest object free) hotter than the
    /// coldest of a few copies drawn at random. A key the cache still holds (a stale copy to
    /// revalidate) may always. When another request is deciding, this one is not copied.
    pub fn admits(&self, key: &[u8], estimate: u8) -> bool {
        if estimate < RELAY_HOT {
            return false;
        }
        if self.cache.holds(key) {
            return true;
        }
        let Ok(mut residents) = self.residents.try_lock() else {
            return false;
        };
        if let Some(&until) = residents.refused.get(key) {
            if Instant::now() < until {
                return false;
            }
            residents.refused.remove(key);
        }
        let (_, bytes) = self.cache.usage();
        let full = bytes + self.cache.max_object() > self.cache.capacity();
        if full
            && residents
                .coldest(&self.cache, |k| self.sketch.estimate(k))
                .is_some_and(|coldest| coldest >= estimate)
        {
            return false;
        }
        residents.add(key, &self.cache);
        true
    }

    /// A fill of `key` stored nothing (the object is larger than the relay cache stores, or
    /// its response may not be stored): its requests are forwarded for `relay-max-age` before
    /// a copy is tried again, instead of each going through a fill that stores nothing.
    fn refuse(&self, key: &[u8]) {
        let mut residents = self
            .residents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if residents.refused.len() >= MAX_REFUSED {
            residents.refused.retain(|_, until| *until > now);
            if residents.refused.len() >= MAX_REFUSED {
                residents.refused.clear();
            }
        }
        residents.refused.insert(key.into(), now + self.refusal);
    }

    /// The hottest keys lately, hottest first.
    pub fn hottest(&self) -> Vec<Hot> {
        self.hottest.snapshot(self.sketch.generation())
    }
}

/// How this server serves what it owns.
#[derive(Debug)]
pub enum LocalServer {
    /// Through a local upstream (Squid, Varnish, nginx).
    Upstream {
        /// The upstream's pool.
        pool: Arc<Pool>,
        /// `Host` for requests that have none: the upstream's address.
        host: Box<[u8]>,
    },
    /// From the embedded cache, filled from the origin.
    Cache {
        /// The cache (boxed: it is much larger than the upstream's fields).
        cache: Box<Cache>,
        /// The origin's pool.
        origin: Arc<Pool>,
        /// `Host` for requests that have none: the origin's authority as configured.
        host: Box<[u8]>,
    },
}

/// One request to serve locally: its head (parsed from `buf`), cache key and hop count.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The parsed head.
    pub head: &'a RequestHead,
    /// The buffer the head was parsed from.
    pub buf: &'a [u8],
    /// The key: the routing key while the request is routed, the cache key
    /// ([`crate::cache::key`]) once it is served locally.
    pub key: &'a [u8],
    /// Hops the request made before reaching this server.
    pub hops: u8,
}

/// Where a request head built by [`upstream_head`] goes.
#[derive(Debug, Clone, Copy)]
pub enum Upstream<'a> {
    /// A peer sidecar or central-mode backend: the target as received.
    Peer,
    /// The local upstream server: origin-form target, and this `Host` when the request has
    /// none.
    Server(&'a [u8]),
    /// The embedded cache's origin: as [`Upstream::Server`], and the cache announces itself
    /// as a surrogate (`Surrogate-Capability`).
    Origin(&'a [u8]),
}

impl LocalServer {
    /// Local serving as configured; `None` in central mode.
    pub fn new(local: &config::Local, config: &Config, metrics: &Metrics) -> Option<Self> {
        let pool = |name: &str, addr| Pool::configured(config, metrics, name, addr);
        match *local {
            config::Local::None => None,
            config::Local::Upstream(addr) => Some(LocalServer::Upstream {
                pool: pool("upstream", addr),
                host: addr.to_string().into_bytes().into(),
            }),
            config::Local::Cache {
                origin,
                ref host,
                bytes,
                max_object,
                default_ttl,
            } => Some(LocalServer::Cache {
                cache: Box::new(Cache::new(bytes, max_object, default_ttl)),
                origin: pool("origin", origin),
                host: host.as_bytes().into(),
            }),
        }
    }

    /// The pool of the origin or upstream.
    pub fn pool(&self) -> &Arc<Pool> {
        match self {
            LocalServer::Upstream { pool, .. } | LocalServer::Cache { origin: pool, .. } => pool,
        }
    }

    /// The cache, in embedded-cache mode.
    pub fn cache(&self) -> Option<&Cache> {
        match self {
            LocalServer::Cache { cache, .. } => Some(cache),
            LocalServer::Upstream { .. } => None,
        }
    }

    /// Serves `req`; `scratch` receives the head sent upstream.
    pub async fn serve(
        &self,
        cx: &Ctx<'_>,
        req: Request<'_>,
        io: &mut ClientIo,
        scratch: &mut BytesMut,
    ) -> Outcome {
        let metrics = cx.metrics;
        let (cache, pool, host) = match self {
            LocalServer::Upstream { pool, host } => {
                return pass(cx, pool, Upstream::Server(host), req, io, scratch).await;
            }
            LocalServer::Cache {
                cache,
                origin,
                host,
            } => (cache, origin, &**host),
        };
        if req.head.method_bytes(req.buf) == b"PURGE" {
            // Allowed where it entered (connection.rs); here, at the owner, it empties the
            // URL's entry (under both schemes with `cache-key-scheme`).
            let found = cache.invalidate_resource(req.key, cx.config.cache_key_scheme);
            metrics.purge(if found { "purged" } else { "absent" });
            // The canned answer: the status line's text as the body.
            return io.error(if found { 200 } else { 404 }, false).await;
        }
        // This request's variant when the URL's responses vary (RFC 9111 4.1); an unsafe
        // request invalidates the URL, all its variants with it.
        let primary = req.key;
        let vouched = io.vouched(&cx.config.tls_headers);
        let variant = cache.variant_key(primary, req.head.fields(), req.buf, vouched.as_ref());
        let req = Request {
            key: variant.as_deref().unwrap_or(primary),
            ..req
        };
        if cache::unsafe_method(req.head.method_bytes(req.buf)) {
            metrics.origin_fetches.inc();
            let origin = (pool.as_ref(), host);
            return pass_unsafe(cx, cache, origin, (req, primary), io, scratch).await;
        }
        let wants = cache::Wants::of(req.head.fields(), req.buf);
        if wants.only_if_cached && io.body == BodyKind::None {
            return match cache.get(req.key, &wants) {
                Some(entry) => {
                    metrics.cache_hits.inc();
                    serve_entry(&entry, req, io, metrics).await
                }
                // RFC 9111 5.2.1.7.
                None => io.error(504, false).await,
            };
        }
        let cacheable = io.body == BodyKind::None && !wants.no_store;
        if !cacheable || io.method != Method::Get {
            if io.body == BodyKind::None
                && io.method == Method::Head
                && let Some(entry) = cache.get(req.key, &wants)
            {
                metrics.cache_hits.inc();
                return serve_entry(&entry, req, io, metrics).await;
            }
            metrics.origin_fetches.inc();
            return pass(cx, pool, Upstream::Origin(host), req, io, scratch).await;
        }
        // Bounded: a vanished leader is the only reason to look again.
        for _ in 0..4 {
            match cache.lookup(req.key, &wants) {
                Lookup::Hit(entry) => {
                    metrics.cache_hits.inc();
                    return serve_entry(&entry, req, io, metrics).await;
                }
                Lookup::Stale { entry, revalidate } => {
                    metrics.cache_hits.inc();
                    metrics.stale_served[1].inc();
                    if revalidate {
                        revalidate_in_background(cx, req, io);
                    }
                    return serve_entry(&entry, req, io, metrics).await;
                }
                Lookup::Fill(guard) => {
                    metrics.cache_misses.inc();
                    metrics.origin_fetches.inc();
                    let origin = (pool.as_ref(), Upstream::Origin(host));
                    let filled = fill(cx, guard, cache, origin, (req, primary), io, scratch, false);
                    return match filled.await {
                        Ok(outcome) => outcome,
                        // Only relay fills give a failure back.
                        Err(Retry(status)) => io.error(status, false).await,
                    };
                }
                Lookup::Wait(rx) => {
                    let fill = match wait_for_fill(cx, rx, io).await {
                        Waited::Gone => return Failure::GONE,
                        Waited::TimedOut => return io.error(504, false).await,
                        Waited::Vanished => continue,
                        Waited::Fill(fill) => fill,
                    };
                    match fill {
                        Fill::Stored(entry) => {
                            metrics.cache_hits.inc();
                            return serve_entry(&entry, req, io, metrics).await;
                        }
                        Fill::Failed(status) => return io.error(status, false).await,
                        Fill::Uncacheable | Fill::Pending => break,
                    }
                }
            }
        }
        metrics.origin_fetches.inc();
        pass(cx, pool, Upstream::Origin(host), req, io, scratch).await
    }
}

/// How a wait for another request's fill ended.
enum Waited {
    /// With this result.
    Fill(Fill),
    /// Its leader went away without one: look again.
    Vanished,
    /// No result within the response timeout.
    TimedOut,
    /// The waiting client went away.
    Gone,
}

/// Waits for the fill behind `rx` (keeping an HTTP/1.1 peer informed with heartbeats).
async fn wait_for_fill(
    cx: &Ctx<'_>,
    mut rx: tokio::sync::watch::Receiver<Fill>,
    io: &mut ClientIo,
) -> Waited {
    let wait = async {
        tokio::time::timeout(
            cx.config.timeouts.response,
            rx.wait_for(|f| !matches!(f, Fill::Pending)),
        )
        .await
        .map(|r| r.map(|fill| fill.clone()))
    };
    let timeout = io.timeout;
    match client::beating(&mut io.stream, &mut io.heartbeat, timeout, wait).await {
        None => {
            cx.metrics.client_error("client_write");
            Waited::Gone
        }
        Some(Err(_)) => Waited::TimedOut,
        Some(Ok(Err(_))) => Waited::Vanished,
        Some(Ok(Ok(fill))) => Waited::Fill(fill),
    }
}

/// Answers a request this server would forward from the relay cache, when it holds a copy
/// that may answer, or when the key is hot here and a copy can be made now: a fill from the
/// owner (`owner`, the peer's pool) that stores the owner's response under the relay cache's
/// rules while it answers. `None`: forward the request as usual (nothing was sent).
pub async fn serve_relayed(
    cx: &Ctx<'_>,
    relay: &Relay,
    owner: &Pool,
    req: Request<'_>,
    io: &mut ClientIo,
    scratch: &mut BytesMut,
) -> Option<Outcome> {
    let metrics = cx.metrics;
    if io.body != BodyKind::None || !matches!(io.method, Method::Get | Method::Head) {
        return None;
    }
    let wants = cache::Wants::of(req.head.fields(), req.buf);
    if wants.no_store || wants.only_if_cached {
        return None;
    }
    let cache = &relay.cache;
    let primary = req.key;
    let estimate = relay.record(primary);
    let vouched = io.vouched(&cx.config.tls_headers);
    let variant = cache.variant_key(primary, req.head.fields(), req.buf, vouched.as_ref());
    let req = Request {
        key: variant.as_deref().unwrap_or(primary),
        ..req
    };
    if let Some(entry) = cache.get(req.key, &wants) {
        metrics.relay_hits.inc();
        return Some(serve_entry(&entry, req, io, metrics).await);
    }
    // An owner routing skips (ejected, down) is left to the failover walk.
    if io.method != Method::Get || !owner.is_available() || !relay.admits(primary, estimate) {
        return None;
    }
    // Bounded: a vanished leader is the only reason to look again.
    for _ in 0..4 {
        match cache.lookup(req.key, &wants) {
            Lookup::Hit(entry) => {
                metrics.relay_hits.inc();
                return Some(serve_entry(&entry, req, io, metrics).await);
            }
            Lookup::Fill(guard) => {
                metrics.relay_fills.inc();
                let source = (owner, Upstream::Peer);
                let filled = fill(cx, guard, cache, source, (req, primary), io, scratch, true);
                let outcome = filled.await.ok()?;
                // Answered, and nothing stored (an error or a client gone says nothing of it).
                if outcome.status < 500 && !cache.holds(primary) {
                    relay.refuse(primary);
                }
                return Some(outcome);
            }
            Lookup::Wait(rx) => match wait_for_fill(cx, rx, io).await {
                Waited::Gone => return Some(Failure::GONE),
                Waited::Vanished => continue,
                Waited::Fill(Fill::Stored(entry)) => {
                    metrics.relay_hits.inc();
                    return Some(serve_entry(&entry, req, io, metrics).await);
                }
                Waited::TimedOut | Waited::Fill(_) => return None,
            },
            // A relay copy is never served stale (`Cache::relay`).
            Lookup::Stale { .. } => return None,
        }
    }
    None
}

/// Starts the revalidation of a stale entry that is answering meanwhile
/// (`stale-while-revalidate`): the sidecar sends itself, on its peer listener, the request with
/// `Cache-Control: no-cache` added, so that the revalidation is an ordinary fill (the same
/// variant, coalescing, the conditional request and the 304's update) that no client waits
/// for. Bounded by the connect and response timeouts; the response is read and dropped.
fn revalidate_in_background(cx: &Ctx<'_>, req: Request<'_>, io: &ClientIo) {
    let Some(mut to) = cx.config.peer_listen else {
        return;
    };
    if to.ip().is_unspecified() {
        to.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut head = BytesMut::new();
    upstream_head(cx, &mut head, req, io, true, Upstream::Peer);
    head.truncate(head.len().saturating_sub(2));
    head.extend_from_slice(b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n");
    let limit = cx.config.timeouts.connect + cx.config.timeouts.response;
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(to).await?;
            stream.write_all(&head).await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("background revalidation: {e}"),
            Err(_) => log::debug!("background revalidation: no answer within {limit:?}"),
        }
    });
}

/// Forwards the request as it is to `to` and relays the response (no caching).
async fn pass(
    cx: &Ctx<'_>,
    pool: &Pool,
    to: Upstream<'_>,
    req: Request<'_>,
    io: &mut ClientIo,
    scratch: &mut BytesMut,
) -> Outcome {
    upstream_head(cx, scratch, req, io, false, to);
    match proxy::exchange(cx, pool, scratch, io, None).await {
        Ok(outcome) | Err(Failure::Done(outcome)) => outcome,
        Err(Failure::Gone) => Failure::GONE,
        Err(Failure::Retry(status)) => io.error(status, false).await,
    }
}

/// Forwards an unsafe request (RFC 9110 9.2.1) to the origin and relays the response. A
/// non-error response invalidates what is stored for the target URI, and for the same-origin
/// URIs in its `Location` and `Content-Location` (RFC 9111 4.4), when the head arrives; with
/// `cache-key-scheme` each under both schemes (one resource at the origin). (In
/// distributed mode the request was routed to this server because it owns the URL, so the
/// target's invalidation lands where the object lives; a `Location` URL owned by another
/// member is invalidated only here.)
async fn pass_unsafe(
    cx: &Ctx<'_>,
    cache: &Cache,
    (origin, host): (&Pool, &[u8]),
    (req, primary): (Request<'_>, &[u8]),
    io: &mut ClientIo,
    scratch: &mut BytesMut,
) -> Outcome {
    upstream_head(cx, scratch, req, io, false, Upstream::Origin(host));
    let conn = match proxy::request(cx, origin, scratch, io, None).await {
        Ok(conn) => conn,
        Err(Failure::Done(outcome)) => return outcome,
        Err(Failure::Gone) => return Failure::GONE,
        Err(Failure::Retry(status)) => return io.error(status, false).await,
    };
    if (200..400).contains(&io.resp.status) {
        let schemed = cx.config.cache_key_scheme;
        cache.invalidate_resource(primary, schemed);
        for f in io.resp.fields() {
            let name = f.name.of(&conn.buf);
            if (name.eq_ignore_ascii_case(b"Location")
                || name.eq_ignore_ascii_case(b"Content-Location"))
                && let Some(key) = cache::related_key(primary, f.value.of(&conn.buf), schemed)
            {
                cache.invalidate_resource(&key, schemed);
            }
        }
    }
    proxy::relay(cx, origin, conn, io).await
}

/// Writes the head to send to `to` into `out` (`fill`: for a cache fill).
pub fn upstream_head(
    cx: &Ctx<'_>,
    out: &mut BytesMut,
    req: Request<'_>,
    io: &ClientIo,
    fill: bool,
    to: Upstream<'_>,
) {
    out.clear();
    let (default_host, origin_form, capability) = match to {
        Upstream::Peer => (&b""[..], false, &b""[..]),
        Upstream::Server(host) => (host, true, &b""[..]),
        Upstream::Origin(host) => (host, true, policy::SURROGATE_CAPABILITY.as_bytes()),
    };
    let stamp = Stamp {
        via: VIA,
        client: &io.addr,
        vouched: io.vouched(&cx.config.tls_headers),
        hops: req.hops.saturating_add(1),
        default_host,
        origin_form,
        capability,
    };
    forward::request(out, req.head, req.buf, &stamp, fill);
}

/// Nothing was sent to the client: the fill's source failed before answering, and the
/// request may go elsewhere (relay fills only).
#[derive(Debug)]
pub struct Retry(pub u16);

/// Leads a fill: fetches the whole object from `to` (the origin, or for the relay cache the
/// owner), stores it when it may be stored and fits, and serves it; streams it through
/// otherwise. With `give_back`, a source that fails before answering leaves the client
/// untouched and the fill's waiters free to fetch on their own ([`Retry`]).
#[allow(
    clippy::too_many_arguments,
    reason = "fill's arguments and the one flag that tells a relay fill from a local one"
)]
async fn fill(
    cx: &Ctx<'_>,
    guard: FillGuard<'_>,
    cache: &Cache,
    (origin, to): (&Pool, Upstream<'_>),
    (req, primary): (Request<'_>, &[u8]),
    io: &mut ClientIo,
    scratch: &mut BytesMut,
    give_back: bool,
) -> Result<Outcome, Retry> {
    let (config, metrics) = (cx.config, cx.metrics);
    upstream_head(cx, scratch, req, io, true, to);
    if let Some(stale) = guard.stale() {
        validate_with(scratch, &stale.validators);
    }
    // The exchange's delay (RFC 9111 4.2.3's response_delay) in whole seconds elapsed, not
    // the difference of two wall-clock seconds: a 5 ms exchange across a second's boundary
    // must not age the response by a second.
    let sent = Instant::now();
    // The owner beats while it waits: a silent one is hung.
    let first_byte = matches!(to, Upstream::Peer).then_some(config.timeouts.peer_first_byte);
    let mut conn = match proxy::request(cx, origin, scratch, io, first_byte).await {
        Ok(conn) => conn,
        Err(Failure::Retry(status)) => {
            if let Some(stale) = guard.stale().filter(|s| s.serves_on_error()).cloned() {
                return Ok(serve_stale(guard, stale, req, io, metrics).await);
            }
            if give_back {
                guard.finish(Fill::Uncacheable);
                return Err(Retry(status));
            }
            guard.finish(Fill::Failed(status));
            return Ok(io.error(status, false).await);
        }
        Err(Failure::Done(outcome)) => {
            guard.finish(Fill::Failed(outcome.status));
            return Ok(outcome);
        }
        // Not the origin's failure: the guard's drop lets a waiter lead a new fill.
        Err(Failure::Gone) => return Ok(Failure::GONE),
    };
    let arrived = date::now();
    let requested = arrived.saturating_sub(sent.elapsed().as_secs());
    if let Some(stale) = guard.stale().cloned() {
        if matches!(io.resp.status, 500 | 502 | 503 | 504) && stale.serves_on_error() {
            // The origin's error answer is dropped with its connection.
            drop(conn);
            return Ok(serve_stale(guard, stale, req, io, metrics).await);
        }
        let not_modified = io.resp.status == 304;
        metrics.revalidation(if not_modified {
            "not_modified"
        } else {
            "modified"
        });
        if not_modified {
            return Ok(refresh(
                guard,
                cache,
                origin,
                conn,
                &stale,
                req,
                io,
                (requested, arrived),
                metrics,
            )
            .await);
        }
    }
    let framing = io.resp.framing(false);
    let admission = cache.admit(
        io.resp.status,
        io.resp.fields(),
        &conn.buf,
        req.head.authorization,
        (requested, arrived),
    );
    let fits = match framing {
        Framing::Length(n) => n <= cache.max_object(),
        // A stored 204 or 304 has no body to frame.
        Framing::Empty => true,
        Framing::Chunked => true,
        Framing::UntilClose => false,
    };
    let Some(admission) = admission.filter(|_| fits) else {
        guard.finish(Fill::Uncacheable);
        return Ok(proxy::relay(cx, origin, conn, io).await);
    };
    // The head to store, and the client's head in case the object turns out too large.
    let mut stored = BytesMut::with_capacity(io.resp.len + 64);
    forward::stored(&mut stored, &io.resp, &conn.buf, VIA, arrived);
    let status = io.resp.status;
    let validators = Validators::of(io.resp.fields(), &conn.buf);
    let variants = vary::names(io.resp.fields(), &conn.buf);
    let plan = proxy::plan(io, &conn.buf);
    conn.buf.advance(io.resp.len);

    let mut body = BodyReader::new(framing, u64::MAX);
    let mut data = BytesMut::new();
    let timeout = io.timeout;
    loop {
        let next = body.next(&mut conn.stream, &mut conn.buf, config.timeouts.response);
        let n = match client::beating(&mut io.stream, &mut io.heartbeat, timeout, next).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                log::debug!("origin body: {e}");
                guard.finish(Fill::Failed(502));
                return Ok(io.error(502, false).await);
            }
            None => {
                // The requester went away; the guard's drop lets a waiter lead a new fill.
                metrics.client_error("client_write");
                return Ok(Failure::GONE);
            }
        };
        if n == 0 {
            break;
        }
        if (data.len() + n) as u64 > cache.max_object() {
            // Too large to store: stream it through, the reader keeping its place in the
            // framing (the `n` bytes it just handed out are still in `conn.buf`).
            guard.finish(Fill::Uncacheable);
            let rest = Rest {
                body,
                prefix: &data,
                first: n,
            };
            return Ok(proxy::stream(cx, origin, conn, io, plan, rest).await);
        }
        data.extend_from_slice(&conn.buf[..n]);
        conn.buf.advance(n);
    }
    proxy::finished(origin, conn, plan.reusable());
    if status != 204 && status != 304 {
        let mut n = itoa::Buffer::new();
        stored.extend_from_slice(b"Content-Length: ");
        stored.extend_from_slice(n.format(data.len()).as_bytes());
        stored.extend_from_slice(b"\r\n");
    }
    let now = Instant::now();
    let entry = Arc::new(Entry {
        status,
        head: stored.freeze(),
        body: data.freeze(),
        stored: now,
        initial_age: admission.initial_age,
        expires: now + admission.fresh_for,
        validators,
        stale_if_error: admission.stale_if_error,
        must_revalidate: admission.must_revalidate,
        stale_while_revalidate: admission.stale_while_revalidate,
        variants: None,
    });
    let vouched = io.vouched(&config.tls_headers);
    keep(
        cache,
        guard,
        (primary, variants),
        &entry,
        req,
        vouched.as_ref(),
    );
    Ok(serve_entry(&entry, req, io, metrics).await)
}

/// Stores a filled entry where this request's variant belongs: under the URL's key, or, when
/// the response varies, under the variant's key with a marker naming the fields under the
/// URL's key. When that is not the key the fill was led for (the URL's responses started or
/// stopped varying), the waiters fetch on their own. `vouched`: see [`vary::key`].
fn keep(
    cache: &Cache,
    guard: FillGuard<'_>,
    (primary, variants): (&[u8], Option<vary::Names>),
    entry: &Arc<Entry>,
    req: Request<'_>,
    vouched: Option<&Vouched<'_>>,
) {
    let key = match variants {
        Some(names) => {
            let variants = cache.mark_variants(primary, names);
            vary::key(primary, &variants, req.head.fields(), req.buf, vouched)
        }
        None => primary.to_vec(),
    };
    if key == guard.key() {
        guard.finish(Fill::Stored(entry.clone()));
    } else {
        cache.insert(&key, entry.clone());
        guard.finish(Fill::Uncacheable);
    }
}

/// The origin failed while a stale entry that allows it (`stale-if-error`) was being
/// revalidated: the entry answers, and so do the requests waiting for this fill.
async fn serve_stale(
    guard: FillGuard<'_>,
    stale: Arc<Entry>,
    req: Request<'_>,
    io: &mut ClientIo,
    metrics: &Metrics,
) -> Outcome {
    metrics.stale_served[0].inc();
    guard.finish(Fill::Stored(stale.clone()));
    serve_entry(&stale, req, io, metrics).await
}

/// Makes the fill request (`head`, ending with its empty line) a conditional one that asks the
/// origin whether the stale entry with `validators` is still current (RFC 9111 4.3.1).
fn validate_with(head: &mut BytesMut, validators: &Validators) {
    head.truncate(head.len().saturating_sub(2));
    if let Some(etag) = &validators.etag {
        head.extend_from_slice(b"If-None-Match: ");
        head.extend_from_slice(etag);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(modified) = validators.last_modified {
        head.extend_from_slice(b"If-Modified-Since: ");
        head.extend_from_slice(&date::format(modified));
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// The origin answered a revalidation with 304: the stale entry, its head updated with the
/// fields of the 304 (RFC 9111 4.3.4), is stored again with its freshness decided anew, and
/// answers the request. The 304's connection goes back to the pool.
#[allow(
    clippy::too_many_arguments,
    reason = "one fill's state, passed on as fill has it"
)]
async fn refresh(
    guard: FillGuard<'_>,
    cache: &Cache,
    origin: &Pool,
    mut conn: crate::pool::Conn,
    stale: &Entry,
    req: Request<'_>,
    io: &mut ClientIo,
    times: (u64, u64),
    metrics: &Metrics,
) -> Outcome {
    let (fields, buf) = (io.resp.fields(), &conn.buf[..]);
    // Not updated: what describes the stored bytes themselves (their length, coding, range,
    // digest and entity tag: RFC 9111 3.2 lets a cache keep those that assure the stored
    // response's integrity), and what this cache writes itself.
    let updates = |f: &crate::http::Field| {
        let name = f.name.of(buf);
        !f.kind.is_hop_by_hop()
            && !matches!(
                f.kind,
                Kind::ContentLength | Kind::Age | Kind::Via | Kind::ETag
            )
            && ![&b"Content-Encoding"[..], b"Content-Range", b"Content-MD5"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
    };
    // A 304 without Date is dated when it arrived, as a stored response would be (RFC 9110
    // 6.6.1): the refreshed entry's age counts from now, not from the first fill.
    let undated = !fields.iter().any(|f| f.kind == Kind::Date);
    let replaced = |name: &[u8]| {
        (undated && name.eq_ignore_ascii_case(b"Date"))
            || fields
                .iter()
                .any(|f| updates(f) && f.name.of(buf).eq_ignore_ascii_case(name))
    };
    let status_line = stale
        .head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut head = BytesMut::with_capacity(stale.head.len() + io.resp.len);
    head.extend_from_slice(&stale.head[..status_line]);
    stored_fields(&mut head, &stale.head, |name| {
        !replaced(name) && !name.eq_ignore_ascii_case(b"Content-Length")
    });
    for f in fields.iter().filter(|f| updates(f)) {
        head.extend_from_slice(f.name.of(buf));
        head.extend_from_slice(b": ");
        head.extend_from_slice(f.value.of(buf));
        head.extend_from_slice(b"\r\n");
    }
    if undated {
        head.extend_from_slice(b"Date: ");
        head.extend_from_slice(&date::format(times.1));
        head.extend_from_slice(b"\r\n");
    }
    if stale.status != 204 {
        let mut n = itoa::Buffer::new();
        head.extend_from_slice(b"Content-Length: ");
        head.extend_from_slice(n.format(stale.body.len()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // A 304 has no body: the connection is ready for the next request.
    let reusable = !io.resp.close;
    conn.buf.advance(io.resp.len);
    proxy::finished(origin, conn, reusable);

    // Freshness from the updated head, parsed as a response head.
    let mut text = head.to_vec();
    text.extend_from_slice(b"\r\n");
    let mut parsed = crate::http::response::ResponseHead::default();
    let complete = crate::http::response::parse(&text, text.len(), &mut parsed).unwrap_or(false);
    let admission = complete
        .then(|| {
            cache.admit(
                stale.status,
                parsed.fields(),
                &text,
                req.head.authorization,
                times,
            )
        })
        .flatten();
    let now = Instant::now();
    let entry = Arc::new(Entry {
        status: stale.status,
        head: head.freeze(),
        body: stale.body.clone(),
        stored: now,
        initial_age: admission.map_or(0, |a| a.initial_age),
        expires: now + admission.map_or(std::time::Duration::ZERO, |a| a.fresh_for),
        validators: Validators::of(parsed.fields(), &text),
        stale_if_error: admission.map_or(std::time::Duration::ZERO, |a| a.stale_if_error),
        must_revalidate: admission.is_none_or(|a| a.must_revalidate),
        stale_while_revalidate: admission
            .map_or(std::time::Duration::ZERO, |a| a.stale_while_revalidate),
        variants: None,
    });
    if admission.is_some() {
        guard.finish(Fill::Stored(entry.clone()));
    } else {
        // The update forbids storing it: served this once, and no longer kept.
        cache.invalidate(req.key);
        guard.finish(Fill::Uncacheable);
    }
    serve_entry(&entry, req, io, metrics).await
}

/// Answers `req` from a stored entry: its head, `Age`, `Connection`, and the body (unless
/// HEAD); or 304 or 412 when the request's preconditions say so (RFC 9110 13.2.2); or, for a
/// `GET` with `Range` of a stored 200, 206 with the ranges asked for or 416 (RFC 9110 14).
async fn serve_entry(
    entry: &Entry,
    req: Request<'_>,
    io: &mut ClientIo,
    metrics: &Metrics,
) -> Outcome {
    let conditional = req
        .head
        .fields()
        .iter()
        .any(|f| f.kind == crate::http::fields::Kind::Conditional);
    let answer = if conditional {
        conditional::evaluate(req.head.fields(), req.buf, entry.status, &entry.validators)
    } else {
        Answer::Full
    };
    let ranges =
        if conditional && answer == Answer::Full && io.method == Method::Get && entry.status == 200
        {
            let len = entry.body.len() as u64;
            range::select(req.head.fields(), req.buf, len, &entry.validators)
        } else {
            Ranges::Whole
        };
    io.out.clear();
    let mut n = itoa::Buffer::new();
    let multipart;
    let (status, body): (u16, &[u8]) = match (answer, ranges) {
        (Answer::PreconditionFailed, _) => {
            metrics.cache_answer(412);
            return io.error(412, false).await;
        }
        (Answer::NotModified, _) => {
            io.out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
            stored_fields(&mut io.out, &entry.head, conditional::kept_in_304);
            (304, &[])
        }
        (Answer::Full, Ranges::Whole) => {
            io.out.extend_from_slice(&entry.head);
            (entry.status, &entry.body)
        }
        (Answer::Full, Ranges::Unsatisfiable) => {
            io.out
                .extend_from_slice(b"HTTP/1.1 416 Range Not Satisfiable\r\n");
            stored_fields(&mut io.out, &entry.head, |name| {
                name.eq_ignore_ascii_case(b"Date")
            });
            io.out.extend_from_slice(b"Content-Range: bytes */");
            io.out
                .extend_from_slice(n.format(entry.body.len()).as_bytes());
            io.out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
            (416, &[])
        }
        (Answer::Full, Ranges::Parts(parts)) => {
            io.out
                .extend_from_slice(b"HTTP/1.1 206 Partial Content\r\n");
            let not_length = |name: &[u8]| !name.eq_ignore_ascii_case(b"Content-Length");
            let body: &[u8] = if let [(first, last)] = parts[..] {
                stored_fields(&mut io.out, &entry.head, not_length);
                io.out.extend_from_slice(
                    format!(
                        "Content-Range: bytes {first}-{last}/{}\r\n",
                        entry.body.len()
                    )
                    .as_bytes(),
                );
                &entry.body[first as usize..=last as usize]
            } else {
                let is_type = |name: &[u8]| name.eq_ignore_ascii_case(b"Content-Type");
                let content_type = entry.head.split(|&b| b == b'\n').find_map(|line| {
                    let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
                    is_type(name).then(|| crate::http::fields::trim(value[1..].trim_ascii_end()))
                });
                stored_fields(&mut io.out, &entry.head, |name| {
                    not_length(name) && !is_type(name)
                });
                io.out
                    .extend_from_slice(b"Content-Type: multipart/byteranges; boundary=");
                io.out.extend_from_slice(range::BOUNDARY.as_bytes());
                io.out.extend_from_slice(b"\r\n");
                multipart = range::multipart(&entry.body, &parts, content_type);
                &multipart
            };
            io.out.extend_from_slice(b"Content-Length: ");
            io.out.extend_from_slice(n.format(body.len()).as_bytes());
            io.out.extend_from_slice(b"\r\n");
            (206, body)
        }
    };
    io.out.extend_from_slice(b"Age: ");
    io.out.extend_from_slice(n.format(entry.age()).as_bytes());
    io.out.extend_from_slice(b"\r\n");
    let close = io.closing();
    let connection = io.connection(close);
    forward::finish(&mut io.out, connection);
    let body: &[u8] = if io.method == Method::Head { &[] } else { body };
    metrics.cache_answer(status);
    let sent = io.write_head_and([body, &[]], false, true).await;
    Outcome {
        status,
        close: close || sent.is_err(),
    }
}

/// Appends the field lines of a stored head (after its status line) whose names pass `keep`.
fn stored_fields(out: &mut BytesMut, head: &[u8], keep: impl Fn(&[u8]) -> bool) {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !line.is_empty() && keep(name) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
    }
}
