//! End to end through network namespaces with the balancer attached in native (driver) mode:
//! real TCP connections from a client to a VIP are answered by the servers directly (L2 direct
//! server return), and the front only ever sees the client -> VIP direction. Needs root, `ip`,
//! `sysctl` and `ethtool`.
//!
//! ```text
//!   client ──┐
//!   front  ──┼── br0 (own namespace)        client -> front (ARP for the VIP) -> XDP_TX -> srvN
//!   srv1   ──┤                              srvN -> client (from the VIP, not via the front)
//!   srv2   ──┘
//! ```
//!
//! The testbed is tests/support/dsr.rs; every namespace, veth, thread and pin it creates is
//! removed when it drops, also when an assertion fails half-way through the setup.

mod support;

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use common::GlobalCounter as C;
use support::{
    dsr::DsrTestbed,
    netns::{HttpServer, connect_from, in_netns},
};

/// The test subnet. It exists only inside the test's namespaces (each run has its own), so
/// parallel runs cannot collide.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const VIP_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);
const SERVERS: [(&str, Ipv4Addr); 2] = [
    ("srv1", Ipv4Addr::new(10, 213, 0, 11)),
    ("srv2", Ipv4Addr::new(10, 213, 0, 12)),
];
const PORT: u16 = 80;
/// Client connections, from source ports `FIRST_PORT..FIRST_PORT + CONNECTIONS`.
const CONNECTIONS: u16 = 20;
const FIRST_PORT: u16 = 42_000;

/// One HTTP request from `src` to the VIP; returns the response body.
fn request(src: SocketAddrV4) -> io::Result<String> {
    let mut stream = connect_from(src, SocketAddrV4::new(VIP_IP, PORT))?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {VIP_IP}\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_owned()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP 200 response: {response:?}"),
        )),
    }
}

#[test]
fn tcp_to_the_vip_is_answered_by_the_servers_directly() {
    let mut bed = DsrTestbed::new(FRONT_IP, SocketAddrV4::new(VIP_IP, PORT), HttpServer::start);
    let client = bed.add_client("client", CLIENT_IP);
    for (name, ip) in SERVERS {
        bed.add_server(name, ip);
    }
    let vip = bed.vip;

    // Which server each connection should reach, as `l4-ctl lookup` predicts it.
    let expected: Vec<(SocketAddrV4, &str)> = (FIRST_PORT..FIRST_PORT + CONNECTIONS)
        .map(|port| {
            let src = SocketAddrV4::new(CLIENT_IP, port);
            (src, bed.server_for(src))
        })
        .collect();
    for (name, _) in SERVERS {
        assert!(
            expected.iter().any(|(_, n)| *n == name),
            "the chosen source ports never hash to {name}: pick other ports"
        );
    }

    // Stops at the first failed request, so that a broken path fails in seconds.
    let answers: Result<Vec<String>, String> = in_netns(&client, || {
        expected
            .iter()
            .map(|(src, _)| {
                request(*src).map_err(|e| format!("request from {src} to {VIP_IP}:{PORT}: {e}"))
            })
            .collect()
    });
    let answers = answers.unwrap_or_else(|e| panic!("{e}"));
    for ((src, name), body) in expected.iter().zip(&answers) {
        assert_eq!(
            body, name,
            "the connection from {src} was answered by the wrong server"
        );
    }

    // The front saw the client -> VIP direction only, and forwarded all of it.
    let tb = &bed.front;
    let meta = tb.bal.vip(&vip).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let (vip_packets, counters) = loop {
        let vip_packets = tb.bal.vip_traffic(meta.vip_id).unwrap().packets;
        let counters = tb.bal.global_counters().unwrap();
        if vip_packets == counters[C::Tx as usize] || Instant::now() > deadline {
            break (vip_packets, counters);
        }
        thread::sleep(Duration::from_millis(10));
    };
    println!("front: {vip_packets} VIP packets; counters {counters:?}");
    assert!(
        vip_packets >= 3 * u64::from(CONNECTIONS),
        "the front saw only {vip_packets} VIP packets for {CONNECTIONS} connections"
    );
    assert_eq!(
        counters[C::Tx as usize],
        vip_packets,
        "every VIP packet is sent on with XDP_TX"
    );
    assert_eq!(
        counters[C::PassNotVip as usize],
        0,
        "a packet not aimed at the VIP (a server's reply?) reached the front"
    );
    for c in [
        C::DropTruncated,
        C::DropMalformed,
        C::DropFragment,
        C::DropNoReal,
        C::DropRedirectFailed,
        C::Redirect,
        C::ConnInsertFailed,
    ] {
        assert_eq!(counters[c as usize], 0, "{c:?}");
    }
    // (A retransmitted SYN is placed again, so there may be more new flows than connections.)
    assert!(
        counters[C::NewFlows as usize] >= u64::from(CONNECTIONS),
        "one new flow per connection at least"
    );
    assert_eq!(
        counters[C::ConnMisses as usize],
        0,
        "every packet after a SYN found its flow in the connection table"
    );
    for real in tb.bal.reals(&vip).unwrap() {
        assert!(
            tb.bal.real_traffic(real.id).unwrap().packets > 0,
            "real {} got no packets",
            real.addr()
        );
    }

    // Each server answered exactly the connections the front sent it.
    for (name, server) in bed.servers.drain(..) {
        let served = server
            .stop()
            .unwrap_or_else(|e| panic!("server {name}: {e}"));
        let expected_count = expected.iter().filter(|(_, n)| *n == name).count();
        assert_eq!(
            served as usize, expected_count,
            "requests answered by {name}"
        );
    }
}
