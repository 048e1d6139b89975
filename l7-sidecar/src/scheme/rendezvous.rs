//! `rendezvous`: highest random weight hashing (Thaler & Ravishankar, 1998), weighted as in
//! Schindelhauer & Schomaker's "logarithmic method" (2005): member `i` scores
//! `w_i / -ln(u_i)` where `u_i` in (0, 1) is a hash of (key, member); the highest score wins.
//! Each member then owns exactly its weight share in expectation, and a membership change
//! moves only the keys of the member that joined or left.
//!
//! `u_i` comes from the murmur3 finaliser of xxh3-64(key) XOR xxh3-64(name), top 53 bits,
//! centred in its interval. `ln` is `detmath::ln` (bit-identical everywhere). With equal
//! weights the score is monotone in the hash, so the hash is compared directly and no
//! logarithm is taken. Equal scores go to the member whose name sorts first: independent of
//! member order. Failover: descending score.

use std::cmp::Ordering;

use super::contract::{
    BuildError, Member, Scheme, first_by, key_hash, mix64, name_ranks, validate,
};
use super::detmath;

/// Weighted highest random weight.
#[derive(Debug)]
pub struct Rendezvous {
    seeds: Vec<u64>,
    weights: Vec<f64>,
    uniform: bool,
    rank: Vec<u32>,
}

/// Maps a 64-bit hash to (0, 1).
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl Rendezvous {
    /// Seeds every member from its name.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        Ok(Self {
            seeds: members
                .iter()
                .map(|m| key_hash(m.name.as_bytes()))
                .collect(),
            weights: members.iter().map(|m| f64::from(m.weight)).collect(),
            uniform: members.iter().all(|m| m.weight == members[0].weight),
            rank: name_ranks(members),
        })
    }

    /// `Less` when member `a` outranks member `b` for key hash `h`.
    fn order(&self, h: u64, a: usize, b: usize) -> Ordering {
        let (ha, hb) = (mix64(h ^ self.seeds[a]), mix64(h ^ self.seeds[b]));
        let by_score = if self.uniform {
            hb.cmp(&ha)
        } else {
            let sa = self.weights[a] / -detmath::ln(unit(ha));
            let sb = self.weights[b] / -detmath::ln(unit(hb));
            sb.total_cmp(&sa)
        };
        by_score.then(self.rank[a].cmp(&self.rank[b]))
    }
}

impl Scheme for Rendezvous {
    fn pick(&self, key: &[u8]) -> usize {
        let h = key_hash(key);
        first_by(self.seeds.len(), |a, b| self.order(h, a, b))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        let h = key_hash(key);
        out.clear();
        out.extend(0..self.seeds.len());
        out.sort_by(|&a, &b| self.order(h, a, b));
    }
}
