//! Header parsing: from the raw frame to a flow key, or to the verdict for a frame that is not
//! a balanceable flow. Every read is bounds-checked against `data_end` right before it, which is
//! what the verifier needs to see.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use common::{FAMILY_V4, FAMILY_V6, FlowKey, GlobalCounter, PROTO_TCP, PROTO_UDP, VipAddrKey};
use l4_ebpf::headers::*;

const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What a frame turned out to be.
pub enum Frame {
    /// A TCP or UDP packet that may belong to a VIP.
    Flow(Flow),
    /// An ICMP or ICMPv6 error about a packet a VIP sent: `Flow::key` is the flow it quotes,
    /// turned around (client to VIP), so that it finds the flow's real.
    IcmpError(Flow),
    /// An IP fragment: it has no ports, so only its destination address can be checked.
    Fragment(VipAddrKey),
    /// Anything else, with the action to take and the counter that records it.
    Done(u32, GlobalCounter),
}

/// A parsed TCP or UDP packet.
pub struct Flow {
    pub key: FlowKey,
    /// A TCP SYN without ACK: always placed through the Maglev table.
    pub syn: bool,
    /// IPv4 header carried options (forwarded all the same, but counted).
    pub ip_options: bool,
    /// The packet is an ICMP error about the flow (never answered with another).
    pub icmp_error: bool,
    /// What an outer header needs to know of the packet as a whole.
    pub ip: IpInfo,
}

/// The IP header's facts that encapsulation copies into the outer header.
#[derive(Clone, Copy)]
pub struct IpInfo {
    /// IPv4 total length, or IPv6 header plus payload length: the bytes an outer header wraps.
    pub len: u16,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 "don't fragment" (always set for IPv6, which routers never fragment).
    pub df: bool,
}

#[inline(always)]
fn drop(counter: GlobalCounter) -> Frame {
    Frame::Done(xdp_action::XDP_DROP, counter)
}

#[inline(always)]
fn pass(counter: GlobalCounter) -> Frame {
    Frame::Done(xdp_action::XDP_PASS, counter)
}

/// Parses Ethernet, then IPv4 or IPv6, then TCP or UDP.
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Frame {
    let Some(eth) = bytes_at::<ETH_HLEN>(ctx, 0) else {
        return drop(GlobalCounter::DropTruncated);
    };
    // SAFETY: bounds-checked by bytes_at.
    let eth = unsafe { &*eth };
    match be16(eth, 12) {
        ETH_P_IPV4 => ipv4(ctx),
        ETH_P_IPV6 => ipv6(ctx),
        ETH_P_8021Q | ETH_P_8021AD => pass(GlobalCounter::PassVlan),
        _ => pass(GlobalCounter::PassNonIp),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext) -> Frame {
    let Some(ip) = bytes_at::<IPV4_MIN_HLEN>(ctx, ETH_HLEN) else {
        return drop(GlobalCounter::DropTruncated);
    };
    // SAFETY: bounds-checked by bytes_at.
    let ip = unsafe { &*ip };
    let version = ip[0] >> 4;
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16(ip, 2) as usize;
    let l3_len = ctx.data_end() - ctx.data() - ETH_HLEN;
    if version != 4 || hlen < IPV4_MIN_HLEN || total_len < hlen || total_len > l3_len {
        return drop(GlobalCounter::DropMalformed);
    }
    let mut key = FlowKey {
        family: FAMILY_V4,
        proto: ip[9],
        ..FlowKey::default()
    };
    key.src[0] = word(ip, 12);
    key.dst[0] = word(ip, 16);
    let flags = be16(ip, 6);
    if flags & IPV4_FRAG_MASK != 0 {
        return Frame::Fragment(VipAddrKey {
            addr: key.dst,
            family: FAMILY_V4,
            _pad: [0; 3],
        });
    }
    let info = IpInfo {
        len: total_len as u16,
        tos: ip[1],
        df: flags & IPV4_DF != 0,
    };
    match key.proto {
        PROTO_TCP | PROTO_UDP => l4(ctx, key, ETH_HLEN + hlen, hlen > IPV4_MIN_HLEN, info),
        IPPROTO_ICMP => icmp4(ctx, key.dst[0], ETH_HLEN + hlen, info),
        _ => pass(GlobalCounter::PassOtherL4),
    }
}

/// An ICMP destination-unreachable (fragmentation needed among them) quoting a TCP or UDP
/// packet that came from `to` (the address the error is sent to): the quoted packet's flow,
/// client to VIP. Anything else (echo requests to a VIP address among them) is the front's
/// kernel's.
#[inline(always)]
fn icmp4(ctx: &XdpContext, to: u32, offset: usize, info: IpInfo) -> Frame {
    let Some(icmp) = bytes_at::<{ ICMP_HLEN + IPV4_MIN_HLEN }>(ctx, offset) else {
        return pass(GlobalCounter::PassIcmp);
    };
    // SAFETY: bounds-checked by bytes_at.
    let icmp = unsafe { &*icmp };
    let quoted = &icmp[ICMP_HLEN..];
    let hlen = ((quoted[0] & 0x0f) as usize) * 4;
    let proto = quoted[9];
    if icmp[0] != ICMP_DEST_UNREACH
        || quoted[0] >> 4 != 4
        || hlen < IPV4_MIN_HLEN
        || word(quoted, 12) != to
        || !(proto == PROTO_TCP || proto == PROTO_UDP)
    {
        return pass(GlobalCounter::PassIcmp);
    }
    let mut key = FlowKey {
        family: FAMILY_V4,
        proto,
        ..FlowKey::default()
    };
    key.src[0] = word(quoted, 16);
    key.dst[0] = to;
    quoted_ports(ctx, key, offset + ICMP_HLEN + hlen, info)
}

/// The ports of a quoted packet at `offset`, swapped into the client-to-VIP direction.
#[inline(always)]
fn quoted_ports(ctx: &XdpContext, mut key: FlowKey, offset: usize, info: IpInfo) -> Frame {
    let Some(ports) = bytes_at::<4>(ctx, offset) else {
        return pass(GlobalCounter::PassIcmp);
    };
    // SAFETY: bounds-checked by bytes_at.
    let ports = unsafe { &*ports };
    key.dst_port = u16::from_ne_bytes([ports[0], ports[1]]);
    key.src_port = u16::from_ne_bytes([ports[2], ports[3]]);
    Frame::IcmpError(Flow {
        key,
        syn: false,
        ip_options: false,
        icmp_error: true,
        ip: info,
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext) -> Frame {
    let Some(ip) = bytes_at::<IPV6_HLEN>(ctx, ETH_HLEN) else {
        return drop(GlobalCounter::DropTruncated);
    };
    // SAFETY: bounds-checked by bytes_at.
    let ip = unsafe { &*ip };
    let payload_len = be16(ip, 4) as usize;
    let l3_len = ctx.data_end() - ctx.data() - ETH_HLEN;
    if ip[0] >> 4 != 6 || IPV6_HLEN + payload_len > l3_len {
        return drop(GlobalCounter::DropMalformed);
    }
    let mut key = FlowKey {
        family: FAMILY_V6,
        proto: ip[6],
        ..FlowKey::default()
    };
    key.src = [word(ip, 8), word(ip, 12), word(ip, 16), word(ip, 20)];
    key.dst = [word(ip, 24), word(ip, 28), word(ip, 32), word(ip, 36)];
    let info = IpInfo {
        len: (IPV6_HLEN + payload_len) as u16,
        tos: (ip[0] << 4) | (ip[1] >> 4),
        df: true,
    };
    match key.proto {
        PROTO_TCP | PROTO_UDP => l4(ctx, key, ETH_HLEN + IPV6_HLEN, false, info),
        IPV6_NEXTHDR_FRAGMENT => Frame::Fragment(VipAddrKey {
            addr: key.dst,
            family: FAMILY_V6,
            _pad: [0; 3],
        }),
        IPPROTO_ICMPV6 => icmp6(ctx, key.dst, info),
        _ => pass(GlobalCounter::PassOtherL4),
    }
}

/// ICMPv6 destination-unreachable or packet-too-big quoting a TCP or UDP packet (with no
/// extension header) that came from `to`: as [`icmp4`].
#[inline(always)]
fn icmp6(ctx: &XdpContext, to: [u32; 4], info: IpInfo) -> Frame {
    let offset = ETH_HLEN + IPV6_HLEN;
    let Some(icmp) = bytes_at::<{ ICMP_HLEN + IPV6_HLEN }>(ctx, offset) else {
        return pass(GlobalCounter::PassIcmp);
    };
    // SAFETY: bounds-checked by bytes_at.
    let icmp = unsafe { &*icmp };
    let quoted = &icmp[ICMP_HLEN..];
    let proto = quoted[6];
    let from = [
        word(quoted, 8),
        word(quoted, 12),
        word(quoted, 16),
        word(quoted, 20),
    ];
    if !(icmp[0] == ICMPV6_DEST_UNREACH || icmp[0] == ICMPV6_PACKET_TOO_BIG)
        || quoted[0] >> 4 != 6
        || from != to
        || !(proto == PROTO_TCP || proto == PROTO_UDP)
    {
        return pass(GlobalCounter::PassIcmp);
    }
    let key = FlowKey {
        family: FAMILY_V6,
        proto,
        src: [
            word(quoted, 24),
            word(quoted, 28),
            word(quoted, 32),
            word(quoted, 36),
        ],
        dst: to,
        ..FlowKey::default()
    };
    quoted_ports(ctx, key, offset + ICMP_HLEN + IPV6_HLEN, info)
}

/// Reads the ports (and TCP flags) at `offset`, which is at most 14 + 60 for IPv4 with options.
#[inline(always)]
fn l4(ctx: &XdpContext, mut key: FlowKey, offset: usize, ip_options: bool, ip: IpInfo) -> Frame {
    let mut syn = false;
    let ports = if key.proto == PROTO_TCP {
        let Some(tcp) = bytes_at::<TCP_MIN_HLEN>(ctx, offset) else {
            return drop(GlobalCounter::DropTruncated);
        };
        // SAFETY: bounds-checked by bytes_at.
        let tcp = unsafe { &*tcp };
        syn = tcp[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
        [tcp[0], tcp[1], tcp[2], tcp[3]]
    } else {
        let Some(udp) = bytes_at::<UDP_HLEN>(ctx, offset) else {
            return drop(GlobalCounter::DropTruncated);
        };
        // SAFETY: bounds-checked by bytes_at.
        let udp = unsafe { &*udp };
        [udp[0], udp[1], udp[2], udp[3]]
    };
    key.src_port = u16::from_ne_bytes([ports[0], ports[1]]);
    key.dst_port = u16::from_ne_bytes([ports[2], ports[3]]);
    Frame::Flow(Flow {
        key,
        syn,
        ip_options,
        icmp_error: false,
        ip,
    })
}
