//! `cargo xtask e2e`: dl7 checked on the real path (client -> XDP front -> any server's
//! sidecar -> the owner -> reply straight to the client) on the namespace testbed. Part of
//! `cargo xtask test`.
//!
//! One testbed (4 servers, carp, native XDP) runs the scenarios in order:
//! 1. requests from four client addresses succeed, and the front sees only VIP-bound frames
//!    (every one forwarded; replies never come back through it);
//! 2. exclusive placement: every object was fetched from the origin once and is stored on
//!    exactly one server (stored bytes = unique bytes);
//! 3. HTTPS through the VIP (port 443, every sidecar's `listen-tls`, a throwaway CA) with
//!    `curl --cacert`: TLS 1.2 and 1.3 from every client address, bodies intact; plain HTTP
//!    sent to the HTTPS port answered 400; chains of TLS 1.2 and TLS 1.3 reconnects from new
//!    sources, each offering the session before (`openssl s_client -sess_in` /
//!    `-sess_out`), all resumed, most on another server; the certificate renewed (new files, SIGHUP to every
//!    sidecar) while HTTPS requests on new connections go on: none fails, and new
//!    connections get the new certificate;
//!    3b. peer TLS (`peer-tls`, on this testbed): every forward so far went over mutual TLS
//!    between the sidecars (handshakes counted on both sides, none failed, connections
//!    reused); on a peer listener, plain HTTP and a TLS client without a certificate get
//!    nothing, a client with a cluster certificate gets an answer;
//! 4. `l4-ctl real drain`: an established keep-alive connection to the drained server keeps
//!    working, new connections avoid it;
//! 5. origin down: misses get 502 quickly, hits still 200, nothing hangs; origin back: misses
//!    succeed again;
//! 6. a sidecar killed under load: requests keep succeeding except those on the killed
//!    server's connections (counted), the front's health check drains it, restarted it comes
//!    back;
//! 7. a server removed from both tiers (l4-ctl real del + sidecar membership reload) during a
//!    workload: failures counted and reported, about 1/N of the objects change owner.
//!
//! Then a second testbed with maglev (plain peer connections) repeats scenario 2. Every
//! testbed is taken down at the end, also when a scenario fails.
//!
//! Scenarios that choose their clients' source ports (to pick the real the front sends them
//! to) take them from 20000-29999, below the kernel's ephemeral range (32768-60999): a port
//! that curl or openssl got from the kernel and left in TIME_WAIT would refuse the bind,
//! since their sockets do not set SO_REUSEADDR.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use dl7_traffic::{
    load::{self, LoadConfig, LoadReport, Workload},
    origin,
};
use l7_sidecar::scheme::{self, Member};

use crate::build::Profile;
use dl7_testbed::{Parts, Spec, Testbed, http_get, in_netns};

const NAME: &str = "dl7e2e";
const SERVERS: u16 = 4;
/// The workload's catalogue: small objects, so that runs are short.
const OBJECTS: usize = 400;
const MAX_SIZE: u64 = 32 << 10;

/// Runs every scenario; the testbed is removed whatever happens.
pub fn run(root: &std::path::Path) -> Result<()> {
    on_testbed(root, NAME, scenarios)
}

/// Runs `scenarios` with the test build's parts; testbed `name` is removed whatever happens.
pub(crate) fn on_testbed(
    root: &std::path::Path,
    name: &str,
    scenarios: impl FnOnce(&Parts) -> Result<()>,
) -> Result<()> {
    let parts = crate::build::testbed_parts(root, Profile::Test)?;
    let result = scenarios(&parts);
    dl7_testbed::down(name)?;
    result
}

fn up(parts: &Parts, scheme: &str, peer_tls: bool) -> Result<Testbed> {
    let spec = Spec {
        cache_bytes: 64 << 20,
        tls: true,
        peer_tls,
        ..Spec::new(NAME, SERVERS, scheme)
    };
    dl7_testbed::up(&spec, parts)
}

fn scenarios(parts: &Parts) -> Result<()> {
    let mut tb = up(parts, "carp", true)?;
    step(
        "1. requests through the VIP; replies bypass the front",
        || through_the_vip(&tb),
    )?;
    step("2. exclusive placement (carp)", || exclusive_placement(&tb))?;
    step("3. HTTPS through the VIP", || https(&tb))?;
    step("3b. mutual TLS between the sidecars", || peer_tls(&tb))?;
    step("4. drain keeps established connections", || drain(&tb))?;
    step("5. origin down and back", || origin_down(&mut tb))?;
    step("6. a sidecar killed under load", || sidecar_killed(&mut tb))?;
    step("7. a server removed from both tiers", || {
        server_removed(&tb)
    })?;
    dl7_testbed::down(NAME)?;
    let tb = up(parts, "maglev", false)?;
    step("2b. exclusive placement (maglev)", || {
        warm(&tb, 1500)?;
        exclusive_placement(&tb)
    })?;
    Ok(())
}

pub(crate) fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("e2e: {name}");
    let start = Instant::now();
    f().with_context(|| format!("e2e scenario {name}"))?;
    eprintln!("e2e: {name}: ok ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}

/// A closed-loop run of the synthetic workload from the client namespace.
pub(crate) fn load_config(tb: &Testbed, requests: u64, concurrency: usize) -> Result<LoadConfig> {
    let mut config = LoadConfig::new(tb.vip);
    config.workload = Workload::Synthetic {
        objects: OBJECTS,
        alpha: 0.8,
        seed: 7,
        max_size: MAX_SIZE,
        hot_share: 0.0,
    };
    config.requests = requests;
    config.concurrency = concurrency;
    config.duration = Duration::from_secs(60);
    config.timeout = Duration::from_secs(5);
    config.source_addrs = tb.client_addrs.iter().map(|&a| a.into()).collect();
    Ok(config)
}

pub(crate) fn run_load(tb: &Testbed, config: &LoadConfig) -> Result<LoadReport> {
    in_netns(&tb.client_ns, || load::run(config))?
}

pub(crate) fn warm(tb: &Testbed, requests: u64) -> Result<LoadReport> {
    // 32 connections: every server gets some (Maglev spreads them like random choices).
    let report = run_load(tb, &load_config(tb, requests, 32)?)?;
    ensure!(
        report.error_total == 0,
        "{} of {} requests failed: {:?}",
        report.error_total,
        report.requests,
        report.errors
    );
    Ok(report)
}

/// The front's counters as `l4-ctl stats --json` prints them.
pub(crate) fn front_stats(tb: &Testbed) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&tb.l4_ctl(&["stats", "--json"])?)?)
}

pub(crate) fn global(stats: &serde_json::Value, name: &str) -> u64 {
    stats["global"][name].as_u64().unwrap_or(0)
}

pub(crate) fn through_the_vip(tb: &Testbed) -> Result<()> {
    let before = front_stats(tb)?;
    let report = warm(tb, 3000)?;
    let after = front_stats(tb)?;
    let delta = |name| global(&after, name) - global(&before, name);
    let vip_packets = |s: &serde_json::Value| s["vips"][0]["packets"].as_u64().unwrap_or(0);
    let (tx, to_vip) = (delta("tx"), vip_packets(&after) - vip_packets(&before));
    ensure!(
        tx > 0 && tx == to_vip,
        "VIP frames {to_vip}, forwarded {tx}"
    );
    // Replies go from the servers to the clients directly: the front only sees the
    // daemon's own health-check traffic besides the VIP's frames.
    let other = delta("pass_not_vip");
    ensure!(
        other * 20 < tx,
        "{other} non-VIP frames reached the front during a workload of {tx} VIP frames"
    );
    let reals = after["vips"][0]["reals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let busy = reals
        .iter()
        .filter(|r| r["packets"].as_u64() > Some(0))
        .count();
    ensure!(
        busy == usize::from(SERVERS),
        "only {busy} of {SERVERS} servers got connections"
    );
    eprintln!(
        "e2e:   {} requests ok, {:.0} req/s; front: {tx} VIP frames forwarded, {other} others",
        report.ok, report.req_per_s
    );
    Ok(())
}

fn exclusive_placement(tb: &Testbed) -> Result<()> {
    let origin_addr = tb.origin.addr;
    let counts = in_netns(&tb.origin.ns, || origin::Remote(origin_addr).counts())??;
    let counts: BTreeMap<String, u64> = counts
        .into_iter()
        .filter(|(url, _)| url.starts_with("/obj/"))
        .collect();
    ensure!(!counts.is_empty(), "the origin served nothing");
    let refetched: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        refetched.is_empty(),
        "fetched more than once from the origin: {:?}",
        refetched.iter().take(5).collect::<Vec<_>>()
    );
    let unique_bytes: u64 = counts
        .keys()
        .map(|u| origin::requested_size(u).unwrap_or(0))
        .sum();
    let (mut objects, mut stored) = (0.0, 0.0);
    for m in tb.scrape_servers()? {
        objects += m.sum("dl7_l7_cache_objects", &[]);
        stored += m.sum("dl7_l7_cache_bytes", &[]);
    }
    ensure!(
        objects as usize == counts.len(),
        "{objects} objects stored over all servers for {} distinct objects",
        counts.len()
    );
    // Stored bytes include each response's head: allow that much above the bodies.
    let ratio = stored / unique_bytes as f64;
    ensure!(
        (0.99..1.25).contains(&ratio),
        "stored {stored} bytes for {unique_bytes} unique bytes (ratio {ratio:.3})"
    );
    eprintln!(
        "e2e:   {} objects, each fetched once and stored once; stored / unique = {ratio:.3}",
        counts.len()
    );
    Ok(())
}

/// A keep-alive HTTP/1.1 client connection from a chosen source address and port.
pub(crate) struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub(crate) fn connect(tb: &Testbed, src: SocketAddrV4) -> Result<Self> {
        let dst = tb.vip;
        let stream = in_netns(&tb.client_ns, || -> Result<TcpStream> {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::V4(src).into())?;
            socket.connect_timeout(&dst.into(), Duration::from_secs(2))?;
            let stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })??;
        Ok(KeepAlive {
            reader: BufReader::new(stream),
        })
    }

    /// One GET; the status. The connection stays open.
    pub(crate) fn get(&mut self, path: &str) -> Result<u16> {
        // One write: a request in several small segments waits on delayed ACKs.
        self.reader
            .get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: dl7\r\n\r\n").as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut self.reader, &mut body)?;
        Ok(status)
    }
}

/// The real `l4-ctl lookup` names for a new flow from `src`.
pub(crate) fn real_for(tb: &Testbed, src: SocketAddrV4) -> Result<String> {
    Ok(tb
        .l4_ctl(&["lookup", &tb.vip_service(), "--src", &src.to_string()])?
        .trim()
        .to_owned())
}

pub(crate) fn real_packets(tb: &Testbed, addr: &str) -> Result<u64> {
    let stats = front_stats(tb)?;
    stats["vips"][0]["reals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["address"].as_str() == Some(addr))
        .and_then(|r| r["packets"].as_u64())
        .with_context(|| format!("no real {addr} in the front's stats"))
}

pub(crate) fn client_addr(tb: &Testbed, i: usize) -> Result<std::net::Ipv4Addr> {
    Ok(tb.client_addrs[i % tb.client_addrs.len()])
}

fn drain(tb: &Testbed) -> Result<()> {
    drain_from(tb, SocketAddrV4::new(client_addr(tb, 0)?, 21000))
}

/// Drains the real a connection from `src` reaches: that established connection keeps
/// working, new connections avoid the real; its weight is restored afterwards.
pub(crate) fn drain_from(tb: &Testbed, src: SocketAddrV4) -> Result<()> {
    let drained = real_for(tb, src)?;
    let mut established = KeepAlive::connect(tb, src)?;
    ensure!(established.get("/obj/1?size=100")? == 200);
    let service = tb.vip_service();
    tb.l4_ctl(&["real", "drain", &service, &drained])?;
    let result = (|| -> Result<()> {
        // New connections avoid the drained server: its counter does not move while 60
        // new connections make a request each.
        let before = real_packets(tb, &drained)?;
        for port in 22000..22060u16 {
            let src = SocketAddrV4::new(client_addr(tb, usize::from(port))?, port);
            ensure!(real_for(tb, src)? != drained, "{src} would go to {drained}");
            let mut c = KeepAlive::connect(tb, src)?;
            ensure!(c.get(&format!("/obj/{}?size=200", port % 50))? == 200);
        }
        let moved = real_packets(tb, &drained)? - before;
        ensure!(
            moved == 0,
            "{moved} frames of new connections reached {drained}"
        );
        // The established connection still works.
        for i in 0..5 {
            ensure!(established.get(&format!("/obj/{i}?size=300"))? == 200);
        }
        ensure!(
            real_packets(tb, &drained)? > before,
            "the established flow moved"
        );
        Ok(())
    })();
    tb.l4_ctl(&["real", "weight", &service, &drained, "1"])?;
    result
}

/// Sends GETs until `deadline`; the statuses (0 for a connection that failed).
fn get_statuses(tb: &Testbed, paths: &[String], deadline: Duration) -> Result<Vec<u16>> {
    let vip = tb.vip;
    let started = Instant::now();
    let statuses = paths
        .iter()
        .map(|p| http_get(&tb.client_ns, vip, p).map_or(0, |(code, _)| code))
        .collect();
    ensure!(
        started.elapsed() < deadline,
        "{} requests took {:?}",
        paths.len(),
        started.elapsed()
    );
    Ok(statuses)
}

fn origin_down(tb: &mut Testbed) -> Result<()> {
    // Cached objects (scenario 1 fetched them) and objects nobody asked for yet.
    let hits: Vec<String> = (0..10).map(|i| format!("/obj/{i}?size=1000")).collect();
    ensure!(
        get_statuses(tb, &hits, Duration::from_secs(10))?
            .iter()
            .all(|&s| s == 200)
    );
    tb.kill_origin();
    let misses: Vec<String> = (0..10).map(|i| format!("/e2e/miss/{i}?size=100")).collect();
    let statuses = get_statuses(tb, &misses, Duration::from_secs(20))?;
    ensure!(
        statuses.iter().all(|&s| s == 502 || s == 504),
        "misses with the origin down got {statuses:?}"
    );
    let statuses = get_statuses(tb, &hits, Duration::from_secs(10))?;
    ensure!(
        statuses.iter().all(|&s| s == 200),
        "hits with the origin down got {statuses:?}"
    );
    tb.restart_origin()?;
    let statuses = get_statuses(tb, &misses, Duration::from_secs(10))?;
    ensure!(
        statuses.iter().all(|&s| s == 200),
        "misses after the origin came back got {statuses:?}"
    );
    Ok(())
}

/// Polls `real list --json` until `addr` is in `state` (bounded).
fn wait_state(tb: &Testbed, addr: &str, state: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&tb.l4_ctl(&["real", "list", &tb.vip_service(), "--json"])?)?;
        let now = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["address"].as_str() == Some(addr))
            .and_then(|r| r["state"].as_str().map(str::to_owned));
        if now.as_deref() == Some(state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("real {addr} is {now:?}, not {state}, after {limit:?}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a workload for `seconds` in the background while `during` acts (one second in);
/// the workload's report.
pub(crate) fn under_load(
    tb: &Testbed,
    seconds: u64,
    during: impl FnOnce() -> Result<()>,
) -> Result<LoadReport> {
    let mut config = load_config(tb, u64::MAX, 16)?;
    config.duration = Duration::from_secs(seconds);
    thread::scope(|scope| {
        let load = scope.spawn(|| run_load(tb, &config));
        thread::sleep(Duration::from_secs(1));
        let acted = during();
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
        acted?;
        Ok(report)
    })
}

fn sidecar_killed(tb: &mut Testbed) -> Result<()> {
    let victim = 1;
    let addr = tb.servers[victim].addr.to_string();
    let fall_limit = Duration::from_secs(20);
    let report = under_load(tb, 10, || {
        tb.signal_sidecar(victim, libc::SIGKILL);
        wait_state(tb, &addr, "down", fall_limit)
    })?;
    eprintln!(
        "e2e:   killed {} under load: {} of {} requests failed ({:?}); the front drained it",
        tb.servers[victim].name, report.error_total, report.requests, report.errors
    );
    ensure!(
        report.ok * 2 > report.requests,
        "most requests failed: {report:?}"
    );
    // With the server drained, everything succeeds (its objects fail over to the others).
    warm(tb, 800)?;
    tb.restart_sidecar(victim)?;
    wait_state(tb, &addr, "active", fall_limit)?;
    let before = real_packets(tb, &addr)?;
    warm(tb, 1500)?;
    ensure!(
        real_packets(tb, &addr)? > before,
        "the restarted server got no connections"
    );
    Ok(())
}

fn server_removed(tb: &Testbed) -> Result<()> {
    let gone = tb.servers.len() - 1;
    let keep: Vec<&str> = tb.servers[..gone].iter().map(|s| s.name.as_str()).collect();
    let report = under_load(tb, 4, || {
        tb.l4_ctl(&[
            "real",
            "del",
            &tb.vip_service(),
            &tb.servers[gone].addr.to_string(),
        ])?;
        tb.set_members(&keep)?;
        // In-flight requests on the removed server's connections finish within the drain.
        tb.signal_sidecar(gone, libc::SIGTERM);
        Ok(())
    })?;
    eprintln!(
        "e2e:   removed {} during a workload: {} of {} requests failed ({:?})",
        tb.servers[gone].name, report.error_total, report.requests, report.errors
    );
    ensure!(
        report.error_total * 20 <= report.requests,
        "more than 5 % of the requests failed: {report:?}"
    );
    // About 1/N of the objects change owner (those of the removed server).
    let all: Vec<Member> = tb.servers.iter().map(|s| Member::new(&s.name, 1)).collect();
    let before = scheme::build(&tb.scheme, &all)?;
    let after = scheme::build(&tb.scheme, &all[..gone])?;
    let moved = (0..OBJECTS)
        .filter(|i| {
            let key = format!("/obj/{i}");
            all[before.pick(key.as_bytes())].name != all[after.pick(key.as_bytes())].name
        })
        .count();
    let share = moved as f64 / OBJECTS as f64;
    ensure!(
        (0.5 / f64::from(SERVERS)..1.5 / f64::from(SERVERS)).contains(&share),
        "{:.1} % of the objects changed owner",
        share * 100.0
    );
    eprintln!(
        "e2e:   {:.1} % of the objects changed owner (1/N = {:.1} %)",
        share * 100.0,
        100.0 / f64::from(SERVERS)
    );
    Ok(())
}

/// `curl ARGS` from the client namespace, bound to client address `src`: its stdout.
fn curl(tb: &Testbed, src: std::net::Ipv4Addr, args: &[&str]) -> Result<String> {
    dl7_testbed::process::output(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &tb.client_ns,
                "curl",
                "-sS",
                "--max-time",
                "10",
            ])
            .args(["--interface", &src.to_string()])
            .args(args),
    )
}

fn https(tb: &Testbed) -> Result<()> {
    let (vip, ca) = match (tb.vip_tls, &tb.ca) {
        (Some(vip), Some(ca)) => (vip, ca.to_string_lossy().into_owned()),
        _ => bail!("the testbed has no HTTPS"),
    };
    let name = dl7_testbed::plan::TLS_NAME;
    let resolve = format!("{name}:{}:{}", vip.port(), vip.ip());
    let mut ok = 0;
    for (i, version) in ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"].iter().enumerate() {
        for c in 0..tb.client_addrs.len() {
            for n in 0..4 {
                let size = 1000 + 70_000 * n;
                let url = format!("https://{name}/obj/tls-{i}-{c}-{n}?size={size}");
                let mut args: Vec<&str> = version.split_whitespace().collect();
                args.extend(["--cacert", &ca, "--resolve", &resolve]);
                args.extend([
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download} %{ssl_verify_result}",
                ]);
                args.push(&url);
                let out = curl(tb, client_addr(tb, c)?, &args)?;
                ensure!(
                    out.trim() == format!("200 {size} 0"),
                    "{url} over {version}: {out:?} (want 200, {size} bytes, a verified certificate)"
                );
                ok += 1;
            }
        }
    }
    // Plain HTTP to the HTTPS port: 400 and a close, as nginx does.
    let plain = curl(
        tb,
        client_addr(tb, 0)?,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{vip}/obj/plain"),
        ],
    )?;
    ensure!(plain.trim() == "400", "plain HTTP to {vip}: {plain:?}");
    let handshakes: f64 = tb
        .scrape_servers()?
        .iter()
        .map(|m| m.sum("dl7_l7_tls_handshakes_total", &[("result", "ok")]))
        .sum();
    ensure!(
        handshakes >= ok as f64,
        "{ok} HTTPS requests, {handshakes} handshakes counted by the sidecars"
    );
    eprintln!(
        "e2e:   {ok} HTTPS requests through {vip} (TLS 1.2 and 1.3, every client address) verified and whole; plain HTTP to it got 400"
    );
    for (version, flag) in [("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")] {
        resumed_elsewhere(tb, &ca, version, flag)?;
    }
    certificate_renewed_under_load(tb, &ca, &resolve)
}

/// Mutual TLS between the sidecars: what scenarios 1 to 3 forwarded went over it, and a
/// peer listener answers only a client with a cluster certificate.
fn peer_tls(tb: &Testbed) -> Result<()> {
    let metrics = tb.scrape_servers()?;
    let count = |side: &str, result: &str| -> f64 {
        metrics
            .iter()
            .map(|m| {
                m.sum(
                    "dl7_l7_peer_tls_handshakes_total",
                    &[("side", side), ("result", result)],
                )
            })
            .sum()
    };
    let forwards: f64 = metrics
        .iter()
        .map(|m| m.sum("dl7_l7_peer_forwards_total", &[]))
        .sum();
    let (accepted, connected) = (count("accepted", "ok"), count("connected", "ok"));
    let failed = count("accepted", "error") + count("connected", "error");
    ensure!(
        accepted > 0.0 && connected > 0.0 && forwards > 0.0,
        "peer TLS handshakes: {accepted} accepted, {connected} connected, for {forwards} forwards"
    );
    ensure!(failed == 0.0, "{failed} peer TLS handshakes failed");
    // Pooled forwarding connections: those the sidecars opened, beside health checks.
    let pooled: f64 = metrics
        .iter()
        .zip(&tb.servers)
        .map(|(m, s)| {
            tb.servers
                .iter()
                .filter(|p| p.name != s.name)
                .map(|p| m.sum("dl7_l7_pool_connects_total", &[("pool", p.name.as_str())]))
                .sum::<f64>()
        })
        .sum();
    ensure!(
        pooled < forwards,
        "{pooled} peer connections for {forwards} forwards: connections are not reused"
    );
    let (from, to) = (&tb.servers[0], &tb.servers[1]);
    let dir = tb.run_dir.join("tls");
    let ca = tb.ca.as_ref().context("the testbed has no CA")?;
    let (cert, key) = (
        dir.join(format!("peer-{}.pem", from.name)),
        dir.join(format!("peer-{}.key", from.name)),
    );
    let url = format!("https://{}/healthz", to.peer);
    let ask = |args: &[&str]| -> Result<String> {
        dl7_testbed::process::output(
            std::process::Command::new("ip")
                .args(["netns", "exec", &from.ns, "curl", "-s", "--max-time", "5"])
                .args(["-o", "/dev/null", "-w", "%{http_code}"])
                .args(args),
        )
        .map(|out| out.trim().to_owned())
    };
    let plain = ask(&[&format!("http://{}/healthz", to.peer)]);
    ensure!(
        !matches!(&plain, Ok(code) if code != "000"),
        "plain HTTP to {}'s peer listener: {plain:?}",
        to.name
    );
    let ca = ca.to_string_lossy();
    let anonymous = ask(&["--cacert", &ca, &url]);
    ensure!(
        !matches!(&anonymous, Ok(code) if code != "000"),
        "TLS without a client certificate to {}'s peer listener: {anonymous:?}",
        to.name
    );
    let member = ask(&[
        "--cacert",
        &ca,
        "--cert",
        &cert.to_string_lossy(),
        "--key",
        &key.to_string_lossy(),
        &url,
    ])?;
    ensure!(
        member == "200",
        "{}'s certificate to {}'s peer listener: {member:?}",
        from.name,
        to.name
    );
    eprintln!(
        "e2e:   {forwards} forwards over mutual TLS: {connected} handshakes made, {accepted} \
         accepted (health checks included), {pooled} pooled peer connections, 0 failed; \
         plain HTTP and a certificate-less client refused on {}'s peer listener, {}'s \
         certificate answered",
        to.name, from.name
    );
    Ok(())
}

/// The VIP's certificate renewed (new file, SIGHUP to every sidecar) while HTTPS requests
/// on new connections keep coming: none fails, every sidecar counts a good reload, and the
/// new certificate is what a new connection gets.
fn certificate_renewed_under_load(tb: &Testbed, ca: &str, resolve: &str) -> Result<()> {
    let name = dl7_testbed::plan::TLS_NAME;
    let reloads = || -> Result<Vec<f64>> {
        Ok(tb
            .scrape_servers()?
            .iter()
            .map(|m| m.sum("dl7_l7_reloads_total", &[("result", "ok")]))
            .collect())
    };
    let before = reloads()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, failed, renewed) = thread::scope(|scope| -> Result<_> {
        let load = scope.spawn(|| -> Result<(usize, Vec<String>)> {
            let (mut sent, mut failed) = (0, Vec::new());
            // Bounded: at most 400 requests, and it stops once the reloads are done.
            while sent < 400 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let url = format!("https://{name}/obj/renew-{}?size=2000", sent % 20);
                let args = [
                    "--cacert",
                    ca,
                    "--resolve",
                    resolve,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ];
                match curl(tb, client_addr(tb, sent % 4)?, &args) {
                    Ok(code) if code.trim() == "200" => {}
                    Ok(code) => failed.push(format!("{url}: {code}")),
                    Err(e) => failed.push(format!("{url}: {e:#}")),
                }
                sent += 1;
            }
            Ok((sent, failed))
        });
        thread::sleep(Duration::from_millis(500));
        let renewed = tb.renew_tls_certificate();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reloaded = loop {
            match reloads() {
                Ok(now) if now.iter().zip(&before).all(|(n, b)| n > b) => break Ok(()),
                Ok(now) if Instant::now() > deadline => {
                    break Err(anyhow::anyhow!("good reloads {before:?} -> {now:?}"));
                }
                Ok(_) => thread::sleep(Duration::from_millis(100)),
                Err(e) => break Err(e),
            }
        };
        thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (sent, failed) = load
            .join()
            .map_err(|_| anyhow::anyhow!("the HTTPS load panicked"))??;
        reloaded?;
        Ok((sent, failed, renewed?))
    })?;
    ensure!(
        failed.is_empty(),
        "{} of {sent} HTTPS requests failed while the certificate was renewed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // A new connection gets the renewed certificate.
    let serial = |cmd: &str| -> Result<String> {
        let out = dl7_testbed::process::output(std::process::Command::new("ip").args([
            "netns",
            "exec",
            &tb.client_ns,
            "sh",
            "-c",
            cmd,
        ]))?;
        Ok(out.trim().to_owned())
    };
    let vip = tb.vip_tls.context("the testbed has no HTTPS")?;
    let served = serial(&format!(
        "openssl s_client -connect {vip} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    ))?;
    let file = serial(&format!(
        "openssl x509 -in {} -noout -serial",
        renewed.display()
    ))?;
    ensure!(
        !served.is_empty() && served == file,
        "a new connection got the certificate {served:?}, the renewed file is {file:?}"
    );
    eprintln!(
        "e2e:   the certificate renewed on every sidecar (SIGHUP) during {sent} HTTPS requests: 0 failed; new connections get it ({file})"
    );
    Ok(())
}

/// Reconnects through the VIP that each offer the session of the connection before, as a
/// browser does: every reconnect comes from a new source, so the front sends it to whichever
/// server that source hashes to, and every one must resume, on another server as on the
/// same, since every sidecar opens the tickets with the cluster's shared ticket key
/// (`tls-ticket-key`).
const RECONNECTS: u16 = 16;

fn resumed_elsewhere(tb: &Testbed, ca: &str, version: &str, flag: &str) -> Result<()> {
    let vip = tb.vip_tls.context("the testbed has no HTTPS")?;
    let service = format!("{vip}/tcp");
    // One file: each connection offers it and saves its own session over it (a resumed TLS
    // 1.2 session is not written again, and then the file keeps the session it resumed).
    let session = tb.run_dir.join(format!("tls/session-{version}"));
    let session = session.to_string_lossy().into_owned();
    let s_client = |src: SocketAddrV4, sess: &[&str]| -> Result<String> {
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &tb.client_ns,
                "timeout",
                "10",
                "openssl",
                "s_client",
            ])
            .args(["-connect", &vip.to_string(), "-bind", &src.to_string()])
            .args([
                "-servername",
                dl7_testbed::plan::TLS_NAME,
                "-CAfile",
                ca,
                flag,
            ])
            .args(["-verify_return_error", "-ign_eof"])
            .args(sess)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // One request, so that the session's tickets (sent after a TLS 1.3 handshake) and the
        // response are read before the server closes.
        std::io::Write::write_all(
            child.stdin.as_mut().context("s_client's stdin")?,
            b"GET /obj/resume?size=100 HTTP/1.1\r\nHost: dl7.test\r\nConnection: close\r\n\r\n",
        )?;
        let out = child.wait_with_output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let resumptions = || -> Result<f64> {
        Ok(tb
            .scrape_servers()?
            .iter()
            .map(|m| m.sum("dl7_l7_tls_resumptions_total", &[]))
            .sum())
    };
    let before = resumptions()?;
    let base = 25_000 + 100 * u16::from(flag == "-tls1_3");
    let (mut previous, mut moved, mut resumed) = (String::new(), 0, 0);
    for i in 0..=RECONNECTS {
        let src = SocketAddrV4::new(client_addr(tb, usize::from(i) % 4)?, base + i);
        let real = tb.l4_ctl(&["lookup", &service, "--src", &src.to_string()])?;
        let real = real.trim().to_owned();
        let args: Vec<&str> = if i == 0 {
            vec!["-sess_out", &session]
        } else {
            vec!["-sess_in", &session, "-sess_out", &session]
        };
        let out = s_client(src, &args)?;
        ensure!(
            out.contains("HTTP/1.1 200"),
            "{version} from {src} to {real}: {out}"
        );
        if i == 0 {
            ensure!(
                out.contains(&format!("New, {version}")),
                "the first {version} connection: {out}"
            );
        } else {
            ensure!(
                out.contains(&format!("Reused, {version}")),
                "reconnect {i} over {version} from {src}: the session from {previous} offered to {real} was not resumed: {out}"
            );
            resumed += 1;
            moved += u32::from(real != previous);
        }
        previous = real;
    }
    ensure!(moved > 0, "no {version} reconnect went to another server");
    let counted = resumptions()? - before;
    ensure!(
        counted >= f64::from(resumed),
        "{resumed} {version} resumptions, the sidecars counted {counted}"
    );
    eprintln!(
        "e2e:   {version}: {resumed} of {RECONNECTS} reconnects through the VIP resumed the session of the connection before, {moved} of them on another server (shared ticket key)"
    );
    Ok(())
}
