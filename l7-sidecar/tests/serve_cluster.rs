//! `l7-sidecar serve` as a cluster: three (or more) sidecar processes on their own loopback
//! addresses in front of a test origin. What is checked: each URL is stored on its owner
//! only, peer connections are reused, pipelined responses come back in order, chunked
//! bodies pass both ways, a 50 MB response streams through two sidecars with bounded
//! memory, 100 concurrent misses make one origin fetch, SIGHUP changes the membership
//! without dropping a request in flight, a peer killed under load costs no GET, SIGTERM
//! drains; plus upstream mode and central mode.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::client::{Client, get};
use support::process::Sidecar;
use support::{Cluster, SteadyLoad, free_addrs, ip, temp_dir};
use support::{Origin, body, start_origin};

#[test]
fn each_url_is_stored_on_its_owner_only_and_peer_connections_are_reused() {
    let c = Cluster::start(101, 3, &[]);
    let urls: Vec<String> = (0..60)
        .map(|i| format!("/obj/u{i}?size={}", 100 + i))
        .collect();
    // Every URL through every sidecar, each sidecar over one keep-alive connection.
    for s in &c.sidecars {
        let mut client = Client::connect(s.listen);
        for u in &urls {
            let r = client.get(u);
            assert_eq!(r.status, 200, "{u}");
            assert_eq!(r.body, body(u, r.body.len() as u64), "{u}");
        }
    }
    for u in &urls {
        assert_eq!(c.origin.fetches(u), 1, "{u} fetched more than once");
    }
    for (i, s) in c.sidecars.iter().enumerate() {
        let owned = urls.iter().filter(|u| c.owner(u) == i).count();
        assert!(owned > 0, "every member should own something");
        assert_eq!(
            s.metric("dl7_l7_cache_objects"),
            owned as f64,
            "{} stores exactly what it owns",
            c.names[i]
        );
        // One client connection at a time: one pooled connection to each peer.
        for (j, peer) in c.names.iter().enumerate() {
            if i == j {
                continue;
            }
            let connects = s.metric(&format!("dl7_l7_pool_connects_total{{pool=\"{peer}\"}}"));
            let forwards = s.metric(&format!("dl7_l7_peer_forwards_total{{peer=\"{peer}\"}}"));
            assert_eq!(
                connects, 1.0,
                "{} -> {peer}: {forwards} forwards",
                c.names[i]
            );
            assert!(forwards >= 10.0);
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let c = Cluster::start(102, 3, &[]);
    let targets: Vec<String> = (0..12)
        .map(|i| format!("/obj/p{i}?size={}", 10 + i * 500))
        .collect();
    let mut batch = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let method = if i == 5 { "HEAD" } else { "GET" };
        batch.extend_from_slice(format!("{method} {t} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    }
    let mut client = Client::connect(c.sidecars[0].listen);
    client.send(&batch);
    for (i, t) in targets.iter().enumerate() {
        let r = client.read_response(i == 5).expect("response");
        assert_eq!(r.status, 200);
        let size = 10 + i * 500;
        if i == 5 {
            assert!(r.body.is_empty());
            assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        } else {
            assert_eq!(r.body, body(t, size as u64), "response {i} out of order");
        }
    }
    let owners: HashSet<usize> = targets.iter().map(|t| c.owner(t)).collect();
    assert!(
        owners.len() > 1,
        "the batch should mix local and forwarded requests"
    );
}

#[test]
fn chunked_bodies_pass_both_ways() {
    let c = Cluster::start(103, 3, &[]);
    let s0 = &c.sidecars[0];
    // A chunked upload through a peer hop, echoed back chunked.
    let echo_owner = c.owner("/echo");
    let entry = c
        .sidecars
        .iter()
        .enumerate()
        .find(|(i, _)| *i != echo_owner)
        .map(|(_, s)| s)
        .expect("a non-owner");
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in payload.chunks(7_000) {
        req.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    let mut client = Client::connect(entry.listen);
    client.send(&req);
    let r = client.read_response(false).expect("echo response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, payload);
    // The connection is still usable (the chunked request was consumed exactly).
    assert_eq!(client.get("/obj/after?size=5").status, 200);

    // A chunked response is cached (it fits) and later served with a length.
    let t = "/chunked/c1?size=4500";
    let first = get(s0.listen, t);
    assert_eq!(first.body, body(t, 4500));
    let second = get(s0.listen, t);
    assert_eq!(second.body, body(t, 4500));
    assert_eq!(second.header("content-length"), Some("4500"));
    assert_eq!(c.origin.fetches(t), 1);

    // An HTTP/1.0 client gets an unknown-length body delimited by the close, not chunked.
    let t = "/chunked/c2?size=3000&cc=no-store";
    let mut old = Client::connect(s0.listen);
    old.send(format!("GET {t} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes());
    let r = old.read_response(false).expect("1.0 response");
    assert_eq!(r.status, 200);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body, body(t, 3000));
}

#[test]
fn a_50_mb_response_streams_with_bounded_memory() {
    const SIZE: usize = 50 * 1024 * 1024;
    let c = Cluster::start(104, 3, &[]);
    let t = format!("/big/b1?size={SIZE}");
    let owner = c.owner(&t);
    let entry = (owner + 1) % 3;
    let (front, back) = (&c.sidecars[entry], &c.sidecars[owner]);
    // Warm up both processes (threads, buffers) before taking the baseline.
    assert_eq!(get(front.listen, "/big/warm?size=1000000").status, 200);
    let before = [front.status_kb("VmHWM"), back.status_kb("VmHWM")];
    let started = Instant::now();
    let r = get(front.listen, &t);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), SIZE);
    assert!(r.body == body(&t, SIZE as u64), "body differs");
    let after = [front.status_kb("VmHWM"), back.status_kb("VmHWM")];
    eprintln!(
        "50 MB through 2 sidecars in {:?}; peak RSS growth {} kB (entry), {} kB (owner)",
        started.elapsed(),
        after[0] - before[0],
        after[1] - before[1]
    );
    for (b, a) in before.iter().zip(after) {
        assert!(a - b < 30 * 1024, "peak RSS grew by {} kB", a - b);
    }
    assert_eq!(
        c.sidecars[owner].metric("dl7_l7_cache_objects"),
        0.0,
        "too large to cache"
    );
}

#[test]
fn large_bodies_relay_byte_for_byte_and_an_abandoned_one_retires_its_peer_connection() {
    const SIZE: u64 = 3 * 1024 * 1024;
    let c = Cluster::start(112, 3, &[]);
    // Owned by sidecar 1 and too large to cache: relayed origin -> owner -> sidecar 0 -> client
    // on both hops; with a length the kernel splices it, chunked it is copied.
    let sized = c.owned_key(1, |i| format!("/big/s{i}?size={SIZE}"));
    let chunked = c.owned_key(1, |i| format!("/chunked/s{i}?size={SIZE}"));
    let mut client = Client::connect(c.sidecars[0].listen);
    for t in [&sized, &chunked, &sized] {
        let r = client.get(t);
        assert_eq!(r.status, 200, "{t}");
        assert!(r.body == body(t, SIZE), "{t}: the body differs");
    }
    let connects = |s: &Sidecar| s.metric("dl7_l7_pool_connects_total{pool=\"s1\"}");
    assert_eq!(
        connects(&c.sidecars[0]),
        1.0,
        "one kept-alive peer connection"
    );

    // A client that leaves without reading a 64 MiB body (more than the sockets' buffers
    // hold): the forwarder drops the peer connection with the rest of the body in it instead
    // of pooling it.
    let huge = c.owned_key(1, |i| format!("/big/h{i}?size={}", 64 << 20));
    let mut leaver = Client::connect(c.sidecars[0].listen);
    leaver.send(format!("GET {huge} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    drop(leaver);
    std::thread::sleep(Duration::from_millis(300));
    let r = client.get("/obj/after-abort?size=100");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 100),
        "no bytes of the old body"
    );
    let t = c.owned_key(1, |i| format!("/obj/owned-{i}?size=100"));
    assert_eq!(client.get(&t).body, body(&t, 100));
    assert_eq!(
        connects(&c.sidecars[0]),
        2.0,
        "the abandoned connection was not reused: a new one"
    );
}

#[test]
fn concurrent_misses_for_one_url_make_one_origin_fetch() {
    let c = Arc::new(Cluster::start(105, 3, &[]));
    let t = "/slow/hot?ms=700&size=20000";
    let start = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (c, start) = (c.clone(), start.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(c.sidecars[i % 3].listen);
                start.wait();
                client.get(t)
            })
        })
        .collect();
    for th in threads {
        let r = th.join().expect("client thread");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body(t, 20000));
    }
    assert_eq!(
        c.origin.fetches(t),
        1,
        "100 concurrent misses, one origin fetch"
    );
}

#[test]
fn sighup_changes_membership_without_dropping_requests() {
    let c = Cluster::start(106, 3, &[]);
    let s0 = &c.sidecars[0];
    let others: Vec<String> = c.keys_owned_by(1, "h", 100, 5);
    for k in &others {
        assert_eq!(get(s0.listen, k).status, 200);
    }
    let forwards_before = s0.metric("dl7_l7_peer_forwards_total{peer=\"s1\"}");
    assert_eq!(forwards_before, 5.0);

    // A slow request to s1 is in flight while s0 reloads.
    let slow = c.keys_owned_by(1, "slow", 100, 1)[0].replace("/obj/", "/slow/") + "&ms=1500";
    let slow_owner = c.owner(&slow);
    let listen = c.sidecars[if slow_owner == 0 { 1 } else { 0 }].listen;
    let in_flight = std::thread::spawn(move || get(listen, &slow).status);
    std::thread::sleep(Duration::from_millis(300));

    // s0 alone: everything is now its own.
    let config = c.dir.path().join("s0.toml");
    let peer = s0.peer.expect("peer address");
    support::write_config(&config, "s0", &format!("s0={peer}"), &c.origin.url());
    s0.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s0.metric("dl7_l7_reloads_total{result=\"ok\"}") < 1.0 {
        assert!(Instant::now() < deadline, "no reload: {}", s0.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let objects_before = s0.metric("dl7_l7_cache_objects");
    for k in &others {
        assert_eq!(get(s0.listen, k).status, 200);
    }
    assert_eq!(
        s0.metric("dl7_l7_peer_forwards_total{peer=\"s1\"}"),
        forwards_before
    );
    assert_eq!(s0.metric("dl7_l7_cache_objects"), objects_before + 5.0);
    assert_eq!(in_flight.join().expect("in-flight request"), 200);

    // A bad file is refused and the running membership stays.
    std::fs::write(&config, "members = \"\"\n").expect("write config");
    s0.signal("HUP");
    while s0.metric("dl7_l7_reloads_total{result=\"error\"}") < 1.0 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "no refused reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(s0.listen, &others[0]).status, 200);
}

#[test]
fn a_peer_killed_under_load_costs_no_get() {
    let mut c = Cluster::start(107, 3, &["--connect-timeout", "500ms"]);
    let victim = c.sidecars.pop().expect("three sidecars");
    let entries: Vec<_> = c.sidecars.iter().map(|s| s.listen).collect();
    const PER_CLIENT: usize = 400;
    let load = SteadyLoad::start(&entries, 4, PER_CLIENT, "k", 2000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.done() < PER_CLIENT && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(victim); // SIGKILL mid-load
    let killed_at = load.done();
    let (total, failed) = load.finish();
    let ejections: f64 = c
        .sidecars
        .iter()
        .map(|s| s.metric("dl7_l7_peer_ejections_total{peer=\"s2\"}"))
        .sum();
    let errors: f64 = c
        .sidecars
        .iter()
        .map(|s| s.metric("dl7_l7_peer_errors_total{peer=\"s2\"}"))
        .sum();
    eprintln!(
        "peer killed after {killed_at} of {total} GETs: {failed} failed, {errors} failed attempts at the dead peer, {ejections} ejections"
    );
    assert!(killed_at < total, "the kill happened under load");
    assert_eq!(failed, 0, "GETs failed after the peer died");
    assert!(ejections >= 1.0, "the dead peer is ejected");
    assert!(
        errors < 30.0,
        "a dead peer costs a few attempts, not one per request"
    );
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let mut c = Cluster::start(108, 1, &["--drain-timeout", "5s"]);
    let listen = c.sidecars[0].listen;
    let mut idle = Client::connect(listen);
    assert_eq!(idle.get("/obj/warm?size=10").status, 200);
    let slow = std::thread::spawn(move || {
        let mut client = Client::connect(listen);
        client.get("/slow/drain?ms=1500&size=1000")
    });
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    c.sidecars[0].signal("TERM");
    assert!(
        idle.is_closed(),
        "idle keep-alive connections are closed at once"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        Client::try_connect(listen).is_err(),
        "no new connections while draining"
    );
    let r = slow.join().expect("slow request");
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert_eq!(r.header("connection"), Some("close"));
    let status = c.sidecars[0]
        .wait_exit(Duration::from_secs(5))
        .expect("exits after draining");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn upstream_mode_serves_through_a_pooled_local_upstream() {
    let dir = temp_dir("upstream");
    let upstream = start_origin(ip(109, 1));
    let [listen, peer, metrics] = free_addrs(ip(109, 11));
    let args: Vec<String> = [
        "serve",
        "--listen",
        &listen.to_string(),
        "--peer-listen",
        &peer.to_string(),
        "--self",
        "me",
        "--members",
        &format!("me={peer}"),
        "--upstream",
        &upstream.local_addr().to_string(),
        "--metrics",
        &metrics.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let s = Sidecar::start(&args, listen, Some(peer), metrics, dir.path().join("s.log"));
    let mut client = Client::connect(s.listen);
    for i in 0..20 {
        let t = format!("/obj/up{}?size=300", i % 4);
        let r = client.get(&t);
        assert_eq!((r.status, r.body.len()), (200, 300));
    }
    assert_eq!(upstream.total(), 20, "no caching in upstream mode");
    assert_eq!(upstream.connections(), 1, "one pooled connection");
    assert_eq!(
        s.metric("dl7_l7_requests_total{route=\"local\",status=\"200\"}"),
        20.0
    );
}

#[test]
fn central_mode_forwards_to_the_owner_and_fails_over() {
    let dir = temp_dir("central");
    let backends: Vec<Origin> = (0..3).map(|i| start_origin(ip(110, 21 + i))).collect();
    let members: Vec<String> = backends
        .iter()
        .map(|b| b.local_addr().to_string())
        .collect();
    let s = support::central(
        110,
        &members,
        &["--scheme", "nginx", "--threads", "1"],
        &dir,
    );
    let scheme_members: Vec<_> = members
        .iter()
        .map(|m| l7_sidecar::scheme::Member::new(m, 1))
        .collect();
    let nginx = l7_sidecar::scheme::build("nginx", &scheme_members).expect("scheme");
    let mut client = Client::connect(s.listen);
    for i in 0..30 {
        let t = format!("/obj/central{i}?size=50");
        assert_eq!(client.get(&t).status, 200);
        assert_eq!(
            backends[nginx.pick(t.as_bytes())].fetches(&t),
            1,
            "{t} went to its owner"
        );
    }
    // Hop limit: a request that already made two hops is not forwarded again.
    client.send(b"GET /obj/loop HTTP/1.1\r\nHost: test\r\nX-Dl7-Hop: 2\r\n\r\n");
    assert_eq!(client.read_response(false).expect("508").status, 508);

    // A dead backend: its keys go to the next candidate.
    let mut backends = backends;
    let dead = backends.remove(0);
    let dead_addr = dead.local_addr().to_string();
    drop(dead);
    let mut client = Client::connect(s.listen);
    for i in 0..30 {
        let t = format!("/obj/after{i}?size=50");
        let r = client.get(&t);
        assert_eq!(r.status, 200, "{t} after a backend died");
    }
    assert!(s.metric(&format!("dl7_l7_peer_errors_total{{peer=\"{dead_addr}\"}}")) >= 1.0);
}

/// An HTTP/1.0 request without `Host` is answered the same whichever sidecar receives it:
/// the forwarder sends it on with an empty `Host` (RFC 9112 3.2), the owner with the
/// origin's authority.
#[test]
fn http10_without_host_is_served_through_any_sidecar() {
    let c = Cluster::start(112, 2, &[]);
    for owner in 0..2 {
        for key in c.keys_owned_by(owner, "http10", 300, 3) {
            for s in &c.sidecars {
                let mut client = Client::connect(s.listen);
                client.send(format!("GET {key} HTTP/1.0\r\n\r\n").as_bytes());
                let r = client.read_response(false).expect("response");
                assert_eq!(
                    (r.status, r.body.len()),
                    (200, 300),
                    "{key} via {:?}",
                    s.listen
                );
            }
        }
    }
    // The origin sees its own authority as Host whichever sidecar owns the key.
    for s in &c.sidecars {
        for i in 0..4 {
            let mut client = Client::connect(s.listen);
            client.send(format!("GET /headers?{i} HTTP/1.0\r\n\r\n").as_bytes());
            let r = client.read_response(false).expect("headers");
            let seen = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                seen.contains(&format!("Host: {}\r\n", c.origin.local_addr())),
                "{seen}"
            );
        }
    }
}

/// The peer port answers `GET` and `HEAD` of the health path without the hop field (HEAD
/// without a body, so a kept-alive connection stays in step); anything else there is a
/// request like any other.
#[test]
fn the_peer_port_answers_health_checks() {
    let c = Cluster::start(113, 1, &[]);
    let peer = c.sidecars[0].peer.expect("a peer port");
    let mut client = Client::connect(peer);
    client.send(b"HEAD /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = client.read_response(true).expect("HEAD");
    assert_eq!((r.status, r.header("content-length")), (200, Some("3")));
    let r = client.get("/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    client.send(b"POST /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(
        client.read_response(false).expect("POST").status,
        405,
        "the origin's answer"
    );
    assert_eq!(client.get("/obj/after-health?size=3").body.len(), 3);
    assert_eq!(
        c.origin.fetches("/healthz"),
        1,
        "only the POST reached the origin"
    );
}

/// A peer that is alive but does not answer (SIGSTOP: the kernel still accepts its
/// connections) costs a waiting request at most the first-byte timeout, then the request
/// goes to the next candidate; active health checks take the peer out of routing within a
/// few seconds, and bring it back after SIGCONT.
#[test]
fn a_hung_peer_costs_no_get_and_no_long_wait() {
    let c = Cluster::start(111, 3, &[]);
    let hung = &c.sidecars[2];
    let entries: Vec<_> = c.sidecars[..2].iter().map(|s| s.listen).collect();
    let hung_keys = c.keys_owned_by(2, "hung", 1500, 40);
    for k in &hung_keys {
        assert_eq!(get(entries[0], k).status, 200);
    }
    hung.signal("STOP");
    let stopped_at = Instant::now();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (results, keys) = (results.clone(), hung_keys.clone());
            let entry = entries[t % entries.len()];
            std::thread::spawn(move || {
                let mut client = Client::connect(entry);
                let end = Instant::now() + Duration::from_secs(6);
                for i in 0..600 {
                    if Instant::now() > end {
                        break;
                    }
                    // Half the requests for the hung peer's keys, half for the others.
                    let target = if i % 2 == 0 {
                        keys[(i / 2 + t * 7) % keys.len()].clone()
                    } else {
                        format!("/obj/other-{}?size=1500", (i * 3 + t) % 200)
                    };
                    let asked = Instant::now();
                    let ok = match client.try_get(&target) {
                        Ok(r) => r.status == 200 && r.body.len() == 1500,
                        Err(_) => {
                            client = Client::connect(entry);
                            false
                        }
                    };
                    results.lock().unwrap().push((ok, asked.elapsed()));
                }
            })
        })
        .collect();
    for th in clients {
        th.join().expect("client thread");
    }
    let results = results.lock().unwrap().clone();
    let failed = results.iter().filter(|(ok, _)| !ok).count();
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let slow = results
        .iter()
        .filter(|(_, d)| *d > Duration::from_millis(500))
        .count();
    let stalls: f64 = c.sidecars[..2]
        .iter()
        .map(|s| s.metric("dl7_l7_peer_stalls_total{peer=\"s2\"}"))
        .sum();
    let down: Vec<f64> = c.sidecars[..2]
        .iter()
        .map(|s| s.metric("dl7_l7_peer_up{peer=\"s2\"}"))
        .collect();
    eprintln!(
        "hung peer: {} GETs in {:?}, {failed} failed, {slow} waited over 500 ms, slowest {slowest:?}, {stalls} first-byte timeouts, peer_up {down:?}",
        results.len(),
        stopped_at.elapsed()
    );
    assert!(results.len() >= 200, "the load ran");
    assert_eq!(failed, 0, "GETs failed because of the hung peer");
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?}"
    );
    assert!(stalls >= 1.0, "the hang was seen as first-byte timeouts");
    assert_eq!(down, [0.0, 0.0], "health checks took the hung peer out");

    hung.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.sidecars[..2]
        .iter()
        .any(|s| s.metric("dl7_l7_peer_up{peer=\"s2\"}") != 1.0)
    {
        assert!(Instant::now() < deadline, "the peer did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = hung.metric("dl7_l7_requests_total{route=\"local\"}");
    for k in &hung_keys[..10] {
        assert_eq!(get(entries[1], k).status, 200);
    }
    assert!(
        hung.metric("dl7_l7_requests_total{route=\"local\"}") >= before + 10.0,
        "its keys go to it again"
    );
}
