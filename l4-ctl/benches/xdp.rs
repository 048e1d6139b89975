//! `cargo xtask bench xdp [--json] [--quick]`: the balancer's cost per packet as the kernel
//! measures it (BPF_PROG_TEST_RUN with a large repeat count), for an established TCP flow, a
//! new flow (SYN), a packet for no VIP, and a bare MAC-swap XDP_TX program as the baseline,
//! all in one run and interleaved, each the median of several runs. The figures are ratios to
//! the baseline, so they compare across machines; the absolute ns are this machine's.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use l4_ctl::{Balancer, Mac, RealSpec, Vip};

// The test tooling: the frame builder and the baseline program.
#[path = "../tests/support/frames.rs"]
#[allow(dead_code)]
mod frames;
#[path = "../tests/support/objects.rs"]
#[allow(dead_code)]
mod objects;

use frames::{
    FRONT_MAC, TCP_ACK, TCP_PSH, TCP_SYN,
    action::{XDP_PASS, XDP_TX},
};

/// Targets from the issue: established <= 2.0x baseline, SYN <= 4.0x baseline.
const ESTABLISHED_TARGET: f64 = 2.0;
const SYN_TARGET: f64 = 4.0;

struct Options {
    json: bool,
    repeat: u32,
    rounds: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        json: false,
        repeat: 1_000_000,
        rounds: 7,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--quick" => {
                opts.repeat = 10_000;
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

fn ns_per_run(program: &Xdp, frame: &[u8], repeat: u32, expect: u32) -> Result<f64, String> {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
    if result.return_value != expect {
        return Err(format!(
            "the program returned {} where {expect} was expected",
            result.return_value
        ));
    }
    Ok(result.duration.as_nanos() as f64)
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
    let mut bal = Balancer::load(&pins.0).map_err(|e| format!("{e}: {:?}", e))?;
    let vip: Vip = "10.100.0.1:80/tcp".parse().map_err(|e| format!("{e}"))?;
    bal.add_vip(&vip).map_err(|e| e.to_string())?;
    for n in 1..=8u8 {
        let spec = RealSpec {
            addr: format!("10.0.0.{n}").parse().map_err(|e| format!("{e}"))?,
            mac: Mac([2, 0, 0, 0, 1, n]),
            src_mac: FRONT_MAC,
            egress_ifindex: None,
            weight: 1,
            encap: l4_ctl::Encap::L2,
        };
        bal.add_real(&vip, &spec).map_err(|e| e.to_string())?;
    }
    let program = bal.program().map_err(|e| e.to_string())?;

    let mut baseline_ebpf = Ebpf::load(objects::MAC_SWAP).map_err(|e| e.to_string())?;
    let baseline: &mut Xdp = baseline_ebpf
        .program_mut(objects::MAC_SWAP_PROGRAM)
        .ok_or("no baseline program")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    baseline.load().map_err(|e| e.to_string())?;

    let client = SocketAddr::from(([192, 0, 2, 7], 40000));
    let payload = [b'x'; 64];
    let established = frames::tcp_frame(client, vip.addr, TCP_ACK | TCP_PSH, &payload);
    let syn = frames::tcp_frame(client, vip.addr, TCP_SYN, &[]);
    let other = frames::tcp_frame(
        client,
        SocketAddr::from(([10, 100, 0, 2], 80)),
        TCP_ACK,
        &payload,
    );
    // Make the established flow known, as it would be after its SYN.
    ns_per_run(program, &syn, 1, XDP_TX)?;

    let (mut base, mut est, mut new, mut pass) = (vec![], vec![], vec![], vec![]);
    for _ in 0..opts.rounds {
        base.push(ns_per_run(baseline, &established, opts.repeat, XDP_TX)?);
        est.push(ns_per_run(program, &established, opts.repeat, XDP_TX)?);
        new.push(ns_per_run(program, &syn, opts.repeat, XDP_TX)?);
        pass.push(ns_per_run(program, &other, opts.repeat, XDP_PASS)?);
    }
    let (base, est, new, pass) = (median(base), median(est), median(new), median(pass));

    if opts.json {
        println!(
            "{{\"baseline_ns\":{base:.2},\"established_ns\":{est:.2},\"syn_ns\":{new:.2},\"pass_ns\":{pass:.2}}}"
        );
        return Ok(());
    }
    println!(
        "XDP balancer, BPF_PROG_TEST_RUN, repeat {} x {} rounds (median), frame {} bytes",
        opts.repeat,
        opts.rounds,
        established.len()
    );
    println!(
        "{:<28} {:>10} {:>12} {:>8}",
        "case", "ns/packet", "x baseline", "target"
    );
    let verdict = |ratio: f64, target: f64| {
        if ratio <= target {
            format!("<= {target:.1} ok")
        } else {
            format!("<= {target:.1} MISSED")
        }
    };
    println!(
        "{:<28} {:>10.1} {:>12.2} {:>8}",
        "baseline (MAC swap, XDP_TX)", base, 1.0, ""
    );
    println!(
        "{:<28} {:>10.1} {:>12.2} {:>8}",
        "established TCP flow",
        est,
        est / base,
        verdict(est / base, ESTABLISHED_TARGET)
    );
    println!(
        "{:<28} {:>10.1} {:>12.2} {:>8}",
        "new flow (SYN)",
        new,
        new / base,
        verdict(new / base, SYN_TARGET)
    );
    println!(
        "{:<28} {:>10.1} {:>12.2} {:>8}",
        "not a VIP (XDP_PASS)",
        pass,
        pass / base,
        ""
    );
    Ok(())
}
