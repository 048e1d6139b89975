//! The embedded cache as an HTTP cache (RFC 9111), seen from a client: what it stores, for
//! how long, and the `Age` and `Date` it answers with. The origin plays exact response heads
//! (`/script/NAME`), so every rule is reached with the fields that decide it.

mod support;

use l7_sidecar::http::date;
use support::client::Client;
use support::{Cluster, Step};

/// A response with `fields` (each line ending in CRLF) and the body `ok`.
fn respond(fields: &str) -> Vec<Step> {
    vec![Step::Send(
        format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok").into_bytes(),
    )]
}

/// `t` as an HTTP date.
fn http_date(t: u64) -> String {
    String::from_utf8_lossy(&date::format(t)).into_owned()
}

#[test]
fn freshness_decides_what_is_served_from_the_cache() {
    let c = Cluster::start(141, 1, &[]);
    let now = date::now();
    let cases: [(&str, String, bool); 7] = [
        // No freshness and nothing to base a heuristic on: never served from the cache.
        ("none", String::new(), false),
        ("max-age", "Cache-Control: max-age=60\r\n".into(), true),
        (
            "expires",
            format!(
                "Date: {}\r\nExpires: {}\r\n",
                http_date(now),
                http_date(now + 60)
            ),
            true,
        ),
        ("expires-invalid", "Expires: 0\r\n".into(), false),
        // Heuristic: a tenth of a day since Last-Modified.
        (
            "heuristic",
            format!("Last-Modified: {}\r\n", http_date(now - 86_400)),
            true,
        ),
        // Older than its lifetime when it arrives.
        (
            "too-old",
            "Cache-Control: max-age=10\r\nAge: 20\r\n".into(),
            false,
        ),
        (
            "no-cache",
            "Cache-Control: no-cache, max-age=60\r\n".into(),
            false,
        ),
    ];
    for (name, fields, _) in &cases {
        c.origin.script(name, respond(fields));
    }
    let mut client = Client::connect(c.sidecars[0].listen);
    for (name, _, cached) in &cases {
        let target = format!("/script/{name}/1");
        for round in 0..2 {
            let r = client.get(&target);
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"ok"[..]),
                "{name} {round}"
            );
        }
        let want = if *cached { 1 } else { 2 };
        assert_eq!(c.origin.fetches(&target), want, "{name}: origin fetches");
    }
}

#[test]
fn answers_carry_one_corrected_age_and_a_date() {
    let c = Cluster::start(142, 1, &[]);
    c.origin.script(
        "aged",
        respond("Cache-Control: max-age=600\r\nAge: 100\r\n"),
    );
    let mut client = Client::connect(c.sidecars[0].listen);
    for round in 0..2 {
        let r = client.get("/script/aged/1");
        assert_eq!(r.status, 200);
        let ages: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("age"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            ages.len(),
            1,
            "round {round}: one Age, not the origin's too: {ages:?}"
        );
        let age: u64 = ages[0].parse().expect("Age is a number");
        assert!((100..110).contains(&age), "round {round}: Age {age}");
        // The origin sent no Date: the cache adds the time the response arrived.
        let sent = r.header("date").and_then(|d| date::parse(d.as_bytes()));
        assert!(
            sent.is_some_and(|d| d.abs_diff(date::now()) < 10),
            "round {round}: Date {:?}",
            r.header("date")
        );
    }
    assert_eq!(c.origin.fetches("/script/aged/1"), 1);
}
