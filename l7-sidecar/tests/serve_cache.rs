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

/// Sends `GET target` with `fields` on `client` and reads the answer.
fn get_with(client: &mut Client, target: &str, fields: &str) -> support::client::Response {
    client.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n{fields}\r\n").as_bytes());
    client.read_response(false).expect("a response")
}

#[test]
fn conditional_requests_are_answered_from_the_stored_response() {
    let c = Cluster::start(143, 3, &[]);
    let t = c.keys_owned_by(1, "cond", 500, 1).remove(0);
    // Straight to the owner, and through the other sidecar, which forwards to it.
    for (via, entry) in [("owner", 1), ("forwarded", 0)] {
        let mut client = Client::connect(c.sidecars[entry].listen);
        let full = client.get(&t);
        assert_eq!((full.status, full.body.len()), (200, 500), "{via}");
        let etag = full.header("etag").expect("the origin's ETag").to_owned();

        let r = get_with(&mut client, &t, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((r.status, r.body.len()), (304, 0), "{via}: If-None-Match");
        assert_eq!(
            r.header("etag"),
            Some(etag.as_str()),
            "{via}: a 304 names the ETag"
        );
        assert!(
            r.header("age").is_some() && r.header("content-length").is_none(),
            "{via}"
        );
        let r = get_with(&mut client, &t, &format!("If-None-Match: W/{etag}\r\n"));
        assert_eq!(r.status, 304, "{via}: weak comparison");
        let r = get_with(&mut client, &t, "If-None-Match: \"other\"\r\n");
        assert_eq!((r.status, r.body.len()), (200, 500), "{via}: another tag");
        let r = get_with(&mut client, &t, "If-Match: \"other\"\r\n");
        assert_eq!(r.status, 412, "{via}: If-Match fails");
        let r = get_with(&mut client, &t, &format!("If-Match: {etag}\r\n"));
        assert_eq!(
            (r.status, r.body.len()),
            (200, 500),
            "{via}: If-Match holds"
        );
        // The connection is still in step after the 304s and the 412.
        assert_eq!(client.get(&t).body, full.body, "{via}");
    }
    assert_eq!(
        c.origin.fetches(&t),
        1,
        "every answer came from the owner's cache"
    );

    // A conditional request on a miss: the owner fetches the whole object, stores it, and
    // answers the condition.
    let t2 = c.keys_owned_by(1, "cond-miss", 300, 1).remove(0);
    let mut client = Client::connect(c.sidecars[0].listen);
    let r = get_with(&mut client, &t2, "If-None-Match: *\r\n");
    assert_eq!(r.status, 304);
    assert_eq!(client.get(&t2).body.len(), 300);
    assert_eq!(c.origin.fetches(&t2), 1);
    // Counted where the answers were made: two 304s and a 412 per pass, one more 304.
    let answers = |status: &str| {
        c.sidecars[1].metric(&format!(
            "dl7_l7_cache_answers_total{{status=\"{status}\"}}"
        ))
    };
    assert_eq!((answers("304"), answers("412")), (5.0, 2.0));
    assert_eq!(
        c.sidecars[0].metric("dl7_l7_cache_answers_total{status=\"304\"}"),
        0.0,
        "the forwarding sidecar made none"
    );
}

#[test]
fn a_successful_unsafe_request_invalidates_the_stored_response_on_its_owner() {
    let c = Cluster::start(144, 3, &[]);
    let cacheable = "Cache-Control: max-age=600\r\n";
    c.origin.script("inv", respond(cacheable));
    c.origin.script(
        "inv-fails",
        vec![Step::Send(
            format!("HTTP/1.1 500 Oops\r\n{cacheable}Content-Length: 2\r\n\r\nno").into_bytes(),
        )],
    );
    // Keys owned by sidecar 1. GETs enter at sidecar 2 and unsafe requests at sidecar 0: both
    // forward them to the owner, where the object lives and the invalidation lands.
    let owned = |name: &str| c.owned_key(1, |i| format!("/script/{name}/{i}"));
    let mut reader = Client::connect(c.sidecars[2].listen);
    let mut writer = Client::connect(c.sidecars[0].listen);
    let post = |client: &mut Client, target: &str| {
        client.send(
            format!("POST {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nab")
                .as_bytes(),
        );
        client
            .read_response(false)
            .expect("the POST's response")
            .status
    };
    let t = owned("inv");
    assert_eq!(reader.get(&t).status, 200);
    assert_eq!(reader.get(&t).status, 200);
    assert_eq!(c.origin.fetches(&t), 1, "stored at the owner");
    assert_eq!(post(&mut writer, &t), 200);
    assert_eq!(reader.get(&t).status, 200);
    assert_eq!(
        c.origin.fetches(&t),
        3,
        "the POST, then a new fetch: the GET was invalidated"
    );
    assert_eq!(reader.get(&t).status, 200);
    assert_eq!(c.origin.fetches(&t), 3, "stored again");

    // An error answer to the unsafe request leaves the stored response alone.
    let t = owned("inv-fails");
    assert_eq!(reader.get(&t).status, 500);
    assert_eq!(post(&mut writer, &t), 500);
    assert_eq!(reader.get(&t).status, 500);
    assert_eq!(
        c.origin.fetches(&t),
        2,
        "the GET and the POST; the second GET came from the cache"
    );

    // The same-origin URI in the response's Location is invalidated too.
    let target = owned("loc-target");
    c.origin.script("loc-target", respond(cacheable));
    let created = owned("loc");
    c.origin.script(
        "loc",
        respond(&format!("Location: http://test{target}\r\n{cacheable}")),
    );
    assert_eq!(reader.get(&target).status, 200);
    assert_eq!(reader.get(&target).status, 200);
    assert_eq!(c.origin.fetches(&target), 1);
    assert_eq!(post(&mut writer, &created), 200);
    assert_eq!(reader.get(&target).status, 200);
    assert_eq!(c.origin.fetches(&target), 2, "invalidated by the Location");
}

/// Sends `PURGE target` and reads the status.
fn purge(client: &mut Client, target: &str) -> u16 {
    client.send(format!("PURGE {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    client
        .read_response(false)
        .expect("the PURGE's response")
        .status
}

#[test]
fn purge_from_an_allowed_network_empties_the_owners_entry() {
    let c = Cluster::start(145, 3, &["--purge-allow", "127.0.0.0/8"]);
    let t = c.keys_owned_by(1, "purge", 100, 1).remove(0);
    // Entering at sidecar 0, which forwards to the owner.
    let mut client = Client::connect(c.sidecars[0].listen);
    assert_eq!(client.get(&t).status, 200);
    assert_eq!(purge(&mut client, &t), 200, "an entry removed");
    assert_eq!(purge(&mut client, &t), 404, "none left");
    assert_eq!(client.get(&t).status, 200);
    assert_eq!(c.origin.fetches(&t), 2, "fetched again after the purge");
    assert_eq!(
        c.sidecars[1].metric("dl7_l7_cache_purges_total{result=\"purged\"}"),
        1.0
    );
    assert_eq!(
        c.sidecars[1].metric("dl7_l7_cache_purges_total{result=\"absent\"}"),
        1.0
    );
}

#[test]
fn purge_from_elsewhere_is_refused_and_changes_nothing() {
    let c = Cluster::start(146, 1, &["--purge-allow", "10.0.0.0/8"]);
    let mut client = Client::connect(c.sidecars[0].listen);
    assert_eq!(client.get("/obj/kept?size=10").status, 200);
    assert_eq!(purge(&mut client, "/obj/kept?size=10"), 405);
    assert_eq!(client.get("/obj/kept?size=10").status, 200);
    assert_eq!(
        c.origin.fetches("/obj/kept?size=10"),
        1,
        "still served from the cache"
    );
    assert_eq!(
        c.sidecars[0].metric("dl7_l7_cache_purges_total{result=\"refused\"}"),
        1.0
    );
    // The default lets nobody purge.
    let c = Cluster::start(147, 1, &[]);
    let mut client = Client::connect(c.sidecars[0].listen);
    assert_eq!(purge(&mut client, "/obj/x"), 405);
}

#[test]
fn ranges_are_cut_from_the_stored_object_on_hits_and_misses() {
    let c = Cluster::start(148, 3, &[]);
    let t = c.keys_owned_by(1, "range", 500, 1).remove(0);
    let whole = support::body(&t, 500);
    // Entering at the non-owner, which forwards to the owner.
    let mut client = Client::connect(c.sidecars[0].listen);
    // A range on a miss: the owner stores the whole object and answers the range.
    let r = get_with(&mut client, &t, "Range: bytes=-5\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, whole[495..]);
    assert_eq!(r.header("content-range"), Some("bytes 495-499/500"));
    // On a hit.
    let r = get_with(&mut client, &t, "Range: bytes=0-9\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &whole[..10]));
    assert_eq!(r.header("content-length"), Some("10"));
    let etag = r.header("etag").expect("an ETag").to_owned();
    // Two ranges: multipart/byteranges.
    let r = get_with(&mut client, &t, "Range: bytes=0-1, 498-499\r\n");
    assert_eq!(r.status, 206);
    let content_type = r.header("content-type").unwrap_or_default().to_owned();
    assert!(
        content_type.starts_with("multipart/byteranges; boundary="),
        "{content_type}"
    );
    let boundary = content_type.rsplit('=').next().unwrap_or_default();
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.matches(&format!("--{boundary}")).count(), 3, "{text}");
    assert!(
        text.contains("Content-Range: bytes 0-1/500")
            && text.contains("Content-Range: bytes 498-499/500")
    );
    // Nothing satisfiable: 416.
    let r = get_with(&mut client, &t, "Range: bytes=600-700\r\n");
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */500"))
    );
    // If-Range: the range only while the object is the one named.
    let r = get_with(
        &mut client,
        &t,
        &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(r.status, 206);
    let r = get_with(
        &mut client,
        &t,
        "Range: bytes=0-9\r\nIf-Range: \"other\"\r\n",
    );
    assert_eq!((r.status, r.body.len()), (200, 500));
    // The connection is still in step, and the origin was asked once.
    assert_eq!(client.get(&t).body, whole);
    assert_eq!(c.origin.fetches(&t), 1);
    let answers = |status: &str| {
        c.sidecars[1].metric(&format!(
            "dl7_l7_cache_answers_total{{status=\"{status}\"}}"
        ))
    };
    assert_eq!((answers("206"), answers("416")), (4.0, 1.0));
}

#[test]
fn stale_entries_are_revalidated_with_the_origin_and_refreshed_by_its_304() {
    let c = Cluster::start(149, 3, &[]);
    let mut client = Client::connect(c.sidecars[0].listen);
    // no-cache: stored, but checked with the origin (If-None-Match) before every use.
    // Keys owned by sidecar 1, entering at sidecar 0.
    let owned = |query: &str| c.owned_key(1, |i| format!("/obj/reval-{i}?{query}"));
    let t = owned("size=300&cc=no-cache");
    let whole = support::body(&t, 300);
    for round in 0..3 {
        let r = client.get(&t);
        assert_eq!((r.status, &r.body), (200, &whole), "round {round}");
    }
    assert_eq!(
        c.origin.fetches(&t),
        3,
        "the fill, then a conditional request per use"
    );
    let owner = &c.sidecars[1];
    assert_eq!(
        owner.metric("dl7_l7_cache_revalidations_total{result=\"not_modified\"}"),
        2.0
    );

    // max-age=1: stale after a second; the 304 makes it fresh for another second.
    let t = owned("size=200&cc=max-age=1");
    assert_eq!(client.get(&t).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(client.get(&t).body, support::body(&t, 200), "revalidated");
    assert_eq!(client.get(&t).status, 200, "fresh again: a hit");
    assert_eq!(c.origin.fetches(&t), 2, "the fill and one revalidation");
}

#[test]
fn stale_if_error_serves_the_stale_entry_while_the_origin_fails() {
    let c = Cluster::start(150, 1, &[]);
    let mut client = Client::connect(c.sidecars[0].listen);
    let failing = |status: &str| {
        vec![Step::Send(
            format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nno").into_bytes(),
        )]
    };
    for (name, directives, rescued) in [
        ("sie", "max-age=1, stale-if-error=60", true),
        (
            "sie-must",
            "max-age=1, stale-if-error=60, must-revalidate",
            false,
        ),
    ] {
        let fields = format!("Cache-Control: {directives}\r\nETag: \"a\"\r\n");
        c.origin.script(name, respond(&fields));
        let t = format!("/script/{name}/1");
        assert_eq!(client.get(&t).body, b"ok");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        c.origin.script(name, failing("503 Busy"));
        let r = client.get(&t);
        let want: (u16, &[u8]) = if rescued { (200, b"ok") } else { (503, b"no") };
        assert_eq!(
            (r.status, r.body.as_slice()),
            want,
            "{name}: an error answer"
        );
        if rescued {
            // An origin that drops the connection instead.
            c.origin.script(name, vec![Step::Close]);
            let r = client.get(&t);
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"ok"[..]),
                "{name}: a close"
            );
        }
    }
    assert_eq!(
        c.sidecars[0].metric("dl7_l7_cache_stale_served_total{reason=\"error\"}"),
        2.0
    );

    // The origin down altogether (connections refused): the stale entry still answers.
    let Cluster {
        origin, sidecars, ..
    } = c;
    origin.stop();
    let r = client.get("/script/sie/1");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok"[..]),
        "origin down"
    );
    assert_eq!(
        sidecars[0].metric("dl7_l7_cache_stale_served_total{reason=\"error\"}"),
        3.0
    );
}

#[test]
fn responses_that_vary_are_stored_as_one_variant_per_request_value() {
    let c = Cluster::start(151, 3, &["--purge-allow", "127.0.0.0/8"]);
    let owned = |query: &str| c.owned_key(1, |i| format!("/obj/vary-{i}?{query}"));
    let t = owned("size=50&vary=accept-language");
    let mut client = Client::connect(c.sidecars[0].listen);
    let get = |client: &mut Client, language: Option<&str>| {
        let field = language.map_or(String::new(), |l| format!("Accept-Language: {l}\r\n"));
        let r = get_with(client, &t, &field);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            support::body(&dl7_traffic::origin::varied(&t, language), 50),
            "the variant for {language:?}"
        );
    };
    for round in 0..2 {
        for language in [Some("en"), Some("fr"), None] {
            get(&mut client, language);
        }
        assert_eq!(
            c.origin.fetches(&t),
            3,
            "round {round}: one fetch per variant"
        );
    }
    // Invalidating the URL (here a PURGE) drops every variant.
    assert_eq!(purge(&mut client, &t), 200);
    get(&mut client, Some("en"));
    get(&mut client, Some("fr"));
    assert_eq!(c.origin.fetches(&t), 5, "both fetched again");

    // Vary: * never matches: not stored.
    let star = owned("size=10&vary=*");
    let mut client = Client::connect(c.sidecars[0].listen);
    assert_eq!(client.get(&star).status, 200);
    assert_eq!(client.get(&star).status, 200);
    assert_eq!(c.origin.fetches(&star), 2);
}

#[test]
fn early_hints_reach_http_1_1_clients_through_the_owner() {
    let c = Cluster::start(152, 3, &[]);
    let hints = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
    let t = c.owned_key(1, |i| format!("/script/hints{i}"));
    let name = t.trim_start_matches("/script/");
    let mut steps = vec![Step::Send(hints.as_bytes().to_vec())];
    steps.extend(respond("Cache-Control: no-store\r\n"));
    c.origin.script(name, steps);
    // Entering at the non-owner: the owner's interim response is passed on by both.
    let mut client = Client::connect(c.sidecars[0].listen);
    client.send(format!("GET {t} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    let first = std::iter::repeat_with(|| client.read_one(false).expect("a response"))
        .find(|r| r.status != 102)
        .expect("a response other than 102");
    assert_eq!(first.status, 103);
    assert_eq!(first.header("link"), Some("</style.css>; rel=preload"));
    let last = client.read_response(false).expect("the final response");
    assert_eq!((last.status, last.body.as_slice()), (200, &b"ok"[..]));

    // An HTTP/1.0 client gets no interim response.
    let mut client = Client::connect(c.sidecars[0].listen);
    client.send(format!("GET {t} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes());
    let only = client.read_one(false).expect("a response");
    assert_eq!((only.status, only.body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_behind_the_answer() {
    let c = Cluster::start(153, 3, &[]);
    let owned = |cc: &str| c.owned_key(1, |i| format!("/obj/swr-{i}?size=200&cc={cc}"));
    let t = owned("max-age=1,stale-while-revalidate=60");
    let mut client = Client::connect(c.sidecars[0].listen);
    assert_eq!(client.get(&t).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = client.get(&t);
    assert_eq!((r.status, r.body.len()), (200, 200));
    let age: u64 = r
        .header("age")
        .and_then(|a| a.parse().ok())
        .expect("an Age");
    assert!(
        age >= 1,
        "the stale entry answered, not the origin (Age {age})"
    );
    // The revalidation happens behind the answer, once.
    let owner = &c.sidecars[1];
    let revalidated = "dl7_l7_cache_revalidations_total{result=\"not_modified\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while owner.metric(revalidated) < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(owner.metric(revalidated), 1.0);
    assert_eq!(c.origin.fetches(&t), 2, "the fill and one revalidation");
    let r = client.get(&t);
    assert_eq!(r.header("age"), Some("0"), "refreshed by the 304");
    assert_eq!(c.origin.fetches(&t), 2);
    assert_eq!(
        owner.metric("dl7_l7_cache_stale_served_total{reason=\"revalidating\"}"),
        1.0
    );

    // must-revalidate forbids it: the request waits for the revalidation.
    let t = owned("max-age=1,stale-while-revalidate=60,must-revalidate");
    assert_eq!(client.get(&t).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = client.get(&t);
    assert_eq!((r.status, r.header("age")), (200, Some("0")));
    assert_eq!(c.origin.fetches(&t), 2);
}
