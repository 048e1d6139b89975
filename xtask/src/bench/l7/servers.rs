//! What the bench runs: the static objects, the nginx backends that serve them, and the three
//! hashing tiers in front of them (nginx, HAProxy, dl7's sidecar), each from a generated
//! config in the bench's temp directory, over plain HTTP or HTTPS (the same certificate for
//! all three); plus a functional check of a tier before it is loaded.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use dl7_testbed::tls::{Ca, KeyType, ServerCert};

use crate::bench::process::Group;

/// Debian's binaries (the bench installs the packages).
const NGINX: &str = "/usr/sbin/nginx";
const HAPROXY: &str = "/usr/sbin/haproxy";

/// How long a server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Idle keep-alive connections kept per backend: nginx's `keepalive`, dl7's `--pool-max-idle`
/// (HAProxy's `http-reuse` has no such cap by default).
const UPSTREAM_KEEPALIVE: usize = 64;

/// The response header through which a backend names itself (for the functional check).
const BACKEND_HEADER: &str = "x-backend";

/// The URI path of object `i`.
pub fn object_path(i: usize) -> String {
    format!("/o/{i:05}.bin")
}

/// The size of object `i`: 70 % 1 KiB, 20 % 4 KiB, 10 % 16 KiB.
pub fn object_size(i: usize) -> usize {
    match i % 10 {
        0..=6 => 1024,
        7 | 8 => 4096,
        _ => 16384,
    }
}

/// Writes `objects` files under `dir/www`; returns the document root.
pub fn write_objects(dir: &Path, objects: usize) -> Result<PathBuf> {
    let root = dir.join("www");
    let parent = root.join(object_path(0).trim_start_matches('/'));
    let parent = parent.parent().context("object path has a folder")?;
    fs::create_dir_all(parent)?;
    for i in 0..objects {
        let body: Vec<u8> = (0..object_size(i))
            .map(|b| b"0123456789abcdef"[b % 16])
            .collect();
        fs::write(root.join(object_path(i).trim_start_matches('/')), body)?;
    }
    Ok(root)
}

/// `n` currently free loopback ports (held together so they are distinct).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A loopback address.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A running server: its process group and where it listens.
pub struct Server {
    pub group: Group,
    pub addr: SocketAddr,
}

/// Starts `cmd` as `name` on `cpu` and waits until it listens on `addr`.
fn start(name: &str, cpu: usize, cmd: &Command, addr: SocketAddr, dir: &Path) -> Result<Server> {
    let mut group = Group::spawn(name, cpu, cmd, dir)?;
    group.wait_listening(addr, START_LIMIT)?;
    Ok(Server { group, addr })
}

/// The lines every nginx config of the bench starts with: one process, everything it writes
/// kept in `dir`.
fn nginx_preamble(dir: &Path, name: &str, master_process: bool) -> String {
    let d = dir.display();
    let master = if master_process { "on" } else { "off" };
    format!(
        "daemon off;
master_process {master};
worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}.error.log warn;
events {{ worker_connections 4096; }}
"
    )
}

/// The http-level lines shared by backends and the nginx tier: no access log, temp files in
/// `dir`, client keep-alive that never ends a connection during a run.
fn nginx_http_common(dir: &Path, name: &str) -> String {
    let t = dir.join(name);
    let t = t.display();
    format!(
        "    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {t}.client_body;
    proxy_temp_path {t}.proxy;
    fastcgi_temp_path {t}.fastcgi;
    uwsgi_temp_path {t}.uwsgi;
    scgi_temp_path {t}.scgi;
"
    )
}

fn nginx_command(dir: &Path, name: &str, config: &str) -> Result<Command> {
    let conf = dir.join(format!("{name}.conf"));
    fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join(format!("{name}.error.log")));
    Ok(cmd)
}

/// Starts backend `name` (one nginx process) serving `root` on `port`, pinned to `cpu`.
pub fn start_backend(dir: &Path, name: &str, root: &Path, port: u16, cpu: usize) -> Result<Server> {
    let addr = local(port);
    let config = format!(
        "{preamble}http {{
{common}    sendfile on;
    open_file_cache max=100000 inactive=600s;
    default_type application/octet-stream;
    server {{
        listen {addr};
        root {root};
        location / {{ add_header {BACKEND_HEADER} {name}; }}
    }}
}}
",
        preamble = nginx_preamble(dir, name, false),
        common = nginx_http_common(dir, name),
        root = root.display(),
    );
    start(name, cpu, &nginx_command(dir, name, &config)?, addr, dir)
}

/// The tiers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// nginx: `hash $request_uri consistent` + upstream `keepalive`.
    Nginx,
    /// HAProxy: `balance uri`, `hash-type consistent`, `http-reuse always`.
    Haproxy,
    /// dl7's `l7-sidecar serve --mode central`.
    Dl7,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Nginx => "nginx",
            Tier::Haproxy => "haproxy",
            Tier::Dl7 => "dl7",
        }
    }
}

/// The name the tiers' certificate is issued for (and curl asks for in the HTTPS check).
const TLS_NAME: &str = "bench.dl7";

/// HTTPS on a tier's port: a server certificate every tier serves, and the session-ticket key
/// that dl7 and nginx seal tickets with (HAProxy keeps its own, as by default).
pub struct TlsCert {
    pub key_type: KeyType,
    pub cert: ServerCert,
    /// The certificate, then its key, in one file: HAProxy's `crt`.
    pub combined: PathBuf,
    pub ticket_key: PathBuf,
}

impl TlsCert {
    /// A certificate with a `key_type` key for `bench.dl7` and 127.0.0.1, signed by `ca`, and
    /// a ticket key, all in the CA's directory.
    pub fn issue(ca: &Ca, key_type: KeyType) -> Result<Self> {
        let name = key_type.name();
        let cert = ca.issue(name, &[TLS_NAME], &[Ipv4Addr::LOCALHOST.into()], key_type)?;
        let combined = ca.dir.join(format!("{name}.combined.pem"));
        let pem = [fs::read(&cert.cert)?, fs::read(&cert.key)?].concat();
        fs::write(&combined, pem).with_context(|| format!("writing {}", combined.display()))?;
        Ok(Self {
            key_type,
            cert,
            combined,
            ticket_key: ca.ticket_key(&format!("{name}.ticket"))?,
        })
    }
}

/// What every tier is given: the backends (name, address) and the CPU to run on.
pub struct TierSetup<'a> {
    pub dir: &'a Path,
    pub backends: &'a [(String, SocketAddr)],
    pub cpu: usize,
    /// The sidecar binary and its scheme (dl7 only).
    pub sidecar: Option<&'a Path>,
    pub scheme: &'a str,
}

/// The name of `tier`'s instance: its files and table rows (`nginx`, `nginx-tls-rsa`).
pub fn instance_name(tier: Tier, tls: Option<&TlsCert>) -> String {
    match tls {
        Some(t) => format!("{}-tls-{}", tier.name(), t.key_type.name()),
        None => tier.name().to_owned(),
    }
}

/// Starts `tier` on a free port, serving HTTPS there with `tls`, and waits until it listens.
pub fn start_tier(tier: Tier, setup: &TierSetup, tls: Option<&TlsCert>) -> Result<Server> {
    let ports = free_ports(3)?;
    let addr = local(ports[0]);
    let name = instance_name(tier, tls);
    let cmd = match tier {
        Tier::Nginx => nginx_tier(setup, &name, addr, tls)?,
        Tier::Haproxy => haproxy_tier(setup, &name, addr, tls)?,
        Tier::Dl7 => {
            let sidecar = setup.sidecar.context("the dl7 tier needs the sidecar")?;
            let members: Vec<String> = setup
                .backends
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            // With TLS the plain listener (which the sidecar needs) is on a port of its own.
            let plain = if tls.is_some() { local(ports[2]) } else { addr };
            let mut cmd = Command::new(sidecar);
            cmd.args(["serve", "--mode", "central", "--listen"])
                .arg(plain.to_string())
                .arg("--members")
                .arg(members.join(","))
                .args(["--scheme", setup.scheme, "--threads", "1", "--metrics"])
                .arg(local(ports[1]).to_string())
                .arg("--pool-max-idle")
                .arg(UPSTREAM_KEEPALIVE.to_string());
            if let Some(t) = tls {
                cmd.arg("--listen-tls")
                    .arg(addr.to_string())
                    .arg("--tls-cert")
                    .arg(format!(
                        "{}:{}",
                        t.cert.cert.display(),
                        t.cert.key.display()
                    ))
                    .arg("--tls-ticket-key")
                    .arg(&t.ticket_key);
            }
            cmd
        }
    };
    start(&name, setup.cpu, &cmd, addr, setup.dir)
}

/// nginx's `listen` and, with `tls`, its ssl directives (as nginx's docs: protocols, a shared
/// session cache, tickets with the bench's key).
fn nginx_listen(addr: SocketAddr, tls: Option<&TlsCert>) -> String {
    let Some(t) = tls else {
        return format!("        listen {addr};\n");
    };
    format!(
        "        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        ssl_session_ticket_key {ticket};
",
        cert = t.cert.cert.display(),
        key = t.cert.key.display(),
        ticket = t.ticket_key.display(),
    )
}

fn nginx_tier(
    setup: &TierSetup,
    name: &str,
    addr: SocketAddr,
    tls: Option<&TlsCert>,
) -> Result<Command> {
    let servers: String = setup.backends.iter().fold(String::new(), |mut s, (_, a)| {
        let _ = writeln!(s, "        server {a};");
        s
    });
    let config = format!(
        "{preamble}http {{
{common}    upstream pool {{
        hash $request_uri consistent;
{servers}        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
{listen}        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
        preamble = nginx_preamble(setup.dir, name, true),
        common = nginx_http_common(setup.dir, name),
        listen = nginx_listen(addr, tls),
    );
    nginx_command(setup.dir, name, &config)
}

fn haproxy_tier(
    setup: &TierSetup,
    name: &str,
    addr: SocketAddr,
    tls: Option<&TlsCert>,
) -> Result<Command> {
    let servers: String = setup.backends.iter().fold(String::new(), |mut s, (n, a)| {
        let _ = writeln!(s, "    server {n} {a}");
        s
    });
    // HAProxy's docs: `ssl crt` with the certificate and key in one file; its session cache
    // and ticket keys are its defaults.
    let bind = match tls {
        Some(t) => format!(
            "{addr} ssl crt {} alpn http/1.1 ssl-min-ver TLSv1.2",
            t.combined.display()
        ),
        None => addr.to_string(),
    };
    let config = format!(
        "global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend tier
    bind {bind}
    default_backend pool
backend pool
    balance uri
    hash-type consistent
    http-reuse always
{servers}"
    );
    let conf = setup.dir.join(format!("{name}.cfg"));
    fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-db").arg("-f").arg(conf);
    Ok(cmd)
}

/// One GET over a fresh connection: (status, the backend header, body length).
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Option<String>, usize)> {
    let r = dl7_testbed::http::get(addr, path, "bench.dl7")?;
    let backend = r.field(BACKEND_HEADER).map(str::to_owned);
    Ok((r.status, backend, r.body.len()))
}

/// Fetches `sample` objects twice through `addr`: every answer must be 200 with the object's
/// size, the same object must come from the same backend both times, and every backend must
/// own some of them (so the tier really hashes over all backends).
pub fn check_tier(name: &str, addr: SocketAddr, objects: usize, backends: usize) -> Result<()> {
    let sample = objects.min(200);
    let mut owner: HashMap<usize, String> = HashMap::new();
    for round in 0..2 {
        for i in (0..sample).map(|k| k * objects / sample) {
            let path = object_path(i);
            let (status, backend, len) =
                get(addr, &path).with_context(|| format!("{name}: GET {path}"))?;
            ensure!(status == 200, "{name}: GET {path} answered {status}");
            ensure!(
                len == object_size(i),
                "{name}: GET {path} returned {len} bytes, not {}",
                object_size(i)
            );
            let backend =
                backend.with_context(|| format!("{name}: GET {path} lost {BACKEND_HEADER}"))?;
            if round == 0 {
                owner.insert(i, backend);
            } else if owner.get(&i) != Some(&backend) {
                bail!(
                    "{name}: {path} came from {backend}, then from {:?}",
                    owner.get(&i)
                );
            }
        }
    }
    let used: BTreeSet<&String> = owner.values().collect();
    ensure!(
        used.len() == backends,
        "{name}: {sample} objects came from only {} of {backends} backends ({used:?})",
        used.len()
    );
    Ok(())
}

/// The HTTPS check of a tier that passed [`check_tier`] over plain HTTP: a few objects fetched
/// with curl over TLS 1.2 and over TLS 1.3, the certificate verified against `ca` for the
/// bench's name; every answer 200, the object's size, and a backend's name.
pub fn check_tls_tier(name: &str, addr: SocketAddr, ca: &Ca, objects: usize) -> Result<()> {
    let resolve = format!("{TLS_NAME}:{}:{}", addr.port(), addr.ip());
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        for i in (0..4).map(|k| k * objects / 4) {
            let path = object_path(i);
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-o", "/dev/null", "--cacert"])
                .arg(&ca.cert)
                .args(["--resolve", &resolve])
                .args(version)
                .args([
                    "-w",
                    &format!("%{{http_code}} %{{size_download}} %header{{{BACKEND_HEADER}}}"),
                ])
                .arg(format!("https://{TLS_NAME}:{}{path}", addr.port()));
            let out = crate::cmd::output(&mut curl)
                .with_context(|| format!("{name}: GET {path} with curl {}", version[0]))?;
            // Status, size, then the backend's name (b1, b2, ...).
            let want = format!("200 {} b", object_size(i));
            ensure!(
                out.trim().starts_with(&want),
                "{name}: GET {path} with curl {} answered {:?} (status, size, backend), \
                 not {want}N",
                version[0],
                out.trim()
            );
        }
    }
    Ok(())
}
