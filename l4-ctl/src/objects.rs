//! The eBPF objects built from `l4-ebpf` by `cargo xtask build-ebpf`, embedded at compile
//! time so that `l4-ctl` is a single file an operator copies to a front node.

/// The balancer (program `dl7_xdp` and all of dl7's maps).
pub static BALANCER: &[u8] = aya::include_bytes_aligned!(env!("DL7_OBJ_BALANCER"));

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
