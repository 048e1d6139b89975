//! The testbed's plan: its addresses, what it is made of ([`Spec`]), the programs it runs
//! ([`Parts`]), and the records of each role that a running testbed keeps.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// The testbed's subnet, 10.214.0.0/24, and who has which address in it.
pub(crate) const NET: [u8; 3] = [10, 214, 0];
pub(crate) const FRONT_HOST: u8 = 2;
/// The fronts' hosts with several fronts (`fronts`): the first is [`FRONT_HOST`].
pub(crate) const FRONT_HOSTS: [u8; MAX_FRONTS as usize] = [FRONT_HOST, 6, 7, 8];
/// Most fronts a testbed has.
pub const MAX_FRONTS: u16 = 4;
pub(crate) const CENTRAL_HOST: u8 = 3;
pub(crate) const ORIGIN_HOST: u8 = 5;
pub(crate) const CLIENT_HOSTS: [u8; 4] = [10, 11, 12, 13];
pub(crate) const FIRST_SERVER_HOST: u8 = 21;
pub(crate) const VIP_HOST: u8 = 100;
pub(crate) const VIP_PORT: u16 = 80;
/// The VIP's HTTPS port (with `tls`), where the sidecars' `listen-tls` also listens.
pub(crate) const TLS_PORT: u16 = 443;
/// The DNS name of the VIP's certificate (with `tls`; clients resolve it to the VIP).
pub const TLS_NAME: &str = "dl7.test";
pub(crate) const PEER_PORT: u16 = 8080;
pub(crate) const SIDECAR_METRICS_PORT: u16 = 9500;
pub(crate) const FRONT_METRICS_PORT: u16 = 9400;
pub(crate) const ORIGIN_PORT: u16 = 8000;
/// The second server subnet, 10.215.0.0/24, behind the router (with `l3_servers`): the
/// router is .1 on both subnets, the routed servers .21 on.
pub(crate) const L3_NET: [u8; 3] = [10, 215, 0];
pub(crate) const ROUTER_HOST: u8 = 1;
/// The clients' subnet with several fronts, 10.216.0.0/24, behind the router (.1), which
/// reaches the VIP over the fronts by ECMP.
pub(crate) const CLIENT_NET: [u8; 3] = [10, 216, 0];
/// The BGP autonomous systems of the router and of every front (one AS for all fronts, so
/// that their routes have equal AS paths and the router spreads flows over them).
pub(crate) const ROUTER_AS: u32 = 65000;
pub(crate) const FRONTS_AS: u32 = 65001;
/// Most servers the /24 and the interface names allow.
pub const MAX_SERVERS: u16 = 32;
/// The testbed's name when none is given: the prefix of everything it creates.
pub const DEFAULT_NAME: &str = "dl7tb";
/// Debian packages the testbed drives (`ip`, `ethtool`, `sysctl`, `nsenter`).
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "procps",
    "util-linux",
    "bird2",
    "openssl",
];
/// The central balancer's role: its namespace, config, log and cgroup name.
pub const CENTRAL_ROLE: &str = "central";

pub(crate) fn host(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], NET[2], h)
}

/// An address in the routed servers' subnet.
pub(crate) fn l3_host(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(L3_NET[0], L3_NET[1], L3_NET[2], h)
}

/// An address in the clients' subnet (several fronts).
pub(crate) fn client_host(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(CLIENT_NET[0], CLIENT_NET[1], CLIENT_NET[2], h)
}

/// Front `i`'s role (0-based): `front`, `front2`, ...
pub(crate) fn front_role(i: usize) -> String {
    match i {
        0 => "front".to_owned(),
        i => format!("front{}", i + 1),
    }
}

/// Where a routed server's decapsulator pins its link and maps (bpffs is shared by all
/// namespaces, so each server needs its own directory).
pub(crate) fn decap_pin_dir(name: &str, role: &str) -> PathBuf {
    decap_pin_root(name).join(role)
}

/// The directory of every routed server's decapsulator pins.
pub(crate) fn decap_pin_root(name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{name}-decap"))
}

pub(crate) fn run_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/dl7-testbed/{name}"))
}

pub(crate) fn pin_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{name}"))
}

/// Front `i`'s pin directory: the first front's is [`pin_dir`], the others' beside it.
pub(crate) fn front_pin_dir(name: &str, i: usize) -> PathBuf {
    match i {
        0 => pin_dir(name),
        i => PathBuf::from(format!("/sys/fs/bpf/{name}-{}", front_role(i))),
    }
}

/// The programs and files the testbed runs; the caller builds them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parts {
    /// The workspace root, whose deploy/ holds the configs and scripts operators use.
    pub root: PathBuf,
    /// `l7-sidecar`.
    pub sidecar: PathBuf,
    /// `l4-ctl` (with the XDP program embedded).
    pub l4_ctl: PathBuf,
    /// `dl7-traffic` (the origin).
    pub traffic: PathBuf,
    /// An XDP object that passes everything (section `xdp`): in native mode the front's
    /// bridge-side veth needs a program, or the kernel drops what the front sends back out.
    pub xdp_pass: PathBuf,
}

/// How the front attaches its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Native,
    Generic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

/// How the front reaches the servers behind the router (`l4-ctl real add --encap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    Ipip,
    Gue,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Ipip => "ipip",
            Encap::Gue => "gue",
        }
    }
}

/// What a testbed is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Prefix of every namespace, pin directory and cgroup (1 to 8 lowercase letters or
    /// digits).
    pub name: String,
    /// Real servers, each with a sidecar (1 to [`MAX_SERVERS`]).
    pub servers: u16,
    /// The sidecars' hashing scheme.
    pub scheme: String,
    /// How the front attaches the XDP program.
    pub mode: Mode,
    /// CPUs each sidecar (and the central balancer) may use: a cgroup quota.
    pub cpu_quota: Option<f64>,
    /// Embedded cache of each sidecar, bytes.
    pub cache_bytes: u64,
    /// Also start the conventional design's central L7 balancer.
    pub central: bool,
    /// Tokio worker threads of each sidecar (`None`: the sidecar's default).
    pub sidecar_threads: Option<u16>,
    /// Relay cache of each sidecar, bytes (`None`: the sidecar's default; 0 turns it off).
    pub relay_cache_bytes: Option<u64>,
    /// How many of the servers (the last ones) sit in a second subnet behind a router,
    /// reached by the front with `encap` and decapsulating with `l4-ctl decap` (native XDP).
    pub l3_servers: u16,
    /// The encapsulation of the routed servers.
    pub encap: Encap,
    /// Fronts (1 to [`MAX_FRONTS`]). With two or more the clients sit behind a router that
    /// reaches the VIP over every front by ECMP, each front announcing it with BIRD, and the
    /// sidecars follow the fronts' membership (`members-from`).
    pub fronts: u16,
    /// HTTPS too: the VIP's port 443 on every front, and `listen-tls` on every sidecar with a
    /// certificate for the VIP from a throwaway CA (`Testbed::ca`).
    pub tls: bool,
    /// Mutual TLS between the sidecars (`peer-tls`): each gets a certificate for its address
    /// from the same throwaway CA, the cluster CA.
    pub peer_tls: bool,
}

impl Spec {
    /// `servers` servers running `scheme`, native XDP, no quota, 256 MiB caches.
    pub fn new(name: &str, servers: u16, scheme: &str) -> Self {
        Spec {
            name: name.to_owned(),
            servers,
            scheme: scheme.to_owned(),
            mode: Mode::Native,
            cpu_quota: None,
            cache_bytes: 256 << 20,
            central: false,
            sidecar_threads: None,
            relay_cache_bytes: None,
            l3_servers: 0,
            encap: Encap::Ipip,
            fronts: 1,
            tls: false,
            peer_tls: false,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        parse_name(&self.name).map_err(anyhow::Error::msg)?;
        ensure!(
            (1..=MAX_SERVERS).contains(&self.servers),
            "{} servers: a testbed has 1 to {MAX_SERVERS}",
            self.servers
        );
        ensure!(
            self.l3_servers <= self.servers,
            "{} routed servers of {}: at most all of them",
            self.l3_servers,
            self.servers
        );
        ensure!(
            self.l3_servers == 0 || !self.central,
            "routed servers and the central balancer do not go together in one testbed"
        );
        ensure!(
            (1..=MAX_FRONTS).contains(&self.fronts),
            "{} fronts: a testbed has 1 to {MAX_FRONTS}",
            self.fronts
        );
        ensure!(
            self.fronts == 1 || !self.central,
            "several fronts and the central balancer do not go together in one testbed"
        );
        ensure!(
            !(self.peer_tls && self.central),
            "peer TLS and the central balancer do not go together in one testbed (the central \
             balancer speaks plain HTTP to the sidecars' peer listeners)"
        );
        if let Some(q) = self.cpu_quota {
            ensure!(
                (0.01..=64.0).contains(&q),
                "a CPU quota of {q} is not between 0.01 and 64 CPUs"
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Front {
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The front daemon's metrics (and membership) listener.
    pub metrics: SocketAddr,
    pub pin_dir: PathBuf,
    /// `front`, `front2`, ...: its namespace's suffix, and the name of its logs.
    #[serde(default)]
    pub role: String,
    /// The front daemon's process.
    #[serde(default)]
    pub daemon_pid: u32,
    /// Its BIRD's control socket (several fronts).
    #[serde(default)]
    pub bird_socket: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Server {
    /// Its member name (`srv1`...), also its role.
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The sidecar's client listener (what the VIP reaches, and what direct tests use).
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub pid: u32,
    /// How the front reaches it: `None` at layer 2 (the same subnet), else behind the router.
    #[serde(default)]
    pub encap: Option<Encap>,
    /// Its decapsulator's pin directory (routed servers).
    #[serde(default)]
    pub decap_pin_dir: Option<PathBuf>,
    /// The sidecar's HTTPS listener (`tls`).
    #[serde(default)]
    pub listen_tls: Option<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Central {
    pub ns: String,
    /// Where clients send requests (the conventional design has no VIP of its own).
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Origin {
    pub ns: String,
    pub addr: SocketAddr,
    pub pid: u32,
}

/// A testbed name: 1 to 8 lowercase letters or digits (interface and namespace names are
/// built from it).
pub fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 8
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not 1 to 8 lowercase letters or digits"))
    }
}

/// The directory `parts.root` joined with `rel`, which must exist.
pub(crate) fn deploy_file(parts: &Parts, rel: &str) -> Result<PathBuf> {
    let path = parts.root.join(rel);
    ensure!(path.exists(), "{} is missing", path.display());
    Ok(path)
}

/// Where a sidecar's config of `role` is written.
pub(crate) fn role_config(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.toml"))
}
