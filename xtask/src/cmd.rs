//! Running child processes: the testbed's helpers (errors that name the command), and the
//! cargo that runs this xtask.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use dl7_testbed::process::{output, run};

/// The cargo that runs this xtask (stable), in the workspace root.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
