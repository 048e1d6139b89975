//! dl7's developer and operator tasks, run as `cargo xtask COMMAND` (an alias in
//! .cargo/config.toml). Commands that build or load eBPF first run `setup`, so a fresh
//! machine needs nothing done by hand.
//!
//! Two builds of one crate. The alias builds xtask without its default feature `full`: the
//! glue that a fresh machine needs first (`setup`, `build-ebpf`, `build-and-load`, `testbed`,
//! and `test`, which compiles the rest with the tests) and nothing that waits for tokio,
//! plotters or the sidecar to compile. Every other command (`demo`, `e2e`, `cache-tests`,
//! `bench`, `load`, `origin`) is in the `full` build, which the light one runs with `cargo run`
//! (after `setup`, for the commands that install what they need).
//! Modules depend one way: the glue (main, test, demo, e2e, cache_tests) -> the benches
//! (`bench/`) -> {dl7-testbed, dl7-traffic}; build, cmd, ebpf and setup are leaves every one
//! may use.

#[cfg(feature = "full")]
mod bench;
mod build;
#[cfg(feature = "full")]
mod cache_tests;
mod cmd;
#[cfg(feature = "full")]
mod demo;
#[cfg(feature = "full")]
mod e2e;
#[cfg(feature = "full")]
mod e2e_fronts;
#[cfg(feature = "full")]
mod e2e_routed;
mod ebpf;
mod setup;
mod test;

#[cfg(feature = "full")]
use std::path::Path;

#[cfg(feature = "full")]
use anyhow::Context;
use anyhow::Result;
use clap::{Parser, Subcommand};
use dl7_testbed::cli::TestbedCommand;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dl7's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

/// The tasks of the light build.
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
    /// The whole cluster in network namespaces: up, down, status.
    Testbed {
        #[command(subcommand)]
        command: TestbedCommand,
    },
    /// Run every test (installs what the tests need first).
    Test,
    #[cfg(feature = "full")]
    #[command(flatten)]
    Full(FullTask),
}

/// The tasks of the full build.
#[cfg(feature = "full")]
#[derive(Subcommand)]
enum FullTask {
    /// dl7 at work on a namespace testbed: workload through the VIP, a report and a chart.
    Demo(demo::DemoArgs),
    /// End-to-end scenarios on the namespace testbed (part of `test`).
    E2e {
        /// Only these testbeds' scenarios: layer2 (e2e.rs), routed (e2e_routed.rs), fronts
        /// (e2e_fronts.rs); comma-separated [default: all].
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<E2eSet>,
    },
    /// What `test` runs after the workspace's tests: the end-to-end scenarios and the smoke
    /// runs of the benchmarks.
    #[command(hide = true)]
    TestScenarios,
    /// The public HTTP caching test suite (cache-tests.fyi) against dl7's sidecar, and with
    /// `--peers` against nginx, Squid, Varnish and Traffic Server in the same run.
    CacheTests(cache_tests::CacheTestsArgs),
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
    /// Send HTTP load to a target (synthetic SURGE-like workload or a replayed log) and report
    /// req/s, latency percentiles, errors and bytes (`dl7-traffic load`).
    Load(dl7_traffic::load::LoadArgs),
    /// Serve deterministic bodies of any requested size (`?size=N`) and count requests per URL
    /// (the testbed's origin, `dl7-traffic origin`).
    Origin(dl7_traffic::origin::OriginArgs),
}

/// The subcommands the light build runs itself.
const LIGHT: &[&str] = &["setup", "build-ebpf", "build-and-load", "testbed", "test"];
/// Full-build commands that install what they need: the light build runs `setup` first, so
/// that a fresh machine installs before the long compile.
const SETUP_FIRST: &[&str] = &["demo", "e2e", "bench", "cache-tests"];

fn main() {
    let first = std::env::args().nth(1).unwrap_or_default();
    let result = if cfg!(feature = "full") || LIGHT.contains(&first.as_str()) {
        run(Cli::parse().command)
    } else {
        run_full(&first)
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs this command line in the full build (`cargo run -p xtask` with the default
/// features), replacing this process.
fn run_full(first: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if SETUP_FIRST.contains(&first) {
        setup::run_all()?;
    }
    let err = cmd::cargo(&cmd::workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .exec();
    Err(anyhow::Error::new(err).context("running the full build of xtask"))
}

fn run(task: Task) -> Result<()> {
    let root = cmd::workspace_root();
    match task {
        Task::Setup { fuzz } => {
            setup::run_all()?;
            if fuzz {
                setup::ensure_cargo_fuzz()?;
            }
            Ok(())
        }
        Task::BuildEbpf => ebpf::build(&root),
        Task::BuildAndLoad { iface, mode } => build::build_and_load(&root, &iface, &mode),
        Task::Test => test::run_all(&root),
        Task::Testbed { command } => dl7_testbed::cli::run(command, || {
            build::testbed_parts(&root, build::Profile::Release)
        }),
        #[cfg(feature = "full")]
        Task::Full(task) => run_full_task(&root, task),
    }
}

/// The end-to-end scenario sets, one testbed kind each.
#[cfg(feature = "full")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum E2eSet {
    Layer2,
    Routed,
    Fronts,
}

#[cfg(feature = "full")]
fn run_full_task(root: &Path, task: FullTask) -> Result<()> {
    match task {
        FullTask::Demo(args) => demo::run(root, args),
        FullTask::E2e { only } => {
            let run = |set| only.is_empty() || only.contains(&set);
            if run(E2eSet::Layer2) {
                e2e::run(root)?;
            }
            if run(E2eSet::Routed) {
                e2e_routed::run(root)?;
            }
            if run(E2eSet::Fronts) {
                e2e_fronts::run(root)?;
            }
            Ok(())
        }
        FullTask::TestScenarios => {
            e2e::run(root).context("the end-to-end scenarios failed")?;
            e2e_routed::run(root).context("the routed-reals scenarios failed")?;
            e2e_fronts::run(root).context("the several-fronts scenarios failed")?;
            cache_tests::run_check(root).context("the cache-tests check failed")?;
            bench::run_quick(root)
        }
        FullTask::CacheTests(args) => cache_tests::run(root, args),
        FullTask::Bench { bench } => bench::run(root, bench),
        FullTask::Load(args) => dl7_traffic::load::run_cli(args),
        FullTask::Origin(args) => dl7_traffic::origin::run(args),
    }
}
