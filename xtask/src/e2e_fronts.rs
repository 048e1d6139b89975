//! `cargo xtask e2e`, several fronts: two fronts announce the VIP by BGP (BIRD) to a router
//! that spreads the clients' flows over them by ECMP, and the sidecars follow the fronts'
//! membership (`members-from`). Part of `cargo xtask test`. Scenarios, in order:
//! 1. both fronts carry flows, their BGP sessions are up, `l4-ctl dump` is identical on both
//!    and so is every VIP's Maglev table (by slot, as real addresses), and `l4-ctl lookup`
//!    agrees for every sampled client;
//! 2. a front killed (SIGKILL of its daemon, then its program detached) under a steady load
//!    and with long-lived keep-alive connections on both fronts: the router drops it, every
//!    established connection keeps working (its packets now reach the other front, whose
//!    table names the same real), and the failed new requests and the time to converge are
//!    reported;
//! 3. the front back (`l4-ctl load` + its daemon): it is announced again, the router uses it,
//!    and the established connections still keep their reals;
//! 4. one membership for both tiers: `l4-ctl real del` of a server on every front takes it
//!    out of every sidecar's ring, `real add` brings it back under load with 0 failed requests
//!    and it then serves the keys the scheme gives it, `real drain` takes it out again, and a
//!    failing health check (its health port filtered) marks it down in both tiers until it
//!    passes again.
//!
//! The testbed is removed at the end, also when a scenario fails.

use std::{
    net::SocketAddrV4,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use dl7_testbed::{Parts, Spec, Testbed};
use l7_sidecar::scheme::{self, Member};

use crate::e2e::{self, KeepAlive, client_addr, step};

const NAME: &str = "dl7fr";
const SERVERS: u16 = 4;
const FRONTS: u16 = 2;
/// Long-lived keep-alive connections held across a front's failure and return.
const KEEPALIVES: usize = 24;
/// Bound on waiting for the router, the fronts or the sidecars to notice a change.
const CONVERGE: Duration = Duration::from_secs(10);
/// Bound on a health check marking a real down or up (dl7.toml: every 2 s, fall 3, rise 2).
const HEALTH: Duration = Duration::from_secs(20);

/// Runs every scenario; the testbed is removed whatever happens.
pub fn run(root: &std::path::Path) -> Result<()> {
    e2e::on_testbed(root, NAME, scenarios)
}

fn scenarios(parts: &Parts) -> Result<()> {
    let spec = Spec {
        cache_bytes: 64 << 20,
        fronts: FRONTS,
        ..Spec::new(NAME, SERVERS, "carp")
    };
    let mut tb = dl7_testbed::up(&spec, parts)?;
    wait_members(&tb, SERVERS as usize)?;
    step("F1. two fronts with identical tables", || identical(&tb))?;
    let mut conns = keepalives(&tb)?;
    step("F2. a front killed under load", || {
        front_killed(&tb, &mut conns)
    })?;
    step("F3. the front back", || front_back(&mut tb, &mut conns))?;
    drop(conns);
    step("F4. one membership for both tiers", || membership(&tb))?;
    Ok(())
}

/// `l4-ctl status --json` of front `i`.
fn status(tb: &Testbed, i: usize) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &tb.l4_ctl_on(i, &["status", "--json"])?,
    )?)
}

/// Frames front `i` sent to the VIP's reals.
fn front_packets(tb: &Testbed, i: usize) -> Result<u64> {
    let stats: serde_json::Value = serde_json::from_str(&tb.l4_ctl_on(i, &["stats", "--json"])?)?;
    Ok(stats["vips"][0]["packets"].as_u64().unwrap_or(0))
}

/// Frames the fronts sent to the VIP's reals, per front.
fn vip_packets(tb: &Testbed) -> Result<Vec<u64>> {
    (0..usize::from(FRONTS))
        .map(|i| front_packets(tb, i))
        .collect()
}

fn identical(tb: &Testbed) -> Result<()> {
    e2e::warm(tb, 2000)?;
    let packets = vip_packets(tb)?;
    ensure!(
        packets.iter().all(|&p| p > 0),
        "the router sent flows to only some fronts: {packets:?}"
    );
    let (route, hops) = tb.router_route()?;
    ensure!(hops == 2, "the router's route: {route}");
    let dumps: Vec<String> = (0..usize::from(FRONTS))
        .map(|i| tb.l4_ctl_on(i, &["dump"]))
        .collect::<Result<_>>()?;
    ensure!(
        dumps[0] == dumps[1],
        "l4-ctl dump differs:\n{}\n{}",
        dumps[0],
        dumps[1]
    );
    let digests: Vec<serde_json::Value> = (0..usize::from(FRONTS))
        .map(|i| Ok(status(tb, i)?["maglev_digests"].clone()))
        .collect::<Result<_>>()?;
    ensure!(
        digests[0] == digests[1] && digests[0][tb.vip_service()].is_string(),
        "Maglev tables differ: {digests:?}"
    );
    let vip = tb.vip_service();
    for n in 0..64u16 {
        let src = format!(
            "{}:{}",
            client_addr(tb, usize::from(n) % 4)?,
            20000 + n * 97
        );
        let a = tb.l4_ctl_on(0, &["lookup", &vip, "--src", &src])?;
        let b = tb.l4_ctl_on(1, &["lookup", &vip, "--src", &src])?;
        ensure!(
            a == b,
            "a flow from {src}: front 1 says {a}, front 2 says {b}"
        );
    }
    for f in tb.fronts() {
        let m = dl7_testbed::metrics::scrape_in(&f.ns, f.metrics)?;
        ensure!(
            m.sum("dl7_l4_bgp_session_up", &[("protocol", "router1")]) == 1.0
                && m.sum("dl7_l4_announced_addresses", &[]) == 1.0,
            "{}: BGP session or announcement down",
            f.role
        );
    }
    eprintln!(
        "e2e:   fronts' VIP frames {packets:?}; Maglev digest {} on both; 64 lookups agree",
        digests[0][tb.vip_service()]
    );
    Ok(())
}

/// Keep-alive connections from every client address, each with one request answered.
fn keepalives(tb: &Testbed) -> Result<Vec<KeepAlive>> {
    (0..KEEPALIVES)
        .map(|i| {
            let src = SocketAddrV4::new(client_addr(tb, i % 4)?, 0);
            let mut c = KeepAlive::connect(tb, src)?;
            let code = c.get(&format!("/obj/ka-{i}?size=512"))?;
            ensure!(code == 200, "keep-alive connection {i}: {code}");
            Ok(c)
        })
        .collect()
}

/// Requests on every keep-alive connection, round after round, until `stop`: the first
/// failure (connection index and error) ends it.
fn exercise(conns: &mut [KeepAlive], stop: &AtomicBool, rounds: &AtomicU64) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        for (i, c) in conns.iter_mut().enumerate() {
            let code = c
                .get(&format!("/obj/ka-{i}?size=512"))
                .with_context(|| format!("established keep-alive connection {i} broke"))?;
            ensure!(code == 200, "established keep-alive connection {i}: {code}");
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `act` while a workload and the keep-alive connections run; the workload's report,
/// and the keep-alive rounds completed.
fn with_traffic(
    tb: &Testbed,
    conns: &mut [KeepAlive],
    seconds: u64,
    act: impl FnOnce() -> Result<Duration>,
) -> Result<(dl7_traffic::load::LoadReport, u64, Duration)> {
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let mut config = e2e::load_config(tb, u64::MAX, 16)?;
    config.duration = Duration::from_secs(seconds);
    thread::scope(|scope| {
        let kept = scope.spawn(|| exercise(conns, &stop, &rounds));
        let load = scope.spawn(|| e2e::run_load(tb, &config));
        thread::sleep(Duration::from_secs(1));
        let acted = act();
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
        stop.store(true, Ordering::Relaxed);
        let kept = kept
            .join()
            .map_err(|_| anyhow::anyhow!("the keep-alive thread panicked"))?;
        let took = acted?;
        kept?;
        Ok((report?, rounds.load(Ordering::Relaxed), took))
    })
}

/// Waits until the router reaches the VIP through `paths` fronts; the time since `since`.
fn converge(tb: &Testbed, paths: usize, since: Instant) -> Result<Duration> {
    tb.wait_router_paths(paths)?;
    Ok(since.elapsed())
}

fn front_killed(tb: &Testbed, conns: &mut [KeepAlive]) -> Result<()> {
    let before = front_packets(tb, 1)?;
    let (report, rounds, took) = with_traffic(tb, conns, 6, || {
        let killed = Instant::now();
        tb.kill_front(0)?;
        converge(tb, 1, killed)
    })?;
    let after = front_packets(tb, 1)?;
    ensure!(rounds > 0, "no keep-alive round completed");
    eprintln!(
        "e2e:   front killed: the router left it after {:.0} ms; {KEEPALIVES} established connections, {rounds} rounds, 0 broken; new requests: {} of {} failed ({:?})",
        took.as_secs_f64() * 1000.0,
        report.error_total,
        report.requests,
        report.errors
    );
    ensure!(
        after > before,
        "the surviving front carried nothing: {before} -> {after}"
    );
    ensure!(
        report.ok * 2 > report.requests,
        "most new requests failed: {report:?}"
    );
    Ok(())
}

fn front_back(tb: &mut Testbed, conns: &mut [KeepAlive]) -> Result<()> {
    let restarted = Instant::now();
    tb.restart_front(0)?;
    let took = converge(tb, 2, restarted)?;
    let before = vip_packets(tb)?;
    let tb = &*tb;
    let (report, rounds, _) = with_traffic(tb, conns, 3, || Ok(Duration::ZERO))?;
    let after = vip_packets(tb)?;
    ensure!(
        after[0] > before[0],
        "the returned front got no frames: {before:?} -> {after:?}"
    );
    ensure!(
        report.error_total == 0,
        "{} of {} requests failed after the front returned: {:?}",
        report.error_total,
        report.requests,
        report.errors
    );
    eprintln!(
        "e2e:   front back: announced and used after {:.0} ms; {rounds} more keep-alive rounds, 0 broken; {} requests ok",
        took.as_secs_f64() * 1000.0,
        report.ok
    );
    Ok(())
}

/// Waits until every sidecar's ring has `n` members (from the fronts).
fn wait_members(tb: &Testbed, n: usize) -> Result<Duration> {
    tb.wait_sidecar_members(n, CONVERGE)
}

/// Waits until every sidecar reports member `peer` down by the fronts (`down`) or not.
fn wait_front_down(tb: &Testbed, peer: &str, down: bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let flags: Vec<f64> = tb
            .scrape_servers()?
            .iter()
            .map(|m| m.sum("dl7_l7_peer_front_down", &[("peer", peer)]))
            .collect();
        if flags.iter().all(|&f| f == f64::from(u8::from(down))) {
            return Ok(start.elapsed());
        }
        ensure!(
            start.elapsed() < HEALTH,
            "the sidecars' down flags for {peer}: {flags:?} after {HEALTH:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Requests the sidecar of server `i` answered as the owner.
fn served_locally(tb: &Testbed, i: usize) -> Result<f64> {
    let s = &tb.servers[i];
    let m = dl7_testbed::metrics::scrape_in(&s.ns, s.metrics)?;
    Ok(m.sum("dl7_l7_requests_total", &[("route", "local")]))
}

/// `count` URLs of objects the scheme gives to server `target` when the ring holds every
/// server (named by address, as the sidecars following a front name them), fresh ones each
/// call through `tag`.
fn owned_by(tb: &Testbed, target: usize, count: usize, tag: &str) -> Result<Vec<String>> {
    let members: Vec<Member> = tb
        .servers
        .iter()
        .map(|s| Member::new(s.addr.to_string(), 1))
        .collect();
    let ring = scheme::build(&tb.scheme, &members)?;
    let urls: Vec<String> = (0..100_000)
        .map(|i| format!("/obj/{tag}-{i}?size=256"))
        .filter(|u| ring.pick(u.as_bytes()) == target)
        .take(count)
        .collect();
    ensure!(
        urls.len() == count,
        "too few keys for {}",
        tb.servers[target].name
    );
    Ok(urls)
}

/// GETs every URL through the VIP, on fresh connections from every client address; the
/// statuses that were not 200.
fn get_all(tb: &Testbed, urls: &[String]) -> Result<Vec<(String, u16)>> {
    let mut failed = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let src = SocketAddrV4::new(client_addr(tb, i % 4)?, 0);
        let code = KeepAlive::connect(tb, src)?.get(url)?;
        if code != 200 {
            failed.push((url.clone(), code));
        }
    }
    Ok(failed)
}

fn membership(tb: &Testbed) -> Result<()> {
    let target = tb.servers.len() - 1;
    let addr = tb.servers[target].addr.to_string();
    let vip = tb.vip_service();
    tb.l4_ctl_all(&["real", "del", &vip, &addr])?;
    let took = wait_members(tb, SERVERS as usize - 1)?;
    eprintln!(
        "e2e:   real del on every front: out of every sidecar's ring in {:.1} s",
        took.as_secs_f64()
    );

    // Added back under load: no request fails, and it serves the keys it owns again.
    let mut joined = Duration::ZERO;
    let report = e2e::under_load(tb, 5, || {
        tb.l4_ctl_all(&["real", "add", &vip, &addr])?;
        joined = wait_members(tb, SERVERS as usize)?;
        Ok(())
    })?;
    ensure!(
        report.error_total == 0,
        "{} of {} requests failed while {addr} joined: {:?}",
        report.error_total,
        report.requests,
        report.errors
    );
    let urls = owned_by(tb, target, 24, "join")?;
    let before = served_locally(tb, target)?;
    let failed = get_all(tb, &urls)?;
    ensure!(failed.is_empty(), "requests failed: {failed:?}");
    let served = served_locally(tb, target)? - before;
    ensure!(
        served >= urls.len() as f64,
        "{addr} served {served} of the {} requests for keys it owns",
        urls.len()
    );
    eprintln!(
        "e2e:   real add on every front: in every sidecar's ring in {:.1} s, {} requests during it, 0 failed; it serves its keys",
        joined.as_secs_f64(),
        report.requests
    );

    // Drained on every front: out of both tiers, no request fails.
    let report = e2e::under_load(tb, 4, || {
        tb.l4_ctl_all(&["real", "drain", &vip, &addr])?;
        wait_members(tb, SERVERS as usize - 1).map(drop)
    })?;
    ensure!(
        report.error_total == 0,
        "{} of {} requests failed while {addr} was drained: {:?}",
        report.error_total,
        report.requests,
        report.errors
    );
    tb.l4_ctl_all(&["real", "weight", &vip, &addr, "1"])?;
    wait_members(tb, SERVERS as usize)?;

    // A failing health check (the fronts' probes of its health port dropped): down on the
    // fronts, skipped by every sidecar, its keys answered by their next candidates.
    let peer = addr.clone();
    let filter = HealthFilter::add(tb, target)?;
    let down_after = wait_front_down(tb, &peer, true)?;
    let urls = owned_by(tb, target, 16, "down")?;
    let before = served_locally(tb, target)?;
    let failed = get_all(tb, &urls)?;
    ensure!(
        failed.is_empty(),
        "requests failed while {addr} was down: {failed:?}"
    );
    let served = served_locally(tb, target)? - before;
    // Only the requests whose connection the front gave it before the flag are its own.
    ensure!(
        served == 0.0,
        "{addr}, down on the fronts, still served {served} requests as the owner"
    );
    drop(filter);
    let up_after = wait_front_down(tb, &peer, false)?;
    eprintln!(
        "e2e:   health check failing: down in both tiers after {:.1} s, its keys served by the next candidates; passing again: back after {:.1} s",
        down_after.as_secs_f64(),
        up_after.as_secs_f64()
    );
    Ok(())
}

/// An nftables table in server `i`'s namespace that drops the fronts' health probes (TCP to
/// the sidecar's health port); removed on drop.
struct HealthFilter {
    ns: String,
}

impl HealthFilter {
    fn add(tb: &Testbed, i: usize) -> Result<Self> {
        let s = &tb.servers[i];
        let fronts: Vec<String> = tb.fronts().map(|f| f.addr.to_string()).collect();
        let rules = format!(
            "table inet dl7e2e {{\n  chain input {{\n    type filter hook input priority 0;\n    ip saddr {{ {} }} tcp dport {} drop\n  }}\n}}\n",
            fronts.join(", "),
            s.metrics.port()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &s.ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        std::io::Write::write_all(
            child.stdin.as_mut().context("nft's stdin")?,
            rules.as_bytes(),
        )?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self { ns: s.ns.clone() })
    }
}

impl Drop for HealthFilter {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "nft", "delete", "table", "inet", "dl7e2e",
            ])
            .output();
    }
}
