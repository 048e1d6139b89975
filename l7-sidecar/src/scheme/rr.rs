//! `rr`: round robin, the paper's baseline with no content affinity. Every member ends up
//! caching everything, which is exactly what the hashing schemes are measured against.
//!
//! Weights are honoured with nginx's smooth weighted round robin (weights 5,1,1 give
//! a a b a c a a), precomputed so that a pick is one atomic increment: lock-free, and the
//! `n`-th pick of a fresh instance is the same on every host. The key is ignored.
//! Failover: the next member in rotation order after the chosen one.

use super::contract::{BuildError, Member, Scheme, validate};
use super::weighted_turns::WeightedTurns;

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct RoundRobin {
    turns: WeightedTurns,
    members: usize,
}

impl RoundRobin {
    /// Builds the turn sequence for `members`.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        Ok(Self {
            turns: WeightedTurns::new("rr", members)?,
            members: members.len(),
        })
    }
}

impl Scheme for RoundRobin {
    fn pick(&self, _key: &[u8]) -> usize {
        self.turns.take()
    }

    /// Takes a turn (like `pick`), then lists the other members in rotation order.
    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        let first = self.pick(key);
        out.clear();
        out.extend((0..self.members).map(|i| (first + i) % self.members));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_the_key_and_rotates() {
        let rr = RoundRobin::new(&[Member::new("a", 1), Member::new("b", 1)]).unwrap();
        let picks: Vec<usize> = (0..4).map(|_| rr.pick(b"/same")).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }
}
