//! `XDP_PASS` for every frame. Attached to the peer of a veth that the balancer sends into in
//! native mode: the kernel drops XDP_TX and redirects into a veth whose peer runs no XDP program.
#![no_std]
#![no_main]

use l4_ebpf as _;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn dl7_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
