//! `cargo xtask testbed up|down|status`: the testbed as an operator drives it by hand.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::plan::{
    DEFAULT_NAME, Encap, MAX_FRONTS, MAX_SERVERS, Mode, Parts, Spec, TLS_NAME, parse_name,
};
use crate::testbed::{self, Testbed};

#[derive(Subcommand)]
pub enum TestbedCommand {
    /// Create the namespaces and start the cluster.
    Up(UpArgs),
    /// Stop and remove everything the testbed created.
    Down(NameArg),
    /// What is running, and where (`--json`: the addresses scripts need).
    Status {
        #[command(flatten)]
        name: NameArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub struct NameArg {
    /// Prefix of every namespace, pin directory and cgroup of this testbed.
    #[arg(long, default_value = DEFAULT_NAME, value_parser = parse_name)]
    pub name: String,
}

#[derive(Args, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub name: NameArg,
    /// Number of real servers (each with a sidecar).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=MAX_SERVERS as i64))]
    pub servers: u16,
    /// The sidecars' hashing scheme.
    #[arg(long, default_value = "carp")]
    pub scheme: String,
    /// How the front attaches the XDP program.
    #[arg(long, value_enum, default_value = "native")]
    pub mode: Mode,
    /// CPUs each sidecar may use (a cgroup CPU quota), e.g. 0.25.
    #[arg(long)]
    pub cpu_quota: Option<f64>,
    /// Embedded cache size of each sidecar, bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub cache_bytes: u64,
    /// Also start a central L7 balancer (the conventional design) in front of the servers.
    #[arg(long)]
    pub central: bool,
    /// Tokio worker threads of each sidecar [default: the sidecar's, one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub sidecar_threads: Option<u16>,
    /// Relay cache of each sidecar, bytes (0 turns it off) [default: the sidecar's].
    #[arg(long)]
    pub relay_cache_bytes: Option<u64>,
    /// Put this many of the servers (the last ones) in a second subnet behind a router; the
    /// front reaches them with --encap and they decapsulate in native XDP.
    #[arg(long, default_value_t = 0)]
    pub l3_servers: u16,
    /// How the front reaches the routed servers.
    #[arg(long, value_enum, default_value = "ipip")]
    pub encap: Encap,
    /// Fronts: with 2 or more, each announces the VIP by BGP (BIRD) to a router that
    /// spreads the clients' flows over them by ECMP, and the sidecars follow the fronts'
    /// membership.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_FRONTS as i64))]
    pub fronts: u16,
    /// HTTPS too: the VIP's port 443, served by every sidecar's `listen-tls` with a
    /// certificate for the VIP (and the name dl7.test) from a throwaway CA.
    #[arg(long)]
    pub tls: bool,
    /// Mutual TLS between the sidecars (`peer-tls`): each one's certificate for its address
    /// from the same throwaway CA.
    #[arg(long)]
    pub peer_tls: bool,
}

impl From<&UpArgs> for Spec {
    fn from(a: &UpArgs) -> Spec {
        Spec {
            name: a.name.name.clone(),
            servers: a.servers,
            scheme: a.scheme.clone(),
            mode: a.mode,
            cpu_quota: a.cpu_quota,
            cache_bytes: a.cache_bytes,
            central: a.central,
            sidecar_threads: a.sidecar_threads,
            relay_cache_bytes: a.relay_cache_bytes,
            l3_servers: a.l3_servers,
            encap: a.encap,
            fronts: a.fronts,
            tls: a.tls,
            peer_tls: a.peer_tls,
        }
    }
}

/// Runs `command`; `parts` builds what `up` runs (called only for `up`).
pub fn run(command: TestbedCommand, parts: impl FnOnce() -> Result<Parts>) -> Result<()> {
    match command {
        TestbedCommand::Up(args) => {
            let testbed = testbed::up(&Spec::from(&args), &parts()?)?;
            print_status(&testbed, false)
        }
        TestbedCommand::Down(name) => {
            if testbed::down(&name.name)? {
                println!("testbed {} is down", name.name);
            } else {
                println!("testbed {} was not up", name.name);
            }
            Ok(())
        }
        TestbedCommand::Status { name, json } => print_status(&testbed::attach(&name.name)?, json),
    }
}

fn print_status(t: &Testbed, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(t)?);
        return Ok(());
    }
    println!("testbed {} is up", t.name);
    if t.more_fronts.is_empty() {
        println!(
            "  VIP {} (front {} in namespace {}, {} mode)",
            t.vip,
            t.front.addr,
            t.front.ns,
            t.mode.as_str()
        );
    } else {
        println!(
            "  VIP {} announced by BGP from {} fronts ({} mode), ECMP at the router:",
            t.vip,
            t.more_fronts.len() + 1,
            t.mode.as_str()
        );
        for f in t.fronts() {
            println!(
                "    {} {} (namespace {}, metrics and members http://{}/, BIRD: birdc -s {})",
                f.role,
                f.addr,
                f.ns,
                f.metrics,
                f.bird_socket
                    .as_deref()
                    .map_or("-".into(), |p| p.display().to_string())
            );
        }
    }
    if let (Some(vip), Some(ca)) = (t.vip_tls, &t.ca) {
        println!(
            "  HTTPS on {vip} (every sidecar's listen-tls), certificate for {} from the CA {}",
            TLS_NAME,
            ca.display()
        );
    }
    let clients: Vec<String> = t.client_addrs.iter().map(ToString::to_string).collect();
    println!("  clients in {} from {}", t.client_ns, clients.join(", "));
    println!("  origin {} in {}", t.origin.addr, t.origin.ns);
    if let Some(c) = &t.central {
        println!(
            "  central L7 balancer {} (namespace {}, metrics http://{}/metrics)",
            c.addr, c.ns, c.metrics
        );
    }
    if let Some(router) = &t.router_ns {
        println!(
            "  router 10.214.0.1 in {router} (also .1 of the routed servers' and clients' subnets)"
        );
    }
    for s in &t.servers {
        let reached = match s.encap {
            Some(encap) => format!(", behind the router, {} + decap", encap.as_str()),
            None => String::new(),
        };
        println!(
            "  {} {} (namespace {}, peer {}, metrics http://{}/metrics{reached})",
            s.name, s.addr, s.ns, s.peer, s.metrics
        );
    }
    println!(
        "  front metrics: http://{}/metrics (e.g. `nsenter --net=/run/netns/{} curl -s http://{}/metrics`)",
        t.front.metrics, t.front.ns, t.front.metrics
    );
    println!(
        "  try: nsenter --net=/run/netns/{} curl -s http://{}/obj/1?size=1000 | wc -c",
        t.client_ns, t.vip
    );
    if let (Some(vip), Some(ca)) = (t.vip_tls, &t.ca) {
        println!(
            "  try: nsenter --net=/run/netns/{} curl -s --cacert {} --resolve {}:{}:{} https://{}/obj/1?size=1000 | wc -c",
            t.client_ns,
            ca.display(),
            TLS_NAME,
            vip.port(),
            vip.ip(),
            TLS_NAME
        );
    }
    println!("  logs and configs: {}", t.run_dir.display());
    Ok(())
}
