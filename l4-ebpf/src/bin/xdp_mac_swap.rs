//! The benchmark baseline: swaps the Ethernet addresses and returns `XDP_TX`, the least any
//! L2 forwarder must do. `cargo xtask bench xdp` reports the balancer's cost as a ratio to it.
#![no_std]
#![no_main]

use l4_ebpf as _;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn dl7_mac_swap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: 12 bytes bounds-checked above.
    let macs = unsafe { &mut *(start as *mut [u8; 12]) };
    let dst = [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]];
    macs.copy_within(6..12, 0);
    macs[6..].copy_from_slice(&dst);
    xdp_action::XDP_TX
}
