//! The answer to a client packet that its encapsulation would take past the egress MTU: the
//! frame is turned, in place, into an ICMP "fragmentation needed" (IPv4, when the packet had
//! DF) or ICMPv6 "packet too big" from the VIP to the client, naming the largest packet that
//! still fits once wrapped, and sent back out of the receiving interface (as Katran does).
//! Packets that cannot be answered (no DF, IPv4 options, an ICMP error itself) are dropped and
//! counted (`drop_too_big`).
//!
//! The reply quotes the client's IP header and the first 8 bytes after it (RFC 792 and, with
//! a short quote, RFC 4443); the frame is first cut to what is quoted, then grown at the front
//! by the new IP and ICMP headers, which overwrite the client's Ethernet header after its
//! addresses were swapped into the new one.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use common::{ENCAP_TTL, FAMILY_V6, GlobalCounter};
use l4_ebpf::headers::*;

use crate::parse::Flow;

const ICMP_HLEN: usize = 8;
/// Bytes of the client's packet after its IP header that the reply quotes.
const QUOTED_L4: usize = 8;
/// The smallest MTU an IPv6 link may have: a packet-too-big never names less.
const IPV6_MIN_MTU: u16 = 1280;
/// The smallest MTU IPv4 routers must support.
const IPV4_MIN_MTU: u16 = 68;

/// Answers (or drops) a client packet that is too big once wrapped; `fits` is the largest
/// client packet that the encapsulation keeps within the egress MTU.
#[inline(always)]
pub fn answer(ctx: &XdpContext, flow: &Flow, fits: u16) -> (u32, GlobalCounter) {
    let answered = if flow.icmp_error {
        None
    } else if flow.key.family == FAMILY_V6 {
        v6(ctx, fits.max(IPV6_MIN_MTU))
    } else if flow.ip.df && !flow.ip_options {
        v4(ctx, fits.max(IPV4_MIN_MTU))
    } else {
        None
    };
    match answered {
        Some(()) => {
            crate::maps::count(GlobalCounter::IcmpTooBigSent);
            (xdp_action::XDP_TX, GlobalCounter::Tx)
        }
        None => (xdp_action::XDP_DROP, GlobalCounter::DropTooBig),
    }
}

/// Cuts the frame to its first `keep` bytes, then makes `grow` bytes of room at the front.
#[inline(always)]
fn reshape(ctx: &XdpContext, keep: usize, grow: usize) -> Option<()> {
    let len = ctx.data_end() - ctx.data();
    if len < keep {
        return None;
    }
    // SAFETY: both helpers check the new bounds themselves; every packet pointer is taken
    // anew afterwards.
    unsafe {
        if bpf_xdp_adjust_tail(ctx.ctx, -((len - keep) as i32)) != 0 {
            return None;
        }
        if bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) != 0 {
            return None;
        }
    }
    Some(())
}

/// Adds the 16-bit big-endian words of `bytes` (an even number of them) to `sum`.
#[inline(always)]
fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += be16(bytes, i) as u32;
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Writes the reply's Ethernet header: back to where the client's frame came from.
#[inline(always)]
fn turn_around(frame: &mut [u8], old_eth: usize, ethertype: u16) {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&frame[old_eth + 6..old_eth + 12]);
    macs[6..].copy_from_slice(&frame[old_eth..old_eth + 6]);
    frame[..12].copy_from_slice(&macs);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[inline(always)]
fn v4(ctx: &XdpContext, mtu: u16) -> Option<()> {
    const QUOTED: usize = IPV4_MIN_HLEN + QUOTED_L4;
    const GROW: usize = IPV4_MIN_HLEN + ICMP_HLEN;
    const FRAME: usize = ETH_HLEN + GROW + QUOTED;
    reshape(ctx, ETH_HLEN + QUOTED, GROW)?;
    let frame = bytes_at::<FRAME>(ctx, 0)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    turn_around(frame, GROW, ETH_P_IPV4);
    let quoted = ETH_HLEN + GROW;
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&frame[quoted + 16..quoted + 20]);
    addrs[4..].copy_from_slice(&frame[quoted + 12..quoted + 16]);
    let ip = ETH_HLEN;
    frame[ip] = 0x45;
    frame[ip + 1] = 0;
    frame[ip + 2..ip + 4].copy_from_slice(&((GROW + QUOTED) as u16).to_be_bytes());
    frame[ip + 4..ip + 8].copy_from_slice(&[0, 0, 0, 0]);
    frame[ip + 8] = ENCAP_TTL;
    frame[ip + 9] = IPPROTO_ICMP;
    frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    frame[ip + 12..ip + 20].copy_from_slice(&addrs);
    let header: &mut [u8; IPV4_MIN_HLEN] = (&mut frame[ip..ip + IPV4_MIN_HLEN]).try_into().ok()?;
    let sum = ipv4_checksum(header);
    frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let icmp = ip + IPV4_MIN_HLEN;
    frame[icmp..icmp + 6].copy_from_slice(&[3, 4, 0, 0, 0, 0]);
    frame[icmp + 6..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    let sum = fold(add_words(0, &frame[icmp..FRAME]));
    frame[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

#[inline(always)]
fn v6(ctx: &XdpContext, mtu: u16) -> Option<()> {
    const QUOTED: usize = IPV6_HLEN + QUOTED_L4;
    const GROW: usize = IPV6_HLEN + ICMP_HLEN;
    const FRAME: usize = ETH_HLEN + GROW + QUOTED;
    const PAYLOAD: usize = ICMP_HLEN + QUOTED;
    reshape(ctx, ETH_HLEN + QUOTED, GROW)?;
    let frame = bytes_at::<FRAME>(ctx, 0)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    turn_around(frame, GROW, ETH_P_IPV6);
    let quoted = ETH_HLEN + GROW;
    let mut addrs = [0u8; 32];
    addrs[..16].copy_from_slice(&frame[quoted + 24..quoted + 40]);
    addrs[16..].copy_from_slice(&frame[quoted + 8..quoted + 24]);
    let ip = ETH_HLEN;
    frame[ip..ip + 4].copy_from_slice(&[0x60, 0, 0, 0]);
    frame[ip + 4..ip + 6].copy_from_slice(&(PAYLOAD as u16).to_be_bytes());
    frame[ip + 6] = IPPROTO_ICMPV6;
    frame[ip + 7] = ENCAP_TTL;
    frame[ip + 8..ip + 40].copy_from_slice(&addrs);
    let icmp = ip + IPV6_HLEN;
    frame[icmp..icmp + 4].copy_from_slice(&[2, 0, 0, 0]);
    frame[icmp + 4..icmp + 8].copy_from_slice(&(mtu as u32).to_be_bytes());
    // The pseudo-header: both addresses, the upper-layer length, the next header.
    let pseudo = add_words(PAYLOAD as u32 + IPPROTO_ICMPV6 as u32, &addrs);
    let sum = fold(add_words(pseudo, &frame[icmp..FRAME]));
    frame[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Some(())
}
