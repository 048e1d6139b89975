//! `cargo xtask bench paper`: the experiment of "A Distributed Layer 7 Server Load Balancing"
//! (Kwon, Kwak, Chung) on dl7's own stack, in the paper's shape.
//!
//! - Conventional design: one `l7-sidecar serve --mode central` (the testbed's `--central`) as
//!   the single L7 balancer in front of N servers; clients send to it.
//! - Distributed design: the XDP front spreads the clients' connections over the N servers'
//!   sidecars, which serve what they own and forward the rest to its owner.
//!
//! Both run on one testbed per N (N in `--servers`), with the same servers: every sidecar and
//! the central balancer run in a cgroup with the same CPU quota (`--quota`, 0.05 CPU: the
//! tier, not the machine, is what saturates, and 16 servers fit on 2 cores next to the load)
//! and one tokio thread. An N is skipped when its servers' quotas and one CPU for the load
//! generator do not fit the machine's CPUs (16 servers at 0.1 CPU on 2 cores, say). The
//! share of the machine's CPU time that was busy is reported per run: near 100 % means the
//! load side, not the tier under test, set the pace.
//!
//! For every scheme every sidecar (and the central balancer) is restarted with the scheme, so
//! each run starts with empty caches. Every object of the catalogue is requested once, least
//! popular first (`load::catalogue`), so that no compulsory miss is left and runs of different
//! lengths see the same hit ratio for the same cache state; then the SURGE-like workload
//! (`dl7_traffic::workload`, fixed seed, Zipf popularity, heavy-tailed sizes capped at
//! `--max-size`) runs closed loop from the testbed's four client addresses with
//! `--concurrency` keep-alive connections: `--warmup` seconds not counted, then `--duration`
//! measured seconds that continue the same request stream. Each server's cache
//! (`--cache-bytes`) holds a fraction of the catalogue, as in a cache cluster: schemes with
//! content affinity add the servers' caches up, round robin does not.
//!
//! The distributed design runs once per relay cache size (`--relay-cache-bytes`, each sidecar's;
//! default: the sidecar's default) and flash crowd (`--hot-share`: that share of the requests
//! goes to the most popular object on top of the workload, `load`'s `--hot-share`); the
//! conventional design once, without a crowd.
//!
//! Figures per design, scheme and N: req/s and Mbit/s (the load generator's), p99 latency,
//! failed requests, the hit ratio of the measured run (the servers' cache counters), the relay
//! hits over the measured requests, the bytes and objects the caches hold at the end and
//! stored / unique (caches and relay caches over the caches alone, see [`Run`]), the busiest
//! server's requests over the mean server's (requests answered from its cache, origin or relay
//! cache), the origin's fetches, and the share of CPU periods in which the servers and the
//! central balancer used up their quota (throttled: near 100 % means that tier limited the
//! throughput). Then the improvement of distributed over conventional in %, and the targets'
//! ratios (reported, never enforced), for carp and maglev: distributed with 8 servers >= 6x its
//! 1-server req/s with a relay cache (>= 5x without), with stored / unique <= 1.10;
//! conventional with 8 servers <= 2x its 1-server req/s; distributed >= 3x conventional at 8
//! servers; in a flash crowd at 8 servers the busiest server <= 1.3x the mean and req/s >= 0.9x
//! the same run without the crowd. The 1-server base is the mean of the distributed 1-server
//! runs without a crowd: with no peer, runs with different relay settings repeat one
//! measurement. A run with failed requests fails the bench.
//!
//! With `--fronts F` (F >= 2) the bench measures the front tier instead (`fronts.rs`): F
//! fronts behind an ECMP router against one, at the largest N, and the failover times.
//!
//! Results go to `target/bench-results/paper/` (or `--out`): results.json, table.txt and
//! req_per_s_conventional.png / req_per_s_distributed.png (req/s against the number of
//! servers, one line per scheme, like the paper's figures). `--quick` (1 and 2 servers, carp,
//! short runs) is the smoke test of `cargo xtask test`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use dl7_traffic::{
    load::{self, LoadConfig, LoadReport, Workload},
    origin,
};

use dl7_testbed::{CENTRAL_ROLE, Spec, Testbed, in_netns};

use super::opts::{BenchOpts, Uses};
use super::plot;
use super::process::{CatchInterrupts, CpuTimes, check_interrupted};

pub(super) mod fronts;

/// The testbeds' names (one at a time).
const NAME: &str = "dl7paper";
const QUICK_NAME: &str = "dl7pq";

/// CPUs left to the load generator, the origin and the kernel's networking when deciding
/// which N fit the machine.
const LOAD_CPUS: f64 = 1.0;

/// The share of requests that may fail before a run counts as broken.
const MAX_FAILED: f64 = 0.001;

/// Where the targets are read: the N they compare with N = 1, and the schemes they name.
const TARGET_N: usize = 8;
const TARGET_SCHEMES: [&str; 2] = ["carp", "maglev"];
const DISTRIBUTED_SCALING: f64 = 6.0;
/// With the relay cache off: what a cheaper forwarding pass alone reaches.
const DISTRIBUTED_SCALING_NO_RELAY: f64 = 5.0;
/// Relay copies may add this much to what the caches store.
const STORED_OVER_UNIQUE: f64 = 1.10;
/// In a flash crowd: the busiest server's requests over the mean server's, and the cluster's
/// req/s over the same run without the crowd.
const BUSIEST_OVER_MEAN: f64 = 1.3;
const CROWD_RATE: f64 = 0.9;
const CONVENTIONAL_SCALING: f64 = 2.0;
const DISTRIBUTED_OVER_CONVENTIONAL: f64 = 3.0;

const DEFAULT_OBJECTS: usize = 4000;

/// Options of `cargo xtask bench paper`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "--quick: 1 and 2 servers, carp, 1,000 objects; --duration [default: 5, --quick 1], --warmup after the catalogue was requested once [default: 10, --quick 0.5], --concurrency: closed-loop keep-alive client connections [default: 256, --quick 32]."
)]
pub struct BenchPaperArgs {
    #[command(flatten)]
    pub opts: BenchOpts,
    /// Numbers of servers [default: 1,2,4,8,16; --quick 1,2].
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<u16>,
    /// Schemes [default: rr,md5,mit-ch,carp,mod-ch,ht-rr,maglev,bounded; --quick carp].
    #[arg(long, value_delimiter = ',')]
    pub schemes: Vec<String>,
    /// CPUs of each server's sidecar and of the central balancer (a cgroup quota) [default:
    /// 0.05; --quick 0.25, for the test build does the same work with more CPU].
    #[arg(long)]
    pub quota: Option<f64>,
    /// Objects in the workload's catalogue [--quick: 1000].
    #[arg(long, default_value_t = DEFAULT_OBJECTS)]
    pub objects: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1998)]
    pub seed: u64,
    /// Largest object, bytes (larger draws are capped).
    #[arg(long, default_value_t = 256 << 10)]
    pub max_size: u64,
    /// Cache of each server, bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub cache_bytes: u64,
    /// Relay cache of each server in the distributed design, bytes (0 turns it off); each
    /// value is a run of its own [default: the sidecar's default].
    #[arg(long, value_delimiter = ',')]
    pub relay_cache_bytes: Vec<u64>,
    /// Flash crowds: the share of requests (0 to below 1) that go to the most popular object
    /// on top of the workload; each value is a run of its own [default: 0].
    #[arg(long, value_delimiter = ',')]
    pub hot_share: Vec<f64>,
    /// Where results go [default: target/bench-results/paper, --quick .../paper-quick;
    /// with --fronts .../paper-fronts].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure the front tier instead: this many fronts (2 to 4) announcing the VIP by BGP
    /// to an ECMP router, each capped so that the fronts are the limit, against one front, at
    /// the largest --servers [default 16, scheme carp]; then the time the router takes to
    /// leave a killed and a dead front.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=dl7_testbed::MAX_FRONTS as i64))]
    pub fronts: u16,
}

/// The two designs of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Design {
    Conventional,
    Distributed,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Design::Conventional => "conventional",
            Design::Distributed => "distributed",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
struct Run {
    design: Design,
    scheme: String,
    servers: usize,
    /// The flash crowd's share of requests for the most popular object (0: none).
    hot_share: f64,
    /// The servers' relay cache as configured (`None`: the sidecar's default; always `None`
    /// in the conventional design, which has none), and as it was (`relay_capacity`).
    relay_cache_bytes: Option<u64>,
    relay_capacity: f64,
    req_per_s: f64,
    mbit_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    failed: u64,
    /// Cache hits over hits and misses of the measured run, over all servers.
    hit_ratio: f64,
    /// What the servers' caches hold at the end.
    stored_bytes: f64,
    stored_objects: f64,
    /// What their relay caches hold at the end.
    relay_bytes: f64,
    /// Relay cache hits over the measured requests.
    relay_hit_share: f64,
    /// Relay cache fills (copies made or revalidated) and evictions in the measured run.
    relay_fills: f64,
    relay_evictions: f64,
    /// All bytes stored (caches and relay caches) over the bytes of the distinct objects
    /// stored. The owners' caches hold each object once under a scheme with content affinity
    /// and relay copies are copies of what a peer owns, so this is taken as (stored + relay) /
    /// stored; under round robin, which copies objects in the caches themselves, it is a lower
    /// bound.
    stored_over_unique: f64,
    /// Requests served (answered from a server's cache or origin, or from its relay cache) by
    /// the busiest server over the mean server's, in the measured run.
    busiest_over_mean: f64,
    /// The origin's requests over the whole run (warm-up included), and how many distinct
    /// URLs they were for.
    origin_fetches: u64,
    origin_urls: usize,
    /// Shares of the measured run's CPU periods in which the servers (mean) and the central
    /// balancer used up their quota.
    servers_throttled: f64,
    central_throttled: Option<f64>,
    /// Busy share of all the machine's CPUs during the measured run, and the share the
    /// hypervisor stole (a machine that slows down between runs shows here, or does not).
    machine_busy: f64,
    machine_steal: f64,
}

/// The whole result (`--json`, results.json).
#[derive(Debug, Serialize)]
struct Report {
    quota_cpus: f64,
    warmup_s: f64,
    duration_s: f64,
    concurrency: usize,
    objects: usize,
    seed: u64,
    max_size: u64,
    cache_bytes: u64,
    relay_cache_bytes: Vec<Option<u64>>,
    hot_shares: Vec<f64>,
    skipped: Vec<String>,
    runs: Vec<Run>,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
struct Target {
    what: String,
    ratio: Option<f64>,
    met: Option<bool>,
}

/// What the bench measures with, once the defaults are filled in.
struct Plan {
    quota: f64,
    servers: Vec<usize>,
    skipped: Vec<String>,
    schemes: Vec<String>,
    warmup: f64,
    duration: f64,
    concurrency: usize,
    objects: usize,
    /// The distributed design's relay cache settings (`None`: the sidecar's default) and the
    /// flash crowds, one run each.
    relays: Vec<Option<u64>>,
    hot_shares: Vec<f64>,
    out: PathBuf,
    name: &'static str,
}

pub fn run(root: &Path, args: BenchPaperArgs) -> Result<()> {
    ensure!(
        args.fronts == 1,
        "bench paper --fronts runs as bench::paper::fronts::run"
    );
    let plan = plan(&args, online_cpus())?;
    let _lock = super::opts::lock("bench paper")?;
    let parts = crate::build::testbed_parts(root, args.opts.profile())?;
    let _interrupts = CatchInterrupts::install();
    fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    let mut runs = Vec::new();
    for &n in &plan.servers {
        let spec = Spec {
            cpu_quota: Some(plan.quota),
            cache_bytes: args.cache_bytes,
            central: true,
            sidecar_threads: Some(1),
            ..Spec::new(plan.name, n as u16, &plan.schemes[0])
        };
        let mut testbed = dl7_testbed::up(&spec, &parts)?;
        let result = measure_n(&mut testbed, &args, &plan, &mut runs);
        dl7_testbed::down(plan.name)?;
        result?;
    }
    let report = Report {
        quota_cpus: plan.quota,
        warmup_s: plan.warmup,
        duration_s: plan.duration,
        concurrency: plan.concurrency,
        objects: plan.objects,
        seed: args.seed,
        max_size: args.max_size,
        cache_bytes: args.cache_bytes,
        relay_cache_bytes: plan.relays.clone(),
        hot_shares: plan.hot_shares.clone(),
        skipped: plan.skipped.clone(),
        targets: targets(&runs),
        runs,
    };
    let table = table(&report);
    save(&plan.out, &report, &table)?;
    let charts = charts(&report, &plan.out)?;
    if args.opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
        for c in charts {
            println!("chart: {}", c.display());
        }
        println!("results: {}", plan.out.join("results.json").display());
    }
    check_runs(&report.runs)
}

/// Fails the bench when a run had failed requests (over [`MAX_FAILED`]) or none answered.
fn check_runs<'a>(runs: impl IntoIterator<Item = &'a Run>) -> Result<()> {
    let broken: Vec<String> = runs
        .into_iter()
        .filter(|r| r.failed as f64 > MAX_FAILED * r.requests.max(1) as f64 || r.req_per_s <= 0.0)
        .map(|r| format!("{} {} N={}", r.design.name(), label(r), r.servers))
        .collect();
    ensure!(
        broken.is_empty(),
        "runs with failed requests or none answered: {}",
        broken.join(", ")
    );
    Ok(())
}

fn online_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Fills in the defaults and checks the options; `cpus` decides which N fit.
fn plan(args: &BenchPaperArgs, cpus: f64) -> Result<Plan> {
    let opts = &args.opts;
    opts.check(
        "paper",
        Uses {
            duration: true,
            warmup: true,
            concurrency: true,
        },
    )?;
    ensure!(
        args.fronts == 1 || (args.relay_cache_bytes.is_empty() && args.hot_share.is_empty()),
        "--fronts measures the front tier: --relay-cache-bytes and --hot-share do not apply"
    );
    let quota = args.quota.unwrap_or(opts.pick(0.05, 0.25));
    ensure!(
        (0.01..=4.0).contains(&quota),
        "--quota {quota} is not between 0.01 and 4 CPUs"
    );
    let mut servers: Vec<usize> = if args.servers.is_empty() && args.fronts > 1 {
        vec![16]
    } else if args.servers.is_empty() {
        opts.pick(vec![1, 2, 4, 8, 16], vec![1, 2])
    } else {
        args.servers.iter().map(|&n| usize::from(n)).collect()
    };
    servers.sort_unstable();
    servers.dedup();
    ensure!(
        servers.iter().all(|&n| (1..=32).contains(&n)),
        "--servers takes numbers from 1 to 32"
    );
    let mut skipped = Vec::new();
    servers.retain(|&n| {
        let need = n as f64 * quota + LOAD_CPUS;
        let fits = need <= cpus + 1e-9;
        if !fits {
            skipped.push(format!(
                "N={n}: {n} x {:.2} CPU + {LOAD_CPUS} CPU for the load = {need:.2} > {cpus} CPUs",
                quota
            ));
        }
        fits
    });
    ensure!(
        !servers.is_empty(),
        "no number of servers fits: {}",
        skipped.join("; ")
    );
    let schemes = if args.schemes.is_empty() && args.fronts > 1 {
        vec!["carp".to_owned()]
    } else if args.schemes.is_empty() {
        let all = [
            "rr", "md5", "mit-ch", "carp", "mod-ch", "ht-rr", "maglev", "bounded",
        ];
        opts.pick(&all[..], &["carp"])
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.schemes.clone()
    };
    for s in &schemes {
        l7_sidecar::scheme::lookup(s).map_err(|e| anyhow::anyhow!("--schemes: {e}"))?;
    }
    // The relay caches copy a key only after it was asked for several times: 10 s bring them
    // to their steady state (after 1 s they were still filling: 17-18 % of the requests
    // answered from copies at N = 8 against 22 % after 10 s).
    let warmup = opts.warmup_s(10.0, 0.5);
    let duration = opts.duration_s(5.0, 1.0);
    let concurrency = opts.concurrency(256, 32);
    ensure!(args.objects >= 1, "--objects must be at least 1");
    let relays = if args.relay_cache_bytes.is_empty() {
        vec![None]
    } else {
        dedup(args.relay_cache_bytes.iter().map(|&b| Some(b)).collect())
    };
    let hot_shares = if args.hot_share.is_empty() {
        vec![0.0]
    } else {
        dedup(args.hot_share.clone())
    };
    ensure!(
        hot_shares.iter().all(|h| (0.0..1.0).contains(h)),
        "--hot-share takes shares from 0 to below 1"
    );
    ensure!(args.max_size >= 1, "--max-size must be at least 1");
    let out = args.out.clone().unwrap_or_else(|| {
        opts.results_dir(if args.fronts > 1 {
            "paper-fronts"
        } else {
            "paper"
        })
    });
    Ok(Plan {
        quota,
        servers,
        skipped,
        schemes,
        warmup,
        duration,
        concurrency,
        objects: if opts.quick && args.objects == DEFAULT_OBJECTS {
            1000
        } else {
            args.objects
        },
        relays,
        hot_shares,
        out,
        name: opts.pick(NAME, QUICK_NAME),
    })
}

/// The values in order of first appearance, each once.
fn dedup<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Every scheme on one testbed: conventional, then distributed for each flash crowd and relay
/// cache setting, each from cold caches.
fn measure_n(
    status: &mut Testbed,
    args: &BenchPaperArgs,
    plan: &Plan,
    runs: &mut Vec<Run>,
) -> Result<()> {
    // The conventional design once, without a flash crowd: its central balancer is the
    // bottleneck whatever the servers do.
    let mut variants = vec![(Design::Conventional, None, 0.0)];
    for &hot in &plan.hot_shares {
        for &relay in &plan.relays {
            variants.push((Design::Distributed, relay, hot));
        }
    }
    for scheme in &plan.schemes {
        for &(design, relay, hot) in &variants {
            check_interrupted()?;
            if let Some(bytes) = relay {
                status.set_relay_cache_bytes(bytes)?;
            }
            status.restart_all(scheme)?;
            let run = measure(status, args, plan, (design, relay, hot)).with_context(|| {
                format!(
                    "{} {scheme} with {} servers",
                    design.name(),
                    status.servers.len()
                )
            })?;
            eprintln!(
                "bench paper: N={} {:<24} {:<12} {:>7.0} req/s {:>7.1} Mbit/s, hit ratio {:.1} %, \
                 relay hits {:.1} % (fills {:.0}, evictions {:.0}), busiest/mean {:.2}, \
                 stored/unique {:.2}, \
                 servers throttled {:.0} %, central throttled {}, machine busy {:.0} % \
                 (stolen {:.1} %)",
                run.servers,
                label(&run),
                run.design.name(),
                run.req_per_s,
                run.mbit_per_s,
                run.hit_ratio * 100.0,
                run.relay_hit_share * 100.0,
                run.relay_fills,
                run.relay_evictions,
                run.busiest_over_mean,
                run.stored_over_unique,
                run.servers_throttled * 100.0,
                run.central_throttled
                    .map_or("-".to_owned(), |c| format!("{:.0} %", c * 100.0)),
                run.machine_busy * 100.0,
                run.machine_steal * 100.0,
            );
            runs.push(run);
        }
    }
    Ok(())
}

/// The servers' caches at one moment, summed over the servers (one scrape of each), and the
/// requests each served.
#[derive(Default)]
struct Caches {
    hits: f64,
    misses: f64,
    bytes: f64,
    objects: f64,
    relay_hits: f64,
    relay_fills: f64,
    relay_evictions: f64,
    relay_bytes: f64,
    relay_capacity: f64,
    served: Vec<f64>,
}

fn caches(status: &Testbed) -> Result<Caches> {
    let mut c = Caches::default();
    for m in status.scrape_servers()? {
        c.hits += m.sum("dl7_l7_cache_hits_total", &[]);
        c.misses += m.sum("dl7_l7_cache_misses_total", &[]);
        c.bytes += m.sum("dl7_l7_cache_bytes", &[]);
        c.objects += m.sum("dl7_l7_cache_objects", &[]);
        c.relay_hits += m.sum("dl7_l7_relay_hits_total", &[]);
        c.relay_fills += m.sum("dl7_l7_relay_fills_total", &[]);
        c.relay_evictions += m.sum("dl7_l7_relay_evictions_total", &[]);
        c.relay_bytes += m.sum("dl7_l7_relay_bytes", &[]);
        c.relay_capacity += m.sum("dl7_l7_relay_capacity_bytes", &[]);
        // What a client or a peer asked and this server answered itself.
        let served = ["local", "relay"]
            .iter()
            .map(|r| m.sum("dl7_l7_requests_total", &[("route", r)]))
            .sum();
        c.served.push(served);
    }
    Ok(c)
}

/// The busiest server's requests over the mean server's, between two readings.
fn busiest_over_mean(before: &[f64], after: &[f64]) -> f64 {
    let served: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let mean = served.iter().sum::<f64>() / served.len().max(1) as f64;
    let busiest = served.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 { busiest / mean } else { 0.0 }
}

/// CPU periods and throttled periods of each role, in order: the servers, then the central.
fn periods(status: &Testbed) -> Vec<Option<(u64, u64)>> {
    status
        .servers
        .iter()
        .map(|s| status.cpu_periods(&s.name))
        .chain([status.cpu_periods(CENTRAL_ROLE)])
        .collect()
}

/// Throttled periods over periods between two readings.
fn throttled(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((p0, t0), (p1, t1)) = (before?, after?);
    let periods = p1.checked_sub(p0)?;
    (periods > 0).then(|| t1.saturating_sub(t0) as f64 / periods as f64)
}

fn measure(
    status: &Testbed,
    args: &BenchPaperArgs,
    plan: &Plan,
    (design, relay, hot_share): (Design, Option<u64>, f64),
) -> Result<Run> {
    let origin_addr = status.origin.addr;
    in_netns(&status.origin.ns, || origin::Remote(origin_addr).reset())??;
    let target: SocketAddr = match design {
        Design::Conventional => {
            status
                .central
                .as_ref()
                .context("the testbed has no central balancer")?
                .addr
        }
        Design::Distributed => status.vip,
    };
    let objects = plan.objects;
    let mut config = LoadConfig::new(target);
    config.source_addrs = status.client_addrs.iter().map(|&a| a.into()).collect();
    config.timeout = Duration::from_secs(10);
    config.concurrency = plan.concurrency;
    // Every object once, then the stream.
    config.workload = Workload::Replay(load::catalogue(objects, args.seed, args.max_size)?);
    config.requests = objects as u64;
    config.duration = Duration::from_secs(300);
    let fill = in_netns(&status.client_ns, || load::run(&config))??;
    ensure!(
        fill.ok == objects as u64,
        "requesting the catalogue once: {} of {objects} answered, {} failed",
        fill.ok,
        fill.error_total
    );
    check_interrupted()?;
    config.workload = Workload::Synthetic {
        objects,
        alpha: 0.8,
        seed: args.seed,
        max_size: args.max_size,
        hot_share,
    };
    config.requests = u64::MAX;
    config.warmup = Duration::from_secs_f64(plan.warmup);
    config.duration = Duration::from_secs_f64(plan.duration);

    // The load runs on its own thread in the clients' namespace; this thread reads the
    // counters where the measured run starts.
    let (report, start) = std::thread::scope(|scope| -> Result<(LoadReport, _)> {
        let client_ns = status.client_ns.clone();
        let config = &config;
        let load = scope.spawn(move || in_netns(&client_ns, || load::run(config)));
        super::process::sleep(config.warmup)?;
        let start = (caches(status)?, periods(status), machine_cpu()?);
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))???;
        Ok((report, start))
    })?;
    let (caches0, periods0, cpu0) = start;
    let periods1 = periods(status);
    let cpu1 = machine_cpu()?;
    let mean = |share: fn(&CpuTimes, &CpuTimes) -> f64| {
        cpu1.iter()
            .zip(&cpu0)
            .map(|(after, before)| share(after, before))
            .sum::<f64>()
            / cpu0.len().max(1) as f64
    };
    let (machine_busy, machine_steal) = (mean(CpuTimes::busy_since), mean(CpuTimes::steal_since));
    let caches1 = caches(status)?;
    let counts = in_netns(&status.origin.ns, || origin::Remote(origin_addr).counts())??;
    let n = status.servers.len();
    let server_throttled: Vec<f64> = (0..n)
        .filter_map(|i| throttled(periods0[i], periods1[i]))
        .collect();
    let hits = caches1.hits - caches0.hits;
    let lookups = hits + (caches1.misses - caches0.misses);
    let stored = caches1.bytes;
    Ok(Run {
        design,
        scheme: status.scheme.clone(),
        servers: n,
        hot_share,
        relay_cache_bytes: relay,
        relay_capacity: caches1.relay_capacity,
        req_per_s: report.req_per_s,
        mbit_per_s: report.mbit_per_s,
        p50_ms: report.latency_us.p50 as f64 / 1000.0,
        p99_ms: report.latency_us.p99 as f64 / 1000.0,
        requests: report.requests,
        failed: report.error_total,
        hit_ratio: if lookups > 0.0 { hits / lookups } else { 0.0 },
        stored_bytes: stored,
        stored_objects: caches1.objects,
        relay_bytes: caches1.relay_bytes,
        relay_hit_share: (caches1.relay_hits - caches0.relay_hits) / report.requests.max(1) as f64,
        relay_fills: caches1.relay_fills - caches0.relay_fills,
        relay_evictions: caches1.relay_evictions - caches0.relay_evictions,
        stored_over_unique: if stored > 0.0 {
            (stored + caches1.relay_bytes) / stored
        } else {
            0.0
        },
        busiest_over_mean: busiest_over_mean(&caches0.served, &caches1.served),
        origin_fetches: counts.values().sum(),
        origin_urls: counts.len(),
        servers_throttled: if server_throttled.is_empty() {
            0.0
        } else {
            server_throttled.iter().sum::<f64>() / server_throttled.len() as f64
        },
        central_throttled: match design {
            Design::Conventional => throttled(periods0[n], periods1[n]),
            Design::Distributed => None,
        },
        machine_busy,
        machine_steal,
    })
}

/// Every CPU's busy and total time now.
fn machine_cpu() -> Result<Vec<CpuTimes>> {
    (0..online_cpus() as usize).map(CpuTimes::read).collect()
}

/// A run's row in the tables: its scheme, its relay cache when the bench set one, and its
/// flash crowd.
fn label(r: &Run) -> String {
    let mut l = r.scheme.clone();
    match r.relay_cache_bytes {
        Some(0) => l.push_str(" relay off"),
        Some(b) if b % (1 << 20) == 0 => l.push_str(&format!(" relay {} MiB", b >> 20)),
        Some(b) => l.push_str(&format!(" relay {} KiB", b >> 10)),
        None => {}
    }
    if r.hot_share > 0.0 {
        l.push_str(&format!(" hot {}", r.hot_share));
    }
    l
}

fn find<'a>(runs: &'a [Run], design: Design, label_: &str, n: usize) -> Option<&'a Run> {
    runs.iter()
        .find(|r| r.design == design && r.servers == n && label(r) == label_)
}

/// The targets, as ratios of this run's figures.
fn targets(runs: &[Run]) -> Vec<Target> {
    use Design::{Conventional, Distributed};
    let mut out = Vec::new();
    // What, the measured ratio, the bound, and whether the bound is a floor.
    let mut check = |what: String, ratio: Option<f64>, bound: f64, floor: bool| {
        out.push(Target {
            what,
            ratio,
            met: ratio.map(|r| if floor { r >= bound } else { r <= bound }),
        });
    };
    let over = |a: Option<&Run>, b: Option<&Run>, f: fn(&Run) -> f64| match (a, b) {
        (Some(a), Some(b)) if f(b) > 0.0 => Some(f(a) / f(b)),
        _ => None,
    };
    let rate: fn(&Run) -> f64 = |r| r.req_per_s;
    let n = TARGET_N;
    for s in TARGET_SCHEMES {
        let conventional = |n| find(runs, Conventional, s, n);
        // The distributed runs at N = 8 without a flash crowd, one per relay setting.
        let plain: Vec<&Run> = runs
            .iter()
            .filter(|r| r.design == Distributed && r.scheme == s && r.servers == n)
            .filter(|r| r.hot_share == 0.0)
            .collect();
        if plain.is_empty() {
            let what = format!("distributed {s}: N={n} / N=1 req/s >= {DISTRIBUTED_SCALING}x");
            check(what, None, DISTRIBUTED_SCALING, true);
        }
        // One server has no peer to forward to or copy from, so its runs with different relay
        // settings are repeats of one measurement: their mean is the base.
        let singles: Vec<f64> = runs
            .iter()
            .filter(|r| r.design == Distributed && r.scheme == s && r.servers == 1)
            .filter(|r| r.hot_share == 0.0)
            .map(rate)
            .collect();
        let single =
            (!singles.is_empty()).then(|| singles.iter().sum::<f64>() / singles.len() as f64);
        for r8 in &plain {
            let l = label(r8);
            let relay_on = r8.relay_capacity > 0.0;
            let bound = if relay_on {
                DISTRIBUTED_SCALING
            } else {
                DISTRIBUTED_SCALING_NO_RELAY
            };
            let what = format!("distributed {l}: N={n} / N=1 req/s >= {bound}x");
            let ratio = single.filter(|&b| b > 0.0).map(|b| r8.req_per_s / b);
            check(what, ratio, bound, true);
            if relay_on {
                let what =
                    format!("distributed {l} at N={n}: stored / unique <= {STORED_OVER_UNIQUE}");
                check(what, Some(r8.stored_over_unique), STORED_OVER_UNIQUE, false);
            }
        }
        let what = format!("conventional {s}: N={n} / N=1 req/s <= {CONVENTIONAL_SCALING}x");
        check(
            what,
            over(conventional(n), conventional(1), rate),
            CONVENTIONAL_SCALING,
            false,
        );
        let first = plain.first().copied();
        let what = format!(
            "{} at N={n}: distributed / conventional req/s >= {DISTRIBUTED_OVER_CONVENTIONAL}x",
            first.map_or_else(|| s.to_owned(), label),
        );
        check(
            what,
            over(first, conventional(n), rate),
            DISTRIBUTED_OVER_CONVENTIONAL,
            true,
        );
        // Flash crowds with a relay cache, against the same setting without the crowd (without
        // one, the crowd's owner serves it alone: today's behaviour, reported, not a target).
        for hot in runs
            .iter()
            .filter(|r| r.design == Distributed && r.scheme == s && r.servers == n)
            .filter(|r| r.hot_share > 0.0 && r.relay_capacity > 0.0)
        {
            let l = label(hot);
            let what =
                format!("distributed {l} at N={n}: busiest / mean server <= {BUSIEST_OVER_MEAN}x");
            check(what, Some(hot.busiest_over_mean), BUSIEST_OVER_MEAN, false);
            let without = Run {
                hot_share: 0.0,
                ..(*hot).clone()
            };
            let base = find(runs, Distributed, &label(&without), n);
            let what =
                format!("distributed {l} at N={n}: req/s over without the crowd >= {CROWD_RATE}x");
            check(what, over(Some(hot), base, rate), CROWD_RATE, true);
        }
    }
    out
}

/// The paper's tables: one row per scheme, one column per N.
fn table(report: &Report) -> String {
    let runs = &report.runs;
    let mut ns: Vec<usize> = runs.iter().map(|r| r.servers).collect();
    ns.sort_unstable();
    ns.dedup();
    // Each design's rows, in the order they ran.
    let labels = |design: Design| {
        dedup(
            runs.iter()
                .filter(|r| r.design == design)
                .map(label)
                .collect::<Vec<_>>(),
        )
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "workload: SURGE-like, {} objects (sizes capped at {} KiB), seed {}, closed loop, {} \
         connections; the catalogue once, {:.0} s warm-up, {:.0} s measured per run; {:.2} CPU per server and \
         for the central balancer; cache {} MiB per server; relay cache (distributed) {}",
        report.objects,
        report.max_size >> 10,
        report.seed,
        report.concurrency,
        report.warmup_s,
        report.duration_s,
        report.quota_cpus,
        report.cache_bytes >> 20,
        report
            .relay_cache_bytes
            .iter()
            .map(|b| b.map_or("the sidecar's default".to_owned(), |b| format!("{b} bytes")))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for s in &report.skipped {
        let _ = writeln!(t, "skipped {s}");
    }
    type Cell = fn(&Run) -> String;
    let sections: [(&str, Cell); 8] = [
        ("req/s", |r| format!("{:.0}", r.req_per_s)),
        ("Mbit/s", |r| format!("{:.1}", r.mbit_per_s)),
        ("hit ratio %", |r| format!("{:.1}", r.hit_ratio * 100.0)),
        ("relay hits %", |r| {
            format!("{:.1}", r.relay_hit_share * 100.0)
        }),
        ("stored MB", |r| format!("{:.1}", r.stored_bytes / 1e6)),
        ("stored / unique", |r| {
            format!("{:.3}", r.stored_over_unique)
        }),
        ("busiest / mean server", |r| {
            format!("{:.2}", r.busiest_over_mean)
        }),
        ("p99 ms", |r| format!("{:.1}", r.p99_ms)),
    ];
    let header = |t: &mut String, title: &str| {
        let _ = write!(t, "\n{title:<36}");
        for n in &ns {
            let _ = write!(t, "{:>10}", format!("N={n}"));
        }
        let _ = writeln!(t);
    };
    // One row: a label, then one cell per N ("-" where nothing was measured).
    let row = |t: &mut String, label: &str, cell: &dyn Fn(usize) -> Option<String>| {
        let _ = write!(t, "  {label:<34}");
        for &n in &ns {
            let _ = write!(t, "{:>10}", cell(n).unwrap_or_else(|| "-".to_owned()));
        }
        let _ = writeln!(t);
    };
    const DESIGNS: [Design; 2] = [Design::Conventional, Design::Distributed];
    for (title, cell) in sections {
        for design in DESIGNS {
            header(&mut t, &format!("{title}, {}", design.name()));
            for l in labels(design) {
                row(&mut t, &l, &|n| find(runs, design, &l, n).map(cell));
            }
        }
    }
    header(&mut t, "distributed over conv., %");
    for l in labels(Design::Distributed) {
        row(&mut t, &l, &|n| {
            let d = find(runs, Design::Distributed, &l, n)?;
            let conventional = Run {
                relay_cache_bytes: None,
                ..d.clone()
            };
            let c = find(runs, Design::Conventional, &label(&conventional), n)?;
            (c.req_per_s > 0.0)
                .then(|| format!("{:+.0}", (d.req_per_s / c.req_per_s - 1.0) * 100.0))
        });
    }
    // Per scheme and design: who was throttled, how busy the machine was.
    let per_design: [(&str, Cell); 3] = [
        ("throttled % (servers/central)", |r| {
            match r.central_throttled {
                Some(c) => format!("{:.0}/{:.0}", r.servers_throttled * 100.0, c * 100.0),
                None => format!("{:.0}", r.servers_throttled * 100.0),
            }
        }),
        ("machine CPU busy %", |r| {
            format!("{:.0}", r.machine_busy * 100.0)
        }),
        ("machine CPU stolen %", |r| {
            format!("{:.1}", r.machine_steal * 100.0)
        }),
    ];
    for (title, cell) in per_design {
        header(&mut t, title);
        for design in DESIGNS {
            for l in labels(design) {
                let what = format!("{l} {}", &design.name()[..4]);
                row(&mut t, &what, &|n| find(runs, design, &l, n).map(cell));
            }
        }
    }
    let _ = writeln!(t, "\ntargets (ratios of this run):");
    for target in &report.targets {
        let verdict = match (target.ratio, target.met) {
            (Some(r), Some(true)) => format!("{r:.2}x  met"),
            (Some(r), _) => format!("{r:.2}x  MISSED"),
            (None, _) => "not measured".to_owned(),
        };
        let _ = writeln!(t, "  {:<62} {verdict}", target.what);
    }
    t
}

/// req/s against N, one line per scheme, one chart per design.
fn charts(report: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    if !plot::register_sans_serif()? {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    for design in [Design::Conventional, Design::Distributed] {
        let mut by_scheme: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in report.runs.iter().filter(|r| r.design == design) {
            by_scheme
                .entry(label(r))
                .or_default()
                .push((r.servers as f64, r.req_per_s));
        }
        let series: Vec<plot::Series> = by_scheme
            .into_iter()
            .map(|(s, mut p)| {
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s, p)
            })
            .collect();
        let path = out.join(format!("req_per_s_{}.png", design.name()));
        plot::servers_chart(
            &path,
            &format!("{} design: throughput against servers", design.name()),
            "req/s",
            &series,
        )
        .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes a bench's report to `out`: `results.json` and the printed `table.txt`.
fn save(out: &Path, report: &impl serde::Serialize, table: &str) -> Result<()> {
    fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    fs::write(out.join("table.txt"), table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchPaperArgs {
        crate::bench::opts::args_from(extra).unwrap()
    }

    #[test]
    fn servers_that_do_not_fit_the_cpus_are_skipped() {
        let p = plan(&args(&[]), 2.0).unwrap();
        assert_eq!(p.servers, [1, 2, 4, 8, 16]);
        assert_eq!(p.schemes.len(), 8);
        let p = plan(&args(&["--quota", "0.1"]), 2.0).unwrap();
        assert_eq!(p.servers, [1, 2, 4, 8]);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].starts_with("N=16"), "{:?}", p.skipped);
        assert!(plan(&args(&["--servers", "16", "--quota", "0.5"]), 2.0).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(plan(&args(&["--schemes", "carp,nope"]), 2.0).is_err());
        assert!(plan(&args(&["--quota", "0"]), 2.0).is_err());
        assert!(plan(&args(&["--servers", "0"]), 2.0).is_err());
        assert!(plan(&args(&["--duration", "0"]), 2.0).is_err());
        let q = plan(&args(&["--quick"]), 2.0).unwrap();
        assert_eq!((q.servers.as_slice(), q.schemes.len()), (&[1, 2][..], 1));
    }

    fn run(design: Design, scheme: &str, servers: usize, req_per_s: f64) -> Run {
        Run {
            design,
            scheme: scheme.to_owned(),
            servers,
            hot_share: 0.0,
            relay_cache_bytes: None,
            relay_capacity: 0.0,
            req_per_s,
            mbit_per_s: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            requests: 100,
            failed: 0,
            hit_ratio: 0.5,
            stored_bytes: 0.0,
            stored_objects: 0.0,
            relay_bytes: 0.0,
            relay_hit_share: 0.0,
            relay_fills: 0.0,
            relay_evictions: 0.0,
            stored_over_unique: 1.0,
            busiest_over_mean: 1.0,
            origin_fetches: 0,
            origin_urls: 0,
            servers_throttled: 1.0,
            central_throttled: None,
            machine_busy: 0.5,
            machine_steal: 0.0,
        }
    }

    #[test]
    fn targets_are_ratios_of_the_runs() {
        let runs = [
            run(Design::Distributed, "carp", 1, 100.0),
            run(Design::Distributed, "carp", 8, 650.0),
            run(Design::Conventional, "carp", 1, 90.0),
            run(Design::Conventional, "carp", 8, 200.0),
        ];
        let t = targets(&runs);
        // The relay cache was off (the sidecar's capacity gauge said 0): the floor is 5x.
        assert_eq!(t[0].ratio, Some(6.5));
        assert!(t[0].what.contains(">= 5x"), "{}", t[0].what);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].met, Some(false), "200 / 90 > 2");
        assert_eq!(t[2].ratio, Some(3.25));
        // maglev was not run.
        assert_eq!(t.len(), 6);
        assert!(t[3..].iter().all(|t| t.ratio.is_none() && t.met.is_none()));
        assert_eq!(throttled(Some((10, 2)), Some((20, 7))), Some(0.5));
        assert_eq!(throttled(None, Some((20, 7))), None);
        assert_eq!(throttled(Some((20, 2)), Some((20, 7))), None);
    }

    #[test]
    fn relay_and_flash_crowd_runs_have_their_own_targets() {
        let relayed = |servers, req_per_s, hot_share| Run {
            relay_cache_bytes: Some(1 << 20),
            relay_capacity: (servers << 20) as f64,
            hot_share,
            stored_over_unique: 1.2,
            busiest_over_mean: 1.25,
            ..run(Design::Distributed, "carp", servers, req_per_s)
        };
        let off = |servers, req_per_s| Run {
            relay_cache_bytes: Some(0),
            ..run(Design::Distributed, "carp", servers, req_per_s)
        };
        let runs = [
            run(Design::Conventional, "carp", 1, 90.0),
            // Repeats of one measurement (no peers at N = 1): their mean is the base.
            relayed(1, 110.0, 0.0),
            off(1, 90.0),
            relayed(1, 500.0, 0.5),
            run(Design::Conventional, "carp", 8, 200.0),
            relayed(8, 610.0, 0.0),
            off(8, 490.0),
            relayed(8, 560.0, 0.5),
        ];
        assert_eq!(label(&runs[5]), "carp relay 1 MiB");
        assert_eq!(label(&runs[6]), "carp relay off");
        assert_eq!(label(&runs[7]), "carp relay 1 MiB hot 0.5");
        let t = targets(&runs);
        let get = |what: &str| {
            t.iter()
                .find(|t| t.what.contains(what))
                .unwrap_or_else(|| panic!("no target {what}: {t:?}"))
        };
        let six = get("carp relay 1 MiB: N=8 / N=1 req/s >= 6x");
        assert_eq!((six.ratio, six.met), (Some(6.1), Some(true)));
        let five = get("carp relay off: N=8 / N=1 req/s >= 5x");
        assert_eq!((five.ratio, five.met), (Some(4.9), Some(false)));
        assert_eq!(get("stored / unique").met, Some(false), "1.2 > 1.10");
        assert_eq!(get("busiest / mean").met, Some(true), "1.25 <= 1.3");
        let crowd = get("over without the crowd");
        assert_eq!(crowd.ratio, Some(560.0 / 610.0));
        assert_eq!(crowd.met, Some(true));
        // The flash crowd is not a scaling run of its own, and without a relay cache it is
        // the baseline, not a target.
        assert!(!t.iter().any(|t| t.what.contains("hot 0.5: N=8 / N=1")));
        let crowd_off = Run {
            hot_share: 0.5,
            busiest_over_mean: 4.6,
            ..off(8, 300.0)
        };
        let with_off = [&runs[..], &[crowd_off]].concat();
        assert_eq!(targets(&with_off).len(), t.len());
    }
}
