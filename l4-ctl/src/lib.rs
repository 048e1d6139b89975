//! `l4-ctl`: the front node's side of dl7. It loads the XDP balancer (built from `l4-ebpf`
//! and embedded in this crate), writes VIPs, reals and Maglev tables into its maps, and reads
//! its counters.
//!
//! - [`balancer`]: loading, attaching and every map operation;
//! - [`maglev`]: the Maglev lookup tables (computed here, only read by the program);
//! - [`objects`]: the embedded eBPF objects (the balancer and two small helper programs);
//! - [`frames`]: hand-built frames for test runs of the program (tests, benchmarks);
//! - [`service`]: VIP, address and MAC parsing and their encodings in the maps.

pub mod balancer;
pub mod frames;
pub mod maglev;
pub mod objects;
pub mod service;

pub use balancer::{AttachMode, Balancer, BalancerError, DEFAULT_PIN_DIR, Real, RealSpec};
pub use service::{Mac, Proto, Vip};
