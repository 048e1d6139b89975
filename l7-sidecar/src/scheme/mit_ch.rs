//! `mit-ch`: consistent hashing as in Karger et al., "Consistent Hashing and Random Trees"
//! (STOC 1997): every member is hashed to many points ("virtual nodes") on a 64-bit circle and
//! a key belongs to the first point at or after its hash. Adding or removing a member only
//! moves the keys between its points and their predecessors.
//!
//! Points: `VNODES_PER_WEIGHT` per unit of weight, point `i` of member `name` at
//! xxh3-64(name, seed = i); keys at xxh3-64(key). 160 points per unit keep each member's share
//! within about 10 % of its weight. Independent of member order (equal points are ordered by
//! name). Failover: the next distinct members clockwise.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::contract::{BuildError, Member, Scheme, key_hash, name_ranks, total_weight, validate};
use super::ring::Ring;

/// Ring points per unit of weight.
pub(crate) const VNODES_PER_WEIGHT: u64 = 160;
/// Largest ring built (16 Mi points, 256 MiB).
const MAX_POINTS: u64 = 1 << 24;

/// The virtual-node ring shared by `mit-ch`, `mod-ch` and `bounded`.
pub(crate) fn vnode_ring(scheme: &'static str, members: &[Member]) -> Result<Ring, BuildError> {
    validate(members)?;
    let n_points = total_weight(members) * VNODES_PER_WEIGHT;
    if n_points > MAX_POINTS {
        return Err(BuildError::TooLarge {
            scheme,
            what: "the ring (160 points per weight unit)",
            value: n_points,
            max: MAX_POINTS,
        });
    }
    let mut points = Vec::with_capacity(n_points as usize);
    for (i, m) in members.iter().enumerate() {
        for v in 0..u64::from(m.weight) * VNODES_PER_WEIGHT {
            points.push((xxh3_64_with_seed(m.name.as_bytes(), v), i as u32));
        }
    }
    Ok(Ring::new(points, &name_ranks(members), false))
}

/// Karger et al. consistent hashing ring.
#[derive(Debug)]
pub struct MitCh {
    ring: Ring,
}

impl MitCh {
    /// Places `members` on the ring.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        Ok(Self {
            ring: vnode_ring("mit-ch", members)?,
        })
    }
}

impl Scheme for MitCh {
    fn pick(&self, key: &[u8]) -> usize {
        self.ring.pick(key_hash(key))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.ring.candidates(key_hash(key), out);
    }
}
