//! `cargo xtask bench hashing`: the hash-quality report for every scheme in the registry.
//!
//! A deterministic, offline, SURGE-like workload (`dl7_traffic::workload`, the one `cargo xtask load`
//! sends): object popularity is Zipf (alpha 0.8 by default), object sizes are a lognormal body
//! with a Pareto tail.
//! Each of N in {2, 4, 8, 16} servers is an LRU cache with a byte budget; the total budget is
//! `--cache-fraction` (default 10 %) of the catalogue's unique bytes, split evenly. Requests
//! are routed with `Scheme::pick`, and `--concurrency` requests (default 64) are kept open via
//! `begin`/`end` so that `bounded` sees load. Every random number comes from PCG-64 with a
//! fixed seed: two runs print the same table.
//!
//! Reported per scheme and N: request hit ratio; bytes stored / unique bytes stored (1.0 when
//! every object lives on one server); load imbalance (max/mean requests and bytes per server);
//! the fraction of all catalogue keys that change owner when one server is appended and when
//! the last one is removed (ideal 1/(N+1) and 1/N); and `pick` nanoseconds per key, the only
//! timing, measured with `Instant` over many keys on one thread after the simulations.
//!
//! Output: a table on stdout (or one JSON document with `--json`), `hashing.csv` and PNG plots
//! under `target/bench-results/hashing/` (or `--out`). Debug builds re-run themselves with
//! `cargo run --release` so that the timings mean something.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use l7_sidecar::scheme::{self, Member, Scheme};
use lru::LruCache;

use serde::Serialize;

use super::opts::{BenchOpts, Uses};
use super::plot;

use dl7_traffic::workload::Surge;

/// Options of `cargo xtask bench hashing`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "A simulation of --requests requests: --concurrency is the requests kept in flight (reported with begin/end, so that `bounded` sees load) [default: 64]; --quick is a run of a few seconds."
)]
pub struct BenchHashingArgs {
    #[command(flatten)]
    pub opts: BenchOpts,
    /// Zipf exponent of object popularity.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Objects in the catalogue [default: 100000, --quick 20000].
    #[arg(long)]
    pub objects: Option<usize>,
    /// Requests per simulation [default: 1000000, --quick 100000].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Total cache budget as a fraction of the catalogue's unique bytes, split evenly.
    #[arg(long, default_value_t = 0.1)]
    pub cache_fraction: f64,
    /// Server counts to simulate.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 4, 8, 16])]
    pub servers: Vec<usize>,
    /// Schemes to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub schemes: Vec<String>,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 1998)]
    pub seed: u64,
    /// Where to write hashing.csv and the plots [default: target/bench-results/hashing].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Set in the release child so it does not re-run itself again.
const CHILD_ENV: &str = "DL7_BENCH_HASHING_RELEASE";

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    scheme: String,
    servers: usize,
    hit_ratio: f64,
    stored_over_unique: f64,
    request_imbalance: f64,
    byte_imbalance: f64,
    moved_on_add: f64,
    ideal_on_add: f64,
    moved_on_remove: f64,
    ideal_on_remove: f64,
    pick_ns: f64,
}

/// The whole report, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Report {
    alpha: f64,
    objects: usize,
    requests: usize,
    unique_bytes: u64,
    cache_fraction: f64,
    in_flight: usize,
    seed: u64,
    rows: Vec<Row>,
}

/// The objects: their keys and sizes.
struct Catalogue {
    keys: Vec<String>,
    sizes: Vec<u64>,
}

impl Catalogue {
    fn new(sizes: Vec<u64>) -> Self {
        let keys = (0..sizes.len())
            .map(|i| format!("http://origin.example/content/{i:08x}.bin"))
            .collect();
        Self { keys, sizes }
    }
}

/// An LRU cache with a byte budget.
struct ByteLru {
    entries: LruCache<u32, u64>,
    used: u64,
    budget: u64,
}

impl ByteLru {
    fn new(budget: u64) -> Self {
        Self {
            entries: LruCache::unbounded(),
            used: 0,
            budget,
        }
    }

    /// True on a hit; on a miss the object is admitted if it fits at all.
    fn access(&mut self, obj: u32, size: u64) -> bool {
        if self.entries.get(&obj).is_some() {
            return true;
        }
        if size > self.budget {
            return false;
        }
        while self.used + size > self.budget {
            match self.entries.pop_lru() {
                Some((_, s)) => self.used -= s,
                None => break,
            }
        }
        self.entries.put(obj, size);
        self.used += size;
        false
    }
}

struct Simulation {
    hit_ratio: f64,
    stored_over_unique: f64,
    request_imbalance: f64,
    byte_imbalance: f64,
}

fn imbalance(per_server: &[u64]) -> f64 {
    let max = per_server.iter().copied().max().unwrap_or(0) as f64;
    let mean = per_server.iter().sum::<u64>() as f64 / per_server.len() as f64;
    if mean == 0.0 { 0.0 } else { max / mean }
}

fn simulate(
    s: &dyn Scheme,
    servers: usize,
    cat: &Catalogue,
    requests: &[u32],
    budget: u64,
    in_flight: usize,
) -> Simulation {
    let mut caches: Vec<ByteLru> = (0..servers).map(|_| ByteLru::new(budget)).collect();
    let mut reqs = vec![0u64; servers];
    let mut bytes = vec![0u64; servers];
    let mut open = VecDeque::with_capacity(in_flight + 1);
    let mut hits = 0u64;
    for &obj in requests {
        let m = s.pick(cat.keys[obj as usize].as_bytes());
        s.begin(m);
        open.push_back(m);
        if open.len() > in_flight
            && let Some(done) = open.pop_front()
        {
            s.end(done);
        }
        let size = cat.sizes[obj as usize];
        reqs[m] += 1;
        bytes[m] += size;
        if caches[m].access(obj, size) {
            hits += 1;
        }
    }
    for m in open {
        s.end(m);
    }
    let stored: u64 = caches.iter().map(|c| c.used).sum();
    let distinct: HashSet<u32> = caches
        .iter()
        .flat_map(|c| c.entries.iter().map(|(&o, _)| o))
        .collect();
    let distinct_bytes: u64 = distinct.iter().map(|&o| cat.sizes[o as usize]).sum();
    Simulation {
        hit_ratio: hits as f64 / requests.len() as f64,
        stored_over_unique: if distinct_bytes == 0 {
            0.0
        } else {
            stored as f64 / distinct_bytes as f64
        },
        request_imbalance: imbalance(&reqs),
        byte_imbalance: imbalance(&bytes),
    }
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member::new(format!("10.0.{}.{}:80", i / 250, i % 250 + 1), 1))
        .collect()
}

fn owners(s: &dyn Scheme, cat: &Catalogue) -> Vec<u32> {
    cat.keys
        .iter()
        .map(|k| s.pick(k.as_bytes()) as u32)
        .collect()
}

fn moved(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

/// Fraction of keys that change owner when a server is appended, and when the last one is
/// removed (members keep their positions, so indexes can be compared directly).
fn remap(name: &str, n: usize, cat: &Catalogue) -> anyhow::Result<(f64, f64)> {
    let all = members(n + 1);
    let base = owners(scheme::build(name, &all[..n])?.as_ref(), cat);
    let grown = owners(scheme::build(name, &all)?.as_ref(), cat);
    let added = moved(&base, &grown);
    let removed = if n > 1 {
        let shrunk = owners(scheme::build(name, &all[..n - 1])?.as_ref(), cat);
        moved(&base, &shrunk)
    } else {
        1.0
    };
    Ok((added, removed))
}

/// Nanoseconds per `pick` over the catalogue's keys, repeated to about `picks` calls.
fn pick_ns(s: &dyn Scheme, cat: &Catalogue, picks: usize) -> f64 {
    let rounds = picks.div_ceil(cat.keys.len()).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        for k in &cat.keys {
            black_box(s.pick(black_box(k.as_bytes())));
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * cat.keys.len()) as f64
}

/// Re-runs this very command line from a release build. The child reports its own errors,
/// so a failed child ends this process with the child's status instead of a second message.
fn rerun_in_release() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::cmd::workspace_root())
        .args(["run", "--release", "--quiet", "-p", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .status()
        .context("running the release build of xtask")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// Runs `cargo xtask bench hashing`.
pub fn run(args: BenchHashingArgs) -> anyhow::Result<()> {
    let opts = &args.opts;
    opts.check(
        "hashing",
        Uses {
            duration: false,
            warmup: false,
            concurrency: true,
        },
    )?;
    if cfg!(debug_assertions) && std::env::var_os(CHILD_ENV).is_none() {
        return rerun_in_release();
    }
    let in_flight = opts.concurrency(64, 64);
    let objects = args.objects.unwrap_or(opts.pick(100_000, 20_000));
    let requests = args.requests.unwrap_or(opts.pick(1_000_000, 100_000));
    ensure!(
        args.alpha > 0.0,
        "--alpha must be positive, not {}",
        args.alpha
    );
    ensure!(
        objects > 0 && requests > 0,
        "--objects and --requests must be positive"
    );
    ensure!(
        args.cache_fraction > 0.0 && args.cache_fraction <= 1.0,
        "--cache-fraction must be in (0, 1], not {}",
        args.cache_fraction
    );
    ensure!(
        !args.servers.is_empty() && args.servers.iter().all(|&n| n >= 1),
        "--servers needs positive counts"
    );
    let names: Vec<&'static str> = if args.schemes.is_empty() {
        scheme::names().collect()
    } else {
        args.schemes
            .iter()
            .map(|n| scheme::lookup(n).map(|info| info.name))
            .collect::<Result<_, _>>()?
    };

    let mut workload = Surge::new(objects, args.alpha, args.seed)?;
    let stream: Vec<u32> = (0..requests)
        .map(|_| workload.next_object() as u32)
        .collect();
    let unique = workload.unique_bytes();
    let cat = Catalogue::new(workload.sizes);

    let mut rows = Vec::new();
    for &n in &args.servers {
        let budget = (unique as f64 * args.cache_fraction / n as f64) as u64;
        for &name in &names {
            let s = scheme::build(name, &members(n))?;
            let sim = simulate(s.as_ref(), n, &cat, &stream, budget, in_flight);
            let (moved_on_add, moved_on_remove) = remap(name, n, &cat)?;
            rows.push(Row {
                scheme: name.to_owned(),
                servers: n,
                hit_ratio: sim.hit_ratio,
                stored_over_unique: sim.stored_over_unique,
                request_imbalance: sim.request_imbalance,
                byte_imbalance: sim.byte_imbalance,
                moved_on_add,
                ideal_on_add: 1.0 / (n + 1) as f64,
                moved_on_remove,
                ideal_on_remove: 1.0 / n as f64,
                pick_ns: 0.0,
            });
        }
    }
    // Timings last, on their own, so nothing else competes for the core.
    let picks = opts.pick(1_000_000, 100_000);
    for row in &mut rows {
        let s = scheme::build(&row.scheme, &members(row.servers))?;
        row.pick_ns = pick_ns(s.as_ref(), &cat, picks);
    }

    let report = Report {
        alpha: args.alpha,
        objects,
        requests,
        unique_bytes: unique,
        cache_fraction: args.cache_fraction,
        in_flight,
        seed: args.seed,
        rows,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| opts.results_dir("hashing"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(out.join("hashing.csv"), csv(&report.rows))
        .with_context(|| format!("writing {}", out.join("hashing.csv").display()))?;
    let plotted = plots(&report, &out)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
        println!("\nwrote {}", out.join("hashing.csv").display());
        for p in plotted {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "scheme,servers,hit_ratio,stored_over_unique,request_imbalance,byte_imbalance,\
         moved_on_add,ideal_on_add,moved_on_remove,ideal_on_remove,pick_ns\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.5},{:.4},{:.4},{:.4},{:.5},{:.5},{:.5},{:.5},{:.1}",
            r.scheme,
            r.servers,
            r.hit_ratio,
            r.stored_over_unique,
            r.request_imbalance,
            r.byte_imbalance,
            r.moved_on_add,
            r.ideal_on_add,
            r.moved_on_remove,
            r.ideal_on_remove,
            r.pick_ns
        );
    }
    s
}

fn table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "hashing schemes: {} objects ({:.1} GB unique), {} requests, Zipf alpha {}, \
         caches {:.0} % of unique bytes, {} in flight, seed {}",
        report.objects,
        report.unique_bytes as f64 / 1e9,
        report.requests,
        report.alpha,
        report.cache_fraction * 100.0,
        report.in_flight,
        report.seed
    );
    let mut last_n = 0;
    for r in &report.rows {
        if r.servers != last_n {
            last_n = r.servers;
            let _ = writeln!(
                s,
                "\nN = {}\n{:<11} {:>7} {:>13} {:>9} {:>9} {:>16} {:>16} {:>8}",
                r.servers,
                "scheme",
                "hit %",
                "stored/uniq",
                "req max/",
                "byte max/",
                "moved +1 (ideal)",
                "moved -1 (ideal)",
                "pick ns"
            );
        }
        let _ = writeln!(
            s,
            "{:<11} {:>7.2} {:>13.3} {:>9.3} {:>9.3} {:>7.2}% ({:>4.1}%) {:>7.2}% ({:>4.1}%) {:>8.1}",
            r.scheme,
            r.hit_ratio * 100.0,
            r.stored_over_unique,
            r.request_imbalance,
            r.byte_imbalance,
            r.moved_on_add * 100.0,
            r.ideal_on_add * 100.0,
            r.moved_on_remove * 100.0,
            r.ideal_on_remove * 100.0,
            r.pick_ns
        );
    }
    s
}

/// Extracts one plotted number from a row.
type Metric = fn(&Row) -> f64;

/// Draws one PNG per metric (x: servers, one line per scheme). Returns the files written;
/// none when the font is missing (the CSV has the same numbers).
fn plots(report: &Report, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !plot::register_sans_serif()? {
        return Ok(Vec::new());
    }
    let metrics: [(&str, &str, Metric); 4] = [
        ("hit_ratio.png", "hit ratio (%)", |r| r.hit_ratio * 100.0),
        ("request_imbalance.png", "requests, max / mean", |r| {
            r.request_imbalance
        }),
        (
            "moved_on_add.png",
            "keys moved when a server joins (%)",
            |r| r.moved_on_add * 100.0,
        ),
        ("pick_ns.png", "pick, ns per key", |r| r.pick_ns),
    ];
    let mut written = Vec::new();
    for (file, label, value) in metrics {
        let path = out.join(file);
        line_chart(report, &path, label, value)
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn line_chart(report: &Report, path: &Path, label: &str, value: Metric) -> anyhow::Result<()> {
    let mut schemes: Vec<&str> = report.rows.iter().map(|r| r.scheme.as_str()).collect();
    schemes.sort_unstable();
    schemes.dedup();
    let series: Vec<plot::Series> = schemes
        .iter()
        .map(|name| {
            let points = report
                .rows
                .iter()
                .filter(|r| r.scheme == *name)
                .map(|r| (r.servers as f64, value(r)))
                .collect();
            ((*name).to_owned(), points)
        })
        .collect();
    plot::servers_chart(path, label, label, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_respects_the_byte_budget() {
        let mut c = ByteLru::new(100);
        assert!(!c.access(1, 60));
        assert!(c.access(1, 60));
        assert!(!c.access(2, 60));
        assert!(!c.access(1, 60), "1 was evicted to make room for 2");
        assert!(c.used <= 100);
        assert!(!c.access(3, 500), "too large to cache at all");
        assert!(c.used <= 100);
    }
}
