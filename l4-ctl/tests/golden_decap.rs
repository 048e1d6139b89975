//! Golden packets for the reals' decapsulator: hand-built frames through both of its programs
//! (XDP and tc) with BPF_PROG_TEST_RUN, asserting the verdict, every output byte and the
//! counter, as rows (description, input, expected verdict, expected output, counter). The
//! real's own addresses are 10.200.0.11 and fd20::11. Needs root.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::DecapCounter as C;
use support::frames::{self, CLIENT_MAC, FRONT_MAC, TCP_ACK, TCP_SYN, encap};
use support::*;

const REAL4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 11);
const REAL6: Ipv6Addr = Ipv6Addr::new(0xfd20, 0, 0, 0, 0, 0, 0, 0x11);
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 12);
const FRONT4: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);
const FRONT6: Ipv6Addr = Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0x102, 0x304);
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_UDP: u8 = 17;
/// tc's verdicts.
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// What leaves the decapsulator.
enum Out {
    /// The frame as it came in, passed to the stack.
    Same,
    /// Dropped.
    Dropped,
    /// This inner IP packet, passed to the stack with the outer frame's MACs.
    Inner(Vec<u8>),
}

struct Row {
    description: &'static str,
    input: Vec<u8>,
    output: Out,
    counter: C,
}

/// The client's packet the front wrapped: a TCP segment to the VIP.
fn inner4() -> Vec<u8> {
    let payload = frames::tcp(40000, 80, TCP_ACK, b"GET / HTTP/1.1\r\n\r\n");
    frames::ipv4(
        Ipv4Addr::new(192, 0, 2, 7),
        Ipv4Addr::new(10, 100, 0, 1),
        6,
        &[],
        0,
        &payload,
    )
}

fn inner6() -> Vec<u8> {
    let payload = frames::tcp(40000, 443, TCP_SYN, &[]);
    frames::ipv6(
        "2001:db8::7".parse().unwrap(),
        "fd00::100".parse().unwrap(),
        6,
        &payload,
    )
}

fn eth4(ip: &[u8]) -> Vec<u8> {
    frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_IPV4, ip)
}

fn eth6(ip: &[u8]) -> Vec<u8> {
    frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_IPV6, ip)
}

/// A GUE variant-0 header: no control bit, `ext_words` words of extensions, protocol `proto`.
fn gue0(ext_words: u8, proto: u8, control: bool, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![(if control { 0x20 } else { 0 }) | ext_words, proto, 0, 0];
    p.extend(std::iter::repeat_n(0xee, usize::from(ext_words) * 4));
    p.extend_from_slice(inner);
    p
}

fn rows() -> Vec<Row> {
    let row = |description, input, output, counter| Row {
        description,
        input,
        output,
        counter,
    };
    let (i4, i6) = (inner4(), inner6());
    let ipip4 = |dst, inner: &[u8]| eth4(&encap::ipv4(FRONT4, dst, IPPROTO_IPIP, 0, false, inner));
    let gue4 = |payload: &[u8]| {
        eth4(&encap::ipv4(
            FRONT4,
            REAL4,
            IPPROTO_UDP,
            0,
            false,
            &encap::gue(4242, payload),
        ))
    };
    let mut truncated_inner = i4.clone();
    truncated_inner[2..4].copy_from_slice(&(i4.len() as u16 + 40).to_be_bytes());
    let mut fragment = encap::ipv4(FRONT4, REAL4, IPPROTO_IPIP, 0, false, &i4);
    fragment[6] = 0x20; // more fragments
    let mut options = frames::ipv4(FRONT4, REAL4, IPPROTO_IPIP, &[1, 1, 1, 1], 0, &i4);
    options[8] = 64;
    vec![
        row(
            "IPIP (IPv4 in IPv4) to the real",
            ipip4(REAL4, &i4),
            Out::Inner(i4.clone()),
            C::Decapsulated,
        ),
        row(
            "IPIP to another address: not ours",
            ipip4(OTHER4, &i4),
            Out::Same,
            C::Passed,
        ),
        row(
            "GUE variant 1 (the inner IPv4 header right after UDP)",
            gue4(&i4),
            Out::Inner(i4.clone()),
            C::Decapsulated,
        ),
        row(
            "GUE variant 0 with the inner protocol field (IPv4)",
            gue4(&gue0(0, IPPROTO_IPIP, false, &i4)),
            Out::Inner(i4.clone()),
            C::Decapsulated,
        ),
        row(
            "GUE variant 0 with one word of extensions",
            gue4(&gue0(1, IPPROTO_IPIP, false, &i4)),
            Out::Inner(i4.clone()),
            C::Decapsulated,
        ),
        row(
            "GUE variant 0 carrying IPv6 in IPv4",
            gue4(&gue0(0, IPPROTO_IPV6, false, &i6)),
            Out::Inner(i6.clone()),
            C::Decapsulated,
        ),
        row(
            "GUE control message",
            gue4(&gue0(0, 0, true, &[0; 8])),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "GUE variant 0 with an unknown inner protocol",
            gue4(&gue0(0, IPPROTO_UDP, false, &i4)),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "GUE variant 1 whose inner header is not IPv4",
            gue4(&[0x55; 40]),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "UDP to the real on another port",
            eth4(&frames::ipv4(
                FRONT4,
                REAL4,
                IPPROTO_UDP,
                &[],
                0,
                &frames::udp(4242, 53, &i4),
            )),
            Out::Same,
            C::Passed,
        ),
        row(
            "IPIP whose inner packet claims more bytes than it has",
            ipip4(REAL4, &truncated_inner),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "IPIP (protocol 4) with an IPv6 packet inside",
            ipip4(REAL4, &i6),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "IPIP with an inner header cut short",
            ipip4(REAL4, &i4[..3]),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "outer fragment: left to the stack",
            eth4(&fragment),
            Out::Same,
            C::PassedFragment,
        ),
        row(
            "outer IPv4 header with options",
            eth4(&options),
            Out::Dropped,
            C::Malformed,
        ),
        row(
            "IPv6 in IPv6 to the real",
            eth6(&encap::ipv6(FRONT6, REAL6, IPPROTO_IPV6, 0, &i6)),
            Out::Inner(i6.clone()),
            C::Decapsulated,
        ),
        row(
            "IPv4 in IPv6 to the real",
            eth6(&encap::ipv6(FRONT6, REAL6, IPPROTO_IPIP, 0, &i4)),
            Out::Inner(i4.clone()),
            C::Decapsulated,
        ),
        row(
            "GUE in IPv6 to the real",
            eth6(&encap::ipv6(
                FRONT6,
                REAL6,
                IPPROTO_UDP,
                0,
                &encap::gue(4242, &i6),
            )),
            Out::Inner(i6.clone()),
            C::Decapsulated,
        ),
        row(
            "IPv6 in IPv6 to another address",
            eth6(&encap::ipv6(
                FRONT6,
                "fd20::12".parse().unwrap(),
                IPPROTO_IPV6,
                0,
                &i6,
            )),
            Out::Same,
            C::Passed,
        ),
        row(
            "IPv6 with a fragment header to the real: not an encapsulation this program strips",
            eth6(&encap::ipv6(FRONT6, REAL6, 44, 0, &{
                let mut f = vec![IPPROTO_IPV6, 0, 0, 1, 0, 0, 0, 7];
                f.extend_from_slice(&i6);
                f
            })),
            Out::Same,
            C::Passed,
        ),
        row(
            "a plain TCP segment to the real",
            eth4(&inner4()),
            Out::Same,
            C::Passed,
        ),
        row(
            "ARP",
            frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_ARP, &[0; 28]),
            Out::Same,
            C::Passed,
        ),
    ]
}

#[test]
fn golden_packets_through_xdp_and_tc() {
    let decap = TestDecap::new(&[IpAddr::V4(REAL4), IpAddr::V6(REAL6)]);
    for row in rows() {
        for tc in [false, true] {
            let hook = if tc { "tc" } else { "XDP" };
            let before = decap.counter(row.counter);
            let (action, out) = if tc {
                decap.run_tc(&row.input)
            } else {
                decap.run_xdp(&row.input)
            };
            let (pass, drop) = if tc {
                (TC_ACT_OK, TC_ACT_SHOT)
            } else {
                (XDP_PASS, XDP_DROP)
            };
            match &row.output {
                Out::Same => {
                    assert_eq!(action, pass, "{} ({hook}): verdict", row.description);
                    assert_eq!(out, row.input, "{} ({hook}): output", row.description);
                }
                Out::Dropped => {
                    assert_eq!(action, drop, "{} ({hook}): verdict", row.description)
                }
                Out::Inner(ip) => {
                    assert_eq!(action, pass, "{} ({hook}): verdict", row.description);
                    let ethertype = if ip[0] >> 4 == 6 {
                        frames::ETH_P_IPV6
                    } else {
                        frames::ETH_P_IPV4
                    };
                    let want = frames::ethernet(FRONT_MAC, CLIENT_MAC, ethertype, ip);
                    assert_eq!(out, want, "{} ({hook}): output", row.description);
                }
            }
            assert_eq!(
                decap.counter(row.counter),
                before + 1,
                "{} ({hook}): counter {:?}",
                row.description,
                row.counter
            );
        }
    }
}

#[test]
fn every_frame_lands_in_exactly_one_counter() {
    let decap = TestDecap::new(&[IpAddr::V4(REAL4)]);
    let rows = rows();
    for row in &rows {
        decap.run_xdp(&row.input);
    }
    let total: u64 = common::DecapCounter::ALL
        .iter()
        .map(|c| decap.counter(*c))
        .sum();
    assert_eq!(total, rows.len() as u64);
}

#[test]
fn a_client_packet_to_the_vip_is_left_alone() {
    // A real also receives its clients' traffic directly (L2 fronts, health checks).
    let decap = TestDecap::new(&[IpAddr::V4(REAL4)]);
    let frame = frames::tcp_frame(
        SocketAddr::from(([192, 0, 2, 7], 40000)),
        SocketAddr::from((REAL4, 80)),
        TCP_SYN,
        &[],
    );
    assert_eq!(decap.run_xdp(&frame), (XDP_PASS, frame.clone()));
}
