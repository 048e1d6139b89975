//! Golden packets for L3 direct server return and ICMP errors: frames through the loaded
//! balancer with BPF_PROG_TEST_RUN as if they arrived on the front's interface of a network
//! namespace whose routes the program's FIB lookups read ([`support::fib`]). Rows as in
//! golden.rs: description, input, expected action, expected output, counter. Expected frames
//! are built from the wire format (support/frames.rs `encap`), not from the program. Needs root.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::GlobalCounter as C;
use l4_ctl::{Encap, Mac, RealSpec, Vip};
use support::fib::{self, Fib, ROUTER_MAC};
use support::frames::{self, TCP_ACK, TCP_PSH, TCP_SYN, encap, icmp};
use support::netns::{in_netns, run};
use support::*;

const VIP4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x1234, 0x5678);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The services of the test front: (VIP, real, encapsulation). One real each, so every flow's
/// real is known.
const SERVICES: [(&str, &str, Encap); 8] = [
    ("10.100.0.1:80/tcp", "10.200.0.11", Encap::Ipip),
    ("10.100.0.1:8080/tcp", "10.200.0.12", Encap::Gue),
    ("10.100.0.1:53/udp", "10.200.0.13", Encap::Gue),
    ("10.100.0.1:81/tcp", "10.201.0.11", Encap::Ipip),
    ("[fd00::100]:443/tcp", "fd20::11", Encap::Ipip),
    ("[fd00::100]:8443/tcp", "fd20::12", Encap::Gue),
    ("[fd00::100]:444/tcp", "fd21::11", Encap::Ipip),
    ("10.100.0.1:82/tcp", "10.99.0.50", Encap::L2),
];

/// The MAC of the L2 real of port 82.
const L2_REAL_MAC: Mac = Mac([0x02, 0, 0, 0, 0x01, 0x50]);

fn front() -> TestBalancer {
    let mut tb = TestBalancer::new();
    for (vip, real, encap) in SERVICES {
        let vip: Vip = vip.parse().unwrap();
        tb.bal.add_vip(&vip).unwrap();
        let spec = RealSpec {
            encap,
            mac: if encap == Encap::L2 {
                L2_REAL_MAC
            } else {
                Mac([0; 6])
            },
            ..real_spec(real.parse().unwrap(), 1, 1)
        };
        tb.bal.add_real(&vip, &spec).unwrap();
    }
    tb
}

/// What leaves the program.
enum Out {
    Same,
    /// This frame exactly.
    Frame(Vec<u8>),
}

struct Row {
    description: &'static str,
    input: Vec<u8>,
    action: u32,
    output: Out,
    counter: C,
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((VIP4, port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(VIP6.into(), port)
}

fn c4(port: u16) -> SocketAddr {
    SocketAddr::from((CLIENT4, port))
}

fn c6(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT6.into(), port)
}

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap()
}

/// The frame the program sends for `input` (a client -> VIP frame) to a real through the
/// router: an outer header per `encap`, the client's port `port` in the outer source.
fn wrapped(
    front_mac: Mac,
    input: &[u8],
    encap: Encap,
    real: IpAddr,
    client: IpAddr,
    port: u16,
) -> Vec<u8> {
    let inner = &input[14..];
    let (ethertype, packet) = match (real, client) {
        (IpAddr::V4(real), IpAddr::V4(client)) => {
            let tos = inner[1];
            let df = inner[6] & 0x40 != 0;
            let packet = if encap == Encap::Gue {
                let udp = encap::gue(encap::gue_port_v4(client, port), inner);
                encap::ipv4(fib::FRONT4, real, IPPROTO_UDP, tos, df, &udp)
            } else {
                let src = encap::ipip_source_v4(client, port);
                encap::ipv4(src, real, IPPROTO_IPIP, tos, df, inner)
            };
            (frames::ETH_P_IPV4, packet)
        }
        (IpAddr::V6(real), IpAddr::V6(client)) => {
            let tc = (inner[0] << 4) | (inner[1] >> 4);
            let packet = if encap == Encap::Gue {
                let udp = encap::gue(encap::gue_port_v6(client, port), inner);
                encap::ipv6(fib::FRONT6, real, IPPROTO_UDP, tc, &udp)
            } else {
                let src = encap::ipip_source_v6(client, port);
                encap::ipv6(src, real, IPPROTO_IPV6, tc, inner)
            };
            (frames::ETH_P_IPV6, packet)
        }
        _ => panic!("one family per row"),
    };
    frames::ethernet(ROUTER_MAC, front_mac, ethertype, &packet)
}

/// `frame` with TOS `tos` and the DF flag set (IPv4, no options), checksum fixed.
fn with_tos_and_df(frame: &[u8], tos: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[15] = tos;
    f[20] |= 0x40;
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = frames::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The front's answer to a client packet too big once wrapped: ICMP fragmentation needed
/// (IPv4) or ICMPv6 packet too big (IPv6) from the VIP, naming `mtu`, quoting the packet's
/// IP header and 8 bytes more, back to where the frame came from.
fn too_big_reply(input: &[u8], mtu: u16) -> Vec<u8> {
    let ip = &input[14..];
    let back = |ethertype, packet: &[u8]| {
        let (mut to, mut from) = ([0u8; 6], [0u8; 6]);
        to.copy_from_slice(&input[6..12]);
        from.copy_from_slice(&input[..6]);
        frames::ethernet(Mac(to), Mac(from), ethertype, packet)
    };
    if ip[0] >> 4 == 4 {
        let mut message = icmp::message(
            icmp::DEST_UNREACH,
            icmp::FRAG_NEEDED,
            u32::from(mtu),
            &ip[..28],
        );
        let sum = frames::checksum(&message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        let (from, to) = (
            <[u8; 4]>::try_from(&ip[16..20]).unwrap(),
            <[u8; 4]>::try_from(&ip[12..16]).unwrap(),
        );
        back(
            frames::ETH_P_IPV4,
            &encap::ipv4(from.into(), to.into(), IPPROTO_ICMP, 0, false, &message),
        )
    } else {
        let mut message = icmp::message(icmp::V6_PACKET_TOO_BIG, 0, u32::from(mtu), &ip[..48]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[24..40]);
        pseudo.extend_from_slice(&ip[8..24]);
        pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
        pseudo.extend_from_slice(&message);
        let sum = frames::checksum(&pseudo);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        let (from, to) = (
            <[u8; 16]>::try_from(&ip[24..40]).unwrap(),
            <[u8; 16]>::try_from(&ip[8..24]).unwrap(),
        );
        back(
            frames::ETH_P_IPV6,
            &encap::ipv6(from.into(), to.into(), IPPROTO_ICMPV6, 0, &message),
        )
    }
}

/// An ICMP error from a router to `vip` quoting the first 28 bytes of a packet the VIP sent.
fn icmp4_error(to: Ipv4Addr, quoted_from: SocketAddr, quoted_to: SocketAddr, proto: u8) -> Vec<u8> {
    let quoted = match proto {
        6 => frames::tcp(quoted_from.port(), quoted_to.port(), TCP_ACK, &[0; 16]),
        _ => frames::udp(quoted_from.port(), quoted_to.port(), &[0; 16]),
    };
    let (IpAddr::V4(from), IpAddr::V4(dst)) = (quoted_from.ip(), quoted_to.ip()) else {
        panic!("IPv4 only");
    };
    let quoted = frames::ipv4(from, dst, proto, &[], 0x4000, &quoted);
    let message = icmp::message(icmp::DEST_UNREACH, icmp::FRAG_NEEDED, 1400, &quoted[..28]);
    frames::ethernet(
        frames::FRONT_MAC,
        frames::CLIENT_MAC,
        frames::ETH_P_IPV4,
        &frames::ipv4(ROUTER4, to, IPPROTO_ICMP, &[], 0, &message),
    )
}

fn rows(front_mac: Mac) -> Vec<Row> {
    let row = |description, input, action, output, counter| Row {
        description,
        input,
        action,
        output,
        counter,
    };
    let out = |input: &[u8], encap, real: &str, client: IpAddr, port| {
        Out::Frame(wrapped(front_mac, input, encap, ip(real), client, port))
    };
    let syn4 = frames::tcp_frame(c4(40000), v4(80), TCP_SYN, &[]);
    let data4 = frames::tcp_frame(
        c4(40001),
        v4(80),
        TCP_ACK | TCP_PSH,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let marked4 = with_tos_and_df(&frames::tcp_frame(c4(40002), v4(80), TCP_SYN, &[]), 0xb8);
    let gue4 = frames::tcp_frame(c4(51000), v4(8080), TCP_SYN, &[]);
    let udp4 = frames::udp_frame(c4(5353), v4(53), b"query");
    let syn6 = frames::tcp_frame(c6(40000), v6(443), TCP_SYN, &[]);
    let gue6 = frames::tcp_frame(c6(40000), v6(8443), TCP_SYN, &[]);
    let unresolved4 = frames::tcp_frame(c4(40000), v4(81), TCP_SYN, &[]);
    let unresolved6 = frames::tcp_frame(c6(40000), v6(444), TCP_SYN, &[]);
    // An IP packet of 1481 bytes: 1501 with the outer IPv4 header, over f0's MTU of 1500.
    let big = frames::tcp_frame(
        c4(40003),
        v4(80),
        TCP_ACK,
        &vec![b'x'; fib::MTU - 40 + 1 - 20],
    );
    let just_fits = frames::tcp_frame(c4(40004), v4(80), TCP_ACK, &vec![b'x'; fib::MTU - 40 - 20]);
    let big_df = with_tos_and_df(&big, 0);
    let big_gue = with_tos_and_df(
        &frames::tcp_frame(
            c4(51000),
            v4(8080),
            TCP_ACK,
            &vec![b'x'; fib::MTU - 40 - 20],
        ),
        0,
    );
    let big6 = frames::tcp_frame(
        c6(40000),
        v6(443),
        TCP_ACK,
        &vec![b'x'; fib::MTU - 60 - 40 + 1],
    );
    let mut big_icmp = icmp4_error(VIP4, v4(80), c4(40000), 6);
    big_icmp.extend(std::iter::repeat_n(0, fib::MTU));
    let len = (big_icmp.len() - 14) as u16;
    big_icmp[16..18].copy_from_slice(&len.to_be_bytes());
    big_icmp[24..26].copy_from_slice(&[0, 0]);
    let sum = frames::checksum(&big_icmp[14..34]);
    big_icmp[24..26].copy_from_slice(&sum.to_be_bytes());
    // ICMP errors about packets the VIP sent to clients.
    let frag_needed = icmp4_error(VIP4, v4(80), c4(40000), 6);
    let frag_needed_udp = icmp4_error(VIP4, v4(53), c4(5353), 17);
    let frag_needed_l2 = icmp4_error(VIP4, v4(82), c4(40000), 6);
    let too_big6 = {
        let quoted = frames::ipv6(
            VIP6,
            CLIENT6,
            6,
            &frames::tcp(443, 40000, TCP_ACK, &[0; 16]),
        );
        let message = icmp::message(icmp::V6_PACKET_TOO_BIG, 0, 1280, &quoted[..48]);
        frames::ethernet(
            frames::FRONT_MAC,
            frames::CLIENT_MAC,
            frames::ETH_P_IPV6,
            &frames::ipv6(ROUTER6, VIP6, IPPROTO_ICMPV6, &message),
        )
    };
    let echo = frames::ethernet(
        frames::FRONT_MAC,
        frames::CLIENT_MAC,
        frames::ETH_P_IPV4,
        &frames::ipv4(
            CLIENT4,
            VIP4,
            IPPROTO_ICMP,
            &[],
            0,
            &icmp::message(icmp::ECHO, 0, 1, &[0; 8]),
        ),
    );
    let l2_icmp_out = {
        let mut f = frag_needed_l2.clone();
        f[..6].copy_from_slice(&L2_REAL_MAC.0);
        f[6..12].copy_from_slice(&frames::FRONT_MAC.0);
        f
    };
    let (c4a, c6a) = (IpAddr::V4(CLIENT4), IpAddr::V6(CLIENT6));
    vec![
        row(
            "IPIP: SYN to the v4 VIP",
            syn4.clone(),
            XDP_TX,
            out(&syn4, Encap::Ipip, "10.200.0.11", c4a, 40000),
            C::Encapsulated,
        ),
        row(
            "IPIP: data without a flow entry",
            data4.clone(),
            XDP_TX,
            out(&data4, Encap::Ipip, "10.200.0.11", c4a, 40001),
            C::ConnMisses,
        ),
        row(
            "IPIP: TOS and DF are copied to the outer header",
            marked4.clone(),
            XDP_TX,
            out(&marked4, Encap::Ipip, "10.200.0.11", c4a, 40002),
            C::Tx,
        ),
        row(
            "GUE: SYN to the v4 VIP",
            gue4.clone(),
            XDP_TX,
            out(&gue4, Encap::Gue, "10.200.0.12", c4a, 51000),
            C::Encapsulated,
        ),
        row(
            "GUE: a UDP datagram",
            udp4.clone(),
            XDP_TX,
            out(&udp4, Encap::Gue, "10.200.0.13", c4a, 5353),
            C::Encapsulated,
        ),
        row(
            "IPIP: SYN to the v6 VIP (IPv6 in IPv6)",
            syn6.clone(),
            XDP_TX,
            out(&syn6, Encap::Ipip, "fd20::11", c6a, 40000),
            C::Encapsulated,
        ),
        row(
            "GUE: SYN to the v6 VIP",
            gue6.clone(),
            XDP_TX,
            out(&gue6, Encap::Gue, "fd20::12", c6a, 40000),
            C::Encapsulated,
        ),
        row(
            "IPIP: the largest packet that fits the MTU",
            just_fits.clone(),
            XDP_TX,
            out(&just_fits, Encap::Ipip, "10.200.0.11", c4a, 40004),
            C::Encapsulated,
        ),
        row(
            "IPIP: one byte over the MTU once wrapped, no DF: cannot be answered",
            big,
            XDP_DROP,
            Out::Same,
            C::DropTooBig,
        ),
        row(
            "IPIP: over the MTU with DF: fragmentation needed back to the client (MTU 1480)",
            big_df.clone(),
            XDP_TX,
            Out::Frame(too_big_reply(&big_df, 1480)),
            C::IcmpTooBigSent,
        ),
        row(
            "GUE: over the MTU with DF: fragmentation needed naming 1472",
            big_gue.clone(),
            XDP_TX,
            Out::Frame(too_big_reply(&big_gue, 1472)),
            C::IcmpTooBigSent,
        ),
        row(
            "IPv6 in IPv6 over the MTU: packet too big back to the client (MTU 1460)",
            big6.clone(),
            XDP_TX,
            Out::Frame(too_big_reply(&big6, 1460)),
            C::IcmpTooBigSent,
        ),
        row(
            "an ICMP error too big once wrapped is never answered with another",
            big_icmp,
            XDP_DROP,
            Out::Same,
            C::DropTooBig,
        ),
        row(
            "IPIP: the gateway has no neighbour entry (v4)",
            unresolved4,
            XDP_DROP,
            Out::Same,
            C::DropNoRoute,
        ),
        row(
            "IPIP: the gateway has no neighbour entry (v6)",
            unresolved6,
            XDP_DROP,
            Out::Same,
            C::DropNoRoute,
        ),
        row(
            "ICMP fragmentation needed about a VIP flow: to its real, wrapped",
            frag_needed.clone(),
            XDP_TX,
            out(&frag_needed, Encap::Ipip, "10.200.0.11", c4a, 40000),
            C::IcmpToReal,
        ),
        row(
            "ICMP fragmentation needed about a UDP VIP flow (GUE real)",
            frag_needed_udp.clone(),
            XDP_TX,
            out(&frag_needed_udp, Encap::Gue, "10.200.0.13", c4a, 5353),
            C::IcmpToReal,
        ),
        row(
            "ICMP fragmentation needed about an L2 real's flow: MACs rewritten",
            frag_needed_l2,
            XDP_TX,
            Out::Frame(l2_icmp_out),
            C::IcmpToReal,
        ),
        row(
            "ICMPv6 packet too big about a VIP flow",
            too_big6.clone(),
            XDP_TX,
            out(&too_big6, Encap::Ipip, "fd20::11", c6a, 40000),
            C::IcmpToReal,
        ),
        row(
            "ICMP echo request to the VIP: the front's kernel answers",
            echo,
            XDP_PASS,
            Out::Same,
            C::PassIcmp,
        ),
        row(
            "ICMP error quoting a packet from a port no VIP uses",
            icmp4_error(VIP4, v4(9999), c4(40000), 6),
            XDP_PASS,
            Out::Same,
            C::PassIcmp,
        ),
        row(
            "ICMP error quoting another address's packet",
            icmp4_error(
                Ipv4Addr::new(10, 100, 0, 2),
                SocketAddr::from(([10, 100, 0, 2], 80)),
                c4(40000),
                6,
            ),
            XDP_PASS,
            Out::Same,
            C::PassIcmp,
        ),
        row(
            "ICMP error sent to an address other than the quoted source",
            icmp4_error(Ipv4Addr::new(10, 100, 0, 2), v4(80), c4(40000), 6),
            XDP_PASS,
            Out::Same,
            C::PassIcmp,
        ),
    ]
}

#[test]
fn golden_packets() {
    let fib = Fib::new();
    let (ifindex, front_mac) = (fib.ifindex, fib.front_mac);
    in_netns(&fib.ns, move || {
        let tb = front();
        let program = tb.bal.program().unwrap();
        for row in rows(front_mac) {
            let before = tb.counter(row.counter);
            let (action, out) = test_run_on(program, &row.input, ifindex);
            assert_eq!(action, row.action, "{}: action", row.description);
            let want = match row.output {
                Out::Same => row.input.clone(),
                Out::Frame(f) => f,
            };
            if action != XDP_DROP {
                assert_eq!(out, want, "{}: output", row.description);
            }
            assert_eq!(
                tb.counter(row.counter),
                before + 1,
                "{}: counter {:?}",
                row.description,
                row.counter
            );
        }
    });
}

#[test]
fn icmp_errors_never_create_flow_entries() {
    let fib = Fib::new();
    let ifindex = fib.ifindex;
    in_netns(&fib.ns, move || {
        let tb = front();
        let program = tb.bal.program().unwrap();
        let frame = icmp4_error(VIP4, v4(80), c4(40000), 6);
        assert_eq!(test_run_on(program, &frame, ifindex).0, XDP_TX);
        let vip: Vip = SERVICES[0].0.parse().unwrap();
        let key = l4_ctl::balancer::flow_key(c4(40000), &vip);
        assert_eq!(tb.bal.conn(&key).unwrap(), None);
        assert_eq!(tb.counter(C::NewFlows), 0);
    });
}

#[test]
fn dl7_decapsulator_gives_back_every_packet_the_front_wrapped() {
    let fib = Fib::new();
    let (ifindex, front_mac) = (fib.ifindex, fib.front_mac);
    let reals: Vec<IpAddr> = SERVICES.iter().map(|(_, real, _)| ip(real)).collect();
    in_netns(&fib.ns, move || {
        let tb = front();
        let decap = TestDecap::new(&reals);
        let program = tb.bal.program().unwrap();
        for row in rows(front_mac) {
            let (action, wrapped) = test_run_on(program, &row.input, ifindex);
            if action != XDP_TX || wrapped[..6] != ROUTER_MAC.0 {
                continue;
            }
            let (verdict, inner) = decap.run_xdp(&wrapped);
            assert_eq!(verdict, XDP_PASS, "{}", row.description);
            assert_eq!(
                inner[14..],
                row.input[14..],
                "{}: inner packet",
                row.description
            );
            assert_eq!(
                inner[12..14],
                row.input[12..14],
                "{}: EtherType",
                row.description
            );
        }
        assert_eq!(decap.counter(common::DecapCounter::Malformed), 0);
    });
}

#[test]
fn a_real_switched_between_l2_and_ipip_keeps_its_flows() {
    let fib = Fib::new();
    let (ifindex, front_mac) = (fib.ifindex, fib.front_mac);
    in_netns(&fib.ns, move || {
        let mut tb = front();
        let vip: Vip = SERVICES[7].0.parse().unwrap();
        let syn = frames::tcp_frame(c4(40000), v4(82), TCP_SYN, &[]);
        let data = frames::tcp_frame(c4(40000), v4(82), TCP_ACK, b"x");
        let (action, out) = test_run_on(tb.bal.program().unwrap(), &syn, ifindex);
        assert_eq!((action, &out[..6]), (XDP_TX, &L2_REAL_MAC.0[..]));
        let spec = RealSpec {
            encap: Encap::Ipip,
            mac: Mac([0; 6]),
            ..real_spec(ip("10.99.0.50"), 1, 1)
        };
        tb.bal.set_encap(&vip, ip("10.99.0.50"), &spec).unwrap();
        // 10.99.0.50 is on f0's subnet with no neighbour entry: the FIB cannot send to it.
        let (action, _) = test_run_on(tb.bal.program().unwrap(), &data, ifindex);
        assert_eq!(action, XDP_DROP);
        assert_eq!(tb.counter(C::DropNoRoute), 1);
        assert_eq!(tb.counter(C::ConnHits), 1, "the flow kept its real");
        let _ = front_mac;
    });
}

#[test]
fn a_changed_next_hop_reaches_the_data_path_within_the_cache_time() {
    let fib = Fib::new();
    let (ns, ifindex, front_mac) = (fib.ns.clone(), fib.ifindex, fib.front_mac);
    in_netns(&fib.ns, move || {
        let tb = front();
        let program = tb.bal.program().unwrap();
        let syn = frames::tcp_frame(c4(40000), v4(80), TCP_SYN, &[]);
        let (action, out) = test_run_on(program, &syn, ifindex);
        assert_eq!((action, &out[..6]), (XDP_TX, &ROUTER_MAC.0[..]));
        // The router's MAC changes (a failover to another box, say).
        let moved = Mac([0x02, 0, 0, 0, 0x0a, 0x02]);
        run(&format!(
            "ip -n {ns} neigh replace 10.99.0.254 lladdr {moved} dev f0 nud permanent"
        ));
        // Each CPU keeps a next hop for 100 ms: after that, every frame uses the new one.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let (action, out) = test_run_on(program, &syn, ifindex);
        assert_eq!(action, XDP_TX);
        let want = wrapped(
            front_mac,
            &syn,
            Encap::Ipip,
            ip("10.200.0.11"),
            CLIENT4.into(),
            40000,
        );
        assert_eq!(out[..6], moved.0, "the new next hop");
        assert_eq!(out[6..], want[6..]);
    });
}

#[test]
fn a_real_that_becomes_reachable_is_used_within_the_cache_time() {
    let fib = Fib::new();
    let (ns, ifindex) = (fib.ns.clone(), fib.ifindex);
    in_netns(&fib.ns, move || {
        let tb = front();
        let program = tb.bal.program().unwrap();
        // Port 81's real is routed through a gateway with no neighbour entry.
        let syn = frames::tcp_frame(c4(40000), v4(81), TCP_SYN, &[]);
        assert_eq!(test_run_on(program, &syn, ifindex).0, XDP_DROP);
        assert_eq!(tb.counter(C::DropNoRoute), 1);
        run(&format!(
            "ip -n {ns} neigh replace 10.99.0.253 lladdr {ROUTER_MAC} dev f0 nud permanent"
        ));
        // "No route" is kept for 100 ms like a next hop: after that the real is reached.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let (action, out) = test_run_on(program, &syn, ifindex);
        assert_eq!(action, XDP_TX);
        assert_eq!(out[..6], ROUTER_MAC.0);
    });
}
