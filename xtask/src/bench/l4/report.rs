//! The bench's report: each front's row (req/s, latency, the front's CPU per request and per
//! packet), the sanity run, the target verdicts, and the text table.

use std::fmt::Write as _;

use serde::Serialize;

use anyhow::Result;
use dl7_traffic::load::LoadReport;

use crate::bench::opts::{BenchOpts, Uses};

use super::client::Workload;
use super::cpu_time::{self, Interval};
use super::fronts::Front;
use super::placement::{FRONT_CPU, REST_CPU};

/// Run lengths, from the flags.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lengths {
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The priming run that fills the caches: longer than any later run, so that no later run
    /// asks for an object the caches have not seen.
    pub prime_s: f64,
    /// How long CPU 1 is watched with no load before each measured run: /proc/stat counts
    /// idle time in 10 ms units, so 3 s put the background rate within 0.3 %.
    pub background_s: f64,
    /// How long the bench waits for a quiet CPU 1 before a measured run, at most.
    pub quiet_wait_s: f64,
    /// Measured runs per front, at most: a disturbed run is measured again.
    pub attempts: usize,
}

impl Lengths {
    pub fn of(opts: &BenchOpts) -> Result<Self> {
        opts.check(
            "l4",
            Uses {
                duration: true,
                warmup: true,
                concurrency: true,
            },
        )?;
        let duration_s = opts.duration_s(10.0, 1.0);
        let warmup_s = opts.warmup_s(2.0, 0.5);
        Ok(Self {
            duration_s,
            warmup_s,
            prime_s: duration_s + warmup_s,
            background_s: opts.pick(3.0, 0.5),
            // A smoke test does not wait for figures that nobody reads.
            quiet_wait_s: opts.pick(30.0, 5.0),
            attempts: opts.pick(3, 1),
        })
    }
}

/// The targets: XDP's CPU per request over nftables DNAT's (jhash) and over HAProxy's.
const TARGET_VS_NFT: f64 = 0.2;
const TARGET_VS_HAPROXY: f64 = 0.05;

/// One measured run: the load's figures and the CPUs around it.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub load: LoadReport,
    pub run: Interval,
    /// CPU 1 with no load, just before.
    pub background: Interval,
    /// Packets the front's eth0 received during the run.
    pub rx_packets: u64,
    /// Which measured run of this front it is (earlier ones were disturbed).
    pub attempt: usize,
}

impl Measurement {
    pub fn front_cpu_s(&self) -> f64 {
        cpu_time::front_cpu_s(&self.run, &self.background, FRONT_CPU)
    }
}

/// One front's row.
#[derive(Debug, Serialize)]
pub struct Row {
    pub front: Front,
    pub req_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mbit_per_s: f64,
    pub requests: u64,
    pub failed: u64,
    /// CPU 1's busy time above its background, per answered request.
    pub front_cpu_us_per_req: Option<f64>,
    /// That over the XDP front's.
    pub x_xdp: Option<f64>,
    /// The exact runtime of the front's own threads per answered request (a lower bound: it
    /// leaves out interrupts and softirqs that ran while CPU 1 was otherwise idle).
    pub front_threads_us_per_req: Option<f64>,
    pub rx_packets_per_req: Option<f64>,
    pub front_cpu_us_per_packet: Option<f64>,
    pub cpu1_busy: f64,
    pub cpu1_background: f64,
    pub cpu0_busy: f64,
    /// Something outside the bench took CPU time during the run or its background (see
    /// `Interval::disturbance`).
    pub disturbed: bool,
    pub measurement: Measurement,
}

impl Row {
    pub fn new(front: Front, m: Measurement) -> Self {
        let ok = m.load.ok;
        let front_cpu_s = m.front_cpu_s();
        Self {
            front,
            req_per_s: m.load.req_per_s,
            p50_ms: m.load.latency_us.p50 as f64 / 1e3,
            p99_ms: m.load.latency_us.p99 as f64 / 1e3,
            mbit_per_s: m.load.mbit_per_s,
            requests: m.load.requests,
            failed: m.load.error_total,
            front_cpu_us_per_req: cpu_time::per_request_us(front_cpu_s, ok),
            x_xdp: None,
            front_threads_us_per_req: cpu_time::per_request_us(m.run.front_threads_s, ok),
            rx_packets_per_req: (ok > 0).then(|| m.rx_packets as f64 / ok as f64),
            front_cpu_us_per_packet: cpu_time::per_request_us(front_cpu_s, m.rx_packets),
            cpu1_busy: m.run.busy_share(FRONT_CPU),
            cpu1_background: m.background.busy_share(FRONT_CPU),
            cpu0_busy: m.run.busy_share(REST_CPU),
            disturbed: m.run.disturbance(FRONT_CPU).is_some()
                || m.background.disturbance(FRONT_CPU).is_some(),
            measurement: m,
        }
    }
}

/// The load sent straight to one server: CPU 1 should stay at its background.
#[derive(Debug, Serialize)]
pub struct Sanity {
    pub target: String,
    pub req_per_s: f64,
    pub cpu1_busy: f64,
    pub cpu1_background: f64,
    /// CPU 1's busy time above its background, per answered request (about zero when the
    /// front's CPU is isolated).
    pub cpu1_us_per_req: Option<f64>,
    pub measurement: Measurement,
}

/// A target: the XDP front's CPU per request over another front's.
#[derive(Debug, Serialize)]
pub struct Target {
    pub versus: Front,
    pub ratio: f64,
    pub at_most: f64,
    pub met: bool,
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub servers: u16,
    pub workload: Workload,
    pub client_addrs: usize,
    pub lengths: Lengths,
    pub front_cpu: usize,
    pub load_cpu: usize,
    pub sanity: Sanity,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
}

/// The XDP front's CPU per request over nftables jhash's and HAProxy's, where both measured.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let cpu = |front: Front| {
        rows.iter()
            .find(|r| r.front == front)
            .and_then(|r| r.front_cpu_us_per_req)
    };
    let Some(xdp) = cpu(Front::Xdp) else {
        return Vec::new();
    };
    [
        (Front::NftJhash, TARGET_VS_NFT),
        (Front::HaproxyTcp, TARGET_VS_HAPROXY),
    ]
    .into_iter()
    .filter_map(|(versus, at_most)| {
        let other = cpu(versus).filter(|c| *c > 0.0)?;
        let ratio = xdp / other;
        Some(Target {
            versus,
            ratio,
            at_most,
            met: ratio <= at_most,
        })
    })
    .collect()
}

/// An optional figure with `decimals` decimals, or "-".
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The report as a text table, with the target verdicts.
pub fn table(r: &Report) -> String {
    let l = &r.lengths;
    let w = &r.workload;
    let mut out = format!(
        "L4 front: {} servers; SURGE-like load ({} objects, Zipf {}, <= {} KiB, seed {}), {} \
         keep-alive connections from {} client addresses; per front {} s warm-up, {} s idle \
         background, {} s measured; front on CPU {}, everything else on CPU {}\n",
        r.servers,
        w.objects,
        w.alpha,
        w.max_size >> 10,
        w.seed,
        w.concurrency,
        r.client_addrs,
        l.warmup_s,
        l.background_s,
        l.duration_s,
        r.front_cpu,
        r.load_cpu
    );
    out.push_str(
        "front          req/s  p50 ms  p99 ms  Mbit/s  failed  CPU us/req  x XDP  threads us/req  \
         pkts/req  CPU us/pkt  CPU1 busy  CPU0 busy\n",
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "{:<12} {:>7.0} {:>7.2} {:>7.2} {:>7.0} {:>7} {:>11} {:>6} {:>15} {:>9} {:>11} {:>9.1}% {:>9.1}%{}",
            row.front.name(),
            row.req_per_s,
            row.p50_ms,
            row.p99_ms,
            row.mbit_per_s,
            row.failed,
            opt(row.front_cpu_us_per_req, 2),
            opt(row.x_xdp, 2),
            opt(row.front_threads_us_per_req, 2),
            opt(row.rx_packets_per_req, 1),
            opt(row.front_cpu_us_per_packet, 2),
            row.cpu1_busy * 100.0,
            row.cpu0_busy * 100.0,
            if row.disturbed { "  (disturbed)" } else { "" }
        );
    }
    let background: Vec<String> = r
        .rows
        .iter()
        .map(|x| format!("{} {:.1} %", x.front.name(), x.cpu1_background * 100.0))
        .collect();
    let _ = writeln!(
        out,
        "CPU 1 idle background (subtracted): {}",
        background.join(", ")
    );
    let s = &r.sanity;
    let _ = writeln!(
        out,
        "sanity, no front (load straight to {}): {:.0} req/s, CPU 1 busy {:.1} % against {:.1} % \
         idle background ({} us/req above it)",
        s.target,
        s.req_per_s,
        s.cpu1_busy * 100.0,
        s.cpu1_background * 100.0,
        opt(s.cpu1_us_per_req, 2)
    );
    if r.rows.iter().any(|x| x.disturbed) {
        let _ = writeln!(
            out,
            "note: in the runs marked disturbed, threads outside the bench that may run on CPU 1, \
             or the hypervisor, took more than {:.0} % of a CPU (or the VM stalled): those CPU \
             figures are not clean (see the machine's load)",
            cpu_time::DISTURBED * 100.0
        );
    }
    for t in &r.targets {
        let _ = writeln!(
            out,
            "target: XDP front CPU per request = {:.3}x {} (target <= {}x): {}",
            t.ratio,
            t.versus.name(),
            t.at_most,
            if t.met { "met" } else { "missed" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::client::{Workload, example_report};
    use super::super::cpu_time::Interval;
    use super::super::fronts::Front;
    use super::Lengths;
    use super::{Measurement, Report, Row, Sanity, table, targets};

    /// A 6 s run with `ok` answers during which CPU 1 was busy `cpu1_s`, after a 1 s background
    /// with CPU 1 busy 2 %.
    fn measurement(ok: u64, cpu1_s: f64, rx_packets: u64) -> Measurement {
        Measurement {
            load: example_report(ok, 0),
            run: Interval {
                wall_s: 6.0,
                busy_s: [5.4, cpu1_s],
                front_threads_s: cpu1_s / 2.0,
                ..Interval::default()
            },
            background: Interval {
                wall_s: 1.0,
                busy_s: [0.1, 0.02],
                ..Interval::default()
            },
            rx_packets,
            attempt: 1,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn rows_divide_the_front_cpu_above_the_background_by_the_answers() {
        // 0.72 s busy minus 6 s x 2 % = 0.6 s over 60,000 answers and 120,000 packets.
        let row = Row::new(Front::Xdp, measurement(60_000, 0.72, 120_000));
        assert!(close(row.front_cpu_us_per_req, 10.0));
        assert!(close(row.front_threads_us_per_req, 6.0));
        assert!(close(row.rx_packets_per_req, 2.0));
        assert!(close(row.front_cpu_us_per_packet, 5.0));
        assert!((row.cpu1_busy - 0.12).abs() < 1e-9);
        assert!((row.cpu0_busy - 0.9).abs() < 1e-9);
        assert!((row.p99_ms - 6.0).abs() < 1e-9);
        assert!(!row.disturbed);

        let mut busy = measurement(60_000, 0.72, 120_000);
        busy.run.others_s = 0.5;
        assert!(Row::new(Front::Xdp, busy).disturbed);
    }

    fn rows(xdp_cpu1_s: f64) -> Vec<Row> {
        vec![
            Row::new(Front::Xdp, measurement(60_000, xdp_cpu1_s, 120_000)),
            Row::new(Front::NftJhash, measurement(30_000, 1.92, 900_000)),
            Row::new(Front::HaproxyTcp, measurement(30_000, 3.12, 900_000)),
        ]
    }

    #[test]
    fn targets_compare_xdp_with_nft_jhash_and_haproxy() {
        // XDP 10 us/req; nft (1.92 - 0.12) / 30,000 = 60 us; HAProxy 100 us.
        let t = targets(&rows(0.72));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].versus, Front::NftJhash);
        assert!((t[0].ratio - 1.0 / 6.0).abs() < 1e-9 && t[0].met);
        assert_eq!(t[1].versus, Front::HaproxyTcp);
        assert!((t[1].ratio - 0.1).abs() < 1e-9 && !t[1].met);
        // XDP at 20 us/req misses both.
        assert!(targets(&rows(1.32)).iter().all(|t| !t.met));
        // Without the XDP row there is nothing to compare.
        assert!(targets(&rows(0.72)[1..]).is_empty());
    }

    #[test]
    fn the_table_shows_every_front_and_the_verdicts() {
        let mut rows = rows(0.72);
        rows[1].x_xdp = Some(6.0);
        let report = Report {
            servers: 4,
            workload: Workload {
                objects: 5000,
                alpha: 0.8,
                seed: 1998,
                max_size: 256 << 10,
                concurrency: 32,
                timeout_ms: 5000,
            },
            client_addrs: 4,
            lengths: Lengths::of(&crate::bench::opts::args_from(&["--quick"]).unwrap()).unwrap(),
            front_cpu: 1,
            load_cpu: 0,
            sanity: Sanity {
                target: "srv1 10.214.0.21:80".into(),
                req_per_s: 17_000.0,
                cpu1_busy: 0.021,
                cpu1_background: 0.02,
                cpu1_us_per_req: Some(0.1),
                measurement: measurement(100_000, 0.126, 0),
            },
            targets: targets(&rows),
            rows,
        };
        let text = table(&report);
        for needle in [
            "xdp ",
            "nft-jhash ",
            "haproxy-tcp ",
            "   10.00 ",
            "   60.00 ",
            "  6.00 ",
            "sanity, no front (load straight to srv1 10.214.0.21:80): 17000 req/s",
            "target: XDP front CPU per request = 0.167x nft-jhash (target <= 0.2x): met",
            "target: XDP front CPU per request = 0.100x haproxy-tcp (target <= 0.05x): missed",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        assert!(!text.contains("disturbed"));
    }
}
