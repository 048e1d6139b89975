//! Golden-packet tests: hand-built frames through the real, loaded XDP program with
//! BPF_PROG_TEST_RUN, asserting the action, every output byte and the counters. Single frames
//! are rows of [`rows`] (description, input frame, expected action, expected output frame,
//! the counter it must land in), laid out as Katran's tester lays out its fixtures; the
//! sequences that need state (a flow, then its next packet; a real drained or deleted in
//! between) are the tests after it. Needs root.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use common::GlobalCounter as C;
use l4_ctl::Vip;
use support::frames::{self, CLIENT_MAC, FRONT_MAC, TCP_ACK, TCP_PSH, TCP_SYN};
use support::*;

const VIP4: &str = "10.100.0.1:80/tcp";
const VIP4_UDP: &str = "10.100.0.1:53/udp";
const VIP6: &str = "[fd00::100]:443/tcp";

fn client(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], port))
}

fn client6(port: u16) -> SocketAddr {
    SocketAddr::new("2001:db8::7".parse().unwrap(), port)
}

/// A balancer with a v4 TCP VIP, a v4 UDP VIP and a v6 TCP VIP, each with one real.
fn setup() -> (TestBalancer, Vip, Vip, Vip) {
    let mut tb = TestBalancer::new();
    let (v4, udp, v6): (Vip, Vip, Vip) = (
        VIP4.parse().unwrap(),
        VIP4_UDP.parse().unwrap(),
        VIP6.parse().unwrap(),
    );
    for vip in [&v4, &udp, &v6] {
        tb.bal.add_vip(vip).unwrap();
    }
    tb.add_real(&v4, "10.0.0.11", 11, 1);
    tb.add_real(&udp, "10.0.0.12", 12, 1);
    tb.add_real(&v6, "fd00::11", 13, 1);
    (tb, v4, udp, v6)
}

/// What leaves the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// The frame as it came in.
    Same,
    /// The frame with only its MAC addresses rewritten for real `n`.
    ToReal(u8),
}

/// One golden packet.
struct Row {
    description: &'static str,
    input: Vec<u8>,
    action: u32,
    output: Out,
    /// The counter that must count this frame (its outcome, or the event it is about).
    counter: C,
}

/// Every outcome counter: each frame ends in exactly one of them.
const OUTCOMES: [C; 15] = [
    C::PassNotVip,
    C::PassNonIp,
    C::PassVlan,
    C::PassIcmp,
    C::PassOtherL4,
    C::DropTruncated,
    C::DropMalformed,
    C::DropFragment,
    C::DropNoReal,
    C::DropRedirectFailed,
    C::Tx,
    C::Redirect,
    C::DropNoRoute,
    C::DropTooBig,
    C::DropNoHeadroom,
];

#[test]
fn outcomes_are_exactly_the_outcome_counters() {
    let listed: Vec<C> = C::ALL.into_iter().filter(|c| c.is_outcome()).collect();
    assert_eq!(listed, OUTCOMES);
}

const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP4_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const VIP6_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);

fn eth4(ip: Vec<u8>) -> Vec<u8> {
    frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_IPV4, &ip)
}

fn eth6(ip: Vec<u8>) -> Vec<u8> {
    frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_IPV6, &ip)
}

/// `frame` (Ethernet + 20-byte IPv4 + L4) cut to `l4_len` bytes of L4, total length adjusted.
fn cut_l4_v4(frame: &[u8], l4_len: usize) -> Vec<u8> {
    let mut f = frame[..14 + 20 + l4_len].to_vec();
    f[16..18].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f
}

/// `frame` with `bytes` written at `at`.
fn patched(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    f
}

/// The golden packets, for the balancer of [`setup`] (v4 TCP VIP -> real 11, v4 UDP VIP ->
/// real 12, v6 TCP VIP -> real 13).
fn rows() -> Vec<Row> {
    let v4 = SocketAddr::from((VIP4_IP, 80));
    let udp_vip = SocketAddr::from((VIP4_IP, 53));
    let v6 = SocketAddr::new(VIP6_IP.into(), 443);
    let syn = frames::tcp_frame(client(40000), v4, TCP_SYN, &[]);
    let syn6 = frames::tcp_frame(client6(40000), v6, TCP_SYN, &[]);
    let dgram = frames::udp_frame(client(1), udp_vip, &[]);
    let seg = frames::tcp(40000, 80, TCP_ACK, b"data");
    let fragment = |dst: Ipv4Addr, flags_offset: u16| {
        eth4(frames::ipv4(CLIENT4, dst, 6, &[], flags_offset, &seg))
    };
    let mut frag6 = vec![6, 0, 0, 1, 0, 0, 0, 42]; // fragment header: next TCP, M=1
    frag6.extend_from_slice(&seg);
    let syn_seg = frames::tcp(40000, 80, TCP_SYN, &[]);
    let to_vip = |proto: u8, options: &[u8], l4: &[u8]| {
        eth4(frames::ipv4(CLIENT4, VIP4_IP, proto, options, 0, l4))
    };
    let row = |description, input, action, output, counter| Row {
        description,
        input,
        action,
        output,
        counter,
    };
    use Out::{Same, ToReal};
    vec![
        // Balanced: only the MAC addresses change.
        row(
            "TCP SYN to the v4 VIP",
            syn.clone(),
            XDP_TX,
            ToReal(11),
            C::NewFlows,
        ),
        row(
            "TCP ACK with data and no connection entry: placed as a new flow",
            frames::tcp_frame(
                client(40001),
                v4,
                TCP_ACK | TCP_PSH,
                b"GET / HTTP/1.1\r\n\r\n",
            ),
            XDP_TX,
            ToReal(11),
            C::ConnMisses,
        ),
        row(
            "UDP datagram to the UDP VIP",
            frames::udp_frame(client(5353), udp_vip, b"query"),
            XDP_TX,
            ToReal(12),
            C::ConnMisses,
        ),
        row(
            "TCP SYN to the v6 VIP",
            syn6.clone(),
            XDP_TX,
            ToReal(13),
            C::NewFlows,
        ),
        row(
            "IPv4 with a record-route option to the VIP",
            to_vip(6, &[7, 7, 4, 0, 0, 0, 0], &syn_seg),
            XDP_TX,
            ToReal(11),
            C::Ipv4Options,
        ),
        row(
            "IPv4 with the longest header (IHL 15, ports at byte 74)",
            to_vip(6, &[1; 40], &syn_seg),
            XDP_TX,
            ToReal(11),
            C::Ipv4Options,
        ),
        // Not for a VIP: passed untouched.
        row(
            "TCP to the VIP's address on another port",
            frames::tcp_frame(client(40000), SocketAddr::from((VIP4_IP, 81)), TCP_SYN, &[]),
            XDP_PASS,
            Same,
            C::PassNotVip,
        ),
        row(
            "TCP to another address",
            frames::tcp_frame(
                client(40000),
                SocketAddr::from(([10, 100, 0, 2], 80)),
                TCP_SYN,
                &[],
            ),
            XDP_PASS,
            Same,
            C::PassNotVip,
        ),
        row(
            "UDP to the TCP VIP's port",
            frames::udp_frame(client(40000), v4, b"x"),
            XDP_PASS,
            Same,
            C::PassNotVip,
        ),
        row(
            "IPv6 UDP to another address",
            frames::udp_frame(
                client6(1),
                SocketAddr::new("fd00::200".parse().unwrap(), 443),
                b"x",
            ),
            XDP_PASS,
            Same,
            C::PassNotVip,
        ),
        row(
            "IPv4 fragment (MF) to another address",
            fragment(Ipv4Addr::new(10, 100, 0, 9), 0x2000),
            XDP_PASS,
            Same,
            C::PassNotVip,
        ),
        // Not balanced by dl7: passed to the kernel.
        row(
            "802.1Q-tagged frame to the VIP",
            frames::vlan_ethernet(
                FRONT_MAC,
                CLIENT_MAC,
                100,
                frames::ETH_P_IPV4,
                &frames::ipv4(CLIENT4, VIP4_IP, 6, &[], 0, &syn_seg),
            ),
            XDP_PASS,
            Same,
            C::PassVlan,
        ),
        row(
            "ARP",
            frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_ARP, &[0; 28]),
            XDP_PASS,
            Same,
            C::PassNonIp,
        ),
        row(
            "An Ethernet header of zeros and nothing else",
            vec![0; 14],
            XDP_PASS,
            Same,
            C::PassNonIp,
        ),
        row(
            "ICMP echo to the VIP (answered by the front's kernel)",
            to_vip(1, &[], &[8, 0, 0, 0, 0, 1, 0, 1]),
            XDP_PASS,
            Same,
            C::PassIcmp,
        ),
        row(
            "ICMPv6 echo to the v6 VIP",
            eth6(frames::ipv6(
                CLIENT6,
                VIP6_IP,
                58,
                &[128, 0, 0, 0, 0, 1, 0, 1],
            )),
            XDP_PASS,
            Same,
            C::PassIcmp,
        ),
        row(
            "SCTP to the VIP",
            to_vip(132, &[], &[0; 12]),
            XDP_PASS,
            Same,
            C::PassOtherL4,
        ),
        row(
            "IPv6 with a hop-by-hop header before TCP",
            eth6(frames::ipv6(CLIENT6, VIP6_IP, 0, &[6, 0, 1, 4, 0, 0, 0, 0])),
            XDP_PASS,
            Same,
            C::PassOtherL4,
        ),
        // Shorter than the headers it announces. (BPF_PROG_TEST_RUN refuses frames shorter
        // than an Ethernet header, as no driver delivers them: that check cannot be run.)
        row(
            "An Ethernet header announcing IPv4, nothing after it",
            syn[..14].to_vec(),
            XDP_DROP,
            Same,
            C::DropTruncated,
        ),
        row(
            "IPv4 header cut",
            syn[..14 + 19].to_vec(),
            XDP_DROP,
            Same,
            C::DropTruncated,
        ),
        row(
            "IPv6 header cut",
            syn6[..14 + 39].to_vec(),
            XDP_DROP,
            Same,
            C::DropTruncated,
        ),
        row(
            "TCP header cut, IP lengths agreeing with the cut",
            cut_l4_v4(&syn, 19),
            XDP_DROP,
            Same,
            C::DropTruncated,
        ),
        row(
            "UDP header cut, IP lengths agreeing with the cut",
            cut_l4_v4(&dgram, 7),
            XDP_DROP,
            Same,
            C::DropTruncated,
        ),
        // Malformed IP headers.
        row(
            "IPv4 IHL 4 (below the minimum)",
            patched(&syn, 14, &[0x44]),
            XDP_DROP,
            Same,
            C::DropMalformed,
        ),
        row(
            "IPv4 total length beyond the frame",
            patched(&syn, 16, &1500u16.to_be_bytes()),
            XDP_DROP,
            Same,
            C::DropMalformed,
        ),
        row(
            "Version 6 under the IPv4 ethertype",
            patched(&syn, 14, &[0x65]),
            XDP_DROP,
            Same,
            C::DropMalformed,
        ),
        row(
            "IPv6 payload length beyond the frame",
            patched(&syn6, 18, &1000u16.to_be_bytes()),
            XDP_DROP,
            Same,
            C::DropMalformed,
        ),
        // Fragments carry no ports (or not all of them): never guessed at.
        row(
            "IPv4 first fragment (MF) to the VIP",
            fragment(VIP4_IP, 0x2000),
            XDP_DROP,
            Same,
            C::DropFragment,
        ),
        row(
            "IPv4 later fragment to the VIP",
            fragment(VIP4_IP, 0x0010),
            XDP_DROP,
            Same,
            C::DropFragment,
        ),
        row(
            "IPv6 fragment header to the v6 VIP",
            eth6(frames::ipv6(CLIENT6, VIP6_IP, 44, &frag6)),
            XDP_DROP,
            Same,
            C::DropFragment,
        ),
    ]
}

/// Every row through one balancer, in order: its action, its output byte for byte, one more
/// in its counter, and exactly one more in the outcome counters. (No two rows share a flow
/// whose state would matter.)
#[test]
fn golden_packets() {
    let (tb, _, _, _) = setup();
    for row in rows() {
        let before = tb.bal.global_counters().expect("counters");
        let (action, out) = tb.run(&row.input);
        let after = tb.bal.global_counters().expect("counters");
        let delta = |c: C| after[c as usize] - before[c as usize];
        let want = match row.output {
            Out::Same => row.input.clone(),
            Out::ToReal(n) => rewritten(&row.input, n),
        };
        assert_eq!(action, row.action, "{}: action", row.description);
        assert_eq!(out, want, "{}: output frame", row.description);
        assert_eq!(
            delta(row.counter),
            1,
            "{}: {:?}",
            row.description,
            row.counter
        );
        let outcomes: u64 = OUTCOMES.iter().map(|c| delta(*c)).sum();
        assert_eq!(outcomes, 1, "{}: one outcome counter", row.description);
    }
}

#[test]
fn tcp_syn_then_established_go_to_the_real_with_only_macs_rewritten() {
    let (tb, v4, _, _) = setup();
    let syn = frames::tcp_frame(client(40000), v4.addr, TCP_SYN, &[]);
    let (action, out) = tb.run(&syn);
    assert_eq!(action, XDP_TX);
    assert_eq!(out, rewritten(&syn, 11));
    assert_eq!(tb.counter(C::NewFlows), 1);
    assert_eq!(tb.counter(C::Tx), 1);

    let data = frames::tcp_frame(
        client(40000),
        v4.addr,
        TCP_ACK | TCP_PSH,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (action, out) = tb.run(&data);
    assert_eq!(action, XDP_TX);
    assert_eq!(out, rewritten(&data, 11));
    assert_eq!(tb.counter(C::ConnHits), 1);
    assert_eq!(tb.counter(C::ConnMisses), 0);
    assert_eq!(tb.counter(C::NewFlows), 1);
    assert_eq!(tb.counter(C::Tx), 2);

    let meta = tb.bal.vip(&v4).unwrap();
    let vip_traffic = tb.bal.vip_traffic(meta.vip_id).unwrap();
    assert_eq!(vip_traffic.packets, 2);
    assert_eq!(vip_traffic.bytes, (syn.len() + data.len()) as u64);
    let real = tb.bal.real(&v4, "10.0.0.11".parse().unwrap()).unwrap();
    assert_eq!(tb.bal.real_traffic(real.id).unwrap().packets, 2);
}

#[test]
fn a_repeated_syn_leaves_its_flow_entry_alone() {
    let (tb, v4, _, _) = setup();
    let syn = frames::tcp_frame(client(40000), v4.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 11)));
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 11)));
    assert_eq!(tb.counter(C::NewFlows), 1);
    assert_eq!(tb.counter(C::SynUnchanged), 1);
    assert_eq!(tb.bal.conn_count().unwrap(), 1);
}

#[test]
fn a_syn_whose_entry_names_a_deleted_real_is_placed_anew() {
    let (mut tb, v4, _, _) = setup();
    let syn = frames::tcp_frame(client(40000), v4.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 11)));
    tb.add_real(&v4, "10.0.0.21", 21, 1);
    tb.bal.del_real(&v4, "10.0.0.11".parse().unwrap()).unwrap();
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 21)));
    assert_eq!(tb.counter(C::NewFlows), 2);
    assert_eq!(tb.counter(C::SynUnchanged), 0);
    let data = frames::tcp_frame(client(40000), v4.addr, TCP_ACK, b"x");
    assert_eq!(tb.run(&data), (XDP_TX, rewritten(&data, 21)));
    assert_eq!(tb.counter(C::ConnHits), 1);
}

#[test]
fn the_new_flow_guard_forwards_but_does_not_record_beyond_its_limit() {
    let (mut tb, v4, _, _) = setup();
    tb.bal
        .set_settings(common::FrontSettings {
            new_flow_limit: 2,
            flags: 0,
        })
        .unwrap();
    for port in [40000, 40001, 40002] {
        let syn = frames::tcp_frame(client(port), v4.addr, TCP_SYN, &[]);
        assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 11)), "port {port}");
    }
    assert_eq!(tb.counter(C::NewFlows), 3);
    assert_eq!(tb.counter(C::NewFlowsUnrecorded), 1);
    assert_eq!(tb.bal.conn_count().unwrap(), 2);
    // The unrecorded flow still reaches its real: the Maglev table gives the same answer.
    let data = frames::tcp_frame(client(40002), v4.addr, TCP_ACK, b"x");
    assert_eq!(tb.run(&data), (XDP_TX, rewritten(&data, 11)));
    // Recorded flows are hits.
    let data = frames::tcp_frame(client(40000), v4.addr, TCP_ACK, b"x");
    assert_eq!(tb.run(&data), (XDP_TX, rewritten(&data, 11)));
    assert_eq!(tb.counter(C::ConnHits), 1);
}

#[test]
fn load_sets_the_new_flow_guard_default_and_keeps_a_configured_one() {
    let (mut tb, _, _, _) = setup();
    let default = l4_ctl::balancer::default_new_flow_limit(tb.bal.nr_cpus());
    assert_eq!(tb.bal.settings().unwrap().new_flow_limit, default);
    assert!(default > 0);
    tb.bal
        .set_settings(common::FrontSettings {
            new_flow_limit: 7,
            flags: 0,
        })
        .unwrap();
    let again = tb.reload();
    assert_eq!(again.settings().unwrap().new_flow_limit, 7);
}

#[test]
fn an_ipv4_flow_an_older_build_recorded_keeps_its_real() {
    // Builds before the IPv4 table recorded IPv4 flows in the 40-byte table: after an
    // in-place upgrade their next packet must still reach the same real, and the entry
    // moves to the IPv4 table.
    let (mut tb, v4, _, _) = setup();
    tb.add_real(&v4, "10.0.0.21", 21, 1);
    let src = (40000..41000)
        .map(client)
        .find(|src| tb.bal.lookup(&v4, *src).unwrap().unwrap().def.mac[5] == 11)
        .expect("a port whose new flow goes to real 11");
    let other = tb.bal.real(&v4, "10.0.0.21".parse().unwrap()).unwrap();
    let key = l4_ctl::balancer::flow_key(src, &v4);
    let path = tb.pin_dir().join(common::map_names::CONN_TABLE);
    let map = aya::maps::MapData::from_pin(&path).unwrap();
    let mut legacy = aya::maps::HashMap::<_, common::FlowKey, common::ConnValue>::try_from(
        aya::maps::Map::LruHashMap(map),
    )
    .unwrap();
    let entry = common::ConnValue {
        real: other.id,
        generation: other.def.generation,
    };
    legacy.insert(key, entry, 0).unwrap();
    let ack = frames::tcp_frame(src, v4.addr, TCP_ACK, b"x");
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 21)));
    assert_eq!(tb.counter(C::ConnHits), 1);
    assert_eq!(
        tb.bal.conn(&key).unwrap(),
        Some(entry),
        "moved to the IPv4 table"
    );
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 21)));
}

#[test]
fn established_packet_without_entry_is_placed_and_remembered() {
    let (tb, v4, _, _) = setup();
    let ack = frames::tcp_frame(client(40001), v4.addr, TCP_ACK, &[]);
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 11)));
    assert_eq!(tb.counter(C::ConnMisses), 1);
    assert_eq!(tb.counter(C::NewFlows), 1);
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 11)));
    assert_eq!(tb.counter(C::ConnHits), 1);
    assert_eq!(tb.bal.conn_count().unwrap(), 1);
}

#[test]
fn udp_is_balanced_and_tracked() {
    let (tb, _, udp, _) = setup();
    let dgram = frames::udp_frame(client(5353), udp.addr, b"query");
    assert_eq!(tb.run(&dgram), (XDP_TX, rewritten(&dgram, 12)));
    assert_eq!(tb.run(&dgram), (XDP_TX, rewritten(&dgram, 12)));
    assert_eq!(tb.counter(C::ConnMisses), 1);
    assert_eq!(tb.counter(C::ConnHits), 1);
}

#[test]
fn ipv6_tcp_is_balanced() {
    let (tb, _, _, v6) = setup();
    let syn = frames::tcp_frame(client6(40000), v6.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 13)));
    let ack = frames::tcp_frame(client6(40000), v6.addr, TCP_ACK, b"x");
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 13)));
    assert_eq!(tb.counter(C::ConnHits), 1);
}

#[test]
fn vip_without_reals_drops_and_counts() {
    let mut tb = TestBalancer::new();
    let vip: Vip = "10.100.0.5:80/tcp".parse().unwrap();
    tb.bal.add_vip(&vip).unwrap();
    let syn = frames::tcp_frame(client(1), vip.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn), (XDP_DROP, syn.clone()));
    // Only drained reals: still nothing to send new flows to.
    tb.add_real(&vip, "10.0.0.21", 21, 0);
    assert_eq!(tb.run(&syn), (XDP_DROP, syn.clone()));
    assert_eq!(tb.counter(C::DropNoReal), 2);
    tb.bal
        .set_weight(&vip, "10.0.0.21".parse().unwrap(), 5)
        .unwrap();
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 21)));
}

#[test]
fn drained_real_keeps_its_flows_and_gets_no_new_ones() {
    let mut tb = TestBalancer::new();
    let vip: Vip = VIP4.parse().unwrap();
    tb.bal.add_vip(&vip).unwrap();
    tb.add_real(&vip, "10.0.0.31", 31, 1);
    let syn = frames::tcp_frame(client(2000), vip.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn).0, XDP_TX);
    tb.add_real(&vip, "10.0.0.32", 32, 1);
    tb.bal
        .set_weight(&vip, "10.0.0.31".parse().unwrap(), 0)
        .unwrap();
    let ack = frames::tcp_frame(client(2000), vip.addr, TCP_ACK, b"more");
    assert_eq!(
        tb.run(&ack),
        (XDP_TX, rewritten(&ack, 31)),
        "established flow stays"
    );
    for port in 3000..3100 {
        let syn = frames::tcp_frame(client(port), vip.addr, TCP_SYN, &[]);
        assert_eq!(
            tb.run(&syn),
            (XDP_TX, rewritten(&syn, 32)),
            "new flow avoids the drained real"
        );
    }
}

#[test]
fn deleted_real_loses_its_flows_to_the_others() {
    let mut tb = TestBalancer::new();
    let vip: Vip = VIP4.parse().unwrap();
    tb.bal.add_vip(&vip).unwrap();
    tb.add_real(&vip, "10.0.0.41", 41, 1);
    let syn = frames::tcp_frame(client(2000), vip.addr, TCP_SYN, &[]);
    assert_eq!(tb.run(&syn), (XDP_TX, rewritten(&syn, 41)));
    tb.add_real(&vip, "10.0.0.42", 42, 1);
    tb.bal.del_real(&vip, "10.0.0.41".parse().unwrap()).unwrap();
    // A new real reuses the slot: the stale entry must not send the flow to it.
    tb.add_real(&vip, "10.0.0.43", 43, 0);
    let ack = frames::tcp_frame(client(2000), vip.addr, TCP_ACK, b"more");
    assert_eq!(tb.run(&ack), (XDP_TX, rewritten(&ack, 42)));
    assert_eq!(tb.counter(C::ConnMisses), 1);
}

#[test]
fn redirect_to_another_interface_uses_the_devmap() {
    let mut tb = TestBalancer::new();
    let vip: Vip = VIP4.parse().unwrap();
    tb.bal.add_vip(&vip).unwrap();
    let mut spec = real_spec("10.0.0.51".parse().unwrap(), 51, 1);
    spec.egress_ifindex = Some(1); // lo
    tb.bal.add_real(&vip, &spec).unwrap();
    let syn = frames::tcp_frame(client(1), vip.addr, TCP_SYN, &[]);
    let (action, out) = tb.run(&syn);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(out, rewritten(&syn, 51));
    assert_eq!(tb.counter(C::Redirect), 1);
}
