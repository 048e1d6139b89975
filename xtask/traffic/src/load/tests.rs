//! The generator against the synthetic origin (both in-process, loopback), and against a fake
//! server for the error kinds. Every run is bounded by its request count and a duration.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant as StdInstant;

use super::*;
use crate::origin::{self, Options, Origin};

fn origin() -> Origin {
    Origin::start("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// An origin that answers after `ms` milliseconds.
fn slow_origin(ms: u64) -> Origin {
    let delay = Duration::from_millis(ms);
    Origin::start_with("127.0.0.1:0".parse().unwrap(), Options { delay }).unwrap()
}

fn config(target: SocketAddr, requests: u64) -> LoadConfig {
    let mut c = LoadConfig::new(target);
    c.workload = Workload::Synthetic {
        objects: 50,
        alpha: 0.8,
        seed: 7,
        max_size: 64 << 10,
        hot_share: 0.0,
    };
    c.requests = requests;
    c.concurrency = 4;
    c.duration = Duration::from_secs(20);
    c
}

fn size_of(target: &str) -> u64 {
    origin::requested_size(target).unwrap()
}

#[test]
fn closed_loop_synthetic_run_reaches_the_origin() {
    let o = origin();
    let r = run(&config(o.local_addr(), 400)).unwrap();
    assert_eq!((r.requests, r.ok, r.error_total), (400, 400, 0), "{r:?}");
    assert_eq!(r.statuses, BTreeMap::from([(200, 400)]));
    let counts = o.counts();
    assert_eq!(counts.values().sum::<u64>(), 400);
    assert_eq!(o.total(), 400);
    let expected_bytes: u64 = counts.iter().map(|(t, n)| size_of(t) * n).sum();
    assert_eq!(r.body_bytes, expected_bytes);
    assert!(r.bytes > r.body_bytes);
    let (top, _) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(
        top.starts_with("/obj/0?size="),
        "most requested: {top}, {counts:?}"
    );
    assert!(r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.p99);
    assert!(r.latency_us.p99 <= r.latency_us.max);
    assert_eq!(
        (r.mode.as_str(), r.workload.as_str()),
        ("closed", "synthetic")
    );

    // The same seed asks for the same URLs.
    o.reset();
    run(&config(o.local_addr(), 400)).unwrap();
    assert_eq!(o.counts(), counts);
}

#[test]
fn open_loop_keeps_the_rate() {
    let o = origin();
    let mut c = config(o.local_addr(), 60);
    c.rate = Some(300.0);
    let r = run(&c).unwrap();
    assert_eq!(r.ok, 60, "{r:?}");
    // The last request is due at 59/300 s.
    assert!((0.19..5.0).contains(&r.seconds), "{}", r.seconds);
    assert_eq!(r.mode, "open");
    assert_eq!(o.total(), 60);
}

#[test]
fn duration_ends_a_run_early() {
    let o = slow_origin(50);
    let mut c = config(o.local_addr(), 1_000_000);
    c.concurrency = 2;
    c.duration = Duration::from_millis(300);
    let start = StdInstant::now();
    let r = run(&c).unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!((2..=20).contains(&r.ok), "{r:?}");
    assert_eq!(r.error_total, 0);
}

#[test]
fn warmup_answers_are_sent_but_not_counted() {
    // 50 ms per answer over 2 connections: about 12 answers in the 300 ms warm-up and 12 in
    // the 300 ms measured run.
    let o = slow_origin(50);
    let mut c = config(o.local_addr(), 1_000_000);
    c.concurrency = 2;
    c.warmup = Duration::from_millis(300);
    c.duration = Duration::from_millis(300);
    let r = run(&c).unwrap();
    assert_eq!(r.error_total, 0);
    assert!((2..=20).contains(&r.ok), "{r:?}");
    assert!(
        o.total() >= r.ok + 6,
        "origin {} vs counted {}",
        o.total(),
        r.ok
    );
    assert!((0.25..1.0).contains(&r.seconds), "{}", r.seconds);
}

#[test]
fn the_catalogue_is_every_object_of_the_stream_once() {
    let o = origin();
    let mut c = config(o.local_addr(), 400);
    run(&c).unwrap();
    let streamed = o.counts();
    o.reset();
    let all = catalogue(50, 7, 64 << 10).unwrap();
    assert_eq!(all.len(), 50);
    assert!(all[49].target.starts_with("/obj/0?"), "most popular last");
    c.workload = Workload::Replay(all);
    c.requests = 50;
    let r = run(&c).unwrap();
    assert_eq!((r.ok, r.error_total), (50, 0));
    let filled = o.counts();
    assert_eq!(filled.len(), 50);
    // The stream asked for the catalogue's objects, with the same sizes.
    assert!(
        streamed.keys().all(|t| filled.contains_key(t)),
        "{streamed:?}"
    );
}

#[test]
fn replay_sends_the_log_in_order_and_cycles() {
    let o = origin();
    let log = replay::parse(
        r#"10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326
10.0.0.1 - - [10/Oct/2000:13:55:37 -0700] "HEAD /b HTTP/1.1" 200 10 "-" "curl/8"
10.0.0.1 - - [10/Oct/2000:13:55:38 -0700] "GET /too-big?size=999999999999 HTTP/1.1" 200 5
"#,
        LogFormat::Auto,
    )
    .unwrap();
    let mut c = config(o.local_addr(), 6);
    c.workload = Workload::Replay(log.entries.into());
    c.concurrency = 1;
    let r = run(&c).unwrap();
    assert_eq!(
        o.counts(),
        BTreeMap::from([
            ("/a.gif?size=2326".into(), 2),
            ("/b?size=10".into(), 2),
            ("/too-big?size=999999999999".into(), 2),
        ])
    );
    assert_eq!((r.ok, r.errors.http_4xx), (4, 2), "{r:?}");
    assert_eq!(r.statuses, BTreeMap::from([(200, 4), (400, 2)]));
    // Two GETs of /a.gif, two HEADs (no body), two short 400 messages.
    assert!((2 * 2326..2 * 2326 + 200).contains(&r.body_bytes), "{r:?}");
    assert_eq!(r.workload, "replay");
}

#[test]
fn source_addresses_are_used_in_turn() {
    let o = origin();
    let mut c = config(o.local_addr(), 40);
    c.source_addrs = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    let r = run(&c).unwrap();
    assert_eq!(r.ok, 40, "{r:?}");
    let peers: Vec<String> = o.peers().keys().map(ToString::to_string).collect();
    assert_eq!(peers, ["127.0.0.2", "127.0.0.3"]);
}

/// A server that answers every request with `reply` and closes the connection, for at most
/// 5 s.
fn fake(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let end = StdInstant::now() + Duration::from_secs(5);
        while StdInstant::now() < end {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            if reply.is_empty() {
                // Stop listening before closing the connection.
                drop(l);
                return;
            }
            let _ = s.write_all(reply);
        }
    });
    (addr, thread)
}

fn errors_against(reply: &'static [u8], timeout: Duration) -> Errors {
    let (addr, _server) = fake(reply);
    let mut c = config(addr, 3);
    c.concurrency = 1;
    c.timeout = timeout;
    let r = run(&c).unwrap();
    assert_eq!((r.requests, r.ok), (3, 0), "{r:?}");
    r.errors
}

#[test]
fn errors_are_counted_by_kind() {
    let second = Duration::from_secs(1);
    let e = errors_against(b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno", second);
    assert_eq!(
        e,
        Errors {
            http_5xx: 3,
            ..Errors::default()
        }
    );
    let e = errors_against(b"HTTP/1.1 404 No\r\nConnection: close\r\n\r\n", second);
    assert_eq!(
        e,
        Errors {
            http_4xx: 3,
            ..Errors::default()
        }
    );
    let e = errors_against(b"NOT HTTP\r\n\r\n", second);
    assert_eq!(
        e,
        Errors {
            malformed: 3,
            ..Errors::default()
        }
    );
    let e = errors_against(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        second,
    );
    assert_eq!(
        e,
        Errors {
            reset: 3,
            ..Errors::default()
        }
    );

    // A server that closes its first connection without answering, then stops listening.
    let (addr, server) = fake(b"");
    let mut c = config(addr, 3);
    c.concurrency = 1;
    let r = run(&c).unwrap();
    server.join().unwrap();
    assert_eq!(
        r.errors,
        Errors {
            reset: 1,
            connect: 2,
            ..Errors::default()
        }
    );

    // Nothing listens.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(&config(free, 5)).unwrap();
    assert_eq!(
        r.errors,
        Errors {
            connect: 5,
            ..Errors::default()
        }
    );
}

#[test]
fn timeouts_are_counted() {
    let o = slow_origin(400);
    let mut c = config(o.local_addr(), 2);
    c.concurrency = 2;
    c.timeout = Duration::from_millis(100);
    let r = run(&c).unwrap();
    assert_eq!(
        r.errors,
        Errors {
            timeout: 2,
            ..Errors::default()
        }
    );
}

#[test]
fn targets_parse() {
    let (addr, host) = parse_target("http://127.0.0.1:8080/").unwrap();
    assert_eq!(
        (addr.to_string(), host.as_str()),
        ("127.0.0.1:8080".into(), "127.0.0.1:8080")
    );
    let (addr, host) = parse_target("127.0.0.1").unwrap();
    assert_eq!((addr.port(), host.as_str()), (80, "127.0.0.1"));
    let (addr, _) = parse_target("http://[::1]:81").unwrap();
    assert_eq!(addr.to_string(), "[::1]:81");
    assert!(parse_target("https://127.0.0.1").is_err());
    assert!(parse_target("http://").is_err());
}
