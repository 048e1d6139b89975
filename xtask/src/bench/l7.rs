//! `cargo xtask bench l7`: dl7's sidecar as the L7 hashing tier (`l7-sidecar serve --mode
//! central`) against nginx (`hash $request_uri consistent` + upstream `keepalive`) and HAProxy
//! (`balance uri`, `hash-type consistent`, `http-reuse always`), Debian's packages, in front
//! of the same backends, under the same keep-alive load, in one run.
//!
//! - Backends: `--backends` nginx processes on loopback ports serving `--objects` static files
//!   (70 % 1 KiB, 20 % 4 KiB, 10 % 16 KiB), each naming itself in a response header.
//! - Tiers: each on its own loopback port, one worker/thread, keep-alive to the backends.
//!   Before any load, each tier must answer a sample of objects with 200 and the right size,
//!   the same object from the same backend twice, and use every backend.
//! - Pinning (`taskset`): the tier under test on CPU 1; wrk and the backends on CPU 0.
//! - Load: wrk, one thread, `--concurrency` keep-alive connections cycling over every URI; a
//!   warm-up run, then the measured run; `--rounds` rounds interleave the tiers and each
//!   figure is the median over rounds.
//! - Figures: req/s, p50 and p99 latency (wrk's), CPU seconds of the tier's processes per
//!   100,000 requests (utime + stime from /proc/PID/stat around the measured run), the busy
//!   share of both CPUs (/proc/stat: when CPU 0 is saturated the load side, not the tier,
//!   limits req/s), and the tier's RSS (VmRSS) at the end of its run.
//!
//! With `--tls` the same run goes on over HTTPS: every tier also runs a second and third
//! time (one instance per key type) terminating TLS on its port with the same certificate,
//! issued into the temp directory by a throwaway CA (`dl7_testbed::tls`): one ECDSA P-256 and
//! one RSA-2048 (dl7: `listen-tls`, `tls-cert`, `tls-ticket-key`; nginx: `listen ... ssl`, a
//! shared session cache and tickets with the same key; HAProxy: `bind ... ssl crt`, its
//! default session cache and tickets). Each is checked with curl over TLS 1.2 and 1.3 against
//! the CA, then, in the same rounds as the plain tiers and with the same pinning, measured
//! under three loads (see `s_time.rs` for why not wrk for the first two):
//! - full handshakes/s: `openssl s_time -new`, a new connection and a full handshake per GET;
//! - resumed handshakes/s: `openssl s_time -reuse`, every connection resuming one session;
//! - keep-alive req/s over TLS: wrk on `https://`, as the plain load.
//!
//! with the tier's CPU seconds per 1,000 handshakes and per 100,000 keep-alive requests.
//!
//! Targets (ratios in the same run, reported and never enforced): dl7 >= 1.0x nginx's req/s
//! (goal 1.5x), dl7's p99 no worse than nginx's; with `--tls`, per key type, dl7's CPU per full
//! handshake and per keep-alive request over TLS no higher than the lower of nginx's and
//! HAProxy's. A tier that answers errors fails the bench.
//! Every process started is killed and the temp directory removed, also on errors and Ctrl-C.

pub mod s_time;
pub mod servers;
pub mod wrk;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::opts::{BenchOpts, Uses};
use super::process::{BenchDir, CatchInterrupts, CpuTimes};
use crate::{cmd, setup};
use dl7_testbed::tls::{Ca, KeyType};
use s_time::Handshake;
use servers::{Server, Tier, TierSetup, TlsCert};

/// Debian packages the bench drives (util-linux brings `taskset`), and those `--tls` adds.
pub const PACKAGES: &[&str] = &["nginx", "haproxy", "wrk", "util-linux"];
const TLS_PACKAGES: &[&str] = &["openssl", "curl"];

/// The CPU of the tier under test, and the CPU of wrk and the backends.
const TIER_CPU: usize = 1;
const LOAD_CPU: usize = 0;

/// The share of requests that may end in socket errors before a tier counts as broken.
const MAX_SOCKET_ERRORS: f64 = 0.001;

/// The share of a CPU that processes other than the bench's may use in a round before the
/// table says that the round is disturbed.
const DISTURBED: f64 = 0.05;

/// The req/s ratio to nginx that dl7 must reach, and the goal.
const TARGET_RATIO: f64 = 1.0;
const GOAL_RATIO: f64 = 1.5;

/// Options of `cargo xtask bench l7`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "--duration and --warmup are whole seconds (wrk's unit) [defaults: 5 and 2 s, --quick 2 and 1 s]; --concurrency is wrk's connections [default: 64]. --tls adds, after the plain rows of the same run, each tier over HTTPS with an ECDSA P-256 and an RSA-2048 certificate: full handshakes/s (openssl s_time -new), resumed handshakes/s (s_time -reuse), keep-alive req/s (wrk https), each --duration long (the warm-up before wrk only), and the tier's CPU per 1,000 handshakes and per 100,000 requests."
)]
pub struct BenchL7Args {
    #[command(flatten)]
    pub opts: BenchOpts,
    /// Rounds over all tiers; each figure is the median [default: 3, --quick 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Backend servers (nginx processes).
    #[arg(long, default_value_t = 4)]
    pub backends: usize,
    /// Distinct objects (URIs) the load cycles over.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// Tiers to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["nginx", "haproxy", "dl7"])]
    pub tiers: Vec<Tier>,
    /// The sidecar's hashing scheme (`nginx` maps keys as the nginx tier does).
    #[arg(long, default_value = "nginx")]
    pub scheme: String,
    /// Also each tier terminating TLS (ECDSA and RSA certificates): full and resumed
    /// handshakes/s and keep-alive req/s over HTTPS, after the plain rows.
    #[arg(long)]
    pub tls: bool,
}

/// One tier's figures: medians over the rounds.
#[derive(Debug, Serialize)]
struct Row {
    tier: Tier,
    req_per_s: f64,
    /// req/s over nginx's (when nginx ran).
    ratio_vs_nginx: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s_per_100k_req: f64,
    /// CPU time of the tier's processes over wall time (1.0 = its whole core).
    tier_cpu_share: f64,
    /// The same for wrk and the backends together (CPU 0).
    load_cpu_share: f64,
    /// Busy share of CPU 0 (wrk and backends) and CPU 1 (the tier) from /proc/stat.
    cpu0_busy: f64,
    cpu1_busy: f64,
    /// Rounds in which other processes used more than `DISTURBED` of either CPU.
    disturbed_rounds: usize,
    rss_mib: f64,
    /// Requests measured over all rounds.
    requests: u64,
    /// req/s and p99 of each round, to judge the spread behind the medians.
    req_per_s_rounds: Vec<f64>,
    p99_ms_rounds: Vec<f64>,
}

/// The loads of a tier over TLS, in the order they run in a round.
const TLS_SHAPES: [TlsShape; 3] = [
    TlsShape::Handshakes(Handshake::Full),
    TlsShape::Handshakes(Handshake::Resumed),
    TlsShape::KeepAlive,
];

#[derive(Debug, Clone, Copy)]
enum TlsShape {
    Handshakes(Handshake),
    KeepAlive,
}

/// One tier with one key type over TLS: medians over the rounds.
#[derive(Debug, Serialize)]
struct TlsRow {
    tier: Tier,
    key: &'static str,
    full_handshakes_per_s: f64,
    cpu_s_per_1k_full: f64,
    /// The tier's CPU share and CPU 0's busy share during the full handshakes (when CPU 0
    /// is saturated, s_time, not the tier, limits handshakes/s).
    full_tier_cpu_share: f64,
    full_cpu0_busy: f64,
    resumed_handshakes_per_s: f64,
    cpu_s_per_1k_resumed: f64,
    req_per_s: f64,
    p99_ms: f64,
    cpu_s_per_100k_req: f64,
    /// Runs (of all three loads) in which other processes used more than `DISTURBED` of a CPU.
    disturbed_runs: usize,
    full_handshakes_per_s_rounds: Vec<f64>,
    req_per_s_rounds: Vec<f64>,
}

/// dl7's CPU over TLS against the lower of nginx's and HAProxy's, for one key type.
#[derive(Debug, Serialize)]
struct TlsTargets {
    key: &'static str,
    dl7_cpu_s_per_1k_full: f64,
    best_other_cpu_s_per_1k_full: f64,
    full_met: bool,
    dl7_cpu_s_per_100k_req: f64,
    best_other_cpu_s_per_100k_req: f64,
    req_met: bool,
}

/// dl7 against nginx, when both ran.
#[derive(Debug, Serialize)]
struct Targets {
    req_ratio: f64,
    req_ratio_target: f64,
    req_ratio_goal: f64,
    req_target_met: bool,
    req_goal_met: bool,
    p99_met: bool,
}

/// The whole report, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Report {
    backends: usize,
    objects: usize,
    connections: usize,
    duration_s: u64,
    warmup_s: u64,
    rounds: usize,
    tier_cpu: usize,
    load_cpu: usize,
    dl7_scheme: String,
    rows: Vec<Row>,
    targets: Option<Targets>,
    /// With --tls: s_time processes at once, the rows, and the targets per key type.
    handshake_clients: Option<usize>,
    tls_rows: Vec<TlsRow>,
    tls_targets: Vec<TlsTargets>,
}

/// One measured run of one tier.
#[derive(Debug, Clone, Copy)]
struct Sample {
    load: wrk::Load,
    cpu_seconds: f64,
    /// wrk's and the backends' CPU time.
    load_cpu_seconds: f64,
    wall_seconds: f64,
    cpu0_busy: f64,
    cpu1_busy: f64,
    rss_bytes: u64,
}

pub fn run(root: &Path, args: BenchL7Args) -> Result<()> {
    let opts = &args.opts;
    opts.check(
        "l7",
        Uses {
            duration: true,
            warmup: true,
            concurrency: true,
        },
    )?;
    let duration = opts.duration_s(5.0, 2.0).round().max(1.0) as u64;
    let warmup = opts.warmup_s(2.0, 1.0).round() as u64;
    let connections = opts.concurrency(64, 64);
    let rounds = args.rounds.unwrap_or(opts.pick(3, 1));
    ensure!(rounds >= 1, "--rounds must be at least 1");
    ensure!(
        args.backends >= 1 && args.objects >= 1,
        "--backends and --objects must be at least 1"
    );
    let _lock = super::opts::lock("bench l7")?;
    let mut tiers = args.tiers.clone();
    tiers.sort();
    tiers.dedup();

    setup::ensure_debian_packages(PACKAGES)?;
    if args.tls {
        setup::ensure_debian_packages(TLS_PACKAGES)?;
    }
    CpuTimes::read(TIER_CPU).context("the bench needs two CPUs (0 and 1)")?;
    let sidecar = if tiers.contains(&Tier::Dl7) {
        Some(build_sidecar(root, opts.profile())?)
    } else {
        None
    };

    // Dropped in reverse: tiers, backends, the temp directory, then the signal handlers.
    let _signals = CatchInterrupts::install();
    let temp = BenchDir::create()?;
    let dir = temp.path();
    let www = servers::write_objects(dir, args.objects)?;
    let script = wrk::write_script(dir, args.objects)?;
    let names: Vec<String> = (1..=args.backends).map(|i| format!("b{i}")).collect();
    let backends: Vec<Server> = names
        .iter()
        .zip(servers::free_ports(args.backends)?)
        .map(|(name, port)| servers::start_backend(dir, name, &www, port, LOAD_CPU))
        .collect::<Result<_>>()?;
    let members: Vec<(String, SocketAddr)> = names
        .into_iter()
        .zip(backends.iter().map(|b| b.addr))
        .collect();
    let setup = TierSetup {
        dir,
        backends: &members,
        cpu: TIER_CPU,
        sidecar: sidecar.as_deref(),
        scheme: &args.scheme,
    };
    let mut running: Vec<(Tier, Server)> = Vec::new();
    for &tier in &tiers {
        let server = servers::start_tier(tier, &setup, None)?;
        servers::check_tier(tier.name(), server.addr, args.objects, args.backends)?;
        running.push((tier, server));
    }
    let mut running_tls: Vec<(Tier, KeyType, Server)> = Vec::new();
    if args.tls {
        let ca = Ca::create(&dir.join("tls"))?;
        for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let cert = TlsCert::issue(&ca, key_type)?;
            for &tier in &tiers {
                let name = servers::instance_name(tier, Some(&cert));
                let server = servers::start_tier(tier, &setup, Some(&cert))?;
                servers::check_tls_tier(&name, server.addr, &ca, args.objects)?;
                running_tls.push((tier, key_type, server));
            }
        }
    }
    // The objects s_time fetches, one per client: the first ones, 1 KiB each.
    let handshake_paths: Vec<String> = (0..s_time::CLIENTS)
        .map(|i| servers::object_path(i % args.objects))
        .collect();

    let spec = wrk::LoadSpec {
        script: &script,
        connections,
        cpu: LOAD_CPU,
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); running.len()];
    let mut tls_samples: Vec<[Vec<Sample>; 3]> =
        running_tls.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for ((tier, server), samples) in running.iter_mut().zip(&mut samples) {
            if !opts.json {
                eprintln!("bench l7: round {}/{rounds}: {}", round + 1, tier.name());
            }
            if warmup > 0 {
                wrk::run(&spec, server.addr, warmup, dir)
                    .with_context(|| format!("{} warm-up", tier.name()))?;
            }
            let addr = server.addr;
            let sample = measure(server, &backends, || wrk::run(&spec, addr, duration, dir))
                .with_context(|| format!("{}, round {}", tier.name(), round + 1))?;
            samples.push(sample);
        }
        for ((tier, key_type, server), samples) in running_tls.iter_mut().zip(&mut tls_samples) {
            let name = format!("{} over TLS ({})", tier.name(), key_type.name());
            if !opts.json {
                eprintln!("bench l7: round {}/{rounds}: {name}", round + 1);
            }
            let addr = server.addr;
            for (shape, samples) in TLS_SHAPES.iter().zip(samples.iter_mut()) {
                let sample = match *shape {
                    TlsShape::Handshakes(kind) => measure(server, &backends, || {
                        s_time::run(kind, addr, &handshake_paths, duration, LOAD_CPU, dir)
                    }),
                    TlsShape::KeepAlive => {
                        if warmup > 0 {
                            wrk::run_https(&spec, addr, warmup, dir)
                                .with_context(|| format!("{name} warm-up"))?;
                        }
                        measure(server, &backends, || {
                            wrk::run_https(&spec, addr, duration, dir)
                        })
                    }
                }
                .with_context(|| format!("{name}, {shape:?}, round {}", round + 1))?;
                samples.push(sample);
            }
        }
    }

    let mut report = report(
        &args,
        connections,
        duration,
        warmup,
        rounds,
        &running,
        &samples,
    );
    if args.tls {
        report.add_tls(tls_rows(&running_tls, &tls_samples));
    }
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// Builds the sidecar (release, or the test build for a smoke run); returns its path once
/// `serve --help` works.
fn build_sidecar(root: &Path, profile: crate::build::Profile) -> Result<PathBuf> {
    let exe = crate::build::binaries(root, profile)?.sidecar;
    cmd::output(Command::new(&exe).args(["serve", "--help"]))
        .context("l7-sidecar has no `serve` subcommand yet: run with --tiers nginx,haproxy")?;
    Ok(exe)
}

/// One measured run of `server`'s tier under `load` (wrk's or s_time's); an error if the tier
/// died or answered errors.
fn measure(
    server: &mut Server,
    backends: &[Server],
    load: impl FnOnce() -> Result<wrk::Load>,
) -> Result<Sample> {
    let backends_cpu = || backends.iter().map(|b| b.group.cpu_seconds()).sum::<f64>();
    let (cpu0, cpu1) = (CpuTimes::read(LOAD_CPU)?, CpuTimes::read(TIER_CPU)?);
    let (tier_before, backends_before) = (server.group.cpu_seconds(), backends_cpu());
    let start = Instant::now();
    let load = load()?;
    let wall_seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = server.group.cpu_seconds() - tier_before;
    let load_cpu_seconds = backends_cpu() - backends_before + load.wrk_cpu_seconds;
    let cpu0_busy = CpuTimes::read(LOAD_CPU)?.busy_since(&cpu0);
    let cpu1_busy = CpuTimes::read(TIER_CPU)?.busy_since(&cpu1);
    let rss_bytes = server.group.rss_bytes();
    server.group.check_running()?;
    ensure!(load.requests > 0, "no request completed");
    ensure!(
        load.bad_status == 0,
        "{} of {} responses had status >= 400",
        load.bad_status,
        load.requests
    );
    if load.socket_errors as f64 > MAX_SOCKET_ERRORS * load.requests as f64 {
        bail!(
            "{} socket errors (connect, read, write, timeout) in {} requests",
            load.socket_errors,
            load.requests
        );
    }
    Ok(Sample {
        load,
        cpu_seconds,
        load_cpu_seconds,
        wall_seconds,
        cpu0_busy,
        cpu1_busy,
        rss_bytes,
    })
}

impl Sample {
    /// The largest share of either CPU used by processes other than the tier (CPU 1) or wrk
    /// and the backends (CPU 0).
    fn foreign_share(&self) -> f64 {
        let tier = self.cpu1_busy - self.cpu_seconds / self.wall_seconds;
        let load = self.cpu0_busy - self.load_cpu_seconds / self.wall_seconds;
        tier.max(load)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of `f` over `samples`.
fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// The tier's CPU seconds per `per` requests (or handshakes) of a run.
fn cpu_per(s: &Sample, per: f64) -> f64 {
    s.cpu_seconds / s.load.requests as f64 * per
}

fn tls_rows(running: &[(Tier, KeyType, Server)], samples: &[[Vec<Sample>; 3]]) -> Vec<TlsRow> {
    running
        .iter()
        .zip(samples)
        .map(|((tier, key_type, _), [full, resumed, keep])| TlsRow {
            tier: *tier,
            key: key_type.name(),
            full_handshakes_per_s: median_of(full, |s| s.load.req_per_s()),
            cpu_s_per_1k_full: median_of(full, |s| cpu_per(s, 1e3)),
            full_tier_cpu_share: median_of(full, |s| s.cpu_seconds / s.wall_seconds),
            full_cpu0_busy: median_of(full, |s| s.cpu0_busy),
            resumed_handshakes_per_s: median_of(resumed, |s| s.load.req_per_s()),
            cpu_s_per_1k_resumed: median_of(resumed, |s| cpu_per(s, 1e3)),
            req_per_s: median_of(keep, |s| s.load.req_per_s()),
            p99_ms: median_of(keep, |s| s.load.p99_ms),
            cpu_s_per_100k_req: median_of(keep, |s| cpu_per(s, 1e5)),
            disturbed_runs: [full, resumed, keep]
                .into_iter()
                .flatten()
                .filter(|s| s.foreign_share() > DISTURBED)
                .count(),
            full_handshakes_per_s_rounds: full.iter().map(|s| s.load.req_per_s()).collect(),
            req_per_s_rounds: keep.iter().map(|s| s.load.req_per_s()).collect(),
        })
        .collect()
}

/// Per key type, when dl7 and at least one of nginx and HAProxy ran.
fn tls_targets(rows: &[TlsRow]) -> Vec<TlsTargets> {
    [KeyType::EcdsaP256, KeyType::Rsa2048]
        .into_iter()
        .filter_map(|key_type| {
            let key = key_type.name();
            let of_key = || rows.iter().filter(move |r| r.key == key);
            let dl7 = of_key().find(|r| r.tier == Tier::Dl7)?;
            let others = || of_key().filter(|r| r.tier != Tier::Dl7);
            let best = |f: fn(&TlsRow) -> f64| others().map(f).min_by(f64::total_cmp);
            let best_full = best(|r| r.cpu_s_per_1k_full)?;
            let best_req = best(|r| r.cpu_s_per_100k_req)?;
            Some(TlsTargets {
                key,
                dl7_cpu_s_per_1k_full: dl7.cpu_s_per_1k_full,
                best_other_cpu_s_per_1k_full: best_full,
                full_met: dl7.cpu_s_per_1k_full <= best_full,
                dl7_cpu_s_per_100k_req: dl7.cpu_s_per_100k_req,
                best_other_cpu_s_per_100k_req: best_req,
                req_met: dl7.cpu_s_per_100k_req <= best_req,
            })
        })
        .collect()
}

impl Report {
    /// The rows over TLS, and dl7's targets against them.
    fn add_tls(&mut self, rows: Vec<TlsRow>) {
        self.handshake_clients = Some(s_time::CLIENTS);
        self.tls_targets = tls_targets(&rows);
        self.tls_rows = rows;
    }
}

fn report(
    args: &BenchL7Args,
    connections: usize,
    duration: u64,
    warmup: u64,
    rounds: usize,
    running: &[(Tier, Server)],
    samples: &[Vec<Sample>],
) -> Report {
    let mut rows: Vec<Row> = running
        .iter()
        .zip(samples)
        .map(|((tier, _), s)| {
            let m = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
            Row {
                tier: *tier,
                req_per_s: m(&|s| s.load.req_per_s()),
                ratio_vs_nginx: None,
                p50_ms: m(&|s| s.load.p50_ms),
                p99_ms: m(&|s| s.load.p99_ms),
                cpu_s_per_100k_req: m(&|s| s.cpu_seconds / s.load.requests as f64 * 1e5),
                tier_cpu_share: m(&|s| s.cpu_seconds / s.wall_seconds),
                load_cpu_share: m(&|s| s.load_cpu_seconds / s.wall_seconds),
                cpu0_busy: m(&|s| s.cpu0_busy),
                cpu1_busy: m(&|s| s.cpu1_busy),
                disturbed_rounds: s.iter().filter(|s| s.foreign_share() > DISTURBED).count(),
                rss_mib: m(&|s| s.rss_bytes as f64 / (1 << 20) as f64),
                requests: s.iter().map(|s| s.load.requests).sum(),
                req_per_s_rounds: s.iter().map(|s| s.load.req_per_s()).collect(),
                p99_ms_rounds: s.iter().map(|s| s.load.p99_ms).collect(),
            }
        })
        .collect();
    let nginx = rows
        .iter()
        .find(|r| r.tier == Tier::Nginx)
        .map(|r| (r.req_per_s, r.p99_ms));
    if let Some((nginx_rps, _)) = nginx {
        for r in &mut rows {
            r.ratio_vs_nginx = Some(r.req_per_s / nginx_rps);
        }
    }
    let targets = nginx.and_then(|(_, nginx_p99)| {
        let dl7 = rows.iter().find(|r| r.tier == Tier::Dl7)?;
        let ratio = dl7.ratio_vs_nginx?;
        Some(Targets {
            req_ratio: ratio,
            req_ratio_target: TARGET_RATIO,
            req_ratio_goal: GOAL_RATIO,
            req_target_met: ratio >= TARGET_RATIO,
            req_goal_met: ratio >= GOAL_RATIO,
            p99_met: dl7.p99_ms <= nginx_p99,
        })
    });
    Report {
        backends: args.backends,
        objects: args.objects,
        connections,
        duration_s: duration,
        warmup_s: warmup,
        rounds,
        tier_cpu: TIER_CPU,
        load_cpu: LOAD_CPU,
        dl7_scheme: args.scheme.clone(),
        rows,
        targets,
        handshake_clients: None,
        tls_rows: Vec::new(),
        tls_targets: Vec::new(),
    }
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "L7 tier: {} nginx backends, {} objects (1-16 KiB), wrk -t1 -c{} keep-alive, \
         {} x {} s rounds (median, {} s warm-up each), tier on CPU {}, wrk + backends on CPU {}\n",
        r.backends,
        r.objects,
        r.connections,
        r.rounds,
        r.duration_s,
        r.warmup_s,
        r.tier_cpu,
        r.load_cpu
    );
    out.push_str(
        "tier          req/s  x nginx  p50 ms  p99 ms  CPU s/100k  tier CPU  load CPU  RSS MiB\n",
    );
    for row in &r.rows {
        let ratio = row
            .ratio_vs_nginx
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<8} {:>10.0} {:>8} {:>7.2} {:>7.2} {:>11.2} {:>8.0}% {:>8.0}% {:>8.1}",
            row.tier.name(),
            row.req_per_s,
            ratio,
            row.p50_ms,
            row.p99_ms,
            row.cpu_s_per_100k_req,
            row.tier_cpu_share * 100.0,
            row.load_cpu_share * 100.0,
            row.rss_mib
        );
    }
    let disturbed: Vec<String> = r
        .rows
        .iter()
        .filter(|x| x.disturbed_rounds > 0)
        .map(|x| format!("{} ({} of {})", x.tier.name(), x.disturbed_rounds, r.rounds))
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "note: other processes used more than {:.0} % of a CPU in rounds of {}: \
             those figures are disturbed (see the machine's load)",
            DISTURBED * 100.0,
            disturbed.join(", ")
        );
    }
    if let Some(t) = &r.targets {
        let met = |b: bool| if b { "met" } else { "MISSED" };
        let nginx_p99 = r
            .rows
            .iter()
            .find(|x| x.tier == Tier::Nginx)
            .map(|x| x.p99_ms);
        let dl7_p99 = r
            .rows
            .iter()
            .find(|x| x.tier == Tier::Dl7)
            .map(|x| x.p99_ms);
        let _ = writeln!(
            out,
            "targets: dl7 req/s {:.2}x nginx (>= {:.1}x: {}; goal {:.1}x: {}); dl7 p99 {:.2} ms vs nginx {:.2} ms (<=: {})",
            t.req_ratio,
            t.req_ratio_target,
            met(t.req_target_met),
            t.req_ratio_goal,
            met(t.req_goal_met),
            dl7_p99.unwrap_or_default(),
            nginx_p99.unwrap_or_default(),
            met(t.p99_met)
        );
    }
    if let Some(clients) = r.handshake_clients {
        out.push_str(&tls_table(r, clients));
    }
    out
}

fn tls_table(r: &Report, clients: usize) -> String {
    let mut out = format!(
        "\nL7 tier over TLS (OpenSSL's clients negotiate TLS 1.3), the same certificate for every tier: \
         handshakes: {clients} x openssl s_time (-new: full, -reuse: resumed; one GET of 1 KiB per connection), \
         keep-alive: wrk -t1 -c{} https; {} x {} s per load (median), same pinning\n",
        r.connections, r.rounds, r.duration_s
    );
    out.push_str(
        "tier     key     full/s  CPU s/1k  tier CPU  CPU0  resumed/s  CPU s/1k  keep-alive req/s  p99 ms  CPU s/100k\n",
    );
    for row in &r.tls_rows {
        let _ = writeln!(
            out,
            "{:<8} {:<5} {:>8.0} {:>9.3} {:>8.0}% {:>4.0}% {:>10.0} {:>9.3} {:>17.0} {:>7.2} {:>11.2}",
            row.tier.name(),
            row.key,
            row.full_handshakes_per_s,
            row.cpu_s_per_1k_full,
            row.full_tier_cpu_share * 100.0,
            row.full_cpu0_busy * 100.0,
            row.resumed_handshakes_per_s,
            row.cpu_s_per_1k_resumed,
            row.req_per_s,
            row.p99_ms,
            row.cpu_s_per_100k_req
        );
    }
    let disturbed: Vec<String> = r
        .tls_rows
        .iter()
        .filter(|x| x.disturbed_runs > 0)
        .map(|x| {
            format!(
                "{} {} ({} of {})",
                x.tier.name(),
                x.key,
                x.disturbed_runs,
                r.rounds * TLS_SHAPES.len()
            )
        })
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "note: other processes used more than {:.0} % of a CPU in runs of {}: \
             those figures are disturbed",
            DISTURBED * 100.0,
            disturbed.join(", ")
        );
    }
    let met = |b: bool| if b { "met" } else { "MISSED" };
    for t in &r.tls_targets {
        let _ = writeln!(
            out,
            "targets ({}): dl7 CPU {:.3} s per 1k full handshakes vs best other {:.3} (<=: {}); \
             {:.2} s per 100k keep-alive requests vs {:.2} (<=: {})",
            t.key,
            t.dl7_cpu_s_per_1k_full,
            t.best_other_cpu_s_per_1k_full,
            met(t.full_met),
            t.dl7_cpu_s_per_100k_req,
            t.best_other_cpu_s_per_100k_req,
            met(t.req_met)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{BenchL7Args, Tier, median};

    #[test]
    fn quick_args_keep_the_defaults() {
        let a: BenchL7Args = crate::bench::opts::args_from(&["--quick"]).unwrap();
        assert!(a.opts.quick && !a.opts.json && !a.tls);
        assert_eq!(a.tiers, [Tier::Nginx, Tier::Haproxy, Tier::Dl7]);
        assert_eq!(
            (a.opts.concurrency(64, 64), a.backends, a.objects),
            (64, 4, 1000)
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
