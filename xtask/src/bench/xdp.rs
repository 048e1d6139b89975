//! `cargo xtask bench xdp`: kernel-measured ns per packet of the XDP balancer against a
//! MAC-swap baseline (BPF_PROG_TEST_RUN). The harness is l4-ctl's bench target `xdp`, where
//! the programs and test frames are; this builds the eBPF objects and runs it.

use std::path::Path;

use anyhow::Result;

use super::opts::{BenchOpts, Uses};
use crate::{cmd, ebpf};

/// Options of `cargo xtask bench xdp`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchXdpArgs {
    #[command(flatten)]
    pub opts: BenchOpts,
}

pub fn run(root: &Path, args: BenchXdpArgs) -> Result<()> {
    let opts = &args.opts;
    // The kernel times a fixed number of runs of each frame; no load, no wall-clock duration.
    opts.check(
        "xdp",
        Uses {
            duration: false,
            warmup: false,
            concurrency: false,
        },
    )?;
    ebpf::build(root)?;
    let mut bench = cmd::cargo(root);
    // A smoke run builds the harness with the tests (the kernel does the measured work
    // either way); figures come from the release (bench) profile.
    // The whole workspace, as `cargo test` resolves its features, so the test build's
    // artifacts serve.
    if opts.quick {
        bench.args(["test", "-q", "--workspace", "--bench", "xdp", "--"]);
    } else {
        bench.args(["bench", "-q", "-p", "l4-ctl", "--bench", "xdp", "--"]);
    }
    if opts.json {
        bench.arg("--json");
    }
    if opts.quick {
        bench.arg("--quick");
    }
    cmd::run(&mut bench)
}
