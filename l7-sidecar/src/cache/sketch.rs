//! How often each key was asked for lately, in a fixed few KiB whatever the number of keys:
//! a count-min sketch (four rows of 4-bit counters, the estimate is the smallest of a key's
//! four) that halves every counter after a sample of increments, so that what was hot an hour
//! ago fades (TinyLFU's reset, Einziger, Friedman, Manes 2017). Shared by every connection
//! without a lock: counters are packed sixteen to an atomic word; an increment that races with
//! another or with the halving may be lost, which only makes the estimate a little lower.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters per row for each distinct key expected (a sparser sketch errs less).
const PER_KEY: usize = 4;
/// The sample after which every counter is halved: this many increments per counter of a row.
/// One keeps a row's counters at about one foreign increment each however many distinct keys
/// pass, so that a key seen once almost never looks hot (all four of its counters would need
/// several foreign increments).
const SAMPLE_PER_COUNTER: usize = 1;
/// A 4-bit counter's ceiling.
const MAX: u64 = 15;

/// The sketch.
#[derive(Debug)]
pub struct Sketch {
    /// Four rows of `width` counters, row after row, sixteen counters a word.
    words: Box<[AtomicU64]>,
    /// Counters per row, a power of two.
    width: usize,
    /// Increments since the last halving.
    added: AtomicU64,
    /// Increments between halvings.
    sample: u64,
    /// Halvings so far.
    generation: AtomicU64,
}

impl Sketch {
    /// A sketch for about `keys` distinct keys at a time (at least 64).
    pub fn new(keys: usize) -> Self {
        let width = (keys.max(64) * PER_KEY).next_power_of_two();
        Self {
            words: (0..4 * width / 16).map(|_| AtomicU64::new(0)).collect(),
            width,
            added: AtomicU64::new(0),
            sample: (width * SAMPLE_PER_COUNTER) as u64,
            generation: AtomicU64::new(0),
        }
    }

    /// Counts one request for `key`; its estimated count since the counters last aged.
    pub fn record(&self, key: &[u8]) -> u8 {
        let mut estimate = MAX;
        for (word, shift) in self.slots(key) {
            let old = word
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    ((w >> shift) & 0xf < MAX).then(|| w + (1 << shift))
                })
                .unwrap_or_else(|w| w);
            estimate = estimate.min(((old >> shift) & 0xf) + 1);
        }
        if self.added.fetch_add(1, Ordering::Relaxed) + 1 >= self.sample {
            self.age();
        }
        estimate.min(MAX) as u8
    }

    /// `key`'s estimated count since the counters last aged.
    pub fn estimate(&self, key: &[u8]) -> u8 {
        self.slots(key)
            .map(|(word, shift)| (word.load(Ordering::Relaxed) >> shift) & 0xf)
            .min()
            .unwrap_or(0) as u8
    }

    /// How many times the counters were halved so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Halves every counter (the one thread that brings `added` back under the sample does).
    fn age(&self) {
        let previous = self.added.swap(0, Ordering::Relaxed);
        if previous < self.sample {
            return;
        }
        for word in self.words.iter() {
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w >> 1) & 0x7777_7777_7777_7777)
            });
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The word and bit offset of `key`'s counter in each row.
    fn slots(&self, key: &[u8]) -> impl Iterator<Item = (&AtomicU64, u32)> {
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        let (h1, h2) = (hash as u32 as usize, (hash >> 32) as usize | 1);
        (0..4).map(move |row| {
            let column = h1.wrapping_add(row * h2) & (self.width - 1);
            let counter = row * self.width + column;
            (&self.words[counter / 16], (counter % 16 * 4) as u32)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_estimates_never_undercount_alone() {
        let sketch = Sketch::new(64);
        assert_eq!(sketch.estimate(b"a"), 0);
        for n in 1..=20u8 {
            assert_eq!(sketch.record(b"a"), n.min(15));
        }
        assert_eq!(sketch.estimate(b"a"), 15);
        assert_eq!(sketch.estimate(b"b"), 0, "another key");
    }

    #[test]
    fn hot_keys_stand_out_among_many_cold_ones() {
        let sketch = Sketch::new(1000);
        for round in 0..8 {
            sketch.record(b"hot");
            for i in 0..1000 {
                sketch.record(format!("cold-{round}-{i}").as_bytes());
            }
        }
        assert!(sketch.estimate(b"hot") >= 4, "{}", sketch.estimate(b"hot"));
        let cold_high = (0..1000)
            .filter(|i| sketch.estimate(format!("cold-7-{i}").as_bytes()) >= 3)
            .count();
        assert!(cold_high < 20, "{cold_high} one-time keys look hot");
    }

    #[test]
    fn counts_fade_after_a_sample() {
        let sketch = Sketch::new(64);
        for _ in 0..12 {
            sketch.record(b"once-hot");
        }
        // One sample of other increments halves every counter at least once.
        for i in 0..sketch.sample {
            sketch.record(&i.to_le_bytes());
        }
        let faded = sketch.estimate(b"once-hot");
        assert!(faded <= 8, "{faded}");
        assert!(sketch.generation() >= 1);
    }
}
