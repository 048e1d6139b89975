//! What every scheme shares: the member type, the build error, the [`Scheme`] trait, and
//! the helpers the implementations use. The registry (`scheme/mod.rs`) and every
//! implementation depend on this module; it depends on none of them.

use std::fmt;

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
    /// The scheme name is not in the registry (`scheme::SCHEMES`).
    #[error("unknown scheme {name:?} (known: {known})")]
    UnknownScheme {
        /// The name that was asked for.
        name: String,
        /// The registry's names, comma-separated.
        known: String,
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
