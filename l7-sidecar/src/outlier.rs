//! Passive outlier detection (Envoy's "consecutive errors" ejection): a destination that
//! fails `failures` times in a row is ejected, i.e. skipped by routing, for a back-off that
//! doubles with every ejection in a row (`base`, `2 base`, .. up to `max`). When the
//! ejection ends the destination is on probation: its next failure ejects it again at once,
//! its next success clears everything. A dead peer therefore costs a few failed attempts
//! per back-off period instead of one per request.
//!
//! Lock-free: three atomics, and the clock is only read while an ejection is recorded.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::OutlierSettings;

/// The failure record of one destination.
#[derive(Debug)]
pub struct Outlier {
    settings: OutlierSettings,
    epoch: Instant,
    failures: AtomicU32,
    level: AtomicU32,
    /// Milliseconds since `epoch` until which the destination is ejected; 0 when never.
    until_ms: AtomicU64,
}

impl Outlier {
    /// A clean record.
    pub fn new(settings: OutlierSettings) -> Self {
        Self {
            settings,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            level: AtomicU32::new(0),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while ejected.
    pub fn is_ejected(&self) -> bool {
        let until = self.until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// A request succeeded.
    pub fn success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.level.load(Relaxed) != 0 && !self.is_ejected() {
            self.level.store(0, Relaxed);
            self.until_ms.store(0, Relaxed);
        }
    }

    /// A request failed; true when this failure ejected the destination.
    pub fn failure(&self) -> bool {
        if self.is_ejected() {
            return false;
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < self.settings.failures {
            return false;
        }
        let level = self.level.fetch_add(1, Relaxed).min(20);
        let time = self
            .settings
            .base
            .saturating_mul(1 << level)
            .min(self.settings.max);
        let time_ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        self.until_ms
            .store(self.now_ms().saturating_add(time_ms.max(1)), Relaxed);
        // Probation: one more failure after the ejection ejects again.
        self.failures
            .store(self.settings.failures.saturating_sub(1), Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outlier(base_ms: u64) -> Outlier {
        Outlier::new(OutlierSettings {
            failures: 3,
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(base_ms * 4),
        })
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let o = outlier(10_000);
        assert!(!o.failure());
        assert!(!o.failure());
        o.success();
        assert!(!o.failure());
        assert!(!o.failure());
        assert!(!o.is_ejected());
        assert!(o.failure());
        assert!(o.is_ejected());
        assert!(!o.failure(), "failures while ejected do not count");
    }

    #[test]
    fn probation_and_doubling() {
        let o = outlier(20);
        for _ in 0..3 {
            o.failure();
        }
        assert!(o.is_ejected());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!o.is_ejected());
        assert!(o.failure(), "one failure on probation ejects again");
        assert_eq!(o.level.load(Relaxed), 2);
        std::thread::sleep(Duration::from_millis(30));
        assert!(o.is_ejected(), "the second ejection lasts twice as long");
        std::thread::sleep(Duration::from_millis(20));
        o.success();
        assert_eq!(o.level.load(Relaxed), 0);
        assert!(!o.failure());
    }
}
