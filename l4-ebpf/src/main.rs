//! dl7's XDP balancer for the front node.
//!
//! Reading order, as in Katran's balancer: [`dl7_xdp`] parses the frame ([`parse`]), finds the
//! flow's real in the connection table or, for new flows, through the VIP's Maglev table,
//! and sends the frame on ([`forward`]): MAC rewrite, or an outer IPIP/GUE header. Every frame
//! ends in exactly one global counter; the maps are in [`maps`], their layouts in `common`.
//!
//! The order of lookups follows what packets cost most often: an established packet needs
//! only the port set (an array read) and the connection table, whose entry names the real and
//! through it the VIP; the VIP table is read only for new flows, misses and ICMP errors.
#![no_std]
#![no_main]

use l4_ebpf as _;

mod encap;
mod forward;
mod maps;
mod parse;
mod too_big;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use common::{
    ConnValue, FAMILY_V4, GlobalCounter, NO_REAL, RING_SIZE, RealDef, VipKey, VipMeta, flow_hash,
};
use maps::{
    CONNS, CONNS4, FLOW_GUARD, REAL_STATS, REALS, RINGS, SETTINGS, VIP_ADDRS, VIP_PORTS, VIP_STATS,
    VIPS, account, count,
};
use parse::{Flow, Frame};

/// Length of the new-flow guard's window.
const GUARD_WINDOW_NS: u64 = 1_000_000_000;

#[xdp]
pub fn dl7_xdp(ctx: XdpContext) -> u32 {
    let (action, counter) = decide(&ctx);
    count(counter);
    action
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, GlobalCounter) {
    match parse::frame(ctx) {
        Frame::Done(action, counter) => (action, counter),
        // SAFETY (map get): the value is copied out at once; a concurrent update can at worst
        // make this one packet see the old or the new value.
        Frame::Fragment(addr) => match unsafe { VIP_ADDRS.get(&addr) } {
            Some(_) => (xdp_action::XDP_DROP, GlobalCounter::DropFragment),
            None => (xdp_action::XDP_PASS, GlobalCounter::PassNotVip),
        },
        Frame::Flow(flow) => balance(ctx, &flow),
        Frame::IcmpError(flow) => icmp_error(ctx, &flow),
    }
}

#[inline(always)]
fn balance(ctx: &XdpContext, flow: &Flow) -> (u32, GlobalCounter) {
    if !vip_port(flow.key.dst_port) {
        return (xdp_action::XDP_PASS, GlobalCounter::PassNotVip);
    }
    if flow.ip_options {
        count(GlobalCounter::Ipv4Options);
    }
    let conn = conn_entry(flow);
    if !flow.syn
        && let Some((real_id, real)) = live_entry(conn)
    {
        count(GlobalCounter::ConnHits);
        account(&VIP_STATS, real.vip_id, frame_len(ctx));
        return send(ctx, flow, real_id, &real);
    }
    let Some(meta) = vip(flow) else {
        return (xdp_action::XDP_PASS, GlobalCounter::PassNotVip);
    };
    account(&VIP_STATS, meta.vip_id, frame_len(ctx));
    if !flow.syn {
        if let Some((real_id, real)) = older_entry(flow) {
            count(GlobalCounter::ConnHits);
            return send(ctx, flow, real_id, &real);
        }
        count(GlobalCounter::ConnMisses);
    }
    let Some((real_id, real)) = maglev_real(flow, &meta) else {
        return (xdp_action::XDP_DROP, GlobalCounter::DropNoReal);
    };
    record(flow, conn, real_id, &real);
    send(ctx, flow, real_id, &real)
}

/// An ICMP error about a VIP's flow goes where the flow's packets go (so that path-MTU
/// discovery works for the VIP's clients); it never creates or changes a flow entry.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, flow: &Flow) -> (u32, GlobalCounter) {
    if !vip_port(flow.key.dst_port) {
        return (xdp_action::XDP_PASS, GlobalCounter::PassIcmp);
    }
    let Some(meta) = vip(flow) else {
        return (xdp_action::XDP_PASS, GlobalCounter::PassIcmp);
    };
    account(&VIP_STATS, meta.vip_id, frame_len(ctx));
    let known = live_entry(conn_entry(flow)).or_else(|| older_entry(flow));
    let Some((real_id, real)) = known.or_else(|| maglev_real(flow, &meta)) else {
        return (xdp_action::XDP_DROP, GlobalCounter::DropNoReal);
    };
    count(GlobalCounter::IcmpToReal);
    send(ctx, flow, real_id, &real)
}

#[inline(always)]
fn send(ctx: &XdpContext, flow: &Flow, real_id: u32, real: &RealDef) -> (u32, GlobalCounter) {
    account(&REAL_STATS, real_id, frame_len(ctx));
    forward::to_real(ctx, real_id, real, flow)
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Whether some VIP uses this (network-order) port.
#[inline(always)]
fn vip_port(port: u16) -> bool {
    VIP_PORTS
        .get(u16::from_be(port) as u32)
        .is_some_and(|&n| n != 0)
}

#[inline(always)]
fn vip(flow: &Flow) -> Option<VipMeta> {
    let key = VipKey {
        addr: flow.key.dst,
        port: flow.key.dst_port,
        proto: flow.key.proto,
        family: flow.key.family,
    };
    // SAFETY: copied out at once, see `decide`.
    unsafe { VIPS.get(&key) }.copied()
}

/// The flow's entry in its family's connection table (IPv4 flows have a table of their own,
/// with 16-byte keys).
#[inline(always)]
fn conn_entry(flow: &Flow) -> Option<ConnValue> {
    // SAFETY (map get): copied out at once, see `decide`.
    if flow.key.family == FAMILY_V4 {
        unsafe { CONNS4.get(&flow.key.v4()) }.copied()
    } else {
        unsafe { CONNS.get(&flow.key) }.copied()
    }
}

/// The real of an entry, when it is still the one the flow was given.
#[inline(always)]
fn live_entry(conn: Option<ConnValue>) -> Option<(u32, &'static RealDef)> {
    let conn = conn?;
    Some((conn.real, live_real(conn.real, conn.generation)?))
}

/// An IPv4 flow without an entry in the IPv4 table may still have one in the other table,
/// written by a build before the IPv4 table existed (an in-place upgrade keeps every flow's
/// real): such an entry is moved over. Asked only for packets of a VIP that missed, so it
/// costs nothing on the established path or for traffic to no VIP. Not inlined: a
/// subprogram of its own keeps its stack out of the main program's 512 bytes.
#[inline(never)]
fn older_entry(flow: &Flow) -> Option<(u32, &'static RealDef)> {
    if flow.key.family != FAMILY_V4 {
        return None;
    }
    // SAFETY: copied out at once, see `decide`.
    let old = (unsafe { CONNS.get(&flow.key) }).copied()?;
    let real = live_real(old.real, old.generation)?;
    // Moved, not copied: the old table gets no IPv4 inserts any more, so an entry left there
    // would never be evicted and could come back for a later flow of the same 5-tuple. A
    // failed copy only means this lookup happens again next time.
    if CONNS4.insert(&flow.key.v4(), &old, 0).is_ok() {
        let _ = CONNS.remove(&flow.key);
    }
    Some((old.real, real))
}

/// The real the VIP's Maglev table gives this flow, if it may receive new flows.
#[inline(always)]
fn maglev_real(flow: &Flow, meta: &VipMeta) -> Option<(u32, &'static RealDef)> {
    let ring = RINGS.get(meta.ring)?;
    let real_id = *ring.get(ring_slot(flow))?;
    if real_id == NO_REAL {
        return None;
    }
    let real = REALS.get(real_id)?;
    (real.flags & RealDef::FLAG_ACTIVE != 0).then_some((real_id, real))
}

/// Records a new flow's real in the connection table, unless the table already says the
/// same (a repeated SYN) or the new-flow guard's budget for this second is spent.
#[inline(always)]
fn record(flow: &Flow, old: Option<ConnValue>, real_id: u32, real: &RealDef) {
    let conn = ConnValue {
        real: real_id,
        generation: real.generation,
    };
    if old == Some(conn) {
        count(GlobalCounter::SynUnchanged);
        return;
    }
    count(GlobalCounter::NewFlows);
    // Replacing an entry never grows the table, and leaving it would send the flow's next
    // packets to the real it names instead of the one this packet went to.
    if old.is_none() && !guard_admits() {
        count(GlobalCounter::NewFlowsUnrecorded);
        return;
    }
    let inserted = if flow.key.family == FAMILY_V4 {
        CONNS4.insert(&flow.key.v4(), &conn, 0)
    } else {
        CONNS.insert(&flow.key, &conn, 0)
    };
    if inserted.is_err() {
        count(GlobalCounter::ConnInsertFailed);
    }
}

/// The new-flow guard: at most `new_flow_limit` connection-table writes per second on this
/// CPU, so that a flood of new flows cannot push established ones out of the LRU table.
#[inline(always)]
fn guard_admits() -> bool {
    let limit = SETTINGS.get(0).map_or(0, |s| s.new_flow_limit);
    if limit == 0 {
        return true;
    }
    let Some(window) = FLOW_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU value, only this program on this CPU touches it.
    let window = unsafe { &mut *window };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(window.start_ns) >= GUARD_WINDOW_NS {
        window.start_ns = now;
        window.recorded = 0;
    }
    if window.recorded >= limit as u64 {
        return false;
    }
    window.recorded += 1;
    true
}

/// The flow's slot in a Maglev table. LLVM turns `% RING_SIZE` into a multiply and shifts
/// whose range the verifier cannot follow, and drops a plain re-check as redundant; reading
/// the slot back through a volatile load hides what LLVM knows, so the bounds check stays and
/// the verifier sees it.
#[inline(always)]
fn ring_slot(flow: &Flow) -> usize {
    let slot = flow_hash(&flow.key) % RING_SIZE;
    // SAFETY: reads a live local.
    let slot = unsafe { core::ptr::read_volatile(&slot) };
    if slot < RING_SIZE { slot as usize } else { 0 }
}

/// The real in slot `id` if it is still the one a flow was given (same generation).
#[inline(always)]
fn live_real(id: u32, generation: u32) -> Option<&'static RealDef> {
    let real = REALS.get(id)?;
    (real.flags & RealDef::FLAG_ACTIVE != 0 && real.generation == generation).then_some(real)
}
