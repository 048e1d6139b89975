//! The harness of `l4-ctl daemon`'s namespace tests (tests/daemon_netns.rs): a front with
//! the program loaded and pinned, three reals with an HTTP server each behind a bridge, the
//! daemon as a process, its /metrics parsed and checked against the documented families, and
//! the VIP's traffic as hand-built frames test-run through the pinned program, so that every
//! count is known exactly.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{ConnValue, GlobalCounter};
use l4_ctl::{Balancer, Vip, balancer::flow_key};

use super::frames::{self, TCP_ACK, TCP_SYN};
pub use dl7_testbed::metrics::Metrics;
use dl7_testbed::metrics::{Sample, Value};
use tempfile::TempDir;

use super::netns::{HttpServer, IFACE, IO_TIMEOUT, Netns, in_netns, output_within, require_tools};
use super::{XDP_TX, test_run};

pub const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 2);
pub const REALS: [(&str, Ipv4Addr); 3] = [
    ("real1", Ipv4Addr::new(10, 214, 0, 11)),
    ("real2", Ipv4Addr::new(10, 214, 0, 12)),
    ("real3", Ipv4Addr::new(10, 214, 0, 13)),
];
/// The real whose server the test stops and starts again (an index into `REALS`).
pub const FAILING: usize = 1;
pub const VIP: &str = "10.214.0.100:80/tcp";
pub const PORT: u16 = 80;
/// Where the daemon serves /metrics, inside the front's namespace.
pub const METRICS: &str = "127.0.0.1:9400";
/// The health check: every 200 ms, 2 in a row to change state.
pub const INTERVAL_MS: u32 = 200;
pub const TIMEOUT_MS: u32 = 100;
pub const RISE: u32 = 2;
pub const FALL: u32 = 2;
/// New flows per set of sources.
pub const FLOWS: u32 = 300;
/// Sources whose new-flow real is also asked of `l4-ctl lookup` (one process each).
pub const LOOKUPS: usize = 20;
/// Bound on every wait for the daemon to notice something (a few checks' worth at most).
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Bound on one `l4-ctl` command.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(50);

/// The tools this file runs.
pub const TOOLS: &[(&str, &str, &str)] = &[
    ("ip", "-V", "iproute2"),
    ("sysctl", "--version", "procps"),
    ("nsenter", "--version", "util-linux"),
];

/// Polls `check` every `POLL` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(POLL);
    }
}

/// Writes `text` to file `name` in `dir`; its path.
pub fn write_file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The front's namespace and pin directory; dropping it removes the pins, which detaches the
/// program.
pub struct Front {
    pub ns: String,
    pub pin_dir: PathBuf,
}

impl Front {
    pub fn new(net: &Netns) -> Self {
        let run_id = net.prefix().trim_start_matches("dl7t-");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dl7-test-{run_id}-daemon"));
        let _ = fs::remove_dir_all(&pin_dir);
        Front {
            ns: net.ns("front"),
            pin_dir,
        }
    }

    /// `l4-ctl --pin-dir DIR` in the front's namespace. `nsenter --net`, unlike
    /// `ip netns exec`, keeps the host's /sys and with it /sys/fs/bpf.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_l4-ctl"))
            .arg("--pin-dir")
            .arg(&self.pin_dir);
        cmd
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        output_within(self.command().args(args), CTL_TIMEOUT)
    }

    /// `l4-ctl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "l4-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `real list VIP --json`: address -> (state, weight, table share).
    pub fn reals(&self) -> BTreeMap<Ipv4Addr, (String, u64, f64)> {
        let rows: serde_json::Value =
            serde_json::from_str(&self.ok(&["real", "list", VIP, "--json"])).expect("json");
        rows.as_array()
            .expect("an array of reals")
            .iter()
            .map(|r| {
                (
                    r["address"].as_str().expect("address").parse().unwrap(),
                    (
                        r["state"].as_str().expect("state").to_owned(),
                        r["weight"].as_u64().expect("weight"),
                        r["table_share"].as_f64().expect("table_share"),
                    ),
                )
            })
            .collect()
    }

    /// `lookup VIP --src SRC`.
    pub fn lookup(&self, src: SocketAddr) -> Ipv4Addr {
        let out = self.ok(&["lookup", VIP, "--src", &src.to_string()]);
        out.trim().parse().expect("lookup prints an address")
    }

    /// An HTTP/1.1 request to the daemon's metrics port: the status and the body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        in_netns(&self.ns, || {
            let addr: SocketAddr = METRICS.parse().unwrap();
            let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect to {METRICS}: {e}"));
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: {METRICS}\r\nConnection: close\r\n\r\n"
            )
            .expect("send the request");
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .expect("read the response");
            let (head, body) = response
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
            let status = head
                .strip_prefix("HTTP/1.1 ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("no status line: {head:?}"));
            (status, body.to_owned())
        })
    }

    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.http("GET", "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body).expect("a /metrics page in the text format")
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if self.pin_dir.exists() {
            let _ = fs::remove_dir_all(&self.pin_dir);
        }
    }
}

/// A running `l4-ctl daemon`; dropping it kills it if it still runs.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with its stderr (the log) in `log`.
    pub fn start(front: &Front, config: &Path, log: PathBuf) -> Self {
        Self::start_with(front, config, log, &[])
    }

    /// [`Daemon::start`] with more daemon flags (`--announce`).
    pub fn start_with(front: &Front, config: &Path, log: PathBuf, extra: &[&str]) -> Self {
        let file = File::create(&log).expect("create the daemon's log");
        let child = front
            .command()
            .args(["daemon", "--metrics", METRICS, "--config"])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start l4-ctl daemon");
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the daemon exited ({status}); its log:\n{}", self.log());
        }
    }

    pub fn signal(&mut self, signal: libc::c_int) {
        self.assert_running();
        // SAFETY: kill(2) on our child, which has not been reaped (it is running).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (at most `DEADLINE`) for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for(DEADLINE, "the daemon exits", || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lookups these tests make on a parsed /metrics page (the project's parser,
/// `dl7_testbed::metrics`), failing the test where the page is not as expected.
pub trait Lookup {
    /// The value of the one sample of `name` with `labels`.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64;
    /// The value of `name` for `real` of the test's VIP.
    fn real(&self, name: &str, real: Ipv4Addr) -> f64;
}

impl Lookup for Metrics {
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|e| panic!("/metrics: {e:#}"))
    }

    fn real(&self, name: &str, real: Ipv4Addr) -> f64 {
        self.one(name, &[("vip", VIP), ("real", &real.to_string())])
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The families `l4-ctl/src/metrics.rs` documents, with their types and label names.
pub const FAMILIES: &[(&str, Kind, &[&str])] = &[
    ("dl7_l4_frames_total", Kind::Counter, &["outcome"]),
    ("dl7_l4_events_total", Kind::Counter, &["event"]),
    ("dl7_l4_vip_packets_total", Kind::Counter, &["vip"]),
    ("dl7_l4_vip_bytes_total", Kind::Counter, &["vip"]),
    ("dl7_l4_real_packets_total", Kind::Counter, &["vip", "real"]),
    ("dl7_l4_real_bytes_total", Kind::Counter, &["vip", "real"]),
    ("dl7_l4_real_weight", Kind::Gauge, &["vip", "real"]),
    ("dl7_l4_real_up", Kind::Gauge, &["vip", "real"]),
    ("dl7_l4_real_table_share", Kind::Gauge, &["vip", "real"]),
    ("dl7_l4_vip_active_reals", Kind::Gauge, &["vip"]),
    (
        "dl7_l4_health_checks_total",
        Kind::Counter,
        &["vip", "real", "result"],
    ),
    (
        "dl7_l4_health_transitions_total",
        Kind::Counter,
        &["vip", "real", "to"],
    ),
];
/// Exported only once a real has changed state.
pub const TRANSITIONS: &str = "dl7_l4_health_transitions_total";

/// Checks that every documented family is there (transitions only if `transitioned`), has a
/// HELP text, its type, exactly its label names, and the expected label values.
pub fn check_families(m: &Metrics, transitioned: bool) {
    let reals: Vec<String> = REALS.iter().map(|(_, ip)| ip.to_string()).collect();
    for &(name, kind, labels) in FAMILIES {
        let samples: Vec<&Sample> = m.samples(name, &[]).collect();
        if name == TRANSITIONS && !transitioned {
            assert!(samples.is_empty(), "{name} before any transition");
            continue;
        }
        assert!(!samples.is_empty(), "no {name} in /metrics");
        assert!(m.0.docs.contains_key(name), "{name} has no HELP");
        for s in samples {
            let is_kind = matches!(
                (kind, &s.value),
                (Kind::Counter, Value::Counter(_)) | (Kind::Gauge, Value::Gauge(_))
            );
            assert!(is_kind, "{name} should be a {kind:?}: {s:?}");
            let mut names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            names.sort_unstable();
            let mut want = labels.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "label names of {name}");
            if let Some(vip) = s.labels.get("vip") {
                assert_eq!(vip, VIP, "{name}");
            }
            if let Some(real) = s.labels.get("real") {
                assert!(reals.iter().any(|r| r == real), "{name}: real {real}");
            }
        }
    }
    // Outcomes and events are exactly the program's counters, each in its family.
    for counter in GlobalCounter::ALL {
        let (family, label) = if counter.is_outcome() {
            ("dl7_l4_frames_total", "outcome")
        } else {
            ("dl7_l4_events_total", "event")
        };
        m.one(family, &[(label, counter.name())]);
    }
    assert_eq!(
        m.samples("dl7_l4_frames_total", &[]).count()
            + m.samples("dl7_l4_events_total", &[]).count(),
        GlobalCounter::ALL.len()
    );
}

/// Counters that traffic to the VIP moves, read from one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    pub vip_packets: f64,
    pub vip_bytes: f64,
    /// Per real, in `REALS` order.
    pub real_packets: Vec<f64>,
    pub real_bytes_sum: f64,
    pub tx: f64,
    pub new_flows: f64,
    pub conn_hits: f64,
}

impl Counts {
    pub fn of(m: &Metrics) -> Self {
        Counts {
            vip_packets: m.one("dl7_l4_vip_packets_total", &[("vip", VIP)]),
            vip_bytes: m.one("dl7_l4_vip_bytes_total", &[("vip", VIP)]),
            real_packets: REALS
                .iter()
                .map(|&(_, ip)| m.real("dl7_l4_real_packets_total", ip))
                .collect(),
            real_bytes_sum: m.sum("dl7_l4_real_bytes_total", &[("vip", VIP)]),
            tx: m.one("dl7_l4_frames_total", &[("outcome", "tx")]),
            new_flows: m.one("dl7_l4_events_total", &[("event", "new_flows")]),
            conn_hits: m.one("dl7_l4_events_total", &[("event", "conn_hits")]),
        }
    }
}

/// What the test sent since a scrape: frames, bytes, frames per real, SYNs, non-SYNs.
#[derive(Default)]
pub struct Sent {
    pub frames: u64,
    pub bytes: u64,
    pub per_real: [u64; 3],
    pub syns: u64,
    pub others: u64,
}

/// Checks that the counters moved by exactly what was sent.
pub fn check_counts(before: &Counts, after: &Counts, sent: &Sent) {
    let d = |a: f64, b: f64| (b - a) as u64;
    assert_eq!(
        d(before.vip_packets, after.vip_packets),
        sent.frames,
        "VIP packets"
    );
    assert_eq!(
        d(before.vip_bytes, after.vip_bytes),
        sent.bytes,
        "VIP bytes"
    );
    let real_sum = |c: &Counts| c.real_packets.iter().sum::<f64>();
    assert_eq!(
        d(real_sum(before), real_sum(after)),
        sent.frames,
        "sum of real packets"
    );
    assert_eq!(
        d(before.real_bytes_sum, after.real_bytes_sum),
        sent.bytes,
        "real bytes"
    );
    for (i, (name, _)) in REALS.iter().enumerate() {
        assert_eq!(
            d(before.real_packets[i], after.real_packets[i]),
            sent.per_real[i],
            "packets to {name}"
        );
    }
    assert_eq!(
        d(before.tx, after.tx),
        sent.frames,
        "frames_total{{outcome=tx}}"
    );
    assert_eq!(d(before.new_flows, after.new_flows), sent.syns, "new flows");
    assert_eq!(
        d(before.conn_hits, after.conn_hits),
        sent.others,
        "conn hits"
    );
}

/// The VIP's traffic: frames test-run through the pinned program.
pub struct Traffic {
    pub program: Xdp,
    pub vip: Vip,
    /// The reals' MACs, in `REALS` order.
    pub macs: Vec<[u8; 6]>,
    pub sent: Sent,
}

impl Traffic {
    /// Sends one frame of the flow from `src`; returns the index of the real it went to.
    pub fn send(&mut self, src: SocketAddr, flags: u8) -> usize {
        let frame = frames::tcp_frame(src, self.vip.addr, flags, &[]);
        let (action, out) = test_run(&self.program, &frame);
        assert_eq!(
            action, XDP_TX,
            "a frame from {src} to the VIP must be forwarded"
        );
        let real = self
            .macs
            .iter()
            .position(|mac| out[..6] == mac[..])
            .unwrap_or_else(|| panic!("forwarded to {:02x?}, not a real's MAC", &out[..6]));
        let sent = &mut self.sent;
        sent.frames += 1;
        sent.bytes += frame.len() as u64;
        sent.per_real[real] += 1;
        if flags == TCP_SYN {
            sent.syns += 1;
        } else {
            sent.others += 1;
        }
        real
    }

    /// What was sent since the last call.
    pub fn take_sent(&mut self) -> Sent {
        std::mem::take(&mut self.sent)
    }
}

/// Source `i` of a set of flows (each set its own /16; documentation addresses).
pub fn source(set: u8, i: u32) -> SocketAddr {
    let base = [[198, 51], [203, 0]][usize::from(set)];
    let addr = Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8);
    SocketAddr::from((addr, 20_000 + (i % 40_000) as u16))
}

/// A flow the test placed: its source, its real (index into `REALS`) and its connection-table
/// entry.
pub struct Flow {
    pub src: SocketAddr,
    pub real: usize,
    pub entry: ConnValue,
}

pub fn conn_entry(bal: &Balancer, vip: &Vip, src: SocketAddr) -> ConnValue {
    bal.conn(&flow_key(src, vip))
        .expect("read the connection table")
        .unwrap_or_else(|| panic!("no connection-table entry for {src}"))
}

/// Starts `FLOWS` flows of `set` with a SYN each; checks each entry names the real the frame
/// went to, and `l4-ctl lookup` for the first `LOOKUPS` sources.
pub fn start_flows(
    traffic: &mut Traffic,
    bal: &Balancer,
    front: &Front,
    ids: &[u32],
    set: u8,
) -> Vec<Flow> {
    let vip = traffic.vip;
    let flows: Vec<Flow> = (0..FLOWS)
        .map(|i| {
            let src = source(set, i);
            let real = traffic.send(src, TCP_SYN);
            let entry = conn_entry(bal, &vip, src);
            assert_eq!(entry.real, ids[real], "the entry of {src} names its real");
            Flow { src, real, entry }
        })
        .collect();
    for flow in &flows[..LOOKUPS] {
        assert_eq!(
            front.lookup(flow.src),
            REALS[flow.real].1,
            "`l4-ctl lookup` and the program disagree on {}",
            flow.src
        );
    }
    flows
}

/// Sends an ACK of every flow: each must reach its own real through its unchanged entry.
pub fn check_flows_stay(traffic: &mut Traffic, bal: &Balancer, flows: &[Flow]) {
    let vip = traffic.vip;
    for flow in flows {
        assert_eq!(
            conn_entry(bal, &vip, flow.src),
            flow.entry,
            "the entry of {} changed",
            flow.src
        );
        assert_eq!(
            traffic.send(flow.src, TCP_ACK),
            flow.real,
            "an established flow from {} moved",
            flow.src
        );
    }
}

/// The config file: the VIP with an HTTP check, the reals with `weights`.
pub fn config(weights: [u32; 3], timeout_ms: u32) -> String {
    let mut text = format!(
        "[[vip]]\naddress = \"{VIP}\"\n\n[vip.health]\ncheck = \"http\"\npath = \"/healthz\"\n\
         interval_ms = {INTERVAL_MS}\ntimeout_ms = {timeout_ms}\nrise = {RISE}\nfall = {FALL}\n"
    );
    for ((_, ip), weight) in REALS.iter().zip(weights) {
        text.push_str(&format!(
            "\n[[vip.real]]\naddress = \"{ip}\"\nweight = {weight}\n"
        ));
    }
    text
}

/// Everything one test starts; fields drop in declaration order: the daemon is killed, the
/// pins (and with them the program) removed, the files deleted, the servers stopped, and the
/// namespaces deleted last.
pub struct Bed {
    pub daemon: Option<Daemon>,
    pub front: Front,
    pub files: TempDir,
    pub servers: Vec<Option<HttpServer>>,
    pub net: Netns,
}

impl Bed {
    pub fn new() -> Self {
        require_tools(TOOLS);
        let net = Netns::new();
        Bed {
            daemon: None,
            front: Front::new(&net),
            files: tempfile::Builder::new()
                .prefix(&format!("{}-", net.prefix()))
                .tempdir()
                .expect("create a temp dir"),
            servers: Vec::new(),
            net,
        }
    }

    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon was started")
    }
}

/// Polls `real list` until the failing real is `want` ("down" with no table share, or
/// "active" with one); at every poll the others must be active. Returns how long it took.
///
/// The state and the share come from two maps that `real list` reads without the lock, and
/// a transition writes the real's flag before it publishes the new table, so one reading may
/// show the new state with the old share: the wait is for both.
pub fn wait_failing_real(front: &Front, want: &str) -> Duration {
    let started = Instant::now();
    let failing = REALS[FAILING].1;
    wait_for(DEADLINE, &format!("{failing} is {want}"), || {
        let reals = front.reals();
        for (ip, (state, _, _)) in &reals {
            if *ip != failing {
                assert_eq!(
                    state, "active",
                    "real {ip} while {failing} fails and recovers"
                );
            }
        }
        let (state, _, share) = &reals[&failing];
        (state == want && (*share > 0.0) == (want == "active")).then_some(())
    });
    started.elapsed()
}

/// One daemon test at a time: each runs health checks every 200 ms and asserts on their
/// timing, which several beds at once on two cores would disturb.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bed with the front (program loaded, generic XDP), three reals serving HTTP and the daemon
/// started with `config([1, 1, 1], TIMEOUT_MS)` and answering /healthz.
pub struct Running {
    pub bed: Bed,
    pub config_path: PathBuf,
    /// The reals' addresses, in `REALS` order.
    pub addrs: Vec<Ipv4Addr>,
    /// The reals' MACs, in `REALS` order.
    pub macs: Vec<[u8; 6]>,
}

impl Running {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Running::start`] with more daemon flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut bed = Bed::new();
        bed.net.add_bridge();
        let (front_ns, _) = bed.net.add_host("front", FRONT_IP);
        assert_eq!(front_ns, bed.front.ns);
        let mut macs = Vec::new();
        for (name, ip) in REALS {
            let (ns, mac) = bed.net.add_host(name, ip);
            let server = HttpServer::start(&ns, SocketAddrV4::new(ip, PORT), name);
            bed.servers.push(Some(server));
            macs.push(mac.0);
        }
        bed.front
            .ok(&["load", "--iface", IFACE, "--mode", "generic"]);
        // The daemon applies the file (resolving the reals' MACs) before it serves /metrics.
        let config_path = write_file(&bed.files, "dl7.toml", &config([1, 1, 1], TIMEOUT_MS));
        let log = bed.files.path().join("daemon.log");
        bed.daemon = Some(Daemon::start_with(&bed.front, &config_path, log, extra));
        wait_for(DEADLINE, "the daemon serves /healthz", || {
            bed.daemon().assert_running();
            let up = in_netns(&bed.front.ns, || {
                TcpStream::connect_timeout(&METRICS.parse().unwrap(), IO_TIMEOUT).is_ok()
            });
            up.then_some(())
        });
        let addrs = REALS.iter().map(|(_, ip)| *ip).collect();
        Running {
            bed,
            config_path,
            addrs,
            macs,
        }
    }

    /// Waits until every real has passed a health check; the scrape that showed it.
    pub fn checked(&self) -> Metrics {
        wait_for(DEADLINE, "every real passes a check", || {
            let m = self.bed.front.scrape();
            let ok = |ip: &Ipv4Addr| {
                m.sum(
                    "dl7_l4_health_checks_total",
                    &[("real", &ip.to_string()), ("result", "ok")],
                )
            };
            self.addrs.iter().all(|ip| ok(ip) >= 1.0).then_some(m)
        })
    }

    /// The pinned maps, the reals' ids (in `REALS` order) and the VIP's traffic source.
    pub fn traffic(&self) -> (Balancer, Vec<u32>, Traffic) {
        let front = &self.bed.front;
        let vip: Vip = VIP.parse().unwrap();
        let bal = Balancer::open(&front.pin_dir).expect("open the pinned maps");
        let ids = self
            .addrs
            .iter()
            .map(|&ip| bal.real(&vip, ip.into()).expect("real").id)
            .collect();
        let program = Xdp::from_pin(front.pin_dir.join("prog"), XdpAttachType::Interface)
            .expect("open the pinned program");
        let traffic = Traffic {
            program,
            vip,
            macs: self.macs.clone(),
            sent: Sent::default(),
        };
        (bal, ids, traffic)
    }
}
