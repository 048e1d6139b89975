//! The `l4-ctl` command: operates dl7's front node. Each call is its own process; the state
//! lives in the maps pinned under `--pin-dir` (default /sys/fs/bpf/dl7). Commands that change
//! the maps hold a lock on that directory, validate everything before the first write, and
//! print one line per change. Every error is one line on stderr and a non-zero exit status
//! (2 for a bad command line, 1 for everything else).

mod cli;
mod commands;
mod daemon;

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};

use cli::Cli;

/// Exit status for a bad command line (as clap uses).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // The first line of clap's message (it names the bad value); no usage block.
            _ => {
                let rendered = e.render().to_string();
                eprintln!(
                    "{}",
                    rendered.lines().next().unwrap_or("error: bad arguments")
                );
                return ExitCode::from(USAGE_ERROR);
            }
        },
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
