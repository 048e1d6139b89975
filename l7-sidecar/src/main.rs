//! The `l7-sidecar` binary. Subcommands: `serve` (the sidecar itself) and `route` (which
//! member owns a key, for operators and scripts). Every error is one line on stderr and a
//! non-zero exit status.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "l7-sidecar",
    version,
    about = "dl7's per-server layer-7 sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar (or, with --mode central, the conventional central L7 balancer).
    Serve(Box<l7_sidecar::config::Settings>),
    /// Print the member that owns each key under a hashing scheme.
    Route(cli::route::RouteArgs),
}

/// Exit status for bad command lines and bad input (as clap uses).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message without the usage block, folded onto one line.
            let rendered = e.render().to_string();
            let message = rendered.split("\n\n").next().unwrap_or_default();
            let words: Vec<&str> = message.lines().map(str::trim).collect();
            eprintln!("{}", words.join(" "));
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let result = match cli.command {
        Command::Serve(settings) => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .init();
            cli::serve::run(*settings)
        }
        Command::Route(args) => cli::route::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}
