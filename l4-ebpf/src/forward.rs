//! Sending a frame to its real: in L2 mode only the Ethernet addresses change (L2 direct
//! server return) and the frame leaves through the receiving interface (XDP_TX) or the real's
//! interface (devmap redirect); in IPIP and GUE mode an outer header is put in front
//! ([`crate::encap`]).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use common::{GlobalCounter, RealDef, TX_PORT_SAME_IFACE};
use l4_ebpf::headers::bytes_at;

use crate::{encap, maps::TX_PORTS, parse::Flow};

/// Sends the frame to `real` the way the real is reached.
#[inline(always)]
pub fn to_real(
    ctx: &XdpContext,
    real_id: u32,
    real: &RealDef,
    flow: &Flow,
) -> (u32, GlobalCounter) {
    if real.encap == RealDef::ENCAP_L2 {
        l2(ctx, real)
    } else {
        encap::to_real(ctx, real_id, real, flow)
    }
}

/// Writes the real's MAC as destination and the front's egress MAC as source, and sends.
#[inline(always)]
fn l2(ctx: &XdpContext, real: &RealDef) -> (u32, GlobalCounter) {
    let Some(macs) = bytes_at::<12>(ctx, 0) else {
        return (xdp_action::XDP_DROP, GlobalCounter::DropTruncated);
    };
    // SAFETY: bounds-checked by bytes_at; the frame is ours to modify.
    let macs = unsafe { &mut *macs };
    macs[..6].copy_from_slice(&real.mac);
    macs[6..].copy_from_slice(&real.src_mac);
    if real.tx_port == TX_PORT_SAME_IFACE {
        return (xdp_action::XDP_TX, GlobalCounter::Tx);
    }
    match TX_PORTS.redirect(real.tx_port, 0) {
        Ok(action) => (action, GlobalCounter::Redirect),
        Err(_) => (xdp_action::XDP_DROP, GlobalCounter::DropRedirectFailed),
    }
}
