//! The options every bench takes under the same names, how a bench's quick variant gets its
//! options, and the lock that keeps two benches from sharing the CPUs.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

/// The options every bench takes.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct BenchOpts {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A short run (a smoke test), not for figures.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of each measured run [default: the bench's, shorter with --quick].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of the warm-up before each measured run [default: the bench's].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Requests kept in flight: the load's keep-alive connections (closed loop)
    /// [default: the bench's].
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// Which of the shared options a bench reads; it refuses the others.
#[derive(Clone, Copy)]
pub struct Uses {
    pub duration: bool,
    pub warmup: bool,
    pub concurrency: bool,
}

impl BenchOpts {
    /// An error for a value out of range, or for an option `bench` has no use for.
    pub fn check(&self, bench: &str, uses: Uses) -> Result<()> {
        let given = [
            ("--duration", self.duration.is_some(), uses.duration),
            ("--warmup", self.warmup.is_some(), uses.warmup),
            (
                "--concurrency",
                self.concurrency.is_some(),
                uses.concurrency,
            ),
        ];
        for (flag, is_given, used) in given {
            if is_given && !used {
                bail!("bench {bench} has no {flag}");
            }
        }
        if let Some(s) = self.duration {
            ensure!(
                s.is_finite() && s > 0.0 && s <= 3600.0,
                "--duration {s} is not more than 0 and at most 3600 seconds"
            );
        }
        if let Some(s) = self.warmup {
            ensure!(
                s.is_finite() && (0.0..=3600.0).contains(&s),
                "--warmup {s} is not between 0 and 3600 seconds"
            );
        }
        if let Some(c) = self.concurrency {
            ensure!(
                (1..=100_000).contains(&c),
                "--concurrency {c} is not between 1 and 100000"
            );
        }
        Ok(())
    }

    /// `full` in a full run, `quick` with --quick.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// The build a run measures: release, or for a smoke run (`--quick`) the programs
    /// `cargo test` builds, which compile once with the tests (their figures mean nothing).
    pub fn profile(&self) -> crate::build::Profile {
        self.pick(crate::build::Profile::Release, crate::build::Profile::Test)
    }

    /// `--duration`, else the bench's default for a full or a quick run.
    pub fn duration_s(&self, full: f64, quick: f64) -> f64 {
        self.duration.unwrap_or(self.pick(full, quick))
    }

    /// `--warmup`, else the bench's default for a full or a quick run.
    pub fn warmup_s(&self, full: f64, quick: f64) -> f64 {
        self.warmup.unwrap_or(self.pick(full, quick))
    }

    /// `--concurrency`, else the bench's default for a full or a quick run.
    pub fn concurrency(&self, full: usize, quick: usize) -> usize {
        self.concurrency.unwrap_or(self.pick(full, quick))
    }

    /// Where `bench` writes its files unless told otherwise: target/bench-results/NAME, or
    /// NAME-quick for a quick run (so that a smoke test never overwrites real results).
    pub fn results_dir(&self, bench: &str) -> PathBuf {
        let name = self.pick(bench.to_owned(), format!("{bench}-quick"));
        crate::cmd::workspace_root()
            .join("target/bench-results")
            .join(name)
    }
}

/// A bench's options as clap parses `flags` (the defaults for the rest): how the quick
/// variants are run from `cargo xtask test`.
pub fn args_from<A: clap::Args + clap::FromArgMatches>(flags: &[&str]) -> Result<A> {
    let matches = A::augment_args(clap::Command::new("bench"))
        .try_get_matches_from(std::iter::once("bench").chain(flags.iter().copied()))?;
    Ok(A::from_arg_matches(&matches)?)
}

/// Where benchmarks take their lock.
const LOCK: &str = "/run/dl7-bench.lock";

/// Holds an exclusive lock for a benchmark's whole run (released when the file is dropped), so
/// that two benchmarks never share the CPUs and spoil each other's figures; a second one
/// waits, saying so.
pub fn lock(what: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .with_context(|| format!("opening {LOCK}"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("{what}: another benchmark holds {LOCK}; waiting for it to finish");
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {LOCK}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Uses = Uses {
        duration: true,
        warmup: true,
        concurrency: true,
    };

    #[test]
    fn shared_options_are_checked() {
        let ok: BenchOpts = args_from(&["--duration", "2.5", "--concurrency", "8"]).unwrap();
        ok.check("x", ALL).unwrap();
        assert_eq!((ok.duration_s(10.0, 1.0), ok.concurrency(64, 4)), (2.5, 8));
        let quick: BenchOpts = args_from(&["--quick"]).unwrap();
        assert_eq!(
            (quick.duration_s(10.0, 1.0), quick.warmup_s(2.0, 0.5)),
            (1.0, 0.5)
        );
        for bad in [
            &["--duration", "0"][..],
            &["--duration", "NaN"],
            &["--warmup=-1"],
            &["--concurrency", "0"],
        ] {
            let opts: BenchOpts = args_from(bad).unwrap();
            assert!(opts.check("x", ALL).is_err(), "{bad:?} accepted");
        }
        let no_duration = Uses {
            duration: false,
            ..ALL
        };
        let err = ok.check("hashing", no_duration).unwrap_err().to_string();
        assert_eq!(err, "bench hashing has no --duration");
    }
}
