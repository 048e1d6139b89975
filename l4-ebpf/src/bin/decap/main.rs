//! dl7's decapsulator for the reals: strips the IPIP or GUE header a dl7 (or Katran) front
//! put around a client's packet and hands the inner packet to the stack, where the VIP on `lo`
//! accepts it. No `ipip`/`fou` module and no tunnel device are needed.
//!
//! Only packets addressed to one of the real's own addresses (the `DL7_DECAP_ADDRS` set,
//! written by `l4-ctl decap attach`) are stripped; everything else passes untouched. Two
//! programs make the same decision ([`classify`]): `dl7_decap` in XDP, and `dl7_decap_tc` for
//! interfaces where XDP cannot attach (tc ingress, with `bpf_skb_adjust_room`). Every frame
//! ends in exactly one counter of [`common::DecapCounter`].
#![no_std]
#![no_main]

use l4_ebpf as _;

mod classify;

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO,
        TC_ACT_OK, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action,
    },
    helpers::bpf_xdp_adjust_head,
    macros::{classifier, map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use classify::{Frame, Verdict, classify};
use common::{DecapAddrKey, DecapCounter, MAX_DECAP_ADDRS, map_name};
use l4_ebpf::headers::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, be16, bytes_at};

/// Declares a map under the name `common::map_name!` hands over (see the balancer's maps).
macro_rules! named {
    ($name:literal, $(#[$doc:meta])* $vis:vis static $id:ident : $ty:ty = $init:expr) => {
        $(#[$doc])*
        #[map(name = $name)]
        $vis static $id: $ty = $init;
    };
}

map_name!(DECAP_ADDRS => named!(
    /// The real's own addresses: only outer packets to one of these are stripped.
    pub static DECAP_ADDRS: HashMap<DecapAddrKey, u8> = HashMap::pinned(MAX_DECAP_ADDRS, 0)
));

map_name!(DECAP_STATS => named!(
    /// One counter per [`DecapCounter`], per CPU.
    pub static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::pinned(DecapCounter::COUNT, 0)
));

#[inline(always)]
fn count(counter: DecapCounter) {
    if let Some(c) = DECAP_STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU value, only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

struct XdpFrame<'a>(&'a XdpContext);

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: bounds-checked by bytes_at.
        bytes_at::<N>(self.0, offset).map(|p| unsafe { *p })
    }
}

struct TcFrame<'a>(&'a TcContext);

impl Frame for TcFrame<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }
}

#[xdp]
pub fn dl7_decap(ctx: XdpContext) -> u32 {
    let (action, counter) = decap_xdp(&ctx);
    count(counter);
    action
}

#[inline(always)]
fn decap_xdp(ctx: &XdpContext) -> (u32, DecapCounter) {
    let frame = XdpFrame(ctx);
    let Some(eth) = frame.read::<ETH_HLEN>(0) else {
        return (xdp_action::XDP_PASS, DecapCounter::Passed);
    };
    let (strip, inner_v6) = match classify(&frame, be16(&eth, 12)) {
        Verdict::Decap { strip, inner_v6 } => (strip, inner_v6),
        Verdict::Pass(counter) => return (xdp_action::XDP_PASS, counter),
        Verdict::Drop(counter) => return (xdp_action::XDP_DROP, counter),
    };
    // The Ethernet header moves forward over the outer headers, then the frame starts there.
    let Some(new_eth) = bytes_at::<ETH_HLEN>(ctx, strip) else {
        return (xdp_action::XDP_DROP, DecapCounter::Malformed);
    };
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let new_eth = unsafe { &mut *new_eth };
    new_eth[..12].copy_from_slice(&eth[..12]);
    let ethertype = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
    new_eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    // SAFETY: the helper checks the length itself.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return (xdp_action::XDP_DROP, DecapCounter::Malformed);
    }
    (xdp_action::XDP_PASS, DecapCounter::Decapsulated)
}

#[classifier]
pub fn dl7_decap_tc(ctx: TcContext) -> i32 {
    let (action, counter) = decap_tc(&ctx);
    count(counter);
    action
}

#[inline(always)]
fn decap_tc(ctx: &TcContext) -> (i32, DecapCounter) {
    let frame = TcFrame(ctx);
    let Some(eth) = frame.read::<ETH_HLEN>(0) else {
        return (TC_ACT_OK as i32, DecapCounter::Passed);
    };
    let (strip, inner_v6) = match classify(&frame, be16(&eth, 12)) {
        Verdict::Decap { strip, inner_v6 } => (strip, inner_v6),
        Verdict::Pass(counter) => return (TC_ACT_OK as i32, counter),
        Verdict::Drop(counter) => return (TC_ACT_SHOT as i32, counter),
    };
    // FIXED_GSO: a GRO-merged packet's segments carry as much payload as before, so its
    // gso_size must not grow by the bytes stripped.
    let flags = BPF_F_ADJ_ROOM_FIXED_GSO
        | if inner_v6 {
            BPF_F_ADJ_ROOM_DECAP_L3_IPV6
        } else {
            BPF_F_ADJ_ROOM_DECAP_L3_IPV4
        };
    if ctx
        .adjust_room(-(strip as i32), BPF_ADJ_ROOM_MAC, flags as u64)
        .is_err()
    {
        return (TC_ACT_SHOT as i32, DecapCounter::Malformed);
    }
    let ethertype = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
    if ctx.store(12, &ethertype.to_be_bytes(), 0).is_err() {
        return (TC_ACT_SHOT as i32, DecapCounter::Malformed);
    }
    (TC_ACT_OK as i32, DecapCounter::Decapsulated)
}
