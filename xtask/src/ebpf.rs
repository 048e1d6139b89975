//! `cargo xtask build-ebpf`: builds `l4-ebpf` for bpfel-unknown-none (release, with BTF) with
//! the nightly toolchain and `-Z build-std=core`. The objects land in
//! `l4-ebpf/target/bpfel-unknown-none/release/`, where `l4-ctl`'s build script embeds them.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{cmd::run, setup};

/// Where `build` puts the object of program `name`.
pub fn object(root: &Path, name: &str) -> std::path::PathBuf {
    root.join("l4-ebpf/target/bpfel-unknown-none/release")
        .join(name)
}

/// Builds the eBPF objects (after making sure the toolchain is there).
pub fn build(root: &Path) -> Result<()> {
    setup::run_all()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("l4-ebpf"))
        .arg(format!("+{}", setup::NIGHTLY))
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ]);
    // This process runs under the stable toolchain's cargo: nothing of that may leak into the
    // nightly build (a RUSTC or RUSTUP_TOOLCHAIN from the parent would win over `+nightly`).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("RUSTC")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || key == "RUSTFLAGS"
            || (key.starts_with("CARGO_") && key != "CARGO_HOME")
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![setup::cargo_bin_dir()?];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).context("PATH")?);
    run(&mut cmd).context("building the eBPF objects failed")
}
