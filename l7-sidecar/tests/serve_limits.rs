//! `l7-sidecar serve` against bad input and its limits: every limit answers its status code
//! and closes the connection, request-smuggling vectors are refused with 400 and a close,
//! upstream failures are 502 / 504, excess connections are refused while existing ones go
//! on, random bytes never take the process down, and through all of it a client on another
//! connection keeps being served.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::Cluster;
use support::client::Client;

/// A one-member sidecar with small limits and short timeouts; `extra` flags replace them.
fn strict(net: u8, extra: &[&str]) -> Cluster {
    let defaults = [
        ("--max-head-bytes", "2048"),
        ("--max-headers", "20"),
        ("--max-uri-bytes", "512"),
        ("--max-body-bytes", "10000"),
        ("--header-timeout", "1s"),
        ("--idle-timeout", "1s"),
        ("--response-timeout", "1s"),
    ];
    let mut args: Vec<&str> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|(flag, value)| [*flag, *value])
        .collect();
    args.extend_from_slice(extra);
    Cluster::start(net, 1, &args)
}

/// Sends `request` on a new connection: the answer must be `status`, then the close.
fn refused(c: &Cluster, request: &[u8], status: u16) {
    let mut client = Client::connect(c.sidecars[0].listen);
    // The sidecar may answer and close before it has read everything.
    let _ = client.try_send(request);
    let r = client
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(request)));
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(request));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(client.is_closed(), "still open after {status}");
}

/// A keep-alive client that must keep being served while others misbehave.
struct Bystander(Client);

impl Bystander {
    fn new(c: &Cluster) -> Self {
        let mut client = Client::connect(c.sidecars[0].listen);
        assert_eq!(client.get("/obj/bystander?size=10").status, 200);
        Bystander(client)
    }

    fn still_served(&mut self) {
        let r = self.0.get("/obj/bystander?size=10");
        assert_eq!((r.status, r.body.len()), (200, 10));
    }
}

#[test]
fn size_limits() {
    let c = strict(121, &[]);
    let mut bystander = Bystander::new(&c);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(600));
    refused(&c, long_uri.as_bytes(), 414);
    // A request line that never ends is cut off at the URI limit too.
    refused(&c, "GET /".repeat(200).as_bytes(), 414);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "v".repeat(2100)
    );
    refused(&c, big_head.as_bytes(), 431);
    let many: String = (0..25).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    refused(
        &c,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        431,
    );
    refused(
        &c,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10001\r\n\r\n",
        413,
    );
    let mut chunked_big =
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked_big.extend_from_slice(b"1000\r\n");
        chunked_big.extend(std::iter::repeat_n(b'x', 4096));
        chunked_big.extend_from_slice(b"\r\n");
    }
    chunked_big.extend_from_slice(b"0\r\n\r\n");
    refused(&c, &chunked_big, 413);
    bystander.still_served();
    // Within the limits, bodies pass.
    let mut ok = Client::connect(c.sidecars[0].listen);
    ok.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n");
    ok.send(&[b'y'; 10000]);
    let r = ok.read_response(false).expect("echo");
    assert_eq!((r.status, r.body.len()), (200, 10000));
}

#[test]
fn smuggling_vectors_are_refused_and_closed() {
    let c = strict(122, &[]);
    let mut bystander = Bystander::new(&c);
    let vectors: &[(&str, &[u8])] = &[
        ("CL.TE", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
        ("TE.CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        ("TE obs-fold", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\tcontinued\r\n\r\n"),
        ("duplicate CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
        ("conflicting CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("CL list", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("chunked, identity", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE twice", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE identity", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE in 1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bare LF", b"GET / HTTP/1.1\nHost: t\n\n"),
        ("bare LF in a field", b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"),
        ("space before colon", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("chunk size with spaces", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"),
        ("chunk without CRLF", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n"),
        ("chunk bare LF", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n"),
        ("bad target", b"GET index.html HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("TE tab before colon", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"),
        ("TE vertical tab", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
        ("TE leading space line", b"POST /echo HTTP/1.1\r\nHost: t\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE underscore", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("CL underscore", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent_Length: 5\r\n\r\n0\r\n\r\n"),
        ("XFF underscore", b"GET / HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n"),
        ("bad trailer", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nno colon\r\n\r\n"),
        ("Host with a path", b"GET / HTTP/1.1\r\nHost: t/x\r\n\r\n"),
    ];
    for (name, request) in vectors {
        eprintln!("vector: {name}");
        refused(&c, request, 400);
    }
    refused(&c, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501);
    refused(&c, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    refused(
        &c,
        b"PUT /echo HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n",
        417,
    );
    bystander.still_served();
    // The origin never saw a smuggled request.
    assert_eq!(c.origin.fetches("/echo"), 0);
    // A value that only mentions a framing field is a value: the body is framed by
    // Content-Length and nothing is smuggled.
    let mut client = Client::connect(c.sidecars[0].listen);
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nX: X\tTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello");
    let r = client.read_response(false).expect("echo");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(c.origin.fetches("/echo"), 1);
}

#[test]
fn timeouts() {
    let c = strict(123, &[]);
    // Slowloris: a head that never completes gets 408 after the header timeout.
    let mut slow = Client::connect(c.sidecars[0].listen);
    let started = Instant::now();
    slow.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let _ = slow.try_send(b"X-Drip: 1\r\n");
    // Meanwhile another client is served at once (keep-alive connections idle out after
    // 1 s here, so it is a fresh one).
    Bystander::new(&c).still_served();
    let r = slow.read_response(false).expect("408");
    assert_eq!(r.status, 408);
    assert!(slow.is_closed());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // An idle keep-alive connection is closed quietly after the idle timeout.
    let mut idle = Client::connect(c.sidecars[0].listen);
    assert_eq!(idle.get("/obj/idle?size=1").status, 200);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(idle.is_closed());

    // An origin slower than the response timeout: 504, and the connection stays usable.
    let mut client = Client::connect(c.sidecars[0].listen);
    let r = client.get("/slow/late?ms=2500&size=5&cc=no-store");
    assert_eq!(r.status, 504);
    assert_eq!(client.get("/obj/after-504?size=5").status, 200);
}

#[test]
fn upstream_failures_are_502() {
    let c = strict(124, &[]);
    let support::Cluster {
        sidecars, origin, ..
    } = c;
    let mut client = Client::connect(sidecars[0].listen);
    assert_eq!(client.get("/obj/before?size=5").status, 200);
    drop(origin);
    let r = client.get("/obj/gone?size=5");
    assert_eq!(r.status, 502);
    assert_eq!(r.body, b"502 Bad Gateway\n");
    // Still served from the cache.
    assert_eq!(client.get("/obj/before?size=5").status, 200);
}

#[test]
fn excess_connections_are_refused_and_existing_ones_unaffected() {
    let c = strict(125, &["--max-connections", "4", "--idle-timeout", "30s"]);
    let listen = c.sidecars[0].listen;
    let mut held: Vec<Client> = (0..4)
        .map(|i| {
            let mut client = Client::connect(listen);
            assert_eq!(client.get(&format!("/obj/cap{i}?size=3")).status, 200);
            client
        })
        .collect();
    let mut extra = Client::connect(listen);
    let refused = match extra.read_response(false) {
        Ok(r) => r.status == 503,
        Err(_) => true,
    };
    assert!(refused, "a fifth connection is refused");
    assert!(c.sidecars[0].metric("dl7_l7_connections_refused_total{listener=\"client\"}") >= 1.0);
    for (i, client) in held.iter_mut().enumerate() {
        assert_eq!(client.get(&format!("/obj/cap{i}?size=3")).status, 200);
    }
    // A freed slot is available again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Client::connect(listen);
        if again
            .try_get("/obj/again?size=3")
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn protocol_details() {
    let c = strict(126, &[]);
    let listen = c.sidecars[0].listen;
    // Expect: 100-continue gets the interim response before the body is sent.
    let mut client = Client::connect(listen);
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(client.read_one(false).expect("100").status, 100);
    client.send(b"hello");
    let r = client.read_response(false).expect("echo");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

    // Hop-by-hop fields are not forwarded; Via, X-Forwarded-For and the hop count are.
    client.send(
        b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
          X-Forwarded-For: 192.0.2.1\r\nVia: 1.0 other\r\nX-End: kept\r\n\r\n",
    );
    let r = client.read_response(false).expect("headers");
    let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    for gone in [
        "x-private",
        "keep-alive",
        "te:",
        "upgrade",
        "proxy-connection",
        "connection:",
    ] {
        assert!(!seen.contains(gone), "{gone} was forwarded: {seen}");
    }
    let client_ip = client.local_ip().to_string();
    assert!(
        seen.contains(&format!("x-forwarded-for: 192.0.2.1, {client_ip}\r\n")),
        "{seen}"
    );
    assert!(seen.contains("via: 1.0 other, 1.1 dl7\r\n"), "{seen}");
    assert!(seen.contains("x-dl7-hop: 1\r\n"), "{seen}");
    assert!(seen.contains("x-end: kept\r\n"), "{seen}");
    assert_eq!(r.header("via"), Some("1.1 dl7"));

    // A response delimited by the origin's close reaches an HTTP/1.1 client chunked, on a
    // connection that stays open.
    let r = client.get("/close/c?size=5000");
    assert_eq!((r.status, r.body.len()), (200, 5000));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    // HEAD: the length of the GET body, no body.
    client.send(b"HEAD /obj/h?size=77 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = client.read_response(true).expect("HEAD");
    assert_eq!(r.header("content-length"), Some("77"));
    assert_eq!(client.get("/obj/h?size=77").body.len(), 77);

    // HTTP/1.0: closed after the response unless it asks for keep-alive.
    let mut old = Client::connect(listen);
    old.send(b"GET /obj/old?size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = old.read_response(false).expect("1.0 keep-alive");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    old.send(b"GET /obj/old?size=4 HTTP/1.0\r\n\r\n");
    assert_eq!(old.read_response(false).expect("1.0").body.len(), 4);
    assert!(old.is_closed());

    // Connection: close is honoured.
    let mut closing = Client::connect(listen);
    closing.send(b"GET /obj/cl?size=4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(
        closing
            .read_response(false)
            .expect("close")
            .header("connection"),
        Some("close")
    );
    assert!(closing.is_closed());
}

/// Random bytes and mangled requests: every answer is a well-formed response, the process
/// stays up, and normal requests keep working.
#[test]
fn random_input_never_breaks_the_process() {
    let c = strict(127, &[]);
    let mut bystander = Bystander::new(&c);
    let seeds: [&[u8]; 3] = [
        b"GET /obj/r?size=3 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    ];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..300 {
        let mut input = seeds[i % 3].to_vec();
        for _ in 0..1 + next() % 4 {
            let pos = next() as usize % input.len();
            match next() % 3 {
                0 => input[pos] = next() as u8,
                1 => input.insert(pos, b"\r\n :;,\x00\t0"[(next() % 9) as usize]),
                _ => {
                    input.remove(pos);
                }
            }
        }
        if i % 7 == 0 {
            input = (0..next() % 400).map(|_| next() as u8).collect();
        }
        let mut s = TcpStream::connect(c.sidecars[0].listen).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(&input);
        let _ = s.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1.1 "),
                "{:?} -> {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            );
        }
    }
    bystander.still_served();
    assert!(c.sidecars[0].log_text().find("panicked").is_none());
}

/// Request bodies that trickle in (a byte every 300 ms, each read well within the client
/// timeout) are cut off by the whole-body deadline: 408 and a close, and the upstream
/// connections they held are released.
#[test]
fn slow_request_bodies_are_cut_off() {
    let c = strict(128, &["--body-timeout", "1s", "--client-timeout", "5s"]);
    let listen = c.sidecars[0].listen;
    let mut bystander = Bystander::new(&c);
    let started = Instant::now();
    let trickles: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut client = Client::connect(listen);
                client.send(
                    format!("POST /echo/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
                        .as_bytes(),
                );
                for _ in 0..20 {
                    if client.try_send(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    if client.has_bytes() {
                        break;
                    }
                }
                let r = client.read_response(false).expect("an answer");
                (r.status, r.header("connection").map(str::to_owned))
            })
        })
        .collect();
    bystander.still_served();
    for t in trickles {
        let (status, connection) = t.join().expect("trickling client");
        assert_eq!((status, connection.as_deref()), (408, Some("close")));
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    // (Keep-alive connections idle out after 1 s here.)
    Bystander::new(&c).still_served();
    let s = &c.sidecars[0];
    assert!(s.metric("dl7_l7_client_errors_total{reason=\"body_timeout\"}") >= 20.0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.metric("dl7_l7_pool_connections{pool=\"origin\",state=\"open\"}") > 1.0 {
        assert!(Instant::now() < deadline, "origin connections still held");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `--key host-path`, a `Host` that is not `host[:port]` is refused (it could make two
/// resources share a key), and an absolute-form target's authority wins over `Host`: it is
/// the key and the `Host` the origin receives.
#[test]
fn host_is_checked_and_the_target_authority_wins() {
    let c = strict(129, &["--key", "host-path"]);
    refused(
        &c,
        b"GET /T/page HTTP/1.1\r\nHost: good/p/slash\r\n\r\n",
        400,
    );
    refused(&c, b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400);
    let listen = c.sidecars[0].listen;
    let mut client = Client::connect(listen);
    client.send(b"GET http://good/headers HTTP/1.1\r\nHost: evil\r\n\r\n");
    let r = client.read_response(false).expect("headers");
    let seen = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        seen.starts_with("GET /headers HTTP/1.1\r\nHost: good\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("evil"), "{seen}");
    // The same path on two hosts is two objects.
    for host in ["one.example", "two.example"] {
        client.send(format!("GET /obj/same?size=7 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(client.read_response(false).expect("obj").status, 200);
    }
    assert_eq!(c.origin.fetches("/obj/same?size=7"), 2);
    assert_eq!(c.sidecars[0].metric("dl7_l7_cache_objects"), 2.0);
}
