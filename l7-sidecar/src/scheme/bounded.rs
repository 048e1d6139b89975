//! `bounded`: consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam,
//! "Consistent Hashing with Bounded Loads", SODA 2018 / arXiv 2016), the algorithm behind
//! HAProxy's `hash-balance-factor`. A key goes to the first member clockwise on the `mit-ch`
//! ring whose in-flight request count is below its capacity, so one hot key cannot pile
//! unbounded load on its owner, and with no load it is exactly consistent hashing.
//!
//! Capacity, with `T` requests in flight in total and balance factor `f` in percent (HAProxy's
//! convention: 125 lets a member carry 25 % more than its share):
//! `cap_i = ceil(f/100 * (T + 1) * w_i / W)`; member `i` is eligible while
//! `in_flight_i < cap_i`. The capacities sum to at least `T + 1`, so some member is always
//! eligible. In-flight counts are atomics updated by [`Scheme::begin`] / [`Scheme::end`]
//! (the sidecar reports every forwarded request); with nothing in flight the scheme never
//! looks at them. Independent of member order. Failover: the owner, then the ring walk.

use std::sync::atomic::{AtomicU64, Ordering};

use super::contract::{BuildError, Member, Scheme, key_hash, total_weight};
use super::ring::Ring;

/// HAProxy's usual `hash-balance-factor`, used when the scheme is built by name.
pub const DEFAULT_BALANCE_FACTOR: u32 = 125;

/// Consistent hashing with bounded loads.
#[derive(Debug)]
pub struct Bounded {
    ring: Ring,
    weights: Vec<u64>,
    total_weight: u64,
    factor: u32,
    in_flight: Box<[AtomicU64]>,
    total_in_flight: AtomicU64,
}

impl Bounded {
    /// Builds with [`DEFAULT_BALANCE_FACTOR`].
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        Self::with_factor(members, DEFAULT_BALANCE_FACTOR)
    }

    /// Builds with balance factor `factor` percent (at least 100).
    pub fn with_factor(members: &[Member], factor: u32) -> Result<Self, BuildError> {
        let ring = super::mit_ch::vnode_ring("bounded", members)?;
        if factor < 100 {
            return Err(BuildError::BalanceFactor(factor));
        }
        Ok(Self {
            ring,
            weights: members.iter().map(|m| u64::from(m.weight)).collect(),
            total_weight: total_weight(members),
            factor,
            in_flight: members.iter().map(|_| AtomicU64::new(0)).collect(),
            total_in_flight: AtomicU64::new(0),
        })
    }

    /// Requests currently reported in flight on `member`.
    pub fn in_flight(&self, member: usize) -> u64 {
        self.in_flight[member].load(Ordering::Relaxed)
    }

    fn eligible(&self, member: usize, total: u64) -> bool {
        let num =
            u128::from(self.factor) * u128::from(total + 1) * u128::from(self.weights[member]);
        let den = 100 * u128::from(self.total_weight);
        let cap = num.div_ceil(den);
        u128::from(self.in_flight(member)) < cap
    }
}

fn saturating_decrement(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

impl Scheme for Bounded {
    fn pick(&self, key: &[u8]) -> usize {
        let h = key_hash(key);
        let total = self.total_in_flight.load(Ordering::Relaxed);
        if total == 0 {
            return self.ring.pick(h);
        }
        self.ring
            .walk(h)
            .find(|&m| self.eligible(m, total))
            .unwrap_or_else(|| self.ring.pick(h))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        let first = self.pick(key);
        self.ring.candidates(key_hash(key), out);
        if let Some(pos) = out.iter().position(|&m| m == first) {
            out[..=pos].rotate_right(1);
        }
    }

    fn begin(&self, member: usize) {
        self.in_flight[member].fetch_add(1, Ordering::Relaxed);
        self.total_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Unmatched `end` calls are ignored rather than wrapping the counters.
    fn end(&self, member: usize) {
        if saturating_decrement(&self.in_flight[member]) {
            saturating_decrement(&self.total_in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member::new(format!("10.0.0.{i}:80"), 1))
            .collect()
    }

    #[test]
    fn idle_is_plain_consistent_hashing() {
        let b = Bounded::new(&members(5)).unwrap();
        let ch = super::super::MitCh::new(&members(5)).unwrap();
        for i in 0..1000 {
            let k = format!("/k{i}");
            assert_eq!(b.pick(k.as_bytes()), ch.pick(k.as_bytes()));
        }
    }

    #[test]
    fn load_never_exceeds_the_bound() {
        let n = 8;
        let b = Bounded::with_factor(&members(n), 125).unwrap();
        // One very hot key plus some others, nothing ever finishes.
        for i in 0..4000u64 {
            let key = if i % 2 == 0 {
                "/hot".to_owned()
            } else {
                format!("/k{i}")
            };
            let m = b.pick(key.as_bytes());
            b.begin(m);
            let total: u64 = (0..n).map(|j| b.in_flight(j)).sum();
            let bound = (125 * total).div_ceil(100 * n as u64);
            let max = (0..n).map(|j| b.in_flight(j)).max().unwrap_or(0);
            assert!(
                max <= bound,
                "after {i} requests: max {max} > bound {bound}"
            );
        }
    }

    #[test]
    fn end_releases_and_ignores_extra_ends() {
        let b = Bounded::new(&members(2)).unwrap();
        b.begin(1);
        b.end(1);
        b.end(1);
        assert_eq!(b.in_flight(1), 0);
        assert_eq!(b.total_in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn factor_below_100_is_refused() {
        assert_eq!(
            Bounded::with_factor(&members(2), 99).unwrap_err(),
            BuildError::BalanceFactor(99)
        );
    }
}
