//! The steps that bring a testbed up, one per role: the network (switch and hosts), the
//! origin, the sidecars, the central balancer, the front. Each returns its role's record.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
};

use anyhow::Result;

use crate::cgroup::CpuCgroups;
use crate::netns::{self, add_host, add_host_on, ip};
use crate::plan::{
    CENTRAL_HOST, CENTRAL_ROLE, CLIENT_HOSTS, Central, Encap, FIRST_SERVER_HOST, FRONT_HOST,
    FRONT_METRICS_PORT, Front, L3_NET, Mode, ORIGIN_HOST, PEER_PORT, Parts, ROUTER_HOST,
    SIDECAR_METRICS_PORT, Server, Spec, VIP_HOST, VIP_PORT, decap_pin_dir, deploy_file, host,
    l3_host, pin_dir, role_config, run_dir,
};
use crate::{config, process};

/// Keys of the sidecar's example config that central mode refuses (it has no self, no peer
/// side and never serves locally).
const CENTRAL_UNUSED_KEYS: &[&str] = &["self", "peer-listen", "origin", "upstream"];

/// The hosts of a testbed, before anything runs on them.
pub(crate) struct Network {
    pub front_ns: String,
    pub client_ns: String,
    pub client_addrs: Vec<Ipv4Addr>,
    pub origin_ns: String,
    /// (role, namespace, address) of each server.
    pub servers: Vec<(String, String, Ipv4Addr)>,
    /// The router's namespace, when some servers sit behind it.
    pub router_ns: Option<String>,
}

/// The routed servers' subnet, as a route destination.
fn l3_subnet() -> String {
    format!("{}.{}.{}.0/24", L3_NET[0], L3_NET[1], L3_NET[2])
}

/// The switch and every host: the front (which alone answers ARP for the VIP), the client,
/// the origin, and the servers (set up with deploy/real-server-setup.sh). With routed servers
/// also a router between the two subnets; the last `l3_servers` servers sit behind it and
/// decapsulate with `l4-ctl decap` (attached by the setup script).
pub(crate) fn network(spec: &Spec, parts: &Parts) -> Result<Network> {
    let name = spec.name.as_str();
    let br = netns::add_switch(&netns::switch_ns(name))?;
    let vip = host(VIP_HOST);
    let front_ns = add_host(name, "front", &[host(FRONT_HOST)])?;
    ip(&[
        "-n",
        &front_ns,
        "addr",
        "add",
        &format!("{vip}/32"),
        "dev",
        "eth0",
    ])?;
    let client_addrs: Vec<Ipv4Addr> = CLIENT_HOSTS.iter().map(|&h| host(h)).collect();
    let client_ns = add_host(name, "client", &client_addrs)?;
    // Frames the front bounces with XDP_TX keep the client's partial checksum otherwise.
    process::output(Command::new("ip").args([
        "netns", "exec", &client_ns, "ethtool", "-K", "eth0", "tx", "off",
    ]))?;
    let origin_ns = add_host(name, "origin", &[host(ORIGIN_HOST)])?;
    let router_ns = if spec.l3_servers > 0 {
        Some(router(name, &[&front_ns, &client_ns, &origin_ns])?)
    } else {
        None
    };
    let setup_script = deploy_file(parts, "deploy/real-server-setup.sh")?;
    let mut servers = Vec::with_capacity(usize::from(spec.servers));
    let first_routed = spec.servers - spec.l3_servers;
    for i in 0..spec.servers {
        let role = format!("srv{}", i + 1);
        let routed = i >= first_routed;
        // nsenter, not `ip netns exec`: the decapsulator's pins need the host's /sys/fs/bpf.
        let mut setup = Command::new("nsenter");
        let (ns, addr) = if routed {
            let addr = l3_host(FIRST_SERVER_HOST + i as u8);
            let ns = add_host_on(name, &netns::l3_switch_ns(name), &role, &[addr])?;
            let gateway = l3_host(ROUTER_HOST).to_string();
            ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
            setup
                .env("L4_CTL", &parts.l4_ctl)
                .env("DECAP_PIN_DIR", decap_pin_dir(name, &role))
                .arg(format!("--net=/run/netns/{ns}"))
                .arg(&setup_script)
                .args(["--decap", "eth0"]);
            (ns, addr)
        } else {
            let addr = host(FIRST_SERVER_HOST + i as u8);
            let ns = add_host(name, &role, &[addr])?;
            if router_ns.is_some() {
                route_to_l3(&ns)?;
            }
            setup
                .arg(format!("--net=/run/netns/{ns}"))
                .arg(&setup_script);
            (ns, addr)
        };
        process::output(setup.arg(vip.to_string()))?;
        servers.push((role, ns, addr));
    }
    if spec.mode == Mode::Native {
        // In native mode the kernel drops frames XDP_TX'd into a veth whose peer runs no XDP
        // program: give the front's bridge-side peer one that passes everything.
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            "dev",
            "vfront",
            "xdpdrv",
            "obj",
            &parts.xdp_pass.to_string_lossy(),
            "sec",
            "xdp",
        ])?;
    }
    Ok(Network {
        front_ns,
        client_ns,
        client_addrs,
        origin_ns,
        servers,
        router_ns,
    })
}

/// The router between the two subnets (.1 on both, forwarding on), and the routes of the
/// first subnet's hosts to the second. The front also needs forwarding on its eth0: the
/// kernel answers the program's FIB lookups only then.
fn router(name: &str, hosts: &[&str]) -> Result<String> {
    let br2 = netns::add_switch(&netns::l3_switch_ns(name))?;
    let ns = add_host(name, "router", &[host(ROUTER_HOST)])?;
    netns::plug(&br2, &ns, "eth1", "vrouter", &[l3_host(ROUTER_HOST)])?;
    process::output(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]))?;
    for h in hosts {
        route_to_l3(h)?;
    }
    Ok(ns)
}

fn route_to_l3(ns: &str) -> Result<()> {
    let gateway = host(ROUTER_HOST).to_string();
    ip(&["-n", ns, "route", "add", &l3_subnet(), "via", &gateway])
}

/// The `members` value of the sidecars' config: `name=peer,...`.
pub(crate) fn members<'a>(servers: impl Iterator<Item = (&'a str, SocketAddr)>) -> String {
    servers
        .map(|(name, peer)| format!("{name}={peer}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `threads` and `relay-cache-bytes` keys the spec sets.
fn optional_keys(spec: &Spec) -> impl Iterator<Item = (&'static str, toml::Value)> {
    let threads = spec
        .sidecar_threads
        .map(|t| ("threads", i64::from(t).into()));
    let relay = spec.relay_cache_bytes.map(|b| {
        let b = i64::try_from(b).unwrap_or(i64::MAX);
        ("relay-cache-bytes", toml::Value::Integer(b))
    });
    threads.into_iter().chain(relay)
}

/// One sidecar per server, from deploy/sidecar.example.toml; waits until all listen.
pub(crate) fn sidecars(
    spec: &Spec,
    parts: &Parts,
    net: &Network,
    origin: SocketAddr,
    cgroups: Option<&CpuCgroups>,
) -> Result<Vec<Server>> {
    let dir = run_dir(&spec.name);
    let template = deploy_file(parts, "deploy/sidecar.example.toml")?;
    let members = members(
        net.servers
            .iter()
            .map(|(role, _, addr)| (role.as_str(), SocketAddr::from((*addr, PEER_PORT)))),
    );
    let mut servers = Vec::with_capacity(net.servers.len());
    for (role, ns, addr) in &net.servers {
        let listen = SocketAddr::from((*addr, VIP_PORT));
        let metrics = SocketAddr::from((*addr, SIDECAR_METRICS_PORT));
        let peer = SocketAddr::from((*addr, PEER_PORT));
        let values: Vec<(&str, toml::Value)> = [
            ("listen", format!("0.0.0.0:{VIP_PORT}").into()),
            ("peer-listen", peer.to_string().into()),
            ("self", role.clone().into()),
            ("members", members.clone().into()),
            ("scheme", spec.scheme.clone().into()),
            ("origin", format!("http://{origin}").into()),
            ("metrics", metrics.to_string().into()),
            ("cache-bytes", toml::Value::Integer(spec.cache_bytes as i64)),
        ]
        .into_iter()
        .chain(optional_keys(spec))
        .collect();
        fs::write(
            role_config(&dir, role),
            config::edit(&template, &values, &[])?,
        )?;
        let pid = start_sidecar(ns, &parts.sidecar, &dir, role)?;
        if let Some(groups) = cgroups {
            groups.add(role, pid)?;
        }
        let routed = addr.octets()[..3] == L3_NET;
        servers.push(Server {
            name: role.clone(),
            ns: ns.clone(),
            addr: *addr,
            listen,
            peer,
            metrics,
            pid,
            encap: routed.then_some(spec.encap),
            decap_pin_dir: routed.then(|| decap_pin_dir(&spec.name, role)),
        });
    }
    for s in &servers {
        netns::wait_listening(&s.ns, s.listen, &s.name)?;
    }
    Ok(servers)
}

/// The conventional design's central L7 balancer, with the servers' sidecars as its
/// backends by their peer addresses: what arrives there is served, never passed on.
pub(crate) fn central(
    spec: &Spec,
    parts: &Parts,
    servers: &[Server],
    cgroups: Option<&CpuCgroups>,
) -> Result<Central> {
    let dir = run_dir(&spec.name);
    let template = deploy_file(parts, "deploy/sidecar.example.toml")?;
    let addr = host(CENTRAL_HOST);
    let ns = add_host(&spec.name, CENTRAL_ROLE, &[addr])?;
    let listen = SocketAddr::from((addr, VIP_PORT));
    let metrics = SocketAddr::from((addr, SIDECAR_METRICS_PORT));
    let values: Vec<(&str, toml::Value)> = [
        ("mode", "central".into()),
        ("listen", listen.to_string().into()),
        (
            "members",
            members(servers.iter().map(|s| (s.name.as_str(), s.peer))).into(),
        ),
        ("scheme", spec.scheme.clone().into()),
        ("metrics", metrics.to_string().into()),
    ]
    .into_iter()
    .chain(optional_keys(spec))
    .collect();
    fs::write(
        role_config(&dir, CENTRAL_ROLE),
        config::edit(&template, &values, CENTRAL_UNUSED_KEYS)?,
    )?;
    let pid = start_sidecar(&ns, &parts.sidecar, &dir, CENTRAL_ROLE)?;
    if let Some(groups) = cgroups {
        groups.add(CENTRAL_ROLE, pid)?;
    }
    netns::wait_listening(&ns, listen, "the central L7 balancer")?;
    Ok(Central {
        ns,
        addr: listen,
        metrics,
        pid,
    })
}

/// The front: `l4-ctl load` on its eth0, the VIP and every server as a real, and the front
/// daemon (health checks, metrics) with deploy/dl7.toml.
pub(crate) fn front(
    spec: &Spec,
    parts: &Parts,
    ns: &str,
    vip: SocketAddr,
    servers: &[Server],
) -> Result<Front> {
    let dir = run_dir(&spec.name);
    let pins = pin_dir(&spec.name);
    let ctl = |args: &[&str]| {
        process::output(process::l4_ctl_command(&parts.l4_ctl, Some(ns), Some(&pins)).args(args))
    };
    ctl(&["load", "--iface", "eth0", "--mode", spec.mode.as_str()])?;
    let service = format!("{vip}/tcp");
    ctl(&["vip", "add", &service])?;
    if servers.iter().any(|s| s.encap.is_some()) {
        process::output(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.conf.eth0.forwarding=1",
        ]))?;
    }
    for s in servers {
        let addr = s.addr.to_string();
        match s.encap {
            None => ctl(&["real", "add", &service, &addr])?,
            Some(encap) => ctl(&["real", "add", &service, &addr, "--encap", encap.as_str()])?,
        };
    }
    let metrics = SocketAddr::from((host(FRONT_HOST), FRONT_METRICS_PORT));
    let config_path = dir.join("dl7.toml");
    let config = config::front(
        &deploy_file(parts, "deploy/dl7.toml")?,
        &service,
        servers
            .iter()
            .map(|s| (s.listen, s.encap.map(Encap::as_str))),
        SIDECAR_METRICS_PORT,
    )?;
    fs::write(&config_path, config)?;
    let args: Vec<String> = vec![
        "--pin-dir".into(),
        pins.to_string_lossy().into_owned(),
        "daemon".into(),
        "--config".into(),
        config_path.to_string_lossy().into_owned(),
        "--metrics".into(),
        metrics.to_string(),
    ];
    process::spawn_in(ns, &parts.l4_ctl, &args, &dir.join("front-daemon.log"))?;
    netns::wait_listening(ns, metrics, "the front daemon")?;
    Ok(Front {
        ns: ns.to_owned(),
        addr: host(FRONT_HOST),
        metrics,
        pin_dir: pins,
    })
}

/// Starts the origin (`dl7-traffic origin`) in `ns` and waits until it listens.
pub(crate) fn start_origin(ns: &str, addr: SocketAddr, dir: &Path, traffic: &Path) -> Result<u32> {
    let pid = process::spawn_in(
        ns,
        traffic,
        &["origin".into(), "--listen".into(), addr.to_string()],
        &dir.join("origin.log"),
    )?;
    netns::wait_listening(ns, addr, "the origin")?;
    Ok(pid)
}

/// Starts `role`'s sidecar with its config file in `dir`.
pub(crate) fn start_sidecar(ns: &str, sidecar: &Path, dir: &Path, role: &str) -> Result<u32> {
    process::spawn_in(
        ns,
        sidecar,
        &[
            "serve".into(),
            "--config".into(),
            role_config(dir, role).to_string_lossy().into_owned(),
        ],
        &dir.join(format!("{role}.log")),
    )
}
