//! `l4-ctl daemon` on a namespace testbed, as separate processes the way an operator runs it:
//! health checks drain a real whose server stops and restore it when it is back, without
//! moving any established flow; `/metrics` has the documented families and labels, and its
//! counters follow the traffic; SIGHUP re-applies `--config` (and keeps the running one when
//! the file is invalid); SIGTERM stops the daemon with status 0 and leaves the program and its
//! maps; an invalid `--config` stops the start with one line that names the field. Needs root,
//! `ip`, `sysctl` and `nsenter`.
//!
//! ```text
//!   front ──┐     l4-ctl load (generic XDP on eth0), l4-ctl daemon --config --metrics
//!   real1 ──┼── br0 (own namespace)
//!   real2 ──┤     an HTTP server on REAL:80 in each: what the health checks probe
//!   real3 ──┘
//! ```
//!
//! The VIP's traffic is hand-built frames run through the pinned program with
//! BPF_PROG_TEST_RUN: they update the same connection table and counters as frames from the
//! wire, and the test knows exactly how many it sent and which real each went to.

mod support;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{ConnValue, GlobalCounter};
use l4_ctl::{
    Balancer, Vip,
    balancer::flow_key,
    frames::{self, TCP_ACK, TCP_SYN},
};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use support::{
    XDP_TX,
    netns::{HttpServer, IFACE, IO_TIMEOUT, Netns, in_netns, output_within, require_tools, run},
    test_run,
};

const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 2);
const REALS: [(&str, Ipv4Addr); 3] = [
    ("real1", Ipv4Addr::new(10, 214, 0, 11)),
    ("real2", Ipv4Addr::new(10, 214, 0, 12)),
    ("real3", Ipv4Addr::new(10, 214, 0, 13)),
];
/// The real whose server the test stops and starts again (an index into `REALS`).
const FAILING: usize = 1;
const VIP: &str = "10.214.0.100:80/tcp";
const PORT: u16 = 80;
/// Where the daemon serves /metrics, inside the front's namespace.
const METRICS: &str = "127.0.0.1:9400";
/// The health check: every 200 ms, 2 in a row to change state.
const INTERVAL_MS: u32 = 200;
const TIMEOUT_MS: u32 = 100;
const RISE: u32 = 2;
const FALL: u32 = 2;
/// New flows per set of sources.
const FLOWS: u32 = 300;
/// Sources whose new-flow real is also asked of `l4-ctl lookup` (one process each).
const LOOKUPS: usize = 20;
/// Bound on every wait for the daemon to notice something (a few checks' worth at most).
const DEADLINE: Duration = Duration::from_secs(5);
/// Bound on one `l4-ctl` command.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// The tools this file runs.
const TOOLS: &[(&str, &str, &str)] = &[
    ("ip", "-V", "iproute2"),
    ("sysctl", "--version", "procps"),
    ("nsenter", "--version", "util-linux"),
];

/// Polls `check` every `POLL` until it returns `Some`, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(POLL);
    }
}

/// A directory for the test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The front's namespace and pin directory; dropping it removes the pins, which detaches the
/// program.
struct Front {
    ns: String,
    pin_dir: PathBuf,
}

impl Front {
    fn new(net: &Netns) -> Self {
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
    fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_l4-ctl"))
            .arg("--pin-dir")
            .arg(&self.pin_dir);
        cmd
    }

    fn ctl(&self, args: &[&str]) -> Output {
        output_within(self.command().args(args), CTL_TIMEOUT)
    }

    /// `l4-ctl ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "l4-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `real list VIP --json`: address -> (state, weight, table share).
    fn reals(&self) -> BTreeMap<Ipv4Addr, (String, u64, f64)> {
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
    fn lookup(&self, src: SocketAddr) -> Ipv4Addr {
        let out = self.ok(&["lookup", VIP, "--src", &src.to_string()]);
        out.trim().parse().expect("lookup prints an address")
    }

    /// An HTTP/1.1 request to the daemon's metrics port: the status and the body.
    fn http(&self, method: &str, path: &str) -> (u16, String) {
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

    fn scrape(&self) -> Metrics {
        let (status, body) = self.http("GET", "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
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
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with its stderr (the log) in `log`.
    fn start(front: &Front, config: &Path, log: PathBuf) -> Self {
        let file = File::create(&log).expect("create the daemon's log");
        let child = front
            .command()
            .args(["daemon", "--metrics", METRICS, "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start l4-ctl daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the daemon has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the daemon exited ({status}); its log:\n{}", self.log());
        }
    }

    fn signal(&mut self, signal: libc::c_int) {
        self.assert_running();
        // SAFETY: kill(2) on our child, which has not been reaped (it is running).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (at most `DEADLINE`) for the daemon to exit.
    fn wait_exit(&mut self) -> ExitStatus {
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

/// One parsed /metrics page.
struct Metrics(Scrape);

impl Metrics {
    fn parse(text: &str) -> Self {
        for line in text.lines() {
            assert!(
                LineInfo::parse(line) != LineInfo::Ignored,
                "a line of /metrics that is not in the text format: {line:?}"
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
        Metrics(scrape)
    }

    /// The samples of `name` whose labels include `labels`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.samples(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "samples of {name} with {labels:?}: {found:?}"
        );
        value(found[0])
    }

    /// The sum of the samples of `name` with `labels` (0 when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(value).sum()
    }

    fn real(&self, name: &str, real: Ipv4Addr) -> f64 {
        self.get(name, &[("vip", VIP), ("real", &real.to_string())])
    }
}

fn value(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{}: not a number: {other:?}", sample.metric),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// The families `l4-ctl/src/metrics.rs` documents, with their types and label names.
const FAMILIES: &[(&str, Kind, &[&str])] = &[
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
const TRANSITIONS: &str = "dl7_l4_health_transitions_total";

/// Checks that every documented family is there (transitions only if `transitioned`), has a
/// HELP text, its type, exactly its label names, and the expected label values.
fn check_families(m: &Metrics, transitioned: bool) {
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
        m.get(family, &[(label, counter.name())]);
    }
    assert_eq!(
        m.samples("dl7_l4_frames_total", &[]).count()
            + m.samples("dl7_l4_events_total", &[]).count(),
        GlobalCounter::ALL.len()
    );
}

/// Counters that traffic to the VIP moves, read from one scrape.
#[derive(Clone, Debug, PartialEq)]
struct Counts {
    vip_packets: f64,
    vip_bytes: f64,
    /// Per real, in `REALS` order.
    real_packets: Vec<f64>,
    real_bytes_sum: f64,
    tx: f64,
    new_flows: f64,
    conn_hits: f64,
}

impl Counts {
    fn of(m: &Metrics) -> Self {
        Counts {
            vip_packets: m.get("dl7_l4_vip_packets_total", &[("vip", VIP)]),
            vip_bytes: m.get("dl7_l4_vip_bytes_total", &[("vip", VIP)]),
            real_packets: REALS
                .iter()
                .map(|&(_, ip)| m.real("dl7_l4_real_packets_total", ip))
                .collect(),
            real_bytes_sum: m.sum("dl7_l4_real_bytes_total", &[("vip", VIP)]),
            tx: m.get("dl7_l4_frames_total", &[("outcome", "tx")]),
            new_flows: m.get("dl7_l4_events_total", &[("event", "new_flows")]),
            conn_hits: m.get("dl7_l4_events_total", &[("event", "conn_hits")]),
        }
    }
}

/// What the test sent since a scrape: frames, bytes, frames per real, SYNs, non-SYNs.
#[derive(Default)]
struct Sent {
    frames: u64,
    bytes: u64,
    per_real: [u64; 3],
    syns: u64,
    others: u64,
}

/// Checks that the counters moved by exactly what was sent.
fn check_counts(before: &Counts, after: &Counts, sent: &Sent) {
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
struct Traffic {
    program: Xdp,
    vip: Vip,
    /// The reals' MACs, in `REALS` order.
    macs: Vec<[u8; 6]>,
    sent: Sent,
}

impl Traffic {
    /// Sends one frame of the flow from `src`; returns the index of the real it went to.
    fn send(&mut self, src: SocketAddr, flags: u8) -> usize {
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
    fn take_sent(&mut self) -> Sent {
        std::mem::take(&mut self.sent)
    }
}

/// Source `i` of a set of flows (each set its own /16; documentation addresses).
fn source(set: u8, i: u32) -> SocketAddr {
    let base = [[198, 51], [203, 0]][usize::from(set)];
    let addr = Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8);
    SocketAddr::from((addr, 20_000 + (i % 40_000) as u16))
}

/// A flow the test placed: its source, its real (index into `REALS`) and its connection-table
/// entry.
struct Flow {
    src: SocketAddr,
    real: usize,
    entry: ConnValue,
}

fn conn_entry(bal: &Balancer, vip: &Vip, src: SocketAddr) -> ConnValue {
    bal.conn(&flow_key(src, vip))
        .expect("read the connection table")
        .unwrap_or_else(|| panic!("no connection-table entry for {src}"))
}

/// Starts `FLOWS` flows of `set` with a SYN each; checks each entry names the real the frame
/// went to, and `l4-ctl lookup` for the first `LOOKUPS` sources.
fn start_flows(
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
fn check_flows_stay(traffic: &mut Traffic, bal: &Balancer, flows: &[Flow]) {
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
fn config(weights: [u32; 3], timeout_ms: u32) -> String {
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
struct Bed {
    daemon: Option<Daemon>,
    front: Front,
    files: TempDir,
    servers: Vec<Option<HttpServer>>,
    net: Netns,
}

impl Bed {
    fn new() -> Self {
        require_tools(TOOLS);
        let net = Netns::new();
        Bed {
            daemon: None,
            front: Front::new(&net),
            files: TempDir::new(net.prefix()),
            servers: Vec::new(),
            net,
        }
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon was started")
    }
}

/// Polls `real list` until the failing real is `want` ("down" with no table share, or
/// "active" with one); at every poll the others must be active. Returns how long it took.
///
/// The state and the share come from two maps that `real list` reads without the lock, and
/// a transition writes the real's flag before it publishes the new table, so one reading may
/// show the new state with the old share: the wait is for both.
fn wait_failing_real(front: &Front, want: &str) -> Duration {
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

#[test]
fn health_checks_drain_and_restore_a_real_while_metrics_follow() {
    let started = Instant::now();
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
    let config_path = bed.files.write("dl7.toml", &config([1, 1, 1], TIMEOUT_MS));
    let log = bed.files.0.join("daemon.log");
    bed.daemon = Some(Daemon::start(&bed.front, &config_path, log));
    wait_for(DEADLINE, "the daemon serves /healthz", || {
        bed.daemon().assert_running();
        let up = in_netns(&bed.front.ns, || {
            TcpStream::connect_timeout(&METRICS.parse().unwrap(), IO_TIMEOUT).is_ok()
        });
        up.then_some(())
    });
    let front = &bed.front;
    assert_eq!(front.http("GET", "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(front.http("GET", "/nothing-here").0, 404);
    assert_eq!(front.http("POST", "/metrics").0, 405);
    assert_eq!(front.http("GET", "/metrics?name=x").0, 200);

    let reals = front.reals();
    let addrs: Vec<Ipv4Addr> = REALS.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(reals.keys().copied().collect::<Vec<_>>(), addrs);
    for (ip, (state, weight, _)) in &reals {
        assert_eq!(
            (state.as_str(), *weight),
            ("active", 1),
            "real {ip} after the config"
        );
    }
    // Every real has passed a check: the probes run.
    let m0 = wait_for(DEADLINE, "every real passes a check", || {
        let m = front.scrape();
        let ok = |ip: &Ipv4Addr| {
            m.sum(
                "dl7_l4_health_checks_total",
                &[("real", &ip.to_string()), ("result", "ok")],
            )
        };
        addrs.iter().all(|ip| ok(ip) >= 1.0).then_some(m)
    });
    check_families(&m0, false);
    for &ip in &addrs {
        assert_eq!(m0.real("dl7_l4_real_up", ip), 1.0);
        assert_eq!(m0.real("dl7_l4_real_weight", ip), 1.0);
    }
    assert_eq!(m0.get("dl7_l4_vip_active_reals", &[("vip", VIP)]), 3.0);
    let share_sum = m0.sum("dl7_l4_real_table_share", &[("vip", VIP)]);
    assert!(
        (share_sum - 1.0).abs() < 1e-9,
        "table shares sum to {share_sum}"
    );
    assert_eq!(m0.get("dl7_l4_vip_packets_total", &[("vip", VIP)]), 0.0);
    assert!(
        m0.get("dl7_l4_frames_total", &[("outcome", "pass_not_vip")]) > 0.0,
        "the checks' answers reach the front through the program, which passes them"
    );

    // Flows of set 0, started while every real is up.
    let vip: Vip = VIP.parse().unwrap();
    let bal = Balancer::open(&front.pin_dir).expect("open the pinned maps");
    let ids: Vec<u32> = addrs
        .iter()
        .map(|&ip| bal.real(&vip, ip.into()).expect("real").id)
        .collect();
    let program = Xdp::from_pin(front.pin_dir.join("prog"), XdpAttachType::Interface)
        .expect("open the pinned program");
    let mut traffic = Traffic {
        program,
        vip,
        macs,
        sent: Sent::default(),
    };
    let mut counts = Counts::of(&m0);
    let set0 = start_flows(&mut traffic, &bal, front, &ids, 0);
    for (i, (name, _)) in REALS.iter().enumerate() {
        assert!(
            set0.iter().filter(|f| f.real == i).count() > FLOWS as usize / 6,
            "{name} got few of the first flows"
        );
    }
    let m1 = front.scrape();
    check_counts(&counts, &Counts::of(&m1), &traffic.take_sent());
    counts = Counts::of(&m1);

    // The failing real's server stops: after `fall` failed checks it is down and drained.
    let failing = addrs[FAILING];
    let server = bed.servers[FAILING].take().expect("running");
    server.stop().expect("the failing real's server");
    let took = wait_failing_real(front, "down");
    println!("{failing} down {took:?} after its server stopped (fall {FALL} x {INTERVAL_MS} ms)");
    let reals = front.reals();
    assert_eq!(reals[&failing].1, 1, "a real that is down keeps its weight");
    assert_eq!(
        reals[&failing].2, 0.0,
        "a real that is down has no table share"
    );
    let share_sum: f64 = reals.values().map(|r| r.2).sum();
    assert!(
        (share_sum - 1.0).abs() < 1e-9,
        "table shares sum to {share_sum}"
    );

    let m2 = front.scrape();
    check_families(&m2, true);
    for &ip in &addrs {
        let want = if ip == failing { 0.0 } else { 1.0 };
        assert_eq!(m2.real("dl7_l4_real_up", ip), want, "real_up of {ip}");
    }
    assert_eq!(m2.get("dl7_l4_vip_active_reals", &[("vip", VIP)]), 2.0);
    assert_eq!(m2.real("dl7_l4_real_table_share", failing), 0.0);
    assert_eq!(m2.real("dl7_l4_real_weight", failing), 1.0);
    let failing_s = failing.to_string();
    let transitions =
        |m: &Metrics, to: &str| m.get(TRANSITIONS, &[("real", failing_s.as_str()), ("to", to)]);
    assert_eq!(transitions(&m2, "down"), 1.0);
    assert_eq!(
        m2.samples(TRANSITIONS, &[]).count(),
        1,
        "only one transition so far"
    );
    assert!(
        m2.get(
            "dl7_l4_health_checks_total",
            &[("real", &failing_s), ("result", "fail")]
        ) >= f64::from(FALL)
    );

    // While it is down: every established flow keeps its real (the failing one's too), new
    // flows avoid it.
    check_flows_stay(&mut traffic, &bal, &set0);
    let set1 = start_flows(&mut traffic, &bal, front, &ids, 1);
    assert!(
        set1.iter().all(|f| f.real != FAILING),
        "a new flow went to a real that is down"
    );
    let m3 = front.scrape();
    check_counts(&counts, &Counts::of(&m3), &traffic.take_sent());
    counts = Counts::of(&m3);

    // Its server is back: after `rise` good checks it is restored.
    let (name, _) = REALS[FAILING];
    bed.servers[FAILING] = Some(HttpServer::start(
        &bed.net.ns(name),
        SocketAddrV4::new(failing, PORT),
        name,
    ));
    let front = &bed.front;
    let took = wait_failing_real(front, "active");
    println!("{failing} restored {took:?} after its server came back (rise {RISE})");
    assert!(
        front.reals()[&failing].2 > 0.0,
        "a restored real gets new flows"
    );
    check_flows_stay(&mut traffic, &bal, &set0);
    check_flows_stay(&mut traffic, &bal, &set1);
    let m4 = front.scrape();
    check_counts(&counts, &Counts::of(&m4), &traffic.take_sent());
    check_families(&m4, true);
    assert_eq!(transitions(&m4, "down"), 1.0);
    assert_eq!(transitions(&m4, "up"), 1.0);
    assert_eq!(
        m4.samples(TRANSITIONS, &[]).count(),
        2,
        "transitions: {:?}",
        m4.0.samples
    );
    for &ip in &addrs {
        assert_eq!(m4.real("dl7_l4_real_up", ip), 1.0, "real_up of {ip}");
    }
    assert_eq!(m4.get("dl7_l4_vip_active_reals", &[("vip", VIP)]), 3.0);

    // One log line per transition, naming the real and the VIP.
    let log = bed.daemon().log();
    for (event, detail) in [
        ("down", format!("{FALL} failed checks")),
        ("up", format!("{RISE} good checks")),
    ] {
        let pattern = format!("is {event} after");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&pattern)).collect();
        assert_eq!(lines.len(), 1, "\"{pattern}\" lines in the log:\n{log}");
        let want = format!("real {failing} of {VIP} {pattern} {detail}");
        assert!(lines[0].contains(&want), "{} lacks {want:?}", lines[0]);
    }

    // SIGHUP re-applies the file; an invalid file is logged and the running config kept.
    fs::write(&config_path, config([1, 1, 3], TIMEOUT_MS)).expect("rewrite the config");
    bed.daemon().signal(libc::SIGHUP);
    let third = addrs[2];
    let front = &bed.front;
    wait_for(DEADLINE, "SIGHUP applies the new weight", || {
        (front.reals()[&third].1 == 3).then_some(())
    });
    fs::write(&config_path, config([1, 1, 1], INTERVAL_MS + 1)).expect("rewrite the config");
    bed.daemon().signal(libc::SIGHUP);
    let daemon = bed.daemon.as_mut().expect("started");
    let line = wait_for(DEADLINE, "SIGHUP logs the invalid file", || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("SIGHUP:"))
            .map(str::to_owned)
    });
    assert!(
        line.contains("vip[1].health.timeout_ms") && line.contains("keeping the running"),
        "{line}"
    );
    daemon.assert_running();
    let front = &bed.front;
    assert_eq!(
        front.reals()[&third].1,
        3,
        "the invalid file changed a weight"
    );
    assert_eq!(front.http("GET", "/healthz").0, 200);

    // SIGTERM: status 0, and the program and every flow stay.
    let daemon = bed.daemon.as_mut().expect("started");
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "SIGTERM: {status}; log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("stopping"), "{}", daemon.log());
    let front = &bed.front;
    let state: serde_json::Value =
        serde_json::from_str(&front.ok(&["status", "--json"])).expect("json");
    assert_eq!(state["iface"], IFACE, "{state}");
    assert_eq!(state["flows"], 2 * FLOWS, "{state}");
    check_flows_stay(&mut traffic, &bal, &set0);
    check_flows_stay(&mut traffic, &bal, &set1);

    drop((traffic, bal));
    front.ok(&["unload"]);
    assert!(
        !front.pin_dir.exists(),
        "unload left {}",
        front.pin_dir.display()
    );
    println!("daemon test: {:?}", started.elapsed());
}

#[test]
fn an_invalid_config_stops_the_start_with_one_line_naming_the_field() {
    let mut bed = Bed::new();
    let ns = bed.net.add_ns("front");
    run(&format!(
        "ip -n {ns} link add {IFACE} type veth peer name peer0"
    ));
    run(&format!("ip -n {ns} link set {IFACE} up"));
    bed.front
        .ok(&["load", "--iface", IFACE, "--mode", "generic"]);
    let bad = bed
        .files
        .write("bad.toml", &config([1, 1, 1], INTERVAL_MS + 1));
    let out = output_within(
        bed.front
            .command()
            .args(["daemon", "--metrics", METRICS, "--config"])
            .arg(&bad),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(
        stderr.starts_with("error: vip[1].health.timeout_ms: "),
        "{stderr:?}"
    );
    // Nothing was applied.
    assert_eq!(bed.front.ok(&["vip", "list", "--json"]).trim(), "[]");
}
