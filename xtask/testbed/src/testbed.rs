//! A running testbed: bringing it up (one step per role, [`crate::roles`]), finding it again,
//! taking it down, and what tests and benchmarks do to it while it runs.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CpuCgroups};
#[cfg(feature = "metrics")]
use crate::metrics;
use crate::plan::{
    CENTRAL_ROLE, Central, Front, MAX_FRONTS, Mode, ORIGIN_HOST, ORIGIN_PORT, Origin, Parts,
    Server, Spec, TLS_PORT, VIP_HOST, VIP_PORT, decap_pin_root, front_pin_dir, host, run_dir,
};
use crate::{config, netns, process, roles};

/// A running testbed: where everything is (what `status --json` prints and `up` records).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Testbed {
    pub name: String,
    pub vip: SocketAddr,
    pub client_ns: String,
    /// The router's namespace, when some servers sit behind it (`l3_servers`).
    #[serde(default)]
    pub router_ns: Option<String>,
    /// The client's source addresses (all in `client_ns`).
    pub client_addrs: Vec<Ipv4Addr>,
    /// The (first) front.
    pub front: Front,
    /// The other fronts (`fronts` > 1), in order.
    #[serde(default)]
    pub more_fronts: Vec<Front>,
    pub servers: Vec<Server>,
    pub origin: Origin,
    /// The conventional design's central L7 balancer (`central`).
    #[serde(default)]
    pub central: Option<Central>,
    pub scheme: String,
    pub mode: Mode,
    pub cpu_quota: Option<f64>,
    /// With `tls`: the VIP's HTTPS address and the CA certificate clients trust
    /// (`curl --cacert CA --resolve dl7.test:443:VIP https://dl7.test/`).
    #[serde(default)]
    pub vip_tls: Option<SocketAddr>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Where the processes' logs and generated configs are.
    pub run_dir: PathBuf,
    /// The programs it runs.
    pub parts: Parts,
}

/// Brings a testbed up; on any failure removes what it created and returns the error with
/// the tails of the processes' logs.
pub fn up(spec: &Spec, parts: &Parts) -> Result<Testbed> {
    spec.check()?;
    let name = &spec.name;
    if run_dir(name).join("state.json").exists() {
        bail!("testbed {name} is up already: `cargo xtask testbed down --name {name}` first");
    }
    // Leftovers of a crashed testbed of the same name.
    down_quietly(name);
    match bring_up(spec, parts) {
        Ok(testbed) => Ok(testbed),
        Err(e) => {
            eprintln!("testbed: bringing {name} up failed; removing what was created");
            let hint = process::tail_logs(&run_dir(name));
            down_quietly(name);
            Err(e.context(hint))
        }
    }
}

fn bring_up(spec: &Spec, parts: &Parts) -> Result<Testbed> {
    let dir = run_dir(&spec.name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("testbed: creating namespaces");
    let net = roles::network(spec, parts)?;
    eprintln!("testbed: starting the origin");
    let origin_addr = SocketAddr::from((host(ORIGIN_HOST), ORIGIN_PORT));
    let origin_pid = roles::start_origin(&net.origin_ns, origin_addr, &dir, &parts.traffic)?;
    let cgroups = spec
        .cpu_quota
        .map(|q| CpuCgroups::create(&spec.name, q))
        .transpose()?;
    eprintln!(
        "testbed: starting {} sidecars ({})",
        net.servers.len(),
        spec.scheme
    );
    let tls = (spec.tls || spec.peer_tls)
        .then(|| roles::tls_files(&dir))
        .transpose()?;
    let servers = roles::sidecars(
        spec,
        parts,
        &net,
        origin_addr,
        cgroups.as_ref(),
        tls.as_ref(),
    )?;
    let central = if spec.central {
        eprintln!(
            "testbed: starting the central L7 balancer ({})",
            spec.scheme
        );
        Some(roles::central(spec, parts, &servers, cgroups.as_ref())?)
    } else {
        None
    };
    eprintln!(
        "testbed: loading {} ({} mode)",
        if spec.fronts > 1 {
            "the fronts"
        } else {
            "the front"
        },
        spec.mode.as_str()
    );
    let vip = SocketAddr::from((host(VIP_HOST), VIP_PORT));
    let mut fronts = Vec::with_capacity(net.fronts.len());
    for (i, (role, ns, addr)) in net.fronts.iter().enumerate() {
        fronts.push(roles::front(
            spec,
            parts,
            i,
            (role, ns, *addr),
            vip,
            &servers,
        )?);
    }
    if let (true, Some(router)) = (spec.fronts > 1, &net.router_ns) {
        eprintln!(
            "testbed: BGP from {} fronts to the router (BIRD)",
            fronts.len()
        );
        roles::bgp(parts, &dir, router, &fronts)?;
    }
    let mut fronts = fronts.into_iter();
    let front = fronts.next().context("a testbed without a front")?;
    let more_fronts: Vec<Front> = fronts.collect();

    let testbed = Testbed {
        name: spec.name.clone(),
        vip,
        client_ns: net.client_ns,
        router_ns: net.router_ns,
        client_addrs: net.client_addrs,
        front,
        more_fronts,
        servers,
        origin: Origin {
            ns: net.origin_ns,
            addr: origin_addr,
            pid: origin_pid,
        },
        central,
        scheme: spec.scheme.clone(),
        mode: spec.mode,
        cpu_quota: spec.cpu_quota,
        vip_tls: spec
            .tls
            .then(|| SocketAddr::from((host(VIP_HOST), TLS_PORT))),
        ca: tls.map(|t| t.ca.cert),
        run_dir: dir,
        parts: parts.clone(),
    };
    testbed.save()?;
    // One request through the whole path proves the cluster answers.
    let (code, _) = netns::http_get(&testbed.client_ns, vip, "/obj/testbed-ready?size=100")?;
    ensure!(code == 200, "a request through the VIP got {code}");
    Ok(testbed)
}

/// The testbed `up` recorded under `name`.
pub fn attach(name: &str) -> Result<Testbed> {
    let path = run_dir(name).join("state.json");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("testbed {name} is not up ({} is missing)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
}

/// Removes everything named after testbed `name`; an error only when namespaces remain.
/// Returns whether there was anything to remove.
pub fn down(name: &str) -> Result<bool> {
    let existed = run_dir(name).exists() || netns::namespaces_of(name).next().is_some();
    down_quietly(name);
    let left: Vec<String> = netns::namespaces_of(name).collect();
    ensure!(left.is_empty(), "could not remove namespaces {left:?}");
    Ok(existed)
}

/// Removes whatever exists of the testbed, ignoring what is already gone.
fn down_quietly(name: &str) {
    let namespaces: Vec<String> = netns::namespaces_of(name).collect();
    // Processes first (SIGTERM, then SIGKILL), so the sidecars drain and the daemon exits.
    let pids = |ns: &str| -> Vec<u32> {
        process::output(std::process::Command::new("ip").args(["netns", "pids", ns]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut any = false;
        for ns in &namespaces {
            for pid in pids(ns) {
                any = true;
                process::signal(pid, signal);
            }
        }
        if !any {
            break;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && namespaces.iter().any(|ns| !pids(ns).is_empty())
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    // The link pin goes with the pin directory; deleting the namespaces removes the veths
    // (and the XDP attachments on them).
    for i in 0..usize::from(MAX_FRONTS) {
        let _ = fs::remove_dir_all(front_pin_dir(name, i));
    }
    let _ = fs::remove_dir_all(decap_pin_root(name));
    for ns in &namespaces {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .output();
    }
    cgroup::remove(name);
    let _ = fs::remove_dir_all(run_dir(name));
}

impl Testbed {
    /// Saves the state (after a process was restarted).
    fn save(&self) -> Result<()> {
        fs::write(
            self.run_dir.join("state.json"),
            serde_json::to_string_pretty(self)?,
        )
        .context("saving the testbed state")
    }

    /// Runs `l4-ctl ARGS` on the front; its stdout.
    pub fn l4_ctl(&self, args: &[&str]) -> Result<String> {
        process::output(
            process::l4_ctl_command(
                &self.parts.l4_ctl,
                Some(&self.front.ns),
                Some(&self.front.pin_dir),
            )
            .args(args),
        )
    }

    /// Every front, the first one first.
    pub fn fronts(&self) -> impl Iterator<Item = &Front> {
        std::iter::once(&self.front).chain(&self.more_fronts)
    }

    /// Front `i` (0 is [`Testbed::front`]).
    pub fn front_at(&self, i: usize) -> Result<&Front> {
        self.fronts()
            .nth(i)
            .with_context(|| format!("testbed {} has no front {}", self.name, i + 1))
    }

    /// Runs `l4-ctl ARGS` on front `i`; its stdout.
    pub fn l4_ctl_on(&self, i: usize, args: &[&str]) -> Result<String> {
        let f = self.front_at(i)?;
        process::output(
            process::l4_ctl_command(&self.parts.l4_ctl, Some(&f.ns), Some(&f.pin_dir)).args(args),
        )
    }

    /// Runs `l4-ctl ARGS` on every front, in order (what an operator does to change the
    /// configuration of a tier of fronts).
    pub fn l4_ctl_all(&self, args: &[&str]) -> Result<()> {
        for i in 0..=self.more_fronts.len() {
            self.l4_ctl_on(i, args)?;
        }
        Ok(())
    }

    /// A front that fails: SIGKILL of its daemon, then its program detached and its pins
    /// removed (`l4-ctl unload`).
    pub fn kill_front(&self, i: usize) -> Result<()> {
        let f = self.front_at(i)?;
        process::stop(f.daemon_pid);
        self.l4_ctl_on(i, &["unload"]).map(drop)
    }

    /// Brings a killed front back as an operator would: `l4-ctl load`, then its daemon, which
    /// applies the testbed's dl7.toml (the same VIP and reals as every front) and announces
    /// the VIP again.
    pub fn restart_front(&mut self, i: usize) -> Result<()> {
        let mode = self.mode.as_str();
        self.l4_ctl_on(i, &["load", "--iface", "eth0", "--mode", mode])?;
        let front = roles::start_front_daemon(
            self.front_at(i)?.clone(),
            &self.parts.l4_ctl,
            &self.run_dir,
        )?;
        match i {
            0 => self.front = front,
            i => self.more_fronts[i - 1] = front,
        }
        self.save()
    }

    /// The router's route to the VIP (several fronts): as `ip route` prints it, and how many
    /// fronts it reaches the VIP through.
    pub fn router_route(&self) -> Result<(String, usize)> {
        let ns = self
            .router_ns
            .as_deref()
            .context("this testbed has no router")?;
        let ip = match self.vip.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => bail!("the testbed's VIP is IPv4"),
        };
        let route = roles::ecmp_route(ns, ip)?;
        let hops = roles::next_hops(&route);
        Ok((route, hops))
    }

    /// Waits until the router reaches the VIP through `paths` fronts; how long it took.
    pub fn wait_router_paths(&self, paths: usize) -> Result<std::time::Duration> {
        let ns = self
            .router_ns
            .as_deref()
            .context("this testbed has no router")?;
        match self.vip.ip() {
            std::net::IpAddr::V4(a) => roles::wait_ecmp(ns, a, paths),
            std::net::IpAddr::V6(_) => bail!("the testbed's VIP is IPv4"),
        }
    }

    /// The VIP as l4-ctl writes it.
    pub fn vip_service(&self) -> String {
        format!("{}/tcp", self.vip)
    }

    /// The client's source addresses as a comma-separated list (the load generator's
    /// `--source-addrs`).
    pub fn client_addr_list(&self) -> String {
        let addrs: Vec<String> = self.client_addrs.iter().map(ToString::to_string).collect();
        addrs.join(",")
    }

    /// The switch's namespace (the bridge every host hangs on).
    pub fn switch_ns(&self) -> String {
        netns::switch_ns(&self.name)
    }

    /// Sends `signal` to server `i`'s sidecar.
    pub fn signal_sidecar(&self, i: usize, signal: libc::c_int) {
        process::signal(self.servers[i].pid, signal);
    }

    /// Starts server `i`'s sidecar again (after it was stopped), with its config file, back
    /// in its cgroup, and waits until it listens.
    pub fn restart_sidecar(&mut self, i: usize) -> Result<()> {
        let s = &self.servers[i];
        let pid = roles::start_sidecar(&s.ns, &self.parts.sidecar, &self.run_dir, &s.name)?;
        self.rejoin_cgroup(&s.name, pid)?;
        netns::wait_listening(&s.ns, s.listen, &s.name)?;
        self.servers[i].pid = pid;
        self.save()
    }

    /// Sets every server's relay cache to `bytes` (0 turns it off) in its config file; the
    /// next restart ([`Testbed::restart_all`]) applies it. The central balancer has none.
    pub fn set_relay_cache_bytes(&self, bytes: u64) -> Result<()> {
        let bytes = i64::try_from(bytes).context("a relay cache of more than 2^63 bytes")?;
        for s in &self.servers {
            config::update(
                &self.run_dir.join(format!("{}.toml", s.name)),
                &[("relay-cache-bytes", toml::Value::Integer(bytes))],
            )?;
        }
        Ok(())
    }

    /// Switches every sidecar (and the central balancer) to `scheme` by restarting them,
    /// which also empties their caches: each benchmark run starts cold. The front keeps its
    /// flows and health state (a restart is far shorter than its health checks' fall time).
    pub fn restart_all(&mut self, scheme: &str) -> Result<()> {
        let mut roles: Vec<(String, String, u32, SocketAddr)> = self
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.ns.clone(), s.pid, s.listen))
            .collect();
        if let Some(c) = &self.central {
            roles.push((CENTRAL_ROLE.to_owned(), c.ns.clone(), c.pid, c.addr));
        }
        for (role, _, pid, _) in &roles {
            config::update(
                &self.run_dir.join(format!("{role}.toml")),
                &[("scheme", scheme.into())],
            )?;
            process::stop(*pid);
        }
        for (i, (role, ns, _, listen)) in roles.iter().enumerate() {
            let pid = roles::start_sidecar(ns, &self.parts.sidecar, &self.run_dir, role)?;
            self.rejoin_cgroup(role, pid)?;
            netns::wait_listening(ns, *listen, role)?;
            match self.servers.get_mut(i) {
                Some(s) => s.pid = pid,
                None => {
                    if let Some(c) = self.central.as_mut() {
                        c.pid = pid;
                    }
                }
            }
        }
        self.scheme = scheme.to_owned();
        self.save()
    }

    /// CPU periods and throttled periods so far of a role's cgroup (`srv1`, `central`), from
    /// its cpu.stat; `None` without CPU quotas.
    pub fn cpu_periods(&self, role: &str) -> Option<(u64, u64)> {
        self.cpu_quota?;
        cgroup::periods(&self.name, role)
    }

    /// Puts a restarted process back in its role's cgroup when the testbed has CPU quotas.
    fn rejoin_cgroup(&self, role: &str, pid: u32) -> Result<()> {
        match self.cpu_quota {
            Some(_) => cgroup::rejoin(&self.name, role, pid),
            None => Ok(()),
        }
    }

    /// Stops the origin (SIGKILL: an origin that vanishes).
    pub fn kill_origin(&self) {
        process::signal(self.origin.pid, libc::SIGKILL);
    }

    /// Starts the origin again.
    pub fn restart_origin(&mut self) -> Result<()> {
        self.origin.pid = roles::start_origin(
            &self.origin.ns,
            self.origin.addr,
            &self.run_dir,
            &self.parts.traffic,
        )?;
        self.save()
    }

    /// Renews the VIP's certificate (`tls`) as an operator would: a new certificate and key
    /// from the same CA moved over the files every sidecar's `tls-cert` names, then SIGHUP to
    /// every sidecar. Returns the certificate file.
    pub fn renew_tls_certificate(&self) -> Result<PathBuf> {
        let dir = self.run_dir.join("tls");
        let ca = crate::tls::Ca::open(&dir)?;
        let vip = match self.vip.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => bail!("the testbed's VIP is IPv4"),
        };
        let fresh = ca.issue(
            "vip-renewed",
            &[crate::plan::TLS_NAME],
            &[vip.into()],
            crate::tls::KeyType::EcdsaP256,
        )?;
        let (cert, key) = (dir.join("vip.pem"), dir.join("vip.key"));
        fs::rename(&fresh.key, &key).context("moving the renewed key in place")?;
        fs::rename(&fresh.cert, &cert).context("moving the renewed certificate in place")?;
        for i in 0..self.servers.len() {
            self.signal_sidecar(i, libc::SIGHUP);
        }
        Ok(cert)
    }

    /// Rewrites the sidecars' `members` to the servers named in `keep` and reloads them
    /// (SIGHUP); the other servers' sidecars are left alone.
    pub fn set_members(&self, keep: &[&str]) -> Result<()> {
        let kept = |s: &&Server| keep.contains(&s.name.as_str());
        let members = roles::members(self.servers.iter().filter(kept).map(|s| (&*s.name, s.peer)));
        for (i, s) in self.servers.iter().enumerate().filter(|(_, s)| kept(s)) {
            config::update(
                &self.run_dir.join(format!("{}.toml", s.name)),
                &[("members", members.clone().into())],
            )?;
            self.signal_sidecar(i, libc::SIGHUP);
        }
        Ok(())
    }

    /// The sidecars' metrics, scraped in their namespaces.
    #[cfg(feature = "metrics")]
    pub fn scrape_servers(&self) -> Result<Vec<metrics::Metrics>> {
        self.servers
            .iter()
            .map(|s| metrics::scrape_in(&s.ns, s.metrics))
            .collect()
    }

    /// Waits until every sidecar's ring has `n` members (`dl7_l7_members`): after a start or
    /// a membership change, once sidecars that follow the fronts have caught up. How long it
    /// took.
    #[cfg(feature = "metrics")]
    pub fn wait_sidecar_members(
        &self,
        n: usize,
        limit: std::time::Duration,
    ) -> Result<std::time::Duration> {
        let start = std::time::Instant::now();
        loop {
            let counts: Vec<f64> = self
                .scrape_servers()?
                .iter()
                .map(|m| m.sum("dl7_l7_members", &[]))
                .collect();
            if counts.iter().all(|&c| c == n as f64) {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "the sidecars' rings have {counts:?} members, not {n}, after {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Caps the traffic the switch sends front `i` at `bits_per_s` (a token bucket on its
    /// port), or lifts the cap (`None`): a front of a given capacity, since the XDP program
    /// runs in softirq context, where no cgroup quota applies.
    pub fn cap_front(&self, i: usize, bits_per_s: Option<u64>) -> Result<()> {
        let port = format!("v{}", self.front_at(i)?.role);
        let br = self.switch_ns();
        let mut tc = std::process::Command::new("ip");
        tc.args(["netns", "exec", &br, "tc", "qdisc"]);
        match bits_per_s {
            Some(rate) => {
                // A burst of 10 ms at the rate (at least a few full frames).
                let burst = (rate / 8 / 100).max(16 << 10);
                tc.args(["replace", "dev", &port, "root", "tbf"])
                    .args(["rate", &format!("{rate}bit")])
                    .args(["burst", &burst.to_string(), "latency", "1s"]);
            }
            None => {
                tc.args(["del", "dev", &port, "root"]);
            }
        }
        match (process::output(&mut tc), bits_per_s) {
            (Ok(_), _) => Ok(()),
            // Lifting a cap that is not there.
            (Err(e), None)
                if e.to_string().contains("No such file")
                    || e.to_string()
                        .contains("Cannot delete qdisc with handle of zero") =>
            {
                Ok(())
            }
            (Err(e), _) => Err(e),
        }
    }
}
