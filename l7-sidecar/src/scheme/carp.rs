//! `carp`: the Cache Array Routing Protocol, draft-vinod-carp-v1-03 section 3, as Squid and
//! Microsoft ISA/TMG implement it. Every member scores every URL; the highest score wins, so
//! a member leaving only moves its own URLs and a member joining only takes URLs from others.
//!
//! All hash arithmetic is 32-bit and wrapping, exactly as in the draft:
//! * URL hash (3.1): for each byte `c`: `h += rotl(h, 19) + c`.
//! * Member hash (3.1): the same loop over the member name as configured (e.g. `h1:80`),
//!   then `h += h * 0x62531965; h = rotl(h, 21)`.
//! * Combination (3.2): `c = url ^ member; c += c * 0x62531965; c = rotl(c, 21)`.
//! * Score (3.3): `c * X_k`, where the load factor multipliers `X_k` come from the load
//!   factors `P_k` = weight share, sorted ascending, with the draft's iteration
//!   `X_1 = (K P_1)^(1/K)`,
//!   `X_k = ((K-k+1)(P_k - P_{k-1}) / (X_1 ... X_{k-1}) + X_{k-1}^(K-k+1))^(1/(K-k+1))`.
//!   Equal weights give `X_k = 1`.
//!
//! Differences from the text, all chosen for determinism: URL bytes are unsigned (Squid adds
//! a `char`, which is signed on x86, so non-ASCII URLs differ there); multipliers are `f64`
//! like Squid's (the draft says 32-bit floats) computed with `detmath` instead of libm; equal
//! scores go to the member whose name sorts first. The multiplier loop is the one in Squid's
//! src/carp.cc (`carpInit`) and Traffic Server's CARP plugin. Independent of member order.
//! Failover: members by descending score.
//!
//! Test vectors: the draft publishes none; Apache Traffic Server's CARP plugin pins seven
//! URL -> member results in its unit tests (`CarpHashAlgorithmTest::testHash3`), which the
//! tests below reproduce. The weighted part is checked by simulation: with independent
//! uniform scores the multipliers give every member exactly its load factor.

use std::cmp::Ordering;

use super::contract::{BuildError, Member, Scheme, first_by, name_ranks, total_weight, validate};
use super::detmath;

const MULTIPLIER: u32 = 0x6253_1965;

/// Section 3.1 URL hash.
pub(crate) fn url_hash(url: &[u8]) -> u32 {
    url.iter().fold(0u32, |h, &c| {
        h.wrapping_add(h.rotate_left(19).wrapping_add(u32::from(c)))
    })
}

/// Section 3.1 member hash.
pub(crate) fn member_hash(name: &[u8]) -> u32 {
    let h = url_hash(name);
    h.wrapping_add(h.wrapping_mul(MULTIPLIER)).rotate_left(21)
}

/// Section 3.2 combination.
pub(crate) fn combine(url: u32, member: u32) -> u32 {
    let c = url ^ member;
    c.wrapping_add(c.wrapping_mul(MULTIPLIER)).rotate_left(21)
}

/// Section 3.3 load factor multipliers for load factors `p` (shares summing to 1), in the
/// order given.
pub(crate) fn load_multipliers(p: &[f64]) -> Vec<f64> {
    let k_total = p.len();
    let mut order: Vec<usize> = (0..k_total).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut x = vec![0.0; k_total];
    let (mut p_last, mut x_last, mut x_product) = (0.0, 0.0, 1.0);
    for (k, &i) in order.iter().enumerate() {
        let kk1 = (k_total - k) as f64; // K - k + 1 with k counted from 1
        let mut xk = kk1 * (p[i] - p_last) / x_product;
        xk += detmath::pow(x_last, kk1);
        xk = detmath::pow(xk, 1.0 / kk1);
        x[i] = xk;
        x_product *= xk;
        x_last = xk;
        p_last = p[i];
    }
    x
}

/// Cache Array Routing Protocol v1.
#[derive(Debug)]
pub struct Carp {
    hashes: Vec<u32>,
    multipliers: Vec<f64>,
    rank: Vec<u32>,
}

impl Carp {
    /// Hashes the member names and computes the load factor multipliers from the weights.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        let total = total_weight(members) as f64;
        let shares: Vec<f64> = members
            .iter()
            .map(|m| f64::from(m.weight) / total)
            .collect();
        Ok(Self {
            hashes: members
                .iter()
                .map(|m| member_hash(m.name.as_bytes()))
                .collect(),
            multipliers: load_multipliers(&shares),
            rank: name_ranks(members),
        })
    }

    fn score(&self, url: u32, m: usize) -> f64 {
        f64::from(combine(url, self.hashes[m])) * self.multipliers[m]
    }

    /// `Less` when member `a` comes before member `b` for this URL: higher score first,
    /// then name order.
    fn order(&self, url: u32, a: usize, b: usize) -> Ordering {
        self.score(url, b)
            .total_cmp(&self.score(url, a))
            .then(self.rank[a].cmp(&self.rank[b]))
    }
}

impl Scheme for Carp {
    fn pick(&self, key: &[u8]) -> usize {
        let url = url_hash(key);
        first_by(self.hashes.len(), |a, b| self.order(url, a, b))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        let url = url_hash(key);
        out.clear();
        out.extend(0..self.hashes.len());
        out.sort_by(|&a, &b| self.order(url, a, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Traffic Server's CARP plugin (plugins/experimental/carp,
    /// CarpHashAlgorithmTest::testHash3, "ensure hash results not changed"): members
    /// `h1:80` .. `h10:80` at equal weight; the URLs `.../ack/1` .. `.../ack/7` go to
    /// h6, h10, h2, h5, h1, h9, h6.
    #[test]
    fn traffic_server_vectors() {
        let members: Vec<Member> = (1..=10)
            .map(|i| Member::new(format!("h{i}:80"), 1))
            .collect();
        let carp = Carp::new(&members).unwrap();
        let expected = ["h6", "h10", "h2", "h5", "h1", "h9", "h6"];
        for (i, want) in expected.iter().enumerate() {
            let url = format!("http://ncache1.gq1.yahoo.com/blah-blach/test/ack/{}", i + 1);
            let got = &members[carp.pick(url.as_bytes())].name;
            assert_eq!(got, &format!("{want}:80"), "{url}");
        }
    }

    #[test]
    fn equal_weights_give_unit_multipliers() {
        assert!(
            load_multipliers(&[0.25; 4])
                .iter()
                .all(|&x| (x - 1.0).abs() < 1e-15)
        );
    }

    /// The draft's multipliers give each member its load factor when scores are independent
    /// and uniform (checked here with a PRNG instead of the CARP hash, whose mixing is weak).
    #[test]
    fn multipliers_give_the_load_factors_for_independent_scores() {
        let p = [0.05, 0.1, 0.15, 0.3, 0.4];
        let x = load_multipliers(&p);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next_unit = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            (super::super::contract::mix64(state) >> 11) as f64 / (1u64 << 53) as f64
        };
        let rounds = 200_000;
        let mut wins = [0u32; 5];
        for _ in 0..rounds {
            let scores: Vec<f64> = x.iter().map(|xk| xk * next_unit()).collect();
            let best = first_by(5, |a, b| scores[b].total_cmp(&scores[a]));
            wins[best] += 1;
        }
        for k in 0..5 {
            let share = f64::from(wins[k]) / f64::from(rounds);
            assert!(
                (share - p[k]).abs() < 0.005,
                "member {k}: {share} vs {}",
                p[k]
            );
        }
    }
}
