//! The load: `dl7-traffic load` (the SURGE-like closed-loop generator of `dl7_traffic::load`)
//! started in the client namespace, pinned to the load CPU with `taskset`, from every client address;
//! its JSON report read back as the generator's own `LoadReport`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use dl7_traffic::load::LoadReport;
use serde::Serialize;

use dl7_testbed::process as cmd;

/// What every run of the bench sends: the same workload, seed and connections for every
/// front.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub objects: usize,
    pub alpha: f64,
    pub seed: u64,
    pub max_size: u64,
    pub concurrency: usize,
    pub timeout_ms: u64,
}

/// Where and how the generator runs.
pub struct Client {
    /// The xtask executable that provides `load`.
    pub exe: PathBuf,
    pub ns: String,
    /// The load generator's `--source-addrs`: a comma-separated list.
    pub source_addrs: String,
    pub cpu: usize,
    pub workload: Workload,
}

/// A 6 s run with `ok` answers and `failed` failures, p50 2.5 ms, p99 6 ms (for tests).
#[cfg(test)]
pub fn example_report(ok: u64, failed: u64) -> LoadReport {
    LoadReport {
        target: "10.214.0.100:80".into(),
        workload: "synthetic".into(),
        mode: "closed".into(),
        concurrency: 32,
        rate: None,
        requests: ok + failed,
        ok,
        errors: dl7_traffic::load::Errors {
            timeout: failed,
            ..Default::default()
        },
        error_total: failed,
        statuses: [(200, ok)].into_iter().collect(),
        seconds: 6.0,
        req_per_s: ok as f64 / 6.0,
        bytes: 0,
        body_bytes: 0,
        mbit_per_s: 100.0,
        latency_us: dl7_traffic::load::Latency {
            p50: 2_500,
            p90: 4_000,
            p99: 6_000,
            max: 9_000,
            mean: 3_000.0,
        },
    }
}

/// So many requests that only the duration ends a run.
const UNBOUNDED_REQUESTS: u64 = 1 << 40;

impl Client {
    /// Runs the workload against `target` for `seconds` (closed loop) and returns its report.
    /// The run is bounded by the generator itself: `seconds` plus one request timeout.
    pub fn run(&self, target: SocketAddr, seconds: f64) -> Result<LoadReport> {
        let w = &self.workload;
        let mut command = Command::new("taskset");
        command
            .args(["-c", &self.cpu.to_string(), "nsenter"])
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(&self.exe)
            .args(["load", "--target", &format!("http://{target}")])
            .args(["--objects", &w.objects.to_string()])
            .args(["--alpha", &w.alpha.to_string()])
            .args(["--seed", &w.seed.to_string()])
            .args(["--max-size", &w.max_size.to_string()])
            .args(["--concurrency", &w.concurrency.to_string()])
            .args(["--timeout-ms", &w.timeout_ms.to_string()])
            .args(["--requests", &UNBOUNDED_REQUESTS.to_string()])
            .args(["--duration", &seconds.to_string()])
            .args(["--source-addrs", &self.source_addrs])
            .args(["--json", "--quiet"]);
        let out = cmd::output(&mut command)
            .with_context(|| format!("the load generator against {target}"))?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading the load generator's report: {}", out.trim()))
    }
}
