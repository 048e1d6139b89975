//! Builds Ethernet frames byte by byte, for running the program on chosen input with
//! BPF_PROG_TEST_RUN (the golden-packet tests and `cargo xtask bench xdp`, which includes
//! this file) in the style of Katran's tester. Test tooling: not part of the l4-ctl library. It can build what a normal stack never sends: truncated headers, IPv4
//! options, fragments, VLAN tags. TCP and UDP checksums are left zero: the program never
//! reads them ([`set_tcp_checksum_v4`] fills one in for frames sent to a real host's stack).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use l4_ctl::Mac;

/// The program's return codes (the kernel's `enum xdp_action`), as a test run reports them.
pub mod action {
    pub const XDP_ABORTED: u32 = 0;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;
}

/// EtherTypes used by the builders.
pub const ETH_P_IPV4: u16 = 0x0800;
/// See [`ETH_P_IPV4`].
pub const ETH_P_IPV6: u16 = 0x86dd;
/// See [`ETH_P_IPV4`].
pub const ETH_P_ARP: u16 = 0x0806;
/// See [`ETH_P_IPV4`].
pub const ETH_P_8021Q: u16 = 0x8100;

/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
/// See [`TCP_SYN`].
pub const TCP_ACK: u8 = 0x10;
/// See [`TCP_SYN`].
pub const TCP_PSH: u8 = 0x08;

/// The MAC the test frames are sent to (the front's).
pub const FRONT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xfe]);
/// The MAC the test frames come from (the client's router).
pub const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc1]);

/// An Ethernet II frame.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An 802.1Q-tagged frame carrying `ethertype`.
pub fn vlan_ethernet(dst: Mac, src: Mac, vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(4 + payload.len());
    tagged.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    tagged.extend_from_slice(&ethertype.to_be_bytes());
    tagged.extend_from_slice(payload);
    ethernet(dst, src, ETH_P_8021Q, &tagged)
}

/// An IPv4 packet with `options` (padded to 4 bytes) and the raw flags/fragment-offset field.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let hlen = 20 + opt_len;
    let total = (hlen + payload.len()) as u16;
    let mut p = Vec::with_capacity(hlen + payload.len());
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&0x1234u16.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.push(64);
    p.push(proto);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    p.resize(hlen, 0);
    let sum = checksum(&p[..hlen]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet with the given next header.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next_header);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// A TCP segment (20-byte header, no options).
pub fn tcp(src_port: u16, dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&1u32.to_be_bytes());
    s.extend_from_slice(&(if flags & TCP_ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    s.push(5 << 4);
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(payload);
    s
}

/// Fills in the checksum of a TCP `segment` (as [`tcp`] builds it) carried from `src` to `dst`
/// in IPv4, for frames that a real host's stack must accept.
pub fn set_tcp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &mut [u8]) {
    segment[16..18].fill(0);
    let mut covered = Vec::with_capacity(12 + segment.len());
    covered.extend_from_slice(&src.octets());
    covered.extend_from_slice(&dst.octets());
    covered.extend_from_slice(&[0, 6]);
    covered.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    covered.extend_from_slice(segment);
    let sum = checksum(&covered);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// A UDP datagram.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A complete client -> front frame of a TCP segment from `src` to `dst` (same family).
pub fn tcp_frame(src: SocketAddr, dst: SocketAddr, flags: u8, payload: &[u8]) -> Vec<u8> {
    l4_frame(src, dst, 6, &tcp(src.port(), dst.port(), flags, payload))
}

/// A complete client -> front frame of a UDP datagram from `src` to `dst` (same family).
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    l4_frame(src, dst, 17, &udp(src.port(), dst.port(), payload))
}

fn l4_frame(src: SocketAddr, dst: SocketAddr, proto: u8, segment: &[u8]) -> Vec<u8> {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(
            FRONT_MAC,
            CLIENT_MAC,
            ETH_P_IPV4,
            &ipv4(s, d, proto, &[], 0, segment),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            FRONT_MAC,
            CLIENT_MAC,
            ETH_P_IPV6,
            &ipv6(s, d, proto, segment),
        ),
        _ => panic!("tcp_frame/udp_frame need addresses of one family: {src} -> {dst}"),
    }
}

/// The Internet checksum (RFC 1071), from the project's test tooling.
pub use dl7_testbed::packet::checksum;

/// The outer headers of L3 direct server return, written from the wire format dl7 shares with
/// Katran (not from the program's code): IPIP and GUE variant 1, and the sources made from
/// the client's address and port.
pub mod encap {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// GUE's UDP destination port.
    pub const GUE_PORT: u16 = 6080;

    /// An outer IPv4 header (ID 0, TTL 64, DF as given, no options) around `payload`.
    pub fn ipv4(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        tos: u8,
        df: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = Vec::with_capacity(20 + payload.len());
        p.extend_from_slice(&[0x45, tos]);
        p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let sum = super::checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// An outer IPv6 header (flow label 0, hop limit 64) around `payload`.
    pub fn ipv6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next: u8,
        traffic_class: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = Vec::with_capacity(40 + payload.len());
        p.extend_from_slice(&[0x60 | (traffic_class >> 4), traffic_class << 4, 0, 0]);
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    /// A UDP header to the GUE port (checksum zero) around `payload`.
    pub fn gue(src_port: u16, payload: &[u8]) -> Vec<u8> {
        super::udp(src_port, GUE_PORT, payload)
    }

    /// IPIP's outer IPv4 source: 172.16.x.y, x and y the client's last two octets XOR the
    /// port's low and high byte.
    pub fn ipip_source_v4(client: Ipv4Addr, port: u16) -> Ipv4Addr {
        let c = client.octets();
        let [hi, lo] = port.to_be_bytes();
        Ipv4Addr::new(172, 16, c[2] ^ lo, c[3] ^ hi)
    }

    /// IPIP's outer IPv6 source: 100::/64, the last four octets the client's, the first two of
    /// them XOR the port's bytes.
    pub fn ipip_source_v6(client: Ipv6Addr, port: u16) -> Ipv6Addr {
        let c = client.octets();
        let [hi, lo] = port.to_be_bytes();
        let mut o = [0u8; 16];
        o[0] = 1;
        o[12..].copy_from_slice(&[c[12] ^ hi, c[13] ^ lo, c[14], c[15]]);
        Ipv6Addr::from(o)
    }

    /// GUE's UDP source port for an IPv4 client: on the wire, the port's low byte XOR the
    /// client's third octet, then its high byte XOR the fourth.
    pub fn gue_port_v4(client: Ipv4Addr, port: u16) -> u16 {
        let c = client.octets();
        let [hi, lo] = port.to_be_bytes();
        u16::from_be_bytes([lo ^ c[2], hi ^ c[3]])
    }

    /// GUE's UDP source port for an IPv6 client: the client's 13th and 14th octets XOR the
    /// port's bytes.
    pub fn gue_port_v6(client: Ipv6Addr, port: u16) -> u16 {
        let c = client.octets();
        let [hi, lo] = port.to_be_bytes();
        u16::from_be_bytes([c[12] ^ hi, c[13] ^ lo])
    }
}

/// ICMP errors as routers send them, quoting the packet that caused them.
pub mod icmp {
    /// ICMP "destination unreachable".
    pub const DEST_UNREACH: u8 = 3;
    /// Its code "fragmentation needed and DF set".
    pub const FRAG_NEEDED: u8 = 4;
    /// ICMP echo request.
    pub const ECHO: u8 = 8;
    /// ICMPv6 "packet too big".
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    /// ICMPv6 echo request.
    pub const V6_ECHO: u8 = 128;

    /// An ICMP (or ICMPv6) message: type, code, the 4-byte rest of the header (e.g. the next-hop
    /// MTU) and the quoted packet; the checksum is left zero (the program never reads it).
    pub fn message(kind: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest.to_be_bytes());
        m.extend_from_slice(quoted);
        m
    }
}
