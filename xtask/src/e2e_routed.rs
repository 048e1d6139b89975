//! `cargo xtask e2e`, routed reals: L3 direct server return on a testbed whose last two of
//! four servers sit in a second subnet behind a router, reached by the front with GUE and
//! decapsulating with `l4-ctl decap` (native XDP), as `deploy/real-server-setup.sh --decap`
//! sets them up. Part of `cargo xtask test`. Scenarios, in order:
//! 1. requests through the VIP reach both kinds of reals; every frame the front sent a routed
//!    real was decapsulated there (none malformed); replies bypass the front;
//! 2. an ICMP "fragmentation needed" about a VIP flow (as a router on the client's path
//!    sends it) reaches the real that holds the flow, routed or not, and no other;
//! 3. `l4-ctl real drain` of a routed real keeps its established connection and sends new
//!    ones elsewhere; `real del` removes it, `real add --encap gue` brings it back;
//! 4. the routed reals switched to IPIP with `l4-ctl apply`: an established connection keeps
//!    its real, and its frames now arrive as IPIP;
//! 5. the decapsulators moved to tc ingress (`l4-ctl decap attach --mode tc`): scenario 1's
//!    checks again (GRO-merged packets reach tc, unlike XDP).
//!
//! The testbed is removed at the end, also when a scenario fails.

use std::{
    net::SocketAddrV4,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use dl7_testbed::{Encap, Parts, Spec, Testbed, in_netns};

use crate::e2e::{self, KeepAlive, client_addr, front_stats, global, real_for, step};

const NAME: &str = "dl7l3";
const SERVERS: u16 = 4;
const ROUTED: u16 = 2;

/// Runs every scenario; the testbed is removed whatever happens.
pub fn run(root: &std::path::Path) -> Result<()> {
    e2e::on_testbed(root, NAME, scenarios)
}

fn scenarios(parts: &Parts) -> Result<()> {
    let spec = Spec {
        cache_bytes: 64 << 20,
        l3_servers: ROUTED,
        encap: Encap::Gue,
        ..Spec::new(NAME, SERVERS, "carp")
    };
    let tb = dl7_testbed::up(&spec, parts)?;
    step("R1. both kinds of reals through the VIP (GUE)", || {
        both_kinds(&tb)
    })?;
    step(
        "R2. ICMP fragmentation needed reaches the flow's real",
        || icmp_to_the_flows_real(&tb),
    )?;
    step("R3. drain and removal of a routed real", || {
        drain_and_remove(&tb)
    })?;
    step("R4. the routed reals switched to IPIP live", || {
        switch_to_ipip(&tb)
    })?;
    step("R5. the decapsulators at tc ingress instead of XDP", || {
        decap_at_tc(&tb)
    })?;
    Ok(())
}

/// `l4-ctl decap ARGS` on routed server `s`, with its pin directory; its stdout.
fn decap(tb: &Testbed, s: &dl7_testbed::plan::Server, args: &[&str]) -> Result<String> {
    let pins = s
        .decap_pin_dir
        .as_ref()
        .context("a routed server has decap pins")?;
    dl7_testbed::process::output(
        dl7_testbed::process::l4_ctl_command(&tb.parts.l4_ctl, Some(&s.ns), None)
            .arg("decap")
            .arg("--decap-pin-dir")
            .arg(pins)
            .args(args),
    )
}

/// The routed servers' decapsulator counters: (decapsulated, malformed) summed.
fn decap_counters(tb: &Testbed) -> Result<(u64, u64)> {
    let (mut decapsulated, mut malformed) = (0, 0);
    for s in tb.servers.iter().filter(|s| s.encap.is_some()) {
        let status: serde_json::Value =
            serde_json::from_str(&decap(tb, s, &["status", "--json"])?)?;
        decapsulated += status["counters"]["decapsulated"].as_u64().unwrap_or(0);
        malformed += status["counters"]["malformed"].as_u64().unwrap_or(0);
    }
    Ok((decapsulated, malformed))
}

/// The front's frames to the routed reals, from its per-real counters.
fn routed_real_packets(tb: &Testbed) -> Result<u64> {
    let stats = front_stats(tb)?;
    let routed: Vec<String> = tb
        .servers
        .iter()
        .filter(|s| s.encap.is_some())
        .map(|s| s.addr.to_string())
        .collect();
    Ok(stats["vips"][0]["reals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["address"]
                .as_str()
                .is_some_and(|a| routed.iter().any(|x| x == a))
        })
        .filter_map(|r| r["packets"].as_u64())
        .sum())
}

fn both_kinds(tb: &Testbed) -> Result<()> {
    let (decap_before, _) = decap_counters(tb)?;
    let sent_before = routed_real_packets(tb)?;
    let encapsulated_before = global(&front_stats(tb)?, "encapsulated");
    e2e::through_the_vip(tb)?;
    let (decap_after, malformed) = decap_counters(tb)?;
    let sent = routed_real_packets(tb)? - sent_before;
    let encapsulated = global(&front_stats(tb)?, "encapsulated") - encapsulated_before;
    ensure!(sent > 0, "the routed reals got no frames");
    ensure!(
        encapsulated == sent,
        "the front encapsulated {encapsulated} frames but sent {sent} to routed reals"
    );
    ensure!(
        decap_after - decap_before == sent,
        "the routed reals decapsulated {} of the {sent} frames the front sent them",
        decap_after - decap_before
    );
    ensure!(
        malformed == 0,
        "{malformed} malformed frames at the routed reals"
    );
    eprintln!("e2e:   {sent} frames to routed reals, each decapsulated once");
    Ok(())
}

/// A source port from which a new connection reaches a real matching `want`.
fn source_for(tb: &Testbed, want: impl Fn(&str) -> bool) -> Result<SocketAddrV4> {
    for port in 23000..23200u16 {
        let src = SocketAddrV4::new(client_addr(tb, usize::from(port))?, port);
        if want(&real_for(tb, src)?) {
            return Ok(src);
        }
    }
    anyhow::bail!("no source port in 23000..23200 maps to the wanted real")
}

fn routed(addr: &str) -> bool {
    addr.starts_with("10.215.")
}

/// `Icmp: ... InDestUnreachs` of a namespace, from /proc/net/snmp.
fn dest_unreachs(ns: &str) -> Result<u64> {
    let out = dl7_testbed::process::output(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "cat",
        "/proc/net/snmp",
    ]))?;
    let mut icmp = out.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next(), icmp.next());
    let (names, values) = names
        .zip(values)
        .context("no Icmp lines in /proc/net/snmp")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDestUnreachs")
        .and_then(|(_, v)| v.parse().ok())
        .context("no InDestUnreachs in /proc/net/snmp")
}

/// Sends, from the client's namespace, the ICMP "fragmentation needed" (next-hop MTU 1400) a
/// router would send the VIP about a segment the VIP sent to `client`.
fn send_frag_needed(tb: &Testbed, client: SocketAddrV4) -> Result<()> {
    let vip = match tb.vip {
        std::net::SocketAddr::V4(v) => v,
        std::net::SocketAddr::V6(_) => anyhow::bail!("the testbed's VIP is IPv4"),
    };
    let message = dl7_testbed::packet::frag_needed(vip, client, 1, 1400);
    let to = std::net::SocketAddr::from((*vip.ip(), 0));
    in_netns(&tb.client_ns, || -> Result<()> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        )?;
        socket.send_to(&message, &to.into())?;
        Ok(())
    })?
}

fn icmp_to_the_flows_real(tb: &Testbed) -> Result<()> {
    for (kind, want) in [
        ("routed", routed as fn(&str) -> bool),
        ("layer-2", |a: &str| !routed(a)),
    ] {
        let src = source_for(tb, want)?;
        let real = real_for(tb, src)?;
        let mut conn = KeepAlive::connect(tb, src)?;
        ensure!(conn.get("/obj/icmp?size=100")? == 200);
        let before: Vec<u64> = tb
            .servers
            .iter()
            .map(|s| dest_unreachs(&s.ns))
            .collect::<Result<_>>()?;
        let icmp_before = global(&front_stats(tb)?, "icmp_to_real");
        send_frag_needed(tb, src)?;
        let deadline = Instant::now() + Duration::from_secs(3);
        let target = tb
            .servers
            .iter()
            .position(|s| s.addr.to_string() == real)
            .with_context(|| format!("no server {real}"))?;
        loop {
            let now: Vec<u64> = tb
                .servers
                .iter()
                .map(|s| dest_unreachs(&s.ns))
                .collect::<Result<_>>()?;
            let got: Vec<u64> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
            if got[target] == 1 {
                let others: u64 = got.iter().sum::<u64>() - 1;
                ensure!(others == 0, "other reals got the ICMP error too: {got:?}");
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the {kind} real {real} did not get the ICMP error (per real: {got:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let icmp = global(&front_stats(tb)?, "icmp_to_real") - icmp_before;
        ensure!(
            icmp == 1,
            "the front counted {icmp} ICMP errors sent to reals"
        );
        ensure!(
            conn.get("/obj/icmp?size=100")? == 200,
            "the connection broke"
        );
        eprintln!("e2e:   fragmentation needed for {src} reached its {kind} real {real} only");
    }
    Ok(())
}

fn drain_and_remove(tb: &Testbed) -> Result<()> {
    let src = source_for(tb, routed)?;
    e2e::drain_from(tb, src)?;
    let real = real_for(tb, src)?;
    let service = tb.vip_service();
    tb.l4_ctl(&["real", "del", &service, &real])?;
    let result = (|| -> Result<()> {
        for port in 24000..24020u16 {
            let src = SocketAddrV4::new(client_addr(tb, usize::from(port))?, port);
            ensure!(
                real_for(tb, src)? != real,
                "{src} would go to the removed {real}"
            );
            let mut c = KeepAlive::connect(tb, src)?;
            ensure!(c.get(&format!("/obj/{}?size=200", port % 50))? == 200);
        }
        Ok(())
    })();
    tb.l4_ctl(&["real", "add", &service, &real, "--encap", "gue"])?;
    result?;
    ensure!(
        real_for(tb, src)? == real,
        "after `real add` the flow from {src} does not map to {real} again"
    );
    let mut c = KeepAlive::connect(tb, src)?;
    ensure!(
        c.get("/obj/back?size=100")? == 200,
        "the re-added real does not answer"
    );
    eprintln!("e2e:   {real} drained, removed and added back with --encap gue");
    Ok(())
}

fn switch_to_ipip(tb: &Testbed) -> Result<()> {
    let src = source_for(tb, routed)?;
    let real = real_for(tb, src)?;
    let mut established = KeepAlive::connect(tb, src)?;
    ensure!(established.get("/obj/switch?size=100")? == 200);
    let config = tb.run_dir.join("dl7.toml");
    let text = std::fs::read_to_string(&config)?;
    ensure!(
        text.contains("encap = \"gue\""),
        "{} names no GUE real",
        config.display()
    );
    let ipip = tb.run_dir.join("dl7-ipip.toml");
    std::fs::write(&ipip, text.replace("encap = \"gue\"", "encap = \"ipip\""))?;
    let out = tb.l4_ctl(&["apply", "-f", &ipip.to_string_lossy()])?;
    ensure!(
        out.contains("encap gue -> ipip"),
        "apply did not switch: {out}"
    );
    let listed = tb.l4_ctl(&["real", "list", &tb.vip_service(), "--json"])?;
    let reals: serde_json::Value = serde_json::from_str(&listed)?;
    let ipip_reals = reals
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["encap"] == "ipip")
        .count();
    ensure!(
        ipip_reals == usize::from(ROUTED),
        "{ipip_reals} reals use ipip"
    );
    let (decap_before, _) = decap_counters(tb)?;
    for i in 0..5 {
        ensure!(
            established.get(&format!("/obj/switch{i}?size=300"))? == 200,
            "the established connection to {real} broke when its real switched to ipip"
        );
    }
    let (decap_after, malformed) = decap_counters(tb)?;
    ensure!(decap_after > decap_before, "no IPIP frame was decapsulated");
    ensure!(malformed == 0, "{malformed} malformed frames");
    eprintln!("e2e:   the flow to {real} kept its real across the switch to ipip");
    Ok(())
}

/// Moves every routed server's decapsulator from native XDP to tc ingress (`detach`, then
/// `attach --mode tc`), runs the workload through the VIP again, and puts them back.
fn decap_at_tc(tb: &Testbed) -> Result<()> {
    let routed: Vec<_> = tb.servers.iter().filter(|s| s.encap.is_some()).collect();
    let move_to = |mode: &str| -> Result<()> {
        for s in &routed {
            decap(tb, s, &["detach"])?;
            decap(tb, s, &["attach", "--iface", "eth0", "--mode", mode])?;
        }
        Ok(())
    };
    move_to("tc")?;
    let result = (|| -> Result<()> {
        for s in &routed {
            let status: serde_json::Value =
                serde_json::from_str(&decap(tb, s, &["status", "--json"])?)?;
            ensure!(
                status["mode"] == "tc",
                "{} runs {} mode",
                s.name,
                status["mode"]
            );
        }
        both_kinds(tb)
    })();
    move_to("native")?;
    result?;
    eprintln!("e2e:   the same checks pass with the decapsulators at tc ingress");
    Ok(())
}
