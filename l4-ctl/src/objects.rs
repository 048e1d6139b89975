//! The eBPF objects built from `l4-ebpf` by `cargo xtask build-ebpf`, embedded at compile
//! time so that `l4-ctl` is a single file an operator copies to a front node. (The small test
//! programs built beside it are test tooling: tests/support/objects.rs.)

/// The balancer (program `dl7_xdp` and all of dl7's maps).
pub static BALANCER: &[u8] = aya::include_bytes_aligned!(env!("DL7_OBJ_BALANCER"));

/// The reals' decapsulator (programs `dl7_decap` for XDP and `dl7_decap_tc` for tc, and its
/// maps).
pub static DECAP: &[u8] = aya::include_bytes_aligned!(env!("DL7_OBJ_DECAP"));
