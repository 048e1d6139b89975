//! `mod-ch`: "modified consistent hashing". The paper does not spell its variant out; dl7
//! takes the common refinement of a consistent-hashing ring with a fixed number of equal-size
//! segments of the hash space (Dynamo's "strategy 3", DeCandia et al., SOSP 2007; the
//! placement groups of Ceph, Weil et al., OSDI 2006): a key falls into one of `SEGMENTS`
//! equal segments (xxh3-64(key) mod 4096), and each segment is owned by the member that owns
//! the segment's point on the `mit-ch` ring.
//!
//! Why: ownership moves in whole segments, so a membership change can be described (and its
//! data moved) segment by segment, and a lookup is one table read instead of a binary
//! search. It inherits the ring's minimal disruption; balance is the ring's plus segment
//! granularity (1/4096). Independent of member order. Failover: the ring walk from the
//! segment's point.

use super::contract::{BuildError, Member, Scheme, key_hash};
use super::ring::Ring;

/// Number of equal segments of the hash space.
pub const SEGMENTS: usize = 4096;

/// Ring position of segment `s`.
fn segment_point(s: usize) -> u64 {
    key_hash(&(s as u64).to_le_bytes())
}

/// Consistent hashing over fixed hash-space segments.
#[derive(Debug)]
pub struct ModCh {
    ring: Ring,
    owner: Box<[u32]>,
}

impl ModCh {
    /// Builds the ring and resolves every segment's owner.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        let ring = super::mit_ch::vnode_ring("mod-ch", members)?;
        let owner = (0..SEGMENTS)
            .map(|s| ring.pick(segment_point(s)) as u32)
            .collect();
        Ok(Self { ring, owner })
    }

    fn segment(key: &[u8]) -> usize {
        (key_hash(key) % SEGMENTS as u64) as usize
    }
}

impl Scheme for ModCh {
    fn pick(&self, key: &[u8]) -> usize {
        self.owner[Self::segment(key)] as usize
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.ring.candidates(segment_point(Self::segment(key)), out);
    }
}
