//! URL hashing schemes: which member of the cluster owns a key.
//!
//! Every scheme implements one trait, [`Scheme`], and lives in its own file; the sidecar, the
//! `route` command and the benchmark only ever talk to the trait and to the one registry of
//! scheme names, [`SCHEMES`] (the Pingora `BackendSelection` layout). A scheme is built from a
//! member list (name + weight), answers [`Scheme::pick`] without allocating, and lists all
//! members in failover order with [`Scheme::candidates`].
//!
//! Everything a scheme computes is a pure function of the member list (and, for `rr`, `ht-rr`
//! and `bounded`, of the documented runtime state): no random seeds, no `HashMap` iteration
//! order, bytes interpreted as little-endian where a hash is read from a digest, and no libm
//! transcendental functions in a decision (`detmath.rs`), so two sidecars on different
//! hosts and architectures agree on every owner.
//!
//! ```
//! use l7_sidecar::scheme::{self, Member};
//!
//! let members = [Member::new("h1:80", 1), Member::new("h2:80", 2)];
//! let ring = scheme::build("ketama", &members).unwrap();
//! let owner = ring.pick(b"/index.html");
//! let mut order = Vec::new();
//! ring.candidates(b"/index.html", &mut order);
//! assert_eq!(order[0], owner);
//! assert_eq!(order.len(), members.len());
//! ```

mod bounded;
mod carp;
mod detmath;
mod failover;
mod ht_rr;
mod jump;
mod ketama;
mod maglev;
mod md5;
mod mit_ch;
mod mod_ch;
mod nginx;
mod rendezvous;
mod ring;
mod rr;
mod weighted_turns;

use std::fmt;

pub use bounded::{Bounded, DEFAULT_BALANCE_FACTOR};
pub use carp::Carp;
pub use ht_rr::HtRr;
pub use jump::Jump;
pub use ketama::Ketama;
pub use maglev::Maglev;
pub use md5::Md5Mod;
pub use mit_ch::MitCh;
pub use mod_ch::ModCh;
pub use nginx::Nginx;
pub use rendezvous::Rendezvous;
pub use rr::RoundRobin;

/// One member of the cluster as configured: its name (for most schemes the name is what gets
/// hashed, so `h1:80` and `h1:8080` are different members) and its relative weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name exactly as configured, e.g. `10.0.0.1:80`.
    pub name: String,
    /// Relative capacity; at least 1. A member with twice the weight owns about twice the keys.
    pub weight: u32,
}

impl Member {
    /// A member with the given name and weight.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self {
            name: name.into(),
            weight,
        }
    }
}

/// Why a scheme could not be built from a member list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The scheme name is not in [`SCHEMES`].
    #[error("unknown scheme {name:?} (known: {})", names().collect::<Vec<_>>().join(", "))]
    UnknownScheme {
        /// The name that was asked for.
        name: String,
    },
    /// No members at all: nothing could own a key.
    #[error("the member list is empty")]
    NoMembers,
    /// A member's name is empty (e.g. `a,,b`).
    #[error("member #{index} has an empty name")]
    EmptyName {
        /// Position of the member in the list, counting from 1.
        index: usize,
    },
    /// The same name twice: both would hash to the same points, so it is always a mistake.
    #[error("member {name:?} is listed twice")]
    DuplicateMember {
        /// The repeated name.
        name: String,
    },
    /// Weight 0. Every scheme needs a positive share; drain a member by removing it.
    #[error(
        "member {name:?} has weight 0; weights must be at least 1 (remove a member to drain it)"
    )]
    ZeroWeight {
        /// The member's name.
        name: String,
    },
    /// The weights make a table or ring too large to build.
    #[error("{scheme}: {what} would be {value}, more than the supported {max}")]
    TooLarge {
        /// The scheme that refused.
        scheme: &'static str,
        /// What grew too large (ring points, table entries).
        what: &'static str,
        /// The size the weights asked for.
        value: u64,
        /// The largest size the scheme builds.
        max: u64,
    },
    /// `bounded` needs a balance factor of at least 100 %.
    #[error("bounded: balance factor {0} % is below 100 %")]
    BalanceFactor(u32),
}

/// A way to map keys (URLs) to members.
///
/// Object safe so that the sidecar can hold `Box<dyn Scheme>` (or an `Arc`) and swap it when
/// membership changes. Member indexes always refer to the member list the scheme was built
/// from, in the order given.
pub trait Scheme: Send + Sync + fmt::Debug {
    /// The member that owns `key`. Never allocates; cheap enough to call per request.
    fn pick(&self, key: &[u8]) -> usize;

    /// All members in failover order for `key`, each exactly once, starting with the member
    /// [`pick`](Self::pick) would have returned. `out` is cleared first; reusing it avoids
    /// allocating per request.
    fn candidates(&self, key: &[u8], out: &mut Vec<usize>);

    /// A request has started on `member`. Only load-aware schemes (`bounded`) use it; the
    /// sidecar calls it after choosing a member and calls [`end`](Self::end) when the response
    /// is finished or failed.
    fn begin(&self, _member: usize) {}

    /// A request that was [`begin`](Self::begin)-reported has finished on `member`.
    fn end(&self, _member: usize) {}
}

/// What moving membership does to a scheme's key -> member mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// No content affinity in the first place (`rr`) or ownership is not kept (`ht-rr`
    /// starts with an empty table), so every key may move.
    Everything,
    /// Most keys move (`md5`: hash mod N).
    Most,
    /// Only the keys of the joining or leaving member move (about 1/(N+1) and 1/N).
    Minimal,
    /// Minimal, but only when members join or leave at the end of the list (`jump`).
    MinimalAtEnd,
}

/// Builds a boxed scheme from a member list.
type Builder = fn(&[Member]) -> Result<Box<dyn Scheme>, BuildError>;

/// One entry of the scheme registry.
pub struct SchemeInfo {
    /// The scheme's name as used in configuration and on the command line.
    pub name: &'static str,
    /// One line saying what it is.
    pub summary: &'static str,
    /// True when the same key always maps to the same member without any history.
    pub affinity: bool,
    /// True when the mapping does not depend on the order in which members are listed.
    pub order_independent: bool,
    /// What a membership change moves.
    pub disruption: Disruption,
    build: Builder,
}

impl SchemeInfo {
    /// Builds this scheme for `members`.
    pub fn build(&self, members: &[Member]) -> Result<Box<dyn Scheme>, BuildError> {
        (self.build)(members)
    }
}

impl fmt::Debug for SchemeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemeInfo")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

macro_rules! entry {
    ($name:literal, $ty:ty, $affinity:expr, $order:expr, $disruption:expr, $summary:literal) => {
        SchemeInfo {
            name: $name,
            summary: $summary,
            affinity: $affinity,
            order_independent: $order,
            disruption: $disruption,
            build: |members| <$ty>::new(members).map(|s| Box::new(s) as Box<dyn Scheme>),
        }
    };
}

/// The registry: every scheme name and how to build it. The paper's six come first.
pub static SCHEMES: &[SchemeInfo] = &[
    entry!(
        "rr",
        RoundRobin,
        false,
        false,
        Disruption::Everything,
        "smooth weighted round robin, no content affinity"
    ),
    entry!(
        "md5",
        Md5Mod,
        true,
        false,
        Disruption::Most,
        "MD5(key) mod total weight"
    ),
    entry!(
        "mit-ch",
        MitCh,
        true,
        true,
        Disruption::Minimal,
        "Karger et al. consistent hashing ring, 160 virtual nodes per weight unit"
    ),
    entry!(
        "carp",
        Carp,
        true,
        true,
        Disruption::Minimal,
        "Cache Array Routing Protocol, draft-vinod-carp-v1-03"
    ),
    entry!(
        "mod-ch",
        ModCh,
        true,
        true,
        Disruption::Minimal,
        "consistent hashing behind a fixed table of 4096 equal hash-space segments"
    ),
    entry!(
        "ht-rr",
        HtRr,
        true,
        false,
        Disruption::Everything,
        "hash table whose slots are dealt out round robin on first use (Kwak & Chung)"
    ),
    entry!(
        "ketama",
        Ketama,
        true,
        true,
        Disruption::Minimal,
        "libketama-compatible MD5 continuum"
    ),
    entry!(
        "nginx",
        Nginx,
        true,
        true,
        Disruption::Minimal,
        "same mapping as nginx `hash $request_uri consistent`"
    ),
    entry!(
        "rendezvous",
        Rendezvous,
        true,
        true,
        Disruption::Minimal,
        "weighted highest random weight (HRW)"
    ),
    entry!(
        "jump",
        Jump,
        true,
        false,
        Disruption::MinimalAtEnd,
        "Lamping & Veach jump consistent hash over weight-expanded buckets"
    ),
    entry!(
        "maglev",
        Maglev,
        true,
        true,
        Disruption::Minimal,
        "Maglev lookup table, M = 65537"
    ),
    entry!(
        "bounded",
        Bounded,
        true,
        true,
        Disruption::Minimal,
        "consistent hashing with bounded loads, balance factor 125 %"
    ),
];

/// The registry entry called `name`.
pub fn lookup(name: &str) -> Result<&'static SchemeInfo, BuildError> {
    SCHEMES
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| BuildError::UnknownScheme {
            name: name.to_owned(),
        })
}

/// Builds the scheme called `name` for `members`.
pub fn build(name: &str, members: &[Member]) -> Result<Box<dyn Scheme>, BuildError> {
    lookup(name)?.build(members)
}

/// All scheme names, in registry order.
pub fn names() -> impl Iterator<Item = &'static str> {
    SCHEMES.iter().map(|s| s.name)
}

/// The checks every scheme makes before building: at least one member, non-empty unique
/// names, positive weights.
pub(crate) fn validate(members: &[Member]) -> Result<(), BuildError> {
    if members.is_empty() {
        return Err(BuildError::NoMembers);
    }
    let mut names: Vec<&str> = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        if m.name.is_empty() {
            return Err(BuildError::EmptyName { index: i + 1 });
        }
        if m.weight == 0 {
            return Err(BuildError::ZeroWeight {
                name: m.name.clone(),
            });
        }
        names.push(&m.name);
    }
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(BuildError::DuplicateMember {
            name: w[0].to_owned(),
        });
    }
    Ok(())
}

/// Each member's position when members are sorted by name: the tie-breaker that makes the
/// order-independent schemes independent of the order members are listed in.
pub(crate) fn name_ranks(members: &[Member]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].name.cmp(&members[b].name));
    let mut rank = vec![0; members.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u32;
    }
    rank
}

/// The 64-bit key hash shared by the schemes that do not prescribe one (xxh3: fast, and
/// defined on bytes so it is the same on every architecture).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Total of all weights (cannot overflow: at most 2^32 members of weight < 2^32).
pub(crate) fn total_weight(members: &[Member]) -> u64 {
    members.iter().map(|m| u64::from(m.weight)).sum()
}

/// The weights divided by their greatest common divisor: `[4, 2]` and `[2, 1]` build the same
/// tables and turn sequences.
pub(crate) fn reduced_weights(members: &[Member]) -> Vec<u64> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = members.iter().fold(0, |g, m| gcd(g, u64::from(m.weight)));
    members.iter().map(|m| u64::from(m.weight) / g).collect()
}

/// The member that sorts first under `order` (`Less` = comes first), among `0..n`, `n > 0`.
pub(crate) fn first_by(n: usize, order: impl Fn(usize, usize) -> std::cmp::Ordering) -> usize {
    (1..n).fold(0, |best, m| {
        if order(m, best) == std::cmp::Ordering::Less {
            m
        } else {
            best
        }
    })
}

/// The murmur3 64-bit finaliser: a bijective mixer used to derive per-member scores from one
/// key hash without hashing the key again for every member.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests;
