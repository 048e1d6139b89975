//! `cargo xtask bench paper --fronts F`: the distributed design with F fronts behind a router
//! that spreads flows over them by ECMP (each front announcing the VIP with BIRD, the sidecars
//! following the fronts' membership), at the largest N of `--servers` [default 16].
//!
//! The XDP program runs in softirq context, which no cgroup quota limits, so a front's
//! capacity is its link's: a token bucket on the switch's port to each front
//! ([`Testbed::cap_front`]). The cap is set from a calibration run with every front and no
//! cap (the sidecar tier's limit under its quotas): each front gets 0.7/F of the bytes per
//! second the VIP received then, so that one front, and F fronts, carry less than the tier
//! can serve and the fronts are the limit. Then, each from cold caches like every paper run:
//! one front (the others drained with `l4-ctl front drain`, so the router uses one path),
//! and all F fronts. The target: F = 2 fronts carry at least 1.8x the req/s of one.
//!
//! Then, with the caps lifted and a load running, the time the router takes to leave a front:
//! killed (SIGKILL of its daemon and its program detached: BIRD withdraws the VIP at once),
//! and dead (its link down: BFD notices), each with the requests that failed meanwhile, and
//! the time the front takes to be used again once back.
//!
//! Results: `target/bench-results/paper-fronts/` (or `--out`): results.json and table.txt.

use std::time::Instant;

use super::*;

/// Fronts' share of the calibrated rate: the F fronts together get 70 % of what the tier
/// served without a cap (at a half, one front's link was so narrow for 256 connections that
/// TCP's retransmission timeouts, not the link, set its pace).
const CAP_SHARE_OF_TIER: f64 = 0.7;
/// The target ratio of F = 2 fronts over one.
const TWO_FRONTS_SCALING: f64 = 1.8;
/// Bound on the sidecars catching up with a membership.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(15);
/// The failover runs: seconds of load, and when in them the front fails.
const FAILOVER_LOAD_S: u64 = 6;
const FAILOVER_AT_S: u64 = 1;

#[derive(Debug, Serialize)]
struct FrontsReport {
    servers: usize,
    fronts: usize,
    scheme: String,
    quota_cpus: f64,
    warmup_s: f64,
    duration_s: f64,
    concurrency: usize,
    /// The calibration sample: every front, no cap.
    uncapped: Sample,
    /// Each front's cap.
    cap_bits_per_s: u64,
    one_front: Run,
    all_fronts: Run,
    /// A sample after each run, on the same caches: what the fronts received per request.
    one_front_sample: Sample,
    all_fronts_sample: Sample,
    ratio: f64,
    target: Option<f64>,
    met: Option<bool>,
    /// The router leaving a killed front, and a dead one.
    killed: Failover,
    link_down: Failover,
}

/// A short load run (`--duration`) and what the fronts received meanwhile.
#[derive(Debug, Serialize)]
struct Sample {
    req_per_s: f64,
    /// Frames and bytes to the VIP, over every front, per request and per second.
    vip_packets_per_request: f64,
    vip_bytes_per_request: f64,
    vip_bits_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Failover {
    /// From the failure until the router's route has one path less.
    converged_ms: f64,
    /// Requests of the load run (closed loop, new and kept connections) and the failed ones.
    requests: u64,
    failed: u64,
    /// From the front's return until the router uses it again.
    back_ms: f64,
}

pub(in crate::bench) fn run(root: &Path, args: BenchPaperArgs) -> Result<()> {
    let plan = &plan(&args, online_cpus())?;
    let _lock = super::super::opts::lock("bench paper")?;
    let args = &args;
    let fronts = args.fronts;
    let n = *plan.servers.last().context("no number of servers fits")?;
    let parts = crate::build::testbed_parts(root, args.opts.profile())?;
    let _interrupts = CatchInterrupts::install();
    fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    let spec = Spec {
        cpu_quota: Some(plan.quota),
        cache_bytes: args.cache_bytes,
        sidecar_threads: Some(1),
        fronts,
        ..Spec::new(plan.name, n as u16, &plan.schemes[0])
    };
    let mut testbed = dl7_testbed::up(&spec, &parts)?;
    let result = measure_fronts(&mut testbed, args, plan);
    dl7_testbed::down(plan.name)?;
    let report = result?;
    let table = table(&report);
    save(&plan.out, &report, &table)?;
    if args.opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
        println!("results: {}", plan.out.join("results.json").display());
    }
    check_runs([&report.one_front, &report.all_fronts])
}

/// Frames and bytes the VIP received, over every front (a drained front still counts what
/// reaches it).
fn vip_counts(tb: &Testbed) -> Result<(u64, u64)> {
    let (mut packets, mut bytes) = (0, 0);
    for i in 0..tb.fronts().count() {
        let stats: serde_json::Value =
            serde_json::from_str(&tb.l4_ctl_on(i, &["stats", "--json"])?)?;
        packets += stats["vips"][0]["packets"].as_u64().unwrap_or(0);
        bytes += stats["vips"][0]["bytes"].as_u64().unwrap_or(0);
    }
    Ok((packets, bytes))
}

/// A [`Sample`]: the workload for `--duration` seconds, on the caches as they are.
fn sample(tb: &Testbed, plan: &Plan, args: &BenchPaperArgs) -> Result<Sample> {
    let (p0, b0) = vip_counts(tb)?;
    let config = load_config(tb, plan, args, plan.duration);
    let report = in_netns(&tb.client_ns, || load::run(&config))??;
    let (p1, b1) = vip_counts(tb)?;
    let requests = report.requests.max(1) as f64;
    Ok(Sample {
        req_per_s: report.req_per_s,
        vip_packets_per_request: (p1 - p0) as f64 / requests,
        vip_bytes_per_request: (b1 - b0) as f64 / requests,
        vip_bits_per_s: (b1 - b0) as f64 * 8.0 / report.seconds.max(1e-3),
    })
}

/// Restarts every sidecar with the scheme (cold caches) and waits until they follow the
/// fronts' membership again.
fn restart(tb: &mut Testbed) -> Result<()> {
    let scheme = tb.scheme.clone();
    tb.restart_all(&scheme)?;
    tb.wait_sidecar_members(tb.servers.len(), MEMBERS_TIMEOUT)
        .map(drop)
}

fn load_config(tb: &Testbed, plan: &Plan, args: &BenchPaperArgs, seconds: f64) -> LoadConfig {
    let mut config = LoadConfig::new(tb.vip);
    config.source_addrs = tb.client_addrs.iter().map(|&a| a.into()).collect();
    config.timeout = Duration::from_secs(10);
    config.concurrency = plan.concurrency;
    config.workload = Workload::Synthetic {
        objects: plan.objects,
        alpha: 0.8,
        seed: args.seed,
        max_size: args.max_size,
        hot_share: 0.0,
    };
    config.requests = u64::MAX;
    config.duration = Duration::from_secs_f64(seconds);
    config
}

fn measure_fronts(tb: &mut Testbed, args: &BenchPaperArgs, plan: &Plan) -> Result<FrontsReport> {
    let fronts = tb.fronts().count();
    let variant = (Design::Distributed, None, 0.0);

    // Calibration: every front, no cap, warm caches (the catalogue once, then the stream).
    restart(tb)?;
    let warm = measure(tb, args, plan, variant)?;
    let uncapped = sample(tb, plan, args)?;
    let cap = (uncapped.vip_bits_per_s * CAP_SHARE_OF_TIER / fronts as f64) as u64;
    eprintln!(
        "bench paper --fronts: uncapped {:.0} req/s (warm run {:.0}), the VIP received {:.1} Mbit/s: each front capped at {:.1} Mbit/s",
        uncapped.req_per_s,
        warm.req_per_s,
        uncapped.vip_bits_per_s / 1e6,
        cap as f64 / 1e6
    );
    check_interrupted()?;

    for i in 0..fronts {
        tb.cap_front(i, Some(cap))?;
    }
    // One front: the others drained, so the router has one path.
    for i in 1..fronts {
        tb.l4_ctl_on(i, &["front", "drain"])?;
    }
    tb.wait_router_paths(1)?;
    restart(tb)?;
    let one_front = measure(tb, args, plan, variant).context("one front")?;
    let one_front_sample = sample(tb, plan, args)?;
    eprintln!(
        "bench paper --fronts: one front: {:.0} req/s",
        one_front.req_per_s
    );
    check_interrupted()?;
    for i in 1..fronts {
        tb.l4_ctl_on(i, &["front", "undrain"])?;
    }
    tb.wait_router_paths(fronts)?;
    restart(tb)?;
    let all_fronts = measure(tb, args, plan, variant).context("all fronts")?;
    let all_fronts_sample = sample(tb, plan, args)?;
    eprintln!(
        "bench paper --fronts: {fronts} fronts: {:.0} req/s",
        all_fronts.req_per_s
    );
    for i in 0..fronts {
        tb.cap_front(i, None)?;
    }
    check_interrupted()?;

    let last = fronts - 1;
    let killed = failover(
        tb,
        plan,
        args,
        |tb| tb.kill_front(last),
        |tb| tb.restart_front(last),
    )?;
    let ns = tb.front_at(last)?.ns.clone();
    let link = |state: &'static str| {
        let ns = ns.clone();
        move |_: &mut Testbed| -> Result<()> {
            dl7_testbed::process::output(
                std::process::Command::new("ip").args(["-n", &ns, "link", "set", "eth0", state]),
            )
            .map(drop)
        }
    };
    let link_down = failover(tb, plan, args, link("down"), link("up"))?;

    let ratio = all_fronts.req_per_s / one_front.req_per_s.max(1e-9);
    let target = (fronts == 2).then_some(TWO_FRONTS_SCALING);
    Ok(FrontsReport {
        servers: tb.servers.len(),
        fronts,
        scheme: tb.scheme.clone(),
        quota_cpus: plan.quota,
        warmup_s: plan.warmup,
        duration_s: plan.duration,
        concurrency: plan.concurrency,
        uncapped,
        cap_bits_per_s: cap,
        one_front,
        all_fronts,
        one_front_sample,
        all_fronts_sample,
        ratio,
        target,
        met: target.map(|t| ratio >= t),
        killed,
        link_down,
    })
}

/// A load run during which the last front fails (`fail`, at [`FAILOVER_AT_S`]); then `restore`
/// brings it back and the router's use of it is timed.
fn failover(
    tb: &mut Testbed,
    plan: &Plan,
    args: &BenchPaperArgs,
    fail: impl FnOnce(&mut Testbed) -> Result<()>,
    restore: impl FnOnce(&mut Testbed) -> Result<()>,
) -> Result<Failover> {
    let fronts = tb.fronts().count();
    let config = load_config(tb, plan, args, FAILOVER_LOAD_S as f64);
    let client_ns = tb.client_ns.clone();
    let (report, converged) = std::thread::scope(|scope| -> Result<_> {
        let load = scope.spawn(|| in_netns(&client_ns, || load::run(&config)));
        super::super::process::sleep(Duration::from_secs(FAILOVER_AT_S))?;
        let failed_at = Instant::now();
        let converged = fail(tb)
            .and_then(|()| tb.wait_router_paths(fronts - 1))
            .map(|_| failed_at.elapsed());
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))???;
        Ok((report, converged?))
    })?;
    let back = Instant::now();
    restore(tb)?;
    tb.wait_router_paths(fronts)?;
    let back_ms = back.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "bench paper --fronts: the router left the front after {:.0} ms, {} of {} requests failed; back after {back_ms:.0} ms",
        converged.as_secs_f64() * 1000.0,
        report.error_total,
        report.requests
    );
    Ok(Failover {
        converged_ms: converged.as_secs_f64() * 1000.0,
        requests: report.requests,
        failed: report.error_total,
        back_ms,
    })
}

fn table(r: &FrontsReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "several fronts: {} servers ({}, {:.2} CPU each, one thread), {} fronts behind an ECMP \
         router (BGP from BIRD); closed loop, {} connections; the catalogue once, {:.0} s warm-up, \
         {:.0} s measured per run",
        r.servers, r.scheme, r.quota_cpus, r.fronts, r.concurrency, r.warmup_s, r.duration_s
    );
    let _ = writeln!(
        t,
        "calibration (every front, no cap): {:.0} req/s, the VIP received {:.1} Mbit/s ({:.1} \
         frames, {:.0} bytes per request); each front capped at {:.1} Mbit/s (its link), so that \
         the fronts are the limit",
        r.uncapped.req_per_s,
        r.uncapped.vip_bits_per_s / 1e6,
        r.uncapped.vip_packets_per_request,
        r.uncapped.vip_bytes_per_request,
        r.cap_bits_per_s as f64 / 1e6
    );
    let _ = writeln!(
        t,
        "\n{:<8} {:>8} {:>8} {:>7} {:>10} {:>7} {:>11} {:>9} {:>8}",
        "fronts",
        "req/s",
        "p99 ms",
        "hit %",
        "throttled",
        "failed",
        "sample r/s",
        "frames/r",
        "bytes/r"
    );
    for (name, run, sample) in [
        ("1".to_owned(), &r.one_front, &r.one_front_sample),
        (r.fronts.to_string(), &r.all_fronts, &r.all_fronts_sample),
    ] {
        let _ = writeln!(
            t,
            "{:<8} {:>8.0} {:>8.1} {:>7.1} {:>9.0}% {:>7} {:>11.0} {:>9.1} {:>8.0}",
            name,
            run.req_per_s,
            run.p99_ms,
            run.hit_ratio * 100.0,
            run.servers_throttled * 100.0,
            run.failed,
            sample.req_per_s,
            sample.vip_packets_per_request,
            sample.vip_bytes_per_request
        );
    }
    let _ = writeln!(
        t,
        "\n{} fronts / 1 front: {:.2}x{}",
        r.fronts,
        r.ratio,
        match (r.target, r.met) {
            (Some(target), Some(met)) => format!(
                " (target >= {target}x: {})",
                if met { "met" } else { "missed" }
            ),
            _ => String::new(),
        }
    );
    for (what, f) in [
        ("killed (daemon SIGKILL, program detached)", &r.killed),
        ("dead (link down, BFD)", &r.link_down),
    ] {
        let _ = writeln!(
            t,
            "front {what}: the router left it after {:.0} ms; {} of {} requests failed during the {FAILOVER_LOAD_S} s run; back in use {:.0} ms after its return",
            f.converged_ms, f.failed, f.requests, f.back_ms
        );
    }
    t
}
