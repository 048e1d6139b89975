//! Smooth weighted round robin turns (nginx's algorithm), precomputed into a sequence so that
//! taking a turn is one atomic increment: lock-free and shared by `rr` and `ht-rr`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::contract::{BuildError, Member, reduced_weights};

/// Longest turn sequence built (after dividing the weights by their gcd).
const MAX_TURNS: u64 = 1 << 20;

/// A repeating sequence of member indexes in which member `i` appears `weight_i / gcd` times
/// per period, spread out as evenly as nginx's smooth weighted round robin spreads them.
#[derive(Debug)]
pub(crate) struct WeightedTurns {
    sequence: Vec<u32>,
    next: AtomicU64,
}

impl WeightedTurns {
    pub(crate) fn new(scheme: &'static str, members: &[Member]) -> Result<Self, BuildError> {
        let weights: Vec<i64> = reduced_weights(members)
            .into_iter()
            .map(|w| w as i64)
            .collect();
        let total: i64 = weights.iter().sum();
        if total as u64 > MAX_TURNS {
            return Err(BuildError::TooLarge {
                scheme,
                what: "the turn sequence (sum of weights / their gcd)",
                value: total as u64,
                max: MAX_TURNS,
            });
        }
        // nginx: every turn, each member gains its weight; the richest (first on ties) is
        // chosen and pays the total.
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            sequence.push(best as u32);
        }
        Ok(Self {
            sequence,
            next: AtomicU64::new(0),
        })
    }

    /// Takes the next turn.
    pub(crate) fn take(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.sequence[(n % self.sequence.len() as u64) as usize] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_smooth_order_for_5_1_1() {
        // The example from nginx's commit introducing smooth weighted round robin.
        let members = [
            Member::new("a", 5),
            Member::new("b", 1),
            Member::new("c", 1),
        ];
        let t = WeightedTurns::new("rr", &members).unwrap();
        let got: Vec<usize> = (0..7).map(|_| t.take()).collect();
        assert_eq!(got, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        let members = [Member::new("a", 4_000_000), Member::new("b", 2_000_000)];
        let t = WeightedTurns::new("rr", &members).unwrap();
        assert_eq!(t.sequence.len(), 3);
    }
}
