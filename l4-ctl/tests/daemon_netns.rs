//! `l4-ctl daemon` on a namespace testbed, as separate processes the way an operator runs it:
//! health checks drain a real whose server stops and restore it when it is back, without
//! moving any established flow; `/metrics` has the documented families and labels, and its
//! counters follow the traffic; SIGHUP re-applies `--config` (and keeps the running one when
//! the file is invalid); SIGTERM stops the daemon with status 0 and leaves the program and its
//! maps; an invalid `--config` stops the start with one line that names the field. Needs root,
//! `ip`, `sysctl` and `nsenter`.
//!
//! ```text
//!   front ──┐     l4-ctl load (generic XDP on eth0), l4-ctl daemon --config --metrics
//!   real1 ──┼── br0 (own namespace)
//!   real2 ──┤     an HTTP server on REAL:80 in each: what the health checks probe
//!   real3 ──┘
//! ```
//!
//! The VIP's traffic is hand-built frames run through the pinned program with
//! BPF_PROG_TEST_RUN: they update the same connection table and counters as frames from the
//! wire, and the test knows exactly how many it sent and which real each went to. The
//! harness is tests/support/daemon.rs; the tests run one at a time (their health checks run
//! every 200 ms).

mod support;

use std::fs;

use support::daemon::*;
use support::netns::{HttpServer, IFACE, output_within, run};

#[test]
fn the_daemon_serves_healthz_and_metrics_of_the_configured_reals() {
    let _serial = one_at_a_time();
    let r = Running::start();
    let front = &r.bed.front;
    assert_eq!(front.http("GET", "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(front.http("GET", "/nothing-here").0, 404);
    assert_eq!(front.http("POST", "/metrics").0, 405);
    assert_eq!(front.http("GET", "/metrics?name=x").0, 200);

    let reals = front.reals();
    assert_eq!(reals.keys().copied().collect::<Vec<_>>(), r.addrs);
    for (ip, (state, weight, _)) in &reals {
        assert_eq!(
            (state.as_str(), *weight),
            ("active", 1),
            "real {ip} after the config"
        );
    }
    // Every real has passed a check: the probes run.
    let m0 = r.checked();
    check_families(&m0, false);
    for &ip in &r.addrs {
        assert_eq!(m0.real("dl7_l4_real_up", ip), 1.0);
        assert_eq!(m0.real("dl7_l4_real_weight", ip), 1.0);
    }
    assert_eq!(m0.one("dl7_l4_vip_active_reals", &[("vip", VIP)]), 3.0);
    let share_sum = m0.sum("dl7_l4_real_table_share", &[("vip", VIP)]);
    assert!(
        (share_sum - 1.0).abs() < 1e-9,
        "table shares sum to {share_sum}"
    );
    assert_eq!(m0.one("dl7_l4_vip_packets_total", &[("vip", VIP)]), 0.0);
    assert!(
        m0.one("dl7_l4_frames_total", &[("outcome", "pass_not_vip")]) > 0.0,
        "the checks' answers reach the front through the program, which passes them"
    );
}

#[test]
fn the_daemon_serves_the_membership_with_a_generation_that_follows_changes() {
    let _serial = one_at_a_time();
    let r = Running::start();
    let front = &r.bed.front;
    let members = || -> serde_json::Value {
        let (code, body) = front.http("GET", "/members");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let first = members();
    let generation = first["generation"].as_u64().expect("a generation");
    assert!(generation > 0);
    assert_eq!(first["vips"][0]["vip"], VIP);
    let reals = first["vips"][0]["reals"].as_array().expect("reals").clone();
    let addrs: Vec<String> = reals
        .iter()
        .map(|m| m["address"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, want);
    for m in &reals {
        assert_eq!(
            (&m["weight"], &m["state"], &m["encap"]),
            (&1.into(), &"active".into(), &"l2".into())
        );
    }
    assert_eq!(
        members()["generation"].as_u64(),
        Some(generation),
        "unchanged"
    );
    front.ok(&["real", "weight", VIP, &want[0], "3"]);
    let changed = members();
    assert!(changed["generation"].as_u64().unwrap() > generation);
    assert_eq!(changed["vips"][0]["reals"][0]["weight"], 3);
    front.ok(&["real", "drain", VIP, &want[1]]);
    let drained = members();
    assert!(drained["generation"].as_u64() > changed["generation"].as_u64());
    assert_eq!(drained["vips"][0]["reals"][1]["state"], "drained");
}

#[test]
fn a_failing_real_is_drained_and_restored_without_moving_a_flow() {
    let _serial = one_at_a_time();
    let mut r = Running::start();
    let m0 = r.checked();
    let (bal, ids, mut traffic) = r.traffic();
    let addrs = r.addrs.clone();

    // Flows of set 0, started while every real is up; the counters follow them exactly.
    let front = &r.bed.front;
    let mut counts = Counts::of(&m0);
    let set0 = start_flows(&mut traffic, &bal, front, &ids, 0);
    for (i, (name, _)) in REALS.iter().enumerate() {
        assert!(
            set0.iter().filter(|f| f.real == i).count() > FLOWS as usize / 6,
            "{name} got few of the first flows"
        );
    }
    let m1 = front.scrape();
    check_counts(&counts, &Counts::of(&m1), &traffic.take_sent());
    counts = Counts::of(&m1);

    // The failing real's server stops: after `fall` failed checks it is down and drained.
    let failing = addrs[FAILING];
    let server = r.bed.servers[FAILING].take().expect("running");
    server.stop().expect("the failing real's server");
    let front = &r.bed.front;
    let took = wait_failing_real(front, "down");
    println!("{failing} down {took:?} after its server stopped (fall {FALL} x {INTERVAL_MS} ms)");
    let reals = front.reals();
    assert_eq!(reals[&failing].1, 1, "a real that is down keeps its weight");
    assert_eq!(
        reals[&failing].2, 0.0,
        "a real that is down has no table share"
    );
    let share_sum: f64 = reals.values().map(|r| r.2).sum();
    assert!(
        (share_sum - 1.0).abs() < 1e-9,
        "table shares sum to {share_sum}"
    );

    let m2 = front.scrape();
    check_families(&m2, true);
    for &ip in &addrs {
        let want = if ip == failing { 0.0 } else { 1.0 };
        assert_eq!(m2.real("dl7_l4_real_up", ip), want, "real_up of {ip}");
    }
    assert_eq!(m2.one("dl7_l4_vip_active_reals", &[("vip", VIP)]), 2.0);
    assert_eq!(m2.real("dl7_l4_real_table_share", failing), 0.0);
    assert_eq!(m2.real("dl7_l4_real_weight", failing), 1.0);
    let failing_s = failing.to_string();
    let transitions =
        |m: &Metrics, to: &str| m.one(TRANSITIONS, &[("real", failing_s.as_str()), ("to", to)]);
    assert_eq!(transitions(&m2, "down"), 1.0);
    assert_eq!(
        m2.samples(TRANSITIONS, &[]).count(),
        1,
        "only one transition so far"
    );
    assert!(
        m2.one(
            "dl7_l4_health_checks_total",
            &[("real", &failing_s), ("result", "fail")]
        ) >= f64::from(FALL)
    );

    // While it is down: every established flow keeps its real (the failing one's too), new
    // flows avoid it.
    check_flows_stay(&mut traffic, &bal, &set0);
    let set1 = start_flows(&mut traffic, &bal, front, &ids, 1);
    assert!(
        set1.iter().all(|f| f.real != FAILING),
        "a new flow went to a real that is down"
    );
    let m3 = front.scrape();
    check_counts(&counts, &Counts::of(&m3), &traffic.take_sent());
    counts = Counts::of(&m3);

    // Its server is back: after `rise` good checks it is restored.
    let (name, _) = REALS[FAILING];
    r.bed.servers[FAILING] = Some(HttpServer::start(
        &r.bed.net.ns(name),
        std::net::SocketAddrV4::new(failing, PORT),
        name,
    ));
    let front = &r.bed.front;
    let took = wait_failing_real(front, "active");
    println!("{failing} restored {took:?} after its server came back (rise {RISE})");
    assert!(
        front.reals()[&failing].2 > 0.0,
        "a restored real gets new flows"
    );
    check_flows_stay(&mut traffic, &bal, &set0);
    check_flows_stay(&mut traffic, &bal, &set1);
    let m4 = front.scrape();
    check_counts(&counts, &Counts::of(&m4), &traffic.take_sent());
    check_families(&m4, true);
    assert_eq!(transitions(&m4, "down"), 1.0);
    assert_eq!(transitions(&m4, "up"), 1.0);
    assert_eq!(
        m4.samples(TRANSITIONS, &[]).count(),
        2,
        "transitions: {:?}",
        m4.0.samples
    );
    for &ip in &addrs {
        assert_eq!(m4.real("dl7_l4_real_up", ip), 1.0, "real_up of {ip}");
    }
    assert_eq!(m4.one("dl7_l4_vip_active_reals", &[("vip", VIP)]), 3.0);

    // One log line per transition, naming the real and the VIP.
    let log = r.bed.daemon().log();
    for (event, detail) in [
        ("down", format!("{FALL} failed checks")),
        ("up", format!("{RISE} good checks")),
    ] {
        let pattern = format!("is {event} after");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&pattern)).collect();
        assert_eq!(lines.len(), 1, "\"{pattern}\" lines in the log:\n{log}");
        let want = format!("real {failing} of {VIP} {pattern} {detail}");
        assert!(lines[0].contains(&want), "{} lacks {want:?}", lines[0]);
    }
}

#[test]
fn sighup_reapplies_the_file_and_keeps_the_running_config_when_it_is_invalid() {
    let _serial = one_at_a_time();
    let mut r = Running::start();
    let third = r.addrs[2];
    fs::write(&r.config_path, config([1, 1, 3], TIMEOUT_MS)).expect("rewrite the config");
    r.bed.daemon().signal(libc::SIGHUP);
    let front = &r.bed.front;
    wait_for(DEADLINE, "SIGHUP applies the new weight", || {
        (front.reals()[&third].1 == 3).then_some(())
    });
    fs::write(&r.config_path, config([1, 1, 1], INTERVAL_MS + 1)).expect("rewrite the config");
    r.bed.daemon().signal(libc::SIGHUP);
    let daemon = r.bed.daemon.as_mut().expect("started");
    let line = wait_for(DEADLINE, "SIGHUP logs the invalid file", || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("SIGHUP:"))
            .map(str::to_owned)
    });
    assert!(
        line.contains("vip[1].health.timeout_ms") && line.contains("keeping the running"),
        "{line}"
    );
    daemon.assert_running();
    let front = &r.bed.front;
    assert_eq!(
        front.reals()[&third].1,
        3,
        "the invalid file changed a weight"
    );
    assert_eq!(front.http("GET", "/healthz").0, 200);
}

/// The addresses on the announcement device, or `None` when it does not exist.
fn announced(front: &Front) -> Option<Vec<String>> {
    let out = output_within(
        std::process::Command::new("ip")
            .args(["-n", &front.ns, "-j", "addr", "show", "dev", "dl7-vips"]),
        CTL_TIMEOUT,
    );
    if !out.status.success() {
        return None;
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    Some(
        links[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Waits until the device carries exactly `want` (`None`: the device is gone).
fn wait_announced(front: &Front, want: Option<&[&str]>, what: &str) {
    let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
    wait_for(DEADLINE, what, || (announced(front) == want).then_some(()));
}

#[test]
fn the_announcing_daemon_withdraws_the_vip_on_drain_no_real_detach_and_any_exit() {
    let _serial = one_at_a_time();
    let socket = "/nonexistent/bird.ctl";
    let mut r = Running::start_with(&["--announce", "--bird-socket", socket]);
    let front = &r.bed.front;
    let vip_addr = ["10.214.0.100/32"];
    wait_announced(front, Some(&vip_addr), "the VIP is announced");
    let m = front.scrape();
    assert_eq!(m.one("dl7_l4_announced_addresses", &[]), 1.0);
    assert_eq!(
        m.one("dl7_l4_vip_announced", &[("address", "10.214.0.100")]),
        1.0
    );
    assert_eq!(m.one("dl7_l4_front_drained", &[]), 0.0);
    wait_for(DEADLINE, "BIRD counted as unreachable", || {
        (front.scrape().one("dl7_l4_bird_up", &[]) == 0.0).then_some(())
    });

    // A second announcing daemon in the same namespace is refused before it serves.
    let second = output_within(
        front.command().args([
            "daemon",
            "--metrics",
            "127.0.0.1:9401",
            "--announce",
            "--bird-socket",
            socket,
        ]),
        CTL_TIMEOUT,
    );
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another l4-ctl daemon announces"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Drained: withdrawn, and kept in the maps (status shows it); undrained: back.
    front.ok(&["front", "drain"]);
    wait_announced(front, Some(&[]), "drain withdraws the VIP");
    assert_eq!(front.scrape().one("dl7_l4_front_drained", &[]), 1.0);
    assert_eq!(
        front
            .scrape()
            .one("dl7_l4_vip_announced", &[("address", "10.214.0.100")]),
        0.0
    );
    let state: serde_json::Value =
        serde_json::from_str(&front.ok(&["status", "--json"])).expect("json");
    assert_eq!(state["drained"], true, "{state}");
    assert!(front.ok(&["front", "drain"]).contains("already"));
    front.ok(&["front", "undrain"]);
    wait_announced(front, Some(&vip_addr), "undrain announces the VIP again");

    // No real takes new flows: withdrawn until one does.
    for ip in &r.addrs {
        front.ok(&["real", "drain", VIP, &ip.to_string()]);
    }
    wait_announced(
        front,
        Some(&[]),
        "a VIP without a real taking new flows is withdrawn",
    );
    front.ok(&["real", "weight", VIP, &r.addrs[0].to_string(), "1"]);
    wait_announced(front, Some(&vip_addr), "one real back: announced again");

    // The device deleted by hand: the daemon makes it again and announces.
    run(&format!("ip -n {} link del dl7-vips", front.ns));
    wait_announced(front, Some(&vip_addr), "a deleted device is made again");
    assert!(r.bed.daemon().log().contains("creating it again"));

    // SIGKILL: the kernel deletes the device, and every announcement with it.
    r.bed.daemon().signal(libc::SIGKILL);
    r.bed.daemon().wait_exit();
    wait_announced(&r.bed.front, None, "a killed daemon's device is gone");

    // A restarted daemon announces again; detaching the program withdraws.
    let log = r.bed.files.path().join("daemon2.log");
    r.bed.daemon = Some(Daemon::start_with(
        &r.bed.front,
        &r.config_path,
        log,
        &["--announce", "--bird-socket", socket],
    ));
    let front = &r.bed.front;
    wait_announced(front, Some(&vip_addr), "the restarted daemon announces");
    front.ok(&["unload"]);
    wait_announced(front, Some(&[]), "a detached program withdraws the VIP");
    // SIGTERM: withdrawn and the device removed.
    r.bed.daemon().signal(libc::SIGTERM);
    r.bed.daemon().wait_exit();
    wait_announced(&r.bed.front, None, "a stopped daemon's device is gone");
}

#[test]
fn sigterm_stops_the_daemon_and_leaves_the_program_and_every_flow() {
    let _serial = one_at_a_time();
    let mut r = Running::start();
    r.checked();
    let (bal, ids, mut traffic) = r.traffic();
    let set0 = start_flows(&mut traffic, &bal, &r.bed.front, &ids, 0);
    let daemon = r.bed.daemon.as_mut().expect("started");
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "SIGTERM: {status}; log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("stopping"), "{}", daemon.log());
    let front = &r.bed.front;
    let state: serde_json::Value =
        serde_json::from_str(&front.ok(&["status", "--json"])).expect("json");
    assert_eq!(state["iface"], IFACE, "{state}");
    assert_eq!(state["flows"], FLOWS, "{state}");
    check_flows_stay(&mut traffic, &bal, &set0);

    drop((traffic, bal));
    front.ok(&["unload"]);
    assert!(
        !front.pin_dir.exists(),
        "unload left {}",
        front.pin_dir.display()
    );
}

#[test]
fn an_invalid_config_stops_the_start_with_one_line_naming_the_field() {
    let _serial = one_at_a_time();
    let mut bed = Bed::new();
    let ns = bed.net.add_ns("front");
    run(&format!(
        "ip -n {ns} link add {IFACE} type veth peer name peer0"
    ));
    run(&format!("ip -n {ns} link set {IFACE} up"));
    bed.front
        .ok(&["load", "--iface", IFACE, "--mode", "generic"]);
    let bad = write_file(&bed.files, "bad.toml", &config([1, 1, 1], INTERVAL_MS + 1));
    let out = output_within(
        bed.front
            .command()
            .args(["daemon", "--metrics", METRICS, "--config"])
            .arg(&bad),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(
        stderr.starts_with("error: vip[1].health.timeout_ms: "),
        "{stderr:?}"
    );
    // Nothing was applied.
    assert_eq!(bed.front.ok(&["vip", "list", "--json"]).trim(), "[]");
}
