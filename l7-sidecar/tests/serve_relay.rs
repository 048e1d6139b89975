//! The relay cache (`relay-cache-bytes`): a sidecar keeps copies of the hot objects it
//! forwards to their owners and answers them itself; cold ones are never copied; a copy
//! outlives a PURGE at the owner by at most `relay-max-age`; a full relay cache keeps its hot
//! copies against colder keys; one too large to copy is not tried on every request; off at
//! 0 bytes.

mod support;

use std::time::Duration;

use support::client::Client;
use support::{Cluster, Step};

/// Relay cache flags: 8 MiB, copies fresh for at most a second.
const RELAY: [&str; 4] = ["--relay-cache-bytes", "8388608", "--relay-max-age", "1s"];

/// Requests answered by `route` with status 200 on sidecar `i`.
fn answered(c: &Cluster, i: usize, route: &str) -> f64 {
    c.sidecars[i].metric(&format!(
        "dl7_l7_requests_total{{route=\"{route}\",status=\"200\"}}"
    ))
}

#[test]
fn hot_keys_are_copied_and_answered_where_they_enter_and_cold_ones_are_not() {
    let c = Cluster::start(154, 3, &RELAY);
    // Owned by sidecar 1, entering at sidecar 0.
    let hot = c.owned_key(1, |i| format!("/obj/hot-{i}?size=3000"));
    let cold = c.owned_key(1, |i| format!("/obj/cold-{i}?size=3000"));
    let mut client = Client::connect(c.sidecars[0].listen);
    for n in 1..=6 {
        let r = client.get(&hot);
        assert_eq!(
            (r.status, r.body),
            (200, support::body(&hot, 3000)),
            "request {n}"
        );
    }
    for _ in 0..2 {
        assert_eq!(client.get(&cold).status, 200);
    }
    let entry = &c.sidecars[0];
    // The fourth request made the key hot: its answer was the copy's fill from the owner.
    assert_eq!(entry.metric("dl7_l7_relay_fills_total"), 1.0);
    assert_eq!(entry.metric("dl7_l7_relay_hits_total"), 2.0);
    assert_eq!(answered(&c, 0, "relay"), 3.0, "the fill and two hits");
    assert_eq!(
        entry.metric("dl7_l7_relay_objects"),
        1.0,
        "the cold key is not copied"
    );
    assert_eq!(
        answered(&c, 1, "local"),
        6.0,
        "the owner saw 4 + 2 requests"
    );
    assert_eq!(c.origin.fetches(&hot), 1, "once, at the owner");
    // The entry's hottest keys: the hot one, counted from its fourth request on (the fill and
    // two hits); the cold one never reached the table.
    let listed = dl7_testbed::http::get(entry.metrics, "/hot", "admin").unwrap();
    assert_eq!(listed.status, 200);
    let body = String::from_utf8(listed.body).unwrap();
    let first = format!("{hot}\",\"count\":3,\"overcount\":0}}");
    assert!(
        body.starts_with("{\"keys\":[{\"key\":\"") && body.contains(&first),
        "{body}"
    );
    assert!(!body.contains(&cold), "{body}");

    // Off: every request is forwarded.
    let c = Cluster::start(155, 2, &["--relay-cache-bytes", "0"]);
    let t = c.owned_key(1, |i| format!("/obj/hot-{i}?size=100"));
    let mut client = Client::connect(c.sidecars[0].listen);
    for _ in 0..6 {
        assert_eq!(client.get(&t).status, 200);
    }
    assert_eq!(answered(&c, 1, "local"), 6.0);
    assert_eq!(answered(&c, 0, "relay"), 0.0);
    let hot = dl7_testbed::http::get(c.sidecars[0].metrics, "/hot", "admin").unwrap();
    assert_eq!(hot.status, 404, "no relay cache, no sketch");
}

#[test]
fn a_copy_outlives_a_purge_at_the_owner_by_at_most_relay_max_age() {
    let mut flags = RELAY.to_vec();
    flags.extend(["--purge-allow", "127.0.0.0/8"]);
    let c = Cluster::start(156, 3, &flags);
    let t = c.owned_key(1, |i| format!("/script/purged-{i}"));
    let name = t.trim_start_matches("/script/");
    let version = |v: &str| {
        vec![Step::Send(
            format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nETag: \"{v}\"\r\nContent-Length: 2\r\n\r\n{v}")
                .into_bytes(),
        )]
    };
    c.origin.script(name, version("v1"));
    let mut client = Client::connect(c.sidecars[0].listen);
    for _ in 0..5 {
        assert_eq!(client.get(&t).body, b"v1");
    }
    assert_eq!(c.sidecars[0].metric("dl7_l7_relay_hits_total"), 1.0);
    // The object changes and is purged at its owner (the PURGE enters at sidecar 0 too).
    c.origin.script(name, version("v2"));
    client.send(format!("PURGE {t} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    assert_eq!(
        client
            .read_response(false)
            .expect("the PURGE's answer")
            .status,
        200
    );
    // Within relay-max-age the copy may still answer; after it, never.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        client.get(&t).body,
        b"v2",
        "the copy was revalidated with the owner"
    );
    assert_eq!(client.get(&t).body, b"v2");
}

#[test]
fn a_full_relay_cache_keeps_its_hot_copies_against_lukewarm_keys() {
    // 64 KiB: about twenty 2,500-byte copies fill it.
    let c = Cluster::start(157, 3, &["--relay-cache-bytes", "65536"]);
    let entry = &c.sidecars[0];
    let mut client = Client::connect(entry.listen);
    let mut get = |t: &str| {
        let r = client.get(t);
        assert_eq!((r.status, r.body.len()), (200, 2500), "{t}");
    };
    // Forty keys asked for twelve times each, round by round: the first to turn hot fill the
    // cache; the others are never hotter than those and stay out.
    let hot = c.keys_owned_by(1, "hot", 2500, 40);
    for _ in 0..12 {
        for t in &hot {
            get(t);
        }
    }
    let (objects, fills) = (
        entry.metric("dl7_l7_relay_objects"),
        entry.metric("dl7_l7_relay_fills_total"),
    );
    let capacity = entry.metric("dl7_l7_relay_capacity_bytes");
    assert_eq!(capacity, 65536.0);
    assert!(
        entry.metric("dl7_l7_relay_bytes") + 4096.0 > capacity,
        "the copies fill the cache"
    );
    assert!((10.0..40.0).contains(&objects), "{objects} copies");
    assert_eq!(fills, objects, "one fill per copy, none pushed out");
    assert_eq!(entry.metric("dl7_l7_relay_evictions_total"), 0.0);
    // A lukewarm key (hot, but colder than every copy) is forwarded, not copied.
    let lukewarm = c.owned_key(1, |i| format!("/obj/lukewarm-{i}?size=2500"));
    for _ in 0..6 {
        get(&lukewarm);
    }
    assert_eq!(entry.metric("dl7_l7_relay_fills_total"), fills);
    assert_eq!(entry.metric("dl7_l7_relay_objects"), objects);
    // A key hotter than the copies gets in.
    let hotter = c.owned_key(1, |i| format!("/obj/hotter-{i}?size=2500"));
    for _ in 0..16 {
        get(&hotter);
    }
    assert_eq!(entry.metric("dl7_l7_relay_fills_total"), fills + 1.0);
    let relayed = answered(&c, 0, "relay");
    get(&hotter);
    assert_eq!(
        answered(&c, 0, "relay"),
        relayed + 1.0,
        "answered from its copy"
    );
}

#[test]
fn a_hot_object_too_large_to_copy_is_forwarded_until_relay_max_age() {
    // 64 KiB: copies up to 4 KiB; this object is 10,000 bytes.
    let c = Cluster::start(
        158,
        3,
        &["--relay-cache-bytes", "65536", "--relay-max-age", "1s"],
    );
    let entry = &c.sidecars[0];
    let big = c.owned_key(1, |i| format!("/obj/big-{i}?size=10000"));
    let mut client = Client::connect(entry.listen);
    for _ in 0..8 {
        let r = client.get(&big);
        assert_eq!((r.status, r.body), (200, support::body(&big, 10000)));
    }
    // The fourth request tried a copy and stored nothing; the others were forwarded.
    assert_eq!(entry.metric("dl7_l7_relay_fills_total"), 1.0);
    assert_eq!(entry.metric("dl7_l7_relay_objects"), 0.0);
    assert_eq!(answered(&c, 0, "peer"), 7.0);
    // After relay-max-age it is tried again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.get(&big).status, 200);
    assert_eq!(entry.metric("dl7_l7_relay_fills_total"), 2.0);
}
