//! `maglev`: the lookup table of Google's Maglev load balancer (Eisenbud et al., NSDI 2016,
//! section 3.4): every member walks its own permutation of `M` slots and members take turns
//! claiming their next free slot until the table is full. Near-perfect balance, one table
//! read per lookup, and near-minimal disruption (slightly more than consistent hashing moves,
//! as the paper shows).
//!
//! * `M` = 65,537 (prime, so every skip generates a full permutation; >= 100 x members up to
//!   655 members, as the paper recommends).
//! * `offset = xxh3-64(name, seed 0) mod M`, `skip = xxh3-64(name, seed 1) mod (M - 1) + 1`.
//! * Weights (divided by their gcd) give a member that many consecutive turns per round, the
//!   usual weighted variant (Katran does the same).
//! * Members take turns in name order, so the table is independent of member order.
//!
//! Key: xxh3-64(key) mod M. Failover: the owner, then the shared HRW order.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::contract::{BuildError, Member, Scheme, key_hash, reduced_weights, validate};
use super::failover::Failover;

/// Table size.
pub const TABLE_SIZE: usize = 65_537;
const EMPTY: u32 = u32::MAX;

/// Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    failover: Failover,
}

impl Maglev {
    /// Populates the table for `members`.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        if members.len() > TABLE_SIZE {
            return Err(BuildError::TooLarge {
                scheme: "maglev",
                what: "the member count",
                value: members.len() as u64,
                max: TABLE_SIZE as u64,
            });
        }
        let m = TABLE_SIZE as u64;
        let turns = reduced_weights(members);
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| members[a].name.cmp(&members[b].name));
        let offset: Vec<u64> = members
            .iter()
            .map(|x| xxh3_64_with_seed(x.name.as_bytes(), 0) % m)
            .collect();
        let skip: Vec<u64> = members
            .iter()
            .map(|x| xxh3_64_with_seed(x.name.as_bytes(), 1) % (m - 1) + 1)
            .collect();
        let mut next = vec![0u64; members.len()];
        let mut table = vec![EMPTY; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for &i in &order {
                for _ in 0..turns[i] {
                    // Each member's permutation visits every slot once, so this ends.
                    loop {
                        let c = ((offset[i] + next[i] * skip[i]) % m) as usize;
                        next[i] += 1;
                        if table[c] == EMPTY {
                            table[c] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        Ok(Self {
            table: table.into_boxed_slice(),
            failover: Failover::new(members),
        })
    }
}

impl Scheme for Maglev {
    fn pick(&self, key: &[u8]) -> usize {
        self.table[(key_hash(key) % TABLE_SIZE as u64) as usize] as usize
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.failover.fill(key, self.pick(key), out);
    }
}
