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
mod contract;
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
pub use contract::{BuildError, Member, Scheme};
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
            known: names().collect::<Vec<_>>().join(", "),
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

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests;
