//! `cargo xtask setup`: everything a fresh machine needs before dl7's eBPF can be built and
//! loaded, done idempotently by the project itself (see shared/TOOLCHAIN.md): rust-src for the
//! nightly toolchain, a bpf-linker built against nightly's own libLLVM, bpffs, root and kernel
//! support. Every xtask command that builds or loads eBPF runs it first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{output, run};

/// The nightly toolchain used for `-Z build-std` (by name: a dated name would make rustup
/// try to download a new toolchain).
pub const NIGHTLY: &str = "nightly";
/// The bpf-linker release that fits nightly's LLVM 22 (shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every check and installs what is missing. Stops at the first thing it cannot fix,
/// naming it.
pub fn run_all() -> Result<()> {
    check_root()?;
    check_kernel()?;
    mount_bpffs()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

/// Installs cargo-fuzz (for the sidecar's fuzz targets, `l7-sidecar/fuzz/`), which runs
/// with the nightly toolchain. Not needed by any test.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let bin = cargo_bin_dir()?.join("cargo-fuzz");
    if output(Command::new(&bin).arg("--version")).is_ok() {
        return Ok(());
    }
    ensure_rust_src()?;
    eprintln!("setup: installing cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz failed")
}

fn check_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("dl7 loads XDP programs and creates network namespaces: run this as root");
    }
    Ok(())
}

fn check_kernel() -> Result<()> {
    let needs = [
        (
            "/proc/sys/kernel/unprivileged_bpf_disabled",
            "the bpf() system call (CONFIG_BPF_SYSCALL)",
        ),
        (
            "/proc/sys/net/core/bpf_jit_enable",
            "the BPF JIT (CONFIG_BPF_JIT)",
        ),
        (
            "/sys/kernel/btf/vmlinux",
            "kernel BTF (CONFIG_DEBUG_INFO_BTF)",
        ),
    ];
    for (path, what) in needs {
        if !Path::new(path).exists() {
            bail!("this kernel lacks {what}: {path} does not exist");
        }
    }
    Ok(())
}

fn mount_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs on /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("bpffs is not mounted and mounting it failed")
}

fn ensure_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF program")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly-")) {
        eprintln!("setup: installing the {NIGHTLY} toolchain");
        run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
            .context("the nightly toolchain is missing and could not be installed")?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
            .context("adding rust-src to the nightly toolchain failed")?;
    }
    Ok(())
}

/// Where cargo installs binaries (`$CARGO_HOME/bin`, by default `~/.cargo/bin`).
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    Ok(home.join("bin"))
}

fn ensure_bpf_linker() -> Result<()> {
    let bin_dir = cargo_bin_dir()?;
    let linker = bin_dir.join("bpf-linker");
    if let Ok(version) = output(Command::new(&linker).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} toolchain's LLVM"
    );
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
    )?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|name| {
            name.strip_prefix("lib")?
                .strip_suffix(".so")
                .filter(|stem| stem.starts_with("LLVM-"))
                .map(str::to_owned)
        })
        .with_context(|| format!("no libLLVM-*.so in {}", lib_dir.display()))?;
    let rustflags = format!(
        "-L {lib} -l dylib={llvm} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib_dir.display()
    );
    let root = bin_dir.parent().context("cargo bin dir has a parent")?;
    run(Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            "llvm-22,no-llvm-linking",
            "--force",
        ])
        .arg("--root")
        .arg(root)
        .env("RUSTFLAGS", rustflags))
    .context("building bpf-linker failed")
}

/// The oldest Node.js major version the cache-tests suite runs on (its `engines`).
#[cfg(feature = "full")]
const NODE_MIN_MAJOR: u32 = 14;

/// Node.js and npm for `cargo xtask cache-tests`: Debian's packages when `node` is missing or
/// older than the suite allows.
#[cfg(feature = "full")]
pub fn ensure_node() -> Result<()> {
    let major = output(Command::new("node").arg("--version"))
        .ok()
        .and_then(|v| {
            v.trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    let npm = output(Command::new("npm").arg("--version")).is_ok();
    if major.is_some_and(|m| m >= NODE_MIN_MAJOR) && npm {
        return Ok(());
    }
    ensure_debian_packages(&["nodejs", "npm"])
}

/// Installs the Debian packages that are missing (`apt-get update` first, once).
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {} failed", missing.join(" ")))
}
