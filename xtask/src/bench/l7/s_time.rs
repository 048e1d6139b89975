//! The handshake loads: Debian's `openssl s_time`, a new TLS connection per request (a GET
//! of one object over HTTP/1.0, answered and closed), either every one a full handshake
//! (`-new`) or every one resuming the session of the first (`-reuse`). s_time prints one
//! character per connection (`r` when the session was resumed), which is how the bench
//! checks that it measured what it says. wrk is not used for this: wrk 4.1 keeps a TLS
//! session across its reconnects (`SSL_clear`), so it can be told neither to resume nor not to.
//!
//! One s_time runs one connection at a time, so `CLIENTS` of them run side by side on the
//! load CPU to keep the tier busy; their connections are summed over the wall time of the run.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use super::wrk::Load;
use crate::bench::process::{Group, reaped_children_cpu_seconds};

const OPENSSL: &str = "/usr/bin/openssl";

/// s_time processes run at once.
pub const CLIENTS: usize = 4;

/// Time a run may take beyond its duration before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// The share of `-reuse` connections that may end in a full handshake (s_time's first one,
/// a ticket that a tier rotated) before the tier counts as not resuming.
const MAX_UNRESUMED: f64 = 0.01;

/// Which handshakes a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// No session offered: a full handshake (key exchange and the certificate's signature).
    Full,
    /// The session of s_time's first connection offered every time (ticket or session ID).
    Resumed,
}

impl Handshake {
    fn flag(self) -> &'static str {
        match self {
            Handshake::Full => "-new",
            Handshake::Resumed => "-reuse",
        }
    }
}

/// Counts s_time's per-connection characters: (full handshakes, resumed ones). They fill the
/// lines made only of them (`*` for TLS 1.2 and 1.3, `r` for a resumed session).
fn count(out: &str) -> (u64, u64) {
    let marks = |l: &&str| !l.is_empty() && l.chars().all(|c| matches!(c, '*' | 'r' | 't' | '3'));
    out.lines()
        .filter(marks)
        .fold((0, 0), |(full, resumed), l| {
            let r = l.chars().filter(|&c| c == 'r').count() as u64;
            (full + l.len() as u64 - r, resumed + r)
        })
}

/// Runs `CLIENTS` s_time processes on `cpu` against `target` for `seconds`, client `i`
/// fetching `paths[i % len]`; an error if one fails or the handshakes were not of `kind`.
pub fn run(
    kind: Handshake,
    target: SocketAddr,
    paths: &[String],
    seconds: u64,
    cpu: usize,
    dir: &Path,
) -> Result<Load> {
    ensure!(!paths.is_empty(), "s_time needs a path");
    let cpu_before = reaped_children_cpu_seconds();
    let start = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut cmd = Command::new(OPENSSL);
        cmd.args(["s_time", "-connect", &target.to_string(), kind.flag()])
            .args([
                "-time",
                &seconds.to_string(),
                "-www",
                &paths[i % paths.len()],
            ]);
        clients.push((Group::spawn(&format!("s_time-{i}"), cpu, &cmd, dir)?, cmd));
    }
    let (mut full, mut resumed) = (0, 0);
    for (client, cmd) in &mut clients {
        let status = client.wait_exit(Duration::from_secs(seconds) + GRACE)?;
        let out = client.output("stdout");
        if !status.success() {
            let err = client.output("stderr");
            bail!("{cmd:?} failed ({status}): {} {}", err.trim(), out.trim());
        }
        let (f, r) = count(&out);
        full += f;
        resumed += r;
    }
    let seconds = start.elapsed().as_secs_f64();
    let total = full + resumed;
    ensure!(total > 0, "s_time made no connection to {target}");
    match kind {
        Handshake::Full => ensure!(
            resumed == 0,
            "{resumed} of {total} `-new` handshakes resumed"
        ),
        Handshake::Resumed => ensure!(
            full as f64 <= MAX_UNRESUMED * total as f64,
            "the tier resumed only {resumed} of {total} sessions"
        ),
    }
    Ok(Load {
        requests: total,
        seconds,
        wrk_cpu_seconds: reaped_children_cpu_seconds() - cpu_before,
        ..Load::default()
    })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_the_connection_marks_only() {
        let out = "Collecting connection statistics for 2 seconds\n***r**\n\n\
            6 connections in 0.43s; 658.14 connections/user sec, bytes read 1465374\n\
            6 connections in 2 real seconds, 5178 bytes read per connection\nstarting\nrrrr\n";
        assert_eq!(count(out), (5, 5));
    }
}
