//! One writer at a time: every l4-ctl command that changes the maps (and the daemon, for each
//! health transition) holds an exclusive `flock` on the pin directory while it reads, computes
//! and writes, so two operators (or an operator and the daemon) never interleave the
//! read-modify-write of a VIP's reals and table.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Held while changing the maps; released on drop (and by the kernel if the process dies).
pub struct PinLock {
    _dir: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock {}", .path.display())]
pub struct LockError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl PinLock {
    /// Waits for and takes the exclusive lock on `pin_dir`.
    pub fn exclusive(pin_dir: &Path) -> Result<Self, LockError> {
        let err = |source| LockError {
            path: pin_dir.to_owned(),
            source,
        };
        let dir = File::open(pin_dir).map_err(err)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(PinLock { _dir: dir })
    }
}
