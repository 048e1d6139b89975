//! `cargo xtask bench NAME`: dl7's benchmarks, one module each. Every bench takes the same
//! options under the same names ([`opts::BenchOpts`]: `--json`, `--quick`, `--duration`,
//! `--warmup`, `--concurrency`), refuses those it has no use for, holds one machine-wide lock
//! while it runs ([`opts::lock`]), and has a quick variant that `cargo xtask test` runs as a smoke
//! test ([`run_quick`]).

pub mod forward;
pub mod hashing;
pub mod l4;
pub mod l7;
pub mod opts;
pub mod paper;
pub mod plot;
pub mod process;
pub mod xdp;

use std::path::Path;

use anyhow::{Context, Result};

use opts::args_from;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Kernel-measured ns per packet of the XDP balancer against a MAC-swap baseline.
    Xdp(xdp::BenchXdpArgs),
    /// Hash quality of every l7-sidecar scheme on a SURGE-like workload.
    Hashing(hashing::BenchHashingArgs),
    /// dl7's sidecar as the L7 hashing tier against nginx and HAProxy under the same load.
    L7(l7::BenchL7Args),
    /// The paper's experiment: the distributed design (XDP front + N sidecars) against the
    /// conventional one (one central L7 balancer) for N servers and every scheme.
    Paper(paper::BenchPaperArgs),
    /// The L4 front: dl7's XDP against nftables DNAT and HAProxy `mode tcp`, front CPU per
    /// request.
    L4(l4::BenchL4Args),
    /// The forwarding pass against a local hit: a forwarding sidecar's CPU per request over a
    /// sidecar's that answers from its cache, both at once, per body size.
    Forward(forward::BenchForwardArgs),
}

pub fn run(root: &Path, bench: Bench) -> Result<()> {
    match bench {
        Bench::Xdp(args) => xdp::run(root, args),
        Bench::Hashing(args) => hashing::run(args),
        Bench::L7(args) => l7::run(root, args),
        Bench::Paper(args) if args.fronts > 1 => paper::fronts::run(root, args),
        Bench::Paper(args) => paper::run(root, args),
        Bench::L4(args) => l4::run(root, args),
        Bench::Forward(args) => forward::run(root, args),
    }
}

/// The quick variant of every bench that needs no figures to mean anything: what
/// `cargo xtask test` runs.
pub fn run_quick(root: &Path) -> Result<()> {
    xdp::run(root, args_from(&["--quick"])?).context("the quick XDP benchmark failed")?;
    l7::run(root, args_from(&["--quick"])?).context("the quick L7 benchmark failed")?;
    paper::run(root, args_from(&["--quick"])?).context("the quick paper benchmark failed")?;
    l4::run(root, args_from(&["--quick"])?).context("the quick L4 benchmark failed")?;
    forward::run(root, args_from(&["--quick"])?)
        .context("the quick forwarding benchmark failed")?;
    Ok(())
}
