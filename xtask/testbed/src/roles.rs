//! The steps that bring a testbed up, one per role: the network (switch and hosts), the
//! origin, the sidecars, the central balancer, the front. Each returns its role's record.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cgroup::CpuCgroups;
use crate::netns::{self, add_host, add_host_on, ip};
use crate::plan::{
    CENTRAL_HOST, CENTRAL_ROLE, CLIENT_HOSTS, CLIENT_NET, Central, Encap, FIRST_SERVER_HOST,
    FRONT_HOSTS, FRONT_METRICS_PORT, FRONTS_AS, Front, L3_NET, Mode, ORIGIN_HOST, PEER_PORT, Parts,
    ROUTER_AS, ROUTER_HOST, SIDECAR_METRICS_PORT, Server, Spec, TLS_NAME, TLS_PORT, VIP_HOST,
    VIP_PORT, client_host, decap_pin_dir, deploy_file, front_pin_dir, front_role, host, l3_host,
    role_config, run_dir,
};

/// The testbed's TLS material (`tls`, `peer_tls`): a throwaway CA and the VIP's
/// certificate (the sidecars' peer certificates are issued with them, by the same CA).
pub(crate) struct TlsFiles {
    pub ca: tls::Ca,
    pub cert: tls::ServerCert,
    /// The session-ticket key every sidecar shares, so that any of them resumes a session.
    pub ticket_key: std::path::PathBuf,
}

/// Issues the CA and the VIP's certificate (for the name [`TLS_NAME`] and the VIP's address,
/// ECDSA P-256) under `dir`/tls.
pub(crate) fn tls_files(dir: &Path) -> Result<TlsFiles> {
    let ca = tls::Ca::create(&dir.join("tls"))?;
    let cert = ca.issue(
        "vip",
        &[TLS_NAME],
        &[host(VIP_HOST).into()],
        tls::KeyType::EcdsaP256,
    )?;
    let ticket_key = ca.ticket_key("ticket.key")?;
    Ok(TlsFiles {
        ca,
        cert,
        ticket_key,
    })
}

/// How long BGP may take to give the router a route over every front.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);
use crate::{config, process, tls};

/// Keys of the sidecar's example config that central mode refuses (it has no self, no peer
/// side and never serves locally).
const CENTRAL_UNUSED_KEYS: &[&str] = &["self", "peer-listen", "origin", "upstream"];

/// The hosts of a testbed, before anything runs on them.
pub(crate) struct Network {
    /// (role, namespace, address) of each front.
    pub fronts: Vec<(String, String, Ipv4Addr)>,
    pub client_ns: String,
    pub client_addrs: Vec<Ipv4Addr>,
    pub origin_ns: String,
    /// (role, namespace, address) of each server.
    pub servers: Vec<(String, String, Ipv4Addr)>,
    /// The router's namespace, when some servers sit behind it.
    pub router_ns: Option<String>,
}

/// The switch and every host: the fronts, the client, the origin, and the servers (set up
/// with deploy/real-server-setup.sh). With one front, it alone answers ARP for the VIP and
/// the client shares its subnet. With several, the client sits in a third subnet behind the
/// router, which reaches the VIP over the fronts by ECMP ([`bgp`] starts the routing). With
/// routed servers the router also joins the second subnet; the last `l3_servers` servers sit
/// there and decapsulate with `l4-ctl decap` (attached by the setup script).
pub(crate) fn network(spec: &Spec, parts: &Parts) -> Result<Network> {
    let name = spec.name.as_str();
    let br = netns::add_switch(&netns::switch_ns(name))?;
    let vip = host(VIP_HOST);
    let several = spec.fronts > 1;
    let mut fronts = Vec::new();
    for (i, &h) in FRONT_HOSTS
        .iter()
        .enumerate()
        .take(usize::from(spec.fronts))
    {
        let (role, addr) = (front_role(i), host(h));
        let ns = add_host(name, &role, &[addr])?;
        if !several {
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{vip}/32"),
                "dev",
                "eth0",
            ])?;
        }
        fronts.push((role, ns, addr));
    }
    let client_addrs: Vec<Ipv4Addr> = CLIENT_HOSTS
        .iter()
        .map(|&h| if several { client_host(h) } else { host(h) })
        .collect();
    let client_ns = if several {
        add_host_on(
            name,
            &netns::add_switch(&netns::client_switch_ns(name))?,
            "client",
            &client_addrs,
        )?
    } else {
        add_host(name, "client", &client_addrs)?
    };
    // Frames the front bounces with XDP_TX keep the client's partial checksum otherwise.
    checksum_offload_off(&client_ns)?;
    let origin_ns = add_host(name, "origin", &[host(ORIGIN_HOST)])?;
    let router_ns = if spec.l3_servers > 0 || several {
        let ns = router(name, spec.l3_servers > 0, several)?;
        if spec.l3_servers > 0 {
            for (_, front, _) in &fronts {
                route_via_router(front, &l3_subnet())?;
            }
            route_via_router(&client_ns, &l3_subnet())?;
            route_via_router(&origin_ns, &l3_subnet())?;
        }
        if several {
            let gateway = client_host(ROUTER_HOST).to_string();
            ip(&["-n", &client_ns, "route", "add", "default", "via", &gateway])?;
        }
        Some(ns)
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
            if spec.l3_servers > 0 {
                route_via_router(&ns, &l3_subnet())?;
            }
            if several {
                // Direct server return: replies go to the clients through the router.
                route_via_router(&ns, &client_subnet())?;
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
        // program: give each front's bridge-side peer one that passes everything.
        for (role, _, _) in &fronts {
            ip(&[
                "-n",
                &br,
                "link",
                "set",
                "dev",
                &format!("v{role}"),
                "xdpdrv",
                "obj",
                &parts.xdp_pass.to_string_lossy(),
                "sec",
                "xdp",
            ])?;
        }
    }
    Ok(Network {
        fronts,
        client_ns,
        client_addrs,
        origin_ns,
        servers,
        router_ns,
    })
}

fn checksum_offload_off(ns: &str) -> Result<()> {
    process::output(
        Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"]),
    )
    .map(drop)
}

fn sysctl(ns: &str, setting: &str) -> Result<()> {
    process::output(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting]))
        .map(drop)
}

/// The router: .1 on the first subnet, on the routed servers' (`l3`) and on the clients'
/// (`clients`, several fronts: multipath routes hashed on the layer-4 ports, so that a flow
/// keeps its front), forwarding on.
fn router(name: &str, l3: bool, clients: bool) -> Result<String> {
    let ns = add_host(name, "router", &[host(ROUTER_HOST)])?;
    if l3 {
        let br2 = netns::add_switch(&netns::l3_switch_ns(name))?;
        netns::plug(&br2, &ns, "eth1", "vrouter", &[l3_host(ROUTER_HOST)])?;
    }
    if clients {
        // The clients' switch exists already (the client is plugged in first).
        let br3 = netns::client_switch_ns(name);
        netns::plug(&br3, &ns, "eth2", "vrouter", &[client_host(ROUTER_HOST)])?;
        sysctl(&ns, "net.ipv4.fib_multipath_hash_policy=1")?;
        checksum_offload_off(&ns)?;
    }
    sysctl(&ns, "net.ipv4.ip_forward=1")?;
    Ok(ns)
}

/// The routed servers' subnet, as a route destination.
fn l3_subnet() -> String {
    format!("{}.{}.{}.0/24", L3_NET[0], L3_NET[1], L3_NET[2])
}

/// The clients' subnet (several fronts), as a route destination.
fn client_subnet() -> String {
    format!("{}.{}.{}.0/24", CLIENT_NET[0], CLIENT_NET[1], CLIENT_NET[2])
}

fn route_via_router(ns: &str, subnet: &str) -> Result<()> {
    let gateway = host(ROUTER_HOST).to_string();
    ip(&["-n", ns, "route", "add", subnet, "via", &gateway])
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
    tls: Option<&TlsFiles>,
) -> Result<Vec<Server>> {
    let dir = run_dir(&spec.name);
    let template = deploy_file(parts, "deploy/sidecar.example.toml")?;
    // HTTPS: every sidecar serves the VIP's certificate on the VIP's port 443.
    let tls_keys: Vec<(&str, toml::Value)> = match tls.filter(|_| spec.tls) {
        Some(files) => vec![
            ("listen-tls", format!("0.0.0.0:{TLS_PORT}").into()),
            (
                "tls-cert",
                toml::Value::Array(vec![
                    format!("{}:{}", files.cert.cert.display(), files.cert.key.display()).into(),
                ]),
            ),
            (
                "tls-ticket-key",
                toml::Value::Array(vec![files.ticket_key.display().to_string().into()]),
            ),
        ],
        None => Vec::new(),
    };
    let members = members(
        net.servers
            .iter()
            .map(|(role, _, addr)| (role.as_str(), SocketAddr::from((*addr, PEER_PORT)))),
    );
    let follow = toml::Value::Array(
        net.fronts
            .iter()
            .map(|(_, _, addr)| format!("http://{addr}:{FRONT_METRICS_PORT}/members").into())
            .collect(),
    );
    let mut servers = Vec::with_capacity(net.servers.len());
    for (role, ns, addr) in &net.servers {
        let listen = SocketAddr::from((*addr, VIP_PORT));
        let metrics = SocketAddr::from((*addr, SIDECAR_METRICS_PORT));
        let peer = SocketAddr::from((*addr, PEER_PORT));
        // One front: the static member list. Several: the fronts' membership, followed.
        let membership: Vec<(&str, toml::Value)> = if spec.fronts > 1 {
            vec![
                ("members-from", follow.clone()),
                (
                    "members-vip",
                    format!("{}/tcp", SocketAddr::from((host(VIP_HOST), VIP_PORT))).into(),
                ),
            ]
        } else {
            vec![
                ("self", role.clone().into()),
                ("members", members.clone().into()),
            ]
        };
        let values: Vec<(&str, toml::Value)> = [
            ("listen", format!("0.0.0.0:{VIP_PORT}").into()),
            ("peer-listen", peer.to_string().into()),
            ("scheme", spec.scheme.clone().into()),
            ("origin", format!("http://{origin}").into()),
            ("metrics", metrics.to_string().into()),
            ("cache-bytes", toml::Value::Integer(spec.cache_bytes as i64)),
        ]
        .into_iter()
        .chain(membership)
        .chain(tls_keys.iter().cloned())
        .chain(peer_tls_keys(spec, tls, role, *addr)?)
        .chain(optional_keys(spec))
        .collect();
        let unused: &[&str] = if spec.fronts > 1 {
            &["self", "members", "weights"]
        } else {
            &[]
        };
        fs::write(
            role_config(&dir, role),
            config::edit(&template, &values, unused)?,
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
            listen_tls: spec.tls.then(|| SocketAddr::from((*addr, TLS_PORT))),
        });
    }
    for s in &servers {
        netns::wait_listening(&s.ns, s.listen, &s.name)?;
        if let Some(addr) = s.listen_tls {
            netns::wait_listening(&s.ns, addr, &s.name)?;
        }
    }
    Ok(servers)
}

/// With `peer_tls`: the sidecar `role`'s keys for mutual TLS with its peers, its certificate
/// for `addr` issued now by the testbed's CA (the cluster CA).
fn peer_tls_keys(
    spec: &Spec,
    tls: Option<&TlsFiles>,
    role: &str,
    addr: std::net::Ipv4Addr,
) -> Result<Vec<(&'static str, toml::Value)>> {
    let Some(files) = tls.filter(|_| spec.peer_tls) else {
        return Ok(Vec::new());
    };
    let cert = files.ca.issue_peer(&format!("peer-{role}"), addr.into())?;
    Ok(vec![
        ("peer-tls", true.into()),
        (
            "peer-tls-cert",
            format!("{}:{}", cert.cert.display(), cert.key.display()).into(),
        ),
        ("peer-tls-ca", files.ca.cert.display().to_string().into()),
    ])
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

/// Front `i` (role, namespace, address): `l4-ctl load` on its eth0, the VIP and every server
/// as a real, and the front daemon (health checks, metrics, membership) with deploy/dl7.toml;
/// with several fronts the daemon also announces the VIP (BIRD is started by [`bgp`]).
/// Every front gets the same configuration, in the same order.
pub(crate) fn front(
    spec: &Spec,
    parts: &Parts,
    i: usize,
    (role, ns, addr): (&str, &str, Ipv4Addr),
    vip: SocketAddr,
    servers: &[Server],
) -> Result<Front> {
    let dir = run_dir(&spec.name);
    let pins = front_pin_dir(&spec.name, i);
    let ctl = |args: &[&str]| {
        process::output(process::l4_ctl_command(&parts.l4_ctl, Some(ns), Some(&pins)).args(args))
    };
    ctl(&["load", "--iface", "eth0", "--mode", spec.mode.as_str()])?;
    // The VIP's HTTP port, and with `tls` its HTTPS port, each with every server as a real.
    let mut services = vec![format!("{vip}/tcp")];
    if spec.tls {
        services.push(format!("{}/tcp", SocketAddr::new(vip.ip(), TLS_PORT)));
    }
    for service in &services {
        ctl(&["vip", "add", service])?;
    }
    if servers.iter().any(|s| s.encap.is_some()) {
        sysctl(ns, "net.ipv4.conf.eth0.forwarding=1")?;
    }
    for service in &services {
        for s in servers {
            let addr = s.addr.to_string();
            match s.encap {
                None => ctl(&["real", "add", service, &addr])?,
                Some(encap) => ctl(&["real", "add", service, &addr, "--encap", encap.as_str()])?,
            };
        }
    }
    let metrics = SocketAddr::from((addr, FRONT_METRICS_PORT));
    let config_path = dir.join("dl7.toml");
    let config = config::front(
        &deploy_file(parts, "deploy/dl7.toml")?,
        &services,
        servers
            .iter()
            .map(|s| (s.listen, s.encap.map(Encap::as_str))),
        SIDECAR_METRICS_PORT,
    )?;
    fs::write(&config_path, config)?;
    let bird_socket = (spec.fronts > 1).then(|| dir.join(format!("{role}-bird.ctl")));
    let front = Front {
        ns: ns.to_owned(),
        addr,
        metrics,
        pin_dir: pins,
        role: role.to_owned(),
        daemon_pid: 0,
        bird_socket,
    };
    start_front_daemon(front, &parts.l4_ctl, &dir)
}

/// Starts `front`'s daemon (with the testbed's dl7.toml, announcing when the front has a
/// BIRD) and waits until it serves; returns the front with the daemon's pid.
pub(crate) fn start_front_daemon(mut front: Front, l4_ctl: &Path, dir: &Path) -> Result<Front> {
    let mut args: Vec<String> = vec![
        "--pin-dir".into(),
        front.pin_dir.to_string_lossy().into_owned(),
        "daemon".into(),
        "--config".into(),
        dir.join("dl7.toml").to_string_lossy().into_owned(),
        "--metrics".into(),
        front.metrics.to_string(),
    ];
    if let Some(socket) = &front.bird_socket {
        args.extend([
            "--announce".into(),
            "--bird-socket".into(),
            socket.to_string_lossy().into_owned(),
        ]);
    }
    let log = dir.join(format!("{}-daemon.log", front.role));
    front.daemon_pid = process::spawn_in(&front.ns, l4_ctl, &args, &log)?;
    netns::wait_listening(
        &front.ns,
        front.metrics,
        &format!("the {} daemon", front.role),
    )?;
    Ok(front)
}

/// BGP with several fronts: BIRD on every front with deploy/bird/front.conf (announcing what
/// its daemon puts on dl7-vips) and on the router with deploy/bird/router-example.conf
/// (installing one multipath route over the fronts); waits until the router reaches the VIP
/// over every front.
pub(crate) fn bgp(parts: &Parts, dir: &Path, router_ns: &str, fronts: &[Front]) -> Result<()> {
    let router_addr = host(ROUTER_HOST);
    for f in fronts {
        let site = format!(
            "router id {};\nprotocol bgp router1 from dl7_router {{ local as {FRONTS_AS}; neighbor {router_addr} as {ROUTER_AS}; }}\n",
            f.addr
        );
        let socket = f
            .bird_socket
            .as_deref()
            .context("a front without a BIRD socket")?;
        start_bird(
            parts,
            dir,
            &f.role,
            &f.ns,
            "front.conf",
            "dl7-site.conf",
            &site,
            socket,
        )?;
    }
    let mut peers = format!("router id {router_addr};\n");
    for f in fronts {
        peers.push_str(&format!(
            "protocol bgp {} from dl7_front {{ local as {ROUTER_AS}; neighbor {} as {FRONTS_AS}; }}\n",
            f.role, f.addr
        ));
    }
    let socket = dir.join("router-bird.ctl");
    start_bird(
        parts,
        dir,
        "router",
        router_ns,
        "router-example.conf",
        "dl7-fronts.conf",
        &peers,
        &socket,
    )?;
    wait_ecmp(router_ns, host(VIP_HOST), fronts.len()).map(drop)
}

/// Starts BIRD in `ns` with deploy/bird/`conf` and the site file `site_name` (`site`) beside
/// it, in `dir`/`role`-bird/.
#[allow(clippy::too_many_arguments)]
fn start_bird(
    parts: &Parts,
    dir: &Path,
    role: &str,
    ns: &str,
    conf: &str,
    site_name: &str,
    site: &str,
    socket: &Path,
) -> Result<u32> {
    let conf_dir = dir.join(format!("{role}-bird"));
    fs::create_dir_all(&conf_dir)?;
    let main = conf_dir.join(conf);
    fs::copy(deploy_file(parts, &format!("deploy/bird/{conf}"))?, &main)?;
    fs::write(conf_dir.join(site_name), site)?;
    let args: Vec<String> = vec![
        "-f".into(),
        "-c".into(),
        main.to_string_lossy().into_owned(),
        "-s".into(),
        socket.to_string_lossy().into_owned(),
        "-P".into(),
        conf_dir.join("bird.pid").to_string_lossy().into_owned(),
    ];
    process::spawn_in(
        ns,
        Path::new("bird"),
        &args,
        &dir.join(format!("{role}-bird.log")),
    )
}

/// Waits until the router's route to `vip` has `paths` next hops; how long it took (polled
/// every 5 ms).
pub(crate) fn wait_ecmp(router_ns: &str, vip: Ipv4Addr, paths: usize) -> Result<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < ROUTE_TIMEOUT {
        last = ecmp_route(router_ns, vip)?;
        if next_hops(&last) == paths {
            return Ok(start.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    bail!(
        "the router did not reach {vip} over {paths} fronts within {ROUTE_TIMEOUT:?}; its route: {:?}",
        last.trim()
    )
}

/// The router's route to `vip` as `ip route` prints it (empty without one).
pub(crate) fn ecmp_route(router_ns: &str, vip: Ipv4Addr) -> Result<String> {
    process::output(Command::new("ip").args([
        "-n",
        router_ns,
        "route",
        "show",
        &format!("{vip}/32"),
    ]))
}

/// How many next hops a route printed by `ip route` has.
pub(crate) fn next_hops(route: &str) -> usize {
    match route.matches("nexthop via").count() {
        0 if route.contains(" via ") => 1,
        n => n,
    }
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
