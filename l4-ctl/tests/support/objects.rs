//! The test programs built beside the balancer by `cargo xtask build-ebpf` (l4-ctl's build
//! script names them): test tooling, not part of what the operator's l4-ctl embeds. The
//! XDP bench includes this file too.

/// Program `dl7_pass`: `XDP_PASS` for every frame. In native mode the kernel drops frames sent
/// (XDP_TX or redirect) into a veth whose peer runs no XDP program, so testbeds attach this to
/// the peers of the veths the balancer sends into.
pub static PASS: &[u8] = aya::include_bytes_aligned!(env!("DL7_OBJ_PASS"));

/// Program `dl7_mac_swap`: swaps the MAC addresses and returns `XDP_TX`; the baseline that
/// `cargo xtask bench xdp` measures the balancer against.
pub static MAC_SWAP: &[u8] = aya::include_bytes_aligned!(env!("DL7_OBJ_MAC_SWAP"));

/// Name of the program in [`PASS`].
pub const PASS_PROGRAM: &str = "dl7_pass";
/// Name of the program in [`MAC_SWAP`].
pub const MAC_SWAP_PROGRAM: &str = "dl7_mac_swap";
