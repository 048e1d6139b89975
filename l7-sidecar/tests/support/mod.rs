//! Shared by l7-sidecar's end-to-end tests: sidecar processes that are killed on drop
//! ([`process`]), the project's origin (dl7-traffic's, with its test routes and scripts), a
//! raw HTTP/1.1
//! client that can send anything and checks how connections end ([`client`]), clusters
//! of sidecars in front of one origin, a stand-in for the front's membership endpoint
//! ([`front`]), and a throwaway CA with rustls clients ([`tls`]).
//!
//! Everything listens on loopback addresses `127.0.NET.x`, with `NET` different for every
//! test, so tests running in parallel never share an address; ports come from the kernel.
#![allow(dead_code)]

pub mod client;
pub mod front;
pub mod process;
pub mod tls;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

#[allow(unused_imports, reason = "each test binary uses its share")]
pub use dl7_traffic::origin::{Origin, Step, body};
pub use tempfile::TempDir;

use l7_sidecar::scheme::{self, Member};

use process::Sidecar;

/// A fresh, empty directory for a test's files (`dl7-TAG-...` under the system temp dir),
/// removed when dropped.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dl7-{tag}-"))
        .tempdir()
        .expect("create a temp dir")
}

/// The project's origin (`dl7_traffic::origin`) on `ip`, on a free port.
pub fn start_origin(ip: Ipv4Addr) -> Origin {
    Origin::start(SocketAddr::from((ip, 0))).expect("start the origin")
}

/// `127.0.net.host`.
pub fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

/// `N` currently free, distinct ports on `ip` (the listeners are held until all are chosen,
/// so the kernel cannot hand out one port twice).
pub fn free_addrs<const N: usize>(ip: Ipv4Addr) -> [SocketAddr; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind((ip, 0)).expect("bind a free port"));
    listeners.map(|l| l.local_addr().expect("local addr"))
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

/// A port that is free on every one of `ips` at once (for members reached at
/// `ADDR:members-peer-port`).
pub fn common_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((ips[0], 0)).expect("bind a free port");
        let port = first.local_addr().expect("local addr").port();
        let rest: Result<Vec<TcpListener>, _> = ips[1..]
            .iter()
            .map(|&ip| TcpListener::bind((ip, port)))
            .collect();
        if rest.is_ok() {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// The member (index into `names`) that owns `key` under `scheme`, computed with the
/// library's scheme (what `l7-sidecar route` prints).
pub fn owner(scheme_name: &str, names: &[String], key: &str) -> usize {
    let members: Vec<Member> = names.iter().map(|n| Member::new(n, 1)).collect();
    scheme::build(scheme_name, &members)
        .expect("build scheme")
        .pick(key.as_bytes())
}

/// Every member (index into `names`) in `scheme`'s failover order for `key`, the owner first.
pub fn candidates(scheme_name: &str, names: &[String], key: &str) -> Vec<usize> {
    let members: Vec<Member> = names.iter().map(|n| Member::new(n, 1)).collect();
    let mut order = Vec::new();
    scheme::build(scheme_name, &members)
        .expect("build scheme")
        .candidates(key.as_bytes(), &mut order);
    order
}

/// Checks `done` every 50 ms until it holds (true) or `timeout` has passed (false).
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Cluster::start_each(net, n, temp_dir("cluster"), |_, _| extra.clone())
    }

    /// As [`start`](Self::start), with the more flags of sidecar `i`, whose peer address in
    /// the members is `peer`, given by `extra(i, peer)` (a `--peer-listen` among them
    /// replaces `peer` as the listener; the members still name `peer`), and `dir` (which may
    /// hold files those flags name) as the cluster's directory.
    pub fn start_each(
        net: u8,
        n: usize,
        dir: TempDir,
        extra: impl Fn(usize, SocketAddr) -> Vec<String>,
    ) -> Cluster {
        let origin = start_origin(ip(net, 1));
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let hosts: Vec<Ipv4Addr> = (0..n).map(|i| ip(net, 11 + i as u8)).collect();
        // Peer, client and metrics port of each host.
        let ports: Vec<[SocketAddr; 3]> = hosts.iter().map(|&h| free_addrs(h)).collect();
        let peers: Vec<SocketAddr> = ports.iter().map(|p| p[0]).collect();
        let members: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(name, addr)| format!("{name}={addr}"))
            .collect();
        let members = members.join(",");
        let mut sidecars = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let config = dir.path().join(format!("{name}.toml"));
            write_config(&config, name, &members, &origin.url());
            let [_, listen, metrics] = ports[i];
            let mut args = vec![
                "serve".to_owned(),
                "--config".to_owned(),
                config.display().to_string(),
                "--listen".to_owned(),
                listen.to_string(),
                "--metrics".to_owned(),
                metrics.to_string(),
                "--threads".to_owned(),
                "2".to_owned(),
            ];
            let more = extra(i, peers[i]);
            if !more.iter().any(|a| a == "--peer-listen") {
                args.extend(["--peer-listen".to_owned(), peers[i].to_string()]);
            }
            args.extend(more);
            sidecars.push(Sidecar::start(
                &args,
                listen,
                Some(peers[i]),
                metrics,
                dir.path().join(format!("{name}.log")),
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
        owner(&self.scheme, &self.names, key)
    }

    /// The first of the keys `key(0)`, `key(1)`, .. that member `owner` owns.
    pub fn owned_key(&self, owner: usize, key: impl Fn(usize) -> String) -> String {
        (0..10_000)
            .map(key)
            .find(|k| self.owner(k) == owner)
            .expect("a key the member owns")
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
    let [listen, metrics] = free_addrs(ip(net, 11));
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
    Sidecar::start(&args, listen, None, metrics, dir.path().join("central.log"))
}

/// Writes a sidecar's TOML file (the membership and the origin; the rest are flags). The
/// relay cache (on by default) is off here, so that a test counts what the owners answer;
/// `--relay-cache-bytes N` turns it on (flags override the file), as serve_relay does.
pub fn write_config(path: &Path, name: &str, members: &str, origin: &str) {
    fs::write(
        path,
        format!(
            "self = \"{name}\"\nmembers = \"{members}\"\nscheme = \"ketama\"\norigin = \"{origin}\"\n\
             relay-cache-bytes = 0\n"
        ),
    )
    .expect("write config");
}

/// A steady GET load: `threads` clients, client `t` on `entries[t % len]`, each sending up
/// to `per_client` GETs of `/obj/{tag}{k}?size={size}` over one keep-alive connection
/// (reconnecting after an error), counting the answers that were not 200 with `size` bytes.
pub struct SteadyLoad {
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SteadyLoad {
    pub fn start(
        entries: &[SocketAddr],
        threads: usize,
        per_client: usize,
        tag: &str,
        size: usize,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
                let entry = entries[t % entries.len()];
                let tag = tag.to_owned();
                std::thread::spawn(move || {
                    let mut client = client::Client::connect(entry);
                    for i in 0..per_client {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let target = format!("/obj/{tag}{}?size={size}", (i * 7 + t) % 300);
                        let ok = match client.try_get(&target) {
                            Ok(r) => r.status == 200 && r.body.len() == size,
                            Err(_) => {
                                client = client::Client::connect(entry);
                                false
                            }
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        SteadyLoad {
            done,
            failed,
            stop,
            threads,
        }
    }

    /// GETs answered or failed so far.
    pub fn done(&self) -> usize {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for every client to send its GETs; (GETs, failed ones).
    pub fn finish(self) -> (usize, usize) {
        for th in self.threads {
            th.join().expect("load thread");
        }
        let ordering = std::sync::atomic::Ordering::Relaxed;
        (self.done.load(ordering), self.failed.load(ordering))
    }

    /// Stops the clients after their current GET; (GETs, failed ones).
    pub fn stop(self) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.finish()
    }
}
