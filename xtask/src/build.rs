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

/// Which build of the project's programs a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    not(feature = "full"),
    allow(
        dead_code,
        reason = "the light build's testbed command runs release builds only"
    )
)]
pub enum Profile {
    /// `cargo build --release`: what operators run and what figures are measured on.
    Release,
    /// The programs `cargo test --workspace` builds (the dev profile, with the workspace's
    /// features): what the end-to-end scenarios and the benches' smoke runs use, so that
    /// `cargo xtask test` compiles the tree once and not a second time in release mode.
    Test,
}

/// The project's programs, built.
pub struct Binaries {
    pub sidecar: PathBuf,
    pub l4_ctl: PathBuf,
    pub traffic: PathBuf,
}

/// The packages and binaries of [`Binaries`], in its order.
const BINARIES: [(&str, &str); 3] = [
    ("l7-sidecar", "l7-sidecar"),
    ("l4-ctl", "l4-ctl"),
    ("dl7-traffic", "dl7-traffic"),
];

/// Builds the project's programs in `profile` (the eBPF objects first: l4-ctl embeds them).
/// Release builds build all three together, so that every task's release build resolves the
/// same features and reuses the others' artifacts.
pub fn binaries(root: &Path, profile: Profile) -> Result<Binaries> {
    ebpf::build(root)?;
    let bins = match profile {
        Profile::Release => {
            eprintln!("build: the sidecar, l4-ctl and dl7-traffic (release)");
            release_binaries(root, &BINARIES)?
        }
        Profile::Test => test_binaries(root)?,
    };
    let [sidecar, l4_ctl, traffic] = <[PathBuf; 3]>::try_from(bins)
        .map_err(|_| anyhow::anyhow!("cargo built another number of binaries"))?;
    Ok(Binaries {
        sidecar,
        l4_ctl,
        traffic,
    })
}

/// The binaries of [`BINARIES`] as `cargo test --workspace` builds them.
fn test_binaries(root: &Path) -> Result<Vec<PathBuf>> {
    test_build_executables(root, &BINARIES)
}

/// `(package, bin)` executables as `cargo test --workspace` builds them (for the packages'
/// integration tests, with the workspace's features); builds them when that has not happened
/// yet.
pub fn test_build_executables(root: &Path, bins: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let out = cmd::output(cmd::cargo(root).args([
        "test",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    let artifacts: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == false)
        .collect();
    bins.iter()
        .map(|(package, bin)| {
            artifacts
                .iter()
                .filter(|m| m["target"]["name"] == *bin && m["target"]["kind"][0] == "bin")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .with_context(|| {
                    format!(
                        "cargo test built no {bin} executable (has {package} no integration test?)"
                    )
                })
        })
        .collect()
}

/// What the testbed runs, built in `profile`, and the Debian packages it drives.
pub fn testbed_parts(root: &Path, profile: Profile) -> Result<Parts> {
    setup::ensure_debian_packages(dl7_testbed::PACKAGES)?;
    let bins = binaries(root, profile)?;
    Ok(Parts {
        root: root.to_owned(),
        sidecar: bins.sidecar,
        l4_ctl: bins.l4_ctl,
        traffic: bins.traffic,
        xdp_pass: ebpf::object(root, "xdp_pass"),
    })
}
