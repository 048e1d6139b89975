//! The SURGE-like synthetic workload (Barford & Crovella, SIGMETRICS 1998) shared by `bench
//! hashing` (offline simulation) and `load` (live requests), so that both see the same objects
//! and the same request stream for the same seed.
//!
//! Object popularity is Zipf (object `i` is rank `i + 1`: object 0 is the most popular); object
//! sizes are a lognormal body (mu 9.357, sigma 1.318, 93 % of objects, median about 11.6 kB)
//! with a Pareto tail (k 133,000, alpha 1.1, 7 %), drawn independently of popularity. Every
//! random number comes from one PCG-64 seeded with the seed: first the sizes of all objects,
//! then the requests, one Zipf draw each.

use anyhow::{Context, Result, ensure};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Pareto, Zipf};
use rand_pcg::Pcg64;

/// Barford & Crovella's SURGE file-size model.
const LOGNORMAL_MU: f64 = 9.357;
const LOGNORMAL_SIGMA: f64 = 1.318;
const PARETO_K: f64 = 133_000.0;
const PARETO_ALPHA: f64 = 1.1;
const BODY_FRACTION: f64 = 0.93;

/// The catalogue's object sizes and the seeded stream of requests over it.
pub struct Surge {
    /// Size in bytes of each object (at least 1).
    pub sizes: Vec<u64>,
    popularity: Zipf<f64>,
    rng: Pcg64,
}

impl Surge {
    /// `objects` objects with Zipf exponent `alpha` (positive), from `seed`.
    pub fn new(objects: usize, alpha: f64, seed: u64) -> Result<Self> {
        ensure!(objects > 0, "a workload needs at least one object");
        ensure!(
            alpha > 0.0,
            "the Zipf exponent must be positive, not {alpha}"
        );
        let mut rng = Pcg64::seed_from_u64(seed);
        let body = LogNormal::new(LOGNORMAL_MU, LOGNORMAL_SIGMA).context("lognormal")?;
        let tail = Pareto::new(PARETO_K, PARETO_ALPHA).context("pareto")?;
        let sizes = (0..objects)
            .map(|_| {
                let s = if rng.random_bool(BODY_FRACTION) {
                    body.sample(&mut rng)
                } else {
                    tail.sample(&mut rng)
                };
                s.max(1.0) as u64
            })
            .collect();
        let popularity = Zipf::new(objects as f64, alpha).context("zipf")?;
        Ok(Self {
            sizes,
            popularity,
            rng,
        })
    }

    /// The object of the next request (0 is the most popular).
    pub fn next_object(&mut self) -> usize {
        let rank = self.popularity.sample(&mut self.rng) as usize;
        rank.saturating_sub(1).min(self.sizes.len() - 1)
    }

    /// The catalogue's total size in bytes.
    pub fn unique_bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic() {
        let mut a = Surge::new(1000, 0.8, 7).unwrap();
        let mut b = Surge::new(1000, 0.8, 7).unwrap();
        assert_eq!(a.sizes, b.sizes);
        let stream_a: Vec<usize> = (0..100).map(|_| a.next_object()).collect();
        let stream_b: Vec<usize> = (0..100).map(|_| b.next_object()).collect();
        assert_eq!(stream_a, stream_b);
        let median = {
            let mut s = a.sizes.clone();
            s.sort_unstable();
            s[500]
        };
        // The lognormal body's median is e^9.357 ~ 11.6 kB.
        assert!((5_000..25_000).contains(&median), "{median}");
    }

    #[test]
    fn popularity_is_skewed_towards_low_ids() {
        let mut w = Surge::new(100, 0.8, 1).unwrap();
        let mut counts = [0u32; 100];
        for _ in 0..10_000 {
            counts[w.next_object()] += 1;
        }
        assert!(
            counts[0] > counts[1] && counts[1] > counts[50],
            "{counts:?}"
        );
    }
}
