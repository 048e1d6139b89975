//! The embedded cache: a byte-bounded store of complete `GET 200` responses (quick_cache:
//! sharded, CLOCK-Pro eviction, weighted by bytes) and request coalescing, so that any
//! number of concurrent misses for one key make one origin fetch.
//!
//! What is stored ([`policy`] has the rules of RFC 9111 for a shared cache):
//! - requests: `GET` and `HEAD` without a body; what the request's own directives ask
//!   ([`Wants`]: `no-store`, `no-cache` and `Pragma: no-cache`, `max-age`, `min-fresh`,
//!   `max-stale`, `only-if-cached`) is honoured; a request with `Authorization` is stored
//!   only when the response allows it (RFC 9111 3.5);
//! - responses that a shared cache may store (any final status with explicit freshness, or a
//!   heuristically cacheable one; not `no-store`, `private`, `Set-Cookie` or `Vary: *`; a
//!   response with `Vary` is stored as a variant, [`vary`]), with a
//!   known size up to the object limit (`Content-Length`, or chunked and found to fit); a
//!   stale entry with a validator is revalidated with a conditional request (one per key,
//!   coalesced like a miss), one without is dropped;
//! - freshness: `s-maxage`, else `max-age`, else `Expires` minus `Date`; without them the
//!   operator's `cache-ttl` when set, else the heuristic (10 % of the time since
//!   `Last-Modified`). The age starts at the corrected initial age of RFC 9111 4.2.3, and every
//!   answer from the cache carries its current `Age`.
//!
//! Keys ([`key`]): the URL's host-path form, after the client's scheme with
//! `cache-key-scheme`; a `PURGE` or an invalidation drops the URL under both schemes
//! ([`Cache::invalidate_resource`]).
//!
//! Coalescing: the first miss for a key becomes the fill's leader ([`Lookup::Fill`]); later
//! misses for the key wait ([`Lookup::Wait`]) for the leader's [`Fill`] result: the stored
//! entry, "not cacheable" (each then fetches on its own: a large or private object must not
//! be funnelled through one request), or the leader's error status. A leader that goes away
//! without a result releases its waiters to try again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::{OptionsBuilder, Weighter};
use tokio::sync::watch;

pub mod conditional;
pub mod key;
pub mod policy;
pub mod range;
pub mod sketch;
pub mod topk;
pub mod vary;

use crate::http::Field;
use crate::http::fields::{self, Kind};
use crate::http::forward::Vouched;

use conditional::Validators;
use policy::Facts;

/// Bookkeeping bytes counted per entry on top of its key, head and body.
const ENTRY_OVERHEAD: u64 = 128;
/// Objects of the largest size a shard of the store holds (the store has as many shards as
/// this allows, up to 64).
const LARGEST_PER_SHARD: u64 = 16;
/// A background revalidation that has not ended a fill by then is taken for lost (another may
/// start).
pub const REVALIDATION_LIMIT: Duration = Duration::from_secs(60);
/// At most this many background revalidations at once; beyond, stale entries are revalidated
/// while the request waits.
const MAX_REVALIDATING: usize = 4096;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its status code.
    pub status: u16,
    /// Status line and fields, ending with `Content-Length` and without the empty line (no
    /// `Age`: [`Entry::age`] is written when it is served).
    pub head: Bytes,
    /// The body.
    pub body: Bytes,
    /// When it was stored.
    pub stored: Instant,
    /// Its age when it was stored, in seconds (RFC 9111 4.2.3).
    pub initial_age: u64,
    /// When it stops being fresh.
    pub expires: Instant,
    /// Its `ETag` and `Last-Modified`, for conditional requests.
    pub validators: Validators,
    /// How long past its freshness it may still be served when the origin fails
    /// (`stale-if-error`, RFC 5861 4; zero when it may not).
    pub stale_if_error: Duration,
    /// Never served stale, whatever the request allows (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`, `no-cache`).
    pub must_revalidate: bool,
    /// How long past its freshness it may still answer while it is revalidated in the
    /// background (`stale-while-revalidate`, RFC 5861 3; zero when it may not).
    pub stale_while_revalidate: Duration,
    /// Set on the marker stored under a URL's key when its responses vary: the names their
    /// variants' keys are made of ([`vary`]). A marker is never served.
    pub variants: Option<vary::Variants>,
}

impl Entry {
    /// Its current age in seconds (RFC 9111 4.2.3: the initial age plus the time stored).
    pub fn age(&self) -> u64 {
        self.initial_age + self.stored.elapsed().as_secs()
    }

    /// True when it may stand in for an origin that failed (RFC 5861 4): within its
    /// `stale-if-error` time past its freshness.
    pub fn serves_on_error(&self) -> bool {
        Instant::now() <= self.expires + self.stale_if_error
    }
}

/// How long a response may be served from the cache, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Its age on arrival, seconds.
    pub initial_age: u64,
    /// How much longer it is fresh.
    pub fresh_for: Duration,
    /// Its `stale-if-error` time; zero when `must-revalidate`, `proxy-revalidate` or
    /// `s-maxage` (which implies `proxy-revalidate` for a shared cache, RFC 9111 5.2.2.10)
    /// forbid serving it stale.
    pub stale_if_error: Duration,
    /// See [`Entry::must_revalidate`].
    pub must_revalidate: bool,
    /// See [`Entry::stale_while_revalidate`].
    pub stale_while_revalidate: Duration,
}

/// The result of a fill, as its waiters see it.
#[derive(Debug, Clone)]
pub enum Fill {
    /// Still running.
    Pending,
    /// Stored: serve this.
    Stored(Arc<Entry>),
    /// The response cannot be stored: fetch on your own.
    Uncacheable,
    /// The fill failed with this status.
    Failed(u16),
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A fresh entry.
    Hit(Arc<Entry>),
    /// A miss: fetch, then [`FillGuard::finish`].
    Fill(FillGuard<'a>),
    /// A miss with a fill under way: wait for its result.
    Wait(watch::Receiver<Fill>),
    /// A stale entry that may answer while it is revalidated in the background
    /// (`stale-while-revalidate`); `revalidate`: this request is the one to start that (no
    /// other revalidation of the key is under way).
    Stale { entry: Arc<Entry>, revalidate: bool },
}

#[derive(Clone)]
struct Weight;

impl Weighter<Box<[u8]>, Arc<Entry>> for Weight {
    fn weight(&self, key: &Box<[u8]>, entry: &Arc<Entry>) -> u64 {
        key.len() as u64 + entry.head.len() as u64 + entry.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Counts the entries the store evicts to make room.
#[derive(Clone, Default)]
struct Evictions(Arc<std::sync::atomic::AtomicU64>);

impl quick_cache::Lifecycle<Box<[u8]>, Arc<Entry>> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut (), _: Box<[u8]>, _: Arc<Entry>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

type Store = quick_cache::sync::Cache<
    Box<[u8]>,
    Arc<Entry>,
    Weight,
    quick_cache::DefaultHashBuilder,
    Evictions,
>;

/// The cache and the fills under way.
pub struct Cache {
    store: Store,
    evictions: Evictions,
    capacity: u64,
    fills: Mutex<HashMap<Box<[u8]>, watch::Receiver<Fill>>>,
    /// Keys with a background revalidation under way, and when it started: cleared when a
    /// fill of the key ends, or considered over after [`REVALIDATION_LIMIT`].
    revalidating: Mutex<HashMap<Box<[u8]>, Instant>>,
    max_object: u64,
    /// The next variant marker's epoch.
    epochs: std::sync::atomic::AtomicU64,
    /// Set once any response varied: until then a lookup does not look for a marker.
    varied: std::sync::atomic::AtomicBool,
    /// The operator's `cache-ttl`, seconds: the lifetime of responses without explicit
    /// freshness.
    default_ttl: Option<u64>,
    /// A relay cache's `relay-max-age`, seconds: no entry is fresh for longer, and none is
    /// ever served stale (see [`Cache::relay`]).
    lifetime_cap: Option<u64>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("objects", &self.store.len())
            .field("bytes", &self.store.weight())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache of `bytes` bytes that stores objects up to `max_object` bytes; responses the
    /// origin gives no freshness are fresh for `default_ttl` when it is set (else by the
    /// heuristic).
    pub fn new(bytes: u64, max_object: u64, default_ttl: Option<Duration>) -> Self {
        // Each shard holds 1/shards of the bytes and evicts on its own: a shard must hold many
        // of the largest objects, or one of them pushes its shard's small ones out while the
        // cache as a whole has room.
        let per_shard = max_object.max(1).saturating_mul(LARGEST_PER_SHARD);
        let shards = (bytes / per_shard).clamp(1, 64);
        let shards = 1usize << (usize::BITS - 1 - (shards as usize).leading_zeros());
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(
                usize::try_from(bytes / 16_384)
                    .unwrap_or(usize::MAX)
                    .max(64),
            )
            .weight_capacity(bytes)
            .build();
        let evictions = Evictions::default();
        let options = options.or_else(|_| {
            OptionsBuilder::new()
                .estimated_items_capacity(64)
                .weight_capacity(bytes)
                .build()
        });
        let store = match options {
            Ok(options) => {
                Store::with_options(options, Weight, Default::default(), evictions.clone())
            }
            Err(_) => Store::with(64, bytes, Weight, Default::default(), evictions.clone()),
        };
        Self {
            store,
            evictions,
            capacity: bytes,
            fills: Mutex::new(HashMap::new()),
            revalidating: Mutex::new(HashMap::new()),
            max_object,
            epochs: std::sync::atomic::AtomicU64::new(0),
            varied: std::sync::atomic::AtomicBool::new(false),
            default_ttl: default_ttl.map(|t| t.as_secs()),
            lifetime_cap: None,
        }
    }

    /// A relay cache of `bytes` bytes: copies of what other servers own, each fresh for at most
    /// `max_age` (then revalidated with its owner) and never served stale, so that no copy
    /// outlives a change at the owner by more than `max_age`. Objects up to a sixteenth of it.
    pub fn relay(bytes: u64, max_object: u64, max_age: Duration) -> Self {
        let max_object = max_object.min(bytes / LARGEST_PER_SHARD).max(1);
        Self {
            lifetime_cap: Some(max_age.as_secs().max(1)),
            ..Self::new(bytes, max_object, None)
        }
    }

    /// Largest object stored.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Objects and bytes held.
    pub fn usage(&self) -> (usize, u64) {
        (self.store.len(), self.store.weight())
    }

    /// Its size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Entries evicted so far to make room for others.
    pub fn evictions(&self) -> u64 {
        self.evictions.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fills(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, watch::Receiver<Fill>>> {
        self.fills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An entry for `key` that may answer a request that `wants` this.
    pub fn get(&self, key: &[u8], wants: &Wants) -> Option<Arc<Entry>> {
        self.entry(key, wants).ok().flatten()
    }

    /// What is stored for `key`: `Ok(Some)` an entry that may answer (fresh, and as fresh as
    /// the request `wants`), `Ok(None)` nothing usable, `Err` an entry to revalidate first (it
    /// has a validator). A stale one that cannot be revalidated is dropped.
    fn entry(&self, key: &[u8], wants: &Wants) -> Result<Option<Arc<Entry>>, Arc<Entry>> {
        let Some(entry) = self.store.get(key) else {
            return Ok(None);
        };
        if entry.variants.is_some() {
            // A URL that varies: its variants are under their own keys (see `variant_key`).
            return Ok(None);
        }
        let now = Instant::now();
        if wants.accepts(&entry, now) {
            return Ok(Some(entry));
        }
        if entry.validators.etag.is_some() || entry.validators.last_modified.is_some() {
            return Err(entry);
        }
        if entry.expires <= now {
            self.store.remove(key);
        }
        Ok(None)
    }

    /// The key under which `key`'s response for this request (its fields, parsed from `buf`;
    /// `vouched`: the fields the sidecar writes itself, [`vary::key`]) is stored: `key` itself
    /// (`None`), or, when the URL's responses vary, its variant's key.
    pub fn variant_key(
        &self,
        key: &[u8],
        fields: &[Field],
        buf: &[u8],
        vouched: Option<&Vouched<'_>>,
    ) -> Option<Vec<u8>> {
        if !self.varied.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let marker = self.store.get(key)?;
        let variants = marker.variants.as_ref()?;
        Some(vary::key(key, variants, fields, buf, vouched))
    }

    /// Stores `entry` under `key`, outside a fill (a variant, or a URL that stopped varying).
    pub fn insert(&self, key: &[u8], entry: Arc<Entry>) {
        self.store.insert(key.into(), entry);
    }

    /// Remembers that `key`'s responses vary on `names` (a marker under `key`): the marker
    /// there when it names the same fields, else a new one with a new epoch.
    pub fn mark_variants(&self, key: &[u8], names: vary::Names) -> vary::Variants {
        if let Some(marker) = self.store.get(key)
            && let Some(variants) = marker.variants.as_ref()
            && variants.names == names
        {
            return variants.clone();
        }
        self.varied
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let variants = vary::Variants {
            names,
            epoch: self
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let marker = Entry {
            status: 0,
            head: Bytes::new(),
            body: Bytes::new(),
            stored: Instant::now(),
            initial_age: 0,
            expires: Instant::now(),
            validators: Validators::default(),
            stale_if_error: Duration::ZERO,
            must_revalidate: true,
            stale_while_revalidate: Duration::ZERO,
            variants: Some(variants.clone()),
        };
        self.store.insert(key.into(), Arc::new(marker));
        variants
    }

    /// Whether something is stored under `key` (fresh or not), without touching its place
    /// in the eviction order.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.store.contains_key(key)
    }

    /// Drops what is stored for `key`; true when there was something.
    pub fn invalidate(&self, key: &[u8]) -> bool {
        self.store.remove(key).is_some()
    }

    /// Drops what is stored for the resource of `key` (a URL's key, not a variant's): with
    /// `schemed` keys (`cache-key-scheme`) under both schemes, since the origin serves one
    /// resource behind both and a change to it (or a `PURGE` of it) concerns both; variants go
    /// with their URL's marker. True when there was something.
    pub fn invalidate_resource(&self, key: &[u8], schemed: bool) -> bool {
        let found = self.invalidate(key);
        match key::twin(key, schemed) {
            Some(twin) => self.invalidate(&twin) || found,
            None => found,
        }
    }

    /// Looks `key` up for a request that `wants` this: a hit, a stale entry that may answer
    /// while it is revalidated in the background, the lead of a new fill, or a fill to wait
    /// for.
    pub fn lookup(&self, key: &[u8], wants: &Wants) -> Lookup<'_> {
        match self.entry(key, wants) {
            Ok(Some(entry)) => return Lookup::Hit(entry),
            Err(stale) if wants.accepts_while_revalidating(&stale, Instant::now()) => {
                let revalidate = self.begin_revalidation(key);
                return Lookup::Stale {
                    entry: stale,
                    revalidate,
                };
            }
            _ => {}
        }
        let mut fills = self.fills();
        if let Some(waiting) = fills.get(key) {
            return Lookup::Wait(waiting.clone());
        }
        // A fill may have finished between the first look and taking the lock.
        let stale = match self.entry(key, wants) {
            Ok(Some(entry)) => return Lookup::Hit(entry),
            Ok(None) => None,
            Err(stale) => Some(stale),
        };
        let (tx, rx) = watch::channel(Fill::Pending);
        fills.insert(key.into(), rx);
        Lookup::Fill(FillGuard {
            cache: self,
            key: key.into(),
            tx,
            stale,
        })
    }

    /// Marks a background revalidation of `key` as started; false when one is under way (or
    /// too many are).
    fn begin_revalidation(&self, key: &[u8]) -> bool {
        let mut revalidating = self
            .revalidating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let full = revalidating.len() >= MAX_REVALIDATING;
        match revalidating.get_mut(key) {
            Some(started) if now.duration_since(*started) < REVALIDATION_LIMIT => false,
            Some(started) => {
                *started = now;
                true
            }
            None if full => false,
            None => {
                revalidating.insert(key.into(), now);
                true
            }
        }
    }

    /// Whether a response to a `GET` may be stored, and for how long it is fresh: `None` when
    /// a shared cache must not store it or it is stale on arrival. `requested` and `arrived`
    /// are the wall clock (seconds since the epoch) when the request went out and when the
    /// response head came back.
    pub fn admit(
        &self,
        status: u16,
        fields: &[Field],
        buf: &[u8],
        authorization: bool,
        (requested, arrived): (u64, u64),
    ) -> Option<Admission> {
        let facts = Facts::of(fields, buf);
        if !policy::storable(status, &facts, authorization) {
            return None;
        }
        let lifetime = policy::lifetime(status, &facts, arrived, self.default_ttl);
        let initial_age = policy::initial_age(&facts, requested, arrived);
        // A response that is stale on arrival (or `no-cache`) is kept only when it can be
        // revalidated before it is served again.
        let fresh_for = if policy::fresh(&facts, lifetime, initial_age) {
            lifetime - initial_age
        } else if facts.validator {
            0
        } else {
            return None;
        };
        let d = &facts.directives;
        let revalidate = d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_present();
        let stale = |directive| match directive {
            policy::Seconds::Valid(n) if !revalidate && !d.no_cache => n,
            _ => 0,
        };
        let (stale_if_error, stale_while_revalidate) =
            (stale(d.stale_if_error), stale(d.stale_while_revalidate));
        let (fresh_for, stale_if_error, stale_while_revalidate, revalidate) =
            match self.lifetime_cap {
                Some(cap) => (fresh_for.min(cap), 0, 0, true),
                None => (
                    fresh_for,
                    stale_if_error,
                    stale_while_revalidate,
                    revalidate,
                ),
            };
        Some(Admission {
            initial_age,
            fresh_for: Duration::from_secs(fresh_for),
            stale_if_error: Duration::from_secs(stale_if_error),
            must_revalidate: revalidate || d.no_cache,
            stale_while_revalidate: Duration::from_secs(stale_while_revalidate),
        })
    }
}

/// True for a method that is not safe (RFC 9110 9.2.1: anything but GET, HEAD, OPTIONS and
/// TRACE): its success invalidates the stored response for its target (RFC 9111 4.4).
pub fn unsafe_method(method: &[u8]) -> bool {
    !matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE")
}

/// The cache key of a `Location` or `Content-Location` reference in the response to a request
/// whose key is `primary` (authority then path, [`crate::router::host_path`], after the scheme
/// with `schemed` keys), when it names a resource of the same origin (RFC 9111 4.4 allows
/// invalidating only those): a URI with the same scheme (`http` when the keys have none: the
/// sidecar's origins speak http) and authority, a network-path or absolute-path reference, or a
/// relative path resolved against the request's path. `None` for other origins and schemes.
pub fn related_key(primary: &[u8], reference: &[u8], schemed: bool) -> Option<Vec<u8>> {
    let (scheme, primary) = key::split(primary, schemed);
    let same_scheme = scheme.map_or(&b"http"[..], key::Scheme::name);
    let split = primary.iter().position(|&b| b == b'/')?;
    let (authority, path) = primary.split_at(split);
    let reference = fields::trim(reference);
    let reference = match reference.iter().position(|&b| b == b'#') {
        Some(i) => &reference[..i],
        None => reference,
    };
    let scheme_end = reference.iter().position(|&b| b == b':');
    let first_delimiter = reference.iter().position(|&b| matches!(b, b'/' | b'?'));
    let network_path = match scheme_end {
        Some(i) if first_delimiter.is_none_or(|d| i < d) => {
            if !reference[..i].eq_ignore_ascii_case(same_scheme) {
                return None;
            }
            reference[i + 1..].strip_prefix(b"//")?
        }
        _ => match reference.strip_prefix(b"//") {
            Some(rest) => rest,
            None => {
                let mut key = key::join(scheme, authority);
                if reference.starts_with(b"/") {
                    key.extend_from_slice(reference);
                } else {
                    let path = &path[..path.iter().position(|&b| b == b'?').unwrap_or(path.len())];
                    let dir = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                    key.extend_from_slice(&path[..dir]);
                    key.extend_from_slice(reference);
                }
                return Some(key);
            }
        },
    };
    let end = network_path
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(network_path.len());
    if !network_path[..end].eq_ignore_ascii_case(authority) {
        return None;
    }
    let mut key = key::join(scheme, authority);
    if !network_path[end..].starts_with(b"/") {
        key.push(b'/');
    }
    key.extend_from_slice(&network_path[end..]);
    Some(key)
}

/// What a request's own directives ask of the cache (RFC 9111 5.2.1; `Pragma: no-cache` when
/// it has no `Cache-Control`, 5.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// `no-store`: the response is not stored (a stored one may still answer).
    pub no_store: bool,
    /// `no-cache`: a stored response answers only once the origin has validated it.
    pub no_cache: bool,
    /// `max-age`: nothing older than this.
    pub max_age: Option<u64>,
    /// `min-fresh`: nothing that stays fresh for less than this.
    pub min_fresh: Option<u64>,
    /// `max-stale`: a stale response this far past its freshness will do (`u64::MAX` without
    /// a value), unless it must be revalidated.
    pub max_stale: Option<u64>,
    /// `only-if-cached`: answer from the cache or with 504, never from the origin.
    pub only_if_cached: bool,
}

impl Wants {
    /// Reads a request's directives. An invalid number counts as 0 for `max-age` and
    /// `max-stale` and as a year for `min-fresh` (the stricter reading).
    pub fn of(fields: &[Field], buf: &[u8]) -> Self {
        let mut wants = Wants::default();
        let mut cache_control = false;
        let mut pragma_no_cache = false;
        for f in fields {
            match f.kind {
                Kind::CacheControl => cache_control = true,
                Kind::Pragma => {
                    pragma_no_cache |=
                        fields::list(f.value.of(buf)).any(|d| d.eq_ignore_ascii_case(b"no-cache"));
                    continue;
                }
                _ => continue,
            }
            for directive in fields::list(f.value.of(buf)) {
                let (name, value) = policy::split_directive(directive);
                let number = value.and_then(|v| fields::decimal(policy::unquote(v)));
                let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
                if is("no-store") {
                    wants.no_store = true;
                } else if is("no-cache") {
                    wants.no_cache = true;
                } else if is("max-age") {
                    wants.max_age = Some(number.unwrap_or(0));
                } else if is("min-fresh") {
                    wants.min_fresh = Some(number.unwrap_or(policy::MAX_SECONDS));
                } else if is("max-stale") {
                    wants.max_stale = Some(if value.is_some() {
                        number.unwrap_or(0)
                    } else {
                        u64::MAX
                    });
                } else if is("only-if-cached") {
                    wants.only_if_cached = true;
                }
            }
        }
        wants.no_cache |= pragma_no_cache && !cache_control;
        wants
    }

    /// Whether the stale `entry` may answer now while it is revalidated in the background
    /// (RFC 5861 3): within its `stale-while-revalidate` time, and the request asks for
    /// nothing fresher.
    pub fn accepts_while_revalidating(&self, entry: &Entry, now: Instant) -> bool {
        !self.no_cache
            && self.max_age.is_none()
            && self.min_fresh.is_none()
            && !entry.must_revalidate
            && now <= entry.expires + entry.stale_while_revalidate
    }

    /// Whether `entry` may answer now without the origin.
    pub fn accepts(&self, entry: &Entry, now: Instant) -> bool {
        if self.no_cache || self.max_age.is_some_and(|max| entry.age() > max) {
            return false;
        }
        if entry.expires > now {
            let left = (entry.expires - now).as_secs();
            return self.min_fresh.is_none_or(|min| left >= min);
        }
        !entry.must_revalidate
            && self.min_fresh.is_none()
            && self
                .max_stale
                .is_some_and(|max| (now - entry.expires).as_secs() <= max)
    }
}

/// The lead of one fill; its waiters get what [`finish`](Self::finish) reports.
#[derive(Debug)]
pub struct FillGuard<'a> {
    cache: &'a Cache,
    key: Box<[u8]>,
    tx: watch::Sender<Fill>,
    stale: Option<Arc<Entry>>,
}

impl FillGuard<'_> {
    /// The stale entry this fill revalidates, if there is one (RFC 9111 4.3).
    pub fn stale(&self) -> Option<&Arc<Entry>> {
        self.stale.as_ref()
    }

    /// The key the fill stores under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Reports the result (storing the entry first, so nobody misses it in between).
    pub fn finish(self, fill: Fill) {
        if let Fill::Stored(entry) = &fill {
            self.cache.store.insert(self.key.clone(), entry.clone());
        }
        self.tx.send_replace(fill);
    }
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        self.cache.fills().remove(&self.key);
        if self.stale.is_some() {
            self.cache
                .revalidating
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::{self, ResponseHead};

    fn entry(body: usize, ttl: Duration) -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            head: Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"),
            body: Bytes::from(vec![0; body]),
            stored: Instant::now(),
            initial_age: 0,
            expires: Instant::now() + ttl,
            validators: Validators::default(),
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            stale_while_revalidate: Duration::ZERO,
            variants: None,
        })
    }

    #[test]
    fn request_directives_decide_what_may_answer() {
        let wants = |lines: &str| {
            let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n");
            let mut head = crate::http::request::RequestHead::default();
            let limits = crate::http::request::Limits::default();
            assert!(crate::http::request::parse(text.as_bytes(), &limits, &mut head).unwrap());
            Wants::of(head.fields(), text.as_bytes())
        };
        let now = Instant::now();
        let fresh = entry(1, Duration::from_secs(60));
        let mut old = Arc::unwrap_or_clone(entry(1, Duration::ZERO));
        old.expires = now - Duration::from_secs(30);
        assert!(wants("").accepts(&fresh, now));
        assert!(!wants("").accepts(&old, now), "stale");
        assert!(!wants("Cache-Control: no-cache\r\n").accepts(&fresh, now));
        assert!(!wants("Pragma: no-cache\r\n").accepts(&fresh, now));
        assert!(
            wants("Pragma: no-cache\r\nCache-Control: max-stale\r\n").accepts(&fresh, now),
            "Pragma counts only without Cache-Control"
        );
        assert!(!wants("Cache-Control: min-fresh=120\r\n").accepts(&fresh, now));
        assert!(wants("Cache-Control: min-fresh=30\r\n").accepts(&fresh, now));
        assert!(wants("Cache-Control: max-stale=60\r\n").accepts(&old, now));
        assert!(!wants("Cache-Control: max-stale=10\r\n").accepts(&old, now));
        assert!(wants("Cache-Control: max-stale\r\n").accepts(&old, now));
        old.must_revalidate = true;
        assert!(!wants("Cache-Control: max-stale\r\n").accepts(&old, now));
        let mut aged = Arc::unwrap_or_clone(entry(1, Duration::from_secs(60)));
        aged.initial_age = 20;
        assert!(!wants("Cache-Control: max-age=10\r\n").accepts(&aged, now));
        assert!(wants("Cache-Control: max-age=30\r\n").accepts(&aged, now));
        assert!(
            !wants("Cache-Control: max-age=x\r\n").accepts(&aged, now),
            "invalid: 0"
        );
        let w = wants("cache-control: no-store, only-if-cached\r\n");
        assert!(w.no_store && w.only_if_cached);

        // stale-while-revalidate: 30 s past freshness, within 60 s of it.
        let mut swr = Arc::unwrap_or_clone(entry(1, Duration::ZERO));
        swr.expires = now - Duration::from_secs(30);
        swr.stale_while_revalidate = Duration::from_secs(60);
        assert!(wants("").accepts_while_revalidating(&swr, now));
        assert!(!wants("Cache-Control: max-age=600\r\n").accepts_while_revalidating(&swr, now));
        assert!(!wants("Cache-Control: no-cache\r\n").accepts_while_revalidating(&swr, now));
        swr.stale_while_revalidate = Duration::from_secs(20);
        assert!(
            !wants("").accepts_while_revalidating(&swr, now),
            "past the window"
        );
    }

    #[test]
    fn related_keys_stay_within_the_origin() {
        let primary = b"shop:8080/a/b?x=1";
        let key = |r: &str| {
            related_key(primary, r.as_bytes(), false).map(|k| String::from_utf8(k).unwrap())
        };
        assert_eq!(key("/c/d").as_deref(), Some("shop:8080/c/d"));
        assert_eq!(key("c?y#frag").as_deref(), Some("shop:8080/a/c?y"));
        assert_eq!(key("http://SHOP:8080/z").as_deref(), Some("shop:8080/z"));
        assert_eq!(key("//shop:8080").as_deref(), Some("shop:8080/"));
        assert_eq!(key("http://other/z"), None, "another authority");
        assert_eq!(
            key("https://shop:8080/z"),
            None,
            "another scheme is another origin"
        );
        assert_eq!(key("mailto:x@shop"), None);
    }

    #[test]
    fn related_keys_keep_the_scheme_of_schemed_keys() {
        let key = |primary: &str, r: &str| {
            related_key(primary.as_bytes(), r.as_bytes(), true)
                .map(|k| String::from_utf8(k).unwrap())
        };
        let https = "https://shop/a/b?x=1";
        assert_eq!(key(https, "/c").as_deref(), Some("https://shop/c"));
        assert_eq!(key(https, "c").as_deref(), Some("https://shop/a/c"));
        assert_eq!(key(https, "//shop/z").as_deref(), Some("https://shop/z"));
        assert_eq!(
            key(https, "HTTPS://shop/z").as_deref(),
            Some("https://shop/z")
        );
        assert_eq!(key(https, "http://shop/z"), None, "another scheme");
        assert_eq!(key(https, "https://other/z"), None);
        let http = "http://shop/a";
        assert_eq!(key(http, "http://shop/z").as_deref(), Some("http://shop/z"));
        assert_eq!(key(http, "https://shop/z"), None);
    }

    #[test]
    fn invalidating_a_resource_drops_both_schemes() {
        let cache = Cache::new(1 << 20, 1 << 16, None);
        for k in [&b"http://h/p"[..], b"https://h/p", b"https://h/q"] {
            cache.insert(k, entry(1, Duration::from_secs(60)));
        }
        assert!(cache.invalidate_resource(b"https://h/p", true));
        assert!(!cache.holds(b"http://h/p") && !cache.holds(b"https://h/p"));
        assert!(cache.holds(b"https://h/q"));
        // Only one scheme stored: still found.
        assert!(cache.invalidate_resource(b"http://h/q", true));
        assert!(!cache.holds(b"https://h/q"));
        assert!(!cache.invalidate_resource(b"http://h/q", true));
        // Without schemes a key is one key.
        cache.insert(b"http://h/p", entry(1, Duration::from_secs(60)));
        assert!(!cache.invalidate_resource(b"https://h/p", false));
        assert!(cache.holds(b"http://h/p"));
    }

    #[tokio::test]
    async fn coalesces_and_stores() {
        let cache = Cache::new(1 << 20, 1 << 16, None);
        let Lookup::Fill(lead) = cache.lookup(b"/a", &Wants::default()) else {
            panic!("first miss leads")
        };
        let Lookup::Wait(mut rx) = cache.lookup(b"/a", &Wants::default()) else {
            panic!("second miss waits")
        };
        assert!(matches!(
            cache.lookup(b"/b", &Wants::default()),
            Lookup::Fill(_)
        ));
        lead.finish(Fill::Stored(entry(10, Duration::from_secs(60))));
        let got = rx
            .wait_for(|f| !matches!(f, Fill::Pending))
            .await
            .unwrap()
            .clone();
        assert!(matches!(got, Fill::Stored(e) if e.body.len() == 10));
        assert!(matches!(
            cache.lookup(b"/a", &Wants::default()),
            Lookup::Hit(_)
        ));
        assert_eq!(cache.usage().0, 1);
    }

    #[tokio::test]
    async fn a_vanished_leader_releases_waiters_and_stale_entries_miss() {
        let cache = Cache::new(1 << 20, 1 << 16, None);
        let Lookup::Fill(lead) = cache.lookup(b"/a", &Wants::default()) else {
            panic!()
        };
        let Lookup::Wait(mut rx) = cache.lookup(b"/a", &Wants::default()) else {
            panic!()
        };
        drop(lead);
        assert!(rx.wait_for(|f| !matches!(f, Fill::Pending)).await.is_err());
        let Lookup::Fill(lead) = cache.lookup(b"/a", &Wants::default()) else {
            panic!()
        };
        lead.finish(Fill::Stored(entry(1, Duration::ZERO)));
        assert!(matches!(
            cache.lookup(b"/a", &Wants::default()),
            Lookup::Fill(_)
        ));
    }

    #[test]
    fn a_large_object_does_not_push_small_ones_out_while_the_bytes_allow() {
        // The testbed's shape: 256 MiB, objects up to 8 MiB, a heavy tail of sizes. Together
        // they take a fifth of the cache: nothing may be evicted.
        let cache = Cache::new(256 << 20, 8 << 20, None);
        let sizes = (0..3000u32).map(|i| if i % 500 == 0 { 7 << 20 } else { 12_000 });
        for (i, size) in sizes.enumerate() {
            let Lookup::Fill(lead) = cache.lookup(&(i as u32).to_be_bytes(), &Wants::default())
            else {
                panic!()
            };
            lead.finish(Fill::Stored(entry(size, Duration::from_secs(60))));
        }
        assert_eq!((cache.usage().0, cache.evictions()), (3000, 0));
    }

    #[test]
    fn byte_bound() {
        let cache = Cache::new(100_000, 10_000, None);
        for i in 0..100u32 {
            let Lookup::Fill(lead) = cache.lookup(&i.to_be_bytes(), &Wants::default()) else {
                panic!()
            };
            lead.finish(Fill::Stored(entry(9_000, Duration::from_secs(60))));
        }
        assert!(cache.usage().1 <= 100_000, "{:?}", cache.usage());
        assert!(cache.usage().0 >= 5, "{:?}", cache.usage());
        assert_eq!(cache.capacity(), 100_000);
        assert_eq!(
            cache.evictions() as usize + cache.usage().0,
            100,
            "every entry is either held or was counted as evicted"
        );
    }

    #[test]
    fn admission_decides_storing_and_freshness() {
        const T: u64 = 1_000_000;
        let check = |cache: &Cache, status: u16, fields: &str, times: (u64, u64)| {
            let text = format!("HTTP/1.1 {status} X\r\n{fields}\r\n");
            let mut head = ResponseHead::default();
            assert!(response::parse(text.as_bytes(), 4096, &mut head).unwrap());
            cache
                .admit(head.status, head.fields(), text.as_bytes(), false, times)
                .map(|a| (a.initial_age, a.fresh_for.as_secs()))
        };
        let cache = Cache::new(1 << 20, 1 << 16, None);
        assert_eq!(
            check(&cache, 200, "", (T, T)),
            None,
            "no freshness: stale on arrival"
        );
        let with_ttl = Cache::new(1 << 20, 1 << 16, Some(Duration::from_secs(7)));
        assert_eq!(check(&with_ttl, 200, "", (T, T)), Some((0, 7)));
        assert_eq!(
            check(&with_ttl, 200, "Cache-Control: no-store\r\n", (T, T)),
            None
        );
        let aged = "Cache-Control: max-age=30\r\nAge: 10\r\n";
        assert_eq!(check(&cache, 200, aged, (T, T + 2)), Some((12, 18)));
        let not_found = "Cache-Control: max-age=30\r\n";
        assert_eq!(check(&cache, 404, not_found, (T, T)), Some((0, 30)));
        let too_old = "Cache-Control: max-age=30\r\nAge: 40\r\n";
        assert_eq!(check(&cache, 200, too_old, (T, T)), None);
        assert_eq!(
            check(&cache, 200, "Cache-Control: max-age=0\r\n", (T, T)),
            None
        );
        let no_cache = "Cache-Control: no-cache, max-age=9\r\n";
        assert_eq!(check(&cache, 200, no_cache, (T, T)), None);
        // With a validator, kept stale, to be revalidated before it is served.
        let no_cache = "Cache-Control: no-cache, max-age=9\r\nETag: \"x\"\r\n";
        assert_eq!(check(&cache, 200, no_cache, (T, T)), Some((0, 0)));
        let modified = "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nExpires: 0\r\n";
        assert_eq!(check(&cache, 200, modified, (T, T)), Some((0, 0)));
    }
}
