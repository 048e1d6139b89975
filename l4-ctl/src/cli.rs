//! The command line of `l4-ctl`: what main parses and `commands` runs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use l4_ctl::{
    AttachMode, DEFAULT_PIN_DIR, Encap, Mac, Vip,
    decap::{DEFAULT_DECAP_PIN_DIR, DecapMode},
};

#[derive(Debug, Parser)]
#[command(
    name = "l4-ctl",
    version,
    about = "dl7's front node: the XDP balancer, its VIPs, reals, health checks and metrics"
)]
pub(crate) struct Cli {
    /// Where the program, its link and its maps are pinned (on a BPF filesystem).
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, value_name = "DIR")]
    pub(crate) pin_dir: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Attach the balancer to an interface and pin it; run again to upgrade in place (the
    /// maps, and with them every flow's real, are kept).
    Load {
        /// The front's interface that receives the VIPs' traffic.
        #[arg(long)]
        iface: String,
        /// native (in the driver) or generic (any interface, slower).
        #[arg(long, value_enum, default_value = "native")]
        mode: AttachMode,
    },
    /// Detach the balancer and remove its pins (the VIPs' traffic goes to the kernel again).
    Unload,
    /// Interface, mode, program id, and VIP, real and flow counts.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Add, delete or list VIPs (ADDR:PORT/tcp|udp, IPv6 as [ADDR]:PORT/tcp).
    Vip {
        #[command(subcommand)]
        command: VipCommand,
    },
    /// Add, delete, drain, reweigh or list a VIP's real servers.
    Real {
        #[command(subcommand)]
        command: RealCommand,
    },
    /// Which real a new flow from SRC to the VIP gets (the program's own hash and table).
    Lookup {
        vip: Vip,
        /// The client's ADDR:PORT ([ADDR]:PORT for IPv6).
        #[arg(long)]
        src: std::net::SocketAddr,
    },
    /// Make the VIPs, reals, weights and health checks exactly those of a TOML file.
    Apply {
        /// The configuration (see deploy/dl7.toml).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the changes without making them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the configuration in the maps as a file `apply` accepts.
    Dump,
    /// Packets and bytes per VIP and real, and the program's global counters.
    Stats {
        /// One JSON object per reading.
        #[arg(long)]
        json: bool,
        /// Print again every --interval seconds, with rates, until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between readings with --watch.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// With --watch: stop after this many readings.
        #[arg(long)]
        count: Option<u64>,
    },
    /// On a real: strip the IPIP/GUE headers a front sends to encapsulated reals (no ipip or
    /// fou module, no tunnel device).
    Decap {
        /// Where the decapsulator's link and maps are pinned.
        #[arg(long, default_value = DEFAULT_DECAP_PIN_DIR, value_name = "DIR")]
        decap_pin_dir: PathBuf,
        #[command(subcommand)]
        command: DecapCommand,
    },
    /// Health-check the reals and serve Prometheus metrics and the membership, until SIGTERM
    /// or SIGINT.
    Daemon {
        /// Apply this configuration at start and again on SIGHUP.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to serve /metrics and /members, ADDR:PORT.
        #[arg(long)]
        metrics: std::net::SocketAddr,
        /// Announce the VIPs while this front is healthy: their addresses go on the
        /// interface dl7-vips, which BIRD exports by BGP (deploy/bird/front.conf); they are
        /// withdrawn when the program is detached, a VIP has no real taking new flows, the
        /// front is drained, or the daemon stops for any reason.
        #[arg(long)]
        announce: bool,
        /// BIRD's control socket, read for the BGP session metrics.
        #[arg(long, default_value = l4_ctl::bird::DEFAULT_SOCKET, value_name = "PATH")]
        bird_socket: PathBuf,
    },
    /// Withdraw or restore this front's VIP announcements (`l4-ctl daemon --announce`).
    Front {
        #[command(subcommand)]
        command: FrontCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FrontCommand {
    /// Withdraw the VIPs from the routers; flows that still arrive are forwarded as before.
    /// Kept in the maps: a restarted daemon stays drained.
    Drain,
    /// Announce the VIPs again (each while it has a real that takes new flows).
    Undrain,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DecapCommand {
    /// Attach to the interface the outer packets arrive on (again: update in place).
    Attach {
        #[arg(long)]
        iface: String,
        /// native or generic XDP, or tc where XDP cannot attach.
        #[arg(long, value_enum, default_value = "native")]
        mode: DecapMode,
        /// Also decapsulate outer packets to this address (besides IFACE's global ones);
        /// repeatable.
        #[arg(long = "addr", value_name = "ADDR")]
        addrs: Vec<std::net::IpAddr>,
    },
    /// Detach and remove the pins.
    Detach,
    /// Interface, mode, addresses and counters.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VipCommand {
    /// Add a VIP (its packets are dropped and counted until it has a real).
    Add { vip: Vip },
    /// Delete a VIP and its reals.
    Del { vip: Vip },
    /// List the VIPs.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RealCommand {
    /// Add a real server to a VIP.
    Add {
        vip: Vip,
        addr: std::net::IpAddr,
        /// The real's MAC; by default taken from the neighbour table (resolved if needed).
        /// Only for --encap l2.
        #[arg(long)]
        mac: Option<Mac>,
        /// Relative weight, 0 to 65535 (0 adds it drained).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// How frames reach the real: l2 (MAC rewrite, same segment), ipip or gue (an outer
        /// header; the real may sit behind routers and decapsulates with `l4-ctl decap`).
        #[arg(long, value_enum, default_value = "l2")]
        encap: Encap,
    },
    /// Remove a real: its flows are placed anew on the others.
    Del { vip: Vip, addr: std::net::IpAddr },
    /// Weight 0: no new flows, established flows stay.
    Drain { vip: Vip, addr: std::net::IpAddr },
    /// Set a real's weight.
    Weight {
        vip: Vip,
        addr: std::net::IpAddr,
        weight: u32,
    },
    /// List a VIP's reals: address, MAC, weight, state, table share, packets.
    List {
        vip: Vip,
        #[arg(long)]
        json: bool,
    },
}

/// `--interval`: a positive number of seconds, at most an hour.
pub fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0.05 to 3600"
        )),
    }
}
