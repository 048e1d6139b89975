//! `cargo xtask bench forward`: what the distributed design's second pass through a sidecar
//! costs. Two setups run at the same time, so that both see the same machine (on a machine
//! whose speed drifts by a third between runs, only a paired measurement says anything):
//! - a **local hit**: a sidecar answering from its cache;
//! - a **forward**: a sidecar relaying the same objects from their owner's cache (its relay
//!   cache off: the 64 objects hammered would all be hot, and answered from copies).
//!
//! The local sidecar and the forwarder share CPU 1 (the scheduler splits it fairly); each gets
//! its own wrk on CPU 0, with the owner and the origin (`dl7-traffic origin`). Per body size,
//! the figure is the forwarder's CPU per request over the local hit's, in the same seconds.
//! Issue 15's measure of the forwarding pass: 1.25-1.5x a local hit before its work.
//!
//! With `--peer-tls` the forwarder and the owner talk mutual TLS (`peer-tls`, certificates
//! from a throwaway CA): the ratio then says what a forward costs when the peer network is
//! not trusted (the local hit is the same in both).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use l7_sidecar::scheme::{self, Member};

use super::l7::servers::{free_ports, local};
use super::l7::wrk::{self, Load, LoadSpec};
use super::opts::{BenchOpts, Uses, lock};
use super::process::{BenchDir, CatchInterrupts, Group};

/// Where wrk, the owner and the origin run.
const LOAD_CPU: usize = 0;
/// Where the local sidecar and the forwarder run, side by side.
const PAIR_CPU: usize = 1;
/// Objects per size, all owned by the forwarder's peer.
const OBJECTS: usize = 64;
/// The scheme of the forwarder and its owner.
const SCHEME: &str = "ketama";
/// How long a process may take to listen.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(clap::Args)]
#[command(
    after_help = "--duration and --warmup are whole seconds [defaults: 5 and 2 s, --quick 1 \
                  and 1 s]; --concurrency is each wrk's connections [default: 16]."
)]
pub struct BenchForwardArgs {
    #[command(flatten)]
    pub opts: BenchOpts,
    /// Body sizes in bytes (--quick: the first only).
    #[arg(long, value_delimiter = ',', default_values_t = [1024u64, 16384, 131072, 1048576])]
    pub sizes: Vec<u64>,
    /// The forwarder and the owner over mutual TLS (`peer-tls`).
    #[arg(long)]
    pub peer_tls: bool,
}

/// One body size's paired measurement.
#[derive(Debug, serde::Serialize)]
struct Row {
    size: u64,
    local_requests: u64,
    forward_requests: u64,
    local_us_per_request: f64,
    forward_us_per_request: f64,
    /// Forward over local hit, CPU per request.
    ratio: f64,
}

pub fn run(root: &Path, args: BenchForwardArgs) -> Result<()> {
    let opts = &args.opts;
    opts.check(
        "forward",
        Uses {
            duration: true,
            warmup: true,
            concurrency: true,
        },
    )?;
    ensure!(
        !args.sizes.is_empty() && args.sizes.iter().all(|&s| s > 0),
        "--sizes must name sizes above 0"
    );
    let duration = opts.duration_s(5.0, 1.0).round().max(1.0) as u64;
    let warmup = opts.warmup_s(2.0, 1.0).round() as u64;
    let connections = opts.concurrency(16, 4);
    let sizes = &args.sizes[..opts.pick(args.sizes.len(), 1)];
    let _lock = lock("bench forward")?;
    let bins = crate::build::binaries(root, opts.profile())?;

    // Dropped in reverse: the processes, the temp directory, then the signal handlers.
    let _signals = CatchInterrupts::install();
    let temp = BenchDir::create()?;
    let dir = temp.path();
    let ports = free_ports(7)?;
    let origin_addr = local(ports[0]);
    let mut origin_cmd = Command::new(&bins.traffic);
    origin_cmd.args(["origin", "--listen", &origin_addr.to_string()]);
    let mut origin = Group::spawn("origin", LOAD_CPU, &origin_cmd, dir)?;
    origin.wait_listening(origin_addr, START_LIMIT)?;
    let origin_url = format!("http://{origin_addr}");
    // Both peers are on 127.0.0.1: one certificate for that address serves both.
    let peer_tls: Vec<String> = if args.peer_tls {
        let ca = dl7_testbed::tls::Ca::create(&dir.join("tls"))?;
        let cert = ca.issue_peer("peer", std::net::Ipv4Addr::LOCALHOST.into())?;
        vec![
            "--peer-tls".into(),
            "--peer-tls-cert".into(),
            format!("{}:{}", cert.cert.display(), cert.key.display()),
            "--peer-tls-ca".into(),
            ca.cert.display().to_string(),
        ]
    } else {
        Vec::new()
    };
    let sidecar = |name: &str,
                   cpu: usize,
                   listen: SocketAddr,
                   peer: SocketAddr,
                   members: &str,
                   extra: &[String]| {
        let mut cmd = Command::new(&bins.sidecar);
        cmd.args(["serve", "--listen", &listen.to_string()])
            .args(["--peer-listen", &peer.to_string(), "--self", name])
            .args(["--members", members, "--scheme", SCHEME])
            .args(["--origin", &origin_url, "--threads", "1"])
            .args(["--health-interval", "off", "--relay-cache-bytes", "0"])
            .args(extra);
        let mut group = Group::spawn(name, cpu, &cmd, dir)?;
        group.wait_listening(listen, START_LIMIT)?;
        Ok::<_, anyhow::Error>(group)
    };
    let (hit_addr, forward_addr) = (local(ports[1]), local(ports[3]));
    let alone = format!("hit={}", local(ports[2]));
    let pair = format!("fwd={},owner={}", local(ports[4]), local(ports[6]));
    let hit = sidecar("hit", PAIR_CPU, hit_addr, local(ports[2]), &alone, &[])?;
    let forwarder = sidecar(
        "fwd",
        PAIR_CPU,
        forward_addr,
        local(ports[4]),
        &pair,
        &peer_tls,
    )?;
    let _owner = sidecar(
        "owner",
        LOAD_CPU,
        local(ports[5]),
        local(ports[6]),
        &pair,
        &peer_tls,
    )?;

    let members = [Member::new("fwd", 1), Member::new("owner", 1)];
    let routing = scheme::build(SCHEME, &members)?;
    let mut rows = Vec::new();
    for &size in sizes {
        let paths: Vec<String> = (0..)
            .map(|i| format!("/obj/fwd-{i}?size={size}"))
            .filter(|p| routing.pick(p.as_bytes()) == 1)
            .take(OBJECTS)
            .collect();
        let runs = [
            dir.join(format!("hit-{size}")),
            dir.join(format!("fwd-{size}")),
        ];
        for run in &runs {
            std::fs::create_dir_all(run)?;
        }
        let script = wrk::write_paths_script(dir, &paths)?;
        let spec = LoadSpec {
            script: &script,
            connections,
            cpu: LOAD_CPU,
        };
        if !opts.json {
            eprintln!("bench forward: {size} B bodies");
        }
        // Fills both caches (the hit sidecar's and the owner's) and warms every process.
        for (addr, run) in [(hit_addr, &runs[0]), (forward_addr, &runs[1])] {
            wrk::run(&spec, addr, warmup.max(1), run).context("warm-up")?;
        }
        let before = (hit.cpu_seconds(), forwarder.cpu_seconds());
        let (local_load, forward_load) = std::thread::scope(|s| {
            let a = s.spawn(|| wrk::run(&spec, hit_addr, duration, &runs[0]));
            let b = s.spawn(|| wrk::run(&spec, forward_addr, duration, &runs[1]));
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<Load>>| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a wrk thread panicked"))?
            };
            Ok::<_, anyhow::Error>((join(a)?, join(b)?))
        })?;
        let cpu = (
            hit.cpu_seconds() - before.0,
            forwarder.cpu_seconds() - before.1,
        );
        for (what, load) in [("local hits", &local_load), ("forwards", &forward_load)] {
            ensure!(
                load.requests > 0 && load.bad_status == 0 && load.socket_errors == 0,
                "{what} at {size} B: {} requests, {} error statuses, {} socket errors",
                load.requests,
                load.bad_status,
                load.socket_errors
            );
        }
        let per = |cpu: f64, load: &Load| cpu / load.requests as f64 * 1e6;
        let (local_us, forward_us) = (per(cpu.0, &local_load), per(cpu.1, &forward_load));
        rows.push(Row {
            size,
            local_requests: local_load.requests,
            forward_requests: forward_load.requests,
            local_us_per_request: local_us,
            forward_us_per_request: forward_us,
            ratio: forward_us / local_us.max(1e-9),
        });
    }
    if opts.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print!("{}", table(&rows, duration, connections, args.peer_tls));
    }
    Ok(())
}

fn table(rows: &[Row], duration: u64, connections: usize, peer_tls: bool) -> String {
    let over = if peer_tls {
        ", forwarder and owner over mutual TLS"
    } else {
        ""
    };
    let mut out = format!(
        "forwarding pass vs local hit: both at once on CPU 1, each under wrk -t1 -c{connections} \
         for {duration} s on CPU 0 (with the owner and the origin{over})\n\
         {:>9}  {:>12}  {:>12}  {:>10}  {:>10}  {:>6}\n",
        "body B", "hit req", "forward req", "hit us/req", "fwd us/req", "ratio"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>9}  {:>12}  {:>12}  {:>10.1}  {:>10.1}  {:>5.2}x",
            r.size,
            r.local_requests,
            r.forward_requests,
            r.local_us_per_request,
            r.forward_us_per_request,
            r.ratio
        );
    }
    out
}
