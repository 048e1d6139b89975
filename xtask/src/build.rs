//! Building the project's binaries: `cargo xtask build-and-load` on the front host, and the
//! parts the testbed runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dl7_testbed::Parts;

use crate::{cmd, ebpf, setup};

/// Builds `(package, bin)` pairs in release mode in one cargo run and returns the
/// executables' paths in the same order (wherever CARGO_TARGET_DIR puts them), as cargo
/// reports them.
pub fn release_binaries(root: &Path, bins: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let mut build = cmd::cargo(root);
    build.args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    for (package, bin) in bins {
        build.args(["-p", package, "--bin", bin]);
    }
    let out = cmd::output(&mut build)?;
    let artifacts: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect();
    bins.iter()
        .map(|(_, bin)| {
            artifacts
                .iter()
                .filter(|m| m["target"]["name"] == *bin)
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .with_context(|| format!("cargo build reported no {bin} executable"))
        })
        .collect()
}

/// Builds `bin` of `package` in release mode; the executable's path.
pub fn release_binary(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    Ok(release_binaries(root, &[(package, bin)])?.remove(0))
}

/// `cargo xtask build-and-load`: builds the XDP program and l4-ctl (release), then runs
/// `l4-ctl load` on `iface` (a first attach, or an in-place upgrade that keeps every flow).
pub fn build_and_load(root: &Path, iface: &str, mode: &str) -> Result<()> {
    ebpf::build(root)?;
    let l4_ctl = release_binary(root, "l4-ctl", "l4-ctl")?;
    cmd::run(std::process::Command::new(l4_ctl).args(["load", "--iface", iface, "--mode", mode]))
}

/// What the testbed runs, built: the eBPF objects, then l7-sidecar, l4-ctl (which embeds the
/// objects) and dl7-traffic in release mode; and the Debian packages it drives.
pub fn testbed_parts(root: &Path) -> Result<Parts> {
    setup::ensure_debian_packages(dl7_testbed::PACKAGES)?;
    ebpf::build(root)?;
    eprintln!("testbed: building the sidecar, l4-ctl and the origin (release)");
    let bins = release_binaries(
        root,
        &[
            ("l7-sidecar", "l7-sidecar"),
            ("l4-ctl", "l4-ctl"),
            ("dl7-traffic", "dl7-traffic"),
        ],
    )?;
    let [sidecar, l4_ctl, traffic] = <[PathBuf; 3]>::try_from(bins)
        .map_err(|_| anyhow::anyhow!("cargo built another number of binaries"))?;
    Ok(Parts {
        root: root.to_owned(),
        sidecar,
        l4_ctl,
        traffic,
        xdp_pass: ebpf::object(root, "xdp_pass"),
    })
}
