//! Child processes: commands with errors that name them, daemons started inside a namespace,
//! and stopping them.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs `cmd` with inherited stdio; an error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; an error if it cannot start or exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program` run in network namespace `ns` when given, through `nsenter --net` (which keeps
/// /sys/fs/bpf visible, unlike `ip netns exec`).
pub fn in_ns_command(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `l4-ctl` with its pin directory, run in `ns` when given.
pub fn l4_ctl_command(l4_ctl: &Path, ns: Option<&str>, pin_dir: Option<&Path>) -> Command {
    let mut command = in_ns_command(ns, l4_ctl);
    if let Some(dir) = pin_dir {
        command.arg("--pin-dir").arg(dir);
    }
    command
}

/// Starts `program ARGS` in namespace `ns` as a daemon (own session, output appended to
/// `log`); returns its pid. It outlives the caller: `down` stops it.
pub(crate) fn spawn_in(ns: &str, program: &Path, args: &[String], log: &Path) -> Result<u32> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = in_ns_command(Some(ns), program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; the child leaves the caller's session so that a
    // Ctrl-C of `cargo xtask` does not stop the testbed.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {} in {ns}", program.display()))?;
    Ok(child.id())
}

/// Sends `signal` to `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid the testbed recorded.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Kills `pid` (SIGKILL) and waits until it is gone: reaped when it is the caller's own child,
/// else until /proc no longer lists it as running.
pub(crate) fn stop(pid: u32) {
    signal(pid, libc::SIGKILL);
    // SAFETY: waitpid(2) fails with ECHILD, harmlessly, when an earlier process started it.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

/// The last lines of every log in `dir`, to explain a failed start.
pub(crate) fn tail_logs(dir: &Path) -> String {
    let mut out = String::from("process logs:");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                for line in tail.into_iter().rev() {
                    out.push_str(&format!("\n  {}: {line}", path.display()));
                }
            }
        }
    }
    out
}
