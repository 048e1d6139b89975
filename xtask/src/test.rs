//! `cargo xtask test`: every test of the project, on a fresh machine as root. It installs what
//! the tests use, builds the eBPF objects, runs the workspace's tests (unit, golden-packet,
//! namespace end-to-end, real nginx comparisons), then the end-to-end scenarios on the testbed
//! (`cargo xtask e2e`) and the quick variants of the benchmarks.
//!
//! It runs from the light build: the workspace's tests build the full xtask binary too (its
//! integration test needs it), and that binary then runs the scenarios and the smoke benches
//! (`test-scenarios`, hidden), so the tree is compiled once, with the tests' features.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::cmd::{cargo, run};
use crate::{build, ebpf, setup};

/// Debian packages the tests drive: nginx (hashing comparison), iproute2 and ethtool
/// (namespaces, veths, offloads), procps (sysctl inside namespaces), curl (HTTP clients),
/// haproxy and wrk (the quick L7 benchmark), nftables (a health check made to fail in the
/// several-fronts scenarios).
const TEST_PACKAGES: &[&str] = &[
    "nginx", "iproute2", "ethtool", "procps", "curl", "haproxy", "wrk", "nftables",
];

/// Prefixes of what tests create; leftovers of a killed earlier run are removed first.
const TEST_NETNS_PREFIX: &str = "dl7t-";
const TEST_PIN_PREFIX: &str = "dl7-test-";

pub fn run_all(root: &Path) -> Result<()> {
    setup::ensure_debian_packages(TEST_PACKAGES)?;
    ebpf::build(root)?;
    remove_leftovers()?;
    run(cargo(root).args(["test", "--workspace", "--no-fail-fast"])).context("tests failed")?;
    let xtask = build::test_build_executables(root, &[("xtask", "xtask")])?.remove(0);
    run(Command::new(xtask).arg("test-scenarios").current_dir(root))
}

/// Removes test namespaces and pin directories that a killed test run left behind.
fn remove_leftovers() -> Result<()> {
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if name.starts_with(TEST_NETNS_PREFIX) {
                eprintln!("test: removing leftover namespace {name}");
                run(Command::new("ip").args(["netns", "del", &name]))?;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.filter_map(|e| e.ok()) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEST_PIN_PREFIX)
            {
                eprintln!("test: removing leftover pins {}", entry.path().display());
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}
