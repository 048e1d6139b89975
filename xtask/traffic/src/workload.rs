//! The SURGE-like synthetic workload (Barford & Crovella, SIGMETRICS 1998) shared by `bench
//! hashing` (offline simulation) and `load` (live requests), so that both see the same objects
//! and the same request stream for the same seed.
//!
//! Object popularity is Zipf (object `i` is rank `i + 1`: object 0 is the most popular); object
//! sizes are a lognormal body (mu 9.357, sigma 1.318, 93 % of objects, median about 11.6 kB)
//! with a Pareto tail (k 133,000, alpha 1.1, 7 %), drawn independently of popularity. Every
//! random number comes from one PCG-64 seeded with the seed: first the sizes of all objects,
//! then the requests, one Zipf draw each.
//!
//! A flash crowd ([`Surge::with_hot_share`]) puts a share of the requests on object 0, the most
//! popular, on top of that stream: a second PCG-64 (from the seed too) decides per request
//! whether it is a hot one, and the other requests are the Zipf stream unchanged.

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
    /// The flash crowd: the share of requests for object 0 whatever the Zipf draw, and the
    /// generator that decides it (`None` without a crowd).
    hot: Option<(f64, Pcg64)>,
}

/// Mixed into the seed of the flash crowd's generator, so that its draws do not repeat the
/// Zipf stream's.
const HOT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

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
            hot: None,
        })
    }

    /// The same workload with a flash crowd: `share` (0 to below 1) of the requests are for
    /// object 0. A share of 0 leaves the stream exactly as without.
    pub fn with_hot_share(mut self, share: f64, seed: u64) -> Result<Self> {
        ensure!(
            (0.0..1.0).contains(&share),
            "the hot share must be at least 0 and below 1, not {share}"
        );
        self.hot = (share > 0.0).then(|| (share, Pcg64::seed_from_u64(seed ^ HOT_SEED)));
        Ok(self)
    }

    /// The object of the next request (0 is the most popular).
    pub fn next_object(&mut self) -> usize {
        if let Some((share, rng)) = &mut self.hot
            && rng.random_bool(*share)
        {
            return 0;
        }
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
    fn a_flash_crowd_takes_its_share_and_leaves_the_rest_of_the_stream() {
        let plain: Vec<usize> = {
            let mut w = Surge::new(1000, 0.8, 3).unwrap();
            (0..20_000).map(|_| w.next_object()).collect()
        };
        let mut zero = Surge::new(1000, 0.8, 3)
            .unwrap()
            .with_hot_share(0.0, 3)
            .unwrap();
        assert!((0..20_000).all(|i| zero.next_object() == plain[i]));
        let mut crowd = Surge::new(1000, 0.8, 3)
            .unwrap()
            .with_hot_share(0.5, 3)
            .unwrap();
        let drawn: Vec<usize> = (0..20_000).map(|_| crowd.next_object()).collect();
        let hot = drawn.iter().filter(|&&o| o == 0).count() as f64 / drawn.len() as f64;
        let zipf_zero = plain.iter().filter(|&&o| o == 0).count() as f64 / plain.len() as f64;
        // Half the requests, plus object 0's own Zipf share of the other half.
        let expect = 0.5 + 0.5 * zipf_zero;
        assert!((hot - expect).abs() < 0.02, "{hot} vs {expect}");
        // The requests that are not hot continue the Zipf stream in order.
        let rest: Vec<usize> = drawn.iter().copied().filter(|&o| o != 0).collect();
        let plain_rest: Vec<usize> = plain.iter().copied().filter(|&o| o != 0).collect();
        assert_eq!(rest[..], plain_rest[..rest.len()]);
        assert!(
            Surge::new(10, 0.8, 1)
                .unwrap()
                .with_hot_share(1.0, 1)
                .is_err()
        );
        assert!(
            Surge::new(10, 0.8, 1)
                .unwrap()
                .with_hot_share(-0.1, 1)
                .is_err()
        );
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
