//! `l4-ctl`: the front node's side of dl7. It loads the XDP balancer (built from `l4-ebpf`
//! and embedded in this crate), writes VIPs, reals and Maglev tables into its maps, and reads
//! its counters.
//!
//! - [`balancer`]: loading the program or opening its pinned maps, and every map operation;
//! - [`decap`]: the reals' decapsulator for IPIP and GUE (`l4-ctl decap`);
//! - [`front`]: attaching the program so that it outlives l4-ctl, upgrades, detaching;
//! - [`lock`]: one writer of the maps at a time;
//! - [`maglev`]: the Maglev lookup tables (computed here, only read by the program);
//! - [`membership`]: the reals of every VIP as the daemon serves them (`GET /members`);
//! - [`config`]: the declarative TOML configuration (`apply`, `dump`);
//! - [`neighbour`]: the interface and MACs a real is reached with;
//! - [`health`]: health-check probes and the rise/fall state of a real;
//! - [`stats`]: one reading of all counters (`stats`, `real list`, `/metrics`);
//! - [`metrics`]: the Prometheus metrics and their names;
//! - [`service`]: VIP, address and MAC parsing and their encodings in the maps;
//! - [`objects`]: the embedded eBPF objects of the balancer and the decapsulator.
//!
//! The `l4-ctl` binary (`src/main.rs`) is the command line over these.

pub mod announce;
pub mod balancer;
pub mod bird;
pub mod config;
pub mod decap;
pub mod front;
pub mod health;
pub mod lock;
pub mod maglev;
pub mod membership;
pub mod metrics;
pub mod neighbour;
pub mod objects;
pub mod service;
pub mod stats;

pub use balancer::{AttachMode, Balancer, BalancerError, DEFAULT_PIN_DIR, Real, RealSpec};
pub use service::{Encap, Mac, Proto, Vip};
