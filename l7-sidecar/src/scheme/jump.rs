//! `jump`: jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash
//! Algorithm", 2014): no table, O(log n) time, and perfectly minimal movement - but buckets
//! can only be added or removed at the end of the list.
//!
//! Weights: member `i` is expanded into `weight_i` consecutive buckets (weights divided by
//! their gcd first), and a key's owner is the owner of its bucket. Adding or removing the
//! last member therefore moves exactly its share; removing a member in the middle renumbers
//! everything after it. Depends on member order. Key: xxh3-64(key). The bucket arithmetic
//! uses the paper's LCG and one floating-point division, exact in IEEE-754 on every
//! architecture. Failover: the owner, then the shared HRW order.

use super::contract::{BuildError, Member, Scheme, key_hash, reduced_weights, validate};
use super::failover::Failover;

/// Largest bucket count (sum of weights / their gcd).
const MAX_BUCKETS: u64 = 1 << 20;

/// The paper's `JumpConsistentHash(key, num_buckets)`.
pub(crate) fn jump_bucket(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// Jump consistent hash over weight-expanded buckets.
#[derive(Debug)]
pub struct Jump {
    bucket_owner: Vec<u32>,
    failover: Failover,
}

impl Jump {
    /// Expands `members` into buckets.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        let weights = reduced_weights(members);
        let buckets: u64 = weights.iter().sum();
        if buckets > MAX_BUCKETS {
            return Err(BuildError::TooLarge {
                scheme: "jump",
                what: "the bucket count (sum of weights / their gcd)",
                value: buckets,
                max: MAX_BUCKETS,
            });
        }
        let bucket_owner = weights
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| std::iter::repeat_n(i as u32, w as usize))
            .collect();
        Ok(Self {
            bucket_owner,
            failover: Failover::new(members),
        })
    }
}

impl Scheme for Jump {
    fn pick(&self, key: &[u8]) -> usize {
        let b = jump_bucket(key_hash(key), self.bucket_owner.len() as u32);
        self.bucket_owner[b as usize] as usize
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.failover.fill(key, self.pick(key), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_vectors() {
        // Test vectors of the Go port github.com/lithammer/go-jump-consistent-hash
        // (jump_test.go), which transcribes the paper's C++ function.
        let vectors = [
            (1, 1, 0),
            (42, 57, 43),
            (0xDEAD_10CC, 1, 0),
            (0xDEAD_10CC, 666, 361),
            (256, 1024, 520),
        ];
        for (key, buckets, expected) in vectors {
            assert_eq!(
                jump_bucket(key, buckets),
                expected,
                "key {key} buckets {buckets}"
            );
        }
    }
}
