//! The caches that `cache-tests --peers` runs the suite against besides dl7's sidecar: nginx
//! (proxy_cache), Squid (accelerator), Varnish and Apache Traffic Server, from Debian's
//! packages. Each is configured as in the suite's own `docker/` directory, adapted to
//! loopback: one function per peer writes its config and says how to run it. A peer runs as
//! our child in its own process group ([`Group`]), with its config, cache, logs, pid and
//! runtime files under one directory; dropping [`Running`] stops it and removes that directory.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::process::{Group, sleep};
use crate::cmd::run;
use crate::setup::ensure_debian_packages;

/// The peers, in the table's column order. Each is also the name of its Debian package.
pub const NAMES: [&str; 4] = ["nginx", "squid", "varnish", "trafficserver"];

/// How each peer (in [`NAMES`]' order) is configured in its directory.
const CONFIGURE: [Configure; 4] = [nginx, squid, varnish, trafficserver];

type Configure = fn(dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Launch>;

/// How long a peer may take to answer its first request.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long the readiness probe sleeps between looks.
const POLL: Duration = Duration::from_millis(100);

/// The CPU that [`Group`] pins the peers to: the one dl7's sidecar gets, while the suite's
/// client and origin share the other.
const CPU: usize = 1;

/// Installs the Debian packages of the peers that are missing (apt), idempotent.
pub fn ensure_installed() -> Result<()> {
    ensure_debian_packages(&NAMES)
}

/// A running peer cache; stops it (and removes its runtime files) on drop.
pub struct Running {
    pub name: &'static str,
    pub addr: SocketAddr,
    group: Option<Group>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The process group goes first, so that nothing writes into the directory any more.
        drop(self.group.take());
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cache-tests: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Starts peer `name` with its files under `dir` (created, emptied first), listening on
/// `listen`, in front of the suite's origin at `origin`; returns once it answers HTTP.
///
/// The peers drop privileges as Debian runs them (Squid to `proxy`, Traffic Server to
/// `trafficserver`, nginx's workers to `nobody`, Varnish's child to `vcache`), so every parent
/// of `dir` must let other users through (`target/` does; a 0700 temp directory does not).
pub fn start(name: &str, dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Running> {
    let index = NAMES
        .iter()
        .position(|n| *n == name)
        .with_context(|| format!("no peer {name:?}; the peers are {}", NAMES.join(", ")))?;
    let name = NAMES[index];
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    check_searchable(dir).with_context(|| format!("{name} cannot run in {}", dir.display()))?;
    // Else the readiness probe could be answered by whatever holds the port.
    TcpListener::bind(listen).with_context(|| format!("{name} cannot listen on {listen}"))?;
    let mut running = Running {
        name,
        addr: listen,
        group: None,
        dir: dir.to_owned(),
    };
    let launch = CONFIGURE[index](dir, listen, origin)
        .with_context(|| format!("configuring {name} in {}", dir.display()))?;
    let group = running
        .group
        .insert(Group::spawn(name, CPU, &launch.command, dir)?);
    wait_ready(name, group, listen, &launch.log)?;
    Ok(running)
}

/// An error unless other users may pass through every parent of `dir`.
fn check_searchable(dir: &Path) -> Result<()> {
    let dir = std::path::absolute(dir)?;
    for parent in dir.ancestors().skip(1) {
        let mode = fs::metadata(parent)
            .with_context(|| format!("reading {}", parent.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) is closed to other users",
                parent.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// A configured peer: its command line, and the log that explains a failed start.
struct Launch {
    command: Command,
    log: PathBuf,
}

/// Waits until the peer answers `GET /` with a 200 (which it fetched from the origin), at
/// most [`START_LIMIT`]; an error with the tail of its log if it exits or does not answer.
fn wait_ready(name: &str, group: &mut Group, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Err(e) = group.check_running() {
            return Err(e.context(format!("{name} did not start; {}", tail(log))));
        }
        if answers_200(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer HTTP 200 on {addr} within {START_LIMIT:?}; {}",
                tail(log)
            );
        }
        sleep(POLL)?;
    }
}

/// Whether `GET /` to `addr` gets a 200.
fn answers_200(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, POLL) else {
        return false;
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut status_line = [0u8; 12];
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut status_line).is_ok()
        && status_line.starts_with(b"HTTP/1.")
        && status_line.ends_with(b" 200")
}

/// The last lines of `log`.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(10)..];
    format!("last lines of {}:\n{}", log.display(), last.join("\n"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Hands `dir` to `user`, which the peer switches to after start.
fn chown(dir: &Path, user: &str) -> Result<()> {
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(dir))
}

/// nginx: the suite's server block (proxy_cache with revalidation), in a full config of ours
/// since the suite's is included by Debian's (whose other settings do not touch proxying).
fn nginx(dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Launch> {
    let d = dir.display();
    // nginx creates proxy_temp_path, but not its parent.
    fs::create_dir(dir.join("cache")).context("creating nginx's cache directory")?;
    let conf = dir.join("nginx.conf");
    write(
        &conf,
        &format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
    proxy_temp_path {d}/cache/tmp;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://{origin};
            proxy_cache my-cache;
            proxy_cache_revalidate on;
        }}
    }}
}}
"
        ),
    )?;
    let log = dir.join("error.log");
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log);
    Ok(Launch { command, log })
}

/// Squid: the suite's accelerator config plus what Debian's squid.conf adds that bears on
/// caching (its refresh patterns; no cache_dir, so memory only), with every file in `dir` but
/// its shared-memory segments in /dev/shm. Those are named after the service name, here one
/// per port, so that they cannot clash with another Squid's; a Squid that was killed leaves
/// them behind, and they would stop the next one on the port from starting.
fn squid(dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Launch> {
    let (d, host, port) = (dir.display(), origin.ip(), origin.port());
    let service = format!("dl7squid{}", listen.port());
    let ours = format!("{service}-");
    let segments = fs::read_dir("/dev/shm")
        .context("listing /dev/shm")?
        .flatten();
    for segment in segments.filter(|e| e.file_name().to_string_lossy().starts_with(&ours)) {
        let path = segment.path();
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let conf = dir.join("squid.conf");
    write(
        &conf,
        &format!(
            "http_port {listen} accel defaultsite=localhost no-vhost
cache_peer {host} parent {port} 0 no-query no-digest originserver default name=origin
cache_peer_access origin allow all
http_access allow all
# The suite's waits 1 s for clients; 0 stops it well before SIGKILL (after 3 s) would.
shutdown_lifetime 0 seconds
connect_retries 3
# Squid 5.7 leaves some clients of a stored 206 waiting until it closes their idle connection
# (default: 2 minutes, most of a run).
client_idle_pconn_timeout 10 seconds
refresh_pattern -i (/cgi-bin/|\\?) 0 0% 0
refresh_pattern . 0 20% 4320
cache_effective_user proxy
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
# No ICMP pinger and no netdb file, which would live outside `dir`.
pinger_enable off
netdb_filename none
"
        ),
    )?;
    chown(dir, "proxy")?;
    let mut command = Command::new("squid");
    command.args(["-N", "-n", &service, "-f"]).arg(&conf);
    let log = dir.join("cache.log");
    Ok(Launch { command, log })
}

/// Varnish: Debian's default.vcl (an empty VCL, so the built-in one) in front of the origin,
/// with the suite's command line; in the foreground, its working directory in `dir`.
fn varnish(dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Launch> {
    let (host, port) = (origin.ip(), origin.port());
    let vcl = dir.join("default.vcl");
    write(
        &vcl,
        &format!(
            "vcl 4.1;\n\nbackend default {{\n    .host = \"{host}\";\n    .port = \"{port}\";\n}}\n"
        ),
    )?;
    let mut command = Command::new("varnishd");
    command
        .arg("-F")
        .arg("-n")
        .arg(dir.join("work"))
        .args(["-j", "unix", "-a", &listen.to_string()])
        // No management port (the suite's runs use the default, a random one).
        .args(["-T", "none", "-f"])
        .arg(&vcl)
        .args(["-s", "malloc,64M"]);
    for parameter in ["default_ttl=0", "default_grace=0", "default_keep=3600"] {
        command.arg("-p").arg(parameter);
    }
    // Group's file for the child's stderr, where varnishd -F logs.
    let log = dir.join("varnish.stderr");
    Ok(Launch { command, log })
}

/// Apache Traffic Server: the suite's records, remap and ip_allow in a runroot of ours
/// (config, cache, logs and runtime files under `dir`, programs from the package), run as
/// traffic_server alone (the suite's image starts it under traffic_manager).
fn trafficserver(dir: &Path, listen: SocketAddr, origin: SocketAddr) -> Result<Launch> {
    let d = dir.display();
    for sub in ["etc", "cache", "log", "run"] {
        fs::create_dir(dir.join(sub)).with_context(|| format!("creating {d}/{sub}"))?;
    }
    let runroot = dir.join("runroot.yaml");
    write(
        &runroot,
        &format!(
            "prefix: /usr\nsysconfdir: {d}/etc\nlocalstatedir: {d}\nruntimedir: {d}/run\n\
             logdir: {d}/log\ncachedir: {d}/cache\n"
        ),
    )?;
    let etc = dir.join("etc");
    // Of the suite's records.config, only these differ from Traffic Server 9.2's defaults.
    write(
        &etc.join("records.config"),
        &format!(
            "CONFIG proxy.config.http.server_ports STRING {}:ip-in={}
CONFIG proxy.config.url_remap.pristine_host_hdr INT 1
CONFIG proxy.config.admin.user_id STRING trafficserver
# The suite starts right away (the image's caches had time to initialise theirs).
CONFIG proxy.config.http.wait_for_cache INT 2
",
            listen.port(),
            listen.ip()
        ),
    )?;
    // The suite's requests carry `Host: <listen>`.
    write(
        &etc.join("remap.config"),
        &format!("map http://{listen}/ http://{origin}/\n"),
    )?;
    // Traffic Server 9 reads ip_allow.yaml, not the suite's ip_allow.config; this is what
    // Debian's allows from loopback.
    write(
        &etc.join("ip_allow.yaml"),
        "ip_allow:\n  - apply: in\n    ip_addrs: 127.0.0.1\n    action: allow\n    methods: ALL\n",
    )?;
    // 64 MB rather than Debian's 256 MB: the suite's responses are tiny.
    write(&etc.join("storage.config"), &format!("{d}/cache 64M\n"))?;
    chown(dir, "trafficserver")?;
    let mut command = Command::new("traffic_server");
    command.arg(format!("--run-root={}", runroot.display()));
    let log = dir.join("log/diags.log");
    Ok(Launch { command, log })
}
