//! IPIP and GUE encapsulation (L3 direct server return, for reals behind routers), in
//! Katran's wire format so that either side can be Katran:
//! - IPIP: IPv4 in IPv4 (protocol 4) or IPv6 in IPv6 (next header 41). The outer source is
//!   made from the flow ([`common::IPIP_V4_SOURCE_PREFIX`], [`common::IPIP_V6_SOURCE_PREFIX`])
//!   so that the real's NIC spreads flows over its receive queues.
//! - GUE variant 1: outer IP, then UDP to [`common::GUE_PORT`], then the inner IP packet
//!   directly. The UDP source port is made from the flow (for RSS); the outer source is the
//!   front's own address toward the real, as the FIB chooses it.
//!
//! The outer header's next hop (its MACs, egress interface and MTU) comes from the kernel's
//! FIB with `bpf_fib_lookup`, so reals may sit in other subnets; each CPU keeps a real's
//! next hop for [`NEXT_HOP_TTL_NS`] (a FIB lookup costs more than the rest of the path). A
//! route or neighbour the FIB does not have is a counted drop. A frame the encapsulation would take past the egress MTU is
//! answered with an ICMP "fragmentation needed" / ICMPv6 "packet too big" naming the MTU that
//! fits ([`crate::too_big`]), so the client's path-MTU discovery adapts (the reals also
//! advertise a smaller MSS, so that TCP rarely gets there).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use common::{
    ENCAP_TTL, FAMILY_V6, GUE_PORT, GlobalCounter, IPIP_V4_SOURCE_PREFIX, IPIP_V6_SOURCE_PREFIX,
    PROTO_UDP, RealDef,
};
use l4_ebpf::headers::*;

use crate::{
    maps::{NEXT_HOPS, NextHop},
    parse::Flow,
    too_big,
};

/// How long a CPU uses a next hop the FIB gave for a real before it asks again: a route or
/// neighbour change reaches the data path within this time.
const NEXT_HOP_TTL_NS: u64 = 100_000_000;

/// Sends the frame to `real` (slot `real_id`) inside an outer IPIP or GUE header.
#[inline(always)]
pub fn to_real(
    ctx: &XdpContext,
    real_id: u32,
    real: &RealDef,
    flow: &Flow,
) -> (u32, GlobalCounter) {
    let gue = real.encap == RealDef::ENCAP_GUE;
    let v6 = real.family == FAMILY_V6;
    let overhead = if v6 { IPV6_HLEN } else { IPV4_MIN_HLEN } + if gue { UDP_HLEN } else { 0 };
    let Some(hop) = next_hop(ctx, real_id, real, gue, v6) else {
        return (xdp_action::XDP_DROP, GlobalCounter::DropNoRoute);
    };
    if flow.ip.len as usize + overhead > hop.mtu as usize {
        return too_big::answer(ctx, flow, hop.mtu.saturating_sub(overhead as u16));
    }
    let written = match (v6, gue) {
        (false, false) => ipip4(ctx, real, flow, hop),
        (false, true) => gue4(ctx, real, flow, hop),
        (true, false) => ipip6(ctx, real, flow, hop),
        (true, true) => gue6(ctx, real, flow, hop),
    };
    if let Err(counter) = written {
        return (xdp_action::XDP_DROP, counter);
    }
    crate::maps::count(GlobalCounter::Encapsulated);
    if hop.ifindex == ingress_ifindex(ctx) {
        return (xdp_action::XDP_TX, GlobalCounter::Tx);
    }
    // SAFETY: no preconditions; the helper returns the action.
    match unsafe { bpf_redirect(hop.ifindex, 0) } as u32 {
        xdp_action::XDP_REDIRECT => (xdp_action::XDP_REDIRECT, GlobalCounter::Redirect),
        _ => (xdp_action::XDP_DROP, GlobalCounter::DropRedirectFailed),
    }
}

#[inline(always)]
fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: ctx points at the kernel's xdp_md for this run.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

/// The next hop toward `real`: this CPU's copy while it is younger than [`NEXT_HOP_TTL_NS`]
/// and made for the real now in the slot (and its encapsulation), otherwise a new one from
/// the FIB, written in place (no copies: the program's stack is 512 bytes). `None`: the FIB
/// has no route or no neighbour entry; that answer is kept for the same time, so an
/// unroutable real costs one FIB lookup per CPU and period, not one per packet.
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    real_id: u32,
    real: &RealDef,
    gue: bool,
    v6: bool,
) -> Option<&'static NextHop> {
    let slot = NEXT_HOPS.get_ptr_mut(real_id)?;
    // SAFETY: per-CPU value, only this program on this CPU touches it, and the array's
    // values live as long as the map.
    let slot = unsafe { &mut *slot };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if slot.generation == real.generation && slot.encap == real.encap && now < slot.expires_ns {
        return (slot.found != 0).then_some(&*slot);
    }
    let found = fib_lookup(ctx, real, gue, v6, slot);
    slot.found = found as u8;
    slot.generation = real.generation;
    slot.encap = real.encap;
    slot.expires_ns = now + NEXT_HOP_TTL_NS;
    found.then_some(&*slot)
}

/// Asks the kernel's FIB for the next hop toward `real` from the receiving interface (with
/// the front's own source address, for GUE) and writes it into `hop`; false when the FIB has
/// none. The MTU it reports is checked by the caller.
#[inline(always)]
fn fib_lookup(ctx: &XdpContext, real: &RealDef, gue: bool, v6: bool, hop: &mut NextHop) -> bool {
    // All zero first, in eight word stores: `mem::zeroed()` or zeroed arrays in a struct
    // literal become calls to a byte-at-a-time `memset` here (about 50 ns per packet).
    let mut words = core::mem::MaybeUninit::<[u64; 8]>::uninit();
    let word = words.as_mut_ptr() as *mut u64;
    for i in 0..8 {
        // SAFETY: within the 8-word buffer; volatile so that the stores stay stores.
        unsafe { core::ptr::write_volatile(word.add(i), 0) };
    }
    const _: () = assert!(core::mem::size_of::<FibParams>() == 64);
    // SAFETY: 64 zeroed bytes, 8-aligned, are a valid (empty) bpf_fib_lookup, which is
    // 64 bytes and needs 4-byte alignment.
    let params = unsafe { &mut *(word as *mut FibParams) };
    params.family = real.family;
    params.l4_protocol = if gue {
        PROTO_UDP
    } else if v6 {
        IPPROTO_IPV6
    } else {
        IPPROTO_IPIP
    };
    // tot_len stays 0: the lookup never fails on the MTU and reports it instead.
    params.ifindex = ingress_ifindex(ctx);
    // SAFETY (union writes): plain integer members.
    unsafe {
        if v6 {
            let dst = &mut params.__bindgen_anon_4.ipv6_dst;
            dst[0] = real.addr[0];
            dst[1] = real.addr[1];
            dst[2] = real.addr[2];
            dst[3] = real.addr[3];
        } else {
            params.__bindgen_anon_4.ipv4_dst = real.addr[0];
        }
    }
    let flags = if gue { BPF_FIB_LOOKUP_SRC } else { 0 };
    // SAFETY: params is a valid, initialised request of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            params as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return false;
    }
    hop.ifindex = params.ifindex;
    hop.dmac = params.dmac;
    hop.smac = params.smac;
    // SAFETY: the union members read are the ones the kernel filled for this family and
    // result.
    unsafe {
        hop.mtu = params.__bindgen_anon_1.mtu_result;
        if v6 {
            hop.src = params.__bindgen_anon_3.ipv6_src;
        } else {
            hop.src = [params.__bindgen_anon_3.ipv4_src, 0, 0, 0];
        }
    }
    true
}

/// Makes room for `len` bytes of outer headers in front of the frame.
#[inline(always)]
fn grow(ctx: &XdpContext, len: usize) -> Result<(), GlobalCounter> {
    // SAFETY: the helper checks the headroom itself; every packet pointer is taken anew after.
    match unsafe { bpf_xdp_adjust_head(ctx.ctx, -(len as i32)) } {
        0 => Ok(()),
        _ => Err(GlobalCounter::DropNoHeadroom),
    }
}

#[inline(always)]
fn ethernet(frame: &mut [u8], hop: &NextHop, ethertype: u16) {
    frame[..6].copy_from_slice(&hop.dmac);
    frame[6..12].copy_from_slice(&hop.smac);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// An option-less IPv4 header, checksum included.
#[inline(always)]
fn ipv4(header: &mut [u8; IPV4_MIN_HLEN], flow: &Flow, len: usize, proto: u8, src: u32, dst: u32) {
    let flags = if flow.ip.df { IPV4_DF } else { 0 };
    header[0] = 0x45;
    header[1] = flow.ip.tos;
    header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    header[4..6].copy_from_slice(&[0, 0]);
    header[6..8].copy_from_slice(&flags.to_be_bytes());
    header[8] = ENCAP_TTL;
    header[9] = proto;
    header[10..12].copy_from_slice(&[0, 0]);
    header[12..16].copy_from_slice(&src.to_ne_bytes());
    header[16..20].copy_from_slice(&dst.to_ne_bytes());
    let sum = ipv4_checksum(header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[inline(always)]
fn ipv6(
    header: &mut [u8],
    flow: &Flow,
    payload_len: usize,
    next: u8,
    src: &[u8; 16],
    dst: &[u32; 4],
) {
    header[0] = 0x60 | (flow.ip.tos >> 4);
    header[1] = flow.ip.tos << 4;
    header[2..4].copy_from_slice(&[0, 0]);
    header[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    header[6] = next;
    header[7] = ENCAP_TTL;
    header[8..24].copy_from_slice(src);
    header[24..28].copy_from_slice(&dst[0].to_ne_bytes());
    header[28..32].copy_from_slice(&dst[1].to_ne_bytes());
    header[32..36].copy_from_slice(&dst[2].to_ne_bytes());
    header[36..40].copy_from_slice(&dst[3].to_ne_bytes());
}

/// A UDP header to the GUE port; the checksum is left zero (allowed for IPv4, and for IPv6
/// tunnels by RFC 6935; both decapsulators strip the header before any checksum check).
#[inline(always)]
fn udp(header: &mut [u8], sport: [u8; 2], len: usize) {
    header[0..2].copy_from_slice(&sport);
    header[2..4].copy_from_slice(&GUE_PORT.to_be_bytes());
    header[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    header[6..8].copy_from_slice(&[0, 0]);
}

/// The client's address bytes and port bytes, as on the wire.
#[inline(always)]
fn client(flow: &Flow) -> ([u8; 4], [u8; 2]) {
    let last = if flow.key.family == FAMILY_V6 {
        flow.key.src[3]
    } else {
        flow.key.src[0]
    };
    (last.to_ne_bytes(), flow.key.src_port.to_ne_bytes())
}

#[inline(always)]
fn ipip4(
    ctx: &XdpContext,
    real: &RealDef,
    flow: &Flow,
    hop: &NextHop,
) -> Result<(), GlobalCounter> {
    const OUTER: usize = IPV4_MIN_HLEN;
    grow(ctx, OUTER)?;
    let frame = bytes_at::<{ ETH_HLEN + OUTER }>(ctx, 0).ok_or(GlobalCounter::DropTruncated)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    let (a, p) = client(flow);
    let p4 = IPIP_V4_SOURCE_PREFIX;
    let src = u32::from_ne_bytes([p4[0], p4[1], a[2] ^ p[1], a[3] ^ p[0]]);
    ethernet(frame, hop, ETH_P_IPV4);
    let (_, ip) = frame.split_at_mut(ETH_HLEN);
    let ip: &mut [u8; IPV4_MIN_HLEN] = ip.try_into().map_err(|_| GlobalCounter::DropTruncated)?;
    ipv4(
        ip,
        flow,
        flow.ip.len as usize + OUTER,
        IPPROTO_IPIP,
        src,
        real.addr[0],
    );
    Ok(())
}

#[inline(always)]
fn gue4(ctx: &XdpContext, real: &RealDef, flow: &Flow, hop: &NextHop) -> Result<(), GlobalCounter> {
    const OUTER: usize = IPV4_MIN_HLEN + UDP_HLEN;
    grow(ctx, OUTER)?;
    let frame = bytes_at::<{ ETH_HLEN + OUTER }>(ctx, 0).ok_or(GlobalCounter::DropTruncated)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    let (a, p) = client(flow);
    ethernet(frame, hop, ETH_P_IPV4);
    let (_, rest) = frame.split_at_mut(ETH_HLEN);
    let (ip, l4) = rest.split_at_mut(IPV4_MIN_HLEN);
    let ip: &mut [u8; IPV4_MIN_HLEN] = ip.try_into().map_err(|_| GlobalCounter::DropTruncated)?;
    let len = flow.ip.len as usize + OUTER;
    ipv4(ip, flow, len, PROTO_UDP, hop.src[0], real.addr[0]);
    udp(l4, [p[1] ^ a[2], p[0] ^ a[3]], len - IPV4_MIN_HLEN);
    Ok(())
}

#[inline(always)]
fn ipip6(
    ctx: &XdpContext,
    real: &RealDef,
    flow: &Flow,
    hop: &NextHop,
) -> Result<(), GlobalCounter> {
    const OUTER: usize = IPV6_HLEN;
    grow(ctx, OUTER)?;
    let frame = bytes_at::<{ ETH_HLEN + OUTER }>(ctx, 0).ok_or(GlobalCounter::DropTruncated)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    let (a, p) = client(flow);
    let mut src = [0u8; 16];
    src[..12].copy_from_slice(&IPIP_V6_SOURCE_PREFIX);
    src[12..].copy_from_slice(&[a[0] ^ p[0], a[1] ^ p[1], a[2], a[3]]);
    ethernet(frame, hop, ETH_P_IPV6);
    ipv6(
        &mut frame[ETH_HLEN..],
        flow,
        flow.ip.len as usize,
        IPPROTO_IPV6,
        &src,
        &real.addr,
    );
    Ok(())
}

#[inline(always)]
fn gue6(ctx: &XdpContext, real: &RealDef, flow: &Flow, hop: &NextHop) -> Result<(), GlobalCounter> {
    const OUTER: usize = IPV6_HLEN + UDP_HLEN;
    grow(ctx, OUTER)?;
    let frame = bytes_at::<{ ETH_HLEN + OUTER }>(ctx, 0).ok_or(GlobalCounter::DropTruncated)?;
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let frame = unsafe { &mut *frame };
    let (a, p) = client(flow);
    let mut src = [0u8; 16];
    for (i, w) in hop.src.iter().enumerate() {
        src[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let payload = flow.ip.len as usize + UDP_HLEN;
    ethernet(frame, hop, ETH_P_IPV6);
    let (_, rest) = frame.split_at_mut(ETH_HLEN);
    let (ip, l4) = rest.split_at_mut(IPV6_HLEN);
    ipv6(ip, flow, payload, PROTO_UDP, &src, &real.addr);
    udp(l4, [a[0] ^ p[0], a[1] ^ p[1]], payload);
    Ok(())
}
