//! Shared by l7-sidecar's end-to-end tests: sidecar processes that are killed on drop
//! ([`process`]), a test origin that counts what it is asked ([`origin`]), a raw HTTP/1.1
//! client that can send anything and checks how connections end ([`client`]), and clusters
//! of sidecars in front of one origin.
//!
//! Everything listens on loopback addresses `127.0.NET.x`, with `NET` different for every
//! test, so tests running in parallel never share an address; ports come from the kernel.
#![allow(dead_code)]

pub mod client;
pub mod origin;
pub mod process;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use l7_sidecar::scheme::{self, Member};

use origin::Origin;
use process::Sidecar;

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("dl7-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `127.0.net.host`.
pub fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

/// A currently free port on `ip`.
pub fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
}

/// `n` currently free loopback ports (held together so they are distinct).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Sidecars in distributed mode (members `s0`, `s1`, ..) in front of one test origin, each
/// started from its own TOML file in a temp dir.
pub struct Cluster {
    pub sidecars: Vec<Sidecar>,
    pub origin: Origin,
    pub names: Vec<String>,
    pub scheme: String,
    pub dir: TempDir,
}

impl Cluster {
    /// `n` sidecars on `127.0.net.11..` with the origin on `127.0.net.1`; `extra` are more
    /// `serve` flags for every sidecar.
    pub fn start(net: u8, n: usize, extra: &[&str]) -> Cluster {
        let dir = TempDir::new("cluster");
        let origin = Origin::start(ip(net, 1));
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let hosts: Vec<Ipv4Addr> = (0..n).map(|i| ip(net, 11 + i as u8)).collect();
        let peers: Vec<SocketAddr> = hosts.iter().map(|&h| free_addr(h)).collect();
        let members: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(name, addr)| format!("{name}={addr}"))
            .collect();
        let members = members.join(",");
        let mut sidecars = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let config = dir.path(&format!("{name}.toml"));
            write_config(&config, name, &members, &origin.url());
            let listen = free_addr(hosts[i]);
            let metrics = free_addr(hosts[i]);
            let mut args = vec![
                "serve".to_owned(),
                "--config".to_owned(),
                config.display().to_string(),
                "--listen".to_owned(),
                listen.to_string(),
                "--peer-listen".to_owned(),
                peers[i].to_string(),
                "--metrics".to_owned(),
                metrics.to_string(),
                "--threads".to_owned(),
                "2".to_owned(),
            ];
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            sidecars.push(Sidecar::start(
                &args,
                listen,
                Some(peers[i]),
                metrics,
                dir.path(&format!("{name}.log")),
            ));
        }
        Cluster {
            sidecars,
            origin,
            names,
            scheme: "ketama".to_owned(),
            dir,
        }
    }

    /// The member (index) that owns `key`, computed with the library's scheme.
    pub fn owner(&self, key: &str) -> usize {
        let members: Vec<Member> = self.names.iter().map(|n| Member::new(n, 1)).collect();
        scheme::build(&self.scheme, &members)
            .expect("build scheme")
            .pick(key.as_bytes())
    }

    /// The first `count` keys `/obj/<prefix>-<i>?size=<size>` owned by member `owner`.
    pub fn keys_owned_by(
        &self,
        owner: usize,
        prefix: &str,
        size: usize,
        count: usize,
    ) -> Vec<String> {
        (0..10_000)
            .map(|i| format!("/obj/{prefix}-{i}?size={size}"))
            .filter(|k| self.owner(k) == owner)
            .take(count)
            .collect()
    }
}

/// A central-mode balancer on `127.0.net.11` in front of `members` (its backends), with
/// `extra` more `serve` flags; its log goes to `dir`.
pub fn central(net: u8, members: &[String], extra: &[&str], dir: &TempDir) -> Sidecar {
    let (listen, metrics) = (free_addr(ip(net, 11)), free_addr(ip(net, 11)));
    let mut args: Vec<String> = [
        "serve",
        "--mode",
        "central",
        "--listen",
        &listen.to_string(),
        "--members",
        &members.join(","),
        "--metrics",
        &metrics.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Sidecar::start(&args, listen, None, metrics, dir.path("central.log"))
}

/// Writes a sidecar's TOML file (the membership and the origin; the rest are flags).
pub fn write_config(path: &Path, name: &str, members: &str, origin: &str) {
    fs::write(
        path,
        format!("self = \"{name}\"\nmembers = \"{members}\"\nscheme = \"ketama\"\norigin = \"{origin}\"\n"),
    )
    .expect("write config");
}
