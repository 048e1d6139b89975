//! `cargo xtask bench xdp [--json] [--quick]`: what a packet costs the front's balancer and
//! the reals' decapsulator as the kernel measures it (BPF_PROG_TEST_RUN), against a bare
//! MAC-swap `XDP_TX` program as the baseline, all in one run and interleaved, each the median
//! of several rounds. The figures are ratios to the baseline, so they compare across
//! machines; the absolute ns are this machine's.
//!
//! The balancer's cases: established TCP flows to an L2, an IPIP and a GUE real, a SYN of a
//! flow that already maps to its real (a repeated SYN), and a packet for no VIP. The
//! decapsulator's: an IPIP and a GUE frame addressed to the real, stripped and passed on.
//!
//! Every frame runs as if it arrived on the front's interface `f0` of a network namespace whose
//! routes lead to the encapsulated reals (tests/support/fib.rs), from one thread inside that
//! namespace: the encapsulating path's FIB lookup starts from that interface.
//!
//! Two ways of timing, because the kernel does not restore the frame between the repetitions
//! of one test run:
//! - A program that leaves the frame's length alone runs `repeat` times in one test run: the
//!   kernel's average per run.
//! - Encapsulation and decapsulation move the frame's head, so a second repetition would see
//!   the program's own output. They run once per test run, `calls` times (the mean of the
//!   fastest 99 %). Such a figure also holds the kernel's timing overhead of a test run; it is
//!   measured the same way on the baseline and subtracted: cost = baseline + (case per call -
//!   baseline per call). The L2 established flow is timed both ways, as a check of that
//!   method.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use l4_ctl::{Balancer, Encap, Mac, RealSpec, Vip};

// The test tooling: frame builders, the baseline program, the FIB namespace.
#[path = "../tests/support/mod.rs"]
mod support;

use support::{
    TestDecap, XDP_PASS, XDP_TX,
    fib::{self, Fib},
    frames::{self, CLIENT_MAC, FRONT_MAC, TCP_ACK, TCP_PSH, TCP_SYN, encap},
    netns::in_netns,
    objects,
};

/// The targets, as ratios to the baseline of the same run.
const ESTABLISHED_TARGET: f64 = 3.5;
const REPEATED_SYN_TARGET: f64 = 6.0;
const ENCAP_TARGET: f64 = 4.5;
const DECAP_TARGET: f64 = 2.5;

/// The VIP's address; its port 80 has L2 reals, 81 IPIP reals and 82 GUE reals, 8 each.
const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// The real the decapsulator runs on (in the FIB namespace's routed subnet, like every
/// encapsulated real).
const DECAP_REAL: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The client of every frame.
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const CLIENT_PORT: u16 = 40000;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_UDP: u8 = 17;
/// The lengths of the client's frames ([`segment`]) and of the outer headers.
const DATA_LEN: usize = 14 + 20 + 20 + 64;
const SYN_LEN: usize = DATA_LEN - 64;
const IPIP_OUTER: usize = 20;
const GUE_OUTER: usize = 20 + 8;

struct Options {
    json: bool,
    repeat: u32,
    calls: u32,
    rounds: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        json: false,
        repeat: 1_000_000,
        calls: 20_000,
        rounds: 7,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--quick" => {
                opts.repeat = 10_000;
                opts.calls = 1_000;
                opts.rounds = 1;
            }
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}` (use --json, --quick)")),
        }
    }
    Ok(opts)
}

/// Removes the benchmark's pin directory however the run ends.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A frame, the program it goes through, and what must come out.
struct Run<'a> {
    program: &'a Xdp,
    frame: Vec<u8>,
    action: u32,
    /// The length of the frame as it leaves.
    out_len: usize,
}

impl Run<'_> {
    /// Runs the frame `repeat` times in one test run, as if it arrived on interface `ifindex`
    /// (of this thread's namespace): the kernel's average ns per run.
    fn ns(&self, ifindex: u32, repeat: u32) -> Result<f64, String> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let md = [0, self.frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; self.frame.len() + 256];
        let result = self
            .program
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
        let out_len = result.data_size_out as usize;
        if (result.return_value, out_len) != (self.action, self.out_len) {
            return Err(format!(
                "the program returned {} and {out_len} bytes where {} and {} bytes were expected",
                result.return_value, self.action, self.out_len
            ));
        }
        Ok(result.duration.as_nanos() as f64)
    }

    /// `calls` test runs of one run each: the kernel's ns per run, averaged over the fastest
    /// 99 % of the calls (the slowest took an interrupt). Includes the overhead of a test run.
    fn ns_per_call(&self, ifindex: u32, calls: u32) -> Result<f64, String> {
        let mut ns = (0..calls)
            .map(|_| self.ns(ifindex, 1))
            .collect::<Result<Vec<f64>, String>>()?;
        ns.sort_by(f64::total_cmp);
        ns.truncate(ns.len() - ns.len() / 100);
        Ok(ns.iter().sum::<f64>() / ns.len() as f64)
    }
}

/// How a case is timed (see the module's doc).
enum Timing {
    Repeat,
    PerCall,
}

/// A row of the report.
struct Case<'a> {
    name: &'static str,
    /// Its key in `--json`.
    key: &'static str,
    run: Run<'a>,
    timing: Timing,
    target: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let opts = parse_args()?;
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/dl7-test-bench-{}",
        std::process::id()
    )));
    // Deleted on drop, also when a step below fails or panics.
    let fib = Fib::new();
    in_netns(&fib.ns, || measure(&opts, &pins.0, fib.ifindex))
}

/// Loads the programs, times every case from this thread (inside the FIB namespace) and
/// prints the report.
fn measure(opts: &Options, pin_dir: &Path, ifindex: u32) -> Result<(), String> {
    let mut bal = Balancer::load(pin_dir).map_err(|e| format!("{e}: {e:?}"))?;
    let vips = [
        add_service(&mut bal, 80, Encap::L2)?,
        add_service(&mut bal, 81, Encap::Ipip)?,
        add_service(&mut bal, 82, Encap::Gue)?,
    ];
    let mut baseline = Ebpf::load(objects::MAC_SWAP).map_err(|e| e.to_string())?;
    load_xdp(&mut baseline, objects::MAC_SWAP_PROGRAM)?;
    let decap = TestDecap::new(&[DECAP_REAL.into()]);
    let programs = Programs {
        balancer: bal.program().map_err(|e| e.to_string())?,
        baseline: xdp(&baseline, objects::MAC_SWAP_PROGRAM)?,
        decap: decap.xdp(),
    };
    // Make the established flows known, as they would be after their SYNs.
    for (vip, outer) in vips.iter().zip([0, IPIP_OUTER, GUE_OUTER]) {
        let syn = segment(vip.addr, true);
        programs.tx(syn, SYN_LEN + outer).ns(ifindex, 1)?;
    }
    let cases = cases(&programs, &vips);
    let (figures, overhead) = time(&cases, opts, ifindex)?;
    if opts.json {
        let fields: Vec<String> = cases
            .iter()
            .zip(&figures)
            .map(|(case, ns)| format!("\"{}\":{ns:.2}", case.key))
            .chain([format!("\"call_overhead_ns\":{overhead:.2}")])
            .collect();
        println!("{{{}}}", fields.join(","));
    } else {
        report(opts, &cases, &figures, overhead);
    }
    Ok(())
}

/// The programs under test.
struct Programs<'a> {
    balancer: &'a Xdp,
    baseline: &'a Xdp,
    decap: &'a Xdp,
}

impl<'a> Programs<'a> {
    /// `frame` through the balancer, sent on (XDP_TX) as `out_len` bytes.
    fn tx(&self, frame: Vec<u8>, out_len: usize) -> Run<'a> {
        Run {
            program: self.balancer,
            frame,
            action: XDP_TX,
            out_len,
        }
    }
}

/// The report's rows, the baseline first; `vips` are the L2, IPIP and GUE services.
fn cases<'a>(p: &Programs<'a>, vips: &[Vip; 3]) -> Vec<Case<'a>> {
    use Timing::{PerCall, Repeat};
    let [l2, ipip, gue] = vips.each_ref().map(|vip| segment(vip.addr, false));
    let case = |name, key, run, timing, target| Case {
        name,
        key,
        run,
        timing,
        target,
    };
    let decap = |frame| Run {
        program: p.decap,
        frame,
        action: XDP_PASS,
        out_len: DATA_LEN,
    };
    let not_a_vip = segment(SocketAddr::from(([10, 100, 0, 2], 80)), false);
    vec![
        case(
            "baseline (MAC swap, XDP_TX)",
            "baseline_ns",
            Run {
                program: p.baseline,
                ..p.tx(l2.clone(), DATA_LEN)
            },
            Repeat,
            None,
        ),
        case(
            "established TCP, L2 real",
            "established_ns",
            p.tx(l2.clone(), DATA_LEN),
            Repeat,
            Some(ESTABLISHED_TARGET),
        ),
        case(
            "repeated SYN (same flow)",
            "syn_ns",
            p.tx(segment(vips[0].addr, true), SYN_LEN),
            Repeat,
            Some(REPEATED_SYN_TARGET),
        ),
        case(
            "not a VIP (XDP_PASS)",
            "pass_ns",
            Run {
                action: XDP_PASS,
                ..p.tx(not_a_vip, DATA_LEN)
            },
            Repeat,
            None,
        ),
        case(
            "established TCP, IPIP real *",
            "established_ipip_ns",
            p.tx(ipip, DATA_LEN + IPIP_OUTER),
            PerCall,
            Some(ENCAP_TARGET),
        ),
        case(
            "established TCP, GUE real *",
            "established_gue_ns",
            p.tx(gue, DATA_LEN + GUE_OUTER),
            PerCall,
            Some(ENCAP_TARGET),
        ),
        case(
            "decap IPIP (strip, XDP_PASS) *",
            "decap_ipip_ns",
            decap(wrapped(&l2, false)),
            PerCall,
            Some(DECAP_TARGET),
        ),
        case(
            "decap GUE (strip, XDP_PASS) *",
            "decap_gue_ns",
            decap(wrapped(&l2, true)),
            PerCall,
            Some(DECAP_TARGET),
        ),
        case(
            "check: established L2 real *",
            "established_per_call_ns",
            p.tx(l2, DATA_LEN),
            PerCall,
            None,
        ),
    ]
}

/// Times `cases` in interleaved rounds: per round every case, and the baseline (the first)
/// once more one run per test run, as the reference of the per-call cases. Returns each
/// case's median ns per packet and the median overhead of a test run.
fn time(cases: &[Case], opts: &Options, ifindex: u32) -> Result<(Vec<f64>, f64), String> {
    let mut samples: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    let mut overheads = vec![];
    for _ in 0..opts.rounds {
        let base = cases[0].run.ns(ifindex, opts.repeat)?;
        let base_per_call = cases[0].run.ns_per_call(ifindex, opts.calls)?;
        overheads.push(base_per_call - base);
        samples[0].push(base);
        for (case, samples) in cases.iter().zip(&mut samples).skip(1) {
            samples.push(match case.timing {
                Timing::Repeat => case.run.ns(ifindex, opts.repeat)?,
                Timing::PerCall => {
                    base + case.run.ns_per_call(ifindex, opts.calls)? - base_per_call
                }
            });
        }
    }
    Ok((samples.into_iter().map(median).collect(), median(overheads)))
}

fn report(opts: &Options, cases: &[Case], figures: &[f64], overhead: f64) {
    println!(
        "XDP balancer and decapsulator, BPF_PROG_TEST_RUN as if received on f0 of a FIB \
         namespace, median of {} interleaved rounds, client frame {DATA_LEN} bytes",
        opts.rounds
    );
    println!(
        "repeat {} per test run; * = {} test runs of one run each, less the test run's \
         overhead of {overhead:.1} ns (measured on the baseline)",
        opts.repeat, opts.calls
    );
    println!(
        "{:<32} {:>10} {:>12}   target",
        "case", "ns/packet", "x baseline"
    );
    let base = figures[0];
    for (case, &ns) in cases.iter().zip(figures) {
        let ratio = ns / base;
        let verdict = case.target.map_or(String::new(), |target| {
            let met = if ratio <= target { "ok" } else { "MISSED" };
            format!("<= {target:.1} {met}")
        });
        let row = format!("{:<32} {ns:>10.1} {ratio:>12.2}   {verdict}", case.name);
        println!("{}", row.trim_end());
    }
}

/// The client's TCP segment to `dst`: a SYN, or an ACK with 64 bytes of data.
fn segment(dst: SocketAddr, syn: bool) -> Vec<u8> {
    let client = SocketAddr::from((CLIENT, CLIENT_PORT));
    if syn {
        frames::tcp_frame(client, dst, TCP_SYN, &[])
    } else {
        frames::tcp_frame(client, dst, TCP_ACK | TCP_PSH, &[b'x'; 64])
    }
}

/// A VIP on `port` of [`VIP_ADDR`] with 8 reals reached by `encap`: the L2 ones on the front's
/// subnet, the encapsulated ones in the FIB namespace's routed subnet.
fn add_service(bal: &mut Balancer, port: u16, encap: Encap) -> Result<Vip, String> {
    let vip: Vip = format!("{VIP_ADDR}:{port}/tcp")
        .parse()
        .map_err(|e| format!("{e}"))?;
    bal.add_vip(&vip).map_err(|e| e.to_string())?;
    for n in 1..=8u8 {
        let (addr, mac) = match encap {
            Encap::L2 => (Ipv4Addr::new(10, 0, 0, n), Mac([2, 0, 0, 0, 1, n])),
            Encap::Ipip => (Ipv4Addr::new(10, 200, 0, n), Mac([0; 6])),
            Encap::Gue => (Ipv4Addr::new(10, 200, 0, 10 + n), Mac([0; 6])),
        };
        let spec = RealSpec {
            addr: addr.into(),
            mac,
            src_mac: FRONT_MAC,
            egress_ifindex: None,
            weight: 1,
            encap,
        };
        bal.add_real(&vip, &spec).map_err(|e| e.to_string())?;
    }
    Ok(vip)
}

/// `frame` (a client's IPv4 frame from [`CLIENT`]) as a front sends it to [`DECAP_REAL`]: the
/// IP packet in an outer IPv4 header, with a GUE (UDP) header between them if `gue`.
fn wrapped(frame: &[u8], gue: bool) -> Vec<u8> {
    let inner = &frame[14..];
    let packet = if gue {
        let udp = encap::gue(encap::gue_port_v4(CLIENT, CLIENT_PORT), inner);
        encap::ipv4(fib::FRONT4, DECAP_REAL, IPPROTO_UDP, 0, false, &udp)
    } else {
        let src = encap::ipip_source_v4(CLIENT, CLIENT_PORT);
        encap::ipv4(src, DECAP_REAL, IPPROTO_IPIP, 0, false, inner)
    };
    frames::ethernet(FRONT_MAC, CLIENT_MAC, frames::ETH_P_IPV4, &packet)
}

/// Loads (verifies) the XDP program `name` of `ebpf`.
fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    program.load().map_err(|e| format!("loading {name}: {e}"))
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp, String> {
    ebpf.program(name)
        .ok_or(format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}
