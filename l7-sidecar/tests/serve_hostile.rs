//! What a misbehaving origin or backend can do to the sidecar, over the three paths a request
//! takes: to the owner (client -> owner -> origin), forwarded (client -> another sidecar ->
//! owner -> origin) and central (client -> central balancer -> backend, where the backend is
//! the hostile server itself, so the balancer's member pool is the one under attack).
//!
//! A scripted origin plays each case byte by byte ([`Step`]): unsolicited responses, bodies
//! after `HEAD`, `204` and `304`, more bytes than `Content-Length`, contradictory framing,
//! bad chunking, an early close, 1xx floods and 1xx forever, oversized heads, slow drips,
//! chunked bodies larger than the cache's object limit. Each case checks the client's
//! answer, then that the next three requests through the same pools get exactly their own
//! objects, and again (from the cache where there is one): nothing a bad response leaves
//! behind reaches a later request, and nothing wrong is stored.

mod support;

use std::time::{Duration, Instant};

use support::client::Client;
use support::process::Sidecar;
use support::{Cluster, ip, temp_dir};
use support::{Origin, Step, body, start_origin};

/// Largest object the sidecars under test store (chunked bodies above it stream through).
const MAX_OBJECT: usize = 100_000;
/// The response timeout of the sidecars under test.
const RESPONSE_TIMEOUT: &str = "1s";
/// A response that no request asked for.
const POISON: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nCache-Control: max-age=300\r\n\r\nPOISONED";

/// What the client must get.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// This status (any body).
    Status(u16),
    /// This status and exactly this body.
    Body(u16, Vec<u8>),
    /// No complete response: the connection breaks (the head was already sent).
    Broken,
}

/// One hostile behaviour and the answers on the three paths.
struct Case {
    name: &'static str,
    method: &'static str,
    steps: Vec<Step>,
    owner: Answer,
    central: Answer,
}

fn send(bytes: &[u8]) -> Step {
    Step::Send(bytes.to_vec())
}

/// `size` bytes chunked in pieces of `piece`, cacheable.
fn chunked(size: usize, piece: usize) -> (Vec<u8>, Vec<u8>) {
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut wire =
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for p in body.chunks(piece) {
        wire.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        wire.extend_from_slice(p);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    (wire, body)
}

fn cases() -> Vec<Case> {
    use Answer::{Body, Broken, Status};
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok";
    let head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nCache-Control: max-age=60\r\n\r\n";
    let (over, over_body) = chunked(MAX_OBJECT + 1, 7_000);
    let (much_over, much_over_body) = chunked(MAX_OBJECT * 3 / 2, 4_099);
    let mut huge_head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge_head.extend(std::iter::repeat_n(b'v', 100 * 1024));
    huge_head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    vec![
        Case {
            name: "204-then-unsolicited",
            method: "GET",
            steps: vec![
                send(b"HTTP/1.1 204 No Content\r\n\r\n"),
                Step::Sleep(50),
                send(POISON),
            ],
            owner: Status(204),
            central: Status(204),
        },
        Case {
            name: "200-then-unsolicited",
            method: "GET",
            steps: vec![send(ok), Step::Sleep(50), send(POISON)],
            owner: Body(200, b"ok".to_vec()),
            central: Body(200, b"ok".to_vec()),
        },
        Case {
            name: "body-after-head-response",
            method: "HEAD",
            steps: vec![send(head_only), send(b"POISONED")],
            owner: Status(200),
            central: Status(200),
        },
        Case {
            name: "late-body-after-head-response",
            method: "HEAD",
            steps: vec![send(head_only), Step::Sleep(50), send(b"POISONED")],
            owner: Status(200),
            central: Status(200),
        },
        Case {
            name: "body-on-204",
            method: "GET",
            steps: vec![send(b"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\nPOISONED")],
            owner: Status(204),
            central: Status(204),
        },
        Case {
            name: "body-on-304",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nPOISONED",
            )],
            owner: Status(304),
            central: Status(304),
        },
        Case {
            name: "length-8-bytes-short",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nokPOISONED",
            )],
            owner: Body(200, b"ok".to_vec()),
            central: Body(200, b"ok".to_vec()),
        },
        Case {
            name: "length-short-late-rest",
            method: "GET",
            steps: vec![send(ok), Step::Sleep(50), send(b"POISONED")],
            owner: Body(200, b"ok".to_vec()),
            central: Body(200, b"ok".to_vec()),
        },
        Case {
            name: "length-and-chunked",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "two-lengths",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 10\r\n\r\nokPOISONED",
            )],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "negative-length",
            method: "GET",
            steps: vec![send(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nPOISONED")],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "huge-length",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nPOISONED",
            )],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "bad-chunk-size",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOISONED\r\n0\r\n\r\n",
            )],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "chunk-longer-than-its-size",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokPOISONED\r\n0\r\n\r\n",
            )],
            owner: Status(502),
            // The first two bytes pass before the framing breaks.
            central: Broken,
        },
        Case {
            name: "bad-trailer",
            method: "GET",
            steps: vec![send(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nno colon here\r\n\r\n",
            )],
            owner: Status(502),
            // The body has passed before the trailer is read.
            central: Broken,
        },
        Case {
            name: "early-close-mid-body",
            method: "GET",
            steps: vec![
                send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\r\n"),
                Step::Sleep(20),
                send(&[b'x'; 50]),
                Step::Close,
            ],
            owner: Status(502),
            central: Broken,
        },
        Case {
            name: "interim-flood",
            method: "GET",
            steps: vec![Step::Flood(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), 3_000)],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "interim-forever",
            method: "GET",
            steps: vec![Step::Drip(
                b"HTTP/1.1 100 Continue\r\n\r\n".repeat(4),
                25,
            )],
            owner: Status(504),
            central: Status(504),
        },
        Case {
            name: "oversized-head",
            method: "GET",
            steps: vec![send(&huge_head)],
            owner: Status(502),
            central: Status(502),
        },
        Case {
            name: "head-drip",
            method: "GET",
            steps: vec![Step::Drip(ok.to_vec(), 40)],
            owner: Status(504),
            central: Status(504),
        },
        Case {
            name: "chunked-one-byte-over-the-object-limit",
            method: "GET",
            steps: vec![send(&over)],
            owner: Body(200, over_body.clone()),
            central: Body(200, over_body),
        },
        Case {
            name: "chunked-half-again-over-the-object-limit",
            method: "GET",
            steps: vec![send(&much_over)],
            owner: Body(200, much_over_body.clone()),
            central: Body(200, much_over_body),
        },
    ]
}

/// Sends `method target` on a new connection and reads the answer.
fn ask(entry: std::net::SocketAddr, method: &str, target: &str) -> Answer {
    let mut client = Client::connect(entry);
    client.set_read_timeout(Duration::from_secs(5));
    client.send(format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    match client.read_response(method == "HEAD") {
        Ok(r) => Answer::Body(r.status, r.body),
        Err(_) => Answer::Broken,
    }
}

fn matches(got: &Answer, want: &Answer) -> bool {
    match (got, want) {
        (Answer::Body(s, _), Answer::Status(w)) => s == w,
        (got, want) => got == want,
    }
}

/// One path under test: where clients connect, and which targets go through the pools
/// under attack.
struct Path<'a> {
    name: &'static str,
    entry: std::net::SocketAddr,
    origin: &'a Origin,
    /// The `i`th target with this prefix that takes the path.
    target: &'a dyn Fn(&str, usize) -> String,
    central: bool,
    /// The sidecars whose pools are under attack.
    sidecars: Vec<&'a Sidecar>,
}

impl Path<'_> {
    /// Pooled connections the sidecars retired (unsolicited bytes or a close).
    fn retired(&self) -> f64 {
        self.sidecars
            .iter()
            .map(|s| s.metric("dl7_l7_pool_retired_total"))
            .sum()
    }
}

/// True when a case sends bytes after a pause on a connection it keeps open: they arrive
/// after its answer, on a connection that may already be back in the pool.
fn sends_late(steps: &[Step]) -> bool {
    !steps.iter().any(|s| matches!(s, Step::Close))
        && steps
            .iter()
            .skip_while(|s| !matches!(s, Step::Sleep(_)))
            .any(|s| matches!(s, Step::Send(_)))
}

/// Plays every case on `path`: the answer, then three requests on the same pools that must
/// get their own objects, twice.
fn every_case(path: &Path<'_>) {
    let started = Instant::now();
    for case in cases() {
        path.origin.script(case.name, case.steps.clone());
        let evil = (path.target)(&format!("/script/{}/x", case.name), 0);
        let want = if path.central {
            &case.central
        } else {
            &case.owner
        };
        let retired = path.retired();
        let got = ask(path.entry, case.method, &evil);
        assert!(
            matches(&got, want),
            "{} / {}: got {}, want {:?}",
            path.name,
            case.name,
            describe(&got),
            want
        );
        // Bytes sent late must have reached the pooled connection, and retired it, before the
        // next request may use it: HTTP/1.1 cannot tell bytes that arrive after a request
        // was sent from its response.
        if sends_late(&case.steps) && matches!(got, Answer::Body(..)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while path.retired() <= retired {
                assert!(
                    Instant::now() < deadline,
                    "{} / {}: the late bytes retired no connection",
                    path.name,
                    case.name
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut client = Client::connect(path.entry);
        let targets: Vec<String> = (0..3)
            .map(|i| (path.target)(&format!("/obj/after-{}", case.name), i))
            .collect();
        let mut fetched = Vec::new();
        for round in 0..2 {
            for (i, t) in targets.iter().enumerate() {
                let r = client.get(t);
                let size: u64 = t.rsplit('=').next().and_then(|s| s.parse().ok()).unwrap();
                assert_eq!(
                    (r.status, r.body == body(t, size)),
                    (200, true),
                    "{} / {}: request {i} of round {round} after it got {} {:?}",
                    path.name,
                    case.name,
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(40)])
                );
            }
            if round == 0 {
                fetched = targets.iter().map(|t| path.origin.fetches(t)).collect();
            }
        }
        if !path.central {
            // The second round came from the cache. (The first may have fetched an object
            // twice: a GET is sent again on a new connection when the old one answers with
            // leftover bytes.)
            let again: Vec<u64> = targets.iter().map(|t| path.origin.fetches(t)).collect();
            assert_eq!(again, fetched, "{} / {}: cached", path.name, case.name);
        }
    }
    eprintln!("{}: every case in {:?}", path.name, started.elapsed());
}

fn describe(a: &Answer) -> String {
    match a {
        Answer::Body(s, b) => format!("{s} with {} body bytes", b.len()),
        other => format!("{other:?}"),
    }
}

fn flags() -> Vec<&'static str> {
    vec![
        "--response-timeout",
        RESPONSE_TIMEOUT,
        "--max-object-bytes",
        "100000",
    ]
}

#[test]
fn hostile_origin_behind_the_owner() {
    let c = Cluster::start(131, 1, &flags());
    let target = |prefix: &str, i: usize| format!("{prefix}-{i}?size={}", 1000 + i);
    every_case(&Path {
        name: "owner",
        entry: c.sidecars[0].listen,
        origin: &c.origin,
        target: &target,
        central: false,
        sidecars: vec![&c.sidecars[0]],
    });
    assert!(c.sidecars[0].metric("dl7_l7_pool_retired_total{pool=\"origin\"}") >= 4.0);
}

#[test]
fn hostile_origin_behind_a_forwarded_request() {
    let c = Cluster::start(132, 2, &flags());
    // Every target is owned by s1 and sent to s0: s0's peer pool and s1's origin pool.
    let target = |prefix: &str, i: usize| {
        (0..)
            .map(|v| format!("{prefix}-{i}-{v}?size={}", 1000 + i))
            .find(|t| c.owner(t) == 1)
            .expect("a key owned by s1")
    };
    every_case(&Path {
        name: "forwarded",
        entry: c.sidecars[0].listen,
        origin: &c.origin,
        target: &target,
        central: false,
        sidecars: c.sidecars.iter().collect(),
    });
    assert_eq!(
        c.sidecars[0].metric("dl7_l7_requests_total{route=\"local\"}"),
        0.0,
        "every request was forwarded"
    );
}

#[test]
fn hostile_backend_behind_the_central_balancer() {
    let dir = temp_dir("hostile-central");
    let backend = start_origin(ip(133, 21));
    let mut extra = flags();
    extra.extend(["--threads", "2"]);
    let central = support::central(133, &[backend.local_addr().to_string()], &extra, &dir);
    let target = |prefix: &str, i: usize| format!("{prefix}-{i}?size={}", 1000 + i);
    every_case(&Path {
        name: "central",
        entry: central.listen,
        origin: &backend,
        target: &target,
        central: true,
        sidecars: vec![&central],
    });
}
