//! A `l7-sidecar serve` process: started, waited for, signalled, scraped, and killed when
//! dropped (also when the test panics).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dl7_testbed::metrics::Metrics;

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    pub listen: SocketAddr,
    pub peer: Option<SocketAddr>,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl Sidecar {
    /// Starts `l7-sidecar ARGS` (stderr to `log`) and waits until every address accepts.
    pub fn start(
        args: &[String],
        listen: SocketAddr,
        peer: Option<SocketAddr>,
        metrics: SocketAddr,
        log: PathBuf,
    ) -> Sidecar {
        let err = fs::File::create(&log).expect("create log file");
        let child = Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start l7-sidecar");
        let mut s = Sidecar {
            child,
            listen,
            peer,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [Some(listen), peer, Some(metrics)].into_iter().flatten() {
            loop {
                if let Ok(Some(status)) = s.child.try_wait() {
                    panic!("l7-sidecar exited with {status}: {}", s.log_text());
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "l7-sidecar not listening on {addr} after 10 s: {}",
                    s.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -s {name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The /metrics page, parsed.
    pub fn metrics(&self) -> Metrics {
        dl7_testbed::metrics::scrape(self.metrics).expect("scrape /metrics")
    }

    /// The value of one series, e.g. `dl7_l7_cache_objects` or
    /// `dl7_l7_pool_connects_total{pool="s1"}` (the sum of the samples whose labels include
    /// these); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics().series(series)
    }

    /// A field of /proc/PID/status in kB (`VmHWM`, `VmRSS`).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
