//! The embedded cache: a byte-bounded store of complete `GET 200` responses (quick_cache:
//! sharded, CLOCK-Pro eviction, weighted by bytes) and request coalescing, so that any
//! number of concurrent misses for one key make one origin fetch.
//!
//! What is stored (RFC 9111, simplified for a shared cache that keys on the URL alone):
//! - requests: `GET` without a body and without `Authorization`; a request with
//!   `Cache-Control: no-store` or `no-cache` bypasses the cache (and is not stored);
//! - responses: status 200 with a known size up to the object limit (`Content-Length`, or
//!   chunked and found to fit); not with `Cache-Control: no-store`, `private` or `no-cache`,
//!   nor with `Set-Cookie` or `Vary` (the key would not capture what varies);
//! - freshness: `s-maxage`, else `max-age` (0 means not stored), else `--cache-ttl`.
//!   `Expires` and validators are not interpreted; a stale entry is simply fetched again.
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

use crate::http::Field;
use crate::http::fields::{self, Kind};

/// Bookkeeping bytes counted per entry on top of its key, head and body.
const ENTRY_OVERHEAD: u64 = 128;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Status line and fields, ending with `Content-Length` and without the empty line.
    pub head: Bytes,
    /// The body.
    pub body: Bytes,
    /// When it was stored.
    pub stored: Instant,
    /// When it stops being fresh.
    pub expires: Instant,
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
}

#[derive(Clone)]
struct Weight;

impl Weighter<Box<[u8]>, Arc<Entry>> for Weight {
    fn weight(&self, key: &Box<[u8]>, entry: &Arc<Entry>) -> u64 {
        key.len() as u64 + entry.head.len() as u64 + entry.body.len() as u64 + ENTRY_OVERHEAD
    }
}

type Store = quick_cache::sync::Cache<Box<[u8]>, Arc<Entry>, Weight>;

/// The cache and the fills under way.
pub struct Cache {
    store: Store,
    fills: Mutex<HashMap<Box<[u8]>, watch::Receiver<Fill>>>,
    max_object: u64,
    ttl: Duration,
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
    /// A cache of `bytes` bytes that stores objects up to `max_object` bytes, fresh for
    /// `ttl` when the origin does not say.
    pub fn new(bytes: u64, max_object: u64, ttl: Duration) -> Self {
        // Each shard holds 1/shards of the bytes; keep a shard able to hold the largest object.
        let per_object = max_object.max(1);
        let shards = (bytes / per_object).clamp(1, 64);
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
        let store = match options {
            Ok(options) => {
                Store::with_options(options, Weight, Default::default(), Default::default())
            }
            Err(_) => Store::with_weighter(64, bytes, Weight),
        };
        Self {
            store,
            fills: Mutex::new(HashMap::new()),
            max_object,
            ttl,
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

    fn fills(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, watch::Receiver<Fill>>> {
        self.fills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh entry for `key` (stale ones are dropped).
    pub fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
        let entry = self.store.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry);
        }
        self.store.remove(key);
        None
    }

    /// Looks `key` up: a hit, the lead of a new fill, or a fill to wait for.
    pub fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        if let Some(entry) = self.get(key) {
            return Lookup::Hit(entry);
        }
        let mut fills = self.fills();
        if let Some(waiting) = fills.get(key) {
            return Lookup::Wait(waiting.clone());
        }
        // A fill may have finished between the first look and taking the lock.
        if let Some(entry) = self.get(key) {
            return Lookup::Hit(entry);
        }
        let (tx, rx) = watch::channel(Fill::Pending);
        fills.insert(key.into(), rx);
        Lookup::Fill(FillGuard {
            cache: self,
            key: key.into(),
            tx,
        })
    }

    /// How long a response with these fields may be served, or `None` when it must not be
    /// stored.
    pub fn freshness(&self, status: u16, fields: &[Field], buf: &[u8]) -> Option<Duration> {
        if status != 200 {
            return None;
        }
        let mut max_age = None;
        let mut s_maxage = None;
        for f in fields {
            match f.kind {
                Kind::Uncacheable => return None,
                Kind::CacheControl => {
                    for directive in fields::list(f.value.of(buf)) {
                        let (name, value) = match directive.iter().position(|&b| b == b'=') {
                            Some(i) => (&directive[..i], Some(&directive[i + 1..])),
                            None => (directive, None),
                        };
                        let seconds = || value.and_then(|v| fields::decimal(unquote(v)));
                        if name.eq_ignore_ascii_case(b"no-store")
                            || name.eq_ignore_ascii_case(b"private")
                            || name.eq_ignore_ascii_case(b"no-cache")
                        {
                            return None;
                        } else if name.eq_ignore_ascii_case(b"max-age") {
                            max_age = Some(seconds()?);
                        } else if name.eq_ignore_ascii_case(b"s-maxage") {
                            s_maxage = Some(seconds()?);
                        }
                    }
                }
                _ => {}
            }
        }
        match s_maxage.or(max_age) {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s.min(365 * 24 * 3600))),
            None => Some(self.ttl),
        }
    }
}

/// `v` without one pair of surrounding double quotes.
fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// True when a request's `Cache-Control` asks to bypass the cache (`no-store`, `no-cache`).
pub fn bypass(fields: &[Field], buf: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| f.kind == Kind::CacheControl)
        .any(|f| {
            fields::list(f.value.of(buf))
                .any(|d| d.eq_ignore_ascii_case(b"no-store") || d.eq_ignore_ascii_case(b"no-cache"))
        })
}

/// The lead of one fill; its waiters get what [`finish`](Self::finish) reports.
#[derive(Debug)]
pub struct FillGuard<'a> {
    cache: &'a Cache,
    key: Box<[u8]>,
    tx: watch::Sender<Fill>,
}

impl FillGuard<'_> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::{self, ResponseHead};

    fn entry(body: usize, ttl: Duration) -> Arc<Entry> {
        Arc::new(Entry {
            head: Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"),
            body: Bytes::from(vec![0; body]),
            stored: Instant::now(),
            expires: Instant::now() + ttl,
        })
    }

    #[tokio::test]
    async fn coalesces_and_stores() {
        let cache = Cache::new(1 << 20, 1 << 16, Duration::from_secs(60));
        let Lookup::Fill(lead) = cache.lookup(b"/a") else {
            panic!("first miss leads")
        };
        let Lookup::Wait(mut rx) = cache.lookup(b"/a") else {
            panic!("second miss waits")
        };
        assert!(matches!(cache.lookup(b"/b"), Lookup::Fill(_)));
        lead.finish(Fill::Stored(entry(10, Duration::from_secs(60))));
        let got = rx
            .wait_for(|f| !matches!(f, Fill::Pending))
            .await
            .unwrap()
            .clone();
        assert!(matches!(got, Fill::Stored(e) if e.body.len() == 10));
        assert!(matches!(cache.lookup(b"/a"), Lookup::Hit(_)));
        assert_eq!(cache.usage().0, 1);
    }

    #[tokio::test]
    async fn a_vanished_leader_releases_waiters_and_stale_entries_miss() {
        let cache = Cache::new(1 << 20, 1 << 16, Duration::from_secs(60));
        let Lookup::Fill(lead) = cache.lookup(b"/a") else {
            panic!()
        };
        let Lookup::Wait(mut rx) = cache.lookup(b"/a") else {
            panic!()
        };
        drop(lead);
        assert!(rx.wait_for(|f| !matches!(f, Fill::Pending)).await.is_err());
        let Lookup::Fill(lead) = cache.lookup(b"/a") else {
            panic!()
        };
        lead.finish(Fill::Stored(entry(1, Duration::ZERO)));
        assert!(matches!(cache.lookup(b"/a"), Lookup::Fill(_)));
    }

    #[test]
    fn byte_bound() {
        let cache = Cache::new(100_000, 10_000, Duration::from_secs(60));
        for i in 0..100u32 {
            let Lookup::Fill(lead) = cache.lookup(&i.to_be_bytes()) else {
                panic!()
            };
            lead.finish(Fill::Stored(entry(9_000, Duration::from_secs(60))));
        }
        assert!(cache.usage().1 <= 100_000, "{:?}", cache.usage());
        assert!(cache.usage().0 >= 5, "{:?}", cache.usage());
    }

    #[test]
    fn freshness_rules() {
        let cache = Cache::new(1 << 20, 1 << 16, Duration::from_secs(7));
        let check = |status: u16, fields: &str| {
            let text = format!("HTTP/1.1 {status} X\r\n{fields}\r\n");
            let mut head = ResponseHead::default();
            assert!(response::parse(text.as_bytes(), 4096, &mut head).unwrap());
            cache.freshness(head.status, head.fields(), text.as_bytes())
        };
        assert_eq!(check(200, ""), Some(Duration::from_secs(7)));
        assert_eq!(
            check(200, "Cache-Control: public, max-age=30\r\n"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            check(200, "Cache-Control: max-age=30, s-maxage=\"5\"\r\n"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(check(200, "Cache-Control: max-age=0\r\n"), None);
        assert_eq!(check(200, "Cache-Control: no-store\r\n"), None);
        assert_eq!(check(200, "cache-control: Private\r\n"), None);
        assert_eq!(check(200, "Cache-Control: max-age=abc\r\n"), None);
        assert_eq!(check(200, "Set-Cookie: a=b\r\n"), None);
        assert_eq!(check(200, "Vary: Accept\r\n"), None);
        assert_eq!(check(404, ""), None);
    }
}
