//! `dl7-traffic`: the load generator and the synthetic origin as a command of their own
//! (`cargo xtask load|origin` run the same code).

use clap::{Parser, Subcommand};
use dl7_traffic::{load, origin};

#[derive(Parser)]
#[command(
    name = "dl7-traffic",
    about = "dl7's load generator and synthetic origin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send HTTP load to a target (synthetic SURGE-like workload or a replayed log) and report
    /// req/s, latency percentiles, errors and bytes.
    Load(load::LoadArgs),
    /// Serve deterministic bodies of any requested size (`?size=N`) and count requests per URL.
    Origin(origin::OriginArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Load(args) => load::run_cli(args),
        Command::Origin(args) => origin::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
