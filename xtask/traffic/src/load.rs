//! `cargo xtask load`: the workload generator. It sends HTTP/1.1 GETs over keep-alive
//! connections to a target (the VIP) and reports throughput, latency and errors.
//!
//! Workloads:
//! - **synthetic** (default): the SURGE-like workload of `crate::workload` (the one `bench
//!   hashing` simulates: same seed, same request sequence): `--objects` objects with Zipf
//!   (`--alpha`) popularity and lognormal-plus-Pareto sizes (capped at `--max-size`). Object
//!   `i` of size `s` is requested as `/obj/<i>?size=<s>`, the synthetic origin's convention
//!   (`crate::origin`); `/obj/0` is the most popular.
//! - **replay** (`--replay FILE`): the GET and HEAD requests of a log, in order, from the start
//!   again when `--requests` asks for more (`load::replay` has the formats).
//!
//! Pacing: closed loop by default, `--concurrency` connections each sending its next request
//! when the previous one is answered; open loop with `--rate R`, request `i` due at `i / R`
//! seconds whatever the answers, sent by the first of `--concurrency` connections that is free
//! (latency counts from when it was due, so queueing behind slow answers is measured, not
//! hidden). The run ends after `--requests` requests or `--duration` seconds, whichever comes
//! first; `--warmup S` sends requests for S seconds before that without counting the answers
//! (failures are counted), and the measured run continues the same stream. `--source-addrs A,B` binds connection `k` to address `k mod n`, so that a layer-4
//! balancer sees several clients. A request that finds its kept-alive connection closed is
//! retried once on a new connection; after any error or `Connection: close` the next request
//! opens a new connection.
//!
//! The report (`--json` prints it as one JSON object; [`run`] returns it as [`LoadReport`]):
//!
//! | field | meaning |
//! |---|---|
//! | `target` | the target's address |
//! | `workload` | `"synthetic"` or `"replay"` |
//! | `mode` | `"closed"` or `"open"` |
//! | `concurrency` | connections (workers) |
//! | `rate` | requested req/s in open loop, `null` in closed loop |
//! | `requests` | requests finished, answered or failed |
//! | `ok` | answered with a status below 400 |
//! | `errors` | `{connect, timeout, reset, http_4xx, http_5xx, malformed}`: failed requests by kind (`reset`: reset or closed before a complete response, or another socket error) |
//! | `error_total` | sum of `errors` |
//! | `statuses` | `{"200": n, ...}`: complete responses by status |
//! | `seconds` | from the first request to the last answer |
//! | `req_per_s` | `ok / seconds` |
//! | `bytes` | bytes received in complete responses (heads and bodies) |
//! | `body_bytes` | of which bodies |
//! | `mbit_per_s` | `bytes * 8 / seconds / 1e6` |
//! | `latency_us` | `{p50, p90, p99, max, mean}` of `ok` requests, microseconds (3 significant digits) |
//!
//! `cargo xtask load` exits non-zero (after printing the report) when no request succeeded.
//! A debug build of xtask is slow at high rates: for figures, build it with `--release`.

mod client;
pub mod replay;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::workload::Surge;
use client::{Answer, Conn, Endpoint, Failure};
use replay::LogFormat;

/// Options of `cargo xtask load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Where to send requests: http://ADDR:PORT (the VIP).
    #[arg(long)]
    pub target: String,
    /// The Host header [default: the target's ADDR:PORT as written].
    #[arg(long)]
    pub host: Option<String>,
    /// Objects in the synthetic catalogue.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// Zipf exponent of object popularity.
    #[arg(long, default_value_t = 0.8)]
    pub alpha: f64,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 1998)]
    pub seed: u64,
    /// Largest object size of the synthetic workload, bytes (larger draws are capped).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_size: u64,
    /// A flash crowd: this share of the requests (0 to below 1) goes to object 0, the most
    /// popular, on top of the Zipf stream.
    #[arg(long, default_value_t = 0.0)]
    pub hot_share: f64,
    /// Requests to send [default: 10000, or the log's requests with --replay].
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds after which the run ends even if requests are left.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds of warm-up first: requests are sent (from the start of the workload's stream)
    /// but not counted, and `--duration` starts after them.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Keep-alive connections [default: 16, or 64 with --rate].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, sent on schedule whatever the answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Replay the GET and HEAD requests of a log instead of the synthetic workload.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// The log's format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub replay_format: LogFormat,
    /// Local addresses to bind connections to, comma-separated (connection k uses the k-th
    /// modulo their count).
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,
    /// Per-request timeout, milliseconds (connecting included).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// What to request.
#[derive(Debug, Clone)]
pub enum Workload {
    /// The SURGE-like workload of `crate::workload`.
    Synthetic {
        objects: usize,
        alpha: f64,
        seed: u64,
        /// Larger object sizes are capped to this.
        max_size: u64,
        /// The flash crowd's share of requests for object 0 (0: none).
        hot_share: f64,
    },
    /// These requests, in order, cycled.
    Replay(Arc<[replay::Entry]>),
}

/// A run of the generator.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where requests go.
    pub target: SocketAddr,
    /// The Host header.
    pub host: String,
    pub workload: Workload,
    /// The run ends after this many requests...
    pub requests: u64,
    /// ... or after this long, whichever comes first.
    pub duration: Duration,
    /// Requests finished within this long from the start are sent but not counted; the
    /// measured run (`duration`) starts after it.
    pub warmup: Duration,
    /// Connections.
    pub concurrency: usize,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub rate: Option<f64>,
    /// Local addresses to bind connections to (none: the kernel chooses).
    pub source_addrs: Vec<IpAddr>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl LoadConfig {
    /// 10,000 requests of the default synthetic workload (10,000 objects, alpha 0.8, seed
    /// 1998, sizes up to 16 MiB) over 16 connections, closed loop, at most 60 s.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            host: target.to_string(),
            workload: Workload::Synthetic {
                objects: 10_000,
                alpha: 0.8,
                seed: 1998,
                max_size: 16 << 20,
                hot_share: 0.0,
            },
            requests: 10_000,
            duration: Duration::from_secs(60),
            warmup: Duration::ZERO,
            concurrency: 16,
            rate: None,
            source_addrs: Vec::new(),
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// Failed requests by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    pub malformed: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.http_4xx + self.http_5xx + self.malformed
    }

    fn add(&mut self, o: &Self) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.http_4xx += o.http_4xx;
        self.http_5xx += o.http_5xx;
        self.malformed += o.malformed;
    }
}

/// Latency of successful requests, microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// The result of a run; the module's documentation describes every field. The one report of
/// the load generator: callers in process get it from [`run`], callers of the binary read it
/// back from `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub target: String,
    pub workload: String,
    pub mode: String,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub requests: u64,
    pub ok: u64,
    pub errors: Errors,
    pub error_total: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub seconds: f64,
    pub req_per_s: f64,
    pub bytes: u64,
    pub body_bytes: u64,
    pub mbit_per_s: f64,
    pub latency_us: Latency,
}

/// Runs `cargo xtask load`.
pub fn run_cli(args: LoadArgs) -> Result<()> {
    let (target, host) = parse_target(&args.target)?;
    let mut config = LoadConfig::new(target);
    config.host = args.host.unwrap_or(host);
    config.workload = match &args.replay {
        Some(path) => {
            let log = replay::read(path, args.replay_format)?;
            if !args.json {
                eprintln!(
                    "load: replaying {} ({} format): {} requests, {} lines skipped (not GET \
                     or HEAD, or not understood)",
                    path.display(),
                    format!("{:?}", log.format).to_lowercase(),
                    log.entries.len(),
                    log.skipped,
                );
            }
            Workload::Replay(log.entries.into())
        }
        None => Workload::Synthetic {
            objects: args.objects,
            alpha: args.alpha,
            seed: args.seed,
            max_size: args.max_size,
            hot_share: args.hot_share,
        },
    };
    config.requests = match (&config.workload, args.requests) {
        (_, Some(n)) => n,
        (Workload::Replay(entries), None) => entries.len() as u64,
        (Workload::Synthetic { .. }, None) => 10_000,
    };
    ensure!(
        args.duration > 0.0 && args.duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    config.duration = Duration::from_secs_f64(args.duration);
    ensure!(
        args.warmup >= 0.0 && args.warmup.is_finite(),
        "--warmup must be zero or a positive number of seconds"
    );
    config.warmup = Duration::from_secs_f64(args.warmup);
    config.rate = args.rate;
    config.concurrency = args
        .concurrency
        .unwrap_or(if args.rate.is_some() { 64 } else { 16 });
    config.source_addrs = args.source_addrs;
    config.timeout = Duration::from_millis(args.timeout_ms);
    config.progress = !args.quiet && !args.json;
    let report = run(&config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    if report.ok == 0 && report.requests > 0 {
        bail!("no request succeeded");
    }
    Ok(())
}

/// `http://ADDR:PORT[/]` (or `ADDR:PORT`, or `ADDR` for port 80) as a socket address and the
/// Host header it implies.
fn parse_target(url: &str) -> Result<(SocketAddr, String)> {
    ensure!(
        !url.starts_with("https://"),
        "--target: only http:// is supported"
    );
    let authority = url.strip_prefix("http://").unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or_default();
    ensure!(!authority.is_empty(), "--target {url:?} names no host");
    let with_port = if authority.parse::<SocketAddr>().is_ok()
        || authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("--target: resolving {authority}"))?
        .next()
        .with_context(|| format!("--target: {authority} has no address"))?;
    Ok((addr, authority.to_owned()))
}

/// Runs the generator on a tokio runtime of its own (call [`run_async`] from async code).
pub fn run(config: &LoadConfig) -> Result<LoadReport> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("load")
        .enable_all()
        .build()
        .context("load: starting tokio")?
        .block_on(run_async(config))
}

/// Runs the generator on the current tokio runtime.
pub async fn run_async(config: &LoadConfig) -> Result<LoadReport> {
    ensure!(config.concurrency > 0, "load: concurrency must be positive");
    ensure!(config.requests > 0, "load: requests must be positive");
    if let Some(rate) = config.rate {
        ensure!(
            rate > 0.0 && rate.is_finite(),
            "load: the rate must be a positive number of requests per second"
        );
    }
    let source = match &config.workload {
        Workload::Synthetic {
            objects,
            alpha,
            seed,
            max_size,
            hot_share,
        } => {
            ensure!(
                *max_size > 0,
                "load: the largest object size must be positive"
            );
            Source::Synthetic {
                surge: Surge::new(*objects, *alpha, *seed)?
                    .with_hot_share(*hot_share, *seed)
                    .context("load: --hot-share")?,
                max_size: *max_size,
            }
        }
        Workload::Replay(entries) => {
            ensure!(!entries.is_empty(), "load: nothing to replay");
            Source::Replay
        }
    };
    let start = Instant::now();
    let plan = Arc::new(Plan {
        config: config.clone(),
        issued: Mutex::new((0, source)),
        start,
        measure_from: start + config.warmup,
        deadline: start + config.warmup + config.duration,
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let bar = (config.progress && std::io::stderr().is_terminal()).then(|| progress(&plan));
    let workers: Vec<_> = (0..config.concurrency)
        .map(|k| tokio::spawn(worker(k, Arc::clone(&plan))))
        .collect();
    let mut total = Tally::new();
    for w in workers {
        total.merge(&w.await.context("load: a worker panicked")?);
    }
    let seconds = plan.measure_from.elapsed().as_secs_f64().max(1e-9);
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok(total.report(config, seconds))
}

/// The request target of synthetic object `o` of `size` bytes (the origin serves that size).
fn object_target(o: usize, size: u64) -> String {
    format!("/obj/{o}?size={size}")
}

/// Every object of the synthetic workload (`objects`, `seed`, `max_size` as in
/// [`Workload::Synthetic`]) once, least popular first, to replay before a measurement: the
/// caches are filled without compulsory misses left for the measured run, and a cache too
/// small for the catalogue keeps the most popular objects, which went in last.
pub fn catalogue(objects: usize, seed: u64, max_size: u64) -> Result<Arc<[replay::Entry]>> {
    // Popularity does not change the sizes; any exponent gives the same catalogue.
    let surge = Surge::new(objects, 1.0, seed)?;
    Ok((0..objects)
        .rev()
        .map(|o| replay::Entry {
            head: false,
            target: object_target(o, surge.sizes[o].min(max_size)),
        })
        .collect())
}

/// The shared state of a run.
struct Plan {
    config: LoadConfig,
    /// Requests issued so far and where the next comes from.
    issued: Mutex<(u64, Source)>,
    start: Instant,
    /// The end of the warm-up: what finishes earlier is not counted.
    measure_from: Instant,
    deadline: Instant,
    /// Requests finished and failed so far (for the progress bar).
    done: AtomicU64,
    failed: AtomicU64,
}

enum Source {
    Synthetic { surge: Surge, max_size: u64 },
    Replay,
}

impl Plan {
    /// The next request: its sequence number, HEAD or not, and its target.
    fn next(&self) -> Option<(u64, bool, String)> {
        let (i, pick) = {
            let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
            let i = issued.0;
            if i >= self.config.requests {
                return None;
            }
            issued.0 += 1;
            let pick = match &mut issued.1 {
                Source::Synthetic { surge, max_size } => {
                    let o = surge.next_object();
                    Some((o, surge.sizes[o].min(*max_size)))
                }
                Source::Replay => None,
            };
            (i, pick)
        };
        Some(match (pick, &self.config.workload) {
            (Some((o, size)), _) => (i, false, object_target(o, size)),
            (None, Workload::Replay(entries)) => {
                let e = &entries[(i % entries.len() as u64) as usize];
                (i, e.head, e.target.clone())
            }
            (None, Workload::Synthetic { .. }) => unreachable!("a synthetic source picks"),
        })
    }
}

/// One connection's requests, one after the other, until the run ends.
async fn worker(k: usize, plan: Arc<Plan>) -> Tally {
    let config = &plan.config;
    let to = Endpoint {
        target: config.target,
        source: (!config.source_addrs.is_empty())
            .then(|| config.source_addrs[k % config.source_addrs.len()]),
    };
    let mut tally = Tally::new();
    let mut conn: Option<Conn> = None;
    let mut request = Vec::new();
    while let Some((i, head, target)) = plan.next() {
        let due = match config.rate {
            Some(rate) => plan.start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if due >= plan.deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        request.clear();
        let method = if head { "HEAD" } else { "GET" };
        request.extend_from_slice(
            format!(
                "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dl7-load\r\n\r\n",
                config.host
            )
            .as_bytes(),
        );
        let exchange = client::exchange(&mut conn, to, &request, head);
        let result = match tokio::time::timeout(config.timeout, exchange).await {
            Ok(result) => result.map_err(Some),
            Err(_) => {
                conn = None;
                Err(None)
            }
        };
        // Warm-up answers are not counted, but failures always are.
        let warm = Instant::now() < plan.measure_from;
        let failed = if warm && result.as_ref().is_ok_and(|a| a.status < 400) {
            false
        } else {
            tally.record(result, due.elapsed())
        };
        plan.done.fetch_add(1, Ordering::Relaxed);
        if failed {
            plan.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    tally
}

/// One worker's counts.
struct Tally {
    ok: u64,
    errors: Errors,
    statuses: BTreeMap<u16, u64>,
    bytes: u64,
    body_bytes: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: Errors::default(),
            statuses: BTreeMap::new(),
            bytes: 0,
            body_bytes: 0,
            // 1 us to 1 h at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }

    /// Counts one request (`Err(None)`: timed out); true when it failed.
    fn record(&mut self, result: Result<Answer, Option<Failure>>, latency: Duration) -> bool {
        let kind = match result {
            Ok(a) => {
                *self.statuses.entry(a.status).or_default() += 1;
                self.bytes += a.bytes;
                self.body_bytes += a.body;
                match a.status {
                    500.. => &mut self.errors.http_5xx,
                    400.. => &mut self.errors.http_4xx,
                    _ => {
                        self.ok += 1;
                        self.latency
                            .saturating_record(latency.as_micros().try_into().unwrap_or(u64::MAX));
                        return false;
                    }
                }
            }
            Err(None) => &mut self.errors.timeout,
            Err(Some(Failure::Connect)) => &mut self.errors.connect,
            Err(Some(Failure::Reset)) => &mut self.errors.reset,
            Err(Some(Failure::Malformed)) => &mut self.errors.malformed,
        };
        *kind += 1;
        true
    }

    fn merge(&mut self, o: &Self) {
        self.ok += o.ok;
        self.errors.add(&o.errors);
        for (s, n) in &o.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.bytes += o.bytes;
        self.body_bytes += o.body_bytes;
        self.latency.add(&o.latency).expect("same bounds");
    }

    fn report(self, config: &LoadConfig, seconds: f64) -> LoadReport {
        let h = &self.latency;
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
                mean: h.mean(),
            }
        };
        let error_total = self.errors.total();
        LoadReport {
            target: config.target.to_string(),
            workload: match config.workload {
                Workload::Synthetic { .. } => "synthetic",
                Workload::Replay(_) => "replay",
            }
            .into(),
            mode: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .into(),
            concurrency: config.concurrency,
            rate: config.rate,
            requests: self.ok + error_total,
            ok: self.ok,
            errors: self.errors,
            error_total,
            statuses: self.statuses,
            seconds,
            req_per_s: self.ok as f64 / seconds,
            bytes: self.bytes,
            body_bytes: self.body_bytes,
            mbit_per_s: self.bytes as f64 * 8.0 / seconds / 1e6,
            latency_us,
        }
    }
}

/// A progress bar on stderr and the task that updates it.
fn progress(plan: &Arc<Plan>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new(plan.config.requests);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    let (shown, plan) = (bar.clone(), Arc::clone(plan));
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = plan.done.load(Ordering::Relaxed);
            let secs = plan.start.elapsed().as_secs_f64().max(1e-9);
            shown.set_position(done);
            shown.set_message(format!(
                "{:.0} req/s, {} errors",
                done as f64 / secs,
                plan.failed.load(Ordering::Relaxed)
            ));
        }
    });
    (bar, ticker)
}

/// The text report.
fn text(r: &LoadReport) -> String {
    let e = &r.errors;
    let ms = |us: u64| us as f64 / 1000.0;
    let rate = r
        .rate
        .map_or(String::new(), |rate| format!(" at {rate} req/s"));
    format!(
        "load: {} requests ({} workload, {} loop{rate}, {} connections) to {} in {:.2} s\n\
         \x20 ok {}, errors {} (connect {}, timeout {}, reset {}, http 4xx {}, http 5xx {}, malformed {})\n\
         \x20 {:.0} req/s, {:.1} Mbit/s, {:.1} MB received ({:.1} MB of bodies)\n\
         \x20 latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        r.requests,
        r.workload,
        r.mode,
        r.concurrency,
        r.target,
        r.seconds,
        r.ok,
        r.error_total,
        e.connect,
        e.timeout,
        e.reset,
        e.http_4xx,
        e.http_5xx,
        e.malformed,
        r.req_per_s,
        r.mbit_per_s,
        r.bytes as f64 / 1e6,
        r.body_bytes as f64 / 1e6,
        ms(r.latency_us.p50),
        ms(r.latency_us.p90),
        ms(r.latency_us.p99),
        ms(r.latency_us.max),
    )
}

#[cfg(test)]
mod tests;
