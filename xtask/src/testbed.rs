//! `cargo xtask testbed up|down|status`: the whole dl7 cluster in network namespaces.
//!
//! ```text
//!   client (10.214.0.10-13) ─┐
//!   front  (10.214.0.2, VIP 10.214.0.100 answers ARP, XDP) ─┤
//!   central (10.214.0.3:80, with --central) ─┤
//!   origin (10.214.0.5:8000) ─┤── bridge (namespace <name>-br)
//!   srv1..N (10.214.0.21.., VIP on lo) ─┘
//! ```
//!
//! Everything is brought up the way an operator would: the front with `build-and-load` (in
//! the front's namespace, pins under /sys/fs/bpf/<name>), the VIP and reals with `l4-ctl vip
//! add` / `real add` (MACs from the neighbour table), each server with
//! `deploy/real-server-setup.sh`, the sidecars with `deploy/sidecar.example.toml` and the
//! front daemon with `deploy/dl7.toml`, each with the testbed's addresses filled in. With
//! `--cpu-quota F` every sidecar runs in a cgroup limited to F CPUs. With `--central` the
//! testbed also has the paper's conventional design beside dl7's: one `l7-sidecar serve
//! --mode central` (at 10.214.0.3:80, namespace <name>-central, under the same quota) as the
//! single L7 balancer in front of the same servers, whose sidecars serve what it sends them
//! (it arrives marked as forwarded, so they never pass it on).
//!
//! What `up` created is recorded in /run/dl7-testbed/<name>/state.json; `down` removes every
//! namespace, process, pin directory and cgroup of the testbed, also when the state file is
//! missing (after a crash) because all of them carry the testbed's name.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::{
    build::{self, FrontPlace},
    cmd, setup,
};

/// The testbed's subnet, 10.214.0.0/24.
const NET: [u8; 3] = [10, 214, 0];
const FRONT_HOST: u8 = 2;
const CENTRAL_HOST: u8 = 3;
const ORIGIN_HOST: u8 = 5;
const CLIENT_HOSTS: [u8; 4] = [10, 11, 12, 13];
const FIRST_SERVER_HOST: u8 = 21;
const VIP_HOST: u8 = 100;
const VIP_PORT: u16 = 80;
const PEER_PORT: u16 = 8080;
const SIDECAR_METRICS_PORT: u16 = 9500;
const FRONT_METRICS_PORT: u16 = 9400;
const ORIGIN_PORT: u16 = 8000;
/// Most servers the /24 and the interface names allow.
const MAX_SERVERS: usize = 32;
/// The testbed's name when none is given: the prefix of everything it creates.
pub const DEFAULT_NAME: &str = "dl7tb";
const PACKAGES: &[&str] = &["iproute2", "ethtool", "procps", "util-linux"];
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The central balancer's role: its namespace, config, log and cgroup name.
pub const CENTRAL_ROLE: &str = "central";
/// Keys of the sidecar's example config that central mode refuses (it has no self, no peer
/// side and never serves locally).
const CENTRAL_UNUSED_KEYS: &[&str] = &["self", "peer-listen", "origin", "upstream"];

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

fn parse_name(s: &str) -> Result<String, String> {
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

/// How the front attaches its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Native,
    Generic,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
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
}

/// What `status --json` prints, and what `up` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub vip: String,
    pub client_ns: String,
    pub client_addrs: Vec<String>,
    pub front: FrontStatus,
    pub servers: Vec<ServerStatus>,
    pub origin: OriginStatus,
    /// The conventional design's central L7 balancer (`up --central`).
    #[serde(default)]
    pub central: Option<CentralStatus>,
    pub scheme: String,
    pub mode: Mode,
    pub cpu_quota: Option<f64>,
    /// Where the processes' logs and generated configs are.
    pub run_dir: PathBuf,
    /// The sidecar executable the servers run.
    pub sidecar: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrontStatus {
    pub ns: String,
    pub addr: String,
    pub metrics: String,
    pub pin_dir: PathBuf,
    pub l4_ctl: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub ns: String,
    pub addr: String,
    pub peer: String,
    pub metrics: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CentralStatus {
    pub ns: String,
    /// Where clients send requests (the conventional design has no VIP of its own).
    pub addr: String,
    pub metrics: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OriginStatus {
    pub ns: String,
    pub addr: String,
    pub pid: u32,
}

fn host(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], NET[2], h)
}

fn run_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/dl7-testbed/{name}"))
}

fn pin_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{name}"))
}

pub fn run(root: &Path, command: TestbedCommand) -> Result<()> {
    match command {
        TestbedCommand::Up(args) => {
            let status = up(root, &args)?;
            print_status(&status, false)
        }
        TestbedCommand::Down(name) => down(&name.name),
        TestbedCommand::Status { name, json } => print_status(&status(&name.name)?, json),
    }
}

fn print_status(status: &Status, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    println!("testbed {} is up", status.name);
    println!(
        "  VIP {} (front {} in namespace {}, {} mode)",
        status.vip,
        status.front.addr,
        status.front.ns,
        status.mode.as_str()
    );
    println!(
        "  clients in {} from {}",
        status.client_ns,
        status.client_addrs.join(", ")
    );
    println!("  origin {} in {}", status.origin.addr, status.origin.ns);
    if let Some(c) = &status.central {
        println!(
            "  central L7 balancer {} (namespace {}, metrics http://{}/metrics)",
            c.addr, c.ns, c.metrics
        );
    }
    for s in &status.servers {
        println!(
            "  {} {} (namespace {}, peer {}, metrics http://{}/metrics)",
            s.name, s.addr, s.ns, s.peer, s.metrics
        );
    }
    println!(
        "  front metrics: http://{}/metrics (e.g. `nsenter --net=/run/netns/{} curl -s http://{}/metrics`)",
        status.front.metrics, status.front.ns, status.front.metrics
    );
    println!(
        "  try: nsenter --net=/run/netns/{} curl -s http://{}/obj/1?size=1000 | wc -c",
        status.client_ns, status.vip
    );
    println!("  logs and configs: {}", status.run_dir.display());
    Ok(())
}

/// The status `up` recorded.
pub fn status(name: &str) -> Result<Status> {
    let path = run_dir(name).join("state.json");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("testbed {name} is not up ({} is missing)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
}

/// Brings the testbed up; on any failure removes what it created and returns the error.
pub fn up(root: &Path, args: &UpArgs) -> Result<Status> {
    let name = &args.name.name;
    if run_dir(name).join("state.json").exists() {
        bail!("testbed {name} is up already: `cargo xtask testbed down --name {name}` first");
    }
    if let Some(q) = args.cpu_quota {
        ensure!(
            (0.01..=64.0).contains(&q),
            "--cpu-quota {q} is not between 0.01 and 64 CPUs"
        );
    }
    setup::ensure_debian_packages(PACKAGES)?;
    // Leftovers of a crashed testbed of the same name.
    down_quietly(name);
    match bring_up(root, args) {
        Ok(status) => Ok(status),
        Err(e) => {
            eprintln!("testbed: bringing {name} up failed; removing what was created");
            let logs = run_dir(name);
            let hint = tail_logs(&logs);
            down_quietly(name);
            Err(e.context(hint))
        }
    }
}

/// The last lines of every log, to explain a failed start.
fn tail_logs(dir: &Path) -> String {
    let mut out = String::from("process logs:");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                for line in tail.into_iter().rev() {
                    out.push_str(&format!("\n  {}: {line}", path.display()));
                }
            }
        }
    }
    out
}

fn ns_name(name: &str, role: &str) -> String {
    format!("{name}-{role}")
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::output(Command::new("ip").args(args)).map(drop)
}

/// A host namespace joined to the bridge by a veth (`eth0` inside, `v<role>` on the bridge).
fn add_host(name: &str, role: &str, addrs: &[Ipv4Addr]) -> Result<String> {
    let ns = ns_name(name, role);
    let br = ns_name(name, "br");
    let peer = format!("v{role}");
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &peer, "netns", &br,
    ])?;
    ip(&["-n", &br, "link", "set", &peer, "master", "br0", "up"])?;
    for a in addrs {
        ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
    }
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    Ok(ns)
}

/// Starts `command` in namespace `ns` as a daemon (own session, output to `log`); returns
/// its pid. It outlives xtask: `down` stops it.
fn spawn_in(ns: &str, program: &Path, args: &[String], log: &Path) -> Result<u32> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; the child leaves xtask's session so that a Ctrl-C
    // of xtask does not stop the testbed.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {} in {ns}", program.display()))?;
    Ok(child.id())
}

/// Runs `f` on a thread that entered namespace `ns` (to reach the testbed's addresses).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: a namespace fd we own; setns changes only this thread's namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(
                    rc == 0,
                    "setns({path}): {}",
                    std::io::Error::last_os_error()
                );
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
    })
}

/// One GET inside namespace `ns`: status and body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let r = in_netns(ns, || {
        dl7_traffic::http1::get_once(addr, path, &addr.to_string())
    })??;
    Ok((r.status, r.body))
}

/// Waits until `addr` accepts TCP connections from inside `ns`.
fn wait_listening(ns: &str, addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    in_netns(ns, || {
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("{what} did not listen on {addr} within {READY_TIMEOUT:?}")
    })?
}

/// A deploy/ TOML file with the given keys replaced (the rest kept as operators see it).
fn fill_config(template: &Path, values: &[(&str, toml::Value)]) -> Result<String> {
    edit_config(template, values, &[])
}

/// `fill_config`, also leaving out the keys in `remove`.
fn edit_config(template: &Path, values: &[(&str, toml::Value)], remove: &[&str]) -> Result<String> {
    let text =
        fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", template.display()))?;
    for key in remove {
        doc.remove(*key);
    }
    for (key, value) in values {
        doc.insert((*key).to_owned(), value.clone());
    }
    Ok(toml::to_string(&doc)?)
}

fn bring_up(root: &Path, args: &UpArgs) -> Result<Status> {
    let name = args.name.name.as_str();
    let dir = run_dir(name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("testbed: building the sidecar and the origin");
    let sidecar = build::release_binary(root, "l7-sidecar", "l7-sidecar")?;

    eprintln!("testbed: creating namespaces");
    let br = ns_name(name, "br");
    ip(&["netns", "add", &br])?;
    ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &br, "link", "set", "br0", "up"])?;
    let vip = host(VIP_HOST);
    let front_ns = add_host(name, "front", &[host(FRONT_HOST)])?;
    // Only the front answers ARP for the VIP.
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
    cmd::output(Command::new("ip").args([
        "netns", "exec", &client_ns, "ethtool", "-K", "eth0", "tx", "off",
    ]))?;
    let origin_ns = add_host(name, "origin", &[host(ORIGIN_HOST)])?;
    let n = usize::from(args.servers);
    let mut servers = Vec::with_capacity(n);
    let setup_script = root.join("deploy/real-server-setup.sh");
    for i in 0..n {
        let role = format!("srv{}", i + 1);
        let addr = host(FIRST_SERVER_HOST + i as u8);
        let ns = add_host(name, &role, &[addr])?;
        cmd::output(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&setup_script)
                .arg(vip.to_string()),
        )?;
        servers.push((role, ns, addr));
    }
    if args.mode == Mode::Native {
        // In native mode the kernel drops frames XDP_TX'd into a veth whose peer runs no XDP
        // program: give the front's bridge-side peer one that passes everything.
        let pass = root.join("l4-ebpf/target/bpfel-unknown-none/release/xdp_pass");
        crate::ebpf::build(root)?;
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            "dev",
            "vfront",
            "xdpdrv",
            "obj",
            &pass.to_string_lossy(),
            "sec",
            "xdp",
        ])?;
    }

    eprintln!("testbed: starting the origin");
    let origin_addr = SocketAddr::from((host(ORIGIN_HOST), ORIGIN_PORT));
    let origin_pid = start_origin(&origin_ns, origin_addr, &dir)?;

    eprintln!("testbed: starting {n} sidecars ({})", args.scheme);
    let members: Vec<String> = servers
        .iter()
        .map(|(role, _, addr)| format!("{role}={addr}:{PEER_PORT}"))
        .collect();
    let template = root.join("deploy/sidecar.example.toml");
    let cgroups = args.cpu_quota.map(|q| cpu_cgroups(name, q)).transpose()?;
    let mut server_status = Vec::with_capacity(n);
    let threads: Vec<(&str, toml::Value)> = args
        .sidecar_threads
        .map(|t| ("threads", i64::from(t).into()))
        .into_iter()
        .collect();
    for (role, ns, addr) in &servers {
        let metrics = SocketAddr::from((*addr, SIDECAR_METRICS_PORT));
        let peer = SocketAddr::from((*addr, PEER_PORT));
        let mut values = vec![
            ("listen", format!("0.0.0.0:{VIP_PORT}").into()),
            ("peer-listen", peer.to_string().into()),
            ("self", role.clone().into()),
            ("members", members.join(",").into()),
            ("scheme", args.scheme.clone().into()),
            ("origin", format!("http://{origin_addr}").into()),
            ("metrics", metrics.to_string().into()),
            ("cache-bytes", toml::Value::Integer(args.cache_bytes as i64)),
        ];
        values.extend(threads.iter().cloned());
        let config = fill_config(&template, &values)?;
        let config_path = dir.join(format!("{role}.toml"));
        fs::write(&config_path, config)?;
        let pid = start_sidecar(ns, &sidecar, &dir, role)?;
        if let Some(groups) = &cgroups {
            groups.add(role, pid)?;
        }
        server_status.push(ServerStatus {
            name: role.clone(),
            ns: ns.clone(),
            addr: addr.to_string(),
            peer: peer.to_string(),
            metrics: metrics.to_string(),
            pid,
        });
    }
    for (s, (_, ns, addr)) in server_status.iter().zip(&servers) {
        wait_listening(ns, SocketAddr::from((*addr, VIP_PORT)), &s.name)?;
    }
    let central = if args.central {
        eprintln!(
            "testbed: starting the central L7 balancer ({})",
            args.scheme
        );
        let addr = host(CENTRAL_HOST);
        let ns = add_host(name, CENTRAL_ROLE, &[addr])?;
        let listen = SocketAddr::from((addr, VIP_PORT));
        let metrics = SocketAddr::from((addr, SIDECAR_METRICS_PORT));
        // The servers' sidecars as its backends, by their peer addresses: what arrives
        // there is served, never passed on.
        let mut values = vec![
            ("mode", "central".into()),
            ("listen", listen.to_string().into()),
            ("members", members.join(",").into()),
            ("scheme", args.scheme.clone().into()),
            ("metrics", metrics.to_string().into()),
        ];
        values.extend(threads.iter().cloned());
        let config = edit_config(&template, &values, CENTRAL_UNUSED_KEYS)?;
        fs::write(dir.join(format!("{CENTRAL_ROLE}.toml")), config)?;
        let pid = start_sidecar(&ns, &sidecar, &dir, CENTRAL_ROLE)?;
        if let Some(groups) = &cgroups {
            groups.add(CENTRAL_ROLE, pid)?;
        }
        wait_listening(&ns, listen, "the central L7 balancer")?;
        Some(CentralStatus {
            ns,
            addr: listen.to_string(),
            metrics: metrics.to_string(),
            pid,
        })
    } else {
        None
    };

    eprintln!("testbed: loading the front ({} mode)", args.mode.as_str());
    let pins = pin_dir(name);
    let l4_ctl = build::build_and_load(
        root,
        &FrontPlace {
            iface: "eth0",
            mode: args.mode.as_str(),
            netns: Some(&front_ns),
            pin_dir: Some(&pins),
        },
    )?;
    let ctl = |a: &[&str]| {
        cmd::output(build::l4_ctl_command(&l4_ctl, Some(&front_ns), Some(&pins)).args(a))
    };
    let vip_s = format!("{vip}:{VIP_PORT}/tcp");
    ctl(&["vip", "add", &vip_s])?;
    for (_, _, addr) in &servers {
        ctl(&["real", "add", &vip_s, &addr.to_string()])?;
    }
    let front_metrics = SocketAddr::from((host(FRONT_HOST), FRONT_METRICS_PORT));
    let front_config = front_config(root, &vip_s, &servers)?;
    let front_config_path = dir.join("dl7.toml");
    fs::write(&front_config_path, front_config)?;
    let daemon_args: Vec<String> = vec![
        "--pin-dir".into(),
        pins.to_string_lossy().into_owned(),
        "daemon".into(),
        "--config".into(),
        front_config_path.to_string_lossy().into_owned(),
        "--metrics".into(),
        front_metrics.to_string(),
    ];
    spawn_in(
        &front_ns,
        &l4_ctl,
        &daemon_args,
        &dir.join("front-daemon.log"),
    )?;
    wait_listening(&front_ns, front_metrics, "the front daemon")?;

    let status = Status {
        name: name.to_owned(),
        vip: format!("{vip}:{VIP_PORT}"),
        client_ns,
        client_addrs: client_addrs.iter().map(ToString::to_string).collect(),
        front: FrontStatus {
            ns: front_ns,
            addr: host(FRONT_HOST).to_string(),
            metrics: front_metrics.to_string(),
            pin_dir: pins,
            l4_ctl,
        },
        servers: server_status,
        origin: OriginStatus {
            ns: origin_ns,
            addr: origin_addr.to_string(),
            pid: origin_pid,
        },
        central,
        scheme: args.scheme.clone(),
        mode: args.mode,
        cpu_quota: args.cpu_quota,
        run_dir: dir.clone(),
        sidecar,
    };
    fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&status)?,
    )?;
    // One request through the whole path proves the cluster answers.
    let (code, _) = http_get(
        &status.client_ns,
        SocketAddr::from((vip, VIP_PORT)),
        "/obj/testbed-ready?size=100",
    )?;
    ensure!(code == 200, "a request through the VIP got {code}");
    Ok(status)
}

fn start_origin(ns: &str, addr: SocketAddr, dir: &Path) -> Result<u32> {
    let xtask = std::env::current_exe().context("finding xtask's own executable")?;
    let pid = spawn_in(
        ns,
        &xtask,
        &["origin".into(), "--listen".into(), addr.to_string()],
        &dir.join("origin.log"),
    )?;
    wait_listening(ns, addr, "the origin")?;
    Ok(pid)
}

fn start_sidecar(ns: &str, sidecar: &Path, dir: &Path, role: &str) -> Result<u32> {
    let config = dir.join(format!("{role}.toml"));
    spawn_in(
        ns,
        sidecar,
        &[
            "serve".into(),
            "--config".into(),
            config.to_string_lossy().into_owned(),
        ],
        &dir.join(format!("{role}.log")),
    )
}

impl Status {
    /// Saves the status (after a process was restarted).
    fn save(&self) -> Result<()> {
        fs::write(
            self.run_dir.join("state.json"),
            serde_json::to_string_pretty(self)?,
        )
        .context("saving the testbed state")
    }

    /// Runs `l4-ctl ARGS` on the front; its stdout.
    pub fn l4_ctl(&self, args: &[&str]) -> Result<String> {
        cmd::output(
            build::l4_ctl_command(
                &self.front.l4_ctl,
                Some(&self.front.ns),
                Some(&self.front.pin_dir),
            )
            .args(args),
        )
    }

    /// The VIP as l4-ctl writes it.
    pub fn vip_service(&self) -> String {
        format!("{}/tcp", self.vip)
    }

    /// Sends `signal` to server `i`'s sidecar.
    pub fn signal_sidecar(&self, i: usize, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid `up` recorded for this sidecar.
        unsafe { libc::kill(self.servers[i].pid as i32, signal) };
    }

    /// Starts server `i`'s sidecar again (after it was stopped), with its config file, back
    /// in its cgroup, and waits until it listens.
    pub fn restart_sidecar(&mut self, i: usize) -> Result<()> {
        let s = &self.servers[i];
        let pid = start_sidecar(&s.ns, &self.sidecar, &self.run_dir, &s.name)?;
        self.rejoin_cgroup(&s.name, pid)?;
        let addr: SocketAddr = SocketAddr::new(s.addr.parse()?, VIP_PORT);
        wait_listening(&s.ns, addr, &s.name)?;
        self.servers[i].pid = pid;
        self.save()
    }

    /// Switches every sidecar (and the central balancer) to `scheme` by restarting them,
    /// which also empties their caches: each benchmark run starts cold. The front keeps its
    /// flows and health state (a restart is far shorter than its health checks' fall time).
    pub fn restart_all(&mut self, scheme: &str) -> Result<()> {
        let mut roles: Vec<(String, String, u32, SocketAddr)> = Vec::new();
        for s in &self.servers {
            roles.push((
                s.name.clone(),
                s.ns.clone(),
                s.pid,
                SocketAddr::new(s.addr.parse()?, VIP_PORT),
            ));
        }
        if let Some(c) = &self.central {
            roles.push((
                CENTRAL_ROLE.to_owned(),
                c.ns.clone(),
                c.pid,
                c.addr.parse()?,
            ));
        }
        for (role, _, pid, _) in &roles {
            let path = self.run_dir.join(format!("{role}.toml"));
            fs::write(&path, fill_config(&path, &[("scheme", scheme.into())])?)?;
            stop(*pid);
        }
        for (i, (role, ns, _, listen)) in roles.iter().enumerate() {
            let pid = start_sidecar(ns, &self.sidecar, &self.run_dir, role)?;
            self.rejoin_cgroup(role, pid)?;
            wait_listening(ns, *listen, role)?;
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
        let stat = cgroup_dirs(&self.name)
            .into_iter()
            .find_map(|d| fs::read_to_string(d.join(role).join("cpu.stat")).ok())?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        Some((field("nr_periods ")?, field("nr_throttled ")?))
    }

    /// Puts a restarted process back in its role's cgroup when the testbed has CPU quotas.
    fn rejoin_cgroup(&self, role: &str, pid: u32) -> Result<()> {
        if self.cpu_quota.is_none() {
            return Ok(());
        }
        let procs = cgroup_dirs(&self.name)
            .into_iter()
            .map(|d| d.join(role).join("cgroup.procs"))
            .find(|p| p.exists())
            .with_context(|| format!("the cgroup of {role} is gone"))?;
        fs::write(&procs, pid.to_string())
            .with_context(|| format!("moving {pid} into {}", procs.display()))
    }

    /// Stops the origin (SIGKILL: an origin that vanishes).
    pub fn kill_origin(&self) {
        // SAFETY: kill(2) on the pid `up` recorded for the origin.
        unsafe { libc::kill(self.origin.pid as i32, libc::SIGKILL) };
    }

    /// Starts the origin again.
    pub fn restart_origin(&mut self) -> Result<()> {
        self.origin.pid = start_origin(&self.origin.ns, self.origin.addr.parse()?, &self.run_dir)?;
        self.save()
    }

    /// Rewrites the sidecars' `members` to the servers named in `keep` and reloads them
    /// (SIGHUP); the other servers' sidecars are left alone.
    pub fn set_members(&self, keep: &[&str]) -> Result<()> {
        let members: Vec<String> = self
            .servers
            .iter()
            .filter(|s| keep.contains(&s.name.as_str()))
            .map(|s| format!("{}={}", s.name, s.peer))
            .collect();
        for (i, s) in self.servers.iter().enumerate() {
            if !keep.contains(&s.name.as_str()) {
                continue;
            }
            let path = self.run_dir.join(format!("{}.toml", s.name));
            let config = fill_config(&path, &[("members", members.join(",").into())])?;
            fs::write(&path, config)?;
            self.signal_sidecar(i, libc::SIGHUP);
        }
        Ok(())
    }
}

/// Kills `pid` (SIGKILL) and waits until it is gone: reaped when it is xtask's own child,
/// else until /proc no longer lists it as running.
fn stop(pid: u32) {
    let pid = pid as i32;
    // SAFETY: kill(2) and waitpid(2) on a pid the testbed recorded; waitpid fails with
    // ECHILD, harmlessly, when an earlier xtask started it.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

/// Reads a Prometheus endpoint inside namespace `ns`: (name, labels, value) per sample.
pub fn scrape(ns: &str, addr: SocketAddr) -> Result<Vec<Sample>> {
    let (code, body) = http_get(ns, addr, "/metrics")?;
    ensure!(code == 200, "http://{addr}/metrics answered {code}");
    let text = String::from_utf8_lossy(&body);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .with_context(|| format!("parsing http://{addr}/metrics"))?;
    Ok(scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Sample {
                name: s.metric,
                labels,
                value,
            }
        })
        .collect())
}

/// One sample of a scrape.
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// The sum of `name`'s samples (with `label` = value, when given).
pub fn sum(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && label.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

/// deploy/dl7.toml's first VIP (its health check) with the testbed's VIP and reals.
fn front_config(root: &Path, vip: &str, servers: &[(String, String, Ipv4Addr)]) -> Result<String> {
    let template = root.join("deploy/dl7.toml");
    let text =
        fs::read_to_string(&template).with_context(|| format!("reading {}", template.display()))?;
    let doc: toml::Table = toml::from_str(&text)?;
    let mut first = doc
        .get("vip")
        .and_then(|v| v.as_array())
        .and_then(|v| v.first())
        .and_then(|v| v.as_table())
        .cloned()
        .with_context(|| format!("{} has no [[vip]]", template.display()))?;
    first.insert("address".into(), vip.into());
    if let Some(health) = first.get_mut("health").and_then(|h| h.as_table_mut()) {
        // The sidecar's own health endpoint.
        health.insert("check".into(), "http".into());
        health.insert("port".into(), i64::from(SIDECAR_METRICS_PORT).into());
        health.insert("path".into(), "/healthz".into());
    }
    let reals: Vec<toml::Value> = servers
        .iter()
        .map(|(_, _, addr)| {
            let mut t = toml::Table::new();
            t.insert("address".into(), addr.to_string().into());
            toml::Value::Table(t)
        })
        .collect();
    first.insert("real".into(), reals.into());
    let mut out = toml::Table::new();
    out.insert("vip".into(), vec![toml::Value::Table(first)].into());
    Ok(toml::to_string(&out)?)
}

/// The testbed's cgroups: one per sidecar, each limited to the same CPU quota, in the
/// cgroup v2 hierarchy when it offers the cpu controller, else in cgroup v1's cpu hierarchy
/// (as on this project's machines, where /sys/fs/cgroup holds the v1 hierarchies).
struct CpuCgroups {
    root: PathBuf,
    v2: bool,
    quota: f64,
}

const CGROUP_V2: &str = "/sys/fs/cgroup";
const CGROUP_V1_CPU: &str = "/sys/fs/cgroup/cpu";

/// Where the testbed's cgroups live in each hierarchy (for `down`).
fn cgroup_dirs(name: &str) -> [PathBuf; 2] {
    [
        Path::new(CGROUP_V2).join(name),
        Path::new(CGROUP_V1_CPU).join(name),
    ]
}

fn cpu_cgroups(name: &str, quota: f64) -> Result<CpuCgroups> {
    let v2_root = Path::new(CGROUP_V2);
    let v2 = fs::read_to_string(v2_root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
    let root = if v2 {
        enable_cpu_controller(v2_root)?;
        v2_root.join(name)
    } else if Path::new(CGROUP_V1_CPU).join("cpu.cfs_quota_us").exists() {
        Path::new(CGROUP_V1_CPU).join(name)
    } else {
        bail!(
            "--cpu-quota needs the cgroup cpu controller: neither {CGROUP_V2} (v2) nor \
             {CGROUP_V1_CPU} (v1) offers it"
        );
    };
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    if v2 {
        enable_cpu_controller(&root)?;
    }
    Ok(CpuCgroups { root, v2, quota })
}

fn enable_cpu_controller(dir: &Path) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&control).unwrap_or_default();
    if !current.split_whitespace().any(|c| c == "cpu") {
        fs::write(&control, "+cpu")
            .with_context(|| format!("enabling the cpu controller in {}", control.display()))?;
    }
    Ok(())
}

impl CpuCgroups {
    /// Limits `pid` (and its threads) to the quota, in a cgroup named after `role`.
    fn add(&self, role: &str, pid: u32) -> Result<()> {
        const PERIOD_US: u64 = 100_000;
        let quota_us = (self.quota * PERIOD_US as f64).round() as u64;
        let dir = self.root.join(role);
        fs::create_dir_all(&dir)?;
        let limits = if self.v2 {
            vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))]
        } else {
            vec![
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota_us.to_string()),
            ]
        };
        for (file, value) in limits {
            fs::write(dir.join(file), value)
                .with_context(|| format!("setting {}/{file}", dir.display()))?;
        }
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))
    }
}

/// `testbed down`: everything named after the testbed goes.
pub fn down(name: &str) -> Result<()> {
    let existed = run_dir(name).exists() || netns_of(name).next().is_some();
    down_quietly(name);
    let left: Vec<String> = netns_of(name).collect();
    ensure!(left.is_empty(), "could not remove namespaces {left:?}");
    if existed {
        println!("testbed {name} is down");
    } else {
        println!("testbed {name} was not up");
    }
    Ok(())
}

fn netns_of(name: &str) -> impl Iterator<Item = String> {
    let prefix = format!("{name}-");
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(move |n| n.starts_with(&prefix))
}

/// Removes whatever exists of the testbed, ignoring what is already gone.
fn down_quietly(name: &str) {
    let namespaces: Vec<String> = netns_of(name).collect();
    // Processes first (SIGTERM, then SIGKILL), so the sidecars drain and the daemon exits.
    let pids = |ns: &str| -> Vec<i32> {
        cmd::output(Command::new("ip").args(["netns", "pids", ns]))
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
                // SAFETY: kill(2) with a pid from `ip netns pids`.
                unsafe { libc::kill(pid, signal) };
            }
        }
        if !any {
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && namespaces.iter().any(|ns| !pids(ns).is_empty()) {
            thread::sleep(Duration::from_millis(50));
        }
    }
    // The link pin goes with the pin directory; deleting the namespaces removes the veths
    // (and the XDP attachments on them).
    let _ = fs::remove_dir_all(pin_dir(name));
    for ns in &namespaces {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    for cg in cgroup_dirs(name) {
        if let Ok(entries) = fs::read_dir(&cg) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(&cg);
        }
    }
    let _ = fs::remove_dir_all(run_dir(name));
}
