//! Who answers a request: the routing table (scheme + member pools, swapped whole on
//! SIGHUP) and the failover order.
//!
//! - The key is the request target as sent (`--key url`, like nginx's `$request_uri`) or the
//!   lower-cased host plus the path and query (`--key host-path`). The cache key is always
//!   the host-path form ([`host_path`]; after the scheme with `cache-key-scheme`,
//!   [`crate::cache::key`]): `--key` chooses how requests spread, never which site's object
//!   a client gets, and the scheme never changes the owner.
//! - Distributed mode: a request is served locally when this server owns the key or when it
//!   came from a peer (it arrived on the peer listener, or carries dl7's hop field). A
//!   request from a peer is never forwarded again, so two sidecars with different views of
//!   the membership cannot bounce a request between them. Otherwise it goes to the owner;
//!   if that fails, to the scheme's next candidate; then it is served locally.
//! - Central mode: every request goes to its owner, then to the next candidates (three
//!   attempts in all); a request that already made `--hop-limit` hops is refused with 508
//!   (a central balancer listed as its own backend would otherwise loop).
//! - Ejected members, members that active health checks found down, and members the front
//!   reports down (`members-from`) are skipped without using an attempt. When every member is ejected or down, the owner is tried
//!   anyway: a cluster whose members all failed recently is better
//!   served by trying than by refusing.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{KeyMode, Membership};
use crate::http::request::RequestHead;
use crate::pool::Pool;
use crate::scheme::{self, BuildError, Scheme};

/// Attempts at members for one request in distributed mode (owner + next candidate).
pub const PEER_ATTEMPTS: usize = 2;
/// Attempts at members for one request in central mode.
pub const CENTRAL_ATTEMPTS: usize = 3;

/// One membership view: the scheme and a pool per member, in member order.
#[derive(Debug)]
pub struct Routing {
    membership: Membership,
    scheme: Box<dyn Scheme>,
    pools: Vec<Arc<Pool>>,
}

impl Routing {
    /// Builds the table for `membership`. Pools of members whose name and address are
    /// unchanged from `previous` are kept (with their connections and outlier records);
    /// `new_pool` makes the others.
    pub fn build(
        membership: &Membership,
        previous: Option<&Routing>,
        mut new_pool: impl FnMut(&str, SocketAddr) -> Arc<Pool>,
    ) -> Result<Self, BuildError> {
        let scheme = scheme::build(&membership.scheme, &membership.members)?;
        let pools = membership
            .members
            .iter()
            .zip(&membership.addrs)
            .map(|(m, &addr)| {
                previous
                    .and_then(|p| {
                        p.pools
                            .iter()
                            .find(|pool| pool.name() == m.name && pool.addr() == addr)
                    })
                    .cloned()
                    .unwrap_or_else(|| new_pool(&m.name, addr))
            })
            .collect();
        Ok(Self {
            membership: membership.clone(),
            scheme,
            pools,
        })
    }

    /// The membership this table was built from.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The scheme.
    pub fn scheme(&self) -> &dyn Scheme {
        self.scheme.as_ref()
    }

    /// Every member's pool, in member order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// True when member `i` is this server.
    pub fn is_self(&self, i: usize) -> bool {
        self.membership.self_index == Some(i)
    }
}

/// The key to hash for a request.
pub fn key<'a>(
    mode: KeyMode,
    head: &RequestHead,
    buf: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    match mode {
        KeyMode::Url => head.target(buf),
        KeyMode::HostPath => host_path(head, buf, scratch),
    }
}

/// The lower-cased authority (an absolute-form target's, else `Host`) followed by the path
/// and query: the `host-path` routing key, and always the cache key, so that two sites
/// behind one origin never share a cached object whatever the routing key is. The parser
/// has checked the authority (no `/`, `?`, `@` or whitespace), so no two requests for
/// different resources build the same key.
pub fn host_path<'a>(head: &RequestHead, buf: &[u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    scratch.clear();
    append_host_path(head, buf, scratch);
    scratch
}

/// Appends [`host_path`]'s key to `out` (after what is there: a cache key's scheme).
pub fn append_host_path(head: &RequestHead, buf: &[u8], out: &mut Vec<u8>) {
    out.extend(
        head.authority(buf)
            .unwrap_or_default()
            .iter()
            .map(u8::to_ascii_lowercase),
    );
    let path = head.path_and_query(buf);
    if !path.starts_with(b"/") && path != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(path);
}

/// Where to try next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Forward to member `i`.
    Member(usize),
    /// Serve locally.
    Local,
    /// Nothing left to try.
    Exhausted,
}

/// The failover walk for one request: the owner, then the scheme's candidates, skipping
/// ejected members and stopping at this server or after `max_attempts` attempts.
#[derive(Debug)]
pub struct Failover<'a> {
    routing: &'a Routing,
    key: &'a [u8],
    order: &'a mut Vec<usize>,
    owner: usize,
    /// Next position in `order`; `None` until the candidates are needed.
    pos: Option<usize>,
    attempts: usize,
    max_attempts: usize,
    local_last: bool,
}

impl<'a> Failover<'a> {
    /// The walk for `key` whose owner is `owner`; `local_last`: serve locally when the
    /// members are exhausted (distributed mode). `order` is scratch space.
    pub fn new(
        routing: &'a Routing,
        key: &'a [u8],
        owner: usize,
        order: &'a mut Vec<usize>,
        max_attempts: usize,
        local_last: bool,
    ) -> Self {
        Self {
            routing,
            key,
            order,
            owner,
            pos: None,
            attempts: 0,
            max_attempts,
            local_last,
        }
    }

    /// The next target.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Target {
        let end = if self.local_last {
            Target::Local
        } else {
            Target::Exhausted
        };
        if self.attempts >= self.max_attempts {
            return end;
        }
        loop {
            let member = match self.pos {
                None => {
                    self.pos = Some(0);
                    self.owner
                }
                Some(pos) => {
                    if pos == 0 {
                        self.routing.scheme.candidates(self.key, self.order);
                    }
                    match self.order.get(pos) {
                        Some(&m) => {
                            self.pos = Some(pos + 1);
                            if m == self.owner {
                                continue;
                            }
                            m
                        }
                        None if self.attempts == 0 && !self.local_last => {
                            // Every member is ejected: try the owner anyway.
                            self.attempts = self.max_attempts;
                            return Target::Member(self.owner);
                        }
                        None => return end,
                    }
                }
            };
            if self.routing.is_self(member) {
                return Target::Local;
            }
            if !self.routing.pools[member].is_available() {
                continue;
            }
            self.attempts += 1;
            return Target::Member(member);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{OutlierSettings, PoolSettings};
    use crate::http::request::{self, Limits};
    use crate::metrics::Metrics;
    use crate::scheme::Member;

    /// A pool that ejects after one failure, for a minute.
    fn test_pool(metrics: &Metrics, name: &str, addr: SocketAddr) -> Arc<Pool> {
        Arc::new(Pool::new(
            name,
            addr,
            PoolSettings {
                max_idle: 1,
                idle_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
            },
            OutlierSettings {
                failures: 1,
                base: Duration::from_secs(60),
                max: Duration::from_secs(60),
            },
            metrics.pool(name),
        ))
    }

    fn routing(names: &[&str], me: Option<usize>) -> Routing {
        let metrics = Metrics::new().unwrap();
        let membership = Membership {
            scheme: "rendezvous".into(),
            members: names.iter().map(|n| Member::new(*n, 1)).collect(),
            addrs: names
                .iter()
                .enumerate()
                .map(|(i, _)| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)))
                .collect(),
            self_index: me,
        };
        Routing::build(&membership, None, |name, addr| {
            test_pool(&metrics, name, addr)
        })
        .unwrap()
    }

    fn walk(r: &Routing, key: &[u8], max: usize, local_last: bool) -> Vec<Target> {
        let mut order = Vec::new();
        let owner = r.scheme().pick(key);
        let mut f = Failover::new(r, key, owner, &mut order, max, local_last);
        let mut out = Vec::new();
        for _ in 0..10 {
            let t = f.next();
            out.push(t);
            if !matches!(t, Target::Member(_)) {
                break;
            }
        }
        out
    }

    #[test]
    fn central_walk_tries_candidates_then_gives_up() {
        let r = routing(&["a", "b", "c", "d"], None);
        let mut order = Vec::new();
        r.scheme().candidates(b"/k", &mut order);
        let got = walk(&r, b"/k", CENTRAL_ATTEMPTS, false);
        let want: Vec<Target> = order[..3]
            .iter()
            .map(|&m| Target::Member(m))
            .chain([Target::Exhausted])
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ejected_members_are_skipped_and_all_ejected_tries_the_owner() {
        let r = routing(&["a", "b", "c"], None);
        let mut order = Vec::new();
        r.scheme().candidates(b"/k", &mut order);
        r.pools()[order[0]].outlier.failure();
        assert_eq!(walk(&r, b"/k", 2, false)[0], Target::Member(order[1]));
        for p in r.pools() {
            p.outlier.failure();
        }
        assert_eq!(
            walk(&r, b"/k", 2, false),
            [Target::Member(order[0]), Target::Exhausted]
        );
    }

    #[test]
    fn distributed_walk_stops_at_self() {
        let probe = routing(&["a", "b", "c"], None);
        let mut order = Vec::new();
        probe.scheme().candidates(b"/k", &mut order);
        let r = routing(&["a", "b", "c"], Some(order[1]));
        assert_eq!(
            walk(&r, b"/k", PEER_ATTEMPTS, true),
            [Target::Member(order[0]), Target::Local]
        );
    }

    #[test]
    fn reload_keeps_unchanged_pools() {
        let r = routing(&["a", "b"], None);
        let mut m = r.membership().clone();
        m.members.push(Member::new("c", 1));
        m.addrs.push(SocketAddr::from(([127, 0, 0, 1], 9)));
        let mut made = Vec::new();
        let metrics = Metrics::new().unwrap();
        let again = Routing::build(&m, Some(&r), |name, addr| {
            made.push(name.to_owned());
            test_pool(&metrics, name, addr)
        })
        .unwrap();
        assert_eq!(made, ["c"]);
        assert!(Arc::ptr_eq(&again.pools()[0], &r.pools()[0]));
    }

    #[test]
    fn keys() {
        let buf = b"GET /p?q HTTP/1.1\r\nHost: Example.COM\r\n\r\n";
        let mut head = request::RequestHead::default();
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        let mut scratch = Vec::new();
        assert_eq!(key(KeyMode::Url, &head, buf, &mut scratch), b"/p?q");
        assert_eq!(
            key(KeyMode::HostPath, &head, buf, &mut scratch),
            b"example.com/p?q"
        );
        let buf = b"GET http://Example.com?x HTTP/1.1\r\nHost: other\r\n\r\n";
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        assert_eq!(
            key(KeyMode::HostPath, &head, buf, &mut scratch),
            b"example.com/?x"
        );
        assert_eq!(
            key(KeyMode::Url, &head, buf, &mut scratch),
            b"http://Example.com?x"
        );
        let buf = b"GET /x HTTP/1.0\r\n\r\n";
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        assert_eq!(key(KeyMode::HostPath, &head, buf, &mut scratch), b"/x");
    }

    /// The collisions an unchecked Host allowed: `Host: good/p/slash` with `/T/page` against
    /// `Host: good` with `/p/slash/T/page` (now refused by the parser), and an absolute-form
    /// target whose authority disagrees with `Host` (the authority wins).
    #[test]
    fn keys_of_different_resources_differ() {
        let mut head = request::RequestHead::default();
        let bad = b"GET /T/page HTTP/1.1\r\nHost: good/p/slash\r\n\r\n";
        assert!(request::parse(bad, &Limits::default(), &mut head).is_err());
        let buf = b"GET http://good/x HTTP/1.1\r\nHost: evil\r\n\r\n";
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        let mut scratch = Vec::new();
        assert_eq!(host_path(&head, buf, &mut scratch), b"good/x");
        let buf = b"GET /x HTTP/1.1\r\nHost: evil\r\n\r\n";
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        assert_eq!(host_path(&head, buf, &mut scratch), b"evil/x");
    }
}
