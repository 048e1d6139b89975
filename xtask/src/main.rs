//! dl7's developer and operator tasks, run as `cargo xtask COMMAND` (an alias in
//! .cargo/config.toml). Commands that build or load eBPF first run `setup`, so a fresh
//! machine needs nothing done by hand.

mod bench_hashing;
mod bench_l4;
mod bench_l7;
mod bench_paper;
mod build;
mod cmd;
mod demo;
mod e2e;
mod ebpf;
mod plot;
mod setup;
mod test;
mod testbed;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use dl7_traffic::{load::LoadArgs, origin::OriginArgs};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dl7's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and loading eBPF needs (rust-src, bpf-linker, bpffs) and check
    /// the kernel; idempotent.
    Setup {
        /// Also install cargo-fuzz, for the sidecar's fuzz targets (l7-sidecar/fuzz).
        #[arg(long)]
        fuzz: bool,
    },
    /// Build the XDP programs (l4-ebpf) for bpfel-unknown-none.
    BuildEbpf,
    /// On the front host: build the XDP program and l4-ctl (release), then `l4-ctl load`
    /// (attach, or upgrade in place keeping every flow).
    BuildAndLoad {
        /// The front's interface that receives the VIPs' traffic.
        #[arg(long)]
        iface: String,
        /// native (in the driver) or generic (any interface, slower).
        #[arg(long, default_value = "native", value_parser = ["native", "generic"])]
        mode: String,
    },
    /// dl7 at work on a namespace testbed: workload through the VIP, a report and a chart.
    Demo(demo::DemoArgs),
    /// End-to-end scenarios on the namespace testbed (part of `test`).
    E2e,
    /// The whole cluster in network namespaces: up, down, status.
    Testbed {
        #[command(subcommand)]
        command: testbed::TestbedCommand,
    },
    /// Run every test (installs what the tests need first).
    Test,
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Send HTTP load to a target (synthetic SURGE-like workload or a replayed log) and report
    /// req/s, latency percentiles, errors and bytes.
    Load(LoadArgs),
    /// Serve deterministic bodies of any requested size (`?size=N`) and count requests per URL
    /// (the testbed's origin).
    Origin(OriginArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// Kernel-measured ns per packet of the XDP balancer against a MAC-swap baseline.
    Xdp {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// A short run (smoke test), not for figures.
        #[arg(long)]
        quick: bool,
    },
    /// Hash quality of every l7-sidecar scheme on a SURGE-like workload.
    Hashing(bench_hashing::BenchHashingArgs),
    /// dl7's sidecar as the L7 hashing tier against nginx and HAProxy under the same load.
    L7(bench_l7::BenchL7Args),
    /// The paper's experiment: the distributed design (XDP front + N sidecars) against the
    /// conventional one (one central L7 balancer) for N servers and every scheme.
    Paper(bench_paper::BenchPaperArgs),
    /// The L4 front: dl7's XDP against nftables DNAT and HAProxy `mode tcp`, front CPU per
    /// request.
    L4(bench_l4::BenchL4Args),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A command's options as clap parses `flags` (the defaults for the rest): how the quick
/// variants of the benchmarks are run from `cargo xtask test`.
pub(crate) fn args_from<A: clap::Args + clap::FromArgMatches>(flags: &[&str]) -> Result<A> {
    let matches = A::augment_args(clap::Command::new("xtask"))
        .try_get_matches_from(std::iter::once("xtask").chain(flags.iter().copied()))?;
    Ok(A::from_arg_matches(&matches)?)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    let root = workspace_root();
    match task {
        Task::Setup { fuzz } => {
            setup::run_all()?;
            if fuzz {
                setup::ensure_cargo_fuzz()?;
            }
            Ok(())
        }
        Task::BuildEbpf => ebpf::build(&root),
        Task::BuildAndLoad { iface, mode } => build::build_and_load(
            &root,
            &build::FrontPlace {
                iface: &iface,
                mode: &mode,
                netns: None,
                pin_dir: None,
            },
        )
        .map(drop),
        Task::Demo(args) => demo::run(&root, args),
        Task::E2e => e2e::run(&root),
        Task::Testbed { command } => testbed::run(&root, command),
        Task::Test => test::run_all(&root),
        Task::Bench { bench } => match bench {
            Bench::Xdp { json, quick } => {
                ebpf::build(&root)?;
                let mut cmd = cmd::cargo(&root);
                cmd.args(["bench", "-q", "-p", "l4-ctl", "--bench", "xdp", "--"]);
                if json {
                    cmd.arg("--json");
                }
                if quick {
                    cmd.arg("--quick");
                }
                cmd::run(&mut cmd)
            }
            Bench::Hashing(args) => bench_hashing::run(args),
            Bench::L7(args) => bench_l7::run(&root, args),
            Bench::Paper(args) => bench_paper::run(&root, args),
            Bench::L4(args) => bench_l4::run(&root, args),
        },
        Task::Load(args) => dl7_traffic::load::run_cli(args),
        Task::Origin(args) => dl7_traffic::origin::run(args),
    }
}
