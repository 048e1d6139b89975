//! dl7's namespace testbed: the whole cluster in network namespaces on one machine.
//!
//! ```text
//!   client (10.214.0.10-13) ─┐
//!   front  (10.214.0.2, VIP 10.214.0.100 answers ARP, XDP) ─┤
//!   central (10.214.0.3:80, with --central) ─┤
//!   origin (10.214.0.5:8000) ─┤── bridge (namespace <name>-br)
//!   srv1..N (10.214.0.21.., VIP on lo) ─┤
//!   router (10.214.0.1, with --l3-servers) ─┘
//!     └── 10.215.0.1 ── bridge (namespace <name>-br2) ── srvN-K+1..N (10.215.0.21+.., VIP
//!                       on lo, decapsulator on eth0; the front sends them IPIP or GUE)
//! ```
//!
//! Everything is brought up the way an operator would, one step per role ([`roles`]): the
//! front with `l4-ctl load` (in the front's namespace, pins under /sys/fs/bpf/<name>), the VIP
//! and reals with `l4-ctl vip add` / `real add` (MACs from the neighbour table), each server
//! with `deploy/real-server-setup.sh`, the sidecars with `deploy/sidecar.example.toml` and the
//! front daemon with `deploy/dl7.toml`, each with the testbed's addresses filled in. With a
//! CPU quota every sidecar runs in a cgroup limited to it. With `central` the testbed also
//! has the paper's conventional design beside dl7's: one `l7-sidecar serve --mode central`
//! (at 10.214.0.3:80, namespace <name>-central, under the same quota) as the single L7
//! balancer in front of the same servers, whose sidecars serve what it sends them (it arrives
//! marked as forwarded, so they never pass it on).
//!
//! The testbed runs programs it is given ([`Parts`]); building them is the caller's job
//! (`cargo xtask` builds them in release mode). What [`up`] created is recorded in
//! /run/dl7-testbed/<name>/state.json, so a later process can [`attach`] to it; [`down`]
//! removes every namespace, process, pin directory and cgroup of the testbed, also when the
//! state file is missing (after a crash), because all of them carry the testbed's name.
//!
//! Besides the testbed, the helpers every test of the project shares: [`in_netns`],
//! [`metrics::Metrics`] with [`metrics::scrape`], and hand-built packets ([`packet`]).

mod cgroup;
pub mod cli;
mod config;
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
mod netns;
pub mod packet;
pub mod plan;
pub mod process;
mod roles;
mod testbed;
pub mod tls;

pub use netns::{enter_netns, http_get, in_netns, switch_ns};
pub use plan::{
    CENTRAL_ROLE, DEFAULT_NAME, Encap, MAX_FRONTS, MAX_SERVERS, Mode, PACKAGES, Parts, Spec,
};
pub use testbed::{Testbed, attach, down, up};
