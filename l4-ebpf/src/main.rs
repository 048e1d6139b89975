//! dl7's XDP balancer for the front node.
//!
//! Reading order, as in Katran's balancer: [`dl7_xdp`] parses the frame ([`parse`]), looks up
//! the VIP, finds the flow's real in the connection table or through the VIP's Maglev table,
//! rewrites the MAC addresses and sends the frame on ([`forward`]). Every frame ends in exactly
//! one global counter; the maps are in [`maps`], their layouts in the `common` crate.
#![no_std]
#![no_main]

use l4_ebpf as _;

mod forward;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use common::{ConnValue, GlobalCounter, NO_REAL, RING_SIZE, RealDef, VipKey, VipMeta, flow_hash};
use maps::{CONNS, REAL_STATS, REALS, RINGS, VIP_ADDRS, VIP_STATS, VIPS, account, count};
use parse::{Flow, Frame};

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
    }
}

#[inline(always)]
fn balance(ctx: &XdpContext, flow: &Flow) -> (u32, GlobalCounter) {
    let vip = VipKey {
        addr: flow.key.dst,
        port: flow.key.dst_port,
        proto: flow.key.proto,
        family: flow.key.family,
    };
    // SAFETY: copied out at once, see `decide`.
    let Some(meta) = (unsafe { VIPS.get(&vip) }).copied() else {
        return (xdp_action::XDP_PASS, GlobalCounter::PassNotVip);
    };
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    account(&VIP_STATS, meta.vip_id, frame_len);
    if flow.ip_options {
        count(GlobalCounter::Ipv4Options);
    }
    let Some((real_id, real)) = pick_real(flow, &meta) else {
        return (xdp_action::XDP_DROP, GlobalCounter::DropNoReal);
    };
    account(&REAL_STATS, real_id, frame_len);
    forward::to_real(ctx, &real)
}

/// The real for this packet: the flow's entry in the connection table when it has one and
/// its real still exists (drained reals keep their flows), otherwise (and always for a SYN)
/// the VIP's Maglev table, recording the choice for the flow's next packets.
#[inline(always)]
fn pick_real(flow: &Flow, meta: &VipMeta) -> Option<(u32, RealDef)> {
    if !flow.syn {
        // SAFETY: copied out at once, see `decide`.
        if let Some(conn) = (unsafe { CONNS.get(&flow.key) }).copied() {
            if let Some(real) = live_real(conn.real, conn.generation) {
                count(GlobalCounter::ConnHits);
                return Some((conn.real, real));
            }
        }
        count(GlobalCounter::ConnMisses);
    }
    let ring = RINGS.get(meta.ring)?;
    let real_id = *ring.get(ring_slot(flow))?;
    if real_id == NO_REAL {
        return None;
    }
    let real = *REALS.get(real_id)?;
    if real.flags & RealDef::FLAG_ACTIVE == 0 {
        return None;
    }
    let conn = ConnValue {
        real: real_id,
        generation: real.generation,
    };
    if CONNS.insert(&flow.key, &conn, 0).is_err() {
        count(GlobalCounter::ConnInsertFailed);
    }
    count(GlobalCounter::NewFlows);
    Some((real_id, real))
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
fn live_real(id: u32, generation: u32) -> Option<RealDef> {
    let real = *REALS.get(id)?;
    (real.flags & RealDef::FLAG_ACTIVE != 0 && real.generation == generation).then_some(real)
}
