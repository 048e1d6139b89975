//! The fronts under test, each put in the testbed's front namespace in turn: dl7's XDP front
//! (as the testbed loads it), kernel NAT with nftables (`dnat to jhash ...` or `numgen ...`
//! over the reals, the LVS-NAT model: replies come back through the front) and HAProxy in
//! `mode tcp`; plus the check that the VIP answers through a front before it is measured.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::bench::process::Group;
use dl7_testbed::{Testbed, http_get, in_netns, process as cmd};

/// Debian's HAProxy (the bench installs the package).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// How long HAProxy may take to listen.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The nftables table the bench adds to the front's namespace.
const NFT_TABLE: &str = "dl7bench";

/// Requests through the VIP that must succeed before a front is measured.
const CHECK_REQUESTS: usize = 8;
/// Their object size: every answer must carry exactly this many bytes.
const CHECK_SIZE: usize = 1000;

/// The fronts, in the order the bench measures them (the testbed starts with XDP loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// dl7's XDP program (native mode), as `testbed up` loads it.
    Xdp,
    /// nftables DNAT: `dnat to jhash ip saddr . tcp sport mod N map { ... }`.
    NftJhash,
    /// nftables DNAT: `dnat to numgen inc mod N map { ... }`.
    NftNumgen,
    /// HAProxy `mode tcp`, one thread, round robin.
    HaproxyTcp,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Xdp => "xdp",
            Front::NftJhash => "nft-jhash",
            Front::NftNumgen => "nft-numgen",
            Front::HaproxyTcp => "haproxy-tcp",
        }
    }

    /// nftables' expression that picks the real's index, for the NAT fronts.
    fn nft_selector(self, reals: usize) -> Option<String> {
        match self {
            Front::NftJhash => Some(format!("jhash ip saddr . tcp sport mod {reals}")),
            Front::NftNumgen => Some(format!("numgen inc mod {reals}")),
            Front::Xdp | Front::HaproxyTcp => None,
        }
    }
}

/// A front is reported by its name.
impl Serialize for Front {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The VIP and the reals, from the testbed's status.
pub struct Service {
    pub vip: SocketAddrV4,
    /// (server name, address)
    pub reals: Vec<(String, Ipv4Addr)>,
    /// The front's own address (the servers' next hop for replies under NAT).
    pub front_addr: Ipv4Addr,
    pub client_addrs: Vec<Ipv4Addr>,
}

impl Service {
    pub fn of(status: &Testbed) -> Result<Self> {
        let SocketAddr::V4(vip) = status.vip else {
            bail!("the testbed's VIP {} is not IPv4", status.vip);
        };
        Ok(Self {
            vip,
            reals: status
                .servers
                .iter()
                .map(|s| (s.name.clone(), s.addr))
                .collect(),
            front_addr: status.front.addr,
            client_addrs: status.client_addrs.clone(),
        })
    }
}

/// The ruleset of a NAT front: one table with a prerouting NAT chain that sends the VIP's
/// TCP port to the real the selector picks. Loading it replaces an earlier version whole.
pub fn nft_ruleset(front: Front, service: &Service) -> Result<String> {
    let selector = front
        .nft_selector(service.reals.len())
        .with_context(|| format!("{} is not an nftables front", front.name()))?;
    let map = service
        .reals
        .iter()
        .enumerate()
        .map(|(i, (_, addr))| format!("{i} : {addr}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "table ip {NFT_TABLE}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} tcp dport {port} dnat to {selector} map {{ {map} }}
    }}
}}
",
        vip = service.vip.ip(),
        port = service.vip.port(),
    ))
}

/// Runs `sysctl -w` with `settings` in namespace `ns`.
fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    cmd::output(
        Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
            .args(settings),
    )?;
    Ok(())
}

/// Kernel NAT on the front: forwarding on, the servers' replies routed back through the
/// front. While it lives the testbed is a NAT cluster; `remove` makes it the DSR cluster
/// again (the testbed's teardown removes everything anyway).
pub struct KernelNat<'a> {
    status: &'a Testbed,
    service: &'a Service,
}

impl<'a> KernelNat<'a> {
    /// Turns forwarding on in the front (without ICMP redirects: servers and clients share
    /// the subnet, and a redirect would send the servers' replies around the NAT) and routes
    /// every client address through the front on every server.
    pub fn set_up(status: &'a Testbed, service: &'a Service) -> Result<Self> {
        sysctl(
            &status.front.ns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.eth0.send_redirects=0",
            ],
        )?;
        let via = service.front_addr.to_string();
        for server in &status.servers {
            sysctl(
                &server.ns,
                &[
                    "net.ipv4.conf.all.accept_redirects=0",
                    "net.ipv4.conf.eth0.accept_redirects=0",
                ],
            )?;
            for client in &service.client_addrs {
                cmd::output(Command::new("ip").args([
                    "-n",
                    &server.ns,
                    "route",
                    "replace",
                    &format!("{client}/32"),
                    "via",
                    &via,
                ]))?;
            }
        }
        Ok(Self { status, service })
    }

    /// Loads `front`'s ruleset (replacing the previous one).
    pub fn load(&self, front: Front) -> Result<()> {
        let ruleset = nft_ruleset(front, self.service)?;
        let path = self.status.run_dir.join(format!("{}.nft", front.name()));
        fs::write(&path, ruleset).with_context(|| format!("writing {}", path.display()))?;
        cmd::output(
            Command::new("ip")
                .args(["netns", "exec", &self.status.front.ns, "nft", "-f"])
                .arg(&path),
        )
        .with_context(|| format!("loading {} into {}", path.display(), self.status.front.ns))?;
        Ok(())
    }

    /// Removes the table, the servers' routes and forwarding.
    pub fn remove(self) -> Result<()> {
        let front = &self.status.front.ns;
        cmd::output(Command::new("ip").args([
            "netns", "exec", front, "nft", "delete", "table", "ip", NFT_TABLE,
        ]))?;
        sysctl(front, &["net.ipv4.ip_forward=0"])?;
        for server in &self.status.servers {
            for client in &self.service.client_addrs {
                cmd::output(Command::new("ip").args([
                    "-n",
                    &server.ns,
                    "route",
                    "del",
                    &format!("{client}/32"),
                ]))?;
            }
        }
        Ok(())
    }
}

/// HAProxy's configuration: one thread, `mode tcp` on the VIP, round robin over the reals,
/// no health checks (the servers are up for the whole run), timeouts far beyond a run.
pub fn haproxy_config(service: &Service) -> String {
    let servers = service
        .reals
        .iter()
        .fold(String::new(), |mut s, (name, addr)| {
            let _ = writeln!(s, "    server {name} {addr}:{}", service.vip.port());
            s
        });
    format!(
        "global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend vip
    bind {vip}
    default_backend reals
backend reals
    balance roundrobin
{servers}",
        vip = service.vip
    )
}

/// Starts HAProxy in the front's namespace on `cpu` (its config and logs in the testbed's
/// run directory) and waits until the VIP accepts connections from the clients. Dropping the
/// group stops it.
pub fn start_haproxy(status: &Testbed, service: &Service, cpu: usize) -> Result<Group> {
    let dir = &status.run_dir;
    let conf = dir.join("haproxy.cfg");
    fs::write(&conf, haproxy_config(service))
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", status.front.ns))
        .arg(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&conf);
    let mut group = Group::spawn("haproxy", cpu, &command, dir)?;
    let vip = SocketAddr::V4(service.vip);
    in_netns(&status.client_ns, || group.wait_listening(vip, START_LIMIT))??;
    Ok(group)
}

/// A few requests through the VIP (each on a new connection, so from new source ports): all
/// must come back 200 with the object's size.
pub fn check_through_vip(status: &Testbed, service: &Service, front: Front) -> Result<()> {
    let vip = SocketAddr::V4(service.vip);
    for i in 0..CHECK_REQUESTS {
        let path = format!("/obj/l4-check-{}-{i}?size={CHECK_SIZE}", front.name());
        let (code, body) = http_get(&status.client_ns, vip, &path)
            .with_context(|| format!("{}: GET {path} through the VIP", front.name()))?;
        ensure!(
            code == 200 && body.len() == CHECK_SIZE,
            "{}: GET {path} through the VIP answered {code} with {} bytes (want 200, {CHECK_SIZE})",
            front.name(),
            body.len()
        );
    }
    Ok(())
}

/// The count of packets the front's `eth0` received (every front sees the clients' packets
/// there; XDP_TX'd frames count too).
pub fn front_rx_packets(status: &Testbed) -> Result<u64> {
    let out = cmd::output(Command::new("ip").args([
        "-n",
        &status.front.ns,
        "-s",
        "-j",
        "link",
        "show",
        "dev",
        "eth0",
    ]))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).context("reading `ip -s -j link show dev eth0`")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("`ip -s -j link` shows no stats64.rx.packets for the front's eth0")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{Front, Service, haproxy_config, nft_ruleset};

    fn service() -> Service {
        Service {
            vip: "10.214.0.100:80".parse().unwrap(),
            reals: (1..=3)
                .map(|i| (format!("srv{i}"), Ipv4Addr::new(10, 214, 0, 20 + i)))
                .collect(),
            front_addr: Ipv4Addr::new(10, 214, 0, 2),
            client_addrs: vec![Ipv4Addr::new(10, 214, 0, 10)],
        }
    }

    #[test]
    fn nft_rulesets_map_the_selector_onto_the_reals() {
        let jhash = nft_ruleset(Front::NftJhash, &service()).unwrap();
        assert_eq!(
            jhash,
            "table ip dl7bench
delete table ip dl7bench
table ip dl7bench {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 10.214.0.100 tcp dport 80 dnat to jhash ip saddr . tcp sport mod 3 map { 0 : 10.214.0.21, 1 : 10.214.0.22, 2 : 10.214.0.23 }
    }
}
"
        );
        let numgen = nft_ruleset(Front::NftNumgen, &service()).unwrap();
        assert!(numgen.contains(
            "dnat to numgen inc mod 3 map { 0 : 10.214.0.21, 1 : 10.214.0.22, 2 : 10.214.0.23 }"
        ));
        assert!(nft_ruleset(Front::Xdp, &service()).is_err());
    }

    #[test]
    fn fronts_are_reported_by_name() {
        assert_eq!(
            serde_json::to_string(&Front::HaproxyTcp).unwrap(),
            "\"haproxy-tcp\""
        );
    }

    #[test]
    fn haproxy_config_balances_tcp_over_the_reals() {
        let config = haproxy_config(&service());
        assert!(config.contains("    nbthread 1\n"));
        assert!(config.contains("    mode tcp\n"));
        assert!(config.contains("    bind 10.214.0.100:80\n"));
        assert!(config.contains("    balance roundrobin\n"));
        assert!(config.ends_with(
            "    server srv1 10.214.0.21:80\n    server srv2 10.214.0.22:80\n    server srv3 10.214.0.23:80\n"
        ));
        assert!(!config.contains("check"));
    }
}
