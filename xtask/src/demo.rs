//! `cargo xtask demo`: dl7 working, in one command. It brings the namespace testbed up (4
//! servers, carp, the XDP front in native mode), runs the SURGE-like workload through the VIP
//! from four client addresses, and prints a report a person can read: throughput and latency,
//! the hit ratio, each server's share of requests and objects, the bytes stored against the
//! unique bytes (1.00 when every object is stored once), the front's counters per real. It
//! draws the per-server load as a PNG and takes the testbed down again (`--keep` leaves it up
//! with its Prometheus endpoints, for a look around). With `--l3-servers K` the last K
//! servers sit behind a router and the front reaches them with IPIP or GUE (`--encap`).
//! With `--fronts F` the clients sit behind a router that reaches the VIP over F fronts by
//! ECMP (each announcing it with BIRD) and the sidecars follow the fronts' membership; the
//! report then splits the traffic by front, and a failover follows: a front killed under
//! load, the router's time to leave it and the failed requests, and its return.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, ensure};
use clap::Args;
use dl7_traffic::load::LoadReport;
use plotters::prelude::*;

use crate::build::Profile;
use dl7_testbed::{Encap, Mode, Spec, Testbed, in_netns, process as cmd};

use crate::bench::plot;

/// The demo's testbed name (so it never collides with one an operator brought up).
const DEMO_NAME: &str = "dl7demo";

#[derive(Args)]
pub struct DemoArgs {
    /// Leave the testbed up at the end (`cargo xtask testbed down --name dl7demo` removes it).
    #[arg(long)]
    keep: bool,
    /// Servers in the testbed.
    #[arg(long, default_value_t = 4)]
    servers: u16,
    /// The sidecars' hashing scheme.
    #[arg(long, default_value = "carp")]
    scheme: String,
    /// How the front attaches its XDP program.
    #[arg(long, value_enum, default_value = "native")]
    mode: Mode,
    /// Requests in the workload.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Objects in the workload's catalogue.
    #[arg(long, default_value_t = 5_000)]
    objects: u64,
    /// Put this many of the servers (the last ones) behind a router, in a second subnet.
    #[arg(long, default_value_t = 0)]
    l3_servers: u16,
    /// How the front reaches the servers behind the router.
    #[arg(long, value_enum, default_value = "gue")]
    encap: Encap,
    /// Fronts announcing the VIP by BGP to a router that spreads flows over them (ECMP).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=dl7_testbed::MAX_FRONTS as i64))]
    fronts: u16,
}

/// One server's numbers, from its sidecar's /metrics and the front.
#[derive(Default, Debug)]
struct ServerNumbers {
    name: String,
    /// Requests it served as the owner (`route="local"`).
    served: f64,
    /// Requests it received from clients and forwarded to the owner (`route="peer"`).
    forwarded: f64,
    /// Requests it received from clients and answered from its relay cache, a copy of what a
    /// peer owns (`route="relay"`).
    relayed: f64,
    relay_bytes: f64,
    hits: f64,
    misses: f64,
    objects: f64,
    stored_bytes: f64,
    /// Packets the front sent it.
    front_packets: u64,
}

pub fn run(root: &Path, args: DemoArgs) -> Result<()> {
    // The chart's font; everything else the testbed installs itself.
    crate::setup::ensure_debian_packages(&["fonts-dejavu-core"])?;
    let parts = crate::build::testbed_parts(root, Profile::Release)?;
    let spec = Spec {
        mode: args.mode,
        cache_bytes: 1 << 30,
        l3_servers: args.l3_servers,
        encap: args.encap,
        fronts: args.fronts,
        ..Spec::new(DEMO_NAME, args.servers, &args.scheme)
    };
    let mut status = dl7_testbed::up(&spec, &parts)?;
    let result = demo(root, &args, &status).and_then(|()| {
        if args.fronts > 1 {
            failover(&mut status)
        } else {
            Ok(())
        }
    });
    if args.keep {
        println!(
            "\nthe testbed stays up (--keep): `cargo xtask testbed status --name {DEMO_NAME}`; \
             remove it with `cargo xtask testbed down --name {DEMO_NAME}`"
        );
    } else {
        dl7_testbed::down(DEMO_NAME)?;
    }
    result
}

fn demo(root: &Path, args: &DemoArgs, status: &Testbed) -> Result<()> {
    println!("\nPrometheus endpoints while the demo runs:");
    for f in status.fronts() {
        println!(
            "  {:<6} http://{}/metrics   (namespace {})",
            f.role, f.metrics, f.ns
        );
    }
    for s in &status.servers {
        println!(
            "  {:<6} http://{}/metrics   (namespace {})",
            s.name, s.metrics, s.ns
        );
    }
    println!(
        "\nworkload: {} requests over {} objects (Zipf 0.8, SURGE-like sizes) from {} client \
         addresses to {}",
        args.requests,
        args.objects,
        status.client_addrs.len(),
        status.vip
    );
    let mut load = cmd::in_ns_command(Some(&status.client_ns), &status.parts.traffic);
    load.args(["load", "--target", &format!("http://{}", status.vip)])
        .args(["--objects", &args.objects.to_string()])
        .args(["--requests", &args.requests.to_string()])
        .args(["--concurrency", "32", "--duration", "120", "--json"])
        // Every object fits the sidecar's default largest cached object (8 MiB), so the
        // report can compare stored bytes with unique bytes.
        .args(["--max-size", &(8u64 << 20).to_string()])
        .args(["--source-addrs", &status.client_addr_list()])
        .stderr(Stdio::inherit());
    let report: LoadReport = serde_json::from_str(&cmd::output(&mut load)?)
        .context("reading the load generator's JSON report")?;

    let mut servers = Vec::new();
    for (s, m) in status.servers.iter().zip(status.scrape_servers()?) {
        // A routed server's name carries how the front reaches it.
        let name = match s.encap {
            Some(encap) => format!("{}/{}", s.name, encap.as_str()),
            None => s.name.clone(),
        };
        servers.push(ServerNumbers {
            name,
            served: m.sum("dl7_l7_requests_total", &[("route", "local")]),
            forwarded: m.sum("dl7_l7_requests_total", &[("route", "peer")]),
            relayed: m.sum("dl7_l7_requests_total", &[("route", "relay")]),
            relay_bytes: m.sum("dl7_l7_relay_bytes", &[]),
            hits: m.sum("dl7_l7_cache_hits_total", &[]),
            misses: m.sum("dl7_l7_cache_misses_total", &[]),
            objects: m.sum("dl7_l7_cache_objects", &[]),
            stored_bytes: m.sum("dl7_l7_cache_bytes", &[]),
            front_packets: 0,
        });
    }
    // Every front's counters, summed: per real, and the global ones.
    let mut stats = serde_json::json!({"global": {}});
    let mut per_front = Vec::new();
    for i in 0..status.fronts().count() {
        let one: serde_json::Value =
            serde_json::from_str(&status.l4_ctl_on(i, &["stats", "--json"])?)?;
        let reals = one["vips"][0]["reals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (server, numbers) in status.servers.iter().zip(servers.iter_mut()) {
            numbers.front_packets += reals
                .iter()
                .find(|r| r["address"].as_str() == Some(server.addr.to_string().as_str()))
                .and_then(|r| r["packets"].as_u64())
                .unwrap_or(0);
        }
        for (k, v) in one["global"].as_object().into_iter().flatten() {
            let sum = stats["global"][k].as_u64().unwrap_or(0) + v.as_u64().unwrap_or(0);
            stats["global"][k] = sum.into();
        }
        per_front.push(one["vips"][0]["packets"].as_u64().unwrap_or(0));
    }
    let origin_addr = status.origin.addr;
    let counts = in_netns(&status.origin.ns, || {
        dl7_traffic::origin::Remote(origin_addr).counts()
    })??;
    let unique_bytes: u64 = counts
        .keys()
        .map(|url| dl7_traffic::origin::requested_size(url).unwrap_or(4096))
        .sum();
    let fetches: u64 = counts.values().sum();

    print_report(
        &report,
        &servers,
        &stats,
        unique_bytes,
        counts.len(),
        fetches,
    );
    if per_front.len() > 1 {
        let total: u64 = per_front.iter().sum();
        let split: Vec<String> = status
            .fronts()
            .zip(&per_front)
            .map(|(f, p)| {
                format!(
                    "{} {p} ({:.1}%)",
                    f.role,
                    100.0 * *p as f64 / (total as f64).max(1.0)
                )
            })
            .collect();
        println!(
            "fronts: VIP frames by front (the router's ECMP over the BGP announcements): {}",
            split.join(", ")
        );
    }
    let chart = root.join("target/demo/per-server-load.png");
    if draw_chart(&servers, &chart)? {
        println!("\nchart of the per-server load: {}", chart.display());
    }
    ensure!(
        report.error_total == 0,
        "{} requests failed",
        report.error_total
    );
    Ok(())
}

/// A front killed under load (SIGKILL of its daemon, program detached), then brought back.
fn failover(status: &mut Testbed) -> Result<()> {
    let last = status.fronts().count() - 1;
    let role = status.front_at(last)?.role.clone();
    println!("\n=== failover: {role} killed under load, then back ===");
    let mut config = dl7_traffic::load::LoadConfig::new(status.vip);
    config.requests = u64::MAX;
    config.concurrency = 16;
    config.duration = std::time::Duration::from_secs(4);
    config.timeout = std::time::Duration::from_secs(5);
    config.source_addrs = status.client_addrs.iter().map(|&a| a.into()).collect();
    let tb = &*status;
    let (report, left) = std::thread::scope(|scope| -> Result<_> {
        let load = scope.spawn(|| in_netns(&tb.client_ns, || dl7_traffic::load::run(&config)));
        std::thread::sleep(std::time::Duration::from_secs(1));
        let killed = std::time::Instant::now();
        let left = tb
            .kill_front(last)
            .and_then(|()| tb.wait_router_paths(last));
        let left = left.map(|_| killed.elapsed());
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))???;
        Ok((report, left?))
    })?;
    println!(
        "{role} killed (daemon SIGKILL, program detached): the router left it after {:.0} ms; \
         {} of {} requests failed during the {:.0} s run ({:.0} req/s)",
        left.as_secs_f64() * 1000.0,
        report.error_total,
        report.requests,
        report.seconds,
        report.req_per_s
    );
    let restarted = std::time::Instant::now();
    status.restart_front(last)?;
    status.wait_router_paths(last + 1)?;
    println!(
        "{role} back (l4-ctl load + daemon): announced and used again after {:.0} ms",
        restarted.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

fn print_report(
    load: &LoadReport,
    servers: &[ServerNumbers],
    stats: &serde_json::Value,
    unique_bytes: u64,
    unique_urls: usize,
    fetches: u64,
) {
    let lat = &load.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    println!("\n=== dl7 demo report ===");
    println!(
        "throughput: {:.0} req/s, {:.1} Mbit/s ({} requests in {:.2} s, {} failed)",
        load.req_per_s, load.mbit_per_s, load.requests, load.seconds, load.error_total
    );
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(lat.p50),
        ms(lat.p90),
        ms(lat.p99),
        ms(lat.max)
    );
    let (hits, misses): (f64, f64) = servers
        .iter()
        .fold((0.0, 0.0), |(h, m), s| (h + s.hits, m + s.misses));
    println!(
        "hit ratio: {:.1} % ({hits:.0} hits, {misses:.0} misses over all servers)",
        100.0 * hits / (hits + misses).max(1.0)
    );
    let served: f64 = servers.iter().map(|s| s.served).sum();
    let objects: f64 = servers.iter().map(|s| s.objects).sum();
    let stored: f64 = servers.iter().map(|s| s.stored_bytes).sum();
    let packets: u64 = servers.iter().map(|s| s.front_packets).sum();
    let (relayed, relay_bytes) = servers
        .iter()
        .fold((0.0, 0.0), |(r, b), s| (r + s.relayed, b + s.relay_bytes));
    println!(
        "\n{:<9} {:>13} {:>10} {:>8} {:>10} {:>9} {:>9} {:>11}",
        "server",
        "front packets",
        "forwarded",
        "relayed",
        "served",
        "share",
        "objects",
        "stored MB"
    );
    for s in servers {
        println!(
            "{:<9} {:>6} ({:>4.1}%) {:>10.0} {:>8.0} {:>10.0} {:>8.1}% {:>9.0} {:>11.1}",
            s.name,
            s.front_packets,
            100.0 * s.front_packets as f64 / (packets as f64).max(1.0),
            s.forwarded,
            s.relayed,
            s.served,
            100.0 * s.served / served.max(1.0),
            s.objects,
            s.stored_bytes / 1e6
        );
    }
    println!(
        "\nstored over all servers: {:.1} MB in {objects:.0} objects; unique: {:.1} MB in \
         {unique_urls} objects (stored / unique = {:.2}; 1.00 = every object stored once)",
        stored / 1e6,
        unique_bytes as f64 / 1e6,
        stored / (unique_bytes as f64).max(1.0)
    );
    println!(
        "relay caches: {relayed:.0} requests answered from copies of hot objects a peer owns, \
         {:.1} MB of copies (`relay-cache-bytes`)",
        relay_bytes / 1e6
    );
    println!("origin: {fetches} fetches for {unique_urls} distinct URLs");
    let global = &stats["global"];
    // Every drop outcome the front counts (`drop_*`).
    let drops: u64 = global
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("drop_"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    println!(
        "front: tx {} frames ({} of them encapsulated), new flows {}, flow-table hits {}, \
         drops {drops}; not for a VIP {} (health-check replies, and BGP and BFD with several \
         fronts: replies to clients never pass the front)",
        global["tx"],
        global["encapsulated"],
        global["new_flows"],
        global["conn_hits"],
        global["pass_not_vip"],
    );
}

/// Per-server bars: requests served as owner and requests received from the front.
fn draw_chart(servers: &[ServerNumbers], path: &PathBuf) -> Result<bool> {
    if !plot::register_sans_serif()? {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let max = servers
        .iter()
        .map(|s| s.served.max(s.served + s.forwarded))
        .fold(1.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot::plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("dl7 demo: load per server", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..servers.len() as f64 - 0.5, 0f64..max)
        .map_err(plot::plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(servers.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            servers
                .get(i as usize)
                .filter(|_| (x - i).abs() < 0.01 && i >= 0.0)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("requests")
        .draw()
        .map_err(plot::plot_err)?;
    let served_color = RGBColor(31, 119, 180);
    let received_color = RGBColor(255, 127, 14);
    chart
        .draw_series(servers.iter().enumerate().map(|(i, s)| {
            let x = i as f64;
            Rectangle::new(
                [(x - 0.4, 0.0), (x - 0.02, s.served)],
                served_color.filled(),
            )
        }))
        .map_err(plot::plot_err)?
        .label("served as owner (from its cache or the origin)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], served_color.filled()));
    chart
        .draw_series(servers.iter().enumerate().map(|(i, s)| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.02, 0.0), (x + 0.4, s.forwarded)],
                received_color.filled(),
            )
        }))
        .map_err(plot::plot_err)?
        .label("received from clients, forwarded to the owner")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 15, y + 5)], received_color.filled())
        });
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot::plot_err)?;
    root.present().map_err(plot::plot_err)?;
    Ok(true)
}
