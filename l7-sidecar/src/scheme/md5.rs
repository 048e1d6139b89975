//! `md5`: MD5(key) mod N, the paper's simplest content-aware scheme. Perfect affinity and
//! balance, but adding or removing a member remaps about N/(N+1) of all keys.
//!
//! The digest is read as one 128-bit big-endian integer (what `int(md5(key).hexdigest(), 16)`
//! gives) and taken modulo the total weight; member `i` owns a contiguous range of `weight_i`
//! residues (weighted buckets, so large weights cost no memory). With all weights equal this
//! is exactly MD5(key) mod N. Depends on member order. Failover: the shared HRW order.

use md5::{Digest, Md5};

use super::contract::{BuildError, Member, Scheme, validate};
use super::failover::Failover;

/// MD5(key) mod total weight, weighted by residue ranges.
#[derive(Debug)]
pub struct Md5Mod {
    /// `bounds[i]` = sum of the weights of members 0..=i.
    bounds: Vec<u128>,
    failover: Failover,
}

impl Md5Mod {
    /// Builds the residue ranges for `members`.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        let bounds = members
            .iter()
            .scan(0u128, |acc, m| {
                *acc += u128::from(m.weight);
                Some(*acc)
            })
            .collect();
        Ok(Self {
            bounds,
            failover: Failover::new(members),
        })
    }
}

impl Scheme for Md5Mod {
    fn pick(&self, key: &[u8]) -> usize {
        let digest: [u8; 16] = Md5::digest(key).into();
        let total = self.bounds[self.bounds.len() - 1];
        let residue = u128::from_be_bytes(digest) % total;
        self.bounds.partition_point(|&b| b <= residue)
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.failover.fill(key, self.pick(key), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_md5_mod_n_for_equal_weights() {
        let members: Vec<Member> = (0..7).map(|i| Member::new(format!("m{i}"), 1)).collect();
        let s = Md5Mod::new(&members).unwrap();
        // Python: int(hashlib.md5(b"hello").hexdigest(), 16) % 7 == 4
        assert_eq!(s.pick(b"hello"), 4);
    }
}
