//! Building the project's binaries and putting the front on an interface: what
//! `cargo xtask build-and-load`, the testbed and the benchmarks share.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{cmd, ebpf};

/// Builds `bin` of `package` in release mode and returns the executable's path (wherever
/// CARGO_TARGET_DIR puts it), as cargo reports it.
pub fn release_binary(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let out = cmd::output(cmd::cargo(root).args([
        "build",
        "--release",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]))?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo build reported no {bin} executable"))
}

/// Where `build_and_load` puts the front.
pub struct FrontPlace<'a> {
    pub iface: &'a str,
    pub mode: &'a str,
    /// Run `l4-ctl load` in this network namespace (the testbed's front).
    pub netns: Option<&'a str>,
    /// Pin directory other than l4-ctl's default.
    pub pin_dir: Option<&'a Path>,
}

/// `cargo xtask build-and-load`: builds the XDP program and l4-ctl (release), then runs
/// `l4-ctl load` (a first attach, or an in-place upgrade that keeps every flow). Returns the
/// l4-ctl executable.
pub fn build_and_load(root: &Path, place: &FrontPlace<'_>) -> Result<PathBuf> {
    ebpf::build(root)?;
    let l4_ctl = release_binary(root, "l4-ctl", "l4-ctl")?;
    let mut load = l4_ctl_command(&l4_ctl, place.netns, place.pin_dir);
    load.args(["load", "--iface", place.iface, "--mode", place.mode]);
    cmd::run(&mut load)?;
    Ok(l4_ctl)
}

/// `l4-ctl` with its pin directory, run in `netns` when given (through `nsenter --net`, which
/// keeps /sys/fs/bpf visible, unlike `ip netns exec`).
pub fn l4_ctl_command(l4_ctl: &Path, netns: Option<&str>, pin_dir: Option<&Path>) -> Command {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(l4_ctl);
            c
        }
        None => Command::new(l4_ctl),
    };
    if let Some(dir) = pin_dir {
        command.arg("--pin-dir").arg(dir);
    }
    command
}
