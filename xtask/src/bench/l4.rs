//! `cargo xtask bench l4 [--json] [--quick]`: the L4 front's cost. dl7's XDP front against
//! kernel NAT with nftables (`dnat to jhash ...` and `dnat to numgen ...`; IPVS is not in this
//! kernel) and HAProxy `mode tcp`, one after another on the same namespace testbed (4
//! servers with their sidecars, the origin, the clients) under the same workload: req/s, p50
//! and p99 latency, and the CPU time the front node spends per request, softirq included.
//!
//! # Method
//! All namespaces share one kernel and two CPUs, and the kernel has no per-namespace account
//! of softirq time. So the front gets CPU 1 to itself and everything else runs on CPU 0
//! (`placement` has the details):
//! - every thread of every testbed process, the load generator and xtask: CPU 0;
//! - the front's receive path: threaded NAPI on the front's `eth0`, its kthread on CPU 1 (a
//!   veth has NAPI while an XDP program is attached or GRO is on: the NAT and HAProxy fronts
//!   turn GRO on); HAProxy itself on CPU 1;
//! - the switch's port to the front (`vfront`, which carries the testbed's `xdp_pass`):
//!   threaded NAPI on CPU 0, so everything the front sends is handed to CPU 0 at once; for
//!   the non-XDP fronts its TSO is turned off (an XDP program on the front turns it off
//!   anyway): only then does the kernel deliver to the front through its NAPI rather than
//!   through `netif_rx` on the sender's CPU, and the front gets wire-sized segments;
//! - both NAPI kthreads run at SCHED_FIFO, as the softirq processing they replace would
//!   preempt tasks: at normal priority the switch port's 256-frame ring overflows behind the
//!   busy CPU 0 under the NAT and proxy fronts' reply bursts (200 ms retransmission stalls).
//!   The price: the XDP front then works in smaller batches (about 10 us per request against
//!   7 at normal priority in this testbed);
//! - RPS on the other hosts' `eth0` (which have no NAPI) sends their receive work to CPU 0.
//!
//! The front's CPU time in a run is CPU 1's busy time (wall time minus idle, iowait and steal
//! from /proc/stat; `cpu_time` says why not the tick-sampled busy fields) minus CPU 1's busy
//! rate with no load just before (1 s, 3 s in a full run), divided by the requests answered.
//! Two cross-checks ride along: the exact runtime of the front's own threads (NAPI kthread,
//! HAProxy), which leaves out only the softirqs and interrupts CPU 1 takes while idle, and a
//! sanity run with the load sent straight to one server (no front), during which CPU 1 should
//! stay at its background. The machine is shared: when threads outside the bench that may use
//! CPU 1, or the hypervisor (steal), take more than 5 % of a CPU, or CPU 1's busy time falls
//! short of its threads' runtime (a stalled VM), the figures are not clean. The bench then
//! waits for quiet before a run (30 s at most) and measures a disturbed run again (3 runs at
//! most); a row that stays disturbed is marked so.
//!
//! Runs: one priming run through the XDP front fills the sidecars' caches (the workload has a
//! fixed seed, so every run asks for the same objects in the same order, and the priming run
//! is longer than any other); then for each front a check that the VIP answers through it, a
//! warm-up run, the idle background, and the measured run (closed loop, the same connections
//! and duration for every front). The servers' sidecars on CPU 0 limit req/s; the figure
//! that matters is CPU per request. XDP forwards only the clients' packets (the servers
//! answer the clients directly), NAT and HAProxy carry both directions: the packets per
//! request column shows it. At these rates CPU 1 mostly waits, and each batch of packets
//! costs a kthread wake-up: per-request figures include that, and grow as req/s falls.
//!
//! Targets (from the same run, reported and never enforced): the XDP front's CPU per request
//! at most 0.2x nftables DNAT (jhash) and at most 0.05x HAProxy. A front that answers errors
//! (more than 0.1 % of its requests failed) fails the bench. Results go to
//! target/bench-results/l4/results.{json,txt}. The testbed (and with it HAProxy, the nftables table,
//! the routes and every device setting) is removed at the end, also on errors and Ctrl-C.
//!
//! `--quick` (the smoke test of `cargo xtask test`): 1 s runs, at most 5 s of waiting for
//! quiet and no second run, and the load from this xtask itself rather than a release build,
//! so its figures are not for reading (a debug generator halves req/s and so raises the
//! per-request costs).

mod client;
mod cpu_time;
mod fronts;
mod placement;
mod report;

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use dl7_testbed::{Parts, Spec, Testbed};

use super::opts::BenchOpts;
use super::process::{self, CatchInterrupts};
use crate::setup;
use client::{Client, Workload};
use cpu_time::{Interval, Reading};
use dl7_traffic::load::LoadReport;
use fronts::{Front, KernelNat, Service};
use placement::{FRONT_CPU, NapiThreads, OwnCpu, REST_CPU};
use report::{Lengths, Measurement, Report, Row, Sanity};

/// Debian packages the bench drives (util-linux brings `taskset` and `nsenter`).
const PACKAGES: &[&str] = &["nftables", "haproxy", "util-linux", "ethtool", "iproute2"];

/// The bench's testbeds (never one an operator brought up).
const NAME: &str = "dl7l4";
const QUICK_NAME: &str = "dl7l4q";

/// CPUs the bench reads: the load CPU and the front CPU.
const CPUS: usize = 2;

/// Each sidecar's cache: far more than the workload's objects, so that after the priming run
/// every run is served from the caches.
const CACHE_BYTES: u64 = 1 << 30;

/// The workload's Zipf exponent and seed (the `load` defaults).
const ALPHA: f64 = 0.8;
const SEED: u64 = 1998;
/// Per-request timeout of the load.
const TIMEOUT_MS: u64 = 5_000;

/// The share of requests that may fail before a front counts as broken.
const MAX_FAILED_SHARE: f64 = 0.001;

/// Options of `cargo xtask bench l4`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "--duration [default: 10, --quick 1], --warmup [default: 2, --quick 0.5], --concurrency: keep-alive connections of the load [default: 32]."
)]
pub struct BenchL4Args {
    #[command(flatten)]
    pub opts: BenchOpts,
    /// Objects in the workload's catalogue.
    #[arg(long, default_value_t = 5_000)]
    pub objects: usize,
    /// Largest object, bytes.
    #[arg(long, default_value_t = 256 << 10)]
    pub max_size: u64,
    /// Real servers in the testbed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub servers: u16,
}

pub fn run(root: &Path, args: BenchL4Args) -> Result<()> {
    let opts = &args.opts;
    let lengths = Lengths::of(opts)?;
    ensure!(
        args.objects >= 1 && args.max_size >= 1,
        "--objects and --max-size must be at least 1"
    );
    let _lock = super::opts::lock("bench l4")?;
    setup::ensure_debian_packages(PACKAGES)?;
    Reading::take(CPUS, FRONT_CPU).context("the bench needs two CPUs (0 and 1)")?;
    let name = opts.pick(NAME, QUICK_NAME);
    // The testbed's dl7-traffic (release) is also the load generator.
    let parts = crate::build::testbed_parts(root, opts.profile())?;

    // Dropped in reverse: the testbed (inside `bench`), xtask's CPU, the signal handlers,
    // then stdout comes back.
    let json_stdout = if opts.json {
        Some(StdoutToStderr::redirect()?)
    } else {
        None
    };
    let signals = CatchInterrupts::install();
    let own_cpu = OwnCpu::pin(REST_CPU)?;
    let report = bench(&parts, name, &args, lengths);
    drop(own_cpu);
    drop(signals);
    drop(json_stdout);
    let report = report?;

    let text = report::table(&report);
    let dir = opts.results_dir("l4");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    fs::write(dir.join("results.txt"), &text)?;
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{text}");
        println!("(saved in {})", dir.display());
    }
    Ok(())
}

/// The bench's testbed, taken down when dropped.
struct OwnTestbed(Testbed);

impl OwnTestbed {
    fn up(parts: &Parts, name: &str, servers: u16) -> Result<Self> {
        let spec = Spec {
            cache_bytes: CACHE_BYTES,
            ..Spec::new(name, servers, "carp")
        };
        eprintln!("bench l4: bringing testbed {name} up");
        Ok(Self(dl7_testbed::up(&spec, parts)?))
    }
}

impl Drop for OwnTestbed {
    fn drop(&mut self) {
        if let Err(e) = dl7_testbed::down(&self.0.name) {
            eprintln!("bench l4: taking testbed {} down: {e:#}", self.0.name);
        }
    }
}

/// Brings the testbed up, measures every front, takes the testbed down.
fn bench(parts: &Parts, name: &str, args: &BenchL4Args, lengths: Lengths) -> Result<Report> {
    // Taken before anything is made threaded: NAPI kthreads that exist now are not ours.
    let napi = NapiThreads::before_changes();
    let testbed = OwnTestbed::up(parts, name, args.servers)?;
    process::check_interrupted()?;
    let status = &testbed.0;
    let client = Client {
        exe: parts.traffic.clone(),
        ns: status.client_ns.clone(),
        source_addrs: status.client_addr_list(),
        cpu: REST_CPU,
        workload: Workload {
            objects: args.objects,
            alpha: ALPHA,
            seed: SEED,
            max_size: args.max_size,
            concurrency: args.opts.concurrency(32, 32),
            timeout_ms: TIMEOUT_MS,
        },
    };
    let bench = Bench {
        status,
        service: Service::of(status)?,
        client,
        lengths,
        napi,
        switch_ns: status.switch_ns(),
    };
    let (sanity, rows) = bench.all_fronts()?;
    let targets = report::targets(&rows);
    Ok(Report {
        servers: args.servers,
        workload: bench.client.workload.clone(),
        client_addrs: status.client_addrs.len(),
        lengths,
        front_cpu: FRONT_CPU,
        load_cpu: REST_CPU,
        sanity,
        rows,
        targets,
    })
}

/// What every step of the bench works with.
struct Bench<'a> {
    status: &'a Testbed,
    service: Service,
    client: Client,
    lengths: Lengths,
    napi: NapiThreads,
    /// The bridge's namespace (the testbed names it `<name>-br`).
    switch_ns: String,
}

impl Bench<'_> {
    /// The CPU placement, the priming run, the sanity run, then each front in turn.
    fn all_fronts(&self) -> Result<(Sanity, Vec<Row>)> {
        let xdp_threads = self.place()?;
        fronts::check_through_vip(self.status, &self.service, Front::Xdp)?;
        eprintln!(
            "bench l4: priming the caches through the VIP ({} s)",
            self.lengths.prime_s
        );
        let vip = SocketAddr::V4(self.service.vip);
        self.load(vip, self.lengths.prime_s, "priming")?;
        let sanity = self.sanity()?;

        let mut rows = vec![self.front(Front::Xdp, &xdp_threads)?];
        let napi_threads = self.leave_xdp()?;
        let nat = KernelNat::set_up(self.status, &self.service)?;
        for front in [Front::NftJhash, Front::NftNumgen] {
            nat.load(front)?;
            rows.push(self.front(front, &napi_threads)?);
        }
        nat.remove()?;
        let haproxy = fronts::start_haproxy(self.status, &self.service, FRONT_CPU)?;
        let mut front_pids = napi_threads;
        front_pids.extend(haproxy.pids());
        rows.push(self.front(Front::HaproxyTcp, &front_pids)?);
        drop(haproxy);

        let xdp = rows
            .iter()
            .find(|r| r.front == Front::Xdp)
            .and_then(|r| r.front_cpu_us_per_req);
        for row in &mut rows {
            row.x_xdp = match (row.front_cpu_us_per_req, xdp) {
                (Some(us), Some(x)) if x > 0.0 => Some(us / x),
                _ => None,
            };
        }
        Ok((sanity, rows))
    }

    /// Puts the testbed's processes and the other hosts' receive work on CPU 0, the switch
    /// port's NAPI kthread too, and the front's on CPU 1; returns the front's kthreads.
    fn place(&self) -> Result<Vec<i32>> {
        let status = self.status;
        let pinned = placement::pin_testbed(&status.name, REST_CPU)?;
        eprintln!("bench l4: {pinned} testbed threads pinned to CPU {REST_CPU}");
        let hosts = [&status.client_ns, &status.origin.ns]
            .into_iter()
            .chain(status.servers.iter().map(|s| &s.ns));
        for ns in hosts {
            placement::steer_receive(ns, REST_CPU)?;
        }
        self.napi
            .thread_and_pin(&self.switch_ns, "vfront", REST_CPU)?;
        self.napi
            .thread_and_pin(&status.front.ns, "eth0", FRONT_CPU)
    }

    /// The load straight to the first server: CPU 1 should stay at its background.
    fn sanity(&self) -> Result<Sanity> {
        let (name, addr) = self
            .service
            .reals
            .first()
            .context("the testbed has no servers")?;
        let direct = SocketAddr::from((*addr, self.service.vip.port()));
        eprintln!("bench l4: sanity run straight to {name} {direct}");
        let m = self.measure("direct", direct, &[])?;
        Ok(Sanity {
            target: format!("{name} {direct}"),
            req_per_s: m.load.req_per_s,
            cpu1_busy: m.run.busy_share(FRONT_CPU),
            cpu1_background: m.background.busy_share(FRONT_CPU),
            cpu1_us_per_req: cpu_time::per_request_us(m.front_cpu_s(), m.load.ok),
            measurement: m,
        })
    }

    /// Removes the XDP front and readies the front's NAPI for the kernel's own path: GRO
    /// keeps it once XDP is gone, and without TSO on the switch port the kernel delivers to
    /// the front through it. Returns the front's (new) NAPI kthreads.
    fn leave_xdp(&self) -> Result<Vec<i32>> {
        let status = self.status;
        placement::set_offload(&status.front.ns, "eth0", "gro", true)?;
        status
            .l4_ctl(&["unload"])
            .context("unloading the XDP front")?;
        placement::set_offload(&self.switch_ns, "vfront", "tso", false)?;
        self.napi
            .thread_and_pin(&self.switch_ns, "vfront", REST_CPU)?;
        self.napi
            .thread_and_pin(&status.front.ns, "eth0", FRONT_CPU)
    }

    /// Checks `front` through the VIP, then measures it; `front_pids` are its kthreads and
    /// processes.
    fn front(&self, front: Front, front_pids: &[i32]) -> Result<Row> {
        process::check_interrupted()?;
        fronts::check_through_vip(self.status, &self.service, front)?;
        eprintln!("bench l4: {}", front.name());
        let m = self
            .measure(front.name(), SocketAddr::V4(self.service.vip), front_pids)
            .with_context(|| front.name().to_owned())?;
        Ok(Row::new(front, m))
    }

    /// A warm-up run, the idle background, then the measured run against `target`.
    /// A measured run that other threads did not disturb, if one of `lengths.attempts` is.
    fn measure(&self, what: &str, target: SocketAddr, front_pids: &[i32]) -> Result<Measurement> {
        if self.lengths.warmup_s > 0.0 {
            self.load(target, self.lengths.warmup_s, &format!("{what} warm-up"))?;
        }
        let mut attempt = 1;
        loop {
            let background = self.quiet_background(what, front_pids)?;
            let before = Reading::take(CPUS, FRONT_CPU)?;
            let rx_before = fronts::front_rx_packets(self.status)?;
            let load = self.load(target, self.lengths.duration_s, what)?;
            let after = Reading::take(CPUS, FRONT_CPU)?;
            let rx_after = fronts::front_rx_packets(self.status)?;
            let m = Measurement {
                load,
                run: Interval::between(&before, &after, front_pids),
                background,
                rx_packets: rx_after.saturating_sub(rx_before),
                attempt,
            };
            let Some(why) = m.run.disturbance(FRONT_CPU) else {
                return Ok(m);
            };
            if attempt >= self.lengths.attempts {
                return Ok(m);
            }
            eprintln!("bench l4: {what}: {why} during the run; measuring again");
            attempt += 1;
        }
    }

    /// CPU 1 with no load for `lengths.background_s`, looked at again (for at most
    /// `lengths.quiet_wait_s`) while something outside the bench takes CPU time, so that the
    /// measured run starts on a quiet machine when it can.
    fn quiet_background(&self, what: &str, front_pids: &[i32]) -> Result<Interval> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.lengths.quiet_wait_s);
        let mut said = false;
        loop {
            let start = Reading::take(CPUS, FRONT_CPU)?;
            process::sleep(Duration::from_secs_f64(self.lengths.background_s))?;
            let end = Reading::take(CPUS, FRONT_CPU)?;
            let background = Interval::between(&start, &end, front_pids);
            let Some(why) = background.disturbance(FRONT_CPU) else {
                return Ok(background);
            };
            if Instant::now() >= deadline {
                return Ok(background);
            }
            if !said {
                eprintln!(
                    "bench l4: {what}: {why} with no load; waiting up to {} s for quiet",
                    self.lengths.quiet_wait_s
                );
                said = true;
            }
        }
    }

    /// One run of the workload; an error if too many requests failed.
    fn load(&self, target: SocketAddr, seconds: f64, what: &str) -> Result<LoadReport> {
        process::check_interrupted()?;
        let load = self.client.run(target, seconds);
        // A Ctrl-C stops the generator too: say so rather than report its failure.
        process::check_interrupted()?;
        let load = load?;
        check_failures(&load).with_context(|| format!("{what} against {target}"))?;
        Ok(load)
    }
}

/// An error when no request succeeded or more than `MAX_FAILED_SHARE` failed.
fn check_failures(load: &LoadReport) -> Result<()> {
    if load.ok == 0 {
        bail!("no request succeeded ({} sent)", load.requests);
    }
    if load.error_total as f64 > MAX_FAILED_SHARE * load.requests as f64 {
        bail!(
            "{} of {} requests failed (more than {} %)",
            load.error_total,
            load.requests,
            MAX_FAILED_SHARE * 100.0
        );
    }
    Ok(())
}

/// While alive, whatever xtask and its children write to stdout goes to stderr (the testbed
/// and `l4-ctl` report on stdout), so that `--json` leaves stdout to the one JSON object.
struct StdoutToStderr {
    saved: OwnedFd,
}

impl StdoutToStderr {
    fn redirect() -> Result<Self> {
        std::io::stdout().flush()?;
        // SAFETY: dup of our own stdout; the new descriptor is owned below.
        let saved = unsafe { libc::dup(libc::STDOUT_FILENO) };
        ensure!(
            saved >= 0,
            "dup(stdout): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `saved` is a fresh descriptor nothing else owns.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: dup2 between descriptors of this process.
        if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
            bail!("dup2(stderr, stdout): {}", std::io::Error::last_os_error());
        }
        Ok(Self { saved })
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        // SAFETY: puts the saved stdout back on descriptor 1.
        unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

#[cfg(test)]
mod tests {
    use super::client::example_report;
    use super::{BenchL4Args, Lengths, check_failures};

    #[test]
    fn failures_above_a_tenth_of_a_percent_fail_the_front() {
        assert!(check_failures(&example_report(10_000, 0)).is_ok());
        assert!(check_failures(&example_report(10_000, 10)).is_ok());
        assert!(check_failures(&example_report(10_000, 11)).is_err());
        assert!(check_failures(&example_report(0, 0)).is_err());
    }

    #[test]
    fn quick_args_keep_the_defaults() {
        let a: BenchL4Args = crate::bench::opts::args_from(&["--quick"]).unwrap();
        assert!(a.opts.quick && !a.opts.json);
        assert_eq!(
            (a.opts.concurrency(32, 32), a.objects, a.max_size, a.servers),
            (32, 5000, 256 << 10, 4)
        );
        let l = Lengths::of(&a.opts).unwrap();
        assert_eq!(
            (
                l.duration_s,
                l.warmup_s,
                l.prime_s,
                l.background_s,
                l.attempts
            ),
            (1.0, 0.5, 1.5, 0.5, 1)
        );
        let mut bad = a.opts.clone();
        bad.duration = Some(0.0);
        assert!(Lengths::of(&bad).is_err());
        bad.duration = Some(f64::NAN);
        assert!(Lengths::of(&bad).is_err());
    }
}
