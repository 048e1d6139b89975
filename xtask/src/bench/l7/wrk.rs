//! The load: Debian's wrk 4.1 with keep-alive connections, cycling over every object's URI
//! (requests pre-formatted by a generated Lua script), whose `done` hook prints the figures
//! in one machine-readable line, so nothing depends on wrk's human-formatted units. Over
//! HTTPS ([`run_https`]) wrk's connections stay open too: one handshake each, then requests.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::servers::object_path;
use crate::bench::process::{Group, reaped_children_cpu_seconds};

const WRK: &str = "/usr/bin/wrk";

/// The marker of the line the script's `done` hook prints.
const MARK: &str = "dl7-bench";

/// Time a run may take beyond its duration before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Writes the Lua script that cycles over `objects` URIs; returns its path.
pub fn write_script(dir: &Path, objects: usize) -> Result<PathBuf> {
    let paths: Vec<String> = (0..objects).map(object_path).collect();
    write_paths_script(dir, &paths)
}

/// Writes the Lua script that cycles over `paths` (each a request target); returns its path
/// (`load.lua` in `dir`).
pub fn write_paths_script(dir: &Path, paths: &[String]) -> Result<PathBuf> {
    let mut lua = String::from("local paths = {\n");
    for path in paths {
        let _ = writeln!(lua, "  \"{path}\",");
    }
    lua.push_str(&format!(
        r#"}}
local reqs = {{}}
local next = 0
init = function(args)
  for i, p in ipairs(paths) do reqs[i] = wrk.format("GET", p) end
end
request = function()
  next = next % #reqs + 1
  return reqs[next]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{MARK} requests=%.0f duration_us=%.0f bytes=%.0f p50_us=%.0f p99_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f\n",
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"#
    ));
    let path = dir.join("load.lua");
    fs::write(&path, lua).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What one load run measured: wrk's, or `openssl s_time`'s (see `s_time.rs`), whose
/// connections count as requests and which has no latencies (0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Responses with a status of 400 or more ("Non-2xx or 3xx responses").
    pub bad_status: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// The load generator's own CPU time.
    pub wrk_cpu_seconds: f64,
}

impl Load {
    pub fn req_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn parse(out: &str) -> Result<Self> {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(MARK))
            .with_context(|| format!("wrk printed no {MARK} line: {out}"))?;
        let field = |name: &str| -> Result<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in wrk's line {line:?}"))
        };
        Ok(Self {
            requests: field("requests")?,
            seconds: field("duration_us")? as f64 / 1e6,
            p50_ms: field("p50_us")? as f64 / 1e3,
            p99_ms: field("p99_us")? as f64 / 1e3,
            bad_status: field("status")?,
            socket_errors: field("connect")? + field("read")? + field("write")? + field("timeout")?,
            wrk_cpu_seconds: 0.0,
        })
    }
}

/// The shape of the load.
pub struct LoadSpec<'a> {
    pub script: &'a Path,
    pub connections: usize,
    pub cpu: usize,
}

/// Runs wrk against `target` for `seconds` (one thread on `spec.cpu`), killed if it overruns.
pub fn run(spec: &LoadSpec, target: SocketAddr, seconds: u64, dir: &Path) -> Result<Load> {
    run_url(spec, &format!("http://{target}/"), seconds, dir)
}

/// [`run`] over HTTPS (wrk verifies no certificate).
pub fn run_https(spec: &LoadSpec, target: SocketAddr, seconds: u64, dir: &Path) -> Result<Load> {
    run_url(spec, &format!("https://{target}/"), seconds, dir)
}

fn run_url(spec: &LoadSpec, url: &str, seconds: u64, dir: &Path) -> Result<Load> {
    let mut cmd = Command::new(WRK);
    cmd.arg("-t1")
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(spec.script)
        .arg(url);
    let cpu_before = reaped_children_cpu_seconds();
    let mut wrk = Group::spawn("wrk", spec.cpu, &cmd, dir)?;
    let status = wrk.wait_exit(Duration::from_secs(seconds) + GRACE)?;
    let wrk_cpu_seconds = reaped_children_cpu_seconds() - cpu_before;
    let out = wrk.output("stdout");
    if !status.success() {
        let err = wrk.output("stderr");
        bail!("{cmd:?} failed ({status}): {} {}", err.trim(), out.trim());
    }
    Ok(Load {
        wrk_cpu_seconds,
        ..Load::parse(&out)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_line() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n\
            dl7-bench requests=1234 duration_us=2000000 bytes=99 p50_us=1500 p99_us=4250 \
            connect=0 read=1 write=0 status=2 timeout=3\n";
        let l = Load::parse(out).unwrap();
        assert_eq!(l.requests, 1234);
        assert_eq!(l.req_per_s(), 617.0);
        assert_eq!((l.p50_ms, l.p99_ms), (1.5, 4.25));
        assert_eq!((l.bad_status, l.socket_errors), (2, 4));
    }
}
