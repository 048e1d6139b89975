//! Running child processes with errors that name the command.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `cmd` with inherited stdio; an error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; an error if it cannot start or exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where benchmarks take their lock.
const BENCH_LOCK: &str = "/run/dl7-bench.lock";

/// Holds an exclusive lock for a benchmark's whole run (released when the file is dropped), so
/// that two benchmarks never share the CPUs and spoil each other's figures; a second one
/// waits, saying so.
pub fn bench_lock(what: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(BENCH_LOCK)
        .with_context(|| format!("opening {BENCH_LOCK}"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("{what}: another benchmark holds {BENCH_LOCK}; waiting for it to finish");
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {BENCH_LOCK}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// The cargo that runs this xtask (stable), in the workspace root.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}
