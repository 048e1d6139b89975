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
//! Every namespace, veth, thread and pin the test creates is removed when [`Testbed`] drops,
//! also when an assertion fails half-way through the setup.

mod support;

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::FromRawFd,
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use common::GlobalCounter as C;
use l4_ctl::{AttachMode, RealSpec, Vip};
use support::objects;
use support::{
    TestBalancer,
    netns::{HttpServer, IFACE, IO_TIMEOUT, Netns, in_netns, require_tools, run, sysctl},
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

/// The namespaces, programs and servers of one run. Fields drop in declaration order: the
/// servers stop, the programs are detached (closing their links) before their interfaces go
/// away, and the namespaces go last.
struct Testbed {
    servers: Vec<(&'static str, HttpServer)>,
    front: Option<TestBalancer>,
    peer_pass: Option<Ebpf>,
    net: Netns,
}

/// A TCP connection from the fixed source address `src` (so that the test knows the flow's
/// 5-tuple in advance), with a bounded connect.
fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a fd this function owns (through `stream`, which
    // closes it on every return path), with correctly sized arguments.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let local = sockaddr(src);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(dst);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        match libc::poll(&mut pollfd, 1, IO_TIMEOUT.as_millis() as libc::c_int) {
            0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            n if n < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// One HTTP request from `src` to the VIP; returns the response body.
fn request(src: SocketAddrV4) -> io::Result<String> {
    let mut stream = connect_from(src, SocketAddrV4::new(VIP_IP, PORT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
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
    require_tools(&[
        ("ip", "-V", "iproute2"),
        ("sysctl", "--version", "procps"),
        ("ethtool", "--version", "ethtool"),
    ]);
    let mut bed = Testbed {
        servers: Vec::new(),
        front: None,
        peer_pass: None,
        net: Netns::new(),
    };
    let br = bed.net.add_bridge();

    let (front, front_mac) = bed.net.add_host("front", FRONT_IP);
    // The front answers ARP for the VIP: clients send VIP traffic to the front's MAC.
    run(&format!("ip -n {front} addr add {VIP_IP}/32 dev {IFACE}"));

    let (client, _) = bed.net.add_host("client", CLIENT_IP);
    // The front's XDP_TX does not finish checksums left to offload (see TOOLCHAIN.md).
    run(&format!("ip netns exec {client} ethtool -K {IFACE} tx off"));

    let mut reals = Vec::new();
    for (name, ip) in SERVERS {
        let (ns, mac) = bed.net.add_host(name, ip);
        // Hold the VIP on lo without answering ARP for it (only the front may).
        sysctl(
            &ns,
            &[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                &format!("net.ipv4.conf.{IFACE}.arp_ignore=1"),
                &format!("net.ipv4.conf.{IFACE}.arp_announce=2"),
                "net.ipv4.conf.all.rp_filter=0",
                &format!("net.ipv4.conf.{IFACE}.rp_filter=0"),
            ],
        );
        run(&format!("ip -n {ns} addr add {VIP_IP}/32 dev lo"));
        let server = HttpServer::start(&ns, SocketAddrV4::new(VIP_IP, PORT), name);
        bed.servers.push((name, server));
        reals.push((name, ip, mac));
    }

    // Native XDP_TX into a veth needs an XDP program on its peer: the front's bridge port.
    let mut pass = Ebpf::load(objects::PASS).expect("load dl7_pass");
    let program: &mut Xdp = pass
        .program_mut(objects::PASS_PROGRAM)
        .expect("dl7_pass in its object")
        .try_into()
        .expect("an XDP program");
    program.load().expect("load dl7_pass into the kernel");
    in_netns(&br, || program.attach("vfront", XdpMode::Driver))
        .expect("attach dl7_pass natively to the front's bridge port");
    bed.peer_pass = Some(pass);

    // The front: VIP and reals through the Balancer API, attached natively to its veth.
    let vip: Vip = format!("{VIP_IP}:{PORT}/tcp").parse().unwrap();
    let mut tb = TestBalancer::new();
    tb.bal.add_vip(&vip).expect("add the VIP");
    for &(_, ip, mac) in &reals {
        tb.bal
            .add_real(
                &vip,
                &RealSpec {
                    addr: ip.into(),
                    mac,
                    src_mac: front_mac,
                    egress_ifindex: None,
                    weight: 1,
                    encap: l4_ctl::Encap::L2,
                },
            )
            .expect("add a real");
    }
    let bal = &mut tb.bal;
    in_netns(&front, move || bal.attach(IFACE, AttachMode::Native))
        .expect("attach the balancer natively to the front's veth");
    let tb = bed.front.insert(tb);
    let link = run(&format!("ip -n {front} -d link show {IFACE}"));
    assert!(
        link.contains(" xdp ") && link.contains("prog/xdp id"),
        "the front's {IFACE} should run XDP in driver mode: {link}"
    );

    // Which server each connection should reach, as `l4-ctl lookup` predicts it.
    let expected: Vec<(SocketAddrV4, &str)> = (FIRST_PORT..FIRST_PORT + CONNECTIONS)
        .map(|port| {
            let src = SocketAddrV4::new(CLIENT_IP, port);
            let real = tb
                .bal
                .lookup(&vip, SocketAddr::V4(src))
                .expect("lookup")
                .expect("the VIP has reals");
            let name = reals
                .iter()
                .find(|(_, ip, _)| real.addr() == *ip)
                .map(|(name, _, _)| *name)
                .expect("lookup names one of the servers");
            (src, name)
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
