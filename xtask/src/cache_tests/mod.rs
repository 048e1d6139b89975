//! `cargo xtask cache-tests`: the public HTTP caching test suite (cache-tests.fyi, the npm
//! package `http-cache-tests` at [`SUITE_VERSION`]) against dl7's sidecar on loopback and, with
//! `--peers`, against nginx, Squid, Varnish and Apache Traffic Server in the same run. One table,
//! counted with the suite's own classifier (`classify.mjs` calls it); the suite's raw results and
//! the classified ones are written under `target/cache-tests/`.
//!
//! `cargo xtask test` runs the dl7 column alone and fails when a test the checked-in
//! [`BASELINE`] lists as passing does not pass now.

mod peers;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::l7::servers::{free_ports, local};
use crate::bench::process::{BenchDir, CatchInterrupts, Group};
use crate::build::{self, Profile};
use crate::cmd;

/// The suite's version on the npm registry.
pub const SUITE_VERSION: &str = "0.4.5";
/// The tests dl7 passes (prerequisites honoured), one id per line: what CI holds it to.
pub const BASELINE: &str = "xtask/src/cache_tests/baseline.txt";
/// The classifier, written next to the suite before each run.
const CLASSIFY: &str = include_str!("classify.mjs");
/// One implementation's whole run of the suite (it takes 15 to 60 s).
const SUITE_LIMIT: Duration = Duration::from_secs(300);
/// Starting a server or cache.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The classes of the suite's classifier, in the table's order.
const CLASSES: [&str; 9] = [
    "pass",
    "fail",
    "optional",
    "yes",
    "no",
    "setup",
    "harness",
    "dependency",
    "retry",
];

#[derive(clap::Args)]
pub struct CacheTestsArgs {
    /// Also run nginx (proxy_cache), Squid, Varnish and Traffic Server, from Debian's
    /// packages (installed when missing), configured as in the suite's docker/ directory.
    #[arg(long)]
    peers: bool,
    /// Print the summary as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Fail when a test listed as passing in the checked-in baseline does not pass now.
    #[arg(long)]
    check: bool,
    /// Rewrite the baseline with the tests dl7 passes now.
    #[arg(long, hide = true)]
    write_baseline: bool,
}

/// `cargo xtask cache-tests`, on release builds.
pub fn run(root: &Path, args: CacheTestsArgs) -> Result<()> {
    run_with(root, &args, Profile::Release)
}

/// What `cargo xtask test` runs: the dl7 column on the test build, held to the baseline.
pub fn run_check(root: &Path) -> Result<()> {
    let args = CacheTestsArgs {
        peers: false,
        json: false,
        check: true,
        write_baseline: false,
    };
    run_with(root, &args, Profile::Test)
}

/// One implementation's classified results.
#[derive(Serialize)]
struct Column {
    name: &'static str,
    /// Tests per class, the suite's prerequisites honoured.
    honoured: BTreeMap<String, usize>,
    /// Tests per class, every test judged alone.
    alone: BTreeMap<String, usize>,
    /// The required tests failed (prerequisites honoured), with the suite's message.
    failing: BTreeMap<String, String>,
    /// The tests passed (pass or check yes, prerequisites honoured).
    #[serde(skip)]
    passing: BTreeSet<String>,
}

/// How the classifier judged one test.
#[derive(serde::Deserialize)]
struct Judged {
    kind: String,
    result: String,
    alone: String,
    detail: String,
}

fn run_with(root: &Path, args: &CacheTestsArgs, profile: Profile) -> Result<()> {
    let _interrupts = CatchInterrupts::install();
    crate::setup::ensure_node()?;
    if args.peers {
        peers::ensure_installed()?;
    }
    let out = root.join("target/cache-tests");
    let suite = install_suite(&out)?;
    let sidecar = build::binaries(root, profile)?.sidecar;
    let dir = BenchDir::create()?;
    let results = out.join("results");
    fs::create_dir_all(&results)?;

    let ports = free_ports(3 + peers::NAMES.len())?;
    let origin = local(ports[0]);
    let _origin = start_origin(&suite, dir.path(), origin)?;
    let mut files = Vec::new();
    {
        let (listen, peer) = (local(ports[1]), local(ports[2]));
        let _dl7 = start_dl7(&sidecar, dir.path(), listen, peer, origin)?;
        files.push((
            "dl7",
            run_suite(&suite, dir.path(), "dl7", listen, &results)?,
        ));
    }
    if args.peers {
        for (name, port) in peers::NAMES.into_iter().zip(&ports[3..]) {
            // Not in the bench directory: the peers drop privileges, and it is closed to others.
            let files_dir = out.join("peers").join(name);
            let peer = peers::start(name, &files_dir, local(*port), origin)?;
            files.push((
                peer.name,
                run_suite(&suite, dir.path(), peer.name, peer.addr, &results)?,
            ));
        }
    }
    let columns = classify(&suite, &out, &files)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&columns)?);
    } else {
        print_table(&columns);
    }
    let dl7 = &columns[0];
    if args.write_baseline {
        write_baseline(&root.join(BASELINE), &dl7.passing)?;
    }
    if args.check {
        check_baseline(&root.join(BASELINE), &dl7.passing)?;
    }
    Ok(())
}

/// The suite's package directory, installed under `out` with npm when it is not there in
/// [`SUITE_VERSION`].
fn install_suite(out: &Path) -> Result<PathBuf> {
    let prefix = out.join("suite");
    let package = prefix.join("node_modules/http-cache-tests");
    let installed = fs::read_to_string(package.join("package.json"))
        .ok()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .is_some_and(|p| p["version"] == SUITE_VERSION);
    if !installed {
        eprintln!("cache-tests: installing http-cache-tests {SUITE_VERSION} with npm");
        fs::create_dir_all(&prefix)?;
        cmd::run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(&prefix)
                .arg(format!("http-cache-tests@{SUITE_VERSION}")),
        )
        .context("installing the cache-tests suite from the npm registry failed")?;
    }
    Ok(package)
}

/// The suite's origin server (`server/server.mjs`), listening on `addr`'s port.
fn start_origin(suite: &Path, dir: &Path, addr: SocketAddr) -> Result<Group> {
    let mut command = Command::new("env");
    command
        // It serves its files (`GET /` answers its index page) from the working directory.
        .arg("--chdir")
        .arg(suite)
        .arg(format!("npm_config_port={}", addr.port()))
        .arg("npm_config_protocol=http")
        .arg(format!(
            "npm_config_pidfile={}",
            dir.join("origin.pid").display()
        ))
        .arg("node")
        .arg(suite.join("server/server.mjs"));
    let mut group = Group::spawn("origin", 0, &command, dir)?;
    group.wait_listening(addr, START_LIMIT)?;
    Ok(group)
}

/// dl7's sidecar as one server that owns every URL: its embedded cache in front of the
/// suite's origin, with the defaults an operator gets.
fn start_dl7(
    sidecar: &Path,
    dir: &Path,
    listen: SocketAddr,
    peer: SocketAddr,
    origin: SocketAddr,
) -> Result<Group> {
    let mut command = Command::new(sidecar);
    command
        .arg("serve")
        .args(["--listen", &listen.to_string()])
        .args(["--peer-listen", &peer.to_string()])
        .args(["--self", "dl7", "--members", &format!("dl7={peer}")])
        .args(["--origin", &format!("http://{origin}")])
        .args(["--health-interval", "off"]);
    let mut group = Group::spawn("dl7", 1, &command, dir)?;
    group.wait_listening(listen, START_LIMIT)?;
    Ok(group)
}

/// Runs the suite's CLI against the cache at `addr`; its results go to `results/NAME.json`.
fn run_suite(
    suite: &Path,
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    results: &Path,
) -> Result<PathBuf> {
    eprintln!("cache-tests: {name} on {addr}");
    let mut command = Command::new("env");
    command
        .arg(format!("npm_config_base=http://{addr}"))
        // The CLI runs one test when an id is set; empty runs them all.
        .arg("npm_package_config_id=")
        .args(["node", "--no-warnings"])
        .arg(suite.join("cli.mjs"));
    let run = format!("suite-{name}");
    let mut client = Group::spawn(&run, 0, &command, dir)?;
    let status = client.wait_exit(SUITE_LIMIT)?;
    let output = client.output("stdout");
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&output)
        .with_context(|| {
            format!(
                "the suite's run against {name} printed no results ({status}): {}",
                client.output("stderr").lines().last().unwrap_or_default()
            )
        })?;
    if parsed.is_empty() {
        bail!("the suite's run against {name} recorded no test");
    }
    let file = results.join(format!("{name}.json"));
    fs::write(&file, output).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Classifies each implementation's results with the suite's classifier.
fn classify(suite: &Path, out: &Path, files: &[(&'static str, PathBuf)]) -> Result<Vec<Column>> {
    let script = out.join("classify.mjs");
    fs::write(&script, CLASSIFY)?;
    let mut command = Command::new("node");
    command.arg(&script).arg(suite);
    command.args(files.iter().map(|(_, file)| file));
    let judged: BTreeMap<String, BTreeMap<String, Judged>> =
        serde_json::from_str(&cmd::output(&mut command)?)
            .context("reading the classifier's output")?;
    let columns = files
        .iter()
        .map(|(name, file)| {
            let tests = judged
                .get(&file.display().to_string())
                .with_context(|| format!("the classifier skipped {}", file.display()))?;
            Ok(column(name, tests))
        })
        .collect::<Result<Vec<_>>>()?;
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&columns)?,
    )?;
    Ok(columns)
}

fn column(name: &'static str, tests: &BTreeMap<String, Judged>) -> Column {
    let mut column = Column {
        name,
        honoured: BTreeMap::new(),
        alone: BTreeMap::new(),
        failing: BTreeMap::new(),
        passing: BTreeSet::new(),
    };
    for (id, test) in tests {
        *column.honoured.entry(test.result.clone()).or_default() += 1;
        *column.alone.entry(test.alone.clone()).or_default() += 1;
        if matches!(test.result.as_str(), "pass" | "yes") {
            column.passing.insert(id.clone());
        }
        if test.result == "fail" && test.kind == "required" {
            column.failing.insert(id.clone(), test.detail.clone());
        }
    }
    column
}

fn print_table(columns: &[Column]) {
    let total: usize = columns[0].honoured.values().sum();
    println!("cache-tests {SUITE_VERSION}: {total} tests, counted with the suite's classifier");
    let honoured: fn(&Column) -> &BTreeMap<String, usize> = |c| &c.honoured;
    let alone: fn(&Column) -> &BTreeMap<String, usize> = |c| &c.alone;
    for (title, counts) in [
        ("prerequisites honoured", honoured),
        ("prerequisites ignored", alone),
    ] {
        print!("\n{title:<24}");
        for c in columns {
            print!("{:>15}", c.name);
        }
        println!();
        for class in CLASSES {
            let label = match class {
                "optional" => "optional (not met)",
                "yes" => "check: yes",
                "no" => "check: no",
                "dependency" => "dependency failed",
                _ => class,
            };
            print!("{label:<24}");
            for c in columns {
                print!("{:>15}", counts(c).get(class).copied().unwrap_or(0));
            }
            println!();
        }
    }
    println!("\ndl7 fails (required, prerequisites honoured):");
    for (id, detail) in &columns[0].failing {
        println!("  {id}: {detail}");
    }
}

/// The baseline's ids (lines that are neither empty nor `#` comments).
fn read_baseline(path: &Path) -> Result<BTreeSet<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn write_baseline(path: &Path, passing: &BTreeSet<String>) -> Result<()> {
    let mut text = format!(
        "# cache-tests {SUITE_VERSION}: the tests dl7 passes (pass, or check answered yes, with the\n\
         # suite's prerequisites honoured). `cargo xtask test` fails when one of them does not.\n\
         # Rewritten by `cargo xtask cache-tests --write-baseline`.\n"
    );
    for id in passing {
        text.push_str(id);
        text.push('\n');
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn check_baseline(path: &Path, passing: &BTreeSet<String>) -> Result<()> {
    let baseline = read_baseline(path)?;
    let lost: Vec<&String> = baseline.difference(passing).collect();
    if !lost.is_empty() {
        bail!(
            "{} cache-tests listed as passing in {} fail now: {}",
            lost.len(),
            BASELINE,
            lost.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "cache-tests: dl7 passes all {} tests of the baseline ({} in all)",
        baseline.len(),
        passing.len()
    );
    Ok(())
}
