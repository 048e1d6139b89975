//! The `dl7-traffic` binary as scripts and the testbed run it: `origin` serves and says where,
//! `load --json` prints one `LoadReport`, and bad flags are refused with exit status 2.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dl7_traffic::load::LoadReport;

const EXE: &str = env!("CARGO_BIN_EXE_dl7-traffic");

/// A child process killed when dropped (also when an assertion fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dl7-traffic origin` on a free loopback port; its address, from the line it
/// prints once it listens.
fn start_origin() -> (Running, String) {
    let mut child = Running(
        Command::new(EXE)
            .args(["origin", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dl7-traffic origin"),
    );
    let stderr = child.0.stderr.take().expect("the origin's stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("read the origin's first line");
    let addr = line
        .trim()
        .strip_prefix("origin: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

#[test]
fn load_reports_json_against_the_origin() {
    let (_origin, addr) = start_origin();
    let started = Instant::now();
    let out = Command::new(EXE)
        .args(["load", "--target", &format!("http://{addr}")])
        .args(["--requests", "300", "--concurrency", "4", "--objects", "50"])
        .args(["--duration", "20", "--json"])
        .output()
        .expect("run dl7-traffic load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let report: LoadReport = serde_json::from_slice(&out.stdout).expect("one LoadReport");
    assert_eq!(
        (report.requests, report.ok, report.error_total),
        (300, 300, 0)
    );
    assert!(report.latency_us.p50 <= report.latency_us.p99);
}

#[test]
fn bad_flags_are_refused_with_status_2() {
    for args in [
        &[
            "load",
            "--target",
            "http://127.0.0.1:1",
            "--concurrency",
            "zero",
        ][..],
        &["origin", "--listen", "not-an-address"],
        &["frobnicate"],
    ] {
        let out = Command::new(EXE)
            .args(args)
            .output()
            .expect("run dl7-traffic");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}
