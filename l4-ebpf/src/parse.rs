//! Header parsing: from the raw frame to a flow key, or to the verdict for a frame that is not
//! a balanceable flow. Every read is bounds-checked against `data_end` right before it, which is
//! what the verifier needs to see.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use common::{FAMILY_V4, FAMILY_V6, FlowKey, GlobalCounter, PROTO_TCP, PROTO_UDP, VipAddrKey};

pub const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_NEXTHDR_FRAGMENT: u8 = 44;
/// IPv4 "more fragments" flag and fragment offset bits.
const IPV4_FRAG_MASK: u16 = 0x3fff;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What a frame turned out to be.
pub enum Frame {
    /// A TCP or UDP packet that may belong to a VIP.
    Flow(Flow),
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
}

/// A pointer to `N` bytes at `offset`, or `None` when the frame is shorter.
#[inline(always)]
pub fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut [u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut [u8; N])
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Four network-order bytes as the native word stored in keys (see `common`).
#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
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
    if be16(ip, 6) & IPV4_FRAG_MASK != 0 {
        return Frame::Fragment(VipAddrKey {
            addr: key.dst,
            family: FAMILY_V4,
            _pad: [0; 3],
        });
    }
    match key.proto {
        PROTO_TCP | PROTO_UDP => l4(ctx, key, ETH_HLEN + hlen, hlen > IPV4_MIN_HLEN),
        IPPROTO_ICMP => pass(GlobalCounter::PassIcmp),
        _ => pass(GlobalCounter::PassOtherL4),
    }
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
    match key.proto {
        PROTO_TCP | PROTO_UDP => l4(ctx, key, ETH_HLEN + IPV6_HLEN, false),
        IPV6_NEXTHDR_FRAGMENT => Frame::Fragment(VipAddrKey {
            addr: key.dst,
            family: FAMILY_V6,
            _pad: [0; 3],
        }),
        IPPROTO_ICMPV6 => pass(GlobalCounter::PassIcmp),
        _ => pass(GlobalCounter::PassOtherL4),
    }
}

/// Reads the ports (and TCP flags) at `offset`, which is at most 14 + 60 for IPv4 with options.
#[inline(always)]
fn l4(ctx: &XdpContext, mut key: FlowKey, offset: usize, ip_options: bool) -> Frame {
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
    })
}
